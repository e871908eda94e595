//! A response body that learns the Engine.IO session id of a handshake
//! answer as it passes (see [`crate::sticky::engine_io`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::body::BodyObserver;

use crate::sticky::engine_io::{SCAN_LIMIT, find_sid};
use crate::upstream::Pool;

/// Learns the session id of an Engine.IO handshake answer from the start
/// of its body (at most [`SCAN_LIMIT`] bytes are looked at).
pub struct LearnSid {
    pool: Arc<Pool>,
    server: SocketAddr,
    seen: Vec<u8>,
    done: bool,
}

impl LearnSid {
    pub fn new(pool: Arc<Pool>, server: SocketAddr) -> Self {
        LearnSid {
            pool,
            server,
            seen: Vec::new(),
            done: false,
        }
    }
}

impl BodyObserver for LearnSid {
    fn data(&mut self, chunk: &[u8]) {
        if self.done {
            return;
        }
        let room = SCAN_LIMIT - self.seen.len();
        self.seen.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if let Some(sid) = find_sid(&self.seen) {
            self.pool
                .learn_session(sid.to_owned(), self.server, Instant::now());
            self.done = true;
        } else if self.seen.len() >= SCAN_LIMIT {
            self.done = true;
        }
        if self.done {
            self.seen = Vec::new();
        }
    }
}
