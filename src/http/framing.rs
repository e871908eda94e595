//! A tap on a client connection. Its read side sees what hyper's parser
//! keeps to itself: how many `Content-Length` lines a request head carried,
//! and whether it carried `Transfer-Encoding` as well (RFC 9112 §6.3).
//!
//! hyper accepts a repeated, identical `Content-Length` and keeps one, and
//! with `Transfer-Encoding` it silently drops `Content-Length` from the
//! headers it hands over; both are smuggling vectors that nginx refuses with
//! 400, so wharf must see them. The tap follows the byte stream as hyper will
//! frame it (head, then a sized or chunked body, then the next head), never
//! buffers, never changes a byte, and records the first offending head by
//! its position on the connection. [`strict`](super::strict) refuses that
//! request when hyper hands it over.
//!
//! Cost: a scan of each head line up to its colon (plus the value of the two
//! framing headers) and O(1) per body read; measured in `benches/strict.rs`.
//!
//! Its write side bounds how long a write may wait ([`Tapped::new`]'s
//! timeout) and sends a small vectored write (a response head and a short
//! body) as one buffer ([`gather`]).

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// What was wrong with a head's framing headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingFault {
    /// `Content-Length` more than once (even with equal values).
    RepeatedContentLength,
    /// Both `Content-Length` and `Transfer-Encoding`.
    LengthAndChunked,
}

impl FramingFault {
    fn code(self) -> u64 {
        match self {
            FramingFault::RepeatedContentLength => 1,
            FramingFault::LengthAndChunked => 2,
        }
    }

    fn from_code(code: u64) -> Option<FramingFault> {
        match code {
            1 => Some(FramingFault::RepeatedContentLength),
            2 => Some(FramingFault::LengthAndChunked),
            _ => None,
        }
    }

    pub fn reason(self) -> &'static str {
        match self {
            FramingFault::RepeatedContentLength => "Content-Length sent more than once",
            FramingFault::LengthAndChunked => "both Content-Length and Transfer-Encoding",
        }
    }
}

/// The tap's finding, shared with the request path: the first head (by
/// position, from 0) with a framing fault. The connection is closed after
/// refusing it, so one finding per connection is all there is to keep.
#[derive(Debug, Default)]
pub struct Findings {
    /// `(head index + 1) << 2 | fault code`; 0: nothing found.
    first: AtomicU64,
    /// Requests handed to the service so far.
    served: AtomicU64,
}

impl Findings {
    fn record(&self, head: u64, fault: FramingFault) {
        let packed = ((head + 1) << 2) | fault.code();
        let _ = self
            .first
            .compare_exchange(0, packed, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// Called once per request, in order: the fault of this request's head, if any.
    pub fn next_request(&self) -> Option<FramingFault> {
        let index = self.served.fetch_add(1, Ordering::Relaxed);
        let packed = self.first.load(Ordering::Relaxed);
        (packed != 0 && (packed >> 2) - 1 == index)
            .then(|| FramingFault::from_code(packed & 3))
            .flatten()
    }
}

/// Where the scanner is in the byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading head lines.
    Head,
    /// A sized body with this many bytes left.
    Sized(u64),
    /// Chunked body: reading a chunk-size line (digits so far, whether a
    /// non-digit ended them).
    ChunkSize { size: u64, digits_done: bool },
    /// Chunk data with this many bytes left, then its CRLF.
    ChunkData(u64),
    /// The CRLF after chunk data: skip to the LF.
    ChunkEnd,
    /// Trailer lines after the last chunk, until an empty line.
    Trailers { line_empty: bool },
    /// Nothing more to follow: a fault was found (the connection will close)
    /// or the stream cannot be framed (hyper fails the connection too).
    Stopped,
}

/// Which framing header the current head line is, once its name is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// Still reading the name (bytes so far).
    Name(usize),
    ContentLength,
    /// Any other line, or the request line: skip to its end.
    Other,
}

const CONTENT_LENGTH: &[u8] = b"content-length";
const TRANSFER_ENCODING: &[u8] = b"transfer-encoding";

/// The incremental scanner; pure, so that it is tested and fuzzed on bytes.
#[derive(Debug, Clone)]
pub struct Scanner {
    state: State,
    /// Heads completed so far.
    heads: u64,
    // Per head:
    /// Lines of the head seen (0 while before the request line).
    lines: u32,
    line: Line,
    /// Bytes of the current line before its LF.
    line_len: usize,
    /// Whether the current line started with a CR (an empty line is CR LF).
    cr_first: bool,
    /// Candidate names still matching the current line's name.
    maybe_cl: bool,
    maybe_te: bool,
    content_lengths: u32,
    transfer_encoding: bool,
    /// The first Content-Length value, if it parsed.
    length: Option<u64>,
    value: u64,
    value_state: ValueState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ValueState {
    Leading,
    Digits,
    Trailing,
    Invalid,
}

impl Default for Scanner {
    fn default() -> Self {
        Scanner {
            state: State::Head,
            heads: 0,
            lines: 0,
            line: Line::Name(0),
            line_len: 0,
            cr_first: false,
            maybe_cl: true,
            maybe_te: true,
            content_lengths: 0,
            transfer_encoding: false,
            length: None,
            value: 0,
            value_state: ValueState::Leading,
        }
    }
}

impl Scanner {
    /// Follows `bytes`, the next ones of the stream; reports the first fault.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Option<(u64, FramingFault)> {
        while !bytes.is_empty() {
            let (used, fault) = self.step(bytes);
            if fault.is_some() {
                self.state = State::Stopped;
                return fault;
            }
            bytes = &bytes[used..];
        }
        None
    }

    /// Whether the scanner gave up following the stream.
    pub fn stopped(&self) -> bool {
        self.state == State::Stopped
    }

    /// Consumes some of `bytes` (at least one), returning how many and any fault.
    fn step(&mut self, bytes: &[u8]) -> (usize, Option<(u64, FramingFault)>) {
        match self.state {
            State::Stopped => (bytes.len(), None),
            State::Sized(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::Head
                } else {
                    State::Sized(left)
                };
                (n, None)
            }
            State::ChunkData(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len());
                let left = left - n as u64;
                self.state = if left == 0 {
                    State::ChunkEnd
                } else {
                    State::ChunkData(left)
                };
                (n, None)
            }
            State::ChunkEnd => match memchr::memchr(b'\n', bytes) {
                Some(at) => {
                    self.state = State::ChunkSize {
                        size: 0,
                        digits_done: false,
                    };
                    (at + 1, None)
                }
                None => (bytes.len(), None),
            },
            State::ChunkSize { size, digits_done } => {
                let b = bytes[0];
                if b == b'\n' {
                    self.state = if size == 0 {
                        State::Trailers { line_empty: true }
                    } else {
                        State::ChunkData(size)
                    };
                } else if !digits_done && b.is_ascii_hexdigit() {
                    let digit = u64::from((b as char).to_digit(16).unwrap_or(0));
                    self.state = match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                        Some(size) => State::ChunkSize {
                            size,
                            digits_done: false,
                        },
                        // hyper refuses such a size and closes.
                        None => State::Stopped,
                    };
                } else {
                    self.state = State::ChunkSize {
                        size,
                        digits_done: true,
                    };
                }
                (1, None)
            }
            State::Trailers { line_empty } => {
                let b = bytes[0];
                self.state = match b {
                    b'\n' if line_empty => State::Head,
                    b'\n' => State::Trailers { line_empty: true },
                    b'\r' => State::Trailers { line_empty },
                    _ => State::Trailers { line_empty: false },
                };
                (1, None)
            }
            State::Head => self.head(bytes),
        }
    }

    /// Head bytes: line by line, looking only at what framing depends on.
    fn head(&mut self, bytes: &[u8]) -> (usize, Option<(u64, FramingFault)>) {
        match self.line {
            Line::Other => match memchr::memchr(b'\n', bytes) {
                Some(at) => {
                    self.line_len += at;
                    (at + 1, self.end_of_line())
                }
                None => {
                    self.line_len += bytes.len();
                    (bytes.len(), None)
                }
            },
            Line::Name(n) => {
                let b = bytes[0];
                if b == b'\n' {
                    return (1, self.end_of_line());
                }
                self.line_len += 1;
                if self.line_len == 1 && b == b'\r' {
                    self.cr_first = true;
                    return (1, None);
                }
                if self.lines == 0 {
                    // The request line.
                    self.line = Line::Other;
                    return (1, None);
                }
                if b == b':' {
                    self.line = if self.maybe_cl && n == CONTENT_LENGTH.len() {
                        self.value = 0;
                        self.value_state = ValueState::Leading;
                        Line::ContentLength
                    } else {
                        if self.maybe_te && n == TRANSFER_ENCODING.len() {
                            self.transfer_encoding = true;
                        }
                        Line::Other
                    };
                    return (1, None);
                }
                let lower = b.to_ascii_lowercase();
                self.maybe_cl &= CONTENT_LENGTH.get(n) == Some(&lower);
                self.maybe_te &= TRANSFER_ENCODING.get(n) == Some(&lower);
                self.line = if self.maybe_cl || self.maybe_te {
                    Line::Name(n + 1)
                } else {
                    Line::Other
                };
                (1, None)
            }
            Line::ContentLength => {
                let b = bytes[0];
                if b == b'\n' {
                    return (1, self.end_of_line());
                }
                self.value_state = match (self.value_state, b) {
                    (ValueState::Leading, b' ' | b'\t') => ValueState::Leading,
                    (ValueState::Leading | ValueState::Digits, b'0'..=b'9') => {
                        match self
                            .value
                            .checked_mul(10)
                            .and_then(|v| v.checked_add(u64::from(b - b'0')))
                        {
                            Some(v) => {
                                self.value = v;
                                ValueState::Digits
                            }
                            None => ValueState::Invalid,
                        }
                    }
                    (ValueState::Digits | ValueState::Trailing, b' ' | b'\t' | b'\r') => {
                        ValueState::Trailing
                    }
                    _ => ValueState::Invalid,
                };
                (1, None)
            }
        }
    }

    /// A head line ended (at its LF).
    fn end_of_line(&mut self) -> Option<(u64, FramingFault)> {
        let line = self.line;
        let empty = self.line_len == 0 || (self.line_len == 1 && self.cr_first);
        self.line = Line::Name(0);
        self.line_len = 0;
        self.cr_first = false;
        self.maybe_cl = true;
        self.maybe_te = true;
        match line {
            Line::ContentLength => {
                self.content_lengths += 1;
                if self.value_state == ValueState::Digits
                    || self.value_state == ValueState::Trailing
                {
                    self.length.get_or_insert(self.value);
                } else {
                    // hyper refuses an unparseable length and closes.
                    self.state = State::Stopped;
                }
            }
            Line::Name(_) | Line::Other => {}
        }
        if self.lines == 0 {
            // Empty lines before the request line are skipped, as httparse does.
            if !empty {
                self.lines = 1;
            }
            return None;
        }
        if !empty {
            self.lines += 1;
            return None;
        }
        self.end_of_head()
    }

    fn end_of_head(&mut self) -> Option<(u64, FramingFault)> {
        let head = self.heads;
        self.heads += 1;
        let fault = if self.content_lengths > 0 && self.transfer_encoding {
            Some(FramingFault::LengthAndChunked)
        } else if self.content_lengths > 1 {
            Some(FramingFault::RepeatedContentLength)
        } else {
            None
        };
        if self.state != State::Stopped {
            self.state = if self.transfer_encoding {
                State::ChunkSize {
                    size: 0,
                    digits_done: false,
                }
            } else {
                match self.length {
                    Some(0) | None => State::Head,
                    Some(n) => State::Sized(n),
                }
            };
        }
        self.lines = 0;
        self.content_lengths = 0;
        self.transfer_encoding = false;
        self.length = None;
        fault.map(|f| (head, f))
    }
}

/// A client connection with the scanner on its read side, and a deadline on
/// its write side: a client that reads nothing of what wharf writes (a zero
/// TCP window) for `write_stall` gets its connection failed, which frees
/// every slot it holds (its listener place, the server connection and the
/// server's `max_connections` slot behind the response body).
pub struct Tapped<I> {
    inner: I,
    scanner: Scanner,
    findings: Arc<Findings>,
    write_stall: Duration,
    /// Armed while a write waits; reset by any progress.
    stalled_since: Option<Pin<Box<Sleep>>>,
}

impl<I> Tapped<I> {
    pub fn new(inner: I, write_stall: Duration) -> (Tapped<I>, Arc<Findings>) {
        let findings = Arc::new(Findings::default());
        (
            Tapped {
                inner,
                scanner: Scanner::default(),
                findings: findings.clone(),
                write_stall,
                stalled_since: None,
            },
            findings,
        )
    }

    /// The connection itself (after an upgrade, for the tunnel).
    pub fn into_inner(self) -> I {
        self.inner
    }

    /// Passes a write's result on; while it is pending, runs the stall timer.
    fn watch_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled_since = None;
            return polled;
        }
        let stall = self.write_stall;
        let timer = self
            .stalled_since
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(stall)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the client read nothing for {stall:?}"),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tapped<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && !this.scanner.stopped() {
            if let Some((head, fault)) = this.scanner.feed(&buf.filled()[before..]) {
                this.findings.record(head, fault);
            }
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tapped<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.watch_write(cx, polled)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let mut gathered = Gathered::new();
        let polled = if gather(bufs, &mut gathered) {
            Pin::new(&mut this.inner).poll_write(cx, &gathered)
        } else {
            Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
        };
        this.watch_write(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_flush(cx);
        this.watch_write(cx, polled)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The most bytes of a vectored write sent as one buffer (see [`gather`]).
const GATHER_LIMIT: usize = 2048;

/// A buffer for [`gather`], on the stack and never zeroed.
type Gathered = smallvec::SmallVec<[u8; GATHER_LIMIT]>;

/// Copies `bufs` into `gathered` when there are several and they fit: a
/// small vectored write (hyper's head and a short body) then goes out with
/// `send` rather than `writev`, whose kernel path costs more per call (the
/// iovec import and the VFS layer). With `wrk -c50` through one worker, 8
/// interleaved rounds of 4 s: median requests per CPU-second 70.2k against
/// 69.4k (+1.2%).
fn gather(bufs: &[io::IoSlice<'_>], gathered: &mut Gathered) -> bool {
    let total = bufs
        .iter()
        .fold(0usize, |t, buf| t.saturating_add(buf.len()));
    if bufs.len() < 2 || total > GATHER_LIMIT {
        return false;
    }
    for buf in bufs {
        gathered.extend_from_slice(buf);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first fault in `stream`, fed whole and fed in every two-piece split
    /// (which must agree).
    fn fault_in(stream: &[u8]) -> Option<(u64, FramingFault)> {
        let whole = Scanner::default().feed(stream);
        for split in 0..stream.len() {
            let mut s = Scanner::default();
            let found = s
                .feed(&stream[..split])
                .or_else(|| s.feed(&stream[split..]));
            assert_eq!(
                found,
                whole,
                "split at {split} of {:?}",
                String::from_utf8_lossy(stream)
            );
        }
        let mut s = Scanner::default();
        let bytewise = stream.chunks(1).find_map(|b| s.feed(b));
        assert_eq!(bytewise, whole);
        whole
    }

    #[test]
    fn repeated_content_length_and_length_with_chunked_are_found() {
        use FramingFault::*;
        type Case<'a> = (&'a [u8], Option<(u64, FramingFault)>);
        let cases: &[Case<'_>] = &[
            (b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", None),
            (b"POST / HTTP/1.1\r\nContent-Length: 5\r\ncontent-length: 5\r\n\r\nhello", Some((0, RepeatedContentLength))),
            (b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", Some((0, LengthAndChunked))),
            (b"POST / HTTP/1.1\r\nTRANSFER-ENCODING: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n", Some((0, LengthAndChunked))),
            (b"POST / HTTP/1.1\nContent-Length: 1\nContent-Length: 1\n\nx", Some((0, RepeatedContentLength))),
            (b"\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 0\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nX-Content-Length: 1\r\nContent-Lengthy: 2\r\nContent-Length: 0\r\n\r\n", None),
            (b"GET / HTTP/1.1\r\nTransfer-Encodings: x\r\nContent-Length: 0\r\n\r\n", None),
        ];
        for (stream, expected) in cases {
            assert_eq!(
                fault_in(stream),
                *expected,
                "{:?}",
                String::from_utf8_lossy(stream)
            );
        }
    }

    #[test]
    fn bodies_are_skipped_so_their_bytes_are_never_taken_for_heads() {
        // Header-like text inside a sized body and inside chunks, then a
        // third head with a real fault: found at index 2, not earlier.
        let mut stream = Vec::new();
        let inner = b"\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n";
        stream.extend_from_slice(
            format!(
                "POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
                inner.len()
            )
            .as_bytes(),
        );
        stream.extend_from_slice(inner);
        stream.extend_from_slice(b"POST /b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
        stream.extend_from_slice(format!("{:x};ext=1\r\n", inner.len()).as_bytes());
        stream.extend_from_slice(inner);
        stream.extend_from_slice(b"\r\n0\r\nX-Trailer: y\r\n\r\n");
        stream.extend_from_slice(
            b"POST /c HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
        );
        assert_eq!(fault_in(&stream), Some((2, FramingFault::LengthAndChunked)));
    }

    #[test]
    fn findings_name_the_request_by_its_position() {
        let findings = Findings::default();
        findings.record(1, FramingFault::RepeatedContentLength);
        findings.record(3, FramingFault::LengthAndChunked);
        assert_eq!(findings.next_request(), None);
        assert_eq!(
            findings.next_request(),
            Some(FramingFault::RepeatedContentLength)
        );
        assert_eq!(findings.next_request(), None);
    }

    #[test]
    fn unframeable_streams_stop_the_scanner_without_a_finding() {
        for stream in [
            &b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        ] {
            let mut s = Scanner::default();
            assert_eq!(s.feed(stream), None);
            assert!(s.stopped());
        }
    }

    #[test]
    fn small_vectored_writes_are_gathered_and_large_ones_are_not() {
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        let gathered = |bufs: &[io::IoSlice<'_>]| {
            let mut into = Gathered::new();
            gather(bufs, &mut into).then(|| into.to_vec())
        };
        assert_eq!(
            gathered(&[io::IoSlice::new(head), io::IoSlice::new(b"hello")]),
            Some([&head[..], b"hello"].concat())
        );
        assert_eq!(gathered(&[io::IoSlice::new(head)]), None);
        let large = vec![b'x'; GATHER_LIMIT];
        assert_eq!(
            gathered(&[io::IoSlice::new(head), io::IoSlice::new(&large)]),
            None
        );
        let whole = gathered(&[io::IoSlice::new(&large[1..]), io::IoSlice::new(b"y")]);
        assert_eq!(whole.map(|w| w.len()), Some(GATHER_LIMIT));
    }
}
