//! Turns a validated [`Config`] into running listeners and pools.
//!
//! [`start`] binds every listener before returning, so a caller (a test, the
//! demo, `wharf run`) knows the real addresses and that wharf is ready.
//! The config lives in an immutable [`Snapshot`] behind an `ArcSwap`, so that
//! a reload can swap it whole while requests in flight keep the one they
//! started with; the state that changes (server load, idle connections)
//! lives in [`crate::upstream`].

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::tls::{CertificateFiles, TlsTerminator};
use crate::upstream::Pool;
use crate::{admin, health, listener};

/// One consistent view of the config and the pools built from it.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Config,
    pools: HashMap<String, Arc<Pool>>,
    /// Each listener's TLS terminator, by listener index.
    tls: Vec<Option<Arc<TlsTerminator>>>,
}

impl Snapshot {
    fn new(config: Config) -> Result<Self, StartError> {
        let pools = config
            .pools
            .iter()
            .map(|p| (p.name.clone(), Arc::new(Pool::new(p.clone()))))
            .collect();
        let tls = config
            .listeners
            .iter()
            .map(|listener| {
                let Some(tls) = &listener.tls else {
                    return Ok(None);
                };
                let files: Vec<CertificateFiles> = tls
                    .certificates
                    .iter()
                    .map(|c| CertificateFiles::new(&c.cert, &c.key))
                    .collect();
                TlsTerminator::load(&files)
                    .map(|t| Some(Arc::new(t)))
                    .map_err(|source| StartError::Tls {
                        name: listener.name.clone(),
                        source,
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(Snapshot { config, pools, tls })
    }

    /// The TLS terminator of listener `index`, if it has TLS.
    pub fn tls(&self, index: usize) -> Option<&Arc<TlsTerminator>> {
        self.tls.get(index)?.as_ref()
    }

    /// Re-reads every listener's certificates (SIGHUP); a listener whose new
    /// files are bad keeps its old certificates, and the error is logged.
    pub fn reload_certificates(&self) {
        for (listener, tls) in self.config.listeners.iter().zip(&self.tls) {
            let Some(tls) = tls else { continue };
            match tls.reload() {
                Ok(()) => tracing::info!(listener = %listener.name, "certificates reloaded"),
                Err(e) => {
                    tracing::error!(listener = %listener.name, error = %e, "certificate reload failed; keeping the old ones")
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

/// What every connection task shares: the current snapshot.
#[derive(Debug)]
pub struct Shared {
    snapshot: ArcSwap<Snapshot>,
}

impl Shared {
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }
}

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
}

/// A running wharf: its bound listeners and a way to stop it.
pub struct Running {
    listeners: Vec<(String, SocketAddr)>,
    admin_addr: Option<SocketAddr>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    shared: Arc<Shared>,
}

impl Running {
    /// The bound address of the listener called `name` (useful with port 0).
    pub fn listener_addr(&self, name: &str) -> Option<SocketAddr> {
        self.listeners
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, addr)| *addr)
    }

    /// The bound address of the admin API, if the config has `[admin]`.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Re-reads every listener's TLS certificates from disk (what SIGHUP does).
    pub fn reload_certificates(&self) {
        self.shared.snapshot().reload_certificates();
    }

    /// The runtime state, for inspection (tests, admin).
    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Stops accepting and closes every listener. Connections already open
    /// are not waited for.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Binds every listener of `config` and starts serving on the current tokio runtime.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let snapshot = Snapshot::new(config)?;
    let config = &snapshot.config;
    let mut bound = Vec::new();
    for (index, listener) in config.listeners.iter().enumerate() {
        let socket = TcpListener::bind(listener.bind)
            .await
            .map_err(|source| StartError::Bind {
                name: listener.name.clone(),
                addr: listener.bind,
                source,
            })?;
        let addr = socket.local_addr().map_err(|source| StartError::Bind {
            name: listener.name.clone(),
            addr: listener.bind,
            source,
        })?;
        bound.push((index, listener.name.clone(), addr, socket));
    }
    let admin_socket = match &config.admin {
        Some(admin) => {
            Some(
                TcpListener::bind(admin.bind)
                    .await
                    .map_err(|source| StartError::Bind {
                        name: "admin".to_owned(),
                        addr: admin.bind,
                        source,
                    })?,
            )
        }
        None => None,
    };

    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
    });
    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let mut listeners = Vec::new();
    for (index, name, addr, socket) in bound {
        tracing::info!(listener = %name, %addr, "listening");
        let task = listener::accept_loop(socket, index, shared.clone(), shutdown_rx.clone());
        tasks.push(tokio::spawn(task));
        listeners.push((name, addr));
    }
    let mut admin_addr = None;
    if let Some(socket) = admin_socket {
        let addr = socket.local_addr().ok();
        if let Some(addr) = addr {
            tracing::info!(%addr, "admin API listening");
        }
        admin_addr = addr;
        let task = admin::serve(socket, shared.clone(), shutdown_rx.clone());
        tasks.push(tokio::spawn(task));
    }
    for pool in shared.snapshot().pools() {
        health::spawn_checks(pool, shutdown_rx.clone());
    }
    tokio::spawn(expire_idle_connections(Arc::downgrade(&shared)));
    Ok(Running {
        listeners,
        admin_addr,
        shutdown,
        tasks,
        shared,
    })
}

/// Closes idle keep-alive connections past their timeout, once a second,
/// for as long as wharf runs.
async fn expire_idle_connections(shared: Weak<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        for pool in shared.snapshot().pools() {
            for server in &pool.servers {
                server.idle.expire();
            }
        }
    }
}
