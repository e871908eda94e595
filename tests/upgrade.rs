//! The real `wharf run` binary: a binary upgrade through `--upgrade-socket`
//! refuses no connection and fails no request, and SIGTERM lets a slow
//! request in flight finish before wharf exits 0; SIGUSR1 reopens the access
//! log after rotation.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http::StatusCode;
use rustix::process::{Pid, Signal, kill_process};
use support::*;

/// A `wharf run` child process, killed if the test fails before it exits.
struct Wharf(Child);

impl Wharf {
    fn start(config: &std::path::Path, upgrade_socket: &std::path::Path) -> Wharf {
        let child = Command::new(env!("CARGO_BIN_EXE_wharf"))
            .arg("run")
            .arg(config)
            .arg("--upgrade-socket")
            .arg(upgrade_socket)
            .stdin(Stdio::null())
            .spawn()
            .expect("start wharf");
        Wharf(child)
    }

    fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(&self.0), signal).expect("signal wharf");
    }

    /// Waits for the process to exit; its exit code.
    async fn exit_code(mut self) -> Option<i32> {
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            if let Some(status) = self.0.try_wait().expect("wait for wharf") {
                return status.code();
            }
            assert!(std::time::Instant::now() < deadline, "wharf did not exit");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Wharf {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Polls `addr` until wharf answers there (the process has no other
/// readiness signal than serving).
async fn wait_until_serving(addr: SocketAddr) {
    within("wharf to serve", async {
        loop {
            if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                drop(stream);
                if let Ok(reply) =
                    tokio::time::timeout(Duration::from_secs(2), get(addr, "app.test", "/")).await
                    && reply.status == StatusCode::OK
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

async fn setup(dir: &TempDir, backend: &Backend) -> (std::path::PathBuf, SocketAddr) {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bind = socket.local_addr().unwrap();
    drop(socket);
    let config = dir.write(
        "wharf.toml",
        format!(
            "shutdown_timeout = \"10s\"\n[[listener]]\nname = \"public\"\nbind = \"{bind}\"\n\
             [[listener.route]]\npool = \"p\"\n[pool.p]\nservers = [\"{}\"]\n",
            backend.addr
        ),
    );
    (config, bind)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_binary_upgrade_refuses_no_connection_and_fails_no_request() {
    let dir = TempDir::new("upgrade");
    let backend = Backend::normal("a").await;
    let (config, bind) = setup(&dir, &backend).await;
    let upgrade_socket = dir.0.join("upgrade.sock");
    let old = Wharf::start(&config, &upgrade_socket);
    wait_until_serving(bind).await;

    let stop = Arc::new(AtomicBool::new(false));
    let clients = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0usize, Vec::new());
            // Bounded: 30 s or 100,000 requests, each on a new connection.
            let started = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(30)
                && ok < 100_000
            {
                let mut raw = match tokio::net::TcpStream::connect(bind).await {
                    Ok(stream) => stream,
                    Err(e) => {
                        failed.push(format!("connect: {e}"));
                        continue;
                    }
                };
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let request = b"GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n";
                let mut answer = Vec::new();
                let exchange = async {
                    raw.write_all(request).await?;
                    raw.read_to_end(&mut answer).await
                };
                match tokio::time::timeout(Duration::from_secs(5), exchange).await {
                    Ok(Ok(_)) if answer.starts_with(b"HTTP/1.1 200") => ok += 1,
                    other => {
                        failed.push(format!("{other:?}: {}", String::from_utf8_lossy(&answer)))
                    }
                }
            }
            (ok, failed)
        })
    };
    // Let the loop run against the old wharf first.
    backend.wait_requests(backend.requests() + 50).await;

    let new = Wharf::start(&config, &upgrade_socket);
    assert_eq!(
        old.exit_code().await,
        Some(0),
        "the old wharf stops by itself, cleanly"
    );
    let after = backend.requests();
    backend.wait_requests(after + 50).await;
    stop.store(true, Ordering::Relaxed);
    let (ok, failed) = within("the client loop", clients).await.unwrap();
    eprintln!("{ok} requests across the upgrade, {} failed", failed.len());
    assert!(
        failed.is_empty(),
        "failed: {:?}",
        &failed[..failed.len().min(5)]
    );
    assert!(ok >= 100);

    new.signal(Signal::TERM);
    assert_eq!(new.exit_code().await, Some(0));
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_zero() {
    let dir = TempDir::new("upgrade");
    let backend = Backend::normal("a").await;
    let (config, bind) = setup(&dir, &backend).await;
    let wharf = Wharf::start(&config, &dir.0.join("upgrade.sock"));
    wait_until_serving(bind).await;

    let seen = backend.requests();
    let slow = tokio::spawn(get(bind, "app.test", "/slow/1500"));
    backend.wait_requests(seen + 1).await;
    wharf.signal(Signal::TERM);
    // Not accepting any more: a new connection is refused once the socket closes.
    let reply = within("the slow request", slow).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.text(), "a");
    assert_eq!(wharf.exit_code().await, Some(0));
    assert!(
        tokio::net::TcpStream::connect(bind).await.is_err(),
        "nothing listens any more"
    );
}

#[tokio::test]
async fn sigusr1_reopens_the_access_log_after_rotation() {
    let dir = TempDir::new("upgrade");
    let backend = Backend::normal("a").await;
    let (config, bind) = setup(&dir, &backend).await;
    let text = std::fs::read_to_string(&config).unwrap();
    // Relative to the config file's folder.
    dir.write(
        "wharf.toml",
        format!("{text}\n[access_log]\nto = \"access.log\"\nformat = \"text\"\n"),
    );
    let wharf = Wharf::start(&config, &dir.0.join("upgrade.sock"));
    wait_until_serving(bind).await;
    let log = dir.0.join("access.log");
    let lines = |path: &std::path::Path| {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    get(bind, "app.test", "/before").await;
    // The writer runs off the data path: wait for this request's own line
    // (wait_until_serving's requests are logged too, earlier).
    within("the /before line", async {
        while !lines(&log).iter().any(|l| l.contains("path=/before")) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    // What logrotate does: move the file away, then signal.
    let rotated = dir.0.join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let logged_before = lines(&rotated).len();
    wharf.signal(Signal::USR1);
    // The reopen happens before the next line; poll until a request lands in a new file.
    within("a line in the reopened file", async {
        loop {
            get(bind, "app.test", "/after").await;
            if lines(&log).iter().any(|l| l.contains("path=/after")) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(lines(&rotated).len() >= logged_before);
    assert!(lines(&rotated).iter().any(|l| l.contains("path=/before")));
    assert!(!lines(&log).iter().any(|l| l.contains("path=/before")));
    wharf.signal(Signal::TERM);
    assert_eq!(wharf.exit_code().await, Some(0));
}

/// The process ids whose command line mentions `needle` (a test's own temp
/// path), other than `except`.
fn pids_mentioning(needle: &str, except: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if pid != except && String::from_utf8_lossy(&cmdline).contains(needle) {
            pids.push(pid);
        }
    }
    pids
}

#[tokio::test]
async fn sigusr2_starts_the_new_binary_which_takes_over() {
    let dir = TempDir::new("upgrade");
    let backend = Backend::normal("a").await;
    let (config, bind) = setup(&dir, &backend).await;
    let old = Wharf::start(&config, &dir.0.join("upgrade.sock"));
    let old_pid = old.0.id();
    wait_until_serving(bind).await;
    old.signal(Signal::USR2);
    assert_eq!(
        old.exit_code().await,
        Some(0),
        "the old wharf hands over and stops"
    );
    let successors = pids_mentioning(&config.to_string_lossy(), old_pid);
    assert_eq!(successors.len(), 1, "one new wharf: {successors:?}");
    assert_eq!(get(bind, "app.test", "/").await.status, StatusCode::OK);
    // The successor is this test's grandchild: stop it by its pid.
    let successor = Pid::from_raw(successors[0] as i32).expect("a pid");
    kill_process(successor, Signal::TERM).expect("signal the new wharf");
    within("the new wharf to exit", async {
        while !pids_mentioning(&config.to_string_lossy(), old_pid).is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}
