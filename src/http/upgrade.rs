//! Upgrades (RFC 9110 §7.8): when a server answers 101 Switching Protocols to
//! an upgrade the client asked for and the route allows, the client gets the
//! 101 and both connections become a [`crate::tunnel`].

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, Response, header};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;

use super::body::{self, ResponseBody};
use super::framing::Tapped;
use super::record::TunnelRecord;
use super::{ClientConnection, headers};
use crate::config::WebSocketRoute;
use crate::tunnel::{
    self, Extensions, Settings, TunnelControl, TunnelEnd, WebSocketSettings, WsStats,
};
use crate::upstream::ActiveGuard;

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

    // Tracked, so that shutdown waits for the tunnel to end.
    tasks.spawn(async move {
        // Holding the client connection keeps its listener slot taken.
        let client = connection.peer;
        let server = guard.server().address;
        let drained = guard.server().drained();
        let both = tokio::time::timeout(handover, async {
            tokio::try_join!(client_upgrade, server_upgrade)
        });
        let (client_io, server_io) = match both.await {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                tracing::info!(%client, %server, error = %e, "upgrade abandoned before the tunnel opened");
                record.abandoned();
                return;
            }
            Err(_) => {
                tracing::info!(%client, %server, ?handover, "upgrade hand-over timed out");
                return;
            }
        };
        let tunnel_open = guard.server().metrics.tunnel_opened();
        let Ok(server_side) = server_io.downcast::<TokioIo<TcpStream>>() else {
            tracing::error!(%client, %server, "upgraded server connection is not a TCP stream; closing it");
            return;
        };
        let server_side = (server_side.io.into_inner(), server_side.read_buf);
        let control = TunnelControl::new();
        // Found from the server's live state while open: drains close it gently.
        let _registration = guard.server().tunnels.register(control.clone());
        // The client side is wrapped in the framing tap (see `serve`); the
        // tunnel takes the bare stream from under it.
        let report = match client_io.downcast::<TokioIo<Tapped<TcpStream>>>() {
            Ok(plain) => {
                let client_side = (plain.io.into_inner().into_inner(), plain.read_buf);
                tunnel::run(client_side, server_side, settings, control, drained).await
            }
            Err(client_io) => {
                let Some(client_side) = tls_client(client_io) else {
                    tracing::error!(%client, %server, "upgraded client connection of an unknown kind; closing it");
                    return;
                };
                // Boxed: its state is large, and must not make every plain
                // websocket's task as big as a TLS one's.
                Box::pin(tunnel::run(
                    client_side,
                    server_side,
                    settings,
                    control,
                    drained,
                ))
                .await
            }
        };
        record.ended(&report, &guard.server().metrics);
        drop(tunnel_open);
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
