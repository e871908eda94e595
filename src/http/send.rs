//! Delivering a request to a server of a pool: choose, connect or reuse,
//! send, wait for the response head; retry on another server when that is safe.
//!
//! A request is tried again elsewhere only when the failed server cannot have
//! seen it (the connection failed, or no byte of the request was written),
//! or when it is idempotent with an empty body, so that replaying it cannot
//! do anything twice (RFC 9110 §9.2.2). A response timeout is never retried:
//! a slow server would see the request again and the client wait twice.
//!
//! The `response` timeout runs from the end of the request body: while the
//! body is uploading, `upload_idle` and `min_upload_rate` bound how slowly
//! it may come, so a slow upload is not taken for a slow server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use tokio::sync::watch;

use super::error::ProxyError;
use super::timer::ConnectionTimer;
use crate::config::{PoolTimeouts, ProxyVersion};
use crate::proxy_protocol;
use crate::sticky::Affinity;
use crate::upstream::ExtraField;
use crate::upstream::h1::{self, Failed, RequestHead};
use crate::upstream::{
    ActiveGuard, Outcome, Pool, Server, ServerBody, ServerConnection, UpstreamBody, connect_http,
};

/// A response head from a server, with its body to read from the
/// connection.
pub struct Sent {
    pub response: Response<ServerBody>,
    /// The request's slot on the server.
    pub guard: ActiveGuard,
    /// From handing the request to the pool (queue, connect and earlier
    /// attempts included) to the response head.
    pub server_time: Duration,
}

/// Sends `request` (its head followed by `extra_fields`) to a server of `pool`, trying up to `retries` more servers
/// when delivery failed in a way that is safe to retry. On failure, the error
/// and the server it concerns.
pub async fn send_with_retries(
    pool: &Pool,
    request: Request<UpstreamBody>,
    extra_fields: &[ExtraField],
    response_timer: &ConnectionTimer,
    upload: Option<watch::Receiver<u64>>,
    affinity: &Affinity,
    client: (SocketAddr, SocketAddr),
) -> Result<Sent, (ProxyError, Option<SocketAddr>)> {
    let proxy_header = pool
        .config
        .send_proxy_protocol
        .map(|version| match version {
            ProxyVersion::V1 => proxy_protocol::encode_v1(client.0, client.1),
            ProxyVersion::V2 => proxy_protocol::encode_v2(client.0, client.1),
        });
    let (parts, body) = request.into_parts();
    let head = RequestHead::encode(&parts.method, &parts.uri, &parts.headers, extra_fields);
    let replayable = replayable(&parts.method, &body);
    // The request while no byte of it has gone anywhere.
    let mut unsent = Some(body);
    let mut failed: Vec<SocketAddr> = Vec::new();
    let mut last_failure = None;
    let handed_at = std::time::Instant::now();
    for _ in 0..=pool.config.retries {
        let guard = match pool.acquire(&failed, affinity).await {
            Ok(guard) => guard,
            // After a failure, the failure is what the client should hear about.
            Err(unavailable) => {
                return Err(last_failure.unwrap_or((ProxyError::Unavailable(unavailable), None)));
            }
        };
        let Some(attempt) = unsent.take().or_else(|| replayable.then(no_body)) else {
            break;
        };
        let server = guard.server().clone();
        let sending = Sending {
            timeouts: &pool.config.timeouts,
            response_timer,
            upload: upload.clone(),
            min_upload_rate: pool.config.min_upload_rate,
            head: &head,
            replayable,
            proxy_header: proxy_header.as_deref(),
        };
        server.metrics.requests.inc();
        let sent_at = std::time::Instant::now();
        match send(&server, attempt, sending).await {
            Ok(response) => {
                let status = response.status();
                // One reading ends both: the server's response time (this
                // attempt) and the exchange's (queue and retries included).
                let now = std::time::Instant::now();
                server.metrics.responded(status.as_u16(), now - sent_at);
                let server_time = now - handed_at;
                // Only gateway failures count (as Envoy's
                // `consecutive_gateway_failure`): a 500 is an answer, and one
                // client's requests can provoke it.
                let outcome = match status.as_u16() {
                    502..=504 => Outcome::ServerError,
                    _ => Outcome::Success,
                };
                pool.record_outcome(&server, outcome, status.as_str());
                return Ok(Sent {
                    response,
                    guard,
                    server_time,
                });
            }
            Err(SendError {
                error,
                unsent: returned,
            }) => {
                let outcome = match error {
                    // wharf's own trouble (out of descriptors): nobody's fault
                    // but ours, and another server would fare no better.
                    ProxyError::Connect(ref e) if !e.is_server_fault() => None,
                    ProxyError::Connect(_) => {
                        server.metrics.connect_failures.inc();
                        Some(Outcome::ConnectFailure)
                    }
                    ProxyError::ClientAborted(_) | ProxyError::UploadStalled(_) => None,
                    _ => Some(Outcome::ServerError),
                };
                let Some(outcome) = outcome else {
                    return Err((error, Some(server.address)));
                };
                pool.record_outcome(&server, outcome, &error.to_string());
                let retry = returned.is_some() || (replayable && error.may_retry());
                failed.push(server.address);
                if retry {
                    server.metrics.retries.inc();
                    tracing::info!(
                        pool = pool.name(), server = %server.address, %error,
                        "request not delivered; trying another server"
                    );
                }
                last_failure = Some((error, Some(server.address)));
                if !retry {
                    break;
                }
                unsent = returned;
            }
        }
    }
    Err(last_failure.unwrap_or((
        ProxyError::Unavailable(crate::upstream::Unavailable::NoServer),
        None,
    )))
}

/// Whether the request can be sent again after a failure that may have
/// reached the server: idempotent and bodiless, so that replaying it cannot
/// do anything twice.
fn replayable(method: &Method, body: &UpstreamBody) -> bool {
    let idempotent = matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    );
    idempotent && body.is_end_stream()
}

fn no_body() -> UpstreamBody {
    Either::Right(Empty::<Bytes>::new())
}

struct SendError {
    error: ProxyError,
    /// The request's body, when no byte of the request was sent.
    unsent: Option<UpstreamBody>,
}

/// How one request is sent.
struct Sending<'a> {
    timeouts: &'a PoolTimeouts,
    /// The client connection's: its requests wait for answers one at a time.
    response_timer: &'a ConnectionTimer,
    /// Progress of the client's body (bytes so far), if it has one.
    upload: Option<watch::Receiver<u64>>,
    /// Bytes per second the body must average over each `upload_idle`.
    min_upload_rate: u64,
    /// The request head, the same for every attempt.
    head: &'a RequestHead,
    /// Whether the request is idempotent and bodiless.
    replayable: bool,
    /// The PROXY header that starts every connection, when the pool sends
    /// one (such pools keep no idle connections: see `upstream::Server::configure`).
    proxy_header: Option<&'a [u8]>,
}

/// Sends the request on an idle keep-alive connection to `server` if there is
/// one, else on a new connection, and waits for the response head. A reused
/// connection that the server closed as the request arrived is not the
/// server's failure: the request goes again on a new connection when that is
/// safe (it was not sent, or it can be replayed).
async fn send(
    server: &Arc<Server>,
    body: UpstreamBody,
    sending: Sending<'_>,
) -> Result<Response<ServerBody>, SendError> {
    let mut body = body;
    // The event loop may not have seen yet that the server closed an idle
    // connection: a request that could not be sent again asks the kernel.
    let idle = server
        .idle
        .take()
        .filter(|connection| sending.replayable || connection.is_alive_now());
    if let Some(connection) = idle {
        match send_on(connection, body, server, &sending).await {
            Ok(response) => return Ok(response),
            Err(SendError {
                unsent: Some(unsent),
                ..
            }) => body = unsent,
            Err(e) if sending.replayable && e.error.may_retry() => body = no_body(),
            Err(e) => return Err(e),
        }
    }
    let connect = connect_http(
        server.address,
        sending.timeouts.connect,
        sending.proxy_header,
    );
    let connection = match connect.await {
        Ok(connection) => connection,
        Err(e) => {
            return Err(SendError {
                error: ProxyError::Connect(e),
                unsent: Some(body),
            });
        }
    };
    send_on(connection, body, server, &sending).await
}

async fn send_on(
    connection: ServerConnection,
    body: UpstreamBody,
    server: &Arc<Server>,
    sending: &Sending<'_>,
) -> Result<Response<ServerBody>, SendError> {
    let response_timeout = sending.timeouts.response;
    let timed_out = || SendError {
        error: ProxyError::ResponseTimeout(response_timeout),
        unsent: None,
    };
    let response = h1::send(connection, sending.head, body, Some(server.clone()));
    tokio::pin!(response);
    // While the body uploads, it must bring `min_upload_rate` bytes a second
    // over every `upload_idle` (and at least one byte): a client that
    // trickles its body holds no server slot for long (408). A server that
    // stops reading looks the same; the client is the likelier one, and
    // must not get a healthy server ejected.
    if let Some(mut upload) = sending.upload.clone() {
        let window = sending.timeouts.upload_idle;
        let wanted = (sending.min_upload_rate as f64 * window.as_secs_f64()).max(1.0) as u64;
        let mut window_start = *upload.borrow_and_update();
        let mut deadline = tokio::time::Instant::now() + window;
        loop {
            tokio::select! {
                result = &mut response => return result_of(result),
                changed = upload.changed() => if changed.is_err() { break },
                () = tokio::time::sleep_until(deadline) => {
                    let sent = *upload.borrow_and_update();
                    if sent.saturating_sub(window_start) < wanted {
                        return Err(SendError {
                            error: ProxyError::UploadStalled(window),
                            unsent: None,
                        });
                    }
                    window_start = sent;
                    deadline += window;
                }
            }
        }
    }
    let deadline = sending
        .response_timer
        .deadline(tokio::time::Instant::now() + response_timeout);
    tokio::select! {
        biased;
        result = &mut response => result_of(result),
        () = deadline => Err(timed_out()),
    }
}

fn result_of(
    result: Result<Response<ServerBody>, Failed>,
) -> Result<Response<ServerBody>, SendError> {
    result.map_err(|Failed { error, unsent }| {
        let error = match error {
            h1::SendError::Server(error) => ProxyError::Server(error),
            // The client's own body failed (it went away mid-upload): not the server's doing.
            h1::SendError::ClientBody(error) => ProxyError::ClientAborted(error),
        };
        SendError { error, unsent }
    })
}
