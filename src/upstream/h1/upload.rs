//! The client's request body on its way to a server, written as it comes
//! (chunked when the head says so). Polled by whoever drives the exchange:
//! first while the response head is awaited, then by the response body, so
//! a server may answer before the request body ends and both stream at once.

use std::collections::VecDeque;
use std::io::IoSlice;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes, BytesMut};
use http::HeaderMap;
use http_body::Body;
use tokio::net::TcpStream;

use super::head::encode_fields;
use super::{BoxError, SendError, ServerError};
use crate::upstream::UpstreamBody;

/// The most pieces written in one system call (a chunk is three).
const MAX_SLICES: usize = 8;

pub struct Uploading {
    body: UpstreamBody,
    chunked: bool,
    /// Bytes taken from the body and not yet written.
    out: VecDeque<Bytes>,
    /// The body has ended (its last chunk, if chunked, is in `out`).
    ended: bool,
    trailers: Option<HeaderMap>,
}

impl Uploading {
    pub fn new(body: UpstreamBody, chunked: bool) -> Self {
        Uploading {
            body,
            chunked,
            out: VecDeque::new(),
            ended: false,
            trailers: None,
        }
    }

    /// Writes what the body brings; `Ready(Ok)` once all of it is written.
    pub fn poll_send(
        &mut self,
        stream: &TcpStream,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), SendError>> {
        loop {
            while !self.out.is_empty() {
                let mut slices = [IoSlice::new(&[]); MAX_SLICES];
                let count = self.out.len().min(MAX_SLICES);
                for (slice, piece) in slices.iter_mut().zip(&self.out) {
                    *slice = IoSlice::new(piece);
                }
                ready!(stream.poll_write_ready(cx)).map_err(ServerError::Write)?;
                let written = match stream.try_write_vectored(&slices[..count]) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    written => written.map_err(ServerError::Write)?,
                };
                if written == 0 {
                    return Poll::Ready(Err(ServerError::Write(
                        std::io::ErrorKind::WriteZero.into(),
                    )
                    .into()));
                }
                self.consume(written);
            }
            if self.ended {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut self.body).poll_frame(cx)) {
                None => self.end(),
                Some(Err(e)) => return Poll::Ready(Err(SendError::ClientBody(e))),
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) if data.is_empty() => {}
                    Ok(data) if self.chunked => {
                        self.out
                            .push_back(Bytes::from(format!("{:x}\r\n", data.len())));
                        self.out.push_back(data);
                        self.out.push_back(Bytes::from_static(b"\r\n"));
                    }
                    Ok(data) => self.out.push_back(data),
                    Err(frame) => {
                        if let Ok(fields) = frame.into_trailers() {
                            self.trailers.get_or_insert_default().extend(fields);
                        }
                    }
                },
            }
        }
    }

    /// The body ended: a chunked one gets its last chunk and trailers.
    fn end(&mut self) {
        self.ended = true;
        if !self.chunked {
            return;
        }
        let mut last = BytesMut::from(&b"0\r\n"[..]);
        encode_fields(&self.trailers.take().unwrap_or_default(), &mut last);
        self.out.push_back(last.freeze());
    }

    fn consume(&mut self, mut written: usize) {
        while written > 0 {
            let Some(front) = self.out.front_mut() else {
                return;
            };
            if written < front.len() {
                front.advance(written);
                return;
            }
            written -= front.len();
            self.out.pop_front();
        }
    }
}

/// Moves the request body on, if it is still uploading; `Err` only for a
/// client whose body failed. A server that stopped reading may still be
/// answering: the upload ends, and `stopped` says the connection's framing
/// is unknown.
pub fn advance(
    upload: &mut Option<Box<Uploading>>,
    stream: &TcpStream,
    cx: &mut Context<'_>,
    stopped: &mut bool,
) -> Result<(), BoxError> {
    let Some(sending) = upload.as_mut() else {
        return Ok(());
    };
    match sending.poll_send(stream, cx) {
        Poll::Ready(Ok(())) => *upload = None,
        Poll::Ready(Err(SendError::ClientBody(e))) => return Err(e),
        Poll::Ready(Err(SendError::Server(_))) => {
            *upload = None;
            *stopped = true;
        }
        Poll::Pending => {}
    }
    Ok(())
}
