//! WebSocket counters, one set per route and one per server, shared by the
//! tunnels that pass through them: messages and bytes each way, open
//! websockets, and how websockets ended (who sent the first close frame, and
//! its code). Plain relaxed atomics; a tunnel adds to them once per read, not
//! per frame, so a busy websocket does not contend on them.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Which way a websocket's bytes go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    ClientToServer,
    ServerToClient,
}

/// Who ended a websocket: the sender of the first close frame, or whoever
/// hung up (code 1006) when there was none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Client,
    Server,
    Wharf,
}

/// The close codes counted apart; anything else is counted as "other".
pub const CODES: [u16; 9] = [1000, 1001, 1002, 1003, 1005, 1006, 1008, 1009, 1011];
const BUCKETS: usize = CODES.len() + 1;

/// Counters of one route or one server.
#[derive(Debug, Default)]
pub struct WsStats {
    messages: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    open: AtomicI64,
    closes: [[AtomicU64; BUCKETS]; 3],
}

impl WsStats {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Whole messages (last fragment seen) that went this way.
    pub fn messages(&self, direction: Direction) -> u64 {
        self.messages[direction as usize].load(Ordering::Relaxed)
    }

    /// Bytes on the wire (headers included) that went this way.
    pub fn bytes(&self, direction: Direction) -> u64 {
        self.bytes[direction as usize].load(Ordering::Relaxed)
    }

    /// Websockets open now.
    pub fn open(&self) -> i64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Websockets ended by `side` with `code` (a code not in [`CODES`]:
    /// all such codes together).
    pub fn closes(&self, side: Side, code: u16) -> u64 {
        self.closes[side as usize][bucket(code)].load(Ordering::Relaxed)
    }

    /// Every (side, code) with a count, for metrics; "other" codes as 0.
    pub fn close_counts(&self) -> Vec<(Side, u16, u64)> {
        let mut counts = Vec::new();
        for side in [Side::Client, Side::Server, Side::Wharf] {
            for (i, bucket) in self.closes[side as usize].iter().enumerate() {
                let n = bucket.load(Ordering::Relaxed);
                if n > 0 {
                    counts.push((side, CODES.get(i).copied().unwrap_or(0), n));
                }
            }
        }
        counts
    }

    fn add(&self, direction: Direction, messages: u64, bytes: u64) {
        let i = direction as usize;
        if messages > 0 {
            self.messages[i].fetch_add(messages, Ordering::Relaxed);
        }
        if bytes > 0 {
            self.bytes[i].fetch_add(bytes, Ordering::Relaxed);
        }
    }
}

fn bucket(code: u16) -> usize {
    CODES.iter().position(|&c| c == code).unwrap_or(CODES.len())
}

/// One websocket's view of the counters it adds to: counted open while it
/// lives, and its end counted once.
#[derive(Debug)]
pub struct Meter {
    sinks: Vec<Arc<WsStats>>,
    ended: bool,
}

impl Meter {
    pub fn open(sinks: Vec<Arc<WsStats>>) -> Self {
        for sink in &sinks {
            sink.open.fetch_add(1, Ordering::Relaxed);
        }
        Meter {
            sinks,
            ended: false,
        }
    }

    pub fn add(&self, direction: Direction, messages: u64, bytes: u64) {
        if messages == 0 && bytes == 0 {
            return;
        }
        for sink in &self.sinks {
            sink.add(direction, messages, bytes);
        }
    }

    /// Counts how the websocket ended; only the first call counts.
    pub fn ended(&mut self, side: Side, code: u16) {
        if std::mem::replace(&mut self.ended, true) {
            return;
        }
        for sink in &self.sinks {
            sink.closes[side as usize][bucket(code)].fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn has_ended(&self) -> bool {
        self.ended
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        for sink in &self.sinks {
            sink.open.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_meter_counts_open_and_one_end() {
        let (route, server) = (WsStats::new(), WsStats::new());
        let mut meter = Meter::open(vec![route.clone(), server.clone()]);
        assert_eq!((route.open(), server.open()), (1, 1));
        meter.add(Direction::ClientToServer, 3, 120);
        meter.ended(Side::Wharf, 1001);
        meter.ended(Side::Client, 1000);
        drop(meter);
        assert_eq!(route.open(), 0);
        assert_eq!(server.messages(Direction::ClientToServer), 3);
        assert_eq!(server.bytes(Direction::ClientToServer), 120);
        assert_eq!(route.closes(Side::Wharf, 1001), 1);
        assert_eq!(route.closes(Side::Client, 1000), 0);
        assert_eq!(route.close_counts(), vec![(Side::Wharf, 1001, 1)]);
        let mut other = Meter::open(vec![route.clone()]);
        other.ended(Side::Server, 4000);
        assert_eq!(
            route.closes(Side::Server, 4999),
            1,
            "other codes share a bucket"
        );
    }
}
