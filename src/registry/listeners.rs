//! The live state of each listener, by name: its bound socket, its
//! connection limit and the signal that stops it. A reload keeps a listener
//! whose `bind` did not change, socket and open connections included.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Places taken out of `limit` by a lowered `max_connections` that were
    /// held by open connections then: taken as those connections close.
    pub owed: Arc<AtomicUsize>,
    /// Cancelled when the listener is removed or wharf stops: the accept
    /// loop ends and open connections finish their requests and close.
    pub stop: CancellationToken,
    pub accepting: JoinHandle<()>,
}

impl ListenerLive {
    /// Resizes the connection limit (a reload). Open connections are never
    /// cut: places they hold beyond a lowered limit are taken back as they
    /// close, and no new connection is accepted meanwhile.
    pub fn resize(&mut self, max_connections: usize) {
        if max_connections > self.max_connections {
            let more = max_connections - self.max_connections;
            // Places still owed from an earlier lowering are forgiven first.
            let forgiven = take_up_to(&self.owed, more);
            self.limit.add_permits(more - forgiven);
        } else {
            let fewer = self.max_connections - max_connections;
            let owed = fewer - self.limit.forget_permits(fewer);
            if owed > 0 {
                self.owed.fetch_add(owed, Ordering::AcqRel);
                tokio::spawn(collect_owed(self.limit.clone(), self.owed.clone(), owed));
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

/// Takes up to `n` from `counter`; returns how many it took.
fn take_up_to(counter: &AtomicUsize, n: usize) -> usize {
    let mut taken = 0;
    let _ = counter.fetch_update(Ordering::AcqRel, Ordering::Acquire, |owed| {
        taken = owed.min(n);
        Some(owed - taken)
    });
    taken
}

/// Takes `count` places out of `limit` as open connections give them back,
/// for as long as they are still owed (a raise may forgive them).
async fn collect_owed(limit: Arc<Semaphore>, owed: Arc<AtomicUsize>, count: usize) {
    for _ in 0..count {
        let Ok(place) = limit.acquire().await else {
            return;
        };
        if take_up_to(&owed, 1) == 0 {
            // Forgiven while waiting: the place goes back.
            return;
        }
        place.forget();
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
