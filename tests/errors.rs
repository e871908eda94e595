//! What a client gets when something fails: the status, a short plain-text
//! body, and whether the connection survives. Also `wharf check`'s report of
//! a config's mistakes.

mod support;

use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant};

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// wharf's own error answers: the status, `text/plain`, a short sentence that
/// names no address.
fn assert_plain_text_error(reply: &Reply, status: u16) {
    assert_eq!(reply.status, status, "body: {}", reply.text());
    let content_type = reply.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "{status} has content-type {content_type:?}"
    );
    let text = std::str::from_utf8(&reply.body).expect("a UTF-8 body");
    assert!(
        !text.trim().is_empty() && text.len() < 200,
        "{status} body is not a short text: {text:?}"
    );
    assert!(
        !text.contains("127.0.0.1"),
        "{status} body names an address: {text:?}"
    );
    assert!(
        reply.backend().is_empty(),
        "answered by a backend, not wharf"
    );
}

/// As [`assert_plain_text_error`] for a raw response.
fn assert_raw_plain_text_error(response: &RawResponse, status: u16) {
    assert_eq!(response.status, status, "body: {}", response.text());
    let content_type = response.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain"),
        "{status} has content-type {content_type:?}: {response:?}"
    );
    let text = response.text();
    assert!(
        !text.trim().is_empty() && text.len() < 200,
        "{status} body is not a short text: {text:?}"
    );
}

// ------------------------------------------------------------------ servers failing

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_server_gives_502_then_503_while_ejected_then_recovers() {
    let server = refused_addr().await;
    let (_wharf, addr) = wharf_for(&[server], "").await;
    let mut client = Client::connect(addr).await;

    let failed_at = Instant::now();
    let reply = client.get("app.test", "/").await;
    assert_plain_text_error(&reply, 502);
    // The only server is ejected: not even tried.
    let reply = client.get("app.test", "/").await;
    assert_plain_text_error(&reply, 503);

    // The server comes up on its port; wharf tries it again once the
    // ejection is over (the first lasts `ejection.base_time`, 2s by default:
    // src/config/mod.rs EjectionPolicy).
    let Ok(listener) = TcpListener::bind(server).await else {
        eprintln!("port {server} was taken meanwhile; recovery not checked");
        return;
    };
    let backend = Backend::start_on(listener, "back", Behaviour::Normal);
    let mut statuses = Vec::new();
    let recovered_after = within("the server to be tried again", async {
        loop {
            let reply = client.get("app.test", "/").await;
            statuses.push(reply.status.as_u16());
            if reply.status == 200 {
                return failed_at.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        statuses[..statuses.len() - 1].iter().all(|&s| s == 503),
        "{statuses:?}"
    );
    assert!(
        recovered_after >= Duration::from_millis(1800),
        "an ejected server was used after {recovered_after:?}"
    );
    assert_eq!(backend.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_server_is_skipped_for_the_other_one() {
    for balance in ["round_robin", "least_conn", "random_two"] {
        let backend = Backend::normal("good").await;
        let refused = refused_addr().await;
        let (_wharf, addr) = wharf_for(
            &[refused, backend.addr],
            &format!("balance = \"{balance}\""),
        )
        .await;
        let mut client = Client::connect(addr).await;
        for i in 0..20 {
            let reply = client.get("app.test", "/").await;
            assert_eq!(
                reply.status,
                200,
                "{balance}: request {i} got {}: {}",
                reply.status,
                reply.text()
            );
            assert_eq!(reply.backend(), "good");
        }
        assert_eq!(backend.requests(), 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_server_gives_504_after_the_response_timeout() {
    let slow = Backend::start("slow", Behaviour::Slow(Duration::from_secs(3))).await;
    let other = Backend::start("other", Behaviour::Slow(Duration::from_secs(3))).await;
    let (_wharf, addr) = wharf_for(
        &[slow.addr, other.addr],
        r#"timeouts = { response = "200ms" }"#,
    )
    .await;
    let started = Instant::now();
    let reply = get(addr, "app.test", "/").await;
    let elapsed = started.elapsed();
    assert_plain_text_error(&reply, 504);
    assert!(
        elapsed >= Duration::from_millis(180) && elapsed < Duration::from_millis(1500),
        "504 after {elapsed:?}"
    );
    // The request reached a server, so it was not sent to another one.
    assert_eq!(slow.requests() + other.requests(), 1);
}

/// The requests of one client connection share its response timer: each
/// has its own full time, before and after one of them timed out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_request_on_a_connection_has_its_own_response_timeout() {
    let backend = Backend::normal("b").await;
    let (_wharf, addr) = wharf_for(&[backend.addr], r#"timeouts = { response = "600ms" }"#).await;
    let mut client = Client::connect(addr).await;
    // Two answers of 350 ms in a row: together over the timeout, each within.
    for (path, status) in [
        ("/slow/350", 200),
        ("/slow/350", 200),
        ("/slow/3000", 504),
        ("/slow/350", 200),
        ("/slow/3000", 504),
    ] {
        let started = Instant::now();
        let reply = client.request(get_request("app.test", path)).await;
        let elapsed = started.elapsed();
        assert_eq!(reply.status, status, "{path} after {elapsed:?}");
        if status == 504 {
            assert!(
                elapsed >= Duration::from_millis(580) && elapsed < Duration::from_millis(2500),
                "504 after {elapsed:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closing_without_an_answer_gives_502() {
    let backend = Backend::start("mute", Behaviour::CloseWithoutAnswer).await;
    let (_wharf, addr) = wharf_for(&[backend.addr], "").await;
    let reply = get(addr, "app.test", "/").await;
    assert_plain_text_error(&reply, 502);
    assert_eq!(backend.requests(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_that_reached_a_server_is_never_retried() {
    let a = Backend::start("a", Behaviour::CloseWithoutAnswer).await;
    let b = Backend::start("b", Behaviour::CloseWithoutAnswer).await;
    let (_wharf, addr) = wharf_for(&[a.addr, b.addr], "").await;
    let request = http::Request::post("/orders")
        .header(http::header::HOST, "app.test")
        .body(full_body("buy 1"))
        .unwrap();
    let reply = Client::connect(addr).await.request(request).await;
    assert_plain_text_error(&reply, 502);
    assert_eq!(a.requests() + b.requests(), 1, "a POST was sent twice");
}

/// A GET may go again after its connection failed under it, but not once
/// the server has answered anything (an interim 100, part of a head): the
/// server acted on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_began_answering_is_not_sent_the_request_again() {
    for answer in [
        &b"HTTP/1.1 100 Continue\r\n\r\n"[..],
        b"HTTP/1.1 200 OK\r\nContent-Le",
    ] {
        let a = RawServer::start(answer, true).await;
        let b = RawServer::start(answer, true).await;
        let (_wharf, addr) = wharf_for(&[a.addr, b.addr], "retries = 1").await;
        let reply = get(addr, "app.test", "/").await;
        assert_plain_text_error(&reply, 502);
        assert_eq!(
            a.accepted() + b.accepted(),
            1,
            "sent again after {:?}",
            String::from_utf8_lossy(answer)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_server_response_gives_502() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream.write_all(b"HTTP/1.1 2x0 Nope\r\n\r\n").await;
                let _ = stream.shutdown().await;
            });
        }
    });
    let (_wharf, addr) = wharf_for(&[server], "").await;
    let reply = get(addr, "app.test", "/").await;
    assert_plain_text_error(&reply, 502);
    task.abort();
}

/// A response cut short by the server (fewer bytes than its Content-Length)
/// must not reach the client as a complete one: the client connection is
/// closed before the announced length is reached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_sized_response_is_not_passed_off_as_complete() {
    let server = RawServer::start(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
        true,
    )
    .await;
    let (_wharf, addr) = wharf_for(&[server.addr], "").await;
    let mut client = RawClient::connect(addr).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let (bytes, closed) = client.read_until_closed(Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "client connection left hanging: {text:?}");
    if let Some(end) = text.find("\r\n\r\n") {
        let head = text[..end].to_ascii_lowercase();
        let body = bytes.len() - end - 4;
        if head.contains("content-length: 100") {
            assert!(body < 100, "the client got a complete response: {text:?}");
        } else {
            assert!(
                !head.starts_with("http/1.1 200"),
                "a truncated response became a complete 200: {text:?}"
            );
        }
    }
}

/// The same for a chunked response whose last chunk never comes: the client
/// must not get the terminating `0` chunk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_chunked_response_is_not_passed_off_as_complete() {
    let server = RawServer::start(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        true,
    )
    .await;
    let (_wharf, addr) = wharf_for(&[server.addr], "").await;
    let mut client = RawClient::connect(addr).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let (bytes, closed) = client.read_until_closed(Duration::from_secs(5)).await;
    let text = String::from_utf8_lossy(&bytes);
    assert!(closed, "client connection left hanging: {text:?}");
    assert!(
        !text.ends_with("0\r\n\r\n"),
        "the client got a complete chunked body: {text:?}"
    );
}

/// A server whose accept queue is full: connecting to it hangs until the
/// connect timeout (SYNs to a full queue are dropped on Linux).
async fn unresponsive_addr() -> (
    SocketAddr,
    Vec<tokio::net::TcpStream>,
    tokio::net::TcpListener,
) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    // Fill the queue; connections beyond it never complete.
    let mut fillers = Vec::new();
    for _ in 0..8 {
        match tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            Ok(Ok(stream)) => fillers.push(stream),
            _ => break,
        }
    }
    (addr, fillers, listener)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_timeout_gives_504_and_another_server_is_tried() {
    let (hanging, _fillers, _listener) = unresponsive_addr().await;
    // Alone: the connect times out.
    let (_wharf, addr) = wharf_for(&[hanging], r#"timeouts = { connect = "200ms" }"#).await;
    let started = Instant::now();
    let reply = get(addr, "app.test", "/").await;
    assert_plain_text_error(&reply, 504);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    // With another server: the client never notices.
    let backend = Backend::normal("good").await;
    let (_wharf, addr) = wharf_for(
        &[hanging, backend.addr],
        r#"timeouts = { connect = "200ms" }"#,
    )
    .await;
    let mut client = Client::connect(addr).await;
    for _ in 0..6 {
        let reply = client.get("app.test", "/").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_error_statuses_pass_through_untouched() {
    for code in [500, 502, 503, 504] {
        let backend = Backend::start("b", Behaviour::Status(code)).await;
        let (_wharf, addr) = wharf_for(&[backend.addr], "").await;
        let reply = get(addr, "app.test", "/").await;
        assert_eq!(reply.status, code);
        // The server's own body, not wharf's.
        assert_eq!(reply.text(), "b");
        assert_eq!(reply.backend(), "b");
    }
}

/// Only gateway failures count toward ejection: a server that answers 500
/// (which one client's requests can provoke) keeps its share.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_answering_500_is_not_ejected() {
    let failing = Backend::start("failing", Behaviour::Status(500)).await;
    let good = Backend::normal("good").await;
    let (_wharf, addr) = wharf_for(&[failing.addr, good.addr], "").await;
    let mut client = Client::connect(addr).await;
    for _ in 0..20 {
        client.get("app.test", "/").await;
    }
    assert_eq!(failing.requests(), 10, "the 500 server lost its share");
    assert_eq!(good.requests(), 10);
}

/// `ejection.max_percent` (50 by default): of two servers, one may be
/// ejected, never both; the second keeps getting requests and its own
/// answers reach the client instead of wharf's "no server" 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ejection_never_takes_out_more_than_max_percent_of_a_pool() {
    let refused = refused_addr().await;
    let unavailable = Backend::start("b", Behaviour::Status(503)).await;
    let (_wharf, addr) = wharf_for(&[refused, unavailable.addr], "").await;
    let mut client = Client::connect(addr).await;
    for i in 0..20 {
        let reply = client.get("app.test", "/").await;
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.backend(),
            "b",
            "request {i} was answered by wharf: {}",
            reply.text()
        );
    }
    assert_eq!(unavailable.requests(), 20);

    // With max_percent = 100, both go, and wharf answers for itself.
    let (_wharf, addr) = wharf_for(
        &[refused, unavailable.addr],
        "ejection = { max_percent = 100 }",
    )
    .await;
    let mut client = Client::connect(addr).await;
    let mut by_wharf = 0;
    for _ in 0..20 {
        if client.get("app.test", "/").await.backend() != "b" {
            by_wharf += 1;
        }
    }
    assert!(by_wharf > 0, "the second server was never ejected");
}

// ------------------------------------------------------------------ bad requests

async fn normal_setup() -> (Running, SocketAddr, Backend) {
    let backend = Backend::normal("b").await;
    let (wharf, addr) = wharf_for(&[backend.addr], "").await;
    (wharf, addr, backend)
}

/// Sends `request` on a new connection; expects a 400 and the connection closed.
async fn assert_rejected(addr: SocketAddr, request: &[u8], status: u16) -> RawResponse {
    let mut client = RawClient::connect(addr).await;
    client.send(request).await;
    let response = client.try_read_response().await.unwrap_or_else(|| {
        panic!(
            "connection closed without an answer to {:?}",
            String::from_utf8_lossy(request)
        )
    });
    assert_eq!(
        response.status,
        status,
        "for {:?}: {response:?}",
        String::from_utf8_lossy(request)
    );
    assert!(
        client.closed_within(Duration::from_secs(5)).await,
        "connection left open after {status} to {:?}",
        String::from_utf8_lossy(request)
    );
    response
}

const MALFORMED: &[&[u8]] = &[
    b"GARBAGE\r\n\r\n",
    b"GET / HTTP/1.1 trailing\r\nHost: app.test\r\n\r\n",
    b"GET /a\x01b HTTP/1.1\r\nHost: app.test\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: app.test\r\nBad Header: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: app.test\r\nNoColonHere\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: abc\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    b"POST / HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"POST / HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_400_and_the_connection_closed() {
    let (_wharf, addr, backend) = normal_setup().await;
    for request in MALFORMED {
        let response = assert_rejected(addr, request, 400).await;
        assert!(response.body.len() < 200, "{response:?}");
    }
    assert_eq!(
        backend.requests(),
        0,
        "a malformed request reached the server"
    );
}

// A request hyper cannot parse gets hyper's own 400 (empty body, connection
// closed; see malformed_requests_get_400_and_the_connection_closed): hyper
// offers no hook to write that answer, so it has no plain-text body.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http11_without_host_gets_400_and_the_connection_closed() {
    let (_wharf, addr, backend) = normal_setup().await;
    let response = assert_rejected(addr, b"GET / HTTP/1.1\r\n\r\n", 400).await;
    assert_raw_plain_text_error(&response, 400);
    assert_eq!(
        response.header("connection").map(str::to_ascii_lowercase),
        Some("close".to_owned())
    );
    assert_eq!(backend.requests(), 0);
}

/// RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code
/// to any HTTP/1.1 request message that [...] contains more than one Host
/// header field line or a Host header field with an invalid field value."
/// A proxy that routes by one Host and forwards two lets the server act on
/// the other one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_get_400() {
    let (_wharf, addr, backend) = normal_setup().await;
    let mut client = RawClient::connect(addr).await;
    let response = client
        .request(b"GET / HTTP/1.1\r\nHost: app.test\r\nHost: evil.test\r\n\r\n")
        .await;
    let forwarded: Vec<Vec<String>> = backend.seen().iter().map(|s| s.all("host")).collect();
    assert_eq!(
        response.status, 400,
        "answered {}; the server got Host headers {forwarded:?}",
        response.status
    );
    assert!(client.closed_within(Duration::from_secs(5)).await);
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_host_values_get_400() {
    let (_wharf, addr, backend) = normal_setup().await;
    let mut accepted = Vec::new();
    for host in [
        "app.test/evil",
        "app test",
        "user@app.test",
        "app.test:port",
    ] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let mut client = RawClient::connect(addr).await;
        let response = client.request(request.as_bytes()).await;
        if response.status != 400 {
            accepted.push((host, response.status));
        }
    }
    assert!(
        accepted.is_empty(),
        "invalid Host values not refused (host, status): {accepted:?}; the server got {:?}",
        backend
            .seen()
            .iter()
            .map(|s| s.all("host"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_gets_405() {
    let (_wharf, addr, backend) = normal_setup().await;
    let mut client = RawClient::connect(addr).await;
    let response = client
        .request(b"CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n")
        .await;
    assert_raw_plain_text_error(&response, 405);
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_many_headers_get_431_and_the_connection_closed() {
    let (_wharf, addr, backend) = normal_setup().await;
    let mut request = b"GET / HTTP/1.1\r\nHost: app.test\r\n".to_vec();
    for i in 0..200 {
        request.extend_from_slice(format!("X-Filler-{i}: {i}\r\n").as_bytes());
    }
    request.extend_from_slice(b"\r\n");
    assert_rejected(addr, &request, 431).await;
    assert_eq!(backend.requests(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incomplete_request_head_is_cut_off_after_request_header() {
    let backend = Backend::normal("b").await;
    let toml = format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"
timeouts = {{ request_header = "300ms" }}

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{}"]
"#,
        backend.addr
    );
    let wharf = start_wharf(&toml).await;
    let mut client = RawClient::connect(public(&wharf)).await;
    let started = Instant::now();
    client.send(b"GET / HTTP/1.1\r\nHost: app.te").await;
    // A byte every 100ms: never done, always active.
    let mut closed = false;
    for _ in 0..30 {
        if client.closed_within(Duration::from_millis(100)).await {
            closed = true;
            break;
        }
        let _ = tokio::time::timeout(Duration::from_millis(100), client.send(b"s")).await;
    }
    let elapsed = started.elapsed();
    assert!(
        closed,
        "a trickled request head was still open after {elapsed:?}"
    );
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(2),
        "closed after {elapsed:?} with request_header = 300ms"
    );
    assert_eq!(backend.requests(), 0);
}

// ------------------------------------------------------------------ wharf check

struct TempFile(std::path::PathBuf);

impl TempFile {
    fn new(contents: &str) -> TempFile {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "wharf-errors-test-{}-{}.toml",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::write(&path, contents).expect("write temp config");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn wharf_check(file: &TempFile) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("check")
        .arg(&file.0)
        .output()
        .expect("run wharf check")
}

const VALID: &str = r#"[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[listener.route]]
pool = "web"

[pool.web]
servers = ["127.0.0.1:3001", { address = "127.0.0.1:3002", weight = 2 }]
balance = "least_conn"
timeouts = { connect = "500ms", response = "5s" }
idle_connections = 4
"#;

#[test]
fn wharf_check_reports_every_mistake_with_its_position() {
    // Line 10: an unknown balance; line 11: a duration that is not one.
    let text = VALID
        .replace("balance = \"least_conn\"", "balance = \"fastest\"")
        .replace("connect = \"500ms\"", "connect = \"5 parsecs\"");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[9].starts_with("balance") && lines[10].starts_with("timeouts"));
    let file = TempFile::new(&text);
    let output = wharf_check(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "exit status {:?}", output.status);
    let path = file.0.display().to_string();
    for line in [10usize, 11] {
        let prefix = format!("{path}:{line}:");
        let report = stderr
            .lines()
            .chain(stdout.lines())
            .find(|l| l.starts_with(&prefix))
            .unwrap_or_else(|| panic!("no `{prefix}COL: ...` line in:\n{stderr}{stdout}"));
        let rest = &report[prefix.len()..];
        let (col, message) = rest.split_once(": ").expect("`col: message`");
        let col: usize = col.parse().expect("a numeric column");
        assert!(
            (1..=lines[line - 1].len()).contains(&col),
            "column {col} outside line {line}"
        );
        assert!(!message.trim().is_empty());
    }
}

#[test]
fn wharf_check_accepts_a_valid_file() {
    let file = TempFile::new(VALID);
    let output = wharf_check(&file);
    assert!(
        output.status.success(),
        "exit status {:?}: {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A sticky cookie without a `secret` is valid, but its tokens can be
/// matched to server addresses offline: `wharf check` says so, and passes.
#[test]
fn wharf_check_warns_about_a_sticky_cookie_without_a_secret() {
    let file = TempFile::new(&format!("{VALID}sticky = {{ cookie = \"wharf\" }}\n"));
    let output = wharf_check(&file);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        stderr.contains("warning") && stderr.contains("pool `web`") && stderr.contains("secret"),
        "{stderr}"
    );
    let file = TempFile::new(&format!(
        "{VALID}sticky = {{ cookie = \"wharf\", secret = \"s3cret\" }}\n"
    ));
    let output = wharf_check(&file);
    assert!(!String::from_utf8_lossy(&output.stderr).contains("warning"));
}

#[test]
fn wharf_check_fails_on_a_missing_file() {
    let path = std::env::temp_dir().join(format!("wharf-no-such-{}.toml", std::process::id()));
    let output = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("check")
        .arg(&path)
        .output()
        .expect("run wharf check");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&path.display().to_string()), "{stderr}");
}
