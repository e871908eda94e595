//! `slow_start`: a server that comes back (here: from a drain, through the
//! admin API) takes a share of new websockets that grows over the window,
//! even with `least_conn`, which would otherwise hand it every new websocket
//! because it has the fewest; clients pinned to it by a sticky cookie reach
//! it all through the window. Real websockets (tokio-tungstenite) and HTTP
//! clients to real backends; which server took each one is read from the
//! 101's `x-backend` or the body.
//!
//! Everything listens on 127.0.0.1 port 0; every wait is bounded.

mod support;

use std::time::Duration;

use tokio::time::Instant;

use support::{
    Backend, Client, Running, WsClient, admin_post, get_with, one_pool_config, public, set_cookie,
    start_wharf, with_admin, within,
};

const WINDOW: Duration = Duration::from_secs(2);

/// A websocket to a backend's `/ws-echo`, and the name of that backend.
async fn open(running: &Running) -> (WsClient, String) {
    let url = format!("ws://{}/ws-echo", public(running));
    let (ws, response) = within("websocket handshake", tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake through wharf");
    let name = response.headers()["x-backend"]
        .to_str()
        .expect("a name")
        .to_owned();
    (ws, name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_server_takes_a_growing_share_of_new_websockets() {
    let a = Backend::normal("a").await;
    let b = Backend::normal("b").await;
    let running = start_wharf(&with_admin(&one_pool_config(
        &[a.addr, b.addr],
        &format!(
            "balance = \"least_conn\"\nslow_start = \"{}ms\"\ndrain_window = \"0s\"",
            WINDOW.as_millis()
        ),
    )))
    .await;
    let b_path = format!("/api/pools/web/servers/{}", b.addr);

    // B drained: every websocket goes to A.
    admin_post(&running, &format!("{b_path}/drain")).await;
    let mut open_sockets = Vec::new();
    for _ in 0..60 {
        let (ws, name) = open(&running).await;
        assert_eq!(name, "a");
        open_sockets.push(ws);
    }

    // B back: with 60 on A and none on B, least_conn alone would send B
    // every new websocket for a while. New ones arrive steadily over the window.
    admin_post(&running, &format!("{b_path}/ready")).await;
    let back = Instant::now();
    let mut halves = [(0usize, 0usize); 2];
    let step = WINDOW / 80;
    for i in 0..80u32 {
        tokio::time::sleep_until(back + step * i).await;
        let (ws, name) = open(&running).await;
        let half = usize::from(back.elapsed() >= WINDOW / 2);
        if back.elapsed() < WINDOW {
            halves[half].0 += usize::from(name == "b");
            halves[half].1 += 1;
        }
        open_sockets.push(ws);
    }
    let share = |(b, all): (usize, usize)| b as f64 / all.max(1) as f64;
    let (first, second) = (share(halves[0]), share(halves[1]));
    eprintln!(
        "slow start: B took {:.0}% of new websockets in the first half of the window, {:.0}% in the second ({halves:?})",
        first * 100.0,
        second * 100.0
    );
    assert!(first < 0.5, "not flooded at first: {first}");
    assert!(second > first, "its share grows: {first} then {second}");
    assert!(second > 0.4, "and becomes large: {second}");

    // After the window, least_conn's own choice: B, which has the fewest.
    tokio::time::sleep_until(back + WINDOW + Duration::from_millis(50)).await;
    let (_, name) = open(&running).await;
    assert_eq!(name, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_pinned_to_a_ramping_server_still_reach_it() {
    let a = Backend::normal("a").await;
    let b = Backend::normal("b").await;
    // A long window: every request below comes in its first few percent,
    // where a new client reaches the returning server only rarely.
    let running = start_wharf(&with_admin(&one_pool_config(
        &[a.addr, b.addr],
        "sticky = { cookie = \"srv\", secret = \"slow-start-test\" }\nslow_start = \"20s\"",
    )))
    .await;
    let mut pinned_client = Client::connect(public(&running)).await;
    let first = pinned_client.get("app.test", "/").await;
    let cookie = set_cookie(&first, "srv").expect("a sticky cookie");
    let pinned = first.backend();
    let (pinned_addr, other) = match pinned.as_str() {
        "a" => (a.addr, "b"),
        _ => (b.addr, "a"),
    };
    let server_path = format!("/api/pools/web/servers/{pinned_addr}");

    // Drained, then ready again: ramping up under slow start from now.
    admin_post(&running, &format!("{server_path}/drain")).await;
    admin_post(&running, &format!("{server_path}/ready")).await;
    let back = Instant::now();

    // The pinned client and new clients (no cookie), in turn, over the
    // first second of the ramp.
    let mut new_clients = Client::connect(public(&running)).await;
    let (mut pinned_hits, mut new_on_pinned) = (0, 0);
    for i in 0..20 {
        tokio::time::sleep_until(back + Duration::from_millis(50) * i).await;
        let reply = get_with(&mut pinned_client, "/", &[("cookie", &cookie)]).await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.backend(),
            pinned,
            "request {i} of the pinned client, {:?} into the ramp, went elsewhere",
            back.elapsed()
        );
        assert!(set_cookie(&reply, "srv").is_none(), "re-pinned");
        pinned_hits += 1;
        let reply = new_clients.get("app.test", "/").await;
        assert!(
            set_cookie(&reply, "srv").is_some(),
            "a new client is pinned"
        );
        new_on_pinned += usize::from(reply.backend() == pinned);
    }
    let elapsed = back.elapsed();
    eprintln!(
        "slow start with a sticky cookie: {pinned_hits}/20 pinned requests reached {pinned}, \
         {new_on_pinned}/20 new clients did (the rest went to {other}), within {elapsed:?} of a 20 s ramp"
    );
    assert!(
        elapsed < Duration::from_secs(4),
        "the requests came early in the ramp: {elapsed:?}"
    );
    // Round robin alone would send 10 of 20 there; early in the ramp its
    // share is a few percent.
    assert!(
        new_on_pinned <= 5,
        "new clients are mostly sent elsewhere early in the ramp: {new_on_pinned}/20"
    );
}
