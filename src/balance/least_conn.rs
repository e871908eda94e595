//! Weighted least connections.
//!
//! Owns the `least_conn` balance mode: the usable server with the smallest
//! `(load + 1) / weight` wins, i.e. the one whose share of in-flight requests
//! and tunnels would stay lowest after taking this one. The `+ 1` makes weight
//! count even when every server is idle (weight 3 at load 0 beats weight 1 at
//! load 0). Ratios are compared by cross-multiplying in `u128`, so there are
//! no floats and no overflow. Ties go to the first server at or after a start
//! position that moves on each pick, so equally loaded servers share the work
//! instead of the first one taking every tie.
//!
//! A weight of 0 (which the config forbids) counts as 1.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, ServerView};

/// Weighted least connections over the usable servers of a pool.
#[derive(Debug, Default)]
pub struct LeastConn {
    /// Where the next scan starts, modulo the server count.
    next_start: AtomicUsize,
}

impl LeastConn {
    /// A balancer for a pool; it keeps no per-server state, so `count` is
    /// accepted for symmetry with the other algorithms and any count works.
    pub fn new(_count: usize) -> Self {
        LeastConn::default()
    }
}

/// `(load + 1) / weight` as a fraction `(numerator, denominator)`.
fn cost(server: &ServerView) -> (u128, u128) {
    (server.load as u128 + 1, u128::from(server.weight.max(1)))
}

impl Balancer for LeastConn {
    fn pick(&self, count: usize, view: &dyn Fn(usize) -> ServerView) -> Option<usize> {
        if count == 0 {
            return None;
        }
        let start = self.next_start.fetch_add(1, Ordering::Relaxed) % count;
        let mut best: Option<(usize, (u128, u128))> = None;
        for i in (start..count).chain(0..start) {
            let server = view(i);
            if !server.usable {
                continue;
            }
            let (n, d) = cost(&server);
            // n/d < bn/bd  <=>  n*bd < bn*d; both products fit in u128.
            if best.is_none_or(|(_, (bn, bd))| n * bd < bn * d) {
                best = Some((i, (n, d)));
            }
        }
        best.map(|(i, _)| i)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    fn pick(lc: &LeastConn, weights: &[u32], loads: &[usize], usable: &[bool]) -> Option<usize> {
        lc.pick(weights.len(), &|i| ServerView {
            weight: weights[i],
            load: loads[i],
            usable: usable[i],
        })
    }

    /// Runs `picks` requests against servers of these weights: each pick adds
    /// one to the chosen server's load, and once `in_flight` requests are open
    /// the oldest one completes before the next pick (every request lasts the
    /// same time). Returns the picks per server.
    fn simulate(weights: &[u32], usable: &[bool], in_flight: usize, picks: usize) -> Vec<usize> {
        let lc = LeastConn::new(weights.len());
        let mut loads = vec![0; weights.len()];
        let mut open = VecDeque::new();
        let mut counts = vec![0; weights.len()];
        for _ in 0..picks {
            if open.len() == in_flight {
                let done: usize = open.pop_front().unwrap();
                loads[done] -= 1;
            }
            let i = pick(&lc, weights, &loads, usable).expect("a usable server");
            loads[i] += 1;
            counts[i] += 1;
            open.push_back(i);
        }
        counts
    }

    #[test]
    fn prefers_the_least_loaded_server() {
        let lc = LeastConn::new(3);
        for _ in 0..10 {
            assert_eq!(pick(&lc, &[1, 1, 1], &[5, 2, 7], &[true; 3]), Some(1));
        }
    }

    #[test]
    fn load_is_weighed_against_weight() {
        let lc = LeastConn::new(2);
        // (1+1)/1 = 2 against (3+1)/3 = 1.33: the heavier, busier server wins.
        assert_eq!(pick(&lc, &[1, 3], &[1, 3], &[true; 2]), Some(1));
        // (1+1)/1 = 2 against (8+1)/3 = 3: the lighter, less busy one wins.
        assert_eq!(pick(&lc, &[1, 3], &[1, 8], &[true; 2]), Some(0));
        // Idle: weight 3 beats weight 1 thanks to the +1.
        for _ in 0..10 {
            assert_eq!(pick(&lc, &[1, 3], &[0, 0], &[true; 2]), Some(1));
        }
    }

    #[test]
    fn ties_rotate_so_equal_servers_share_the_picks() {
        let lc = LeastConn::new(3);
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[pick(&lc, &[2, 2, 2], &[4, 4, 4], &[true; 3]).unwrap()] += 1;
        }
        assert_eq!(counts, [100; 3]);
        // A tie between two of three (the third is busier) is shared too,
        // though not evenly: a scan starting at the busy server reaches
        // server 2 first. Real loads change with every pick, so such a tie
        // does not last.
        let mut counts = [0; 3];
        for _ in 0..300 {
            counts[pick(&lc, &[1, 1, 1], &[3, 9, 3], &[true; 3]).unwrap()] += 1;
        }
        assert_eq!(counts, [100, 0, 200]);
    }

    #[test]
    fn simulated_load_stays_proportional_to_weights_within_one_percent() {
        // 60 open requests settle at 10/20/30, so picks follow the weights.
        let counts = simulate(&[1, 2, 3], &[true; 3], 60, 60_000);
        for (got, want) in counts.iter().zip([10_000, 20_000, 30_000]) {
            assert!(got.abs_diff(want) <= want / 100, "{counts:?}");
        }
        // Open requests come in whole numbers: 601 settle at 100/200/301,
        // still within 1% (7 would settle at 1/2/4, which is as near to the
        // weights as 7 requests can get).
        let counts = simulate(&[1, 2, 3], &[true; 3], 601, 60_000);
        for (got, want) in counts.iter().zip([10_000, 20_000, 30_000]) {
            assert!(got.abs_diff(want) <= want / 100, "{counts:?}");
        }
        assert_eq!(
            simulate(&[1, 2, 3], &[true; 3], 7, 7_000),
            [1_000, 2_000, 4_000]
        );
    }

    #[test]
    fn unusable_servers_are_never_picked() {
        let counts = simulate(&[1, 2, 3], &[true, true, false], 30, 30_000);
        assert_eq!(counts[2], 0);
        assert!(counts[0].abs_diff(10_000) <= 100, "{counts:?}");
        // Even when the unusable one is by far the least loaded.
        let lc = LeastConn::new(3);
        assert_eq!(
            pick(&lc, &[1, 1, 9], &[5, 6, 0], &[true, true, false]),
            Some(0)
        );
    }

    #[test]
    fn no_usable_server_gives_none() {
        let lc = LeastConn::new(3);
        assert_eq!(pick(&lc, &[1, 1, 1], &[0, 0, 0], &[false; 3]), None);
        assert_eq!(pick(&lc, &[], &[], &[]), None);
    }

    #[test]
    fn extreme_loads_and_weights_do_not_panic() {
        let lc = LeastConn::new(3);
        let weights = [u32::MAX, 0, u32::MAX];
        let loads = [usize::MAX, usize::MAX, usize::MAX - 1];
        assert_eq!(pick(&lc, &weights, &loads, &[true; 3]), Some(2));
        assert_eq!(
            pick(&lc, &weights, &[0, 0, usize::MAX], &[true; 3]),
            Some(0)
        );
    }
}
