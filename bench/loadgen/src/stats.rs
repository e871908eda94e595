//! Latency samples and the proxy's memory as /proc reports it.

use std::time::Duration;

/// Latency samples in microseconds, capped so that a long run cannot grow
/// without bound (beyond the cap, samples are dropped, not the run).
pub struct Latencies {
    micros: Vec<u32>,
    cap: usize,
}

impl Latencies {
    pub fn new(cap: usize) -> Self {
        Self {
            micros: Vec::with_capacity(cap.min(1 << 16)),
            cap,
        }
    }

    pub fn record(&mut self, latency: Duration) {
        if self.micros.len() < self.cap {
            self.micros
                .push(u32::try_from(latency.as_micros()).unwrap_or(u32::MAX));
        }
    }

    pub fn merge(&mut self, other: Latencies) {
        let room = self.cap.saturating_sub(self.micros.len());
        self.micros.extend(other.micros.into_iter().take(room));
    }

    /// The `q` quantile (0..=1) in milliseconds, or 0 without samples.
    pub fn quantile_ms(&mut self, q: f64) -> f64 {
        if self.micros.is_empty() {
            return 0.0;
        }
        self.micros.sort_unstable();
        let rank = ((self.micros.len() as f64) * q).ceil() as usize;
        let index = rank.clamp(1, self.micros.len()) - 1;
        f64::from(self.micros[index]) / 1000.0
    }
}

/// Resident memory of the processes together, in KiB (VmRSS of each).
pub fn rss_kib(pids: &[u32]) -> anyhow::Result<u64> {
    let mut total = 0;
    for pid in pids {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .ok_or_else(|| anyhow::anyhow!("no VmRSS for process {pid}"))?;
        let kib: u64 = line
            .split_whitespace()
            .nth(1)
            .ok_or_else(|| anyhow::anyhow!("malformed VmRSS for process {pid}"))?
            .parse()?;
        total += kib;
    }
    Ok(total)
}
