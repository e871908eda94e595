//! Listener: accepts client connections on one bound port and hands each to
//! [`connection::handle`], which reads a PROXY header, sniffs the protocol
//! and passes the connection on (TLS, HTTP, Flash policy, TCP pool). Caps
//! the open connections: at the limit it stops accepting (the kernel's
//! backlog holds newcomers) rather than failing them.

mod accept;
mod client_hello;
mod connection;
pub mod sniff;

pub use accept::Acceptor;

use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;

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
    let mut acceptor = Acceptor::new(socket, max_connections, format!("listener {name}"));
    while let Some((stream, peer, slot)) = acceptor.next(&mut shutdown).await {
        let Ok(local) = stream.local_addr() else {
            continue;
        };
        let accepted = connection::Accepted {
            stream,
            peer,
            local,
            listener: index,
            slot,
        };
        tokio::spawn(connection::handle(accepted, shared.clone()));
    }
}
