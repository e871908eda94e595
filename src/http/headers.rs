//! Header rewriting between client and server: hop-by-hop headers removed
//! (RFC 9110 §7.6.1), forwarding headers set to what wharf saw, and the
//! upgrade a client asked for.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (plus any header
/// named in `Connection`). `Expect` is answered by wharf itself. `Trailer`
/// is not among them (RFC 9110 §6.6.2): it tells the receiver which trailer
/// fields follow, and hyper only forwards declared trailers.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::TE,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::EXPECT,
];

/// Removes hop-by-hop headers, including those that `Connection` lists.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    // `Host` is what wharf routed on: a client cannot have it dropped.
    for name in listed
        .iter()
        .filter(|n| **n != header::HOST)
        .chain(HOP_BY_HOP.iter())
    {
        headers.remove(name);
    }
}

/// Whether a request's `TE` accepts trailers (the only `TE` value forwarded).
pub fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

/// The upgrade protocols a request asks for (`Upgrade` with `Connection: upgrade`),
/// lower-cased, in the client's order.
pub fn requested_upgrades(headers: &HeaderMap) -> Vec<String> {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("upgrade"));
    if !connection_upgrade {
        return Vec::new();
    }
    headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_ascii_lowercase())
        .filter(|p| !p.is_empty())
        .collect()
}

/// The protocol named by a server's `Upgrade` header in a 101, lower-cased.
pub fn upgrade_protocol(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::UPGRADE)?.to_str().ok()?;
    Some(value.trim().to_ascii_lowercase())
}

/// Marks a request or response as an upgrade to `protocols`.
pub fn set_upgrade(headers: &mut HeaderMap, protocols: &str) {
    if let Ok(value) = HeaderValue::from_str(protocols) {
        headers.insert(header::UPGRADE, value);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// What wharf saw of the client, written into forwarding headers.
#[derive(Debug, Clone)]
pub struct ClientInfo<'a> {
    pub ip: IpAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The `Host` the client sent, if any.
    pub host: Option<&'a HeaderValue>,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Sets `X-Forwarded-For`, `-Proto`, `-Host` and `Forwarded` (RFC 7239) to what
/// wharf saw. Values the client sent are replaced, never appended to: wharf is
/// the edge, and a client could otherwise forge its address.
pub fn set_forwarded(headers: &mut HeaderMap, client: &ClientInfo<'_>) {
    headers.remove(header::FORWARDED);
    headers.remove(X_FORWARDED_HOST);
    let ip = client.ip.to_canonical();
    headers.insert(X_FORWARDED_FOR, header_value(&ip.to_string()));
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(client.proto));
    let mut forwarded = match ip {
        IpAddr::V4(v4) => format!("for={v4}"),
        // RFC 7239 §6: IPv6 addresses are bracketed and the value quoted.
        IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
    };
    forwarded.push_str(";proto=");
    forwarded.push_str(client.proto);
    if let Some(host) = client.host.and_then(|h| h.to_str().ok()) {
        headers.insert(X_FORWARDED_HOST, header_value(host));
        forwarded.push_str(";host=");
        forwarded.push_str(&forwarded_value(host));
    }
    headers.insert(header::FORWARDED, header_value(&forwarded));
}

/// A `Forwarded` parameter value: a token as is, anything else quoted (RFC 7239 §4).
fn forwarded_value(value: &str) -> String {
    let is_token = !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if is_token {
        return value.to_owned();
    }
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('"');
    for c in value.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    quoted
}

fn header_value(s: &str) -> HeaderValue {
    // Built from an IP address or from a header value we already parsed as
    // visible ASCII, so this cannot fail; an empty value is the safe fallback.
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removes_hop_by_hop_and_listed_headers() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert("x-kept", HeaderValue::from_static("yes"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn connection_cannot_remove_host() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("host"));
        h.insert(header::HOST, HeaderValue::from_static("app.test"));
        remove_hop_by_hop(&mut h);
        assert_eq!(h[header::HOST], "app.test");
    }

    #[test]
    fn upgrade_needs_connection_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(header::UPGRADE, HeaderValue::from_static("WebSocket"));
        assert!(requested_upgrades(&h).is_empty());
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        assert_eq!(requested_upgrades(&h), vec!["websocket"]);
    }

    #[test]
    fn forwarded_replaces_client_values() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        h.insert(header::FORWARDED, HeaderValue::from_static("for=6.6.6.6"));
        let host = HeaderValue::from_static("app.test:8080");
        let client = ClientInfo {
            ip: "::1".parse().unwrap(),
            proto: "http",
            host: Some(&host),
        };
        set_forwarded(&mut h, &client);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-host"], "app.test:8080");
        assert_eq!(
            h[header::FORWARDED],
            "for=\"[::1]\";proto=http;host=\"app.test:8080\""
        );
    }

    #[test]
    fn ipv4_mapped_addresses_are_shown_as_ipv4() {
        let mut h = HeaderMap::new();
        let client = ClientInfo {
            ip: "::ffff:10.1.2.3".parse().unwrap(),
            proto: "https",
            host: None,
        };
        set_forwarded(&mut h, &client);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h[header::FORWARDED], "for=10.1.2.3;proto=https");
    }
}
