//! Upstream: the servers behind wharf — each one's live state ([`Server`]:
//! health, admin state, load, idle keep-alive connections), a pool as one
//! config snapshot sees it ([`Pool`]), the choice of a server for a request,
//! and connecting to a server.
//!
//! The config of a pool ([`PoolConfig`]) is immutable; what changes while
//! wharf runs lives in [`Server`] and [`PoolLive`], kept across reloads by
//! the registry.

mod connect;
pub mod h1;
mod idle;
mod pool;
mod server;
pub mod state;
mod upload;

pub use pool::{Pool, PoolLive, Unavailable};
pub use server::{ActiveGuard, Server};

pub use connect::{ConnectError, MAX_RESPONSE_HEAD, UpstreamBody, connect_http, connect_tcp};
pub use h1::{
    ExtraField, ServerBody, ServerConnection, ServerError, deferred_total, send_deferred,
};
pub use idle::IdlePool;
pub use state::{AdminState, Change, Health, Outcome, ServerState};
pub use upload::Upload;
