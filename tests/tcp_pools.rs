//! TCP pools end to end: raw connections balanced round robin over real TCP
//! servers, a dead server skipped, the tunnel's idle timeout, half-close in
//! both directions, and a drained server's tunnels closed at moments spread
//! over its drain window, or at its drain timeout. The client reaches the pool through a listener's `tcp_pool`
//! (bytes that are neither HTTP nor TLS).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use support::{Backend, WAIT, within};

// ------------------------------------------------------------------ helpers

/// Aborts a spawned task when dropped.
struct Task(JoinHandle<()>);

impl Drop for Task {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What a test TCP server does with each connection.
#[derive(Clone, Copy)]
enum Behaviour {
    /// Echoes every byte until the client closes, then closes.
    Echo,
    /// Reads until the client finishes sending, then answers
    /// `got N bytes` and closes.
    ReplyAtEof,
    /// Sends `bye`, shuts its sending side down, then reads until the
    /// client finishes and reports how many bytes came.
    ShutDownFirst,
}

/// A raw TCP server on 127.0.0.1 that counts its connections (accepted
/// ever, open now) and reports what `ShutDownFirst` connections received.
struct TcpServer {
    addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    open: watch::Receiver<usize>,
    received: mpsc::UnboundedReceiver<usize>,
    _task: Task,
}

impl TcpServer {
    async fn start(behaviour: Behaviour) -> TcpServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let (open_tx, open) = watch::channel(0usize);
        let open_tx = Arc::new(open_tx);
        let (received_tx, received) = mpsc::unbounded_channel();
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    continue;
                };
                count.fetch_add(1, Ordering::SeqCst);
                open_tx.send_modify(|n| *n += 1);
                let (open_tx, received_tx) = (open_tx.clone(), received_tx.clone());
                connections.spawn(async move {
                    match behaviour {
                        Behaviour::Echo => {
                            let (mut read, mut write) = stream.split();
                            let _ = tokio::io::copy(&mut read, &mut write).await;
                        }
                        Behaviour::ReplyAtEof => {
                            let mut all = Vec::new();
                            if stream.read_to_end(&mut all).await.is_ok() {
                                let reply = format!("got {} bytes", all.len());
                                let _ = stream.write_all(reply.as_bytes()).await;
                                let _ = stream.shutdown().await;
                            }
                        }
                        Behaviour::ShutDownFirst => {
                            if stream.write_all(b"bye").await.is_ok()
                                && stream.shutdown().await.is_ok()
                            {
                                let mut all = Vec::new();
                                if stream.read_to_end(&mut all).await.is_ok() {
                                    let _ = received_tx.send(all.len());
                                }
                            }
                        }
                    }
                    open_tx.send_modify(|n| *n -= 1);
                });
            }
        });
        TcpServer {
            addr,
            accepted,
            open,
            received,
            _task: Task(task),
        }
    }

    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (bounded) until no connection is open at the server.
    async fn wait_all_closed(&mut self, limit: Duration) -> bool {
        matches!(
            tokio::time::timeout(limit, self.open.wait_for(|&n| n == 0)).await,
            Ok(Ok(_))
        )
    }
}

/// wharf with listener `public` handing non-HTTP bytes to TCP pool
/// `legacy` (`servers`, plus `pool_extra` lines); HTTP goes to pool `web`.
async fn start(servers: &[SocketAddr], pool_extra: &str) -> (wharf::Running, Backend) {
    let web = Backend::normal("web").await;
    let list: Vec<String> = servers.iter().map(|a| format!("\"{a}\"")).collect();
    let toml = format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"
tcp_pool = "legacy"

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{}"]

[pool.legacy]
mode = "tcp"
servers = [{}]
{pool_extra}
"#,
        web.addr,
        list.join(", ")
    );
    (support::start_wharf(&toml).await, web)
}

/// Writes `msg` and reads exactly as many bytes back.
async fn round_trip(stream: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    within("write", stream.write_all(msg)).await.expect("write");
    let mut back = vec![0u8; msg.len()];
    within("echo", stream.read_exact(&mut back))
        .await
        .expect("the echo");
    back
}

/// Reads until the peer closes (or resets); how long that took, or `None`
/// if it is still open after `limit`. Fails on any data.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(limit, stream.read(&mut buf)).await {
        Err(_) => None,
        Ok(Ok(0)) | Ok(Err(_)) => Some(started.elapsed()),
        Ok(Ok(n)) => panic!("unexpected bytes: {:?}", &buf[..n]),
    }
}

// ------------------------------------------------------------------ balancing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_puts_each_connection_on_the_next_server() {
    let a = TcpServer::start(Behaviour::Echo).await;
    let b = TcpServer::start(Behaviour::Echo).await;
    let (running, _web) = start(&[a.addr, b.addr], "").await;
    let addr = support::public(&running);

    let mut landed = Vec::new();
    for i in 0..6 {
        let before = (a.accepted(), b.accepted());
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let msg = format!("conn-{i}\n");
        assert_eq!(
            round_trip(&mut stream, msg.as_bytes()).await,
            msg.as_bytes()
        );
        let after = (a.accepted(), b.accepted());
        landed.push(match (after.0 - before.0, after.1 - before.1) {
            (1, 0) => 'a',
            (0, 1) => 'b',
            other => panic!("connection {i} opened {other:?} server connections"),
        });
    }
    let alternating = landed.windows(2).all(|w| w[0] != w[1]);
    assert!(
        alternating,
        "round robin alternates the two servers: {landed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_open_at_once_are_spread_too() {
    let a = TcpServer::start(Behaviour::Echo).await;
    let b = TcpServer::start(Behaviour::Echo).await;
    let (running, _web) = start(&[a.addr, b.addr], "").await;
    let addr = support::public(&running);

    let mut streams = Vec::new();
    for i in 0..4 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let msg = format!("open-{i}\n");
        assert_eq!(
            round_trip(&mut stream, msg.as_bytes()).await,
            msg.as_bytes()
        );
        streams.push(stream);
    }
    assert_eq!((a.accepted(), b.accepted()), (2, 2));
    // Every tunnel is still usable.
    for (i, stream) in streams.iter_mut().enumerate() {
        let msg = format!("again-{i}\n");
        assert_eq!(round_trip(stream, msg.as_bytes()).await, msg.as_bytes());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_server_is_skipped() {
    let dead = support::refused_addr().await;
    let live = TcpServer::start(Behaviour::Echo).await;
    // Without ejection, round robin keeps offering the dead server: every
    // other connection is saved only by the retry.
    let (running, web) = start(&[dead, live.addr], "ejection = { connect_failures = 0 }").await;
    let addr = support::public(&running);

    for i in 0..6 {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let msg = format!("try-{i}\n");
        assert_eq!(
            round_trip(&mut stream, msg.as_bytes()).await,
            msg.as_bytes(),
            "connection {i} reaches the live server"
        );
    }
    assert_eq!(live.accepted(), 6);
    assert_eq!(web.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_server_dead_closes_the_client() {
    let dead = support::refused_addr().await;
    let (running, web) = start(&[dead], "").await;
    let addr = support::public(&running);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"ANYONE?\n").await.unwrap();
    assert!(
        closed_after(&mut stream, Duration::from_secs(10))
            .await
            .is_some(),
        "the client is closed when no server can be reached"
    );
    // wharf still serves HTTP.
    assert_eq!(support::get(addr, "app.test", "/").await.text(), "web");
    assert_eq!(web.requests(), 1);
}

// ------------------------------------------------------------------ timeouts, half-close, drain

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_tunnel_is_closed_after_tunnel_idle() {
    let mut echo = TcpServer::start(Behaviour::Echo).await;
    let (running, _web) = start(&[echo.addr], "timeouts = { tunnel_idle = \"300ms\" }").await;
    let addr = support::public(&running);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut stream, b"PING\n").await, b"PING\n");
    // Active for longer than the idle timeout: bytes every 100ms keep it open.
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let msg = format!("tick-{i}\n");
        assert_eq!(
            round_trip(&mut stream, msg.as_bytes()).await,
            msg.as_bytes()
        );
    }
    // Then idle.
    let closed = closed_after(&mut stream, Duration::from_secs(5)).await;
    let Some(after) = closed else {
        panic!("an idle tunnel is still open 5s after its last byte (tunnel_idle = 300ms)");
    };
    assert!(
        after >= Duration::from_millis(250),
        "closed {after:?} after the last byte, before tunnel_idle"
    );
    assert!(
        after < Duration::from_millis(1500),
        "closed {after:?} after the last byte; tunnel_idle is 300ms"
    );
    assert!(
        echo.wait_all_closed(Duration::from_secs(5)).await,
        "the server side of the tunnel is closed too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_client_still_carries_the_answer() {
    let server = TcpServer::start(Behaviour::ReplyAtEof).await;
    let (running, _web) = start(&[server.addr], "").await;
    let addr = support::public(&running);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    let data: Vec<u8> = (0..=255u8).cycle().take(200_000).collect();
    within("write", stream.write_all(b"\x00DATA"))
        .await
        .unwrap();
    within("write", stream.write_all(&data)).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    within(
        "the answer, then the close",
        stream.read_to_end(&mut answer),
    )
    .await
    .expect("the answer");
    assert_eq!(
        String::from_utf8_lossy(&answer),
        format!("got {} bytes", data.len() + 5)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_close_from_the_server_still_carries_the_client_bytes() {
    let mut server = TcpServer::start(Behaviour::ShutDownFirst).await;
    let (running, _web) = start(&[server.addr], "").await;
    let addr = support::public(&running);

    let mut stream = TcpStream::connect(addr).await.unwrap();
    // Client first (sniffing needs a byte), then the server's bye and EOF.
    within("write", stream.write_all(b"\x01HELLO"))
        .await
        .unwrap();
    let mut bye = Vec::new();
    within(
        "bye, then the server's half-close",
        stream.read_to_end(&mut bye),
    )
    .await
    .expect("bye");
    assert_eq!(bye, b"bye");
    // The client can still send; the server gets it all.
    let more = vec![7u8; 100_000];
    within(
        "write after the server's half-close",
        stream.write_all(&more),
    )
    .await
    .expect("the client's side is still open");
    stream.shutdown().await.unwrap();
    let received = within("the server's count", server.received.recv())
        .await
        .expect("a count");
    assert_eq!(received, 6 + more.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_server_tunnel_is_closed_at_drain_timeout() {
    let mut draining = TcpServer::start(Behaviour::Echo).await;
    let other = TcpServer::start(Behaviour::Echo).await;
    let (running, _web) = start(&[draining.addr, other.addr], "drain_timeout = \"300ms\"").await;
    let addr = support::public(&running);

    // Two tunnels, one on each server (round robin); which is which is told
    // by the server counts after each one opens.
    let mut first = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut first, b"ONE\n").await, b"ONE\n");
    let first_on_draining = draining.accepted() == 1;
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut second, b"TWO\n").await, b"TWO\n");
    assert_eq!((draining.accepted(), other.accepted()), (1, 1));
    let (mut on_drained, mut on_other) = match first_on_draining {
        true => (first, second),
        false => (second, first),
    };

    let server = {
        let snapshot = running.shared().snapshot();
        let pool = snapshot.pool("legacy").expect("pool legacy");
        let server = pool
            .servers
            .iter()
            .find(|s| s.address == draining.addr)
            .expect("the draining server is in the pool")
            .clone();
        assert_eq!(server.active(), 1, "the open tunnel counts on its server");
        server
    };
    server.set_admin(wharf::upstream::AdminState::Drain, "test");
    let drained_at = Instant::now();

    // Until the drain timeout the tunnel still works.
    assert_eq!(round_trip(&mut on_drained, b"STILL\n").await, b"STILL\n");
    // New connections go to the other server.
    let mut third = TcpStream::connect(addr).await.unwrap();
    assert_eq!(round_trip(&mut third, b"THREE\n").await, b"THREE\n");
    assert_eq!(
        draining.accepted(),
        1,
        "a draining server gets no new tunnel"
    );
    assert_eq!(other.accepted(), 2);

    // At the drain timeout the tunnel on the drained server is closed.
    let Some(_) = closed_after(&mut on_drained, Duration::from_secs(5)).await else {
        panic!(
            "the tunnel to the drained server is still open 5s after the drain (drain_timeout = 300ms)"
        );
    };
    let when = drained_at.elapsed();
    assert!(
        when >= Duration::from_millis(250),
        "the drained tunnel closed {when:?} after the drain; drain_timeout is 300ms"
    );
    assert!(
        when < Duration::from_millis(1500),
        "the drained tunnel closed {when:?} after the drain; drain_timeout is 300ms"
    );
    assert!(
        draining.wait_all_closed(Duration::from_secs(5)).await,
        "the server side is closed too"
    );
    // The server's count has no change signal: poll it, bounded.
    support::within("the drained server's tunnel count to drop to 0", async {
        while server.active() != 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // The tunnels on the other server are untouched.
    assert_eq!(round_trip(&mut on_other, b"AND\n").await, b"AND\n");
    assert_eq!(round_trip(&mut third, b"MORE\n").await, b"MORE\n");
}

/// When a drained server's tunnel closed, and how many echoes it carried
/// after the drain began.
struct Closed {
    at: Duration,
    echoes_after_drain: usize,
}

/// Round trips on `stream` every 50 ms, listening for the close in between,
/// until wharf closes it: when (from `drain`'s instant, once set) and how
/// many echoes came after it. Fails on a wrong echo or any unasked-for byte.
fn echo_until_closed(
    mut stream: TcpStream,
    id: usize,
    drain: watch::Receiver<Option<Instant>>,
) -> JoinHandle<Closed> {
    tokio::spawn(async move {
        let closed = |echoes_after_drain| {
            let began = drain.borrow().expect("closed only after the drain began");
            Closed {
                at: began.elapsed(),
                echoes_after_drain,
            }
        };
        let mut echoes_after_drain = 0;
        // Bounded: 30 s at 50 ms a turn.
        for turn in 0..600 {
            let draining = drain.borrow().is_some();
            let msg = format!("conn-{id}-{turn}\n");
            let mut back = vec![0u8; msg.len()];
            if stream.write_all(msg.as_bytes()).await.is_err() {
                return closed(echoes_after_drain);
            }
            match tokio::time::timeout(WAIT, stream.read_exact(&mut back)).await {
                Err(_) => panic!("connection {id}: no echo in {WAIT:?}"),
                Ok(Err(_)) => return closed(echoes_after_drain),
                Ok(Ok(_)) => assert_eq!(back, msg.as_bytes(), "connection {id}: the echo"),
            }
            echoes_after_drain += usize::from(draining);
            let mut buf = [0u8; 64];
            match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
                Err(_) => {}
                Ok(Ok(0)) | Ok(Err(_)) => return closed(echoes_after_drain),
                Ok(Ok(n)) => panic!("connection {id}: unexpected bytes {:?}", &buf[..n]),
            }
        }
        panic!("connection {id} still open after 30 s");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_server_tunnels_are_closed_at_moments_spread_over_drain_window() {
    const CONNECTIONS: usize = 40;
    const WINDOW: Duration = Duration::from_secs(2);
    let mut server = TcpServer::start(Behaviour::Echo).await;
    // `[admin]` after the pool's lines: a table of its own at the top level.
    let (running, _web) = start(
        &[server.addr],
        &support::with_admin(&format!("drain_window = \"{}ms\"", WINDOW.as_millis())),
    )
    .await;
    let addr = support::public(&running);

    let (drain_tx, drain_rx) = watch::channel(None);
    let mut tasks = Vec::new();
    for id in 0..CONNECTIONS {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let msg = format!("open-{id}\n");
        assert_eq!(
            round_trip(&mut stream, msg.as_bytes()).await,
            msg.as_bytes()
        );
        tasks.push(echo_until_closed(stream, id, drain_rx.clone()));
    }
    assert_eq!(server.accepted(), CONNECTIONS);

    drain_tx.send_replace(Some(Instant::now()));
    support::admin_post(
        &running,
        &format!("/api/pools/legacy/servers/{}/drain", server.addr),
    )
    .await;

    let mut closes = Vec::new();
    for task in tasks {
        closes.push(
            within("a drained tunnel to close", task)
                .await
                .expect("client task"),
        );
    }
    let mut times: Vec<Duration> = closes.iter().map(|c| c.at).collect();
    let mut quarters = [0usize; 5];
    for at in &times {
        quarters[((at.as_secs_f64() / WINDOW.as_secs_f64() * 4.0) as usize).min(4)] += 1;
    }
    let echoes: usize = closes.iter().map(|c| c.echoes_after_drain).sum();
    support::assert_spread_over(
        WINDOW,
        &mut times,
        &format!("tcp pool drain: {CONNECTIONS} tunnels closed"),
        &format!(
            "per quarter of the window (and after) {quarters:?}; {echoes} echoes after the drain began"
        ),
    );
    assert!(
        quarters.iter().all(|&n| n <= CONNECTIONS / 2),
        "no more than half of them in one quarter of the window: {quarters:?}"
    );
    // Until its moment, each tunnel carried bytes: those closed in the
    // second half of the window echoed after the drain began.
    for close in &closes {
        if close.at > WINDOW / 2 {
            assert!(
                close.echoes_after_drain > 0,
                "a tunnel closed at {:?} echoed nothing after the drain began",
                close.at
            );
        }
    }
    assert!(
        server.wait_all_closed(Duration::from_secs(5)).await,
        "the server side of every tunnel is closed too"
    );
}
