//! A deadline on every phase (issue 11, point 2): nothing a client or a
//! server does by going quiet can hold wharf's resources without end.

mod support;

use std::time::Duration;

use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A client that stops reading a response (its TCP window closes) is cut
/// after `timeouts.client_write`; its server connection and its place under
/// the server's `max_connections` are freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_frees_every_slot() {
    let backend = Backend::normal("b").await;
    let toml = one_pool_config(
        &[backend.addr],
        "max_connections = 1\ntimeouts = { queue = \"200ms\" }",
    )
    .replace(
        "bind = \"127.0.0.1:0\"",
        "bind = \"127.0.0.1:0\"\ntimeouts = { client_write = \"500ms\" }",
    );
    let wharf = start_wharf(&toml).await;
    let addr = public(&wharf);
    let mut stuck = tokio::net::TcpStream::connect(addr).await.unwrap();
    stuck
        .write_all(b"GET /generate/268435456 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .unwrap();
    backend.wait_requests(1).await;
    // Never read: the buffers fill, wharf's writes stall, then it gives up.
    assert!(
        backend
            .wait_open_connections(Duration::from_secs(15), |n| n == 0)
            .await,
        "the server connection of a client that stopped reading was kept"
    );
    let reply = get(addr, "app.test", "/").await;
    assert_eq!(
        reply.status,
        200,
        "the server slot was not freed: {}",
        reply.text()
    );
    drop(stuck);
}

/// A request body trickled below `min_upload_rate` (or not at all) is cut
/// with 408 after `timeouts.upload_idle`, and its server connection closed;
/// one that keeps the pace passes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_request_body_is_cut_with_408() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(
        &[backend.addr],
        "min_upload_rate = 1000\ntimeouts = { upload_idle = \"300ms\" }",
    ))
    .await;
    let addr = public(&wharf);
    let head = b"POST /verify HTTP/1.1\r\nHost: app.test\r\nContent-Length: 100000\r\n\r\n";

    for (what, piece) in [("trickled at 200 B/s", 10usize), ("stalled", 0)] {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(head).await.unwrap();
        let started = std::time::Instant::now();
        let mut answer = Vec::new();
        let mut offset = 0;
        // Every 50 ms, `piece` more bytes, until wharf answers and closes.
        let closed = within(what, async {
            loop {
                if piece > 0 && stream.write_all(&pattern(offset, piece)).await.is_err() {
                    break;
                }
                offset += piece as u64;
                let mut buf = [0u8; 1024];
                match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
                    Ok(Ok(0)) | Ok(Err(_)) => break,
                    Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                    Err(_) => {}
                }
            }
            started.elapsed()
        })
        .await;
        let text = String::from_utf8_lossy(&answer);
        assert!(text.starts_with("HTTP/1.1 408"), "{what}: {text:?}");
        assert!(
            closed < Duration::from_secs(3),
            "{what}: cut only after {closed:?}"
        );
    }
    assert!(
        backend
            .wait_open_connections(Duration::from_secs(5), |n| n == 0)
            .await,
        "server connections of trickled uploads were kept"
    );

    // At full speed the same body passes.
    let mut client = RawClient::connect(addr).await;
    let mut request = head.to_vec();
    request.extend_from_slice(&pattern(0, 100_000));
    let response = client.request(&request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "bytes=100000");
}

/// A server that stalls in the middle of a response body: after
/// `timeouts.response` of silence the client keeps what it got, its
/// connection closes (the body cannot be completed) and the server
/// connection is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_body_stalled_by_the_server_is_cut() {
    for response in [
        &b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nfirst ten!"[..],
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\na\r\nfirst ten!\r\n",
    ] {
        let server = RawServer::start(response, false).await;
        let wharf = start_wharf(&one_pool_config(
            &[server.addr],
            "timeouts = { response = \"500ms\" }",
        ))
        .await;
        let mut client = RawClient::connect(public(&wharf)).await;
        client
            .send(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        let (bytes, closed) = client.read_until_closed(Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&bytes);
        assert!(closed, "client connection kept open: {text:?}");
        assert!(
            text.contains("first ten!"),
            "the client lost what was sent: {text:?}"
        );
        assert!(
            !text.ends_with("0\r\n\r\n"),
            "the body was passed off as complete"
        );
        assert!(
            server.wait_dropped(1, Duration::from_secs(5)).await,
            "the stalled server connection was kept"
        );
    }
}
