//! Upgrades (RFC 9110 §7.8): when a server answers 101 Switching Protocols to
//! an upgrade the client asked for and the route allows, the client gets the
//! 101 and both connections become a [`crate::tunnel`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::tls::TlsConnection;
use bytes::Bytes;
use http::{HeaderMap, Response, header};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_util::task::TaskTracker;

use super::body::{self, ResponseBody};
use super::framing::Tapped;
use super::record::TunnelRecord;
use super::{ClientConnection, headers};
use crate::config::WebSocketRoute;
use crate::metrics::OpenGuard as OpenTunnel;
use crate::tunnel::{
    self, Extensions, Registration, Settings, TunnelControl, TunnelEnd, TunnelReport,
    WebSocketSettings, WsStats,
};
use crate::upstream::{ActiveGuard, Server, ServerBody};

/// What the route and pool of an upgrade say about its tunnel.
pub struct TunnelRoute {
    /// The pool's `timeouts.tunnel_idle`.
    pub idle_timeout: Duration,
    /// The hand-over (the 101 written to the client, both connections
    /// released by hyper) must finish within this: the pool's `response` timeout.
    pub handover_timeout: Duration,
    /// The route's `ws_*` settings.
    pub websocket: WebSocketRoute,
    /// The route's websocket counters.
    pub stats: Arc<WsStats>,
}

/// Answers the client with the server's 101 and, once hyper has handed over
/// both connections, runs the tunnel in its own task. The tunnel stays
/// counted on its server (`guard`) for as long as it is open. A `websocket`
/// upgrade is followed frame by frame with the route's `ws_*` settings.
pub fn start_tunnel(
    server_response: Response<ServerBody>,
    client_upgrade: OnUpgrade,
    guard: ActiveGuard,
    route: TunnelRoute,
    connection: Arc<ClientConnection>,
    tasks: &TaskTracker,
    record: TunnelRecord,
) -> Response<ResponseBody> {
    let (mut parts, server_body) = server_response.into_parts();
    let server_side = server_body.into_upgraded();
    let protocol = headers::upgrade_protocol(&parts.headers).unwrap_or_default();
    let handover = route.handover_timeout;
    let settings = Settings {
        idle_timeout: route.idle_timeout,
        websocket: (protocol == "websocket").then(|| {
            let stats = vec![route.stats, guard.server().tunnels.stats()];
            websocket_settings(&parts.headers, route.websocket, stats)
        }),
    };
    headers::remove_hop_by_hop(&mut parts.headers);
    headers::set_upgrade(&mut parts.headers, &protocol);

    // Tracked, so that shutdown waits for the tunnel to end. The hand-over
    // runs in a task of its own (its state is large and short-lived); the
    // tunnel then gets a task sized for its own state alone, which an idle
    // websocket holds for hours.
    let tracker = tasks.clone();
    tasks.spawn(async move {
        let server = guard.server().clone();
        let Some((client_side, server_side)) = hand_over(
            client_upgrade,
            server_side,
            handover,
            &server,
            connection.peer,
        )
        .await
        else {
            record.abandoned();
            return;
        };
        let control = TunnelControl::new();
        let ending = Ending {
            // Found from the server's live state while open: drains close it gently.
            _registration: server.tunnels.register(control.clone()),
            _open: server.metrics.tunnel_opened(),
            record,
            guard,
            client: Box::new(TunnelClient {
                peer: connection.peer,
                listener_place: connection.take_slot(),
            }),
        };
        // The connection itself (128 bytes) goes with hyper's service.
        drop(connection);
        match client_side {
            ClientSide::Plain(client) => tracker.spawn(TunnelTask {
                tunnel: tunnel::run(client, server_side, settings, control),
                ending: Some(ending),
            }),
            ClientSide::Tls(client) => tracker.spawn(TunnelTask {
                tunnel: tunnel::run(client, server_side, settings, control),
                ending: Some(ending),
            }),
        };
    });

    Response::from_parts(parts, body::empty())
}

/// The client's side of an upgraded connection, with the bytes hyper had
/// read past the head.
#[expect(
    clippy::large_enum_variant,
    reason = "short-lived: moved into its tunnel's task at once, where boxing would cost an allocation"
)]
enum ClientSide {
    Plain((TcpStream, Bytes)),
    Tls((TlsConnection<TcpStream>, Bytes)),
}

/// Waits (within `handover`) for hyper to release the client's connection
/// once the 101 is written; `None` when the upgrade was abandoned.
async fn hand_over(
    client_upgrade: OnUpgrade,
    server_side: Option<(TcpStream, Bytes)>,
    handover: Duration,
    server: &Server,
    client: SocketAddr,
) -> Option<(ClientSide, (TcpStream, Bytes))> {
    let Some(server_side) = server_side else {
        tracing::error!(%client, server = %server.address, "a 101 without its server connection; closing");
        return None;
    };
    let client_io = match tokio::time::timeout(handover, client_upgrade).await {
        Ok(Ok(client_io)) => client_io,
        Ok(Err(e)) => {
            tracing::info!(%client, server = %server.address, error = %e, "upgrade abandoned before the tunnel opened");
            return None;
        }
        Err(_) => {
            tracing::info!(%client, server = %server.address, ?handover, "upgrade hand-over timed out");
            return None;
        }
    };
    // The client side is wrapped in the framing tap (see `serve`); the
    // tunnel takes the bare stream from under it.
    let client_side = match client_io.downcast::<TokioIo<Tapped<TcpStream>>>() {
        Ok(plain) => ClientSide::Plain((plain.io.into_inner().into_inner(), plain.read_buf)),
        Err(client_io) => match tls_client(client_io) {
            Some(tls) => ClientSide::Tls(tls),
            None => {
                tracing::error!(%client, server = %server.address, "upgraded client connection of an unknown kind; closing it");
                return None;
            }
        },
    };
    Some((client_side, server_side))
}

/// What a tunnel holds while it runs and settles when it ends.
struct Ending {
    _registration: Registration,
    _open: OpenTunnel,
    record: TunnelRecord,
    guard: ActiveGuard,
    client: Box<TunnelClient>,
}

/// What a tunnel keeps of its client connection (48 bytes, not the
/// connection's 128, which an idle websocket would hold for hours).
struct TunnelClient {
    peer: SocketAddr,
    /// The listener place, taken while the tunnel is open.
    listener_place: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl Ending {
    fn settle(self, report: TunnelReport) {
        let Ending {
            _registration,
            _open,
            record,
            guard,
            client,
        } = self;
        record.ended(&report, &guard.server().metrics);
        drop((_open, _registration));
        let server = guard.server().address;
        let TunnelClient {
            peer: client,
            listener_place,
        } = *client;
        drop((guard, listener_place));
        if matches!(report.end, TunnelEnd::Error(_)) {
            tracing::info!(%client, %server, ?report, "tunnel closed by an error");
        } else {
            tracing::debug!(%client, %server, ?report, "tunnel closed");
        }
    }
}

pin_project_lite::pin_project! {
    /// A tunnel's task: the tunnel itself, then its counters and log line.
    /// A struct rather than an `async` block, which would hold the tunnel's
    /// state twice (once captured, once awaited).
    struct TunnelTask<F> {
        #[pin]
        tunnel: F,
        ending: Option<Ending>,
    }
}

impl<F: Future<Output = TunnelReport>> Future for TunnelTask<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let report = std::task::ready!(this.tunnel.poll(cx));
        if let Some(ending) = this.ending.take() {
            ending.settle(report);
        }
        Poll::Ready(())
    }
}

fn tls_client(upgraded: Upgraded) -> Option<(TlsConnection<TcpStream>, bytes::Bytes)> {
    let tls = upgraded
        .downcast::<TokioIo<Tapped<TlsConnection<TcpStream>>>>()
        .ok()?;
    Some((tls.io.into_inner().into_inner(), tls.read_buf))
}

/// The route's settings, and the reserved bits the extensions the server
/// accepted in its 101 may use.
fn websocket_settings(
    headers: &HeaderMap,
    route: WebSocketRoute,
    stats: Vec<Arc<WsStats>>,
) -> WebSocketSettings {
    let extensions = headers
        .get_all(header::SEC_WEBSOCKET_EXTENSIONS)
        .iter()
        .map(|value| value.to_str().unwrap_or("unreadable"));
    WebSocketSettings {
        extensions: Extensions::negotiated(extensions),
        ping: route.ping,
        pong_timeout: route.pong_timeout,
        max_message: route.max_message,
        stats,
    }
}
