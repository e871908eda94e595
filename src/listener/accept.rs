//! Accepting under a connection limit: at the limit, stop accepting (the
//! kernel's backlog holds newcomers) rather than accept and fail; on accept
//! errors, back off instead of spinning. Running out of file descriptors is
//! wharf's own trouble: logged once per episode, never anyone else's fault.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::fd::{is_out_of_files, report_exhausted, report_recovered};

const FIRST_BACKOFF: Duration = Duration::from_millis(5);
const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// A bound socket and the limit on the connections it has open.
pub struct Acceptor {
    socket: TcpListener,
    limit: Arc<Semaphore>,
    /// What the socket is, for logs (`listener public`, `admin`).
    what: String,
    backoff: Duration,
    /// Whether the limit was reached and said so, to log once per episode.
    at_limit: bool,
    /// Whether accept failed for want of descriptors (then backs off).
    out_of_files: bool,
}

impl Acceptor {
    /// Accepts on `socket` while `limit` has places.
    pub fn new(socket: TcpListener, limit: Arc<Semaphore>, what: String) -> Self {
        Acceptor {
            socket,
            limit,
            what,
            backoff: FIRST_BACKOFF,
            at_limit: false,
            out_of_files: false,
        }
    }

    /// The next connection, with its place under the limit (held until the
    /// connection ends); `None` once `stop` is cancelled.
    pub async fn next(
        &mut self,
        stop: &CancellationToken,
    ) -> Option<(TcpStream, SocketAddr, OwnedSemaphorePermit)> {
        loop {
            if stop.is_cancelled() {
                return None;
            }
            let full = self.limit.available_permits() == 0;
            if full && !self.at_limit {
                tracing::warn!(what = %self.what, "connection limit reached; not accepting");
            }
            self.at_limit = full;
            let permit = tokio::select! {
                permit = self.limit.clone().acquire_owned() => permit.ok()?,
                () = stop.cancelled() => return None,
            };
            let accepted = tokio::select! {
                accepted = self.socket.accept() => accepted,
                () = stop.cancelled() => return None,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.backoff = FIRST_BACKOFF;
                    if self.out_of_files {
                        self.out_of_files = false;
                        report_recovered();
                    }
                    let _ = stream.set_nodelay(true);
                    return Some((stream, peer, permit));
                }
                Err(e) if is_out_of_files(&e) => {
                    report_exhausted(&self.what, &e);
                    self.out_of_files = true;
                    self.back_off().await;
                }
                Err(e) => {
                    tracing::warn!(what = %self.what, error = %e, "accept failed; backing off {:?}", self.backoff);
                    self.back_off().await;
                }
            }
        }
    }

    async fn back_off(&mut self) {
        tokio::time::sleep(self.backoff).await;
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }
}
