//! Gauges read from the live state at scrape time instead of being kept up
//! to date on the data path: a server's health and admin state (as state
//! sets: one series per state, 1 for the current one), whether it is
//! serving or ejected, its active connections, and each pool's queue.

use std::sync::{Arc, OnceLock, Weak};

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::gauge::ConstGauge;

use super::{ListenerLabels, ServerLabels};

/// Health states, as the admin API names them.
pub const HEALTH_STATES: [&str; 4] = ["up", "falling", "down", "rising"];
/// Admin states, as the admin API names them.
pub const ADMIN_STATES: [&str; 3] = ["ready", "drain", "maintenance"];

/// One server's live state, as the gauges show it.
#[derive(Debug, Clone)]
pub struct LiveServer {
    pub pool: String,
    pub server: String,
    /// One of [`HEALTH_STATES`].
    pub health: &'static str,
    /// One of [`ADMIN_STATES`].
    pub admin: &'static str,
    pub serving: bool,
    pub ejected: bool,
    /// Requests in flight plus open tunnels.
    pub active: usize,
}

/// One pool's live state.
#[derive(Debug, Clone)]
pub struct LivePool {
    pub pool: String,
    pub queued: usize,
}

/// One listener's live state.
#[derive(Debug, Clone)]
pub struct LiveListener {
    pub listener: String,
    /// Client connections open now (its places taken under `max_connections`).
    pub open: usize,
}

/// What a scrape reads from the live state.
#[derive(Debug, Clone, Default)]
pub struct LiveGauges {
    pub listeners: Vec<LiveListener>,
    pub servers: Vec<LiveServer>,
    pub pools: Vec<LivePool>,
}

/// Whoever holds the live state (the runtime) gives it at scrape time.
pub trait LiveSource: Send + Sync + 'static {
    fn live_gauges(&self) -> LiveGauges;
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pool: String,
    server: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolLabels {
    pool: String,
}

/// The registry's collector for [`LiveGauges`].
pub(super) struct Collector {
    live: Arc<OnceLock<Weak<dyn LiveSource>>>,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("live::Collector")
    }
}

impl Collector {
    pub(super) fn new(live: Arc<OnceLock<Weak<dyn LiveSource>>>) -> Collector {
        Collector { live }
    }
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(live) = self.live.get().and_then(Weak::upgrade) else {
            return Ok(());
        };
        let live = live.live_gauges();
        gauges(
            &mut encoder,
            "wharf_listener_connections_open",
            "Client connections open now",
            live.listeners.iter().map(|l| {
                let labels = ListenerLabels {
                    listener: l.listener.clone(),
                };
                (labels, saturate(l.open))
            }),
        )?;
        let servers = &live.servers;
        let labels = |s: &LiveServer| ServerLabels {
            pool: s.pool.clone(),
            server: s.server.clone(),
        };
        state_set(
            &mut encoder,
            "wharf_server_health",
            "The server's health: 1 for its current state",
            servers,
            &HEALTH_STATES,
            |s| s.health,
        )?;
        state_set(
            &mut encoder,
            "wharf_server_admin_state",
            "The server's admin state: 1 for its current state",
            servers,
            &ADMIN_STATES,
            |s| s.admin,
        )?;
        gauges(
            &mut encoder,
            "wharf_server_serving",
            "1 if new requests may go to the server now (healthy, ready, not ejected)",
            servers.iter().map(|s| (labels(s), i64::from(s.serving))),
        )?;
        gauges(
            &mut encoder,
            "wharf_server_ejected",
            "1 while passive health has the server out",
            servers.iter().map(|s| (labels(s), i64::from(s.ejected))),
        )?;
        gauges(
            &mut encoder,
            "wharf_server_active_connections",
            "Requests in flight plus open tunnels on the server",
            servers.iter().map(|s| (labels(s), saturate(s.active))),
        )?;
        gauges(
            &mut encoder,
            "wharf_pool_queue_length",
            "Requests waiting for a server with a free slot",
            live.pools.iter().map(|p| {
                let labels = PoolLabels {
                    pool: p.pool.clone(),
                };
                (labels, saturate(p.queued))
            }),
        )
    }
}

fn saturate(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// One gauge family with a value per label set.
fn gauges<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    values: impl Iterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(family.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A state set: for each server, one series per state, 1 for the current one.
fn state_set(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    servers: &[LiveServer],
    states: &[&str],
    current: impl Fn(&LiveServer) -> &'static str,
) -> Result<(), std::fmt::Error> {
    gauges(
        encoder,
        name,
        help,
        servers.iter().flat_map(|s| {
            let now = current(s);
            states.iter().map(move |state| {
                let labels = StateLabels {
                    pool: s.pool.clone(),
                    server: s.server.clone(),
                    state: (*state).to_owned(),
                };
                (labels, i64::from(*state == now))
            })
        }),
    )
}
