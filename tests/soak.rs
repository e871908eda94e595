//! Soak (issue 11, point 7): the `wharf` binary under mixed HTTP and
//! WebSocket load with faults — a server killed and restarted, clients
//! vanishing mid-upload, slow readers — for `SOAK_SECS` (default 600), then
//! its RSS and open file descriptors compared with their level after warm-up
//! (the first fifth). Not part of the normal suite:
//!
//! `SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture`
//!
//! Everything runs on 127.0.0.1; every loop stops at the deadline.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use futures_util::{FutureExt, SinkExt, StreamExt};
use support::*;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

#[derive(Default)]
struct Counts {
    answered: AtomicU64,
    unanswered: AtomicU64,
    reconnects: AtomicU64,
    echoed: AtomicU64,
    ws_closed_with_frame: AtomicU64,
    ws_closed_without_frame: AtomicU64,
    vanished: AtomicU64,
    slow_reads: AtomicU64,
}

/// The wharf process, stopped (by its PID) when dropped.
struct Wharf(Child);

impl Drop for Wharf {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_and_fds(pid: u32) -> (u64, usize) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    (rss, fds)
}

async fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long run: SOAK_SECS=600 cargo test --release --test soak -- --ignored --nocapture"]
async fn soak() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    let run = Duration::from_secs(secs);
    let stable = Backend::normal("stable").await;
    let flaky_addr = free_port().await;
    let wharf_addr = free_port().await;
    let dir = TempDir::new("soak");
    let config = dir.write(
        "soak.toml",
        format!(
            r#"
[[listener]]
name = "public"
bind = "{wharf_addr}"
timeouts = {{ client_write = "5s" }}

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{}", "{flaky_addr}"]
timeouts = {{ response = "5s", upload_idle = "2s" }}
"#,
            stable.addr
        ),
    );
    let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("run")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start wharf");
    let wharf = Wharf(child);
    let pid = wharf.0.id();
    within("wharf to listen", async {
        while tokio::net::TcpStream::connect(wharf_addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;

    let started = Instant::now();
    let deadline = started + run;
    let counts = Arc::new(Counts::default());
    let mut tasks = tokio::task::JoinSet::new();

    // A server that dies for 5 s every 20 s, and comes back on its port.
    tasks.spawn(async move {
        while Instant::now() < deadline {
            let Ok(listener) = TcpListener::bind(flaky_addr).await else {
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            let flaky = Backend::start_on(listener, "flaky", Behaviour::Normal);
            tokio::time::sleep(Duration::from_secs(15)).await;
            drop(flaky);
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
    });
    // HTTP clients: GETs and 64 KiB uploads on keep-alive connections.
    for i in 0..4 {
        let counts = counts.clone();
        tasks.spawn(async move {
            let body = pattern(0, 64 * 1024);
            while Instant::now() < deadline {
                let mut client = Client::connect(wharf_addr).await;
                for n in 0..50 {
                    let request = if (n + i) % 2 == 0 {
                        get_request("app.test", "/")
                    } else {
                        http::Request::post("/verify")
                            .header("host", "app.test")
                            .body(full_body(body.clone()))
                            .unwrap()
                    };
                    let what = format!("{} {}", request.method(), request.uri());
                    // The test client panics on a connection wharf closed
                    // (as it may after an error answer to an upload whose
                    // body it did not read): that is a reconnect, not a loss.
                    let sent = AssertUnwindSafe(client.request(request)).catch_unwind();
                    match tokio::time::timeout(Duration::from_secs(10), sent).await {
                        Ok(Ok(_)) => {
                            counts.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Err(_)) => {
                            counts.reconnects.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        Err(_) => {
                            eprintln!("no answer within 10s: {what}");
                            counts.unanswered.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    if client.is_closed() {
                        break;
                    }
                }
            }
        });
    }
    // WebSocket clients: echo until the socket closes, then reconnect.
    for _ in 0..4 {
        let counts = counts.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let Ok(Ok((mut ws, _))) = tokio::time::timeout(
                    Duration::from_secs(5),
                    tokio_tungstenite::connect_async(format!("ws://{wharf_addr}/ws-echo")),
                )
                .await
                else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                while Instant::now() < deadline {
                    if ws.send(Message::text("ping")).await.is_err() {
                        counts
                            .ws_closed_without_frame
                            .fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    match tokio::time::timeout(Duration::from_secs(10), ws.next()).await {
                        Ok(Some(Ok(Message::Text(_)))) => {
                            counts.echoed.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(Some(Ok(Message::Close(_)))) => {
                            counts.ws_closed_with_frame.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                        _ => {
                            counts
                                .ws_closed_without_frame
                                .fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        });
    }
    // Clients that vanish mid-upload, and slow readers that give up.
    {
        let counts = counts.clone();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let mut raw = RawClient::connect(wharf_addr).await;
                raw.send(
                    b"POST /verify HTTP/1.1\r\nHost: app.test\r\nContent-Length: 1000000\r\n\r\n",
                )
                .await;
                raw.send(&pattern(0, 10_000)).await;
                drop(raw);
                counts.vanished.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
    }
    {
        let counts = counts.clone();
        tasks.spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while Instant::now() < deadline {
                let Ok(mut stream) = tokio::net::TcpStream::connect(wharf_addr).await else {
                    continue;
                };
                let _ = stream
                    .write_all(b"GET /generate/10000000 HTTP/1.1\r\nHost: app.test\r\n\r\n")
                    .await;
                let mut buf = [0u8; 1024];
                for _ in 0..20 {
                    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf))
                        .await;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                counts.slow_reads.fetch_add(1, Ordering::Relaxed);
            }
        });
    }

    // Samples: after warm-up (a fifth of the run), then at the end.
    tokio::time::sleep(run / 5).await;
    let warm = rss_and_fds(pid);
    let mut peak = warm;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(5).min(run / 10)).await;
        let now = rss_and_fds(pid);
        peak = (peak.0.max(now.0), peak.1.max(now.1));
    }
    while tasks.join_next().await.is_some() {}
    let end_loaded = rss_and_fds(pid);
    // Idle connections and tunnels wind down; then the descriptors settle.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let end = rss_and_fds(pid);

    let c = |a: &AtomicU64| a.load(Ordering::Relaxed);
    println!(
        "soak {secs}s: HTTP answered {} unanswered {} (connections closed by wharf {}); websocket echoes {}, closed with a frame {}, without {}; \
         vanished uploads {}; slow readers {}",
        c(&counts.answered),
        c(&counts.unanswered),
        c(&counts.reconnects),
        c(&counts.echoed),
        c(&counts.ws_closed_with_frame),
        c(&counts.ws_closed_without_frame),
        c(&counts.vanished),
        c(&counts.slow_reads),
    );
    println!(
        "RSS after warm-up {} KiB, peak {} KiB, end of load {} KiB, settled {} KiB; fds after warm-up {}, peak {}, end of load {}, settled {}",
        warm.0 / 1024,
        peak.0 / 1024,
        end_loaded.0 / 1024,
        end.0 / 1024,
        warm.1,
        peak.1,
        end_loaded.1,
        end.1
    );
    assert_eq!(c(&counts.unanswered), 0, "requests left without an answer");
    assert!(c(&counts.answered) > 0 && c(&counts.echoed) > 0);
    assert!(
        end.0 <= warm.0 + warm.0 / 10 + 4 * 1024 * 1024,
        "RSS grew from {} to {} KiB",
        warm.0 / 1024,
        end.0 / 1024
    );
    assert!(
        end.1 <= warm.1 + warm.1 / 10 + 2,
        "open descriptors grew from {} to {}",
        warm.1,
        end.1
    );
    drop(dir);
}
