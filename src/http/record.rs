//! What one request leaves behind: its route's counters and its access log
//! line. [`Exchange`] collects, as the request goes, what is known of it
//! (route, pool, server, sticky decision, time spent waiting for the
//! server); [`Exchange::finish`] counts the answer on the route and, when
//! there is an access log, wraps the response body so that the line is
//! written once the body is finished (its size is known then). A tunnel
//! takes a [`TunnelRecord`] instead and writes its line when it ends.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use http::{Method, Response};
use http_body_util::BodyExt;
use tokio::sync::watch;

use super::ClientConnection;
use super::body::{BodyObserver, Observed, ResponseBody};
use crate::access_log::{AccessLog, Entry, StickyDecision, TunnelClose};
use crate::metrics::{OpenGuard, RouteMetrics, ServerMetrics};
use crate::snapshot::Shared;
use crate::sticky::Affinity;
use crate::tunnel::{TunnelEnd, TunnelReport};
use crate::upstream::Pool;

/// One request as it goes through wharf.
#[derive(Debug)]
pub struct Exchange {
    started: Instant,
    method: Method,
    path: String,
    /// The matched route's counters.
    pub route: Option<Arc<RouteMetrics>>,
    pub pool: Option<Arc<Pool>>,
    pub server: Option<SocketAddr>,
    pub sticky: Option<StickyDecision>,
    /// From handing the request to the pool to the response head (queue,
    /// connect, retries included).
    pub server_time: Option<Duration>,
    /// Request body bytes read so far.
    pub upload: Option<watch::Receiver<u64>>,
    /// The client asked for an upgrade the route allows.
    pub upgrade_asked: bool,
}

impl Exchange {
    pub fn started(&self) -> Instant {
        self.started
    }

    pub fn start(method: Method, path: String) -> Exchange {
        Exchange {
            started: Instant::now(),
            method,
            path,
            route: None,
            pool: None,
            server: None,
            sticky: None,
            server_time: None,
            upload: None,
            upgrade_asked: false,
        }
    }

    pub fn method(&self) -> &Method {
        &self.method
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// Counts `response` on its route and, with an access log, returns it
    /// with a body that writes the line once finished. A 101 is the
    /// tunnel's to log.
    pub fn finish(
        self,
        response: Response<ResponseBody>,
        client: &ClientConnection,
        shared: &Shared,
    ) -> Response<ResponseBody> {
        let status = response.status().as_u16();
        match &self.route {
            Some(route) => {
                route.requests.inc(status);
                if self.upgrade_asked && status != 101 {
                    route.upgrade_failures.inc();
                }
            }
            None => client.metrics.unrouted.inc(status),
        }
        let Some(log) = &shared.access_log else {
            return response;
        };
        if status == 101 {
            return response;
        }
        let entry = self.entry(client, status);
        let (parts, body) = response.into_parts();
        let logged = Logged {
            bytes: 0,
            pending: Some((log.clone(), entry, self.started)),
        };
        Response::from_parts(parts, Observed::new(body, logged).boxed())
    }

    /// What the tunnel needs to count itself and write its line.
    pub fn tunnel(&self, client: &ClientConnection, shared: &Shared) -> TunnelRecord {
        TunnelRecord {
            websocket: self.route.as_ref().map(|r| r.websocket_opened()),
            route: self.route.clone(),
            log: shared
                .access_log
                .as_ref()
                .map(|log| Box::new((log.clone(), self.entry(client, 101), self.started))),
        }
    }

    fn entry(&self, client: &ClientConnection, status: u16) -> Entry {
        Entry {
            // Read here, not at the start: most requests are never logged.
            at: SystemTime::now()
                .checked_sub(self.started.elapsed())
                .unwrap_or(UNIX_EPOCH),
            client: client.peer,
            listener: client.listener.clone(),
            route: self.route.as_ref().map(|r| Arc::from(r.name())),
            pool: self.pool.as_ref().map(|p| Arc::from(p.name())),
            server: self.server,
            method: self.method.clone(),
            path: self.path.clone(),
            status,
            bytes_in: self.upload.as_ref().map_or(0, |u| *u.borrow()),
            bytes_out: 0,
            duration: Duration::ZERO,
            server_duration: self.server_time,
            sticky: self.sticky,
            tunnel: None,
        }
    }
}

/// How stickiness placed a request on the server at `position`.
pub fn sticky_decision(
    sticky: bool,
    affinity: &Affinity,
    position: Option<usize>,
) -> Option<StickyDecision> {
    if !sticky {
        return None;
    }
    Some(match affinity.pinned {
        None => StickyDecision::New,
        Some(pinned) if Some(pinned) == position => StickyDecision::Hit,
        Some(_) => StickyDecision::Repinned,
    })
}

/// A tunnel's share of its request: the websocket counted open on its
/// route while it lives, and its access log line.
#[derive(Debug)]
pub struct TunnelRecord {
    websocket: Option<OpenGuard>,
    route: Option<Arc<RouteMetrics>>,
    /// Boxed: an idle websocket's task holds this for hours, and the
    /// entry is large.
    log: Option<Box<(AccessLog, Entry, Instant)>>,
}

impl TunnelRecord {
    /// The upgrade never became a tunnel.
    pub fn abandoned(self) {
        if let Some(route) = &self.route {
            route.upgrade_failures.inc();
        }
    }

    /// Counts what the tunnel carried on its server and its close on its
    /// route, and writes its line.
    pub fn ended(self, report: &TunnelReport, server: &ServerMetrics) {
        server.bytes.to_server.inc_by(report.client_to_server);
        server.bytes.to_client.inc_by(report.server_to_client);
        // Who closed and with which code is the tunnel's to tell; until it
        // follows websocket frames, a tunnel that ended is counted as `none`.
        let close = TunnelClose {
            side: match report.end {
                TunnelEnd::Closed => "peer",
                TunnelEnd::IdleTimeout => "idle",
                TunnelEnd::Drained => "drain",
                TunnelEnd::Error(_) => "error",
                TunnelEnd::Cut | TunnelEnd::ClosedByWharf { .. } => "wharf",
            },
            code: match report.end {
                TunnelEnd::ClosedByWharf { reason, .. } => Some(reason.code()),
                _ => None,
            },
        };
        if let Some(route) = &self.route {
            route.closed(close.code);
        }
        drop(self.websocket);
        if let Some(pending) = self.log {
            let (log, mut entry, started) = *pending;
            entry.bytes_in += report.client_to_server;
            entry.bytes_out = report.server_to_client;
            entry.duration = started.elapsed();
            entry.tunnel = Some(close);
            log.log(entry);
        }
    }
}

/// Writes a response's access log line when its body is finished or
/// dropped (a client that went away mid-body is logged too).
struct Logged {
    bytes: u64,
    pending: Option<(AccessLog, Entry, Instant)>,
}

impl BodyObserver for Logged {
    fn data(&mut self, chunk: &[u8]) {
        self.bytes += chunk.len() as u64;
    }

    fn end(&mut self) {
        if let Some((log, mut entry, started)) = self.pending.take() {
            entry.bytes_out = self.bytes;
            entry.duration = started.elapsed();
            log.log(entry);
        }
    }
}
