//! A server's response body, decoded straight from its connection by the
//! task that streams it to the client. At its end a reusable connection goes
//! back to its server's idle pool at once: no task waits for it.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;

use super::decode::{Decoder, Step};
use super::head::Framing;
use super::upload::{Uploading, advance};
use super::{ServerConnection, ServerError};
use crate::upstream::Server;

/// The body of a response, read from its server connection as the client
/// takes it.
pub struct ServerBody {
    decoder: Decoder,
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
        let mut body = ServerBody {
            decoder: Decoder::new(framing),
            connection: Some(connection),
            upload,
            reusable,
            server,
        };
        // Bodiless and reusable: the connection goes back at once. (A 101
        // is never reusable; its connection stays here for the tunnel.)
        if body.decoder.is_done() && reusable {
            body.finish();
        }
        body
    }

    /// The connection and the bytes the server sent past its 101, for a
    /// tunnel; `None` if the body was read (not a 101).
    pub fn into_upgraded(mut self) -> Option<(TcpStream, Bytes)> {
        let connection = self.connection.take()?;
        // An upgrade's head is never deferred, so no outbox holds the socket.
        let socket = Arc::into_inner(connection.socket)?;
        Some((socket.stream, connection.buf.freeze()))
    }

    /// The body is read: a reusable connection with nothing unread goes back
    /// to its server, unless the server stopped serving meanwhile.
    fn finish(&mut self) {
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
            // A server that stopped reading the request goes on answering.
            let mut stopped = false;
            if let Err(e) = advance(
                &mut this.upload,
                &connection.socket.stream,
                cx,
                &mut stopped,
            ) {
                return this.fail(ServerError::RequestBody(e));
            }
            this.reusable &= !stopped;
            match this.decoder.decode(&mut connection.buf) {
                Ok(Step::Data(data)) => {
                    if this.decoder.is_done() {
                        this.finish();
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Ok(Step::Trailers(trailers)) => {
                    this.finish();
                    return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
                }
                Ok(Step::End) => {
                    this.finish();
                    return Poll::Ready(None);
                }
                Ok(Step::NeedMore) => {}
                Err(error) => return this.fail(error),
            }
            match ready!(connection.poll_fill(cx)) {
                Ok(0) => match this.decoder.at_close() {
                    // Delimited by the close: nothing to reuse.
                    Ok(_) => {
                        this.connection = None;
                        return Poll::Ready(None);
                    }
                    Err(error) => return this.fail(error),
                },
                Ok(_) => {}
                Err(error) => return this.fail(error),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(remaining) => SizeHint::with_exact(remaining),
            None => SizeHint::default(),
        }
    }
}
