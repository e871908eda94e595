//! Learning Engine.IO session ids from handshake responses.
//!
//! Socket.IO clients that keep no cookies (Node clients, some cross-site
//! browsers) still send the session id in every later request as `?sid=`.
//! The handshake's answer carries it in its open packet, e.g. for EIO=4
//! `0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],…}` (EIO=3 puts a
//! length prefix before it). This body wrapper reads the first bytes of that
//! answer as they pass, and records the `sid` before the client can see it,
//! so the client's next request already finds its server.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use std::net::SocketAddr;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

use crate::upstream::Pool;

/// The open packet is near the start: look no further than this.
const SCAN_LIMIT: usize = 4096;
/// Engine.IO ids are 20 base64url characters; allow generous room, no more.
const MAX_SID_LEN: usize = 128;

pin_project_lite::pin_project! {
    pub struct LearnSid<B> {
        #[pin]
        inner: B,
        pool: Arc<Pool>,
        server: SocketAddr,
        seen: Vec<u8>,
        done: bool,
    }
}

impl<B> LearnSid<B> {
    pub fn new(inner: B, pool: Arc<Pool>, server: SocketAddr) -> Self {
        LearnSid {
            inner,
            pool,
            server,
            seen: Vec::new(),
            done: false,
        }
    }
}

impl<B: Body> Body for LearnSid<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if !*this.done
            && let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let chunk = data.chunk();
            let room = SCAN_LIMIT - this.seen.len();
            this.seen.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if let Some(sid) = find_sid(this.seen) {
                this.pool
                    .learn_session(sid.to_owned(), *this.server, Instant::now());
                *this.done = true;
            } else if this.seen.len() >= SCAN_LIMIT {
                *this.done = true;
            }
            if *this.done {
                *this.seen = Vec::new();
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `sid` of an Engine.IO open packet, if `bytes` hold a complete one.
pub fn find_sid(bytes: &[u8]) -> Option<&str> {
    const NEEDLE: &[u8] = b"\"sid\":\"";
    let start = bytes.windows(NEEDLE.len()).position(|w| w == NEEDLE)? + NEEDLE.len();
    let rest = &bytes[start..];
    let end = rest.iter().take(MAX_SID_LEN + 1).position(|&b| b == b'"')?;
    let sid = std::str::from_utf8(&rest[..end]).ok()?;
    let valid = !sid.is_empty()
        && sid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    valid.then_some(sid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_sid_of_eio4_and_eio3_handshakes() {
        let eio4 =
            br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000}"#;
        assert_eq!(find_sid(eio4), Some("lv_VI97HAXpY6yYWAAAC"));
        let eio3 = br#"96:0{"sid":"Lbo5JLzTotvW3g2LAAAA","upgrades":["websocket"]}2:40"#;
        assert_eq!(find_sid(eio3), Some("Lbo5JLzTotvW3g2LAAAA"));
    }

    #[test]
    fn incomplete_or_hostile_ids_are_not_learned() {
        assert_eq!(find_sid(br#"0{"sid":"abc"#), None);
        assert_eq!(find_sid(br#"0{"sid":"a b"}"#), None);
        assert_eq!(find_sid(br#"0{"sid":""}"#), None);
        let long = format!("0{{\"sid\":\"{}\"}}", "a".repeat(500));
        assert_eq!(find_sid(long.as_bytes()), None);
        assert_eq!(find_sid(b"no handshake here"), None);
    }
}
