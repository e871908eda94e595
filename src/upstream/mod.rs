//! Upstream: a pool's runtime state — its servers, their state and load,
//! their idle keep-alive connections — and the choice of a server for a
//! request, with a bounded queue when every server is at `max_connections`.
//!
//! The config of a pool ([`PoolConfig`]) is immutable; what changes while wharf
//! runs lives here, in [`Server`] and [`Pool`].

mod connect;
mod idle;
pub mod state;
mod upload;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

pub use connect::{ConnectError, Connection, UpstreamBody, connect_http};
pub use idle::IdlePool;
pub use state::{AdminState, Change, Health, Outcome, ServerState};
pub use upload::Upload;

use crate::balance::{self, Balancer, Maglev, ServerView};
use crate::config::PoolConfig;
use crate::sticky::{Affinity, Sticky};

/// One server of a pool, with the state that changes while wharf runs.
#[derive(Debug)]
pub struct Server {
    pub address: SocketAddr,
    /// Position in the pool's server list (what sticky tables and hashing name).
    pub index: usize,
    pub weight: u32,
    /// The pool this server belongs to, for logs.
    pub pool: String,
    /// Requests in flight plus open tunnels; what `least_conn` balances on
    /// and `max_connections` limits.
    active: AtomicUsize,
    max_connections: Option<usize>,
    /// Idle keep-alive connections to this server, ready for reuse.
    pub idle: IdlePool,
    state: Mutex<ServerState>,
    /// `state.is_serving()` ignoring ejection, mirrored for the request path.
    serving: AtomicBool,
    /// Whether an ejection may be in force; lets the request path skip the lock.
    maybe_ejected: AtomicBool,
    /// When set, tunnels to this server must end by this instant (drain).
    drain_deadline: watch::Sender<Option<Instant>>,
    /// Wakes a request queued in the pool when this server frees a slot.
    released: Arc<Notify>,
    config: Arc<PoolConfig>,
}

impl Server {
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// A copy of the server's state.
    pub fn state(&self) -> ServerState {
        self.lock().clone()
    }

    /// Whether new requests may go to this server now (health, admin state
    /// and ejection; not its connection limit).
    pub fn is_serving(&self) -> bool {
        if !self.serving.load(Ordering::Relaxed) {
            return false;
        }
        if !self.maybe_ejected.load(Ordering::Relaxed) {
            return true;
        }
        let state = self.lock();
        let now = Instant::now();
        // Once the ejection is over, skip the lock again (the past ejection
        // stays recorded, for the next backoff).
        if state.ejected_until.is_none_or(|until| now >= until) {
            self.maybe_ejected.store(false, Ordering::Relaxed);
        }
        state.is_serving(now)
    }

    fn has_free_slot(&self) -> bool {
        self.max_connections.is_none_or(|max| self.active() < max)
    }

    /// Counts one request or tunnel on this server, unless it is at its limit.
    fn try_acquire(self: &Arc<Self>) -> Option<ActiveGuard> {
        let max = self.max_connections.unwrap_or(usize::MAX);
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ActiveGuard {
            server: self.clone(),
        })
    }

    /// Records what a request says of the server (passive health).
    pub fn record_outcome(&self, outcome: Outcome, cause: &str) {
        let change =
            self.lock()
                .record_outcome(outcome, &self.config.ejection, Instant::now(), cause);
        if let Some(change) = change {
            self.maybe_ejected.store(true, Ordering::Relaxed);
            self.idle.clear();
            self.log_change(&change);
        }
    }

    /// Records an active health check's result.
    pub fn record_check(&self, passed: bool, rise: u32, fall: u32, cause: &str) {
        let mut state = self.lock();
        let change = state.record_check(passed, rise, fall, cause);
        self.mirror(&state);
        drop(state);
        if let Some(change) = change {
            if !passed {
                self.idle.clear();
            }
            self.log_change(&change);
        }
    }

    /// Sets the operator's admin state. Drain and maintenance take the server
    /// out of balancing at once, close its idle connections and give its
    /// tunnels until the pool's `drain_timeout`; ready puts it back.
    pub fn set_admin(&self, admin: AdminState, cause: &str) -> Option<Change> {
        let mut state = self.lock();
        let change = state.set_admin(admin, cause);
        self.mirror(&state);
        drop(state);
        let change = change?;
        match admin {
            AdminState::Ready => {
                self.drain_deadline.send_replace(None);
            }
            AdminState::Drain | AdminState::Maintenance => {
                self.idle.clear();
                let deadline = Instant::now() + self.config.drain_timeout;
                // An earlier drain's deadline stands: maintenance after drain does not extend it.
                self.drain_deadline
                    .send_if_modified(|d| d.is_none().then(|| *d = Some(deadline)).is_some());
            }
        }
        self.log_change(&change);
        Some(change)
    }

    /// Resolves when this server's tunnels must end: at the drain deadline,
    /// once the server is drained. Never resolves while it is ready.
    pub fn drained(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut deadlines = self.drain_deadline.subscribe();
        async move {
            loop {
                let deadline = *deadlines.borrow_and_update();
                match deadline {
                    Some(deadline) => {
                        tokio::select! {
                            () = tokio::time::sleep_until(deadline.into()) => return,
                            changed = deadlines.changed() => if changed.is_err() { std::future::pending::<()>().await },
                        }
                    }
                    None => {
                        if deadlines.changed().await.is_err() {
                            std::future::pending::<()>().await;
                        }
                    }
                }
            }
        }
    }

    fn mirror(&self, state: &ServerState) {
        let serving = state.admin == AdminState::Ready && state.health.is_serving();
        let was_serving = self.serving.swap(serving, Ordering::Relaxed);
        if serving && !was_serving {
            // Requests queued while it was out may go to it now.
            self.released.notify_waiters();
        }
        let ejected = state
            .ejected_until
            .is_some_and(|until| Instant::now() < until);
        self.maybe_ejected.store(ejected, Ordering::Relaxed);
    }

    fn log_change(&self, change: &Change) {
        tracing::warn!(
            pool = %self.pool, server = %self.address, change = %change.what, cause = %change.cause,
            "server state changed"
        );
    }

    fn lock(&self) -> MutexGuard<'_, ServerState> {
        // The state is plain data, consistent after any panic.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Counts one request or tunnel on a server for as long as it is held.
#[derive(Debug)]
pub struct ActiveGuard {
    server: Arc<Server>,
}

impl ActiveGuard {
    pub fn server(&self) -> &Arc<Server> {
        &self.server
    }
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.server.active.fetch_sub(1, Ordering::AcqRel);
        if self.server.max_connections.is_some() {
            self.server.released.notify_one();
        }
    }
}

/// Why no server could be had for a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    #[error("no server is up")]
    NoServer,
    #[error("every server is at max_connections and the queue is full")]
    QueueFull,
    #[error("every server stayed at max_connections for the queue timeout")]
    QueueTimeout,
}

/// How often a queued request looks for a server even if not woken.
const QUEUE_RECHECK: Duration = Duration::from_millis(100);

/// A request's place in a pool's queue, given up when dropped.
struct QueuePlace<'a>(&'a AtomicUsize);

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A pool at runtime: its config, its servers and its balancer.
#[derive(Debug)]
pub struct Pool {
    pub config: Arc<PoolConfig>,
    pub servers: Vec<Arc<Server>>,
    balancer: Box<dyn Balancer>,
    /// The consistent-hash table, for `balance = "hash:..."`.
    maglev: Option<Maglev>,
    /// Session affinity, if configured.
    pub sticky: Option<Sticky>,
    /// Requests waiting for a free slot.
    queued: AtomicUsize,
    released: Arc<Notify>,
}

/// What one pass over the servers found.
enum Choice {
    Chosen(ActiveGuard),
    /// Some server is serving but every serving one is at its limit.
    Full,
    NoServer,
}

impl Pool {
    pub fn new(config: PoolConfig) -> Self {
        let config = Arc::new(config);
        let released = Arc::new(Notify::new());
        // A connection that starts with a client's PROXY header names that
        // client: it can never serve another, so none is kept idle.
        let idle_connections = match config.send_proxy_protocol {
            Some(_) => 0,
            None => config.idle_connections,
        };
        let servers = config
            .servers
            .iter()
            .enumerate()
            .map(|(index, s)| {
                Arc::new(Server {
                    address: s.address,
                    index,
                    weight: s.weight,
                    pool: config.name.clone(),
                    active: AtomicUsize::new(0),
                    max_connections: config.max_connections,
                    idle: IdlePool::new(idle_connections, config.timeouts.server_idle),
                    state: Mutex::new(ServerState::default()),
                    serving: AtomicBool::new(true),
                    maybe_ejected: AtomicBool::new(false),
                    drain_deadline: watch::Sender::new(None),
                    released: released.clone(),
                    config: config.clone(),
                })
            })
            .collect::<Vec<_>>();
        let balancer = balance::build(config.balance, servers.len());
        let names: Vec<String> = config
            .servers
            .iter()
            .map(|s| s.address.to_string())
            .collect();
        let weights: Vec<u32> = config.servers.iter().map(|s| s.weight).collect();
        let maglev = config.hash.as_ref().map(|_| Maglev::new(&names, &weights));
        let sticky = Sticky::new(&config, &names);
        Pool {
            config,
            servers,
            balancer,
            maglev,
            sticky,
            queued: AtomicUsize::new(0),
            released,
        }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn server(&self, address: SocketAddr) -> Option<&Arc<Server>> {
        self.servers.iter().find(|s| s.address == address)
    }

    /// Remembers that a learned session key belongs to server `index`.
    pub fn learn_session(&self, key: String, index: usize, now: Instant) {
        if let Some(sticky) = &self.sticky {
            sticky.learn(key, index, now);
        }
    }

    /// Requests waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Chooses a serving server with a free slot, skipping those in `exclude`
    /// (servers that already failed this request), and counts the request on
    /// it. When every serving server is full, waits in the pool's queue, up to
    /// `queue_size` requests and `timeouts.queue` long.
    pub async fn acquire(
        &self,
        exclude: &[SocketAddr],
        affinity: &Affinity,
    ) -> Result<ActiveGuard, Unavailable> {
        match self.choose(exclude, affinity) {
            Choice::Chosen(guard) => return Ok(guard),
            Choice::NoServer => return Err(Unavailable::NoServer),
            Choice::Full => {}
        }
        if self.queued.fetch_add(1, Ordering::AcqRel) >= self.config.queue_size {
            self.queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Unavailable::QueueFull);
        }
        // Leaves the queue however the wait ends, a client going away included.
        let _place = QueuePlace(&self.queued);
        tokio::time::timeout(
            self.config.timeouts.queue,
            self.wait_for_slot(exclude, affinity),
        )
        .await
        .unwrap_or(Err(Unavailable::QueueTimeout))
    }

    async fn wait_for_slot(
        &self,
        exclude: &[SocketAddr],
        affinity: &Affinity,
    ) -> Result<ActiveGuard, Unavailable> {
        loop {
            let released = self.released.notified();
            tokio::pin!(released);
            // Registered before looking, so a slot freed in between is not missed.
            released.as_mut().enable();
            match self.choose(exclude, affinity) {
                Choice::Chosen(guard) => return Ok(guard),
                Choice::NoServer => return Err(Unavailable::NoServer),
                // Also look again now and then: a server can become usable
                // without freeing a slot (back from ejection), and a wake-up
                // can go to a waiter that cannot use the freed server.
                Choice::Full => {
                    let _ = tokio::time::timeout(QUEUE_RECHECK, released).await;
                }
            }
        }
    }

    /// One pass: the pinned server if it can be used, else the key's server on
    /// the hash table, else the balancer's choice.
    fn choose(&self, exclude: &[SocketAddr], affinity: &Affinity) -> Choice {
        let usable = |i: usize| {
            self.servers.get(i).is_some_and(|server| {
                server.is_serving() && !exclude.contains(&server.address) && server.has_free_slot()
            })
        };
        if let Some(index) = affinity.pinned.filter(|&i| usable(i))
            && let Some(guard) = self.servers[index].try_acquire()
        {
            return Choice::Chosen(guard);
        }
        if let (Some(maglev), Some(hash)) = (&self.maglev, affinity.hash)
            && let Some(index) = maglev.pick(hash, &usable)
            && let Some(guard) = self.servers[index].try_acquire()
        {
            return Choice::Chosen(guard);
        }
        // A pick can lose a race for the last slot of a server; try again a few times.
        for _ in 0..4 {
            let mut any_serving = false;
            let view = |i: usize| {
                let server = &self.servers[i];
                ServerView {
                    weight: server.weight,
                    load: server.active(),
                    usable: usable(i),
                }
            };
            if let Some(index) = self.balancer.pick(self.servers.len(), &view) {
                if let Some(guard) = self.servers.get(index).and_then(|s| s.try_acquire()) {
                    return Choice::Chosen(guard);
                }
                continue;
            }
            for server in &self.servers {
                any_serving |= server.is_serving() && !exclude.contains(&server.address);
            }
            return if any_serving {
                Choice::Full
            } else {
                Choice::NoServer
            };
        }
        Choice::Full
    }
}
