//! Keep-alive on both sides of wharf: connections to servers are reused and
//! their idle pool is bounded and expires; client connections carry many
//! requests (one after another, or pipelined) and close when asked to.

mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequential_requests_on_one_client_connection_reuse_one_server_connection() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let mut client = Client::connect(public(&wharf)).await;
    for i in 0..50 {
        let reply = client.get("app.test", &format!("/{i}")).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.text(), "b");
    }
    assert_eq!(backend.requests(), 50);
    assert!(
        backend.accepted() <= 2,
        "50 sequential requests opened {} server connections",
        backend.accepted()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connections_are_reused_across_client_connections() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let addr = public(&wharf);
    for i in 0..30 {
        let reply = get(addr, "app.test", &format!("/{i}")).await;
        assert_eq!(reply.status, 200);
    }
    assert_eq!(backend.requests(), 30);
    assert!(
        backend.accepted() <= 2,
        "30 sequential clients opened {} server connections",
        backend.accepted()
    );
}

/// Sends `n` concurrent `/hold` requests, each on its own client connection,
/// and waits until the backend holds all of them.
async fn hold(
    addr: SocketAddr,
    backend: &Backend,
    n: usize,
) -> Vec<tokio::task::JoinHandle<Reply>> {
    let before = backend.held();
    let tasks: Vec<_> = (0..n)
        .map(|_| tokio::spawn(async move { get(addr, "app.test", "/hold").await }))
        .collect();
    backend.wait_held(before + n).await;
    tasks
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<Reply>>) {
    for task in tasks {
        let reply = task.await.expect("request task");
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_connections_are_bounded_by_idle_connections() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "idle_connections = 2")).await;
    let addr = public(&wharf);

    // Ten requests at once need ten server connections.
    let tasks = hold(addr, &backend, 10).await;
    assert_eq!(backend.accepted(), 10);
    backend.release_held();
    finish(tasks).await;

    // Once they are all done, wharf keeps two and closes the other eight.
    let settled = backend
        .wait_open_connections(Duration::from_secs(5), |open| open <= 2)
        .await;
    assert!(
        settled,
        "{} server connections still open with idle_connections = 2",
        backend.open_connections()
    );
    assert_eq!(
        backend.open_connections(),
        2,
        "the two idle connections are kept"
    );

    // Ten at once again: two reuse the idle connections, eight open new ones.
    let tasks = hold(addr, &backend, 10).await;
    assert_eq!(
        backend.accepted(),
        18,
        "expected 2 of 10 concurrent requests to reuse the 2 idle connections"
    );
    backend.release_held();
    finish(tasks).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_0_never_reuses() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "idle_connections = 0")).await;
    let mut client = Client::connect(public(&wharf)).await;
    for _ in 0..5 {
        assert_eq!(client.get("app.test", "/").await.status, 200);
    }
    assert_eq!(backend.accepted(), 5);
    assert!(
        backend
            .wait_open_connections(Duration::from_secs(5), |open| open == 0)
            .await,
        "server connections left open: {}",
        backend.open_connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_connections_expire_after_server_idle() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(
        &[backend.addr],
        r#"timeouts = { server_idle = "300ms" }"#,
    ))
    .await;
    let addr = public(&wharf);
    assert_eq!(get(addr, "app.test", "/").await.status, 200);
    assert_eq!(backend.accepted(), 1);
    // wharf closes the idle connection itself (expiry runs once a second).
    let started = Instant::now();
    assert!(
        backend
            .wait_open_connections(Duration::from_secs(4), |open| open == 0)
            .await,
        "the idle server connection was not closed after server_idle"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The next request needs a new connection.
    assert_eq!(get(addr, "app.test", "/").await.status, 200);
    assert_eq!(backend.accepted(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_server_connections_are_kept_within_server_idle() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(
        &[backend.addr],
        r#"timeouts = { server_idle = "30s" }"#,
    ))
    .await;
    let addr = public(&wharf);
    assert_eq!(get(addr, "app.test", "/").await.status, 200);
    // Longer than the expiry tick: the connection must survive it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(backend.open_connections(), 1);
    assert_eq!(get(addr, "app.test", "/").await.status, 200);
    assert_eq!(backend.accepted(), 1);
}

/// A server that answers one request per connection and closes the
/// connection 100ms later without saying `Connection: close`, ignoring
/// anything sent meanwhile: what a server whose keep-alive timeout fires just
/// as a request arrives does (RFC 9112 §9.3.1: anyone may close at any time).
/// Returns its address and a counter of connections it accepted.
async fn server_closing_each_connection_after_one_answer() -> (
    SocketAddr,
    std::sync::Arc<std::sync::atomic::AtomicUsize>,
    tokio::task::JoinHandle<()>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                        _ => return,
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
                // Closed when dropped here, unanswered requests and all.
            });
        }
    });
    (addr, accepted, task)
}

/// A GET sent on a reused connection that the server closes without a byte
/// of answer was not processed, and may be sent again (RFC 9112 §9.3.1.1):
/// wharf retries it on a new connection rather than answering 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_on_a_reused_connection_the_server_closed_is_retried() {
    let (server, accepted, task) = server_closing_each_connection_after_one_answer().await;
    let wharf = start_wharf(&one_pool_config(&[server], "")).await;
    let mut client = Client::connect(public(&wharf)).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let reply = client.get("app.test", "/").await;
        statuses.push(reply.status.as_u16());
    }
    task.abort();
    assert_eq!(
        statuses,
        [200; 10],
        "{} server connections were opened",
        accepted.load(std::sync::atomic::Ordering::SeqCst)
    );
}

/// A server's `Connection: close` is about its own connection: wharf opens a
/// new one for the next request and keeps the client's open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_connection_close_does_not_close_the_client() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let mut client = RawClient::connect(public(&wharf)).await;
    for _ in 0..3 {
        let response = client
            .request(
                b"GET / HTTP/1.1\r\nHost: app.test\r\nX-Reply-Header: Connection: close\r\n\r\n",
            )
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "b");
        assert!(response.header("connection").is_none(), "{response:?}");
    }
    assert_eq!(backend.requests(), 3);
    assert_eq!(
        backend.accepted(),
        3,
        "a connection the server closed was reused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keep_alive_serves_many_requests_on_one_connection() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let mut client = RawClient::connect(public(&wharf)).await;
    for code in [200, 201, 202, 203, 206, 299, 200, 200, 200, 200] {
        let request = format!("GET /status/{code} HTTP/1.1\r\nHost: app.test\r\n\r\n");
        let response = client.request(request.as_bytes()).await;
        assert_eq!(response.status, code);
        assert_eq!(response.text(), "b");
        assert_ne!(
            response.header("connection").map(str::to_ascii_lowercase),
            Some("close".to_owned())
        );
    }
    assert_eq!(backend.requests(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let mut client = RawClient::connect(public(&wharf)).await;
    let mut requests = Vec::new();
    for code in [201, 202, 203, 204, 205] {
        requests.extend_from_slice(
            format!("GET /status/{code} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes(),
        );
    }
    // The second is slow: the ones behind it still come back in order.
    let slow = b"GET /slow/100 HTTP/1.1\r\nHost: app.test\r\n\r\n";
    requests.splice(0..0, slow.iter().copied());
    client.send(&requests).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(client.read_response().await.status);
    }
    assert_eq!(statuses, [200, 201, 202, 203, 204, 205]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_from_the_client_is_honoured() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let mut client = RawClient::connect(public(&wharf)).await;
    let response = client
        .request(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(
        response.header("connection").map(str::to_ascii_lowercase),
        Some("close".to_owned())
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);
    // The server connection is still reusable: closing was the client's business.
    assert_eq!(get(public(&wharf), "app.test", "/").await.status, 200);
    assert_eq!(backend.accepted(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_client_without_keep_alive_is_closed_after_the_response() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let mut client = RawClient::connect(public(&wharf)).await;
    let response = client
        .request(b"GET / HTTP/1.0\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "b");
    assert!(client.closed_within(Duration::from_secs(5)).await);
}

/// `[[listener]] timeouts.request_header` also bounds how long an idle
/// keep-alive client connection is kept (src/config/mod.rs `ListenerTimeouts`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_client_connections_are_closed_after_request_header() {
    let backend = Backend::normal("b").await;
    let toml = format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"
timeouts = {{ request_header = "500ms" }}

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{}"]
"#,
        backend.addr
    );
    let wharf = start_wharf(&toml).await;
    let mut client = RawClient::connect(public(&wharf)).await;
    let response = client
        .request(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(response.status, 200);
    let started = Instant::now();
    let closed = client.closed_within(Duration::from_secs(4)).await;
    let elapsed = started.elapsed();
    assert!(
        closed,
        "an idle client connection was still open {elapsed:?} after its last response"
    );
    assert!(
        elapsed >= Duration::from_millis(400),
        "closed too early: {elapsed:?}"
    );
}

/// A graceful stop closes an idle keep-alive client connection after the
/// stop's short grace (half a second), not at the connection's idle timeout
/// (`request_header`, 10 s by default), and finishes in time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_closes_an_idle_client_connection() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let mut client = RawClient::connect(public(&wharf)).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(client.read_response().await.status, 200);
    let stopping = tokio::spawn(wharf.stop(Duration::from_secs(8)));
    assert!(
        client.closed_within(Duration::from_secs(5)).await,
        "the idle client connection is still open 5 s after the stop"
    );
    assert!(
        within("the stop", stopping).await.unwrap(),
        "the stop did not finish in time"
    );
}
