//! Listener: accepts connections on one bound socket under a connection
//! limit, backing off on accept errors, and hands each connection on. It
//! knows nothing of what the connection speaks: that is the front stage.

mod accept;

pub use accept::Acceptor;

use std::net::SocketAddr;

use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

/// A connection as accepted, before anything was read from it.
#[derive(Debug)]
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub local: SocketAddr,
    /// Its place under the listener's `max_connections`, held until it ends.
    pub slot: OwnedSemaphorePermit,
}

/// Accepts until `stop` is cancelled, giving each connection to `handle`.
pub async fn accept_loop(
    mut acceptor: Acceptor,
    stop: CancellationToken,
    handle: impl Fn(Accepted),
) {
    while let Some((stream, peer, slot)) = acceptor.next(&stop).await {
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        handle(Accepted {
            stream,
            peer,
            local,
            slot,
        });
    }
}
