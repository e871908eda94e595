//! Who may use the admin listener, checked before any request is answered.
//!
//! - With `[admin] token`, every request but the status page itself (`GET
//!   /status`, `GET /`: a page with no data, which then asks for the token)
//!   needs `Authorization: Bearer <token>`. The token is compared in constant
//!   time (both sides hashed first, so that not even its length leaks).
//! - A request without the token — all of them when no token is set, which
//!   the config allows on loopback only — must carry a `Host` naming the
//!   admin listener: `localhost` or a loopback or the bound IP literal, with
//!   the admin port. A web page that rebinds its own DNS name to 127.0.0.1
//!   sends its own name, and is refused (DNS rebinding).
//! - A state change (`POST`) without the token must say `Content-Type:
//!   application/json`, which a page in a browser cannot send across origins
//!   without a CORS preflight, and the admin listener never allows one.
//!
//! A request with the right token may come from anywhere by any name: a
//! browser never adds a bearer token on its own, so the token is proof of
//! intent.

use std::net::{IpAddr, SocketAddr};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::api;

/// What the guard knows of the admin listener.
#[derive(Debug, Clone)]
pub struct Access {
    /// SHA-256 of the token, if one is set.
    token: Option<[u8; 32]>,
    /// The admin listener's bound address.
    local: SocketAddr,
}

impl Access {
    pub fn new(token: Option<&str>, local: SocketAddr) -> Access {
        Access {
            token: token.map(digest),
            local,
        }
    }

    /// `Ok` if the request may be answered; else why not.
    pub fn check(&self, parts: &Parts) -> Result<(), Refusal> {
        let public_page =
            parts.method == Method::GET && matches!(parts.uri.path(), "/" | "/status" | "/status/");
        if public_page {
            return Ok(());
        }
        if let Some(expected) = &self.token {
            return match bearer(parts) {
                Some(given) if bool::from(digest(given).ct_eq(expected)) => Ok(()),
                Some(_) => Err(Refusal::Unauthorized("wrong admin token")),
                None => Err(Refusal::Unauthorized(
                    "the admin listener needs `Authorization: Bearer <token>`",
                )),
            };
        }
        if !self.host_names_me(parts) {
            return Err(Refusal::Forbidden(
                "the Host header does not name the admin listener (use its address, e.g. 127.0.0.1:PORT)",
            ));
        }
        if parts.method == Method::POST && !is_json(parts) {
            return Err(Refusal::Forbidden(
                "a state change needs `Content-Type: application/json` (or the admin token)",
            ));
        }
        Ok(())
    }

    /// Whether `Host` is `localhost`, a loopback address or the bound
    /// address, with the admin port.
    fn host_names_me(&self, parts: &Parts) -> bool {
        let Some(host) = parts.headers.get(header::HOST) else {
            return false;
        };
        let Ok(host) = host.to_str() else {
            return false;
        };
        let Some((name, port)) = split_host(host) else {
            return false;
        };
        if port != Some(self.local.port()) {
            return false;
        }
        if name.eq_ignore_ascii_case("localhost") {
            return true;
        }
        match name
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(ip) => ip.is_loopback() || ip == self.local.ip(),
            Err(_) => false,
        }
    }
}

/// `name` and `port` of a `Host` value (`[::1]:9090`, `localhost:9090`).
fn split_host(host: &str) -> Option<(String, Option<u16>)> {
    let authority: http::uri::Authority = host.parse().ok()?;
    Some((authority.host().to_owned(), authority.port_u16()))
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn is_json(parts: &Parts) -> bool {
    parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Why a request is not answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No token, or the wrong one: `401`.
    Unauthorized(&'static str),
    /// A `Host` or content type a browser page could have sent: `403`.
    Forbidden(&'static str),
}

impl Refusal {
    pub fn response(self) -> Response<Full<Bytes>> {
        match self {
            Refusal::Unauthorized(message) => {
                let mut response = api::error(StatusCode::UNAUTHORIZED, message);
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"wharf admin\""),
                );
                response
            }
            Refusal::Forbidden(message) => api::error(StatusCode::FORBIDDEN, message),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, path: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().method(method).uri(path);
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    fn status(access: &Access, parts: &Parts) -> u16 {
        match access.check(parts) {
            Ok(()) => 200,
            Err(refusal) => refusal.response().status().as_u16(),
        }
    }

    #[test]
    fn without_a_token_the_host_must_name_the_listener() {
        let access = Access::new(None, "127.0.0.1:9090".parse().unwrap());
        for host in [
            "127.0.0.1:9090",
            "localhost:9090",
            "[::1]:9090",
            "127.0.0.2:9090",
        ] {
            let p = parts(Method::GET, "/api/status", &[("host", host)]);
            assert_eq!(status(&access, &p), 200, "{host}");
        }
        for host in [
            "evil.example:9090",
            "127.0.0.1:80",
            "127.0.0.1",
            "10.0.0.1:9090",
            "a b",
        ] {
            let p = parts(Method::GET, "/api/status", &[("host", host)]);
            assert_eq!(status(&access, &p), 403, "{host}");
        }
        let p = parts(Method::GET, "/api/status", &[]);
        assert_eq!(status(&access, &p), 403);
        // The page itself carries no data.
        let p = parts(Method::GET, "/status", &[("host", "evil.example:9090")]);
        assert_eq!(status(&access, &p), 200);
    }

    #[test]
    fn without_a_token_state_changes_need_json() {
        let access = Access::new(None, "127.0.0.1:9090".parse().unwrap());
        let path = "/api/pools/web/servers/127.0.0.1:3001/drain";
        let host = ("host", "127.0.0.1:9090");
        let form = ("content-type", "application/x-www-form-urlencoded");
        assert_eq!(status(&access, &parts(Method::POST, path, &[host])), 403);
        assert_eq!(
            status(&access, &parts(Method::POST, path, &[host, form])),
            403
        );
        let json = ("content-type", "application/json; charset=utf-8");
        assert_eq!(
            status(&access, &parts(Method::POST, path, &[host, json])),
            200
        );
    }

    #[test]
    fn with_a_token_everything_but_the_page_needs_it() {
        let access = Access::new(Some("s3cret-token"), "0.0.0.0:9090".parse().unwrap());
        let path = "/api/pools/web/servers/127.0.0.1:3001/drain";
        let anywhere = ("host", "lb1.example:9090");
        assert_eq!(
            status(&access, &parts(Method::GET, "/metrics", &[anywhere])),
            401
        );
        let wrong = ("authorization", "Bearer s3cret-tokeN");
        assert_eq!(
            status(&access, &parts(Method::GET, "/metrics", &[wrong])),
            401
        );
        let right = ("authorization", "Bearer s3cret-token");
        assert_eq!(
            status(&access, &parts(Method::GET, "/metrics", &[anywhere, right])),
            200
        );
        assert_eq!(
            status(&access, &parts(Method::POST, path, &[anywhere, right])),
            200
        );
        assert_eq!(status(&access, &parts(Method::GET, "/status", &[])), 200);
        assert!(
            access
                .check(&parts(Method::GET, "/metrics", &[]))
                .unwrap_err()
                .response()
                .headers()
                .contains_key(header::WWW_AUTHENTICATE)
        );
    }
}
