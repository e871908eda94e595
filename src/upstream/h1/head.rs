//! Heads: the request head wharf writes to a server, and the server's
//! response head parsed (with `httparse`) into what the proxy and the body
//! decoder need: status, headers, framing and whether the connection may
//! be reused.

use std::mem::MaybeUninit;

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, StatusCode, Uri, Version};

use super::ServerError;
use crate::upstream::MAX_RESPONSE_HEAD;

/// The most header fields a response head may have (hyper's default too).
const MAX_HEADERS: usize = 100;

/// Writes `method target HTTP/1.1`, the fields of `headers` then those of
/// `extra`, and the blank line.
pub fn encode_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    extra: &[(HeaderName, HeaderValue)],
    out: &mut BytesMut,
) {
    let target = uri.path_and_query().map_or("/", |p| p.as_str());
    let all_fields = || headers.iter().chain(extra.iter().map(|(n, v)| (n, v)));
    let fields: usize = all_fields()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    out.reserve(method.as_str().len() + target.len() + 13 + fields + 2);
    out.put_slice(method.as_str().as_bytes());
    out.put_u8(b' ');
    out.put_slice(target.as_bytes());
    out.put_slice(b" HTTP/1.1\r\n");
    for (name, value) in all_fields() {
        encode_field(name, value, out);
    }
    out.put_slice(b"\r\n");
}

/// Writes each field as `name: value` and the blank line that ends a
/// head or a chunked body's trailer section.
pub fn encode_fields(headers: &HeaderMap, out: &mut BytesMut) {
    for (name, value) in headers {
        encode_field(name, value, out);
    }
    out.put_slice(b"\r\n");
}

fn encode_field(name: &HeaderName, value: &HeaderValue, out: &mut BytesMut) {
    out.put_slice(name.as_str().as_bytes());
    out.put_slice(b": ");
    out.put_slice(value.as_bytes());
    out.put_slice(b"\r\n");
}

/// How the body of a response is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: a response to HEAD, a 1xx, 204 or 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    UntilClose,
}

/// A parsed response head.
#[derive(Debug)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub framing: Framing,
    /// The server lets the connection carry another request after this one.
    pub keep_alive: bool,
}

/// Where a field's name and value lie in the head, to slice them out once
/// the head is frozen (no copy of any value).
#[derive(Clone, Copy)]
struct FieldAt {
    name: (usize, usize),
    value: (usize, usize),
}

/// Parses a response head at the start of `buf`, taking it out of `buf`
/// when complete; `Ok(None)` when more bytes are needed.
pub fn parse_response(
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<Option<ResponseHead>, ServerError> {
    // Left uninitialised: zeroing 100 fields (3.2 KB) cost more than the
    // parse itself in a callgrind profile of a small response.
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut fields,
    );
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            return Err(ServerError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(ServerError::HeadTooLarge),
        Err(e) => return Err(ServerError::Malformed(e)),
    };
    if length > MAX_RESPONSE_HEAD {
        return Err(ServerError::HeadTooLarge);
    }
    let code = response.code.unwrap_or_default();
    let status = StatusCode::from_u16(code).map_err(|_| ServerError::Framing("invalid status"))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let at = locate(buf, response.headers);
    let head = buf.split_to(length).freeze();
    let headers = build_headers(&head, &at)?;
    let framing = framing(status, version, &headers, head_request)?;
    let keep_alive = framing != Framing::UntilClose && keeps_alive(version, &headers);
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// Trailer fields after a chunked body, or `Ok(None)` when more bytes are needed.
pub fn parse_trailers(buf: &mut BytesMut) -> Result<Option<HeaderMap>, ServerError> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let (length, parsed) = match httparse::parse_headers(buf, &mut fields) {
        Ok(httparse::Status::Complete(done)) => done,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_RESPONSE_HEAD => {
            return Err(ServerError::HeadTooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ServerError::Malformed(e)),
    };
    let at = locate(buf, parsed);
    let head = buf.split_to(length).freeze();
    build_headers(&head, &at).map(Some)
}

/// Where each parsed field lies in `buf`.
fn locate(buf: &[u8], fields: &[httparse::Header<'_>]) -> Vec<FieldAt> {
    let base = buf.as_ptr() as usize;
    let offset = |s: &[u8]| (s.as_ptr() as usize - base, s.len());
    fields
        .iter()
        .map(|field| FieldAt {
            name: offset(field.name.as_bytes()),
            value: offset(field.value),
        })
        .collect()
}

fn build_headers(head: &Bytes, fields: &[FieldAt]) -> Result<HeaderMap, ServerError> {
    let mut headers = HeaderMap::with_capacity(fields.len());
    for field in fields {
        let name = &head[field.name.0..field.name.0 + field.name.1];
        let name =
            HeaderName::from_bytes(name).map_err(|_| ServerError::Framing("invalid field name"))?;
        let value = head.slice(field.value.0..field.value.0 + field.value.1);
        let value = HeaderValue::from_maybe_shared(value)
            .map_err(|_| ServerError::Framing("invalid field value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// RFC 9112 §6.3, strictly: a `Transfer-Encoding` must be exactly one
/// `chunked` and come without `Content-Length`; a `Content-Length` must be
/// one valid number. Anything else is how parsers are made to disagree on
/// where a response ends.
fn framing(
    status: StatusCode,
    version: Version,
    headers: &HeaderMap,
    head_request: bool,
) -> Result<Framing, ServerError> {
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(ServerError::Framing("Content-Length sent more than once"));
    }
    let mut codings = headers.get_all(header::TRANSFER_ENCODING).iter();
    let coding = codings.next();
    if coding.is_some() && codings.next().is_some() {
        return Err(ServerError::Framing(
            "Transfer-Encoding sent more than once",
        ));
    }
    // RFC 9112 §6.1: an HTTP/1.0 message's framing is faulty with one.
    if coding.is_some() && version == Version::HTTP_10 {
        return Err(ServerError::Framing(
            "Transfer-Encoding in an HTTP/1.0 response",
        ));
    }
    if coding.is_some() && length.is_some() {
        return Err(ServerError::Framing(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if let Some(coding) = coding {
        let chunked = coding
            .to_str()
            .is_ok_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        if !chunked {
            return Err(ServerError::Framing(
                "Transfer-Encoding other than a single chunked",
            ));
        }
    }
    let length = match length {
        None => None,
        Some(value) => Some(parse_length(value.as_bytes())?),
    };
    let bodiless = head_request
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED;
    Ok(match (bodiless, coding, length) {
        (true, _, _) => Framing::Empty,
        (false, Some(_), _) => Framing::Chunked,
        (false, None, Some(0)) => Framing::Empty,
        (false, None, Some(length)) => Framing::Length(length),
        (false, None, None) => Framing::UntilClose,
    })
}

fn parse_length(value: &[u8]) -> Result<u64, ServerError> {
    let invalid = ServerError::Framing("invalid Content-Length");
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid);
    }
    value
        .iter()
        .try_fold(0u64, |n, d| {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        })
        .ok_or(invalid)
}

/// HTTP/1.1 keeps the connection unless `Connection: close`; HTTP/1.0 only
/// with `Connection: keep-alive`.
fn keeps_alive(version: Version, headers: &HeaderMap) -> bool {
    let has = |token: &str| {
        headers.get_all(header::CONNECTION).iter().any(|value| {
            value
                .as_bytes()
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
        })
    };
    match version {
        Version::HTTP_10 => has("keep-alive"),
        _ => !has("close"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(bytes: &[u8], head_request: bool) -> Result<Option<ResponseHead>, ServerError> {
        parse_response(&mut BytesMut::from(bytes), head_request)
    }

    #[test]
    fn a_head_in_pieces_is_partial_until_complete_and_leaves_the_body() {
        let whole = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok";
        for cut in 0..whole.len() - 2 {
            assert!(
                parse(&whole[..cut], false).unwrap().is_none(),
                "cut at {cut}"
            );
        }
        let mut buf = BytesMut::from(&whole[..]);
        let head = parse_response(&mut buf, false).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(2));
        assert!(head.keep_alive);
        assert_eq!(head.headers["x-a"], "b");
        assert_eq!(&buf[..], b"ok");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let framing = |bytes: &[u8], head| parse(bytes, head).unwrap().unwrap().framing;
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\n\r\n", false),
            Framing::UntilClose
        );
        assert_eq!(
            framing(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n", true),
            Framing::Empty
        );
        assert_eq!(framing(b"HTTP/1.1 204 No\r\n\r\n", false), Framing::Empty);
        assert_eq!(framing(b"HTTP/1.1 304 No\r\n\r\n", false), Framing::Empty);
        assert_eq!(
            framing(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: Chunked\r\n\r\n",
                false
            ),
            Framing::Chunked
        );
        let until_close = parse(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap().unwrap();
        assert!(!until_close.keep_alive);
    }

    #[test]
    fn keep_alive_depends_on_version_and_connection() {
        let keeps = |bytes: &[u8]| parse(bytes, false).unwrap().unwrap().keep_alive;
        assert!(!keeps(
            b"HTTP/1.1 200 OK\r\nConnection: x, Close\r\nContent-Length: 0\r\n\r\n"
        ));
        assert!(!keeps(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"));
        assert!(keeps(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n"
        ));
    }

    #[test]
    fn conflicting_or_invalid_framing_is_refused() {
        for bad in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(
                parse(bad, false).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
