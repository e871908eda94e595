//! Balancing through a running wharf: the share of requests each server gets
//! under `round_robin`, `least_conn` and `random_two`, counted at the backends.

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;

use support::*;

/// Starts one normal backend per weight, named `s0`, `s1`, …, and wharf with
/// one pool of them balanced by `balance`.
async fn setup(weights: &[u32], balance: &str) -> (Running, SocketAddr, Vec<Backend>) {
    let mut backends = Vec::new();
    for i in 0..weights.len() {
        backends.push(Backend::normal(&format!("s{i}")).await);
    }
    let servers: Vec<(SocketAddr, u32)> = backends
        .iter()
        .zip(weights)
        .map(|(b, &w)| (b.addr, w))
        .collect();
    let wharf = start_wharf(&weighted_pool_config(
        &servers,
        &format!("balance = \"{balance}\""),
    ))
    .await;
    let addr = public(&wharf);
    (wharf, addr, backends)
}

/// Sends `n` sequential requests on one client connection; returns which
/// backend answered each, in order.
async fn sequence(addr: SocketAddr, n: usize, path: &str) -> Vec<String> {
    let mut client = Client::connect(addr).await;
    let mut order = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = client.get("app.test", path).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        order.push(reply.backend());
    }
    order
}

fn tally(order: &[String]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for name in order {
        *counts.entry(name.clone()).or_insert(0) += 1;
    }
    counts
}

fn count(counts: &HashMap<String, usize>, name: &str) -> usize {
    counts.get(name).copied().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_weights_1_2_3_are_exact_and_smooth() {
    let (_wharf, addr, backends) = setup(&[1, 2, 3], "round_robin").await;
    let order = sequence(addr, 600, "/").await;
    let counts = tally(&order);
    assert_eq!(
        [
            count(&counts, "s0"),
            count(&counts, "s1"),
            count(&counts, "s2")
        ],
        [100, 200, 300],
        "{counts:?}"
    );
    // The backends agree: each request reached one server once.
    let seen: Vec<usize> = backends.iter().map(Backend::requests).collect();
    assert_eq!(seen, [100, 200, 300]);
    // Smooth: the picks repeat a cycle of 6, so every 6 consecutive requests
    // hold exactly 1, 2 and 3 of each server, and no server gets a burst.
    for (start, window) in order.windows(6).enumerate() {
        let w = tally(window);
        assert_eq!(
            [count(&w, "s0"), count(&w, "s1"), count(&w, "s2")],
            [1, 2, 3],
            "requests {start}..{}: {window:?}",
            start + 6
        );
    }
    let longest_run = order
        .chunk_by(|a, b| a == b)
        .map(<[String]>::len)
        .max()
        .unwrap();
    assert!(
        longest_run <= 2,
        "a server got {longest_run} requests in a row"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_is_the_default() {
    let mut backends = Vec::new();
    for i in 0..3 {
        backends.push(Backend::normal(&format!("s{i}")).await);
    }
    let addrs: Vec<SocketAddr> = backends.iter().map(|b| b.addr).collect();
    let wharf = start_wharf(&one_pool_config(&addrs, "")).await;
    let order = sequence(public(&wharf), 300, "/").await;
    let counts = tally(&order);
    assert_eq!(
        [
            count(&counts, "s0"),
            count(&counts, "s1"),
            count(&counts, "s2")
        ],
        [100, 100, 100]
    );
    // Equal weights: strict rotation.
    for window in order.windows(3) {
        assert_eq!(tally(window).len(), 3, "{window:?}");
    }
}

/// Tolerance: ±5 percentage points. With p = 0.25 and n = 2000 the standard
/// deviation of the share is 0.97 points, so 5 points is over 5 sigma.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_two_follows_weights_1_3_within_5_points() {
    let (_wharf, addr, _backends) = setup(&[1, 3], "random_two").await;
    let n = 2000;
    let order = sequence(addr, n, "/").await;
    let counts = tally(&order);
    let share = count(&counts, "s0") as f64 / n as f64 * 100.0;
    assert_eq!(count(&counts, "s0") + count(&counts, "s1"), n);
    assert!(
        (share - 25.0).abs() <= 5.0,
        "weight-1 server got {share:.1}% of requests, expected 25% ± 5: {counts:?}"
    );
    // Random, not a fixed rotation: some runs of the heavier server are long
    // (with p = 0.75 a run of 6 or more happens in 2000 draws all but surely).
    let longest_run = order
        .chunk_by(|a, b| a == b)
        .map(<[String]>::len)
        .max()
        .unwrap();
    assert!(longest_run >= 6, "longest run {longest_run}");
}

/// Tolerance: ±5 percentage points of the 1/3 share each, over 300 requests.
/// Idle servers of equal weight tie, and ties rotate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_spreads_sequential_requests_over_equal_servers() {
    let (_wharf, addr, _backends) = setup(&[1, 1, 1], "least_conn").await;
    let order = sequence(addr, 300, "/").await;
    let counts = tally(&order);
    for name in ["s0", "s1", "s2"] {
        let share = count(&counts, name) as f64 / 3.0;
        assert!(
            (share - 33.3).abs() <= 5.0,
            "{name} got {share:.1}%, expected 33.3% ± 5: {counts:?}"
        );
    }
}

/// Held (in-flight) requests are spread so that load follows weight: with
/// weights 1 and 3, eight open requests settle at exactly 2 and 6.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_balances_open_requests_by_weight() {
    let (_wharf, addr, backends) = setup(&[1, 3], "least_conn").await;
    let mut held = Vec::new();
    for i in 0..8 {
        held.push(tokio::spawn(
            async move { get(addr, "app.test", "/hold").await },
        ));
        // Wait until wharf has placed this one before sending the next.
        let total = || backends.iter().map(Backend::requests).sum::<usize>();
        within("the held request to arrive", async {
            while total() < i + 1 {
                tokio::task::yield_now().await;
                tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            }
        })
        .await;
    }
    backends[0].wait_held(backends[0].requests()).await;
    backends[1].wait_held(backends[1].requests()).await;
    assert_eq!([backends[0].held(), backends[1].held()], [2, 6]);
    for b in &backends {
        b.release_held();
    }
    for task in held {
        assert_eq!(task.await.unwrap().status, 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_avoids_a_server_busy_with_a_slow_request() {
    let (_wharf, addr, backends) = setup(&[1, 1], "least_conn").await;
    let slow = tokio::spawn(async move { get(addr, "app.test", "/hold").await });
    let busy = within("the slow request to arrive", async {
        loop {
            if let Some(b) = backends.iter().find(|b| b.requests() == 1) {
                return b.name.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await;
    let order = sequence(addr, 20, "/").await;
    assert!(
        order.iter().all(|name| *name != busy),
        "requests went to {busy}, which holds a slow request: {order:?}"
    );
    for b in &backends {
        b.release_held();
    }
    assert_eq!(slow.await.unwrap().status, 200);
    // Once it is free again it gets requests again.
    let order = sequence(addr, 20, "/").await;
    assert!(order.contains(&busy), "{order:?}");
}

/// Concurrent clients against slow servers: least_conn keeps in-flight load
/// proportional to weight, so with weights 1 and 3 the light server gets
/// about a quarter of requests. Tolerance: ±5 percentage points of 25%.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn least_conn_under_concurrency_follows_weights_within_5_points() {
    let (_wharf, addr, backends) = setup(&[1, 3], "least_conn").await;
    let workers = 32;
    let per_worker = 20;
    let mut tasks = Vec::new();
    for _ in 0..workers {
        tasks.push(tokio::spawn(async move {
            sequence(addr, per_worker, "/slow/20").await
        }));
    }
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    let counts = tally(&all);
    let n = workers * per_worker;
    assert_eq!(backends[0].requests() + backends[1].requests(), n);
    let share = count(&counts, "s0") as f64 / n as f64 * 100.0;
    assert!(
        (share - 25.0).abs() <= 5.0,
        "weight-1 server got {share:.1}%, expected 25% ± 5: {counts:?}"
    );
}
