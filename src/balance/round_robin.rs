//! Smooth weighted round robin, as nginx does it.
//!
//! Owns the per-server "current weight" of the `round_robin` balance mode. On
//! every pick each usable server's current weight grows by its weight, the
//! largest wins (the first on a tie) and loses the total of the usable weights.
//! The result is exact over a cycle (weights 1,2,3 give 1/6, 2/6, 3/6 of the
//! picks) and spread out within it (5,1,1 gives `a a b a c a a`, not
//! `a a a a a b c`), so a heavy server never gets a burst of requests.
//!
//! Unusable servers are skipped and keep their current weight. A weight of 0
//! (which the config forbids) counts as 1, so a usable server is always
//! choosable and no arithmetic can divide by zero or overflow.

use std::sync::Mutex;

use super::{Balancer, ServerView};

/// Smooth weighted round robin over the usable servers of a pool.
#[derive(Debug)]
pub struct SmoothRoundRobin {
    /// Current weight per server, indexed like the pool's servers.
    current: Mutex<Vec<i64>>,
}

impl SmoothRoundRobin {
    /// A balancer for `count` servers; a later `pick` with another count
    /// resizes the state (new servers start at 0).
    pub fn new(count: usize) -> Self {
        SmoothRoundRobin {
            current: Mutex::new(vec![0; count]),
        }
    }
}

impl Balancer for SmoothRoundRobin {
    fn pick(&self, count: usize, view: &dyn Fn(usize) -> ServerView) -> Option<usize> {
        // The state is a few integers that every step leaves consistent, so a
        // panic elsewhere while holding the lock cannot have corrupted it.
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        current.resize(count, 0);
        let mut total: i64 = 0;
        // Index and current weight of the leader so far.
        let mut best: Option<(usize, i64)> = None;
        for (i, cw) in current.iter_mut().enumerate() {
            let server = view(i);
            if !server.usable {
                continue;
            }
            let weight = i64::from(server.weight.max(1));
            *cw = cw.saturating_add(weight);
            total = total.saturating_add(weight);
            if best.is_none_or(|(_, leader)| *cw > leader) {
                best = Some((i, *cw));
            }
        }
        let (best, _) = best?;
        current[best] = current[best].saturating_sub(total);
        Some(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Picks `n` times from servers of these weights (load 0) and returns how
    /// many times each was chosen; `usable[i] == false` hides server `i`.
    fn counts(rr: &SmoothRoundRobin, weights: &[u32], usable: &[bool], n: usize) -> Vec<usize> {
        let view = |i: usize| ServerView {
            weight: weights[i],
            load: 0,
            usable: usable[i],
        };
        let mut counts = vec![0; weights.len()];
        for _ in 0..n {
            counts[rr.pick(weights.len(), &view).expect("a usable server")] += 1;
        }
        counts
    }

    #[test]
    fn weights_5_1_1_give_the_nginx_sequence() {
        let rr = SmoothRoundRobin::new(3);
        let weights = [5, 1, 1];
        let view = |i: usize| ServerView {
            weight: weights[i],
            load: 0,
            usable: true,
        };
        let names: String = (0..14)
            .map(|_| ["a", "b", "c"][rr.pick(3, &view).unwrap()])
            .collect();
        assert_eq!(names, "aabacaaaabacaa");
    }

    #[test]
    fn distribution_is_exact_for_weights_1_2_3() {
        let rr = SmoothRoundRobin::new(3);
        let counts = counts(&rr, &[1, 2, 3], &[true; 3], 60_000);
        assert_eq!(counts, [10_000, 20_000, 30_000]);
    }

    #[test]
    fn unusable_servers_are_never_picked_and_the_rest_keep_their_ratio() {
        let rr = SmoothRoundRobin::new(3);
        let counts = counts(&rr, &[1, 2, 3], &[true, false, true], 4_000);
        assert_eq!(counts, [1_000, 0, 3_000]);
    }

    #[test]
    fn a_returning_server_gets_its_share_again() {
        let rr = SmoothRoundRobin::new(3);
        counts(&rr, &[1, 2, 3], &[true, false, true], 1_001);
        let counts = counts(&rr, &[1, 2, 3], &[true; 3], 60_000);
        // Its frozen current weight shifts the cycle by at most one pick.
        for (got, want) in counts.iter().zip([10_000, 20_000, 30_000]) {
            assert!(got.abs_diff(want) <= 1, "{counts:?}");
        }
    }

    #[test]
    fn no_usable_server_gives_none() {
        let rr = SmoothRoundRobin::new(3);
        let view = |_| ServerView {
            weight: 1,
            load: 0,
            usable: false,
        };
        assert_eq!(rr.pick(3, &view), None);
        assert_eq!(rr.pick(0, &view), None);
        assert_eq!(SmoothRoundRobin::new(0).pick(0, &view), None);
    }

    #[test]
    fn count_may_grow_and_shrink() {
        let rr = SmoothRoundRobin::new(1);
        assert_eq!(counts(&rr, &[1, 1, 1], &[true; 3], 300), [100; 3]);
        assert_eq!(counts(&rr, &[1], &[true], 10), [10]);
    }

    #[test]
    fn huge_and_zero_weights_do_not_panic() {
        let rr = SmoothRoundRobin::new(3);
        let huge = counts(&rr, &[u32::MAX, u32::MAX, 0], &[true; 3], 10_000);
        assert_eq!(huge.iter().sum::<usize>(), 10_000);
        assert!(huge[0] > 4_000 && huge[1] > 4_000, "{huge:?}");
        // Weight 0 counts as 1: chosen, but rarely.
        let rr = SmoothRoundRobin::new(2);
        assert_eq!(counts(&rr, &[0, 3], &[true; 2], 400), [100, 300]);
    }
}
