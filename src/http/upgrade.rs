//! Upgrades (RFC 9110 §7.8): when a server answers 101 Switching Protocols to
//! an upgrade the client asked for and the route allows, the client gets the
//! 101 and both connections become a [`crate::tunnel`].

use std::sync::Arc;
use std::time::Duration;

use http::Response;
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_util::task::TaskTracker;

use super::body::{self, ResponseBody};
use super::framing::Tapped;
use super::record::TunnelRecord;
use super::{ClientConnection, headers};
use crate::tunnel::{self, TunnelEnd};
use crate::upstream::ActiveGuard;

/// The deadlines of a tunnel: its idle timeout and its hand-over.
#[derive(Debug, Clone, Copy)]
pub struct TunnelTimeouts {
    pub idle: Duration,
    pub handover: Duration,
}

/// Answers the client with the server's 101 and, once hyper has handed over
/// both connections, runs the tunnel in its own task. The tunnel stays
/// counted on its server (`guard`) for as long as it is open. The hand-over
/// (the 101 written to the client, both connections released by hyper) must
/// finish within `handover`, the pool's `response` timeout.
pub fn start_tunnel(
    mut server_response: Response<Incoming>,
    client_upgrade: OnUpgrade,
    guard: ActiveGuard,
    timeouts: TunnelTimeouts,
    connection: Arc<ClientConnection>,
    tasks: &TaskTracker,
    record: TunnelRecord,
) -> Response<ResponseBody> {
    let TunnelTimeouts {
        idle: idle_timeout,
        handover,
    } = timeouts;
    let server_upgrade = hyper::upgrade::on(&mut server_response);
    let (mut parts, _) = server_response.into_parts();
    let protocol = headers::upgrade_protocol(&parts.headers).unwrap_or_default();
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
        let (server_stream, server_early) = (server_side.io.into_inner(), server_side.read_buf);
        // The client side is wrapped in the framing tap (see `serve`); the
        // tunnel takes the bare stream from under it.
        let report = match client_io.downcast::<TokioIo<Tapped<TcpStream>>>() {
            Ok(plain) => {
                let (stream, early) = (plain.io.into_inner().into_inner(), plain.read_buf);
                tunnel::run(
                    stream,
                    server_stream,
                    early,
                    server_early,
                    idle_timeout,
                    drained,
                )
                .await
            }
            Err(client_io) => match client_io.downcast::<TokioIo<Tapped<TlsStream<TcpStream>>>>() {
                Ok(tls) => {
                    let (stream, early) = (tls.io.into_inner().into_inner(), tls.read_buf);
                    // Boxed: its state is large, and must not make every
                    // plain websocket's task as big as a TLS one's.
                    Box::pin(tunnel::run_generic(
                        stream,
                        server_stream,
                        early,
                        server_early,
                        idle_timeout,
                        drained,
                    ))
                    .await
                }
                Err(_) => {
                    tracing::error!(%client, %server, "upgraded client connection of an unknown kind; closing it");
                    return;
                }
            },
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
