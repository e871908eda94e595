//! Reading the server name (SNI, RFC 6066 §3) from a TLS ClientHello without
//! terminating TLS, for passthrough routes (as nginx's `ssl_preread`).
//!
//! Only the first TLS record is read, peeked and never consumed, so the
//! server receives the handshake untouched. Every length is checked against
//! the bytes actually present; anything malformed means "no name".

use std::io;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::sniff::peek_more;

/// A TLS record holds at most 2^14 bytes of payload, plus a 5-byte header.
const MAX_RECORD: usize = 5 + 16_384;

/// Peeks the first TLS record of `stream` and returns the SNI host name, if any.
pub async fn peek_server_name(stream: &TcpStream, deadline: Instant) -> io::Result<Option<String>> {
    // Start small; grow to the record's own length once its header is seen,
    // so a trickling client does not pin a 16 KiB buffer.
    let mut buf = vec![0u8; 512];
    let mut seen = 0;
    loop {
        let Some(n) = peek_more(stream, &mut buf, seen, deadline).await? else {
            return Ok(None);
        };
        seen = n;
        match record_len(&buf[..seen]) {
            None if seen < 5 && n > 0 => continue,
            Some(len) if seen < len && n > 0 => {
                let wanted = len.min(MAX_RECORD);
                if buf.len() < wanted {
                    buf.resize(wanted, 0);
                } else if seen >= buf.len() {
                    return Ok(server_name(&buf[..seen]).map(str::to_owned));
                }
            }
            _ => return Ok(server_name(&buf[..seen]).map(str::to_owned)),
        }
    }
}

/// The whole length of the TLS record starting `bytes`, if its header is there.
fn record_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..5)?;
    Some(5 + usize::from(u16::from_be_bytes([header[3], header[4]])))
}

/// The `server_name` of the ClientHello in the TLS record `bytes`.
pub fn server_name(bytes: &[u8]) -> Option<&str> {
    let mut r = Reader(bytes);
    // Record header: handshake (22), version, length.
    (r.u8()? == 0x16).then_some(())?;
    r.skip(2)?;
    let record_len = usize::from(r.u16()?);
    let record = r.take(record_len)?;
    let mut r = Reader(record);
    // Handshake header: client_hello (1), 24-bit length.
    (r.u8()? == 1).then_some(())?;
    let len = r.u24()?;
    // A ClientHello split over several records carries its SNI in the first
    // one in practice; read what this record holds.
    let mut hello = Reader(r.take(len).unwrap_or(r.0));
    hello.skip(2 + 32)?; // version, random
    let session_id = usize::from(hello.u8()?);
    hello.skip(session_id)?;
    let suites = usize::from(hello.u16()?);
    hello.skip(suites)?;
    let compression = usize::from(hello.u8()?);
    hello.skip(compression)?;
    let extensions_len = usize::from(hello.u16()?);
    let mut extensions = Reader(hello.take(extensions_len)?);
    while !extensions.0.is_empty() {
        let kind = extensions.u16()?;
        let len = usize::from(extensions.u16()?);
        let data = extensions.take(len)?;
        if kind == 0 {
            return host_name(data);
        }
    }
    None
}

/// The host_name entry of a server_name extension.
fn host_name(data: &[u8]) -> Option<&str> {
    let mut r = Reader(data);
    let list_len = usize::from(r.u16()?);
    let mut list = Reader(r.take(list_len)?);
    while !list.0.is_empty() {
        let kind = list.u8()?;
        let len = usize::from(list.u16()?);
        let name = list.take(len)?;
        if kind == 0 {
            let name = std::str::from_utf8(name).ok()?;
            let valid = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
            return valid.then_some(name);
        }
    }
    None
}

/// A cursor over bytes where every read is checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, rest) = (self.0.get(..n)?, self.0.get(n..)?);
        self.0 = rest;
        Some(head)
    }

    fn skip(&mut self, n: usize) -> Option<()> {
        self.take(n).map(|_| ())
    }

    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    fn u24(&mut self) -> Option<usize> {
        self.take(3)
            .map(|b| usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ClientHello record carrying `name` as SNI.
    fn client_hello(name: &str) -> Vec<u8> {
        let mut sni = Vec::new();
        let entry_len = 3 + name.len();
        sni.extend_from_slice(&(entry_len as u16).to_be_bytes());
        sni.push(0);
        sni.extend_from_slice(&(name.len() as u16).to_be_bytes());
        sni.extend_from_slice(name.as_bytes());
        let mut extensions = vec![0, 0];
        extensions.extend_from_slice(&(sni.len() as u16).to_be_bytes());
        extensions.extend_from_slice(&sni);
        let mut hello = vec![3, 3];
        hello.extend_from_slice(&[7; 32]);
        hello.push(0); // session id
        hello.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        hello.extend_from_slice(&[1, 0]); // null compression
        hello.extend_from_slice(&(extensions.len() as u16).to_be_bytes());
        hello.extend_from_slice(&extensions);
        let mut handshake = vec![1];
        handshake.extend_from_slice(&(hello.len() as u32).to_be_bytes()[1..]);
        handshake.extend_from_slice(&hello);
        let mut record = vec![0x16, 3, 1];
        record.extend_from_slice(&(handshake.len() as u16).to_be_bytes());
        record.extend_from_slice(&handshake);
        record
    }

    #[test]
    fn reads_the_server_name() {
        assert_eq!(
            server_name(&client_hello("db.example.com")),
            Some("db.example.com")
        );
    }

    #[test]
    fn truncated_or_mangled_hellos_give_no_name_and_never_panic() {
        let hello = client_hello("db.example.com");
        for end in 0..hello.len() {
            assert_eq!(server_name(&hello[..end]), None, "prefix of {end} bytes");
        }
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..20_000 {
            let mut bytes = hello.clone();
            for _ in 0..4 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let at = (seed as usize) % bytes.len();
                bytes[at] = (seed >> 32) as u8;
            }
            let _ = server_name(&bytes);
        }
    }
}
