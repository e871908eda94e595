//! Response bodies: what wharf streams back to clients.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};

use crate::upstream::ActiveGuard;

/// Every response body wharf sends: a server's streamed body or wharf's own text.
pub type ResponseBody = BoxBody<Bytes, hyper::Error>;

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
