//! Upgrades (RFC 9110 §7.8): when a server answers 101 Switching Protocols to
//! an upgrade the client asked for and the route allows, the client gets the
//! 101 and both connections become a [`crate::tunnel`].

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Response, header};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::either::Either;
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
use crate::upstream::{ActiveGuard, Server};

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
    mut server_response: Response<Incoming>,
    client_upgrade: OnUpgrade,
    guard: ActiveGuard,
    route: TunnelRoute,
    connection: Arc<ClientConnection>,
    tasks: &TaskTracker,
    record: TunnelRecord,
) -> Response<ResponseBody> {
    let server_upgrade = hyper::upgrade::on(&mut server_response);
    let (mut parts, _) = server_response.into_parts();
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

    // Boxed: the hand-over and the tunnel's setup are large and short-lived;
    // once they are done, the task holds little besides the tunnel itself
    // while a websocket idles.
    let opening = Box::pin(open(
        client_upgrade,
        server_upgrade,
        handover,
        settings,
        guard.server().clone(),
        connection.peer,
    ));
    // Tracked, so that shutdown waits for the tunnel to end.
    tasks.spawn(async move {
        let Some(Open {
            tunnel,
            _registration,
            _open,
        }) = opening.await
        else {
            record.abandoned();
            return;
        };
        let report = tunnel.await;
        record.ended(&report, &guard.server().metrics);
        drop(_open);
        drop(_registration);
        let (client, server) = (connection.peer, guard.server().address);
        // Holding the client connection kept its listener slot taken.
        drop(guard);
        drop(connection);
        let level_is_error = matches!(report.end, TunnelEnd::Error(_));
        if level_is_error {
            tracing::info!(%client, %server, ?report, "tunnel closed by an error");
        } else {
            tracing::debug!(%client, %server, ?report, "tunnel closed");
        }
    });

    Response::from_parts(parts, body::empty())
}

/// A plaintext client's tunnel runs inline in its task; a TLS client's
/// state is large, and must not make every plain websocket's task as big.
type TunnelFuture<P> = Either<P, Pin<Box<dyn Future<Output = TunnelReport> + Send>>>;

/// A tunnel ready to run, registered on its server.
struct Open<P> {
    tunnel: TunnelFuture<P>,
    _registration: Registration,
    _open: OpenTunnel,
}

/// Waits (within `handover`) for hyper to release both connections and
/// builds their tunnel; `None` when the upgrade was abandoned.
async fn open(
    client_upgrade: OnUpgrade,
    server_upgrade: OnUpgrade,
    handover: Duration,
    settings: Settings,
    server: Arc<Server>,
    client: SocketAddr,
) -> Option<Open<impl Future<Output = TunnelReport> + Send + use<>>> {
    let both = tokio::time::timeout(handover, async {
        tokio::try_join!(client_upgrade, server_upgrade)
    });
    let (client_io, server_io) = match both.await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::info!(%client, server = %server.address, error = %e, "upgrade abandoned before the tunnel opened");
            return None;
        }
        Err(_) => {
            tracing::info!(%client, server = %server.address, ?handover, "upgrade hand-over timed out");
            return None;
        }
    };
    let Ok(server_side) = server_io.downcast::<TokioIo<TcpStream>>() else {
        tracing::error!(%client, server = %server.address, "upgraded server connection is not a TCP stream; closing it");
        return None;
    };
    let server_side = (server_side.io.into_inner(), server_side.read_buf);
    let control = TunnelControl::new();
    // The client side is wrapped in the framing tap (see `serve`); the
    // tunnel takes the bare stream from under it.
    let tunnel = match client_io.downcast::<TokioIo<Tapped<TcpStream>>>() {
        Ok(plain) => {
            let client_side = (plain.io.into_inner().into_inner(), plain.read_buf);
            Either::Left(tunnel::run(
                client_side,
                server_side,
                settings,
                control.clone(),
            ))
        }
        Err(client_io) => {
            let Some(client_side) = tls_client(client_io) else {
                tracing::error!(%client, server = %server.address, "upgraded client connection of an unknown kind; closing it");
                return None;
            };
            let tls: Pin<Box<dyn Future<Output = TunnelReport> + Send>> = Box::pin(tunnel::run(
                client_side,
                server_side,
                settings,
                control.clone(),
            ));
            Either::Right(tls)
        }
    };
    Some(Open {
        tunnel,
        // Found from the server's live state while open: drains close it gently.
        _registration: server.tunnels.register(control),
        _open: server.metrics.tunnel_opened(),
    })
}

fn tls_client(upgraded: Upgraded) -> Option<(TlsStream<TcpStream>, bytes::Bytes)> {
    let tls = upgraded
        .downcast::<TokioIo<Tapped<TlsStream<TcpStream>>>>()
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
