//! Delivering a request to a server of a pool: choose, connect or reuse,
//! send, wait for the response head; retry on another server when that is safe.
//!
//! A request is tried again elsewhere only when the failed server cannot have
//! seen it (the connection failed, or hyper hands the request back unsent),
//! or when it is idempotent with an empty body, so that replaying it cannot
//! do anything twice (RFC 9110 §9.2.2). A response timeout is never retried:
//! a slow server would see the request again and the client wait twice.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;

use super::error::ProxyError;
use crate::config::PoolTimeouts;
use crate::sticky::Affinity;
use crate::upstream::{ActiveGuard, Connection, Outcome, Pool, Server, UpstreamBody, connect_http};

/// A response head from a server, the request's slot on it, and the
/// connection, to reuse once the body is read.
pub type Sent = (Response<Incoming>, ActiveGuard, Connection);

/// Sends `request` to a server of `pool`, trying up to `retries` more servers
/// when delivery failed in a way that is safe to retry. On failure, the error
/// and the server it concerns.
pub async fn send_with_retries(
    pool: &Pool,
    request: Request<UpstreamBody>,
    affinity: &Affinity,
) -> Result<Sent, (ProxyError, Option<SocketAddr>)> {
    let replay = Replay::of(&request);
    let mut request = Some(request);
    let mut failed: Vec<SocketAddr> = Vec::new();
    let mut last_failure = None;
    for _ in 0..=pool.config.retries {
        let guard = match pool.acquire(&failed, affinity).await {
            Ok(guard) => guard,
            // After a failure, the failure is what the client should hear about.
            Err(unavailable) => {
                return Err(last_failure.unwrap_or((ProxyError::Unavailable(unavailable), None)));
            }
        };
        let Some(attempt) = request.take().or_else(|| replay.as_ref().map(Replay::request)) else {
            break;
        };
        let server = guard.server().clone();
        match send(&server, attempt, &pool.config.timeouts).await {
            Ok((response, connection)) => {
                let status = response.status();
                let outcome = match status.is_server_error() {
                    true => Outcome::ServerError,
                    false => Outcome::Success,
                };
                server.record_outcome(outcome, status.as_str());
                return Ok((response, guard, connection));
            }
            Err(SendError { error, unsent }) => {
                let outcome = match error {
                    ProxyError::Connect(_) => Outcome::ConnectFailure,
                    _ => Outcome::ServerError,
                };
                server.record_outcome(outcome, &error.to_string());
                let retry = unsent.is_some()
                    || (replay.is_some() && matches!(error, ProxyError::Server(_)));
                failed.push(server.address);
                if retry {
                    tracing::info!(
                        pool = pool.name(), server = %server.address, %error,
                        "request not delivered; trying another server"
                    );
                }
                last_failure = Some((error, Some(server.address)));
                if !retry {
                    break;
                }
                request = unsent;
            }
        }
    }
    Err(last_failure.unwrap_or((ProxyError::Unavailable(crate::upstream::Unavailable::NoServer), None)))
}

/// What it takes to send an idempotent, bodiless request again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(request: &Request<UpstreamBody>) -> Option<Replay> {
        let idempotent = matches!(
            *request.method(),
            Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
        );
        (idempotent && request.body().is_end_stream()).then(|| Replay {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        })
    }

    fn request(&self) -> Request<UpstreamBody> {
        let mut request = Request::new(Either::Right(Empty::<Bytes>::new()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers.clone();
        request
    }
}

struct SendError {
    error: ProxyError,
    /// The request, when no byte of it was sent.
    unsent: Option<Request<UpstreamBody>>,
}

/// Sends the request on an idle keep-alive connection to `server` if there is
/// one, else on a new connection, and waits for the response head.
async fn send(
    server: &Server,
    request: Request<UpstreamBody>,
    timeouts: &PoolTimeouts,
) -> Result<(Response<Incoming>, Connection), SendError> {
    let mut request = request;
    if let Some(mut connection) = server.idle.take() {
        match send_on(&mut connection, request, timeouts).await {
            Ok(response) => return Ok((response, connection)),
            // The server closed the idle connection just now; a new one is safe.
            Err(SendError {
                unsent: Some(unsent),
                ..
            }) => request = unsent,
            Err(e) => return Err(e),
        }
    }
    let mut connection = match connect_http(server.address, timeouts.connect).await {
        Ok(connection) => connection,
        Err(e) => {
            return Err(SendError {
                error: ProxyError::Connect(e),
                unsent: Some(request),
            });
        }
    };
    let response = send_on(&mut connection, request, timeouts).await?;
    Ok((response, connection))
}

async fn send_on(
    connection: &mut Connection,
    request: Request<UpstreamBody>,
    timeouts: &PoolTimeouts,
) -> Result<Response<Incoming>, SendError> {
    match tokio::time::timeout(timeouts.response, connection.try_send_request(request)).await {
        Err(_) => Err(SendError {
            error: ProxyError::ResponseTimeout(timeouts.response),
            unsent: None,
        }),
        Ok(Ok(response)) => Ok(response),
        Ok(Err(mut e)) => {
            let unsent = e.take_message();
            Err(SendError {
                error: ProxyError::Server(e.into_error()),
                unsent,
            })
        }
    }
}

/// Puts the connection back in the server's idle pool once the response body
/// has been read to the end (hyper reports it ready then).
pub fn return_when_idle(mut connection: Connection, server: Arc<Server>) {
    tokio::spawn(async move {
        if connection.ready().await.is_ok() {
            server.idle.put(connection);
        }
    });
}
