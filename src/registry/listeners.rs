//! The live state of each listener, by name: its bound socket, its
//! connection limit and the signal that stops it. A reload keeps a listener
//! whose `bind` did not change, socket and open connections included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One running listener.
#[derive(Debug)]
pub struct ListenerLive {
    /// The address as the config says it (what a reload compares).
    pub bind: SocketAddr,
    /// The address actually bound (differs with port 0).
    pub local: SocketAddr,
    /// A duplicate of the listening socket, to hand over to a new binary.
    pub socket: std::net::TcpListener,
    /// Places for open connections; its size is `max_connections`.
    pub limit: Arc<Semaphore>,
    pub max_connections: usize,
    /// Cancelled when the listener is removed or wharf stops: the accept
    /// loop ends and open connections finish their requests and close.
    pub stop: CancellationToken,
    pub accepting: JoinHandle<()>,
}

impl ListenerLive {
    /// Resizes the connection limit (a reload). Lowering it takes back the
    /// free places only: open connections are never cut, so while more are
    /// open than the new limit, the limit is briefly exceeded (logged).
    pub fn resize(&mut self, max_connections: usize) {
        if max_connections > self.max_connections {
            self.limit
                .add_permits(max_connections - self.max_connections);
        } else {
            let fewer = self.max_connections - max_connections;
            let forgotten = self.limit.forget_permits(fewer);
            if forgotten < fewer {
                tracing::info!(
                    max_connections,
                    "listener has more open connections than its new limit; they stay open"
                );
            }
        }
        self.max_connections = max_connections;
    }

    /// Client connections open now: the places taken under the limit.
    pub fn open_connections(&self) -> usize {
        self.max_connections
            .saturating_sub(self.limit.available_permits())
    }

    /// Stops accepting; open connections finish.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

/// Every running listener, by name.
#[derive(Debug, Default)]
pub struct Listeners {
    by_name: Mutex<HashMap<String, ListenerLive>>,
}

impl Listeners {
    /// Runs `f` on the map of running listeners.
    pub fn with<T>(&self, f: impl FnOnce(&mut HashMap<String, ListenerLive>) -> T) -> T {
        f(&mut self.by_name.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// The bound address of the listener called `name`.
    pub fn local_addr(&self, name: &str) -> Option<SocketAddr> {
        self.with(|map| map.get(name).map(|l| l.local))
    }
}
