//! Response bodies: what wharf streams back to clients.

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
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

/// What an [`Observed`] body reports as it streams to the client.
pub trait BodyObserver {
    /// A data frame went by.
    fn data(&mut self, chunk: &[u8]);
    /// The body is finished, failed or was dropped (a client that went
    /// away mid-body); may be called more than once.
    fn end(&mut self) {}
}

pin_project_lite::pin_project! {
    /// A response body passed through unchanged, shown to an observer.
    pub struct Observed<B, O>
    where
        O: BodyObserver,
    {
        #[pin]
        inner: B,
        observer: O,
    }

    impl<B, O> PinnedDrop for Observed<B, O>
    where
        O: BodyObserver,
    {
        fn drop(this: Pin<&mut Self>) {
            this.project().observer.end();
        }
    }
}

impl<B, O: BodyObserver> Observed<B, O> {
    pub fn new(inner: B, observer: O) -> Self {
        Observed { inner, observer }
    }
}

impl<B, O> Body for Observed<B, O>
where
    B: Body<Data = Bytes>,
    O: BodyObserver,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.observer.data(data);
                }
            }
            Poll::Ready(None | Some(Err(_))) => this.observer.end(),
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

/// Keeps the request counted on its server until the body is finished or
/// dropped, so `least_conn` sees streaming downloads as load; counts the
/// bytes on the server.
pub struct Counted(pub Option<ActiveGuard>);

impl BodyObserver for Counted {
    fn data(&mut self, chunk: &[u8]) {
        if let Some(guard) = &self.0 {
            let metrics = &guard.server().metrics;
            metrics.bytes.to_client.inc_by(chunk.len() as u64);
        }
    }

    fn end(&mut self) {
        self.0.take();
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
    /// `since`: any past instant (the timer is set at the first wait; this
    /// spares reading the clock for bodies that never wait).
    pub fn new(inner: B, idle: Duration, server: SocketAddr, since: std::time::Instant) -> Self {
        Watched {
            inner,
            timer: tokio::time::sleep_until(Instant::from_std(since)),
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
