//! The real `wharf run` binary: a binary upgrade through `--upgrade-socket`
//! refuses no connection and fails no request, and SIGTERM lets a slow
//! request in flight finish before wharf exits 0; SIGHUP reloads the file (a
//! broken one changes nothing and each mistake is logged with its place);
//! SIGUSR1 reopens the access log after rotation.

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
        Wharf::spawn(Wharf::command(config, upgrade_socket))
    }

    /// As [`Wharf::start`], with its stderr (its log) written to `log`.
    fn start_logging_to(
        config: &std::path::Path,
        upgrade_socket: &std::path::Path,
        log: &std::path::Path,
    ) -> Wharf {
        let log = std::fs::File::create(log).expect("create the log file");
        let mut command = Wharf::command(config, upgrade_socket);
        command.stderr(log);
        Wharf::spawn(command)
    }

    /// `wharf run CONFIG --upgrade-socket SOCKET`, for [`Wharf::spawn`].
    fn command(config: &std::path::Path, upgrade_socket: &std::path::Path) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wharf"));
        command
            .arg("run")
            .arg(config)
            .arg("--upgrade-socket")
            .arg(upgrade_socket)
            .stdin(Stdio::null());
        command
    }

    fn spawn(mut command: Command) -> Wharf {
        Wharf(command.spawn().expect("start wharf"))
    }

    fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(&self.0), signal).expect("signal wharf");
    }

    /// Waits until the process catches `signal`: wharf installs its signal
    /// handlers just after it starts serving, and until then SIGHUP, SIGUSR1
    /// and SIGUSR2 would kill it. The kernel's `SigCgt` mask in
    /// /proc/PID/status is the readiness signal.
    async fn wait_until_catching(&self, signal: Signal) {
        within("wharf to catch the signal", async {
            while !self.catches(signal) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
    }

    /// Whether the process catches `signal` now (`SigCgt` in /proc/PID/status).
    fn catches(&self, signal: Signal) -> bool {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.0.id()))
            .expect("wharf's /proc status");
        let caught = status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .expect("a SigCgt line");
        caught & (1u64 << (signal.as_raw() - 1)) != 0
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
    wharf.wait_until_catching(Signal::USR1).await;
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

/// A config with listener `public` on `bind`: `/b/` to pool `q` (server
/// `b`) when there is one, everything else to pool `p` (server `a`); then
/// `broken` lines at the end of pool `p`.
fn routes_config(bind: SocketAddr, a: SocketAddr, b: Option<SocketAddr>, broken: &str) -> String {
    let mut text =
        format!("shutdown_timeout = \"10s\"\n[[listener]]\nname = \"public\"\nbind = \"{bind}\"\n");
    if b.is_some() {
        text.push_str("[[listener.route]]\npath_prefix = \"/b/\"\npool = \"q\"\n");
    }
    text.push_str(&format!(
        "[[listener.route]]\npool = \"p\"\n[pool.p]\nservers = [\"{a}\"]\n{broken}"
    ));
    if let Some(b) = b {
        text.push_str(&format!("[pool.q]\nservers = [\"{b}\"]\n"));
    }
    text
}

/// Whether `log` has `file:line:col: ` for line `line` of `wharf.toml`.
fn names_place(log: &str, line: usize) -> bool {
    let place = format!("wharf.toml:{line}:");
    log.match_indices(&place).any(|(at, _)| {
        let rest = &log[at + place.len()..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        digits > 0 && rest[digits..].starts_with(": ")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_file_and_a_broken_file_changes_nothing() {
    let dir = TempDir::new("upgrade");
    let a = Backend::normal("a").await;
    let b = Backend::normal("b").await;
    let (config, bind) = setup(&dir, &a).await;
    let log_path = dir.0.join("wharf.stderr");
    let wharf = Wharf::start_logging_to(&config, &dir.0.join("upgrade.sock"), &log_path);
    wait_until_serving(bind).await;
    wharf.wait_until_catching(Signal::HUP).await;
    assert_eq!(get(bind, "app.test", "/b/x").await.text(), "a");

    // A route to a second pool, in effect once wharf has read the file.
    dir.write("wharf.toml", routes_config(bind, a.addr, Some(b.addr), ""));
    wharf.signal(Signal::HUP);
    let started = std::time::Instant::now();
    within("the new route to answer", async {
        while get(bind, "app.test", "/b/x").await.text() != "b" {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    eprintln!(
        "SIGHUP: the new route answered after {:?}",
        started.elapsed()
    );
    assert_eq!(get(bind, "app.test", "/").await.text(), "a");

    // A file with two mistakes that also drops the new route: nothing of it
    // is applied, and each mistake is logged with its place.
    let broken = "balance = \"fastest\"\nretries = 99\n";
    let text = routes_config(bind, a.addr, None, broken);
    let line_of = |needle: &str| text.lines().position(|l| l.starts_with(needle)).unwrap() + 1;
    let (balance_line, retries_line) = (line_of("balance"), line_of("retries"));
    dir.write("wharf.toml", &text);
    wharf.signal(Signal::HUP);
    let log = within("the refused reload in the log", async {
        loop {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.matches("reload refused").count() >= 2 {
                return log;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("reload refused"))
        .collect();
    eprintln!("SIGHUP with a broken file logged:\n{}", refused.join("\n"));
    assert!(
        names_place(&log, balance_line) && names_place(&log, retries_line),
        "every mistake as wharf.toml:line:col: (lines {balance_line} and {retries_line}): {refused:?}"
    );
    assert!(
        !log.contains('\u{1b}'),
        "no terminal colour codes in a log that is not a terminal"
    );
    assert_eq!(get(bind, "app.test", "/b/x").await.text(), "b");
    assert_eq!(get(bind, "app.test", "/").await.text(), "a");

    wharf.signal(Signal::TERM);
    assert_eq!(wharf.exit_code().await, Some(0));
}

#[tokio::test]
async fn wharf_catches_its_signals_before_it_tells_systemd_it_is_ready() {
    let dir = TempDir::new("upgrade");
    let backend = Backend::normal("a").await;
    let (config, bind) = setup(&dir, &backend).await;
    let notify_path = dir.0.join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).expect("bind the notify socket");
    let mut command = Wharf::command(&config, &dir.0.join("upgrade.sock"));
    command.env("NOTIFY_SOCKET", &notify_path);
    let wharf = Wharf::spawn(command);
    let mut message = [0u8; 512];
    let n = within("READY=1 from wharf", notify.recv(&mut message))
        .await
        .expect("a notification");
    let message = String::from_utf8_lossy(&message[..n]).into_owned();
    // Read at once: systemd may send ExecReload's SIGHUP from this moment.
    // (This config has no access log: SIGUSR1 must not kill wharf either.)
    let caught = [Signal::HUP, Signal::USR1, Signal::USR2].map(|s| wharf.catches(s));
    assert!(message.starts_with("READY=1\n"), "{message:?}");
    assert_eq!(
        caught, [true; 3],
        "SIGHUP, SIGUSR1 and SIGUSR2 caught when wharf says READY=1"
    );
    wait_until_serving(bind).await;
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
    old.wait_until_catching(Signal::USR2).await;
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
