//! A server's open tunnels, found from its live state: each tunnel registers
//! its [`TunnelControl`] while it runs, so that a drain, a reload that
//! removes the server, or a shutdown can close them gently, one at a time at
//! moments spread evenly over a window (so that their clients reconnect a few
//! at a time, not all in the same second). Also the server's websocket
//! counters.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use super::control::TunnelControl;
use super::stats::WsStats;

#[derive(Debug, Default)]
pub struct OpenTunnels {
    inner: Mutex<Inner>,
    stats: Arc<WsStats>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Arc<TunnelControl>>,
    /// Tunnels are being closed: one that opens now is closed at once.
    closing: bool,
    /// Bumped by every new spread and by a cancel: an older spread stops.
    generation: u64,
    /// The drain deadline passed: a tunnel that opens now is cut at once.
    drained: bool,
    /// Bumped when the server is back in service: a pending cut stops.
    cut_generation: u64,
}

/// Keeps a tunnel registered while it lives.
#[derive(Debug)]
pub struct Registration {
    tunnels: Arc<OpenTunnels>,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.tunnels.lock().open.remove(&self.id);
    }
}

impl OpenTunnels {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The websocket counters of this server.
    pub fn stats(&self) -> Arc<WsStats> {
        self.stats.clone()
    }

    /// Tunnels open now.
    pub fn count(&self) -> usize {
        self.lock().open.len()
    }

    /// Registers a tunnel until the returned guard is dropped. A tunnel that
    /// opens while the server's tunnels are being closed is closed at once.
    pub fn register(self: &Arc<Self>, control: Arc<TunnelControl>) -> Registration {
        let mut inner = self.lock();
        let id = inner.next_id;
        inner.next_id += 1;
        if inner.drained {
            control.cut_drained();
        } else if inner.closing {
            control.close_gently();
        }
        inner.open.insert(id, control);
        Registration {
            tunnels: self.clone(),
            id,
        }
    }

    /// Closes every open tunnel gently, each at a moment spread evenly over
    /// `window` from now (zero: all at once). A spread already under way
    /// stops; those it had not reached are in this one.
    pub fn close_spread(self: &Arc<Self>, window: Duration) {
        let (controls, generation) = {
            let mut inner = self.lock();
            inner.closing = true;
            inner.generation += 1;
            let controls: Vec<_> = inner.open.values().cloned().collect();
            (controls, inner.generation)
        };
        if controls.is_empty() {
            return;
        }
        if window.is_zero() {
            controls.iter().for_each(|c| c.close_gently());
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            controls.iter().for_each(|c| c.close_gently());
            return;
        };
        let this = self.clone();
        runtime.spawn(async move {
            let start = Instant::now();
            let n = controls.len() as f64;
            for (i, control) in controls.into_iter().enumerate() {
                // The middles of n equal slices of the window.
                tokio::time::sleep_until(start + window.mul_f64((i as f64 + 0.5) / n)).await;
                if this.lock().generation != generation {
                    return;
                }
                control.close_gently();
            }
        });
    }

    /// Cuts every tunnel still open at `deadline` (the server's drain
    /// timeout), and any that opens after it. Held by one timer task per
    /// deadline rather than by each tunnel: an idle tunnel stays small.
    pub fn cut_at(self: &Arc<Self>, deadline: Instant) {
        let generation = self.lock().cut_generation;
        let this = self.clone();
        let cut = async move {
            tokio::time::sleep_until(deadline).await;
            let controls: Vec<_> = {
                let mut inner = this.lock();
                if inner.cut_generation != generation {
                    return;
                }
                inner.drained = true;
                inner.open.values().cloned().collect()
            };
            controls.iter().for_each(|c| c.cut_drained());
        };
        // No runtime (a test of the registry alone): nothing runs tunnels either.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(cut);
        }
    }

    /// The server is back in service: a spread or cut under way stops, and
    /// new tunnels stay open.
    pub fn stop_closing(&self) {
        let mut inner = self.lock();
        inner.closing = false;
        inner.drained = false;
        inner.generation += 1;
        inner.cut_generation += 1;
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Plain data, consistent after any panic.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::task::Poll;

    use super::*;

    /// Resolves once `control` was told its drain deadline passed.
    async fn cut_drained(control: &TunnelControl) {
        poll_fn(|cx| match control.take(cx.waker()).drained {
            true => Poll::Ready(()),
            false => Poll::Pending,
        })
        .await
    }

    #[tokio::test]
    async fn the_drain_deadline_cuts_open_tunnels_and_later_ones_at_once() {
        let tunnels = OpenTunnels::new();
        let open = TunnelControl::new();
        let _open = tunnels.register(open.clone());
        tunnels.cut_at(Instant::now() + Duration::from_millis(20));
        tokio::time::timeout(Duration::from_secs(5), cut_drained(&open))
            .await
            .expect("cut at the deadline");
        let late = TunnelControl::new();
        let _late = tunnels.register(late.clone());
        assert!(late.take(futures_util::task::noop_waker_ref()).drained);
    }

    #[tokio::test]
    async fn back_in_service_before_the_deadline_cuts_nothing() {
        let tunnels = OpenTunnels::new();
        let open = TunnelControl::new();
        let _open = tunnels.register(open.clone());
        let deadline = Instant::now() + Duration::from_millis(20);
        tunnels.cut_at(deadline);
        tunnels.stop_closing();
        // A cut scheduled after the cancelled one shows when it would have fired.
        let probe = TunnelControl::new();
        let probe_tunnels = OpenTunnels::new();
        let _probe = probe_tunnels.register(probe.clone());
        probe_tunnels.cut_at(deadline + Duration::from_millis(20));
        tokio::time::timeout(Duration::from_secs(5), cut_drained(&probe))
            .await
            .expect("the probe's cut");
        assert!(!open.take(futures_util::task::noop_waker_ref()).drained);
        let late = TunnelControl::new();
        let _late = tunnels.register(late.clone());
        assert!(!late.take(futures_util::task::noop_waker_ref()).drained);
    }
}
