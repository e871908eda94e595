//! Header handling between client and server: forwarding headers set by wharf
//! (client-sent ones replaced), Host passed through, hop-by-hop headers
//! dropped both ways, framing redone per hop, and absolute-form targets
//! rewritten to origin-form.

mod support;

use std::net::SocketAddr;

use support::*;

async fn setup() -> (Running, SocketAddr, Backend) {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&one_pool_config(&[backend.addr], "")).await;
    let addr = public(&wharf);
    (wharf, addr, backend)
}

async fn raw(addr: SocketAddr, request: &str) -> RawResponse {
    RawClient::connect(addr)
        .await
        .request(request.as_bytes())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_and_client_values_replaced() {
    let (_wharf, addr, backend) = setup().await;
    let response = raw(
        addr,
        "GET /x HTTP/1.1\r\n\
         Host: app.test:8080\r\n\
         X-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-For: 7.7.7.7, 8.8.8.8\r\n\
         X-Forwarded-Proto: https\r\n\
         X-Forwarded-Host: evil.test\r\n\
         Forwarded: for=6.6.6.6;proto=https;host=evil.test\r\n\
         Forwarded: for=7.7.7.7\r\n\
         \r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    let seen = backend.last_seen();
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.all("x-forwarded-host"), ["app.test:8080"]);
    assert_eq!(
        seen.all("forwarded"),
        ["for=127.0.0.1;proto=http;host=\"app.test:8080\""]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_are_set_when_the_client_sent_none() {
    let (_wharf, addr, backend) = setup().await;
    let response = raw(addr, "GET / HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert_eq!(response.status, 200);
    let seen = backend.last_seen();
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-proto"), ["http"]);
    assert_eq!(seen.all("x-forwarded-host"), ["app.test"]);
    // A host that is a token is not quoted.
    assert_eq!(
        seen.all("forwarded"),
        ["for=127.0.0.1;proto=http;host=app.test"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_is_passed_through_unchanged() {
    let (_wharf, addr, backend) = setup().await;
    let mut client = RawClient::connect(addr).await;
    for host in ["App.Example.COM:1234", "app.test", "127.0.0.1:9", "x.test."] {
        let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\n\r\n");
        assert_eq!(client.request(request.as_bytes()).await.status, 200);
        let seen = backend.last_seen();
        assert_eq!(seen.all("host"), [host]);
        assert_eq!(seen.all("x-forwarded-host"), [host]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_request_headers_are_not_forwarded() {
    let (_wharf, addr, backend) = setup().await;
    let response = raw(
        addr,
        "GET / HTTP/1.1\r\n\
         Host: app.test\r\n\
         Connection: keep-alive, X-Hop-A\r\n\
         Connection: x-hop-b\r\n\
         X-Hop-A: 1\r\n\
         X-Hop-B: 2\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: trailers\r\n\
         Upgrade: websocket\r\n\
         X-End-To-End: kept\r\n\
         \r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    let seen = backend.last_seen();
    for name in [
        "connection",
        "x-hop-a",
        "x-hop-b",
        "keep-alive",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            seen.all(name).is_empty(),
            "hop-by-hop `{name}` forwarded: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.all("x-end-to-end"), ["kept"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_never_forwarded() {
    let (_wharf, addr, backend) = setup().await;
    let response = raw(
        addr,
        "GET / HTTP/1.1\r\n\
         Host: app.test\r\n\
         Connection: Upgrade, HTTP2-Settings\r\n\
         Upgrade: h2c\r\n\
         HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\
         \r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "b");
    let seen = backend.last_seen();
    for name in ["connection", "upgrade", "http2-settings"] {
        assert!(
            seen.all(name).is_empty(),
            "`{name}` forwarded: {:?}",
            seen.headers
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_response_headers_are_not_forwarded() {
    let (_wharf, addr, _backend) = setup().await;
    let response = raw(
        addr,
        "GET / HTTP/1.1\r\n\
         Host: app.test\r\n\
         X-Reply-Header: Connection: x-resp-hop\r\n\
         X-Reply-Header: X-Resp-Hop: 1\r\n\
         X-Reply-Header: Keep-Alive: timeout=99\r\n\
         X-Reply-Header: Proxy-Connection: keep-alive\r\n\
         X-Reply-Header: Upgrade: websocket\r\n\
         X-Reply-Header: X-End-To-End: yes\r\n\
         \r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "b");
    for name in ["x-resp-hop", "keep-alive", "proxy-connection", "upgrade"] {
        assert!(
            response.all(name).is_empty(),
            "hop-by-hop `{name}` reached the client: {:?}",
            response.headers
        );
    }
    for value in response.all("connection") {
        assert!(
            !value.to_ascii_lowercase().contains("x-resp-hop"),
            "the server's Connection header reached the client: {value}"
        );
    }
    assert_eq!(response.all("x-end-to-end"), ["yes"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_framing_is_redone_on_each_hop() {
    let (_wharf, addr, backend) = setup().await;
    let mut client = RawClient::connect(addr).await;
    // Request: chunked in odd-sized chunks, with a chunk extension.
    let body = pattern(0, 300);
    let mut request =
        b"POST /verify HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for (i, piece) in body.chunks(97).enumerate() {
        request.extend_from_slice(format!("{:x};n={i}\r\n", piece.len()).as_bytes());
        request.extend_from_slice(piece);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let response = client.request(&request).await;
    assert_eq!(response.status, 200, "{}", response.text());
    assert_eq!(response.text(), "bytes=300");
    assert_eq!(backend.last_seen().all("transfer-encoding"), ["chunked"]);
    // Response: chunked from the server, chunked (once) to the client.
    let response = client
        .request(b"GET /generate-chunked/100000 HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(response.status, 200);
    assert!(response.chunked);
    assert_eq!(response.all("transfer-encoding"), ["chunked"]);
    assert!(response.all("content-length").is_empty());
    assert_eq!(response.body, pattern(0, 100_000));
}

/// RFC 9112 §6.1: a message with both Transfer-Encoding and Content-Length
/// may be a smuggling attempt; an intermediary either rejects it or removes
/// Content-Length. wharf rejects it, as nginx does: 400 and the connection
/// closed, nothing sent to the server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfer_encoding_with_content_length_is_refused() {
    let (_wharf, addr, backend) = setup().await;
    let mut client = RawClient::connect(addr).await;
    let body = pattern(0, 11);
    let mut request = b"POST /verify HTTP/1.1\r\nHost: app.test\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nb\r\n".to_vec();
    request.extend_from_slice(&body);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let response = client.request(&request).await;
    assert_eq!(response.status, 400, "{}", response.text());
    assert!(
        client
            .closed_within(std::time::Duration::from_secs(5))
            .await
    );
    assert_eq!(backend.requests(), 0);
}

/// Headers a client could use to pass for another address, scheme or path
/// prefix never reach a server as the client sent them, unless the peer is a
/// trusted proxy (then `X-Forwarded-For` is appended to).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_forwarding_claims_are_dropped_unless_the_peer_is_trusted() {
    const REQUEST: &str = "GET /x HTTP/1.1\r\n\
         Host: app.test\r\n\
         X-Forwarded-For: 6.6.6.6\r\n\
         X-Forwarded-Prefix: /admin\r\n\
         X-Forwarded-Port: 1\r\n\
         X-Real-IP: 6.6.6.6\r\n\
         True-Client-IP: 6.6.6.6\r\n\
         X_Forwarded_For: 6.6.6.6\r\n\
         Proxy: http://evil.test:3128/\r\n\
         \r\n";
    let (wharf, addr, backend) = setup().await;
    assert_eq!(raw(addr, REQUEST).await.status, 200);
    let seen = backend.last_seen();
    let port = wharf.listener_addr("public").unwrap().port().to_string();
    assert_eq!(seen.all("x-forwarded-for"), ["127.0.0.1"]);
    assert_eq!(seen.all("x-real-ip"), ["127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-port"), [port.as_str()]);
    for dropped in [
        "x-forwarded-prefix",
        "true-client-ip",
        "x_forwarded_for",
        "proxy",
    ] {
        assert!(seen.all(dropped).is_empty(), "{dropped} reached the server");
    }

    let trusting = start_wharf(&one_pool_config(&[backend.addr], "").replace(
        "bind = \"127.0.0.1:0\"",
        "bind = \"127.0.0.1:0\"\ntrusted_proxies = [\"127.0.0.0/8\"]",
    ))
    .await;
    assert_eq!(raw(public(&trusting), REQUEST).await.status, 200);
    let seen = backend.last_seen();
    assert_eq!(seen.all("x-forwarded-for"), ["6.6.6.6, 127.0.0.1"]);
    assert_eq!(seen.all("x-forwarded-prefix"), ["/admin"]);
    assert_eq!(seen.all("x-real-ip"), ["6.6.6.6"]);
    assert!(seen.all("proxy").is_empty());
    assert!(seen.all("x_forwarded_for").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_is_rewritten_to_origin_form() {
    let (_wharf, addr, backend) = setup().await;
    let mut client = RawClient::connect(addr).await;
    let response = client
        .request(b"GET http://app.test:9999/p/q?x=1&y=%2F HTTP/1.1\r\nHost: app.test:9999\r\n\r\n")
        .await;
    assert_eq!(response.status, 200);
    let seen = backend.last_seen();
    assert_eq!(seen.uri.to_string(), "/p/q?x=1&y=%2F");
    assert_eq!(seen.all("host"), ["app.test:9999"]);
    // No path at all: origin-form `/`.
    let response = client
        .request(b"GET http://app.test HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(backend.last_seen().uri.to_string(), "/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_without_host_gets_host_from_the_target() {
    let (_wharf, addr, backend) = setup().await;
    let response = raw(addr, "GET http://app.test:9999/p HTTP/1.1\r\n\r\n").await;
    assert_eq!(response.status, 200);
    let seen = backend.last_seen();
    assert_eq!(seen.uri.to_string(), "/p");
    assert_eq!(seen.all("host"), ["app.test:9999"]);
    assert_eq!(seen.all("x-forwarded-host"), ["app.test:9999"]);
}

/// RFC 9112 §3.2.2: a proxy that receives an absolute-form target "MUST
/// ignore the received Host header field (if any) and instead replace it
/// with the host information of the request-target". wharf routes by the
/// target's authority, so the server must see that same host, not another
/// one the client put in Host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_replaces_a_different_host() {
    let (_wharf, addr, backend) = setup().await;
    let response = raw(
        addr,
        "GET http://app.test/p HTTP/1.1\r\nHost: evil.test\r\n\r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    let seen = backend.last_seen();
    assert_eq!(seen.uri.to_string(), "/p");
    assert_eq!(seen.all("host"), ["app.test"]);
    assert_eq!(seen.all("x-forwarded-host"), ["app.test"]);
}

/// RFC 9112 §3.2: an HTTP/1.1 request must carry Host, empty when the
/// target has no authority. wharf forwards an HTTP/1.0 request as HTTP/1.1,
/// so it must add one when the client sent none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_request_without_host_is_forwarded_with_a_host() {
    let (_wharf, addr, backend) = setup().await;
    let response = raw(addr, "GET /old HTTP/1.0\r\n\r\n").await;
    assert_eq!(response.status, 200);
    let seen = backend.last_seen();
    assert_eq!(
        seen.version,
        http::Version::HTTP_11,
        "forwarded as HTTP/1.1"
    );
    assert_eq!(
        seen.all("host").len(),
        1,
        "an HTTP/1.1 request without Host reached the server: {:?}",
        seen.headers
    );
}

/// Trailer fields are end-to-end (RFC 9110 §6.5; `Trailer` is not among the
/// fields §7.6.1 says to remove): a client that accepts trailers (`TE:
/// trailers`) gets the ones the server sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_trailers_reach_a_client_that_accepts_them() {
    let (_wharf, addr, backend) = setup().await;
    let request = "GET /trailers HTTP/1.1\r\nHost: app.test\r\nTE: trailers\r\n\r\n";
    // Straight from the server: the trailer is there.
    let direct = raw(backend.addr, request).await;
    assert_eq!(direct.text(), "data");
    assert_eq!(
        direct.trailers,
        [("x-checksum".to_owned(), "1234".to_owned())]
    );
    // Through wharf.
    let response = raw(addr, request).await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "data");
    assert_eq!(
        response.trailers,
        [("x-checksum".to_owned(), "1234".to_owned())],
        "trailers lost; headers: {:?}",
        response.headers
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn asterisk_form_options_is_forwarded_as_is() {
    let (_wharf, addr, backend) = setup().await;
    let response = raw(addr, "OPTIONS * HTTP/1.1\r\nHost: app.test\r\n\r\n").await;
    assert_eq!(response.status, 200);
    let seen = backend.last_seen();
    assert_eq!(seen.method, http::Method::OPTIONS);
    assert_eq!(seen.uri.to_string(), "*");
}

/// A client cannot pass off forwarding fields as trailers of its body: a
/// server that merges trailers into the header section would believe them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_trailers_cannot_carry_forwarding_fields() {
    let (_wharf, addr, _backend) = setup().await;
    let response = raw(
        addr,
        "POST /request-trailers HTTP/1.1\r\n\
         Host: app.test\r\n\
         Transfer-Encoding: chunked\r\n\
         \r\n\
         4\r\ndata\r\n\
         0\r\n\
         X-Checksum: 1234\r\n\
         X-Forwarded-For: 6.6.6.6\r\n\
         X-Real-IP: 6.6.6.6\r\n\
         Forwarded: for=6.6.6.6\r\n\
         X_Forwarded_Host: evil.test\r\n\
         True-Client-IP: 6.6.6.6\r\n\
         Proxy: http://evil.test/\r\n\
         \r\n",
    )
    .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.text(), "x-checksum: 1234\n");
}
