//! The config snapshot: one immutable, consistent view of the config, the
//! pools built over it and each listener's TLS certificates, behind an
//! `ArcSwap` that a reload swaps whole. Each request reads the snapshot
//! current when it starts; live state is not here but in the
//! [`Registry`], which every snapshot shares.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::config::{Config, ListenerConfig};
use crate::metrics::live::{LiveListener, LivePool, LiveServer};
use crate::metrics::{LiveGauges, LiveSource, RouteHandles};
use crate::registry::Registry;
use crate::tls::{CertificateFiles, TlsError, TlsTerminator};
use crate::upstream::Pool;

/// One consistent view of the config and the pools built from it.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pools: HashMap<String, Arc<Pool>>,
    /// Each TLS listener's terminator, by listener name.
    tls: HashMap<String, Arc<TlsTerminator>>,
    /// Each route's metric handles (counters live in the registry).
    pub routes: RouteHandles,
}

impl Snapshot {
    pub fn new(
        config: Arc<Config>,
        pools: HashMap<String, Arc<Pool>>,
        tls: Certificates,
        routes: RouteHandles,
    ) -> Self {
        Snapshot {
            config,
            pools,
            tls: tls.0,
            routes,
        }
    }

    /// The listener called `name`; `None` once a reload removed it.
    pub fn listener(&self, name: &str) -> Option<&ListenerConfig> {
        self.config.listeners.iter().find(|l| l.name == name)
    }

    /// The listener a connection accepted by the listener called `name` on
    /// `local` belongs to now: by name, or, when a reload renamed that
    /// listener (same socket, new name), by address. `None` once removed.
    pub fn listener_of(&self, name: &str, local: std::net::SocketAddr) -> Option<&ListenerConfig> {
        self.listener(name).or_else(|| {
            self.config.listeners.iter().find(|l| {
                l.bind.port() == local.port()
                    && (l.bind.ip() == local.ip() || l.bind.ip().is_unspecified())
            })
        })
    }

    /// The TLS terminator of the listener called `name`, if it has TLS.
    pub fn tls(&self, listener: &str) -> Option<&Arc<TlsTerminator>> {
        self.tls.get(listener)
    }

    /// Re-reads every listener's certificates; a listener whose new files
    /// are bad keeps its old certificates, and the error is logged.
    pub fn reload_certificates(&self) {
        for (listener, tls) in &self.tls {
            match tls.reload() {
                Ok(()) => tracing::info!(%listener, "certificates reloaded"),
                Err(e) => {
                    tracing::error!(%listener, error = %e, "certificate reload failed; keeping the old ones")
                }
            }
        }
    }

    pub fn pool(&self, name: &str) -> Option<&Arc<Pool>> {
        self.pools.get(name)
    }

    pub fn pools(&self) -> impl Iterator<Item = &Arc<Pool>> {
        self.pools.values()
    }
}

/// Every TLS listener's certificates, loaded from disk (blocking: call it
/// off the async workers).
#[derive(Debug)]
pub struct Certificates(HashMap<String, Arc<TlsTerminator>>);

impl Certificates {
    /// Loads the certificates of every TLS listener of `config`; each
    /// failure as `listener `NAME`: error`.
    pub fn load(config: &Config) -> Result<Certificates, Vec<(String, TlsError)>> {
        let mut loaded = HashMap::new();
        let mut errors = Vec::new();
        for listener in &config.listeners {
            let Some(tls) = &listener.tls else { continue };
            let files: Vec<CertificateFiles> = tls
                .certificates
                .iter()
                .map(|c| CertificateFiles::new(&c.cert, &c.key))
                .collect();
            match TlsTerminator::load(&files) {
                Ok(terminator) => {
                    loaded.insert(listener.name.clone(), Arc::new(terminator));
                }
                Err(e) => errors.push((listener.name.clone(), e)),
            }
        }
        match errors.is_empty() {
            true => Ok(Certificates(loaded)),
            false => Err(errors),
        }
    }
}

/// What every connection task shares: the current snapshot, the live state,
/// and what shutdown needs.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
    pub registry: Registry,
    /// Every client connection and tunnel, so that shutdown can wait for them.
    pub tasks: TaskTracker,
    /// Cancelled when wharf starts shutting down.
    pub stopping: CancellationToken,
    /// Where access log lines go, as configured at start.
    pub access_log: Option<AccessLog>,
}

impl Shared {
    pub fn new(snapshot: Snapshot, registry: Registry, access_log: Option<AccessLog>) -> Self {
        Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            registry,
            tasks: TaskTracker::new(),
            stopping: CancellationToken::new(),
            access_log,
        }
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Makes `snapshot` the current one; requests already started keep theirs.
    pub fn swap(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }
}

/// The gauges of live state, read at each scrape.
impl LiveSource for Shared {
    fn live_gauges(&self) -> LiveGauges {
        let snapshot = self.snapshot();
        let mut live = LiveGauges::default();
        self.registry.listeners.with(|listeners| {
            for (name, listener) in listeners.iter() {
                live.listeners.push(LiveListener {
                    listener: name.clone(),
                    open: listener.open_connections(),
                });
            }
        });
        let now = std::time::Instant::now();
        for pool in snapshot.pools() {
            live.pools.push(LivePool {
                pool: pool.name().to_owned(),
                queued: pool.queued(),
            });
            for server in &pool.servers {
                let state = server.state();
                live.servers.push(LiveServer {
                    pool: pool.name().to_owned(),
                    server: server.address.to_string(),
                    health: state.health.name(),
                    admin: state.admin.name(),
                    serving: server.is_serving(),
                    ejected: state.ejected_until.is_some_and(|until| now < until),
                    active: server.active(),
                });
            }
        }
        live
    }
}
