//! The handles the data path holds: plain structs of prometheus-client
//! metrics (each an `Arc` inside), taken once per listener, route and server
//! and cloned freely. Incrementing one is one atomic add; nothing here looks
//! a label set up, except a websocket's close code, once per tunnel.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::{Class, RouteCloseLabels, RouteLabels};

/// One counter per HTTP status class.
#[derive(Clone, Debug, Default)]
pub struct ByClass(pub [Counter; 5]);

impl ByClass {
    /// The counter of `status`'s class.
    pub fn of(&self, status: u16) -> &Counter {
        let index = match Class::of(status) {
            Class::Informational => 0,
            Class::Success => 1,
            Class::Redirection => 2,
            Class::ClientError => 3,
            Class::ServerError => 4,
        };
        &self.0[index]
    }

    /// Counts one answer with `status`.
    pub fn inc(&self, status: u16) {
        self.of(status).inc();
    }

    /// The sum over every class.
    pub fn total(&self) -> u64 {
        self.0.iter().map(Counter::get).sum()
    }
}

/// One counter per direction.
#[derive(Clone, Debug, Default)]
pub struct ByDirection {
    /// Client → server.
    pub to_server: Counter,
    /// Server → client.
    pub to_client: Counter,
}

/// A listener's handles. (Its open connections are read from its
/// connection limit at scrape time.)
#[derive(Clone, Debug, Default)]
pub struct ListenerMetrics {
    pub accepted: Counter,
    pub tls_handshakes: Counter,
    pub tls_failures: Counter,
    /// Requests answered before a route was chosen (malformed, no route,
    /// CONNECT), by status class: the route counters never see them.
    pub unrouted: ByClass,
}

/// A route's handles. The tunnel increments `messages` and `payload_bytes`
/// per websocket message and calls [`RouteMetrics::closed`] once at the end.
#[derive(Clone, Debug)]
pub struct RouteMetrics {
    /// Every answer through the route by status class, wharf's errors included.
    pub requests: ByClass,
    pub websockets_open: Gauge,
    pub websockets_opened: Counter,
    pub messages: ByDirection,
    pub payload_bytes: ByDirection,
    pub upgrade_failures: Counter,
    pub(super) closes: Family<RouteCloseLabels, Counter>,
    pub(super) labels: RouteLabels,
}

impl RouteMetrics {
    /// The route's name, as its `route` label says.
    pub fn name(&self) -> &str {
        &self.labels.route
    }

    /// Counts a websocket as opened, and open until the guard is dropped.
    pub fn websocket_opened(&self) -> OpenGuard {
        self.websockets_opened.inc();
        OpenGuard::new(&self.websockets_open)
    }

    /// Counts a websocket's close by its code; `None`: it ended without a
    /// close frame. Once per tunnel, so the label lookup is affordable.
    pub fn closed(&self, code: Option<u16>) {
        self.close_counter(code).inc();
    }

    /// Closes counted so far with `code` (`None`: without a close frame).
    pub fn closes_with(&self, code: Option<u16>) -> u64 {
        self.close_counter(code).get()
    }

    fn close_counter(&self, code: Option<u16>) -> Counter {
        let code = code.map_or_else(|| "none".to_owned(), |c| c.to_string());
        self.closes
            .get_or_create(&RouteCloseLabels {
                listener: self.labels.listener.clone(),
                route: self.labels.route.clone(),
                code,
            })
            .clone()
    }
}

/// A server's handles (its pool's name and its address are the key).
/// `Default` gives counters registered nowhere (unit tests).
#[derive(Clone, Debug)]
pub struct ServerMetrics {
    /// Each attempt sent to the server (a TCP pool: each connection attempt).
    pub requests: Counter,
    pub responses: ByClass,
    /// Body and tunnel bytes, each way.
    pub bytes: ByDirection,
    pub connect_failures: Counter,
    /// Requests that failed here and were tried on another server.
    pub retries: Counter,
    pub ejections: Counter,
    pub tunnels_open: Gauge,
    pub response_time: Histogram,
}

impl Default for ServerMetrics {
    fn default() -> Self {
        ServerMetrics {
            requests: Counter::default(),
            responses: ByClass::default(),
            bytes: ByDirection::default(),
            connect_failures: Counter::default(),
            retries: Counter::default(),
            ejections: Counter::default(),
            tunnels_open: Gauge::default(),
            response_time: super::response_time_histogram(),
        }
    }
}

impl ServerMetrics {
    /// Counts a response head that took `elapsed` after the request was sent.
    pub fn responded(&self, status: u16, elapsed: Duration) {
        self.responses.inc(status);
        self.response_time.observe(elapsed.as_secs_f64());
    }

    /// Counts a tunnel as open until the guard is dropped.
    pub fn tunnel_opened(&self) -> OpenGuard {
        OpenGuard::new(&self.tunnels_open)
    }
}

/// Holds one unit of a gauge (an open connection, websocket or tunnel) and
/// gives it back when dropped, however the holder ends.
#[derive(Debug)]
pub struct OpenGuard(Gauge);

impl OpenGuard {
    fn new(gauge: &Gauge) -> OpenGuard {
        gauge.inc();
        OpenGuard(gauge.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}
