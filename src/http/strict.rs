//! Strictness beyond what hyper enforces, as one check per request and one
//! per response, so that wharf refuses whatever HAProxy or nginx refuse.
//!
//! hyper (with httparse) already refuses, with 400 or 431 and a close: a
//! malformed request line or header line, control bytes in names or values,
//! obsolete line folding, a space before the colon, differing or invalid
//! `Content-Length`s, `Transfer-Encoding` whose last coding is not `chunked`
//! or on HTTP/1.0, bad chunk framing, more than `limits.headers` fields and a
//! head over `limits.request_head` (both set on its builder in `serve`).
//! What it lets through, and this module refuses:
//!
//! - `Transfer-Encoding` other than a single `chunked` (`chunked, chunked`,
//!   `identity, chunked`, two header lines): 400;
//! - `Content-Length` twice, or with `Transfer-Encoding` (seen by the
//!   [`framing`](super::framing) tap, since hyper hides both): 400;
//! - a header field over `limits.header_field`: 431 (RFC 6585 §5);
//! - a request target over `limits.request_line`: 414;
//! - a path that cannot be normalised safely (an encoded `/` or NUL, a
//!   broken percent-escape): 400. Routing uses the normalised path
//!   (RFC 3986 §6.2.2: unreserved escapes decoded, dot segments removed),
//!   and the server receives that same path.
//!
//! A response from a server with `Content-Length` twice, or with both
//! `Content-Length` and `Transfer-Encoding`, or a `Transfer-Encoding` other
//! than `chunked`, is refused (502) and its connection dropped, as nginx
//! does; hyper itself refuses garbage status lines and oversized heads.

use std::borrow::Cow;

use http::header::{self, HeaderMap};
use http::uri::PathAndQuery;
use http::{Method, Uri};

use super::framing::FramingFault;
use crate::config::Limits;

/// Why a request is refused before it goes anywhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The request's framing or syntax is one parsers may disagree on.
    #[error("{0}")]
    Framing(&'static str),
    #[error("a header field over {0} bytes")]
    FieldTooLarge(usize),
    #[error("a request target over {0} bytes")]
    TargetTooLong(usize),
    #[error("path cannot be normalised safely: {0}")]
    Path(&'static str),
}

impl Refusal {
    pub fn status(self) -> http::StatusCode {
        match self {
            Refusal::Framing(_) | Refusal::Path(_) => http::StatusCode::BAD_REQUEST,
            Refusal::FieldTooLarge(_) => http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::TargetTooLong(_) => http::StatusCode::URI_TOO_LONG,
        }
    }
}

/// Checks a request head as hyper parsed it (and as the tap saw it), and
/// returns its URI with the path normalised if that changed it.
pub fn check_request(
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    framing: Option<FramingFault>,
    limits: &Limits,
) -> Result<Option<Uri>, Refusal> {
    if let Some(fault) = framing {
        return Err(Refusal::Framing(fault.reason()));
    }
    // As nginx: methods are upper-case letters, `-` and `_` (RFC 9110 §9.1:
    // case-sensitive; `get` is not GET, and a server may think otherwise).
    if !method
        .as_str()
        .bytes()
        .all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_')
    {
        return Err(Refusal::Framing("a method that is not upper-case"));
    }
    let target = match uri.path_and_query() {
        Some(pq) => pq.as_str().len(),
        None => uri.authority().map_or(0, |a| a.as_str().len()),
    };
    if target > limits.request_line {
        return Err(Refusal::TargetTooLong(limits.request_line));
    }
    for (name, value) in headers {
        // As the field line's size: name, colon, space, value.
        if name.as_str().len() + 2 + value.len() > limits.header_field {
            return Err(Refusal::FieldTooLarge(limits.header_field));
        }
    }
    single_chunked(headers).map_err(Refusal::Framing)?;
    normalize_uri(uri)
}

/// `uri` with its path normalised, if that changes it.
fn normalize_uri(uri: &Uri) -> Result<Option<Uri>, Refusal> {
    let Cow::Owned(path) = normalize_path(uri.path())? else {
        return Ok(None);
    };
    let path_and_query = match uri.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(
        PathAndQuery::try_from(path_and_query)
            .map_err(|_| Refusal::Path("not a valid path once normalised"))?,
    );
    Uri::from_parts(parts)
        .map(Some)
        .map_err(|_| Refusal::Path("not a valid path once normalised"))
}

/// `Transfer-Encoding`, if present, must be exactly one `chunked`: any other
/// coding is one wharf (and most servers) cannot decode, and a list is how
/// parsers are made to disagree on the framing.
fn single_chunked(headers: &HeaderMap) -> Result<(), &'static str> {
    let mut values = headers.get_all(header::TRANSFER_ENCODING).iter();
    let Some(first) = values.next() else {
        return Ok(());
    };
    if values.next().is_some() {
        return Err("Transfer-Encoding sent more than once");
    }
    let value = first.to_str().map_err(|_| "invalid Transfer-Encoding")?;
    if !value.trim().eq_ignore_ascii_case("chunked") {
        return Err("Transfer-Encoding other than a single chunked");
    }
    Ok(())
}

/// The path normalised per RFC 3986 §6.2.2: percent-escapes of unreserved
/// characters decoded, other escapes upper-cased, dot segments removed
/// (§5.2.4). Borrowed when nothing changes (the common case, one scan).
pub fn normalize_path(path: &str) -> Result<Cow<'_, str>, Refusal> {
    let bytes = path.as_bytes();
    let needs_work =
        bytes.contains(&b'%') || bytes.windows(2).any(|w| w[0] == b'/' && w[1] == b'.');
    if !needs_work {
        return Ok(Cow::Borrowed(path));
    }
    let decoded = decode_unreserved(bytes)?;
    Ok(Cow::Owned(remove_dot_segments(&decoded)))
}

fn decode_unreserved(bytes: &[u8]) -> Result<String, Refusal> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b != b'%' {
            out.push(b as char);
            i += 1;
            continue;
        }
        let hex = |at: usize| bytes.get(at).and_then(|&h| (h as char).to_digit(16));
        let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2)) else {
            return Err(Refusal::Path("a broken percent-escape"));
        };
        let decoded = (high * 16 + low) as u8;
        match decoded {
            b'/' => return Err(Refusal::Path("an encoded `/`")),
            0 => return Err(Refusal::Path("an encoded NUL")),
            b if b.is_ascii_alphanumeric() || b"-._~".contains(&b) => out.push(b as char),
            b => {
                out.push('%');
                out.push_str(&format!("{b:02X}"));
            }
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4, on a path that starts with `/` (origin-form) or not.
fn remove_dot_segments(path: &str) -> String {
    let mut output: Vec<&str> = Vec::new();
    let absolute = path.starts_with('/');
    let mut segments = path.split('/').peekable();
    if absolute {
        segments.next();
    }
    let mut trailing_slash = false;
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        match segment {
            "." => trailing_slash = last,
            ".." => {
                output.pop();
                trailing_slash = last;
            }
            s => {
                output.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut result = String::with_capacity(path.len());
    if absolute {
        result.push('/');
    }
    result.push_str(&output.join("/"));
    if trailing_slash && !result.ends_with('/') {
        result.push('/');
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_as_rfc_3986_says() {
        let cases = [
            ("/", "/"),
            ("/a/b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/../b", "/b"),
            ("/../b", "/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/.", "/a/b/"),
            ("/a/%2e%2E/b", "/b"),
            ("/%61dmin", "/admin"),
            ("/a%7e", "/a~"),
            ("/a%2a", "/a%2A"),
            ("/a%c3%a9", "/a%C3%A9"),
            ("/a//b", "/a//b"),
            ("/a/.hidden", "/a/.hidden"),
            ("/a/..b", "/a/..b"),
            ("/./", "/"),
            ("/a/b/../../..", "/"),
        ];
        for (raw, expected) in cases {
            assert_eq!(normalize_path(raw).unwrap(), expected, "for {raw}");
        }
    }

    #[test]
    fn unsafe_paths_are_refused() {
        for raw in ["/a%2fb", "/a%2F..", "/a%00", "/a%", "/a%g0", "/a%0"] {
            assert!(normalize_path(raw).is_err(), "{raw} accepted");
        }
    }

    #[test]
    fn transfer_encoding_must_be_a_single_chunked() {
        let with = |values: &[&'static str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::TRANSFER_ENCODING, v.parse().unwrap());
            }
            single_chunked(&h)
        };
        assert!(with(&[]).is_ok());
        assert!(with(&["chunked"]).is_ok());
        assert!(with(&[" Chunked "]).is_ok());
        assert!(with(&["chunked, chunked"]).is_err());
        assert!(with(&["identity, chunked"]).is_err());
        assert!(with(&["chunked", "chunked"]).is_err());
        assert!(with(&["gzip"]).is_err());
    }
}
