//! The PROXY protocol (HAProxy's `proxy-protocol.txt`, version 1 text and
//! version 2 binary): the header a load balancer puts in front of a TCP
//! stream to say who the real client is.
//!
//! This module owns the wire format and nothing else:
//!
//! - [`parse`]: a pure, incremental parser for hostile input. It never panics,
//!   never reads past the slice it is given, never trusts a length beyond it,
//!   and says as early as it can when bytes can never become a valid header.
//! - [`read_header`]: reads exactly one header from a [`TcpStream`] without
//!   consuming a byte past it, bounded in size and in time.
//! - [`looks_like_proxy`]: whether bytes could be the start of a header, so
//!   that a listener can refuse one from a peer it does not trust.
//! - [`encode_v1`] and [`encode_v2`]: the header wharf sends to servers.
//!
//! Which peers are trusted, and what to do with the addresses, belongs to the
//! listener; this module does no I/O except in [`read_header`].
//!
//! Choices where the spec leaves room:
//!
//! - v1 is strict: `PROXY`, single spaces, `TCP4`/`TCP6` with addresses of
//!   that family (no leading zeroes in IPv4 octets), ports `0`..=`65535` in
//!   decimal without leading zeroes or signs, CRLF required (a lone CR or LF is
//!   refused), at most [`V1_MAX_LEN`] bytes including the CRLF. `UNKNOWN` may be
//!   followed by anything up to the CRLF, which is ignored.
//! - v2 `LOCAL` is [`ProxyHeader::Local`] whatever its family and address
//!   block (the spec says to discard both). v2 `PROXY` over TCP/IPv4 or
//!   TCP/IPv6 is [`ProxyHeader::Proxied`]; `PROXY` with `UNSPEC` or with a
//!   valid family this module does not implement (UDP over IPv4/IPv6, UNIX
//!   stream or datagram) is also [`ProxyHeader::Local`]: the spec (§2.2) asks
//!   receivers to fall back to UNSPEC mode for valid combinations they do not
//!   support, and HAProxy does the same. Family bytes the spec does not define
//!   are refused.
//! - v2 TLVs after the addresses are walked (each must lie wholly inside the
//!   declared length, as HAProxy checks) and otherwise ignored, except
//!   `PP2_TYPE_CRC32C`, which is verified when present.
//! - v2 headers are limited to [`V2_MAX_LEN`] bytes in all (4 KiB, refused as
//!   [`ProxyError::TooLong`] as soon as the length field is seen): the largest
//!   address block is 216 bytes and the registered TLVs (ALPN, authority,
//!   unique ID, SSL details, cloud providers' endpoint IDs) fit in well under a
//!   kilobyte, while 64 KiB per connection would let a trusted-but-broken peer
//!   make every accepted connection hold that much before a byte of HTTP, and
//!   could exceed what the socket buffer holds.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// The longest v1 header line, CRLF included (the spec's worst case:
/// `PROXY UNKNOWN` followed by two full IPv6 addresses and two ports).
pub const V1_MAX_LEN: usize = 107;

/// The longest v2 header accepted, the 16 fixed bytes included. See the module
/// documentation for why.
pub const V2_MAX_LEN: usize = 4096;

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_FIXED_LEN: usize = 16;
const V2_COMMAND_LOCAL: u8 = 0x0;
const V2_COMMAND_PROXY: u8 = 0x1;
const V2_TCP4: u8 = 0x11;
const V2_TCP6: u8 = 0x21;
const V2_TCP4_ADDR_LEN: usize = 12;
const V2_TCP6_ADDR_LEN: usize = 36;
const PP2_TYPE_CRC32C: u8 = 0x03;

/// What a PROXY header says about the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// The real client (source) and the address it connected to (destination).
    Proxied {
        source: SocketAddr,
        destination: SocketAddr,
    },
    /// v1 `PROXY UNKNOWN`, v2 `LOCAL` (health checks from the proxy itself),
    /// or v2 `PROXY` with an unspecified or unsupported family: use the
    /// socket's own addresses.
    Local,
}

/// Why no header could be read.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The bytes can never be a valid header; the reason is a short phrase.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(&'static str),
    /// The peer closed the connection before a whole header arrived.
    #[error("connection closed before the PROXY protocol header was complete")]
    Truncated,
    /// Longer than [`V1_MAX_LEN`] (v1) or [`V2_MAX_LEN`] (v2).
    #[error("PROXY protocol header too long")]
    TooLong,
    /// No whole header arrived within the time allowed.
    #[error("timed out waiting for the PROXY protocol header")]
    Timeout,
    /// Reading from the socket failed.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// Whether `bytes` (possibly only a few) could be the start of a PROXY header:
/// `"PROXY "` or the v2 signature, or a prefix of either, at the start.
///
/// An empty slice, and a short one such as `b"P"`, give `true`: they cannot be
/// told apart from a header yet (`b"P"` may as well start `POST`), so a caller
/// deciding to refuse should look at 6 bytes for v1 and 12 for v2, or as many
/// as arrived before the peer stopped sending.
pub fn looks_like_proxy(bytes: &[u8]) -> bool {
    fn starts_like(bytes: &[u8], pattern: &[u8]) -> bool {
        let n = bytes.len().min(pattern.len());
        bytes[..n] == pattern[..n]
    }
    starts_like(bytes, V1_PREFIX) || starts_like(bytes, &V2_SIGNATURE)
}

/// Parses a header at the start of `bytes`.
///
/// - `Ok(Some((header, length)))`: a complete header of `length` bytes; what
///   follows it is the client's data.
/// - `Ok(None)`: what is there is the start of a valid header (every prefix of
///   a valid header gives this); more bytes are needed. When this is returned
///   for `bytes`, a later call on `bytes` plus more never returns a length
///   within `bytes`, so these bytes may be consumed.
/// - `Err(_)`: these bytes can never start a valid header, whatever follows.
pub fn parse(bytes: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    match bytes.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(bytes),
        Some(b'\r') => parse_v2(bytes),
        Some(_) => Err(ProxyError::Invalid("not a PROXY protocol header")),
    }
}

/// Reads exactly one header from `stream`, leaving every byte after it unread.
///
/// Bytes are peeked, and only those known to belong to the header are then
/// read: everything before a v1 CRLF, and at most the length a v2 header
/// declares. So each peek either sees new bytes or waits for them (no busy
/// loop), the peer closing is noticed, and what follows the header stays in
/// the socket for the next reader.
///
/// On error the connection is unusable (part of a header may have been
/// consumed) and should be closed. The whole read, however the peer trickles
/// its bytes, ends by `timeout` with [`ProxyError::Timeout`].
pub async fn read_header(
    stream: &mut TcpStream,
    timeout: Duration,
) -> Result<ProxyHeader, ProxyError> {
    match tokio::time::timeout(timeout, read_header_unbounded(stream)).await {
        Ok(result) => result,
        Err(_) => Err(ProxyError::Timeout),
    }
}

async fn read_header_unbounded(stream: &mut TcpStream) -> Result<ProxyHeader, ProxyError> {
    /// How much one peek looks at. v1 fits in one; a larger v2 takes a few.
    const PEEK_SIZE: usize = 512;
    // The header bytes read so far. `parse` refuses anything longer than
    // V2_MAX_LEN, so this stays below V2_MAX_LEN + PEEK_SIZE.
    let mut header = Vec::with_capacity(PEEK_SIZE);
    let mut chunk = [0u8; PEEK_SIZE];
    loop {
        let peeked = stream.peek(&mut chunk).await?;
        if peeked == 0 {
            return Err(ProxyError::Truncated);
        }
        let before = header.len();
        header.extend_from_slice(&chunk[..peeked]);
        match parse(&header)? {
            Some((parsed, length)) => {
                // `parse` said None for `header[..before]`, so the header ends
                // inside what was just peeked.
                debug_assert!(length > before && length <= header.len());
                let rest = length.saturating_sub(before).min(peeked);
                stream.read_exact(&mut chunk[..rest]).await?;
                return Ok(parsed);
            }
            None => {
                // All of it belongs to the header: take it off the socket so
                // the next peek waits for new bytes.
                stream.read_exact(&mut chunk[..peeked]).await?;
            }
        }
    }
}

/// Encodes a v1 (text) header: `PROXY TCP4 src dst sport dport\r\n` or
/// `TCP6`.
///
/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, as a dual-stack socket
/// reports IPv4 peers) are sent as the IPv4 addresses they are. When the two
/// addresses are still of different families, the IPv4 one is mapped to IPv6
/// so that both are of the one family the header names. IPv6 scope IDs and
/// flow labels are not carried.
pub fn encode_v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let line = match same_family(source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => format!(
            "PROXY TCP4 {src} {dst} {} {}\r\n",
            source.port(),
            destination.port()
        ),
        (src, dst) => format!(
            "PROXY TCP6 {src} {dst} {} {}\r\n",
            source.port(),
            destination.port()
        ),
    };
    line.into_bytes()
}

/// A header that names no client: v1 `PROXY UNKNOWN`, v2 `LOCAL` (what a
/// connection of wharf's own, a health check, starts with).
pub fn encode_local(version: crate::config::ProxyVersion) -> Vec<u8> {
    match version {
        crate::config::ProxyVersion::V1 => b"PROXY UNKNOWN\r\n".to_vec(),
        crate::config::ProxyVersion::V2 => {
            let mut out = Vec::with_capacity(V2_FIXED_LEN);
            out.extend_from_slice(&V2_SIGNATURE);
            out.push(0x20 | V2_COMMAND_LOCAL);
            out.push(0x00); // AF_UNSPEC, UNSPEC
            out.extend_from_slice(&0u16.to_be_bytes());
            out
        }
    }
}

/// Encodes a v2 (binary) header: command PROXY, TCP over IPv4 or IPv6, no
/// TLVs. Addresses are made one family as [`encode_v1`] does.
pub fn encode_v2(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let mut out = Vec::with_capacity(V2_FIXED_LEN + V2_TCP6_ADDR_LEN);
    out.extend_from_slice(&V2_SIGNATURE);
    out.push(0x20 | V2_COMMAND_PROXY);
    match same_family(source.ip(), destination.ip()) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            out.push(V2_TCP4);
            out.extend_from_slice(&(V2_TCP4_ADDR_LEN as u16).to_be_bytes());
            out.extend_from_slice(&src.octets());
            out.extend_from_slice(&dst.octets());
        }
        (src, dst) => {
            out.push(V2_TCP6);
            out.extend_from_slice(&(V2_TCP6_ADDR_LEN as u16).to_be_bytes());
            out.extend_from_slice(&to_v6(src).octets());
            out.extend_from_slice(&to_v6(dst).octets());
        }
    }
    out.extend_from_slice(&source.port().to_be_bytes());
    out.extend_from_slice(&destination.port().to_be_bytes());
    out
}

/// Unmaps IPv4-mapped addresses, then maps IPv4 to IPv6 if the families still
/// differ.
fn same_family(source: IpAddr, destination: IpAddr) -> (IpAddr, IpAddr) {
    match (source.to_canonical(), destination.to_canonical()) {
        (src @ IpAddr::V4(_), dst @ IpAddr::V4(_)) => (src, dst),
        (src, dst) => (IpAddr::V6(to_v6(src)), IpAddr::V6(to_v6(dst))),
    }
}

fn to_v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

// ---------------------------------------------------------------- version 1

fn parse_v1(bytes: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let n = bytes.len().min(V1_PREFIX.len());
    if bytes[..n] != V1_PREFIX[..n] {
        return Err(ProxyError::Invalid("not a PROXY protocol header"));
    }
    let window = &bytes[..bytes.len().min(V1_MAX_LEN)];
    match window.iter().position(|&b| b == b'\r' || b == b'\n') {
        Some(end) if window[end] == b'\n' => Err(ProxyError::Invalid("v1 line ends without CRLF")),
        Some(end) => {
            if end + 2 > V1_MAX_LEN {
                return Err(ProxyError::TooLong);
            }
            match bytes.get(end + 1) {
                Some(b'\n') => parse_v1_line(&bytes[..end]).map(|header| Some((header, end + 2))),
                Some(_) => Err(ProxyError::Invalid("v1 line ends without CRLF")),
                // The line is all there; only its LF is missing.
                None => parse_v1_line(&bytes[..end]).map(|_| None),
            }
        }
        None if bytes.len() + 2 > V1_MAX_LEN => Err(ProxyError::TooLong),
        None => check_v1_partial(bytes).map(|()| None),
    }
}

/// Parses a whole v1 line, without its CRLF.
fn parse_v1_line(line: &[u8]) -> Result<ProxyHeader, ProxyError> {
    let Some(rest) = line.strip_prefix(V1_PREFIX) else {
        return Err(ProxyError::Invalid("not a PROXY protocol header"));
    };
    if let Some(after) = rest.strip_prefix(b"UNKNOWN")
        && matches!(after.first(), None | Some(b' '))
    {
        return Ok(ProxyHeader::Local);
    }
    let mut fields = rest.split(|&b| b == b' ');
    let mut field = || fields.next().unwrap_or_default();
    let (protocol, src, dst, sport, dport) = (field(), field(), field(), field(), field());
    if fields.next().is_some() {
        return Err(ProxyError::Invalid("v1 line has too many fields"));
    }
    let (source, destination) = match protocol {
        b"TCP4" => (
            IpAddr::V4(parse_v1_ip::<Ipv4Addr>(src)?),
            IpAddr::V4(parse_v1_ip::<Ipv4Addr>(dst)?),
        ),
        b"TCP6" => (
            IpAddr::V6(parse_v1_ip::<Ipv6Addr>(src)?),
            IpAddr::V6(parse_v1_ip::<Ipv6Addr>(dst)?),
        ),
        _ => {
            return Err(ProxyError::Invalid(
                "v1 protocol is not TCP4, TCP6 or UNKNOWN",
            ));
        }
    };
    let sport = parse_v1_port(sport).ok_or(ProxyError::Invalid("bad v1 source port"))?;
    let dport = parse_v1_port(dport).ok_or(ProxyError::Invalid("bad v1 destination port"))?;
    Ok(ProxyHeader::Proxied {
        source: SocketAddr::new(source, sport),
        destination: SocketAddr::new(destination, dport),
    })
}

/// An address of the family the line names. The standard library refuses
/// IPv4 octets with leading zeroes, as the spec asks.
fn parse_v1_ip<T: std::str::FromStr>(field: &[u8]) -> Result<T, ProxyError> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or(ProxyError::Invalid(
            "bad v1 address, or not of the stated family",
        ))
}

/// A decimal port: digits only, no leading zeroes, at most 65535.
fn parse_v1_port(field: &[u8]) -> Option<u16> {
    if !port_prefix_ok(field) || field.is_empty() {
        return None;
    }
    Some(decimal(field) as u16)
}

/// Whether `field` is a prefix of a valid port.
fn port_prefix_ok(field: &[u8]) -> bool {
    field.len() <= 5
        && field.iter().all(u8::is_ascii_digit)
        && !(field.len() > 1 && field[0] == b'0')
        && decimal(field) <= u32::from(u16::MAX)
}

fn decimal(digits: &[u8]) -> u32 {
    digits.iter().fold(0u32, |n, &d| {
        n.saturating_mul(10)
            .saturating_add(u32::from(d.wrapping_sub(b'0')))
    })
}

/// Checks that `partial` (no CR or LF in it yet) could still become a valid
/// line, so that garbage is refused as soon as it shows rather than after the
/// timeout: complete fields are parsed, the last one is checked for the
/// characters and length it may have.
fn check_v1_partial(partial: &[u8]) -> Result<(), ProxyError> {
    let Some(rest) = partial.strip_prefix(V1_PREFIX) else {
        return Ok(()); // a prefix of "PROXY ", checked by the caller
    };
    if rest.len() <= b"UNKNOWN".len() && b"UNKNOWN".starts_with(rest) {
        return Ok(());
    }
    if rest.starts_with(b"UNKNOWN ") {
        return Ok(()); // anything may follow, up to the CRLF
    }
    let mut fields = rest.split(|&b| b == b' ').enumerate().peekable();
    let mut family_v6 = false;
    while let Some((index, field)) = fields.next() {
        let last = fields.peek().is_none();
        match (index, last) {
            (0, false) => match field {
                b"TCP4" => family_v6 = false,
                b"TCP6" => family_v6 = true,
                _ => {
                    return Err(ProxyError::Invalid(
                        "v1 protocol is not TCP4, TCP6 or UNKNOWN",
                    ));
                }
            },
            (0, true) => {
                if !(b"TCP4".starts_with(field) || b"TCP6".starts_with(field)) {
                    return Err(ProxyError::Invalid(
                        "v1 protocol is not TCP4, TCP6 or UNKNOWN",
                    ));
                }
            }
            (1 | 2, false) if family_v6 => {
                parse_v1_ip::<Ipv6Addr>(field)?;
            }
            (1 | 2, false) => {
                parse_v1_ip::<Ipv4Addr>(field)?;
            }
            (1 | 2, true) => {
                let ok = if family_v6 {
                    field.len() <= 45
                        && field
                            .iter()
                            .all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
                } else {
                    field.len() <= 15 && field.iter().all(|&b| b.is_ascii_digit() || b == b'.')
                };
                if !ok {
                    return Err(ProxyError::Invalid(
                        "bad v1 address, or not of the stated family",
                    ));
                }
            }
            (3 | 4, false) => {
                parse_v1_port(field).ok_or(ProxyError::Invalid("bad v1 port"))?;
            }
            (3 | 4, true) => {
                if !port_prefix_ok(field) {
                    return Err(ProxyError::Invalid("bad v1 port"));
                }
            }
            _ => return Err(ProxyError::Invalid("v1 line has too many fields")),
        }
    }
    Ok(())
}

// ---------------------------------------------------------------- version 2

fn parse_v2(bytes: &[u8]) -> Result<Option<(ProxyHeader, usize)>, ProxyError> {
    let n = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..n] != V2_SIGNATURE[..n] {
        return Err(ProxyError::Invalid("bad v2 signature"));
    }
    let Some(&version_command) = bytes.get(12) else {
        return Ok(None);
    };
    if version_command >> 4 != 2 {
        return Err(ProxyError::Invalid("unsupported v2 version"));
    }
    let command = version_command & 0x0f;
    if command != V2_COMMAND_LOCAL && command != V2_COMMAND_PROXY {
        return Err(ProxyError::Invalid("unknown v2 command"));
    }
    let Some(&family) = bytes.get(13) else {
        return Ok(None);
    };
    // LOCAL ignores the family; PROXY needs one of the seven the spec defines.
    if command == V2_COMMAND_PROXY
        && !matches!(family, 0x00 | 0x11 | 0x12 | 0x21 | 0x22 | 0x31 | 0x32)
    {
        return Err(ProxyError::Invalid(
            "unknown v2 address family or transport",
        ));
    }
    let (Some(&len_hi), Some(&len_lo)) = (bytes.get(14), bytes.get(15)) else {
        return Ok(None);
    };
    let block_len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    let total = V2_FIXED_LEN + block_len;
    if total > V2_MAX_LEN {
        return Err(ProxyError::TooLong);
    }
    let address_len = match (command, family) {
        (V2_COMMAND_PROXY, V2_TCP4) => V2_TCP4_ADDR_LEN,
        (V2_COMMAND_PROXY, V2_TCP6) => V2_TCP6_ADDR_LEN,
        _ => 0,
    };
    if block_len < address_len {
        return Err(ProxyError::Invalid(
            "v2 address block shorter than its family needs",
        ));
    }
    let Some(header) = bytes.get(..total) else {
        return Ok(None);
    };
    let block = &header[V2_FIXED_LEN..];
    let parsed = match (command, family) {
        (V2_COMMAND_PROXY, V2_TCP4) => {
            let ip = |at: usize| Ipv4Addr::from(read_array::<4>(block, at));
            let (source, destination) = (ip(0), ip(4));
            let (sport, dport) = (read_port(block, 8), read_port(block, 10));
            check_tlvs(header, V2_FIXED_LEN + address_len)?;
            ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V4(source), sport),
                destination: SocketAddr::new(IpAddr::V4(destination), dport),
            }
        }
        (V2_COMMAND_PROXY, V2_TCP6) => {
            let ip = |at: usize| Ipv6Addr::from(read_array::<16>(block, at));
            let (source, destination) = (ip(0), ip(16));
            let (sport, dport) = (read_port(block, 32), read_port(block, 34));
            check_tlvs(header, V2_FIXED_LEN + address_len)?;
            ProxyHeader::Proxied {
                source: SocketAddr::new(IpAddr::V6(source), sport),
                destination: SocketAddr::new(IpAddr::V6(destination), dport),
            }
        }
        // LOCAL, UNSPEC, and valid families this receiver does not implement:
        // the spec says to use the real endpoints and skip the block.
        _ => ProxyHeader::Local,
    };
    Ok(Some((parsed, total)))
}

/// `N` bytes at `at`; zeroes where `bytes` is too short (callers check the
/// length first, this only keeps a mistake from becoming a panic).
fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = bytes.get(at..at.saturating_add(N)) {
        out.copy_from_slice(src);
    }
    out
}

fn read_port(bytes: &[u8], at: usize) -> u16 {
    u16::from_be_bytes(read_array::<2>(bytes, at))
}

/// Walks the TLVs in `header[start..]`: each must lie wholly inside the
/// header; a CRC32C one must be 4 bytes and match.
fn check_tlvs(header: &[u8], start: usize) -> Result<(), ProxyError> {
    let mut at = start;
    while at < header.len() {
        let (Some(&kind), Some(&len_hi), Some(&len_lo)) =
            (header.get(at), header.get(at + 1), header.get(at + 2))
        else {
            return Err(ProxyError::Invalid("v2 TLV cut short by the header length"));
        };
        let value_at = at + 3;
        let value_end = value_at + usize::from(u16::from_be_bytes([len_hi, len_lo]));
        let Some(value) = header.get(value_at..value_end) else {
            return Err(ProxyError::Invalid("v2 TLV longer than the header"));
        };
        if kind == PP2_TYPE_CRC32C {
            let expected = u32::from_be_bytes(
                value
                    .try_into()
                    .map_err(|_| ProxyError::Invalid("v2 CRC32C TLV is not 4 bytes"))?,
            );
            // The checksum covers the whole header with its own field zeroed.
            let mut crc = crc32c_update(!0, &header[..value_at]);
            crc = crc32c_update(crc, &[0; 4]);
            crc = crc32c_update(crc, &header[value_end..]);
            if !crc != expected {
                return Err(ProxyError::Invalid("v2 CRC32C does not match"));
            }
        }
        at = value_end;
    }
    Ok(())
}

/// CRC-32C (Castagnoli), bit by bit: headers are at most a few KiB.
fn crc32c_update(mut crc: u32, bytes: &[u8]) -> u32 {
    for &byte in bytes {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn proxied(source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader::Proxied {
            source: addr(source),
            destination: addr(destination),
        }
    }

    fn complete(bytes: &[u8]) -> (ProxyHeader, usize) {
        match parse(bytes) {
            Ok(Some(done)) => done,
            other => panic!(
                "{:?}: expected a complete header, got {other:?}",
                bytes_text(bytes)
            ),
        }
    }

    fn invalid(bytes: &[u8]) -> ProxyError {
        match parse(bytes) {
            Err(error) => error,
            other => panic!("{:?}: expected an error, got {other:?}", bytes_text(bytes)),
        }
    }

    fn bytes_text(bytes: &[u8]) -> String {
        String::from_utf8_lossy(bytes).into_owned()
    }

    /// A v2 header from parts; `len` overrides the length field.
    fn v2(version_command: u8, family: u8, block: &[u8], len: Option<u16>) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.push(version_command);
        out.push(family);
        out.extend_from_slice(&len.unwrap_or(block.len() as u16).to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    fn tcp4_block() -> Vec<u8> {
        let mut block = vec![1, 2, 3, 4, 5, 6, 7, 8];
        block.extend_from_slice(&1111u16.to_be_bytes());
        block.extend_from_slice(&2222u16.to_be_bytes());
        block
    }

    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&(value.len() as u16).to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    /// Every valid header this file knows, with what it says.
    fn valid_headers() -> Vec<(Vec<u8>, ProxyHeader)> {
        let tcp4 = proxied("1.2.3.4:1111", "5.6.7.8:2222");
        let mut headers = vec![
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n".to_vec(), tcp4),
            (
                b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n".to_vec(),
                proxied("255.255.255.255:65535", "255.255.255.255:65535"),
            ),
            (
                b"PROXY TCP4 0.0.0.0 10.0.0.1 0 80\r\n".to_vec(),
                proxied("0.0.0.0:0", "10.0.0.1:80"),
            ),
            (
                b"PROXY TCP6 2001:db8::1 ::1 56324 443\r\n".to_vec(),
                proxied("[2001:db8::1]:56324", "[::1]:443"),
            ),
            (
                b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(),
                proxied(
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                ),
            ),
            (
                b"PROXY TCP6 ::ffff:1.2.3.4 FE80::A 1 2\r\n".to_vec(),
                proxied("[::ffff:1.2.3.4]:1", "[fe80::a]:2"),
            ),
            (b"PROXY UNKNOWN\r\n".to_vec(), ProxyHeader::Local),
            (
                b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n".to_vec(),
                ProxyHeader::Local,
            ),
            (b"PROXY UNKNOWN whatever \x00\xff  x\r\n".to_vec(), ProxyHeader::Local),
            (v2(0x21, 0x11, &tcp4_block(), None), tcp4),
            (v2(0x20, 0x00, &[], None), ProxyHeader::Local),
            (v2(0x20, 0x11, &tcp4_block(), None), ProxyHeader::Local),
            (v2(0x20, 0xff, &[9; 40], None), ProxyHeader::Local),
            (v2(0x21, 0x00, &[], None), ProxyHeader::Local),
            (v2(0x21, 0x00, &[7; 12], None), ProxyHeader::Local),
            (v2(0x21, 0x12, &tcp4_block(), None), ProxyHeader::Local),
            (v2(0x21, 0x31, &[0; 216], None), ProxyHeader::Local),
            (v2(0x21, 0x32, &[0; 216], None), ProxyHeader::Local),
        ];
        let mut tcp6 = Vec::new();
        tcp6.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        tcp6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        tcp6.extend_from_slice(&56324u16.to_be_bytes());
        tcp6.extend_from_slice(&443u16.to_be_bytes());
        let tcp6_header = proxied("[2001:db8::1]:56324", "[::1]:443");
        headers.push((v2(0x21, 0x21, &tcp6, None), tcp6_header));
        let mut with_tlvs = tcp6.clone();
        with_tlvs.extend(tlv(0x01, b"http/1.1"));
        with_tlvs.extend(tlv(0x02, b"app.example.com"));
        with_tlvs.extend(tlv(0x04, &[]));
        with_tlvs.extend(tlv(
            0x20,
            &[
                0x01, 0, 0, 0, 0, 0x21, 0, 7, b'T', b'L', b'S', b'v', b'1', b'.', b'3',
            ],
        ));
        with_tlvs.extend(tlv(0xea, &[0x01; 30]));
        headers.push((v2(0x21, 0x21, &with_tlvs, None), tcp6_header));
        // A header longer than one peek, padded with a NOOP TLV.
        let mut padded = tcp4_block();
        padded.extend(tlv(0x04, &[0xaa; 1500]));
        headers.push((v2(0x21, 0x11, &padded, None), tcp4));
        // The largest accepted.
        let mut largest = tcp4_block();
        largest.extend(tlv(0x04, &vec![0; V2_MAX_LEN - 16 - 12 - 3]));
        let largest = v2(0x21, 0x11, &largest, None);
        assert_eq!(largest.len(), V2_MAX_LEN);
        headers.push((largest, tcp4));
        headers.push((with_crc32c(&tcp4_block()), tcp4));
        headers
    }

    /// A TCP4 v2 header with a correct CRC32C TLV after `block`.
    fn with_crc32c(block: &[u8]) -> Vec<u8> {
        let mut block = block.to_vec();
        block.extend(tlv(PP2_TYPE_CRC32C, &[0; 4]));
        let mut header = v2(0x21, 0x11, &block, None);
        let crc = !crc32c_update(!0, &header);
        let at = header.len() - 4;
        header[at..].copy_from_slice(&crc.to_be_bytes());
        header
    }

    #[test]
    fn crc32c_known_value() {
        assert_eq!(!crc32c_update(!0, b"123456789"), 0xE306_9283);
    }

    #[test]
    fn valid_headers_parse_and_every_prefix_needs_more() {
        for (header, expected) in valid_headers() {
            assert_eq!(
                complete(&header),
                (expected, header.len()),
                "{:?}",
                bytes_text(&header)
            );
            let mut followed = header.clone();
            followed.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            assert_eq!(complete(&followed), (expected, header.len()));
            for cut in 0..header.len() {
                assert!(
                    matches!(parse(&header[..cut]), Ok(None)),
                    "prefix {cut} of {:?}: {:?}",
                    bytes_text(&header),
                    parse(&header[..cut])
                );
                assert!(looks_like_proxy(&header[..cut]));
            }
            assert!(looks_like_proxy(&header));
        }
    }

    #[test]
    fn v1_examples() {
        assert_eq!(
            complete(b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\nGET / HTTP/1.1\r\n"),
            (proxied("192.168.0.1:56324", "192.168.0.11:443"), 47)
        );
        assert_eq!(complete(b"PROXY UNKNOWN\r\nabc"), (ProxyHeader::Local, 15));
        assert_eq!(
            complete(b"PROXY UNKNOWN 1.2.3.4 \r\n"),
            (ProxyHeader::Local, 24)
        );
    }

    #[test]
    fn v1_malformed() {
        let cases: &[&[u8]] = &[
            b"GET / HTTP/1.1\r\n",
            b"PROXY\r\n",
            b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8\r\n",
            b"PROXY TCP4\r\n",
            b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
            b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n",
            b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
            b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
            b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n",
            b"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n",
            b"PROXY TCP6 ::g ::1 1 2\r\n",
            b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 0x2\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 000002\r\n",
            b"PROXY UNKNOWNX\r\n",
            b"PROXY UNKNOWN\n",
            b"PROXY UNKNOWN\r",
            b"PROXY UNKNOWN junk\n",
            b"PROXY \xff\r\n",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\x00\r\n",
        ];
        for case in cases {
            // A case that is only a header's prefix would give None; the
            // two ending in a lone CR are checked separately below.
            if case.ends_with(b"\r") {
                assert!(
                    !matches!(parse(case), Ok(Some(_))),
                    "{:?}",
                    bytes_text(case)
                );
                continue;
            }
            assert!(
                matches!(invalid(case), ProxyError::Invalid(_)),
                "{:?}: {:?}",
                bytes_text(case),
                parse(case)
            );
        }
        // A complete line ending in CR only is refused once the next byte
        // shows it is not LF; the line itself is already checked.
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r"),
            Ok(None)
        ));
        assert!(matches!(parse(b"PROXY UNKNOWN\r"), Ok(None)));
        assert!(matches!(
            parse(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX"),
            Err(ProxyError::Invalid(_))
        ));
    }

    #[test]
    fn v1_garbage_is_refused_before_the_line_ends() {
        for partial in [
            &b"GET "[..],
            b"PROXX",
            b"PROXY X",
            b"PROXY TCP4 1.2.3.4  ",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 65536",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 01",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1a",
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
            b"PROXY TCP4 1.2:",
            b"PROXY TCP4 1.2.3.4.5 ",
            b"PROXY TCP6 ::1 ::x",
            b"PROXY TCP6 1.2.3.4 ",
            b"PROXY TCP4 1234567890123456",
        ] {
            assert!(
                parse(partial).is_err(),
                "{:?}: {:?}",
                bytes_text(partial),
                parse(partial)
            );
        }
    }

    #[test]
    fn v1_length_limit() {
        // 107 bytes with CRLF is the most; UNKNOWN pads to exactly that.
        let mut line = b"PROXY UNKNOWN ".to_vec();
        line.resize(V1_MAX_LEN - 2, b'x');
        line.extend_from_slice(b"\r\n");
        assert_eq!(complete(&line), (ProxyHeader::Local, V1_MAX_LEN));
        let mut long = b"PROXY UNKNOWN ".to_vec();
        long.resize(V1_MAX_LEN - 1, b'x');
        long.extend_from_slice(b"\r\n");
        assert!(matches!(invalid(&long), ProxyError::TooLong));
        // No CRLF in sight: refused once it cannot fit any more.
        let mut endless = b"PROXY UNKNOWN ".to_vec();
        endless.resize(V1_MAX_LEN - 2, b'x');
        assert!(matches!(parse(&endless), Ok(None)));
        endless.push(b'x');
        assert!(matches!(invalid(&endless), ProxyError::TooLong));
        endless.resize(10_000, b'x');
        assert!(matches!(invalid(&endless), ProxyError::TooLong));
        // A TCP6 line in the longest address form does not fit.
        let tcp6 = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255 65535 65535\r\n";
        assert!(matches!(invalid(tcp6), ProxyError::TooLong));
    }

    #[test]
    fn v2_malformed() {
        let good = v2(0x21, 0x11, &tcp4_block(), None);
        let mut bad_signature = good.clone();
        bad_signature[11] = b'X';
        let mut v1_version = good.clone();
        v1_version[12] = 0x11;
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("bad signature", bad_signature),
            ("signature then garbage", b"\r\n\r\nGET".to_vec()),
            ("version 1", v1_version),
            ("version 3", v2(0x31, 0x11, &tcp4_block(), None)),
            ("command 2", v2(0x22, 0x11, &tcp4_block(), None)),
            ("command 15", v2(0x2f, 0x11, &tcp4_block(), None)),
            ("family 4", v2(0x21, 0x41, &tcp4_block(), None)),
            ("transport 3", v2(0x21, 0x13, &tcp4_block(), None)),
            ("inet unspec", v2(0x21, 0x10, &tcp4_block(), None)),
            ("unspec stream", v2(0x21, 0x01, &tcp4_block(), None)),
            ("tcp4 short", v2(0x21, 0x11, &tcp4_block()[..11], None)),
            ("tcp4 empty", v2(0x21, 0x11, &[], None)),
            ("tcp6 with tcp4 block", v2(0x21, 0x21, &tcp4_block(), None)),
            ("tlv header cut", {
                let mut block = tcp4_block();
                block.extend_from_slice(&[0x01, 0x00]);
                v2(0x21, 0x11, &block, None)
            }),
            ("tlv value past the end", {
                let mut block = tcp4_block();
                block.extend_from_slice(&[0x01, 0x00, 0x05, b'a', b'b']);
                v2(0x21, 0x11, &block, None)
            }),
            ("tlv claims 65535", {
                let mut block = tcp4_block();
                block.extend_from_slice(&[0x04, 0xff, 0xff, 0]);
                v2(0x21, 0x11, &block, None)
            }),
            ("crc32c wrong", {
                let mut header = with_crc32c(&tcp4_block());
                let last = header.len() - 1;
                header[last] ^= 1;
                header
            }),
            ("crc32c covers the addresses", {
                let mut header = with_crc32c(&tcp4_block());
                header[16] ^= 1;
                header
            }),
            ("crc32c wrong size", {
                let mut block = tcp4_block();
                block.extend(tlv(PP2_TYPE_CRC32C, &[0; 3]));
                v2(0x21, 0x11, &block, None)
            }),
        ];
        for (name, case) in cases {
            assert!(
                matches!(invalid(&case), ProxyError::Invalid(_)),
                "{name}: {:?}",
                parse(&case)
            );
        }
        // Over the size limit: refused from the length field alone.
        let fixed = v2(0x21, 0x11, &[], Some((V2_MAX_LEN - 16 + 1) as u16));
        assert!(matches!(invalid(&fixed), ProxyError::TooLong));
        assert!(matches!(
            invalid(&v2(0x20, 0x00, &[], Some(u16::MAX))),
            ProxyError::TooLong
        ));
        // A length longer than what is there just waits for the rest.
        assert!(matches!(
            parse(&v2(0x21, 0x11, &tcp4_block(), Some(40))),
            Ok(None)
        ));
        // And one shorter than what is there ends the header early: the extra
        // bytes are the client's, and here the block is then too short.
        let header = v2(0x21, 0x11, &tcp4_block(), Some(11));
        assert!(matches!(invalid(&header), ProxyError::Invalid(_)));
        // Early refusal from the fixed part, before the block arrives.
        assert!(parse(b"\r\n\rx").is_err());
        assert!(parse(&v2(0x21, 0x11, &[], Some(4))[..16]).is_err());
        assert!(parse(&v2(0x23, 0x11, &[], None)[..13]).is_err());
        assert!(parse(&v2(0x21, 0x44, &[], None)[..14]).is_err());
    }

    #[test]
    fn encode_round_trips() {
        let pairs = [
            (
                "1.2.3.4:1111",
                "5.6.7.8:2222",
                "1.2.3.4:1111",
                "5.6.7.8:2222",
            ),
            (
                "0.0.0.0:0",
                "255.255.255.255:65535",
                "0.0.0.0:0",
                "255.255.255.255:65535",
            ),
            (
                "[2001:db8::1]:5",
                "[::1]:443",
                "[2001:db8::1]:5",
                "[::1]:443",
            ),
            (
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                "[fe80::1%3]:1",
                "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                "[fe80::1]:1",
            ),
            // Mixed families: IPv4 becomes IPv4-mapped IPv6.
            (
                "1.2.3.4:1",
                "[2001:db8::2]:2",
                "[::ffff:1.2.3.4]:1",
                "[2001:db8::2]:2",
            ),
            (
                "[2001:db8::2]:2",
                "1.2.3.4:1",
                "[2001:db8::2]:2",
                "[::ffff:1.2.3.4]:1",
            ),
            // IPv4-mapped addresses from a dual-stack socket go out as IPv4.
            (
                "[::ffff:10.0.0.1]:7",
                "[::ffff:10.0.0.2]:8",
                "10.0.0.1:7",
                "10.0.0.2:8",
            ),
            (
                "[::ffff:10.0.0.1]:7",
                "10.0.0.2:8",
                "10.0.0.1:7",
                "10.0.0.2:8",
            ),
        ];
        for (source, destination, want_source, want_destination) in pairs {
            let want = proxied(want_source, want_destination);
            for encoded in [
                encode_v1(addr(source), addr(destination)),
                encode_v2(addr(source), addr(destination)),
            ] {
                assert_eq!(
                    complete(&encoded),
                    (want, encoded.len()),
                    "{source} {destination}"
                );
                assert!(encoded.len() <= V1_MAX_LEN);
            }
        }
        assert_eq!(
            encode_v1(addr("1.2.3.4:1111"), addr("5.6.7.8:2222")),
            b"PROXY TCP4 1.2.3.4 5.6.7.8 1111 2222\r\n"
        );
        assert_eq!(
            encode_v1(addr("1.2.3.4:1"), addr("[::1]:2")),
            b"PROXY TCP6 ::ffff:1.2.3.4 ::1 1 2\r\n"
        );
        assert_eq!(
            encode_v2(addr("1.2.3.4:1111"), addr("5.6.7.8:2222")),
            v2(0x21, 0x11, &tcp4_block(), None)
        );
    }

    #[test]
    fn looks_like_proxy_cases() {
        assert!(looks_like_proxy(b""));
        assert!(looks_like_proxy(b"P"));
        assert!(looks_like_proxy(b"PROXY "));
        assert!(looks_like_proxy(b"PROXY garbage"));
        assert!(looks_like_proxy(b"\r\n\r\n\0"));
        assert!(looks_like_proxy(&V2_SIGNATURE));
        assert!(!looks_like_proxy(b"POST / HTTP/1.1"));
        assert!(!looks_like_proxy(b"PROXYX"));
        assert!(!looks_like_proxy(b"GET / HTTP/1.1\r\n"));
        assert!(!looks_like_proxy(b"\x16\x03\x01"));
        assert!(!looks_like_proxy(b"\r\n\r\n\r"));
        assert!(!looks_like_proxy(b"<policy-file-request/>"));
    }

    /// xorshift64*, seeded: the same "random" cases on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn byte(&mut self) -> u8 {
            const ALPHABET: &[u8] = b"0123456789abcdefABCDEF.: \r\nPROXYTCP46UNKNOW";
            match self.below(4) {
                0 => self.next() as u8,
                _ => ALPHABET[self.below(ALPHABET.len())],
            }
        }
    }

    /// What must hold for any input: no panic; a complete header's length is
    /// within the input and is found again on the header alone and on every
    /// longer prefix; every shorter prefix needs more; an error stays one.
    fn check_consistent(bytes: &[u8]) {
        let full = parse(bytes);
        if let Ok(Some((header, length))) = &full {
            assert!(*length > 0 && *length <= bytes.len());
            assert_eq!(parse(&bytes[..*length]).unwrap(), Some((*header, *length)));
        }
        for cut in 0..bytes.len() {
            match parse(&bytes[..cut]) {
                Ok(None) => {
                    if let Ok(Some((_, length))) = &full {
                        assert!(*length > cut, "{:?} cut {cut}", bytes_text(bytes));
                    }
                }
                Ok(Some(prefix)) => assert_eq!(full.as_ref().unwrap(), &Some(prefix)),
                Err(_) => assert!(full.is_err(), "{:?} cut {cut}", bytes_text(bytes)),
            }
        }
    }

    #[test]
    fn random_and_mutated_inputs_never_panic_and_stay_consistent() {
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let valid: Vec<Vec<u8>> = valid_headers()
            .into_iter()
            .map(|(bytes, _)| bytes)
            .collect();
        let mut completes = 0;
        for round in 0..20_000 {
            let mut bytes = match round % 4 {
                // Random bytes after a likely start.
                0 => {
                    let mut bytes = match rng.below(3) {
                        0 => b"PROXY ".to_vec(),
                        1 => V2_SIGNATURE.to_vec(),
                        _ => Vec::new(),
                    };
                    for _ in 0..rng.below(120) {
                        bytes.push(rng.byte());
                    }
                    bytes
                }
                // A v1 line assembled from plausible and broken fields.
                1 => {
                    let fields: [&[&[u8]]; 5] = [
                        &[b"TCP4", b"TCP6", b"UNKNOWN", b"TCP", b""],
                        &[
                            b"1.2.3.4",
                            b"::1",
                            b"255.255.255.255",
                            b"01.2.3.4",
                            b"::ffff:1.2.3.4",
                            b"",
                        ],
                        &[b"5.6.7.8", b"2001:db8::1", b"0.0.0.0", b"1.2.3", b""],
                        &[b"0", b"65535", b"65536", b"01", b"1111", b""],
                        &[b"2222", b"0", b"99999", b"+1", b""],
                    ];
                    let mut bytes = b"PROXY".to_vec();
                    for options in fields.iter().take(1 + rng.below(5)) {
                        bytes.push(b' ');
                        bytes.extend_from_slice(options[rng.below(options.len())]);
                    }
                    bytes.extend_from_slice(
                        [&b"\r\n"[..], b"\r", b"\n", b"", b" \r\n"][rng.below(5)],
                    );
                    bytes
                }
                // A valid header, mutated.
                _ => {
                    let mut bytes = valid[rng.below(valid.len())].clone();
                    for _ in 0..1 + rng.below(4) {
                        match rng.below(5) {
                            0 if !bytes.is_empty() => {
                                let at = rng.below(bytes.len());
                                bytes[at] = rng.byte();
                            }
                            1 if !bytes.is_empty() => {
                                let at = rng.below(bytes.len());
                                bytes[at] ^= 1 << rng.below(8);
                            }
                            2 => {
                                let at = rng.below(bytes.len() + 1);
                                bytes.insert(at, rng.byte());
                            }
                            3 if !bytes.is_empty() => {
                                bytes.remove(rng.below(bytes.len()));
                            }
                            _ if bytes.len() >= 16 && bytes[0] == b'\r' => {
                                // v2: a random length field.
                                let len = (rng.next() as u16).to_be_bytes();
                                bytes[14..16].copy_from_slice(&len);
                            }
                            _ => bytes.truncate(rng.below(bytes.len() + 1)),
                        }
                    }
                    bytes
                }
            };
            // Sometimes the client's data follows.
            if rng.below(2) == 0 {
                bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
            }
            if bytes.len() > 300 {
                // Long (padded v2) cases: check the ends, not every prefix.
                let _ = parse(&bytes);
                let _ = parse(&bytes[..rng.below(bytes.len())]);
                continue;
            }
            if matches!(parse(&bytes), Ok(Some(_))) {
                completes += 1;
            }
            check_consistent(&bytes);
        }
        // The generator reaches complete headers too, not only errors.
        assert!(completes > 1_000, "{completes}");
    }

    mod stream {
        use super::*;
        use tokio::io::AsyncWriteExt;
        use tokio::net::TcpListener;

        const REQUEST: &[u8] = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n";

        /// A connected pair on 127.0.0.1: (client, server side).
        async fn pair() -> (TcpStream, TcpStream) {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (server, _) = listener.accept().await.unwrap();
            client.set_nodelay(true).unwrap();
            (client, server)
        }

        /// Sends `bytes` in pieces of `piece` bytes, pausing between them, then
        /// closes the sending side.
        fn send(
            mut client: TcpStream,
            bytes: Vec<u8>,
            piece: usize,
        ) -> tokio::task::JoinHandle<()> {
            tokio::spawn(async move {
                for chunk in bytes.chunks(piece) {
                    client.write_all(chunk).await.unwrap();
                    client.flush().await.unwrap();
                    if piece < bytes.len() {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                client.shutdown().await.unwrap();
                // Keep the socket open until the server is done reading.
                let mut sink = Vec::new();
                let _ = client.read_to_end(&mut sink).await;
            })
        }

        #[tokio::test]
        async fn reads_exactly_the_header_in_one_write_or_many() {
            // Every header, sent at once and in small pieces (each case on its
            // own connection, all at the same time, as the pieces trickle).
            let mut cases = Vec::new();
            for (header, expected) in valid_headers() {
                let pieces: &[usize] = if header.len() < 200 {
                    &[usize::MAX, 1, 5, 100]
                } else {
                    &[usize::MAX, 100, 700]
                };
                for &piece in pieces {
                    let header = header.clone();
                    cases.push(tokio::spawn(async move {
                        let (client, mut server) = pair().await;
                        let mut bytes = header.clone();
                        bytes.extend_from_slice(REQUEST);
                        let piece = piece.min(bytes.len());
                        let sender = send(client, bytes, piece);
                        let got = read_header(&mut server, Duration::from_secs(10)).await;
                        let case = format!("{:?} in pieces of {piece}", bytes_text(&header));
                        assert_eq!(got.unwrap(), expected, "{case}");
                        let mut rest = Vec::new();
                        server.read_to_end(&mut rest).await.unwrap();
                        assert_eq!(rest, REQUEST, "{case}");
                        drop(server);
                        sender.await.unwrap();
                    }));
                }
            }
            for case in cases {
                case.await.unwrap();
            }
        }

        #[tokio::test]
        async fn silent_client_times_out() {
            let (_client, mut server) = pair().await;
            let started = std::time::Instant::now();
            let result = read_header(&mut server, Duration::from_millis(100)).await;
            assert!(matches!(result, Err(ProxyError::Timeout)), "{result:?}");
            assert!(started.elapsed() < Duration::from_secs(2));
        }

        #[tokio::test]
        async fn half_a_header_then_silence_times_out() {
            let (mut client, mut server) = pair().await;
            client.write_all(b"PROXY TCP4 1.2.3.4 ").await.unwrap();
            let result = read_header(&mut server, Duration::from_millis(100)).await;
            assert!(matches!(result, Err(ProxyError::Timeout)), "{result:?}");
        }

        #[tokio::test]
        async fn header_split_across_a_pause() {
            let (mut client, mut server) = pair().await;
            let writer = tokio::spawn(async move {
                client.write_all(b"PROXY TCP4 1.2.3.4 5.6").await.unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                client.write_all(b".7.8 1111 2222\r\nGET").await.unwrap();
                client
            });
            let got = read_header(&mut server, Duration::from_secs(10)).await;
            assert_eq!(got.unwrap(), proxied("1.2.3.4:1111", "5.6.7.8:2222"));
            drop(writer.await.unwrap());
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, b"GET");
        }

        /// Waiting on half a header must sleep, not spin on a peek that keeps
        /// returning the same bytes: the thread's CPU time (Linux's
        /// per-thread counters, in 10 ms ticks) stays near zero.
        #[cfg(target_os = "linux")]
        #[tokio::test]
        async fn waiting_for_the_rest_does_not_spin() {
            fn cpu_ticks() -> u64 {
                let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap();
                let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
                // utime and stime: fields 14 and 15 of the whole line.
                fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
            }
            let (mut client, mut server) = pair().await;
            client.write_all(b"PROXY TCP6 ::1 ").await.unwrap();
            let before = cpu_ticks();
            let result = read_header(&mut server, Duration::from_millis(400)).await;
            let spent = cpu_ticks() - before;
            assert!(matches!(result, Err(ProxyError::Timeout)), "{result:?}");
            assert!(spent < 10, "{spent} ticks of CPU while waiting 400 ms");
        }

        #[tokio::test]
        async fn half_a_header_then_close_is_truncated() {
            for partial in [&b"PROXY TCP4 1.2.3.4 "[..], &V2_SIGNATURE[..7], b""] {
                let (client, mut server) = pair().await;
                let sender = send(client, partial.to_vec(), usize::MAX);
                let result = read_header(&mut server, Duration::from_secs(10)).await;
                assert!(matches!(result, Err(ProxyError::Truncated)), "{result:?}");
                drop(server);
                sender.await.unwrap();
            }
        }

        #[tokio::test]
        async fn not_a_header_is_refused_and_left_unread() {
            let (client, mut server) = pair().await;
            let sender = send(client, REQUEST.to_vec(), usize::MAX);
            let result = read_header(&mut server, Duration::from_secs(10)).await;
            assert!(matches!(result, Err(ProxyError::Invalid(_))), "{result:?}");
            let mut rest = Vec::new();
            server.read_to_end(&mut rest).await.unwrap();
            assert_eq!(rest, REQUEST);
            drop(server);
            sender.await.unwrap();
        }

        #[tokio::test]
        async fn oversized_v2_is_refused_without_reading_it() {
            let (client, mut server) = pair().await;
            let header = v2(0x21, 0x11, &[0; 100], Some(u16::MAX));
            let sender = send(client, header, usize::MAX);
            let result = read_header(&mut server, Duration::from_secs(10)).await;
            assert!(matches!(result, Err(ProxyError::TooLong)), "{result:?}");
            drop(server);
            sender.await.unwrap();
        }
    }
}
