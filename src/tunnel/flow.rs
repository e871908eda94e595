//! One direction of a tunnel: bytes read from a sender are written straight
//! through to a receiver. Reads go into one per-thread scratch buffer inside
//! `poll`, so a flow waiting for bytes holds no buffer at all; only what the
//! receiver cannot take at once is kept (exactly that much), and the sender
//! is not read again until it has been written (backpressure).
//!
//! For a websocket the flow follows the frames ([`FrameTracker`]): it holds a
//! header or control frame until it is whole (at most 131 bytes), inserts
//! wharf's own frames at frame boundaries, drops the pong answering wharf's
//! ping, and after wharf has sent the receiver a close frame drops what the
//! sender still sends (still following it, to see its close frame).

use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use thin_vec::ThinVec;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::frame::{self, FrameTracker, Opcode, Sender, Step, Violation};

/// Size of the per-thread scratch buffer: one read moves at most this much.
const SCRATCH_SIZE: usize = 32 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_SIZE]);
}

/// Bytes on their way to the receiver that it has not taken yet.
///
/// The flow's buffers are `ThinVec`s (one pointer, no allocation while
/// empty), not `Vec`s (three words): an idle websocket's task holds two
/// flows for hours, and tokio sizes a task in steps of 128 bytes.
#[derive(Default)]
struct Out {
    /// Empty (no allocation) unless the receiver is slower than the sender.
    pending: ThinVec<u8>,
    written: usize,
    /// Written but maybe not flushed (a TLS stream holds records back).
    unflushed: bool,
}

impl Out {
    fn idle(&self) -> bool {
        self.pending.is_empty() && !self.unflushed
    }

    /// Writes `bytes` now as far as the receiver takes them, keeps the rest.
    fn write<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let mut sent = 0;
        if self.pending.is_empty() {
            while sent < bytes.len() {
                match Pin::new(&mut *to).poll_write(cx, &bytes[sent..]) {
                    Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                    Poll::Ready(Ok(n)) => {
                        sent += n;
                        self.unflushed = true;
                    }
                    Poll::Ready(Err(e)) => return Err(e),
                    Poll::Pending => break,
                }
            }
        }
        self.pending.extend_from_slice(&bytes[sent..]);
        Ok(())
    }

    /// Writes what is pending, then flushes; frees the buffer once written.
    fn drain<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        cx: &mut Context<'_>,
    ) -> io::Result<bool> {
        let mut moved = false;
        while self.written < self.pending.len() {
            match Pin::new(&mut *to).poll_write(cx, &self.pending[self.written..]) {
                Poll::Ready(Ok(0)) => return Err(io::ErrorKind::WriteZero.into()),
                Poll::Ready(Ok(n)) => {
                    self.written += n;
                    self.unflushed = true;
                    moved = true;
                }
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => return Ok(moved),
            }
        }
        if !self.pending.is_empty() {
            self.pending = ThinVec::new();
            self.written = 0;
        }
        if self.unflushed {
            match Pin::new(&mut *to).poll_flush(cx) {
                Poll::Ready(Ok(())) => self.unflushed = false,
                Poll::Ready(Err(e)) => return Err(e),
                Poll::Pending => {}
            }
        }
        Ok(moved)
    }
}

/// What a flow noticed in the frames it passed, for the tunnel to act on.
#[derive(Debug, Default)]
pub(super) struct Seen {
    /// Whole messages passed.
    pub messages: u64,
    /// The sender's close frame, with its code (None: no code), if one came.
    pub close: Option<Option<u16>>,
    /// The pong answering wharf's ping was dropped.
    pub pong: bool,
    /// The sender broke the protocol; the receiver got a 1002 close and the
    /// sender's bytes are dropped unread from now on.
    pub violation: Option<Violation>,
    /// A client message exceeded the limit (its size so far); the receiver
    /// got a 1001 close instead of it.
    pub too_big: Option<u64>,
}

/// What the tunnel tells a flow to look out for.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Watch<'a> {
    /// The payload of wharf's own ping: a pong carrying it is dropped.
    pub pong: Option<&'a [u8]>,
    /// The largest message the sender may send.
    pub max_message: Option<u64>,
}

/// One direction of a tunnel. See the module doc.
#[derive(Default)]
pub(super) struct Flow {
    out: Out,
    /// The start of a header or control frame, held until it is whole.
    held: ThinVec<u8>,
    /// Bytes read before the tunnel started (after the HTTP head), sent first.
    early: ThinVec<u8>,
    /// Frames wharf inserts at the next frame boundary.
    waiting: ThinVec<u8>,
    /// `waiting` ends with a close frame.
    waiting_close: bool,
    tracker: Option<FrameTracker>,
    /// wharf sent the receiver a close frame: the sender's frames are dropped.
    dropping: bool,
    /// The sender broke the protocol: its bytes are dropped unread.
    blind: bool,
    /// The sender has sent a close frame.
    pub sender_closed: bool,
    /// The sender has finished (or is no longer read).
    pub eof: bool,
    pub shut_down: bool,
    /// Bytes read from the sender.
    pub bytes: u64,
}

impl Flow {
    pub fn new(early: Bytes, tracker: Option<FrameTracker>) -> Self {
        // Copied: a `Bytes` may hold hyper's whole read buffer alive.
        Flow {
            bytes: early.len() as u64,
            early: ThinVec::from(&early[..]),
            tracker,
            ..Flow::default()
        }
    }

    pub fn done(&self) -> bool {
        self.shut_down
    }

    /// Nothing left to write: no pending bytes, no frames waiting.
    pub fn flushed(&self) -> bool {
        self.out.idle() && self.waiting.is_empty()
    }

    /// Queues a frame of wharf's own for the next frame boundary.
    pub fn insert(&mut self, frame: &[u8], is_close: bool) {
        if self.waiting_close || self.dropping {
            return;
        }
        self.waiting.extend_from_slice(frame);
        self.waiting_close = is_close;
    }

    /// Queues a close frame with `code` for the receiver, masked when the
    /// receiver is a server.
    pub fn insert_close(&mut self, code: u16, reason: &str) {
        let frame = frame::close_frame(code, reason, self.mask());
        self.insert(&frame, true);
    }

    /// Stops passing anything on: the receiver will not be written to again
    /// but for a shutdown.
    pub fn stop_passing(&mut self) {
        self.dropping = true;
        self.waiting = ThinVec::new();
        self.out = Out::default();
    }

    /// Frames to a server must be masked (§5.3); the flow's sender is then the client.
    fn mask(&self) -> Option<[u8; 4]> {
        let to_server = self
            .tracker
            .as_ref()
            .is_some_and(|t| t.sender() == Sender::Client);
        to_server.then(rand::random)
    }

    fn at_boundary(&self) -> bool {
        self.tracker.as_ref().is_none_or(FrameTracker::at_boundary)
    }

    /// One turn: write what is pending, insert waiting frames at a boundary,
    /// read once and pass it on, pass on a half-close. Returns whether
    /// anything moved.
    pub fn turn<R, W>(
        &mut self,
        from: &mut R,
        to: &mut W,
        cx: &mut Context<'_>,
        watch: Watch<'_>,
        seen: &mut Seen,
    ) -> io::Result<bool>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut moved = self.out.drain(to, cx)?;
        if !self.waiting.is_empty() && self.at_boundary() {
            self.insert_waiting(to, cx)?;
            moved = true;
        }
        if !self.early.is_empty() && self.out.idle() {
            let early = std::mem::take(&mut self.early);
            self.pass(&early, to, cx, watch, seen)?;
            moved = true;
        }
        if !self.eof && self.out.idle() {
            moved |= self.read(from, to, cx, watch, seen)?;
        }
        if self.eof && self.out.idle() && !self.shut_down {
            match Pin::new(&mut *to).poll_shutdown(cx) {
                // A peer that already closed its side makes this fail harmlessly.
                Poll::Ready(_) => {
                    self.shut_down = true;
                    moved = true;
                }
                Poll::Pending => {}
            }
        }
        Ok(moved)
    }

    fn read<R, W>(
        &mut self,
        from: &mut R,
        to: &mut W,
        cx: &mut Context<'_>,
        watch: Watch<'_>,
        seen: &mut Seen,
    ) -> io::Result<bool>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let held = std::mem::take(&mut self.held);
            scratch[..held.len()].copy_from_slice(&held);
            let mut buf = ReadBuf::new(&mut scratch[held.len()..]);
            match Pin::new(&mut *from).poll_read(cx, &mut buf) {
                Poll::Pending => {
                    self.held = held;
                    Ok(false)
                }
                Poll::Ready(Err(e)) => Err(e),
                Poll::Ready(Ok(())) => {
                    let n = buf.filled().len();
                    if n == 0 {
                        self.eof = true;
                        // A sender that stopped inside a frame: pass what it sent.
                        if !self.dropping && !self.blind {
                            self.out.write(to, cx, &held)?;
                        }
                        return Ok(true);
                    }
                    self.bytes += n as u64;
                    self.pass(&scratch[..held.len() + n], to, cx, watch, seen)?;
                    Ok(true)
                }
            }
        })
    }

    /// Passes `chunk` (held bytes first) on, following its frames.
    fn pass<W: AsyncWrite + Unpin>(
        &mut self,
        chunk: &[u8],
        to: &mut W,
        cx: &mut Context<'_>,
        watch: Watch<'_>,
        seen: &mut Seen,
    ) -> io::Result<()> {
        if self.blind {
            return Ok(());
        }
        if self.tracker.is_none() {
            return self.out.write(to, cx, chunk);
        }
        // Bytes before `from` are written or dropped; `pos` is where the tracker is.
        let (mut from, mut pos) = (0, 0);
        while let Some(tracker) = self.tracker.as_mut() {
            let at_boundary = tracker.at_boundary();
            let step = tracker.step(&chunk[pos..]);
            if at_boundary && !self.waiting.is_empty() {
                self.write_through(to, cx, &chunk[from..pos])?;
                from = pos;
                self.insert_waiting(to, cx)?;
            }
            match step {
                Step::Payload(n) => pos += n,
                Step::Data(frame) => {
                    if !self.dropping
                        && watch.max_message.is_some_and(|max| frame.message_len > max)
                    {
                        self.write_through(to, cx, &chunk[from..pos])?;
                        from = pos;
                        seen.too_big = Some(frame.message_len);
                        self.insert_close(1001, "message too big");
                        self.insert_waiting(to, cx)?;
                    }
                    if frame.fin && !self.dropping {
                        seen.messages += 1;
                    }
                    pos += frame.header_len;
                }
                Step::Control(control) => {
                    let ours =
                        control.opcode == Opcode::Pong && watch.pong == Some(control.payload());
                    if ours {
                        self.write_through(to, cx, &chunk[from..pos])?;
                        from = pos + control.len;
                        seen.pong = true;
                    }
                    if control.opcode == Opcode::Close && !self.sender_closed {
                        self.sender_closed = true;
                        seen.close = Some(control.close_code());
                    }
                    pos += control.len;
                }
                Step::NeedMore => {
                    self.held = ThinVec::from(&chunk[pos..]);
                    break;
                }
                Step::Violation(violation) => {
                    self.write_through(to, cx, &chunk[from..pos])?;
                    from = pos;
                    seen.violation = Some(violation);
                    self.insert_close(1002, "protocol error");
                    self.insert_waiting(to, cx)?;
                    self.blind = true;
                    self.sender_closed = true;
                    break;
                }
            }
        }
        self.write_through(to, cx, &chunk[from..pos])
    }

    /// Writes the sender's bytes unless they are being dropped.
    fn write_through<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        cx: &mut Context<'_>,
        bytes: &[u8],
    ) -> io::Result<()> {
        if self.dropping {
            return Ok(());
        }
        self.out.write(to, cx, bytes)
    }

    fn insert_waiting<W: AsyncWrite + Unpin>(
        &mut self,
        to: &mut W,
        cx: &mut Context<'_>,
    ) -> io::Result<()> {
        if self.dropping {
            self.waiting = ThinVec::new();
            return Ok(());
        }
        let waiting = std::mem::take(&mut self.waiting);
        self.out.write(to, cx, &waiting)?;
        if std::mem::take(&mut self.waiting_close) {
            self.dropping = true;
        }
        Ok(())
    }
}
