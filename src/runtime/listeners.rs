//! Binding listeners and starting or stopping their accept loops, at start
//! and on reload. A listener whose `bind` did not change keeps its socket; a
//! socket that another listener (or the wharf being replaced) already has
//! for that address is reused rather than bound again, so that no
//! connection is refused while a listener is renamed or a binary upgraded.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::config::Config;
use crate::listener::{self, Acceptor};
use crate::registry::ListenerLive;
use crate::snapshot::Shared;

/// A listening socket ready to serve.
#[derive(Debug)]
pub struct BoundSocket {
    /// The address as configured.
    pub bind: SocketAddr,
    /// The address bound (differs with port 0).
    pub local: SocketAddr,
    pub socket: TcpListener,
    /// A duplicate, kept for a handover to a new binary.
    pub dup: std::net::TcpListener,
}

/// The sockets a config needs that are not serving yet.
#[derive(Debug, Default)]
pub struct Bound {
    pub listeners: HashMap<String, BoundSocket>,
    pub admin: Option<BoundSocket>,
}

/// Whom a socket serves: a listener is never handed the admin API's socket,
/// nor the other way round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Listener,
    Admin,
}

/// Where an already-open socket for an address may come from: a running
/// listener (renamed or moved), or the wharf being replaced.
pub struct Sources<'a> {
    /// The bind of each running listener, by name.
    pub running: HashMap<String, SocketAddr>,
    pub running_admin: Option<SocketAddr>,
    /// A duplicate of the running socket of that kind bound as an address.
    pub existing: &'a (dyn Fn(Kind, SocketAddr) -> Option<std::net::TcpListener> + Sync),
    pub inherited: &'a mut HashMap<SocketAddr, std::net::TcpListener>,
}

/// Binds every socket `config` needs that is not serving under the same
/// name and address already. On an error, nothing bound is kept (the
/// sockets close as they drop), and the listener and address are returned.
pub fn bind_all(
    config: &Config,
    mut sources: Sources<'_>,
) -> Result<Bound, (String, SocketAddr, io::Error)> {
    let mut bound = Bound::default();
    for listener in &config.listeners {
        if sources.running.get(&listener.name) == Some(&listener.bind) {
            continue;
        }
        let socket = open(Kind::Listener, listener.bind, &mut sources)
            .map_err(|e| (listener.name.clone(), listener.bind, e))?;
        bound.listeners.insert(listener.name.clone(), socket);
    }
    if let Some(admin) = &config.admin
        && sources.running_admin != Some(admin.bind)
    {
        let socket = open(Kind::Admin, admin.bind, &mut sources)
            .map_err(|e| ("admin".to_owned(), admin.bind, e))?;
        bound.admin = Some(socket);
    }
    Ok(bound)
}

/// A listening socket for `bind`: inherited, shared with a running one of
/// the same kind, or new. A port-0 address names no socket in particular:
/// it is always bound anew.
fn open(kind: Kind, bind: SocketAddr, sources: &mut Sources<'_>) -> io::Result<BoundSocket> {
    let reused = match bind.port() {
        0 => None,
        _ => sources
            .inherited
            .remove(&bind)
            .or_else(|| (sources.existing)(kind, bind)),
    };
    let socket = match reused {
        Some(socket) => {
            socket.set_nonblocking(true)?;
            TcpListener::from_std(socket)?
        }
        None => listen(bind)?,
    };
    let local = socket.local_addr()?;
    let std = socket.into_std()?;
    let dup = std.try_clone()?;
    let socket = TcpListener::from_std(std)?;
    Ok(BoundSocket {
        bind,
        local,
        socket,
        dup,
    })
}

/// How many connections the kernel may queue for accept. A burst of
/// reconnecting clients (hundreds of handshakes at once after a deploy)
/// overflows a short queue and every dropped SYN costs its client a 1 s
/// retransmit; the kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

/// Binds and listens on `bind` with address reuse and a deep backlog.
fn listen(bind: SocketAddr) -> io::Result<TcpListener> {
    let socket = match bind {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(bind)?;
    socket.listen(BACKLOG)
}

/// Starts the listeners in `bound`, resizes those that keep running, and
/// stops those that `config` no longer has (their connections finish).
pub fn apply(
    shared: &Arc<Shared>,
    live: &mut HashMap<String, ListenerLive>,
    mut bound: HashMap<String, BoundSocket>,
    config: &Config,
) {
    for listener in &config.listeners {
        match bound.remove(&listener.name) {
            Some(socket) => {
                if let Some(old) = live.remove(&listener.name) {
                    old.stop();
                }
                let started = spawn(shared, &listener.name, socket, listener.max_connections);
                live.insert(listener.name.clone(), started);
            }
            None => {
                if let Some(kept) = live.get_mut(&listener.name)
                    && kept.max_connections != listener.max_connections
                {
                    kept.resize(listener.max_connections);
                }
            }
        }
    }
    live.retain(|name, listener| {
        let keep = config.listeners.iter().any(|l| &l.name == name);
        if !keep {
            tracing::info!(listener = %name, addr = %listener.local, "listener removed: not accepting; open connections finish");
            listener.stop();
        }
        keep
    });
}

/// Runs the accept loop of one listener.
fn spawn(shared: &Arc<Shared>, name: &str, bound: BoundSocket, max: usize) -> ListenerLive {
    tracing::info!(listener = %name, addr = %bound.local, "listening");
    let limit = Arc::new(Semaphore::new(max));
    let stop = shared.stopping.child_token();
    let acceptor = Acceptor::new(bound.socket, limit.clone(), format!("listener {name}"));
    let accepting = {
        let shared = shared.clone();
        let stop = stop.clone();
        let metrics = Arc::new(shared.registry.metrics.listener(name));
        let name: Arc<str> = Arc::from(name);
        tokio::spawn(listener::accept_loop(
            acceptor,
            stop.clone(),
            move |accepted| {
                metrics.accepted.inc();
                let connection = crate::front::handle(
                    accepted,
                    name.clone(),
                    shared.clone(),
                    stop.clone(),
                    metrics.clone(),
                );
                shared.tasks.spawn(connection);
            },
        ))
    };
    ListenerLive {
        bind: bound.bind,
        local: bound.local,
        socket: bound.dup,
        limit,
        max_connections: max,
        owed: Default::default(),
        stop,
        accepting,
    }
}
