//! The tunnel: a client connection and a server connection joined after an
//! upgrade (101 Switching Protocols) or for a TCP pool, carrying bytes both
//! ways until either side closes, nothing moves for the idle timeout, or
//! wharf closes it.
//!
//! One implementation serves plaintext and TLS clients alike: a future
//! ([`pipe`]) that reads into a per-thread scratch buffer inside `poll` and
//! writes straight through, keeping only what a receiver could not take yet
//! ([`flow`]). An idle tunnel so holds its two streams, a timer entry and no
//! buffer. Half-close is honoured both ways.
//!
//! A connection upgraded to `websocket` is followed frame by frame
//! ([`frame`], from the headers alone), which lets wharf insert frames of its
//! own between the endpoints' frames: a gentle close (1001 both ways) asked
//! through its [`TunnelControl`], pings to a silent client whose pongs the
//! server never sees ([`keepalive`]), 1002 for a protocol violation and 1009
//! for a client message over the route's limit; and count messages, bytes
//! and closes ([`stats`]).

mod control;
mod flow;
pub mod frame;
mod keepalive;
mod open;
mod pipe;
mod routes;
pub mod stats;

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

pub use control::TunnelControl;
pub use frame::{Extensions, Sender, Violation};
pub use open::{OpenTunnels, Registration};
pub use pipe::CLOSE_HANDSHAKE_TIMEOUT;
pub use routes::{RouteId, RouteStats};
pub use stats::{Direction, WsStats};

/// How a tunnel behaves.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Closed when no byte moves either way for this long.
    pub idle_timeout: Duration,
    /// Follow WebSocket frames; `None` for any other protocol (bytes only).
    pub websocket: Option<WebSocketSettings>,
}

/// A websocket's route settings and what the 101 negotiated.
#[derive(Debug, Clone)]
pub struct WebSocketSettings {
    pub extensions: Extensions,
    /// `ws_ping`: a client silent this long gets a ping of wharf's own.
    pub ping: Option<Duration>,
    /// `ws_pong_timeout`: a ping unanswered this long means the client is gone.
    pub pong_timeout: Duration,
    /// `ws_max_message`: a client message larger than this is refused (1009).
    pub max_message: Option<u64>,
    /// Counters this websocket adds to (its route's, its server's).
    pub stats: Vec<Arc<WsStats>>,
}

/// Why wharf closed a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WharfClose {
    /// Through its [`TunnelControl`] (a drain, a shutdown).
    Asked,
    /// An endpoint broke RFC 6455: 1002 both ways.
    Violation { by: Sender, violation: Violation },
    /// A client message reached this size, over `ws_max_message`: 1009.
    MessageTooBig(u64),
    /// The client did not answer wharf's ping within `ws_pong_timeout`.
    PongTimeout,
}

impl WharfClose {
    /// The close code wharf sent the client (or, when the client was gone, the server).
    pub fn code(self) -> u16 {
        match self {
            WharfClose::Asked | WharfClose::PongTimeout => 1001,
            WharfClose::Violation { .. } => 1002,
            WharfClose::MessageTooBig(_) => 1009,
        }
    }
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
    /// Cut at once through its [`TunnelControl`].
    Cut,
    /// wharf closed it; `cut` when the close handshake did not finish in time.
    ClosedByWharf { reason: WharfClose, cut: bool },
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

/// Carries bytes between `client` and `server` until the tunnel ends (see
/// [`TunnelEnd`]). `client_early` and `server_early` are bytes already read
/// from each side (what followed the HTTP head in the same packet) that go to
/// the other side first; they are dropped once sent, since they may share an
/// allocation with hyper's whole read buffer. Drains, shutdown and the
/// server's drain deadline reach the tunnel through `control`.
///
/// Not an `async fn`: the tunnel itself is the future, so that a task holding
/// an idle tunnel is no bigger than the tunnel's own state.
pub fn run<C, S>(
    client: (C, Bytes),
    server: (S, Bytes),
    settings: Settings,
    control: Arc<TunnelControl>,
) -> impl Future<Output = TunnelReport>
where
    C: AsyncRead + AsyncWrite + Unpin,
    S: AsyncRead + AsyncWrite + Unpin,
{
    pipe::Tunnel::new(client, server, settings, control)
}
