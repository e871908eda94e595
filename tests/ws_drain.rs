//! Gentle drains: when a server is drained through the admin API, removed by
//! a reload, or wharf stops, each of its websockets gets a close frame 1001
//! at a moment spread over the pool's `drain_window`, while some clients keep
//! sending large and fragmented messages that must arrive whole; websockets
//! on other servers are untouched. Real clients and servers (tokio-tungstenite).
//! Each test prints the first, median and last close time.
//!
//! Everything listens on 127.0.0.1 port 0; every wait is bounded.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use support::ws::{BackendConn, WsBackend, ws_config};
use support::{
    Running, WsClient, admin_post, assert_spread_over, pattern, public, within, within_for,
};

const WINDOW: Duration = Duration::from_secs(2);
/// Websockets on the drained server, and on the other one.
const ON_DRAINED: usize = 500;
const ON_OTHER: usize = 25;
/// Clients of the drained server that keep sending while it drains.
const BUSY: usize = 10;

fn config(drained: SocketAddr, other: Option<SocketAddr>) -> String {
    // Smooth round robin with weights 20:1 puts 20 websockets on `drained`
    // for each one on `other`.
    let other = other.map_or_else(String::new, |o| {
        format!(", {{ address = \"{o}\", weight = 1 }}")
    });
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "public"
bind = "127.0.0.1:0"
max_connections = 5000

[[listener.route]]
pool = "web"

[pool.web]
servers = [{{ address = "{drained}", weight = 20 }}{other}]
drain_window = "{}ms"
"#,
        WINDOW.as_millis()
    )
}

async fn start(text: &str) -> Running {
    support::start_wharf(text).await
}

async fn open(running: &Running) -> WsClient {
    let url = format!("ws://{}/drain", public(running));
    let (ws, _) = within(
        "websocket handshake",
        tokio_tungstenite::connect_async_with_config(url, Some(ws_config()), true),
    )
    .await
    .expect("handshake through wharf");
    ws
}

/// What one client of the drained server saw.
struct Ended {
    /// When its close frame came, from the drain's start.
    at: Duration,
    code: Option<CloseCode>,
    /// Echoes received (busy clients), each checked whole and in order.
    echoes: usize,
}

/// Waits for the close; a busy client keeps sending messages, large and
/// fragmented, and checks that every echo is exactly what it sent.
fn client_task(
    mut ws: WsClient,
    busy: Option<u64>,
    start: tokio::sync::watch::Receiver<Option<Instant>>,
) -> JoinHandle<Ended> {
    tokio::spawn(async move {
        let mut sent: std::collections::VecDeque<Vec<u8>> = Default::default();
        let mut echoes = 0;
        let mut n = 0u64;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(seed) = busy
                && sent.len() < 4
            {
                n += 1;
                let data = pattern(seed * 1000 + n, if n % 2 == 0 { 200_000 } else { 60_000 });
                let result = if n % 2 == 0 {
                    ws.send(Message::binary(data.clone())).await
                } else {
                    send_fragmented(&mut ws, &data).await
                };
                if result.is_ok() {
                    sent.push_back(data);
                }
            }
            let wait = if busy.is_some() {
                Duration::from_millis(20)
            } else {
                Duration::from_secs(30)
            };
            let next = match tokio::time::timeout(wait, ws.next()).await {
                Err(_) if Instant::now() < deadline => continue,
                Err(_) => panic!("no close within 30 s"),
                Ok(next) => next,
            };
            match next {
                Some(Ok(Message::Binary(data))) => {
                    let expected = sent.pop_front().expect("an echo of something sent");
                    assert!(
                        data[..] == expected[..],
                        "an echo arrived whole and in order"
                    );
                    echoes += 1;
                }
                Some(Ok(Message::Close(frame))) => {
                    let began = start.borrow().expect("the drain began");
                    let at = began.elapsed();
                    // Let tungstenite answer the close.
                    while let Ok(Some(Ok(_))) =
                        tokio::time::timeout(Duration::from_secs(5), ws.next()).await
                    {
                    }
                    return Ended {
                        at,
                        code: frame.map(|f| f.code),
                        echoes,
                    };
                }
                Some(Ok(other)) => panic!("unexpected {other:?}"),
                Some(Err(e)) => panic!("websocket error before the close: {e}"),
                None => panic!("closed without a close frame"),
            }
        }
    })
}

async fn send_fragmented(
    ws: &mut WsClient,
    data: &[u8],
) -> Result<(), tokio_tungstenite::tungstenite::Error> {
    let thirds: Vec<&[u8]> = data.chunks(data.len().div_ceil(3)).collect();
    for (i, part) in thirds.iter().enumerate() {
        let op = if i == 0 { Data::Binary } else { Data::Continue };
        let frame = Frame::message(part.to_vec(), OpCode::Data(op), i + 1 == thirds.len());
        ws.feed(Message::Frame(frame)).await?;
    }
    ws.flush().await
}

/// Opens the websockets, starts the clients, runs `trigger` and checks the
/// drained server's websockets closed with 1001 spread over the window.
/// Returns the other server's clients (still open) and backend connections.
async fn drain_scenario<F, Fut>(name: &str, two_servers: bool, trigger: F)
where
    F: FnOnce(Running, SocketAddr, Option<SocketAddr>) -> Fut,
    Fut: std::future::Future<Output = Option<Running>>,
{
    let mut drained = WsBackend::start().await;
    let mut other = WsBackend::start().await;
    let other_addr = two_servers.then_some(other.addr);
    let running = start(&config(drained.addr, other_addr)).await;

    let per_round = if two_servers { 21 } else { 20 };
    let rounds = ON_DRAINED / 20;
    let (start_tx, start_rx) = tokio::sync::watch::channel(None);
    let mut tasks = Vec::new();
    let mut others = Vec::new();
    for _ in 0..rounds * per_round {
        let ws = open(&running).await;
        tasks.push(ws);
    }
    // Which client went where: the backends saw them in order.
    let mut drained_conns: Vec<BackendConn> = Vec::new();
    for _ in 0..ON_DRAINED {
        drained_conns.push(drained.next_conn().await);
    }
    let mut other_conns = Vec::new();
    if two_servers {
        for _ in 0..rounds {
            other_conns.push(other.next_conn().await);
        }
    }
    // Tell the clients apart by a hello each, echoed by its own server.
    let mut clients = Vec::new();
    for (i, mut ws) in tasks.into_iter().enumerate() {
        let hello = format!("hello {i}");
        within("hello", ws.send(Message::text(hello.clone())))
            .await
            .expect("send");
        let reply = within("hello echo", ws.next())
            .await
            .expect("open")
            .expect("echo");
        assert_eq!(reply, Message::text(hello));
        clients.push(ws);
    }
    let mut on_drained = Vec::new();
    for conn in &mut drained_conns {
        let Message::Text(hello) = conn.next_message().await else {
            panic!("a hello first");
        };
        let i: usize = hello.as_str()["hello ".len()..].parse().expect("an index");
        on_drained.push(i);
    }
    on_drained.sort_unstable();
    let mut ended = Vec::new();
    let mut busy = 0;
    for (i, ws) in clients.into_iter().enumerate() {
        if on_drained.binary_search(&i).is_ok() {
            let seed = (busy < BUSY).then_some(i as u64);
            busy += 1;
            ended.push(client_task(ws, seed, start_rx.clone()));
        } else {
            others.push(ws);
        }
    }
    assert_eq!(ended.len(), ON_DRAINED);
    assert_eq!(others.len(), if two_servers { ON_OTHER } else { 0 });
    // Let the busy clients get going.
    tokio::time::sleep(Duration::from_millis(200)).await;

    start_tx.send_replace(Some(Instant::now()));
    let drained_addr = drained.addr;
    let still_running = trigger(running, drained_addr, other_addr).await;

    let mut times = Vec::new();
    let mut echoes = 0;
    for task in ended {
        let end = within_for(WINDOW + Duration::from_secs(20), "a close", task)
            .await
            .expect("client task");
        assert_eq!(end.code, Some(CloseCode::Away), "every websocket gets 1001");
        times.push(end.at);
        echoes += end.echoes;
    }
    assert_spread_over(
        WINDOW,
        &mut times,
        &format!("{name}: {ON_DRAINED} websockets closed with 1001"),
        &format!("{echoes} large/fragmented echoes checked"),
    );
    assert!(echoes >= BUSY, "busy clients had messages echoed");
    // The server side got a 1001 close on every websocket.
    for mut conn in drained_conns {
        let close = loop {
            match conn.next_message().await {
                Message::Close(frame) => break frame,
                _ => continue,
            }
        };
        assert_eq!(close.map(|f| f.code), Some(CloseCode::Away));
    }
    // Websockets on the other server: still open, still echoing.
    if let Some(_running) = still_running {
        for (i, ws) in others.iter_mut().enumerate() {
            let text = format!("still here {i}");
            within("send", ws.send(Message::text(text.clone())))
                .await
                .expect("send");
            let reply = within("echo", ws.next())
                .await
                .expect("open")
                .expect("echo");
            assert_eq!(reply, Message::text(text));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drained_server_closes_its_websockets_with_1001_spread_over_the_window() {
    drain_scenario("admin drain", true, |running, drained, _| async move {
        admin_post(&running, &format!("/api/pools/web/servers/{drained}/drain")).await;
        Some(running)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_removed_by_reload_closes_its_websockets_spread_over_the_window() {
    drain_scenario("reload", true, |running, _, other| async move {
        let other = other.expect("two servers");
        let text = config(other, None).replace("weight = 20", "weight = 1");
        let config = wharf::config::parse_str("reload.toml", &text).expect("valid");
        within("a reload", running.reload_config(config))
            .await
            .expect("the reload applies");
        Some(running)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_websockets_spread_over_the_window() {
    drain_scenario("shutdown", false, |running, _, _| async move {
        // Bounded by the stop timeout: 0.9 × 9 s leaves the whole window
        // and the last close handshake.
        tokio::spawn(running.stop(Duration::from_secs(9)));
        None
    })
    .await;
}
