//! The key a hashing pool hashes, taken from the request.

use std::net::IpAddr;

use http::{HeaderMap, Uri};

use crate::balance::stable_hash;
use crate::config::HashKey;

use super::cookie;

/// The hash of the request's key, or `None` when the request lacks it (it is
/// then balanced by the pool's algorithm).
pub fn hash_of(key: &HashKey, headers: &HeaderMap, uri: &Uri, client_ip: IpAddr) -> Option<u64> {
    match key {
        HashKey::SourceIp => Some(source_ip_hash(client_ip)),
        HashKey::Header(name) => {
            let value = headers.get(name.as_str())?;
            Some(stable_hash(value.as_bytes()))
        }
        HashKey::Query(name) => query_param(uri.query()?, name).map(|v| stable_hash(v.as_bytes())),
        HashKey::Cookie(name) => cookie::find(headers, name).map(|v| stable_hash(v.as_bytes())),
        HashKey::Path(depth) => path_prefix(uri.path(), *depth).map(|p| stable_hash(p.as_bytes())),
    }
}

/// The hash of a client address (IPv4-mapped IPv6 as IPv4), the same for
/// HTTP and TCP pools.
pub fn source_ip_hash(ip: IpAddr) -> u64 {
    match ip.to_canonical() {
        IpAddr::V4(v4) => stable_hash(&v4.octets()),
        IpAddr::V6(v6) => stable_hash(&v6.octets()),
    }
}

/// The first value of parameter `name` in a query string, as sent (not decoded).
pub fn query_param<'q>(query: &'q str, name: &str) -> Option<&'q str> {
    query.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (key == name && !value.is_empty()).then_some(value)
    })
}

/// The first `depth` segments of `path` (`/echo/123/abc/xhr`, 3 → `/echo/123/abc`);
/// `None` when the path has fewer segments, so that requests without the full
/// key do not all land on one server.
fn path_prefix(path: &str, depth: usize) -> Option<&str> {
    let mut end = 0;
    for _ in 0..depth {
        let rest = path.get(end..)?.strip_prefix('/')?;
        let segment = rest.find('/').unwrap_or(rest.len());
        if segment == 0 {
            return None;
        }
        end += 1 + segment;
    }
    Some(&path[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_param_finds_the_first_non_empty_value() {
        assert_eq!(
            query_param("EIO=4&transport=polling&sid=abc", "sid"),
            Some("abc")
        );
        assert_eq!(query_param("sid=&sid=x", "sid"), Some("x"));
        assert_eq!(query_param("ssid=1", "sid"), None);
        assert_eq!(query_param("EIO", "EIO"), None);
    }

    #[test]
    fn path_prefix_takes_whole_segments() {
        assert_eq!(path_prefix("/echo/123/abc/xhr", 3), Some("/echo/123/abc"));
        assert_eq!(path_prefix("/echo/123/abc", 3), Some("/echo/123/abc"));
        assert_eq!(path_prefix("/echo/123", 3), None);
        assert_eq!(path_prefix("/echo//abc/xhr", 3), None);
        assert_eq!(path_prefix("/", 1), None);
    }
}
