//! The probes: one check of one server, bounded by the check's timeout.
//!
//! - TCP: the server accepts a connection.
//! - HTTP: on a fresh connection, `GET path` with `Host`, `User-Agent:
//!   wharf-health` and `Connection: close` answers 2xx or 3xx. Only the
//!   response head is read, at most 32 KiB as for proxied responses (a
//!   longer one fails the check); the body is never read (at most what
//!   arrived with the head is buffered), and the connection is closed when
//!   the probe ends.
//!
//! Every probe ends in a [`Verdict`] with a short sentence that says why
//! (`connect refused`, `HTTP 503`, `timed out after 500ms`), which becomes the
//! cause of a state change.

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, Request, StatusCode, header};
use http_body_util::{Either, Empty};
use tokio::net::TcpStream;

use crate::config::HealthCheck;
use crate::upstream::h1::{self, RequestHead};
use crate::upstream::{ConnectError, ServerConnection, UpstreamBody, connect_tcp};

/// The `User-Agent` of HTTP checks, so that servers can tell them from users.
pub const USER_AGENT: &str = "wharf-health";

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub passed: bool,
    /// False when wharf itself could not probe (out of file descriptors):
    /// such a result says nothing of the server and is not recorded.
    pub counts: bool,
    /// Why, in a few words.
    pub cause: String,
}

impl Verdict {
    fn pass(cause: impl Into<String>) -> Self {
        Verdict {
            passed: true,
            counts: true,
            cause: cause.into(),
        }
    }

    fn fail(cause: impl Into<String>) -> Self {
        Verdict {
            passed: false,
            counts: true,
            cause: cause.into(),
        }
    }
}

/// Probes `address` as `check` says, within `timeout`.
/// `proxy_header` starts the connection when the pool sends one, so that a
/// server that requires it can be checked.
pub async fn probe(
    check: &HealthCheck,
    address: SocketAddr,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
) -> Verdict {
    let probe = async {
        let verdict = match check {
            HealthCheck::Tcp => connect(address, timeout, proxy_header)
                .await
                .map(|_| Verdict::pass("connected")),
            HealthCheck::Http { path, host } => {
                http(address, path, host.as_deref(), timeout, proxy_header).await
            }
        };
        verdict.unwrap_or_else(|failure| failure)
    };
    tokio::time::timeout(timeout, probe)
        .await
        .unwrap_or_else(|_| Verdict::fail(format!("timed out after {timeout:?}")))
}

/// Opens a TCP connection, as requests do; a failure is the verdict.
async fn connect(
    address: SocketAddr,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
) -> Result<TcpStream, Verdict> {
    connect_tcp(address, timeout, proxy_header)
        .await
        .map_err(|e| match e {
            ConnectError::Refused => Verdict::fail("connect refused"),
            ConnectError::Local(_) => Verdict {
                counts: false,
                ..Verdict::fail(e.to_string())
            },
            _ => Verdict::fail(format!("connect failed: {e}")),
        })
}

/// Sends `GET path` on a new connection and judges the response's status.
async fn http(
    address: SocketAddr,
    path: &str,
    host: Option<&str>,
    timeout: Duration,
    proxy_header: Option<&[u8]>,
) -> Result<Verdict, Verdict> {
    let request = request(address, path, host)?;
    let stream = connect(address, timeout, proxy_header).await?;
    // Driven here, with no task of its own: nothing of the probe outlives
    // it (nor its timeout), and the connection is never reused.
    let head = RequestHead::encode(request.method(), request.uri(), request.headers(), &[]);
    let body = request.into_body();
    let response = h1::send(ServerConnection::new(stream), &head, body, None)
        .await
        .map_err(|failed| Verdict::fail(format!("no valid HTTP response: {}", failed.error)))?;
    Ok(judge(response.status()))
}

/// The check's request: `GET path` with `Host: host`, the server's address by default.
fn request(
    address: SocketAddr,
    path: &str,
    host: Option<&str>,
) -> Result<Request<UpstreamBody>, Verdict> {
    let host = host.map_or_else(|| address.to_string(), str::to_owned);
    Request::builder()
        .method(Method::GET)
        .uri(path)
        .header(header::HOST, host)
        .header(header::USER_AGENT, USER_AGENT)
        .header(header::CONNECTION, "close")
        .body(Either::Right(Empty::new()))
        .map_err(|e| Verdict::fail(format!("invalid check request: {e}")))
}

/// 2xx and 3xx pass; anything else fails.
fn judge(status: StatusCode) -> Verdict {
    let cause = format!("HTTP {}", status.as_u16());
    match status.is_success() || status.is_redirection() {
        true => Verdict::pass(cause),
        false => Verdict::fail(cause),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn http_check(path: &str, host: Option<&str>) -> HealthCheck {
        HealthCheck::Http {
            path: path.to_owned(),
            host: host.map(str::to_owned),
        }
    }

    /// A server that answers one connection with `reply` once it has the
    /// request head, and hands back that head.
    async fn one_shot(reply: &'static [u8]) -> (SocketAddr, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let _ = stream.write_all(reply).await;
            let _ = stream.shutdown().await;
            String::from_utf8_lossy(&head).into_owned()
        });
        (addr, task)
    }

    async fn refused() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr")
    }

    const TIMEOUT: Duration = Duration::from_secs(2);

    #[test]
    fn status_classes_are_judged() {
        for (status, passed) in [
            (200, true),
            (204, true),
            (301, true),
            (304, true),
            (404, false),
            (500, false),
            (503, false),
        ] {
            let verdict = judge(StatusCode::from_u16(status).expect("status"));
            assert_eq!(verdict.passed, passed, "{status}");
            assert_eq!(verdict.cause, format!("HTTP {status}"));
        }
    }

    #[tokio::test]
    async fn http_check_sends_the_request_and_reads_the_status() {
        let (addr, head) =
            one_shot(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let verdict = probe(
            &http_check("/health?deep=1", Some("app.internal")),
            addr,
            TIMEOUT,
            None,
        )
        .await;
        assert_eq!(verdict, Verdict::fail("HTTP 503"));
        let head = head.await.expect("server").to_ascii_lowercase();
        assert!(
            head.starts_with("get /health?deep=1 http/1.1\r\n"),
            "{head}"
        );
        assert!(head.contains("\r\nhost: app.internal\r\n"), "{head}");
        assert!(head.contains("\r\nuser-agent: wharf-health\r\n"), "{head}");
        assert!(head.contains("\r\nconnection: close\r\n"), "{head}");
    }

    #[tokio::test]
    async fn host_defaults_to_the_server_address() {
        let (addr, head) = one_shot(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
        let verdict = probe(&http_check("/", None), addr, TIMEOUT, None).await;
        assert_eq!(verdict, Verdict::pass("HTTP 200"));
        let head = head.await.expect("server").to_ascii_lowercase();
        assert!(head.contains(&format!("\r\nhost: {addr}\r\n")), "{head}");
    }

    #[tokio::test]
    async fn a_response_without_a_length_and_closed_still_passes() {
        let (addr, _head) =
            one_shot(b"HTTP/1.0 302 Found\r\nlocation: /x\r\n\r\nbody until close").await;
        assert_eq!(
            probe(&http_check("/", None), addr, TIMEOUT, None).await,
            Verdict::pass("HTTP 302")
        );
    }

    #[tokio::test]
    async fn garbage_and_silence_fail_without_panicking() {
        let (addr, _head) = one_shot(b"SSH-2.0-OpenSSH_9.6\r\n").await;
        let verdict = probe(&http_check("/", None), addr, TIMEOUT, None).await;
        assert!(
            !verdict.passed && verdict.cause.starts_with("no valid HTTP response"),
            "{verdict:?}"
        );

        let (addr, _head) = one_shot(b"").await;
        let verdict = probe(&http_check("/", None), addr, TIMEOUT, None).await;
        assert!(
            !verdict.passed && verdict.cause.starts_with("no valid HTTP response"),
            "{verdict:?}"
        );

        // A head that never ends: the 32 KiB head limit ends it, not the timeout.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let flood = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\n").await;
            let line = [b'x'; 1024];
            loop {
                if stream.write_all(b"x-filler: ").await.is_err()
                    || stream.write_all(&line).await.is_err()
                    || stream.write_all(b"\r\n").await.is_err()
                {
                    return;
                }
            }
        });
        let verdict = probe(&http_check("/", None), addr, TIMEOUT, None).await;
        assert!(
            !verdict.passed && verdict.cause.contains("too large"),
            "{verdict:?}"
        );
        flood.abort();
    }

    #[tokio::test]
    async fn a_silent_server_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        // Accepted by the kernel (backlog), never answered.
        let timeout = Duration::from_millis(100);
        let verdict = probe(&http_check("/", None), addr, timeout, None).await;
        assert_eq!(verdict, Verdict::fail("timed out after 100ms"));
        drop(listener);
    }

    #[tokio::test]
    async fn tcp_check_passes_on_accept_and_fails_on_refusal() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        assert_eq!(
            probe(&HealthCheck::Tcp, addr, TIMEOUT, None).await,
            Verdict::pass("connected")
        );
        drop(listener);
        assert_eq!(
            probe(&HealthCheck::Tcp, addr, TIMEOUT, None).await,
            Verdict::fail("connect refused")
        );
    }

    #[tokio::test]
    async fn an_unusable_path_fails_the_check() {
        let addr = refused().await;
        // Longer than any URI the http crate takes; the config does not limit it.
        let path = format!("/{}", "a".repeat(70_000));
        let verdict = probe(&http_check(&path, None), addr, TIMEOUT, None).await;
        assert!(
            !verdict.passed && verdict.cause.starts_with("invalid check request"),
            "{verdict:?}"
        );
    }
}
