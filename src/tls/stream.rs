//! One server-side TLS connection on rustls's unbuffered API, with wharf
//! holding the buffers.
//!
//! rustls's buffered `ServerConnection` keeps a 4 KiB receive buffer for the
//! whole life of a connection: 4 of the 10 KB that an idle TLS websocket cost
//! (`bench/run --only idle`: 10,039 B per TLS websocket against 1,768 B plain).
//! Here ciphertext is read into a per-thread scratch buffer and processed
//! there, and records are encrypted into another; a connection keeps bytes of
//! its own only while a record is incomplete, a record's plaintext did not fit
//! the reader's buffer, or encrypted bytes wait for the socket. An idle
//! connection holds no buffer. rustls still does all of TLS (handshake, record
//! protection, key updates, alerts); this module only moves bytes.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::{Acceptor, ClientHello, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The most plaintext one record carries (RFC 8446 §5.1).
const MAX_FRAGMENT: usize = 16_384;
/// A whole record of the largest kind (TLS 1.2 allows 2 KiB of expansion).
const MAX_RECORD: usize = 5 + MAX_FRAGMENT + 2048;
/// Ciphertext is read into this much room per thread: an incomplete record
/// held over, and room to read at least one more whole record after it.
const READ_SCRATCH: usize = 2 * MAX_RECORD;
/// Records are encrypted into this much room per thread: one write's worth.
const WRITE_SCRATCH: usize = MAX_FRAGMENT + 1024;
/// A ClientHello may be joined over records up to this size (rustls's own
/// limit on a handshake message) before the connection is refused.
const MAX_HELLO: usize = 0xffff + 5;
/// At most this much ciphertext is held while rustls joins one handshake
/// message over records (it keeps each record's bytes until the message is
/// whole). A message is at most 64 KiB, but its records are not: one byte a
/// record, or a TLS 1.3 record padded out to 16 KiB, would otherwise have a
/// client make a connection hold megabytes, even gigabytes. Above the largest
/// ClientHello `accept` passes on, and room for one more record.
const MAX_JOINED: usize = MAX_HELLO + 4096 + MAX_RECORD;

thread_local! {
    static READ_ROOM: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_SCRATCH].into_boxed_slice());
    static WRITE_ROOM: RefCell<Box<[u8]>> = RefCell::new(vec![0; WRITE_SCRATCH].into_boxed_slice());
}

/// A TLS connection whose handshake is done: plaintext in and out through
/// [`AsyncRead`] and [`AsyncWrite`].
pub struct TlsConnection<IO> {
    io: IO,
    tls: UnbufferedServerConnection,
    /// Ciphertext read and not yet processed: an incomplete record, or records
    /// held back while the reader had no room. Empty (unallocated) when idle.
    received: Vec<u8>,
    /// Plaintext the reader had no room for, from `plaintext_at` on.
    plaintext: Vec<u8>,
    plaintext_at: usize,
    /// Encoded records the socket has not taken yet, from `unsent_at` on.
    unsent: Vec<u8>,
    unsent_at: usize,
    /// The client sent close_notify or closed its side.
    read_closed: bool,
    /// We sent close_notify.
    write_closed: bool,
}

/// What one round of processing ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// Plaintext was delivered (or kept for the reader).
    Data,
    /// The client will send nothing more.
    Eof,
    /// Nothing more can happen without more bytes from the client.
    NeedMore,
    /// `Goal::Write`: this many bytes of ciphertext are in the write room.
    Encrypted(usize),
    /// `Goal::Write`/`Goal::Close`: no more can be sent.
    Closed,
}

/// What a round of processing is for.
enum Goal<'a, 'b> {
    /// The handshake: nothing to deliver yet.
    Handshake,
    /// Reading: plaintext goes to `out`, what does not fit is kept.
    Read(&'a mut ReadBuf<'b>),
    /// Writing: encrypt `plaintext` into `room`.
    Write {
        plaintext: &'a [u8],
        room: &'a mut [u8],
    },
    /// Shutting down: queue close_notify.
    Close,
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsConnection<IO> {
    /// Runs the server side of a handshake on `io`. `choose` picks the config
    /// from the ClientHello (read whole before any config is committed to).
    /// The caller bounds it with a timeout.
    pub async fn accept(
        mut io: IO,
        choose: impl FnOnce(&ClientHello<'_>) -> Arc<ServerConfig>,
    ) -> io::Result<Self> {
        let mut acceptor = Acceptor::default();
        let mut received = Vec::new();
        let config = loop {
            if received.len() >= MAX_HELLO {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "ClientHello larger than 64 KiB",
                ));
            }
            let start = received.len();
            received.resize(start + 4096, 0);
            let n = io.read(&mut received[start..]).await?;
            received.truncate(start + n);
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the TLS handshake finished",
                ));
            }
            let mut new = &received[start..];
            while !new.is_empty() {
                acceptor.read_tls(&mut new)?;
            }
            match acceptor.accept() {
                Ok(None) => continue,
                Ok(Some(accepted)) => break choose(&accepted.client_hello()),
                Err((e, mut alert)) => {
                    let mut bytes = Vec::new();
                    if alert.write_all(&mut bytes).is_ok() {
                        let _ = io.write_all(&bytes).await;
                    }
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
            }
        };
        drop(acceptor);
        let tls = UnbufferedServerConnection::new(config)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut connection = TlsConnection {
            io,
            tls,
            received,
            plaintext: Vec::new(),
            plaintext_at: 0,
            unsent: Vec::new(),
            unsent_at: 0,
            read_closed: false,
            write_closed: false,
        };
        poll_fn(|cx| connection.poll_handshake(cx)).await?;
        Ok(connection)
    }

    /// The ALPN protocol agreed, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.tls.alpn_protocol()
    }

    /// The socket under the TLS.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The socket under the TLS, to read and write raw bytes.
    pub fn into_inner(self) -> IO {
        self.io
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            // Each flight goes out whole before the next is waited for.
            ready!(self.poll_send_unsent(cx))?;
            if !self.tls.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            match ready!(self.poll_records(cx, Goal::Handshake)) {
                Ok(Stop::Eof) => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "closed before the TLS handshake finished",
                    )));
                }
                Ok(_) => continue,
                Err(e) => {
                    // The alert goes if the socket takes it at once.
                    let _ = self.poll_send_unsent(cx);
                    return Poll::Ready(Err(e));
                }
            }
        }
    }

    /// Processes held ciphertext, reading more from the socket while nothing
    /// else can happen, until `goal` is served or the socket has nothing.
    fn poll_records(
        &mut self,
        cx: &mut Context<'_>,
        mut goal: Goal<'_, '_>,
    ) -> Poll<io::Result<Stop>> {
        if self.received.len() > MAX_JOINED {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS handshake message spread over too many records",
            )));
        }
        let held = mem::take(&mut self.received);
        if held.len() + MAX_RECORD <= READ_SCRATCH {
            READ_ROOM.with_borrow_mut(|room| {
                room[..held.len()].copy_from_slice(&held);
                let (poll, rest) = self.poll_records_in(cx, room, held.len(), &mut goal);
                self.received = keep(held, &room[rest.0..rest.1]);
                poll
            })
        } else {
            // A handshake message joined over many records: work in a buffer
            // of the connection's own, grown to read one more record.
            let mut work = held;
            let filled = work.len();
            work.resize(filled + MAX_RECORD, 0);
            let (poll, (start, end)) = self.poll_records_in(cx, &mut work, filled, &mut goal);
            work.truncate(end);
            work.drain(..start);
            self.received = work;
            poll
        }
    }

    /// `poll_records` over `room`, whose first `filled` bytes are held
    /// ciphertext; also returns the range of `room` still unprocessed.
    fn poll_records_in(
        &mut self,
        cx: &mut Context<'_>,
        room: &mut [u8],
        mut filled: usize,
        goal: &mut Goal<'_, '_>,
    ) -> (Poll<io::Result<Stop>>, (usize, usize)) {
        let mut start = 0;
        loop {
            let stop = match self.process(&mut room[start..filled], goal) {
                Ok((used, stop)) => {
                    start += used;
                    stop
                }
                Err(e) => return (Poll::Ready(Err(e)), (start, filled)),
            };
            if stop != Stop::NeedMore {
                return (Poll::Ready(Ok(stop)), (start, filled));
            }
            if matches!(goal, Goal::Handshake)
                && (!self.tls.is_handshaking() || self.unsent_at < self.unsent.len())
            {
                // Done, or a flight to send before reading on.
                return (Poll::Ready(Ok(stop)), (start, filled));
            }
            room.copy_within(start..filled, 0);
            filled -= start;
            start = 0;
            if filled == room.len() {
                let e = io::Error::new(io::ErrorKind::InvalidData, "TLS record too large");
                return (Poll::Ready(Err(e)), (0, filled));
            }
            let mut read = ReadBuf::new(&mut room[filled..]);
            match Pin::new(&mut self.io).poll_read(cx, &mut read) {
                Poll::Pending => return (Poll::Pending, (0, filled)),
                Poll::Ready(Err(e)) => return (Poll::Ready(Err(e)), (0, filled)),
                Poll::Ready(Ok(())) if read.filled().is_empty() => {
                    // Closed without close_notify: an end all the same, as
                    // for a plaintext client (HTTP framing catches truncation).
                    self.read_closed = true;
                    return (Poll::Ready(Ok(Stop::Eof)), (0, filled));
                }
                Poll::Ready(Ok(())) => filled += read.filled().len(),
            }
        }
    }

    /// Lets rustls process the records in `data` towards `goal`. Returns how
    /// many bytes of `data` are finished with, and why it stopped.
    fn process(&mut self, data: &mut [u8], goal: &mut Goal<'_, '_>) -> io::Result<(usize, Stop)> {
        let mut used = 0;
        let mut delivered = false;
        loop {
            let UnbufferedStatus { mut discard, state } =
                self.tls.process_tls_records(&mut data[used..]);
            let state = match state {
                Ok(state) => state,
                Err(e) => {
                    self.queue_alert();
                    return Err(tls_error(e));
                }
            };
            let stop = match state {
                ConnectionState::ReadTraffic(mut traffic) => {
                    let mut kept = false;
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        let payload = record.payload;
                        let taken = match goal {
                            Goal::Read(out) => {
                                let n = payload.len().min(out.remaining());
                                out.put_slice(&payload[..n]);
                                n
                            }
                            _ => 0,
                        };
                        if taken < payload.len() {
                            keep_plaintext(
                                &mut self.plaintext,
                                &mut self.plaintext_at,
                                &payload[taken..],
                            );
                            kept = true;
                        }
                    }
                    delivered = true;
                    match goal {
                        // Handed over whole: read on while the reader has room.
                        Goal::Read(out) => (kept || out.remaining() == 0).then_some(Stop::Data),
                        Goal::Handshake => Some(Stop::Data),
                        // Kept for the reader; the write goes on.
                        Goal::Write { .. } | Goal::Close => None,
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    append_encoded(&mut self.unsent, &mut self.unsent_at, |room| {
                        encode.encode(room).map_err(Failure::from)
                    })?;
                    None
                }
                ConnectionState::TransmitTlsData(transmit) => {
                    // Sent with whatever follows, by the caller.
                    transmit.done();
                    None
                }
                ConnectionState::PeerClosed => {
                    self.read_closed = true;
                    match goal {
                        Goal::Write { .. } | Goal::Close => None,
                        _ => Some(Stop::Eof),
                    }
                }
                ConnectionState::Closed => {
                    self.read_closed = true;
                    match goal {
                        Goal::Write { .. } | Goal::Close => Some(Stop::Closed),
                        _ => Some(Stop::Eof),
                    }
                }
                ConnectionState::BlockedHandshake => match goal {
                    Goal::Write { .. } | Goal::Close => {
                        return Err(io::Error::other("TLS handshake not finished"));
                    }
                    _ => Some(if delivered {
                        Stop::Data
                    } else {
                        Stop::NeedMore
                    }),
                },
                ConnectionState::WriteTraffic(mut traffic) => match goal {
                    Goal::Write { plaintext, room } => {
                        let n = traffic.encrypt(plaintext, room).map_err(|e| match e {
                            EncryptError::InsufficientSize(_) => {
                                io::Error::other("TLS write room too small")
                            }
                            other => io::Error::other(other.to_string()),
                        })?;
                        Some(Stop::Encrypted(n))
                    }
                    Goal::Close => {
                        append_encoded(&mut self.unsent, &mut self.unsent_at, |room| {
                            traffic.queue_close_notify(room).map_err(Failure::from)
                        })?;
                        Some(Stop::Closed)
                    }
                    _ => Some(if delivered {
                        Stop::Data
                    } else {
                        Stop::NeedMore
                    }),
                },
                other => {
                    return Err(io::Error::other(format!("unexpected TLS state {other:?}")));
                }
            };
            used += discard;
            if let Some(stop) = stop {
                return Ok((used, stop));
            }
        }
    }

    /// Queues the alert rustls prepared for an error, for a best-effort send.
    fn queue_alert(&mut self) {
        while self.tls.wants_write() {
            // Only queued records are taken: nothing is read from the empty slice.
            let status = self.tls.process_tls_records(&mut []);
            let Ok(ConnectionState::EncodeTlsData(mut encode)) = status.state else {
                return;
            };
            let queued = append_encoded(&mut self.unsent, &mut self.unsent_at, |room| {
                encode.encode(room).map_err(Failure::from)
            });
            if queued.is_err() {
                return;
            }
        }
    }

    /// Writes what is queued; frees the queue once the socket took it all.
    fn poll_send_unsent(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.unsent_at < self.unsent.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.unsent[self.unsent_at..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.unsent_at += n;
        }
        self.unsent = Vec::new();
        self.unsent_at = 0;
        Poll::Ready(Ok(()))
    }

    /// Runs `goal` (a write or a close) against the held ciphertext, which
    /// rustls may need to process first (a key update, say).
    fn drive(&mut self, mut goal: Goal<'_, '_>) -> io::Result<Stop> {
        let mut held = mem::take(&mut self.received);
        let result = self.process(&mut held, &mut goal);
        if let Ok((used, _)) = &result {
            held.drain(..*used);
        }
        self.received = if held.is_empty() { Vec::new() } else { held };
        result.map(|(_, stop)| stop)
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsConnection<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.plaintext_at < this.plaintext.len() {
            let n = (this.plaintext.len() - this.plaintext_at).min(buf.remaining());
            buf.put_slice(&this.plaintext[this.plaintext_at..this.plaintext_at + n]);
            this.plaintext_at += n;
            if this.plaintext_at == this.plaintext.len() {
                this.plaintext = Vec::new();
                this.plaintext_at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        if this.read_closed || buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        let result = this.poll_records(cx, Goal::Read(buf));
        // What reading made rustls send (a key update, an alert) goes now if
        // the socket takes it; otherwise with the next write or flush.
        if this.unsent_at < this.unsent.len() {
            let _ = this.poll_send_unsent(cx);
        }
        result.map_ok(|_| ())
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsConnection<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // At most one write's records wait for the socket.
        ready!(this.poll_send_unsent(cx))?;
        if this.write_closed {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let plaintext = &data[..data.len().min(MAX_FRAGMENT)];
        WRITE_ROOM.with_borrow_mut(|room| {
            let stop = this.drive(Goal::Write {
                plaintext,
                room: &mut room[..],
            })?;
            let Stop::Encrypted(len) = stop else {
                return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
            };
            let mut sent = 0;
            if this.unsent_at == this.unsent.len() {
                // The usual case: straight from the room to the socket.
                match Pin::new(&mut this.io).poll_write(cx, &room[..len]) {
                    Poll::Ready(Ok(n)) => sent = n,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if sent < len {
                // Records queued by rustls while driving go first.
                append_encoded(&mut this.unsent, &mut this.unsent_at, |to| {
                    let rest = &room[sent..len];
                    match to.get_mut(..rest.len()) {
                        Some(to) => {
                            to.copy_from_slice(rest);
                            Ok(rest.len())
                        }
                        None => Err(Failure::NeedRoom(rest.len())),
                    }
                })?;
                let _ = this.poll_send_unsent(cx);
            }
            Poll::Ready(Ok(plaintext.len()))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_unsent(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            // An error here only means close_notify cannot be sent.
            let _ = this.drive(Goal::Close);
        }
        ready!(this.poll_send_unsent(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// `rest` to keep, in `buffer`'s allocation when it is big enough; no
/// allocation at all when `rest` is empty.
fn keep(mut buffer: Vec<u8>, rest: &[u8]) -> Vec<u8> {
    if rest.is_empty() {
        return Vec::new();
    }
    buffer.clear();
    buffer.extend_from_slice(rest);
    buffer
}

fn keep_plaintext(plaintext: &mut Vec<u8>, at: &mut usize, bytes: &[u8]) {
    drop_taken(plaintext, at);
    plaintext.extend_from_slice(bytes);
}

/// Drops the bytes of `buffer` before `at` (already taken), before more are added.
fn drop_taken(buffer: &mut Vec<u8>, at: &mut usize) {
    if *at > 0 {
        buffer.drain(..*at);
        *at = 0;
    }
}

/// Why an encoder could not write into the room it was given.
enum Failure {
    /// It needs this many bytes of room.
    NeedRoom(usize),
    Broken(io::Error),
}

impl From<EncodeError> for Failure {
    fn from(e: EncodeError) -> Self {
        match e {
            EncodeError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Failure::NeedRoom(required_size)
            }
            other => Failure::Broken(io::Error::other(other.to_string())),
        }
    }
}

impl From<EncryptError> for Failure {
    fn from(e: EncryptError) -> Self {
        match e {
            EncryptError::InsufficientSize(InsufficientSizeError { required_size }) => {
                Failure::NeedRoom(required_size)
            }
            other => Failure::Broken(io::Error::other(other.to_string())),
        }
    }
}

/// Appends what `encode` writes to `queue`, giving it the room it asks for.
fn append_encoded(
    queue: &mut Vec<u8>,
    at: &mut usize,
    mut encode: impl FnMut(&mut [u8]) -> Result<usize, Failure>,
) -> io::Result<()> {
    drop_taken(queue, at);
    let start = queue.len();
    let mut room = 512;
    loop {
        queue.resize(start + room, 0);
        match encode(&mut queue[start..]) {
            Ok(n) => {
                queue.truncate(start + n);
                return Ok(());
            }
            Err(Failure::NeedRoom(size)) if size > room => room = size,
            Err(Failure::NeedRoom(_)) => {
                queue.truncate(start);
                return Err(io::Error::other("TLS encoder asked for no more room"));
            }
            Err(Failure::Broken(e)) => {
                queue.truncate(start);
                return Err(e);
            }
        }
    }
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
    use tokio::net::{TcpListener, TcpStream};

    fn test_configs() -> (Arc<ServerConfig>, rustls::RootCertStore) {
        let (cert, key) = crate::tls::self_signed(&["localhost"]).unwrap();
        let cert = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let server_config = Arc::new(
            ServerConfig::builder()
                .with_no_client_auth()
                .with_single_cert(vec![cert.clone()], key)
                .unwrap(),
        );
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).unwrap();
        (server_config, roots)
    }

    /// A client joining one handshake message over one-byte records, a
    /// pause between bursts, cannot make the connection hold more than a
    /// bounded amount of ciphertext (rustls's own buffered deframer stops at
    /// 64 KiB of records while joining).
    #[tokio::test]
    async fn a_handshake_message_in_tiny_records_is_bounded() {
        let (server_config, roots) = test_configs();
        let client_config = Arc::new(
            rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut conn = rustls::ClientConnection::new(client_config, name).unwrap();
            let mut hello = Vec::new();
            conn.write_tls(&mut hello).unwrap();
            tcp.write_all(&hello).await.unwrap();
            // A ClientKeyExchange that says 0xfff0 bytes, one byte a record.
            let header = [0x10u8, 0x00, 0xff, 0xf0];
            let mut records = Vec::new();
            for byte in header.into_iter().chain(std::iter::repeat_n(0, 30_000 - 4)) {
                records.extend_from_slice(&[0x16, 0x03, 0x03, 0x00, 0x01, byte]);
            }
            for chunk in records.chunks(4096) {
                tcp.write_all(chunk).await.unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
            tcp
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = TlsConnection {
            io: tcp,
            tls: UnbufferedServerConnection::new(server_config).unwrap(),
            received: Vec::new(),
            plaintext: Vec::new(),
            plaintext_at: 0,
            unsent: Vec::new(),
            unsent_at: 0,
            read_closed: false,
            write_closed: false,
        };
        let outcome = tokio::time::timeout(
            std::time::Duration::from_millis(3000),
            poll_fn(|cx| server.poll_handshake(cx)),
        )
        .await;
        let _tcp = client.await.unwrap();
        let held = server.received.len();
        assert!(
            held <= MAX_JOINED + MAX_RECORD,
            "{held} bytes of ciphertext held for one handshake message ({outcome:?})"
        );
        assert!(matches!(outcome, Ok(Err(_))), "{outcome:?}");
    }

    /// After traffic both ways (records bigger than the reader's buffer
    /// included), a connection waiting for more holds no buffer at all.
    #[tokio::test]
    async fn an_idle_connection_holds_no_buffer() {
        let (server_config, roots) = test_configs();
        let client_config = Arc::new(
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let client = tokio::spawn(async move {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client_config)
                .connect(name, tcp)
                .await
                .unwrap();
            tls.write_all(&[7; 40_000]).await.unwrap();
            let mut back = vec![0; 40_000];
            tls.read_exact(&mut back).await.unwrap();
            assert_eq!(back, vec![9; 40_000]);
            tls
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = TlsConnection::accept(tcp, |_| server_config).await.unwrap();
        let mut got = vec![0; 40_000];
        let mut at = 0;
        while at < got.len() {
            // A small reader: most records do not fit at once.
            let end = (at + 1000).min(got.len());
            at += server.read(&mut got[at..end]).await.unwrap();
        }
        assert_eq!(got, vec![7; 40_000]);
        server.write_all(&[9; 40_000]).await.unwrap();
        server.flush().await.unwrap();
        let _client = client.await.unwrap();
        // Waiting for the next record: nothing held.
        let mut buf = [0u8; 16];
        let waiting =
            tokio::time::timeout(std::time::Duration::from_millis(20), server.read(&mut buf)).await;
        assert!(waiting.is_err(), "nothing was sent, so nothing can be read");
        assert_eq!(server.received.capacity(), 0);
        assert_eq!(server.plaintext.capacity(), 0);
        assert_eq!(server.unsent.capacity(), 0);
    }
}
