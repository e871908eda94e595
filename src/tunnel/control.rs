//! Telling a running tunnel what to do from outside (a drain, shutdown, the
//! admin API): close gently, ping, or cut. A command is a bit in an atomic
//! and a wake-up; the tunnel acts on it at its next poll, so a handle costs
//! an idle tunnel one small allocation and nothing while nobody asks.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use futures_util::task::AtomicWaker;

const CLOSE: u8 = 1;
const PING: u8 = 2;
const CUT: u8 = 4;
const DRAINED: u8 = 8;

/// The outside handle of one tunnel. Cheap to clone behind its `Arc`.
#[derive(Debug, Default)]
pub struct TunnelControl {
    commands: AtomicU8,
    waker: AtomicWaker,
}

/// What was asked of a tunnel since it last looked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Commands {
    pub close: bool,
    pub ping: bool,
    pub cut: bool,
    /// Cut because its server's drain timeout passed.
    pub drained: bool,
}

impl TunnelControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A websocket gets a close frame 1001 (Going Away) at the next frame
    /// boundary each way and is cut if the close handshake has not finished
    /// 5 s later; any other tunnel is closed at once.
    pub fn close_gently(&self) {
        self.send(CLOSE);
    }

    /// A websocket's client gets a ping of wharf's own; the pong is not
    /// passed to the server, and no pong in time closes the websocket.
    /// Other tunnels ignore it.
    pub fn ping(&self) {
        self.send(PING);
    }

    /// Ends the tunnel at once, both sockets closed.
    pub fn cut(&self) {
        self.send(CUT);
    }

    /// Ends the tunnel at once: its server's drain timeout passed.
    pub fn cut_drained(&self) {
        self.send(DRAINED);
    }

    fn send(&self, command: u8) {
        self.commands.fetch_or(command, Ordering::AcqRel);
        self.waker.wake();
    }

    /// Registers the tunnel's waker, then takes what was asked (in this
    /// order, so that a command sent in between is not missed).
    pub(super) fn take(&self, waker: &std::task::Waker) -> Commands {
        self.waker.register(waker);
        let bits = self.commands.swap(0, Ordering::AcqRel);
        Commands {
            close: bits & CLOSE != 0,
            ping: bits & PING != 0,
            cut: bits & CUT != 0,
            drained: bits & DRAINED != 0,
        }
    }
}
