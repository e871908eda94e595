//! wharf: a load balancer and reverse proxy for applications that speak WebSockets.
//!
//! The source tree follows the path a connection takes:
//!
//! ```text
//! listener (accept, limits) ─▶ http (serve, headers) ─▶ route ─▶ upstream (pool, balance) ─▶ server
//!                                     └─ upgrade (101) ─▶ tunnel: bytes both ways, idle timeout
//! ```
//!
//! - [`config`]: the immutable, validated config model and its parser.
//! - [`runtime`]: turns a config into running listeners and pools; the handle tests use.
//! - [`listener`]: accepts connections, caps how many are open, reads PROXY
//!   headers, sniffs the protocol and hands each connection to its stage.
//! - [`proxy_protocol`]: PROXY protocol v1/v2, read from trusted peers and sent to servers.
//! - [`tls`]: TLS termination with certificates chosen by SNI, reloaded on SIGHUP.
//! - [`tcp`]: TCP pools: raw connections balanced and tunnelled.
//! - [`http`]: serves HTTP/1.1 to clients and forwards to servers, including upgrades.
//! - [`route`]: picks the pool for a request by host and path.
//! - [`upstream`]: a pool's runtime state: servers, their load, idle connections.
//! - [`balance`]: the balancing algorithms and the consistent-hash table.
//! - [`sticky`]: session affinity: inserted cookie, learned sessions, hash keys.
//! - [`tunnel`]: copies bytes both ways for upgraded connections.
//! - [`health`]: active health checks feeding server state.
//! - [`admin`]: the admin API (server states; drain, maintenance, ready).
#![forbid(unsafe_code)]

pub mod admin;
pub mod balance;
pub mod config;
pub mod demo;
pub mod health;
pub mod http;
pub mod listener;
pub mod proxy_protocol;
pub mod route;
pub mod runtime;
pub mod sticky;
pub mod tcp;
pub mod tls;
pub mod tunnel;
pub mod upstream;

pub use runtime::{Running, StartError, start};
