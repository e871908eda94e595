//! Request and response parsing strictness (issue 11, point 1): raw-byte
//! vectors, each with the outcome wharf must give. Where HAProxy or nginx
//! refuse a request, wharf refuses it too, with the connection closed and
//! nothing reaching the server.
//!
//! Each refusal is also labelled with who refused it: hyper (its own answers
//! have an empty body) or wharf's own checks (`src/http/strict.rs`, with a
//! plain-text body). Run with `--nocapture` to see the table.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::*;

/// What a vector must get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Forwarded: a 200 from the server.
    Pass,
    /// Refused with this status, the connection closed, the server untouched.
    Refuse(u16),
    /// Answered with this status by wharf, the server untouched (the
    /// request was well framed, so the connection may stay open).
    Deny(u16),
}

struct Vector {
    name: &'static str,
    bytes: Vec<u8>,
    expect: Expect,
}

fn v(name: &'static str, bytes: impl AsRef<[u8]>, expect: Expect) -> Vector {
    Vector {
        name,
        bytes: bytes.as_ref().to_vec(),
        expect,
    }
}

/// `GET / HTTP/1.1` with `Host: app.test`, these header lines, and `body`.
fn with_headers(method: &str, lines: &str, body: &str) -> Vec<u8> {
    format!("{method} / HTTP/1.1\r\nHost: app.test\r\n{lines}\r\n{body}").into_bytes()
}

fn long_value(len: usize) -> String {
    "a".repeat(len)
}

fn request_vectors() -> Vec<Vector> {
    use Expect::*;
    let mut vectors = vec![
        // -- well-formed requests pass
        v("plain GET", with_headers("GET", "", ""), Pass),
        v(
            "sized POST",
            with_headers("POST", "Content-Length: 5\r\n", "hello"),
            Pass,
        ),
        v(
            "chunked POST",
            with_headers(
                "POST",
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\n\r\n",
            ),
            Pass,
        ),
        v(
            "chunked, upper case and spaces",
            with_headers("POST", "Transfer-Encoding:  Chunked \r\n", "0\r\n\r\n"),
            Pass,
        ),
        v(
            "chunk extension",
            with_headers(
                "POST",
                "Transfer-Encoding: chunked\r\n",
                "5;name=value\r\nhello\r\n0\r\n\r\n",
            ),
            Pass,
        ),
        v(
            "chunked with trailer",
            with_headers(
                "POST",
                "Transfer-Encoding: chunked\r\n",
                "5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
            ),
            Pass,
        ),
        v(
            "Content-Length with leading zeros",
            with_headers("POST", "Content-Length: 005\r\n", "hello"),
            Pass,
        ),
        v(
            "obs-text in a value",
            with_headers("GET", "X-Name: caf\u{e9}\r\n", ""),
            Pass,
        ),
        v(
            "tab inside a value",
            with_headers("GET", "X-A: a\tb\r\n", ""),
            Pass,
        ),
        v(
            "bare LF line ends",
            "GET / HTTP/1.1\nHost: app.test\n\n",
            Pass,
        ),
        v(
            "absolute-form target",
            "GET http://app.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
            Pass,
        ),
        v("HTTP/1.0 without Host", "GET / HTTP/1.0\r\n\r\n", Pass),
        v(
            "dot segments normalised",
            with_headers("GET", "", "").replace_path("/a/../b/./c"),
            Pass,
        ),
        v(
            "encoded unreserved characters",
            with_headers("GET", "", "").replace_path("/%61%7E"),
            Pass,
        ),
        v(
            "field just under the limit",
            with_headers("GET", &format!("X-Big: {}\r\n", long_value(8000)), ""),
            Pass,
        ),
        v(
            "target just under the limit",
            with_headers("GET", "", "").replace_path(&format!("/{}", long_value(8000))),
            Pass,
        ),
        // (The test server's own limit is 100 fields, and wharf adds 6.)
        v(
            "90 fields",
            with_headers(
                "GET",
                &(0..89)
                    .map(|i| format!("X-F{i}: {i}\r\n"))
                    .collect::<String>(),
                "",
            ),
            Pass,
        ),
        // -- framing: Transfer-Encoding and Content-Length
        v(
            "Content-Length then Transfer-Encoding",
            with_headers(
                "POST",
                "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            Refuse(400),
        ),
        v(
            "Transfer-Encoding then Content-Length",
            with_headers(
                "POST",
                "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
                "0\r\n\r\n",
            ),
            Refuse(400),
        ),
        v(
            "Content-Length: 0 with chunked",
            with_headers(
                "POST",
                "Content-Length: 0\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            Refuse(400),
        ),
        v(
            "chunked, chunked",
            with_headers(
                "POST",
                "Transfer-Encoding: chunked, chunked\r\n",
                "0\r\n\r\n",
            ),
            Refuse(400),
        ),
        v(
            "identity, chunked",
            with_headers(
                "POST",
                "Transfer-Encoding: identity, chunked\r\n",
                "0\r\n\r\n",
            ),
            Refuse(400),
        ),
        v(
            "gzip, chunked",
            with_headers("POST", "Transfer-Encoding: gzip, chunked\r\n", "0\r\n\r\n"),
            Refuse(400),
        ),
        v(
            "two Transfer-Encoding lines",
            with_headers(
                "POST",
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            Refuse(400),
        ),
        v(
            "empty then chunked Transfer-Encoding",
            with_headers(
                "POST",
                "Transfer-Encoding: \r\nTransfer-Encoding: chunked\r\n",
                "0\r\n\r\n",
            ),
            Refuse(400),
        ),
        v(
            "chunked, identity",
            with_headers(
                "POST",
                "Transfer-Encoding: chunked, identity\r\n",
                "0\r\n\r\n",
            ),
            Refuse(400),
        ),
        v(
            "gzip alone",
            with_headers("POST", "Transfer-Encoding: gzip\r\n", ""),
            Refuse(400),
        ),
        v(
            "xchunked",
            with_headers("POST", "Transfer-Encoding: xchunked\r\n", "0\r\n\r\n"),
            Refuse(400),
        ),
        v(
            "chunked with a parameter",
            with_headers("POST", "Transfer-Encoding: chunked;q=1\r\n", "0\r\n\r\n"),
            Refuse(400),
        ),
        v(
            "vertical tab before chunked",
            with_headers("POST", "Transfer-Encoding: \x0bchunked\r\n", "0\r\n\r\n"),
            Refuse(400),
        ),
        v(
            "space before the colon",
            with_headers("POST", "Transfer-Encoding : chunked\r\n", "0\r\n\r\n"),
            Refuse(400),
        ),
        v(
            "Transfer-Encoding on HTTP/1.0",
            "POST / HTTP/1.0\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            Refuse(400),
        ),
        v(
            "same Content-Length twice",
            with_headers(
                "POST",
                "Content-Length: 5\r\nContent-Length: 5\r\n",
                "hello",
            ),
            Refuse(400),
        ),
        v(
            "differing Content-Lengths",
            with_headers(
                "POST",
                "Content-Length: 5\r\nContent-Length: 6\r\n",
                "hello!",
            ),
            Refuse(400),
        ),
        v(
            "Content-Length list",
            with_headers("POST", "Content-Length: 5, 5\r\n", "hello"),
            Refuse(400),
        ),
        v(
            "negative Content-Length",
            with_headers("POST", "Content-Length: -1\r\n", ""),
            Refuse(400),
        ),
        v(
            "Content-Length with a plus",
            with_headers("POST", "Content-Length: +5\r\n", "hello"),
            Refuse(400),
        ),
        v(
            "hex Content-Length",
            with_headers("POST", "Content-Length: 0x5\r\n", "hello"),
            Refuse(400),
        ),
        v(
            "empty Content-Length",
            with_headers("POST", "Content-Length: \r\n", ""),
            Refuse(400),
        ),
        v(
            "overflowing Content-Length",
            with_headers("POST", "Content-Length: 99999999999999999999\r\n", ""),
            Refuse(400),
        ),
        v(
            "Content-Length with a space inside",
            with_headers("POST", "Content-Length: 1 0\r\n", "0123456789"),
            Refuse(400),
        ),
        // -- line syntax
        v(
            "obs-fold with a space",
            with_headers("GET", "X-A: a\r\n b\r\n", ""),
            Refuse(400),
        ),
        v(
            "obs-fold with a tab",
            with_headers("GET", "X-A: a\r\n\tb\r\n", ""),
            Refuse(400),
        ),
        v(
            "folded Transfer-Encoding",
            with_headers("POST", "Transfer-Encoding:\r\n chunked\r\n", "0\r\n\r\n"),
            Refuse(400),
        ),
        v(
            "first field line indented",
            "GET / HTTP/1.1\r\n Host: app.test\r\n\r\n",
            Refuse(400),
        ),
        v(
            "NUL in a value",
            with_headers("GET", "X-A: a\0b\r\n", ""),
            Refuse(400),
        ),
        v(
            "control byte in a value",
            with_headers("GET", "X-A: a\x01b\r\n", ""),
            Refuse(400),
        ),
        v(
            "DEL in a value",
            with_headers("GET", "X-A: a\x7fb\r\n", ""),
            Refuse(400),
        ),
        v(
            "bare CR in a value",
            with_headers("GET", "X-A: a\rb\r\n", ""),
            Refuse(400),
        ),
        v(
            "control byte in a name",
            with_headers("GET", "X\x01A: b\r\n", ""),
            Refuse(400),
        ),
        v(
            "space in a name",
            with_headers("GET", "X A: b\r\n", ""),
            Refuse(400),
        ),
        v(
            "empty name",
            with_headers("GET", ": b\r\n", ""),
            Refuse(400),
        ),
        v(
            "no colon",
            with_headers("GET", "NoColon\r\n", ""),
            Refuse(400),
        ),
        v(
            "two spaces in the request line",
            "GET  / HTTP/1.1\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        v(
            "tab in the request line",
            "GET\t/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        v(
            "lower-case version",
            "GET / http/1.1\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        v(
            "HTTP/1.2",
            "GET / HTTP/1.2\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        v(
            "HTTP/2.0 in a request line",
            "GET / HTTP/2.0\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        v("HTTP/0.9 request", "GET /\r\n\r\n", Refuse(400)),
        v(
            "space in the target",
            "GET /a b HTTP/1.1\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        v(
            "DEL in the target",
            "GET /a\x7fb HTTP/1.1\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        v(
            "lower-case method",
            "get / HTTP/1.1\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        v(
            "NUL in the method",
            "G\0T / HTTP/1.1\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        // -- Host
        v(
            "HTTP/1.1 without Host",
            "GET / HTTP/1.1\r\n\r\n",
            Refuse(400),
        ),
        v(
            "two Hosts",
            with_headers("GET", "Host: evil.test\r\n", ""),
            Refuse(400),
        ),
        v(
            "user info in the target",
            "GET http://user@app.test/ HTTP/1.1\r\nHost: app.test\r\n\r\n",
            Refuse(400),
        ),
        // -- paths
        v(
            "encoded slash",
            with_headers("GET", "", "").replace_path("/a%2fb"),
            Refuse(400),
        ),
        v(
            "encoded upper-case slash",
            with_headers("GET", "", "").replace_path("/a%2F..%2Fb"),
            Refuse(400),
        ),
        v(
            "encoded NUL",
            with_headers("GET", "", "").replace_path("/a%00"),
            Refuse(400),
        ),
        v(
            "broken percent-escape",
            with_headers("GET", "", "").replace_path("/a%zz"),
            Refuse(400),
        ),
        v(
            "truncated percent-escape",
            with_headers("GET", "", "").replace_path("/a%4"),
            Refuse(400),
        ),
        // -- sizes
        v(
            "field over 8 KiB",
            with_headers("GET", &format!("X-Big: {}\r\n", long_value(9000)), ""),
            Refuse(431),
        ),
        v(
            "field of 64 KiB",
            with_headers("GET", &format!("X-Big: {}\r\n", long_value(64 * 1024)), ""),
            Refuse(431),
        ),
        v(
            "head over 32 KiB",
            with_headers(
                "GET",
                &(0..40)
                    .map(|i| format!("X-F{i}: {}\r\n", long_value(1000)))
                    .collect::<String>(),
                "",
            ),
            Refuse(431),
        ),
        v(
            "101 fields",
            with_headers(
                "GET",
                &(0..100)
                    .map(|i| format!("X-F{i}: {i}\r\n"))
                    .collect::<String>(),
                "",
            ),
            Refuse(431),
        ),
        v(
            "target over 8 KiB",
            with_headers("GET", "", "").replace_path(&format!("/{}", long_value(9000))),
            Refuse(414),
        ),
        // -- methods
        v(
            "CONNECT",
            "CONNECT app.test:443 HTTP/1.1\r\nHost: app.test:443\r\n\r\n",
            Deny(405),
        ),
    ];
    vectors.retain(|v| !v.name.is_empty());
    vectors
}

trait ReplacePath {
    fn replace_path(self, path: &str) -> Vec<u8>;
}

impl ReplacePath for Vec<u8> {
    /// The same request with `path` as its target.
    fn replace_path(self, path: &str) -> Vec<u8> {
        let text = String::from_utf8(self).expect("ascii request");
        let rest = text.split_once(" / ").expect("a `/` target").1;
        let method = text.split(' ').next().unwrap_or("GET");
        format!("{method} {path} {rest}").into_bytes()
    }
}

/// Who answered a refusal: hyper's own answers have no body.
fn refused_by(response: &RawResponse) -> &'static str {
    if response.body.is_empty() {
        "hyper"
    } else {
        "wharf"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_vectors_get_their_expected_outcome() {
    let backend = Backend::normal("b").await;
    let (_wharf, addr) = wharf_for(&[backend.addr], "").await;
    let vectors = request_vectors();
    assert!(vectors.len() >= 60, "only {} vectors", vectors.len());
    let mut wrong = Vec::new();
    for vector in &vectors {
        let before = backend.requests();
        let mut client = RawClient::connect(addr).await;
        client.send(&vector.bytes).await;
        let response = client.try_read_response().await;
        let status = response.as_ref().map(|r| r.status);
        let outcome = match vector.expect {
            Expect::Pass => {
                if status != Some(200) || backend.requests() != before + 1 {
                    wrong.push(format!(
                        "{}: expected 200 from the server, got {status:?}",
                        vector.name
                    ));
                }
                "passed".to_owned()
            }
            Expect::Refuse(expected) => {
                let closed = client.closed_within(Duration::from_secs(5)).await;
                if status != Some(expected) || !closed || backend.requests() != before {
                    wrong.push(format!(
                        "{}: expected {expected} and a close, got {status:?}, closed: {closed}, reached the server: {}",
                        vector.name,
                        backend.requests() != before
                    ));
                }
                format!(
                    "{expected} by {}",
                    response.as_ref().map_or("-", refused_by)
                )
            }
            Expect::Deny(expected) => {
                if status != Some(expected) || backend.requests() != before {
                    wrong.push(format!(
                        "{}: expected {expected}, got {status:?}",
                        vector.name
                    ));
                }
                format!(
                    "{expected} by {}",
                    response.as_ref().map_or("-", refused_by)
                )
            }
        };
        eprintln!("| {} | {outcome} |", vector.name);
    }
    assert!(
        wrong.is_empty(),
        "{} vectors wrong:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
}

/// The server sees the normalised path that routing used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_and_servers_get_the_normalised_path() {
    let public_site = Backend::normal("public").await;
    let admin = Backend::normal("admin").await;
    let pools = format!(
        "[pool.admin]\nservers = [\"{}\"]\n\n[pool.site]\nservers = [\"{}\"]\n",
        admin.addr, public_site.addr
    );
    let toml = prefix_routes_config(&[("/admin/", "admin"), ("", "site")], &pools);
    let wharf = start_wharf(&toml).await;
    let addr = public(&wharf);
    for path in [
        "/static/../admin/x",
        "/%61dmin/x",
        "/static/%2e%2e/admin/x",
        "/./admin/x?q=%2F",
    ] {
        let mut client = RawClient::connect(addr).await;
        let request = format!("GET {path} HTTP/1.1\r\nHost: app.test\r\n\r\n");
        let response = client.request(request.as_bytes()).await;
        assert_eq!(response.status, 200, "{path}");
        assert_eq!(
            response.text(),
            "admin",
            "{path} went past the /admin/ route"
        );
        let seen = admin.last_seen().uri.to_string();
        assert!(
            seen.starts_with("/admin/x"),
            "{path} reached the server as {seen}"
        );
    }
    assert_eq!(public_site.requests(), 0);
}

/// A malformed chunked request body: the client connection closes (with at
/// most a 400) and the server connection is closed too, never reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_never_leave_a_server_connection_reusable() {
    let bodies: [&[u8]; 5] = [
        b"zz\r\nhello\r\n0\r\n\r\n",
        b"5\r\nhelloXX\r\n0\r\n\r\n",
        b"5\r\nhello",
        b"ffffffffffffffffffff\r\nx\r\n",
        b"5\r\nhello\r\n0\r\nBad Trailer\r\n\r\n",
    ];
    for body in bodies {
        let backend = Backend::normal("b").await;
        let (_wharf, addr) =
            wharf_for(&[backend.addr], "timeouts = { server_idle = \"60s\" }").await;
        let mut client = RawClient::connect(addr).await;
        let mut request =
            b"POST /verify HTTP/1.1\r\nHost: app.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        request.extend_from_slice(body);
        client.send(&request).await;
        // A truncated body leaves the client to close.
        if body == b"5\r\nhello" {
            drop(client);
        } else {
            let (bytes, closed) = client.read_until_closed(Duration::from_secs(10)).await;
            let text = String::from_utf8_lossy(&bytes);
            assert!(closed, "client connection kept open after {body:?}: {text}");
            assert!(!text.starts_with("HTTP/1.1 2"), "{body:?} answered {text}");
        }
        assert!(
            backend
                .wait_open_connections(Duration::from_secs(10), |n| n == 0)
                .await,
            "server connection kept after the malformed body {:?}",
            String::from_utf8_lossy(body)
        );
    }
}

/// Responses wharf must refuse with 502, dropping the server connection.
const BAD_RESPONSES: &[(&str, &[u8])] = &[
    (
        "Content-Length and Transfer-Encoding",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "same Content-Length twice",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "differing Content-Lengths",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok!",
    ),
    (
        "chunked, chunked",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    ),
    (
        "identity coding",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: identity\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "garbage status line",
        b"HTTP/1.1 2OO OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    ("not HTTP at all", b"ICY 200 OK\r\n\r\n"),
    (
        "four-digit status",
        b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "obs-fold",
        b"HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "space before the colon",
        b"HTTP/1.1 200 OK\r\nContent-Length : 2\r\n\r\nok",
    ),
    (
        "NUL in a value",
        b"HTTP/1.1 200 OK\r\nX-A: a\0b\r\nContent-Length: 2\r\n\r\nok",
    ),
    (
        "invalid Content-Length",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2x\r\n\r\nok",
    ),
    // RFC 9112 §6.1: its framing is faulty (hyper refused it too).
    (
        "HTTP/1.0 with Transfer-Encoding",
        b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_responses_become_502_and_their_connection_is_dropped() {
    let mut cases: Vec<(&str, &'static [u8])> = BAD_RESPONSES.to_vec();
    cases.push((
        "head over 32 KiB",
        oversized_head("HTTP/1.1 200 OK", 40 * 1024, b"Content-Length: 2\r\n\r\nok"),
    ));
    let mut wrong = Vec::new();
    for (name, bytes) in cases {
        let server = RawServer::start(bytes, false).await;
        let (_wharf, addr) = wharf_for(
            &[server.addr],
            "timeouts = { server_idle = \"60s\" }\nejection = { server_errors = 0 }",
        )
        .await;
        let mut client = RawClient::connect(addr).await;
        let response = client
            .request(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        let dropped = server.wait_dropped(1, Duration::from_secs(5)).await;
        if response.status != 502 || !dropped {
            wrong.push(format!(
                "{name}: {} (connection dropped: {dropped})",
                response.status
            ));
        }
        eprintln!("| response: {name} | {} |", response.status);
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Chunked response bodies wharf must not take for well framed: the client
/// never gets the terminating chunk, and the server connection is dropped.
const BAD_CHUNKED_BODIES: &[(&str, &[u8])] = &[
    ("no chunk size", b"5\r\nhello\r\n\r\n\r\n"),
    ("blanks for a chunk size", b"5\r\nhello\r\n \r\n\r\n"),
    ("an extension with no size", b"5\r\nhello\r\n;x\r\n\r\n"),
    ("bare LF in an extension", b"5;a\nb\r\nhello\r\n0\r\n\r\n"),
    ("bad size", b"zz\r\nhello\r\n0\r\n\r\n"),
    ("no CRLF after the data", b"5\r\nhelloXX\r\n0\r\n\r\n"),
    ("size overflow", b"ffffffffffffffffff\r\nx\r\n0\r\n\r\n"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_responses_are_cut_and_their_connection_dropped() {
    let mut wrong = Vec::new();
    for (name, body) in BAD_CHUNKED_BODIES {
        let mut response = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
        response.extend_from_slice(body);
        let server = RawServer::start(Box::leak(response.into_boxed_slice()), false).await;
        let (_wharf, addr) = wharf_for(
            &[server.addr],
            "timeouts = { server_idle = \"60s\" }\nejection = { server_errors = 0 }",
        )
        .await;
        let mut client = RawClient::connect(addr).await;
        client
            .send(b"GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n")
            .await;
        let (bytes, closed) = client.read_until_closed(Duration::from_secs(5)).await;
        let text = String::from_utf8_lossy(&bytes);
        let dropped = server.wait_dropped(1, Duration::from_secs(5)).await;
        if !closed || text.ends_with("0\r\n\r\n") || !dropped {
            wrong.push(format!(
                "{name}: {text:?} (closed: {closed}, server connection dropped: {dropped})"
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_formed_raw_response_passes_and_its_connection_is_kept() {
    let server = RawServer::start(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false).await;
    let (_wharf, addr) = wharf_for(&[server.addr], "timeouts = { server_idle = \"60s\" }").await;
    let mut client = RawClient::connect(addr).await;
    for _ in 0..3 {
        let response = client
            .request(b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n")
            .await;
        assert_eq!(response.status, 200);
        assert_eq!(response.text(), "ok");
    }
    assert_eq!(server.accepted(), 1, "the server connection was not reused");
}

/// The status another proxy gives each request vector, for comparison:
/// `STRICTNESS_AGAINST=127.0.0.1:PORT cargo test --release --test strictness
/// -- --ignored --nocapture` (say HAProxy or nginx answering 200 for any
/// request it accepts). Prints a table; asserts nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs STRICTNESS_AGAINST: another proxy to compare with"]
async fn compare_with_another_proxy() {
    let Ok(other) = std::env::var("STRICTNESS_AGAINST") else {
        return;
    };
    let other: SocketAddr = other.parse().expect("STRICTNESS_AGAINST=IP:PORT");
    for vector in request_vectors() {
        let mut client = RawClient::connect(other).await;
        client.send(&vector.bytes).await;
        let (bytes, _) = client.read_until_closed(Duration::from_secs(2)).await;
        let text = String::from_utf8_lossy(&bytes);
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .or_else(|| text.strip_prefix("HTTP/1.0 "))
            .and_then(|rest| rest.get(..3))
            .unwrap_or(if bytes.is_empty() { "closed" } else { "?" });
        eprintln!(
            "| {} | wharf: {:?} | other: {status} |",
            vector.name, vector.expect
        );
    }
}
