//! Sniffing: what a new connection speaks, told from its first bytes, so
//! that TLS, plaintext HTTP, a Flash policy request and anything else can
//! share one port.
//!
//! The bytes are only peeked, never consumed: whoever handles the connection
//! next (rustls, hyper, a TCP tunnel) reads them again from the socket, so no
//! replay buffer stays attached to it. The trade-off, as in linkerd's
//! detector: one decision from the first packet, biased to "not HTTP" when
//! in doubt, with a bounded wait.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

/// What the first bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// A TLS record (a ClientHello).
    Tls,
    /// An HTTP/1.x request line.
    Http,
    /// `<policy-file-request/>` followed by a NUL, from a Flash socket.
    FlashPolicy,
    /// Bytes that are none of the above.
    Other,
    /// Nothing arrived in the time allowed.
    Silent,
    /// The client closed without sending anything.
    Closed,
}

pub const FLASH_POLICY_REQUEST: &[u8] = b"<policy-file-request/>\0";

/// The longest registered HTTP method (`BASELINE-CONTROL`, RFC 3253) plus
/// the space after it.
const MAX_METHOD: usize = 17;

/// The first bytes of a connection as peeked so far (none: not looked at,
/// or what was seen has since been consumed), enough to tell any protocol.
#[derive(Debug, Default)]
pub struct FirstBytes {
    pub buf: [u8; FLASH_POLICY_REQUEST.len()],
    pub seen: usize,
}

impl FirstBytes {
    pub fn peeked(&self) -> &[u8] {
        &self.buf[..self.seen]
    }
}

/// Peeks at `stream` until its first bytes tell the protocol, until
/// `deadline`, starting from what `first` already holds (the PROXY check's
/// peek usually tells it without another system call).
pub async fn sniff(
    stream: &TcpStream,
    deadline: Instant,
    mut first: FirstBytes,
) -> io::Result<Protocol> {
    loop {
        if first.seen > 0 {
            if let Some(protocol) = classify(first.peeked()) {
                return Ok(protocol);
            }
            if first.seen == first.buf.len() {
                return Ok(Protocol::Other);
            }
        }
        let Some(n) = peek_more(stream, &mut first.buf, first.seen, deadline).await? else {
            return Ok(if first.seen == 0 {
                Protocol::Silent
            } else {
                Protocol::Other
            });
        };
        if n == 0 {
            return Ok(Protocol::Closed);
        }
        first.seen = n;
    }
}

/// The protocol `bytes` (the first ones of a connection) show, or `None`
/// when more bytes are needed to tell.
pub fn classify(bytes: &[u8]) -> Option<Protocol> {
    let first = *bytes.first()?;
    // A TLS handshake record: content type 22.
    if first == 0x16 {
        return Some(Protocol::Tls);
    }
    if FLASH_POLICY_REQUEST.starts_with(bytes) {
        return (bytes.len() == FLASH_POLICY_REQUEST.len()).then_some(Protocol::FlashPolicy);
    }
    if bytes.starts_with(FLASH_POLICY_REQUEST) {
        return Some(Protocol::FlashPolicy);
    }
    // An HTTP request line: a method token (RFC 9110 §9), a space, and a
    // request target (RFC 9112 §3.2): `/path`, `*`, `http://…` or, for
    // CONNECT, an authority. Line protocols with upper-case verbs (SMTP's
    // `EHLO x`, FTP's `USER alice`) fail on the target and stay "other".
    for (i, &b) in bytes.iter().enumerate().take(MAX_METHOD) {
        if b == b' ' {
            if i == 0 {
                return Some(Protocol::Other);
            }
            return request_target(&bytes[..i], &bytes[i + 1..]);
        }
        if !(b.is_ascii_uppercase() || b == b'-' || b == b'_') {
            return Some(Protocol::Other);
        }
    }
    if bytes.len() < MAX_METHOD {
        None
    } else {
        Some(Protocol::Other)
    }
}

/// Whether `target` starts like an HTTP request target for `method`.
fn request_target(method: &[u8], target: &[u8]) -> Option<Protocol> {
    if method == b"CONNECT" {
        return Some(Protocol::Http);
    }
    match target.first()? {
        b'/' | b'*' => Some(Protocol::Http),
        _ => {
            const SCHEME: &[u8] = b"http";
            let n = target.len().min(SCHEME.len());
            if !target[..n].eq_ignore_ascii_case(&SCHEME[..n]) {
                Some(Protocol::Other)
            } else if n == SCHEME.len() {
                Some(Protocol::Http)
            } else {
                None
            }
        }
    }
}

/// Peeks into `buf`, returning how many bytes the socket holds, once more
/// than `seen`; `Some(0)` at end of stream; `None` at the deadline.
///
/// A peek leaves the socket readable, so waiting for readiness again would
/// spin: when nothing new arrived, back off briefly before looking again.
pub async fn peek_more(
    stream: &TcpStream,
    buf: &mut [u8],
    seen: usize,
    deadline: Instant,
) -> io::Result<Option<usize>> {
    let mut backoff = Duration::from_millis(1);
    loop {
        let ready = tokio::time::timeout_at(deadline, stream.readable()).await;
        match ready {
            Err(_) => return Ok(None),
            Ok(result) => result?,
        }
        // A new socket reports readable before any byte arrives, and peek
        // then waits for data: it needs the deadline too.
        let n = match tokio::time::timeout_at(deadline, stream.peek(buf)).await {
            Err(_) => return Ok(None),
            Ok(Ok(n)) => n,
            Ok(Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Ok(Err(e)) => return Err(e),
        };
        if n == 0 || n > seen || n == buf.len() {
            return Ok(Some(n));
        }
        if Instant::now() + backoff >= deadline {
            return Ok(None);
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_protocols_apart() {
        assert_eq!(classify(b"\x16\x03\x01\x02\x00"), Some(Protocol::Tls));
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Protocol::Http));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1"), Some(Protocol::Http));
        assert_eq!(classify(FLASH_POLICY_REQUEST), Some(Protocol::FlashPolicy));
        assert_eq!(classify(b"SSH-2.0-OpenSSH"), Some(Protocol::Other));
        assert_eq!(classify(b"\x00\x01binary"), Some(Protocol::Other));
        assert_eq!(classify(b" GET"), Some(Protocol::Other));
        assert_eq!(classify(b"ABCDEFGHIJKLMNOPQRSTU"), Some(Protocol::Other));
        assert_eq!(
            classify(b"BASELINE-CONTROL /x HTTP/1.1"),
            Some(Protocol::Http)
        );
        assert_eq!(classify(b"GET http://a/ HTTP/1.1"), Some(Protocol::Http));
        assert_eq!(classify(b"CONNECT a:443 HTTP/1.1"), Some(Protocol::Http));
        assert_eq!(classify(b"USER alice\r\n"), Some(Protocol::Other));
        assert_eq!(classify(b"EHLO mail.example\r\n"), Some(Protocol::Other));
        assert_eq!(classify(b"HELO hello\r\n"), Some(Protocol::Other));
    }

    #[test]
    fn waits_for_more_when_undecided() {
        assert_eq!(classify(b""), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"<policy-file"), None);
        assert_eq!(classify(b"<policy-file-request/>"), None);
        assert_eq!(classify(b"GET "), None);
        assert_eq!(classify(b"GET ht"), None);
    }
}
