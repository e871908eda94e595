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
//! connection holds no buffer.
//!
//! rustls does the handshake, and all of TLS 1.2. A TLS 1.3 connection is
//! then handed over to [`Records`]: wharf's own record protection, which
//! keeps about 200 bytes where rustls keeps about 3.6 KB (see
//! [`super::records`]). This module moves the bytes either way.

use std::cell::RefCell;
use std::future::poll_fn;
use std::io;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::server::{Acceptor, ClientHello, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus,
};
use rustls::{ProtocolVersion, ServerConfig};
use thin_vec::ThinVec;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

use super::ALPN_HTTP_1_1;
use super::records::{Alert, MAX_FRAGMENT, Opened, RecordError, Records};
use super::secrets::{self, TrafficSecrets};

/// A whole record of the largest kind (TLS 1.2 allows 2 KiB of expansion).
const MAX_RECORD: usize = 5 + MAX_FRAGMENT + 2048;
/// Ciphertext is read into this much room per thread: an incomplete record
/// held over, and room to read at least one more whole record after it.
const READ_SCRATCH: usize = 2 * MAX_RECORD;
/// Records are encrypted into this much room per thread: one write's worth
/// (and a key update before it).
const WRITE_SCRATCH: usize = MAX_FRAGMENT + 1024;
const _: () = assert!(Records::room_for(MAX_FRAGMENT) <= WRITE_SCRATCH);
/// The ALPN id of HTTP/2, kept for a connection handed over.
const ALPN_H2: &[u8] = b"h2";
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
    tls: Protection,
    /// The ALPN protocol agreed, once rustls is gone.
    alpn: Alpn,
    // The buffers are `ThinVec`s (a pointer, unallocated while empty): an
    // idle websocket's task holds this for hours, in steps of 128 bytes.
    /// Ciphertext read and not yet processed: an incomplete record, or records
    /// held back while the reader had no room. Empty (unallocated) when idle.
    received: ThinVec<u8>,
    /// Plaintext the reader had no room for, from `plaintext_at` on.
    plaintext: ThinVec<u8>,
    plaintext_at: usize,
    /// Encoded records the socket has not taken yet, from `unsent_at` on.
    unsent: ThinVec<u8>,
    unsent_at: usize,
    /// The client sent close_notify or closed its side.
    read_closed: bool,
    /// We sent close_notify.
    write_closed: bool,
    /// The client closed its side without close_notify.
    peer_vanished: bool,
    /// `unsent` holds the session tickets from the end of a TLS 1.3
    /// handshake (and maybe alerts after them), kept to go out with the
    /// first record written: one send, not two. A client that closes without
    /// writing anything never gets them.
    tickets_waiting: bool,
}

/// The ALPN protocols a handed-over connection can have agreed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alpn {
    None,
    Http11,
    H2,
}

impl Alpn {
    fn of(protocol: Option<&[u8]>) -> Option<Alpn> {
        match protocol {
            None => Some(Alpn::None),
            Some(ALPN_HTTP_1_1) => Some(Alpn::Http11),
            Some(ALPN_H2) => Some(Alpn::H2),
            Some(_) => None,
        }
    }

    fn id(self) -> Option<&'static [u8]> {
        match self {
            Alpn::None => None,
            Alpn::Http11 => Some(ALPN_HTTP_1_1),
            Alpn::H2 => Some(ALPN_H2),
        }
    }
}

/// Who protects the records.
#[expect(
    clippy::large_enum_variant,
    reason = "inline on purpose: `Own` is what an idle TLS websocket holds for hours, and boxing it would add an allocation"
)]
enum Protection {
    /// rustls: the handshake, and TLS 1.2 throughout.
    Rustls(Box<UnbufferedServerConnection>),
    /// TLS 1.3 after the handshake.
    Own(Records),
    /// A record could not be taken and an alert was sent, or the hand-over
    /// failed (and stands in for rustls during it): nothing more goes
    /// either way (RFC 8446 §6.2).
    Failed,
}

/// Sets up `config` for connections that can be handed over to
/// [`Records`]: rustls logs the traffic secrets and lets its keys out.
pub fn allow_hand_over(config: &mut ServerConfig) {
    config.key_log = Arc::new(secrets::CaptureSecrets);
    config.enable_secret_extraction = true;
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
        let mut received = ThinVec::new();
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
            tls: Protection::Rustls(Box::new(tls)),
            alpn: Alpn::None,
            received,
            plaintext: ThinVec::new(),
            plaintext_at: 0,
            unsent: ThinVec::new(),
            unsent_at: 0,
            read_closed: false,
            write_closed: false,
            peer_vanished: false,
            tickets_waiting: false,
        };
        let mut secrets = TrafficSecrets::default();
        poll_fn(|cx| secrets::capture(&mut secrets, || connection.poll_handshake(cx))).await?;
        connection.hand_over(&secrets)
    }

    /// Hands a TLS 1.3 connection whose handshake is done over to
    /// [`Records`] when rustls logged its secrets (the config allowed it)
    /// and has nothing left to encode; otherwise rustls goes on. Records it
    /// sealed already (the session tickets) may wait in `unsent`: ours go
    /// after them.
    fn hand_over(mut self, secrets: &TrafficSecrets) -> io::Result<Self> {
        let Protection::Rustls(tls) = &self.tls else {
            return Ok(self);
        };
        let (Some(client_secret), Some(server_secret)) = (&secrets.client, &secrets.server) else {
            return Ok(self);
        };
        let Some(alpn) = Alpn::of(tls.alpn_protocol()) else {
            return Ok(self);
        };
        let Some(suite) = tls.negotiated_cipher_suite() else {
            return Ok(self);
        };
        if tls.is_handshaking()
            || tls.wants_write()
            || tls.protocol_version() != Some(ProtocolVersion::TLSv1_3)
        {
            return Ok(self);
        }
        let Protection::Rustls(tls) = mem::replace(&mut self.tls, Protection::Failed) else {
            unreachable!("matched above");
        };
        // Checked above: the handshake is over and rustls has nothing to send.
        let (extracted, _) = tls.dangerous_into_kernel_connection().map_err(tls_error)?;
        let records = Records::take_over(
            suite.suite(),
            client_secret.as_bytes(),
            server_secret.as_bytes(),
            &extracted,
        )
        .ok_or_else(|| io::Error::other("TLS keys derived here differ from rustls's"))?;
        self.tls = Protection::Own(records);
        self.alpn = alpn;
        Ok(self)
    }

    /// The ALPN protocol agreed, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        match &self.tls {
            Protection::Rustls(tls) => tls.alpn_protocol(),
            Protection::Own(_) | Protection::Failed => self.alpn.id(),
        }
    }

    fn is_handshaking(&self) -> bool {
        matches!(&self.tls, Protection::Rustls(tls) if tls.is_handshaking())
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
            if !self.is_handshaking() {
                // After a TLS 1.3 handshake only the session tickets are
                // left to send: they wait for the first record written.
                let tls13 = matches!(&self.tls, Protection::Rustls(tls)
                    if tls.protocol_version() == Some(ProtocolVersion::TLSv1_3));
                self.tickets_waiting = tls13 && self.unsent_at < self.unsent.len();
                return self.poll_send_queued(cx);
            }
            // Each flight goes out whole before the next is waited for.
            ready!(self.poll_send_unsent(cx))?;
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
                && (!self.is_handshaking() || self.unsent_at < self.unsent.len())
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
                    self.peer_vanished = true;
                    return (Poll::Ready(Ok(Stop::Eof)), (0, filled));
                }
                Poll::Ready(Ok(())) => filled += read.filled().len(),
            }
        }
    }

    /// Processes the records in `data` towards `goal`. Returns how many
    /// bytes of `data` are finished with, and why it stopped.
    fn process(&mut self, data: &mut [u8], goal: &mut Goal<'_, '_>) -> io::Result<(usize, Stop)> {
        match self.tls {
            Protection::Rustls(_) => self.process_rustls(data, goal),
            Protection::Own(_) => self.process_own(data, goal),
            Protection::Failed => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "TLS connection failed",
            )),
        }
    }

    /// [`process`](Self::process) by wharf's own TLS 1.3 records.
    fn process_own(
        &mut self,
        data: &mut [u8],
        goal: &mut Goal<'_, '_>,
    ) -> io::Result<(usize, Stop)> {
        let Protection::Own(records) = &mut self.tls else {
            return Err(io::Error::other("TLS records are rustls's"));
        };
        let out = match goal {
            Goal::Read(out) => out,
            Goal::Handshake => return Ok((0, Stop::Data)),
            Goal::Write { plaintext, room } => {
                return match records.seal_data(plaintext, room) {
                    Ok(n) => Ok((0, Stop::Encrypted(n))),
                    Err(e) => Err(record_error(e)),
                };
            }
            Goal::Close => {
                queue_sealed(&mut self.unsent, &mut self.unsent_at, |room| {
                    records.seal_alert(Alert::CloseNotify, room)
                })?;
                return Ok((0, Stop::Closed));
            }
        };
        let mut opener = None;
        let mut used = 0;
        let mut delivered = false;
        let failed = loop {
            let rest = &mut data[used..];
            let len = match Records::record_len(rest) {
                Ok(Some(len)) if len <= rest.len() => len,
                Ok(_) => {
                    let stop = if delivered {
                        Stop::Data
                    } else {
                        Stop::NeedMore
                    };
                    return Ok((used, stop));
                }
                Err(e) => break e,
            };
            let key = match &mut opener {
                Some(key) => key,
                None => match records.opener() {
                    Ok(key) => opener.insert(key),
                    Err(e) => break e,
                },
            };
            let record = &mut rest[..len];
            used += len;
            match records.open(key, record) {
                Err(e) => break e,
                Ok(Opened::Data(range)) => {
                    let payload = &record[range];
                    let n = payload.len().min(out.remaining());
                    out.put_slice(&payload[..n]);
                    delivered = true;
                    if n < payload.len() {
                        keep_plaintext(&mut self.plaintext, &mut self.plaintext_at, &payload[n..]);
                        return Ok((used, Stop::Data));
                    }
                    if out.remaining() == 0 {
                        return Ok((used, Stop::Data));
                    }
                }
                Ok(Opened::Closed) => {
                    self.read_closed = true;
                    return Ok((used, Stop::Eof));
                }
                Ok(Opened::Nothing) => {}
                Ok(Opened::KeyUpdateAsked) => {
                    // Queued only while nothing else waits for the socket;
                    // otherwise it goes before the next data record.
                    if self.unsent_at == self.unsent.len() && records.owes_key_update() {
                        queue_sealed(&mut self.unsent, &mut self.unsent_at, |room| {
                            records.seal_key_update(room)
                        })?;
                    }
                }
            }
        };
        // Nothing more goes either way; why the connection ends goes to the
        // client if the socket takes it, now (waiting tickets with it), not
        // at a shutdown that may never come.
        self.tickets_waiting = false;
        if let Some(alert) = failed.alert {
            let _ = queue_sealed(&mut self.unsent, &mut self.unsent_at, |room| {
                records.seal_alert(alert, room)
            });
        }
        self.tls = Protection::Failed;
        if delivered {
            // What came before the failure goes to the reader first, as
            // rustls does; the next read, or any write, fails.
            tracing::debug!(error = %failed, "TLS connection failed after data");
            return Ok((used, Stop::Data));
        }
        Err(record_error(failed))
    }

    /// [`process`](Self::process) by rustls.
    fn process_rustls(
        &mut self,
        data: &mut [u8],
        goal: &mut Goal<'_, '_>,
    ) -> io::Result<(usize, Stop)> {
        let mut used = 0;
        let mut delivered = false;
        loop {
            let Protection::Rustls(tls) = &mut self.tls else {
                return Err(io::Error::other("TLS records are wharf's"));
            };
            // A handshake that is over, its last flight encoded, stops here:
            // what came after the client's Finished is left for the hand-over
            // to `Records`, rather than rustls following a KeyUpdate or
            // taking the first piece of a message that came with it.
            if matches!(goal, Goal::Handshake) && !tls.is_handshaking() && !tls.wants_write() {
                let stop = if delivered {
                    Stop::Data
                } else {
                    Stop::NeedMore
                };
                return Ok((used, stop));
            }
            let UnbufferedStatus { mut discard, state } =
                tls.process_tls_records(&mut data[used..]);
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
        let Protection::Rustls(tls) = &mut self.tls else {
            return;
        };
        while tls.wants_write() {
            // Only queued records are taken: nothing is read from the empty slice.
            let status = tls.process_tls_records(&mut []);
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

    /// [`poll_send_unsent`](Self::poll_send_unsent), unless the queue holds
    /// session tickets waiting for a record of the writer's: they are not
    /// its data, and go with that record (or the close_notify) in one send.
    fn poll_send_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.tickets_waiting {
            return Poll::Ready(Ok(()));
        }
        self.poll_send_unsent(cx)
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
        self.unsent = ThinVec::new();
        self.unsent_at = 0;
        self.tickets_waiting = false;
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
        self.received = if held.is_empty() {
            ThinVec::new()
        } else {
            held
        };
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
                this.plaintext = ThinVec::new();
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
        let _ = this.poll_send_queued(cx);
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
        ready!(this.poll_send_queued(cx))?;
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
                // Data is queued now: it is never dropped as tickets are.
                this.tickets_waiting = false;
                let _ = this.poll_send_unsent(cx);
            }
            Poll::Ready(Ok(plaintext.len()))
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_queued(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.write_closed {
            this.write_closed = true;
            if this.peer_vanished {
                // The client closed without close_notify: it has gone (as
                // HTTP takes a client's close), so no close_notify, and the
                // tickets that waited for a record of ours are dropped.
                if this.tickets_waiting {
                    this.unsent = ThinVec::new();
                    this.unsent_at = 0;
                    this.tickets_waiting = false;
                }
            } else {
                // An error here only means close_notify cannot be sent.
                let _ = this.drive(Goal::Close);
            }
        }
        ready!(this.poll_send_unsent(cx))?;
        if this.read_closed && !this.peer_vanished {
            // Both close_notify alerts are through: the TLS connection is
            // over for both sides, and the FIN goes with the socket's close
            // (a shutdown call of its own cost 1-2% of a full handshake in
            // `bench/run --only tls`).
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// `rest` to keep, in `buffer`'s allocation when it is big enough; no
/// allocation at all when `rest` is empty.
fn keep(mut buffer: ThinVec<u8>, rest: &[u8]) -> ThinVec<u8> {
    if rest.is_empty() {
        return ThinVec::new();
    }
    buffer.clear();
    buffer.extend_from_slice(rest);
    buffer
}

fn keep_plaintext(plaintext: &mut ThinVec<u8>, at: &mut usize, bytes: &[u8]) {
    drop_taken(plaintext, at);
    plaintext.extend_from_slice(bytes);
}

/// Drops the bytes of `buffer` before `at` (already taken), before more are added.
fn drop_taken(buffer: &mut ThinVec<u8>, at: &mut usize) {
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
    queue: &mut ThinVec<u8>,
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

fn record_error(e: RecordError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

/// Appends a record that [`Records`] seals to `queue` (a control record:
/// an alert or a key update, which always fits the room first given).
fn queue_sealed(
    queue: &mut ThinVec<u8>,
    at: &mut usize,
    mut seal: impl FnMut(&mut [u8]) -> Result<usize, RecordError>,
) -> io::Result<()> {
    append_encoded(queue, at, |room| {
        seal(room).map_err(|e| Failure::Broken(record_error(e)))
    })
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
        let mut server_config = ServerConfig::builder()
            .with_no_client_auth()
            .with_single_cert(vec![cert.clone()], key)
            .unwrap();
        allow_hand_over(&mut server_config);
        let server_config = Arc::new(server_config);
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
        let (listener, addr) = listen().await;
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
            tls: Protection::Rustls(Box::new(
                UnbufferedServerConnection::new(server_config).unwrap(),
            )),
            alpn: Alpn::None,
            received: ThinVec::new(),
            plaintext: ThinVec::new(),
            plaintext_at: 0,
            unsent: ThinVec::new(),
            unsent_at: 0,
            read_closed: false,
            write_closed: false,
            peer_vanished: false,
            tickets_waiting: false,
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
        let client_config = client_config(roots);
        let (listener, addr) = listen().await;
        let client = tokio::spawn(async move {
            let mut tls = connect(addr, client_config).await;
            tls.write_all(&[7; 40_000]).await.unwrap();
            let mut back = vec![0; 40_000];
            tls.read_exact(&mut back).await.unwrap();
            assert_eq!(back, vec![9; 40_000]);
            tls
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = TlsConnection::accept(tcp, |_| server_config).await.unwrap();
        assert!(
            matches!(server.tls, Protection::Own(_)),
            "TLS 1.3 is handed over"
        );
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

    fn client_config(roots: rustls::RootCertStore) -> rustls::ClientConfig {
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_no_client_auth()
    }

    async fn listen() -> (TcpListener, std::net::SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    async fn connect(
        addr: std::net::SocketAddr,
        config: rustls::ClientConfig,
    ) -> tokio_rustls::client::TlsStream<TcpStream> {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap()
    }

    /// Reads from `server` until `len` bytes came, echoing them back.
    async fn echo(server: &mut TlsConnection<TcpStream>, len: usize) -> Vec<u8> {
        let mut got = vec![0; len];
        server.read_exact(&mut got).await.unwrap();
        server.write_all(&got).await.unwrap();
        server.flush().await.unwrap();
        got
    }

    /// A client's key update, asking for ours, is followed both ways: data
    /// before and after it goes through, and so does close_notify.
    #[tokio::test]
    async fn a_handed_over_connection_follows_key_updates_and_closes() {
        let (server_config, roots) = test_configs();
        let client_config = client_config(roots);
        let (listener, addr) = listen().await;
        let client = tokio::spawn(async move {
            let mut tls = connect(addr, client_config).await;
            let mut back = vec![0; 5000];
            for round in 0..3u8 {
                tls.write_all(&[round; 5000]).await.unwrap();
                tls.flush().await.unwrap();
                tls.read_exact(&mut back).await.unwrap();
                assert_eq!(back, vec![round; 5000]);
                // rustls sends a KeyUpdate that asks for the server's.
                tls.get_mut().1.refresh_traffic_keys().unwrap();
            }
            tls.shutdown().await.unwrap();
            let mut rest = Vec::new();
            tls.read_to_end(&mut rest).await.unwrap();
            rest
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = TlsConnection::accept(tcp, |_| server_config).await.unwrap();
        assert!(matches!(server.tls, Protection::Own(_)));
        for round in 0..3u8 {
            assert_eq!(echo(&mut server, 5000).await, vec![round; 5000]);
        }
        let mut end = [0u8; 1];
        assert_eq!(
            server.read(&mut end).await.unwrap(),
            0,
            "close_notify ends the stream"
        );
        server.shutdown().await.unwrap();
        assert!(client.await.unwrap().is_empty());
    }

    /// A client's key log, to play its records by hand.
    #[derive(Debug, Default)]
    struct ClientLog(std::sync::Mutex<Vec<(String, Vec<u8>)>>);

    impl rustls::KeyLog for ClientLog {
        fn log(&self, label: &str, _: &[u8], secret: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push((label.to_string(), secret.to_vec()));
        }
    }

    /// Runs a client handshake by hand. `after_finished` gives records to
    /// send in the same write as the client's Finished; with `accepted`,
    /// the Finished goes alone and the client then waits for the server to
    /// say its handshake is done. Returns the socket and the client's side
    /// of the records.
    async fn hand_client(
        addr: std::net::SocketAddr,
        roots: rustls::RootCertStore,
        after_finished: impl FnOnce(&mut Records) -> Vec<u8>,
        accepted: Option<tokio::sync::oneshot::Receiver<()>>,
    ) -> (TcpStream, Records) {
        let log = Arc::new(ClientLog::default());
        let mut config = client_config(roots);
        config.key_log = log.clone();
        config.enable_secret_extraction = true;
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
        let mut buf = vec![0; 65536];
        while conn.is_handshaking() {
            while conn.wants_write() && conn.is_handshaking() {
                let mut out = Vec::new();
                conn.write_tls(&mut out).unwrap();
                tcp.write_all(&out).await.unwrap();
            }
            if !conn.is_handshaking() {
                break;
            }
            let n = tcp.read(&mut buf).await.unwrap();
            conn.read_tls(&mut &buf[..n]).unwrap();
            conn.process_new_packets().unwrap();
        }
        let mut finished = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut finished).unwrap();
        }
        if let Some(accepted) = accepted {
            tcp.write_all(&finished).await.unwrap();
            finished.clear();
            accepted.await.unwrap();
        }
        let suite = conn.negotiated_cipher_suite().unwrap().suite();
        let extracted = conn.dangerous_extract_secrets().unwrap();
        let secret = |label: &str| {
            log.0
                .lock()
                .unwrap()
                .iter()
                .find(|(l, _)| l == label)
                .unwrap()
                .1
                .clone()
        };
        // The client's side: it opens with the server's secret.
        let mut records = Records::take_over(
            suite,
            &secret("SERVER_TRAFFIC_SECRET_0"),
            &secret("CLIENT_TRAFFIC_SECRET_0"),
            &extracted,
        )
        .unwrap();
        finished.extend(after_finished(&mut records));
        tcp.write_all(&finished).await.unwrap();
        (tcp, records)
    }

    /// A client that asks for key updates and never reads gets one answer
    /// queued at a time, and at most 32 KeyUpdates in a row, as from rustls
    /// (before, every answer was queued: 3 MB held after 200,000).
    #[tokio::test]
    async fn a_key_update_flood_is_bounded() {
        key_update_flood::<false>().await;
    }

    /// The same with a byte of data every 16 KeyUpdates, which no count of
    /// KeyUpdates in a row catches: one answer at a time does.
    #[tokio::test]
    async fn a_key_update_flood_with_data_is_bounded() {
        key_update_flood::<true>().await;
    }

    async fn key_update_flood<const INTERLEAVE: bool>() {
        let (server_config, roots) = test_configs();
        let (listener, addr) = listen().await;
        let (accepted, handshake_done) = tokio::sync::oneshot::channel();
        let client = tokio::spawn(async move {
            let (mut tcp, mut records) =
                hand_client(addr, roots, |_| Vec::new(), Some(handshake_done)).await;
            rustix::net::sockopt::set_socket_recv_buffer_size(&tcp, 4096).unwrap();
            let mut flood = Vec::new();
            for i in 0..200_000 {
                flood.extend(records.seal_raw(22, &[24, 0, 0, 1, 1], 0));
                records.update_tx_for_test();
                if INTERLEAVE && i % 16 == 15 {
                    // A byte of data now and then resets rustls's count.
                    flood.extend(records.seal_raw(23, b"x", 0));
                }
            }
            // Written while the server reads; never read back.
            let _ = tcp.write_all(&flood).await;
            tcp
        });
        let (tcp, _) = listener.accept().await.unwrap();
        rustix::net::sockopt::set_socket_send_buffer_size(&tcp, 4096).unwrap();
        let mut server = TlsConnection::accept(tcp, |_| server_config).await.unwrap();
        assert!(matches!(server.tls, Protection::Own(_)));
        accepted.send(()).unwrap();
        let mut buf = [0u8; 64];
        let mut outcome = None;
        loop {
            let done = client.is_finished();
            match tokio::time::timeout(std::time::Duration::from_millis(200), server.read(&mut buf))
                .await
            {
                Err(_) if done => break,
                Err(_) => continue,
                Ok(Ok(n)) if INTERLEAVE && n > 0 => continue,
                Ok(r) => {
                    outcome = Some(r.map_err(|e| e.to_string()));
                    break;
                }
            }
        }
        let held = server.unsent.len() - server.unsent_at;
        eprintln!("outcome {outcome:?}, {held} bytes of answers held in unsent");
        assert!(
            held <= 4096,
            "{held} bytes of KeyUpdate answers held ({outcome:?})"
        );
        drop(client);
    }

    /// A KeyUpdate (update_not_requested) sent in the same flight as the
    /// client's Finished is followed by rustls before the hand-over; the
    /// hand-over follows it too.
    #[tokio::test]
    async fn a_key_update_right_after_finished_is_followed() {
        let after_finished = |records: &mut Records| {
            let bytes = records.seal_raw(22, &[24, 0, 0, 1, 0], 0);
            records.update_tx_for_test();
            bytes
        };
        assert_eq!(
            sent_with_the_finished(after_finished, b"hello").await,
            b"hello"
        );
    }

    /// What the server reads when the client sends `after_finished`'s
    /// records with its Finished, then `then` in a record of its own.
    async fn sent_with_the_finished(
        after_finished: impl FnOnce(&mut Records) -> Vec<u8> + Send + 'static,
        then: &'static [u8],
    ) -> Vec<u8> {
        let (server_config, roots) = test_configs();
        let (listener, addr) = listen().await;
        let client = tokio::spawn(async move {
            let (mut tcp, mut records) = hand_client(addr, roots, after_finished, None).await;
            tcp.write_all(&records.seal_raw(23, then, 0)).await.unwrap();
            tcp
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let accepted = TlsConnection::accept(tcp, |_| server_config).await;
        let _tcp = client.await.unwrap();
        let mut server = accepted.expect("the handshake is accepted");
        assert!(matches!(server.tls, Protection::Own(_)));
        // rustls stopped at the Finished: all that came after it is ours.
        assert!(
            server.plaintext.is_empty(),
            "rustls decrypted past the Finished"
        );
        let mut got = Vec::new();
        let mut buf = [0u8; 64];
        while !got.ends_with(then) {
            let n = server.read(&mut buf).await.unwrap();
            assert!(n > 0, "ended after {got:?}");
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    /// A record changed on the way ends the connection with bad_record_mac:
    /// the client gets that alert and nothing after it, and every later read
    /// or write fails (RFC 8446 §6.2), as on the rustls path.
    #[tokio::test]
    async fn a_changed_record_ends_a_handed_over_connection() {
        let (server_config, roots) = test_configs();
        let (listener, addr) = listen().await;
        let (accepted, handshake_done) = tokio::sync::oneshot::channel();
        let client = tokio::spawn(async move {
            let (mut tcp, mut records) =
                hand_client(addr, roots, |_| Vec::new(), Some(handshake_done)).await;
            let mut bytes = records.seal_raw(23, b"hello", 0);
            let mut bad = records.seal_raw(23, b"world", 0);
            let last = bad.len() - 1;
            bad[last] ^= 1;
            bytes.extend(bad);
            tcp.write_all(&bytes).await.unwrap();
            let mut back = Vec::new();
            let _ = tcp.read_to_end(&mut back).await;
            // The session tickets (handshake messages, which a server side
            // refuses to open), then a fatal alert, not close_notify: the
            // last record.
            let mut opener = records.opener().unwrap();
            let mut last = None;
            let mut at = 0;
            while at < back.len() {
                let len = Records::record_len(&back[at..]).unwrap().unwrap();
                let opened = records.open(&mut opener, &mut back[at..at + len]);
                last = Some(opened.map(|_| ()).unwrap_err().alert);
                at += len;
            }
            last.expect("a record")
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = TlsConnection::accept(tcp, |_| server_config).await.unwrap();
        accepted.send(()).unwrap();
        let mut got = [0u8; 16];
        // What came before the bad record is read first.
        assert_eq!(server.read(&mut got).await.unwrap(), 5);
        assert_eq!(&got[..5], b"hello");
        let error = server.read(&mut got).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(server.read(&mut got).await.is_err(), "reads go on failing");
        assert!(server.write_all(b"after the alert").await.is_err());
        // No shutdown: the alert went when the bad record was read.
        drop(server);
        let alert = client.await.unwrap();
        assert_eq!(alert, None, "a fatal alert reached the client, last");
    }

    /// Data coalesced with the client's Finished (decrypted by rustls before
    /// the hand-over) comes before what follows it.
    #[tokio::test]
    async fn data_with_the_finished_keeps_its_place() {
        let after_finished = |records: &mut Records| {
            let mut bytes = records.seal_raw(23, b"early", 0);
            bytes.extend(records.seal_raw(23, b"-two", 0));
            bytes
        };
        let got = sent_with_the_finished(after_finished, b"-later").await;
        assert_eq!(got, b"early-two-later");
    }

    /// The session tickets of a TLS 1.3 handshake wait for the first record
    /// wharf writes and go out with it, in one send; a client resumes with
    /// one of them.
    #[tokio::test]
    async fn session_tickets_go_with_the_first_record_and_resume() {
        let (server_config, roots) = test_configs();
        let client_config = Arc::new(client_config(roots));
        let (listener, addr) = listen().await;
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (tcp, _) = listener.accept().await.unwrap();
                let config = server_config.clone();
                let mut server = TlsConnection::accept(tcp, |_| config).await.unwrap();
                assert!(server.tickets_waiting, "the tickets wait for a record");
                assert_eq!(echo(&mut server, 5).await, b"hello");
                assert!(!server.tickets_waiting && server.unsent.is_empty());
            }
        });
        for kind in [rustls::HandshakeKind::Full, rustls::HandshakeKind::Resumed] {
            let tcp = TcpStream::connect(addr).await.unwrap();
            let name = ServerName::try_from("localhost").unwrap();
            let mut tls = tokio_rustls::TlsConnector::from(client_config.clone())
                .connect(name, tcp)
                .await
                .unwrap();
            assert_eq!(tls.get_ref().1.handshake_kind(), Some(kind));
            tls.write_all(b"hello").await.unwrap();
            let mut back = [0u8; 5];
            tls.read_exact(&mut back).await.unwrap();
        }
        server.await.unwrap();
    }

    /// TLS 1.2 stays with rustls; a handed-over connection is small.
    #[tokio::test]
    async fn tls_1_2_stays_with_rustls_and_tls_1_3_is_small() {
        let (server_config, roots) = test_configs();
        let (listener, addr) = listen().await;
        let tls12 =
            rustls::ClientConfig::builder_with_protocol_versions(&[&rustls::version::TLS12])
                .with_root_certificates(roots)
                .with_no_client_auth();
        let client = tokio::spawn(async move {
            let mut tls = connect(addr, tls12).await;
            tls.write_all(b"twelve").await.unwrap();
            let mut back = [0u8; 6];
            tls.read_exact(&mut back).await.unwrap();
            back
        });
        let (tcp, _) = listener.accept().await.unwrap();
        let mut server = TlsConnection::accept(tcp, |_| server_config).await.unwrap();
        assert!(matches!(server.tls, Protection::Rustls(_)));
        assert_eq!(echo(&mut server, 6).await, b"twelve");
        assert_eq!(&client.await.unwrap(), b"twelve");
        // What an idle websocket's TLS costs, all of it inline (rustls's
        // connection was 1.3 KB, and as much again on the heap).
        let size = std::mem::size_of::<TlsConnection<TcpStream>>();
        assert!(size <= 296, "TlsConnection<TcpStream> is {size} bytes");
    }
}
