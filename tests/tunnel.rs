//! The tunnel behind an upgrade, seen from both ends with raw sockets: a
//! client that writes its upgrade request by hand and a backend that answers
//! `101 Switching Protocols` by hand and then behaves as a raw byte server.
//! The protocol is `x-raw`, not `websocket`, whose frames wharf follows (see
//! `ws_frames.rs`): these bytes are not frames.
//! Covers bytes pipelined behind either head, half-close in both directions,
//! the `tunnel_idle` timeout (and that it neither cuts busy tunnels nor
//! normal requests), and a large transfer through a slow reader.
//!
//! Everything listens on 127.0.0.1 port 0; every wait is bounded.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod support;

use support::pipe::{RawBackend, RawEnd as Raw};
use support::{public, within};

// ---------------------------------------------------------------------------
// wharf
// ---------------------------------------------------------------------------

/// A running wharf in front of one backend. Keep it alive for the whole test:
/// dropping it stops the listener.
struct Wharf {
    _running: wharf::Running,
    addr: SocketAddr,
}

/// Starts wharf with one route to `backend`; `timeouts` is the pool's
/// `timeouts` inline table (without braces), if any.
async fn start_wharf(backend: SocketAddr, timeouts: Option<&str>) -> Wharf {
    start_wharf_with(backend, timeouts, "").await
}

/// As [`start_wharf`], with extra lines in the `[[listener]]` table.
async fn start_wharf_with(
    backend: SocketAddr,
    timeouts: Option<&str>,
    listener_extra: &str,
) -> Wharf {
    let timeouts = timeouts.map_or_else(String::new, |t| format!("timeouts = {{ {t} }}"));
    let running = support::start_wharf(&format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"
{listener_extra}

[[listener.route]]
pool = "app"
upgrades = ["x-raw"]

[pool.app]
servers = ["{backend}"]
{timeouts}
"#
    ))
    .await;
    Wharf {
        addr: public(&running),
        _running: running,
    }
}

const UPGRADE_REQUEST: &[u8] = b"GET /tunnel HTTP/1.1\r\n\
    Host: app.test\r\n\
    Upgrade: x-raw\r\n\
    Connection: Upgrade\r\n\
    \r\n";

const SWITCHING: &[u8] =
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-raw\r\nConnection: Upgrade\r\n\r\n";

/// Opens a tunnel through wharf: the client writes the upgrade request
/// followed by `client_early` in one write; the backend answers 101 followed
/// by `server_early` in one write. Returns (client, backend), each with the
/// 101 / request head consumed and nothing else.
async fn open_tunnel(
    wharf: &Wharf,
    backend: &mut RawBackend,
    client_early: &[u8],
    server_early: &[u8],
) -> (Raw, Raw) {
    let mut client = Raw::connect(wharf.addr).await;
    client
        .write(&[UPGRADE_REQUEST, client_early].concat())
        .await;
    let mut server = backend.next_conn().await;
    let head = server.head().await;
    assert!(head.starts_with("GET /tunnel HTTP/1.1\r\n"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("\r\nupgrade: x-raw\r\n"),
        "{head}"
    );
    server.write(&[SWITCHING, server_early].concat()).await;
    let head = client.head().await;
    assert!(
        head.starts_with("HTTP/1.1 101 "),
        "the client gets the 101: {head}"
    );
    (client, server)
}

/// Sends `bytes` from `from` and checks they arrive, exactly, at `to`.
async fn pass(from: &mut Raw, to: &mut Raw, bytes: &[u8]) {
    from.write(bytes).await;
    let got = to.read_exact(bytes.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(bytes)
    );
}

// ---------------------------------------------------------------------------
// Bytes behind the heads
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_pipelined_behind_the_request_head_reach_the_backend() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let early = b"early bytes, written with the request head";
    let (mut client, mut server) = open_tunnel(&wharf, &mut backend, early, b"").await;

    let got = server.read_exact(early.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(early)
    );
    // Nothing else came first or in between: the client reads exactly what
    // the backend sends next (no error response from wharf).
    pass(&mut server, &mut client, b"backend answers").await;
    pass(&mut client, &mut server, b"and the tunnel goes on").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bytes_written_with_the_101_reach_the_client() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let early = b"hello, before you said anything";
    let (mut client, mut server) = open_tunnel(&wharf, &mut backend, b"", early).await;

    let got = client.read_exact(early.len()).await;
    assert_eq!(
        String::from_utf8_lossy(&got),
        String::from_utf8_lossy(early)
    );
    pass(&mut client, &mut server, b"client answers").await;
    pass(&mut server, &mut client, b"and the tunnel goes on").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_that_answers_and_closes_at_once_is_heard_in_full() {
    // 101, payload and FIN in one burst: the client gets the payload, then EOF.
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let (mut client, mut server) = open_tunnel(&wharf, &mut backend, b"", b"goodbye").await;
    server.shutdown_write().await;
    assert_eq!(client.read_to_end().await, b"goodbye");
    // The client can still answer the half-closed backend.
    client.write(b"ack").await;
    client.shutdown_write().await;
    assert_eq!(server.read_to_end().await, b"ack");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_over_a_reused_keep_alive_server_connection() {
    // A plain request first, so that wharf may keep its server connection
    // idle and send the upgrade on it; the tunnel must work either way.
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let mut client = Raw::connect(wharf.addr).await;
    client
        .write(b"GET /first HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let mut first = backend.next_conn().await;
    let head = first.head().await;
    assert!(head.starts_with("GET /first "), "{head}");
    first
        .write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        .await;
    let head = client.head().await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert_eq!(client.read_exact(2).await, b"ok");

    // The upgrade, on a new client connection.
    let mut ws_client = Raw::connect(wharf.addr).await;
    ws_client.write(UPGRADE_REQUEST).await;
    let mut server = tokio::select! {
        head = first.head() => {
            assert!(head.starts_with("GET /tunnel "), "{head}");
            first
        }
        conn = backend.next_conn() => {
            let mut conn = conn;
            let head = conn.head().await;
            assert!(head.starts_with("GET /tunnel "), "{head}");
            conn
        }
    };
    server.write(&[SWITCHING, b"hi"].concat()).await;
    let head = ws_client.head().await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(ws_client.read_exact(2).await, b"hi");
    pass(&mut ws_client, &mut server, b"tunnelled up").await;
    pass(&mut server, &mut ws_client, b"tunnelled down").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_bytes_both_ways_at_once() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let up = [b'u'; 10_000];
    let down = [b'd'; 20_000];
    let (mut client, mut server) = open_tunnel(&wharf, &mut backend, &up, &down).await;
    assert_eq!(server.read_exact(up.len()).await, up);
    assert_eq!(client.read_exact(down.len()).await, down);
}

// ---------------------------------------------------------------------------
// Half-close
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_half_close_reaches_backend_which_can_still_answer() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let (mut client, mut server) = open_tunnel(&wharf, &mut backend, b"", b"").await;

    client.write(b"last words").await;
    client.shutdown_write().await;
    assert_eq!(
        server.read_to_end().await,
        b"last words",
        "the backend reads the bytes, then EOF"
    );

    // The other direction is still open.
    server.write(b"reply after your EOF").await;
    server.write(b", and more").await;
    server.shutdown_write().await;
    assert_eq!(
        client.read_to_end().await,
        b"reply after your EOF, and more",
        "the client reads the backend's bytes, then EOF: the tunnel closed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_half_close_reaches_client_which_can_still_send() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let (mut client, mut server) = open_tunnel(&wharf, &mut backend, b"", b"").await;

    server.write(b"server is done").await;
    server.shutdown_write().await;
    assert_eq!(client.read_to_end().await, b"server is done");

    client.write(b"but the client is not").await;
    client.shutdown_write().await;
    assert_eq!(server.read_to_end().await, b"but the client is not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_bytes_and_half_close_in_one_burst() {
    // A client that sends its request, its data and its FIN at once (as
    // `nc -N` or a batch job would) still gets the tunnel and the answer.
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let mut client = Raw::connect(wharf.addr).await;
    client.write(&[UPGRADE_REQUEST, b"query"].concat()).await;
    client.shutdown_write().await;

    let mut server = backend.next_conn().await;
    server.head().await;
    server.write(SWITCHING).await;
    assert_eq!(server.read_to_end().await, b"query");
    server.write(b"answer").await;
    server.shutdown_write().await;

    let head = client.head().await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    assert_eq!(client.read_to_end().await, b"answer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_closes_before_the_answer_is_taken_as_gone() {
    // wharf keeps hyper's half_close(false) on purpose (as HAProxy's
    // abortonclose): a client that shuts its side down before its answer
    // came is gone, and its request must not hold the server connection.
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let mut client = Raw::connect(wharf.addr).await;
    client.write(UPGRADE_REQUEST).await;
    client.shutdown_write().await;

    assert_eq!(
        client.read_to_end().await,
        b"",
        "no answer for a departed client"
    );
    // If the request had already left, its server connection is closed too
    // (read_to_end would time out and fail otherwise).
    if let Ok(mut server) = backend.conns.try_recv() {
        let _ = server.read_to_end().await;
    }
}

// ---------------------------------------------------------------------------
// Connection limit
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_tunnel_counts_toward_the_listener_connection_limit() {
    // README: `max_connections` caps open client connections; at the limit
    // wharf stops accepting. A websocket is an open client connection for as
    // long as its tunnel lives.
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf_with(backend.addr, None, "max_connections = 1").await;
    let (mut first, mut first_server) = open_tunnel(&wharf, &mut backend, b"", b"").await;
    pass(&mut first, &mut first_server, b"the first tunnel is open").await;

    // A second client: the kernel accepts its TCP connection (backlog), but
    // wharf must not serve it while the tunnel is open.
    let mut second = Raw::connect(wharf.addr).await;
    second.write(UPGRADE_REQUEST).await;
    let early = tokio::time::timeout(Duration::from_millis(500), backend.conns.recv()).await;
    assert!(
        early.is_err(),
        "with max_connections = 1 and one tunnel open, a second client was served"
    );

    // Once the first tunnel closes, the second client is served.
    drop(first);
    assert!(first_server.read_to_end().await.is_empty());
    drop(first_server);
    let mut second_server = backend.next_conn().await;
    let head = second_server.head().await;
    assert!(head.starts_with("GET /tunnel "), "{head}");
    second_server.write(SWITCHING).await;
    let head = second.head().await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
}

// ---------------------------------------------------------------------------
// tunnel_idle
// ---------------------------------------------------------------------------

const SHORT_IDLE: &str = r#"tunnel_idle = "300ms", response = "5s""#;
const IDLE: Duration = Duration::from_millis(300);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tunnel_is_closed_after_tunnel_idle() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, Some(SHORT_IDLE)).await;
    let (mut client, mut server) = open_tunnel(&wharf, &mut backend, b"", b"").await;
    pass(&mut client, &mut server, b"one message, then silence").await;

    let silent_since = Instant::now();
    let at_client = client.read_to_end().await;
    let waited = silent_since.elapsed();
    assert!(at_client.is_empty(), "no bytes, just EOF");
    // Measured from a little after the last byte moved.
    assert!(
        waited >= IDLE - Duration::from_millis(100),
        "closed too early: {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(3),
        "closed too late: {waited:?}"
    );
    assert!(
        server.read_to_end().await.is_empty(),
        "the backend's side is closed too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_idle_does_not_cut_a_slow_normal_request() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, Some(SHORT_IDLE)).await;

    let mut client = Raw::connect(wharf.addr).await;
    client
        .write(b"GET /slow HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let mut server = backend.next_conn().await;
    let head = server.head().await;
    assert!(head.starts_with("GET /slow "), "{head}");
    // The server thinks for well over tunnel_idle, well under response.
    tokio::time::sleep(IDLE * 3).await;
    server
        .write(b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nslow but fine")
        .await;

    let head = client.head().await;
    assert!(
        head.starts_with("HTTP/1.1 200 "),
        "a slow response is not cut by tunnel_idle: {head}"
    );
    assert_eq!(client.read_exact(13).await, b"slow but fine");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_tunnel_outlives_tunnel_idle() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, Some(SHORT_IDLE)).await;
    let (mut client, mut server) = open_tunnel(&wharf, &mut backend, b"", b"").await;

    // Both ways, every 100 ms, 10 times: over three times tunnel_idle.
    let started = Instant::now();
    for i in 0..10 {
        pass(&mut client, &mut server, format!("tick {i}").as_bytes()).await;
        pass(&mut server, &mut client, format!("tock {i}").as_bytes()).await;
        tokio::time::sleep(IDLE / 3).await;
    }
    // One way only (client to backend) also counts as traffic.
    for i in 0..10 {
        pass(&mut client, &mut server, format!("one way {i}").as_bytes()).await;
        tokio::time::sleep(IDLE / 3).await;
    }
    assert!(
        started.elapsed() >= IDLE * 6,
        "the test ran past tunnel_idle several times"
    );
    pass(&mut server, &mut client, b"still here").await;

    // And once the traffic stops, the tunnel does close.
    assert!(client.read_to_end().await.is_empty());
}

// ---------------------------------------------------------------------------
// Backpressure
// ---------------------------------------------------------------------------

const LARGE: u64 = 64 << 20;

/// The byte at `offset` of the large transfer: position-dependent, so a
/// lost, duplicated or reordered chunk is caught at the first wrong byte.
fn byte_at(offset: u64) -> u8 {
    let x = offset.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (x >> 56) as u8 ^ (offset >> 16) as u8
}

/// Writes [`LARGE`] bytes of the pattern, counting progress in `written`,
/// then shuts down the write half.
async fn write_large(
    mut stream: tokio::net::tcp::OwnedWriteHalf,
    written: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
) {
    let mut offset = 0u64;
    let mut chunk = vec![0u8; 256 * 1024];
    while offset < LARGE {
        let n = chunk.len().min((LARGE - offset) as usize);
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = byte_at(offset + i as u64);
        }
        stream
            .write_all(&chunk[..n])
            .await
            .expect("write the large transfer");
        offset += n as u64;
        written.store(offset, Ordering::SeqCst);
    }
    stream
        .shutdown()
        .await
        .expect("shutdown after the large transfer");
    finished.store(true, Ordering::SeqCst);
}

/// Lets the writer run with nobody reading until its progress stops; checks
/// that it could not push everything into wharf (backpressure reaches the
/// sender), then reads everything slowly and checks every byte.
async fn slow_read_large(reader: &mut Raw, written: &AtomicU64, finished: &AtomicBool) {
    // Wait until the writer stalls: no progress for 300 ms (at most 10 s).
    let mut last = 0;
    let mut still = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = written.load(Ordering::SeqCst);
        if finished.load(Ordering::SeqCst) {
            break;
        }
        if now == last && now > 0 {
            still += 1;
            if still == 3 {
                break;
            }
        } else {
            still = 0;
        }
        last = now;
    }
    let stalled_at = written.load(Ordering::SeqCst);
    assert!(
        !finished.load(Ordering::SeqCst) && stalled_at < LARGE,
        "with nobody reading, the writer got all {LARGE} bytes out: wharf buffers without bound"
    );
    assert!(stalled_at > 0, "the writer never got started");

    // Now read, slowly: 16 KiB at a time, pausing every 256 KiB.
    let mut buffered = std::mem::take(&mut reader.buf);
    let mut received = 0u64;
    for (i, b) in buffered.drain(..).enumerate() {
        assert_eq!(b, byte_at(i as u64), "byte {i} differs");
        received += 1;
    }
    let mut chunk = vec![0u8; 16 * 1024];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut reads = 0u64;
    loop {
        let n = tokio::time::timeout_at(deadline, reader.stream.read(&mut chunk))
            .await
            .expect("64 MiB read within 60 s")
            .expect("read the large transfer");
        if n == 0 {
            break;
        }
        for (i, &b) in chunk[..n].iter().enumerate() {
            let at = received + i as u64;
            if b != byte_at(at) {
                panic!("byte {at} differs: got {b}, expected {}", byte_at(at));
            }
        }
        received += n as u64;
        assert!(received <= LARGE, "more bytes than were sent: {received}");
        reads += 1;
        if reads % 16 == 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert_eq!(received, LARGE, "every byte arrived, then EOF");
    assert!(finished.load(Ordering::SeqCst));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_upload_through_a_slow_backend_arrives_complete_and_in_order() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let (client, mut server) = open_tunnel(&wharf, &mut backend, b"", b"").await;

    let (_client_read, client_write) = client.stream.into_split();
    let written = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_large(client_write, written.clone(), finished.clone()));
    slow_read_large(&mut server, &written, &finished).await;
    within("the writer", writer).await.expect("writer task");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_to_a_slow_client_arrives_complete_and_in_order() {
    let mut backend = RawBackend::start().await;
    let wharf = start_wharf(backend.addr, None).await;
    let (mut client, server) = open_tunnel(&wharf, &mut backend, b"", b"").await;

    let (_server_read, server_write) = server.stream.into_split();
    let written = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let writer = tokio::spawn(write_large(server_write, written.clone(), finished.clone()));
    slow_read_large(&mut client, &written, &finished).await;
    within("the writer", writer).await.expect("writer task");
}
