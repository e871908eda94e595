//! The admin listener: the status page, metrics, and a JSON API for server
//! states, the operator's drain / maintenance / ready, and reload.
//!
//! A small HTTP/1.1 server on its own port (`[admin] bind`). `guard` decides
//! who may use it (token, `Host`, content type; see there), `api` routes the
//! JSON API, `json` and `status` shape its answers, `status.html` is the
//! page. Requests are logged at debug level.
//!
//! # Endpoints
//!
//! | Method | Path | Answer |
//! |---|---|---|
//! | `GET` | `/status` | the status page (HTML, self-contained; `/` redirects here) |
//! | `GET` | `/metrics` | Prometheus metrics (OpenMetrics text) |
//! | `GET` | `/api/status` | `200` everything the page shows: listeners, routes, pools, servers, counters |
//! | `GET` | `/api/pools` | `200` `{"pools": [POOL, ...]}`, in config order |
//! | `GET` | `/api/pools/{pool}` | `200` `POOL`; `404` if there is no such pool |
//! | `POST` | `/api/pools/{pool}/servers/{address}/{state}` | `200` `SERVER` after setting its admin state |
//! | `POST` | `/api/reload` | `200` `{"reloaded": "what changed"}`; `400` `{"errors": ["file:line:col: sentence", ...]}` and nothing changed |
//!
//! `{state}` is `ready`, `drain` or `maintenance`:
//!
//! - `drain`: the server gets no new requests or tunnels; requests in flight
//!   finish, its idle keep-alive connections are closed at once, and its open
//!   tunnels (websockets) are closed when the pool's `drain_timeout` has passed.
//! - `maintenance`: as `drain`, and active health checks stop for the server.
//!   A drain deadline already running (from an earlier `drain`) is kept.
//! - `ready`: the server takes new requests again (once healthy).
//!
//! `{address}` is the server's `IP:port` as in the config: `127.0.0.1:3001`,
//! or `[::1]:3001` for IPv6 (percent-encoded as `%5B%3A%3A1%5D%3A3001` if the
//! client insists). Setting a state the server already has is not an error:
//! the answer is the same `200` and nothing is recorded. The change is
//! recorded in the server's `history` with the cause
//! `admin API from CLIENT_IP:PORT`.
//!
//! `HEAD` is answered wherever `GET` is. Errors are JSON too,
//! `{"error": "a sentence"}`:
//!
//! - `404`: an unknown path, pool or server;
//! - `400`: an unknown state, a malformed address, broken percent-encoding;
//! - `405` (with `Allow`): a method the path does not take;
//! - `413`: a request body over 1 KiB (no endpoint takes one), and the
//!   connection is closed;
//! - `408`: a request body that does not arrive within 10 s;
//! - `431`: a request head over 32 KiB (the listeners' default
//!   `limits.request_head`), and the connection is closed.
//!
//! `POOL`:
//!
//! ```json
//! {
//!   "name": "realtime",
//!   "balance": "least_conn",
//!   "max_connections": 2000,      // per server; null: no limit
//!   "queue_size": 1000,
//!   "queued": 0,                  // requests waiting for a free server now
//!   "servers": [SERVER, ...]      // in config order
//! }
//! ```
//!
//! `SERVER`:
//!
//! ```json
//! {
//!   "address": "127.0.0.1:3001",
//!   "weight": 1,
//!   "active": 3,                  // requests in flight plus open tunnels
//!   "idle_connections": 2,        // keep-alive connections kept for reuse
//!   "serving": false,             // whether new requests may go to it now
//!   "health": {"state": "falling", "count": 1},
//!                                 // "up" | "falling" | "down" | "rising"; count: the
//!                                 // checks in a row behind "falling"/"rising", else null
//!   "admin": "ready",             // "ready" | "drain" | "maintenance"
//!   "ejected": true,              // passive health has taken it out for now
//!   "ejected_remaining_ms": 1840, // null when not ejected
//!   "history": [                  // its last changes, most recent first (at most 16)
//!     {"what": "ejected for 2s", "cause": "cannot connect to server: ...",
//!      "at": "2025-01-31T12:00:00.123Z", "at_unix_ms": 1738324800123}
//!   ]
//! }
//! ```

mod api;
mod guard;
pub(crate) mod json;
mod status;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body::Body as _;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::listener::Acceptor;
use crate::metrics;
use crate::snapshot::{Shared, Snapshot};

/// Reloads the config file (what SIGHUP does): a summary of what changed,
/// or every error, and then nothing changed.
pub type Reload = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = Result<String, Vec<String>>> + Send>>
        + Send
        + Sync,
>;

/// No endpoint takes a body; anything longer than this is refused.
const MAX_REQUEST_BODY: usize = 1024;
/// Time a client has to send a request head, or a (small) body.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Admin connections served at once; more wait in the kernel's backlog.
const MAX_CONNECTIONS: usize = 64;

/// Serves the admin API on `socket` until `stop` is cancelled. Connections
/// still open then are closed.
pub async fn serve(
    socket: TcpListener,
    shared: Arc<Shared>,
    stop: CancellationToken,
    reload: Reload,
) {
    let Ok(local) = socket.local_addr() else {
        tracing::error!("the admin listener has no local address; not serving it");
        return;
    };
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut acceptor = Acceptor::new(socket, limit, "admin".to_owned());
    while let Some((stream, peer, permit)) = acceptor.next(&stop).await {
        let shared = shared.clone();
        let stop = stop.clone();
        let reload = reload.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = serve_connection(stream, peer, local, shared, reload) => {}
                () = stop.cancelled() => {}
            }
            drop(permit);
        });
    }
}

/// Serves one admin connection (keep-alive allowed) until it closes.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    reload: Reload,
) {
    let service =
        service_fn(move |request| handle(request, peer, local, shared.clone(), reload.clone()));
    // What hyper buffers of a head is bounded as on the listeners (its
    // default is about 400 KiB per connection): beyond it, 431 and close.
    let head = crate::config::Limits::default().request_head;
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(REQUEST_TIMEOUT)
        .max_header_size(head)
        .max_buf_size(head)
        .serve_connection(TokioIo::new(stream), service);
    if let Err(e) = connection.await {
        tracing::debug!(client = %peer, error = %e, "admin connection ended with an error");
    }
}

/// hyper's service entry point: reads (and discards) a small body, checks
/// the request is allowed ([`guard`]), then answers it. Never fails.
async fn handle(
    request: Request<Incoming>,
    peer: SocketAddr,
    local: SocketAddr,
    shared: Arc<Shared>,
    reload: Reload,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = request.into_parts();
    let response = match read_small_body(body).await {
        Err(refusal) => refusal,
        Ok(()) => {
            let snapshot = shared.snapshot();
            let token = snapshot
                .config
                .admin
                .as_ref()
                .and_then(|a| a.token.as_deref());
            match guard::Access::new(token, local).check(&parts) {
                Err(refusal) => refusal.response(),
                Ok(()) if parts.uri.path() == "/api/reload" => {
                    if parts.method == Method::POST {
                        reload_now(&reload, peer).await
                    } else {
                        not_allowed(parts.uri.path(), &parts.method, "POST")
                    }
                }
                Ok(()) => answer(&parts.method, parts.uri.path(), peer, &snapshot, &shared),
            }
        }
    };
    tracing::debug!(
        client = %peer, method = %parts.method, path = parts.uri.path(),
        status = response.status().as_u16(), "admin request"
    );
    Ok(response)
}

/// The page, the metrics and the status, else the JSON API.
fn answer(
    method: &Method,
    path: &str,
    peer: SocketAddr,
    snapshot: &Snapshot,
    shared: &Shared,
) -> Response<Full<Bytes>> {
    let page = match path {
        "/" => {
            let mut response = Response::new(Full::new(Bytes::new()));
            *response.status_mut() = StatusCode::FOUND;
            response
                .headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/status"));
            response
        }
        "/status" | "/status/" => with_type(STATUS_PAGE.into(), "text/html; charset=utf-8"),
        "/metrics" => {
            export_websocket_totals(shared);
            with_type(
                shared.registry.metrics.encode().into(),
                metrics::CONTENT_TYPE,
            )
        }
        "/api/status" => api::json(StatusCode::OK, &status::status(snapshot, shared)),
        _ => return api::respond(method, path, peer, snapshot),
    };
    if method != Method::GET && method != Method::HEAD {
        return not_allowed(path, method, "GET, HEAD");
    }
    page
}

/// `405` with `Allow`.
fn not_allowed(path: &str, method: &Method, allow: &'static str) -> Response<Full<Bytes>> {
    let mut response = api::error(
        StatusCode::METHOD_NOT_ALLOWED,
        &format!("{path} takes {allow}, not {method}"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    response
}

/// The status page: one self-contained file, no build step.
const STATUS_PAGE: &str = include_str!("status.html");

fn with_type(body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `POST /api/reload`: reloads the config file and says what changed, or
/// every error (400; then nothing changed).
async fn reload_now(reload: &Reload, peer: SocketAddr) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct Reloaded {
        reloaded: String,
    }
    #[derive(Serialize)]
    struct Refused {
        errors: Vec<String>,
    }
    tracing::info!(client = %peer, "reload asked through the admin API");
    match reload().await {
        Ok(summary) => api::json(StatusCode::OK, &Reloaded { reloaded: summary }),
        Err(errors) => {
            for error in &errors {
                tracing::error!("reload refused: {error}");
            }
            api::json(StatusCode::BAD_REQUEST, &Refused { errors })
        }
    }
}

/// Reads a request body of at most [`MAX_REQUEST_BODY`] bytes, so that the
/// connection can carry the next request; refuses a longer or a slow one.
async fn read_small_body(body: Incoming) -> Result<(), Response<Full<Bytes>>> {
    let refuse = |status: StatusCode, message: &str| {
        let mut response = api::error(status, message);
        // The rest of the body is unread: the connection cannot be reused.
        response.headers_mut().insert(
            http::header::CONNECTION,
            http::HeaderValue::from_static("close"),
        );
        response
    };
    let too_large = || {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the admin API takes no request body over {MAX_REQUEST_BODY} bytes"),
        )
    };
    if body.size_hint().lower() > MAX_REQUEST_BODY as u64 {
        return Err(too_large());
    }
    let read = Limited::new(body, MAX_REQUEST_BODY).collect();
    match tokio::time::timeout(REQUEST_TIMEOUT, read).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(_)) => Err(refuse(
            StatusCode::BAD_REQUEST,
            "the request body could not be read",
        )),
        Err(_) => Err(refuse(
            StatusCode::REQUEST_TIMEOUT,
            "the request body did not arrive in time",
        )),
    }
}

/// Brings the per-route websocket message and byte counters of `/metrics`
/// up to what the tunnels counted.
fn export_websocket_totals(shared: &Shared) {
    use crate::tunnel::Direction;
    for (id, stats) in shared.registry.websocket_routes.all() {
        // The route's name as the metrics label it: host (or `*`) and path prefix.
        let host = if id.host.is_empty() { "*" } else { &id.host };
        let path = if id.path_prefix.is_empty() {
            "/"
        } else {
            &id.path_prefix
        };
        let totals = metrics::WebSocketTotals {
            messages_to_server: stats.messages(Direction::ClientToServer),
            messages_to_client: stats.messages(Direction::ServerToClient),
            bytes_to_server: stats.bytes(Direction::ClientToServer),
            bytes_to_client: stats.bytes(Direction::ServerToClient),
        };
        shared
            .registry
            .metrics
            .websocket_totals(&id.listener, &format!("{host}{path}"), totals);
    }
}
