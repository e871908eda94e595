//! Routing through a running wharf: by host (exact, `*.suffix`, with a port,
//! case-insensitively) and by path prefix; the first matching route wins, and
//! a request no route matches gets a 404.

mod support;

use support::*;

struct Setup {
    _wharf: Running,
    addr: std::net::SocketAddr,
    backends: Vec<Backend>,
}

impl Setup {
    /// One backend (and pool) per route, named like the pool; no catch-all route.
    async fn start() -> Setup {
        let names = ["api", "app", "wild", "static", "other"];
        let mut backends = Vec::new();
        for name in names {
            backends.push(Backend::normal(name).await);
        }
        let pools: String = backends
            .iter()
            .map(|b| format!("[pool.{}]\nservers = [\"{}\"]\n\n", b.name, b.addr))
            .collect();
        let toml = format!(
            r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[listener.route]]
host = "app.example.com"
path_prefix = "/api/"
pool = "api"

[[listener.route]]
host = "app.example.com"
pool = "app"

[[listener.route]]
host = "*.example.com"
pool = "wild"

[[listener.route]]
path_prefix = "/static/"
pool = "static"

[[listener.route]]
host = "Other.Test"
pool = "other"

{pools}
"#
        );
        let wharf = start_wharf(&toml).await;
        let addr = public(&wharf);
        Setup {
            _wharf: wharf,
            addr,
            backends,
        }
    }

    /// Which backend answers `GET path` with `Host: host` (or "404").
    async fn route(&self, host: &str, path: &str) -> String {
        let reply = get(self.addr, host, path).await;
        match reply.status.as_u16() {
            200 => {
                assert_eq!(reply.text(), reply.backend(), "body names the backend");
                reply.backend()
            }
            404 => "404".to_owned(),
            other => panic!(
                "unexpected status {other} for {host}{path}: {}",
                reply.text()
            ),
        }
    }

    fn backend(&self, name: &str) -> &Backend {
        self.backends.iter().find(|b| b.name == name).unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_host_and_path_prefix() {
    let s = Setup::start().await;
    assert_eq!(s.route("app.example.com", "/api/users").await, "api");
    assert_eq!(s.route("app.example.com", "/api/").await, "api");
    assert_eq!(s.route("app.example.com", "/api/x?y=/z").await, "api");
    // The prefix is matched byte for byte: `/api` is not `/api/`, nor `/API/`.
    assert_eq!(s.route("app.example.com", "/api").await, "app");
    assert_eq!(s.route("app.example.com", "/API/users").await, "app");
    assert_eq!(s.route("app.example.com", "/").await, "app");
    // The backend gets the path and query untouched.
    let seen = s.backend("api").last_seen();
    assert_eq!(seen.uri.to_string(), "/api/x?y=/z");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_matching_ignores_case_port_and_trailing_dot() {
    let s = Setup::start().await;
    assert_eq!(s.route("APP.Example.COM", "/api/v1").await, "api");
    assert_eq!(s.route("app.example.com:8080", "/api/v1").await, "api");
    assert_eq!(s.route("App.Example.Com:443", "/").await, "app");
    assert_eq!(s.route("app.example.com.", "/").await, "app");
    // A route's host is matched case-insensitively whatever case the config used.
    assert_eq!(s.route("other.test", "/").await, "other");
    assert_eq!(s.route("OTHER.TEST:81", "/").await, "other");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wildcard_host_matches_subdomains_only() {
    let s = Setup::start().await;
    assert_eq!(s.route("www.example.com", "/").await, "wild");
    assert_eq!(s.route("a.b.example.com", "/api/x").await, "wild");
    assert_eq!(s.route("WWW.EXAMPLE.COM:9000", "/").await, "wild");
    // `*.example.com` is not `example.com`, nor a host that merely ends in it.
    assert_eq!(s.route("example.com", "/").await, "404");
    assert_eq!(s.route("badexample.com", "/").await, "404");
    assert_eq!(s.route("example.com.evil.test", "/").await, "404");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_matching_route_wins() {
    let s = Setup::start().await;
    // `/static/` (route 4) comes before the `other.test` host route (5).
    assert_eq!(s.route("other.test", "/static/logo.png").await, "static");
    // A host route before `/static/` wins over it.
    assert_eq!(s.route("www.example.com", "/static/logo.png").await, "wild");
    assert_eq!(s.route("app.example.com", "/static/logo.png").await, "app");
    assert_eq!(s.route("unknown.test", "/static/logo.png").await, "static");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_matching_route_is_404_with_a_plain_text_body() {
    let s = Setup::start().await;
    let reply = get(s.addr, "nothing.test", "/").await;
    assert_eq!(reply.status, 404);
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain")),
        "{:?}",
        reply.headers
    );
    assert!(
        !reply.body.is_empty() && reply.body.len() < 200,
        "{:?}",
        reply.text()
    );
    // No backend saw anything.
    for b in &s.backends {
        assert_eq!(b.requests(), 0, "backend {} saw a request", b.name);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_routes_by_its_authority() {
    let s = Setup::start().await;
    let mut client = RawClient::connect(s.addr).await;
    // RFC 9112 §3.2.2: the authority of an absolute-form target wins over Host.
    let response = client
        .request(b"GET http://app.example.com/api/v2 HTTP/1.1\r\nHost: app.example.com\r\n\r\n")
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-backend"), Some("api"));
    let response = client
        .request(b"GET http://www.example.com/ HTTP/1.1\r\nHost: www.example.com\r\n\r\n")
        .await;
    assert_eq!(response.header("x-backend"), Some("wild"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_without_host_matches_only_routes_without_host() {
    let s = Setup::start().await;
    let mut client = RawClient::connect(s.addr).await;
    let response = client.request(b"GET /static/a.css HTTP/1.0\r\n\r\n").await;
    assert_eq!(response.status, 200);
    assert_eq!(response.header("x-backend"), Some("static"));
    let mut client = RawClient::connect(s.addr).await;
    let response = client.request(b"GET /other HTTP/1.0\r\n\r\n").await;
    assert_eq!(response.status, 404);
}
