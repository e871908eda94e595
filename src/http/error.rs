//! Why wharf could not proxy a request, and the answer the client gets.
//!
//! Every error knows its status, its short plain-text body, and whether it
//! was the server's fault, so that the response, the log line and (later)
//! the metrics come from one lookup.

use std::time::Duration;

use http::StatusCode;

use super::strict::Refusal;
use crate::upstream::{ConnectError, ServerError, Unavailable};

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no route matches this request")]
    NoRoute,
    #[error("the listener was removed by a reload")]
    ListenerRemoved,
    #[error("bad request: {0}")]
    BadRequest(&'static str),
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    #[error("method not allowed: {0}")]
    MethodNotAllowed(&'static str),
    #[error("{0}")]
    Unavailable(#[from] Unavailable),
    #[error("cannot connect to server: {0}")]
    Connect(#[source] ConnectError),
    #[error("server did not answer within {0:?}")]
    ResponseTimeout(Duration),
    #[error("server failed: {0}")]
    Server(#[source] ServerError),
    #[error("server switched protocols without being asked to")]
    UnrequestedUpgrade,
    #[error("the client's request body failed (client gone?): {0}")]
    ClientAborted(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("the client's request body brought too little over {0:?} (min_upload_rate)")]
    UploadStalled(Duration),
}

impl ProxyError {
    /// Whether the server cannot have acted on the request (see
    /// [`ServerError::may_retry`]).
    pub fn may_retry(&self) -> bool {
        matches!(self, ProxyError::Server(error) if error.may_retry())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Refused(refusal) => refusal.status(),
            ProxyError::BadRequest(_) | ProxyError::ClientAborted(_) => StatusCode::BAD_REQUEST,
            ProxyError::UploadStalled(_) => StatusCode::REQUEST_TIMEOUT,
            ProxyError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ProxyError::Unavailable(_)
            | ProxyError::ListenerRemoved
            | ProxyError::Connect(ConnectError::Local(_)) => StatusCode::SERVICE_UNAVAILABLE,
            // As nginx: a server that cannot be reached in time is a timeout.
            ProxyError::Connect(ConnectError::Timeout(_)) | ProxyError::ResponseTimeout(_) => {
                StatusCode::GATEWAY_TIMEOUT
            }
            ProxyError::Connect(_) | ProxyError::Server(_) | ProxyError::UnrequestedUpgrade => {
                StatusCode::BAD_GATEWAY
            }
        }
    }

    /// The plain-text body sent to the client: short, and never an address.
    pub fn body(&self) -> &'static str {
        match self.status() {
            StatusCode::NOT_FOUND => "404 Not Found: no route for this host and path\n",
            StatusCode::BAD_REQUEST => "400 Bad Request\n",
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => "431 Request Header Fields Too Large\n",
            StatusCode::URI_TOO_LONG => "414 URI Too Long\n",
            StatusCode::REQUEST_TIMEOUT => {
                "408 Request Timeout: the request body stalled or trickled\n"
            }
            StatusCode::METHOD_NOT_ALLOWED => "405 Method Not Allowed\n",
            StatusCode::SERVICE_UNAVAILABLE => "503 Service Unavailable: no server available\n",
            StatusCode::GATEWAY_TIMEOUT => {
                "504 Gateway Timeout: the server did not answer in time\n"
            }
            _ => "502 Bad Gateway: the server failed to answer\n",
        }
    }
}
