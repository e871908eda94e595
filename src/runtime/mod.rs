//! The running wharf: turns a validated [`Config`] into listeners and pools,
//! reloads it in place, and stops gracefully.
//!
//! [`start`] binds every listener before returning, so a caller (a test, the
//! demo, `wharf run`) knows the real addresses and that wharf is ready.
//! [`Running::reload`] applies a new config ([`reload`]); [`Running::stop`]
//! is the graceful shutdown of SIGTERM.

mod listeners;
mod reload;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

pub use reload::{ReloadError, ReloadSummary, load_checked};

use crate::access_log::AccessLog;
use crate::config::Config;
use crate::registry::Registry;
use crate::snapshot::{Certificates, Shared, Snapshot};
use crate::{admin, health};

/// Why wharf could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("listener `{name}`: {source}")]
    Tls {
        name: String,
        source: crate::tls::TlsError,
    },
    #[error("listener `{name}` cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    AccessLog(#[from] crate::access_log::AccessLogError),
}

/// How to start, beyond the config.
#[derive(Debug, Default)]
pub struct StartOptions {
    /// The config file, re-read by [`Running::reload`].
    pub config_path: Option<PathBuf>,
    /// Listening sockets handed over by the wharf being replaced, by the
    /// address they were bound as: used instead of binding anew.
    pub inherited: HashMap<SocketAddr, std::net::TcpListener>,
}

/// The admin listener, running.
struct AdminLive {
    bind: SocketAddr,
    local: SocketAddr,
    socket: std::net::TcpListener,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

/// What a running wharf holds beyond [`Shared`].
struct Runtime {
    shared: Arc<Shared>,
    config_path: Option<PathBuf>,
    /// One reload at a time.
    reloading: tokio::sync::Mutex<()>,
    admin: Mutex<Option<AdminLive>>,
}

/// A running wharf: its bound listeners, and the ways to reload and stop it.
#[derive(Clone)]
pub struct Running {
    runtime: Arc<Runtime>,
}

/// Binds every listener of `config` and starts serving on the current tokio runtime.
pub async fn start(config: Config) -> Result<Running, StartError> {
    start_with(config, StartOptions::default()).await
}

/// As [`start`], with a config file to reload from and inherited sockets.
pub async fn start_with(config: Config, options: StartOptions) -> Result<Running, StartError> {
    let certificates = Certificates::load(&config).map_err(|mut errors| {
        let (name, source) = errors.remove(0);
        StartError::Tls { name, source }
    })?;
    let mut inherited = options.inherited;
    let sources = listeners::Sources {
        running: HashMap::new(),
        running_admin: None,
        existing: &|_, _| None,
        inherited: &mut inherited,
    };
    let bound = listeners::bind_all(&config, sources)
        .map_err(|(name, addr, source)| StartError::Bind { name, addr, source })?;
    let registry = Registry::default();
    let reconciled = registry.reconcile(&config);
    let config = Arc::new(config);
    let access_log = match &config.access_log {
        Some(log) => Some(AccessLog::start(
            log,
            registry.metrics.access_log_dropped(),
        )?),
        None => None,
    };
    let snapshot = Snapshot::new(
        config.clone(),
        reconciled.pools,
        certificates,
        reconciled.routes,
    );
    let shared = Arc::new(Shared::new(snapshot, registry, access_log));
    let weak: std::sync::Weak<Shared> = Arc::downgrade(&shared);
    shared.registry.metrics.set_live(weak);
    let runtime = Arc::new(Runtime {
        shared: shared.clone(),
        config_path: options.config_path,
        reloading: tokio::sync::Mutex::new(()),
        admin: Mutex::new(None),
    });
    let running = Running { runtime };
    running.runtime.install(bound, &config);
    health::spawn_checks(&reconciled.added, &shared.stopping);
    tokio::spawn(expire_idle_connections(Arc::downgrade(&shared)));
    Ok(running)
}

impl Runtime {
    /// Starts the freshly bound sockets and stops listeners `config` no longer has.
    fn install(self: &Arc<Self>, bound: listeners::Bound, config: &Config) {
        let shared = &self.shared;
        shared.registry.listeners.with(|live| {
            listeners::apply(shared, live, bound.listeners, config);
        });
        let mut admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        match (bound.admin, &config.admin) {
            (Some(socket), Some(_)) => {
                if let Some(old) = admin.take() {
                    old.stop.cancel();
                }
                *admin = self.spawn_admin(socket);
            }
            (None, None) => {
                if let Some(old) = admin.take() {
                    old.stop.cancel();
                }
            }
            // Unchanged admin bind: it keeps running.
            _ => {}
        }
    }

    fn spawn_admin(self: &Arc<Self>, bound: listeners::BoundSocket) -> Option<AdminLive> {
        let listeners::BoundSocket {
            bind,
            local,
            socket,
            dup,
        } = bound;
        tracing::info!(addr = %local, "admin API listening");
        let stop = self.shared.stopping.child_token();
        let reload: admin::Reload = {
            let runtime = Arc::downgrade(self);
            Arc::new(move || {
                let runtime = runtime.clone();
                Box::pin(async move {
                    let Some(runtime) = runtime.upgrade() else {
                        return Err(vec!["wharf is stopping".to_owned()]);
                    };
                    Running { runtime }
                        .reload()
                        .await
                        .map(|summary| summary.to_string())
                        .map_err(|e| e.sentences())
                })
            })
        };
        let task = tokio::spawn(admin::serve(
            socket,
            self.shared.clone(),
            stop.clone(),
            reload,
        ));
        Some(AdminLive {
            bind,
            local,
            socket: dup,
            stop,
            task,
        })
    }
}

impl Running {
    /// The bound address of the listener called `name` (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.runtime.shared.registry.listeners.local_addr(name)
    }

    /// The bound address of the admin API, if the config has `[admin]`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        let admin = self.runtime.admin.lock().unwrap_or_else(|e| e.into_inner());
        admin.as_ref().map(|a| a.local)
    }

    /// Re-reads every listener's TLS certificates from disk, and nothing else.
    pub fn reload_certificates(&self) {
        self.shared().snapshot().reload_certificates();
    }

    /// The runtime state, for inspection (tests, admin).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.runtime.shared
    }

    /// Every listening socket (listeners and admin), by the address it was
    /// bound as, duplicated: what a new binary takes over.
    pub fn listening_sockets(&self) -> Vec<(SocketAddr, std::net::TcpListener)> {
        let mut sockets: Vec<_> = self.shared().registry.listeners.with(|live| {
            live.values()
                .filter_map(|l| Some((l.bind, l.socket.try_clone().ok()?)))
                .collect()
        });
        let admin = self.runtime.admin.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(admin) = admin.as_ref()
            && let Ok(socket) = admin.socket.try_clone()
        {
            sockets.push((admin.bind, socket));
        }
        sockets
    }

    /// Stops accepting, asks open connections to finish their requests and
    /// close, and returns without waiting for them.
    pub async fn shutdown(self) {
        self.begin_stop();
        self.close_listeners().await;
    }

    /// Ends every accept loop and closes every listening socket (ours: a
    /// new binary that took them over keeps its own).
    async fn close_listeners(&self) {
        let tasks: Vec<_> = self
            .shared()
            .registry
            .listeners
            .with(|live| live.drain().map(|(_, l)| l.accepting).collect());
        for task in tasks {
            let _ = task.await;
        }
        let admin = self
            .runtime
            .admin
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(admin) = admin {
            let _ = admin.task.await;
        }
    }

    /// Graceful shutdown (SIGTERM): stop accepting; requests in flight
    /// finish; idle keep-alive connections close; tunnels are ended; all
    /// within `timeout`. Returns whether everything finished in time.
    pub async fn stop(self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        self.begin_stop();
        // Close the listening sockets now: a client must be refused (and
        // retry elsewhere) rather than wait in a queue nobody reads.
        self.close_listeners().await;
        let shared = self.shared().clone();
        // The hook for tunnels: every server's tunnels end by the deadline,
        // with a margin for the last ones to close.
        let tunnels_end = Instant::now() + timeout.mul_f32(0.9);
        for server in shared.registry.servers() {
            server.end_tunnels_by(tunnels_end.into_std());
        }
        shared.tasks.close();
        let finished = tokio::time::timeout_at(deadline, shared.tasks.wait())
            .await
            .is_ok();
        self.shutdown().await;
        finished
    }

    fn begin_stop(&self) {
        let stopping = &self.shared().stopping;
        if !stopping.is_cancelled() {
            tracing::info!("stopping: no new connections; open ones finish");
            stopping.cancel();
        }
    }
}

/// Closes idle keep-alive connections past their timeout and forgets
/// removed servers with nothing open, once a second, for as long as wharf runs.
async fn expire_idle_connections(shared: std::sync::Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.stopping.is_cancelled() {
            return;
        }
        for server in shared.registry.servers() {
            server.idle.expire();
        }
        shared.registry.prune();
    }
}
