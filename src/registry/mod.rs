//! The registry: wharf's live state, kept apart from the immutable config
//! snapshot and keyed by identity, never by position. Servers are known by
//! (pool name, address), pools and listeners by name.
//!
//! A reload builds a new snapshot and [`Registry::reconcile`]s the registry
//! with it: a server that stays keeps its health, admin state, ejection,
//! connections, idle connections and counters, and only takes the new
//! settings; a server that left its pool is drained and forgotten once its
//! last request or tunnel ends; a new server starts fresh. A pool keeps its
//! queue and its learned sessions.

mod listeners;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

pub use listeners::{ListenerLive, Listeners};

use crate::config::Config;
use crate::metrics::{Metrics, RouteHandles};
use crate::upstream::{Pool, PoolLive, Server};

/// A server's identity: the pool it belongs to and its address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerId {
    pub pool: String,
    pub address: SocketAddr,
}

/// The live state of every pool, server and listener.
#[derive(Debug, Default)]
pub struct Registry {
    pools: Mutex<HashMap<String, Arc<PoolLive>>>,
    servers: Mutex<HashMap<ServerId, Arc<Server>>>,
    pub listeners: Listeners,
    /// Websocket counters per route (per server: in each [`Server`]).
    pub websocket_routes: crate::tunnel::RouteStats,
    /// Every counter, by identity: a server's, a listener's and a route's
    /// handles taken again after a reload are the same counters.
    pub metrics: Metrics,
}

/// What reconciling the registry with a config gave.
#[derive(Debug)]
pub struct Reconciled {
    /// The config's pools, over their servers' live state.
    pub pools: HashMap<String, Arc<Pool>>,
    /// Servers that did not exist before (they need health checks).
    pub added: Vec<Arc<Server>>,
    /// Servers the config no longer has: now draining.
    pub removed: Vec<Arc<Server>>,
    /// The metric handles of every listener's routes, in config order.
    pub routes: RouteHandles,
}

impl Registry {
    /// Matches the live state to `config`: see the module doc.
    pub fn reconcile(&self, config: &Config) -> Reconciled {
        let mut servers = lock(&self.servers);
        let mut pools = lock(&self.pools);
        // At start every server is new; only those a reload adds ramp up.
        let reload = !servers.is_empty();
        let mut wanted = HashSet::new();
        let mut added = Vec::new();
        let mut built = HashMap::new();
        for pool_config in &config.pools {
            let settings = Arc::new(pool_config.clone());
            let live = pools.entry(pool_config.name.clone()).or_default().clone();
            let members = pool_config
                .servers
                .iter()
                .map(|s| {
                    let id = ServerId {
                        pool: pool_config.name.clone(),
                        address: s.address,
                    };
                    wanted.insert(id.clone());
                    match servers.get(&id) {
                        Some(server) => {
                            server.configure(settings.clone(), s.weight);
                            server.restore();
                            server.clone()
                        }
                        None => {
                            let server = Arc::new(Server::new(
                                settings.clone(),
                                s.address,
                                s.weight,
                                live.released.clone(),
                                self.metrics.server(&pool_config.name, s.address),
                            ));
                            if reload {
                                server.slow_start.begin(std::time::Instant::now());
                            }
                            servers.insert(id, server.clone());
                            added.push(server.clone());
                            server
                        }
                    }
                })
                .collect();
            let pool = Pool::new(settings, members, live);
            built.insert(pool_config.name.clone(), Arc::new(pool));
        }
        let mut removed = Vec::new();
        for (id, server) in servers.iter() {
            if !wanted.contains(id) && !server.is_removed() {
                server.remove();
                removed.push(server.clone());
            }
        }
        // A removed server is forgotten once nothing is open on it.
        servers.retain(|id, server| wanted.contains(id) || server.active() > 0);
        pools.retain(|name, _| config.pool(name).is_some());
        Reconciled {
            pools: built,
            added,
            removed,
            routes: RouteHandles::new(config, &self.metrics),
        }
    }

    /// Every server known, those draining after a reload removed them included.
    pub fn servers(&self) -> Vec<Arc<Server>> {
        lock(&self.servers).values().cloned().collect()
    }

    /// Forgets removed servers that have nothing open any more.
    pub fn prune(&self) {
        lock(&self.servers).retain(|_, server| !server.is_removed() || server.active() > 0);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Maps of Arcs: consistent after any panic.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::{AdminState, Health};

    fn config(text: &str) -> Config {
        crate::config::parse_str("test.toml", text).expect("valid config")
    }

    const TWO: &str = r#"
        [[listener]]
        name = "public"
        bind = "127.0.0.1:0"
        [[listener.route]]
        pool = "p"
        [pool.p]
        servers = ["127.0.0.1:1001", "127.0.0.1:1002"]
    "#;

    #[test]
    fn a_server_that_stays_keeps_its_state_and_one_that_leaves_drains() {
        let registry = Registry::default();
        let first = registry.reconcile(&config(TWO));
        assert_eq!(first.added.len(), 2);
        let kept = first.pools["p"].servers[1].clone();
        kept.record_check(false, 1, 1, "test");
        assert_eq!(kept.state().health, Health::Down);

        let second = registry.reconcile(&config(&TWO.replace(
            r#"["127.0.0.1:1001", "127.0.0.1:1002"]"#,
            r#"["127.0.0.1:1002", "127.0.0.1:1003"]"#,
        )));
        let pool = &second.pools["p"];
        assert!(Arc::ptr_eq(&pool.servers[0], &kept), "same live state");
        assert_eq!(pool.servers[0].state().health, Health::Down);
        assert_eq!(second.added.len(), 1);
        assert_eq!(second.removed.len(), 1);
        let gone = &second.removed[0];
        assert_eq!(gone.address.port(), 1001);
        assert_eq!(gone.state().admin, AdminState::Drain);
        // Nothing open on it: forgotten, so adding it back starts afresh.
        assert_eq!(registry.servers().len(), 2);
        let third = registry.reconcile(&config(TWO));
        assert_eq!(third.added.len(), 1);
        assert_eq!(third.pools["p"].servers[0].state().admin, AdminState::Ready);
    }
}
