//! The tunnel: bytes both ways between a client and a server after an upgrade
//! (101 Switching Protocols), until either side closes or the tunnel is idle
//! for too long.
//!
//! A proxy holding thousands of idle websockets must not hold two buffers per
//! websocket, as `tokio::io::copy_bidirectional` does (2 × 8 KiB each, always).
//! This tunnel waits for readiness, reads into one per-thread scratch buffer
//! and writes straight through; only when the receiver cannot take everything
//! at once does it keep the rest in a buffer of exactly that size, and stops
//! reading from the sender until it drains (backpressure). An idle tunnel so
//! holds two sockets, one task and one timer entry, and no buffer at all.
//!
//! Half-close is honoured: when one side finishes sending, the other side's
//! write half is shut down and bytes keep flowing the other way.

use std::cell::RefCell;
use std::io;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

/// Size of the per-thread scratch buffer: one read moves at most this much.
const SCRATCH_SIZE: usize = 32 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = RefCell::new(vec![0; SCRATCH_SIZE]);
}

/// How a tunnel ended.
#[derive(Debug)]
pub enum TunnelEnd {
    /// Both sides finished sending.
    Closed,
    /// No byte moved either way for the idle timeout.
    IdleTimeout,
    /// The server was drained and its drain timeout passed.
    Drained,
    /// A socket failed (reset, broken pipe).
    Error(io::Error),
}

/// What a tunnel carried, and how it ended.
#[derive(Debug)]
pub struct TunnelReport {
    pub client_to_server: u64,
    pub server_to_client: u64,
    pub end: TunnelEnd,
}

/// One direction of the tunnel.
#[derive(Default)]
struct Flow {
    /// Bytes read but not yet written; empty (no allocation) most of the time.
    pending: Vec<u8>,
    written: usize,
    /// The sender has finished; the receiver's write half is shut down once
    /// `pending` is written.
    eof: bool,
    shut_down: bool,
    bytes: u64,
}

impl Flow {
    fn wants_read(&self) -> bool {
        !self.eof && self.pending.is_empty()
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn done(&self) -> bool {
        self.shut_down
    }

    /// Reads what is ready from `from` and writes as much as `to` takes now.
    /// Returns whether any byte moved.
    fn read_through(&mut self, from: &ReadHalf<'_>, to: &WriteHalf<'_>) -> io::Result<bool> {
        SCRATCH.with(|scratch| {
            let mut scratch = scratch.borrow_mut();
            let n = match from.try_read(&mut scratch) {
                Ok(0) => {
                    self.eof = true;
                    return Ok(false);
                }
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(false),
                Err(e) => return Err(e),
            };
            self.bytes += n as u64;
            let sent = match to.try_write(&scratch[..n]) {
                Ok(sent) => sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Err(e),
            };
            if sent < n {
                self.pending = scratch[sent..n].to_vec();
                self.written = 0;
            }
            Ok(true)
        })
    }

    /// Writes pending bytes that `to` takes now; frees the buffer when done.
    fn write_pending(&mut self, to: &WriteHalf<'_>) -> io::Result<bool> {
        match to.try_write(&self.pending[self.written..]) {
            Ok(sent) => {
                self.written += sent;
                if self.written == self.pending.len() {
                    self.pending = Vec::new();
                    self.written = 0;
                }
                Ok(sent > 0)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Once the sender is finished and everything is written, passes the
    /// half-close on to the receiver.
    async fn pass_on_eof(&mut self, to: &mut WriteHalf<'_>) -> io::Result<()> {
        if self.eof && self.pending.is_empty() && !self.shut_down {
            self.shut_down = true;
            // A peer that already closed its side makes this fail harmlessly.
            let _ = to.shutdown().await;
        }
        Ok(())
    }
}

enum Event {
    ClientReadable(io::Result<()>),
    ServerWritable(io::Result<()>),
    ServerReadable(io::Result<()>),
    ClientWritable(io::Result<()>),
    Timer,
    Closing,
}

/// Carries bytes between `client` and `server` until both have finished
/// sending, one fails, or nothing moves for `idle_timeout`. `client_early` and
/// `server_early` are bytes already read from each side (for example, what
/// followed the HTTP head in the same packet) that must go to the other side
/// first. They are taken by value and dropped once sent: they may share an
/// allocation with hyper's whole read buffer, which an idle tunnel must not keep.
/// When `closing` resolves (the server's drain deadline), the tunnel ends.
pub async fn run(
    mut client: TcpStream,
    mut server: TcpStream,
    client_early: Bytes,
    server_early: Bytes,
    idle_timeout: Duration,
    closing: impl Future<Output = ()>,
) -> TunnelReport {
    let mut up = Flow {
        bytes: client_early.len() as u64,
        ..Flow::default()
    };
    let mut down = Flow {
        bytes: server_early.len() as u64,
        ..Flow::default()
    };
    let early = send_early(&mut client, &mut server, client_early, server_early);
    let sent_early = tokio::time::timeout(idle_timeout, early)
        .await
        .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)));
    let end = match sent_early {
        Ok(()) => {
            let flows = (&mut up, &mut down);
            carry(&mut client, &mut server, flows, idle_timeout, closing).await
        }
        Err(e) => TunnelEnd::Error(e),
    };
    TunnelReport {
        client_to_server: up.bytes,
        server_to_client: down.bytes,
        end,
    }
}

async fn send_early(
    client: &mut TcpStream,
    server: &mut TcpStream,
    client_early: Bytes,
    server_early: Bytes,
) -> io::Result<()> {
    if !client_early.is_empty() {
        server.write_all(&client_early).await?;
    }
    if !server_early.is_empty() {
        client.write_all(&server_early).await?;
    }
    Ok(())
}

async fn carry(
    client: &mut TcpStream,
    server: &mut TcpStream,
    (up, down): (&mut Flow, &mut Flow),
    idle_timeout: Duration,
    closing: impl Future<Output = ()>,
) -> TunnelEnd {
    tokio::pin!(closing);
    let (client_read, mut client_write) = client.split();
    let (server_read, mut server_write) = server.split();
    // The timer is only reset when it fires, from the last activity, so that
    // moving bytes costs no timer update.
    let mut last_activity = Instant::now();
    let timer = tokio::time::sleep_until(last_activity + idle_timeout);
    tokio::pin!(timer);

    let result: io::Result<TunnelEnd> = async {
        while !(up.done() && down.done()) {
            let event = tokio::select! {
                r = client_read.readable(), if up.wants_read() => Event::ClientReadable(r),
                r = server_write.writable(), if up.has_pending() => Event::ServerWritable(r),
                r = server_read.readable(), if down.wants_read() => Event::ServerReadable(r),
                r = client_write.writable(), if down.has_pending() => Event::ClientWritable(r),
                () = &mut timer => Event::Timer,
                () = &mut closing => Event::Closing,
            };
            let moved = match event {
                Event::ClientReadable(r) => {
                    r.and_then(|()| up.read_through(&client_read, &server_write))?
                }
                Event::ServerWritable(r) => r.and_then(|()| up.write_pending(&server_write))?,
                Event::ServerReadable(r) => {
                    r.and_then(|()| down.read_through(&server_read, &client_write))?
                }
                Event::ClientWritable(r) => r.and_then(|()| down.write_pending(&client_write))?,
                Event::Closing => return Ok(TunnelEnd::Drained),
                Event::Timer => {
                    let deadline = last_activity + idle_timeout;
                    if Instant::now() >= deadline {
                        return Ok(TunnelEnd::IdleTimeout);
                    }
                    timer.as_mut().reset(deadline);
                    false
                }
            };
            if moved {
                last_activity = Instant::now();
            }
            up.pass_on_eof(&mut server_write).await?;
            down.pass_on_eof(&mut client_write).await?;
        }
        Ok(TunnelEnd::Closed)
    }
    .await;
    result.unwrap_or_else(TunnelEnd::Error)
}

/// Buffer size per direction for tunnels over streams that have no
/// readiness API (TLS): those hold rustls's own buffers anyway.
const GENERIC_BUFFER: usize = 16 * 1024;

/// As [`run`], for a client stream that is not a bare TCP socket (a TLS
/// stream): a plain read-then-write copy each way, with the same idle
/// timeout, half-close and drain.
pub async fn run_generic<C>(
    client: C,
    mut server: TcpStream,
    client_early: Bytes,
    server_early: Bytes,
    idle_timeout: Duration,
    closing: impl Future<Output = ()>,
) -> TunnelReport
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use std::sync::atomic::AtomicU64;

    let (mut client_read, mut client_write) = tokio::io::split(client);
    let mut report = TunnelReport {
        client_to_server: client_early.len() as u64,
        server_to_client: server_early.len() as u64,
        end: TunnelEnd::Closed,
    };
    let early = async {
        server.write_all(&client_early).await?;
        client_write.write_all(&server_early).await
    };
    if let Err(e) = tokio::time::timeout(idle_timeout, early)
        .await
        .unwrap_or_else(|_| Err(io::Error::from(io::ErrorKind::TimedOut)))
    {
        report.end = TunnelEnd::Error(e);
        return report;
    }
    drop((client_early, server_early));
    let (mut server_read, mut server_write) = server.split();
    let activity = Activity {
        start: Instant::now(),
        last_ms: AtomicU64::new(0),
    };
    let (up_bytes, down_bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    let up = copy_counted(&mut client_read, &mut server_write, &activity, &up_bytes);
    let down = copy_counted(&mut server_read, &mut client_write, &activity, &down_bytes);
    let both = async { tokio::try_join!(up, down) };
    let idle = async {
        loop {
            let deadline = activity.last() + idle_timeout;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    report.end = tokio::select! {
        result = both => match result {
            Ok(_) => TunnelEnd::Closed,
            Err(e) => TunnelEnd::Error(e),
        },
        () = idle => TunnelEnd::IdleTimeout,
        () = closing => TunnelEnd::Drained,
    };
    report.client_to_server += up_bytes.into_inner();
    report.server_to_client += down_bytes.into_inner();
    report
}

/// When bytes last moved, shared by both directions of a generic tunnel.
struct Activity {
    start: Instant,
    last_ms: std::sync::atomic::AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// Copies until end of stream, then shuts the writer down (half-close).
async fn copy_counted<R, W>(
    reader: &mut R,
    writer: &mut W,
    activity: &Activity,
    bytes: &std::sync::atomic::AtomicU64,
) -> io::Result<()>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin,
{
    use tokio::io::AsyncReadExt;

    let mut buf = vec![0u8; GENERIC_BUFFER];
    loop {
        let n = reader.read(&mut buf).await?;
        if n == 0 {
            let _ = writer.shutdown().await;
            return Ok(());
        }
        writer.write_all(&buf[..n]).await?;
        activity.touch();
        bytes.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
    }
}
