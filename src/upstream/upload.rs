//! A client's request body on its way to a server, reporting progress so
//! that the response timeout starts only once the body has been sent: a slow
//! upload is not a slow server.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::watch;

pin_project_lite::pin_project! {
    pub struct Upload {
        #[pin]
        inner: Incoming,
        // Bytes of the body so far, bumped at every frame; dropped at the
        // end of the body, which closes the channel: the receiver learns
        // the upload is over.
        frames: Option<watch::Sender<u64>>,
        // Applied to the body's trailer fields before they go on.
        strip_trailers: fn(&mut HeaderMap),
    }
}

impl Upload {
    /// Wraps `inner`; the receiver sees the byte count at each frame, and an error
    /// once the whole body has been read (or the body was dropped).
    /// `strip_trailers` drops what the server must not get of the body's
    /// trailer fields.
    pub fn new(
        inner: Incoming,
        strip_trailers: fn(&mut HeaderMap),
    ) -> (Upload, watch::Receiver<u64>) {
        let (frames, progress) = watch::channel(0);
        (
            Upload {
                inner,
                frames: Some(frames),
                strip_trailers,
            },
            progress,
        )
    }
}

impl Body for Upload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let mut polled = this.inner.poll_frame(cx);
        match &mut polled {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, |d| d.len() as u64);
                if let Some(frames) = this.frames.as_ref() {
                    frames.send_modify(|n| *n += len);
                }
                if let Some(trailers) = frame.trailers_mut() {
                    (this.strip_trailers)(trailers);
                }
            }
            Poll::Ready(_) => {
                this.frames.take();
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
