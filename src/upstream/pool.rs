//! A pool as a snapshot sees it (servers, balancer, stickiness) and the
//! choice of a server for a request, with a bounded queue when every server
//! is at `max_connections`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::server::{ActiveGuard, Server};
use super::state::Outcome;
use crate::balance::{self, Balancer, Rendezvous, ServerView};
use crate::config::{PoolConfig, StickyConfig};
use crate::metrics::ServerMetrics;
use crate::sticky::learned::LearnedSessions;
use crate::sticky::{Affinity, Sticky};

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

/// What a pool keeps across reloads: its queue and its learned sessions.
/// Known by the pool's name.
#[derive(Debug, Default)]
pub struct PoolLive {
    /// Requests waiting for a free slot.
    queued: AtomicUsize,
    /// Wakes queued requests when a server frees a slot or comes back.
    pub released: Arc<Notify>,
    /// Learned sessions, with the table size and expiry they were made for.
    learned: Mutex<Option<(usize, Duration, Arc<LearnedSessions>)>>,
}

impl PoolLive {
    /// The learned-session table for `config`: the one kept from before if
    /// its size and expiry did not change, else a new one.
    fn learned_sessions(&self, config: &PoolConfig) -> Arc<LearnedSessions> {
        let (size, expiry) = match &config.sticky {
            Some(StickyConfig::Learn(learn)) => (learn.table_size, learn.expiry),
            _ => (1, Duration::ZERO),
        };
        let mut learned = self.learned.lock().unwrap_or_else(|e| e.into_inner());
        match &*learned {
            Some((s, e, table)) if *s == size && *e == expiry => table.clone(),
            _ => {
                let table = Arc::new(LearnedSessions::new(size, expiry));
                *learned = Some((size, expiry, table.clone()));
                table
            }
        }
    }
}

/// A pool as one config snapshot sees it: its config, its servers (live
/// state shared with every other snapshot) and its balancer. Positions in
/// `servers` are only meaningful within this snapshot.
#[derive(Debug)]
pub struct Pool {
    pub config: Arc<PoolConfig>,
    pub servers: Vec<Arc<Server>>,
    balancer: Box<dyn Balancer>,
    /// The consistent-hash table, for `balance = "hash:..."`.
    hashing: Option<Rendezvous>,
    /// Session affinity, if configured.
    pub sticky: Option<Sticky>,
    live: Arc<PoolLive>,
}

/// What one pass over the servers found.
enum Choice {
    Chosen(ActiveGuard),
    /// Some server is serving but every serving one is at its limit.
    Full,
    NoServer,
}

impl Pool {
    /// Records what a request says of `server` (passive health). An
    /// ejection is withheld while it would take out more than
    /// `ejection.max_percent` of the pool (one server always may be), so that
    /// failures a client can provoke never empty a pool.
    pub fn record_outcome(&self, server: &Server, outcome: Outcome, cause: &str) {
        // Counted before taking the server's lock: siblings are looked at
        // under their own locks, never two at once.
        let max_percent = self.config.ejection.max_percent as usize;
        let ejected = match outcome {
            Outcome::Success => 0,
            Outcome::ConnectFailure | Outcome::ServerError => self
                .servers
                .iter()
                .filter(|s| s.address != server.address && s.is_ejected())
                .count(),
        };
        let allowed = ejected == 0 || (ejected + 1) * 100 <= max_percent * self.servers.len();
        let may_eject = || {
            if !allowed {
                tracing::warn!(
                    pool = self.name(), server = %server.address, ejected, max_percent,
                    "not ejecting: the pool's ejection.max_percent is reached"
                );
            }
            allowed
        };
        server.record_outcome(outcome, cause, may_eject);
    }

    /// The pool of `config` over `servers` (its servers' live state, in
    /// config order) and `live`, the pool's own live state.
    pub fn new(config: Arc<PoolConfig>, servers: Vec<Arc<Server>>, live: Arc<PoolLive>) -> Self {
        let balancer = balance::build(config.balance, servers.len());
        let names: Vec<String> = config
            .servers
            .iter()
            .map(|s| s.address.to_string())
            .collect();
        let weights: Vec<u32> = config.servers.iter().map(|s| s.weight).collect();
        let hashing = config
            .hash
            .as_ref()
            .map(|_| Rendezvous::new(&names, &weights));
        let sticky = Sticky::new(&config, &names, || live.learned_sessions(&config));
        Pool {
            config,
            servers,
            balancer,
            hashing,
            sticky,
            live,
        }
    }

    /// A pool of new servers, with nothing kept from before (unit tests).
    pub fn standalone(config: PoolConfig) -> Self {
        let config = Arc::new(config);
        let live = Arc::new(PoolLive::default());
        let servers = config
            .servers
            .iter()
            .map(|s| {
                let server = Server::new(
                    config.clone(),
                    s.address,
                    s.weight,
                    live.released.clone(),
                    ServerMetrics::default(),
                );
                Arc::new(server)
            })
            .collect();
        Pool::new(config, servers, live)
    }

    /// The position of the server at `address` in this snapshot's pool.
    pub fn position_of(&self, address: SocketAddr) -> Option<usize> {
        self.servers.iter().position(|s| s.address == address)
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn server(&self, address: SocketAddr) -> Option<&Arc<Server>> {
        self.servers.iter().find(|s| s.address == address)
    }

    /// Remembers that a learned session key belongs to the server at `address`.
    pub fn learn_session(&self, key: String, address: SocketAddr, now: Instant) {
        if let Some(sticky) = &self.sticky {
            sticky.learn(key, address, now);
        }
    }

    /// Requests waiting in the queue now.
    pub fn queued(&self) -> usize {
        self.live.queued.load(Ordering::Relaxed)
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
        let queued = &self.live.queued;
        if queued.fetch_add(1, Ordering::AcqRel) >= self.config.queue_size {
            queued.fetch_sub(1, Ordering::AcqRel);
            return Err(Unavailable::QueueFull);
        }
        // Leaves the queue however the wait ends, a client going away included.
        let _place = QueuePlace(queued);
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
            let released = self.live.released.notified();
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

    /// With `slow_start`, whether each server may take this pick (see
    /// [`crate::balance::SlowStart`]); empty (every server may) without it.
    fn slow_start_draws(&self) -> Vec<bool> {
        let Some(window) = self.config.slow_start else {
            return Vec::new();
        };
        let now = std::time::Instant::now();
        self.servers
            .iter()
            .map(|s| {
                s.slow_start
                    .admits(now, Some(window), rand::random::<f64>())
            })
            .collect()
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
        // Slow start: a server ramping up is passed over by some picks (one
        // draw per server per pass); pinned clients above are not.
        let mut admitted = self.slow_start_draws();
        let admits = |admitted: &[bool], i: usize| admitted.get(i).copied().unwrap_or(true);
        if let (Some(hashing), Some(hash)) = (&self.hashing, affinity.hash)
            && let Some(index) = hashing.pick(hash, &|i| usable(i) && admits(&admitted, i))
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
                    weight: server.weight(),
                    load: server.active(),
                    usable: usable(i) && admits(&admitted, i),
                }
            };
            if let Some(index) = self.balancer.pick(self.servers.len(), &view) {
                if let Some(guard) = self.servers.get(index).and_then(|s| s.try_acquire()) {
                    return Choice::Chosen(guard);
                }
                continue;
            }
            // Every usable server was passed over by slow start: better one of
            // them than none.
            if admitted.iter().any(|a| !a) {
                admitted.clear();
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
