//! Listener: accepts client connections on one bound port and hands each to
//! [`connection::handle`], which reads a PROXY header, sniffs the protocol
//! and passes the connection on (TLS, HTTP, Flash policy, TCP pool). Caps
//! the open connections: at the limit it stops accepting (the kernel's
//! backlog holds newcomers) rather than failing them.

mod client_hello;
mod connection;
pub mod sniff;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::runtime::Shared;

/// Accepts until `shutdown` turns true.
pub async fn accept_loop(
    socket: TcpListener,
    index: usize,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    let (name, max_connections) = {
        let snapshot = shared.snapshot();
        let config = &snapshot.config.listeners[index];
        (config.name.clone(), config.max_connections)
    };
    let limit = Arc::new(Semaphore::new(max_connections));
    let mut backoff = Duration::from_millis(5);
    loop {
        if limit.available_permits() == 0 {
            tracing::warn!(listener = %name, max_connections, "connection limit reached; not accepting");
        }
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => permit,
            _ = shutdown.changed() => return,
        };
        let Ok(permit) = permit else { return };
        let accepted = tokio::select! {
            accepted = socket.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(e) => {
                // Usually out of file descriptors: wait for some to close.
                tracing::warn!(listener = %name, error = %e, "accept failed; backing off {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        backoff = Duration::from_millis(5);
        let _ = stream.set_nodelay(true);
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let accepted = connection::Accepted {
            stream,
            peer,
            local,
            listener: index,
            slot: permit,
        };
        tokio::spawn(connection::handle(accepted, shared.clone()));
    }
}
