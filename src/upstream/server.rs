//! One server's live state: health and admin state, load, idle connections,
//! drain. A server is known by its identity (pool name, address); the same
//! [`Server`] lives on across reloads, which only change its settings.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use super::idle::IdlePool;
use super::state::{AdminState, Change, Outcome, ServerState};
use crate::balance::SlowStart;
use crate::config::PoolConfig;
use crate::metrics::ServerMetrics;
use crate::tunnel::{CLOSE_HANDSHAKE_TIMEOUT, OpenTunnels};

/// Cause recorded when a reload takes a server out of its pool.
const REMOVED_BY_RELOAD: &str = "removed from the config by a reload";

/// One server of a pool, with the state that changes while wharf runs.
#[derive(Debug)]
pub struct Server {
    pub address: SocketAddr,
    /// The pool this server belongs to: with `address`, its identity.
    pub pool: String,
    weight: AtomicU32,
    /// Requests in flight plus open tunnels; what `least_conn` balances on
    /// and `max_connections` limits.
    active: AtomicUsize,
    /// `usize::MAX` when the pool sets no limit.
    max_connections: AtomicUsize,
    /// Idle keep-alive connections to this server, ready for reuse.
    pub idle: IdlePool,
    state: Mutex<ServerState>,
    /// `state.is_serving()` ignoring ejection, mirrored for the request path.
    serving: AtomicBool,
    /// Whether an ejection may be in force; lets the request path skip the lock.
    maybe_ejected: AtomicBool,
    /// A failure streak or an ejection is on record, which a success must
    /// clear under the lock; otherwise a success skips the lock.
    passive_record: AtomicBool,
    /// When set, tunnels to this server must end by this instant (drain);
    /// `tunnels` cuts those still open then.
    drain_deadline: Mutex<Option<Instant>>,
    /// Wakes a request queued in the pool when this server frees a slot.
    released: Arc<Notify>,
    /// The pool's settings as of the last reload.
    settings: ArcSwap<PoolConfig>,
    /// Taken out of its pool by a reload; kept while its tunnels end.
    removed: AtomicBool,
    /// The removal is what drained it (it was ready before).
    drained_by_removal: AtomicBool,
    /// Whether an active health-check task runs for it.
    checking: AtomicBool,
    /// Its open tunnels (closed gently when it is drained) and websocket counters.
    pub tunnels: Arc<OpenTunnels>,
    /// Ramps its share of new connections up after it becomes usable.
    pub slow_start: SlowStart,
    /// Its counters, kept with its identity across reloads.
    pub metrics: ServerMetrics,
}

impl Server {
    /// A new server of the pool `config`, starting up and ready.
    pub fn new(
        config: Arc<PoolConfig>,
        address: SocketAddr,
        weight: u32,
        released: Arc<Notify>,
        metrics: ServerMetrics,
    ) -> Self {
        let server = Server {
            address,
            pool: config.name.clone(),
            weight: AtomicU32::new(weight),
            active: AtomicUsize::new(0),
            max_connections: AtomicUsize::new(usize::MAX),
            idle: IdlePool::new(0, config.timeouts.server_idle),
            state: Mutex::new(ServerState::default()),
            serving: AtomicBool::new(true),
            maybe_ejected: AtomicBool::new(false),
            passive_record: AtomicBool::new(false),
            drain_deadline: Mutex::new(None),
            released,
            settings: ArcSwap::new(config.clone()),
            removed: AtomicBool::new(false),
            drained_by_removal: AtomicBool::new(false),
            checking: AtomicBool::new(false),
            tunnels: OpenTunnels::new(),
            slow_start: SlowStart::default(),
            metrics,
        };
        server.configure(config, weight);
        server
    }

    /// Applies the pool's settings from a new config; the live state stays.
    pub fn configure(&self, config: Arc<PoolConfig>, weight: u32) {
        self.weight.store(weight, Ordering::Relaxed);
        self.max_connections.store(
            config.max_connections.unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
        // A connection that starts with a client's PROXY header names that
        // client: it can never serve another, so none is kept idle.
        let idle = match config.send_proxy_protocol {
            Some(_) => 0,
            None => config.idle_connections,
        };
        self.idle.set_limits(idle, config.timeouts.server_idle);
        self.settings.store(config);
    }

    /// The pool's settings as of the last reload.
    pub fn settings(&self) -> Arc<PoolConfig> {
        self.settings.load_full()
    }

    pub fn weight(&self) -> u32 {
        self.weight.load(Ordering::Relaxed)
    }

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

    /// Whether a passive ejection is in force now.
    pub fn is_ejected(&self) -> bool {
        self.maybe_ejected.load(Ordering::Relaxed)
            && self
                .lock()
                .ejected_until
                .is_some_and(|until| Instant::now() < until)
    }

    pub(super) fn has_free_slot(&self) -> bool {
        self.active() < self.max_connections.load(Ordering::Relaxed)
    }

    /// Counts one request or tunnel on this server, unless it is at its limit.
    pub(super) fn try_acquire(self: &Arc<Self>) -> Option<ActiveGuard> {
        let max = self.max_connections.load(Ordering::Relaxed);
        self.active
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()?;
        Some(ActiveGuard {
            server: self.clone(),
        })
    }

    /// Records what a request says of the server (passive health);
    /// `may_eject` says whether its pool can spare it (see
    /// [`super::Pool::record_outcome`]).
    pub fn record_outcome(&self, outcome: Outcome, cause: &str, may_eject: impl FnOnce() -> bool) {
        if outcome == Outcome::Success && !self.passive_record.load(Ordering::Relaxed) {
            return;
        }
        let policy = self.settings.load().ejection;
        let mut state = self.lock();
        let change = state.record_outcome(outcome, &policy, Instant::now(), cause, may_eject);
        self.passive_record
            .store(!state.passive_clean(), Ordering::Relaxed);
        drop(state);
        if let Some(change) = change {
            self.metrics.ejections.inc();
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
                *self.lock_drain_deadline() = None;
                self.tunnels.stop_closing();
            }
            AdminState::Drain | AdminState::Maintenance => {
                self.idle.clear();
                // Gentle closes spread over the window, well before the hard deadline.
                self.tunnels.close_spread(self.settings.load().drain_window);
                let deadline = Instant::now() + self.settings.load().drain_timeout;
                // An earlier drain's deadline stands: maintenance after drain does not extend it.
                let mut current = self.lock_drain_deadline();
                if current.is_none() {
                    *current = Some(deadline);
                    self.tunnels.cut_at(deadline.into());
                }
            }
        }
        self.log_change(&change);
        Some(change)
    }

    /// A reload took the server out of its pool: it is drained (no new
    /// requests; its tunnels run until they end or the drain ends).
    pub fn remove(&self) {
        self.removed.store(true, Ordering::Relaxed);
        let drained = self
            .set_admin(AdminState::Drain, REMOVED_BY_RELOAD)
            .is_some();
        self.drained_by_removal.store(drained, Ordering::Relaxed);
    }

    /// A reload put a removed server back: it is ready again unless the
    /// operator had drained it (or put it in maintenance) before.
    pub fn restore(&self) {
        if self.removed.swap(false, Ordering::Relaxed)
            && self.drained_by_removal.swap(false, Ordering::Relaxed)
            && self.state().admin == AdminState::Drain
        {
            self.set_admin(AdminState::Ready, "added back to the config by a reload");
        }
    }

    /// Whether a reload took the server out of its pool.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::Relaxed)
    }

    /// Ends this server's tunnels by `deadline` at the latest (shutdown):
    /// gentle closes spread over the pool's `drain_window`, shortened so that
    /// the last close handshake can finish in time.
    pub fn end_tunnels_by(&self, deadline: Instant) {
        let left = deadline.saturating_duration_since(Instant::now());
        let window = left.saturating_sub(CLOSE_HANDSHAKE_TIMEOUT);
        self.tunnels
            .close_spread(window.min(self.settings.load().drain_window));
        let mut current = self.lock_drain_deadline();
        if current.is_none_or(|d| deadline < d) {
            *current = Some(deadline);
            self.tunnels.cut_at(deadline.into());
        }
    }

    /// Marks that a health-check task runs for this server; false if one
    /// already does.
    pub fn start_checking(&self) -> bool {
        !self.checking.swap(true, Ordering::AcqRel)
    }

    /// The health-check task of this server ended.
    pub fn stop_checking(&self) {
        self.checking.store(false, Ordering::Release);
    }

    fn lock_drain_deadline(&self) -> MutexGuard<'_, Option<Instant>> {
        // Plain data, consistent after any panic.
        self.drain_deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn mirror(&self, state: &ServerState) {
        let serving = state.admin == AdminState::Ready && state.health.is_serving();
        let was_serving = self.serving.swap(serving, Ordering::Relaxed);
        if serving && !was_serving {
            self.slow_start.begin(Instant::now());
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
        if self.server.max_connections.load(Ordering::Relaxed) != usize::MAX {
            self.server.released.notify_one();
        }
    }
}
