//! What wharf does inside a websocket, seen by real endpoints (tokio-tungstenite
//! on both sides, or hand-written frames where a library would refuse to
//! misbehave): its own pings to a silent client, whose pongs the server never
//! sees; a client that stops answering; `ws_max_message` (1009); protocol
//! violations (1002), from the client or from the server; and messages, fragmented or large, arriving whole while
//! wharf inserts its frames between theirs.
//!
//! Everything listens on 127.0.0.1 port 0; every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use support::ws::{WsBackend, client_frame, close_code, server_frame, server_frames, ws_config};
use support::{RawClient, Running, pattern, public, start_wharf, within};

type Client =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// wharf with one route to `backend`, with `route_extra` lines in the route.
async fn wharf(backend: SocketAddr, route_extra: &str) -> Running {
    start_wharf(&format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[listener.route]]
pool = "web"
{route_extra}

[pool.web]
servers = ["{backend}"]
"#
    ))
    .await
}

async fn connect(running: &Running, path: &str) -> Client {
    let url = format!("ws://{}{path}", public(running));
    let (ws, _) = within(
        "websocket handshake",
        tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true),
    )
    .await
    .expect("handshake through wharf");
    ws
}

async fn next(ws: &mut Client) -> Message {
    within("a message at the client", ws.next())
        .await
        .expect("still open")
        .expect("a message")
}

/// A raw client past the upgrade, for frames a library would not send.
async fn raw_websocket(running: &Running) -> RawClient {
    let mut raw = RawClient::connect(public(running)).await;
    let response = raw
        .request(
            b"GET /raw HTTP/1.1\r\nHost: app.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await;
    assert_eq!(response.status, 101, "{response:?}");
    raw
}

fn close_code_of(message: &Message) -> Option<CloseCode> {
    match message {
        Message::Close(Some(frame)) => Some(frame.code),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_client_is_pinged_and_its_pongs_never_reach_the_server() {
    let mut backend = WsBackend::start().await;
    let running = wharf(
        backend.addr,
        "ws_ping = \"100ms\"\nws_pong_timeout = \"300ms\"",
    )
    .await;
    let mut ws = connect(&running, "/quiet").await;
    let mut conn = backend.next_conn().await;

    // Silent but reading: tungstenite answers each ping on its next read.
    let until = Instant::now() + Duration::from_millis(1000);
    let mut pings = Vec::new();
    while let Ok(Some(message)) = tokio::time::timeout_at(until, ws.next()).await {
        match message.expect("a message") {
            Message::Ping(payload) => pings.push(payload),
            other => panic!("only wharf's pings expected, got {other:?}"),
        }
    }
    assert!(
        pings.len() >= 4,
        "pings in 1 s at ws_ping 100ms: {}",
        pings.len()
    );
    assert!(pings.iter().all(|p| p.starts_with(b"wharf")), "{pings:?}");
    // Alive well past ws_ping + ws_pong_timeout: the pongs reached wharf.
    within("send", ws.send(Message::text("still here")))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, Message::text("still here"));
    // The server saw the text and nothing else: no pong it did not ask for.
    assert_eq!(conn.next_message().await, Message::text("still here"));
    assert!(conn.messages.try_recv().is_err(), "the server saw more");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_answering_is_closed_and_its_server_gets_1001() {
    let mut backend = WsBackend::start().await;
    let running = wharf(
        backend.addr,
        "ws_ping = \"100ms\"\nws_pong_timeout = \"300ms\"",
    )
    .await;
    let mut raw = raw_websocket(&running).await;
    let mut conn = backend.next_conn().await;
    let started = Instant::now();

    let close = conn.next_data_or_close().await;
    let elapsed = started.elapsed();
    assert_eq!(close_code_of(&close), Some(CloseCode::Away), "{close:?}");
    assert!(
        elapsed >= Duration::from_millis(350) && elapsed < Duration::from_secs(3),
        "closed after {elapsed:?}: ws_ping 100ms + ws_pong_timeout 300ms"
    );
    let (bytes, closed) = raw.read_until_closed(Duration::from_secs(5)).await;
    assert!(closed, "the client's socket is closed");
    let frames = server_frames(&bytes);
    assert!(
        frames
            .iter()
            .any(|(_, op, payload)| *op == 0x9 && payload.starts_with(b"wharf"))
    );
    assert!(
        frames.iter().all(|(_, op, _)| *op != 0x8),
        "no close frame to a gone client"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_ws_max_message_gets_1009_and_never_reaches_the_server() {
    let mut backend = WsBackend::start().await;
    let running = wharf(backend.addr, "ws_max_message = \"64KiB\"").await;

    // Exactly the limit passes.
    let mut ws = connect(&running, "/limit").await;
    let mut conn = backend.next_conn().await;
    let at_limit = Message::binary(pattern(0, 64 * 1024));
    within("send", ws.send(at_limit.clone()))
        .await
        .expect("send");
    assert_eq!(next(&mut ws).await, at_limit);
    assert_eq!(conn.next_message().await, at_limit);
    // One byte more, in one frame.
    within("send", ws.send(Message::binary(pattern(1, 64 * 1024 + 1))))
        .await
        .expect("send");
    assert_eq!(close_code_of(&next(&mut ws).await), Some(CloseCode::Size));
    let close = conn.next_data_or_close().await;
    assert_eq!(close_code_of(&close), Some(CloseCode::Away), "{close:?}");

    // Over the limit only when the fragments are summed.
    let mut ws = connect(&running, "/limit-fragments").await;
    let mut conn = backend.next_conn().await;
    let fragment = |op, fin, seed| Message::Frame(Frame::message(pattern(seed, 40_000), op, fin));
    within(
        "send",
        ws.send(fragment(OpCode::Data(Data::Binary), false, 2)),
    )
    .await
    .expect("send");
    within(
        "send",
        ws.send(fragment(OpCode::Data(Data::Continue), true, 3)),
    )
    .await
    .expect("send");
    assert_eq!(close_code_of(&next(&mut ws).await), Some(CloseCode::Size));
    let close = conn.next_data_or_close().await;
    assert_eq!(close_code_of(&close), Some(CloseCode::Away), "{close:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_get_1002_both_ways() {
    let mut backend = WsBackend::start().await;
    let running = wharf(backend.addr, "").await;
    // An unmasked client frame; reserved bits with no extension negotiated.
    let unmasked = vec![0x81, 0x02, b'h', b'i'];
    let mut rsv2 = client_frame(true, 0x1, b"hi");
    rsv2[0] |= 0x20;
    for bad in [unmasked, rsv2] {
        let mut raw = raw_websocket(&running).await;
        let mut conn = backend.next_conn().await;
        // A good frame first, the bad one behind it in the same write.
        raw.send(&[client_frame(true, 0x1, b"before"), bad].concat())
            .await;
        assert_eq!(conn.next_message().await, Message::text("before"));
        let close = conn.next_data_or_close().await;
        assert_eq!(
            close_code_of(&close),
            Some(CloseCode::Protocol),
            "{close:?}"
        );
        let (bytes, closed) = raw.read_until_closed(Duration::from_secs(8)).await;
        assert!(closed, "the violator is disconnected");
        let frames = server_frames(&bytes);
        let last = frames.last().expect("frames for the client");
        assert_eq!((last.1, close_code(&last.2)), (0x8, Some(1002)));
        // The echo of "before" may or may not beat the close; nothing else comes.
        let others = &frames[..frames.len() - 1];
        assert!(
            others.iter().all(|f| *f == (true, 0x1, b"before".to_vec())),
            "{others:?}"
        );
    }
}

/// A backend that, on its `i`-th connection, answers the handshake, then
/// writes a good text frame "before" and `bad[i]` behind it in one write,
/// and reports the next message it reads (through tungstenite, which refuses
/// an unmasked frame from its client).
async fn violating_backend(
    bad: Vec<Vec<u8>>,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<Message>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        for bad in bad {
            let (stream, _) = listener.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
                .await
                .expect("server handshake");
            // Under tungstenite, which has nothing of its own to write yet.
            let raw = [server_frame(true, 0x1, b"before"), bad].concat();
            ws.get_mut().write_all(&raw).await.expect("write frames");
            let next = match ws.next().await {
                Some(Ok(message)) => message,
                other => panic!("the backend read {other:?}"),
            };
            let _ = tx.send(next);
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_protocol_violations_get_1002_both_ways() {
    // A masked server frame (RFC 6455 §5.1: a server must not mask); a
    // reserved data opcode (0x3); a reserved control opcode (0xB).
    let masked = client_frame(true, 0x1, b"hi");
    let reserved_data = server_frame(true, 0x3, b"hi");
    let reserved_control = server_frame(true, 0xb, b"hi");
    let (backend, mut reads) =
        violating_backend(vec![masked, reserved_data, reserved_control]).await;
    let running = wharf(backend, "").await;
    for violation in ["masked", "reserved data opcode", "reserved control opcode"] {
        let mut raw = raw_websocket(&running).await;
        let (bytes, closed) = raw.read_until_closed(Duration::from_secs(8)).await;
        assert!(closed, "{violation}: the client is disconnected");
        // `server_frames` also fails on any masked frame reaching the client.
        let frames = server_frames(&bytes);
        let last = frames.last().expect("frames for the client");
        assert_eq!(
            (last.1, close_code(&last.2)),
            (0x8, Some(1002)),
            "{violation}: {frames:?}"
        );
        // The good frame before may reach the client; the bad one never does.
        let others = &frames[..frames.len() - 1];
        assert!(
            others.iter().all(|f| *f == (true, 0x1, b"before".to_vec())),
            "{violation}: {others:?}"
        );
        // The server got a close 1002 too, masked (tungstenite would refuse
        // an unmasked one).
        let close = within("the server's close", reads.recv())
            .await
            .expect("the backend reports");
        assert_eq!(
            close_code_of(&close),
            Some(CloseCode::Protocol),
            "{violation}: {close:?}"
        );
    }
}

/// A backend that sends `messages` binary messages of `fragments` fragments
/// each, `gap` apart, then "done"; and reports what the client sent it.
async fn fragmenting_backend(
    messages: u64,
    fragments: u64,
    gap: Duration,
) -> (SocketAddr, tokio::task::JoinHandle<Vec<Message>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        let (stream, _) = listener.accept().await.expect("accept");
        let ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config()))
            .await
            .expect("server handshake");
        let (mut tx, mut rx) = ws.split();
        let reader = tokio::spawn(async move {
            let mut seen = Vec::new();
            while let Some(Ok(message)) = rx.next().await {
                seen.push(message);
            }
            seen
        });
        for m in 0..messages {
            for f in 0..fragments {
                let op = if f == 0 { Data::Binary } else { Data::Continue };
                let payload = pattern(m * 100 + f, 16 * 1024);
                let frame = Frame::message(payload, OpCode::Data(op), f + 1 == fragments);
                tx.send(Message::Frame(frame)).await.expect("send fragment");
                tokio::time::sleep(gap).await;
            }
        }
        tx.send(Message::text("done")).await.expect("send done");
        reader.await.expect("reader")
    });
    (addr, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragmented_messages_arrive_whole_with_wharf_pings_between_fragments() {
    let (messages, fragments) = (8u64, 4u64);
    let (backend, seen_by_server) =
        fragmenting_backend(messages, fragments, Duration::from_millis(15)).await;
    let running = wharf(backend, "ws_ping = \"20ms\"").await;
    let mut ws = connect(&running, "/fragments").await;

    let mut received = Vec::new();
    let mut pings = 0;
    loop {
        match next(&mut ws).await {
            Message::Ping(payload) => {
                assert!(payload.starts_with(b"wharf"));
                pings += 1;
            }
            Message::Binary(data) => received.push(data),
            Message::Text(text) if text.as_str() == "done" => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(pings >= 3, "wharf pinged the silent client {pings} times");
    assert_eq!(received.len(), messages as usize);
    for (m, data) in received.iter().enumerate() {
        let expected: Vec<u8> = (0..fragments)
            .flat_map(|f| pattern(m as u64 * 100 + f, 16 * 1024))
            .collect();
        assert!(
            data[..] == expected[..],
            "message {m} arrived whole and in order"
        );
    }
    // A large message from the client passes whole too; the server never
    // sees wharf's pongs.
    let large = Message::binary(pattern(7, 3 << 20));
    within("send", ws.send(large.clone())).await.expect("send");
    within("close", ws.close(None)).await.expect("close");
    let seen = within("the server's view", seen_by_server)
        .await
        .expect("backend");
    assert!(
        seen.iter().all(|m| !matches!(m, Message::Pong(_))),
        "a pong reached the server"
    );
    assert!(
        seen.contains(&large),
        "the 3 MiB message reached the server whole"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_bytes_open_websockets_and_closes_are_counted_per_route_and_server() {
    use wharf::tunnel::stats::{Direction, Side};

    let mut backend = WsBackend::start().await;
    let running = wharf(backend.addr, "").await;
    let mut ws = connect(&running, "/counted").await;
    let mut conn = backend.next_conn().await;
    let registry = &running.shared().registry;
    let server = registry.servers()[0].tunnels.stats();
    let (_, route) = registry
        .websocket_routes
        .all()
        .pop()
        .expect("the route's counters");
    assert_eq!((server.open(), route.open()), (1, 1));

    for text in ["one", "two", "three"] {
        within("send", ws.send(Message::text(text)))
            .await
            .expect("send");
        assert_eq!(next(&mut ws).await, Message::text(text));
        assert_eq!(conn.next_message().await, Message::text(text));
    }
    within("close", ws.close(None)).await.expect("close");
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await {}
    drop(ws);
    // The tunnel ends once both sides have closed their connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.open() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for stats in [&server, &route] {
        assert_eq!(stats.open(), 0);
        assert_eq!(stats.messages(Direction::ClientToServer), 3);
        assert_eq!(stats.messages(Direction::ServerToClient), 3);
        // "one" "two" "three": 11 payload bytes, plus headers (6 masked, 2 not) and the closes.
        assert!(stats.bytes(Direction::ClientToServer) >= 11 + 3 * 6);
        assert!(stats.bytes(Direction::ServerToClient) >= 11 + 3 * 2);
        assert_eq!(
            stats.closes(Side::Client, 1005),
            1,
            "{:?}",
            stats.close_counts()
        );
        assert_eq!(stats.close_counts().len(), 1);
    }
}
