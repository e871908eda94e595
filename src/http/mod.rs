//! HTTP: serves HTTP/1.1 to clients and forwards each request to a server.
//!
//! - [`serve`]: one client connection, driven by hyper, with upgrades enabled.
//! - `proxy`: one request: route, rewrite, forward, stream the answer back.
//! - `send`: delivery to a server of the pool, with retries where safe.
//! - `upgrade`: a 101 answer turned into a tunnel.
//! - `plaintext`: the redirect or refusal for plaintext on a TLS port.
//! - `headers`: hop-by-hop removal and forwarding headers.
//! - `timer`: the connection's sleeps for its requests' header and response timeouts.
//! - `stop`: the connection's watch for the stop signal.
//! - `error`: what a failure costs the client (status, body).

mod body;
mod error;
pub mod framing;
pub mod headers;
mod learn_sid;
mod plaintext;
mod proxy;
mod record;
mod send;
mod stop;
pub mod strict;
mod timer;
mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::OwnedSemaphorePermit;

pub use body::ResponseBody;
pub use error::ProxyError;
pub use plaintext::serve_plaintext_answer;

use tokio_util::sync::CancellationToken;

use crate::snapshot::Shared;

/// How long a connection told to stop still waits for a request that may be
/// on its way before it closes when idle.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// What wharf knows of a client connection, for every request on it.
#[derive(Debug)]
pub struct ClientConnection {
    /// The client's address (later: as told by PROXY protocol).
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
    /// The listener's name: each request looks it up in the current snapshot.
    pub listener: Arc<str>,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The listener's counters (requests answered before a route was chosen).
    pub metrics: Arc<crate::metrics::ListenerMetrics>,
    /// The connection's place under the listener's `max_connections`, held
    /// for as long as the connection lives; a tunnel takes it over at an
    /// upgrade ([`ClientConnection::take_slot`]).
    pub slot: std::sync::Mutex<Option<OwnedSemaphorePermit>>,
}

impl ClientConnection {
    /// The listener place, for a tunnel to hold instead of the whole
    /// connection (an idle websocket holds it for hours).
    pub fn take_slot(&self) -> Option<OwnedSemaphorePermit> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

/// Serves one client connection (plain TCP or TLS) until it closes. Once
/// `stop` is cancelled, the request in flight finishes and the connection
/// closes (an idle one at once).
pub async fn serve<I>(io: I, client: ClientConnection, shared: Arc<Shared>, stop: CancellationToken)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some((timeouts, limits)) = shared
        .snapshot()
        .listener_of(&client.listener, client.local)
        .map(|l| (l.timeouts, l.limits))
    else {
        return;
    };
    let client = Arc::new(client);
    let peer = client.peer;
    let (io, findings) = framing::Tapped::new(io, timeouts.client_write);
    // Held by the service, which hyper drops at an upgrade: a websocket
    // does not keep it.
    let forwarding = Arc::new(headers::ClientForwarding::new(
        client.peer.ip(),
        client.proto,
        client.local.port(),
    ));
    // The response timeouts of the connection's requests, one after another.
    let response_timer = timer::ConnectionTimer::default();
    let service = service_fn(move |mut request: http::Request<hyper::body::Incoming>| {
        // In request order: what the tap saw of this request's head.
        if let Some(fault) = findings.next_request() {
            request.extensions_mut().insert(fault);
        }
        let connection = proxy::Connection {
            client: client.clone(),
            forwarding: forwarding.clone(),
            response_timer: response_timer.clone(),
        };
        proxy::handle(request, connection, shared.clone())
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(timer::ConnectionTimer::default())
        // Bounds what a connection buffers of a head (hyper's default is
        // about 400 KiB): beyond it, 431 and close.
        .max_header_size(limits.request_head)
        .max_buf_size(limits.request_head.max(8192));
    // hyper keeps its header array on the stack at its default of 100.
    if limits.headers != 100 {
        builder.max_headers(limits.headers);
    }
    let connection = builder
        // hyper's default, kept on purpose: a client that closes its side
        // mid-request is taken as gone (as HAProxy's `abortonclose`), so a
        // queued or slow request of a departed client is dropped instead of
        // holding a server slot and the listener's place.
        .half_close(false)
        // Also bounds how long an idle keep-alive connection is kept: hyper
        // starts this timer whenever it waits for a request head.
        .header_read_timeout(timeouts.request_header)
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(connection);
    let stopped = stop::StopWatch::new(stop);
    tokio::pin!(stopped);
    let result = tokio::select! {
        biased;
        () = stopped => {
            // A client whose request is already on its way (a connection
            // accepted just before the stop) gets it served: the connection
            // has a moment to receive it before hyper closes it when idle.
            let grace = tokio::time::sleep(STOP_GRACE);
            tokio::pin!(grace);
            tokio::select! {
                result = connection.as_mut() => result,
                () = &mut grace => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            }
        }
        result = connection.as_mut() => result,
    };
    if let Err(e) = result {
        // hyper has already answered a malformed request with 400 and closed.
        tracing::debug!(client = %peer, error = %e, "client connection ended with an error");
    }
}
