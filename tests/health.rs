//! Active health checks and passive ejection, end to end: a real wharf in
//! front of in-process hyper backends on 127.0.0.1, whose health endpoint and
//! answers the tests turn up and down, kill and restart.
//!
//! Every check uses `interval = 100ms`, `timeout = 50ms`, `rise = 2`,
//! `fall = 2`. A transition must happen within `fall` (or `rise`) intervals
//! plus their 10% jitter, one check timeout, and a margin of three intervals
//! for scheduling and polling: [`DOWN_BOUND`] and [`UP_BOUND`]. Every wait
//! is a polling loop with a deadline; the measured times are printed
//! (`cargo test --test health -- --nocapture` shows them).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use wharf::Running;
use wharf::upstream::{AdminState, Health, Server};

mod support;

use support::{refused_addr, wharf_for};

const INTERVAL: Duration = Duration::from_millis(100);
const CHECK_TIMEOUT: Duration = Duration::from_millis(50);
const RISE: u32 = 2;
const FALL: u32 = 2;
/// `health = { ... }` with the values above, plus `extra` keys (`path`, `host`).
fn health_toml(extra: &str) -> String {
    format!(
        "health = {{ {extra}interval = \"100ms\", timeout = \"50ms\", rise = {RISE}, fall = {FALL} }}"
    )
}

/// `n` checks apart, with the longest jitter (+10%).
fn checks(n: u32) -> Duration {
    INTERVAL * 11 / 10 * n
}
/// Room for scheduling, the polling pace and slow CI machines.
const MARGIN: Duration = Duration::from_millis(300);

/// The longest a server may keep its health after it fails: `fall` checks
/// (220ms), one timeout (50ms), the margin (300ms) = 570ms.
const DOWN_BOUND: Duration = Duration::from_millis(570);
/// The same for coming back up after `rise` passing checks: 570ms.
const UP_BOUND: Duration = Duration::from_millis(570);
/// A fresh wharf waits up to one interval before its first check.
const FIRST_CHECK: Duration = INTERVAL;

/// How long any helper waits before failing the test outright.
const GIVE_UP: Duration = Duration::from_secs(10);
/// The pace of polling loops.
const PACE: Duration = Duration::from_millis(5);

#[test]
fn bounds_are_what_the_docs_say() {
    assert_eq!(DOWN_BOUND, checks(FALL) + CHECK_TIMEOUT + MARGIN);
    assert_eq!(UP_BOUND, checks(RISE) + CHECK_TIMEOUT + MARGIN);
}

// ------------------------------------------------------------------ backends

/// The headers of the last `/health` request a backend saw.
#[derive(Debug, Clone, Default)]
struct HealthHead {
    host: String,
    user_agent: String,
    connection: String,
}

/// What a backend answers, and what it saw; shared with the test.
#[derive(Debug)]
struct Knobs {
    name: String,
    /// The status of `/health`.
    health_status: AtomicU16,
    /// The status of every other path (whose body is the backend's name).
    status: AtomicU16,
    health_hits: AtomicUsize,
    hits: AtomicUsize,
    health_head: Mutex<Option<HealthHead>>,
}

/// An HTTP/1.1 backend on 127.0.0.1 that answers its own name, and can be
/// killed (listener and every connection closed) and restarted on its port.
struct Backend {
    addr: SocketAddr,
    knobs: Arc<Knobs>,
    running: Option<(watch::Sender<bool>, JoinHandle<()>)>,
}

impl Backend {
    async fn start(name: &str) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a backend");
        let addr = listener.local_addr().expect("backend address");
        let knobs = Arc::new(Knobs {
            name: name.to_owned(),
            health_status: AtomicU16::new(200),
            status: AtomicU16::new(200),
            health_hits: AtomicUsize::new(0),
            hits: AtomicUsize::new(0),
            health_head: Mutex::new(None),
        });
        let running = Some(serve(listener, knobs.clone()));
        Backend {
            addr,
            knobs,
            running,
        }
    }

    /// Closes the listener and every open connection; connections to the
    /// port are refused once this returns.
    async fn kill(&mut self) {
        let (stop, task) = self.running.take().expect("the backend runs");
        let _ = stop.send(true);
        task.await.expect("the backend stops cleanly");
    }

    /// Listens on the same port again.
    async fn restart(&mut self) {
        assert!(self.running.is_none(), "the backend still runs");
        let deadline = Instant::now() + Duration::from_secs(2);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("rebinding {}: {e}; trying again", self.addr);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot listen on {} again: {e}", self.addr),
            }
        };
        self.running = Some(serve(listener, self.knobs.clone()));
    }

    fn set_health(&self, status: u16) {
        self.knobs.health_status.store(status, Ordering::SeqCst);
    }

    fn health_hits(&self) -> usize {
        self.knobs.health_hits.load(Ordering::SeqCst)
    }

    fn health_head(&self) -> Option<HealthHead> {
        self.knobs.health_head.lock().unwrap().clone()
    }
}

/// Accepts on `listener` until told to stop; then closes it and waits for
/// every connection task to end.
fn serve(listener: TcpListener, knobs: Arc<Knobs>) -> (watch::Sender<bool>, JoinHandle<()>) {
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                _ = stopped.wait_for(|&s| s) => break,
            };
            let Ok((stream, _)) = accepted else { continue };
            let knobs = knobs.clone();
            connections.spawn(async move {
                let service = service_fn(move |request| answer(knobs.clone(), request));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
            // Reap the finished ones, so the set does not grow.
            while connections.try_join_next().is_some() {}
        }
        drop(listener);
        connections.shutdown().await;
    });
    (stop, task)
}

async fn answer(
    knobs: Arc<Knobs>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |name: header::HeaderName| {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let (status, body) = if request.uri().path() == "/health" {
        *knobs.health_head.lock().unwrap() = Some(HealthHead {
            host: header(header::HOST),
            user_agent: header(header::USER_AGENT),
            connection: header(header::CONNECTION),
        });
        knobs.health_hits.fetch_add(1, Ordering::SeqCst);
        (knobs.health_status.load(Ordering::SeqCst), "ok".to_owned())
    } else {
        knobs.hits.fetch_add(1, Ordering::SeqCst);
        (knobs.status.load(Ordering::SeqCst), knobs.name.clone())
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).expect("a valid status");
    Ok(response)
}

// ------------------------------------------------------------------ wharf and a client

/// The pool of `support::one_pool_config`.
const POOL: &str = "web";

/// The runtime state of the server at `addr` in the pool.
fn server(running: &Running, addr: SocketAddr) -> Arc<Server> {
    let snapshot = running.shared().snapshot();
    let pool = snapshot.pool(POOL).expect("the pool");
    pool.server(addr).expect("a server of the pool").clone()
}

/// `GET /` through wharf on a new connection: the status and the body (the
/// answering backend's name, or wharf's error text).
async fn get(wharf: SocketAddr) -> (u16, String) {
    let reply = support::get(wharf, "app.test", "/").await;
    (reply.status.as_u16(), reply.text())
}

/// Polls the server's health until it is `wanted`; how long that took.
async fn wait_for_health(running: &Running, addr: SocketAddr, wanted: Health) -> Duration {
    support::wait_for_health(running, POOL, addr, wanted, GIVE_UP).await
}

/// The cause of the server's last recorded change.
fn last_cause(running: &Running, addr: SocketAddr) -> String {
    let state = server(running, addr).state();
    let change = state.history.back().expect("a recorded change");
    format!("{}: {}", change.what, change.cause)
}

fn assert_within(what: &str, took: Duration, bound: Duration) {
    println!("{what}: {took:?} (bound {bound:?})");
    assert!(took <= bound, "{what} took {took:?}, more than {bound:?}");
}

// ------------------------------------------------------------------ active checks

/// A server killed (refusing connections) stops getting requests within
/// `fall` checks, and gets them again within `rise` checks of restarting.
/// Retries and passive ejection are off, so that only the checks can take
/// it out: until then the client sees wharf's 502s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_server_leaves_within_fall_checks_and_returns_within_rise_checks() {
    let mut a = Backend::start("a").await;
    let b = Backend::start("b").await;
    let extra = format!(
        "{}\nretries = 0\nejection = {{ connect_failures = 0, server_errors = 0 }}",
        health_toml("path = \"/health\", ")
    );
    let (running, wharf) = wharf_for(&[a.addr, b.addr], &extra).await;

    // Both serve, and checks reach both.
    let start = Instant::now();
    let mut seen = (false, false);
    while !(seen.0 && seen.1 && a.health_hits() > 0 && b.health_hits() > 0) {
        assert!(
            start.elapsed() < GIVE_UP,
            "both backends never answered: {seen:?}"
        );
        let (status, body) = get(wharf).await;
        assert_eq!(status, 200, "{body}");
        seen.0 |= body == "a";
        seen.1 |= body == "b";
        tokio::time::sleep(PACE).await;
    }
    let head = a.health_head().expect("a health check");
    assert_eq!(
        head.host,
        a.addr.to_string(),
        "Host defaults to the server's address"
    );
    assert_eq!(head.user_agent, "wharf-health");
    assert_eq!(head.connection, "close");

    // Kill `a`: requests to it fail until checks take it out.
    a.kill().await;
    let killed = Instant::now();
    let mut failures = 0;
    let mut last_not_b = killed;
    let mut streak = 0;
    while streak < 10 {
        assert!(killed.elapsed() < GIVE_UP, "`a` never left the pool");
        let (status, body) = get(wharf).await;
        if status == 200 && body == "b" {
            streak += 1;
        } else {
            assert_eq!(status, 502, "a dead server gives 502: {body}");
            failures += 1;
            streak = 0;
            last_not_b = Instant::now();
        }
        tokio::time::sleep(PACE).await;
    }
    assert!(failures > 0, "the killed server got no request at all");
    let left = last_not_b - killed;
    assert_within("killed server out of traffic", left, DOWN_BOUND);
    assert_eq!(server(&running, a.addr).state().health, Health::Down);
    assert_eq!(
        last_cause(&running, a.addr),
        "health falling → down: connect refused"
    );

    // Restart `a` on its port: it gets requests again after `rise` checks.
    a.restart().await;
    let restarted = Instant::now();
    loop {
        assert!(restarted.elapsed() < GIVE_UP, "`a` never came back");
        let (status, body) = get(wharf).await;
        assert_eq!(status, 200, "only `b` serves meanwhile: {body}");
        if body == "a" {
            break;
        }
        tokio::time::sleep(PACE).await;
    }
    let back = restarted.elapsed();
    assert_within("restarted server back in traffic", back, UP_BOUND);
    // `rise` = 2 passing checks, at least 90ms apart, were needed.
    assert!(
        back >= INTERVAL * 9 / 10 * (RISE - 1),
        "back after {back:?}: fewer than {RISE} checks?"
    );
    assert_eq!(server(&running, a.addr).state().health, Health::Up);
    assert_eq!(last_cause(&running, a.addr), "health rising → up: HTTP 200");
}

/// Without `path`, the check is a TCP connect: a port that refuses
/// connections is down, and up again once something listens on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_check_marks_a_refusing_port_down_and_a_listening_one_up() {
    let live = Backend::start("live").await;
    let dead = refused_addr().await;
    let (running, _wharf) = wharf_for(&[live.addr, dead], &health_toml("")).await;

    let down = wait_for_health(&running, dead, Health::Down).await;
    assert_within("refusing port down", down, FIRST_CHECK + DOWN_BOUND);
    assert_eq!(
        last_cause(&running, dead),
        "health falling → down: connect refused"
    );
    let snapshot = running.shared().snapshot();
    let servers = &snapshot.pool(POOL).expect("the pool").servers;
    assert_eq!(servers[1].state().health, Health::Down);
    assert_eq!(servers[0].state().health, Health::Up);
    assert!(
        servers[0].state().history.is_empty(),
        "the live server changed state"
    );
    assert_eq!(live.health_hits(), 0, "a TCP check sent an HTTP request");

    // A listener accepts connections (through the kernel's backlog) even
    // without calling accept: that is enough for a TCP check.
    let listener = TcpListener::bind(dead)
        .await
        .expect("listen on the refusing port");
    let up = wait_for_health(&running, dead, Health::Up).await;
    assert_within("listening port up", up, UP_BOUND);
    assert_eq!(last_cause(&running, dead), "health rising → up: connected");
    drop(listener);
}

/// An HTTP check fails on a 5xx and passes on a 2xx, with the configured
/// `Host`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_check_follows_the_health_status() {
    let backend = Backend::start("a").await;
    let extra = health_toml("path = \"/health\", host = \"x\", ");
    let (running, _wharf) = wharf_for(&[backend.addr], &extra).await;

    let start = Instant::now();
    while backend.health_hits() == 0 {
        assert!(
            start.elapsed() < FIRST_CHECK + MARGIN,
            "no check within {:?}",
            start.elapsed()
        );
        tokio::time::sleep(PACE).await;
    }
    let head = backend.health_head().expect("a check");
    assert_eq!(head.host, "x");
    assert_eq!(head.user_agent, "wharf-health");

    backend.set_health(503);
    let down = wait_for_health(&running, backend.addr, Health::Down).await;
    assert_within("503 → down", down, DOWN_BOUND);
    assert_eq!(
        last_cause(&running, backend.addr),
        "health falling → down: HTTP 503"
    );

    backend.set_health(200);
    let up = wait_for_health(&running, backend.addr, Health::Up).await;
    assert_within("200 → up", up, UP_BOUND);
    assert_eq!(
        last_cause(&running, backend.addr),
        "health rising → up: HTTP 200"
    );
}

/// A server in maintenance is not checked (its health stays what it was),
/// and is checked again once ready.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn maintenance_stops_checks_and_ready_resumes_them() {
    let backend = Backend::start("a").await;
    let extra = health_toml("path = \"/health\", ");
    let (running, _wharf) = wharf_for(&[backend.addr], &extra).await;
    let server = server(&running, backend.addr);

    let start = Instant::now();
    while backend.health_hits() < 2 {
        assert!(start.elapsed() < GIVE_UP, "checks never ran");
        tokio::time::sleep(PACE).await;
    }

    server.set_admin(AdminState::Maintenance, "test");
    // A check already under way may still land; none may start after this.
    let at_maintenance = backend.health_hits();
    backend.set_health(503);
    let quiet = INTERVAL * 6;
    tokio::time::sleep(quiet).await;
    let during = backend.health_hits() - at_maintenance;
    println!("checks during {quiet:?} of maintenance: {during}");
    assert!(during <= 1, "{during} checks during maintenance");
    assert_eq!(
        server.state().health,
        Health::Up,
        "a 503 counted during maintenance"
    );

    backend.set_health(200);
    server.set_admin(AdminState::Ready, "test");
    let resumed = Instant::now();
    let at_ready = backend.health_hits();
    while backend.health_hits() < at_ready + 3 {
        assert!(
            resumed.elapsed() < checks(3) + MARGIN,
            "checks did not resume: {} in {:?}",
            backend.health_hits() - at_ready,
            resumed.elapsed()
        );
        tokio::time::sleep(PACE).await;
    }
    println!("3 checks after ready in {:?}", resumed.elapsed());
    assert_eq!(server.state().health, Health::Up);
}

/// Checks end with wharf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_checks() {
    let backend = Backend::start("a").await;
    let (running, _wharf) = wharf_for(&[backend.addr], &health_toml("path = \"/health\", ")).await;
    let start = Instant::now();
    while backend.health_hits() < 2 {
        assert!(start.elapsed() < GIVE_UP, "checks never ran");
        tokio::time::sleep(PACE).await;
    }
    // Held past the shutdown, so that only the shutdown can stop the checks.
    let held = server(&running, backend.addr);
    running.shutdown().await;
    let at_shutdown = backend.health_hits();
    tokio::time::sleep(INTERVAL * 5).await;
    let after = backend.health_hits() - at_shutdown;
    assert!(after <= 1, "{after} checks after shutdown");
    drop(held);
}

// ------------------------------------------------------------------ passive ejection

/// Three 503s in a row (gateway failures; a 500 does not count) eject a
/// server for `base_time` (300ms): it gets no request meanwhile, then it is
/// tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_eject_a_server_for_base_time() {
    let good = Backend::start("good").await;
    let bad = Backend::start("bad").await;
    bad.knobs.status.store(503, Ordering::SeqCst);
    let base_time = Duration::from_millis(300);
    let extra = "ejection = { server_errors = 3, base_time = \"300ms\", max_time = \"2s\" }";
    let (running, wharf) = wharf_for(&[good.addr, bad.addr], extra).await;

    let mut errors = 0;
    for _ in 0..20 {
        let (status, body) = get(wharf).await;
        match status {
            200 => assert_eq!(body, "good"),
            503 => {
                assert_eq!(body, "bad");
                errors += 1;
                if errors == 3 {
                    break;
                }
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(errors, 3, "503s never reached the client three times");
    let ejected = Instant::now();
    assert!(
        server(&running, bad.addr).state().ejected_until.is_some(),
        "not ejected"
    );
    let bad_hits = bad.knobs.hits.load(Ordering::SeqCst);

    let mut served_meanwhile = 0;
    let back = loop {
        assert!(
            ejected.elapsed() < GIVE_UP,
            "the ejected server never came back"
        );
        let (status, body) = get(wharf).await;
        if status == 503 {
            assert_eq!(body, "bad");
            break ejected.elapsed();
        }
        assert_eq!((status, body.as_str()), (200, "good"));
        served_meanwhile += 1;
        tokio::time::sleep(PACE).await;
    };
    println!("ejected server back after {back:?}; {served_meanwhile} requests served meanwhile");
    assert_eq!(bad.knobs.hits.load(Ordering::SeqCst), bad_hits + 1);
    assert!(
        back >= base_time - Duration::from_millis(20),
        "back after only {back:?}"
    );
    assert_within("ejected server back", back, base_time + MARGIN);
    assert!(
        served_meanwhile >= 10,
        "only {served_meanwhile} requests while ejected"
    );
}

/// A server that refuses connections, behind a healthy one: retries hide it
/// and ejection keeps it out, so the client sees only 200s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_server_behind_a_healthy_one_is_invisible() {
    let good = Backend::start("good").await;
    let dead = refused_addr().await;
    let (running, wharf) = wharf_for(&[dead, good.addr], "").await;
    for i in 0..20 {
        let (status, body) = get(wharf).await;
        assert_eq!((status, body.as_str()), (200, "good"), "request {i}");
    }
    assert!(
        server(&running, dead).state().ejected_until.is_some(),
        "never tried, never ejected"
    );
}
