//! One port for everything, end to end: TLS termination with certificates
//! chosen by SNI, HTTPS and wss:// through wharf, plaintext HTTP on the TLS
//! port (serve, redirect, reject), certificate reload, the Flash policy
//! answer, raw TCP bytes handed to the listener's TCP pool (client first and
//! server first), the `first_bytes` timeout, and TLS passthrough by SNI.
//!
//! Every client and server is real and on 127.0.0.1: rustls clients and
//! servers (tokio-rustls), tungstenite for websockets, raw TCP servers.

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use hyper_util::rt::TokioIo;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ServerConfig};
use support::accept_any::{AcceptAny, provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_rustls::client::TlsStream;
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_tungstenite::tungstenite::Message;

use support::{
    Backend, RawClient, Reply, TempDir, TestBody, WAIT, get_request, read_reply, within,
};

// ------------------------------------------------------------------ helpers

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).expect("a PEM certificate")
}

/// Starts wharf with `toml` as if read from `dir/wharf.toml`, so that
/// relative file names in it are found in `dir`.
async fn start_in(dir: &TempDir, toml: &str) -> wharf::Running {
    let file = dir.0.join("wharf.toml");
    let config = match wharf::config::parse_str(&file.display().to_string(), toml) {
        Ok(config) => config,
        Err(errors) => panic!("invalid test config:\n{errors}\n--- config ---\n{toml}"),
    };
    wharf::start(config).await.expect("wharf starts")
}

fn public(running: &wharf::Running) -> SocketAddr {
    running.listener_addr("public").expect("listener `public`")
}

/// Aborts a spawned task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn client_config() -> Arc<ClientConfig> {
    let provider = provider();
    let config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// A TLS handshake over `tcp`, sending `sni` as the server name (none when
/// `None`: rustls sends no SNI for an IP address).
async fn tls_over(tcp: TcpStream, sni: Option<&str>) -> TlsStream<TcpStream> {
    let name = match sni {
        Some(name) => ServerName::try_from(name.to_owned()).expect("a DNS name"),
        None => ServerName::IpAddress(Ipv4Addr::LOCALHOST.into()),
    };
    within(
        "TLS handshake",
        TlsConnector::from(client_config()).connect(name, tcp),
    )
    .await
    .expect("TLS handshake succeeds")
}

async fn tls_connect(addr: SocketAddr, sni: Option<&str>) -> TlsStream<TcpStream> {
    let tcp = within("connect", TcpStream::connect(addr))
        .await
        .expect("connect");
    tls_over(tcp, sni).await
}

/// The certificate the server presented.
fn presented(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref()
        .1
        .peer_certificates()
        .expect("the server presented a certificate")[0]
        .clone()
        .into_owned()
}

/// A keep-alive HTTP/1.1 client over a TLS stream.
struct HttpsClient {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
    _task: Task,
}

impl HttpsClient {
    async fn over(tls: TlsStream<TcpStream>) -> HttpsClient {
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .expect("HTTP handshake");
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        HttpsClient {
            sender,
            _task: Task(task),
        }
    }

    async fn get(&mut self, host: &str, path: &str) -> Reply {
        within("connection ready", self.sender.ready())
            .await
            .expect("connection still open");
        let response = within(
            "response head",
            self.sender.send_request(get_request(host, path)),
        )
        .await
        .expect("a response");
        read_reply(response).await
    }
}

/// A WebSocket server echoing text and binary messages.
async fn ws_echo_server() -> (SocketAddr, Task) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            connections.spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    (addr, Task(task))
}

/// What a raw TCP test server does with each connection.
#[derive(Clone)]
enum TcpBehaviour {
    /// Echoes every byte back until the client closes.
    Echo,
    /// Sends this banner as soon as it accepts, then echoes.
    Banner(&'static [u8]),
}

/// A raw TCP server on 127.0.0.1 that counts its connections.
struct TcpServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    _task: Task,
}

impl TcpServer {
    async fn start(behaviour: TcpBehaviour) -> TcpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let behaviour = behaviour.clone();
                connections.spawn(async move {
                    if let TcpBehaviour::Banner(banner) = behaviour
                        && stream.write_all(banner).await.is_err()
                    {
                        return;
                    }
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        TcpServer {
            addr,
            accepted,
            _task: Task(task),
        }
    }
}

/// A TLS server (its own certificate, from a tokio-rustls acceptor) that
/// echoes what it decrypts.
async fn tls_echo_server(cert_pem: &str, key_pem: &str) -> (SocketAddr, Task) {
    let chain = vec![der(cert_pem)];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).expect("a PEM key");
    let config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server config");
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            connections.spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                loop {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if tls.write_all(&buf[..n]).await.is_err() || tls.flush().await.is_err()
                            {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    (addr, Task(task))
}

/// Writes `msg` and reads exactly as many bytes back.
async fn round_trip<S>(stream: &mut S, msg: &[u8]) -> Vec<u8>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    within("write", stream.write_all(msg)).await.expect("write");
    within("flush", stream.flush()).await.expect("flush");
    let mut back = vec![0u8; msg.len()];
    within("echo", stream.read_exact(&mut back))
        .await
        .expect("the echo");
    back
}

/// A TLS listener `public` with the given certificate files (relative to
/// the config dir), `listener_extra` lines in `[[listener]]`, `tls_extra`
/// lines in `[listener.tls]`, a catch-all route to pool `web`, and `rest`
/// (more pools) at the end.
fn tls_config(
    certs: &[&str],
    listener_extra: &str,
    tls_extra: &str,
    web: SocketAddr,
    rest: &str,
) -> String {
    let certificates: Vec<String> = certs
        .iter()
        .map(|stem| format!("{{ cert = \"{stem}.pem\", key = \"{stem}.key\" }}"))
        .collect();
    format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"
{listener_extra}

[listener.tls]
certificates = [{}]
{tls_extra}

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{web}"]

{rest}
"#,
        certificates.join(", ")
    )
}

// ------------------------------------------------------------------ TLS termination

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_certificate_and_no_sni_gets_the_first() {
    let dir = TempDir::new("sni");
    let a = dir.cert("a", &["a.test"]);
    let b = dir.cert("b", &["b.test"]);
    let web = Backend::normal("web").await;
    let running = start_in(&dir, &tls_config(&["a", "b"], "", "", web.addr, "")).await;
    let addr = public(&running);

    for round in 0..2 {
        let tls = tls_connect(addr, Some("a.test")).await;
        assert!(
            presented(&tls) == a,
            "round {round}: a.test got another certificate"
        );
        let tls = tls_connect(addr, Some("b.test")).await;
        assert!(
            presented(&tls) == b,
            "round {round}: b.test got another certificate"
        );
        let tls = tls_connect(addr, Some("B.TEST")).await;
        assert!(
            presented(&tls) == b,
            "round {round}: SNI is case-insensitive"
        );
        let tls = tls_connect(addr, None).await;
        assert!(presented(&tls) == a, "round {round}: no SNI gets the first");
        let tls = tls_connect(addr, Some("unknown.test")).await;
        assert!(
            presented(&tls) == a,
            "round {round}: an unknown name gets the first"
        );
    }
    // Whichever certificate was chosen, the connection serves HTTPS.
    let mut client = HttpsClient::over(tls_connect(addr, Some("b.test")).await).await;
    let reply = client.get("b.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_reaches_the_backend_with_forwarded_proto_https() {
    let dir = TempDir::new("https");
    dir.cert("a", &["a.test"]);
    let web = Backend::normal("web").await;
    let running = start_in(&dir, &tls_config(&["a"], "", "", web.addr, "")).await;
    let addr = public(&running);

    let mut client = HttpsClient::over(tls_connect(addr, Some("a.test")).await).await;
    let reply = client.get("a.test", "/hello?x=1").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.backend(), "web");
    let seen = web.last_seen();
    assert_eq!(seen.uri.to_string(), "/hello?x=1");
    assert_eq!(seen.one("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(seen.one("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    let forwarded = seen.one("forwarded").expect("a Forwarded header");
    assert!(forwarded.contains("proto=https"), "Forwarded: {forwarded}");
    // Keep-alive over TLS: a second request on the same connection.
    let reply = client.get("a.test", "/again").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(web.requests(), 2);
    assert_eq!(web.accepted(), 1, "the server connection is reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_echo_through_wharf() {
    let dir = TempDir::new("wss");
    dir.cert("a", &["a.test"]);
    let (ws_addr, _ws) = ws_echo_server().await;
    let running = start_in(&dir, &tls_config(&["a"], "", "", ws_addr, "")).await;
    let addr = public(&running);

    let tls = tls_connect(addr, Some("a.test")).await;
    let (mut ws, response) = within(
        "websocket handshake",
        tokio_tungstenite::client_async("wss://a.test/ws", tls),
    )
    .await
    .expect("the websocket handshake succeeds");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    for i in 0..5 {
        let text = format!("hello {i}");
        within("send", ws.send(Message::text(text.clone())))
            .await
            .expect("send");
        let echo = within("echo", ws.next())
            .await
            .expect("a message")
            .expect("not an error");
        assert_eq!(echo, Message::text(text));
    }
    let binary: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    within("send", ws.send(Message::binary(binary.clone())))
        .await
        .expect("send");
    let echo = within("echo", ws.next())
        .await
        .expect("a message")
        .expect("not an error");
    assert_eq!(echo, Message::binary(binary));
    within("close", ws.close(None)).await.expect("close");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_wss_tunnel_is_closed_after_tunnel_idle() {
    let dir = TempDir::new("wss-idle");
    dir.cert("a", &["a.test"]);
    let (ws_addr, _ws) = ws_echo_server().await;
    // `rest` lands in [pool.web].
    let idle = "timeouts = { tunnel_idle = \"300ms\" }";
    let running = start_in(&dir, &tls_config(&["a"], "", "", ws_addr, idle)).await;
    let addr = public(&running);

    let tls = tls_connect(addr, Some("a.test")).await;
    let (mut ws, _) = within(
        "websocket handshake",
        tokio_tungstenite::client_async("wss://a.test/ws", tls),
    )
    .await
    .expect("the websocket handshake succeeds");
    // Messages every 100ms keep it open past the idle timeout.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let text = format!("tick {i}");
        within("send", ws.send(Message::text(text.clone())))
            .await
            .expect("send");
        let echo = within("echo", ws.next()).await.expect("a message");
        assert_eq!(echo.expect("not an error"), Message::text(text));
    }
    let last = Instant::now();
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
    let after = last.elapsed();
    match end {
        Err(_) => panic!(
            "an idle wss tunnel is still open 5s after its last message (tunnel_idle = 300ms)"
        ),
        Ok(Some(Ok(Message::Close(_)))) | Ok(Some(Err(_))) | Ok(None) => {}
        Ok(Some(Ok(other))) => panic!("unexpected message {other:?}"),
    }
    assert!(
        after >= Duration::from_millis(250) && after < Duration::from_millis(1500),
        "the idle wss tunnel closed {after:?} after its last message; tunnel_idle is 300ms"
    );
}

// ------------------------------------------------------------------ plaintext on the TLS port

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_serve_reaches_the_backend_as_http() {
    let dir = TempDir::new("serve");
    dir.cert("a", &["a.test"]);
    let web = Backend::normal("web").await;
    let config = tls_config(&["a"], "", "plaintext = \"serve\"", web.addr, "");
    let running = start_in(&dir, &config).await;
    let addr = public(&running);

    let reply = support::get(addr, "app.test", "/plain").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "web");
    assert_eq!(
        web.last_seen().one("x-forwarded-proto").as_deref(),
        Some("http")
    );
    // TLS on the same port still works.
    let mut client = HttpsClient::over(tls_connect(addr, Some("a.test")).await).await;
    assert_eq!(client.get("a.test", "/").await.status, StatusCode::OK);
    assert_eq!(
        web.last_seen().one("x-forwarded-proto").as_deref(),
        Some("https")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_redirect_answers_301_to_https() {
    let dir = TempDir::new("redirect");
    dir.cert("a", &["a.test"]);
    let web = Backend::normal("web").await;
    let config = tls_config(&["a"], "", "plaintext = \"redirect\"", web.addr, "");
    let running = start_in(&dir, &config).await;
    let addr = public(&running);

    let mut raw = RawClient::connect(addr).await;
    let response = raw
        .request(b"GET /path/x?query=1&b=2 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(response.status, 301);
    assert_eq!(
        response.header("location"),
        Some("https://app.test/path/x?query=1&b=2")
    );
    // Keep-alive: a second request on the same connection is redirected too.
    let response = raw
        .request(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n")
        .await;
    assert_eq!(response.status, 301);
    assert_eq!(response.header("location"), Some("https://other.test/"));
    assert_eq!(web.requests(), 0, "nothing reaches a server");
    // TLS still served.
    let mut client = HttpsClient::over(tls_connect(addr, Some("a.test")).await).await;
    assert_eq!(client.get("a.test", "/").await.status, StatusCode::OK);
    assert_eq!(web.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_reject_answers_400_and_closes() {
    let dir = TempDir::new("reject");
    dir.cert("a", &["a.test"]);
    let web = Backend::normal("web").await;
    let config = tls_config(&["a"], "", "plaintext = \"reject\"", web.addr, "");
    let running = start_in(&dir, &config).await;
    let addr = public(&running);

    let mut raw = RawClient::connect(addr).await;
    let response = raw
        .request(b"GET /x HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(response.status, 400);
    assert!(
        raw.closed_within(Duration::from_secs(5)).await,
        "the connection is closed after the 400"
    );
    assert_eq!(web.requests(), 0, "nothing reaches a server");
    let mut client = HttpsClient::over(tls_connect(addr, Some("a.test")).await).await;
    assert_eq!(client.get("a.test", "/").await.status, StatusCode::OK);
}

// ------------------------------------------------------------------ reload

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_reload_serves_the_new_one_and_keeps_open_connections() {
    let dir = TempDir::new("reload");
    let old = dir.cert("a", &["a.test"]);
    let web = Backend::normal("web").await;
    let running = start_in(&dir, &tls_config(&["a"], "", "", web.addr, "")).await;
    let addr = public(&running);

    let before = tls_connect(addr, Some("a.test")).await;
    assert!(presented(&before) == old);
    let mut kept = HttpsClient::over(before).await;
    assert_eq!(kept.get("a.test", "/1").await.status, StatusCode::OK);

    // New files, then the reload.
    let new = dir.cert("a", &["a.test"]);
    assert!(new != old);
    running.reload_certificates();
    let after = tls_connect(addr, Some("a.test")).await;
    assert!(
        presented(&after) == new,
        "a handshake after the reload gets the new certificate"
    );
    let mut fresh = HttpsClient::over(after).await;
    assert_eq!(fresh.get("a.test", "/2").await.status, StatusCode::OK);
    // The keep-alive connection opened before the reload still works.
    let reply = kept.get("a.test", "/3").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "web");

    // A broken certificate file: the reload fails and the last good one stays.
    dir.write("a.pem", "-----BEGIN CERTIFICATE-----\nnot base64!\n");
    running.reload_certificates();
    let tls = tls_connect(addr, Some("a.test")).await;
    assert!(
        presented(&tls) == new,
        "a failed reload keeps the certificate in use"
    );
    let mut client = HttpsClient::over(tls).await;
    assert_eq!(client.get("a.test", "/4").await.status, StatusCode::OK);
    // A key that does not match the certificate: refused as well.
    let (other_cert, _) = wharf::tls::self_signed(&["a.test"]).unwrap();
    dir.write("a.pem", &other_cert);
    running.reload_certificates();
    let tls = tls_connect(addr, Some("a.test")).await;
    assert!(
        presented(&tls) == new,
        "a reload with a mismatched key keeps the certificate in use"
    );
}

// ------------------------------------------------------------------ Flash policy

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flash_policy_request_gets_the_file_and_a_nul() {
    let dir = TempDir::new("flash");
    dir.cert("a", &["a.test"]);
    let policy = "<?xml version=\"1.0\"?>\n<cross-domain-policy>\n  <allow-access-from domain=\"*\" to-ports=\"*\"/>\n</cross-domain-policy>\n";
    dir.write("crossdomain.xml", policy);
    let web = Backend::normal("web").await;
    let config = tls_config(
        &["a"],
        "flash_policy = \"crossdomain.xml\"",
        "",
        web.addr,
        "",
    );
    let running = start_in(&dir, &config).await;
    let addr = public(&running);

    for _ in 0..2 {
        let mut raw = RawClient::connect(addr).await;
        raw.send(b"<policy-file-request/>\0").await;
        let (answer, closed) = raw.read_until_closed(WAIT).await;
        let mut expected = policy.as_bytes().to_vec();
        expected.push(0);
        assert_eq!(
            String::from_utf8_lossy(&answer),
            String::from_utf8_lossy(&expected)
        );
        assert!(closed, "the connection is closed after the policy");
    }
    // The request arriving in two pieces is still recognised.
    let mut raw = RawClient::connect(addr).await;
    raw.send(b"<policy-file").await;
    tokio::time::sleep(Duration::from_millis(50)).await; // two separate segments
    raw.send(b"-request/>\0").await;
    let (answer, closed) = raw.read_until_closed(WAIT).await;
    assert!(closed);
    assert!(answer.starts_with(b"<?xml") && answer.ends_with(b"\0"));
    assert_eq!(web.requests(), 0);
}

// ------------------------------------------------------------------ TCP pool

fn tcp_pool_config(tcp_servers: &[SocketAddr], web: SocketAddr, timeouts: &str) -> String {
    let list: Vec<String> = tcp_servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"
tcp_pool = "legacy"
{timeouts}

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{web}"]

[pool.legacy]
mode = "tcp"
servers = [{}]
"#,
        list.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_bytes_reach_the_tcp_pool_and_come_back() {
    let echo = TcpServer::start(TcpBehaviour::Echo).await;
    let web = Backend::normal("web").await;
    let running = wharf_plain(&tcp_pool_config(&[echo.addr], web.addr, "")).await;
    let addr = public(&running);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"HELLO\r\n").await, b"HELLO\r\n");
    assert_eq!(round_trip(&mut stream, b"MORE\r\n").await, b"MORE\r\n");
    drop(stream);

    let binary: Vec<u8> = (0..=255u8).rev().cycle().take(70_000).collect();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut stream, &binary).await, binary);
    drop(stream);
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 2);

    // HTTP on the same port still goes to the HTTP pool.
    let reply = support::get(addr, "app.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "web");
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 2);
}

/// Line protocols whose client speaks first with `VERB argument` (SMTP's
/// `EHLO`, POP3's and FTP's `USER`, IRC's `NICK`) are not HTTP: no request
/// target, no `HTTP/1.x`, and not an HTTP method. They belong to the TCP pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_line_protocol_with_an_uppercase_verb_reaches_the_tcp_pool() {
    let echo = TcpServer::start(TcpBehaviour::Echo).await;
    let web = Backend::normal("web").await;
    let running = wharf_plain(&tcp_pool_config(&[echo.addr], web.addr, "")).await;
    let addr = public(&running);

    for line in [
        &b"USER alice\r\n"[..],
        b"EHLO client.test\r\n",
        b"NICK wharf\r\n",
    ] {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(line).await.unwrap();
        let mut back = vec![0u8; line.len()];
        let read = tokio::time::timeout(WAIT, stream.read_exact(&mut back)).await;
        assert!(
            matches!(read, Ok(Ok(_))) && back == line,
            "{:?} did not come back from the TCP pool; wharf answered {:?}",
            String::from_utf8_lossy(line),
            String::from_utf8_lossy(&back)
        );
    }
    assert_eq!(web.requests(), 0);
}

/// The sniffer knows HTTP methods up to the longest registered one,
/// `BASELINE-CONTROL` (RFC 3253, 16 characters), followed by its space.
#[test]
fn the_longest_registered_http_method_is_sniffed_as_http() {
    use wharf::front::sniff::{Protocol, classify};
    assert_eq!(
        classify(b"VERSION-CONTROL /x HTTP/1.1\r\n"),
        Some(Protocol::Http)
    );
    assert_eq!(
        classify(b"BASELINE-CONTROL /x HTTP/1.1\r\n"),
        Some(Protocol::Http),
        "a 16-character method followed by a space"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_tcp_bytes_on_a_tls_port_reach_the_tcp_pool() {
    let dir = TempDir::new("tcp-on-tls");
    let a = dir.cert("a", &["a.test"]);
    let echo = TcpServer::start(TcpBehaviour::Echo).await;
    let web = Backend::normal("web").await;
    let rest = format!(
        "[pool.legacy]\nmode = \"tcp\"\nservers = [\"{}\"]\n",
        echo.addr
    );
    let config = tls_config(&["a"], "tcp_pool = \"legacy\"", "", web.addr, &rest);
    let running = start_in(&dir, &config).await;
    let addr = public(&running);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_eq!(
        round_trip(&mut stream, b"\x00\x01binary\xff").await,
        b"\x00\x01binary\xff"
    );
    let tls = tls_connect(addr, Some("a.test")).await;
    assert!(presented(&tls) == a);
    let mut client = HttpsClient::over(tls).await;
    assert_eq!(client.get("a.test", "/").await.text(), "web");
    assert_eq!(echo.accepted.load(Ordering::SeqCst), 1);
}

/// Starts wharf from config text that names no file.
async fn wharf_plain(toml: &str) -> wharf::Running {
    support::start_wharf(toml).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_speaks_first_after_server_first_delay() {
    let banner: &'static [u8] = b"220 legacy.test ESMTP ready\r\n";
    let server = TcpServer::start(TcpBehaviour::Banner(banner)).await;
    let web = Backend::normal("web").await;
    // `first_bytes` is long on purpose: the silent client must be handed to
    // the TCP pool after `server_first`, not after `first_bytes`.
    let timeouts = "timeouts = { server_first = \"200ms\", first_bytes = \"5s\" }";
    let running = wharf_plain(&tcp_pool_config(&[server.addr], web.addr, timeouts)).await;
    let addr = public(&running);

    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let mut got = vec![0u8; banner.len()];
    let read = tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut got)).await;
    let elapsed = started.elapsed();
    assert!(
        matches!(read, Ok(Ok(_))),
        "no banner within 3s (server_first = 200ms, first_bytes = 5s): {read:?} after {elapsed:?}"
    );
    assert_eq!(got, banner);
    assert!(
        elapsed >= Duration::from_millis(150),
        "handed over before server_first: {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1500),
        "the banner came {elapsed:?} after connecting; server_first is 200ms"
    );
    // The tunnel then carries bytes both ways.
    assert_eq!(
        round_trip(&mut stream, b"EHLO me\r\n").await,
        b"EHLO me\r\n"
    );

    // A client that does speak first within server_first is sniffed as usual.
    let reply = support::get(addr, "app.test", "/").await;
    assert_eq!(reply.text(), "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_without_tcp_pool_is_closed_after_first_bytes() {
    let web = Backend::normal("web").await;
    let config = format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"
timeouts = {{ first_bytes = "1s" }}

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{}"]
"#,
        web.addr
    );
    let running = wharf_plain(&config).await;
    let addr = public(&running);

    let started = Instant::now();
    let mut raw = RawClient::connect(addr).await;
    let closed = raw.closed_within(Duration::from_secs(5)).await;
    let elapsed = started.elapsed();
    assert!(closed, "a silent client is closed");
    assert!(
        elapsed >= Duration::from_millis(900),
        "closed before first_bytes (1s): {elapsed:?}"
    );
    assert!(
        elapsed < Duration::from_millis(1700),
        "a silent client was closed {elapsed:?} after connecting; first_bytes is 1s"
    );
    // wharf still serves.
    assert_eq!(support::get(addr, "app.test", "/").await.text(), "web");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_tls_listener_client_is_closed_after_first_bytes() {
    let dir = TempDir::new("silent-tls");
    dir.cert("a", &["a.test"]);
    let web = Backend::normal("web").await;
    let config = tls_config(
        &["a"],
        "timeouts = { first_bytes = \"1s\" }",
        "",
        web.addr,
        "",
    );
    let running = start_in(&dir, &config).await;
    let addr = public(&running);

    let started = Instant::now();
    let mut raw = RawClient::connect(addr).await;
    assert!(raw.closed_within(Duration::from_secs(5)).await);
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_millis(900) && elapsed < Duration::from_millis(1700),
        "a silent client was closed {elapsed:?} after connecting; first_bytes is 1s"
    );
}

// ------------------------------------------------------------------ SNI passthrough

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_passthrough_reaches_the_backend_tls_server_and_other_names_are_terminated() {
    let dir = TempDir::new("passthrough");
    let ours = dir.cert("a", &["a.test"]);
    let (db_cert, db_key) = wharf::tls::self_signed(&["db.test"]).unwrap();
    let theirs = der(&db_cert);
    let (db_addr, _db) = tls_echo_server(&db_cert, &db_key).await;
    let web = Backend::normal("web").await;
    let config = format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"

[listener.tls]
certificates = [{{ cert = "a.pem", key = "a.key" }}]

[[listener.route]]
sni = "db.test"
pool = "db"

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{}"]

[pool.db]
mode = "tcp"
servers = ["{db_addr}"]
"#,
        web.addr
    );
    let running = start_in(&dir, &config).await;
    let addr = public(&running);

    for _ in 0..2 {
        let mut tls = tls_connect(addr, Some("db.test")).await;
        assert!(
            presented(&tls) == theirs,
            "the passthrough handshake is with the backend, with its certificate"
        );
        assert_eq!(round_trip(&mut tls, b"ping\n").await, b"ping\n");
        let big: Vec<u8> = (0..=255u8).cycle().take(50_000).collect();
        assert_eq!(round_trip(&mut tls, &big).await, big);
    }
    // Another name on the same port is terminated by wharf.
    let tls = tls_connect(addr, Some("a.test")).await;
    assert!(presented(&tls) == ours, "a.test is terminated by wharf");
    let mut client = HttpsClient::over(tls).await;
    let reply = client.get("a.test", "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "web");
    // No SNI at all: terminated by wharf too.
    let tls = tls_connect(addr, None).await;
    assert!(presented(&tls) == ours);
    assert_eq!(web.requests(), 1);
}
