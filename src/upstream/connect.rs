//! Connecting to a server: the one way wharf opens a connection to a server,
//! for HTTP, TCP pools and health checks alike (connect timeout, no Nagle,
//! the PROXY header first if the pool sends one).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Either, Empty};
use tokio::net::TcpStream;

use super::Upload;
use super::h1::ServerConnection;

/// The body of a request to a server: the client's, streamed, or none
/// (a request without a body, a replayed request, a health check).
pub type UpstreamBody = Either<Upload, Empty<Bytes>>;

/// The largest response head wharf reads from a server, in bytes.
pub const MAX_RESPONSE_HEAD: usize = 32 * 1024;

/// Why a connection to a server could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("connection refused")]
    Refused,
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    #[error("connect failed: {0}")]
    Io(#[from] io::Error),
    /// wharf itself is out of file descriptors or local ports: not the
    /// server's fault, never counted against it.
    #[error("wharf is out of local resources: {0}")]
    Local(#[source] io::Error),
    #[error("sending the PROXY header timed out")]
    ProxyHeaderTimeout,
}

impl ConnectError {
    /// Whether the server is to blame (passive health counts it).
    pub fn is_server_fault(&self) -> bool {
        !matches!(self, ConnectError::Local(_))
    }
}

/// Connects to `address` within `timeout` and sends `proxy_header` first if
/// given (within the same timeout: a server that does not read it is as
/// good as unreachable).
pub async fn connect_tcp(
    address: SocketAddr,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
) -> Result<TcpStream, ConnectError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = match tokio::time::timeout_at(deadline, TcpStream::connect(address)).await {
        Err(_) => return Err(ConnectError::Timeout(timeout)),
        Ok(Err(e)) if e.kind() == io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused);
        }
        Ok(Err(e)) if crate::fd::is_out_of_files(&e) => {
            crate::fd::report_exhausted("connect", &e);
            return Err(ConnectError::Local(e));
        }
        Ok(Err(e)) => return Err(ConnectError::Io(e)),
        Ok(Ok(stream)) => {
            crate::fd::report_recovered();
            stream
        }
    };
    // Small writes (websocket frames, request heads) must not wait for Nagle.
    stream.set_nodelay(true)?;
    let mut stream = stream;
    if let Some(header) = proxy_header {
        let write = tokio::io::AsyncWriteExt::write_all(&mut stream, header);
        match tokio::time::timeout_at(deadline, write).await {
            Ok(result) => result?,
            Err(_) => return Err(ConnectError::ProxyHeaderTimeout),
        }
    }
    Ok(stream)
}

/// Connects as [`connect_tcp`] does, for HTTP/1.1 requests.
pub async fn connect_http(
    address: SocketAddr,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
) -> Result<ServerConnection, ConnectError> {
    let stream = connect_tcp(address, timeout, proxy_header).await?;
    Ok(ServerConnection::new(stream))
}
