//! Shared by tests/socketio.rs and tests/sockjs.rs (included with `#[path]`):
//! Node.js servers and clients from this folder, run through an in-process
//! wharf. The servers are real Socket.IO / SockJS servers, one process each,
//! started on port 0; each prints `ready PORT` once it listens, and is killed
//! (by its process id) when its [`NodeServer`] is dropped. A client script
//! opens many connections through wharf and prints one JSON summary line,
//! which [`run_client`] parses.
//!
//! These tests need `node` and `npm` on `PATH`. The first test that runs
//! installs this folder's packages from the committed lockfile (`npm ci`)
//! if they are missing, so that `cargo test` alone works on a fresh clone;
//! if that fails, the tests fail, saying what to do.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a server may take to print `ready`.
const READY_WAIT: Duration = Duration::from_secs(20);
/// The client scripts' own deadline (`--timeout`): they print their summary by then.
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(20);
/// How long the client process may run in all, deadline included.
const CLIENT_WAIT: Duration = Duration::from_secs(40);

/// The packages the scripts load; one missing means `npm ci` did not run.
const PACKAGES: &[&str] = &["socket.io", "socket.io-client", "sockjs"];

/// This folder: `tests/node` in the crate.
pub fn node_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/node")
}

/// Fails the test, with what to do, unless `node` runs and the packages are installed.
pub fn require_node() {
    let install = "run `npm ci --prefix tests/node` (from the repository root; \
                   .ci/run does it) to install the Socket.IO and SockJS packages these tests use";
    match std::process::Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!(
            "`node --version` failed ({}): these tests need Node.js 18 or later on PATH; \
             then {install}",
            out.status
        ),
        Err(e) => panic!(
            "cannot run `node` ({e}): these tests need Node.js 18 or later on PATH; then {install}"
        ),
    }
    let modules = node_dir().join("node_modules");
    let missing = || {
        PACKAGES
            .iter()
            .find(|package| !modules.join(package).join("package.json").is_file())
    };
    // Tests of one binary run in parallel: one installs, the others wait.
    static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _installing = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    if missing().is_some() {
        let status = std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(node_dir())
            .status();
        if !matches!(status, Ok(s) if s.success()) {
            panic!("installing the test's npm packages failed ({status:?}): {install}");
        }
    }
    if let Some(package) = missing() {
        panic!(
            "the npm package `{package}` is not installed in {}: {install}",
            modules.display()
        );
    }
}

/// A Node.js server process; killed when dropped.
pub struct NodeServer {
    pub name: String,
    pub addr: SocketAddr,
    child: Child,
}

impl Drop for NodeServer {
    fn drop(&mut self) {
        // SIGKILL to this child's own pid; tokio reaps it.
        let _ = self.child.start_kill();
    }
}

/// Starts `node tests/node/SCRIPT 0 NAME EXTRA...` for each name, all at once,
/// and waits for each to print `ready PORT`.
pub async fn start_servers(script: &str, names: &[&str], extra: &[&str]) -> Vec<NodeServer> {
    require_node();
    let starts = names.iter().map(|name| start_server(script, name, extra));
    futures_util::future::join_all(starts).await
}

async fn start_server(script: &str, name: &str, extra: &[&str]) -> NodeServer {
    let mut child = Command::new("node")
        .arg(node_dir().join(script))
        .arg("0")
        .arg(name)
        .args(extra)
        .current_dir(node_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `node {script}`: {e}"));
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let ready = tokio::time::timeout(READY_WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read server stdout") {
            if let Some(port) = line.strip_prefix("ready ") {
                return Some(
                    port.trim()
                        .parse::<u16>()
                        .expect("`ready PORT` names a port"),
                );
            }
            eprintln!("[{name}] {line}");
        }
        None
    })
    .await;
    let port = match ready {
        Ok(Some(port)) => port,
        Ok(None) => {
            panic!("`node {script} 0 {name}` exited before printing `ready` (its stderr is above)")
        }
        Err(_) => panic!("`node {script} 0 {name}` did not print `ready` within {READY_WAIT:?}"),
    };
    // Keep reading, so that the server never writes to a closed pipe.
    let server_name = name.to_owned();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{server_name}] {line}");
        }
    });
    NodeServer {
        name: name.to_owned(),
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        child,
    }
}

/// What a client script printed: how many of its clients did everything.
#[derive(Debug, Deserialize)]
pub struct Summary {
    /// Clients that got every message echoed, all by one server.
    pub ok: usize,
    pub failed: usize,
    /// Socket.IO clients whose transport was upgraded to websocket (SockJS: 0).
    pub upgraded: usize,
    /// Server name → clients served by it (successful clients only).
    pub servers: std::collections::BTreeMap<String, usize>,
    /// The first few failures, as sentences.
    pub errors: Vec<String>,
}

/// Runs `node tests/node/SCRIPT URL COUNT --messages MESSAGES [--cookies]`
/// and returns its summary line.
pub async fn run_client(
    script: &str,
    url: &str,
    count: usize,
    messages: usize,
    cookies: bool,
) -> Summary {
    require_node();
    let mut command = Command::new("node");
    command
        .arg(node_dir().join(script))
        .arg(url)
        .arg(count.to_string())
        .arg("--messages")
        .arg(messages.to_string())
        .arg("--timeout")
        .arg(CLIENT_DEADLINE.as_millis().to_string())
        .current_dir(node_dir())
        .stdin(Stdio::null())
        .kill_on_drop(true);
    if cookies {
        command.arg("--cookies");
    }
    let output = tokio::time::timeout(CLIENT_WAIT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`node {script} {url}` still running after {CLIENT_WAIT:?}"))
        .unwrap_or_else(|e| panic!("cannot run `node {script}`: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout.lines().rev().find(|l| l.starts_with('{'));
    match line.map(serde_json::from_str::<Summary>) {
        Some(Ok(summary)) if output.status.success() => {
            eprintln!("{script} {url} {count}: {summary:?}");
            summary
        }
        _ => panic!(
            "`node {script} {url} {count}` gave no summary ({})\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
            output.status
        ),
    }
}

/// A wharf config: listener `public` on 127.0.0.1:0 routing everything to
/// pool `realtime` made of `servers`, with `pool_extra` lines added to the pool.
pub fn wharf_config(servers: &[NodeServer], pool_extra: &str) -> String {
    let list: Vec<String> = servers.iter().map(|s| format!("\"{}\"", s.addr)).collect();
    format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[listener.route]]
pool = "realtime"

[pool.realtime]
servers = [{}]
timeouts = {{ tunnel_idle = "1h" }}
{pool_extra}
"#,
        list.join(", ")
    )
}

/// Parses `toml` and starts wharf, failing the test with every config error.
pub async fn start_wharf(toml: &str) -> (wharf::Running, SocketAddr) {
    let config = match wharf::config::parse_str("test.toml", toml) {
        Ok(config) => config,
        Err(errors) => panic!("wharf rejected the test config:\n{errors}\n--- config ---\n{toml}"),
    };
    let running = wharf::start(config).await.expect("wharf starts");
    let addr = running
        .listener_addr("public")
        .expect("a listener called `public`");
    (running, addr)
}

/// Checks that every client succeeded, and that more than one server served
/// them (so that the test shows stickiness, not a pool of one).
pub fn assert_all_ok(what: &str, summary: &Summary, count: usize) {
    assert!(
        summary.ok == count && summary.failed == 0,
        "{what}: expected all {count} clients to succeed, got {summary:#?}"
    );
    assert!(
        summary.servers.len() >= 2,
        "{what}: all clients went to one server, so stickiness was not tested: {summary:#?}"
    );
}
