//! A client connection's watch for the stop signal, cheap on every wake.
//!
//! `tokio::select!` over the connection and `CancellationToken::cancelled`
//! polls the token's future each time the connection's task wakes, several
//! times a request: a mutex for `is_cancelled` and another for the token's
//! waiter list, 320 instructions a request in a callgrind profile
//! (`bench/instructions`). Here the token's future is polled once, with a
//! waker of its own, and again only after that waker fired; every other
//! wake costs two atomic operations and a load.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

pin_project_lite::pin_project! {
    /// Ready once its token is cancelled (see the module doc).
    pub struct StopWatch {
        #[pin]
        cancelled: WaitForCancellationFutureOwned,
        signal: Arc<Signal>,
        // Whether `cancelled` was polled (and holds `signal`'s waker).
        armed: bool,
    }
}

/// What the token's wake sets: a flag, and the connection's task woken.
#[derive(Default)]
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl StopWatch {
    pub fn new(token: CancellationToken) -> StopWatch {
        StopWatch {
            cancelled: token.cancelled_owned(),
            signal: Arc::default(),
            armed: false,
        }
    }
}

impl Future for StopWatch {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        // First, so that a cancel from now on wakes this task.
        this.signal.task.register(cx.waker());
        if *this.armed && !this.signal.fired.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let waker = Waker::from(this.signal.clone());
        let polled = this.cancelled.poll(&mut Context::from_waker(&waker));
        // Once ready, every later poll asks the token again (ready again).
        *this.armed = polled.is_pending();
        polled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polled many times before the cancel, it still sees it, and wakes the
    /// task that polled it last.
    #[tokio::test]
    async fn a_cancel_after_many_polls_wakes_the_task_and_ends_the_watch() {
        let token = CancellationToken::new();
        let watch = StopWatch::new(token.clone());
        tokio::pin!(watch);
        let woken = Arc::new(Counter::default());
        let waker = Waker::from(woken.clone());
        let mut cx = Context::from_waker(&waker);
        for _ in 0..3 {
            assert!(watch.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(woken.count(), 0);
        token.cancel();
        assert_eq!(woken.count(), 1);
        assert!(watch.as_mut().poll(&mut cx).is_ready());
    }

    #[tokio::test]
    async fn a_token_cancelled_before_the_first_poll_ends_it_at_once_and_for_good() {
        let token = CancellationToken::new();
        token.cancel();
        let watch = StopWatch::new(token);
        tokio::pin!(watch);
        let mut cx = Context::from_waker(Waker::noop());
        assert!(watch.as_mut().poll(&mut cx).is_ready());
        assert!(watch.as_mut().poll(&mut cx).is_ready());
    }

    /// A cancel from another thread, racing the watch's first polls, is
    /// never lost.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancel_racing_the_watch_on_another_thread_is_never_lost() {
        for _ in 0..2_000 {
            let token = CancellationToken::new();
            let watch = tokio::spawn(StopWatch::new(token.child_token()));
            tokio::task::yield_now().await;
            token.cancel();
            tokio::time::timeout(std::time::Duration::from_secs(5), watch)
                .await
                .expect("the watch saw the cancel")
                .unwrap();
        }
    }

    #[tokio::test]
    async fn a_child_token_cancelled_through_its_parent_ends_it() {
        let parent = CancellationToken::new();
        let watch = tokio::spawn(StopWatch::new(parent.child_token()));
        tokio::task::yield_now().await;
        parent.cancel();
        watch.await.unwrap();
    }

    #[derive(Default)]
    struct Counter(std::sync::atomic::AtomicUsize);

    impl Counter {
        fn count(&self) -> usize {
            self.0.load(Ordering::SeqCst)
        }
    }

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}
