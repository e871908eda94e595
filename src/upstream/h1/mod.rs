//! wharf's HTTP/1.1 client to servers: one request at a time on a server
//! connection, driven by the task of the client's request. The request head
//! is written, the body uploaded while the response head is awaited, and the
//! response body decoded from the connection as the client takes it
//! ([`ServerBody`]).
//!
//! Written by hand (as the issue on performance allows) because hyper's
//! client ran every server connection in a task of its own, reached through
//! channels: each request crossed tasks four times and spawned a fifth to
//! return the connection. Measured with `bench/run --only http` (one core):
//! HTTP requests per proxy CPU-second went from 0.75x HAProxy's to 0.84x,
//! user time per request from about 6.5 us to 5 us.

mod body;
pub(crate) mod decode;
pub(crate) mod head;
mod outbox;
mod upload;

use std::io;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode, Uri, header};
use http_body::Body as _;
use outbox::Socket;
pub use outbox::{deferred_total, send_deferred};
use tokio::io::Interest;
use tokio::net::TcpStream;

pub use body::ServerBody;
use upload::{Uploading, advance};

use super::{Server, UpstreamBody};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How much wharf reads from a server at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange with a server failed.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("the server closed the connection before answering")]
    ClosedBeforeResponse,
    #[error("the server closed the connection in the middle of its response head")]
    ClosedInHead,
    #[error("reading from the server: {0}")]
    Read(#[source] io::Error),
    #[error("reading the server's response head: {0}")]
    ReadInHead(#[source] io::Error),
    #[error("writing to the server: {0}")]
    Write(#[source] io::Error),
    #[error("response head too large (over {} bytes)", super::MAX_RESPONSE_HEAD)]
    HeadTooLarge,
    #[error("malformed response head: {0}")]
    Malformed(#[source] httparse::Error),
    #[error("{0}")]
    Framing(&'static str),
    #[error("malformed chunked response body")]
    BadChunk,
    #[error("the server closed the connection in the middle of the body")]
    BodyCut,
    /// While the server was already answering (both bodies streaming).
    #[error("the client's request body failed: {0}")]
    RequestBody(#[source] BoxError),
}

impl ServerError {
    /// Whether the server cannot have acted on the request: the connection
    /// failed under it (a keep-alive connection closed as the request
    /// arrived, say). A request that can be replayed may go again; a
    /// malformed answer means the server did act, and is never retried.
    pub fn may_retry(&self) -> bool {
        matches!(
            self,
            ServerError::ClosedBeforeResponse | ServerError::Read(_) | ServerError::Write(_)
        )
    }
}

/// Why a request failed, and its body when no byte of the request was sent.
pub struct Failed {
    pub error: SendError,
    /// The request body, unread, when the request can go elsewhere whole.
    pub unsent: Option<UpstreamBody>,
}

/// A request head encoded once: every attempt, on any server of the pool,
/// sends the same bytes (nothing in them names the server).
pub struct RequestHead {
    bytes: Bytes,
    chunked: bool,
    head_request: bool,
    /// An upgrade is sent at once: its 101 takes the socket for a tunnel.
    upgrade: bool,
}

/// A field written after a request's own (see [`RequestHead::encode`]).
pub type ExtraField = (HeaderName, HeaderValue);

impl RequestHead {
    /// The head of a request with `headers`, then `extra` (fields that
    /// `headers` does not hold: written, never hashed into the map).
    pub fn encode(method: &Method, uri: &Uri, headers: &HeaderMap, extra: &[ExtraField]) -> Self {
        let mut bytes = BytesMut::new();
        head::encode_request(method, uri, headers, extra, &mut bytes);
        RequestHead {
            bytes: bytes.freeze(),
            chunked: headers.contains_key(header::TRANSFER_ENCODING),
            head_request: method == Method::HEAD,
            upgrade: headers.contains_key(header::UPGRADE),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Server(ServerError),
    /// The client's request body failed (the client went away mid-upload).
    #[error("the client's request body failed: {0}")]
    ClientBody(BoxError),
}

impl From<ServerError> for SendError {
    fn from(error: ServerError) -> Self {
        SendError::Server(error)
    }
}

/// An open connection to a server, with what was read from it and not yet used.
#[derive(Debug)]
pub struct ServerConnection {
    socket: Arc<Socket>,
    buf: BytesMut,
}

impl ServerConnection {
    pub fn new(stream: TcpStream) -> Self {
        ServerConnection {
            socket: Socket::new(stream),
            buf: BytesMut::new(),
        }
    }

    /// Whether an idle connection is still open with nothing unasked on it.
    /// No system call unless the reactor saw the socket become readable
    /// (the server closed it, or sent bytes nobody asked for). Not
    /// `poll_read_ready`: it draws on the task's coop budget, and says
    /// `Pending` (alive) for a closed socket once that is spent.
    pub fn is_alive(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.socket.stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Like [`Self::is_alive`], but asks the kernel (one `recv` with
    /// `MSG_PEEK`), so a close that arrived before the event loop saw it is
    /// found too: for a request that could not go again if the connection
    /// turned out closed under it.
    pub fn is_alive_now(&self) -> bool {
        use rustix::net::{RecvFlags, recv};
        let mut probe = [0u8; 1];
        let peeked = recv(
            &self.socket.stream,
            &mut probe,
            RecvFlags::PEEK | RecvFlags::DONTWAIT,
        );
        matches!(peeked, Err(rustix::io::Errno::AGAIN))
    }

    /// Reads until a final response head (interim 1xx heads other than 101
    /// are skipped, as hyper did, and noted in `answered`).
    fn poll_head(
        &mut self,
        cx: &mut Context<'_>,
        head_request: bool,
        answered: &mut bool,
    ) -> Poll<Result<head::ResponseHead, ServerError>> {
        loop {
            if !self.buf.is_empty()
                && let Some(head) = head::parse_response(&mut self.buf, head_request)?
            {
                if head.status.is_informational() && head.status != StatusCode::SWITCHING_PROTOCOLS
                {
                    *answered = true;
                    continue;
                }
                return Poll::Ready(Ok(head));
            }
            // Once the server has sent anything (an interim answer, part of a
            // head), it has acted on the request: its failure is not retried.
            let answered = *answered || !self.buf.is_empty();
            match std::task::ready!(self.poll_fill(cx)) {
                Ok(0) if answered => return Poll::Ready(Err(ServerError::ClosedInHead)),
                Ok(0) => return Poll::Ready(Err(ServerError::ClosedBeforeResponse)),
                Ok(_) => {}
                Err(ServerError::Read(e)) if answered => {
                    return Poll::Ready(Err(ServerError::ReadInHead(e)));
                }
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// Reads what the server sent next into the buffer; `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<Result<usize, ServerError>> {
        self.buf.reserve(READ_CHUNK);
        let stream = &self.socket.stream;
        loop {
            std::task::ready!(stream.poll_read_ready(cx)).map_err(ServerError::Read)?;
            let room = self.buf.capacity() - self.buf.len();
            let mut taken = None;
            // A read that did not fill the room emptied the socket: its
            // readiness is cleared, as tokio's own `poll_read` does, by
            // answering "would block" to `try_io` (which clears it only for
            // the event it saw, so a newer one is not lost). Without this,
            // the next look at the socket (`is_alive`, the next response)
            // paid a `recvfrom` that found nothing: one system call in
            // three of this side's reads.
            let read = stream.try_io(Interest::READABLE, || {
                let n = stream.try_read_buf(&mut self.buf)?;
                taken = Some(n);
                if n > 0 && n < room {
                    Err(io::ErrorKind::WouldBlock.into())
                } else {
                    Ok(n)
                }
            });
            match (taken, read) {
                (Some(n), _) => return Poll::Ready(Ok(n)),
                (None, Err(e)) if e.kind() == io::ErrorKind::WouldBlock => continue,
                (None, read) => return Poll::Ready(read.map_err(ServerError::Read)),
            }
        }
    }
}

/// Sends `request` on `connection` and waits for the response head (the
/// caller bounds the wait). The response's body reads from the connection
/// (and goes on uploading the request body if the server answered before
/// its end) and gives the connection back to `server`'s idle pool at its end
/// when the server keeps it open (never without a `server`: a health
/// probe); a 101's body hands the connection to a
/// tunnel instead ([`ServerBody::into_upgraded`]).
pub async fn send(
    mut connection: ServerConnection,
    head: &RequestHead,
    body: UpstreamBody,
    server: Option<Arc<Server>>,
) -> Result<Response<ServerBody>, Failed> {
    let failed = |error: SendError| Failed {
        error,
        unsent: None,
    };
    // A bodiless request waits in the outbox to go out with the others of
    // this turn (a body, or an upgrade, goes at once).
    let bodiless = body.is_end_stream();
    let mut deferred = bodiless && !head.upgrade && outbox::defer(&connection.socket, &head.bytes);
    if !deferred {
        let mut written = 0;
        let sent = std::future::poll_fn(|cx| {
            outbox::poll_write_rest(&connection.socket.stream, cx, &head.bytes, &mut written)
        })
        .await;
        if let Err(e) = sent {
            // Nothing reached the server if no byte was written: the body
            // goes back with the error, for another server.
            return Err(Failed {
                error: SendError::Server(ServerError::Write(e)),
                unsent: (written == 0).then_some(body),
            });
        }
    }
    // Set when a deferred head was only partly sent: the rest goes from here.
    let mut rest_from: Option<usize> = None;

    // Boxed: rare, and the response (which carries it) moves several times.
    // A bodiless request keeps its (empty) body to hand back if its deferred
    // head never reached the server.
    let (mut upload, mut unsent_body) = if bodiless {
        (None, Some(body))
    } else {
        (Some(Box::new(Uploading::new(body, head.chunked))), None)
    };
    // A body the server stopped reading leaves the connection's framing unknown.
    let mut upload_failed = false;
    if upload.is_some() {
        std::future::poll_fn(|cx| {
            Poll::Ready(advance(
                &mut upload,
                &connection.socket.stream,
                cx,
                &mut upload_failed,
            ))
        })
        .await
        .map_err(|e| failed(SendError::ClientBody(e)))?;
        // hyper answers a client's `Expect: 100-continue` when its body is
        // first asked for, but on the connection's next turn: let that turn
        // come before a response head can be read, or a server that answers
        // at once (an echo) gets its head to the client before the 100, and
        // the client, still waiting for the 100, never sends the body.
        tokio::task::yield_now().await;
    }
    // Whether the server has sent anything yet (an interim answer).
    let mut answered = false;
    let response_head = std::future::poll_fn(|cx| {
        if deferred {
            match connection.socket.poll_deferred(cx) {
                Ok(outbox::Sent::Fine) => {}
                Ok(outbox::Sent::From(written)) => {
                    deferred = false;
                    rest_from = Some(written);
                }
                Err((written, e)) => {
                    let error = SendError::Server(ServerError::Write(e));
                    return Poll::Ready(Err((written == 0, error)));
                }
            }
        }
        if let Some(written) = rest_from.as_mut() {
            std::task::ready!(outbox::poll_write_rest(
                &connection.socket.stream,
                cx,
                &head.bytes,
                written
            ))
            .map_err(|e| (*written == 0, SendError::Server(ServerError::Write(e))))?;
            rest_from = None;
        }
        if let Err(e) = advance(
            &mut upload,
            &connection.socket.stream,
            cx,
            &mut upload_failed,
        ) {
            return Poll::Ready(Err((false, SendError::ClientBody(e))));
        }
        connection
            .poll_head(cx, head.head_request, &mut answered)
            .map_err(|e| (false, SendError::Server(e)))
    })
    .await
    .map_err(|(nothing_sent, error)| Failed {
        error,
        unsent: if nothing_sent {
            unsent_body.take()
        } else {
            None
        },
    })?;
    let upgraded = response_head.status == StatusCode::SWITCHING_PROTOCOLS;
    let reusable = response_head.keep_alive && !upload_failed && !upgraded;
    let mut response = Response::new(ServerBody::new(
        connection,
        upload,
        response_head.framing,
        reusable,
        server,
    ));
    *response.status_mut() = response_head.status;
    *response.version_mut() = response_head.version;
    *response.headers_mut() = response_head.headers;
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A task may look at many idle connections in one poll (a server that
    /// restarted closed them all): each closed one must be seen as closed,
    /// however much of the task's coop budget is left.
    #[tokio::test]
    async fn is_alive_now_sees_a_close_the_reactor_has_not() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let connection = ServerConnection::new(stream);
        assert!(connection.is_alive_now(), "an open connection");
        // No await from here: this thread's reactor cannot have run.
        drop(server);
        assert!(
            !connection.is_alive_now(),
            "a closed connection taken for alive"
        );
    }

    #[tokio::test]
    async fn is_alive_sees_every_closed_connection_in_one_poll() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut connections = Vec::new();
        for _ in 0..200 {
            let stream = TcpStream::connect(addr).await.unwrap();
            drop(listener.accept().await.unwrap());
            // The reactor has seen the server's close.
            stream.readable().await.unwrap();
            connections.push(ServerConnection::new(stream));
        }
        let alive = connections.iter().filter(|c| c.is_alive()).count();
        assert_eq!(alive, 0, "closed connections taken for alive");
    }

    /// The first write of a head finds the socket full although the reactor
    /// last saw it writable (a server that answered before reading all of the
    /// previous request's body, say): the request waits for room and goes
    /// out once the server reads, rather than waiting with no waker.
    #[tokio::test]
    async fn a_head_whose_first_write_finds_the_socket_full_goes_out_later() {
        use std::io::Write as _;
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let std_stream = std::net::TcpStream::connect(addr).unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        std_stream.set_nonblocking(true).unwrap();
        // The same socket through another descriptor: filling it through
        // this one leaves the reactor's cached readiness "writable".
        let filler = std_stream.try_clone().unwrap();
        let stream = TcpStream::from_std(std_stream).unwrap();
        stream.writable().await.unwrap();
        let chunk = vec![b'x'; 65536];
        let mut filled = 0;
        loop {
            match (&filler).write(&chunk) {
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let head =
            RequestHead::encode(&Method::GET, &Uri::from_static("/"), &HeaderMap::new(), &[]);
        let connection = ServerConnection::new(stream);
        let sending = tokio::spawn(async move {
            let body = UpstreamBody::Right(http_body_util::Empty::new());
            send(connection, &head, body, None)
                .await
                .map(|response| response.status())
                .map_err(|failed| format!("{:?}", failed.error))
        });
        // The request's first write meets the full socket.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        let mut received = Vec::new();
        let mut buf = vec![0u8; 65536];
        let drained = tokio::time::timeout(std::time::Duration::from_secs(3), async {
            while received.len() <= filled || !received.ends_with(b"\r\n\r\n") {
                let n = server.read(&mut buf).await.unwrap();
                assert!(n > 0, "the connection closed");
                received.extend_from_slice(&buf[..n]);
            }
        })
        .await;
        assert!(
            drained.is_ok(),
            "the head never arrived ({} of {filled} filler bytes read)",
            received.len()
        );
        server
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
            .await
            .unwrap();
        let status = tokio::time::timeout(std::time::Duration::from_secs(3), sending)
            .await
            .expect("a response head")
            .unwrap()
            .unwrap();
        assert_eq!(status, StatusCode::OK);
    }
}
