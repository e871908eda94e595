//! `GET /api/status`: everything the status page shows, in one JSON answer —
//! every listener with its routes, every pool with its servers' live state
//! and counters. Counters are totals since wharf started (kept across
//! reloads); the page turns them into rates by comparing two answers.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use super::json::{PoolView, ServerView, unix_ms};
use crate::metrics::{ByClass, Class, ServerMetrics, route_name};
use crate::snapshot::{Shared, Snapshot};

/// The whole answer.
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub started_unix_ms: i64,
    pub at_unix_ms: i64,
    pub access_log_dropped: u64,
    pub listeners: Vec<ListenerStatus>,
    pub pools: Vec<PoolStatus>,
}

#[derive(Debug, Serialize)]
pub struct ListenerStatus {
    pub name: String,
    pub bind: String,
    pub tls: bool,
    pub connections_open: usize,
    pub connections_accepted: u64,
    pub tls_handshakes: u64,
    pub tls_handshake_failures: u64,
    pub routes: Vec<RouteStatus>,
}

#[derive(Debug, Serialize)]
pub struct RouteStatus {
    /// As in metrics: host and path prefix, e.g. `*/socket.io/`.
    pub name: String,
    pub pool: String,
    /// Answers by status class (`"2xx"`: n), wharf's own errors included.
    pub requests: BTreeMap<&'static str, u64>,
    pub websockets_open: i64,
    pub websockets_opened: u64,
    pub upgrade_failures: u64,
}

#[derive(Debug, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub balance: &'static str,
    pub max_connections: Option<usize>,
    pub queue_size: usize,
    pub queued: usize,
    pub servers: Vec<ServerStatus>,
}

/// A server as `GET /api/pools/{pool}` shows it, plus its counters.
#[derive(Debug, Serialize)]
pub struct ServerStatus {
    #[serde(flatten)]
    pub view: ServerView,
    pub requests: u64,
    pub responses: BTreeMap<&'static str, u64>,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
    pub connect_failures: u64,
    pub retries: u64,
    pub ejections: u64,
    pub tunnels_open: i64,
}

impl ServerStatus {
    fn of(view: ServerView, counters: &ServerMetrics) -> ServerStatus {
        ServerStatus {
            view,
            requests: counters.requests.get(),
            responses: classes(&counters.responses),
            bytes_to_server: counters.bytes.to_server.get(),
            bytes_to_client: counters.bytes.to_client.get(),
            connect_failures: counters.connect_failures.get(),
            retries: counters.retries.get(),
            ejections: counters.ejections.get(),
            tunnels_open: counters.tunnels_open.get(),
        }
    }
}

fn classes(by_class: &ByClass) -> BTreeMap<&'static str, u64> {
    Class::ALL
        .iter()
        .zip(&by_class.0)
        .map(|(class, counter)| (class.name(), counter.get()))
        .collect()
}

/// The status of `snapshot`, with the counters and listeners of `shared`.
pub fn status(snapshot: &Snapshot, shared: &Shared) -> Status {
    let metrics = &shared.registry.metrics;
    let open = |name: &str| {
        shared
            .registry
            .listeners
            .with(|live| live.get(name).map_or(0, |l| l.open_connections()))
    };
    let listeners = snapshot
        .config
        .listeners
        .iter()
        .map(|listener| {
            let counters = metrics.listener(&listener.name);
            let routes = listener
                .routes
                .iter()
                .enumerate()
                .map(|(index, route)| {
                    let name = route_name(route);
                    let counters = match snapshot.routes.get(&listener.name, index) {
                        Some(counters) => counters.clone(),
                        None => Arc::new(metrics.route(&listener.name, &name)),
                    };
                    RouteStatus {
                        name,
                        pool: route.pool.clone(),
                        requests: classes(&counters.requests),
                        websockets_open: counters.websockets_open.get(),
                        websockets_opened: counters.websockets_opened.get(),
                        upgrade_failures: counters.upgrade_failures.get(),
                    }
                })
                .collect();
            ListenerStatus {
                name: listener.name.clone(),
                bind: listener.bind.to_string(),
                tls: listener.tls.is_some(),
                connections_open: open(&listener.name),
                connections_accepted: counters.accepted.get(),
                tls_handshakes: counters.tls_handshakes.get(),
                tls_handshake_failures: counters.tls_failures.get(),
                routes,
            }
        })
        .collect();
    // In config order: the snapshot's own map has none.
    let pools = snapshot
        .config
        .pools
        .iter()
        .filter_map(|config| snapshot.pool(&config.name))
        .map(|pool| {
            let view = PoolView::of(pool);
            let servers = view
                .servers
                .into_iter()
                .zip(&pool.servers)
                .map(|(view, server)| ServerStatus::of(view, &server.metrics))
                .collect();
            PoolStatus {
                name: view.name,
                balance: view.balance,
                max_connections: view.max_connections,
                queue_size: view.queue_size,
                queued: view.queued,
                servers,
            }
        })
        .collect();
    Status {
        version: env!("CARGO_PKG_VERSION"),
        started_unix_ms: unix_ms(metrics.started()),
        at_unix_ms: unix_ms(SystemTime::now()),
        access_log_dropped: metrics.access_log_dropped().get(),
        listeners,
        pools,
    }
}
