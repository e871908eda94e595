//! The client side shared by the load modes: TCP from a chosen loopback
//! source address, TLS that trusts any certificate and never resumes a
//! session, and the WebSocket handshake.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;

use rustls::ClientConfig;
use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

// The test suite's verifier: any certificate, signatures still checked.
#[path = "../../../tests/support/accept_any.rs"]
mod accept_any;
use accept_any::{AcceptAny, provider};

/// Any byte stream a websocket can run over: plain TCP or TLS.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub type Ws = WebSocketStream<Box<dyn Io>>;

/// The `n`-th of `sources` loopback source addresses, 127.0.0.2 and up, so
/// that connections arrive from many clients as they would after a deploy.
pub fn source(n: usize, sources: usize) -> Option<Ipv4Addr> {
    if sources == 0 {
        return None;
    }
    let offset = u8::try_from(n % sources.min(250)).unwrap_or(0);
    Some(Ipv4Addr::new(127, 0, 0, 2 + offset))
}

/// Refuses anything that is not loopback: the benchmark never leaves the machine.
pub fn check_loopback(target: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        target.ip().is_loopback(),
        "{target} is not a loopback address"
    );
    Ok(())
}

pub async fn connect(target: SocketAddr, from: Option<Ipv4Addr>) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = from {
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let stream = socket.connect(target).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A TLS client that accepts any certificate (signatures are checked, as a
/// browser would) and never resumes a session: every connection is a full
/// handshake.
pub fn tls_connector() -> anyhow::Result<TlsConnector> {
    let provider = provider();
    let mut config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    config.resumption = Resumption::disabled();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsConnector::from(Arc::new(config)))
}

pub fn server_name() -> ServerName<'static> {
    ServerName::try_from("localhost").expect("valid DNS name")
}

/// Where the websockets go: a loopback address and the path (Host: localhost).
#[derive(clap::Args)]
pub struct WsTarget {
    #[arg(long)]
    pub target: SocketAddr,
    #[arg(long, default_value = "/ws")]
    pub path: String,
}

/// Accepts connections forever, one task each; `serve`'s errors end only its
/// connection.
pub async fn serve_forever<F, Fut>(listen: SocketAddr, serve: F) -> anyhow::Result<()>
where
    F: Fn(TcpStream) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(listen)?;
    // Not tokio's default of 128: a burst of hundreds of handshakes must not
    // overflow the backends' accept queue (a dropped SYN costs a second).
    let listener = socket.listen(4096)?;
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let connection = serve(stream);
                tokio::spawn(async move {
                    let _ = connection.await;
                });
            }
            // Out of file descriptors or similar: back off instead of spinning.
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(10)).await,
        }
    }
}

/// Small buffers: thousands of these stay open at once in the idle test.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

/// Opens a websocket to `target` at `path` (Host: localhost), over TLS when
/// a connector is given.
pub async fn open_ws(
    target: SocketAddr,
    from: Option<Ipv4Addr>,
    tls: Option<&TlsConnector>,
    path: &str,
) -> anyhow::Result<Ws> {
    let tcp = connect(target, from).await?;
    let io: Box<dyn Io> = match tls {
        Some(connector) => Box::new(connector.connect(server_name(), tcp).await?),
        None => Box::new(tcp),
    };
    let url = format!("ws://localhost{path}");
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, io, Some(ws_config())).await?;
    Ok(ws)
}
