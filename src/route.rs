//! Routing: which pool a request goes to, by host and path, or a TLS
//! connection by the server name of its ClientHello. First match wins.

use std::borrow::Cow;

use crate::config::{HostMatch, RouteConfig};

/// Finds the first route of `routes` matching `host` (as the client sent it,
/// possibly with a port) and `path`.
pub fn find<'a>(
    routes: &'a [RouteConfig],
    host: Option<&str>,
    path: &str,
) -> Option<&'a RouteConfig> {
    let host = host.map(normalize_host);
    routes
        .iter()
        .filter(|route| route.sni.is_none())
        .find(|route| {
            let host_ok = match &route.host {
                None => true,
                Some(wanted) => host.as_deref().is_some_and(|h| host_matches(wanted, h)),
            };
            let path_ok = route
                .path_prefix
                .as_deref()
                .is_none_or(|prefix| path.starts_with(prefix));
            host_ok && path_ok
        })
}

/// Finds the first TLS passthrough route whose `sni` matches `server_name`.
pub fn find_sni<'a>(routes: &'a [RouteConfig], server_name: &str) -> Option<&'a RouteConfig> {
    let name = normalize_host(server_name);
    routes.iter().find(|route| {
        route
            .sni
            .as_ref()
            .is_some_and(|wanted| host_matches(wanted, &name))
    })
}

/// Whether any route passes TLS through by SNI (then ClientHellos are read).
pub fn has_sni_routes(routes: &[RouteConfig]) -> bool {
    routes.iter().any(|route| route.sni.is_some())
}

fn host_matches(wanted: &HostMatch, host: &str) -> bool {
    match wanted {
        HostMatch::Exact(name) => host == name,
        HostMatch::Suffix(suffix) => host.len() > suffix.len() && host.ends_with(suffix.as_str()),
    }
}

/// Lower-cases the host and strips a port and a trailing dot:
/// `App.Example.com.:8443` → `app.example.com`, `[::1]:80` → `[::1]`.
fn normalize_host(host: &str) -> Cow<'_, str> {
    let without_port = if host.starts_with('[') {
        match host.find(']') {
            Some(end) => &host[..=end],
            None => host,
        }
    } else {
        host.rsplit_once(':').map_or(host, |(name, _)| name)
    };
    let name = without_port.trim_end_matches('.');
    // Most hosts are sent in lower case: no copy for them.
    if name.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(name.to_ascii_lowercase())
    } else {
        Cow::Borrowed(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(host: Option<HostMatch>, prefix: Option<&str>, pool: &str) -> RouteConfig {
        RouteConfig {
            host,
            path_prefix: prefix.map(str::to_owned),
            pool: pool.to_owned(),
            upgrades: vec!["websocket".into()],
            sni: None,
            websocket: Default::default(),
        }
    }

    #[test]
    fn first_match_wins_by_host_then_path() {
        let routes = [
            route(
                Some(HostMatch::Exact("app.example.com".into())),
                Some("/socket.io/"),
                "rt",
            ),
            route(Some(HostMatch::Suffix(".example.com".into())), None, "wild"),
            route(None, Some("/api"), "api"),
            route(None, None, "web"),
        ];
        let pool = |host, path| find(&routes, host, path).map(|r| r.pool.as_str());
        assert_eq!(
            pool(Some("App.Example.COM:8443"), "/socket.io/?EIO=4"),
            Some("rt")
        );
        assert_eq!(pool(Some("app.example.com"), "/other"), Some("wild"));
        assert_eq!(pool(Some("x.example.com."), "/"), Some("wild"));
        assert_eq!(pool(Some("example.com"), "/api/v1"), Some("api"));
        assert_eq!(pool(None, "/"), Some("web"));
    }

    #[test]
    fn no_route_matches() {
        let routes = [route(Some(HostMatch::Exact("a.test".into())), None, "a")];
        assert!(find(&routes, Some("b.test"), "/").is_none());
        assert!(find(&routes, None, "/").is_none());
    }

    #[test]
    fn host_normalization() {
        assert_eq!(normalize_host("[::1]:8080"), "[::1]");
        assert_eq!(normalize_host("Example.com"), "example.com");
    }
}
