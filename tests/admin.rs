//! The admin API against a real wharf: what `GET /api/pools` shows, and what
//! drain, maintenance and ready do to traffic — new requests, requests in
//! flight, idle keep-alive connections and open tunnels — plus the pool's
//! queue under `max_connections`.
//!
//! Backends are in-process (hyper for HTTP, raw TCP for upgrades) on
//! 127.0.0.1:0 and answer their own name. Every wait is bounded.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use wharf::Running;

/// The longest any single wait may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

/// Runs `future`, failing the test if it takes longer than [`WAIT`].
async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(WAIT, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {WAIT:?}: {what}"),
    }
}

/// Polls `condition` every few milliseconds until it holds, for state that
/// has no change signal (an idle pool, a counter behind the admin API).
async fn eventually(what: &str, mut condition: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {WAIT:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

// ------------------------------------------------------------------ wharf

/// wharf with an admin API, listener `public` routing each `(path_prefix,
/// pool)` of `routes` and everything else to `default_pool`, and `pools`
/// (TOML `[pool.NAME]` tables).
async fn start_wharf(routes: &[(&str, &str)], default_pool: &str, pools: &str) -> Running {
    let mut text = String::from(
        "[admin]\nbind = \"127.0.0.1:0\"\n\n[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n",
    );
    for (prefix, pool) in routes {
        text.push_str(&format!(
            "\n[[listener.route]]\npath_prefix = \"{prefix}\"\npool = \"{pool}\"\n"
        ));
    }
    text.push_str(&format!(
        "\n[[listener.route]]\npool = \"{default_pool}\"\nupgrades = [\"websocket\", \"x-raw\"]\n\n"
    ));
    text.push_str(pools);
    let config = match wharf::config::parse_str("admin-test.toml", &text) {
        Ok(config) => config,
        Err(errors) => panic!("invalid test config:\n{errors}\n--- config ---\n{text}"),
    };
    wharf::start(config).await.expect("wharf starts")
}

fn public(wharf: &Running) -> SocketAddr {
    wharf.listener_addr("public").expect("listener `public`")
}

fn admin(wharf: &Running) -> SocketAddr {
    wharf.admin_addr().expect("an admin address")
}

/// The runtime state of one server, for what the API does not show.
fn server_state(wharf: &Running, pool: &str, address: SocketAddr) -> Arc<wharf::upstream::Server> {
    wharf
        .shared()
        .snapshot()
        .pool(pool)
        .and_then(|p| p.server(address))
        .cloned()
        .expect("server in pool")
}

/// An address on which nothing listens: a port bound then released.
async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    listener.local_addr().expect("local addr")
}

// ------------------------------------------------------------------ HTTP client

#[derive(Debug)]
struct Reply {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// One request on a new connection.
async fn request(addr: SocketAddr, method: Method, path: &str, body: &str) -> Reply {
    let what = format!("{method} {path} to {addr}");
    within(&what, async {
        let stream = TcpStream::connect(addr).await.expect("connect");
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("handshake");
        tokio::spawn(connection);
        // What the admin listener asks of a client without a token: a Host
        // naming it, and a JSON content type on state changes.
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(http::header::HOST, addr.to_string());
        if method == Method::POST {
            request = request.header(http::header::CONTENT_TYPE, "application/json");
        }
        let request = request
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        let response = sender.send_request(request).await.expect("response");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    })
    .await
}

async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, Method::GET, path, "").await
}

/// `POST /api/pools/{pool}/servers/{address}/{state}`.
async fn set_state(wharf: &Running, pool: &str, address: &str, state: &str) -> Reply {
    let path = format!("/api/pools/{pool}/servers/{address}/{state}");
    request(admin(wharf), Method::POST, &path, "").await
}

/// `GET /api/pools/{pool}`, which must answer 200.
async fn pool_json(wharf: &Running, pool: &str) -> Value {
    let reply = get(admin(wharf), &format!("/api/pools/{pool}")).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    reply.json()
}

/// The JSON of server `address` in `pool`.
async fn server_json(wharf: &Running, pool: &str, address: SocketAddr) -> Value {
    let pool = pool_json(wharf, pool).await;
    pool["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .find(|s| s["address"] == address.to_string())
        .cloned()
        .unwrap_or_else(|| panic!("no server {address} in {pool}"))
}

// ------------------------------------------------------------------ HTTP backends

/// Holds `/hold` requests until released; shared by backends when a test
/// does not know which of them a request will reach.
struct Gate {
    held: watch::Sender<usize>,
    release: Semaphore,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate {
            held: watch::Sender::new(0),
            release: Semaphore::new(0),
        })
    }

    /// Waits until `n` requests in all have been held.
    async fn wait_held(&self, n: usize) {
        let mut held = self.held.subscribe();
        within("requests held by the gate", held.wait_for(|h| *h >= n))
            .await
            .expect("gate alive");
    }

    fn release(&self, n: usize) {
        self.release.add_permits(n);
    }
}

/// An HTTP server answering its name; `/hold` waits at its gate, if it has one.
struct Backend {
    addr: SocketAddr,
    requests: Arc<AtomicUsize>,
    /// Open connections from wharf.
    open: Arc<watch::Sender<usize>>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    async fn start(name: &'static str, gate: Option<Arc<Gate>>) -> Backend {
        let socket = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = socket.local_addr().expect("backend addr");
        let requests = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(watch::Sender::new(0usize));
        let (counter, connections) = (requests.clone(), open.clone());
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                let (requests, gate, open) = (counter.clone(), gate.clone(), connections.clone());
                open.send_modify(|n| *n += 1);
                tokio::spawn(async move {
                    let service = service_fn(move |request: Request<Incoming>| {
                        let gate = gate.clone();
                        requests.fetch_add(1, Ordering::SeqCst);
                        async move {
                            if let Some(gate) = gate.filter(|_| request.uri().path() == "/hold") {
                                gate.held.send_modify(|n| *n += 1);
                                gate.release.acquire().await.expect("gate open").forget();
                            }
                            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(name))))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                    open.send_modify(|n| *n -= 1);
                });
            }
        });
        Backend {
            addr,
            requests,
            open,
            task,
        }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }

    fn open_connections(&self) -> usize {
        *self.open.borrow()
    }

    async fn wait_open_connections(&self, what: &str, wanted: usize) {
        let mut open = self.open.subscribe();
        within(what, open.wait_for(|n| *n == wanted))
            .await
            .expect("backend alive");
    }
}

// ------------------------------------------------------------------ upgrade backend

/// A raw TCP server that answers any request head with a websocket 101 and
/// then echoes bytes until wharf closes the connection.
struct EchoBackend {
    addr: SocketAddr,
    /// Tunnels whose connection wharf has closed.
    closed: Arc<watch::Sender<usize>>,
    task: JoinHandle<()>,
}

impl Drop for EchoBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl EchoBackend {
    async fn start() -> EchoBackend {
        let socket = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = socket.local_addr().expect("backend addr");
        let closed = Arc::new(watch::Sender::new(0usize));
        let closed_count = closed.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = socket.accept().await {
                let closed = closed_count.clone();
                tokio::spawn(async move {
                    let Some(early) = read_head(&mut stream).await else {
                        return;
                    };
                    // `x-raw`, not `websocket`: these bytes are not frames.
                    let answer = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x-raw\r\n\
                                  Connection: Upgrade\r\n\r\n";
                    if stream.write_all(answer.as_bytes()).await.is_err()
                        || stream.write_all(&early).await.is_err()
                    {
                        return;
                    }
                    let (mut from, mut to) = stream.split();
                    let _ = tokio::io::copy(&mut from, &mut to).await;
                    closed.send_modify(|n| *n += 1);
                });
            }
        });
        EchoBackend { addr, closed, task }
    }

    async fn wait_closed(&self, n: usize) {
        let mut closed = self.closed.subscribe();
        within(
            "the backend sees the tunnel closed",
            closed.wait_for(|c| *c >= n),
        )
        .await
        .expect("backend alive");
    }
}

/// Reads an HTTP head (up to 8 KiB); returns the bytes read past it.
async fn read_head(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(buf.split_off(end + 4));
        }
        if buf.len() > 8192 {
            return None;
        }
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Opens a raw (`x-raw`) tunnel through wharf; returns the stream and the status of the answer.
async fn open_tunnel(wharf: &Running) -> (TcpStream, String) {
    within("the upgrade answer", async {
        let mut stream = TcpStream::connect(public(wharf)).await.expect("connect");
        let head = "GET /ws HTTP/1.1\r\nHost: app.test\r\nConnection: Upgrade\r\n\
                    Upgrade: x-raw\r\n\r\n";
        stream
            .write_all(head.as_bytes())
            .await
            .expect("send upgrade");
        let mut answer = Vec::new();
        let mut byte = [0u8; 1];
        while !answer.ends_with(b"\r\n\r\n") {
            if stream.read(&mut byte).await.expect("read answer") == 0 {
                break;
            }
            answer.push(byte[0]);
        }
        let status_line = String::from_utf8_lossy(&answer)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned();
        (stream, status_line)
    })
    .await
}

/// Sends `text` through the tunnel and checks that it comes back.
async fn echo(stream: &mut TcpStream, text: &str) {
    within("the echo", async {
        stream.write_all(text.as_bytes()).await.expect("send");
        let mut back = vec![0u8; text.len()];
        stream.read_exact(&mut back).await.expect("echo back");
        assert_eq!(String::from_utf8_lossy(&back), text);
    })
    .await
}

// ------------------------------------------------------------------ GET /api/pools

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_pools_shows_the_config_and_the_live_state() {
    let gate = Gate::new();
    let a = Backend::start("a", Some(gate.clone())).await;
    let b = Backend::start("b", Some(gate.clone())).await;
    let dead = refused_addr().await;
    let pools = format!(
        r#"
[pool.down]
servers = ["{dead}"]
retries = 0
ejection = {{ base_time = "10s", max_time = "20s" }}

[pool.app]
servers = [{{ address = "{a}", weight = 3 }}, "{b}"]
balance = "least_conn"
max_connections = 10
queue_size = 5
"#,
        a = a.addr,
        b = b.addr
    );
    let wharf = start_wharf(&[("/down", "down")], "app", &pools).await;

    let reply = get(admin(&wharf), "/api/pools").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.headers["content-type"], "application/json");
    let all = reply.json();
    let names: Vec<&str> = all["pools"]
        .as_array()
        .expect("pools")
        .iter()
        .map(|p| p["name"].as_str().expect("name"))
        .collect();
    assert_eq!(names, ["down", "app"], "pools in config order");

    let app = &all["pools"][1];
    assert_eq!(app["balance"], "least_conn");
    assert_eq!(app["max_connections"], 10);
    assert_eq!(app["queue_size"], 5);
    assert_eq!(app["queued"], 0);
    assert_eq!(all["pools"][0]["balance"], "round_robin");
    assert_eq!(all["pools"][0]["max_connections"], Value::Null);
    let servers = app["servers"].as_array().expect("servers");
    assert_eq!(servers.len(), 2);
    assert_eq!(servers[0]["address"], a.addr.to_string());
    assert_eq!(servers[0]["weight"], 3);
    assert_eq!(servers[1]["address"], b.addr.to_string());
    assert_eq!(servers[1]["weight"], 1);
    for server in servers {
        assert_eq!(server["active"], 0, "{server}");
        assert_eq!(server["serving"], true, "{server}");
        assert_eq!(server["health"]["state"], "up", "{server}");
        assert_eq!(server["health"]["count"], Value::Null, "{server}");
        assert_eq!(server["admin"], "ready", "{server}");
        assert_eq!(server["ejected"], false, "{server}");
        assert_eq!(server["ejected_remaining_ms"], Value::Null, "{server}");
        assert_eq!(server["history"], serde_json::json!([]), "{server}");
    }

    // A request in flight shows as active on the server that has it.
    let held = tokio::spawn({
        let addr = public(&wharf);
        async move { get(addr, "/hold").await }
    });
    gate.wait_held(1).await;
    let (busy, other) = if a.requests() == 1 {
        (a.addr, b.addr)
    } else {
        (b.addr, a.addr)
    };
    assert_eq!(server_json(&wharf, "app", busy).await["active"], 1);
    assert_eq!(server_json(&wharf, "app", other).await["active"], 0);
    gate.release(1);
    assert_eq!(held.await.expect("request task").status, 200);
    eventually("the finished request to leave `active`", async || {
        server_json(&wharf, "app", busy).await["active"] == 0
    })
    .await;

    // A server that refuses connections is ejected, with the time left and why.
    let before_ms = unix_ms_now();
    assert_eq!(get(public(&wharf), "/down").await.status, 502);
    let after_ms = unix_ms_now();
    let down = server_json(&wharf, "down", dead).await;
    assert_eq!(down["ejected"], true, "{down}");
    assert_eq!(down["serving"], false, "{down}");
    assert_eq!(
        down["health"]["state"], "up",
        "ejection is not health: {down}"
    );
    let remaining = down["ejected_remaining_ms"].as_u64().expect("remaining ms");
    assert!((1..=10_000).contains(&remaining), "{down}");
    let change = &down["history"][0];
    assert_eq!(change["what"], "ejected for 10s", "{down}");
    assert!(
        change["cause"].as_str().expect("cause").contains("refused"),
        "{down}"
    );
    let at_ms = change["at_unix_ms"].as_i64().expect("at_unix_ms");
    assert!(
        (before_ms..=after_ms).contains(&at_ms),
        "{at_ms} not in {before_ms}..={after_ms}"
    );
    let at = change["at"].as_str().expect("at");
    assert!(
        at.len() == 24 && at.ends_with('Z') && at.as_bytes()[10] == b'T',
        "not RFC 3339 UTC with milliseconds: {at}"
    );

    // Admin changes are recorded, most recent first, with the API's client as cause.
    assert_eq!(
        set_state(&wharf, "app", &b.addr.to_string(), "drain")
            .await
            .status,
        200
    );
    let reply = set_state(&wharf, "app", &b.addr.to_string(), "ready").await;
    assert_eq!(reply.status, 200);
    let server = reply.json();
    assert_eq!(server["address"], b.addr.to_string());
    assert_eq!(server["admin"], "ready");
    let history = server["history"].as_array().expect("history");
    assert_eq!(history.len(), 2, "{server}");
    assert_eq!(history[0]["what"], "admin drain → ready");
    assert_eq!(history[1]["what"], "admin ready → drain");
    let cause = history[0]["cause"].as_str().expect("cause");
    assert!(cause.starts_with("admin API from 127.0.0.1:"), "{cause}");
    assert!(history[0]["at_unix_ms"].as_i64() >= history[1]["at_unix_ms"].as_i64());
}

fn unix_ms_now() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970");
    i64::try_from(since.as_millis()).expect("ms fit")
}

// ------------------------------------------------------------------ drain and maintenance

/// Two servers, `a` (whose `/hold` waits at `gate`) and `b`; `a` is put in
/// `state` while it has a request in flight and an idle connection.
async fn drain_like(state: &str) {
    let gate = Gate::new();
    let a = Backend::start("a", Some(gate.clone())).await;
    let b = Backend::start("b", None).await;
    let pools = format!(
        "[pool.app]\nservers = [\"{}\", \"{}\"]\ntimeouts = {{ server_idle = \"60s\" }}\n",
        a.addr, b.addr
    );
    let wharf = start_wharf(&[], "app", &pools).await;
    let addr = public(&wharf);

    // A request in flight to `a`: `b` answers `/hold` at once, so try until `a` has one.
    let mut in_flight = None;
    for _ in 0..4 {
        let mut task = tokio::spawn(async move { get(addr, "/hold").await });
        tokio::select! {
            () = gate.wait_held(1) => { in_flight = Some(task); break; }
            reply = &mut task => assert_eq!(reply.expect("request task").body, "b"),
        }
    }
    let in_flight = in_flight.expect("round robin sends a request to `a`");
    // And an idle keep-alive connection to `a`, beside the busy one.
    let mut reached_a = false;
    for _ in 0..4 {
        if get(addr, "/").await.body == "a" {
            reached_a = true;
            break;
        }
    }
    assert!(reached_a, "round robin sends a request to `a`");
    let a_state = server_state(&wharf, "app", a.addr);
    eventually("a's connection to go back to the idle pool", async || {
        a_state.idle.len() == 1
    })
    .await;
    assert_eq!(a.open_connections(), 2);

    let reply = set_state(&wharf, "app", &a.addr.to_string(), state).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let server = reply.json();
    assert_eq!(server["admin"], state);
    assert_eq!(server["serving"], false);
    assert_eq!(server["active"], 1, "the request in flight: {server}");
    assert_eq!(server["idle_connections"], 0, "{server}");

    // Its idle connection is closed at once; the busy one stays.
    a.wait_open_connections("a's idle connection to be closed", 1)
        .await;
    assert_eq!(a_state.idle.len(), 0);

    // New requests all go to `b`.
    let a_requests = a.requests();
    for i in 0..10 {
        let reply = get(addr, &format!("/{i}")).await;
        assert_eq!((reply.status, reply.body.as_str()), (200, "b"));
    }
    assert_eq!(
        a.requests(),
        a_requests,
        "a drained server got new requests"
    );

    // The request in flight completes normally.
    gate.release(1);
    let reply = within("the request in flight", in_flight)
        .await
        .expect("request task");
    assert_eq!((reply.status, reply.body.as_str()), (200, "a"));
    eventually("the finished request to leave `active`", async || {
        server_json(&wharf, "app", a.addr).await["active"] == 0
    })
    .await;
    assert_eq!(server_json(&wharf, "app", a.addr).await["admin"], state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_stops_new_requests_finishes_those_in_flight_and_closes_idle_connections() {
    drain_like("drain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_stops_new_requests_like_drain() {
    drain_like("maintenance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_puts_a_drained_server_back_in_rotation() {
    let a = Backend::start("a", None).await;
    let b = Backend::start("b", None).await;
    let pools = format!("[pool.app]\nservers = [\"{}\", \"{}\"]\n", a.addr, b.addr);
    let wharf = start_wharf(&[], "app", &pools).await;
    let addr = public(&wharf);

    assert_eq!(
        set_state(&wharf, "app", &a.addr.to_string(), "drain")
            .await
            .status,
        200
    );
    for _ in 0..6 {
        assert_eq!(get(addr, "/").await.body, "b");
    }
    assert_eq!(a.requests(), 0);

    let reply = set_state(&wharf, "app", &a.addr.to_string(), "ready").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["serving"], true);
    let mut answered_by_a = 0;
    for _ in 0..6 {
        let reply = get(addr, "/").await;
        assert_eq!(reply.status, 200);
        answered_by_a += usize::from(reply.body == "a");
    }
    assert_eq!(answered_by_a, 3, "round robin over two ready servers");
    assert_eq!(a.requests(), 3);
}

/// A websocket open to the only server of pool `ws` when it is put in
/// `state` keeps working, then is closed once `drain_timeout` has passed.
async fn tunnel_outlives_drain_until_the_drain_timeout(state: &str) {
    const DRAIN_TIMEOUT: Duration = Duration::from_millis(500);
    let echo_backend = EchoBackend::start().await;
    let pools = format!(
        "[pool.ws]\nservers = [\"{}\"]\ndrain_timeout = \"{}ms\"\n",
        echo_backend.addr,
        DRAIN_TIMEOUT.as_millis()
    );
    let wharf = start_wharf(&[], "ws", &pools).await;
    let server = echo_backend.addr;

    let (mut tunnel, status) = open_tunnel(&wharf).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    echo(&mut tunnel, "before").await;
    assert_eq!(
        server_json(&wharf, "ws", server).await["active"],
        1,
        "the tunnel"
    );

    let drained_at = Instant::now();
    let reply = set_state(&wharf, "ws", &server.to_string(), state).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["active"], 1, "the tunnel is still open");

    // The tunnel keeps working; a new one cannot open.
    echo(&mut tunnel, "after the drain began").await;
    let (_, status) = open_tunnel(&wharf).await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable");

    // At the drain timeout, and not before, wharf closes both sides.
    let mut rest = Vec::new();
    let read = within("the tunnel to close", tunnel.read_to_end(&mut rest)).await;
    let closed_after = drained_at.elapsed();
    assert!(
        matches!(read, Ok(0)),
        "unexpected bytes or error: {read:?} {rest:?}"
    );
    assert!(
        closed_after >= DRAIN_TIMEOUT,
        "closed {closed_after:?} after the drain"
    );
    echo_backend.wait_closed(1).await;
    eventually("the closed tunnel to leave `active`", async || {
        server_json(&wharf, "ws", server).await["active"] == 0
    })
    .await;

    // Ready: tunnels open again, and stay open past the old deadline.
    assert_eq!(
        set_state(&wharf, "ws", &server.to_string(), "ready")
            .await
            .status,
        200
    );
    let (mut tunnel, status) = open_tunnel(&wharf).await;
    assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
    echo(&mut tunnel, "ready again").await;
    tokio::time::sleep(DRAIN_TIMEOUT + Duration::from_millis(100)).await;
    echo(&mut tunnel, "still open").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_keeps_a_tunnel_open_until_the_drain_timeout() {
    tunnel_outlives_drain_until_the_drain_timeout("drain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_keeps_a_tunnel_open_until_the_drain_timeout() {
    tunnel_outlives_drain_until_the_drain_timeout("maintenance").await;
}

/// Tunnels that are not websockets have no close frame: when their server
/// is drained, each is closed at a moment spread over the pool's
/// `drain_window`, so that their clients come back a few at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_other_tunnels_spread_over_the_drain_window() {
    const WINDOW: Duration = Duration::from_secs(2);
    const TUNNELS: usize = 20;
    let echo_backend = EchoBackend::start().await;
    let server = echo_backend.addr;
    let pools = format!(
        "[pool.ws]\nservers = [\"{server}\"]\ndrain_window = \"{}ms\"\n",
        WINDOW.as_millis()
    );
    let wharf = start_wharf(&[], "ws", &pools).await;
    let mut tunnels = Vec::new();
    for i in 0..TUNNELS {
        let (mut tunnel, status) = open_tunnel(&wharf).await;
        assert_eq!(status, "HTTP/1.1 101 Switching Protocols");
        echo(&mut tunnel, &format!("tunnel {i}")).await;
        tunnels.push(tunnel);
    }
    let drained_at = Instant::now();
    let reply = set_state(&wharf, "ws", &server.to_string(), "drain").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let closes: Vec<_> = tunnels
        .into_iter()
        .map(|mut tunnel| {
            tokio::spawn(async move {
                let mut rest = Vec::new();
                // A close or a reset: either way the tunnel is over.
                let read = tunnel.read_to_end(&mut rest).await;
                assert!(
                    rest.is_empty(),
                    "bytes after the drain: {rest:?} ({read:?})"
                );
                drained_at.elapsed()
            })
        })
        .collect();
    let mut times = Vec::new();
    for close in closes {
        let at = support::within_for(WINDOW + WAIT, "a tunnel closed by the drain", close)
            .await
            .expect("the reader");
        times.push(at);
    }
    support::assert_spread_over(
        WINDOW,
        &mut times,
        &format!("{TUNNELS} x-raw tunnels closed"),
        "",
    );
    echo_backend.wait_closed(TUNNELS).await;
}

/// A connection whose request was in flight when its server was drained is
/// closed once the request completes, not kept idle for a server that will
/// get no requests (and that the operator is waiting to see quiet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_freed_after_drain_is_closed_not_kept_idle() {
    let gate = Gate::new();
    let a = Backend::start("a", Some(gate.clone())).await;
    let pools = format!(
        "[pool.app]\nservers = [\"{}\"]\ntimeouts = {{ server_idle = \"60s\" }}\n",
        a.addr
    );
    let wharf = start_wharf(&[], "app", &pools).await;
    let addr = public(&wharf);

    let in_flight = tokio::spawn(async move { get(addr, "/hold").await });
    gate.wait_held(1).await;
    let reply = set_state(&wharf, "app", &a.addr.to_string(), "drain").await;
    assert_eq!(reply.status, 200);
    gate.release(1);
    let reply = within("the request in flight", in_flight)
        .await
        .expect("task");
    assert_eq!((reply.status, reply.body.as_str()), (200, "a"));
    a.wait_open_connections("the drained server's last connection to close", 0)
        .await;
    assert_eq!(server_state(&wharf, "app", a.addr).idle.len(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_the_admin_api() {
    let a = Backend::start("a", None).await;
    let pools = format!("[pool.app]\nservers = [\"{}\"]\n", a.addr);
    let wharf = start_wharf(&[], "app", &pools).await;
    let api = admin(&wharf);
    // A keep-alive connection left open after one request.
    let mut open = TcpStream::connect(api).await.expect("connect");
    open.write_all(format!("GET /api/pools HTTP/1.1\r\nHost: {api}\r\n\r\n").as_bytes())
        .await
        .expect("send");
    let mut head = [0u8; 15];
    within("the first answer", open.read_exact(&mut head))
        .await
        .expect("answer");
    assert_eq!(&head, b"HTTP/1.1 200 OK");

    within("wharf to shut down", wharf.shutdown()).await;
    let mut rest = Vec::new();
    let _ = within(
        "the open admin connection to close",
        open.read_to_end(&mut rest),
    )
    .await;
    assert!(
        TcpStream::connect(api).await.is_err(),
        "the admin port still accepts"
    );
}

// ------------------------------------------------------------------ errors

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pools_servers_states_paths_and_methods_get_json_errors() {
    let a = Backend::start("a", None).await;
    let pools = format!(
        "[pool.app]\nservers = [\"{}\"]\n\n[pool.v6]\nservers = [\"[::1]:3000\", \"[2001:db8::7]:80\"]\n",
        a.addr
    );
    let wharf = start_wharf(&[], "app", &pools).await;
    let api = admin(&wharf);
    let a_addr = a.addr.to_string();

    let cases: &[(Method, String, u16)] = &[
        (Method::GET, "/api/pools/nope".into(), 404),
        (
            Method::POST,
            format!("/api/pools/nope/servers/{a_addr}/drain"),
            404,
        ),
        (
            Method::POST,
            "/api/pools/app/servers/127.0.0.1:1/drain".into(),
            404,
        ),
        (
            Method::POST,
            "/api/pools/app/servers/[::1]:3000/drain".into(),
            404,
        ),
        (
            Method::POST,
            "/api/pools/app/servers/nowhere/drain".into(),
            400,
        ),
        (
            Method::POST,
            "/api/pools/app/servers/127.0.0.1/drain".into(),
            400,
        ),
        (
            Method::POST,
            format!("/api/pools/app/servers/{a_addr}/off"),
            400,
        ),
        (
            Method::POST,
            format!("/api/pools/app/servers/{a_addr}/Drain"),
            400,
        ),
        (Method::POST, "/api/pools/%zz".into(), 400),
        (Method::GET, "/nope".into(), 404),
        (Method::GET, "/api".into(), 404),
        (Method::GET, "/api/pools/".into(), 404),
        (Method::GET, "/api/pools/app/servers".into(), 404),
        (Method::GET, format!("/api/pools/app/servers/{a_addr}"), 404),
        (
            Method::POST,
            format!("/api/pools/app/servers/{a_addr}/drain/now"),
            404,
        ),
    ];
    for (method, path, status) in cases {
        let reply = request(api, method.clone(), path, "").await;
        assert_eq!(reply.status, *status, "{method} {path}: {}", reply.body);
        let error = reply.json();
        assert!(
            error["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{method} {path}: {error}"
        );
    }

    for (method, path, allow) in [
        (
            Method::GET,
            format!("/api/pools/app/servers/{a_addr}/drain"),
            "POST",
        ),
        (
            Method::PUT,
            format!("/api/pools/app/servers/{a_addr}/drain"),
            "POST",
        ),
        (Method::POST, "/api/pools".into(), "GET, HEAD"),
        (Method::DELETE, "/api/pools/app".into(), "GET, HEAD"),
    ] {
        let reply = request(api, method.clone(), &path, "").await;
        assert_eq!(reply.status, 405, "{method} {path}");
        assert_eq!(reply.headers["allow"], allow, "{method} {path}");
    }

    // HEAD answers as GET, without a body.
    let reply = request(api, Method::HEAD, "/api/pools", "").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, ""));

    // A body is read up to 1 KiB and ignored; a longer one is refused.
    let reply = request(
        api,
        Method::POST,
        &format!("/api/pools/app/servers/{a_addr}/ready"),
        "{}",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let reply = request(
        api,
        Method::POST,
        &format!("/api/pools/app/servers/{a_addr}/drain"),
        &"x".repeat(2048),
    )
    .await;
    assert_eq!(reply.status, 413, "{}", reply.body);

    // None of that changed anything.
    let app = server_json(&wharf, "app", a.addr).await;
    assert_eq!(app["admin"], "ready", "{app}");
    assert_eq!(app["history"], serde_json::json!([]), "{app}");

    // IPv6 addresses, bracketed as in the config or percent-encoded.
    let reply = set_state(&wharf, "v6", "[::1]:3000", "drain").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["address"], "[::1]:3000");
    assert_eq!(reply.json()["admin"], "drain");
    let reply = set_state(&wharf, "v6", "%5B%3A%3A1%5D%3A3000", "maintenance").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["admin"], "maintenance");
    let reply = set_state(&wharf, "v6", "%5b2001:db8:0::7%5d%3a80", "drain").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["address"], "[2001:db8::7]:80");
    let v6 = pool_json(&wharf, "v6").await;
    assert_eq!(v6["servers"][0]["admin"], "maintenance");
    assert_eq!(v6["servers"][1]["admin"], "drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_do_not_stop_the_admin_api() {
    let a = Backend::start("a", None).await;
    let wharf = start_wharf(
        &[],
        "app",
        &format!("[pool.app]\nservers = [\"{}\"]\n", a.addr),
    )
    .await;
    let api = admin(&wharf);
    let inputs: &[&[u8]] = &[
        b"GARBAGE\r\n\r\n",
        b"\x00\xff\xfe\r\n\r\n",
        b"GET /api/pools/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /api/pools/%C3%28 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        b"POST /api/pools/app/servers/x/drain HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\n",
        b"POST /api/pools HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"GET /api/pools HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        b"GET /api/pools HTTP/1.1\r\n",
    ];
    for input in inputs {
        within("a malformed request to be answered or dropped", async {
            let mut stream = TcpStream::connect(api).await.expect("connect");
            stream.write_all(input).await.expect("send");
            stream.shutdown().await.expect("half-close");
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer).await;
            if !answer.is_empty() {
                let answer = String::from_utf8_lossy(&answer);
                assert!(answer.starts_with("HTTP/1.1 4"), "{input:?} got {answer}");
            }
        })
        .await;
    }
    let mut huge_head = b"GET /api/pools HTTP/1.1\r\nHost: x\r\n".to_vec();
    huge_head.extend(
        std::iter::repeat_n(b"X-Filler: 0123456789abcdef\r\n".as_slice(), 20_000).flatten(),
    );
    within("an oversized head to be refused", async {
        let mut stream = TcpStream::connect(api).await.expect("connect");
        // wharf may close before reading it all; either way it must not hang.
        let _ = stream.write_all(&huge_head).await;
        let mut answer = Vec::new();
        let _ = stream.read_to_end(&mut answer).await;
        assert!(
            answer.is_empty()
                || answer.starts_with(b"HTTP/1.1 431")
                || answer.starts_with(b"HTTP/1.1 400"),
            "{}",
            String::from_utf8_lossy(&answer)
        );
    })
    .await;
    let reply = get(api, "/api/pools").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["pools"][0]["servers"][0]["admin"], "ready");
}

// ------------------------------------------------------------------ queue

/// One slow server, one request at a time, a queue of one for 200 ms.
const QUEUE_TIMEOUT: Duration = Duration::from_millis(200);

async fn start_queue_pool(backend: &Backend) -> Running {
    let pools = format!(
        "[pool.q]\nservers = [\"{}\"]\nmax_connections = 1\nqueue_size = 1\n\
         timeouts = {{ queue = \"{}ms\" }}\n",
        backend.addr,
        QUEUE_TIMEOUT.as_millis()
    );
    start_wharf(&[], "q", &pools).await
}

async fn wait_queued(wharf: &Running, n: u64) {
    eventually(&format!("{n} request(s) queued"), async || {
        pool_json(wharf, "q").await["queued"] == n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_max_connections_waits_for_a_free_slot() {
    let gate = Gate::new();
    let slow = Backend::start("slow", Some(gate.clone())).await;
    let wharf = start_queue_pool(&slow).await;
    let addr = public(&wharf);

    let first = tokio::spawn(async move { get(addr, "/hold").await });
    gate.wait_held(1).await;
    let second = tokio::spawn(async move { get(addr, "/second").await });
    wait_queued(&wharf, 1).await;
    assert_eq!(
        slow.requests(),
        1,
        "the queued request must not reach the server yet"
    );

    gate.release(1);
    let first = within("the first request", first).await.expect("task");
    assert_eq!((first.status, first.body.as_str()), (200, "slow"));
    let second = within("the queued request", second).await.expect("task");
    assert_eq!(
        (second.status, second.body.as_str()),
        (200, "slow"),
        "queued then served"
    );
    assert_eq!(slow.requests(), 2);
    assert_eq!(pool_json(&wharf, "q").await["queued"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_queue_size_or_the_queue_timeout_requests_get_503() {
    let gate = Gate::new();
    let slow = Backend::start("slow", Some(gate.clone())).await;
    let wharf = start_queue_pool(&slow).await;
    let addr = public(&wharf);

    let first = tokio::spawn(async move { get(addr, "/hold").await });
    gate.wait_held(1).await;
    let queued = tokio::spawn(async move {
        let started = Instant::now();
        (get(addr, "/queued").await, started.elapsed())
    });
    wait_queued(&wharf, 1).await;

    // The queue is full: 503 at once, not after the queue timeout.
    let started = Instant::now();
    let over = get(addr, "/over").await;
    let waited = started.elapsed();
    assert_eq!(over.status, 503, "{}", over.body);
    assert_eq!(over.body, "503 Service Unavailable: no server available\n");
    assert!(
        waited < QUEUE_TIMEOUT,
        "a request beyond the queue waited {waited:?}"
    );

    // The queued one gives up after the queue timeout.
    let (reply, waited) = within("the queued request", queued).await.expect("task");
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert!(waited >= QUEUE_TIMEOUT, "gave up after {waited:?}");
    assert_eq!(pool_json(&wharf, "q").await["queued"], 0);
    assert_eq!(
        slow.requests(),
        1,
        "only the first request reached the server"
    );

    gate.release(1);
    let first = within("the first request", first).await.expect("task");
    assert_eq!((first.status, first.body.as_str()), (200, "slow"));
}

/// A client that closes its connection while queued must not keep its place:
/// otherwise, after `queue_size` such clients, every request that has to
/// wait gets 503 at once, for as long as wharf runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_the_queue_gives_up_its_place() {
    let gate = Gate::new();
    let slow = Backend::start("slow", Some(gate.clone())).await;
    let wharf = start_queue_pool(&slow).await;
    let addr = public(&wharf);

    let first = tokio::spawn(async move { get(addr, "/hold").await });
    gate.wait_held(1).await;
    let mut leaving = TcpStream::connect(addr).await.expect("connect");
    leaving
        .write_all(b"GET /leaving HTTP/1.1\r\nHost: app.test\r\n\r\n")
        .await
        .expect("send");
    wait_queued(&wharf, 1).await;
    drop(leaving);
    wait_queued(&wharf, 0).await;

    gate.release(1);
    let first = within("the first request", first).await.expect("task");
    assert_eq!(first.status, 200);
}

/// A request queued because every serving server is full goes to a server
/// as soon as the operator makes one ready, not after the queue timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_request_goes_to_a_server_made_ready() {
    let gate = Gate::new();
    let a = Backend::start("a", Some(gate.clone())).await;
    let b = Backend::start("b", None).await;
    let pools = format!(
        "[pool.app]\nservers = [\"{}\", \"{}\"]\nmax_connections = 1\n\
         timeouts = {{ queue = \"5s\" }}\n",
        a.addr, b.addr
    );
    let wharf = start_wharf(&[], "app", &pools).await;
    let addr = public(&wharf);
    assert_eq!(
        set_state(&wharf, "app", &b.addr.to_string(), "drain")
            .await
            .status,
        200
    );

    let first = tokio::spawn(async move { get(addr, "/hold").await });
    gate.wait_held(1).await;
    let queued = tokio::spawn(async move { get(addr, "/queued").await });
    eventually("a request queued", async || {
        pool_json(&wharf, "app").await["queued"] == 1
    })
    .await;

    let made_ready = Instant::now();
    assert_eq!(
        set_state(&wharf, "app", &b.addr.to_string(), "ready")
            .await
            .status,
        200
    );
    let reply = within("the queued request", queued).await.expect("task");
    assert_eq!((reply.status, reply.body.as_str()), (200, "b"));
    let waited = made_ready.elapsed();
    assert!(
        waited < Duration::from_secs(1),
        "answered {waited:?} after `ready`"
    );

    gate.release(1);
    assert_eq!(
        within("the first request", first)
            .await
            .expect("task")
            .status,
        200
    );
}
