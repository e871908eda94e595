//! Stickiness: keeping a client's requests on one server, so that a session
//! opened by one request (a Socket.IO or SockJS handshake) is found by the
//! next (the long-poll, the websocket upgrade).
//!
//! Three ways, checked in this order before the pool balances:
//! - an inserted cookie naming the server by an opaque token ([`cookie`]);
//! - a session key learned from the server, a cookie it set or the Engine.IO
//!   handshake's `sid` ([`learned`], [`engine_io`]);
//! - a hash of something the request carries, on the pool's consistent-hash
//!   table ([`key`], [`crate::balance::Rendezvous`]).
//!
//! A pinned server that is down, draining or gone is never used: the request
//! is balanced again and the client re-pinned.

pub mod cookie;
pub mod engine_io;
pub mod key;
pub mod learned;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderMap, Uri};

use crate::config::{LearnSource, PoolConfig, StickyConfig};
use cookie::StickyCookies;
use learned::LearnedSessions;

/// Where a request would like to go, worked out before choosing a server.
#[derive(Debug, Default, Clone)]
pub struct Affinity {
    /// A server (by its position in this snapshot's pool) the request is pinned to.
    pub pinned: Option<usize>,
    /// The hash of the request's key, for a hashing pool.
    pub hash: Option<u64>,
    /// The request asks for a new Engine.IO session (a handshake): learn its `sid`.
    pub engine_io_handshake: bool,
}

/// A pool's stickiness at runtime.
#[derive(Debug)]
pub enum Sticky {
    Cookie(StickyCookies),
    Learn {
        source: LearnSource,
        /// Kept in the pool's live state, so that a reload keeps what was learned.
        sessions: Arc<LearnedSessions>,
    },
}

impl Sticky {
    /// Builds the pool's stickiness for its servers (`addresses` in pool
    /// order); a learning pool keeps its sessions in `sessions`, which
    /// outlives this snapshot.
    pub fn new(
        config: &PoolConfig,
        addresses: &[String],
        sessions: impl FnOnce() -> Arc<LearnedSessions>,
    ) -> Option<Sticky> {
        match config.sticky.as_ref()? {
            StickyConfig::Cookie(cookie) => Some(Sticky::Cookie(StickyCookies::new(
                cookie,
                &config.name,
                addresses,
            ))),
            StickyConfig::Learn(learn) => Some(Sticky::Learn {
                source: learn.source.clone(),
                sessions: sessions(),
            }),
        }
    }

    /// The server the request is pinned to (its position, found by
    /// `position_of` for a learned address), and whether it opens an
    /// Engine.IO session.
    fn pin(
        &self,
        headers: &HeaderMap,
        uri: &Uri,
        now: Instant,
        position_of: &dyn Fn(SocketAddr) -> Option<usize>,
    ) -> (Option<usize>, bool) {
        let learned =
            |sessions: &LearnedSessions, key: &str| sessions.get(key, now).and_then(position_of);
        match self {
            Sticky::Cookie(cookies) => (cookies.server_of(headers), false),
            Sticky::Learn { source, sessions } => match source {
                LearnSource::Cookie(name) => {
                    let session = cookie::find(headers, name);
                    (session.and_then(|s| learned(sessions, s)), false)
                }
                LearnSource::EngineIo => {
                    let query = uri.query().unwrap_or("");
                    match key::query_param(query, "sid") {
                        Some(sid) => (learned(sessions, sid), false),
                        None => (None, key::query_param(query, "EIO").is_some()),
                    }
                }
            },
        }
    }

    /// Removes what the client must not pass to the server (wharf's own cookie).
    pub fn strip_request(&self, headers: &mut HeaderMap) {
        if let Sticky::Cookie(cookies) = self {
            cookie::remove(headers, cookies.name());
        }
    }

    /// Learns a session from the response of `server`, where the source is a cookie.
    pub fn learn_from_response(&self, server: SocketAddr, headers: &HeaderMap, now: Instant) {
        if let Sticky::Learn {
            source: LearnSource::Cookie(name),
            sessions,
        } = self
        {
            for value in cookie::set_cookie_values(headers, name) {
                sessions.insert(value, server, now);
            }
        }
    }

    /// Remembers a learned session key (Engine.IO `sid`).
    pub fn learn(&self, key: String, server: SocketAddr, now: Instant) {
        if let Sticky::Learn { sessions, .. } = self {
            sessions.insert(key, server, now);
        }
    }
}

/// Works out a request's affinity for a pool.
pub fn affinity(
    sticky: Option<&Sticky>,
    hash: Option<&crate::config::HashKey>,
    headers: &HeaderMap,
    uri: &Uri,
    client_ip: IpAddr,
    position_of: &dyn Fn(SocketAddr) -> Option<usize>,
) -> Affinity {
    let (pinned, engine_io_handshake) = sticky.map_or((None, false), |s| {
        s.pin(headers, uri, Instant::now(), position_of)
    });
    Affinity {
        pinned,
        hash: hash.and_then(|key| key::hash_of(key, headers, uri, client_ip)),
        engine_io_handshake,
    }
}
