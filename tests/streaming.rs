//! Bodies stream through wharf both ways, sized (Content-Length) and chunked:
//! a piece sent by the client reaches the server, and the server's answer to
//! it reaches the client, before the rest is sent. Larger bodies arrive whole
//! and intact, and framing survives HEAD and `Expect: 100-continue`.

mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use support::*;

async fn setup() -> (Running, SocketAddr, Backend) {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let addr = public(&wharf);
    (wharf, addr, backend)
}

/// Reads from `body` until `want` more bytes have come, checking them
/// against the pattern; panics if the body ends first.
async fn read_exactly(body: &mut Incoming, checker: &mut PatternChecker, want: u64) {
    let target = checker.bytes + want;
    while checker.bytes < target {
        let frame = within("the echo of the last piece", body.frame())
            .await
            .expect("the body continues")
            .expect("a body frame");
        if let Some(data) = frame.data_ref() {
            checker.update(data);
        }
    }
    assert_eq!(checker.first_mismatch, None);
}

/// Sends a body in pieces and reads each piece's echo before sending the
/// next: this only completes if wharf streams in both directions.
async fn echo_in_lockstep(addr: SocketAddr, sized: bool) -> http::response::Parts {
    const PIECES: u64 = 8;
    const PIECE: u64 = 10_000;
    let total = PIECES * PIECE;
    let (tx, body) = channel_body(sized.then_some(total));
    let request = Request::post("/echo")
        .header(header::HOST, "app.test")
        .body(body.boxed())
        .unwrap();
    let mut client = Client::connect(addr).await;
    // The first piece goes before the response is awaited: wharf may wait
    // for body bytes before it answers, but must not wait for all of them.
    tx.send(Bytes::from(pattern(0, PIECE as usize)))
        .await
        .unwrap();
    let response = client.send(request).await;
    assert_eq!(response.status(), 200);
    let (parts, mut incoming) = response.into_parts();
    let mut checker = PatternChecker::new();
    read_exactly(&mut incoming, &mut checker, PIECE).await;
    for i in 1..PIECES {
        tx.send(Bytes::from(pattern(i * PIECE, PIECE as usize)))
            .await
            .unwrap();
        read_exactly(&mut incoming, &mut checker, PIECE).await;
    }
    drop(tx);
    // The body ends with the request's.
    let rest = within("the end of the echo", incoming.collect())
        .await
        .expect("a complete body")
        .to_bytes();
    assert!(rest.is_empty(), "{} bytes more than were sent", rest.len());
    checker.assert_complete(total);
    parts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_bodies_stream_both_ways() {
    let (_wharf, addr, backend) = setup().await;
    let parts = echo_in_lockstep(addr, false).await;
    let seen = backend.last_seen();
    assert_eq!(seen.all("transfer-encoding"), ["chunked"]);
    assert!(seen.all("content-length").is_empty());
    assert_eq!(
        parts
            .headers
            .get_all(header::TRANSFER_ENCODING)
            .iter()
            .count(),
        1
    );
    assert_eq!(parts.headers[header::TRANSFER_ENCODING], "chunked");
    assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sized_bodies_stream_both_ways() {
    let (_wharf, addr, backend) = setup().await;
    let parts = echo_in_lockstep(addr, true).await;
    let seen = backend.last_seen();
    assert_eq!(seen.all("content-length"), ["80000"]);
    assert!(seen.all("transfer-encoding").is_empty());
    assert_eq!(parts.headers[header::CONTENT_LENGTH], "80000");
    assert!(parts.headers.get(header::TRANSFER_ENCODING).is_none());
}

async fn download(addr: SocketAddr, path: &str) -> (http::response::Parts, PatternChecker) {
    let mut client = Client::connect(addr).await;
    let response = client.send(get_request("app.test", path)).await;
    let (parts, mut body) = response.into_parts();
    let mut checker = PatternChecker::new();
    while let Some(frame) = within("the next body frame", body.frame()).await {
        if let Some(data) = frame.expect("a body frame").data_ref() {
            checker.update(data);
        }
    }
    (parts, checker)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sized_download_arrives_whole() {
    let (_wharf, addr, _backend) = setup().await;
    let len = 16 * 1024 * 1024 + 7;
    let (parts, checker) = download(addr, &format!("/generate/{len}")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers[header::CONTENT_LENGTH], len.to_string());
    checker.assert_complete(len);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_download_arrives_whole() {
    let (_wharf, addr, _backend) = setup().await;
    let len = 16 * 1024 * 1024 + 7;
    let (parts, checker) = download(addr, &format!("/generate-chunked/{len}")).await;
    assert_eq!(parts.status, 200);
    assert_eq!(parts.headers[header::TRANSFER_ENCODING], "chunked");
    assert!(parts.headers.get(header::CONTENT_LENGTH).is_none());
    checker.assert_complete(len);
}

async fn upload(addr: SocketAddr, method: Method, len: u64, chunked: bool) -> Reply {
    let request = Request::builder()
        .method(method)
        .uri("/verify")
        .header(header::HOST, "app.test")
        .body(PatternBody::new(len, chunked).boxed())
        .unwrap();
    Client::connect(addr).await.request(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sized_upload_arrives_whole() {
    let (_wharf, addr, backend) = setup().await;
    let len = 16 * 1024 * 1024 + 3;
    let reply = upload(addr, Method::PUT, len, false).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), format!("bytes={len}"));
    assert_eq!(backend.last_seen().all("content-length"), [len.to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_upload_arrives_whole() {
    let (_wharf, addr, backend) = setup().await;
    let len = 16 * 1024 * 1024 + 3;
    let reply = upload(addr, Method::POST, len, true).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), format!("bytes={len}"));
    assert_eq!(backend.last_seen().all("transfer-encoding"), ["chunked"]);
}

/// A chunked body is part of the request whatever the method; a GET with a
/// body (as search APIs use) must reach the server with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_of_a_get_is_forwarded() {
    let (_wharf, addr, _backend) = setup().await;
    let mut client = RawClient::connect(addr).await;
    let body = pattern(0, 5);
    let mut request =
        b"GET /verify HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n"
            .to_vec();
    request.extend_from_slice(&body);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let response = client.request(&request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(
        response.text(),
        "bytes=5",
        "the server did not get the GET's body"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sized_body_of_a_get_is_forwarded() {
    let (_wharf, addr, _backend) = setup().await;
    let mut client = RawClient::connect(addr).await;
    let mut request =
        b"GET /verify HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\n\r\n".to_vec();
    request.extend_from_slice(&pattern(0, 5));
    let response = client.request(&request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "bytes=5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_is_answered_and_the_body_follows() {
    let (_wharf, addr, backend) = setup().await;
    let mut client = RawClient::connect(addr).await;
    client
        .send(b"POST /echo HTTP/1.1\r\nHost: app.test\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await;
    let interim = client.read_response().await;
    assert_eq!(interim.status, 100, "{interim:?}");
    client.send(b"hello").await;
    let response = client.read_response().await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "hello");
    // wharf answered the expectation itself; the server never saw it.
    assert!(backend.last_seen().all("expect").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_response_keeps_its_length_and_has_no_body() {
    let (_wharf, addr, _backend) = setup().await;
    let mut client = RawClient::connect(addr).await;
    client
        .send(b"HEAD /generate/1000 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    let response = client
        .try_read_response_to(&Method::HEAD)
        .await
        .expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(response.header("content-length"), Some("1000"));
    // No body bytes: the next response starts right after the head.
    let next = client
        .request(b"GET /generate/10 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(next.status, 200);
    assert_eq!(next.body, pattern(0, 10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_body_passes_through() {
    let (_wharf, addr, _backend) = setup().await;
    let mut client = RawClient::connect(addr).await;
    for code in [204, 304] {
        let response = client
            .request(format!("GET /status/{code} HTTP/1.1\r\nHost: app.test\r\n\r\n").as_bytes())
            .await;
        assert_eq!(response.status, code);
        assert!(
            response.header("transfer-encoding").is_none(),
            "{response:?}"
        );
    }
    // Framing intact: the connection still works.
    let response = client
        .request(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(response.text(), "b");
}

/// `timeouts.response` bounds how long the server takes to answer
/// (src/config/mod.rs: "From the request being sent to the response head
/// arriving"), not how long the client takes to upload: an upload slower
/// than it must still get the server's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upload_is_not_cut_off_by_the_response_timeout() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(
        &[backend.addr],
        r#"timeouts = { response = "500ms" }"#,
    ))
    .await;
    const PIECES: u64 = 10;
    const PIECE: u64 = 1000;
    let (tx, body) = channel_body(Some(PIECES * PIECE));
    let request = Request::put("/verify")
        .header(header::HOST, "app.test")
        .body(body.boxed())
        .unwrap();
    // The client sends a piece every 150ms: 1.5s in all, 3 times the timeout.
    let sender = tokio::spawn(async move {
        for i in 0..PIECES {
            let piece = Bytes::from(pattern(i * PIECE, PIECE as usize));
            if tx.send(piece).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(150)).await;
        }
    });
    let reply = Client::connect(public(&wharf)).await.request(request).await;
    sender.abort();
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.text(), format!("bytes={}", PIECES * PIECE));
}
