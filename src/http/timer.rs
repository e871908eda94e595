//! Timers of one client connection: the header-read timeout of every request
//! (as hyper's timer) reuses one tokio sleep, and the response timeout of
//! every request another.
//!
//! hyper asks its timer for a new sleep before each request head and drops
//! it once the head is read. With hyper-util's `TokioTimer` that is a boxed
//! tokio sleep put in the runtime's timer wheel and taken out again for every
//! request: about 1,000 instructions per request in a callgrind profile
//! (`clear_entry`, `reregister`, the wheel's insert and remove, the drop).
//! Here each request gets a small handle on the connection's sleep, which is
//! left as it is when the request's deadline is later: when the sleep's time
//! comes, a wait whose own deadline has not come sets it again. So the wheel
//! sees the sleep about once per timeout, not once per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::time::Sleep;

/// A timer of one connection, for one wait at a time (the waits of a
/// connection's requests follow one another, all polled from its task, so
/// the lock is never contended).
#[derive(Clone, Default)]
pub struct ConnectionTimer {
    sleep: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
}

impl hyper::rt::Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(self.deadline(deadline.into()))
    }

    /// Tokio's clock, which hyper adds its timeout to: the same as std's,
    /// except in tests that pause it.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

impl ConnectionTimer {
    /// A deadline on the connection's sleep, for one wait at a time: each
    /// sets the sleep to its own time at its first poll.
    pub fn deadline(&self, at: tokio::time::Instant) -> Deadline {
        Deadline {
            shared: self.sleep.clone(),
            deadline: at,
            set: false,
        }
    }
}

/// One wait's deadline on the connection's sleep, set at its first poll.
pub struct Deadline {
    shared: Arc<Mutex<Option<Pin<Box<Sleep>>>>>,
    deadline: tokio::time::Instant,
    set: bool,
}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let mut shared = this.shared.lock().unwrap_or_else(|e| e.into_inner());
        let sleep = shared.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(this.deadline)));
        // The sleep is moved only to an earlier time than it is set for: a
        // later deadline (every request's, the timeout counting from a later
        // moment) waits for the sleep's own time to come, then sets it anew.
        // Even moving it later costs more than the wheel's work it spares.
        if !this.set {
            if this.deadline < sleep.deadline() {
                sleep.as_mut().reset(this.deadline);
            }
            this.set = true;
        }
        loop {
            std::task::ready!(sleep.as_mut().poll(cx));
            if sleep.deadline() >= this.deadline {
                return Poll::Ready(());
            }
            sleep.as_mut().reset(this.deadline);
        }
    }
}

impl hyper::rt::Sleep for Deadline {}

#[cfg(test)]
mod tests {
    use hyper::rt::Timer;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn each_deadline_is_its_own_on_the_shared_sleep() {
        let timer = ConnectionTimer::default();
        let start = tokio::time::Instant::now();
        // A first request head waited for, then read in time: dropped unfired.
        let mut first = timer.sleep(Duration::from_secs(5));
        assert!(futures_util::poll!(first.as_mut()).is_pending());
        tokio::time::advance(Duration::from_secs(3)).await;
        drop(first);
        // The next one has its full time from its own start, not the first's.
        let second = timer.sleep(Duration::from_secs(5));
        second.await;
        assert_eq!(start.elapsed(), Duration::from_secs(8));
        // A deadline earlier than the one the sleep is registered for holds.
        let mut third = timer.sleep(Duration::from_secs(10));
        assert!(futures_util::poll!(third.as_mut()).is_pending());
        drop(third);
        timer.sleep(Duration::from_secs(1)).await;
        assert_eq!(start.elapsed(), Duration::from_secs(9));
    }
}
