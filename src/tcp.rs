//! TCP pools: a client connection carried byte for byte to a server of a
//! `mode = "tcp"` pool, chosen with the pool's algorithm, stickiness by
//! source address and health like any other, with retries while nothing has
//! been sent, an optional PROXY header first, and the tunnel's idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::net::TcpStream;

use crate::config::{HashKey, ProxyVersion};
use crate::proxy_protocol;
use crate::sticky::Affinity;
use crate::sticky::key;
use crate::tunnel;
use crate::upstream::{Outcome, Pool, connect_tcp};

/// Where a TCP client came from and went to, as wharf knows it.
#[derive(Debug, Clone, Copy)]
pub struct TcpClient {
    /// The client, as told by PROXY protocol when trusted.
    pub peer: SocketAddr,
    /// The address the client connected to.
    pub local: SocketAddr,
}

/// Carries `client` to a server of `pool` until either side is done.
pub async fn forward(client: TcpStream, from: TcpClient, pool: Arc<Pool>, listener: &str) {
    // A TCP connection has no headers: of the hash keys, only the source address applies.
    let affinity = Affinity {
        hash: matches!(pool.config.hash, Some(HashKey::SourceIp))
            .then(|| key::source_ip_hash(from.peer.ip())),
        ..Affinity::default()
    };
    let mut failed = Vec::new();
    for _ in 0..=pool.config.retries {
        let guard = match pool.acquire(&failed, &affinity).await {
            Ok(guard) => guard,
            Err(unavailable) => {
                tracing::warn!(%listener, client = %from.peer, pool = pool.name(), error = %unavailable, "TCP connection refused: no server");
                return;
            }
        };
        let server = guard.server().clone();
        let proxy_header = pool
            .config
            .send_proxy_protocol
            .map(|version| match version {
                ProxyVersion::V1 => proxy_protocol::encode_v1(from.peer, from.local),
                ProxyVersion::V2 => proxy_protocol::encode_v2(from.peer, from.local),
            });
        let connect = connect_tcp(
            server.address,
            pool.config.timeouts.connect,
            proxy_header.as_deref(),
        );
        server.metrics.requests.inc();
        let stream = match connect.await {
            Ok(stream) => stream,
            // wharf's own trouble: logged where it happened, nobody's fault.
            Err(e) if !e.is_server_fault() => return,
            Err(e) => {
                server.metrics.connect_failures.inc();
                pool.record_outcome(&server, Outcome::ConnectFailure, &e.to_string());
                tracing::info!(%listener, client = %from.peer, pool = pool.name(), server = %server.address, error = %e, "TCP connect failed; trying another server");
                failed.push(server.address);
                continue;
            }
        };
        pool.record_outcome(&server, Outcome::Success, "connected");
        let settings = tunnel::Settings {
            idle_timeout: pool.config.timeouts.tunnel_idle,
            websocket: None,
        };
        // The tunnel may last hours: it holds its server, not the pool of
        // a config snapshot that a reload replaces.
        drop(pool);
        let control = tunnel::TunnelControl::new();
        // Found from the server's live state while open: drains close it.
        let _registration = server.tunnels.register(control.clone());
        let open = server.metrics.tunnel_opened();
        let report = tunnel::run(
            (client, Bytes::new()),
            (stream, Bytes::new()),
            settings,
            control,
        )
        .await;
        drop(open);
        server
            .metrics
            .bytes
            .to_server
            .inc_by(report.client_to_server);
        server
            .metrics
            .bytes
            .to_client
            .inc_by(report.server_to_client);
        tracing::debug!(%listener, client = %from.peer, pool = %server.pool, server = %server.address, ?report, "TCP tunnel closed");
        drop(guard);
        return;
    }
    tracing::warn!(%listener, client = %from.peer, pool = pool.name(), "TCP connection dropped: every server tried failed");
}
