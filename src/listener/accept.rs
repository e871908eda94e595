//! Accepting under a connection limit: at the limit, stop accepting (the
//! kernel's backlog holds newcomers) rather than accept and fail; on accept
//! errors (usually out of file descriptors), back off instead of spinning.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A bound socket and the limit on the connections it has open.
pub struct Acceptor {
    socket: TcpListener,
    limit: Arc<Semaphore>,
    max: usize,
    /// What the socket is, for logs (`listener public`, `admin`).
    what: String,
    backoff: Duration,
    /// Whether the limit was reached and said so, to log once per episode.
    at_limit: bool,
}

impl Acceptor {
    pub fn new(socket: TcpListener, max_connections: usize, what: String) -> Self {
        Acceptor {
            socket,
            limit: Arc::new(Semaphore::new(max_connections)),
            max: max_connections,
            what,
            backoff: FIRST_BACKOFF,
            at_limit: false,
        }
    }

    /// The next connection, with its place under the limit (held until the
    /// connection ends); `None` once `shutdown` turns true.
    pub async fn next(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        loop {
            if *shutdown.borrow_and_update() {
                return None;
            }
            let full = self.limit.available_permits() == 0;
            if full && !self.at_limit {
                tracing::warn!(what = %self.what, max_connections = self.max, "connection limit reached; not accepting");
            }
            self.at_limit = full;
            let permit = tokio::select! {
                permit = self.limit.clone().acquire_owned() => permit.ok()?,
                _ = shutdown.changed() => return None,
            };
            let accepted = tokio::select! {
                accepted = self.socket.accept() => accepted,
                _ = shutdown.changed() => return None,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.backoff = FIRST_BACKOFF;
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer, permit));
                }
                Err(e) => {
                    tracing::warn!(what = %self.what, error = %e, "accept failed; backing off {:?}", self.backoff);
                    tokio::time::sleep(self.backoff).await;
                    self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
