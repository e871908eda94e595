//! One accepted connection, from its first byte to the stage that serves it:
//! PROXY header (trusted peers only), then sniffing, then TLS termination or
//! passthrough, HTTP, a Flash policy answer, or the listener's TCP pool.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::client_hello;
use super::sniff::{self, FirstBytes, Protocol, peek_more};
use crate::config::{ListenerConfig, Plaintext};
use crate::http::{self, ClientConnection};
use crate::listener::Accepted;
use crate::metrics::ListenerMetrics;
use crate::proxy_protocol::{self, ProxyHeader};
use crate::snapshot::{Shared, Snapshot};
use crate::tcp::{self, TcpClient};
use crate::tls::TlsTerminator;
use crate::upstream::Pool;

/// Serves one connection of the listener called `listener` until it ends.
/// `stop` asks it to finish its request in flight and close (the listener
/// was removed, or wharf is stopping).
pub async fn handle(
    accepted: Accepted,
    listener: Arc<str>,
    shared: Arc<Shared>,
    stop: CancellationToken,
    metrics: Arc<ListenerMetrics>,
) {
    let snapshot = shared.snapshot();
    // A reload may have renamed the listener since it accepted.
    let Some(config) = snapshot.listener_of(&listener, accepted.local) else {
        return;
    };
    let listener: Arc<str> = match *listener == *config.name {
        true => listener,
        false => Arc::from(config.name.as_str()),
    };
    let Accepted {
        mut stream,
        peer,
        local,
        slot,
    } = accepted;
    // One deadline from accept for everything before the protocol is known;
    // with `server_first`, a silent client goes to the TCP pool at that point.
    let first_bytes = config
        .timeouts
        .server_first
        .unwrap_or(config.timeouts.first_bytes);
    let accepted_at = Instant::now();
    let deadline = accepted_at + first_bytes;
    // A TLS client has `first_bytes` for its whole handshake, `server_first` or not.
    let handshake_deadline = accepted_at + config.timeouts.first_bytes;

    let (peer, local, first) =
        match client_addresses(&mut stream, peer, local, config, deadline).await {
            Ok(found) => found,
            Err(reason) => {
                tracing::info!(listener = %config.name, %peer, "connection refused: {reason}");
                return;
            }
        };
    let protocol = match sniff::sniff(&stream, deadline, first).await {
        Ok(protocol) => protocol,
        Err(e) => {
            tracing::debug!(listener = %config.name, %peer, error = %e, "connection failed before its first bytes");
            return;
        }
    };
    let from = TcpClient { peer, local };
    let next = next_step(protocol, &stream, handshake_deadline, config, &snapshot).await;
    // Whatever comes next may last hours (a websocket, a TCP tunnel): it
    // holds only what it needs, never the snapshot, which a reload replaces.
    let request_header = config.timeouts.request_header;
    drop(snapshot);
    let client = |proto| ClientConnection {
        peer,
        local,
        listener: listener.clone(),
        proto,
        metrics: metrics.clone(),
        slot: std::sync::Mutex::new(Some(slot)),
    };
    match next {
        Next::Http => http::serve(stream, client("http"), shared, stop).await,
        Next::PlaintextAnswer(answer) => {
            http::serve_plaintext_answer(stream, answer, request_header).await
        }
        Next::Tls(terminator) => {
            let handshake =
                tokio::time::timeout_at(handshake_deadline, terminator.accept(stream)).await;
            match handshake {
                Ok(Ok(tls)) => {
                    metrics.tls_handshakes.inc();
                    http::serve(tls, client("https"), shared, stop).await
                }
                Ok(Err(e)) => {
                    metrics.tls_failures.inc();
                    tracing::info!(%listener, %peer, error = %e, "TLS handshake failed")
                }
                Err(_) => {
                    metrics.tls_failures.inc();
                    tracing::info!(%listener, %peer, "TLS handshake timed out")
                }
            }
        }
        Next::Tcp(pool) => tcp::forward(stream, from, pool, &listener).await,
        Next::NoTcpPool => {
            tracing::info!(%listener, %peer, "connection closed: not HTTP or TLS, and no `tcp_pool`")
        }
        Next::Flash(policy) => answer_flash_policy(stream, &policy).await,
        Next::Nothing => {
            tracing::debug!(%listener, %peer, ?protocol, "connection closed: nothing sent");
        }
    }
}

/// What a connection becomes once its first bytes are known, with what it
/// needs of the config.
enum Next {
    Http,
    /// Plaintext on a TLS port that is redirected or refused.
    PlaintextAnswer(Plaintext),
    Tls(Arc<TlsTerminator>),
    /// The listener's TCP pool, or an SNI passthrough route's.
    Tcp(Arc<Pool>),
    /// Not HTTP or TLS, and the listener has no TCP pool.
    NoTcpPool,
    Flash(Arc<[u8]>),
    Nothing,
}

/// Decides what the connection becomes. A TLS ClientHello is passed through
/// to a TCP pool if a route names its SNI (peeked within `deadline`), else
/// terminated, else handed to the TCP pool.
async fn next_step(
    protocol: Protocol,
    stream: &TcpStream,
    deadline: Instant,
    config: &ListenerConfig,
    snapshot: &Snapshot,
) -> Next {
    let plaintext = || match config.tls.as_ref().map(|tls| tls.plaintext) {
        None | Some(Plaintext::Serve) => Next::Http,
        Some(answer) => Next::PlaintextAnswer(answer),
    };
    let tcp_pool = || match config
        .tcp_pool
        .as_deref()
        .and_then(|name| snapshot.pool(name))
    {
        Some(pool) => Next::Tcp(pool.clone()),
        None => Next::NoTcpPool,
    };
    match protocol {
        Protocol::Http => plaintext(),
        Protocol::Tls => {
            if crate::route::has_sni_routes(&config.routes) {
                let name = client_hello::peek_server_name(stream, deadline)
                    .await
                    .ok()
                    .flatten();
                if let Some(route) = name
                    .as_deref()
                    .and_then(|name| crate::route::find_sni(&config.routes, name))
                    && let Some(pool) = snapshot.pool(&route.pool)
                {
                    return Next::Tcp(pool.clone());
                }
            }
            match snapshot.tls(&config.name) {
                Some(terminator) => Next::Tls(terminator.clone()),
                None => tcp_pool(),
            }
        }
        Protocol::FlashPolicy if config.flash_policy.is_some() => Next::Flash(
            config
                .flash_policy
                .clone()
                .unwrap_or_else(|| Arc::from(&[][..])),
        ),
        // Maybe a protocol where the server speaks first; else nothing may
        // come at all within `first_bytes`, which the TCP tunnel's idle
        // timeout then handles.
        Protocol::Silent if config.timeouts.server_first.is_some() => tcp_pool(),
        Protocol::FlashPolicy | Protocol::Other if config.tcp_pool.is_some() => tcp_pool(),
        // Without a TCP pool, let hyper answer what is probably broken HTTP:
        // 400 and close, rather than silence.
        Protocol::FlashPolicy | Protocol::Other => plaintext(),
        Protocol::Silent | Protocol::Closed => Next::Nothing,
    }
}

/// The client's address and the address it connected to: from a PROXY header
/// if the peer is trusted and sent one, else the socket's own. A PROXY header
/// from anyone else is refused: it would let a client forge its address.
/// Also the first bytes it peeked, for the sniff (none once a PROXY header
/// was read: what follows it is still to be seen).
async fn client_addresses(
    stream: &mut TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    config: &ListenerConfig,
    deadline: Instant,
) -> Result<(SocketAddr, SocketAddr, FirstBytes), String> {
    let trusted = config
        .proxy_protocol
        .iter()
        .any(|net| net.contains(&peer.ip().to_canonical()));
    // As HAProxy's `accept-proxy` and nginx's `proxy_protocol`: from the
    // trusted peers the header is required, else a client behind them (or
    // behind a NAT sharing their address) could send its own and forge its
    // address; `proxy_protocol_optional` relaxes that.
    let without_header = |first| match trusted && !config.proxy_protocol_optional {
        true => Err("no PROXY header from a `proxy_protocol` peer".to_owned()),
        false => Ok((peer, local, first)),
    };
    let mut first = FirstBytes::default();
    // Enough bytes to tell a PROXY header apart ("PROXY " or the v2
    // signature); usually enough for the sniff too.
    while first.seen < 6 {
        match peek_more(stream, &mut first.buf, first.seen, deadline).await {
            Ok(Some(n)) if n > 0 => first.seen = n,
            Ok(_) => return without_header(first),
            Err(e) => return Err(e.to_string()),
        }
        if !proxy_protocol::looks_like_proxy(first.peeked()) {
            return without_header(first);
        }
    }
    if !proxy_protocol::looks_like_proxy(first.peeked()) {
        return without_header(first);
    }
    if !trusted {
        return Err("PROXY header from a peer not in `proxy_protocol`".to_owned());
    }
    let remaining = deadline.saturating_duration_since(Instant::now());
    match proxy_protocol::read_header(stream, remaining).await {
        Ok(ProxyHeader::Proxied {
            source,
            destination,
        }) => Ok((source, destination, FirstBytes::default())),
        Ok(ProxyHeader::Local) => Ok((peer, local, FirstBytes::default())),
        Err(e) => Err(format!("bad PROXY header: {e}")),
    }
}

/// Answers a Flash socket's policy request with the policy and a NUL, then closes.
async fn answer_flash_policy(mut stream: TcpStream, policy: &[u8]) {
    let mut request = [0u8; sniff::FLASH_POLICY_REQUEST.len()];
    if tokio::io::AsyncReadExt::read_exact(&mut stream, &mut request)
        .await
        .is_err()
    {
        return;
    }
    let _ = stream.write_all(policy).await;
    let _ = stream.write_all(b"\0").await;
    let _ = stream.shutdown().await;
}
