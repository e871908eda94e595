//! A server's state, as HAProxy keeps it: its health (what checks and
//! failures say) apart from its admin state (what the operator says), and
//! every change recorded with its cause.
//!
//! This is a pure state machine, with time passed in, so that it is tested
//! without sockets or clocks; [`super::Server`] wraps it in a mutex and
//! mirrors what the request path needs into atomics.

use std::collections::VecDeque;
use std::fmt;
use std::time::{Instant, SystemTime};

use crate::config::EjectionPolicy;

/// What checks and failures say of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Serving.
    Up,
    /// Still serving, but the last `n` checks failed (fewer than `fall`).
    Falling(u32),
    /// Not serving.
    Down,
    /// Not serving yet, but the last `n` checks passed (fewer than `rise`).
    Rising(u32),
}

impl Health {
    /// Whether the server may receive requests in this state.
    pub fn is_serving(self) -> bool {
        matches!(self, Health::Up | Health::Falling(_))
    }

    /// The state after one more check result, for thresholds `rise` and `fall`.
    pub fn after_check(self, passed: bool, rise: u32, fall: u32) -> Health {
        let rise = rise.max(1);
        let fall = fall.max(1);
        match (self, passed) {
            (Health::Up | Health::Falling(_), true) => Health::Up,
            (Health::Up, false) => Health::falling(1, fall),
            (Health::Falling(n), false) => Health::falling(n + 1, fall),
            (Health::Down | Health::Rising(_), false) => Health::Down,
            (Health::Down, true) => Health::rising(1, rise),
            (Health::Rising(n), true) => Health::rising(n + 1, rise),
        }
    }

    fn falling(failures: u32, fall: u32) -> Health {
        if failures >= fall {
            Health::Down
        } else {
            Health::Falling(failures)
        }
    }

    fn rising(successes: u32, rise: u32) -> Health {
        if successes >= rise {
            Health::Up
        } else {
            Health::Rising(successes)
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Health::Up => "up",
            Health::Falling(_) => "falling",
            Health::Down => "down",
            Health::Rising(_) => "rising",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Health::Falling(n) | Health::Rising(n) => write!(f, "{} ({n})", self.name()),
            _ => f.write_str(self.name()),
        }
    }
}

/// What the operator says of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminState {
    /// Takes new requests when healthy.
    Ready,
    /// No new requests or sessions; open ones finish, tunnels end by the drain timeout.
    Drain,
    /// As drain, and health checks stop.
    Maintenance,
}

impl AdminState {
    pub fn name(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maintenance => "maintenance",
        }
    }

    pub fn parse(s: &str) -> Option<AdminState> {
        match s {
            "ready" => Some(AdminState::Ready),
            "drain" => Some(AdminState::Drain),
            "maintenance" => Some(AdminState::Maintenance),
            _ => None,
        }
    }
}

impl fmt::Display for AdminState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a request's outcome says about the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A response, other than 502, 503 or 504.
    Success,
    /// The server could not be connected to.
    ConnectFailure,
    /// A gateway failure: 502, 503 or 504, a reset, no answer at all, or a
    /// malformed response.
    ServerError,
}

/// One recorded change of health or admin state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub at: SystemTime,
    pub what: String,
    pub cause: String,
}

/// How many changes a server keeps for the status page.
const HISTORY: usize = 16;

/// Everything that changes about one server, behind the server's mutex.
#[derive(Debug, Clone)]
pub struct ServerState {
    pub health: Health,
    pub admin: AdminState,
    /// Until when the server is ejected by passive health, if it is.
    pub ejected_until: Option<Instant>,
    /// How many times in a row it was ejected; the next ejection lasts longer.
    pub ejections: u32,
    consecutive_connect_failures: u32,
    consecutive_server_errors: u32,
    /// Most recent last.
    pub history: VecDeque<Change>,
}

impl Default for ServerState {
    fn default() -> Self {
        ServerState {
            health: Health::Up,
            admin: AdminState::Ready,
            ejected_until: None,
            ejections: 0,
            consecutive_connect_failures: 0,
            consecutive_server_errors: 0,
            history: VecDeque::new(),
        }
    }
}

impl ServerState {
    /// Whether new requests may go to the server at `now`.
    pub fn is_serving(&self, now: Instant) -> bool {
        self.admin == AdminState::Ready
            && self.health.is_serving()
            && self.ejected_until.is_none_or(|until| now >= until)
    }

    /// Applies an active check's result; returns the change if health changed state.
    pub fn record_check(
        &mut self,
        passed: bool,
        rise: u32,
        fall: u32,
        cause: &str,
    ) -> Option<Change> {
        let before = self.health;
        self.health = before.after_check(passed, rise, fall);
        let mut change = None;
        // A passing active check ends a passive ejection early.
        if passed && self.ejected_until.take().is_some() {
            change = Some(self.record("ejection ended".to_owned(), cause));
        }
        if self.health.name() != before.name() {
            let what = format!("health {} → {}", before.name(), self.health.name());
            change = Some(self.record(what, cause));
        }
        change
    }

    /// Applies a request's outcome; returns the change if it ejected the
    /// server. `may_eject` says whether the pool can spare it (its
    /// `max_percent`); if not, the failures keep counting, and the next one
    /// asks again.
    pub fn record_outcome(
        &mut self,
        outcome: Outcome,
        policy: &EjectionPolicy,
        now: Instant,
        cause: &str,
        may_eject: impl FnOnce() -> bool,
    ) -> Option<Change> {
        match outcome {
            Outcome::Success => {
                self.consecutive_connect_failures = 0;
                self.consecutive_server_errors = 0;
                // A server that served well for a whole `max_time` since its
                // last ejection starts again from the base time.
                if self
                    .ejected_until
                    .is_some_and(|until| now >= until + policy.max_time)
                {
                    self.ejected_until = None;
                    self.ejections = 0;
                }
                None
            }
            Outcome::ConnectFailure => {
                self.consecutive_connect_failures += 1;
                let limit = policy.connect_failures;
                (limit > 0 && self.consecutive_connect_failures >= limit && may_eject())
                    .then(|| self.eject(policy, now, cause))
            }
            Outcome::ServerError => {
                self.consecutive_server_errors += 1;
                let limit = policy.server_errors;
                (limit > 0 && self.consecutive_server_errors >= limit && may_eject())
                    .then(|| self.eject(policy, now, cause))
            }
        }
    }

    /// No failure streak and no ejection on record: a success changes nothing.
    pub fn passive_clean(&self) -> bool {
        self.consecutive_connect_failures == 0
            && self.consecutive_server_errors == 0
            && self.ejected_until.is_none()
    }

    fn eject(&mut self, policy: &EjectionPolicy, now: Instant, cause: &str) -> Change {
        let doublings = self.ejections.min(16);
        let time = policy
            .base_time
            .saturating_mul(1 << doublings)
            .min(policy.max_time);
        self.ejections += 1;
        self.ejected_until = Some(now + time);
        self.consecutive_connect_failures = 0;
        self.consecutive_server_errors = 0;
        self.record(format!("ejected for {time:?}"), cause)
    }

    /// Sets the admin state; returns the change if it changed.
    pub fn set_admin(&mut self, admin: AdminState, cause: &str) -> Option<Change> {
        let before = self.admin;
        self.admin = admin;
        (before != admin).then(|| self.record(format!("admin {before} → {admin}"), cause))
    }

    fn record(&mut self, what: String, cause: &str) -> Change {
        let change = Change {
            at: SystemTime::now(),
            what,
            cause: cause.to_owned(),
        };
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(change.clone());
        change
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::time::Duration;

    #[test]
    fn health_falls_after_fall_failures_and_rises_after_rise_passes() {
        let (rise, fall) = (2, 3);
        let mut h = Health::Up;
        for expected in [Health::Falling(1), Health::Falling(2), Health::Down] {
            h = h.after_check(false, rise, fall);
            assert_eq!(h, expected);
        }
        assert!(!h.is_serving());
        h = h.after_check(true, rise, fall);
        assert_eq!(h, Health::Rising(1));
        assert!(!h.is_serving());
        h = h.after_check(true, rise, fall);
        assert_eq!(h, Health::Up);
    }

    #[test]
    fn one_pass_resets_falling_and_one_failure_resets_rising() {
        assert_eq!(Health::Falling(2).after_check(true, 2, 3), Health::Up);
        assert_eq!(Health::Rising(1).after_check(false, 2, 3), Health::Down);
        assert_eq!(Health::Up.after_check(false, 1, 1), Health::Down);
        assert_eq!(Health::Down.after_check(true, 1, 1), Health::Up);
    }

    #[test]
    fn server_errors_eject_after_the_threshold_with_growing_backoff() {
        let policy = EjectionPolicy {
            connect_failures: 1,
            server_errors: 3,
            base_time: Duration::from_secs(1),
            max_time: Duration::from_secs(3),
            max_percent: 50,
        };
        let now = Instant::now();
        let mut s = ServerState::default();
        assert!(
            s.record_outcome(Outcome::ServerError, &policy, now, "500", || true)
                .is_none()
        );
        assert!(
            s.record_outcome(Outcome::ServerError, &policy, now, "500", || true)
                .is_none()
        );
        assert!(s.is_serving(now));
        assert!(
            s.record_outcome(Outcome::ServerError, &policy, now, "500", || true)
                .is_some()
        );
        assert!(!s.is_serving(now));
        assert!(s.is_serving(now + Duration::from_secs(1)));
        // Second ejection: 2s, third: capped at 3s.
        s.record_outcome(Outcome::ConnectFailure, &policy, now, "refused", || true);
        assert_eq!(s.ejected_until, Some(now + Duration::from_secs(2)));
        s.record_outcome(Outcome::ConnectFailure, &policy, now, "refused", || true);
        assert_eq!(s.ejected_until, Some(now + Duration::from_secs(3)));
    }

    #[test]
    fn a_success_between_errors_resets_the_count() {
        let policy = EjectionPolicy::default();
        let now = Instant::now();
        let mut s = ServerState::default();
        for _ in 0..10 {
            for _ in 0..policy.server_errors - 1 {
                s.record_outcome(Outcome::ServerError, &policy, now, "500", || true);
            }
            s.record_outcome(Outcome::Success, &policy, now, "200", || true);
        }
        assert!(s.is_serving(now));
        assert_eq!(s.ejections, 0);
    }

    #[test]
    fn a_pool_that_cannot_spare_the_server_keeps_it_until_it_can() {
        let policy = EjectionPolicy::default();
        let now = Instant::now();
        let mut s = ServerState::default();
        for _ in 0..3 {
            assert!(
                s.record_outcome(Outcome::ConnectFailure, &policy, now, "refused", || false)
                    .is_none()
            );
        }
        assert!(s.is_serving(now));
        assert!(
            s.record_outcome(Outcome::ConnectFailure, &policy, now, "refused", || true)
                .is_some()
        );
        assert!(!s.is_serving(now));
    }

    #[test]
    fn a_passing_check_ends_an_ejection() {
        let now = Instant::now();
        let mut s = ServerState::default();
        s.record_outcome(
            Outcome::ConnectFailure,
            &EjectionPolicy::default(),
            now,
            "refused",
            || true,
        );
        assert!(!s.is_serving(now));
        let change = s
            .record_check(true, 2, 3, "check passed")
            .expect("a change");
        assert_eq!(change.what, "ejection ended");
        assert!(s.is_serving(now));
    }

    #[test]
    fn admin_state_is_apart_from_health_and_changes_are_recorded() {
        let now = Instant::now();
        let mut s = ServerState::default();
        let change = s.set_admin(AdminState::Drain, "operator").expect("changed");
        assert_eq!(change.what, "admin ready → drain");
        assert_eq!(change.cause, "operator");
        assert!(!s.is_serving(now));
        assert_eq!(s.health, Health::Up);
        assert!(s.set_admin(AdminState::Drain, "again").is_none());
        s.set_admin(AdminState::Ready, "operator");
        assert!(s.is_serving(now));
        assert_eq!(s.history.len(), 2);
    }
}
