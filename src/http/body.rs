//! Response bodies: what wharf streams back to clients.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use tokio::time::{Instant, Sleep};

use crate::upstream::ActiveGuard;

/// Why a response body failed: the server's connection, or its silence.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body wharf sends: a server's streamed body or wharf's own text.
pub type ResponseBody = BoxBody<Bytes, BodyError>;

/// A short body wharf writes itself (errors, redirects).
pub fn text(body: &'static str) -> ResponseBody {
    Full::new(Bytes::from_static(body.as_bytes()))
        .map_err(|never| match never {})
        .boxed()
}

pub fn empty() -> ResponseBody {
    text("")
}

pin_project_lite::pin_project! {
    /// A server's response body that keeps the request counted on its server
    /// until the body is finished or dropped, so `least_conn` sees streaming
    /// downloads as load.
    pub struct Counted<B> {
        #[pin]
        inner: B,
        guard: Option<ActiveGuard>,
    }
}

impl<B> Counted<B> {
    pub fn new(inner: B, guard: ActiveGuard) -> Self {
        Counted {
            inner,
            guard: Some(guard),
        }
    }
}

impl<B: Body> Body for Counted<B>
where
    B::Data: Buf,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(guard)) = (frame.data_ref(), this.guard.as_ref()) {
                    let metrics = &guard.server().metrics;
                    metrics.bytes.to_client.inc_by(data.remaining() as u64);
                }
            }
            Poll::Ready(None | Some(Err(_))) => {
                this.guard.take();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A server that went quiet in the middle of a response body.
#[derive(Debug, thiserror::Error)]
#[error("the server sent nothing of its response body for {0:?}")]
pub struct BodyStalled(pub Duration);

pin_project_lite::pin_project! {
    /// A server's response body with a deadline on its silences: when the
    /// server sends nothing for `idle` while wharf waits for more, the body
    /// fails, so the client keeps what it got, its connection closes (the
    /// body cannot be completed) and the server connection is dropped. Time
    /// wharf spends not asking (a slow client) does not count.
    pub struct Watched<B> {
        #[pin]
        inner: B,
        #[pin]
        timer: Sleep,
        idle: Duration,
        waiting: bool,
        server: SocketAddr,
    }
}

impl<B> Watched<B> {
    pub fn new(inner: B, idle: Duration, server: SocketAddr) -> Self {
        Watched {
            inner,
            timer: tokio::time::sleep(idle),
            idle,
            waiting: false,
            server,
        }
    }
}

impl<B> Body for Watched<B>
where
    B: Body,
    B::Error: Into<BodyError>,
{
    type Data = B::Data;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let mut this = self.project();
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                *this.waiting = false;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                if !*this.waiting {
                    *this.waiting = true;
                    this.timer.as_mut().reset(Instant::now() + *this.idle);
                }
                match this.timer.poll(cx) {
                    Poll::Ready(()) => {
                        tracing::warn!(server = %this.server, idle = ?this.idle, "response body stalled by the server; closing");
                        Poll::Ready(Some(Err(BodyStalled(*this.idle).into())))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
