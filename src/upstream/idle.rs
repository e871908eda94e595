//! Idle keep-alive connections to one server, kept for reuse.
//!
//! Bounded in count; a connection idle longer than the pool's `server_idle`
//! timeout is closed rather than reused, so wharf never sends a request on a
//! connection the server is about to close.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Connection;

#[derive(Debug)]
pub struct IdlePool {
    max: usize,
    idle_timeout: Duration,
    /// Most recently used at the back: reused first, as it is the most likely alive.
    connections: Mutex<VecDeque<(Connection, Instant)>>,
}

impl IdlePool {
    pub fn new(max: usize, idle_timeout: Duration) -> Self {
        IdlePool {
            max,
            idle_timeout,
            connections: Mutex::new(VecDeque::new()),
        }
    }

    /// Takes a live idle connection, if there is one.
    pub fn take(&self) -> Option<Connection> {
        let mut connections = self.lock();
        let now = Instant::now();
        while let Some((connection, since)) = connections.pop_back() {
            if now.duration_since(since) < self.idle_timeout
                && !connection.is_closed()
                && connection.is_ready()
            {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps `connection` for reuse if there is room; otherwise drops (closes) it.
    pub fn put(&self, connection: Connection) {
        if self.max == 0 || connection.is_closed() || !connection.is_ready() {
            return;
        }
        let mut connections = self.lock();
        if connections.len() >= self.max {
            // The oldest is the least likely to be reused in time.
            connections.pop_front();
        }
        connections.push_back((connection, Instant::now()));
    }

    /// Closes connections idle for longer than the timeout or closed by the server.
    pub fn expire(&self) {
        let now = Instant::now();
        self.lock().retain(|(connection, since)| {
            now.duration_since(*since) < self.idle_timeout && !connection.is_closed()
        });
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Connection, Instant)>> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.connections.lock().unwrap_or_else(|e| e.into_inner())
    }
}
