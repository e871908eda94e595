//! Size limits on the HTTP connections off the proxy path (issue 11): the
//! admin API bounds request heads (431 and close) and bodies (413 and
//! close); a health probe reads at most a bounded response head (a longer
//! one fails the check, before its timeout) and never a body.

mod support;

use std::time::Duration;

use support::*;
use wharf::upstream::Health;

/// The admin listener's head limit (the listeners' default `request_head`).
const ADMIN_HEAD: usize = 32 * 1024;
/// A check timeout no limit-based failure may wait for.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);

async fn wharf_with_admin() -> Running {
    let server = refused_addr().await;
    start_wharf(&with_admin(&one_pool_config(&[server], ""))).await
}

/// `GET /api/pools` with a `Host` the admin guard accepts, padded to `len`.
fn pools_request(api: std::net::SocketAddr, len: usize) -> &'static [u8] {
    oversized_head(
        &format!("GET /api/pools HTTP/1.1\r\nHost: {api}"),
        len,
        b"\r\n",
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_request_head_over_32_kib_gets_431_and_a_close() {
    let wharf = wharf_with_admin().await;
    let api = admin(&wharf);
    // Just under the limit: answered.
    let mut client = RawClient::connect(api).await;
    let response = client.request(pools_request(api, ADMIN_HEAD - 2048)).await;
    assert_eq!(response.status, 200, "{}", response.text());
    // Over it: 431 and the connection closed.
    let mut client = RawClient::connect(api).await;
    let response = client.request(pools_request(api, ADMIN_HEAD + 2048)).await;
    assert_eq!(response.status, 431, "{}", response.text());
    assert!(client.closed_within(Duration::from_secs(5)).await);
    // The API still answers.
    let mut client = RawClient::connect(api).await;
    let response = client.request(pools_request(api, 0)).await;
    assert_eq!(response.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_request_body_over_1_kib_gets_413_and_a_close() {
    let wharf = wharf_with_admin().await;
    let api = admin(&wharf);
    let post = |framing: &str| {
        format!(
            "POST /api/reload HTTP/1.1\r\nHost: {api}\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
        )
        .into_bytes()
    };
    let big = "x".repeat(4096);
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let cases: [(&str, Vec<u8>); 3] = [
        // Declared too long, and sent.
        (
            "a sized body",
            [post("Content-Length: 4096"), big.clone().into_bytes()].concat(),
        ),
        // Declared far too long, never sent: refused on the declaration.
        ("a declared 100 MB", post("Content-Length: 100000000")),
        // Chunked: found too long while reading.
        (
            "a chunked body",
            [post("Transfer-Encoding: chunked"), chunked.into_bytes()].concat(),
        ),
    ];
    for (name, request) in cases {
        let mut client = RawClient::connect(api).await;
        let response = client.request(&request).await;
        assert_eq!(response.status, 413, "{name}: {}", response.text());
        assert_eq!(response.header("connection"), Some("close"), "{name}");
        assert!(client.closed_within(Duration::from_secs(5)).await, "{name}");
    }
}

/// Pool `web` of one server checked over HTTP every 100 ms; one failed
/// check takes it down.
fn checked_pool(server: std::net::SocketAddr) -> String {
    one_pool_config(
        &[server],
        &format!(
            "health = {{ path = \"/health\", interval = \"100ms\", timeout = \"{}s\", rise = 1, fall = 1 }}",
            CHECK_TIMEOUT.as_secs()
        ),
    )
}

/// 64 KiB is within hyper's default buffer (about 400 KiB), so it shows
/// the probe's own 32 KiB bound; 1 MiB is what a broken server might send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_answered_with_a_head_over_32_kib_fails_on_the_limit_not_the_timeout() {
    for size in [64 * 1024, 1024 * 1024] {
        let head = oversized_head("HTTP/1.1 200 OK", size, b"Content-Length: 0\r\n\r\n");
        let server = RawServer::start(head, true).await;
        let wharf = start_wharf(&checked_pool(server.addr)).await;
        let took = wait_for_health(&wharf, "web", server.addr, Health::Down, WAIT).await;
        let state = server_state(&wharf, "web", server.addr);
        let cause = &state.history.back().expect("a recorded change").cause;
        assert!(cause.contains("too large"), "{size}: down because: {cause}");
        // One interval to the first check, then the head limit: far from the timeout.
        assert!(took < CHECK_TIMEOUT, "{size}: down after {took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_answered_with_a_1_mib_body_is_judged_on_its_status_alone() {
    let mut response = b"HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n".to_vec();
    response.resize(response.len() + 1024 * 1024, b'x');
    let server = RawServer::start(Box::leak(response.into_boxed_slice()), true).await;
    let wharf = start_wharf(&checked_pool(server.addr)).await;
    // Each check ends without the body (checks run one after another, so a
    // fourth connection means three checks ended), and none failed.
    within("three checks to end", async {
        while server.accepted() < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let state = server_state(&wharf, "web", server.addr);
    assert_eq!(state.health, Health::Up);
    assert!(
        state
            .history
            .iter()
            .all(|change| change.cause.contains("HTTP 200")),
        "{:?}",
        state.history
    );
}
