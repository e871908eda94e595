//! Plaintext HTTP on a TLS listener with `plaintext = "redirect"` or
//! `"reject"`: every request gets a 301 to the https URL of the same host and
//! path, or a 400 saying the port wants TLS; nothing reaches a server.

use std::convert::Infallible;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::body::{self, ResponseBody};
use crate::config::Plaintext;

/// Answers every request on `stream` as `mode` says, until the client closes.
pub async fn serve_plaintext_answer(stream: TcpStream, mode: Plaintext, header_timeout: Duration) {
    let service =
        service_fn(move |request| async move { Ok::<_, Infallible>(answer(&request, mode)) });
    let head = crate::config::Limits::default().request_head;
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        // Nothing here needs more than a request line and a Host: keep
        // hyper's buffer to the default head limit, not its ~400 KiB.
        .max_header_size(head)
        .max_buf_size(head)
        .serve_connection(TokioIo::new(stream), service);
    let _ = connection.await;
}

fn answer(request: &Request<Incoming>, mode: Plaintext) -> Response<ResponseBody> {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| {
            !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b'@')
        });
    let target = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location =
        host.and_then(|host| HeaderValue::from_str(&format!("https://{host}{target}")).ok());
    match (mode, location) {
        (Plaintext::Redirect, Some(location)) => {
            let mut response = text(
                StatusCode::MOVED_PERMANENTLY,
                "301 Moved Permanently: use https\n",
            );
            response.headers_mut().insert(header::LOCATION, location);
            response
        }
        (Plaintext::Redirect, None) => text(
            StatusCode::BAD_REQUEST,
            "400 Bad Request: no Host to redirect to\n",
        ),
        _ => {
            let mut response = text(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: this port accepts TLS only\n",
            );
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

fn text(status: StatusCode, message: &'static str) -> Response<ResponseBody> {
    let mut response = Response::new(body::text(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
