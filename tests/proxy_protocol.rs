//! PROXY protocol end to end: headers (v1 text, v2 binary) accepted from
//! trusted peers and refused from others, hostile headers closing only their
//! own connection, a header in front of TLS, hashing on the address a header
//! gives, and headers sent to servers (HTTP and TCP pools), read back by the
//! servers with a third-party parser (the `ppp` crate), not wharf's own.

mod support;

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use support::accept_any::{AcceptAny, provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsConnector;

use support::{Backend, RawClient, get_request, read_reply, within};

// ------------------------------------------------------------------ helpers

/// Aborts a spawned task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A listener `public` on 127.0.0.1:0 with `listener_extra` lines, a
/// catch-all route to pool `web` made of `servers`, `web_extra` lines in the
/// pool, and `rest` (more pools) at the end.
fn config(listener_extra: &str, servers: &[SocketAddr], web_extra: &str, rest: &str) -> String {
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"
{listener_extra}

[[listener.route]]
pool = "web"

[pool.web]
servers = [{}]
{web_extra}

{rest}
"#,
        list.join(", ")
    )
}

const TRUST_LOOPBACK: &str = "proxy_protocol = [\"127.0.0.0/8\"]";
/// Trusted, and the header may be left out (`still_serves` sends none).
const TRUST_LOOPBACK_OPTIONAL: &str =
    "proxy_protocol = [\"127.0.0.0/8\"]\nproxy_protocol_optional = true";

fn public(running: &wharf::Running) -> SocketAddr {
    support::public(running)
}

/// A v1 header line for `source` → `destination`.
fn v1(source: &str, destination: &str) -> Vec<u8> {
    let (source, destination): (SocketAddr, SocketAddr) =
        (source.parse().unwrap(), destination.parse().unwrap());
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    format!(
        "PROXY {family} {} {} {} {}\r\n",
        source.ip(),
        destination.ip(),
        source.port(),
        destination.port()
    )
    .into_bytes()
}

/// A v2 PROXY/TCP header, hand-encoded as in proxy-protocol.txt §2.2.
fn v2_tcp4(source: [u8; 4], sport: u16, destination: [u8; 4], dport: u16) -> Vec<u8> {
    let mut out = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    out.push(0x21); // version 2, PROXY
    out.push(0x11); // AF_INET, STREAM
    out.extend_from_slice(&12u16.to_be_bytes());
    out.extend_from_slice(&source);
    out.extend_from_slice(&destination);
    out.extend_from_slice(&sport.to_be_bytes());
    out.extend_from_slice(&dport.to_be_bytes());
    out
}

/// A v2 header built by the `ppp` crate (a third-party encoder), with a TLV.
fn v2_by_ppp(source: &str, destination: &str) -> Vec<u8> {
    let (source, destination): (SocketAddr, SocketAddr) =
        (source.parse().unwrap(), destination.parse().unwrap());
    let addresses: ppp::v2::Addresses = (source, destination).into();
    ppp::v2::Builder::with_addresses(
        ppp::v2::Version::Two | ppp::v2::Command::Proxy,
        ppp::v2::Protocol::Stream,
        addresses,
    )
    .write_tlv(ppp::v2::Type::Authority, b"app.test")
    .unwrap()
    .build()
    .unwrap()
}

fn request(host: &str, path: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes()
}

fn with(header: &[u8], rest: &[u8]) -> Vec<u8> {
    [header, rest].concat()
}

/// Sends `bytes` on a new connection and reads one response.
async fn raw_request(addr: SocketAddr, bytes: &[u8]) -> support::RawResponse {
    RawClient::connect(addr).await.request(bytes).await
}

/// Sends `bytes` on a new connection and expects it closed without a byte
/// of answer, promptly.
async fn refused(addr: SocketAddr, bytes: &[u8], what: &str) {
    let mut raw = RawClient::connect(addr).await;
    raw.send(bytes).await;
    let (answer, closed) = raw.read_until_closed(Duration::from_secs(5)).await;
    assert!(closed, "{what}: the connection is closed");
    assert!(
        answer.is_empty(),
        "{what}: no answer expected, got {:?}",
        String::from_utf8_lossy(&answer)
    );
}

/// A plain request (no header) is served with the socket's address.
async fn still_serves(addr: SocketAddr, web: &Backend) {
    let before = web.requests();
    let response = raw_request(addr, &request("app.test", "/after")).await;
    assert_eq!(response.status, 200, "wharf still serves");
    assert_eq!(web.requests(), before + 1);
    assert_eq!(
        web.last_seen().one("x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
}

fn assert_client(web: &Backend, ip: &str, forwarded_for: &str) {
    let seen = web.last_seen();
    assert_eq!(seen.one("x-forwarded-for").as_deref(), Some(ip));
    let forwarded = seen.one("forwarded").expect("a Forwarded header");
    assert!(
        forwarded.contains(&format!("for={forwarded_for}")),
        "Forwarded: {forwarded}"
    );
}

// ------------------------------------------------------------------ a server that reads PROXY headers

/// What the `ppp` crate read from a header a server received.
#[derive(Debug, Clone, PartialEq)]
struct Parsed {
    version: u8,
    source: SocketAddr,
    destination: SocketAddr,
}

/// Reads exactly one PROXY header from `stream` (nothing past it), framing
/// it only as far as needed: a v1 line up to its CRLF, or a v2 header by its
/// length field.
async fn read_header_bytes(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut bytes = vec![0u8; 5];
    stream.read_exact(&mut bytes).await?;
    if bytes == b"PROXY" {
        while !bytes.ends_with(b"\r\n") {
            if bytes.len() > 107 {
                return Err(io::Error::other("v1 line too long"));
            }
            let mut byte = [0u8; 1];
            stream.read_exact(&mut byte).await?;
            bytes.push(byte[0]);
        }
        return Ok(bytes);
    }
    bytes.resize(16, 0);
    stream.read_exact(&mut bytes[5..]).await?;
    let len = usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    bytes.resize(16 + len, 0);
    stream.read_exact(&mut bytes[16..]).await?;
    Ok(bytes)
}

/// Parses a whole header with `ppp`; the header must be all of `bytes`.
fn parse_with_ppp(bytes: &[u8]) -> Result<Parsed, String> {
    use ppp::HeaderResult;
    match HeaderResult::parse(bytes) {
        HeaderResult::V1(Ok(header)) => {
            if header.header.len() != bytes.len() {
                return Err(format!(
                    "v1 header is {} of {} bytes",
                    header.header.len(),
                    bytes.len()
                ));
            }
            match header.addresses {
                ppp::v1::Addresses::Tcp4(a) => Ok(Parsed {
                    version: 1,
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                }),
                ppp::v1::Addresses::Tcp6(a) => Ok(Parsed {
                    version: 1,
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                }),
                ppp::v1::Addresses::Unknown => Err("v1 UNKNOWN".into()),
            }
        }
        HeaderResult::V2(Ok(header)) => {
            if header.len() != bytes.len() {
                return Err(format!(
                    "v2 header is {} of {} bytes",
                    header.len(),
                    bytes.len()
                ));
            }
            if header.command != ppp::v2::Command::Proxy {
                return Err(format!("v2 command {:?}", header.command));
            }
            if header.protocol != ppp::v2::Protocol::Stream {
                return Err(format!("v2 protocol {:?}", header.protocol));
            }
            match header.addresses {
                ppp::v2::Addresses::IPv4(a) => Ok(Parsed {
                    version: 2,
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                }),
                ppp::v2::Addresses::IPv6(a) => Ok(Parsed {
                    version: 2,
                    source: SocketAddr::from((a.source_address, a.source_port)),
                    destination: SocketAddr::from((a.destination_address, a.destination_port)),
                }),
                other => Err(format!("v2 addresses {other:?}")),
            }
        }
        other => Err(format!("ppp refused the header {bytes:?}: {other:?}")),
    }
}

/// What a PROXY-reading server does after the header.
#[derive(Clone, Copy)]
enum After {
    /// Serves HTTP/1.1: 200 `proxied`, recording each request's headers.
    Http,
    /// Echoes bytes.
    Echo,
}

/// A server whose every connection starts with a PROXY header: it reads
/// the header, parses it with `ppp`, reports it, then goes on as `After` says.
struct ProxyServer {
    addr: SocketAddr,
    headers: mpsc::UnboundedReceiver<Result<Parsed, String>>,
    requests: Arc<Mutex<Vec<HeaderMap>>>,
    accepted: Arc<AtomicUsize>,
    _task: Task,
}

impl ProxyServer {
    async fn start(after: After) -> ProxyServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, headers) = mpsc::unbounded_channel();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let accepted = Arc::new(AtomicUsize::new(0));
        let (seen, count) = (requests.clone(), accepted.clone());
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                let (tx, seen) = (tx.clone(), seen.clone());
                connections.spawn(async move {
                    let header = within("a PROXY header", read_header_bytes(&mut stream)).await;
                    let parsed = match header {
                        Ok(bytes) => parse_with_ppp(&bytes),
                        Err(e) => Err(format!("reading the header: {e}")),
                    };
                    let ok = parsed.is_ok();
                    let _ = tx.send(parsed);
                    if !ok {
                        return;
                    }
                    match after {
                        After::Echo => {
                            let (mut read, mut write) = stream.split();
                            let _ = tokio::io::copy(&mut read, &mut write).await;
                        }
                        After::Http => {
                            let service = service_fn(move |request: http::Request<_>| {
                                seen.lock().unwrap().push(request.headers().clone());
                                async move {
                                    let body = http_body_util::Full::new(
                                        bytes::Bytes::from_static(b"proxied"),
                                    );
                                    Ok::<_, std::convert::Infallible>(Response::new(body))
                                }
                            });
                            let _ = hyper::server::conn::http1::Builder::new()
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        ProxyServer {
            addr,
            headers,
            requests,
            accepted,
            _task: Task(task),
        }
    }

    /// The next header a connection brought, as `ppp` read it.
    async fn next_header(&mut self) -> Parsed {
        within("a connection with a PROXY header", self.headers.recv())
            .await
            .expect("server running")
            .unwrap_or_else(|e| panic!("the server could not read a PROXY header: {e}"))
    }
}

// ------------------------------------------------------------------ accepting headers

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_header_from_a_trusted_peer_gives_the_client_address() {
    let web = Backend::normal("web").await;
    let running = support::start_wharf(&config(TRUST_LOOPBACK_OPTIONAL, &[web.addr], "", "")).await;
    let addr = public(&running);

    // Header and request in one write.
    let header = v1("203.0.113.7:40000", "198.51.100.1:443");
    let response = raw_request(addr, &with(&header, &request("app.test", "/one"))).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "203.0.113.7", "203.0.113.7");

    // Header, then the request in a later segment; keep-alive keeps the address.
    let mut raw = RawClient::connect(addr).await;
    raw.send(&v1("192.0.2.55:1234", "198.51.100.1:443")).await;
    tokio::time::sleep(Duration::from_millis(30)).await; // two TCP segments
    let response = raw.request(&request("app.test", "/two")).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "192.0.2.55", "192.0.2.55");
    let response = raw.request(&request("app.test", "/three")).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "192.0.2.55", "192.0.2.55");

    // IPv6.
    let header = v1("[2001:db8::7]:40000", "[2001:db8::1]:443");
    let response = raw_request(addr, &with(&header, &request("app.test", "/v6"))).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "2001:db8::7", "\"[2001:db8::7]\"");

    // PROXY UNKNOWN: the socket's own address.
    let response = raw_request(
        addr,
        &with(b"PROXY UNKNOWN\r\n", &request("app.test", "/unknown")),
    )
    .await;
    assert_eq!(response.status, 200);
    assert_client(&web, "127.0.0.1", "127.0.0.1");
    // And without any header, from a trusted peer allowed to omit it: its own address too.
    still_serves(addr, &web).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v2_header_from_a_trusted_peer_gives_the_client_address() {
    let web = Backend::normal("web").await;
    let running = support::start_wharf(&config(TRUST_LOOPBACK_OPTIONAL, &[web.addr], "", "")).await;
    let addr = public(&running);

    let header = v2_tcp4([203, 0, 113, 7], 40000, [198, 51, 100, 1], 443);
    let response = raw_request(addr, &with(&header, &request("app.test", "/v2"))).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "203.0.113.7", "203.0.113.7");

    // Built by ppp, with a TLV, IPv4 and IPv6.
    let header = v2_by_ppp("203.0.113.9:5555", "198.51.100.1:443");
    let response = raw_request(addr, &with(&header, &request("app.test", "/ppp4"))).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "203.0.113.9", "203.0.113.9");
    let header = v2_by_ppp("[2001:db8::9]:5555", "[2001:db8::1]:443");
    let response = raw_request(addr, &with(&header, &request("app.test", "/ppp6"))).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "2001:db8::9", "\"[2001:db8::9]\"");

    // The v2 header split in the middle of its signature.
    let header = v2_tcp4([192, 0, 2, 99], 1, [198, 51, 100, 1], 443);
    let mut raw = RawClient::connect(addr).await;
    raw.send(&header[..7]).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    raw.send(&header[7..]).await;
    tokio::time::sleep(Duration::from_millis(30)).await;
    let response = raw.request(&request("app.test", "/split")).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "192.0.2.99", "192.0.2.99");

    // LOCAL (a health check from the proxy itself): the socket's address.
    let mut local = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    local.extend_from_slice(&[0x20, 0x00, 0, 0]);
    let response = raw_request(addr, &with(&local, &request("app.test", "/local"))).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "127.0.0.1", "127.0.0.1");
}

/// As HAProxy's `accept-proxy`: from a `proxy_protocol` peer the header is
/// required, so that nobody behind that peer (or sharing its address) can
/// send a header of their own and forge an address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trusted_peer_without_a_header_is_refused_unless_optional() {
    let web = Backend::normal("web").await;
    let running = support::start_wharf(&config(TRUST_LOOPBACK, &[web.addr], "", "")).await;
    let addr = public(&running);
    refused(
        addr,
        &request("app.test", "/plain"),
        "no header from a trusted peer",
    )
    .await;
    let header = v1("203.0.113.7:40000", "198.51.100.1:443");
    let response = raw_request(addr, &with(&header, &request("app.test", "/one"))).await;
    assert_eq!(response.status, 200);
    assert_client(&web, "203.0.113.7", "203.0.113.7");
    assert_eq!(web.requests(), 1);

    let optional =
        support::start_wharf(&config(TRUST_LOOPBACK_OPTIONAL, &[web.addr], "", "")).await;
    still_serves(public(&optional), &web).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_from_an_untrusted_peer_is_refused() {
    let web = Backend::normal("web").await;
    let listener = "proxy_protocol = [\"10.0.0.0/8\"]";
    let running = support::start_wharf(&config(listener, &[web.addr], "", "")).await;
    let addr = public(&running);

    let req = request("app.test", "/forged");
    refused(
        addr,
        &with(&v1("203.0.113.7:40000", "198.51.100.1:443"), &req),
        "v1",
    )
    .await;
    let v2 = v2_tcp4([203, 0, 113, 7], 40000, [198, 51, 100, 1], 443);
    refused(addr, &with(&v2, &req), "v2").await;
    refused(addr, &with(b"PROXY UNKNOWN\r\n", &req), "v1 UNKNOWN").await;
    assert_eq!(web.requests(), 0, "the backend saw nothing");
    // Without a header, the same peer is served, with its own address.
    still_serves(addr, &web).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_on_a_listener_without_proxy_protocol_is_refused() {
    let web = Backend::normal("web").await;
    let running = support::start_wharf(&config("", &[web.addr], "", "")).await;
    let addr = public(&running);

    let req = request("app.test", "/forged");
    refused(
        addr,
        &with(&v1("203.0.113.7:40000", "198.51.100.1:443"), &req),
        "v1",
    )
    .await;
    let v2 = v2_tcp4([203, 0, 113, 7], 40000, [198, 51, 100, 1], 443);
    refused(addr, &with(&v2, &req), "v2").await;
    assert_eq!(web.requests(), 0, "the backend saw nothing");
    still_serves(addr, &web).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_oversized_headers_close_only_their_connection() {
    let web = Backend::normal("web").await;
    let running = support::start_wharf(&config(TRUST_LOOPBACK_OPTIONAL, &[web.addr], "", "")).await;
    let addr = public(&running);
    let req = request("app.test", "/x");

    let malformed: Vec<(&str, Vec<u8>)> = vec![
        (
            "bad v1 protocol",
            with(b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", &req),
        ),
        (
            "bad v1 port",
            with(b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 2\r\n", &req),
        ),
        (
            "v1 LF only",
            with(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n", &req),
        ),
        ("v1 garbage", with(b"PROXY \xff\xfe\xfd garbage\r\n", &req)),
        (
            "v1 family mismatch",
            with(b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", &req),
        ),
        (
            "v1 too long",
            with(&[b"PROXY UNKNOWN ".as_slice(), &[b'x'; 200]].concat(), &req),
        ),
        ("v2 bad version", {
            let mut h = v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2);
            h[12] = 0x11;
            with(&h, &req)
        }),
        ("v2 bad family", {
            let mut h = v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2);
            h[13] = 0x99;
            with(&h, &req)
        }),
        ("v2 short address block", {
            let mut h = v2_tcp4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2);
            h[15] = 4;
            h.truncate(16 + 4);
            with(&h, &req)
        }),
    ];
    for (what, bytes) in &malformed {
        refused(addr, bytes, what).await;
        still_serves(addr, &web).await;
    }

    // Oversized: a v2 header announcing 60000 bytes, followed by some of them.
    let mut oversized = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    oversized.extend_from_slice(&[0x21, 0x11]);
    oversized.extend_from_slice(&60000u16.to_be_bytes());
    oversized.extend_from_slice(&[0u8; 2000]);
    refused(addr, &oversized, "v2 of 60000 bytes").await;
    still_serves(addr, &web).await;

    // Truncated: part of a header, then the client closes its side.
    let truncated: Vec<(&str, Vec<u8>)> = vec![
        (
            "v1 cut",
            b"PROXY TCP4 203.0.113.7 198.51.100.1 400".to_vec(),
        ),
        (
            "v1 without CRLF",
            b"PROXY TCP4 203.0.113.7 198.51.100.1 40000 443".to_vec(),
        ),
        (
            "v2 cut in the addresses",
            v2_tcp4([203, 0, 113, 7], 40000, [198, 51, 100, 1], 443)[..20].to_vec(),
        ),
        ("v2 signature only", b"\r\n\r\n\0\r\nQUIT\n".to_vec()),
        ("PROXY prefix only", b"PROXY ".to_vec()),
    ];
    for (what, bytes) in &truncated {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut answer = Vec::new();
        let read = within_secs(5, what, stream.read_to_end(&mut answer)).await;
        assert!(
            read.is_ok()
                || read
                    .as_ref()
                    .is_err_and(|e| e.kind() == io::ErrorKind::ConnectionReset),
            "{what}: {read:?}"
        );
        assert!(
            answer.is_empty(),
            "{what}: no answer expected, got {answer:?}"
        );
        still_serves(addr, &web).await;
    }
    assert_eq!(web.requests(), malformed.len() + 1 + truncated.len());
}

async fn within_secs<T>(secs: u64, what: &str, future: impl Future<Output = T>) -> T {
    support::within_for(Duration::from_secs(secs), what, future).await
}

// ------------------------------------------------------------------ a header in front of TLS

/// A temp directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "wharf-proxy-protocol-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_then_tls_on_the_same_connection() {
    let dir = TempDir::new();
    let (cert, key) = wharf::tls::self_signed(&["app.test"]).unwrap();
    std::fs::write(dir.0.join("app.pem"), &cert).unwrap();
    std::fs::write(dir.0.join("app.key"), &key).unwrap();
    let web = Backend::normal("web").await;
    let toml = config(
        TRUST_LOOPBACK,
        &[web.addr],
        "",
        "",
    )
    .replace(
        "[[listener.route]]",
        "[listener.tls]\ncertificates = [{ cert = \"app.pem\", key = \"app.key\" }]\n\n[[listener.route]]",
    );
    let file = dir.0.join("wharf.toml");
    let parsed = wharf::config::parse_str(&file.display().to_string(), &toml)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let running = wharf::start(parsed).await.expect("wharf starts");
    let addr = public(&running);

    let provider = provider();
    let client_config = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider)))
        .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client_config));

    for (header, ip) in [
        (v1("203.0.113.7:40000", "198.51.100.1:443"), "203.0.113.7"),
        (
            v2_tcp4([203, 0, 113, 8], 40000, [198, 51, 100, 1], 443),
            "203.0.113.8",
        ),
    ] {
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        tcp.write_all(&header).await.unwrap();
        let name = ServerName::try_from("app.test".to_owned()).unwrap();
        let tls = within(
            "TLS handshake after the PROXY header",
            connector.connect(name, tcp),
        )
        .await
        .expect("the TLS handshake succeeds after a PROXY header");
        let presented = tls.get_ref().1.peer_certificates().unwrap()[0].clone();
        let expected = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert!(presented == expected, "wharf's certificate");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
            .await
            .unwrap();
        let _conn = Task(tokio::spawn(async move {
            let _ = connection.await;
        }));
        let response = within(
            "response",
            sender.send_request(get_request("app.test", "/tls")),
        )
        .await
        .unwrap();
        let reply = read_reply(response).await;
        assert_eq!(reply.status, StatusCode::OK);
        let seen = web.last_seen();
        assert_eq!(seen.one("x-forwarded-for").as_deref(), Some(ip));
        assert_eq!(seen.one("x-forwarded-proto").as_deref(), Some("https"));
    }
}

// ------------------------------------------------------------------ hashing on the header's address

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_source_ip_uses_the_address_from_the_header() {
    let one = Backend::normal("one").await;
    let two = Backend::normal("two").await;
    let running = support::start_wharf(&config(
        TRUST_LOOPBACK,
        &[one.addr, two.addr],
        "balance = \"hash:source_ip\"",
        "",
    ))
    .await;
    let addr = public(&running);

    let mut chosen = std::collections::HashMap::new();
    for i in 1..=16u8 {
        let client = format!("203.0.113.{i}:40000");
        let mut first = None;
        for round in 0..3 {
            // A new connection (and source port) each time.
            let header = v1(
                &client.replace("40000", &(40000 + round).to_string()),
                "198.51.100.1:443",
            );
            let response = raw_request(addr, &with(&header, &request("app.test", "/h"))).await;
            assert_eq!(response.status, 200);
            let backend = response.header("x-backend").unwrap().to_owned();
            match &first {
                None => first = Some(backend),
                Some(b) => assert_eq!(b, &backend, "{client}: the same address, the same server"),
            }
        }
        chosen.insert(i, first.unwrap());
    }
    let distinct: std::collections::HashSet<_> = chosen.values().collect();
    assert_eq!(
        distinct.len(),
        2,
        "16 different header addresses all went to one server: the hash ignores them ({chosen:?})"
    );
}

// ------------------------------------------------------------------ sending headers to servers

async fn http_pool_sends(version: &str) {
    let mut server = ProxyServer::start(After::Http).await;
    let running = support::start_wharf(&config(
        "",
        &[server.addr],
        &format!("send_proxy_protocol = \"{version}\""),
        "",
    ))
    .await;
    let addr = public(&running);
    let expected_version = if version == "v1" { 1 } else { 2 };

    let stream = TcpStream::connect(addr).await.unwrap();
    let client_addr = stream.local_addr().unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let _conn = Task(tokio::spawn(async move {
        let _ = connection.await;
    }));
    for i in 0..2 {
        within("ready", sender.ready()).await.unwrap();
        let response = within(
            "response",
            sender.send_request(get_request("app.test", "/p")),
        )
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"proxied");
        let parsed = server.next_header().await;
        assert_eq!(
            parsed,
            Parsed {
                version: expected_version,
                source: client_addr,
                destination: addr,
            },
            "request {i}"
        );
    }
    let requests = server.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].get("x-forwarded-for").unwrap(),
        &client_addr.ip().to_string()
    );
    assert_eq!(
        server.accepted.load(Ordering::SeqCst),
        2,
        "a connection that started with one client's header is not reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pool_sends_a_v1_header_that_ppp_reads() {
    http_pool_sends("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_pool_sends_a_v2_header_that_ppp_reads() {
    http_pool_sends("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_received_is_passed_on_to_the_server() {
    let mut server = ProxyServer::start(After::Http).await;
    let running = support::start_wharf(&config(
        TRUST_LOOPBACK,
        &[server.addr],
        "send_proxy_protocol = \"v2\"",
        "",
    ))
    .await;
    let addr = public(&running);

    let header = v1("203.0.113.7:40000", "198.51.100.1:443");
    let response = raw_request(addr, &with(&header, &request("app.test", "/in-out"))).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        server.next_header().await,
        Parsed {
            version: 2,
            source: "203.0.113.7:40000".parse().unwrap(),
            destination: "198.51.100.1:443".parse().unwrap(),
        }
    );
    let header = v1("[2001:db8::7]:40001", "[2001:db8::1]:443");
    let response = raw_request(addr, &with(&header, &request("app.test", "/in-out6"))).await;
    assert_eq!(response.status, 200);
    assert_eq!(
        server.next_header().await,
        Parsed {
            version: 2,
            source: "[2001:db8::7]:40001".parse().unwrap(),
            destination: "[2001:db8::1]:443".parse().unwrap(),
        }
    );
}

async fn tcp_pool_sends(version: &str) {
    let mut server = ProxyServer::start(After::Echo).await;
    let web = Backend::normal("web").await;
    let rest = format!(
        "[pool.legacy]\nmode = \"tcp\"\nservers = [\"{}\"]\nsend_proxy_protocol = \"{version}\"\n",
        server.addr
    );
    let running =
        support::start_wharf(&config("tcp_pool = \"legacy\"", &[web.addr], "", &rest)).await;
    let addr = public(&running);
    let expected_version = if version == "v1" { 1 } else { 2 };

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let client_addr = stream.local_addr().unwrap();
    stream.write_all(b"HELLO\r\n").await.unwrap();
    let mut back = [0u8; 7];
    within("echo", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, b"HELLO\r\n");
    assert_eq!(
        server.next_header().await,
        Parsed {
            version: expected_version,
            source: client_addr,
            destination: addr,
        }
    );
    // Bytes keep flowing after the header.
    let big: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
    stream.write_all(&big).await.unwrap();
    let mut back = vec![0u8; big.len()];
    within("echo", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(back, big);
    assert_eq!(web.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pool_sends_a_v1_header_that_ppp_reads() {
    tcp_pool_sends("v1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pool_sends_a_v2_header_that_ppp_reads() {
    tcp_pool_sends("v2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_pool_passes_on_a_received_header() {
    let mut server = ProxyServer::start(After::Echo).await;
    let web = Backend::normal("web").await;
    let rest = format!(
        "[pool.legacy]\nmode = \"tcp\"\nservers = [\"{}\"]\nsend_proxy_protocol = \"v1\"\n",
        server.addr
    );
    let listener = format!("{TRUST_LOOPBACK}\ntcp_pool = \"legacy\"");
    let running = support::start_wharf(&config(&listener, &[web.addr], "", &rest)).await;
    let addr = public(&running);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let header = v2_tcp4([203, 0, 113, 7], 40000, [198, 51, 100, 1], 4000);
    stream
        .write_all(&with(&header, b"\x00\x01raw"))
        .await
        .unwrap();
    let mut back = [0u8; 5];
    within("echo", stream.read_exact(&mut back)).await.unwrap();
    assert_eq!(&back, b"\x00\x01raw");
    assert_eq!(
        server.next_header().await,
        Parsed {
            version: 1,
            source: SocketAddr::from((Ipv4Addr::new(203, 0, 113, 7), 40000)),
            destination: SocketAddr::from((Ipv4Addr::new(198, 51, 100, 1), 4000)),
        }
    );
}
