//! Balancing: which server of a pool gets the next request or tunnel.
//!
//! Each algorithm is a small pure state machine in its own file. It sees the
//! pool only through [`ServerView`]s (weight, current load, whether it may be
//! used), so the algorithms are tested without any sockets. Health, admin state
//! and limits decide `usable`; the algorithm only chooses among usable servers.

mod least_conn;
mod random_two;
mod rendezvous;
mod round_robin;
mod slow_start;

pub use least_conn::LeastConn;
pub use random_two::RandomTwo;
pub use rendezvous::{Rendezvous, stable_hash};
pub use round_robin::SmoothRoundRobin;
pub use slow_start::SlowStart;

use crate::config::BalanceConfig;

/// What an algorithm may know about one server at the moment of choosing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerView {
    pub weight: u32,
    /// Requests in flight plus open tunnels.
    pub load: usize,
    /// False when the server must not be chosen (down, draining, full).
    pub usable: bool,
}

/// A balancing algorithm. Implementations keep their own state behind
/// interior mutability, since one instance serves every connection of a pool.
pub trait Balancer: Send + Sync + std::fmt::Debug {
    /// Picks the index of a usable server among `count` servers, where
    /// `view(i)` describes server `i`; `None` when no server is usable.
    fn pick(&self, count: usize, view: &dyn Fn(usize) -> ServerView) -> Option<usize>;
}

/// Builds the algorithm a pool's config asks for, for `count` servers.
pub fn build(config: BalanceConfig, count: usize) -> Box<dyn Balancer> {
    match config {
        BalanceConfig::RoundRobin => Box::new(SmoothRoundRobin::new(count)),
        BalanceConfig::LeastConn => Box::new(LeastConn::new(count)),
        BalanceConfig::RandomTwo => Box::new(RandomTwo::new()),
    }
}
