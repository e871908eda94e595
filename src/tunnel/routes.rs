//! Websocket counters per route, kept in the live-state registry and known
//! by the route's identity (listener name, host, path prefix), so that they
//! survive reloads that keep the route, wherever it moves in the file.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::stats::WsStats;
use crate::config::{HostMatch, RouteConfig};

/// A route's identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RouteId {
    pub listener: String,
    /// `app.example.com` or `*.example.com`; empty for any host.
    pub host: String,
    /// Empty for any path.
    pub path_prefix: String,
}

/// The counters of every route that has carried a websocket.
#[derive(Debug, Default)]
pub struct RouteStats {
    by_route: Mutex<HashMap<RouteId, Arc<WsStats>>>,
}

impl RouteStats {
    /// The counters of `route` on the listener `listener`.
    pub fn of(&self, listener: &str, route: &RouteConfig) -> Arc<WsStats> {
        let host = match &route.host {
            None => String::new(),
            Some(HostMatch::Exact(name)) => name.clone(),
            Some(HostMatch::Suffix(suffix)) => format!("*{suffix}"),
        };
        let id = RouteId {
            listener: listener.to_owned(),
            host,
            path_prefix: route.path_prefix.clone().unwrap_or_default(),
        };
        let mut map = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(id).or_default().clone()
    }

    /// Every route's counters, for metrics.
    pub fn all(&self) -> Vec<(RouteId, Arc<WsStats>)> {
        let map = self.by_route.lock().unwrap_or_else(|e| e.into_inner());
        map.iter().map(|(id, s)| (id.clone(), s.clone())).collect()
    }
}
