//! Metrics: the Prometheus families wharf exports on the admin listener's
//! `/metrics`, and the handles the data path increments.
//!
//! The data path never looks a label set up per event: each listener, route
//! and server gets a handle struct ([`ListenerMetrics`], [`RouteMetrics`],
//! [`ServerMetrics`]) once, holding clones of its counters (an `Arc` inside
//! each), and an event costs one atomic add. Handles are keyed by identity —
//! listener name; listener and route; pool and server address — so a handle
//! taken again after a reload is the same counter, and counters survive
//! reloads. Gauges that mirror live state (health, admin state, active
//! connections, queue length) are not kept up to date on the data path: the
//! [`live`] collector reads them from the live state at scrape time.
//!
//! Names follow Prometheus conventions: `wharf_` prefix, `_total` counters,
//! seconds and bytes. The families and their labels are listed in the README.

mod handles;
pub mod live;

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::config::{Config, HostMatch, RouteConfig};

pub use handles::{ByClass, ByDirection, ListenerMetrics, OpenGuard, RouteMetrics, ServerMetrics};
pub use live::{LiveGauges, LiveSource};

/// The `Content-Type` of [`Metrics::encode`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// A listener's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

/// A route's labels: its listener and a name for the route (its host and
/// path prefix, e.g. `*/socket.io/`), which survives reordering.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub listener: String,
    pub route: String,
}

/// A server's labels: its pool and address.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServerLabels {
    pub pool: String,
    pub server: String,
}

/// An HTTP status class.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Class {
    Informational,
    Success,
    Redirection,
    ClientError,
    ServerError,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Informational,
        Class::Success,
        Class::Redirection,
        Class::ClientError,
        Class::ServerError,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Informational => "1xx",
            Class::Success => "2xx",
            Class::Redirection => "3xx",
            Class::ClientError => "4xx",
            Class::ServerError => "5xx",
        }
    }

    /// The class of `status`; anything out of 100..=599 counts as 5xx.
    pub fn of(status: u16) -> Class {
        match status {
            100..=199 => Class::Informational,
            200..=299 => Class::Success,
            300..=399 => Class::Redirection,
            400..=499 => Class::ClientError,
            _ => Class::ServerError,
        }
    }
}

/// Which way bytes or messages went.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Direction {
    /// From the client, through wharf, to the server.
    ToServer,
    /// From the server back to the client.
    ToClient,
}

impl EncodeLabelValue for Class {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.write_str(self.name())
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        encoder.write_str(match self {
            Direction::ToServer => "to_server",
            Direction::ToClient => "to_client",
        })
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ListenerClassLabels {
    listener: String,
    class: Class,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteClassLabels {
    listener: String,
    route: String,
    class: Class,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteDirectionLabels {
    listener: String,
    route: String,
    direction: Direction,
}

/// A websocket close, by code (`none` when the tunnel ended without a close frame).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteCloseLabels {
    pub listener: String,
    pub route: String,
    pub code: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerClassLabels {
    pool: String,
    server: String,
    class: Class,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerDirectionLabels {
    pool: String,
    server: String,
    direction: Direction,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Response times from 0.25 ms to about 33 s, doubling.
pub(super) fn response_time_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.000_25, 2.0, 18))
}

/// Every family, kept to hand out handles.
struct Families {
    listener_accepted: Family<ListenerLabels, Counter>,
    listener_tls_handshakes: Family<ListenerLabels, Counter>,
    listener_tls_failures: Family<ListenerLabels, Counter>,
    listener_unrouted: Family<ListenerClassLabels, Counter>,

    route_requests: Family<RouteClassLabels, Counter>,
    route_ws_open: Family<RouteLabels, Gauge>,
    route_ws_opened: Family<RouteLabels, Counter>,
    route_ws_messages: Family<RouteDirectionLabels, Counter>,
    route_ws_bytes: Family<RouteDirectionLabels, Counter>,
    route_ws_closes: Family<RouteCloseLabels, Counter>,
    route_upgrade_failures: Family<RouteLabels, Counter>,

    server_requests: Family<ServerLabels, Counter>,
    server_responses: Family<ServerClassLabels, Counter>,
    server_bytes: Family<ServerDirectionLabels, Counter>,
    server_connect_failures: Family<ServerLabels, Counter>,
    server_retries: Family<ServerLabels, Counter>,
    server_ejections: Family<ServerLabels, Counter>,
    server_tunnels: Family<ServerLabels, Gauge>,
    server_response_time: HistogramFamily<ServerLabels>,

    access_log_dropped: Counter,
}

/// The registry and the families behind every handle; one per process,
/// kept across reloads.
pub struct Metrics {
    registry: Registry,
    families: Families,
    started: SystemTime,
    live: Arc<OnceLock<Weak<dyn LiveSource>>>,
    /// What each route's websocket totals were at the last scrape, so that
    /// the counters advance by the difference (see [`Metrics::websocket_totals`]).
    websocket_exported: std::sync::Mutex<HashMap<(String, String), WebSocketTotals>>,
}

/// A route's websocket messages and bytes each way, as the tunnel counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebSocketTotals {
    pub messages_to_server: u64,
    pub messages_to_client: u64,
    pub bytes_to_server: u64,
    pub bytes_to_client: u64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Metrics {
    /// Brings the route's websocket message and byte counters up to the
    /// tunnel's own totals (read at scrape time: the tunnel counts each
    /// message once, in its own counters, and nothing more on its path).
    pub fn websocket_totals(&self, listener: &str, route: &str, now: WebSocketTotals) {
        let key = (listener.to_owned(), route.to_owned());
        let mut exported = self
            .websocket_exported
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let before = exported.insert(key, now).unwrap_or_default();
        let handles = self.route(listener, route);
        let advance = |counter: &Counter, now: u64, before: u64| {
            counter.inc_by(now.saturating_sub(before));
        };
        advance(
            &handles.messages.to_server,
            now.messages_to_server,
            before.messages_to_server,
        );
        advance(
            &handles.messages.to_client,
            now.messages_to_client,
            before.messages_to_client,
        );
        advance(
            &handles.payload_bytes.to_server,
            now.bytes_to_server,
            before.bytes_to_server,
        );
        advance(
            &handles.payload_bytes.to_client,
            now.bytes_to_client,
            before.bytes_to_client,
        );
    }

    /// Where the gauges of live state are read at each scrape (a `Weak`, so
    /// that metrics never keep wharf alive). Set once; later calls are ignored.
    pub fn set_live(&self, live: Weak<dyn LiveSource>) {
        let _ = self.live.set(live);
    }

    /// The families, registered; the live gauges appear once [`Metrics::set_live`] is called.
    pub fn new() -> Metrics {
        let families = Families {
            listener_accepted: Family::default(),
            listener_tls_handshakes: Family::default(),
            listener_tls_failures: Family::default(),
            listener_unrouted: Family::default(),
            route_requests: Family::default(),
            route_ws_open: Family::default(),
            route_ws_opened: Family::default(),
            route_ws_messages: Family::default(),
            route_ws_bytes: Family::default(),
            route_ws_closes: Family::default(),
            route_upgrade_failures: Family::default(),
            server_requests: Family::default(),
            server_responses: Family::default(),
            server_bytes: Family::default(),
            server_connect_failures: Family::default(),
            server_retries: Family::default(),
            server_ejections: Family::default(),
            server_tunnels: Family::default(),
            server_response_time: Family::new_with_constructor(response_time_histogram),
            access_log_dropped: Counter::default(),
        };
        let mut registry = Registry::default();
        let f = &families;
        let r = &mut registry;
        r.register(
            "wharf_listener_connections_accepted",
            "Client connections accepted",
            f.listener_accepted.clone(),
        );
        r.register(
            "wharf_listener_tls_handshakes",
            "TLS handshakes completed",
            f.listener_tls_handshakes.clone(),
        );
        r.register(
            "wharf_listener_tls_handshake_failures",
            "TLS handshakes that failed",
            f.listener_tls_failures.clone(),
        );
        r.register(
            "wharf_listener_unrouted_requests",
            "Requests answered before a route was chosen (malformed, no route, CONNECT), by status class",
            f.listener_unrouted.clone(),
        );
        r.register(
            "wharf_route_requests",
            "Requests answered through the route, by status class (wharf's own errors included)",
            f.route_requests.clone(),
        );
        r.register(
            "wharf_route_websockets_open",
            "Websockets (and other upgrades) open now",
            f.route_ws_open.clone(),
        );
        r.register(
            "wharf_route_websockets_opened",
            "Websockets (and other upgrades) opened",
            f.route_ws_opened.clone(),
        );
        r.register(
            "wharf_route_websocket_messages",
            "Websocket messages, by direction",
            f.route_ws_messages.clone(),
        );
        r.register_with_unit(
            "wharf_route_websocket_payload",
            "Websocket message payload, by direction",
            Unit::Bytes,
            f.route_ws_bytes.clone(),
        );
        r.register(
            "wharf_route_websocket_closes",
            "Websockets closed, by close code (none: no close frame)",
            f.route_ws_closes.clone(),
        );
        r.register(
            "wharf_route_upgrade_failures",
            "Upgrade requests that did not become a tunnel",
            f.route_upgrade_failures.clone(),
        );
        r.register(
            "wharf_server_requests",
            "Requests sent to the server (each attempt)",
            f.server_requests.clone(),
        );
        r.register(
            "wharf_server_responses",
            "Responses from the server, by status class",
            f.server_responses.clone(),
        );
        r.register_with_unit(
            "wharf_server_transferred",
            "Bytes to and from the server (bodies and tunnels), by direction",
            Unit::Bytes,
            f.server_bytes.clone(),
        );
        r.register(
            "wharf_server_connect_failures",
            "Connections to the server that could not be made",
            f.server_connect_failures.clone(),
        );
        r.register(
            "wharf_server_retries",
            "Requests retried on another server after failing on this one",
            f.server_retries.clone(),
        );
        r.register(
            "wharf_server_ejections",
            "Times passive health took the server out",
            f.server_ejections.clone(),
        );
        r.register(
            "wharf_server_tunnels_open",
            "Tunnels (websockets, TCP) open to the server now",
            f.server_tunnels.clone(),
        );
        r.register_with_unit(
            "wharf_server_response_time",
            "Time from sending a request to the server to its response head",
            Unit::Seconds,
            f.server_response_time.clone(),
        );
        r.register(
            "wharf_access_log_dropped_lines",
            "Access log lines dropped because the writer fell behind",
            f.access_log_dropped.clone(),
        );
        let started = SystemTime::now();
        let start_time = Gauge::<i64>::default();
        start_time.set(
            started
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)),
        );
        registry.register_with_unit(
            "wharf_start_time",
            "When wharf started, in seconds since the Unix epoch",
            Unit::Seconds,
            start_time,
        );
        let live = Arc::new(OnceLock::new());
        registry.register_collector(Box::new(live::Collector::new(live.clone())));
        Metrics {
            registry,
            families,
            started,
            live,
            websocket_exported: Default::default(),
        }
    }

    /// The handles of listener `name`.
    pub fn listener(&self, name: &str) -> ListenerMetrics {
        let labels = ListenerLabels {
            listener: name.to_owned(),
        };
        let f = &self.families;
        ListenerMetrics {
            accepted: f.listener_accepted.get_or_create(&labels).clone(),
            tls_handshakes: f.listener_tls_handshakes.get_or_create(&labels).clone(),
            tls_failures: f.listener_tls_failures.get_or_create(&labels).clone(),
            unrouted: ByClass(Class::ALL.map(|class| {
                f.listener_unrouted
                    .get_or_create(&ListenerClassLabels {
                        listener: name.to_owned(),
                        class,
                    })
                    .clone()
            })),
        }
    }

    /// The handles of the route named `route` (see [`route_name`]) on `listener`.
    pub fn route(&self, listener: &str, route: &str) -> RouteMetrics {
        let (listener, route) = (listener.to_owned(), route.to_owned());
        let f = &self.families;
        let by_class = |class| {
            f.route_requests
                .get_or_create(&RouteClassLabels {
                    listener: listener.clone(),
                    route: route.clone(),
                    class,
                })
                .clone()
        };
        let by_direction = |family: &Family<RouteDirectionLabels, Counter>, direction| {
            family
                .get_or_create(&RouteDirectionLabels {
                    listener: listener.clone(),
                    route: route.clone(),
                    direction,
                })
                .clone()
        };
        let labels = RouteLabels {
            listener: listener.clone(),
            route: route.clone(),
        };
        RouteMetrics {
            requests: ByClass(Class::ALL.map(by_class)),
            websockets_open: f.route_ws_open.get_or_create(&labels).clone(),
            websockets_opened: f.route_ws_opened.get_or_create(&labels).clone(),
            messages: ByDirection {
                to_server: by_direction(&f.route_ws_messages, Direction::ToServer),
                to_client: by_direction(&f.route_ws_messages, Direction::ToClient),
            },
            payload_bytes: ByDirection {
                to_server: by_direction(&f.route_ws_bytes, Direction::ToServer),
                to_client: by_direction(&f.route_ws_bytes, Direction::ToClient),
            },
            upgrade_failures: f.route_upgrade_failures.get_or_create(&labels).clone(),
            closes: f.route_ws_closes.clone(),
            labels,
        }
    }

    /// The handles of server `address` in `pool`.
    pub fn server(&self, pool: &str, address: SocketAddr) -> ServerMetrics {
        let labels = ServerLabels {
            pool: pool.to_owned(),
            server: address.to_string(),
        };
        let f = &self.families;
        let by_class = |class| {
            f.server_responses
                .get_or_create(&ServerClassLabels {
                    pool: labels.pool.clone(),
                    server: labels.server.clone(),
                    class,
                })
                .clone()
        };
        let by_direction = |direction| {
            f.server_bytes
                .get_or_create(&ServerDirectionLabels {
                    pool: labels.pool.clone(),
                    server: labels.server.clone(),
                    direction,
                })
                .clone()
        };
        ServerMetrics {
            requests: f.server_requests.get_or_create(&labels).clone(),
            responses: ByClass(Class::ALL.map(by_class)),
            bytes: ByDirection {
                to_server: by_direction(Direction::ToServer),
                to_client: by_direction(Direction::ToClient),
            },
            connect_failures: f.server_connect_failures.get_or_create(&labels).clone(),
            retries: f.server_retries.get_or_create(&labels).clone(),
            ejections: f.server_ejections.get_or_create(&labels).clone(),
            tunnels_open: f.server_tunnels.get_or_create(&labels).clone(),
            response_time: f.server_response_time.get_or_create(&labels).clone(),
        }
    }

    /// When this process's metrics began (wharf's start).
    pub fn started(&self) -> SystemTime {
        self.started
    }

    /// Counts access log lines the writer had no room for.
    pub fn access_log_dropped(&self) -> Counter {
        self.families.access_log_dropped.clone()
    }

    /// Everything, in the OpenMetrics text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::with_capacity(16 * 1024);
        // Writing to a String fails only if a collector fails, and ours do not.
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
            text.push_str("# EOF\n");
        }
        text
    }
}

/// The metric handles of every listener's routes, by listener name, in
/// the config's route order: what a request takes its route's handles from
/// (one map lookup by listener name, no label set hashed).
#[derive(Debug, Clone, Default)]
pub struct RouteHandles(HashMap<String, Vec<Arc<RouteMetrics>>>);

impl RouteHandles {
    pub fn new(config: &Config, metrics: &Metrics) -> RouteHandles {
        let by_listener = config
            .listeners
            .iter()
            .map(|listener| {
                let routes = listener
                    .routes
                    .iter()
                    .map(|route| Arc::new(metrics.route(&listener.name, &route_name(route))))
                    .collect();
                (listener.name.clone(), routes)
            })
            .collect();
        RouteHandles(by_listener)
    }

    /// The handles of route `index` (in config order) of `listener`.
    pub fn get(&self, listener: &str, index: usize) -> Option<&Arc<RouteMetrics>> {
        self.0.get(listener)?.get(index)
    }
}

/// The name metrics and the status page give a route: its host (`*` for
/// any) and path prefix (`/` for any), e.g. `*/socket.io/` or
/// `*.example.com/`; a TLS passthrough route is `sni:NAME`. Routes are
/// named by what they match, so that a reload that reorders them keeps
/// their counters.
pub fn route_name(route: &RouteConfig) -> String {
    let host = |h: &HostMatch| match h {
        HostMatch::Exact(name) => name.clone(),
        HostMatch::Suffix(suffix) => format!("*{suffix}"),
    };
    if let Some(sni) = &route.sni {
        return format!("sni:{}", host(sni));
    }
    format!(
        "{}{}",
        route.host.as_ref().map_or_else(|| "*".to_owned(), host),
        route.path_prefix.as_deref().unwrap_or("/")
    )
}

#[cfg(test)]
mod tests;
