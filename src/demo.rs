//! `wharf demo`: a working setup with no config to write.
//!
//! This module owns the three built-in demo servers (`server-1` … `server-3`,
//! in-process HTTP/1.1 servers with a page, a JSON endpoint, a health check
//! and a WebSocket echo), the demo config (built as TOML text, so the demo also
//! shows what a config file looks like) and [`run`], which starts both and
//! waits for Ctrl-C. Tests use [`start_demo_servers`] as ready-made backends.
//!
//! Each demo server answers:
//! - `GET /`: an HTML page naming the server, with a WebSocket echo client;
//! - `GET /api/whoami`: `{"server":"server-N"}`;
//! - `GET /health`: `200 ok`;
//! - `/ws`: a WebSocket that echoes binary messages as they are and text
//!   messages prefixed with `server-N: `;
//! - anything else: `404`.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context as _;
use bytes::Bytes;
use futures_util::{SinkExt as _, StreamExt as _};
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

/// The page every demo server serves at `/`; `{{SERVER}}` becomes its name.
const PAGE: &str = include_str!("demo/page.html");

/// The running demo servers. Dropping this stops them accepting connections.
pub struct DemoServers {
    /// Name (`server-1` …) and bound address of each server, in order.
    pub addrs: Vec<(String, SocketAddr)>,
    /// The accept loops; dropping the set aborts them.
    _accept_loops: JoinSet<()>,
}

/// Starts `server-1`, `server-2` and `server-3` on `127.0.0.1`, each on a free port.
pub async fn start_demo_servers() -> std::io::Result<DemoServers> {
    let mut addrs = Vec::new();
    let mut accept_loops = JoinSet::new();
    for n in 1..=3 {
        let name = format!("server-{n}");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        addrs.push((name.clone(), listener.local_addr()?));
        accept_loops.spawn(serve(listener, name.into()));
    }
    Ok(DemoServers {
        addrs,
        _accept_loops: accept_loops,
    })
}

/// The demo config: listener `demo` on `bind`, `/ws` to the `realtime` pool
/// (least connections), everything else to the `web` pool (round robin).
pub fn demo_config_toml(
    bind: SocketAddr,
    admin: SocketAddr,
    servers: &DemoServers,
    tls: Option<&DemoCertificate>,
) -> String {
    let tls = match tls {
        Some(cert) => format!(
            "\n# TLS and plaintext on the same port, told apart by their first bytes.\n\
             [listener.tls]\ncertificates = [{{ cert = {:?}, key = {:?} }}]\nplaintext = \"serve\"\n",
            cert.cert.display().to_string(),
            cert.key.display().to_string()
        ),
        None => String::new(),
    };
    let mut list = String::new();
    for (name, addr) in &servers.addrs {
        let _ = writeln!(list, "  {{ address = \"{addr}\", weight = 1 }},   # {name}");
    }
    format!(
        r#"# wharf demo config: one port, two pools of the same three built-in servers.

# The status page (/status), metrics (/metrics) and the admin API.
[admin]
bind = "{admin}"

[[listener]]
name = "demo"
bind = "{bind}"
{tls}
# First match wins. /ws (a session: polling on /ws/poll, then a websocket)
# goes to the realtime pool, which keeps each browser on one server...
[[listener.route]]
path_prefix = "/ws"
pool = "realtime"

# ...the page's /live websockets are spread over the live pool...
[[listener.route]]
path_prefix = "/live"
pool = "live"

# ...and everything else (the page, /api/whoami) to the web pool.
[[listener.route]]
pool = "web"

[pool.realtime]
balance = "least_conn"
sticky = {{ cookie = "wharf_demo", secret = "demo-only-not-a-secret" }}
servers = [
{list}]

# Drain a server on the status page: its websockets here are closed after
# drain_timeout and reconnect to the others.
[pool.live]
balance = "least_conn"
drain_timeout = "5s"
servers = [
{list}]

[pool.web]
balance = "round_robin"
servers = [
{list}]
"#
    )
}

/// A throwaway self-signed certificate for the demo, in a temporary folder
/// removed when dropped.
pub struct DemoCertificate {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
    folder: std::path::PathBuf,
}

impl DemoCertificate {
    /// Makes a certificate for `localhost` and `127.0.0.1`.
    pub fn create() -> anyhow::Result<DemoCertificate> {
        let (cert_pem, key_pem) = crate::tls::self_signed(&["localhost", "127.0.0.1"])?;
        let folder = std::env::temp_dir().join(format!("wharf-demo-{}", std::process::id()));
        std::fs::create_dir_all(&folder)?;
        let (cert, key) = (folder.join("demo.pem"), folder.join("demo.key"));
        std::fs::write(&cert, cert_pem)?;
        std::fs::write(&key, key_pem)?;
        Ok(DemoCertificate { cert, key, folder })
    }
}

impl Drop for DemoCertificate {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.folder);
    }
}

/// Runs `wharf demo`: the demo servers behind wharf on `addr`, until Ctrl-C.
pub async fn run(addr: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let servers = start_demo_servers()
        .await
        .context("cannot start the demo servers")?;
    let certificate =
        DemoCertificate::create().context("cannot make the demo's self-signed certificate")?;
    let text = demo_config_toml(addr, admin, &servers, Some(&certificate));
    let config = crate::config::parse_str("demo.toml", &text)
        .context("the built-in demo config is invalid (a bug in wharf)")?;
    let running = crate::start(config).await.context("cannot start wharf")?;
    let bound = running.listener_addr("demo").unwrap_or(addr);

    println!("wharf demo is running.\n");
    println!(
        "  Open {} in a browser; reload it a few times.\n",
        browse_url(bound)
    );
    println!(
        "  The same port speaks TLS: {} (a self-signed certificate made just now;\n  \
         your browser will warn about it). The page's websocket becomes wss://.\n",
        browse_url(bound).replacen("http://", "https://", 1)
    );
    if let Some(admin) = running.admin_addr() {
        println!(
            "  Watch it on the status page: {}status (drain a server there).\n",
            browse_url(admin)
        );
    }
    println!("Built-in demo servers:");
    for (name, addr) in &servers.addrs {
        println!("  {name}  http://{addr}/");
    }
    println!("\nThe config it uses (demo.toml):\n");
    println!("{text}");
    println!("Press Ctrl-C to stop.");

    let waited = tokio::signal::ctrl_c().await;
    println!("\nStopping…");
    running.shutdown().await;
    drop(servers);
    drop(certificate);
    waited.context("cannot listen for Ctrl-C")?;
    Ok(())
}

/// The URL to open for a listener bound to `addr` (a wildcard becomes loopback).
fn browse_url(mut addr: SocketAddr) -> String {
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    format!("http://{addr}/")
}

/// Accepts connections forever, serving each (with upgrades) on its own task.
async fn serve(listener: TcpListener, name: Arc<str>) {
    let mut connections = JoinSet::new();
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(server = %name, error = %e, "demo server cannot accept");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let name = name.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| {
                let name = name.clone();
                async move { Ok::<_, Infallible>(handle(req, name)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "demo server connection ended");
            }
        });
        // Reap finished connections so the set does not grow forever.
        while connections.try_join_next().is_some() {}
    }
}

/// Answers one request to the demo server called `name`.
fn handle(req: Request<Incoming>, name: Arc<str>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (_, "/ws" | "/live") => websocket(req, name),
        (&Method::GET, "/") => {
            let page = PAGE.replace("{{SERVER}}", &name);
            reply(StatusCode::OK, "text/html; charset=utf-8", page)
        }
        (&Method::GET, "/api/whoami" | "/ws/poll") => {
            let json = format!("{{\"server\":\"{name}\"}}");
            reply(StatusCode::OK, "application/json", json)
        }
        (&Method::GET, "/health") => reply(StatusCode::OK, "text/plain", "ok"),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found"),
    }
}

/// Accepts a WebSocket upgrade and echoes on it once hyper hands over the connection.
fn websocket(mut req: Request<Incoming>, name: Arc<str>) -> Response<Full<Bytes>> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    if req.method() != Method::GET
        || !has_token(header::CONNECTION, "upgrade")
        || !has_token(header::UPGRADE, "websocket")
    {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "expected a WebSocket upgrade",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut response = reply(
            StatusCode::UPGRADE_REQUIRED,
            "text/plain",
            "WebSocket version 13 only",
        );
        response
            .headers_mut()
            .insert(header::SEC_WEBSOCKET_VERSION, "13".parse().unwrap());
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return reply(
            StatusCode::BAD_REQUEST,
            "text/plain",
            "missing Sec-WebSocket-Key",
        );
    };
    let accept = derive_accept_key(key.as_bytes());

    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => echo(TokioIo::new(upgraded), &name).await,
            Err(e) => tracing::debug!(error = %e, "demo websocket upgrade failed"),
        }
    });

    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(Full::default())
        .expect("a valid 101 response")
}

/// Echoes until the client closes: text prefixed with `name: `, binary as it is.
/// Pings and closes are answered by tungstenite itself.
async fn echo<S>(io: S, name: &str)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, None).await;
    while let Some(Ok(message)) = ws.next().await {
        let reply = match message {
            Message::Text(text) => Message::text(format!("{name}: {text}")),
            Message::Binary(data) => Message::Binary(data),
            _ => continue,
        };
        if ws.send(reply).await.is_err() {
            break;
        }
    }
}

fn reply(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, content_type)
        .header(header::CACHE_CONTROL, "no-store")
        .body(Full::new(body.into()))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt as _;

    /// `GET path` on `addr`; returns the status and body.
    async fn get(addr: SocketAddr, path: &str) -> (StatusCode, String) {
        let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let req = Request::get(path)
            .header(header::HOST, addr.to_string())
            .body(Full::<Bytes>::default())
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        let status = response.status();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn each_server_answers_with_its_own_name() {
        let servers = start_demo_servers().await.unwrap();
        let names: Vec<_> = servers.addrs.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["server-1", "server-2", "server-3"]);
        for (name, addr) in &servers.addrs {
            let whoami = get(*addr, "/api/whoami").await;
            assert_eq!(
                whoami,
                (StatusCode::OK, format!("{{\"server\":\"{name}\"}}"))
            );

            let (status, page) = get(*addr, "/").await;
            assert_eq!(status, StatusCode::OK);
            assert!(page.contains(&format!("<span class=\"server\">{name}</span>")));
            assert!(!page.contains("{{SERVER}}"));

            assert_eq!(get(*addr, "/health").await, (StatusCode::OK, "ok".into()));
            assert_eq!(get(*addr, "/nope").await.0, StatusCode::NOT_FOUND);
            assert_eq!(get(*addr, "/ws").await.0, StatusCode::BAD_REQUEST);
        }
    }

    #[tokio::test]
    async fn websocket_echoes_with_the_server_name() {
        let servers = start_demo_servers().await.unwrap();
        let (name, addr) = &servers.addrs[1];
        let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);

        ws.send(Message::text("hello")).await.unwrap();
        let echoed = ws.next().await.unwrap().unwrap();
        assert_eq!(echoed, Message::text(format!("{name}: hello")));
        assert_eq!(echoed.to_text().unwrap(), "server-2: hello");

        ws.send(Message::binary(vec![1, 2, 3])).await.unwrap();
        assert_eq!(
            ws.next().await.unwrap().unwrap(),
            Message::binary(vec![1, 2, 3])
        );

        ws.close(None).await.unwrap();
    }

    #[tokio::test]
    async fn demo_config_parses() {
        let servers = start_demo_servers().await.unwrap();
        let bind: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let certificate = DemoCertificate::create().expect("a demo certificate");
        let text = demo_config_toml(
            bind,
            "127.0.0.1:9090".parse().unwrap(),
            &servers,
            Some(&certificate),
        );
        let config = match crate::config::parse_str("demo.toml", &text) {
            Ok(config) => config,
            Err(e) => panic!("{e}\n--- demo.toml ---\n{text}"),
        };

        assert_eq!(config.listeners.len(), 1);
        let listener = &config.listeners[0];
        assert_eq!((listener.name.as_str(), listener.bind), ("demo", bind));
        let routes: Vec<_> = listener
            .routes
            .iter()
            .map(|r| (r.path_prefix.as_deref(), r.pool.as_str()))
            .collect();
        assert_eq!(
            routes,
            [
                (Some("/ws"), "realtime"),
                (Some("/live"), "live"),
                (None, "web")
            ]
        );
        assert!(config.pool("realtime").unwrap().sticky.is_some());
        assert!(crate::config::warnings(&config).is_empty());

        let expected: Vec<_> = servers.addrs.iter().map(|(_, a)| (*a, 1)).collect();
        for (pool, balance) in [
            ("realtime", crate::config::BalanceConfig::LeastConn),
            ("live", crate::config::BalanceConfig::LeastConn),
            ("web", crate::config::BalanceConfig::RoundRobin),
        ] {
            let pool = config.pool(pool).unwrap();
            assert_eq!(pool.balance, balance);
            let servers: Vec<_> = pool.servers.iter().map(|s| (s.address, s.weight)).collect();
            assert_eq!(servers, expected);
        }
    }
}
