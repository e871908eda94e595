//! TCP pools: a client connection carried byte for byte to a server of a
//! `mode = "tcp"` pool, chosen with the pool's algorithm, stickiness by
//! source address and health like any other, with retries while nothing has
//! been sent, an optional PROXY header first, and the tunnel's idle timeout.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::config::{HashKey, ProxyVersion};
use crate::proxy_protocol;
use crate::sticky::Affinity;
use crate::sticky::key;
use crate::tunnel;
use crate::upstream::{Outcome, Pool};

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
        let connect = TcpStream::connect(server.address);
        let stream = match tokio::time::timeout(pool.config.timeouts.connect, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                server.record_outcome(Outcome::ConnectFailure, &e.to_string());
                tracing::info!(%listener, client = %from.peer, pool = pool.name(), server = %server.address, error = %e, "TCP connect failed; trying another server");
                failed.push(server.address);
                continue;
            }
            Err(_) => {
                server.record_outcome(Outcome::ConnectFailure, "connect timed out");
                failed.push(server.address);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let mut stream = stream;
        if let Some(version) = pool.config.send_proxy_protocol {
            let header = match version {
                ProxyVersion::V1 => proxy_protocol::encode_v1(from.peer, from.local),
                ProxyVersion::V2 => proxy_protocol::encode_v2(from.peer, from.local),
            };
            if let Err(e) = stream.write_all(&header).await {
                server.record_outcome(Outcome::ServerError, &e.to_string());
                tracing::warn!(%listener, client = %from.peer, server = %server.address, error = %e, "sending the PROXY header failed");
                return;
            }
        }
        server.record_outcome(Outcome::Success, "connected");
        let drained = server.drained();
        let report = tunnel::run(
            client,
            stream,
            Bytes::new(),
            Bytes::new(),
            pool.config.timeouts.tunnel_idle,
            drained,
        )
        .await;
        tracing::debug!(%listener, client = %from.peer, pool = pool.name(), server = %server.address, ?report, "TCP tunnel closed");
        drop(guard);
        return;
    }
    tracing::warn!(%listener, client = %from.peer, pool = pool.name(), "TCP connection dropped: every server tried failed");
}
