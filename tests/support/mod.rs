//! Shared helpers for wharf's integration tests: wharf started from TOML text,
//! in-process backend servers that count and record what they see, and two
//! small HTTP/1.1 clients (hyper for well-formed requests, raw bytes for the
//! rest). Everything binds 127.0.0.1:0 and every wait is bounded by [`WAIT`].
//!
//! Each test binary uses a subset of these helpers.
#![allow(dead_code)]

pub mod accept_any;
pub mod browser;
pub mod pipe;
pub mod ws;

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::{JoinHandle, JoinSet};

pub use wharf::Running;
use wharf::upstream::{Health, ServerState};

/// The longest any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(20);

pub type BoxError = Box<dyn StdError + Send + Sync>;
/// The body type of every request and response the helpers build.
pub type TestBody = BoxBody<Bytes, BoxError>;

/// Runs `future`, failing the test if it takes longer than [`WAIT`].
pub async fn within<T>(what: &str, future: impl Future<Output = T>) -> T {
    within_for(WAIT, what, future).await
}

/// Runs `future`, failing the test if it takes longer than `limit`.
pub async fn within_for<T>(limit: Duration, what: &str, future: impl Future<Output = T>) -> T {
    match tokio::time::timeout(limit, future).await {
        Ok(value) => value,
        Err(_) => panic!("timed out after {limit:?}: {what}"),
    }
}

// ------------------------------------------------------------------ wharf

/// Parses `toml` and starts wharf; panics with every config error if the
/// config is invalid.
pub async fn start_wharf(toml: &str) -> Running {
    let config = match wharf::config::parse_str("test.toml", toml) {
        Ok(config) => config,
        Err(errors) => panic!("invalid test config:\n{errors}\n--- config ---\n{toml}"),
    };
    wharf::start(config).await.expect("wharf starts")
}

/// wharf started from `text` written to `dir/wharf.toml`, reloadable
/// (`Running::reload` re-reads that file).
pub async fn start_from_file(dir: &TempDir, text: &str) -> Running {
    let path = dir.write("wharf.toml", text);
    let config = wharf::config::load(&path).expect("a valid config");
    let options = wharf::StartOptions {
        config_path: Some(path),
        ..Default::default()
    };
    wharf::start_with(config, options)
        .await
        .expect("wharf starts")
}

/// The address of the listener called `public`, which every helper config uses.
pub fn public(running: &Running) -> SocketAddr {
    running
        .listener_addr("public")
        .expect("a listener called `public`")
}

/// `servers = [...]` for a pool, each with its weight.
pub fn servers_toml(servers: &[(SocketAddr, u32)]) -> String {
    let list: Vec<String> = servers
        .iter()
        .map(|(addr, weight)| format!("{{ address = \"{addr}\", weight = {weight} }}"))
        .collect();
    format!("servers = [{}]", list.join(", "))
}

/// A config with listener `public` on 127.0.0.1:0, one catch-all route to
/// pool `web`, and `web` made of `servers` (weight 1) plus `pool_extra` lines.
pub fn one_pool_config(servers: &[SocketAddr], pool_extra: &str) -> String {
    let weighted: Vec<(SocketAddr, u32)> = servers.iter().map(|&a| (a, 1)).collect();
    weighted_pool_config(&weighted, pool_extra)
}

/// wharf on [`one_pool_config`], and its `public` address.
pub async fn wharf_for(servers: &[SocketAddr], pool_extra: &str) -> (Running, SocketAddr) {
    let wharf = start_wharf(&one_pool_config(servers, pool_extra)).await;
    let addr = public(&wharf);
    (wharf, addr)
}

/// A config with listener `public` on 127.0.0.1:0 whose routes send each
/// `(path_prefix, pool)` of `routes` to its pool (an empty prefix: every
/// path), in order, then `pools` (`[pool.NAME]` tables).
pub fn prefix_routes_config(routes: &[(&str, &str)], pools: &str) -> String {
    let mut text = String::from("[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n");
    for (prefix, pool) in routes {
        text.push_str("\n[[listener.route]]\n");
        if !prefix.is_empty() {
            text.push_str(&format!("path_prefix = \"{prefix}\"\n"));
        }
        text.push_str(&format!("pool = \"{pool}\"\n"));
    }
    format!("{text}\n{pools}")
}

/// As [`one_pool_config`], with a weight per server.
pub fn weighted_pool_config(servers: &[(SocketAddr, u32)], pool_extra: &str) -> String {
    format!(
        r#"
[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[listener.route]]
pool = "web"

[pool.web]
{}
{pool_extra}
"#,
        servers_toml(servers)
    )
}

/// `config` with an admin listener on 127.0.0.1:0 (no token: loopback only).
pub fn with_admin(config: &str) -> String {
    format!("{config}\n[admin]\nbind = \"127.0.0.1:0\"\n")
}

/// The admin listener's address.
pub fn admin(running: &Running) -> SocketAddr {
    running.admin_addr().expect("an admin listener")
}

/// `POST path` on the admin listener (no token: loopback, with the JSON
/// content type a state change needs); fails the test unless it answers 200.
pub async fn admin_post(running: &Running, path: &str) {
    let admin = admin(running);
    let mut client = RawClient::connect(admin).await;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {admin}\r\nContent-Type: application/json\r\nContent-Length: 0\r\n\r\n"
    );
    let response = client.request(request.as_bytes()).await;
    assert_eq!(response.status, 200, "{path}: {}", response.text());
}

/// The live state of server `addr` in pool `pool`.
pub fn server_state(running: &Running, pool: &str, addr: SocketAddr) -> ServerState {
    let snapshot = running.shared().snapshot();
    let pool = snapshot.pool(pool).expect("the pool");
    pool.server(addr).expect("a server of the pool").state()
}

/// Polls server `addr` of `pool` until its health is `wanted` (there is no
/// change signal); how long that took. Fails the test after `limit`.
pub async fn wait_for_health(
    running: &Running,
    pool: &str,
    addr: SocketAddr,
    wanted: Health,
    limit: Duration,
) -> Duration {
    let start = std::time::Instant::now();
    loop {
        let health = server_state(running, pool, addr).health;
        if health == wanted {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{addr} still {health} after {limit:?}, waiting for {wanted}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Checks that the moments a drain closed things at (from its start) are
/// spread over its `window`: the first early, the median in the middle, the
/// last late but not long after, with tolerances for a busy machine. Prints
/// `what`, those three figures and `details` first.
pub fn assert_spread_over(window: Duration, times: &mut [Duration], what: &str, details: &str) {
    times.sort_unstable();
    let (first, median, last) = (times[0], times[times.len() / 2], times[times.len() - 1]);
    eprintln!(
        "{what} over a {window:?} window: first {first:?}, median {median:?}, last {last:?}; {details}"
    );
    assert!(first < window / 5, "the first close comes early: {first:?}");
    assert!(last > window * 3 / 4, "the last close comes late: {last:?}");
    assert!(
        last < window + Duration::from_secs(2),
        "and not long after: {last:?}"
    );
    let mid = window / 2;
    assert!(
        median > mid - window / 5 && median < mid + window / 5,
        "the median in the middle: {median:?}"
    );
}

/// An address on which nothing listens: a port bound then released.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    drop(listener);
    addr
}

// ------------------------------------------------------------------ the pattern

/// The `i`-th 8-byte word of the test pattern (SplitMix64 of `i`): data that
/// any offset of can be regenerated, so a body of any size is made and checked
/// on the fly, never held whole.
fn pattern_word(i: u64) -> [u8; 8] {
    let mut z = i
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(0x6a09_e667_f3bc_c909);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    (z ^ (z >> 31)).to_le_bytes()
}

/// Fills `buf` with the pattern bytes at `offset..offset + buf.len()`.
pub fn fill_pattern(offset: u64, buf: &mut [u8]) {
    let mut pos = offset;
    let mut rest = buf;
    // Up to the next word boundary.
    let head = ((8 - pos % 8) % 8) as usize;
    let head = head.min(rest.len());
    if head > 0 {
        let word = pattern_word(pos / 8);
        let start = (pos % 8) as usize;
        rest[..head].copy_from_slice(&word[start..start + head]);
        rest = &mut rest[head..];
        pos += head as u64;
    }
    let mut chunks = rest.chunks_exact_mut(8);
    for chunk in &mut chunks {
        chunk.copy_from_slice(&pattern_word(pos / 8));
        pos += 8;
    }
    let tail = chunks.into_remainder();
    if !tail.is_empty() {
        let word = pattern_word(pos / 8);
        let n = tail.len();
        tail.copy_from_slice(&word[..n]);
    }
}

/// The pattern bytes at `offset..offset + len`.
pub fn pattern(offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    fill_pattern(offset, &mut buf);
    buf
}

/// Checks a stream of bytes, in order, against the pattern: counts them and
/// remembers the first byte that differs. Equivalent to comparing checksums,
/// but says where a body went wrong.
#[derive(Debug, Default)]
pub struct PatternChecker {
    pub bytes: u64,
    pub first_mismatch: Option<u64>,
    expected: Vec<u8>,
}

impl PatternChecker {
    pub fn new() -> Self {
        PatternChecker::default()
    }

    pub fn update(&mut self, data: &[u8]) {
        if self.first_mismatch.is_none() {
            self.expected.resize(data.len(), 0);
            fill_pattern(self.bytes, &mut self.expected);
            if self.expected[..] != *data {
                let at = data
                    .iter()
                    .zip(&self.expected)
                    .position(|(a, b)| a != b)
                    .unwrap_or(0);
                self.first_mismatch = Some(self.bytes + at as u64);
            }
        }
        self.bytes += data.len() as u64;
    }

    /// Panics unless exactly `len` pattern bytes were seen.
    pub fn assert_complete(&self, len: u64) {
        assert_eq!(self.first_mismatch, None, "body differs from the pattern");
        assert_eq!(self.bytes, len, "body length");
    }
}

/// A body of `len` pattern bytes made on the fly in chunks of `chunk` bytes;
/// sized (Content-Length) unless `chunked`.
pub struct PatternBody {
    offset: u64,
    len: u64,
    chunk: usize,
    chunked: bool,
}

impl PatternBody {
    pub fn new(len: u64, chunked: bool) -> Self {
        PatternBody {
            offset: 0,
            len,
            chunk: 64 * 1024,
            chunked,
        }
    }

    pub fn boxed(self) -> TestBody {
        BodyExt::boxed(self)
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let left = this.len - this.offset;
        if left == 0 {
            return Poll::Ready(None);
        }
        let n = (this.chunk as u64).min(left) as usize;
        let data = pattern(this.offset, n);
        this.offset += n as u64;
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(data)))))
    }

    fn is_end_stream(&self) -> bool {
        self.offset == self.len
    }

    fn size_hint(&self) -> SizeHint {
        if self.chunked {
            SizeHint::default()
        } else {
            SizeHint::with_exact(self.len - self.offset)
        }
    }
}

/// A request body fed by the test through a channel, so that it can send a
/// piece, wait for something, and send the next. Sized when `len` is given.
pub struct ChannelBody {
    rx: mpsc::Receiver<Bytes>,
    remaining: Option<u64>,
}

pub fn channel_body(len: Option<u64>) -> (mpsc::Sender<Bytes>, ChannelBody) {
    let (tx, rx) = mpsc::channel(4);
    (tx, ChannelBody { rx, remaining: len })
}

impl ChannelBody {
    pub fn boxed(self) -> TestBody {
        BodyExt::boxed(self)
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(data)) => {
                if let Some(remaining) = &mut this.remaining {
                    *remaining = remaining.saturating_sub(data.len() as u64);
                }
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

pub fn empty_body() -> TestBody {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

pub fn full_body(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

// ------------------------------------------------------------------ backends

/// What a backend does with every request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 with body = the backend's name, except on the special paths:
    /// - `/echo`: streams the request body back as it arrives (sized if the
    ///   request was, else chunked);
    /// - `/generate/N`, `/generate-chunked/N`: N pattern bytes, sized or chunked;
    /// - `/verify`: reads the whole request body, checking it against the
    ///   pattern; 200 `bytes=N` or 422 `mismatch at N`;
    /// - `/slow/MS`: answers after MS milliseconds;
    /// - `/status/N`: answers with status N;
    /// - `/hold`: answers once the test calls [`Backend::release_held`].
    /// - `/ws-echo`: a WebSocket handshake, then every data message echoed;
    /// - `/trailers`: a chunked body `data` and the trailer `x-checksum: 1234`,
    ///   declared in a `Trailer` header.
    /// - `/request-trailers`: reads the request body; answers with its trailer
    ///   fields, a `name: value` line each.
    ///
    /// Every `x-reply-header: name: value` request header becomes a response header.
    Normal,
    /// As `Normal`, after this delay.
    Slow(Duration),
    /// Answers every request with this status (body = the backend's name).
    Status(u16),
    /// Streams every request body back.
    EchoBody,
    /// Answers every request with `len` pattern bytes.
    Generate { len: u64, chunked: bool },
    /// Reads the request head, then closes the connection without a byte.
    CloseWithoutAnswer,
}

/// One request as a backend saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub headers: HeaderMap,
    /// Which accepted TCP connection (1, 2, …) it arrived on.
    pub connection: usize,
}

impl Seen {
    /// Every value of header `name`.
    pub fn all(&self, name: &str) -> Vec<String> {
        self.headers
            .get_all(name)
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// The single value of header `name`; panics if it appears more than once.
    pub fn one(&self, name: &str) -> Option<String> {
        let all = self.all(name);
        assert!(
            all.len() <= 1,
            "header {name} sent {} times: {all:?}",
            all.len()
        );
        all.into_iter().next()
    }
}

/// How many requests a backend remembers (`Backend::seen`): at least half of it.
const SEEN_KEPT: usize = 10_000;

#[derive(Debug)]
struct State {
    name: String,
    behaviour: Behaviour,
    /// Requests seen.
    requests: watch::Sender<usize>,
    /// TCP connections accepted, ever.
    accepted: AtomicUsize,
    /// TCP connections open now.
    open: watch::Sender<usize>,
    /// Requests waiting on `/hold`.
    held: watch::Sender<usize>,
    /// Bumped by `release_held`; a held request waits for a bump after it arrived.
    release: watch::Sender<u64>,
    /// Request body bytes read by `/verify`.
    body_bytes: AtomicU64,
    /// WebSockets open now (`/ws-echo`).
    websockets: Arc<AtomicUsize>,
    seen: Mutex<Vec<Seen>>,
}

/// An in-process HTTP/1.1 server on 127.0.0.1, with counters. Dropping it
/// stops it and closes its connections.
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Binds 127.0.0.1:0 and serves with `behaviour`; ready when this returns.
    pub async fn start(name: &str, behaviour: Behaviour) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        Backend::start_on(listener, name, behaviour)
    }

    /// A normal backend.
    pub async fn normal(name: &str) -> Backend {
        Backend::start(name, Behaviour::Normal).await
    }

    /// Serves on an already bound listener.
    pub fn start_on(listener: TcpListener, name: &str, behaviour: Behaviour) -> Backend {
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(State {
            name: name.to_owned(),
            behaviour,
            requests: watch::Sender::new(0),
            accepted: AtomicUsize::new(0),
            open: watch::Sender::new(0),
            held: watch::Sender::new(0),
            release: watch::Sender::new(0),
            body_bytes: AtomicU64::new(0),
            websockets: Arc::new(AtomicUsize::new(0)),
            seen: Mutex::new(Vec::new()),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Backend {
            name: name.to_owned(),
            addr,
            state,
            task,
        }
    }

    /// Requests seen so far.
    pub fn requests(&self) -> usize {
        *self.state.requests.borrow()
    }

    /// WebSockets open now on `/ws-echo`.
    pub fn websockets(&self) -> usize {
        self.state.websockets.load(Ordering::SeqCst)
    }

    /// TCP connections accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// TCP connections open now.
    pub fn open_connections(&self) -> usize {
        *self.state.open.borrow()
    }

    /// Requests waiting on `/hold` now.
    pub fn held(&self) -> usize {
        *self.state.held.borrow()
    }

    /// Body bytes read by `/verify`.
    pub fn body_bytes(&self) -> u64 {
        self.state.body_bytes.load(Ordering::SeqCst)
    }

    /// Every request seen (the last thousands at least), in order of arrival.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The last request seen; panics if there was none.
    pub fn last_seen(&self) -> Seen {
        self.seen().pop().expect("the backend saw a request")
    }

    /// Answers every request held on `/hold` now.
    pub fn release_held(&self) {
        self.state.release.send_modify(|g| *g += 1);
    }

    /// Waits (bounded) until the backend has seen at least `n` requests.
    pub async fn wait_requests(&self, n: usize) {
        let mut rx = self.state.requests.subscribe();
        within(
            &format!("{} to see {n} requests", self.name),
            rx.wait_for(|&seen| seen >= n),
        )
        .await
        .expect("backend alive");
    }

    /// Waits (bounded) until `n` requests are held on `/hold`.
    pub async fn wait_held(&self, n: usize) {
        let mut rx = self.state.held.subscribe();
        within(
            &format!("{} to hold {n} requests", self.name),
            rx.wait_for(|&held| held >= n),
        )
        .await
        .expect("backend alive");
    }

    /// Waits until the number of open connections satisfies `ok`; returns
    /// whether it did within `limit`.
    pub async fn wait_open_connections(&self, limit: Duration, ok: impl Fn(usize) -> bool) -> bool {
        let mut rx = self.state.open.subscribe();
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|&n| ok(n))).await,
            Ok(Ok(_))
        )
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    // Dropped (and so every connection aborted) when the backend is dropped.
    let mut connections = JoinSet::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => continue,
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let id = state.accepted.fetch_add(1, Ordering::SeqCst) + 1;
        state.open.send_modify(|n| *n += 1);
        let state = state.clone();
        connections.spawn(async move {
            let _open = OpenGuard(state.clone());
            if let Behaviour::CloseWithoutAnswer = state.behaviour {
                close_without_answer(stream, &state).await;
                return;
            }
            let service = {
                let state = state.clone();
                service_fn(move |request| handle(request, state.clone(), id))
            };
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades()
                .await;
        });
    }
}

/// Counts a connection as open until dropped.
struct OpenGuard(Arc<State>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.send_modify(|n| *n -= 1);
    }
}

async fn close_without_answer(mut stream: TcpStream, state: &State) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
            _ => return,
        }
    }
    state.requests.send_modify(|n| *n += 1);
    // Dropping the stream closes it: the request is never answered.
}

async fn handle(
    request: Request<Incoming>,
    state: Arc<State>,
    connection: usize,
) -> Result<Response<TestBody>, Infallible> {
    // Read before the request is counted, so that a release the test sends
    // after seeing the request always frees it.
    let generation = *state.release.borrow();
    {
        let mut seen = state.seen.lock().unwrap();
        // Bounded: a soak sends millions of requests.
        if seen.len() >= SEEN_KEPT {
            seen.drain(..SEEN_KEPT / 2);
        }
        seen.push(Seen {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            // Copied, not shared: a shared value keeps hyper's whole read
            // buffer alive.
            headers: request
                .headers()
                .iter()
                .map(|(name, value)| {
                    (
                        name.clone(),
                        HeaderValue::from_bytes(value.as_bytes()).unwrap(),
                    )
                })
                .collect(),
            connection,
        });
    }
    state.requests.send_modify(|n| *n += 1);
    let response = match state.behaviour.clone() {
        Behaviour::Normal => special(request, &state, generation).await,
        Behaviour::Slow(delay) => {
            tokio::time::sleep(delay).await;
            named(&state, &request, StatusCode::OK)
        }
        Behaviour::Status(code) => named(
            &state,
            &request,
            StatusCode::from_u16(code).expect("a valid status"),
        ),
        Behaviour::EchoBody => echo(request),
        Behaviour::Generate { len, chunked } => generated(len, chunked),
        Behaviour::CloseWithoutAnswer => unreachable!("answered without hyper"),
    };
    Ok(response)
}

async fn special(request: Request<Incoming>, state: &State, generation: u64) -> Response<TestBody> {
    let path = request.uri().path().to_owned();
    let arg = |prefix: &str| -> Option<u64> { path.strip_prefix(prefix)?.parse().ok() };
    if path == "/echo" {
        echo(request)
    } else if path == "/ws-echo" {
        serve_ws_echo(request, state)
    } else if let Some(len) = arg("/generate/") {
        generated(len, false)
    } else if let Some(len) = arg("/generate-chunked/") {
        generated(len, true)
    } else if path == "/verify" {
        verify(request, state).await
    } else if let Some(ms) = arg("/slow/") {
        tokio::time::sleep(Duration::from_millis(ms)).await;
        named(state, &request, StatusCode::OK)
    } else if let Some(code) = arg("/status/") {
        let status = u16::try_from(code)
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .expect("a valid status");
        named(state, &request, status)
    } else if path == "/trailers" {
        with_trailers()
    } else if path == "/request-trailers" {
        request_trailers(request).await
    } else if path == "/hold" {
        let mut release = state.release.subscribe();
        state.held.send_modify(|n| *n += 1);
        let _ = tokio::time::timeout(WAIT, release.wait_for(|&g| g > generation)).await;
        state.held.send_modify(|n| *n -= 1);
        named(state, &request, StatusCode::OK)
    } else {
        named(state, &request, StatusCode::OK)
    }
}

/// `status` with body = the backend's name, `x-backend: NAME`, and every
/// `x-reply-header: name: value` of the request as a response header.
fn named<B>(state: &State, request: &Request<B>, status: StatusCode) -> Response<TestBody> {
    let mut response = Response::new(full_body(state.name.clone()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        "x-backend",
        HeaderValue::from_str(&state.name).expect("a header-safe name"),
    );
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    for value in request.headers().get_all("x-reply-header") {
        let value = value.to_str().expect("ascii x-reply-header");
        let (name, value) = value
            .split_once(':')
            .expect("x-reply-header is `name: value`");
        headers.append(
            HeaderName::from_bytes(name.trim().as_bytes()).expect("header name"),
            HeaderValue::from_str(value.trim()).expect("header value"),
        );
    }
    response
}

/// Accepts a WebSocket handshake and echoes every data message (tungstenite
/// answers pings and closes); the socket counts in `websockets` while open.
fn serve_ws_echo(mut request: Request<Incoming>, state: &State) -> Response<TestBody> {
    use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
    use tokio_tungstenite::tungstenite::protocol::Role;

    let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
        return named(state, &request, StatusCode::BAD_REQUEST);
    };
    let upgrade = hyper::upgrade::on(&mut request);
    let open = state.websockets.clone();
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else { return };
        open.fetch_add(1, Ordering::SeqCst);
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        use futures_util::{SinkExt, StreamExt};
        while let Some(Ok(message)) = ws.next().await {
            if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                break;
            }
        }
        open.fetch_sub(1, Ordering::SeqCst);
    });
    let mut response = Response::new(empty_body());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    let accept = derive_accept_key(key.as_bytes());
    headers.insert(
        "sec-websocket-accept",
        HeaderValue::from_str(&accept).expect("base64 is header-safe"),
    );
    headers.insert(
        "x-backend",
        HeaderValue::from_str(&state.name).expect("a header-safe name"),
    );
    response
}

fn with_trailers() -> Response<TestBody> {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-checksum", HeaderValue::from_static("1234"));
    let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
        Ok(Frame::data(Bytes::from_static(b"data"))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures_util::stream::iter(frames));
    let mut response = Response::new(BodyExt::boxed(body));
    response
        .headers_mut()
        .insert(header::TRAILER, HeaderValue::from_static("x-checksum"));
    response
}

fn echo(request: Request<Incoming>) -> Response<TestBody> {
    let body = request.into_body().map_err(BoxError::from).boxed();
    Response::new(body)
}

fn generated(len: u64, chunked: bool) -> Response<TestBody> {
    Response::new(PatternBody::new(len, chunked).boxed())
}

async fn request_trailers(request: Request<Incoming>) -> Response<TestBody> {
    let collected = request.into_body().collect().await;
    let lines: String = collected
        .ok()
        .and_then(|body| body.trailers().cloned())
        .unwrap_or_default()
        .iter()
        .map(|(name, value)| format!("{name}: {}\n", String::from_utf8_lossy(value.as_bytes())))
        .collect();
    Response::new(full_body(lines))
}

async fn verify(request: Request<Incoming>, state: &State) -> Response<TestBody> {
    let mut body = request.into_body();
    let mut checker = PatternChecker::new();
    let mut failed = None;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Some(data) = frame.data_ref() {
                    checker.update(data);
                    state
                        .body_bytes
                        .fetch_add(data.len() as u64, Ordering::SeqCst);
                }
            }
            Err(e) => {
                failed = Some(e.to_string());
                break;
            }
        }
    }
    let (status, text) = match (failed, checker.first_mismatch) {
        (Some(error), _) => (
            StatusCode::BAD_REQUEST,
            format!("body error after {} bytes: {error}", checker.bytes),
        ),
        (None, Some(at)) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("bytes={} mismatch at {at}", checker.bytes),
        ),
        (None, None) => (StatusCode::OK, format!("bytes={}", checker.bytes)),
    };
    let mut response = Response::new(full_body(text));
    *response.status_mut() = status;
    response
}

// ------------------------------------------------------------------ hyper client

/// A response read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The `x-backend` header: which backend answered.
    pub fn backend(&self) -> String {
        self.headers
            .get("x-backend")
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .unwrap_or_default()
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    }
}

/// A keep-alive HTTP/1.1 client connection (hyper) to one address.
pub struct Client {
    sender: hyper::client::conn::http1::SendRequest<TestBody>,
    task: JoinHandle<()>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Client {
    pub async fn connect(addr: SocketAddr) -> Client {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect to wharf");
        stream.set_nodelay(true).expect("nodelay");
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .expect("client handshake");
        let task = tokio::spawn(async move {
            let _ = connection.await;
        });
        Client { sender, task }
    }

    /// Sends `request` once the connection is ready; returns the response head.
    pub async fn send(&mut self, request: Request<TestBody>) -> Response<Incoming> {
        within("connection ready", self.sender.ready())
            .await
            .expect("connection still open");
        within("response head", self.sender.send_request(request))
            .await
            .expect("a response")
    }

    /// Sends `request` and reads the whole response.
    pub async fn request(&mut self, request: Request<TestBody>) -> Reply {
        let response = self.send(request).await;
        read_reply(response).await
    }

    /// `GET path` with `Host: host`.
    pub async fn get(&mut self, host: &str, path: &str) -> Reply {
        self.request(get_request(host, path)).await
    }

    /// Whether the connection can carry another request.
    pub fn is_closed(&self) -> bool {
        self.sender.is_closed()
    }
}

pub fn get_request(host: &str, path: &str) -> Request<TestBody> {
    Request::get(path)
        .header(header::HOST, host)
        .body(empty_body())
        .expect("a valid request")
}

/// `name=value` of a `Set-Cookie` for `name`, if the reply has one.
pub fn set_cookie(reply: &Reply, name: &str) -> Option<String> {
    reply
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or("").to_owned())
}

/// `GET path` (host `app.test`) with `headers` added, on `client`.
pub async fn get_with(client: &mut Client, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut request = get_request("app.test", path);
    for (name, value) in headers {
        let name = header::HeaderName::from_bytes(name.as_bytes()).unwrap();
        request.headers_mut().append(name, value.parse().unwrap());
    }
    client.request(request).await
}

/// Reads a response whole.
pub async fn read_reply(response: Response<Incoming>) -> Reply {
    let (parts, body) = response.into_parts();
    let body = within("response body", body.collect())
        .await
        .expect("a complete response body")
        .to_bytes();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// `GET path` on a new connection.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Reply {
    Client::connect(addr).await.get(host, path).await
}

// ------------------------------------------------------------------ raw client

/// A response as it came on the wire.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub version: String,
    pub status: u16,
    pub reason: String,
    /// In order, names as sent.
    pub headers: Vec<(String, String)>,
    /// The decoded body (chunks joined).
    pub body: Vec<u8>,
    /// Whether the body was chunked on the wire.
    pub chunked: bool,
    /// Trailer fields after a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl RawResponse {
    /// Every value of header `name` (case-insensitive).
    pub fn all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.all(name).into_iter().next()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A client that writes raw bytes and parses responses itself, for requests
/// hyper would not send. Keeps unread bytes between responses (pipelining).
pub struct RawClient {
    stream: TcpStream,
    buf: Vec<u8>,
    eof: bool,
}

impl RawClient {
    pub async fn connect(addr: SocketAddr) -> RawClient {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect to wharf");
        stream.set_nodelay(true).expect("nodelay");
        RawClient {
            stream,
            buf: Vec::new(),
            eof: false,
        }
    }

    pub async fn send(&mut self, bytes: &[u8]) {
        within("write", self.stream.write_all(bytes))
            .await
            .expect("write to wharf");
    }

    /// Sends `bytes` and reads one response.
    pub async fn request(&mut self, bytes: &[u8]) -> RawResponse {
        self.send(bytes).await;
        self.read_response().await
    }

    /// Reads more bytes into the buffer; false on EOF or reset.
    async fn fill(&mut self) -> bool {
        if self.eof {
            return false;
        }
        let mut chunk = [0u8; 16 * 1024];
        match within("read from wharf", self.stream.read(&mut chunk)).await {
            Ok(0) | Err(_) => {
                self.eof = true;
                false
            }
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Reads until `n` bytes are buffered; panics on EOF.
    async fn need(&mut self, n: usize) {
        while self.buf.len() < n {
            assert!(
                self.fill().await,
                "connection closed mid-response: {:?}",
                self.lossy()
            );
        }
    }

    fn lossy(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }

    /// Reads a CRLF-terminated line (without it).
    async fn line(&mut self) -> String {
        loop {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..end]).into_owned();
                self.buf.drain(..end + 2);
                return line;
            }
            assert!(
                self.fill().await,
                "connection closed mid-line: {:?}",
                self.lossy()
            );
        }
    }

    /// Reads one response; `None` if the connection closed before its first byte.
    pub async fn try_read_response(&mut self) -> Option<RawResponse> {
        self.try_read_response_to(&Method::GET).await
    }

    /// As [`RawClient::try_read_response`], for a response to `method`.
    pub async fn try_read_response_to(&mut self, method: &Method) -> Option<RawResponse> {
        while self.buf.is_empty() {
            if !self.fill().await {
                return None;
            }
        }
        let status_line = self.line().await;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        loop {
            let line = self.line().await;
            if line.is_empty() {
                break;
            }
            let (name, value) = line
                .split_once(':')
                .unwrap_or_else(|| panic!("bad header line {line:?}"));
            headers.push((name.trim().to_owned(), value.trim().to_owned()));
        }
        let mut response = RawResponse {
            version,
            status,
            reason,
            headers,
            body: Vec::new(),
            chunked: false,
            trailers: Vec::new(),
        };
        let no_body = (100..200).contains(&status)
            || status == 204
            || status == 304
            || method == Method::HEAD;
        if no_body {
            return Some(response);
        }
        let chunked = response
            .all("transfer-encoding")
            .iter()
            .any(|v| v.to_ascii_lowercase().contains("chunked"));
        if chunked {
            response.chunked = true;
            loop {
                let size_line = self.line().await;
                let size = size_line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size, 16)
                    .unwrap_or_else(|_| panic!("bad chunk size line {size_line:?}"));
                if size == 0 {
                    // Trailers, then an empty line.
                    loop {
                        let line = self.line().await;
                        if line.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            response
                                .trailers
                                .push((name.trim().to_owned(), value.trim().to_owned()));
                        }
                    }
                    break;
                }
                self.need(size + 2).await;
                response.body.extend_from_slice(&self.buf[..size]);
                assert_eq!(
                    &self.buf[size..size + 2],
                    b"\r\n",
                    "chunk not followed by CRLF"
                );
                self.buf.drain(..size + 2);
            }
        } else if let Some(len) = response.header("content-length") {
            let len: usize = len.parse().expect("a numeric content-length");
            self.need(len).await;
            response.body = self.buf.drain(..len).collect();
        } else {
            // Delimited by the end of the connection.
            while self.fill().await {}
            response.body = std::mem::take(&mut self.buf);
        }
        Some(response)
    }

    /// Reads one response; panics if the connection closes first.
    pub async fn read_response(&mut self) -> RawResponse {
        self.try_read_response()
            .await
            .expect("a response before the connection closed")
    }

    /// Whether the peer closes the connection within `limit` (reading and
    /// discarding anything it sends first). False if it is still open then.
    pub async fn closed_within(&mut self, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        let mut chunk = [0u8; 4096];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return false,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.eof = true;
                    return true;
                }
                Ok(Ok(_)) => {}
            }
        }
    }

    /// Everything the peer sends (after what is buffered) until it closes or
    /// `limit` passes; and whether it closed.
    pub async fn read_until_closed(&mut self, limit: Duration) -> (Vec<u8>, bool) {
        let deadline = tokio::time::Instant::now() + limit;
        let mut all = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return (all, false),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    self.eof = true;
                    return (all, true);
                }
                Ok(Ok(n)) => all.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Bytes buffered and not yet parsed.
    pub fn buffered(&self) -> &[u8] {
        &self.buf
    }
}

// ------------------------------------------------------------------ memory

/// A field of /proc/self/status in bytes (`VmHWM`, `VmRSS`).
pub fn proc_status_bytes(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with(&format!("{field}:")))
        .unwrap_or_else(|| panic!("{field} in /proc/self/status"));
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number of kB");
    kib * 1024
}

/// The process's peak resident set size so far.
pub fn peak_rss() -> u64 {
    proc_status_bytes("VmHWM")
}

// ------------------------------------------------------------------ files, TLS, WebSockets

/// A temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(what: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "wharf-{what}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&path).expect("create a temp dir");
        TempDir(path)
    }

    /// Writes `contents` to `name` in the directory; returns its path.
    pub fn write(&self, name: &str, contents: impl AsRef<[u8]>) -> std::path::PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).expect("write a temp file");
        path
    }

    /// A new self-signed certificate for `names`, written as `<stem>.pem` and
    /// `<stem>.key`; returns the certificate's DER.
    pub fn cert(&self, stem: &str, names: &[&str]) -> rustls::pki_types::CertificateDer<'static> {
        use rustls::pki_types::pem::PemObject;
        let (cert, key) = wharf::tls::self_signed(names).expect("self-signed certificate");
        self.write(&format!("{stem}.pem"), &cert);
        self.write(&format!("{stem}.key"), &key);
        rustls::pki_types::CertificateDer::from_pem_slice(cert.as_bytes())
            .expect("a PEM certificate")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The DER of the certificate a TLS server at `addr` presents (any
/// certificate accepted).
pub async fn presented_certificate(addr: SocketAddr) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(accept_any::AcceptAny(provider)))
        .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.expect("connect for TLS");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let tls = within(
        "a TLS handshake",
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp),
    )
    .await
    .expect("TLS handshake");
    tls.get_ref().1.peer_certificates().expect("a certificate")[0].to_vec()
}

/// A WebSocket client over plain TCP.
pub type WsClient =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

/// Opens a WebSocket to `path` (a backend's `/ws-echo`) through `addr`.
pub async fn ws_connect(addr: SocketAddr, path: &str) -> WsClient {
    let url = format!("ws://{addr}{path}");
    let (ws, _) = within(
        "a WebSocket handshake",
        tokio_tungstenite::connect_async(url),
    )
    .await
    .expect("WebSocket handshake");
    ws
}

/// Sends `text` on `ws` and expects it echoed.
pub async fn ws_echo(ws: &mut WsClient, text: &str) {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    within("a WebSocket send", ws.send(Message::text(text)))
        .await
        .expect("send on the WebSocket");
    let reply = within("a WebSocket echo", ws.next())
        .await
        .expect("the WebSocket is open")
        .expect("a message");
    assert_eq!(reply, Message::text(text), "echo of {text}");
}

// ------------------------------------------------------------------ raw server

/// A server on 127.0.0.1 that answers every request head with fixed raw bytes
/// (for responses hyper would never write), then either closes or waits to
/// see whether wharf closes the connection. Stops when dropped.
pub struct RawServer {
    pub addr: SocketAddr,
    accepted: Arc<AtomicUsize>,
    /// Connections that wharf closed after their response.
    dropped: watch::Sender<usize>,
    task: JoinHandle<()>,
}

impl Drop for RawServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawServer {
    /// Answers with `response`; closes after it when `close` is true.
    pub async fn start(response: &'static [u8], close: bool) -> RawServer {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw server");
        let addr = listener.local_addr().expect("local addr");
        let accepted = Arc::new(AtomicUsize::new(0));
        let dropped = watch::Sender::new(0);
        let task = {
            let (accepted, dropped) = (accepted.clone(), dropped.clone());
            tokio::spawn(async move {
                let mut connections = JoinSet::new();
                while let Ok((stream, _)) = listener.accept().await {
                    accepted.fetch_add(1, Ordering::SeqCst);
                    let dropped = dropped.clone();
                    connections.spawn(raw_answer(stream, response, close, dropped));
                }
            })
        };
        RawServer {
            addr,
            accepted,
            dropped,
            task,
        }
    }

    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Waits (bounded by `limit`) until wharf has closed `n` connections
    /// after their response; whether it did.
    pub async fn wait_dropped(&self, n: usize, limit: Duration) -> bool {
        let mut rx = self.dropped.subscribe();
        matches!(
            tokio::time::timeout(limit, rx.wait_for(|&d| d >= n)).await,
            Ok(Ok(_))
        )
    }
}

async fn raw_answer(
    mut stream: TcpStream,
    response: &'static [u8],
    close: bool,
    dropped: watch::Sender<usize>,
) {
    let mut buf = [0u8; 4096];
    loop {
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf).await {
                Ok(n) if n > 0 => head.extend_from_slice(&buf[..n]),
                _ => {
                    dropped.send_modify(|d| *d += 1);
                    return;
                }
            }
        }
        if stream.write_all(response).await.is_err() {
            return;
        }
        if close {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

/// `start_line`, then header fields of 1000-byte values until the head is
/// at least `len` bytes, then `end` (the blank line, and any body), kept for
/// the whole test (a [`RawServer`] answer is `'static`).
pub fn oversized_head(start_line: &str, len: usize, end: &[u8]) -> &'static [u8] {
    let mut head = format!("{start_line}\r\n").into_bytes();
    let mut i = 0;
    while head.len() < len {
        head.extend_from_slice(format!("X-F{i}: {}\r\n", "a".repeat(1000)).as_bytes());
        i += 1;
    }
    head.extend_from_slice(end);
    Box::leak(head.into_boxed_slice())
}

// ------------------------------------------------------------------ programs

/// Makes sure `program` is on the PATH, installing Debian's `package` if it
/// is not (CI installs it first; this keeps `cargo test` working on a fresh
/// machine).
pub fn require_program(program: &str, package: &str) {
    let found = |p: &str| {
        std::process::Command::new("sh")
            .args(["-c", &format!("command -v {p}")])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found(program) {
        return;
    }
    eprintln!("{program} is missing: installing the Debian package {package}");
    for args in [
        vec!["-o", "DPkg::Lock::Timeout=600", "update", "-qq"],
        vec![
            "-o",
            "DPkg::Lock::Timeout=600",
            "install",
            "-y",
            "-qq",
            package,
        ],
    ] {
        let status = std::process::Command::new("apt-get")
            .args(&args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("run apt-get");
        assert!(status.success(), "apt-get {args:?} failed");
    }
    assert!(
        found(program),
        "{program} still missing after installing {package}"
    );
}

/// `%`-encodes everything but unreserved characters (RFC 3986 §2.3), for a
/// query string value.
pub fn percent_encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
