//! Memory held by wharf per idle websocket.
//!
//! Starts the real `wharf` binary (a separate process, so its memory is its
//! own) in front of an in-process server that answers every upgrade with 101
//! and then stays silent, opens N websockets through it, and reports wharf's
//! resident memory before and after, per connection.
//!
//! Run: `cargo bench --bench idle_websockets` (N defaults to 4000; set
//! `WHARF_BENCH_CONNECTIONS`, at most ~9000 under a 20,000 open-file limit).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const HEAD_LIMIT: usize = 16 * 1024;

#[tokio::main]
async fn main() {
    let connections: usize = std::env::var("WHARF_BENCH_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4000);
    let server = TcpListener::bind("127.0.0.1:0").await.expect("bind server");
    let server_addr = server.local_addr().expect("server addr");
    tokio::spawn(silent_upgrade_server(server));

    let port = free_port();
    let config = format!(
        "[[listener]]\nname = \"bench\"\nbind = \"127.0.0.1:{port}\"\nmax_connections = 20000\n\
         [[listener.route]]\npool = \"ws\"\n[pool.ws]\nservers = [\"{server_addr}\"]\n"
    );
    let config_path = std::env::temp_dir().join(format!("wharf-bench-{}.toml", std::process::id()));
    std::fs::write(&config_path, config).expect("write config");
    let mut wharf = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .arg("run")
        .arg(&config_path)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start wharf");
    let proxy = format!("127.0.0.1:{port}");
    wait_until_listening(&proxy).await;

    // Warm up: one connection so lazily allocated runtime state is counted in the baseline.
    let warm = open_websocket(&proxy).await;
    let before = rss_kib(wharf.id());
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(connections);
    for _ in 0..connections {
        sockets.push(open_websocket(&proxy).await);
    }
    let opened_in = started.elapsed();
    // Let the tunnels settle into their idle state.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(wharf.id());
    let per_connection = (after.saturating_sub(before)) as f64 * 1024.0 / connections as f64;
    println!(
        "idle websockets: {connections} opened in {opened_in:?}; wharf RSS {before} KiB -> {after} KiB; \
         {per_connection:.0} bytes per websocket (client and server side together)"
    );
    drop(sockets);
    drop(warm);
    let _ = wharf.kill();
    let _ = wharf.wait();
    let _ = std::fs::remove_file(&config_path);
}

fn free_port() -> u16 {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    socket.local_addr().expect("addr").port()
}

async fn wait_until_listening(addr: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).await.is_err() {
        assert!(Instant::now() < deadline, "wharf did not start listening");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn open_websocket(proxy: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy).await.expect("connect to wharf");
    stream
        .write_all(
            b"GET /ws HTTP/1.1\r\nHost: bench\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        )
        .await
        .expect("send upgrade");
    let head = read_head(&mut stream).await;
    assert!(
        head.starts_with("HTTP/1.1 101"),
        "no 101 from wharf: {head}"
    );
    stream
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < HEAD_LIMIT {
        match stream.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// Answers each upgrade with 101 and keeps the connection open, silent.
async fn silent_upgrade_server(listener: TcpListener) {
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let _ = read_head(&mut stream).await;
            let _ = stream
                .write_all(
                    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                      Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n",
                )
                .await;
            let mut sink = [0u8; 64];
            while let Ok(n) = stream.read(&mut sink).await {
                if n == 0 {
                    break;
                }
            }
        });
    }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}
