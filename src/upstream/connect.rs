//! Opening a new HTTP/1.1 connection to a server.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::Upload;

/// The body of a request to a server: the client's, streamed, or none
/// (a request without a body, a replayed request, a health check).
pub type UpstreamBody = Either<Upload, Empty<Bytes>>;

/// A connection ready to carry one request at a time to a server.
pub type Connection = http1::SendRequest<UpstreamBody>;

/// Why a connection to a server could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused")]
    Refused,
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[source] hyper::Error),
}

/// Connects to `address` within `timeout`, sends `proxy_header` first if
/// given, and starts the HTTP/1.1 client connection task (with upgrades
/// enabled, so a 101 can become a tunnel).
pub async fn connect_http(
    address: SocketAddr,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
) -> Result<Connection, ConnectError> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(address)).await {
        Err(_) => return Err(ConnectError::Timeout(timeout)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused);
        }
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(stream)) => stream,
    };
    // Small writes (websocket frames, request heads) must not wait for Nagle.
    stream.set_nodelay(true)?;
    let mut stream = stream;
    if let Some(header) = proxy_header {
        tokio::io::AsyncWriteExt::write_all(&mut stream, header).await?;
    }
    let (sender, connection) = http1::Builder::new()
        .handshake(TokioIo::new(stream))
        .await
        .map_err(ConnectError::Handshake)?;
    tokio::spawn(async move {
        if let Err(e) = connection.with_upgrades().await {
            tracing::debug!(server = %address, error = %e, "server connection ended with an error");
        }
    });
    Ok(sender)
}
