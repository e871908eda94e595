//! A server's response body, decoded straight from its connection by the
//! task that streams it to the client. At its end a reusable connection goes
//! back to its server's idle pool at once: no task waits for it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::head::{self, Framing};
use super::upload::Uploading;
use super::{SendError, ServerConnection, ServerError};
use crate::upstream::Server;

/// The longest chunk-size line (with extensions) wharf reads.
const MAX_CHUNK_LINE: usize = 4096;

#[derive(Debug, Clone, Copy)]
enum State {
    /// Bytes of a `Content-Length` body still to come.
    Length(u64),
    ChunkSize,
    /// Bytes of the current chunk still to come.
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailers,
    UntilClose,
    Done,
}

/// The body of a response, read from its server connection as the client
/// takes it.
pub struct ServerBody {
    state: State,
    /// `None` once the body is finished (the connection went back to its
    /// server or was closed).
    connection: Option<ServerConnection>,
    /// The rest of the request body, when the server answered before its end.
    upload: Option<Box<Uploading>>,
    /// Whether the connection may carry another request once the body is read.
    reusable: bool,
    /// The server whose idle pool takes the connection back, if any.
    server: Option<Arc<Server>>,
}

impl ServerBody {
    pub(super) fn new(
        connection: ServerConnection,
        upload: Option<Box<Uploading>>,
        framing: Framing,
        reusable: bool,
        server: Option<Arc<Server>>,
    ) -> Self {
        let state = match framing {
            Framing::Empty => State::Done,
            Framing::Length(length) => State::Length(length),
            Framing::Chunked => State::ChunkSize,
            Framing::UntilClose => State::UntilClose,
        };
        let mut body = ServerBody {
            state,
            connection: Some(connection),
            upload,
            reusable,
            server,
        };
        if matches!(body.state, State::Done) && reusable {
            body.finish();
        }
        body
    }

    /// The connection and the bytes the server sent past its 101, for a
    /// tunnel; `None` if the body was read (not a 101).
    pub fn into_upgraded(mut self) -> Option<(TcpStream, Bytes)> {
        let connection = self.connection.take()?;
        Some((connection.stream, connection.buf.freeze()))
    }

    /// The body is read: a reusable connection with nothing unread goes back
    /// to its server, unless the server stopped serving meanwhile.
    fn finish(&mut self) {
        self.state = State::Done;
        let Some(connection) = self.connection.take() else {
            return;
        };
        // With the request body unfinished, the connection's framing is unknown.
        let uploaded = self.upload.take().is_none();
        if let Some(server) = &self.server
            && self.reusable
            && uploaded
            && connection.buf.is_empty()
            && server.is_serving()
        {
            server.idle.put(connection);
        }
    }

    fn fail(&mut self, error: ServerError) -> Poll<Option<Result<Frame<Bytes>, ServerError>>> {
        self.state = State::Done;
        self.connection = None;
        self.upload = None;
        Poll::Ready(Some(Err(error)))
    }
}

impl Body for ServerBody {
    type Data = Bytes;
    type Error = ServerError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, ServerError>>> {
        let this = self.get_mut();
        loop {
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            if let Some(upload) = this.upload.as_mut() {
                match upload.poll_send(&mut connection.stream, cx) {
                    Poll::Ready(Ok(())) => this.upload = None,
                    Poll::Ready(Err(SendError::ClientBody(e))) => {
                        return this.fail(ServerError::RequestBody(e));
                    }
                    // The server stopped reading the request: its answer goes on.
                    Poll::Ready(Err(SendError::Server(_))) => {
                        this.upload = None;
                        this.reusable = false;
                    }
                    Poll::Pending => {}
                }
            }
            // Whether the buffered bytes cannot advance the state: read more.
            let starved = match this.state {
                State::Done => return Poll::Ready(None),
                State::Length(remaining) | State::ChunkData(remaining) => {
                    if connection.buf.is_empty() {
                        true
                    } else {
                        let take = remaining.min(connection.buf.len() as u64);
                        let data = connection.buf.split_to(take as usize).freeze();
                        let left = remaining - take;
                        match this.state {
                            State::Length(_) if left == 0 => this.finish(),
                            State::Length(_) => this.state = State::Length(left),
                            _ if left == 0 => this.state = State::ChunkEnd,
                            _ => this.state = State::ChunkData(left),
                        }
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
                State::ChunkSize => match httparse::parse_chunk_size(&connection.buf) {
                    // httparse takes a line without digits for size 0, and a
                    // bare LF inside an extension: hyper refused both, as
                    // parsers that disagree on where a chunk ends are how
                    // responses are smuggled.
                    Ok(httparse::Status::Complete((used, _)))
                        if used > MAX_CHUNK_LINE
                            || !connection.buf[0].is_ascii_hexdigit()
                            || connection.buf[..used - 2].contains(&b'\n') =>
                    {
                        return this.fail(ServerError::BadChunk);
                    }
                    Ok(httparse::Status::Complete((used, size))) => {
                        let _ = connection.buf.split_to(used);
                        this.state = match size {
                            0 => State::Trailers,
                            size => State::ChunkData(size),
                        };
                        false
                    }
                    Ok(httparse::Status::Partial) if connection.buf.len() > MAX_CHUNK_LINE => {
                        return this.fail(ServerError::BadChunk);
                    }
                    Ok(httparse::Status::Partial) => true,
                    Err(_) => return this.fail(ServerError::BadChunk),
                },
                State::ChunkEnd => match connection.buf.get(..2) {
                    None if connection.buf.first().is_none_or(|&b| b == b'\r') => true,
                    Some(b"\r\n") => {
                        let _ = connection.buf.split_to(2);
                        this.state = State::ChunkSize;
                        false
                    }
                    _ => return this.fail(ServerError::BadChunk),
                },
                State::Trailers => {
                    if connection.buf.starts_with(b"\r\n") {
                        let _ = connection.buf.split_to(2);
                        this.finish();
                        return Poll::Ready(None);
                    }
                    match head::parse_trailers(&mut connection.buf) {
                        Ok(Some(trailers)) => {
                            this.finish();
                            return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                        }
                        Ok(None) => true,
                        Err(error) => return this.fail(error),
                    }
                }
                State::UntilClose => {
                    if connection.buf.is_empty() {
                        true
                    } else {
                        let data = connection.buf.split().freeze();
                        return Poll::Ready(Some(Ok(Frame::data(data))));
                    }
                }
            };
            if !starved {
                continue;
            }
            match ready!(connection.poll_fill(cx)) {
                Ok(0) if matches!(this.state, State::UntilClose) => {
                    this.state = State::Done;
                    this.connection = None;
                    return Poll::Ready(None);
                }
                Ok(0) => return this.fail(ServerError::BodyCut),
                Ok(_) => {}
                Err(error) => return this.fail(error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, State::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            State::Done => SizeHint::with_exact(0),
            State::Length(remaining) => SizeHint::with_exact(remaining),
            _ => SizeHint::default(),
        }
    }
}
