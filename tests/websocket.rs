//! WebSockets through wharf, end to end: a real client (tokio-tungstenite, or
//! hand-written frames on a raw socket) talks to an in-process echo backend
//! through a running wharf, and every byte, frame, ping and close code is
//! checked on the far side. Also the upgrade handshake itself: what the
//! backend sees, refused upgrades, routes that forbid upgrades, `h2c`, and a
//! backend that switches protocols without being asked.
//!
//! Everything listens on 127.0.0.1 port 0; every wait is bounded.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

mod support;

use support::pipe::{RawBackend, RawEnd as Raw};
use support::within;
use support::ws::{WsBackend, client_frame, ws_config};

// ---------------------------------------------------------------------------
// wharf
// ---------------------------------------------------------------------------

/// A running wharf in front of one backend. Keep it alive for the whole test:
/// dropping it stops the listener.
struct Wharf {
    _running: wharf::Running,
    addr: SocketAddr,
}

/// Starts wharf with two routes to `backend`: `/no-upgrades/` allows no
/// upgrade at all, everything else the default (`websocket`).
async fn start_wharf(backend: SocketAddr) -> Wharf {
    let toml = format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[listener.route]]
path_prefix = "/no-upgrades/"
pool = "app"
upgrades = []

[[listener.route]]
pool = "app"

[pool.app]
servers = ["{backend}"]
timeouts = {{ response = "5s" }}
"#
    );
    let running = support::start_wharf(&toml).await;
    Wharf {
        addr: support::public(&running),
        _running: running,
    }
}

// ---------------------------------------------------------------------------
// A raw HTTP/1.1 backend and client, for handshakes a WebSocket library
// would not produce or accept
// ---------------------------------------------------------------------------

/// A parsed HTTP response head (and body).
#[derive(Debug)]
struct RawResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl RawResponse {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Header lines of a request or response head, names lower-cased.
fn head_headers(head: &str) -> Vec<(String, String)> {
    head.split("\r\n")
        .skip(1)
        .filter_map(|line| line.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect()
}

fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads one response: head, then a body framed by Content-Length or
/// chunked (no body for 1xx, 204, 304).
async fn read_response(raw: &mut Raw) -> RawResponse {
    let head = raw.read_head().await.expect("a response, not EOF");
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head:?}"));
    let headers = head_headers(&head);
    let mut body = Vec::new();
    if !(100..200).contains(&status) && status != 204 && status != 304 {
        if let Some(len) = find_header(&headers, "content-length") {
            body = raw.read_exact(len.parse().expect("numeric length")).await;
        } else if find_header(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked"))
        {
            for _ in 0..10_000 {
                let size = usize::from_str_radix(
                    raw.read_line().await.split(';').next().unwrap().trim(),
                    16,
                )
                .expect("chunk size");
                if size == 0 {
                    // No trailers are expected: the blank line ends the body.
                    assert_eq!(raw.read_line().await, "");
                    break;
                }
                body.extend(raw.read_exact(size).await);
                assert_eq!(raw.read_line().await, "");
            }
        } else {
            panic!("response without a framed body: {head:?}");
        }
    }
    RawResponse {
        status,
        headers,
        body,
    }
}

/// A complete `200 OK` whose body names the request path.
fn ok_response(path: &str) -> Vec<u8> {
    let body = format!("plain {path}");
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A WebSocket upgrade request as a browser would send it.
fn ws_upgrade_request(path: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\n\
         Host: app.test\r\n\
         Upgrade: websocket\r\n\
         Connection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Sec-WebSocket-Version: 13\r\n\
         \r\n"
    )
}

// ---------------------------------------------------------------------------
// Clients
// ---------------------------------------------------------------------------

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn connect(wharf: &Wharf, path: &str) -> Client {
    let url = format!("ws://{}{path}", wharf.addr);
    let (ws, response) = within(
        "the websocket handshake",
        tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true),
    )
    .await
    .expect("websocket handshake through wharf");
    assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
    ws
}

async fn next_message(ws: &mut Client) -> Message {
    within("a message at the client", ws.next())
        .await
        .expect("the websocket is still open")
        .expect("a message, not an error")
}

/// Deterministic pseudo-random bytes (xorshift), so that a shifted, lost or
/// duplicated chunk cannot go unnoticed.
fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

// ---------------------------------------------------------------------------
// Raw WebSocket frames
// ---------------------------------------------------------------------------

const OP_CONTINUATION: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;

/// Reads one (unmasked, server) frame: (fin, opcode, payload).
async fn read_server_frame(raw: &mut Raw) -> (bool, u8, Vec<u8>) {
    let head = raw.read_exact(2).await;
    let fin = head[0] & 0x80 != 0;
    let opcode = head[0] & 0x0f;
    assert_eq!(head[1] & 0x80, 0, "a server frame must not be masked");
    let len = match head[1] & 0x7f {
        126 => u16::from_be_bytes(raw.read_exact(2).await.try_into().unwrap()) as usize,
        127 => u64::from_be_bytes(raw.read_exact(8).await.try_into().unwrap()) as usize,
        n => n as usize,
    };
    (fin, opcode, raw.read_exact(len).await)
}

// ---------------------------------------------------------------------------
// Echo
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_binary_messages_echo_through_wharf() {
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;
    let mut ws = connect(&wharf, "/echo").await;
    let mut conn = backend.next_conn().await;
    assert!(conn.accepted);
    assert_eq!(conn.path, "/echo");

    let messages = [
        Message::text("hello, wharf"),
        Message::binary(vec![0u8, 1, 2, 3, 0xff, 0xfe, 0x80, 0x00]),
        Message::text(""),
        Message::binary(Vec::new()),
        Message::text("ünïcødé ✓ — a longer text message ".repeat(100)),
        Message::binary(pattern(70_000, 7)),
    ];
    for message in messages {
        within("send", ws.send(message.clone()))
            .await
            .expect("send");
        assert_eq!(
            conn.next_data_or_close().await,
            message,
            "backend receives the message unchanged"
        );
        assert_eq!(
            next_message(&mut ws).await,
            message,
            "client receives the echo unchanged"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_are_reassembled_by_the_backend() {
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;

    let mut raw = Raw::connect(wharf.addr).await;
    raw.write(ws_upgrade_request("/fragments").as_bytes()).await;
    let response = read_response(&mut raw).await;
    assert_eq!(response.status, 101, "{response:?}");
    // RFC 6455 §1.3's example key and accept value.
    assert_eq!(
        response.header("sec-websocket-accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    let mut conn = backend.next_conn().await;
    assert!(conn.accepted);

    // A text message in three fragments, with a ping between two of them
    // (RFC 6455 §5.4 allows control frames inside a fragmented message), and
    // a frame split over two TCP writes.
    raw.write(&client_frame(false, OP_TEXT, b"Hello")).await;
    raw.write(&client_frame(false, OP_CONTINUATION, b", frag"))
        .await;
    raw.write(&client_frame(true, OP_PING, b"mid")).await;
    let last = client_frame(true, OP_CONTINUATION, b"mented world");
    raw.write(&last[..4]).await;
    raw.write(&last[4..]).await;

    assert_eq!(conn.next_message().await, Message::Ping("mid".into()));
    assert_eq!(
        conn.next_message().await,
        Message::text("Hello, fragmented world"),
        "the backend gets one reassembled message"
    );
    // The pong to the ping and the echo, in that order.
    assert_eq!(
        read_server_frame(&mut raw).await,
        (true, OP_PONG, b"mid".to_vec())
    );
    assert_eq!(
        read_server_frame(&mut raw).await,
        (true, OP_TEXT, b"Hello, fragmented world".to_vec())
    );

    // A binary message in two fragments, sent in one write.
    let mut both = client_frame(false, OP_BINARY, &[0, 1, 2]);
    both.extend(client_frame(true, OP_CONTINUATION, &[3, 4, 0xff]));
    raw.write(&both).await;
    assert_eq!(
        conn.next_message().await,
        Message::binary(vec![0u8, 1, 2, 3, 4, 0xff])
    );
    assert_eq!(
        read_server_frame(&mut raw).await,
        (true, OP_BINARY, vec![0, 1, 2, 3, 4, 0xff])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_16_mib_binary_message_passes_unchanged_both_ways() {
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;
    let mut ws = connect(&wharf, "/big").await;
    let mut conn = backend.next_conn().await;

    let data = pattern(16 << 20, 0x5eed);
    within("sending 16 MiB", ws.send(Message::binary(data.clone())))
        .await
        .expect("send 16 MiB");

    match conn.next_data_or_close().await {
        Message::Binary(got) => {
            assert_eq!(got.len(), data.len(), "length at the backend");
            assert!(got[..] == data[..], "16 MiB differ at the backend");
        }
        other => panic!("backend expected a binary message, got {:?}", other.len()),
    }
    match next_message(&mut ws).await {
        Message::Binary(got) => {
            assert_eq!(got.len(), data.len(), "length of the echo");
            assert!(got[..] == data[..], "16 MiB echo differs");
        }
        other => panic!("client expected a binary message, got {:?}", other.len()),
    }
}

// ---------------------------------------------------------------------------
// Ping, pong, close
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_from_client_gets_pong_with_same_payload() {
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;
    let mut ws = connect(&wharf, "/ping").await;
    let mut conn = backend.next_conn().await;

    let payload: &[u8] = b"are you there? \x00\x01\xff";
    within("send ping", ws.send(Message::Ping(payload.to_vec().into())))
        .await
        .expect("send ping");
    assert_eq!(
        conn.next_message().await,
        Message::Ping(payload.to_vec().into())
    );
    assert_eq!(
        next_message(&mut ws).await,
        Message::Pong(payload.to_vec().into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_from_server_reaches_client_and_its_pong_the_server() {
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;
    let mut ws = connect(&wharf, "/server-ping").await;
    let mut conn = backend.next_conn().await;

    assert_eq!(
        next_message(&mut ws).await,
        Message::Ping("from-server".into())
    );
    // tungstenite queues the pong and writes it with the next frame it
    // sends (after this text, as it happens): accept either order.
    within("send", ws.send(Message::text("after ping")))
        .await
        .expect("send");
    let mut got = vec![conn.next_message().await, conn.next_message().await];
    got.sort_by_key(|m| matches!(m, Message::Text(_)));
    assert_eq!(
        got,
        [
            Message::Pong("from-server".into()),
            Message::text("after ping")
        ],
        "the client's pong (same payload) and text reach the backend"
    );
    assert_eq!(next_message(&mut ws).await, Message::text("after ping"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_close_code_and_reason_reach_the_backend() {
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;
    let mut ws = connect(&wharf, "/close-from-client").await;
    let mut conn = backend.next_conn().await;

    let frame = CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    };
    within("close", ws.close(Some(frame))).await.expect("close");
    match conn.next_message().await {
        Message::Close(Some(got)) => {
            assert_eq!(u16::from(got.code), 4001);
            assert_eq!(got.reason.as_str(), "bye");
        }
        other => panic!("backend expected close 4001 \"bye\", got {other:?}"),
    }
    // The backend's acknowledgement comes back, then the stream ends.
    let mut acknowledged = false;
    for _ in 0..10 {
        match within("the close acknowledgement", ws.next()).await {
            Some(Ok(Message::Close(_))) => acknowledged = true,
            Some(Ok(other)) => panic!("unexpected message after close: {other:?}"),
            Some(Err(WsError::ConnectionClosed)) | None => break,
            Some(Err(e)) => panic!("error after close: {e}"),
        }
    }
    assert!(
        acknowledged,
        "the client got the backend's close acknowledgement"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_close_code_and_reason_reach_the_client() {
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;
    let mut ws = connect(&wharf, "/close-policy").await;
    let mut conn = backend.next_conn().await;

    match next_message(&mut ws).await {
        Message::Close(Some(got)) => {
            assert_eq!(got.code, CloseCode::Policy);
            assert_eq!(u16::from(got.code), 1008);
            assert_eq!(got.reason.as_str(), "policy");
        }
        other => panic!("client expected close 1008 \"policy\", got {other:?}"),
    }
    // tungstenite acknowledges the close when the stream is read further;
    // then the stream ends.
    match within("the end of the stream", ws.next()).await {
        Some(Err(WsError::ConnectionClosed)) | None => {}
        Some(Ok(other)) => panic!("unexpected message after close: {other:?}"),
        Some(Err(e)) => panic!("error after close: {e}"),
    }
    assert!(
        matches!(conn.next_message().await, Message::Close(_)),
        "the client's acknowledgement reaches the backend"
    );
}

// ---------------------------------------------------------------------------
// Many at once
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_websockets_each_echo_their_own_messages() {
    const SOCKETS: usize = 200;
    const ROUNDS: usize = 5;
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;
    let url_base = format!("ws://{}", wharf.addr);

    // All sockets open first and stay open together, then all talk.
    let ready = std::sync::Arc::new(tokio::sync::Barrier::new(SOCKETS));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SOCKETS {
        let url = format!("{url_base}/many/{i}");
        let ready = ready.clone();
        tasks.spawn(async move {
            let (mut ws, _) =
                tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true)
                    .await
                    .unwrap_or_else(|e| panic!("socket {i}: handshake failed: {e}"));
            ready.wait().await;
            for round in 0..ROUNDS {
                let text = Message::text(format!("socket {i} round {round}"));
                let binary =
                    Message::binary(pattern(1000 + i * 7 + round, (i * 100 + round) as u64));
                for message in [text, binary] {
                    ws.send(message.clone())
                        .await
                        .unwrap_or_else(|e| panic!("socket {i}: send failed: {e}"));
                    let echo = ws
                        .next()
                        .await
                        .unwrap_or_else(|| panic!("socket {i}: closed early"))
                        .unwrap_or_else(|e| panic!("socket {i}: {e}"));
                    assert_eq!(
                        echo, message,
                        "socket {i} got another socket's (or a mangled) echo"
                    );
                }
            }
            ws.close(None).await.ok();
            i
        });
    }
    let mut finished = BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while let Some(joined) = tokio::time::timeout_at(deadline, tasks.join_next())
        .await
        .expect("200 websockets finished within 60 s")
    {
        finished.insert(joined.expect("socket task panicked"));
    }
    assert_eq!(finished.len(), SOCKETS);

    let mut paths = BTreeSet::new();
    for _ in 0..SOCKETS {
        let conn = backend.next_conn().await;
        assert!(conn.accepted);
        paths.insert(conn.path);
    }
    let expected: BTreeSet<String> = (0..SOCKETS).map(|i| format!("/many/{i}")).collect();
    assert_eq!(paths, expected, "the backend saw every socket exactly once");
}

// ---------------------------------------------------------------------------
// The handshake
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_sees_forwarding_headers_and_websocket_headers_unchanged() {
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;

    let mut request = format!("ws://{}/headers?room=1", wharf.addr)
        .into_client_request()
        .expect("request");
    let h = request.headers_mut();
    h.insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("chat, superchat"),
    );
    h.insert(
        "sec-websocket-extensions",
        HeaderValue::from_static("x-test-extension; param=1"),
    );
    h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
    h.insert("origin", HeaderValue::from_static("http://app.test"));
    let sent = request.headers().clone();

    let (mut ws, response) = within(
        "the handshake",
        tokio_tungstenite::connect_async_with_config(request, Some(ws_config()), true),
    )
    .await
    .expect("handshake through wharf");
    let conn = backend.next_conn().await;
    assert!(conn.accepted);

    for name in [
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-protocol",
        "sec-websocket-extensions",
        "origin",
        "host",
    ] {
        assert_eq!(
            conn.headers.get(name),
            sent.get(name),
            "`{name}` reaches the backend unchanged"
        );
    }
    assert_eq!(
        conn.header("x-forwarded-for"),
        Some("127.0.0.1"),
        "the client's forged value is replaced"
    );
    assert_eq!(conn.header("x-forwarded-proto"), Some("http"));
    assert!(
        conn.header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket")),
        "upgrade: {:?}",
        conn.header("upgrade")
    );
    assert!(
        conn.header("connection").is_some_and(|v| v
            .split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))),
        "connection: {:?}",
        conn.header("connection")
    );

    // And the 101 the client got carries the backend's answer.
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .map(|v| v.as_bytes()),
        Some(&b"chat"[..])
    );
    assert!(response.headers().contains_key("sec-websocket-accept"));

    within("send", ws.send(Message::text("works")))
        .await
        .expect("send");
    assert_eq!(next_message(&mut ws).await, Message::text("works"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn firefox_style_connection_and_upgrade_headers_are_understood() {
    // Firefox sends `Connection: keep-alive, Upgrade`; some clients spell
    // the protocol `WebSocket`.
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;
    let mut raw = Raw::connect(wharf.addr).await;
    raw.write(
        b"GET /firefox HTTP/1.1\r\n\
          Host: app.test\r\n\
          Connection: keep-alive, Upgrade\r\n\
          Upgrade: WebSocket\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
          Sec-WebSocket-Version: 13\r\n\
          \r\n",
    )
    .await;
    let response = read_response(&mut raw).await;
    assert_eq!(response.status, 101, "{response:?}");
    assert!(
        response
            .header("upgrade")
            .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    );
    let mut conn = backend.next_conn().await;
    assert!(conn.accepted);
    raw.write(&client_frame(true, OP_TEXT, b"from firefox"))
        .await;
    assert_eq!(conn.next_message().await, Message::text("from firefox"));
    assert_eq!(
        read_server_frame(&mut raw).await,
        (true, OP_TEXT, b"from firefox".to_vec())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_refused_with_403_reaches_the_client_as_a_normal_response() {
    let mut backend = WsBackend::start().await;
    let wharf = start_wharf(backend.addr).await;

    // With a WebSocket client.
    let url = format!("ws://{}/refuse", wharf.addr);
    match within(
        "the refused handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    {
        Err(WsError::Http(response)) => {
            assert_eq!(response.status(), StatusCode::FORBIDDEN);
            assert_eq!(
                response.headers().get("x-refused").map(|v| v.as_bytes()),
                Some(&b"yes"[..])
            );
        }
        Err(e) => panic!("expected the backend's 403, got error {e}"),
        Ok(_) => panic!("expected the backend's 403, got a websocket"),
    }
    assert!(!backend.next_conn().await.accepted);

    // With a raw client: the whole response, body included.
    let mut raw = Raw::connect(wharf.addr).await;
    raw.write(ws_upgrade_request("/refuse").as_bytes()).await;
    let response = read_response(&mut raw).await;
    assert_eq!(response.status, 403, "{response:?}");
    assert_eq!(response.body, b"go away");
    assert_eq!(response.header("upgrade"), None);
    assert!(!backend.next_conn().await.accepted);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrade_answered_with_200_stays_plain_http() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr).await;

    let mut client = Raw::connect(wharf.addr).await;
    client
        .write(ws_upgrade_request("/maybe-ws").as_bytes())
        .await;
    let mut server = backend.next_conn().await;
    let head = server.read_head().await.expect("the upgrade request");
    assert!(head.starts_with("GET /maybe-ws HTTP/1.1\r\n"), "{head}");
    assert!(
        find_header(&head_headers(&head), "upgrade").is_some(),
        "the upgrade was forwarded: {head}"
    );
    server.write(&ok_response("/maybe-ws")).await;

    let response = read_response(&mut client).await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, b"plain /maybe-ws");
    assert_eq!(response.header("upgrade"), None);

    // The client connection is still HTTP: a second request on it is proxied
    // as a request (forwarding headers set by wharf), not carried as raw
    // bytes through a tunnel.
    client
        .write(b"GET /next HTTP/1.1\r\nHost: app.test\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n")
        .await;
    let head = server
        .read_head()
        .await
        .expect("the second request on the kept-alive connection");
    assert!(head.starts_with("GET /next HTTP/1.1\r\n"), "{head}");
    let headers = head_headers(&head);
    assert_eq!(
        find_header(&headers, "x-forwarded-for"),
        Some("127.0.0.1"),
        "the second request went through wharf's proxy, not a tunnel: {head}"
    );
    server.write(&ok_response("/next")).await;
    let response = read_response(&mut client).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"plain /next");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_client_gets_the_200_not_a_tunnel() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr).await;
    let url = format!("ws://{}/not-ws", wharf.addr);
    let client = tokio::spawn(tokio_tungstenite::connect_async(url));
    let mut server = backend.next_conn().await;
    server.read_head().await.expect("the upgrade request");
    server.write(&ok_response("/not-ws")).await;
    match within("the handshake", client).await.expect("client task") {
        Err(WsError::Http(response)) => assert_eq!(response.status(), StatusCode::OK),
        Err(e) => panic!("expected the backend's 200, got error {e}"),
        Ok(_) => panic!("expected the backend's 200, got a websocket"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_without_upgrades_forwards_a_plain_request() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr).await;

    let mut client = Raw::connect(wharf.addr).await;
    client
        .write(ws_upgrade_request("/no-upgrades/chat").as_bytes())
        .await;
    let mut server = backend.next_conn().await;
    let head = server.read_head().await.expect("the request");
    let headers = head_headers(&head);
    assert!(
        head.starts_with("GET /no-upgrades/chat HTTP/1.1\r\n"),
        "{head}"
    );
    assert_eq!(
        find_header(&headers, "upgrade"),
        None,
        "Upgrade must not be forwarded: {head}"
    );
    assert!(
        !find_header(&headers, "connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "Connection: upgrade must not be forwarded: {head}"
    );
    server.write(&ok_response("/no-upgrades/chat")).await;
    let response = read_response(&mut client).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"plain /no-upgrades/chat");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_without_upgrades_refuses_a_backend_101() {
    // The backend switches anyway (it saw a Sec-WebSocket-Key): the client
    // did not get to ask for an upgrade on this route, so no tunnel.
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr).await;

    let mut client = Raw::connect(wharf.addr).await;
    client
        .write(ws_upgrade_request("/no-upgrades/ws").as_bytes())
        .await;
    let mut server = backend.next_conn().await;
    server.read_head().await.expect("the request");
    server
        .write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        .await;
    let response = read_response(&mut client).await;
    assert_eq!(response.status, 502, "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_never_forwarded() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr).await;

    let mut client = Raw::connect(wharf.addr).await;
    client
        .write(
            b"GET /h2c HTTP/1.1\r\n\
              Host: app.test\r\n\
              Connection: Upgrade, HTTP2-Settings\r\n\
              Upgrade: h2c\r\n\
              HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
              \r\n",
        )
        .await;
    let mut server = backend.next_conn().await;
    let head = server.read_head().await.expect("the request");
    let headers = head_headers(&head);
    assert_eq!(
        find_header(&headers, "upgrade"),
        None,
        "Upgrade: h2c must not be forwarded: {head}"
    );
    assert_eq!(find_header(&headers, "http2-settings"), None, "{head}");
    assert!(
        !find_header(&headers, "connection")
            .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")),
        "{head}"
    );
    server.write(&ok_response("/h2c")).await;
    let response = read_response(&mut client).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.body, b"plain /h2c");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_is_dropped_from_a_list_of_upgrades_and_a_101_to_h2c_refused() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr).await;

    let mut client = Raw::connect(wharf.addr).await;
    client
        .write(
            b"GET /mixed HTTP/1.1\r\n\
              Host: app.test\r\n\
              Connection: Upgrade\r\n\
              Upgrade: h2c, websocket\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
              Sec-WebSocket-Version: 13\r\n\
              \r\n",
        )
        .await;
    let mut server = backend.next_conn().await;
    let head = server.read_head().await.expect("the request");
    let upgrade = find_header(&head_headers(&head), "upgrade").map(str::to_ascii_lowercase);
    assert_eq!(
        upgrade.as_deref(),
        Some("websocket"),
        "only websocket is offered: {head}"
    );
    // A backend that picks h2c anyway must not get a tunnel.
    server
        .write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n")
        .await;
    let response = read_response(&mut client).await;
    assert_eq!(response.status, 502, "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unrequested_101_is_a_502() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr).await;

    let mut client = Raw::connect(wharf.addr).await;
    client
        .write(b"GET /plain HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let mut server = backend.next_conn().await;
    let head = server.read_head().await.expect("the request");
    assert_eq!(find_header(&head_headers(&head), "upgrade"), None);
    server
        .write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nraw bytes")
        .await;
    let response = read_response(&mut client).await;
    assert_eq!(response.status, 502, "{response:?}");
    assert!(!response.body.windows(9).any(|w| w == b"raw bytes"));
}

/// A websocket keeps its connection's place under the listener's
/// `max_connections` for as long as it is open (the tunnel holds the place,
/// not the whole client connection): with a limit of 1, a second client is
/// served only once the websocket has closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_websocket_keeps_its_place_under_the_listeners_max_connections() {
    let backend = support::Backend::normal("a").await;
    let config = support::one_pool_config(&[backend.addr], "").replace(
        "bind = \"127.0.0.1:0\"",
        "bind = \"127.0.0.1:0\"\nmax_connections = 1",
    );
    let running = support::start_wharf(&config).await;
    let addr = support::public(&running);
    let (mut ws, _) = within(
        "the websocket handshake",
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws-echo")),
    )
    .await
    .expect("websocket handshake through wharf");
    within("a send", ws.send(Message::text("one")))
        .await
        .unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("one"));

    let mut second = tokio::spawn(support::get(addr, "app.test", "/"));
    // Waiting for something not to happen: a bounded look, long enough for
    // a free place to have served it many times over.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut second).await;
    assert!(
        early.is_err(),
        "served while the websocket held the only place"
    );

    within("the close", ws.close(None)).await.unwrap();
    drop(ws);
    let reply = within("the second client's answer", second).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
}
