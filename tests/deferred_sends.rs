//! Request heads deferred to the end of a worker's turn
//! (src/upstream/h1/outbox.rs), in a runtime built as `wharf run` builds it:
//! with the park hook that sends them. Real backends and clients on
//! 127.0.0.1; every wait is bounded.

mod support;

use std::collections::HashSet;

use support::{Backend, Behaviour, RawClient, public, wharf_for, within};

/// A runtime like `wharf run`'s: its workers send deferred heads before they sleep.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_park(wharf::upstream::send_deferred)
        .build()
        .expect("a runtime")
}

/// 20 keep-alive clients at once, 50 requests each, over two servers:
/// every request reaches a server exactly once and is answered, and the
/// heads went through the outbox.
#[test]
fn deferred_heads_reach_their_servers_once_each() {
    runtime().block_on(async {
        let a = Backend::normal("a").await;
        let b = Backend::normal("b").await;
        let (running, _) = wharf_for(&[a.addr, b.addr], "").await;
        let address = public(&running);
        let deferred_before = wharf::upstream::deferred_total();
        let clients = (0..20).map(|client| {
            tokio::spawn(async move {
                let mut raw = RawClient::connect(address).await;
                for n in 0..50 {
                    let request = format!("GET /c{client}/r{n} HTTP/1.1\r\nHost: test\r\n\r\n");
                    let response = raw.request(request.as_bytes()).await;
                    assert_eq!(response.status, 200, "{}", response.text());
                }
            })
        });
        for client in clients {
            within("a client's 50 requests", client).await.unwrap();
        }
        assert_eq!(a.requests() + b.requests(), 1000);
        let paths: HashSet<String> = a
            .seen()
            .into_iter()
            .chain(b.seen())
            .map(|seen| seen.uri.to_string())
            .collect();
        assert_eq!(paths.len(), 1000, "each request reached a server once");
        let deferred = wharf::upstream::deferred_total() - deferred_before;
        assert!(
            deferred >= 900,
            "only {deferred} of 1000 heads went through the outbox"
        );
    });
}

/// A server that closes without answering: each deferred GET is tried again
/// on the other server and answered.
#[test]
fn a_deferred_head_a_server_dropped_is_tried_on_another() {
    runtime().block_on(async {
        let closing = Backend::start("closing", Behaviour::CloseWithoutAnswer).await;
        let good = Backend::normal("good").await;
        let (running, _) = wharf_for(&[closing.addr, good.addr], "").await;
        let mut raw = RawClient::connect(public(&running)).await;
        for n in 0..20 {
            let request = format!("GET /r{n} HTTP/1.1\r\nHost: test\r\n\r\n");
            let response = raw.request(request.as_bytes()).await;
            assert_eq!(response.status, 200, "{}", response.text());
            assert_eq!(response.text(), "good");
        }
        assert!(closing.requests() > 0, "the closing server was tried");
        assert_eq!(good.requests(), 20);
    });
}

/// A worker that always has a task to run (here one that keeps yielding, as
/// a task out of coop budget does) never parks, so its park hook never runs:
/// a head deferred on it must still reach the server.
#[test]
fn a_deferred_head_goes_out_while_its_worker_stays_busy() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .on_thread_park(wharf::upstream::send_deferred)
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let backend = Backend::normal("a").await;
        let (running, _) = wharf_for(&[backend.addr], "").await;
        let address = public(&running);
        // A first request makes the worker park once (the hook's first call).
        let mut raw = RawClient::connect(address).await;
        let response = raw
            .request(b"GET /first HTTP/1.1\r\nHost: test\r\n\r\n")
            .await;
        assert_eq!(response.status, 200);
        let busy = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let spinning = busy.clone();
        let spinner = tokio::spawn(async move {
            while spinning.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::task::yield_now().await;
            }
        });
        let answered = tokio::time::timeout(
            std::time::Duration::from_secs(3),
            raw.request(b"GET /second HTTP/1.1\r\nHost: test\r\n\r\n"),
        )
        .await;
        busy.store(false, std::sync::atomic::Ordering::Relaxed);
        spinner.await.unwrap();
        let response = answered.expect("a GET answered within 3 s while its worker is busy");
        assert_eq!(response.status, 200);
        assert_eq!(backend.requests(), 2);
    });
}
