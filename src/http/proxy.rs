//! One request through wharf: route it, choose a server, forward it, and
//! stream the answer back (or hand a 101 to [`super::upgrade`]).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::HeaderMap;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::Body as _;
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Incoming;
use tokio::sync::watch;

use super::body::{self, Counted, Observed, ResponseBody};
use super::error::ProxyError;
use super::framing::FramingFault;
use super::headers::{self, ClientForwarding, ClientInfo};
use super::learn_sid::LearnSid;
use super::record::{self, Exchange};
use super::send::send_with_retries;
use super::strict;
use super::timer::ConnectionTimer;
use super::{ClientConnection, upgrade};
use crate::config::RouteConfig;
use crate::snapshot::{Shared, Snapshot};
use crate::sticky::{self, Sticky};
use crate::upstream::ExtraField;
use crate::upstream::{ConnectError, Pool, Server, Upload, UpstreamBody};

/// A failed request with what is known of where it was going, for the log.
struct Failure {
    error: ProxyError,
    pool: Option<String>,
    server: Option<SocketAddr>,
}

impl From<ProxyError> for Failure {
    fn from(error: ProxyError) -> Self {
        Failure {
            error,
            pool: None,
            server: None,
        }
    }
}

/// What a request knows of its client connection.
pub struct Connection {
    pub client: Arc<ClientConnection>,
    pub forwarding: Arc<ClientForwarding>,
    /// The response timeouts of the connection's requests.
    pub response_timer: ConnectionTimer,
}

/// hyper's service entry point: never fails, errors become responses.
pub async fn handle(
    request: Request<Incoming>,
    connection: Connection,
    shared: Arc<Shared>,
) -> Result<Response<ResponseBody>, Infallible> {
    let client = &connection.client;
    let snapshot = shared.snapshot();
    let mut exchange = Exchange::start(request.method().clone(), request.uri().path().to_owned());
    let started = exchange.started();
    let listener = &client.listener;
    let response = match forward(request, &connection, &snapshot, &shared, &mut exchange).await {
        Ok(response) => {
            tracing::debug!(
                listener = %listener, client = %client.peer, method = %exchange.method(),
                path = exchange.path(), status = response.status().as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64, "proxied"
            );
            response
        }
        Err(failure) if matches!(failure.error, ProxyError::Connect(ConnectError::Local(_))) => {
            // Logged once per episode where it happened (crate::fd).
            error_response(&failure.error)
        }
        Err(failure) => {
            let status = failure.error.status();
            tracing::warn!(
                listener = %listener, client = %client.peer, method = %exchange.method(),
                path = exchange.path(),
                pool = failure.pool.as_deref().unwrap_or("-"),
                server = %failure.server.map_or_else(|| "-".to_owned(), |s| s.to_string()),
                status = status.as_u16(), error = %failure.error,
                "request failed"
            );
            exchange.server = exchange.server.or(failure.server);
            error_response(&failure.error)
        }
    };
    Ok(exchange.finish(response, client, &shared))
}

fn error_response(error: &ProxyError) -> Response<ResponseBody> {
    let mut response = Response::new(body::text(error.body()));
    *response.status_mut() = error.status();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    // After a bad request the connection's framing cannot be trusted.
    if matches!(
        error.status(),
        StatusCode::BAD_REQUEST
            | StatusCode::REQUEST_TIMEOUT
            | StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            | StatusCode::URI_TOO_LONG
    ) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

async fn forward(
    mut request: Request<Incoming>,
    connection: &Connection,
    snapshot: &Snapshot,
    shared: &Shared,
    exchange: &mut Exchange,
) -> Result<Response<ResponseBody>, Failure> {
    let Connection {
        client,
        forwarding,
        response_timer,
    } = connection;
    let listener = snapshot
        .listener_of(&client.listener, client.local)
        .ok_or(ProxyError::ListenerRemoved)?;
    let framing = request.extensions().get::<FramingFault>().copied();
    let normalized = strict::check_request(
        request.method(),
        request.uri(),
        request.headers(),
        framing,
        &listener.limits,
    )
    .map_err(ProxyError::from)?;
    if let Some(uri) = normalized {
        *request.uri_mut() = uri;
    }
    if request.method() == Method::CONNECT {
        return Err(ProxyError::MethodNotAllowed("CONNECT").into());
    }
    let host = request_host(&request)?;
    let trusted = listener
        .trusted_proxies
        .iter()
        .any(|net| net.contains(&client.peer.ip().to_canonical()));
    // Checked visible ASCII by `request_host`.
    let host_name = host.as_ref().and_then(|h| h.to_str().ok());
    let route = crate::route::find(&listener.routes, host_name, request.uri().path())
        .ok_or(ProxyError::NoRoute)?;
    exchange.route = listener
        .routes
        .iter()
        .position(|r| std::ptr::eq(r, route))
        .and_then(|index| snapshot.routes.get(&listener.name, index))
        .cloned();
    let pool = snapshot.pool(&route.pool).ok_or(ProxyError::NoRoute)?;
    exchange.pool = Some(pool.clone());
    let upgrades = allowed_upgrades(&request, route);
    exchange.upgrade_asked = !upgrades.is_empty();
    let client_upgrade = (!upgrades.is_empty()).then(|| hyper::upgrade::on(&mut request));

    let affinity = sticky::affinity(
        pool.sticky.as_ref(),
        pool.config.hash.as_ref(),
        request.headers(),
        request.uri(),
        client.peer.ip(),
        &|address| pool.position_of(address),
    );
    let Rewritten {
        request: mut upstream_request,
        upload,
        forwarding_fields,
    } = rewrite_request(
        request,
        client,
        host.as_ref(),
        &upgrades,
        (forwarding, trusted),
    )?;
    if let Some(sticky) = &pool.sticky {
        sticky.strip_request(upstream_request.headers_mut());
    }
    exchange.upload = upload.clone();
    let sent = send_with_retries(
        pool,
        upstream_request,
        &forwarding_fields,
        response_timer,
        upload,
        &affinity,
        (client.peer, client.local),
    )
    .await
    .map_err(|(error, server)| Failure {
        error,
        pool: Some(pool.name().to_owned()),
        server,
    })?;
    let (mut response, guard) = (sent.response, sent.guard);
    let server = guard.server().clone();
    exchange.server_time = Some(sent.server_time);
    exchange.server = Some(server.address);
    exchange.sticky = record::sticky_decision(
        pool.sticky.is_some(),
        &affinity,
        pool.position_of(server.address),
    );
    if let Some(upload) = &exchange.upload {
        server.metrics.bytes.to_server.inc_by(*upload.borrow());
    }
    pin_client(pool, &affinity, &server, client, response.headers_mut());
    let fail = |error| Failure {
        error,
        pool: Some(pool.name().to_owned()),
        server: Some(server.address),
    };

    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return Err(fail(ProxyError::UnrequestedUpgrade));
        };
        let protocol = headers::upgrade_protocol(response.headers());
        if !protocol.as_ref().is_some_and(|p| upgrades.contains(p)) {
            return Err(fail(ProxyError::UnrequestedUpgrade));
        }
        return Ok(upgrade::start_tunnel(
            response,
            client_upgrade,
            guard,
            upgrade::TunnelRoute {
                idle_timeout: pool.config.timeouts.tunnel_idle,
                handover_timeout: pool.config.timeouts.response,
                websocket: route.websocket,
                stats: shared.registry.websocket_routes.of(&listener.name, route),
            },
            client.clone(),
            &shared.tasks,
            exchange.tunnel(client, shared),
        ));
    }

    let server_address = server.address;
    let (mut parts, incoming) = response.into_parts();
    headers::remove_hop_by_hop(&mut parts.headers);
    // nginx's `proxy_read_timeout`: the response timeout also bounds each
    // silence of the server inside the body.
    let watched = body::Watched::new(
        incoming,
        pool.config.timeouts.response,
        server_address,
        exchange.started(),
    );
    let counted = Observed::new(watched, Counted(Some(guard)));
    let body = if affinity.engine_io_handshake && parts.status.is_success() {
        Observed::new(counted, LearnSid::new(pool.clone(), server_address)).boxed()
    } else {
        counted.boxed()
    };
    Ok(Response::from_parts(parts, body))
}

/// Keeps the client on `server` for its next requests: a new sticky cookie
/// when its own did not name this server, or the session cookie the server
/// just set, learned.
fn pin_client(
    pool: &Pool,
    affinity: &sticky::Affinity,
    server: &Server,
    client: &ClientConnection,
    response_headers: &mut HeaderMap,
) {
    match &pool.sticky {
        Some(Sticky::Cookie(cookies)) => {
            let position = pool.position_of(server.address);
            if affinity.pinned != position
                && let Some(cookie) =
                    position.and_then(|p| cookies.set_cookie(p, client.proto == "https"))
            {
                response_headers.append(header::SET_COOKIE, cookie);
            }
        }
        Some(sticky) => {
            sticky.learn_from_response(server.address, response_headers, Instant::now())
        }
        None => {}
    }
}

/// The host the client asked for: the authority of an absolute-form URI,
/// else the `Host` header (RFC 9112 §3.2.2). HTTP/1.1 requires exactly one
/// `Host`, and it must be a valid `host[:port]` (RFC 9112 §3.2): anything else
/// could be routed by one value and served by another.
/// A `Host` header is returned as it is (no copy); an authority as a new value.
fn request_host(request: &Request<Incoming>) -> Result<Option<HeaderValue>, ProxyError> {
    let mut hosts = request.headers().get_all(header::HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(ProxyError::BadRequest("more than one Host header"));
    }
    if let Some(authority) = request.uri().authority() {
        check_host(authority.as_str())?;
        return HeaderValue::from_str(authority.as_str())
            .map(Some)
            .map_err(|_| ProxyError::BadRequest("invalid Host"));
    }
    match header {
        Some(value) => {
            let host = value
                .to_str()
                .map_err(|_| ProxyError::BadRequest("Host is not visible ASCII"))?;
            check_host(host)?;
            Ok(Some(value.clone()))
        }
        None if request.version() == Version::HTTP_11 => {
            Err(ProxyError::BadRequest("HTTP/1.1 request without Host"))
        }
        None => Ok(None),
    }
}

/// `host[:port]` with no user info, path or spaces.
fn check_host(host: &str) -> Result<(), ProxyError> {
    if is_plain_host(host) {
        return Ok(());
    }
    check_authority(host)
}

/// Any other `host[:port]`, an IP literal say, checked as an authority.
fn check_authority(host: &str) -> Result<(), ProxyError> {
    let invalid = ProxyError::BadRequest("invalid Host");
    let authority: Authority = host.parse().map_err(|_| invalid)?;
    if authority.host().is_empty() || host.contains('@') || authority.as_str() != host {
        return Err(ProxyError::BadRequest("invalid Host"));
    }
    // `Authority` accepts a port it cannot parse as a number; a Host may not.
    let port = match host.rfind(']') {
        Some(end) => host[end + 1..].strip_prefix(':'),
        None => host.rsplit_once(':').map(|(_, port)| port),
    };
    if port.is_some_and(|p| {
        p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) || p.parse::<u16>().is_err()
    }) {
        return Err(ProxyError::BadRequest("invalid Host port"));
    }
    Ok(())
}

/// A name of letters, digits, dots and hyphens with at most a numeric
/// port: nearly every Host, and valid without parsing it as an authority
/// (which copies it; that showed in profiles of the request path).
fn is_plain_host(host: &str) -> bool {
    let (name, port) = match host.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (host, None),
    };
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        && port.is_none_or(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        })
}

/// The upgrades the client asked for that the route allows; `h2c` never, as
/// it would let the client talk to the server past wharf.
fn allowed_upgrades(request: &Request<Incoming>, route: &RouteConfig) -> Vec<String> {
    headers::requested_upgrades(request.headers())
        .into_iter()
        .filter(|p| p != "h2c" && route.upgrades.contains(p))
        .collect()
}

/// The request as it goes to a server.
struct Rewritten {
    request: Request<UpstreamBody>,
    /// Request body bytes read so far, when there is a body.
    upload: Option<watch::Receiver<u64>>,
    /// Written after the request's own fields (see [`headers::set_forwarded`]).
    forwarding_fields: Vec<ExtraField>,
}

/// Turns the client's request into the request sent to a server.
fn rewrite_request(
    request: Request<Incoming>,
    client: &ClientConnection,
    host: Option<&HeaderValue>,
    upgrades: &[String],
    (forwarding, trusted): (&ClientForwarding, bool),
) -> Result<Rewritten, ProxyError> {
    let (mut parts, body) = request.into_parts();
    // Servers get origin-form (`/path?query`) even if the client sent absolute-form.
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path_and_query);
    parts.version = Version::HTTP_11;
    // The target host replaces `Host` (absolute-form, RFC 9112 §3.2.2); an
    // HTTP/1.0 request without one gets the address it was sent to, since
    // the server will see HTTP/1.1, which requires a Host.
    // From a trusted proxy the forwarding headers go into the map (see
    // `headers::set_forwarded`): room for them in one growth at most.
    // Otherwise they are written after the map, and growing it cost 800
    // instructions a request (`bench/instructions`).
    if trusted {
        let _ = parts.headers.try_reserve(8);
    }
    if host.is_none() || parts.headers.get(header::HOST) != host {
        let host = match host {
            Some(host) => host.clone(),
            None => HeaderValue::from_str(&client.local.to_string())
                .map_err(|_| ProxyError::BadRequest("invalid Host"))?,
        };
        parts.headers.insert(header::HOST, host);
    }
    let wants_trailers = headers::accepts_trailers(&parts.headers);
    headers::remove_hop_by_hop(&mut parts.headers);
    if wants_trailers {
        parts
            .headers
            .insert(header::TE, HeaderValue::from_static("trailers"));
    }
    // hyper frames a body it cannot size as chunked, except on GET, HEAD and
    // CONNECT, where it would drop it: say chunked explicitly.
    if !body.is_end_stream() && body.size_hint().exact().is_none() {
        parts.headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
    }
    let original_host = parts.headers.get(header::HOST).cloned();
    let info = ClientInfo {
        client: forwarding,
        host: original_host.as_ref(),
        trusted,
    };
    let forwarding_fields = headers::set_forwarded(&mut parts.headers, &info);
    if !upgrades.is_empty() {
        headers::set_upgrade(&mut parts.headers, &upgrades.join(", "));
    }
    if body.is_end_stream() {
        return Ok(Rewritten {
            request: Request::from_parts(parts, Either::Right(Empty::new())),
            upload: None,
            forwarding_fields,
        });
    }
    let (upload, progress) = Upload::new(body, headers::strip_request_trailers);
    Ok(Rewritten {
        request: Request::from_parts(parts, Either::Left(upload)),
        upload: Some(progress),
        forwarding_fields,
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        /// The shortcut never lets through a Host the full check refuses.
        #[test]
        fn a_plain_host_is_a_valid_authority(host in "[a-zA-Z0-9.:@\\[\\]_-]{0,14}") {
            if is_plain_host(&host) {
                prop_assert!(check_authority(&host).is_ok(), "{}", host);
            }
        }
    }

    #[test]
    fn plain_hosts_and_others() {
        for plain in [
            "app.test",
            "app.test:8080",
            "127.0.0.1:21010",
            "a-b.c",
            "x:0",
        ] {
            assert!(is_plain_host(plain), "{plain}");
        }
        for other in [
            "", ":80", "a:", "a:b", "a:65536", "[::1]:80", "a@b", "a b", "a_b",
        ] {
            assert!(!is_plain_host(other), "{other}");
        }
        assert!(check_host("[::1]:80").is_ok());
        assert!(check_host("a:65536").is_err());
    }
}
