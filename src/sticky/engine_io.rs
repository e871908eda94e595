//! Learning Engine.IO session ids from handshake responses.
//!
//! Socket.IO clients that keep no cookies (Node clients, some cross-site
//! browsers) still send the session id in every later request as `?sid=`.
//! The handshake's answer carries it in its open packet, e.g. for EIO=4
//! `0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],…}` (EIO=3 puts a
//! length prefix before it). [`find_sid`] reads it from the first bytes of
//! that answer; the response body wrapper in `http` feeds it as they pass,
//! so the `sid` is recorded before the client can see it and the client's
//! next request already finds its server.

/// The open packet is near the start: look no further than this.
pub const SCAN_LIMIT: usize = 4096;
/// Engine.IO ids are 20 base64url characters; allow generous room, no more.
const MAX_SID_LEN: usize = 128;

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
