//! Reloading the config in place (SIGHUP, `POST /api/reload`): the file is
//! read and fully checked off the async workers, certificates included; on
//! any error nothing changes. Otherwise new listeners are bound (a bind
//! failure fails the whole reload), the registry is reconciled with the new
//! config, the new snapshot swapped in, and listeners started or stopped.

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::Running;
use super::listeners::{self, Kind, Sources};
use crate::config::{Config, ConfigErrors};
use crate::health;
use crate::snapshot::{Certificates, Snapshot};

/// Why a reload changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("wharf was started without a config file to reload from")]
    NoFile,
    #[error("the config has errors:\n{0}")]
    Invalid(ConfigErrors),
    #[error("certificates cannot be loaded: {}", .0.join("; "))]
    Certificates(Vec<String>),
    #[error("listener `{name}` cannot bind {addr}: {source}")]
    Bind {
        name: String,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the reload task failed: {0}")]
    Task(String),
}

impl ReloadError {
    /// Every mistake as its own sentence (`file:line:col: sentence` for the
    /// config's), as logged and as the admin API returns them.
    pub fn sentences(&self) -> Vec<String> {
        match self {
            ReloadError::Invalid(errors) => errors.iter().map(|e| e.to_string()).collect(),
            ReloadError::Certificates(errors) => errors.clone(),
            other => vec![other.to_string()],
        }
    }
}

/// What a reload changed.
#[derive(Debug, Default)]
pub struct ReloadSummary {
    pub listeners_started: Vec<String>,
    pub listeners_stopped: Vec<String>,
    pub servers_added: Vec<String>,
    pub servers_removed: Vec<String>,
}

impl fmt::Display for ReloadSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list = |items: &[String]| match items.is_empty() {
            true => "none".to_owned(),
            false => items.join(", "),
        };
        write!(
            f,
            "reloaded: listeners started: {}; stopped: {}; servers added: {}; removed (draining): {}",
            list(&self.listeners_started),
            list(&self.listeners_stopped),
            list(&self.servers_added),
            list(&self.servers_removed),
        )
    }
}

/// Reads and checks a config file as `wharf check` does: the config, then
/// every certificate. Blocking: call it off the async workers.
pub fn load_checked(path: &Path) -> Result<(Config, Certificates), ReloadError> {
    let config = crate::config::load(path).map_err(ReloadError::Invalid)?;
    let certificates = Certificates::load(&config).map_err(|errors| {
        ReloadError::Certificates(
            errors
                .into_iter()
                .map(|(listener, e)| format!("{}: listener `{listener}`: {e}", path.display()))
                .collect(),
        )
    })?;
    Ok((config, certificates))
}

impl Running {
    /// Re-reads the config file wharf was started with and applies it.
    pub async fn reload(&self) -> Result<ReloadSummary, ReloadError> {
        let path: PathBuf = self
            .runtime
            .config_path
            .clone()
            .ok_or(ReloadError::NoFile)?;
        // Held from reading the file on, so that of two reloads at once the
        // file read last is the one applied last.
        let _one_at_a_time = self.runtime.reloading.lock().await;
        let loaded = tokio::task::spawn_blocking(move || load_checked(&path))
            .await
            .map_err(|e| ReloadError::Task(e.to_string()))??;
        self.apply(loaded.0, loaded.1)
    }

    /// Applies `config` (already validated) after loading its certificates.
    pub async fn reload_config(&self, config: Config) -> Result<ReloadSummary, ReloadError> {
        let _one_at_a_time = self.runtime.reloading.lock().await;
        let (config, certificates) = tokio::task::spawn_blocking(move || {
            let certificates = Certificates::load(&config).map_err(|errors| {
                ReloadError::Certificates(
                    errors
                        .into_iter()
                        .map(|(listener, e)| format!("listener `{listener}`: {e}"))
                        .collect(),
                )
            })?;
            Ok::<_, ReloadError>((config, certificates))
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))??;
        self.apply(config, certificates)
    }

    /// Applies a checked config; the caller holds the reload lock.
    fn apply(
        &self,
        config: Config,
        certificates: Certificates,
    ) -> Result<ReloadSummary, ReloadError> {
        let runtime = &self.runtime;
        let shared = &runtime.shared;
        let running: HashMap<String, SocketAddr> = shared.registry.listeners.with(|live| {
            live.iter()
                .map(|(name, l)| (name.clone(), l.bind))
                .collect()
        });
        let running_admin = self.admin_bind();
        let existing = |kind, bind: SocketAddr| self.running_socket(kind, bind);
        let mut nothing_inherited = HashMap::new();
        let sources = Sources {
            running: running.clone(),
            running_admin,
            existing: &existing,
            inherited: &mut nothing_inherited,
        };
        let bound = listeners::bind_all(&config, sources)
            .map_err(|(name, addr, source)| ReloadError::Bind { name, addr, source })?;

        // From here on, nothing can fail.
        let mut summary = ReloadSummary {
            listeners_started: bound.listeners.keys().cloned().collect(),
            listeners_stopped: running
                .keys()
                .filter(|name| !config.listeners.iter().any(|l| &l.name == *name))
                .cloned()
                .collect(),
            ..ReloadSummary::default()
        };
        let reconciled = shared.registry.reconcile(&config);
        let describe = |s: &Arc<crate::upstream::Server>| format!("{}/{}", s.pool, s.address);
        summary.servers_added = reconciled.added.iter().map(describe).collect();
        summary.servers_removed = reconciled.removed.iter().map(describe).collect();
        let config = Arc::new(config);
        let servers: Vec<_> = reconciled
            .pools
            .values()
            .flat_map(|pool| pool.servers.iter().cloned())
            .collect();
        shared.swap(Snapshot::new(
            config.clone(),
            reconciled.pools,
            certificates,
            reconciled.routes,
        ));
        runtime.install(bound, &config);
        health::spawn_checks(&servers, &shared.stopping);
        tracing::info!("{summary}");
        Ok(summary)
    }

    fn admin_bind(&self) -> Option<SocketAddr> {
        let admin = self.runtime.admin.lock().unwrap_or_else(|e| e.into_inner());
        admin.as_ref().map(|a| a.bind)
    }

    /// A duplicate of the socket a running listener (or the admin API, for
    /// `Kind::Admin`) has for `bind`, if any.
    fn running_socket(&self, kind: Kind, bind: SocketAddr) -> Option<std::net::TcpListener> {
        match kind {
            Kind::Listener => self.shared().registry.listeners.with(|live| {
                live.values()
                    .find(|l| l.bind == bind)
                    .and_then(|l| l.socket.try_clone().ok())
            }),
            Kind::Admin => {
                let admin = self.runtime.admin.lock().unwrap_or_else(|e| e.into_inner());
                admin
                    .as_ref()
                    .filter(|a| a.bind == bind)
                    .and_then(|a| a.socket.try_clone().ok())
            }
        }
    }
}
