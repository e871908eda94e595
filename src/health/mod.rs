//! Active health checks: one task per server of a pool with `health`,
//! probing every `interval` (with jitter) and feeding the result to the
//! server's state ([`crate::upstream::Server::record_check`]), which applies
//! `rise` and `fall`.
//!
//! - [`schedule`]: when checks run (a random first delay, then jitter).
//! - [`probe`]: what one check does (TCP connect or `GET path`).
//!
//! A server in maintenance is not probed; its health stays what it was until
//! it is made ready again. A task holds its server weakly and ends when the
//! server is dropped (its pool replaced by a reload) or wharf shuts down.

pub mod probe;
pub mod schedule;

use std::sync::{Arc, Weak};

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::HealthConfig;
use crate::upstream::{AdminState, Server};

/// Starts the checks of each of `servers` whose pool has `health`, unless
/// they already run; they stop when `stop` is cancelled, when the server is
/// removed by a reload or dropped, or when its pool no longer has `health`.
/// A reload's new `health` settings apply from the next check.
pub fn spawn_checks<'a>(
    servers: impl IntoIterator<Item = &'a Arc<Server>>,
    stop: &CancellationToken,
) {
    for server in servers {
        if server.settings().health.is_none() || !server.start_checking() {
            continue;
        }
        let server = Arc::downgrade(server);
        let checks = check_server(server.clone());
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = checks => {}
                () = stop.cancelled() => {}
            }
            if let Some(server) = server.upgrade() {
                server.stop_checking();
            }
        });
    }
}

/// Checks one server for as long as it exists, stays in its pool and the
/// pool has `health`.
async fn check_server(server: Weak<Server>) {
    let Some((address, first)) = server
        .upgrade()
        .and_then(|s| Some((s.address, s.settings().health.clone()?)))
    else {
        return;
    };
    let mut next = Instant::now() + schedule::initial_delay(first.interval, rand::random());
    loop {
        tokio::time::sleep_until(next).await;
        let started = Instant::now();
        let Some(config) = current_health(&server) else {
            return;
        };
        next = started + schedule::next_delay(config.interval, rand::random());
        let Some(maintenance) = in_maintenance(&server) else {
            return;
        };
        if !maintenance {
            let proxy_header = server
                .upgrade()
                .and_then(|s| s.settings().send_proxy_protocol)
                .map(crate::proxy_protocol::encode_local);
            let verdict = probe::probe(
                &config.check,
                address,
                config.timeout,
                proxy_header.as_deref(),
            )
            .await;
            // Maintenance set while the probe ran: its result no longer counts.
            let Some(server) = server.upgrade() else {
                return;
            };
            if verdict.counts && server.state().admin != AdminState::Maintenance {
                tracing::debug!(
                    pool = %server.pool, server = %address, passed = verdict.passed,
                    cause = %verdict.cause, "health check"
                );
                server.record_check(verdict.passed, config.rise, config.fall, &verdict.cause);
            }
        }
    }
}

/// The server's health settings now; `None` once it is gone, removed by a
/// reload, or its pool has no `health` any more.
fn current_health(server: &Weak<Server>) -> Option<HealthConfig> {
    let server = server.upgrade()?;
    if server.is_removed() {
        return None;
    }
    server.settings().health.clone()
}

/// Whether the server is in maintenance; `None` once it is gone.
fn in_maintenance(server: &Weak<Server>) -> Option<bool> {
    Some(server.upgrade()?.state().admin == AdminState::Maintenance)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use tokio::net::TcpListener;

    use crate::upstream::{Health, Pool};

    /// A pool `p` of one server at `address`, with `health` if given.
    fn pool(address: SocketAddr, health: &str) -> Arc<Pool> {
        let toml = format!(
            "[[listener]]\nname = \"l\"\nbind = \"127.0.0.1:0\"\n[[listener.route]]\npool = \"p\"\n\
             [pool.p]\nservers = [\"{address}\"]\n{health}\n"
        );
        let config = crate::config::parse_str("test.toml", &toml).expect("a valid config");
        Arc::new(Pool::standalone(config.pool("p").expect("pool p").clone()))
    }

    /// A listener that counts the connections it accepts.
    async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address");
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while listener.accept().await.is_ok() {
                count.fetch_add(1, Ordering::SeqCst);
            }
        });
        (address, accepted)
    }

    async fn wait_for_count(count: &AtomicUsize, at_least: usize) {
        let deadline = Instant::now() + Duration::from_secs(5);
        while count.load(Ordering::SeqCst) < at_least {
            assert!(
                Instant::now() < deadline,
                "only {} checks",
                count.load(Ordering::SeqCst)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    const HEALTH: &str =
        "health = { interval = \"100ms\", timeout = \"50ms\", rise = 1, fall = 1 }";

    #[tokio::test]
    async fn a_pool_without_health_is_not_checked() {
        let (address, accepted) = counting_listener().await;
        let stop = CancellationToken::new();
        spawn_checks(&pool(address, "").servers, &stop);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(accepted.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn checks_stop_when_the_pool_is_dropped() {
        let (address, accepted) = counting_listener().await;
        let stop = CancellationToken::new();
        let pool = pool(address, HEALTH);
        spawn_checks(&pool.servers, &stop);
        wait_for_count(&accepted, 2).await;
        assert_eq!(pool.servers[0].state().health, Health::Up);
        drop(pool);
        // A probe under way may still connect; none starts after it.
        let at_drop = accepted.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = accepted.load(Ordering::SeqCst) - at_drop;
        assert!(after <= 1, "{after} checks after the pool was dropped");
    }

    #[tokio::test]
    async fn checks_stop_when_wharf_stops() {
        let (address, accepted) = counting_listener().await;
        let stop = CancellationToken::new();
        let pool = pool(address, HEALTH);
        spawn_checks(&pool.servers, &stop);
        wait_for_count(&accepted, 2).await;
        stop.cancel();
        let at_stop = accepted.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let after = accepted.load(Ordering::SeqCst) - at_stop;
        assert!(after <= 1, "{after} checks after wharf stopped");
        // The pool is alive all along: only the stop ended the checks.
        drop(pool);
    }
}
