//! wharf: a load balancer and reverse proxy for applications that speak WebSockets.
//!
//! The source tree follows the path a connection takes:
//!
//! ```text
//! listener (accept, limit) ─▶ front (PROXY, sniff, TLS) ─▶ http (serve, headers) ─▶ route
//!     ─▶ upstream (pool, balance, sticky) ─▶ server
//!                      └─ tcp pool ─▶ server        upgrade (101) ─▶ tunnel
//! ```
//!
//! - [`config`]: the immutable, validated config model and its parser.
//! - [`snapshot`]: one immutable view of the config and the pools built on it.
//! - [`registry`]: live state (servers, pools, listeners) keyed by identity,
//!   kept across reloads.
//! - [`runtime`]: starts, reloads and stops wharf; the handle tests use.
//! - [`handover`]: passes listening sockets to a new wharf binary.
//! - [`fd`]: file-descriptor limits, and running out of them.
//! - [`systemd`]: readiness notifications for `Type=notify` units.
//! - [`listener`]: accepts connections under a limit and hands them on.
//! - [`front`]: reads PROXY headers, sniffs the protocol, terminates TLS and
//!   hands each connection to HTTP or a TCP pool.
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
//! - [`admin`]: the admin listener: API (drain, maintenance, ready), `/metrics`, `/status`.
//! - [`metrics`]: Prometheus families and the handles the data path increments.
//! - [`access_log`]: one line per request and tunnel, written by its own thread.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod admin;
pub mod balance;
pub mod config;
pub mod demo;
pub mod fd;
pub mod front;
pub mod handover;
pub mod health;
pub mod http;
pub mod listener;
pub mod metrics;
pub mod proxy_protocol;
pub mod registry;
pub mod route;
pub mod runtime;
pub mod snapshot;
pub mod sticky;
pub mod systemd;
pub mod tcp;
pub mod tls;
pub mod tunnel;
pub mod upstream;

#[cfg(test)]
mod fuzz;

pub use runtime::{Running, StartError, StartOptions, start, start_with};
