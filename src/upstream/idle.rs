//! Idle keep-alive connections to one server, kept for reuse.
//!
//! Bounded in count; a connection idle longer than the pool's `server_idle`
//! timeout is closed rather than reused, so wharf never sends a request on a
//! connection the server is about to close.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use super::ServerConnection as Connection;

#[derive(Debug)]
pub struct IdlePool {
    inner: Mutex<Idle>,
}

#[derive(Debug)]
struct Idle {
    max: usize,
    idle_timeout: Duration,
    /// Most recently used at the back: reused first, as it is the most likely alive.
    connections: VecDeque<(Connection, Duration)>,
}

impl IdlePool {
    pub fn new(max: usize, idle_timeout: Duration) -> Self {
        IdlePool {
            inner: Mutex::new(Idle {
                max,
                idle_timeout,
                connections: VecDeque::new(),
            }),
        }
    }

    /// New limits (a reload); connections beyond the new count are closed.
    pub fn set_limits(&self, max: usize, idle_timeout: Duration) {
        let mut idle = self.lock();
        idle.max = max;
        idle.idle_timeout = idle_timeout;
        while idle.connections.len() > max {
            idle.connections.pop_front();
        }
    }

    /// Takes a live idle connection, if there is one.
    pub fn take(&self) -> Option<Connection> {
        let mut idle = self.lock();
        let idle_timeout = idle.idle_timeout;
        let now = coarse_now();
        while let Some((connection, since)) = idle.connections.pop_back() {
            if now.saturating_sub(since) < idle_timeout && connection.is_alive() {
                return Some(connection);
            }
        }
        None
    }

    /// Keeps `connection` for reuse if there is room; otherwise drops (closes) it.
    pub fn put(&self, connection: Connection) {
        let mut idle = self.lock();
        if idle.max == 0 {
            return;
        }
        if idle.connections.len() >= idle.max {
            // The oldest is the least likely to be reused in time.
            idle.connections.pop_front();
        }
        idle.connections.push_back((connection, coarse_now()));
    }

    /// Closes connections idle for longer than the timeout or closed by the server.
    pub fn expire(&self) {
        let now = coarse_now();
        let mut idle = self.lock();
        let idle_timeout = idle.idle_timeout;
        idle.connections.retain(|(connection, since)| {
            now.saturating_sub(*since) < idle_timeout && connection.is_alive()
        });
    }

    /// Closes every idle connection.
    pub fn clear(&self) {
        self.lock().connections.clear();
    }

    pub fn len(&self) -> usize {
        self.lock().connections.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Idle> {
        // A panic while holding this lock cannot leave the deque inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The monotonic clock to a few milliseconds (the kernel's tick), read
/// without a system call and for less than `Instant::now`: it stamps every
/// connection taken and returned, and idle timeouts are seconds.
fn coarse_now() -> Duration {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}
