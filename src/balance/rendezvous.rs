//! Consistent hashing by highest random weight (rendezvous hashing, Thaler
//! and Ravishankar 1998, in its weighted form).
//!
//! Each server scores each key from a hash of the key and the server's
//! address; the key goes to the usable server with the highest score. So a
//! key changes server only when its server leaves or cannot be used, or when
//! a new server outscores it: adding a server moves keys only to that server,
//! removing one moves only that server's keys, and every other key stays
//! where it was. Wharf promises exactly this across a reload (a Maglev table,
//! used before, also moved about 0.06% of keys between servers that stayed).
//! The scores depend only on the addresses and weights, not on the order of
//! the list, so every wharf with the same config sends a key to the same
//! server without sharing any state.
//!
//! A key whose server cannot be used goes to its next-highest score, which
//! spreads that server's keys over the others in proportion to their weights.
//!
//! A pick costs one hash per server of the pool (tens of nanoseconds for the
//! tens of servers a pool has).

#[derive(Debug)]
pub struct Rendezvous {
    /// Per server, in config order: the seed its scores are drawn from.
    seeds: Vec<u64>,
    /// Per server, in config order: its weight, when the weights differ.
    weights: Option<Vec<f64>>,
    /// Per server: its rank when the addresses are sorted, which breaks
    /// (astronomically rare) ties the same way whatever the list's order.
    ranks: Vec<usize>,
}

impl Rendezvous {
    /// The hashing of servers named by `names` (their addresses) with
    /// `weights`.
    pub fn new(names: &[String], weights: &[u32]) -> Rendezvous {
        let seeds = names
            .iter()
            .map(|name| stable_hash_salted(name.as_bytes(), 0x7265_6e64_657a))
            .collect();
        let weight = |i: usize| weights.get(i).copied().unwrap_or(1).max(1);
        let uniform = (0..names.len()).all(|i| weight(i) == weight(0));
        let weights = (!uniform).then(|| (0..names.len()).map(|i| f64::from(weight(i))).collect());
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|&a, &b| names[a].cmp(&names[b]));
        let mut ranks = vec![0; names.len()];
        for (rank, &i) in order.iter().enumerate() {
            ranks[i] = rank;
        }
        Rendezvous {
            seeds,
            weights,
            ranks,
        }
    }

    /// The server for `key_hash` among those `usable`; `None` when none is.
    pub fn pick(&self, key_hash: u64, usable: &dyn Fn(usize) -> bool) -> Option<usize> {
        let draw = |i: usize| mix(key_hash ^ self.seeds[i]);
        let candidates = (0..self.seeds.len()).filter(|&i| usable(i));
        match &self.weights {
            // Equal weights: the highest draw wins, no floating point needed.
            None => candidates.max_by_key(|&i| (draw(i), self.ranks[i])),
            // Weighted: score w / -ln(u) for the draw u in (0, 1), which gives
            // each server a share of the keys proportional to its weight.
            // 52 bits, so that adding 0.5 is exact and u never rounds to 1.
            Some(weights) => candidates
                .map(|i| {
                    let unit = ((draw(i) >> 12) as f64 + 0.5) / (1u64 << 52) as f64;
                    (weights[i] / -unit.ln(), self.ranks[i], i)
                })
                .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                .map(|(_, _, i)| i),
        }
    }
}

/// A hash that is the same in every process and every version of wharf
/// (unlike std's `DefaultHasher`): FNV-1a, then a 64-bit finalizer so that
/// similar keys spread over the whole range.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    stable_hash_salted(bytes, 0)
}

fn stable_hash_salted(bytes: &[u8], salt: u64) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ salt;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    mix(h)
}

/// MurmurHash3's fmix64.
fn mix(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("10.0.0.{}:8080", i + 1)).collect()
    }

    /// Per key, the address of its server.
    fn assignments<'a>(names: &'a [String], weights: &[u32], keys: usize) -> Vec<&'a str> {
        let hashing = Rendezvous::new(names, weights);
        (0..keys)
            .map(|k| {
                let index = hashing
                    .pick(stable_hash(format!("client-{k}").as_bytes()), &|_| true)
                    .unwrap();
                names[index].as_str()
            })
            .collect()
    }

    #[test]
    fn removing_a_server_moves_only_its_keys_and_about_one_nth() {
        let keys = 60_000;
        for n in [3usize, 5, 10] {
            for weights in [vec![1; n], (1..=n as u32).collect()] {
                let all = names(n);
                let before = assignments(&all, &weights, keys);
                let removed = n / 2;
                let (mut rest, mut rest_weights) = (all.clone(), weights.clone());
                rest.remove(removed);
                rest_weights.remove(removed);
                let after = assignments(&rest, &rest_weights, keys);
                let mut moved = 0;
                for (b, a) in before.iter().zip(&after) {
                    if b != a {
                        assert_eq!(*b, all[removed], "a key left a server that stayed");
                        moved += 1;
                    }
                }
                let share = moved as f64 / keys as f64;
                let ideal = f64::from(weights[removed]) / f64::from(weights.iter().sum::<u32>());
                assert!(
                    (share - ideal).abs() < 0.01,
                    "n={n}: {share:.3} moved, ideal {ideal:.3}"
                );
            }
        }
    }

    #[test]
    fn adding_a_server_moves_keys_only_to_it() {
        let all = names(5);
        for weights in [vec![1; 5], vec![1, 3, 1, 2, 4]] {
            let before = assignments(&all[..4], &weights[..4], 40_000);
            let after = assignments(&all, &weights, 40_000);
            let moved = before
                .iter()
                .zip(&after)
                .filter(|(b, a)| b != a)
                .inspect(|(_, a)| {
                    assert_eq!(**a, all[4], "a key moved between servers that stayed")
                })
                .count();
            let ideal = f64::from(weights[4]) / f64::from(weights.iter().sum::<u32>());
            assert!(
                (moved as f64 / 40_000.0 - ideal).abs() < 0.01,
                "{moved} moved"
            );
        }
    }

    #[test]
    fn weights_are_respected_within_two_percent() {
        let all = names(3);
        let mut counts = [0usize; 3];
        for name in assignments(&all, &[1, 2, 3], 60_000) {
            counts[all.iter().position(|n| n == name).unwrap()] += 1;
        }
        for (i, expected) in [10_000.0, 20_000.0, 30_000.0].iter().enumerate() {
            let off = (counts[i] as f64 - expected).abs() / 60_000.0;
            assert!(off < 0.02, "server {i}: {counts:?}");
        }
    }

    #[test]
    fn the_same_key_goes_to_the_same_server_in_any_process() {
        // Pinned values: a change of hash function would move every client.
        assert_eq!(stable_hash(b""), mix(0xcbf2_9ce4_8422_2325));
        assert_ne!(stable_hash(b"sid-1"), stable_hash(b"sid-2"));
        let hashing = Rendezvous::new(&names(4), &[1; 4]);
        let picks: Vec<usize> = (0..8)
            .map(|k| hashing.pick(stable_hash(&[k]), &|_| true).unwrap())
            .collect();
        assert_eq!(picks, [1, 1, 1, 3, 2, 1, 1, 0]);
    }

    #[test]
    fn unusable_server_keys_spread_and_others_stay() {
        for weights in [[1; 4], [2, 1, 3, 1]] {
            let hashing = Rendezvous::new(&names(4), &weights);
            let mut moved_to = [0usize; 4];
            for k in 0..20_000 {
                let key = stable_hash(format!("k{k}").as_bytes());
                let home = hashing.pick(key, &|_| true).unwrap();
                let now = hashing.pick(key, &|i| i != 2).unwrap();
                if home == 2 {
                    assert_ne!(now, 2);
                    moved_to[now] += 1;
                } else {
                    assert_eq!(now, home, "a key not on the down server moved");
                }
            }
            assert!(
                moved_to.iter().enumerate().all(|(i, &c)| i == 2 || c > 500),
                "{moved_to:?}"
            );
            assert_eq!(hashing.pick(1, &|_| false), None);
        }
    }

    #[test]
    fn the_order_of_the_list_moves_no_key() {
        let names: Vec<String> = (1..=5).map(|i| format!("10.0.0.{i}:80")).collect();
        let weights = [1, 2, 1, 3, 1];
        let reversed_names: Vec<String> = names.iter().rev().cloned().collect();
        let reversed_weights: Vec<u32> = weights.iter().rev().copied().collect();
        let forward = assignments(&names, &weights, 10_000);
        let reversed = assignments(&reversed_names, &reversed_weights, 10_000);
        assert_eq!(forward, reversed);
    }

    /// fmix64 run backwards (each step is a bijection).
    fn unmix(mut h: u64) -> u64 {
        let inverse = |c: u64| {
            let mut x = c;
            for _ in 0..6 {
                x = x.wrapping_mul(2u64.wrapping_sub(c.wrapping_mul(x)));
            }
            x
        };
        h ^= h >> 33;
        h = h.wrapping_mul(inverse(0xc4ce_b9fe_1a85_ec53));
        h ^= h >> 33;
        h = h.wrapping_mul(inverse(0xff51_afd7_ed55_8ccd));
        h ^= h >> 33;
        h
    }

    /// The highest possible draw wins, weighted or not (it once rounded to
    /// u = 1.0, a score of -inf: a certain loss).
    #[test]
    fn the_highest_draw_wins_with_any_weights() {
        let names = names(2);
        let hashing = Rendezvous::new(&names, &[1000, 1]);
        let key = unmix(u64::MAX) ^ hashing.seeds[0];
        assert_eq!(mix(key ^ hashing.seeds[0]), u64::MAX);
        assert_eq!(
            Rendezvous::new(&names, &[1, 1]).pick(key, &|_| true),
            Some(0)
        );
        assert_eq!(hashing.pick(key, &|_| true), Some(0));
    }
}
