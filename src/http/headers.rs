//! Header rewriting between client and server: hop-by-hop headers removed
//! (RFC 9110 §7.6.1), forwarding headers set to what wharf saw, and the
//! upgrade a client asked for.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::upstream::ExtraField;

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
    // One pass over the few names a message has, rather than a hashed
    // lookup for each of the eight hop-by-hop names: most messages carry
    // none or one of them (callgrind: 2,000 instructions per request before).
    let mut doomed: Vec<HeaderName> = Vec::new();
    for name in headers.keys() {
        if HOP_BY_HOP.contains(name) {
            doomed.push(name.clone());
        }
    }
    if doomed.contains(&header::CONNECTION) {
        let listed = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
            // `Host` is what wharf routed on: a client cannot have it dropped.
            .filter(|name| *name != header::HOST)
            .collect::<Vec<_>>();
        doomed.extend(listed);
    }
    for name in doomed {
        headers.remove(name);
    }
}

/// Drops the trailer fields of a client's request body that a server could
/// take for what wharf vouches for, if it merges trailers into the header
/// section: forwarding fields (and their `_` lookalikes), `Proxy`, and
/// fields that frame or route a message or describe a connection, which
/// RFC 9110 §6.5.1 forbids in trailers.
pub fn strip_request_trailers(trailers: &mut HeaderMap) {
    let doomed: Vec<HeaderName> = trailers
        .keys()
        .filter(|name| {
            HOP_BY_HOP.contains(name)
                || [header::CONTENT_LENGTH, header::HOST, header::TRAILER, PROXY].contains(name)
                || is_forwarding(name.as_str())
                || is_forwarding_lookalike(name.as_str())
        })
        .cloned()
        .collect();
    for name in doomed {
        trailers.remove(name);
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

/// What the forwarding headers say of a client connection, made once for
/// all the requests on it (not per request: formatting addresses showed in
/// profiles of the proxy path).
#[derive(Debug)]
pub struct ClientForwarding {
    /// The client's address as text (an IPv4-mapped one as IPv4).
    ip: HeaderValue,
    /// `http` or `https`.
    proto: &'static str,
    /// The port the client connected to.
    port: HeaderValue,
    /// `for=...;proto=...`: this hop's `Forwarded` element without the host.
    element: String,
    /// The last `Host` seen and the `Forwarded` element made with it: a
    /// connection's requests nearly always name the same host.
    last: std::sync::Mutex<Option<(HeaderValue, HeaderValue)>>,
}

impl ClientForwarding {
    pub fn new(ip: IpAddr, proto: &'static str, port: u16) -> Self {
        let ip = ip.to_canonical();
        let mut element = match ip {
            IpAddr::V4(v4) => format!("for={v4}"),
            // RFC 7239 §6: IPv6 addresses are bracketed and the value quoted.
            IpAddr::V6(v6) => format!("for=\"[{v6}]\""),
        };
        element.push_str(";proto=");
        element.push_str(proto);
        ClientForwarding {
            ip: header_value(&ip.to_string()),
            proto,
            port: HeaderValue::from(port),
            element,
            last: std::sync::Mutex::new(None),
        }
    }

    /// This hop's `Forwarded` element, with `host` if the client named one.
    fn element(&self, host: Option<&HeaderValue>) -> HeaderValue {
        let Some(host) = host else {
            return header_value(&self.element);
        };
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seen, element)) = last.as_ref()
            && seen == host
        {
            return element.clone();
        }
        let element = match host.to_str() {
            Ok(text) => header_value(&format!("{};host={}", self.element, forwarded_value(text))),
            Err(_) => header_value(&self.element),
        };
        *last = Some((host.clone(), element.clone()));
        element
    }
}

/// What wharf saw of the client, written into forwarding headers.
#[derive(Debug, Clone)]
pub struct ClientInfo<'a> {
    pub client: &'a ClientForwarding,
    /// The `Host` the client sent, if any.
    pub host: Option<&'a HeaderValue>,
    /// Whether the peer is one of the listener's `trusted_proxies`, whose
    /// forwarding headers are appended to rather than replaced.
    pub trusted: bool,
}

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
const X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
const PROXY: HeaderName = HeaderName::from_static("proxy");

/// Headers that servers and frameworks read as the client's address,
/// scheme, host or path prefix, besides the ones wharf sets: from anyone but
/// a trusted proxy they are forgeries, and are dropped (as is any other
/// `X-Forwarded-*`).
const CLIENT_CLAIMS: [&str; 11] = [
    "true-client-ip",
    "x-client-ip",
    "x-cluster-client-ip",
    "client-ip",
    "cf-connecting-ip",
    "fastly-client-ip",
    "x-original-forwarded-for",
    "x-original-url",
    "x-rewrite-url",
    "x-original-host",
    "x-host",
];

/// Whether `name` reads as a forwarding header once `_` is taken for `-`
/// (as CGI-style servers map names).
fn is_forwarding_lookalike(name: &str) -> bool {
    name.contains('_') && is_forwarding(&name.replace('_', "-"))
}

/// Whether `name` (lower-case) is a forwarding header of any kind.
fn is_forwarding(name: &str) -> bool {
    name.starts_with("x-forwarded")
        || name == "forwarded"
        || name == "x-real-ip"
        || CLIENT_CLAIMS.contains(&name)
}

/// Sets `X-Forwarded-For`, `-Proto`, `-Host`, `-Port`, `X-Real-IP` and
/// `Forwarded` (RFC 7239) to what wharf saw, and removes `Proxy` (httpoxy).
///
/// From a client, values it sent are replaced, never appended to, and other
/// forwarding headers (`X-Forwarded-Prefix`, `True-Client-IP`, ...) are
/// dropped: wharf is the edge, and a client could otherwise forge its
/// address. From a trusted proxy, `X-Forwarded-For` and `Forwarded` are
/// appended to (as HAProxy and nginx do) and its other forwarding headers
/// are kept. From anyone, a name that would read as a forwarding header with
/// `_` taken for `-` (`X_Forwarded_For`, as CGI-style servers map names) is
/// dropped.
///
/// From a client, wharf's own fields are returned rather than inserted: they
/// are written after the client's fields when the head is encoded
/// ([`crate::upstream::RequestHead::encode`]). Six hashed inserts into the
/// map cost about 1,400 instructions per request (callgrind); writing them
/// costs a fraction of that.
pub fn set_forwarded(headers: &mut HeaderMap, client: &ClientInfo<'_>) -> Vec<ExtraField> {
    headers.remove(PROXY);
    let lookalikes: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_forwarding_lookalike(name.as_str()))
        .cloned()
        .collect();
    for name in lookalikes {
        headers.remove(name);
    }
    let seen = client.client;
    // A `Host` that is not visible ASCII was refused before this point.
    let host = client.host.filter(|h| h.to_str().is_ok());
    let element = seen.element(host);
    if client.trusted {
        append_list(headers, X_FORWARDED_FOR, ip_text(seen));
        append_list(
            headers,
            header::FORWARDED,
            element.to_str().unwrap_or_default(),
        );
        for (name, value) in [
            (
                X_FORWARDED_PROTO,
                Some(HeaderValue::from_static(seen.proto)),
            ),
            (X_FORWARDED_HOST, host.cloned()),
            (X_FORWARDED_PORT, Some(seen.port.clone())),
            (X_REAL_IP, Some(seen.ip.clone())),
        ] {
            if let (false, Some(value)) = (headers.contains_key(&name), value) {
                headers.insert(name, value);
            }
        }
        return Vec::new();
    }
    let forged: Vec<HeaderName> = headers
        .keys()
        .filter(|name| is_forwarding(name.as_str()))
        .cloned()
        .collect();
    for name in forged {
        headers.remove(name);
    }
    let mut fields = Vec::with_capacity(6);
    fields.push((X_FORWARDED_FOR, seen.ip.clone()));
    fields.push((X_REAL_IP, seen.ip.clone()));
    fields.push((X_FORWARDED_PROTO, HeaderValue::from_static(seen.proto)));
    fields.push((X_FORWARDED_PORT, seen.port.clone()));
    if let Some(host) = host {
        fields.push((X_FORWARDED_HOST, host.clone()));
    }
    fields.push((header::FORWARDED, element));
    fields
}

fn ip_text(seen: &ClientForwarding) -> &str {
    // Made from an address: always visible ASCII.
    seen.ip.to_str().unwrap_or_default()
}

/// Appends `value` to the comma-separated list in `name` (several lines
/// joined into one), or sets it.
fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let mut list: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    list.push(value);
    let joined = list.join(", ");
    headers.insert(name, header_value(&joined));
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

    /// The map as the server sees it: the client's fields, then wharf's.
    fn forward(h: &mut HeaderMap, client: &ClientInfo<'_>) {
        for (name, value) in set_forwarded(h, client) {
            assert!(!h.contains_key(&name), "{name} sent twice");
            h.insert(name, value);
        }
    }

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
    fn every_hop_by_hop_name_goes_with_or_without_connection() {
        for with_connection in [false, true] {
            let mut h = HeaderMap::new();
            for name in HOP_BY_HOP
                .iter()
                .filter(|n| with_connection || **n != header::CONNECTION)
            {
                h.append(name, HeaderValue::from_static("x"));
                h.append(name, HeaderValue::from_static("y"));
            }
            h.insert("x-kept", HeaderValue::from_static("yes"));
            remove_hop_by_hop(&mut h);
            assert_eq!(h.keys().collect::<Vec<_>>(), ["x-kept"]);
        }
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
        let seen = ClientForwarding::new("::1".parse().unwrap(), "http", 8080);
        let client = ClientInfo {
            client: &seen,
            host: Some(&host),
            trusted: false,
        };
        forward(&mut h, &client);
        assert_eq!(h["x-forwarded-for"], "::1");
        assert_eq!(h["x-forwarded-host"], "app.test:8080");
        assert_eq!(
            h[header::FORWARDED],
            "for=\"[::1]\";proto=http;host=\"app.test:8080\""
        );
    }

    #[test]
    fn each_request_gets_its_own_host_though_the_connection_remembers_the_last() {
        let seen = ClientForwarding::new("10.0.0.9".parse().unwrap(), "http", 80);
        for host in ["a.test", "b.test", "b.test", "a.test"] {
            let value = HeaderValue::from_static(host);
            let mut h = HeaderMap::new();
            let client = ClientInfo {
                client: &seen,
                host: Some(&value),
                trusted: false,
            };
            forward(&mut h, &client);
            assert_eq!(
                h[header::FORWARDED],
                format!("for=10.0.0.9;proto=http;host={host}")
            );
            assert_eq!(h["x-forwarded-host"], host);
        }
    }

    #[test]
    fn ipv4_mapped_addresses_are_shown_as_ipv4() {
        let mut h = HeaderMap::new();
        let seen = ClientForwarding::new("::ffff:10.1.2.3".parse().unwrap(), "https", 443);
        let client = ClientInfo {
            client: &seen,
            host: None,
            trusted: false,
        };
        forward(&mut h, &client);
        assert_eq!(h["x-forwarded-for"], "10.1.2.3");
        assert_eq!(h[header::FORWARDED], "for=10.1.2.3;proto=https");
    }

    #[test]
    fn client_claims_are_dropped_and_trusted_proxies_appended_to() {
        let claims = [
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-port", "1"),
            ("x-real-ip", "6.6.6.6"),
            ("true-client-ip", "6.6.6.6"),
            ("x-original-url", "/admin"),
            ("x_forwarded_for", "6.6.6.6"),
            ("proxy", "http://evil.test/"),
        ];
        let headers = || {
            let mut h = HeaderMap::new();
            for (name, value) in claims {
                h.append(name, HeaderValue::from_static(value));
            }
            h
        };
        let seen = ClientForwarding::new("10.0.0.9".parse().unwrap(), "https", 8443);
        let client = |trusted| ClientInfo {
            client: &seen,
            host: None,
            trusted,
        };
        let mut h = headers();
        forward(&mut h, &client(false));
        assert_eq!(h["x-forwarded-for"], "10.0.0.9");
        assert_eq!(h["x-real-ip"], "10.0.0.9");
        assert_eq!(h["x-forwarded-port"], "8443");
        for gone in [
            "x-forwarded-prefix",
            "true-client-ip",
            "x-original-url",
            "x_forwarded_for",
            "proxy",
        ] {
            assert!(!h.contains_key(gone), "{gone} kept");
        }
        let mut h = headers();
        forward(&mut h, &client(true));
        assert_eq!(h["x-forwarded-for"], "6.6.6.6, 10.0.0.9");
        assert_eq!(h["x-forwarded-prefix"], "/admin");
        assert_eq!(h["x-real-ip"], "6.6.6.6");
        assert_eq!(h["x-forwarded-port"], "1");
        assert_eq!(h[header::FORWARDED], "for=10.0.0.9;proto=https");
        assert!(!h.contains_key("x_forwarded_for"));
        assert!(!h.contains_key("proxy"));
    }
}
