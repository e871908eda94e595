//! The configuration: the validated, immutable model that the rest of wharf reads.
//!
//! The TOML file is read by [`parse`] into these types; every mistake becomes a
//! [`ConfigError`] carrying `file:line:col` and a plain sentence, and all of them
//! are reported at once. Nothing here changes at runtime: a reload builds a new
//! [`Config`] and swaps it in whole (see `runtime`).

mod duration;
mod error;
mod parse;
mod reader;
mod size;
mod warnings;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use duration::parse_duration;
pub use error::{ConfigError, ConfigErrors};
pub use parse::parse_str;
pub use size::parse_size;
pub use warnings::warnings;

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors::single(ConfigError::io(path.display().to_string(), e.to_string()))
    })?;
    parse_str(&path.display().to_string(), &text)
}

/// The whole validated config file.
#[derive(Debug, Clone)]
pub struct Config {
    /// SIGTERM: how long open connections get to finish before wharf exits.
    pub shutdown_timeout: Duration,
    /// Worker threads; `None`: one per core.
    pub workers: Option<usize>,
    /// The admin listener (API, metrics, status page), if any.
    pub admin: Option<AdminConfig>,
    /// Where access log lines go, if anywhere.
    pub access_log: Option<AccessLogConfig>,
    pub listeners: Vec<ListenerConfig>,
    /// In file order; names are unique.
    pub pools: Vec<PoolConfig>,
}

impl Config {
    pub fn pool(&self, name: &str) -> Option<&PoolConfig> {
        self.pools.iter().find(|p| p.name == name)
    }
}

/// `[admin]`: where the admin listener is, and the token it asks for.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub bind: SocketAddr,
    /// When set, every admin request needs `Authorization: Bearer <token>`
    /// (the status page itself excepted). Required off loopback.
    pub token: Option<String>,
}

/// `[access_log]`: one line per request and per finished tunnel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub to: AccessLogTarget,
    pub format: AccessLogFormat,
}

/// Where access log lines are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessLogTarget {
    Stdout,
    /// A file, appended to, reopened on SIGUSR1 (relative paths are taken
    /// from the config file's directory).
    File(std::path::PathBuf),
}

/// How an access log line is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessLogFormat {
    /// One JSON object per line.
    Json,
    /// `key=value` fields, strings quoted when needed (see the README).
    Text,
}

/// One `[[listener]]`: a port and its routes.
#[derive(Debug, Clone)]
pub struct ListenerConfig {
    pub name: String,
    pub bind: SocketAddr,
    /// First match wins.
    pub routes: Vec<RouteConfig>,
    /// Open client connections beyond which the listener stops accepting.
    pub max_connections: usize,
    pub timeouts: ListenerTimeouts,
    /// Peers that must send a PROXY protocol header (v1 or v2); from anyone
    /// else a connection starting with one is refused.
    pub proxy_protocol: Vec<ipnet::IpNet>,
    /// Lets the `proxy_protocol` peers connect without a header (a balancer
    /// whose health checks send none); off, as HAProxy's `accept-proxy`.
    pub proxy_protocol_optional: bool,
    /// Peers (HTTP proxies in front of wharf) whose forwarding headers are
    /// appended to; anyone else's are replaced or dropped.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Size limits on request heads.
    pub limits: Limits,
    /// The `mode = "tcp"` pool that gets connections that are neither TLS nor HTTP.
    pub tcp_pool: Option<String>,
    /// Answer to `<policy-file-request/>`, read from the file at load.
    pub flash_policy: Option<std::sync::Arc<[u8]>>,
    pub tls: Option<ListenerTls>,
}

/// `[listener.tls]`: TLS on this port, told apart from plaintext by its first bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerTls {
    /// Chosen by SNI; the first is the default.
    pub certificates: Vec<CertificatePaths>,
    pub plaintext: Plaintext,
}

/// A PEM certificate chain and its PEM private key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificatePaths {
    pub cert: std::path::PathBuf,
    pub key: std::path::PathBuf,
}

/// What a TLS listener does with plaintext HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plaintext {
    Serve,
    /// 301 to the https URL of the same host and path.
    Redirect,
    /// 400 and close.
    Reject,
}

/// Client-side timeouts of a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerTimeouts {
    /// Time a client has to send a complete request head (slowloris guard).
    /// hyper starts this timer whenever it waits for a request, so it also
    /// bounds how long an idle keep-alive client connection is kept open.
    pub request_header: Duration,
    /// A client that sends nothing for this long after connecting is closed.
    pub first_bytes: Duration,
    /// With a `tcp_pool`: a client silent for this long is handed to the TCP
    /// pool, for protocols where the server speaks first.
    pub server_first: Option<Duration>,
    /// A client that reads nothing of what wharf writes to it for this long
    /// (a zero TCP window) is closed, freeing everything it held.
    pub client_write: Duration,
}

impl Default for ListenerTimeouts {
    fn default() -> Self {
        ListenerTimeouts {
            request_header: Duration::from_secs(10),
            first_bytes: Duration::from_secs(10),
            server_first: None,
            client_write: Duration::from_secs(60),
        }
    }
}

/// `limits = { ... }` of a listener: how large a request head may be. Every
/// client connection may buffer up to `request_head` bytes of head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One header field line (name, colon, value), in bytes; beyond: 431.
    pub header_field: usize,
    /// The whole head (request line and fields), in bytes; beyond: 431.
    pub request_head: usize,
    /// Header fields in a head; beyond: 431.
    pub headers: usize,
    /// The request target, in bytes; beyond: 414.
    pub request_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_field: 8 * 1024,
            request_head: 32 * 1024,
            headers: 100,
            request_line: 8 * 1024,
        }
    }
}

pub const DEFAULT_LISTENER_MAX_CONNECTIONS: usize = 10_000;

/// One `[[listener.route]]`.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    pub host: Option<HostMatch>,
    /// Matched against the request path, byte for byte.
    pub path_prefix: Option<String>,
    pub pool: String,
    /// Lower-case protocol names that may upgrade through this route; never `h2c`.
    pub upgrades: Vec<String>,
    /// A TLS passthrough route: connections whose ClientHello names this
    /// server go, still encrypted, to `pool` (a TCP pool). Such a route has
    /// no `host` or `path_prefix` and is never used for HTTP requests.
    pub sni: Option<HostMatch>,
    /// What wharf does inside the websockets of this route.
    pub websocket: WebSocketRoute,
}

/// A route's `ws_ping`, `ws_pong_timeout` and `ws_max_message`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WebSocketRoute {
    /// A client silent this long gets a ping from wharf; its pong is not passed on.
    pub ping: Option<Duration>,
    /// A ping unanswered this long closes the websocket (the server gets 1001).
    pub pong_timeout: Duration,
    /// A client message larger than this (summed over fragments) is closed with 1009.
    pub max_message: Option<u64>,
}

impl Default for WebSocketRoute {
    fn default() -> Self {
        WebSocketRoute {
            ping: None,
            pong_timeout: Duration::from_secs(10),
            max_message: None,
        }
    }
}

/// How a route matches the request's host (compared without port, case-insensitively).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostMatch {
    /// `app.example.com`, stored lower-case.
    Exact(String),
    /// `*.example.com`: any host ending in `.example.com`, stored as `.example.com`.
    Suffix(String),
}

/// One `[pool.NAME]`.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    pub name: String,
    /// HTTP (requests, upgrades) or TCP (raw byte tunnels).
    pub mode: PoolMode,
    /// A PROXY protocol header sent to servers on each new connection.
    pub send_proxy_protocol: Option<ProxyVersion>,
    pub servers: Vec<ServerConfig>,
    /// The algorithm; with `hash`, the one used for requests without the key.
    pub balance: BalanceConfig,
    /// `balance = "hash:..."`: requests carrying this key go to the server the
    /// key hashes to on a consistent-hash table.
    pub hash: Option<HashKey>,
    /// Session affinity, checked before balancing.
    pub sticky: Option<StickyConfig>,
    pub timeouts: PoolTimeouts,
    /// Idle keep-alive connections kept per server.
    pub idle_connections: usize,
    /// Active health checks; without them a server is up until it fails.
    pub health: Option<HealthConfig>,
    /// Requests and tunnels open to one server at most; beyond it requests queue.
    pub max_connections: Option<usize>,
    /// Requests that may wait for a free server at most; beyond it: 503.
    pub queue_size: usize,
    /// A drained server's tunnels are closed by then.
    pub drain_timeout: Duration,
    /// A drained or removed server's tunnels get their gentle close at moments
    /// spread evenly over this window (zero: all at once).
    pub drain_window: Duration,
    /// A server that becomes usable ramps its share of new connections up over this time.
    pub slow_start: Option<Duration>,
    /// Further servers tried when a request could not be delivered.
    pub retries: usize,
    /// Passive health: when failing requests eject a server.
    pub ejection: EjectionPolicy,
    /// Bytes per second a request body must average over each
    /// `timeouts.upload_idle` (a body trickled at 1 byte/s holds no server slot).
    pub min_upload_rate: u64,
}

pub const DEFAULT_MIN_UPLOAD_RATE: u64 = 128;

pub const DEFAULT_QUEUE_SIZE: usize = 1000;
pub const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(300);
pub const DEFAULT_DRAIN_WINDOW: Duration = Duration::from_secs(30);
pub const DEFAULT_RETRIES: usize = 2;

/// `health = { ... }`: an active check, repeated every `interval`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthConfig {
    pub check: HealthCheck,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes that bring a down server up.
    pub rise: u32,
    /// Consecutive failures that bring an up server down.
    pub fall: u32,
}

impl HealthConfig {
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(2);
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
    pub const DEFAULT_RISE: u32 = 2;
    pub const DEFAULT_FALL: u32 = 3;
}

/// What a health check does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HealthCheck {
    /// Connects; success is an accepted connection.
    Tcp,
    /// `GET path` with `Host: host` (default: the server's address); success is 2xx or 3xx.
    Http { path: String, host: Option<String> },
}

/// `ejection = { ... }`: when failing requests eject a server (passive health).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EjectionPolicy {
    /// Consecutive connection failures that eject (0: never).
    pub connect_failures: u32,
    /// Consecutive gateway failures (502, 503, 504, a reset or no answer, a
    /// malformed response) that eject (0: never). Other 5xx answers do not
    /// count (as Envoy's `consecutive_gateway_failure`): a client that can
    /// make a server answer 500 cannot push it out.
    pub server_errors: u32,
    /// The first ejection's length; each repeat doubles it, up to `max_time`.
    pub base_time: Duration,
    pub max_time: Duration,
    /// At most this share of the pool's servers (in percent) is ejected at
    /// once; one server always may be (as Envoy's `max_ejection_percent`).
    pub max_percent: u32,
}

impl Default for EjectionPolicy {
    fn default() -> Self {
        EjectionPolicy {
            connect_failures: 1,
            server_errors: 5,
            base_time: Duration::from_secs(2),
            max_time: Duration::from_secs(60),
            max_percent: 50,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    #[default]
    Http,
    Tcp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    V1,
    V2,
}

/// One server of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    pub address: SocketAddr,
    /// 1..=1000; default 1.
    pub weight: u32,
}

/// The pool's balancing algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BalanceConfig {
    /// Smooth weighted round robin (as nginx).
    #[default]
    RoundRobin,
    /// Fewest active requests and tunnels relative to weight.
    LeastConn,
    /// Power of two random choices, by weight, the less loaded wins.
    RandomTwo,
}

/// What a hashing pool hashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// The client's address (as told by PROXY protocol when trusted).
    SourceIp,
    /// A request header, by lower-case name.
    Header(String),
    /// A query parameter.
    Query(String),
    /// A request cookie.
    Cookie(String),
    /// The first N segments of the path (SockJS's `/prefix/<server>/<session>/…`).
    Path(usize),
}

impl std::fmt::Display for HashKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HashKey::SourceIp => write!(f, "hash:source_ip"),
            HashKey::Header(name) => write!(f, "hash:header:{name}"),
            HashKey::Query(name) => write!(f, "hash:query:{name}"),
            HashKey::Cookie(name) => write!(f, "hash:cookie:{name}"),
            HashKey::Path(depth) => write!(f, "hash:path:{depth}"),
        }
    }
}

/// `sticky = { ... }`: how a client keeps going to the same server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickyConfig {
    /// wharf inserts a cookie naming the server by an opaque token.
    Cookie(StickyCookie),
    /// wharf learns which server owns a session key and routes it there.
    Learn(StickyLearn),
}

/// `sticky = { cookie = "NAME", same_site, secure, max_age, secret }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyCookie {
    pub name: String,
    pub same_site: SameSite,
    /// Always mark the cookie `Secure` (it is on TLS connections anyway, and with `SameSite=None`).
    pub secure: bool,
    pub max_age: Option<Duration>,
    /// Key for the tokens; the same secret gives the same tokens on every wharf.
    pub secret: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SameSite {
    Lax,
    Strict,
    None,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
            SameSite::None => "None",
        }
    }
}

/// `sticky = { learn = "cookie:NAME" | "engine.io", table_size, expiry }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StickyLearn {
    pub source: LearnSource,
    /// Sessions remembered at most; the oldest go first.
    pub table_size: usize,
    /// A session not seen for this long is forgotten.
    pub expiry: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LearnSource {
    /// The value of a cookie the server sets (Socket.IO's `io`, `JSESSIONID`).
    Cookie(String),
    /// The `sid` of the Engine.IO handshake, routed by the `sid` query parameter.
    EngineIo,
}

pub const DEFAULT_LEARN_TABLE_SIZE: usize = 100_000;
pub const DEFAULT_LEARN_EXPIRY: Duration = Duration::from_secs(3600);

/// Server-side timeouts of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolTimeouts {
    /// Establishing the TCP connection to a server.
    pub connect: Duration,
    /// From the request being sent to the response head arriving.
    pub response: Duration,
    /// A tunnel (websocket, TCP) with no bytes either way for this long is closed.
    pub tunnel_idle: Duration,
    /// A request waiting for a server under `max_connections` gets 503 after this.
    pub queue: Duration,
    /// A request body that brings fewer than `min_upload_rate` bytes per
    /// second over any period of this length (nothing at all included) is
    /// cut with 408 (also the longest silence between two of its bytes).
    pub upload_idle: Duration,
    /// Idle keep-alive connections to a server are closed after this. The default
    /// (4s) is below Node.js's 5s `keepAliveTimeout`, so wharf closes first and never
    /// sends a request on a connection the server is closing.
    pub server_idle: Duration,
}

impl Default for PoolTimeouts {
    fn default() -> Self {
        PoolTimeouts {
            connect: Duration::from_secs(3),
            response: Duration::from_secs(60),
            tunnel_idle: Duration::from_secs(3600),
            queue: Duration::from_secs(5),
            server_idle: Duration::from_secs(4),
            upload_idle: Duration::from_secs(10),
        }
    }
}

pub const DEFAULT_IDLE_CONNECTIONS: usize = 32;
