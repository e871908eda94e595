//! The admin API's routes: from a method and a path to a JSON answer (the
//! endpoints are documented in [`super`]). Pure apart from setting a server's
//! admin state, so that any input gives an answer and nothing panics.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use super::json::{PoolView, ServerView};
use crate::snapshot::Snapshot;
use crate::upstream::AdminState;

/// The request paths the API knows, split into their decoded segments.
enum Route {
    /// `/api/pools`
    Pools,
    /// `/api/pools/{pool}`
    Pool(String),
    /// `/api/pools/{pool}/servers/{address}/{state}`
    SetServerState {
        pool: String,
        address: String,
        state: String,
    },
}

impl Route {
    /// The methods the route takes, for `405` and `Allow`.
    fn allow(&self) -> &'static str {
        match self {
            Route::Pools | Route::Pool(_) => "GET, HEAD",
            Route::SetServerState { .. } => "POST",
        }
    }

    fn takes(&self, method: &Method) -> bool {
        match self {
            Route::Pools | Route::Pool(_) => method == Method::GET || method == Method::HEAD,
            Route::SetServerState { .. } => method == Method::POST,
        }
    }
}

/// Answers one request; `client` is named as the cause of any change.
pub fn respond(
    method: &Method,
    path: &str,
    client: SocketAddr,
    snapshot: &Snapshot,
) -> Response<Full<Bytes>> {
    let route = match parse_path(path) {
        Ok(Some(route)) => route,
        Ok(None) => return error(StatusCode::NOT_FOUND, &format!("no such path: {path}")),
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    if !route.takes(method) {
        let mut response = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} takes {}, not {method}", route.allow()),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static(route.allow()));
        return response;
    }
    match route {
        Route::Pools => {
            #[derive(Serialize)]
            struct Pools {
                pools: Vec<PoolView>,
            }
            // In config order: the snapshot's own map has none.
            let pools = snapshot
                .config
                .pools
                .iter()
                .filter_map(|config| snapshot.pool(&config.name))
                .map(|pool| PoolView::of(pool))
                .collect();
            json(StatusCode::OK, &Pools { pools })
        }
        Route::Pool(name) => match snapshot.pool(&name) {
            Some(pool) => json(StatusCode::OK, &PoolView::of(pool)),
            None => no_such_pool(&name),
        },
        Route::SetServerState {
            pool,
            address,
            state,
        } => set_server_state(snapshot, &pool, &address, &state, client),
    }
}

/// `POST /api/pools/{pool}/servers/{address}/{state}`.
fn set_server_state(
    snapshot: &Snapshot,
    pool: &str,
    address: &str,
    state: &str,
    client: SocketAddr,
) -> Response<Full<Bytes>> {
    let Some(pool) = snapshot.pool(pool) else {
        return no_such_pool(pool);
    };
    let Ok(parsed) = address.parse::<SocketAddr>() else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("{address:?} is not a server address like 127.0.0.1:3001 or [::1]:3001"),
        );
    };
    let Some(server) = pool.server(parsed) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("pool `{}` has no server {parsed}", pool.name()),
        );
    };
    let Some(admin) = AdminState::parse(state) else {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("unknown state {state:?}: use ready, drain or maintenance"),
        );
    };
    server.set_admin(admin, &format!("admin API from {client}"));
    json(StatusCode::OK, &ServerView::of(server))
}

fn no_such_pool(name: &str) -> Response<Full<Bytes>> {
    error(StatusCode::NOT_FOUND, &format!("no pool named {name:?}"))
}

/// The route of `path`: `Ok(None)` when it names nothing, `Err` when a
/// segment's percent-encoding is broken.
fn parse_path(path: &str) -> Result<Option<Route>, String> {
    let Some(rest) = path.strip_prefix("/api/pools") else {
        return Ok(None);
    };
    if rest.is_empty() {
        return Ok(Some(Route::Pools));
    }
    let Some(rest) = rest.strip_prefix('/') else {
        return Ok(None);
    };
    let segments = rest
        .split('/')
        .map(percent_decode)
        .collect::<Result<Vec<_>, _>>()?;
    if segments.iter().any(String::is_empty) {
        return Ok(None);
    }
    Ok(match <[String; 1]>::try_from(segments) {
        Ok([pool]) => Some(Route::Pool(pool)),
        Err(segments) => match <[String; 4]>::try_from(segments) {
            Ok([pool, servers, address, state]) if servers == "servers" => {
                Some(Route::SetServerState {
                    pool,
                    address,
                    state,
                })
            }
            _ => None,
        },
    })
}

/// Decodes `%XX` escapes in one path segment; the result must be UTF-8.
fn percent_decode(segment: &str) -> Result<String, String> {
    let broken = || format!("broken percent-encoding in path segment {segment:?}");
    let bytes = segment.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3).ok_or_else(broken)?;
            let hex = std::str::from_utf8(hex).map_err(|_| broken())?;
            // `from_str_radix` accepts a sign; an escape is two hex digits only.
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(broken());
            }
            decoded.push(u8::from_str_radix(hex, 16).map_err(|_| broken())?);
            i += 3;
        } else {
            decoded.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(decoded).map_err(|_| broken())
}

/// A JSON error answer: `{"error": message}`.
pub fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    #[derive(Serialize)]
    struct Error<'a> {
        error: &'a str,
    }
    json(status, &Error { error: message })
}

pub fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let mut body = match serde_json::to_vec_pretty(value) {
        Ok(body) => body,
        // Our views hold only strings, numbers and booleans; this cannot fail.
        Err(_) => br#"{"error": "the answer could not be encoded"}"#.to_vec(),
    };
    body.push(b'\n');
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str) -> Option<String> {
        match parse_path(path) {
            Ok(Some(Route::Pools)) => Some("pools".into()),
            Ok(Some(Route::Pool(p))) => Some(format!("pool {p}")),
            Ok(Some(Route::SetServerState {
                pool,
                address,
                state,
            })) => Some(format!("set {pool} {address} {state}")),
            Ok(None) => None,
            Err(e) => Some(format!("error {e}")),
        }
    }

    #[test]
    fn paths_map_to_routes() {
        assert_eq!(route("/api/pools").as_deref(), Some("pools"));
        assert_eq!(route("/api/pools/web").as_deref(), Some("pool web"));
        assert_eq!(
            route("/api/pools/web/servers/127.0.0.1:3000/drain").as_deref(),
            Some("set web 127.0.0.1:3000 drain")
        );
        assert_eq!(
            route("/api/pools/web/servers/[::1]:3000/ready").as_deref(),
            Some("set web [::1]:3000 ready")
        );
        assert_eq!(
            route("/api/pools/web/servers/%5B%3a%3A1%5D%3A3000/ready").as_deref(),
            Some("set web [::1]:3000 ready")
        );
    }

    #[test]
    fn other_paths_map_to_nothing() {
        for path in [
            "/",
            "/api",
            "/api/",
            "/api/poolsx",
            "/api/pools/",
            "/api/pools//",
            "/api/pools/web/",
            "/api/pools/web/servers",
            "/api/pools/web/servers/127.0.0.1:3000",
            "/api/pools/web/hosts/127.0.0.1:3000/drain",
            "/api/pools/web/servers/127.0.0.1:3000/drain/",
            "/api/pools/web/servers/127.0.0.1:3000/drain/now",
        ] {
            assert_eq!(route(path), None, "{path}");
        }
    }

    #[test]
    fn broken_escapes_are_errors_not_panics() {
        for path in [
            "/api/pools/%",
            "/api/pools/%5",
            "/api/pools/%zz",
            "/api/pools/%+5",
            "/api/pools/%ff",
            "/api/pools/%c3%",
            "/api/pools/a%é",
        ] {
            assert!(
                route(path).is_some_and(|r| r.starts_with("error")),
                "{path}: {:?}",
                route(path)
            );
        }
        assert_eq!(route("/api/pools/%C3%A9").as_deref(), Some("pool é"));
    }
}
