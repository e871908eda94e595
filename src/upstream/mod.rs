//! Upstream: a pool's runtime state — its servers, their load, their idle
//! keep-alive connections — and the choice of a server for a request.
//!
//! The config of a pool ([`PoolConfig`]) is immutable; what changes while wharf
//! runs (how many requests a server has in flight, which connections are idle)
//! lives here, in [`Server`].

mod connect;
mod idle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub use connect::{ConnectError, Connection, connect_http};
pub use idle::IdlePool;

use crate::balance::{self, Balancer, ServerView};
use crate::config::PoolConfig;

/// One server of a pool, with the state that changes while wharf runs.
#[derive(Debug)]
pub struct Server {
    pub address: SocketAddr,
    pub weight: u32,
    /// Requests in flight plus open tunnels; what `least_conn` balances on.
    active: AtomicUsize,
    /// Idle keep-alive connections to this server, ready for reuse.
    pub idle: IdlePool,
    /// Until when (ms since [`EPOCH`]) the server is skipped because it could
    /// not be reached; 0 when it is not ejected.
    ejected_until_ms: AtomicU64,
}

/// How long a server that refused a connection is skipped before it is tried
/// again. Passive ejection with a growing backoff, and active health checks,
/// build on this.
pub const EJECT_AFTER_CONNECT_FAILURE: Duration = Duration::from_secs(2);

/// A process-wide time origin, so that instants fit in an atomic.
static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn now_ms() -> u64 {
    EPOCH.elapsed().as_millis() as u64
}

impl Server {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Skips this server for new requests for `duration`.
    pub fn eject(&self, duration: Duration) {
        let until = now_ms() + duration.as_millis() as u64;
        self.ejected_until_ms.store(until.max(1), Ordering::Relaxed);
        self.idle.clear();
    }

    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }
}

/// Counts one request or tunnel on a server for as long as it is held.
#[derive(Debug)]
pub struct ActiveGuard {
    server: Arc<Server>,
}

impl ActiveGuard {
    pub fn new(server: Arc<Server>) -> Self {
        server.active.fetch_add(1, Ordering::Relaxed);
        ActiveGuard { server }
    }

    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.server.active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A pool at runtime: its config, its servers and its balancer.
#[derive(Debug)]
pub struct Pool {
    pub config: PoolConfig,
    pub servers: Vec<Arc<Server>>,
    balancer: Box<dyn Balancer>,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Self {
        let servers = config
            .servers
            .iter()
            .map(|s| {
                Arc::new(Server {
                    address: s.address,
                    weight: s.weight,
                    active: AtomicUsize::new(0),
                    idle: IdlePool::new(config.idle_connections, config.timeouts.server_idle),
                    ejected_until_ms: AtomicU64::new(0),
                })
            })
            .collect::<Vec<_>>();
        let balancer = balance::build(config.balance, servers.len());
        Pool {
            config,
            servers,
            balancer,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// Chooses a server, skipping ejected ones and those in `exclude` (servers
    /// that already failed this request), and counts the request on it.
    pub fn choose(&self, exclude: &[SocketAddr]) -> Option<ActiveGuard> {
        let view = |i: usize| {
            let server = &self.servers[i];
            ServerView {
                weight: server.weight,
                load: server.active(),
                usable: !server.is_ejected() && !exclude.contains(&server.address),
            }
        };
        let index = self.balancer.pick(self.servers.len(), &view)?;
        let server = self.servers.get(index)?;
        Some(ActiveGuard::new(server.clone()))
    }
}
