//! `slow_start`: a server that comes back (here: from a drain, through the
//! admin API) takes a share of new websockets that grows over the window,
//! even with `least_conn`, which would otherwise hand it every new websocket
//! because it has the fewest. Real websockets (tokio-tungstenite) to real
//! backends; which server took each one is read from the 101's `x-backend`.
//!
//! Everything listens on 127.0.0.1 port 0; every wait is bounded.

mod support;

use std::time::Duration;

use tokio::time::Instant;

use support::{Backend, RawClient, Running, WsClient, public, start_wharf, within};

const WINDOW: Duration = Duration::from_secs(2);

async fn admin(running: &Running, path: &str) {
    let admin = running.admin_addr().expect("admin");
    let mut client = RawClient::connect(admin).await;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
    );
    let response = client.request(request.as_bytes()).await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
}

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
    let running = start_wharf(&format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{}", "{}"]
balance = "least_conn"
slow_start = "{}ms"
drain_window = "0s"
"#,
        a.addr,
        b.addr,
        WINDOW.as_millis()
    ))
    .await;
    let b_path = format!("/api/pools/web/servers/{}", b.addr);

    // B drained: every websocket goes to A.
    admin(&running, &format!("{b_path}/drain")).await;
    let mut open_sockets = Vec::new();
    for _ in 0..60 {
        let (ws, name) = open(&running).await;
        assert_eq!(name, "a");
        open_sockets.push(ws);
    }

    // B back: with 60 on A and none on B, least_conn alone would send B
    // every new websocket for a while. New ones arrive steadily over the window.
    admin(&running, &format!("{b_path}/ready")).await;
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
