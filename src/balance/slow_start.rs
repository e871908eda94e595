//! Slow start (`slow_start` of a pool): a server that has just become usable
//! (health up, back from drain or maintenance, added by a reload) takes a
//! share of new connections that grows linearly from nothing to its full
//! share over the window, whatever the algorithm. Each time the algorithm
//! would hand it a connection, it is admitted with probability
//! `elapsed / window` and otherwise passed over for this pick, so that
//! `least_conn` does not give every new websocket to the server with the
//! fewest (it just came back), and a server restarted during a reconnect
//! storm is not flooded. Sticky clients pinned to it are not passed over.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When a server became usable, if it is still ramping up.
#[derive(Debug, Default)]
pub struct SlowStart {
    /// Milliseconds since [`epoch`] plus one when the ramp began; 0: not ramping.
    since: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl SlowStart {
    /// The server became usable at `now`.
    pub fn begin(&self, now: Instant) {
        let ms = now.saturating_duration_since(epoch()).as_millis() as u64;
        self.since.store(ms + 1, Ordering::Relaxed);
    }

    /// The server's share of its full share at `now`, from 0 to 1.
    pub fn share(&self, now: Instant, window: Option<Duration>) -> f64 {
        let since = self.since.load(Ordering::Relaxed);
        let Some(window) = window.filter(|_| since != 0) else {
            return 1.0;
        };
        let began = epoch() + Duration::from_millis(since - 1);
        let elapsed = now.saturating_duration_since(began);
        if elapsed >= window {
            // Done: later picks skip the arithmetic.
            let _ = self
                .since
                .compare_exchange(since, 0, Ordering::Relaxed, Ordering::Relaxed);
            return 1.0;
        }
        elapsed.as_secs_f64() / window.as_secs_f64()
    }

    /// Whether this pick may go to the server; `draw` is uniform in [0, 1).
    pub fn admits(&self, now: Instant, window: Option<Duration>, draw: f64) -> bool {
        draw < self.share(now, window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_share_grows_linearly_over_the_window_then_stays_full() {
        let ramp = SlowStart::default();
        let window = Some(Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(ramp.share(t0, window), 1.0, "not ramping");
        ramp.begin(t0);
        let at = |s: u64| ramp.share(t0 + Duration::from_secs(s), window);
        assert!(at(0) < 0.01);
        assert!((at(5) - 0.5).abs() < 0.01, "{}", at(5));
        assert!(!ramp.admits(t0 + Duration::from_secs(2), window, 0.5));
        assert!(ramp.admits(t0 + Duration::from_secs(8), window, 0.5));
        // Instants are kept to the millisecond.
        let end = t0 + Duration::from_millis(10_002);
        assert_eq!(ramp.share(end, window), 1.0);
        assert_eq!(at(1), 1.0, "once done, it stays done");
        assert_eq!(SlowStart::default().share(t0, None), 1.0);
        ramp.begin(t0);
        assert_eq!(
            ramp.share(t0 + Duration::from_secs(100), None),
            1.0,
            "no slow_start"
        );
    }
}
