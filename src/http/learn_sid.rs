//! A response body that learns the Engine.IO session id of a handshake
//! answer as it passes (see [`crate::sticky::engine_io`]).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

use crate::sticky::engine_io::{SCAN_LIMIT, find_sid};
use crate::upstream::Pool;

pin_project_lite::pin_project! {
    pub struct LearnSid<B> {
        #[pin]
        inner: B,
        pool: Arc<Pool>,
        server: SocketAddr,
        seen: Vec<u8>,
        done: bool,
    }
}

impl<B> LearnSid<B> {
    pub fn new(inner: B, pool: Arc<Pool>, server: SocketAddr) -> Self {
        LearnSid {
            inner,
            pool,
            server,
            seen: Vec::new(),
            done: false,
        }
    }
}

impl<B: Body> Body for LearnSid<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if !*this.done
            && let Poll::Ready(Some(Ok(frame))) = &polled
            && let Some(data) = frame.data_ref()
        {
            let chunk = data.chunk();
            let room = SCAN_LIMIT - this.seen.len();
            this.seen.extend_from_slice(&chunk[..chunk.len().min(room)]);
            if let Some(sid) = find_sid(this.seen) {
                this.pool
                    .learn_session(sid.to_owned(), *this.server, Instant::now());
                *this.done = true;
            } else if this.seen.len() >= SCAN_LIMIT {
                *this.done = true;
            }
            if *this.done {
                *this.seen = Vec::new();
            }
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
