//! Learned sessions: which server owns a session key, bounded in size, each
//! entry forgotten after `expiry` without being seen.
//!
//! Eviction is first-in, first-out with a second chance: an entry seen since
//! it was queued goes to the back instead of out, so active sessions stay and
//! abandoned ones leave in insertion order, at O(1) per operation.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug)]
struct Entry<S> {
    server: S,
    last_seen: Instant,
}

#[derive(Debug)]
struct Table<S> {
    entries: HashMap<String, Entry<S>>,
    /// Keys in queue order with the time they were queued.
    order: VecDeque<(String, Instant)>,
}

/// Session keys and the server (`S`: its address) that owns each.
#[derive(Debug)]
pub struct LearnedSessions<S = std::net::SocketAddr> {
    capacity: usize,
    expiry: Duration,
    table: Mutex<Table<S>>,
}

/// Session keys longer than this are not remembered (a hostile server or
/// client must not make wharf store large strings).
const MAX_KEY_LEN: usize = 256;

impl<S: Copy + PartialEq> LearnedSessions<S> {
    pub fn new(capacity: usize, expiry: Duration) -> Self {
        LearnedSessions {
            capacity: capacity.max(1),
            expiry,
            table: Mutex::new(Table {
                entries: HashMap::new(),
                order: VecDeque::new(),
            }),
        }
    }

    /// Remembers that `key` belongs to `server`.
    pub fn insert(&self, key: String, server: S, now: Instant) {
        if key.is_empty() || key.len() > MAX_KEY_LEN {
            return;
        }
        let mut table = self.lock();
        self.evict(&mut table, now);
        if table.entries.len() >= self.capacity {
            // Full of live sessions: the oldest not seen since it was queued
            // goes; seen ones get a second chance at the back.
            for _ in 0..=table.order.len() {
                let Some((key, queued)) = table.order.pop_front() else {
                    break;
                };
                match table.entries.get(&key) {
                    Some(entry) if entry.last_seen > queued => {
                        let seen = entry.last_seen;
                        table.order.push_back((key, seen));
                    }
                    _ => {
                        table.entries.remove(&key);
                        break;
                    }
                }
            }
        }
        let previous = table.entries.insert(
            key.clone(),
            Entry {
                server,
                last_seen: now,
            },
        );
        if previous.is_none() {
            table.order.push_back((key, now));
        }
    }

    /// The server owning `key`, if known and not expired; marks it seen.
    pub fn get(&self, key: &str, now: Instant) -> Option<S> {
        let mut table = self.lock();
        let entry = table.entries.get_mut(key)?;
        if now.duration_since(entry.last_seen) >= self.expiry {
            return None;
        }
        entry.last_seen = now;
        Some(entry.server)
    }

    /// Forgets every session of `server`.
    pub fn forget_server(&self, server: S) {
        let mut table = self.lock();
        table.entries.retain(|_, e| e.server != server);
        let Table { entries, order } = &mut *table;
        order.retain(|(key, _)| entries.contains_key(key));
    }

    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops expired entries from the front, giving seen ones a second chance.
    fn evict(&self, table: &mut Table<S>, now: Instant) {
        // Bounded work per call: at most the queue's length.
        for _ in 0..table.order.len() {
            let Some((key, queued)) = table.order.front().cloned() else {
                return;
            };
            if now.duration_since(queued) < self.expiry {
                return;
            }
            table.order.pop_front();
            match table.entries.get(&key) {
                Some(entry) if now.duration_since(entry.last_seen) < self.expiry => {
                    let seen = entry.last_seen;
                    table.order.push_back((key, seen));
                }
                _ => {
                    table.entries.remove(&key);
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table<S>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_and_expires() {
        let t0 = Instant::now();
        let sessions = LearnedSessions::<usize>::new(10, Duration::from_secs(60));
        sessions.insert("a".into(), 2, t0);
        assert_eq!(sessions.get("a", t0 + Duration::from_secs(30)), Some(2));
        // Seen at 30s: alive until 90s.
        assert_eq!(sessions.get("a", t0 + Duration::from_secs(80)), Some(2));
        assert_eq!(sessions.get("a", t0 + Duration::from_secs(200)), None);
        assert_eq!(sessions.get("missing", t0), None);
    }

    #[test]
    fn bounded_by_capacity_oldest_first() {
        let t0 = Instant::now();
        let sessions = LearnedSessions::<usize>::new(3, Duration::from_secs(60));
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            sessions.insert((*key).into(), i, t0);
        }
        assert_eq!(sessions.len(), 3);
        assert_eq!(sessions.get("a", t0), None);
        assert_eq!(sessions.get("d", t0), Some(3));
    }

    #[test]
    fn a_full_table_evicts_an_unseen_session_before_a_busy_one() {
        let t0 = Instant::now();
        let sessions = LearnedSessions::<usize>::new(3, Duration::from_secs(600));
        sessions.insert("busy".into(), 0, t0);
        sessions.insert("idle-1".into(), 1, t0);
        sessions.insert("idle-2".into(), 2, t0);
        assert_eq!(sessions.get("busy", t0 + Duration::from_secs(1)), Some(0));
        sessions.insert("new".into(), 1, t0 + Duration::from_secs(2));
        assert_eq!(
            sessions.get("busy", t0 + Duration::from_secs(2)),
            Some(0),
            "the busy session was evicted"
        );
        assert_eq!(sessions.get("idle-1", t0 + Duration::from_secs(2)), None);
        assert_eq!(sessions.len(), 3);
    }

    #[test]
    fn expired_entries_leave_and_seen_ones_stay() {
        let t0 = Instant::now();
        let sessions = LearnedSessions::<usize>::new(100, Duration::from_secs(10));
        sessions.insert("old".into(), 0, t0);
        sessions.insert("busy".into(), 1, t0);
        assert_eq!(sessions.get("busy", t0 + Duration::from_secs(8)), Some(1));
        sessions.insert("new".into(), 2, t0 + Duration::from_secs(12));
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions.get("busy", t0 + Duration::from_secs(12)), Some(1));
    }

    #[test]
    fn forget_server_and_hostile_keys() {
        let t0 = Instant::now();
        let sessions = LearnedSessions::<usize>::new(10, Duration::from_secs(60));
        sessions.insert("a".into(), 0, t0);
        sessions.insert("b".into(), 1, t0);
        sessions.forget_server(0);
        assert_eq!(sessions.get("a", t0), None);
        assert_eq!(sessions.get("b", t0), Some(1));
        sessions.insert("x".repeat(10_000), 1, t0);
        sessions.insert(String::new(), 1, t0);
        assert_eq!(sessions.len(), 1);
    }
}
