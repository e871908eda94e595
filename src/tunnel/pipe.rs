//! The tunnel as one future over a client stream (plain TCP or TLS) and a
//! server stream: two [`Flow`]s turned in each poll, one timer for the idle
//! timeout, wharf's pings and close deadlines, commands from its
//! [`TunnelControl`], and for a websocket what wharf decides when it sees a
//! close, a violation or an oversized message.
//!
//! A websocket closed by wharf gets a close frame each way at a frame
//! boundary; wharf then drops what either side still sends, waits for each
//! side's own close frame (or its hang-up), and cuts whatever is not done
//! [`CLOSE_HANDSHAKE_TIMEOUT`] later.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{Instant, Sleep};

use super::control::TunnelControl;
use super::flow::{Flow, Seen, Watch};
use super::frame::{FrameTracker, Sender};
use super::keepalive::{Due, Keepalive};
use super::stats::{Direction, Meter, Side};
use super::{Settings, TunnelEnd, TunnelReport, WharfClose};

/// How long a close handshake started by wharf may take before both
/// connections are cut.
pub const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Turns of both flows in one poll before yielding to other tasks.
const TURNS_PER_POLL: usize = 16;

/// What wharf keeps for a websocket beyond its two flows.
struct WebSocket {
    keepalive: Keepalive,
    max_message: Option<u64>,
    meter: Meter,
}

/// A close that wharf started.
struct Closing {
    deadline: Instant,
    reason: WharfClose,
    /// The client was not sent a close frame but dropped (it stopped answering).
    client_cut: bool,
}

pin_project! {
    pub struct Tunnel<C, S> {
        client: C,
        server: S,
        up: Flow,
        down: Flow,
        ws: Option<WebSocket>,
        idle_timeout: Duration,
        last_activity: Instant,
        closing: Option<Closing>,
        first_eof: Option<Side>,
        control: Arc<TunnelControl>,
        #[pin]
        timer: Sleep,
    }
}

enum Timer {
    Nothing,
    Acted,
    End(TunnelEnd),
}

impl<C, S> Tunnel<C, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    pub fn new(
        (client, client_early): (C, bytes::Bytes),
        (server, server_early): (S, bytes::Bytes),
        settings: Settings,
        control: Arc<TunnelControl>,
    ) -> Self {
        let now = Instant::now();
        let extensions = settings.websocket.as_ref().map(|ws| ws.extensions);
        let tracker = |sender| extensions.map(|ext| FrameTracker::new(sender, ext));
        let ws = settings.websocket.map(|ws| WebSocket {
            keepalive: Keepalive::new(ws.ping, ws.pong_timeout, now),
            max_message: ws.max_message,
            meter: Meter::open(ws.stats),
        });
        Tunnel {
            client,
            server,
            up: Flow::new(client_early, tracker(Sender::Client)),
            down: Flow::new(server_early, tracker(Sender::Server)),
            ws,
            idle_timeout: settings.idle_timeout,
            last_activity: now,
            closing: None,
            first_eof: None,
            control,
            timer: tokio::time::sleep_until(now + settings.idle_timeout),
        }
    }
}

impl<C, S> Future for Tunnel<C, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    type Output = TunnelReport;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<TunnelReport> {
        let mut this = self.project();
        let mut state = State {
            client: this.client,
            server: this.server,
            up: this.up,
            down: this.down,
            ws: this.ws,
            idle_timeout: *this.idle_timeout,
            last_activity: this.last_activity,
            closing: this.closing,
            first_eof: this.first_eof,
        };
        let commands = this.control.take(cx.waker());
        if commands.drained {
            return Poll::Ready(state.finish(TunnelEnd::Drained));
        }
        if commands.cut {
            return Poll::Ready(state.finish(TunnelEnd::Cut));
        }
        if commands.close {
            state.close(WharfClose::Asked, Instant::now());
        }
        if commands.ping {
            state.ping(Instant::now());
        }
        for _ in 0..TURNS_PER_POLL {
            let moved = match state.turn(cx) {
                Ok(moved) => moved,
                Err(e) => return Poll::Ready(state.finish(TunnelEnd::Error(e))),
            };
            if let Some(end) = state.finished() {
                return Poll::Ready(state.finish(end));
            }
            if moved {
                continue;
            }
            let next = state.next_deadline();
            if next < this.timer.deadline() {
                this.timer.as_mut().reset(next);
            }
            loop {
                if this.timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                match state.on_timer(Instant::now()) {
                    Timer::End(end) => return Poll::Ready(state.finish(end)),
                    Timer::Acted => break,
                    Timer::Nothing => this.timer.as_mut().reset(state.next_deadline()),
                }
            }
        }
        // Busy: let other tasks run, and come back.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

/// The tunnel's fields, borrowed for one poll.
struct State<'a, C, S> {
    client: &'a mut C,
    server: &'a mut S,
    up: &'a mut Flow,
    down: &'a mut Flow,
    ws: &'a mut Option<WebSocket>,
    idle_timeout: Duration,
    last_activity: &'a mut Instant,
    closing: &'a mut Option<Closing>,
    first_eof: &'a mut Option<Side>,
}

impl<C, S> State<'_, C, S>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    /// Turns both flows once and acts on what they saw.
    fn turn(&mut self, cx: &mut Context<'_>) -> io::Result<bool> {
        let (up_bytes, down_bytes) = (self.up.bytes, self.down.bytes);
        let (mut seen_up, mut seen_down) = (Seen::default(), Seen::default());
        let watch_up = self.ws.as_ref().map_or(Watch::default(), |ws| Watch {
            pong: ws.keepalive.token(),
            max_message: ws.max_message,
        });
        let moved_up = self
            .up
            .turn(self.client, self.server, cx, watch_up, &mut seen_up)?;
        // The server already has its close frame: the client's goes first,
        // before the server's reply, which may be waiting to be read now.
        self.answer_client(&seen_up);
        let moved_down = self.down.turn(
            self.server,
            self.client,
            cx,
            Watch::default(),
            &mut seen_down,
        )?;
        if !(moved_up || moved_down) {
            return Ok(false);
        }
        let now = Instant::now();
        *self.last_activity = now;
        if self.first_eof.is_none() {
            *self.first_eof = match (self.up.eof, self.down.eof) {
                (true, _) => Some(Side::Client),
                (_, true) => Some(Side::Server),
                _ => None,
            };
        }
        if let Some(ws) = self.ws.as_mut() {
            if self.up.bytes > up_bytes {
                ws.keepalive.heard(now);
            }
            let up = self.up.bytes - up_bytes;
            let down = self.down.bytes - down_bytes;
            ws.meter
                .add(Direction::ClientToServer, seen_up.messages, up);
            ws.meter
                .add(Direction::ServerToClient, seen_down.messages, down);
            self.act_on(&seen_up, &seen_down, now);
        }
        self.check_closing();
        Ok(true)
    }

    /// Queues the client's close frame when the client's frames were
    /// refused (the server got its close in their place).
    fn answer_client(&mut self, up: &Seen) {
        if up.violation.is_some() {
            self.down.insert_close(1002, "protocol error");
        } else if up.too_big.is_some() {
            self.down.insert_close(1009, "message too big");
        }
    }

    fn act_on(&mut self, up: &Seen, down: &Seen, now: Instant) {
        let Some(ws) = self.ws.as_mut() else {
            return;
        };
        if let Some(code) = up.close.filter(|_| self.closing.is_none()) {
            ws.meter.ended(Side::Client, code.unwrap_or(1005));
        }
        if let Some(code) = down.close.filter(|_| self.closing.is_none()) {
            ws.meter.ended(Side::Server, code.unwrap_or(1005));
        }
        // The violator's receiver got 1002 already; now the violator does
        // (the client's was queued by `answer_client`).
        if let Some(violation) = up.violation {
            let by = Sender::Client;
            self.start_closing(WharfClose::Violation { by, violation }, 1002, now);
        } else if let Some(violation) = down.violation {
            self.up.insert_close(1002, "protocol error");
            let by = Sender::Server;
            self.start_closing(WharfClose::Violation { by, violation }, 1002, now);
        } else if let Some(size) = up.too_big {
            // The server got 1001 in place of the message, the client 1009.
            self.start_closing(WharfClose::MessageTooBig(size), 1009, now);
        }
    }

    /// Closes gently: a websocket gets close frames both ways (unless a close
    /// handshake is under way already); any other tunnel is closed at once.
    fn close(&mut self, reason: WharfClose, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        if self.ws.is_none() {
            self.up.eof = true;
            self.down.eof = true;
        } else if !(self.up.sender_closed || self.down.sender_closed) {
            self.down.insert_close(1001, "going away");
            self.up.insert_close(1001, "going away");
        }
        self.start_closing(reason, 1001, now);
    }

    fn start_closing(&mut self, reason: WharfClose, code: u16, now: Instant) {
        if let Some(ws) = self.ws.as_mut() {
            ws.meter.ended(Side::Wharf, code);
        }
        self.closing.get_or_insert(Closing {
            deadline: now + CLOSE_HANDSHAKE_TIMEOUT,
            reason,
            client_cut: false,
        });
    }

    /// wharf's ping to the client, at the next frame boundary.
    fn ping(&mut self, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        if let Some(ws) = self.ws.as_mut() {
            let ping = ws.keepalive.ping(now);
            self.down.insert(&ping, false);
        }
    }

    /// A client that did not answer wharf's ping: the server gets 1001, the
    /// client is dropped without a close frame.
    fn client_gone(&mut self, now: Instant) {
        if self.closing.is_some() {
            return;
        }
        self.up.insert_close(1001, "client not answering");
        self.up.eof = true;
        self.down.stop_passing();
        self.start_closing(WharfClose::PongTimeout, 1001, now);
        if let Some(closing) = self.closing.as_mut() {
            closing.client_cut = true;
        }
    }

    /// Once both sides have finished the close handshake wharf started,
    /// nothing more is read and both connections are shut down.
    fn check_closing(&mut self) {
        let Some(closing) = self.closing.as_ref() else {
            return;
        };
        let client_done = closing.client_cut || self.up.sender_closed || self.up.eof;
        let server_done = self.down.sender_closed || self.down.eof;
        if client_done && server_done && self.up.flushed() && self.down.flushed() {
            self.up.eof = true;
            self.down.eof = true;
        }
    }

    fn finished(&self) -> Option<TunnelEnd> {
        if !(self.up.done() && self.down.done()) {
            return None;
        }
        Some(match self.closing.as_ref() {
            Some(closing) => TunnelEnd::ClosedByWharf {
                reason: closing.reason,
                cut: false,
            },
            None => TunnelEnd::Closed,
        })
    }

    fn next_deadline(&self) -> Instant {
        let mut next = *self.last_activity + self.idle_timeout;
        if let Some(closing) = self.closing.as_ref() {
            next = next.min(closing.deadline);
        } else if let Some(ping) = self.ws.as_ref().and_then(|ws| ws.keepalive.next()) {
            next = next.min(ping);
        }
        next
    }

    fn on_timer(&mut self, now: Instant) -> Timer {
        if let Some(closing) = self.closing.as_ref() {
            if now >= closing.deadline {
                let reason = closing.reason;
                return Timer::End(TunnelEnd::ClosedByWharf { reason, cut: true });
            }
        }
        if now >= *self.last_activity + self.idle_timeout {
            return Timer::End(TunnelEnd::IdleTimeout);
        }
        if self.closing.is_some() {
            return Timer::Nothing;
        }
        match self.ws.as_ref().map(|ws| ws.keepalive.due(now)) {
            Some(Due::Ping) => {
                self.ping(now);
                Timer::Acted
            }
            Some(Due::Dead) => {
                self.client_gone(now);
                Timer::Acted
            }
            _ => Timer::Nothing,
        }
    }

    fn finish(&mut self, end: TunnelEnd) -> TunnelReport {
        if let Some(ws) = self.ws.as_mut() {
            // No close frame was seen: an abnormal closure (1006) by whoever
            // hung up first, or by wharf when it cut the tunnel.
            let side = match end {
                TunnelEnd::Closed | TunnelEnd::Error(_) => self.first_eof.unwrap_or(Side::Wharf),
                _ => Side::Wharf,
            };
            ws.meter.ended(side, 1006);
        }
        TunnelReport {
            client_to_server: self.up.bytes,
            server_to_client: self.down.bytes,
            end,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Tunnel;
    use crate::tls::TlsConnection;
    use tokio::net::TcpStream;

    /// An idle websocket's task holds its tunnel for hours, and tokio
    /// allocates a task in steps of 128 bytes (its cell is cache-line
    /// aligned), about 100 bytes of them its own; wharf's task adds 72 around
    /// the tunnel (`http::upgrade`). These bounds keep a plain tunnel's task
    /// at 768 bytes and a TLS one's at 1,024 (`bench/run --only idle`: 1,626
    /// and 1,931 bytes of RSS per websocket; one class more is 128 more).
    #[test]
    fn an_idle_tunnels_task_stays_in_its_size_class() {
        let plain = std::mem::size_of::<Tunnel<TcpStream, TcpStream>>();
        let tls = std::mem::size_of::<Tunnel<TlsConnection<TcpStream>, TcpStream>>();
        assert!(plain <= 768 - 104 - 72, "a plain tunnel is {plain} bytes");
        assert!(tls <= 1024 - 104 - 72, "a TLS tunnel is {tls} bytes");
    }
}
