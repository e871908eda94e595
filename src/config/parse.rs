//! From config text to a validated [`Config`], reporting every mistake at once.
//!
//! The TOML parser recovers from syntax errors and hands back a spanned tree;
//! the readers below walk it with [`Table`], which reports wrong types and
//! unknown keys, while these functions check values and cross-references. Each
//! reader reads all of its fields before giving up, so one bad value never hides
//! the next one.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeArray, DeTable, DeValue};

use super::reader::{
    Collector, DurationStr, Field, Read, Table, closest, is_bare_key_char, type_name,
};
use super::size::Size;
use super::{
    AccessLogConfig, AccessLogFormat, AccessLogTarget, AdminConfig, BalanceConfig,
    CertificatePaths, Config, ConfigErrors, DEFAULT_DRAIN_TIMEOUT, DEFAULT_DRAIN_WINDOW,
    DEFAULT_IDLE_CONNECTIONS, DEFAULT_LEARN_EXPIRY, DEFAULT_LEARN_TABLE_SIZE,
    DEFAULT_LISTENER_MAX_CONNECTIONS, DEFAULT_MIN_UPLOAD_RATE, DEFAULT_QUEUE_SIZE, DEFAULT_RETRIES,
    EjectionPolicy, HashKey, HealthCheck, HealthConfig, HostMatch, LearnSource, Limits,
    ListenerConfig, ListenerTimeouts, ListenerTls, Plaintext, PoolConfig, PoolMode, PoolTimeouts,
    ProxyVersion, RouteConfig, SameSite, ServerConfig, StickyConfig, StickyCookie, StickyLearn,
    WebSocketRoute, parse_duration,
};

/// Contract keys and values (DESIGN.md) that this version recognises but does
/// not implement yet. Each is reported as an error, never ignored: a user who
/// asked for TLS must not silently get plaintext. Remove an entry when its
/// feature lands.
mod not_yet {
    pub const TOP_LEVEL: &[&str] = &[];
    pub const LISTENER: &[&str] = &[];
    pub const POOL: &[&str] = &[];
}

/// Upgrade protocols a route allows when it does not say.
const DEFAULT_UPGRADES: &[&str] = &["websocket"];
const MAX_WEIGHT: u32 = 1000;
/// How long SIGTERM waits for connections to finish, unless the file says.
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
/// Far more threads than any machine wharf runs on has cores.
const MAX_WORKERS: usize = 1024;

/// Parses and validates config text; `file` is only used to name the file in errors.
pub fn parse_str(file: &str, text: &str) -> Result<Config, ConfigErrors> {
    let (doc, syntax_errors) = DeTable::parse_recoverable(text);
    let errors = Collector::new(file, text);
    for error in &syntax_errors {
        errors.syntax(error.span(), error.message());
    }
    let config = read_config(Table::root(&errors, &doc));
    errors.finish(config)
}

fn read_config(mut root: Table<'_>) -> Read<Config> {
    root.not_yet(not_yet::TOP_LEVEL);
    let shutdown_timeout = duration(&mut root, "shutdown_timeout", DEFAULT_SHUTDOWN_TIMEOUT);
    let workers = root.optional("workers", None, |n: i64| {
        positive("workers", n).and_then(|n| match n > MAX_WORKERS {
            true => Err(format!("`workers` must be at most {MAX_WORKERS}, not {n}")),
            false => Ok(Some(n)),
        })
    });
    let admin = read_admin(&mut root);
    let access_log = read_access_log(&mut root);
    let pool_tables = root.named_tables("pool");
    // `None` when `pool` itself is malformed: then routes cannot be checked against it.
    let defined: Option<Vec<&str>> = pool_tables
        .as_ref()
        .ok()
        .map(|pools| pools.iter().map(|(name, _)| name.value).collect());
    // Each pool reports its own mistakes; the modes of those that parsed let
    // routes be checked against them.
    let each_pool: Read<Vec<Read<PoolConfig>>> = pool_tables.map(|pools| {
        pools
            .into_iter()
            .map(|(name, table)| read_pool(name, table))
            .collect()
    });
    let known = defined.map(|names| KnownPools {
        names,
        modes: each_pool
            .iter()
            .flatten()
            .flatten()
            .map(|p| (p.name.clone(), p.mode))
            .collect(),
    });
    let pools = each_pool.and_then(|pools| all(pools.into_iter()));
    let listeners = read_listeners(&mut root, known.as_ref());
    root.finish();
    Ok(Config {
        shutdown_timeout: shutdown_timeout?,
        workers: workers?,
        admin: admin?,
        access_log: access_log?,
        listeners: listeners?,
        pools: pools?,
    })
}

/// `[admin] bind = "127.0.0.1:9090"`, `token = "..."`. An admin listener
/// reachable from other hosts must ask for a token.
fn read_admin(root: &mut Table<'_>) -> Read<Option<AdminConfig>> {
    let Some(mut t) = root.table("admin")? else {
        return Ok(None);
    };
    let errors = t.errors();
    let bind = t.get_required::<&str>("bind").and_then(|field| {
        parse_bind(field.value)
            .map(|addr| (addr, field.span.clone()))
            .ok_or_else(|| {
                errors.error(
                    &field.span,
                    format!(
                        "`bind` must be an address like 127.0.0.1:9090, not {:?}",
                        field.value
                    ),
                )
            })
    });
    let token = t.optional("token", None, |s: &str| {
        if s.len() < 8 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Err("`token` must be at least 8 characters, without spaces".to_owned())
        } else {
            Ok(Some(s.to_owned()))
        }
    });
    t.finish();
    let ((bind, span), token) = (bind?, token?);
    if token.is_none() && !bind.ip().is_loopback() {
        return Err(errors.error(
            &span,
            format!(
                "the admin listener on {bind} is reachable from other hosts: set `token` in [admin], or bind to 127.0.0.1"
            ),
        ));
    }
    Ok(Some(AdminConfig { bind, token }))
}

/// `[access_log] to = "stdout" | "PATH"`, `format = "json" | "text"`.
fn read_access_log(root: &mut Table<'_>) -> Read<Option<AccessLogConfig>> {
    let Some(mut t) = root.table("access_log")? else {
        return Ok(None);
    };
    let base = t.errors().base_dir();
    let to = t.optional("to", AccessLogTarget::Stdout, |s: &str| match s {
        "" => Err("`to` is empty: use \"stdout\" or a file path".to_owned()),
        "stdout" | "-" => Ok(AccessLogTarget::Stdout),
        path => Ok(AccessLogTarget::File(base.join(path))),
    });
    let format = t.optional("format", AccessLogFormat::Json, |s: &str| match s {
        "json" => Ok(AccessLogFormat::Json),
        "text" => Ok(AccessLogFormat::Text),
        other => Err(format!(
            "`format` must be \"json\" or \"text\", not {other:?}"
        )),
    });
    t.finish();
    Ok(Some(AccessLogConfig {
        to: to?,
        format: format?,
    }))
}

/// Reads every item (each reports its own mistakes) before giving up on any.
fn all<T>(items: impl Iterator<Item = Read<T>>) -> Read<Vec<T>> {
    let results: Vec<Read<T>> = items.collect();
    results.into_iter().collect()
}

// ---------------------------------------------------------------- listeners

/// Listener names and addresses already taken, with the line that took them.
#[derive(Default)]
struct Taken {
    names: Vec<(String, usize)>,
    binds: Vec<(SocketAddr, usize)>,
}

/// The pools a route or `tcp_pool` may name, with their modes where known
/// (a pool with mistakes of its own has no known mode and is not checked).
struct KnownPools<'a> {
    names: Vec<&'a str>,
    modes: Vec<(String, PoolMode)>,
}

impl KnownPools<'_> {
    fn mode(&self, name: &str) -> Option<PoolMode> {
        self.modes.iter().find(|(n, _)| n == name).map(|(_, m)| *m)
    }
}

fn read_listeners(
    root: &mut Table<'_>,
    pools: Option<&KnownPools<'_>>,
) -> Read<Vec<ListenerConfig>> {
    let tables = root.tables("listener")?;
    if tables.is_empty() {
        return Err(root.errors().absent(
            root.span(),
            "the config has no [[listener]]; add one with a `name`, a `bind` address and a [[listener.route]]",
        ));
    }
    let mut taken = Taken::default();
    all(tables
        .into_iter()
        .map(|table| read_listener(table, pools, &mut taken)))
}

fn read_listener(
    mut t: Table<'_>,
    pools: Option<&KnownPools<'_>>,
    taken: &mut Taken,
) -> Read<ListenerConfig> {
    t.not_yet(not_yet::LISTENER);
    let name = read_listener_name(&mut t, taken);
    let bind = read_bind(&mut t, taken);
    let max_connections = t.optional(
        "max_connections",
        DEFAULT_LISTENER_MAX_CONNECTIONS,
        |n: i64| positive("max_connections", n),
    );
    let timeouts = read_listener_timeouts(&mut t);
    let routes = read_routes(&mut t, pools);
    let proxy_protocol = read_cidrs(&mut t, "proxy_protocol");
    let proxy_protocol_optional = t.optional("proxy_protocol_optional", false, Ok);
    let trusted_proxies = read_cidrs(&mut t, "trusted_proxies");
    let limits = read_limits(&mut t);
    let tcp_pool = read_tcp_pool(&mut t, pools);
    let base = t.errors().base_dir();
    let flash_policy = t.optional("flash_policy", None, |s: &str| {
        let path = base.join(s);
        std::fs::read(&path)
            .map(|bytes| Some(std::sync::Arc::from(bytes)))
            .map_err(|e| format!("cannot read the flash policy file {}: {e}", path.display()))
    });
    let tls = read_tls(&mut t);
    let (errors, span) = (t.errors(), t.span().clone());
    t.finish();
    let timeouts = timeouts?;
    let tcp_pool = tcp_pool?;
    if timeouts.server_first.is_some() && tcp_pool.is_none() {
        return Err(errors.error(
            &span,
            "`timeouts.server_first` needs a `tcp_pool` to hand silent clients to",
        ));
    }
    Ok(ListenerConfig {
        name: name?,
        bind: bind?,
        routes: routes?,
        max_connections: max_connections?,
        timeouts,
        proxy_protocol: proxy_protocol?,
        proxy_protocol_optional: proxy_protocol_optional?,
        trusted_proxies: trusted_proxies?,
        limits: limits?,
        tcp_pool,
        flash_policy: flash_policy?,
        tls: tls?,
    })
}

/// `proxy_protocol = ["10.0.0.0/8", "127.0.0.1"]` (or `trusted_proxies`):
/// peers, as CIDRs or addresses.
fn read_cidrs(t: &mut Table<'_>, key: &'static str) -> Read<Vec<ipnet::IpNet>> {
    let Some(list) = t.get::<&DeArray<'_>>(key)? else {
        return Ok(Vec::new());
    };
    let errors = t.errors();
    all(list.value.iter().map(|item| match item.get_ref() {
        DeValue::String(s) => parse_cidr(key, s).map_err(|m| errors.error(&item.span(), m)),
        other => Err(errors.error(
            &item.span(),
            format!(
                "each entry of `{key}` must be a CIDR like \"10.0.0.0/8\", not {}",
                type_name(other)
            ),
        )),
    }))
}

fn parse_cidr(key: &str, s: &str) -> Result<ipnet::IpNet, String> {
    if let Ok(net) = s.parse::<ipnet::IpNet>() {
        return Ok(net.trunc());
    }
    s.parse::<std::net::IpAddr>()
        .map(ipnet::IpNet::from)
        .map_err(|_| {
            format!("`{key}` entries must be CIDRs like \"10.0.0.0/8\" or addresses, not {s:?}")
        })
}

/// `limits = { header_field, request_head, headers, request_line }`, in bytes
/// (and a count), each within bounds that keep hyper and clients working.
fn read_limits(t: &mut Table<'_>) -> Read<Limits> {
    let defaults = Limits::default();
    let Some(mut l) = t.table("limits")? else {
        return Ok(defaults);
    };
    let within = |key: &'static str, min: usize, max: usize| {
        move |n: i64| match usize::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(format!("`{key}` must be between {min} and {max}, not {n}")),
        }
    };
    const MIB: usize = 1024 * 1024;
    let header_field = l.optional(
        "header_field",
        defaults.header_field,
        within("header_field", 256, MIB),
    );
    // hyper's read buffer is at least 8 KiB.
    let request_head = l.optional(
        "request_head",
        defaults.request_head,
        within("request_head", 8192, MIB),
    );
    let headers = l.optional("headers", defaults.headers, within("headers", 1, 1000));
    let request_line = l.optional(
        "request_line",
        defaults.request_line,
        within("request_line", 256, 65_534),
    );
    l.finish();
    Ok(Limits {
        header_field: header_field?,
        request_head: request_head?,
        headers: headers?,
        request_line: request_line?,
    })
}

/// `tcp_pool = "NAME"`: a defined pool with `mode = "tcp"`.
fn read_tcp_pool(t: &mut Table<'_>, pools: Option<&KnownPools<'_>>) -> Read<Option<String>> {
    let Some(field) = t.get::<&str>("tcp_pool")? else {
        return Ok(None);
    };
    let name = field.value;
    let errors = t.errors();
    let Some(pools) = pools else {
        return Ok(Some(name.to_owned()));
    };
    if !pools.names.contains(&name) {
        return Err(errors.absent(
            &field.span,
            format!("`tcp_pool` refers to pool `{name}`, which is not defined"),
        ));
    }
    if pools.mode(name) == Some(PoolMode::Http) {
        return Err(errors.error(
            &field.span,
            format!("`tcp_pool` must name a pool with `mode = \"tcp\"`; `{name}` is an HTTP pool"),
        ));
    }
    Ok(Some(name.to_owned()))
}

/// `[listener.tls]`: `certificates = [{ cert, key }, ...]` and `plaintext`.
fn read_tls(t: &mut Table<'_>) -> Read<Option<ListenerTls>> {
    let Some(mut tls) = t.table("tls")? else {
        return Ok(None);
    };
    let errors = tls.errors();
    let base = errors.base_dir();
    let certificates = tls.get_required::<&DeArray<'_>>("certificates").and_then(|list| {
        if list.value.is_empty() {
            return Err(errors.error(&list.span, "`certificates` is empty; TLS needs at least one certificate"));
        }
        all(list.value.iter().map(|item| {
            let Some(mut c) = Table::from_item(errors, item, String::new(), "a certificate table".into()) else {
                return Err(errors.error(
                    &item.span(),
                    "each certificate must be a table like { cert = \"certs/app.pem\", key = \"certs/app.key\" }",
                ));
            };
            let file = |key: &'static str| {
                let base = &base;
                move |s: &str| {
                    let path = base.join(s);
                    match path.is_file() {
                        true => Ok(path),
                        false => Err(format!("the {key} file {} does not exist", path.display())),
                    }
                }
            };
            let cert = c.required("cert", file("certificate"));
            let key = c.required("key", file("key"));
            c.finish();
            Ok(CertificatePaths { cert: cert?, key: key? })
        }))
    });
    let plaintext = tls.optional("plaintext", Plaintext::Serve, |s: &str| match s {
        "serve" => Ok(Plaintext::Serve),
        "redirect" => Ok(Plaintext::Redirect),
        "reject" => Ok(Plaintext::Reject),
        _ => Err(format!(
            "`plaintext` must be \"serve\", \"redirect\" or \"reject\", not {s:?}"
        )),
    });
    tls.finish();
    Ok(Some(ListenerTls {
        certificates: certificates?,
        plaintext: plaintext?,
    }))
}

/// Names identify listeners in logs and metrics, so they must be unique.
fn read_listener_name(t: &mut Table<'_>, taken: &mut Taken) -> Read<String> {
    let field = t.get_required::<&str>("name")?;
    let errors = t.errors();
    let name = field.value;
    if name.trim().is_empty() {
        return Err(errors.error(&field.span, "`name` must not be empty"));
    }
    if let Some((_, line)) = taken.names.iter().find(|(other, _)| other == name) {
        return Err(errors.error(
            &field.span,
            format!("listener name `{name}` is already used by the listener at line {line}"),
        ));
    }
    taken
        .names
        .push((name.to_owned(), errors.line_of(&field.span)));
    Ok(name.to_owned())
}

/// Two listeners on one address would fail at startup; say so now, with both places.
fn read_bind(t: &mut Table<'_>, taken: &mut Taken) -> Read<SocketAddr> {
    let field = t.get_required::<&str>("bind")?;
    let errors = t.errors();
    let addr = parse_bind(field.value).ok_or_else(|| {
        errors.error(
            &field.span,
            format!(
                "`bind` must be an address like 127.0.0.1:8080, not {:?}",
                field.value
            ),
        )
    })?;
    if let Some((other, line)) = taken.binds.iter().find(|(other, _)| overlaps(addr, *other)) {
        let message = if *other == addr {
            format!("`bind` {addr} is already used by the listener at line {line}")
        } else {
            format!("`bind` {addr} overlaps {other}, used by the listener at line {line}")
        };
        return Err(errors.error(&field.span, message));
    }
    taken.binds.push((addr, errors.line_of(&field.span)));
    Ok(addr)
}

/// `IP:port`, `[v6]:port`, or `localhost:port`, which for a local bind can only
/// mean 127.0.0.1.
fn parse_bind(s: &str) -> Option<SocketAddr> {
    if let Ok(addr) = s.parse() {
        return Some(addr);
    }
    let (host, port) = s.split_once(':')?;
    if !host.eq_ignore_ascii_case("localhost") || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let port = port.parse().ok()?;
    Some(SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
}

/// Whether two listeners could not both bind: the same port on the same address
/// or with one of them on the wildcard address. Port 0 (any free port) never clashes.
fn overlaps(a: SocketAddr, b: SocketAddr) -> bool {
    a.port() == b.port()
        && a.port() != 0
        && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
}

fn read_listener_timeouts(t: &mut Table<'_>) -> Read<ListenerTimeouts> {
    let defaults = ListenerTimeouts::default();
    let Some(mut timeouts) = t.table("timeouts")? else {
        return Ok(defaults);
    };
    let request_header = duration(&mut timeouts, "request_header", defaults.request_header);
    let first_bytes = duration(&mut timeouts, "first_bytes", defaults.first_bytes);
    let server_first = timeouts.optional("server_first", None, |DurationStr(s)| {
        nonzero_duration("server_first", s).map(Some)
    });
    let client_write = duration(&mut timeouts, "client_write", defaults.client_write);
    timeouts.finish();
    Ok(ListenerTimeouts {
        request_header: request_header?,
        first_bytes: first_bytes?,
        server_first: server_first?,
        client_write: client_write?,
    })
}

// ---------------------------------------------------------------- routes

fn read_routes(t: &mut Table<'_>, pools: Option<&KnownPools<'_>>) -> Read<Vec<RouteConfig>> {
    let tables = t.tables("route")?;
    if tables.is_empty() {
        return Err(t.errors().absent(
            t.span(),
            "the listener has no [[listener.route]]; add at least one to say which pool gets its requests",
        ));
    }
    all(tables.into_iter().map(|route| read_route(route, pools)))
}

fn read_route(mut t: Table<'_>, pools: Option<&KnownPools<'_>>) -> Read<RouteConfig> {
    let host = t.optional("host", None, |s: &str| parse_host(s).map(Some));
    let path_prefix = t.optional("path_prefix", None, |s: &str| {
        parse_path_prefix(s).map(Some)
    });
    let sni = t.optional("sni", None, |s: &str| parse_host(s).map(Some));
    let (host, path_prefix, sni) = (host?, path_prefix?, sni?);
    let (errors, span) = (t.errors(), t.span().clone());
    if sni.is_some() && (host.is_some() || path_prefix.is_some()) {
        t.finish();
        return Err(errors.error(
            &span,
            "a route with `sni` passes TLS through unread, so it cannot also match `host` or `path_prefix`",
        ));
    }
    let wanted = if sni.is_some() {
        PoolMode::Tcp
    } else {
        PoolMode::Http
    };
    let pool = read_route_pool(&mut t, pools, wanted);
    let upgrades = read_upgrades(&mut t);
    let websocket = read_websocket_route(&mut t);
    t.finish();
    Ok(RouteConfig {
        host,
        path_prefix,
        pool: pool?,
        upgrades: upgrades?,
        sni,
        websocket: websocket?,
    })
}

/// `ws_ping`, `ws_pong_timeout`, `ws_max_message`.
fn read_websocket_route(t: &mut Table<'_>) -> Read<WebSocketRoute> {
    let defaults = WebSocketRoute::default();
    let ping = t.optional("ws_ping", None, |DurationStr(s)| {
        nonzero_duration("ws_ping", s).map(Some)
    });
    let pong_timeout = duration(t, "ws_pong_timeout", defaults.pong_timeout);
    let max_message = t.optional("ws_max_message", None, |Size(size)| match size {
        Ok(0) => Err("`ws_max_message` must be at least 1 byte".to_owned()),
        Ok(n) => Ok(Some(n)),
        Err(e) => Err(format!("`ws_max_message` is not a valid size: {e}")),
    });
    Ok(WebSocketRoute {
        ping: ping?,
        pong_timeout: pong_timeout?,
        max_message: max_message?,
    })
}

/// The route's pool, which must be one of the `[pool.NAME]` tables.
fn read_route_pool(
    t: &mut Table<'_>,
    pools: Option<&KnownPools<'_>>,
    wanted: PoolMode,
) -> Read<String> {
    let field = t.get_required::<&str>("pool")?;
    let name = field.value;
    match pools {
        Some(pools) if pools.mode(name).is_some_and(|mode| mode != wanted) => {
            let message = match wanted {
                PoolMode::Http => format!(
                    "route sends HTTP to pool `{name}`, which is a TCP pool; use it as `tcp_pool` or in a route with `sni`"
                ),
                PoolMode::Tcp => format!(
                    "a route with `sni` needs a pool with `mode = \"tcp\"`; `{name}` is an HTTP pool"
                ),
            };
            Err(t.errors().error(&field.span, message))
        }
        Some(pools) if !pools.names.contains(&name) => {
            let mut message = format!("route refers to pool `{name}`, which is not defined");
            if let Some(close) = closest(name, &pools.names) {
                message.push_str(&format!("; did you mean `{close}`?"));
            }
            // Absent rather than invalid: after a syntax error the pool may be what was lost.
            Err(t.errors().absent(&field.span, message))
        }
        _ => Ok(name.to_owned()),
    }
}

/// `app.example.com` matches exactly (case-insensitively, so it is stored
/// lower-case); `*.example.com` matches any host ending in `.example.com`.
fn parse_host(s: &str) -> Result<HostMatch, String> {
    let (wildcard, name) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if s.is_empty() {
        return Err("`host` must not be empty; leave it out to match any host".into());
    }
    if name.contains('*') {
        return Err(format!(
            "`host` may only use `*` as its whole first label, as in \"*.example.com\", not {s:?}"
        ));
    }
    if name.contains(':') {
        return Err(format!(
            "`host` must not include a port (routes match the host name whatever the port), not {s:?}"
        ));
    }
    let valid_label = |label: &str| !label.is_empty() && label.chars().all(is_bare_key_char);
    if !name.split('.').all(valid_label) {
        return Err(format!(
            "`host` must be a host name like \"app.example.com\" or \"*.example.com\", not {s:?}"
        ));
    }
    let name = name.to_ascii_lowercase();
    Ok(if wildcard {
        HostMatch::Suffix(format!(".{name}"))
    } else {
        HostMatch::Exact(name)
    })
}

/// A prefix of the request path (never of the query), so it starts with `/`.
fn parse_path_prefix(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err(format!("`path_prefix` must start with \"/\", not {s:?}"));
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!(
            "`path_prefix` must not contain spaces or control characters, which a request path never has: {s:?}"
        ));
    }
    if s.contains(['?', '#']) {
        return Err(format!(
            "`path_prefix` is matched against the path only, so it cannot contain `?` or `#`: {s:?}"
        ));
    }
    Ok(s.to_owned())
}

/// The protocols that may upgrade through a route, lower-cased and without repeats.
fn read_upgrades(t: &mut Table<'_>) -> Read<Vec<String>> {
    let Some(list) = t.get::<&DeArray<'_>>("upgrades")? else {
        return Ok(DEFAULT_UPGRADES.iter().map(|&s| s.to_owned()).collect());
    };
    let errors = t.errors();
    let names = all(list.value.iter().map(|item| {
        let name = errors.value::<&str>(item, "each entry of `upgrades`")?;
        parse_upgrade(name.value).map_err(|message| errors.error(&name.span, message))
    }))?;
    let mut unique: Vec<String> = Vec::with_capacity(names.len());
    for name in names {
        if !unique.contains(&name) {
            unique.push(name);
        }
    }
    Ok(unique)
}

fn parse_upgrade(s: &str) -> Result<String, String> {
    let name = s.to_ascii_lowercase();
    if name == "h2c" {
        return Err(
            "`h2c` cannot be allowed to upgrade: after an h2c upgrade the client talks \
                    HTTP/2 straight to the server, past wharf's routing, headers and limits"
                .into(),
        );
    }
    if name.is_empty() || !name.chars().all(is_token_char) {
        return Err(format!(
            "upgrade protocol {s:?} is not a valid protocol name (an HTTP token such as \"websocket\")"
        ));
    }
    Ok(name)
}

/// RFC 9110 `tchar`: what an `Upgrade` protocol name may contain.
fn is_token_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

// ---------------------------------------------------------------- pools

fn read_pool(name: Field<&str>, mut t: Table<'_>) -> Read<PoolConfig> {
    t.not_yet(not_yet::POOL);
    let errors = t.errors();
    let valid_name = check_pool_name(name.value).map_err(|m| errors.error(&name.span, m));
    let mode = t.optional("mode", PoolMode::Http, parse_mode);
    let send_proxy_protocol = t.optional("send_proxy_protocol", None, |s: &str| match s {
        "v1" => Ok(Some(ProxyVersion::V1)),
        "v2" => Ok(Some(ProxyVersion::V2)),
        _ => Err(format!(
            "`send_proxy_protocol` must be \"v1\" or \"v2\", not {s:?}"
        )),
    });
    let servers = read_servers(&mut t);
    let balance = t.optional("balance", (BalanceConfig::default(), None), parse_balance);
    let sticky = read_sticky(&mut t);
    let timeouts = read_pool_timeouts(&mut t);
    let idle_connections = t.optional("idle_connections", DEFAULT_IDLE_CONNECTIONS, |n: i64| {
        non_negative("idle_connections", n)
    });
    let health = read_health(&mut t);
    let max_connections = t.optional("max_connections", None, |n: i64| {
        positive("max_connections", n).map(Some)
    });
    let queue_size = t.optional("queue_size", DEFAULT_QUEUE_SIZE, |n: i64| {
        non_negative("queue_size", n)
    });
    let drain_timeout = duration(&mut t, "drain_timeout", DEFAULT_DRAIN_TIMEOUT);
    let drain_window = t.optional("drain_window", DEFAULT_DRAIN_WINDOW, |DurationStr(s)| {
        window("drain_window", s)
    });
    let slow_start = t.optional("slow_start", None, |DurationStr(s)| {
        window("slow_start", s).map(|d| (!d.is_zero()).then_some(d))
    });
    let retries = t.optional("retries", DEFAULT_RETRIES, |n: i64| {
        non_negative("retries", n).and_then(|n| match n {
            0..=10 => Ok(n),
            _ => Err(format!("`retries` must be 10 at most, not {n}")),
        })
    });
    let ejection = read_ejection(&mut t);
    let min_upload_rate = t.optional("min_upload_rate", DEFAULT_MIN_UPLOAD_RATE, |n: i64| {
        u64::try_from(n).map_err(|_| format!("`min_upload_rate` must be 0 or more, not {n}"))
    });
    t.finish();
    valid_name?;
    Ok(PoolConfig {
        name: name.value.to_owned(),
        mode: mode?,
        send_proxy_protocol: send_proxy_protocol?,
        servers: servers?,
        balance: balance.as_ref().map(|b| b.0).unwrap_or_default(),
        hash: balance?.1,
        sticky: sticky?,
        timeouts: timeouts?,
        idle_connections: idle_connections?,
        health: health?,
        max_connections: max_connections?,
        queue_size: queue_size?,
        drain_timeout: drain_timeout?,
        drain_window: drain_window?,
        slow_start: slow_start?,
        min_upload_rate: min_upload_rate?,
        retries: retries?,
        ejection: ejection?,
    })
}

/// `health = { path, host, interval, timeout, rise, fall }`; without `path`, a TCP connect check.
fn read_health(t: &mut Table<'_>) -> Read<Option<HealthConfig>> {
    let Some(mut h) = t.table("health")? else {
        return Ok(None);
    };
    let path = h.optional("path", None, |s: &str| {
        if s.starts_with('/') && !s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            Ok(Some(s.to_owned()))
        } else {
            Err(format!(
                "health `path` must start with / and have no spaces, not {s:?}"
            ))
        }
    });
    let host = h.optional("host", None, |s: &str| {
        if !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic()) {
            Ok(Some(s.to_owned()))
        } else {
            Err(format!(
                "health `host` must be a host name like app.internal, not {s:?}"
            ))
        }
    });
    let interval = h.optional(
        "interval",
        HealthConfig::DEFAULT_INTERVAL,
        |DurationStr(s)| {
            let interval = nonzero_duration("interval", s)?;
            match interval < MIN_HEALTH_INTERVAL {
                true => Err(format!(
                    "health `interval` must be at least {MIN_HEALTH_INTERVAL:?}"
                )),
                false => Ok(interval),
            }
        },
    );
    let timeout = duration(&mut h, "timeout", HealthConfig::DEFAULT_TIMEOUT);
    let rise = h.optional("rise", HealthConfig::DEFAULT_RISE, |n: i64| {
        threshold("rise", n)
    });
    let fall = h.optional("fall", HealthConfig::DEFAULT_FALL, |n: i64| {
        threshold("fall", n)
    });
    let (errors, span) = (h.errors(), h.span().clone());
    h.finish();
    let (path, host) = (path?, host?);
    if host.is_some() && path.is_none() {
        return Err(errors.error(
            &span,
            "health `host` needs a `path`: without one the check is a TCP connect",
        ));
    }
    let check = match path {
        Some(path) => HealthCheck::Http { path, host },
        None => HealthCheck::Tcp,
    };
    Ok(Some(HealthConfig {
        check,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
    }))
}

/// Checks more often than this would load servers for little gain.
const MIN_HEALTH_INTERVAL: Duration = Duration::from_millis(100);

fn threshold(key: &str, n: i64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(n) if (1..=100).contains(&n) => Ok(n),
        _ => Err(format!("health `{key}` must be between 1 and 100, not {n}")),
    }
}

/// `ejection = { connect_failures, server_errors, base_time, max_time, max_percent }`.
fn read_ejection(t: &mut Table<'_>) -> Read<EjectionPolicy> {
    let defaults = EjectionPolicy::default();
    let Some(mut e) = t.table("ejection")? else {
        return Ok(defaults);
    };
    let count = |key: &'static str| {
        move |n: i64| u32::try_from(n).map_err(|_| format!("`{key}` must be 0 or more, not {n}"))
    };
    let connect_failures = e.optional(
        "connect_failures",
        defaults.connect_failures,
        count("connect_failures"),
    );
    let server_errors = e.optional(
        "server_errors",
        defaults.server_errors,
        count("server_errors"),
    );
    let base_time = duration(&mut e, "base_time", defaults.base_time);
    let max_time = duration(&mut e, "max_time", defaults.max_time);
    let max_percent = e.optional("max_percent", defaults.max_percent, |n: i64| {
        u32::try_from(n)
            .ok()
            .filter(|n| *n <= 100)
            .ok_or_else(|| format!("`max_percent` must be between 0 and 100, not {n}"))
    });
    e.finish();
    Ok(EjectionPolicy {
        connect_failures: connect_failures?,
        server_errors: server_errors?,
        base_time: base_time?,
        max_time: max_time?,
        max_percent: max_percent?,
    })
}

/// Pool names appear in metrics and logs; keep them to bare-key characters.
fn check_pool_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("a pool name must not be empty".into())
    } else if !name.chars().all(is_bare_key_char) {
        Err(format!(
            "pool name {name:?} may only contain letters, digits, `_` and `-`"
        ))
    } else {
        Ok(())
    }
}

fn parse_mode(s: &str) -> Result<PoolMode, String> {
    match s {
        "http" => Ok(PoolMode::Http),
        "tcp" => Ok(PoolMode::Tcp),
        _ => Err(format!("`mode` must be \"http\" or \"tcp\", not {s:?}")),
    }
}

/// An algorithm, or `hash:KEY` (with round robin for requests without the key).
fn parse_balance(s: &str) -> Result<(BalanceConfig, Option<HashKey>), String> {
    match s {
        "round_robin" => Ok((BalanceConfig::RoundRobin, None)),
        "least_conn" => Ok((BalanceConfig::LeastConn, None)),
        "random_two" => Ok((BalanceConfig::RandomTwo, None)),
        _ => match s.strip_prefix("hash:") {
            Some(key) => parse_hash_key(key).map(|key| (BalanceConfig::RoundRobin, Some(key))),
            None => Err(format!(
                "`balance` must be \"round_robin\", \"least_conn\", \"random_two\" or \"hash:KEY\", not {s:?}"
            )),
        },
    }
}

fn parse_hash_key(key: &str) -> Result<HashKey, String> {
    let named = |kind: &str, name: &str| -> Result<String, String> {
        if !name.is_empty() && name.chars().all(is_token_char) {
            Ok(name.to_owned())
        } else {
            Err(format!(
                "`hash:{kind}:NAME` needs a name made of token characters, not {name:?}"
            ))
        }
    };
    match key.split_once(':') {
        None if key == "source_ip" => Ok(HashKey::SourceIp),
        Some(("header", name)) => {
            named("header", name).map(|n| HashKey::Header(n.to_ascii_lowercase()))
        }
        Some(("query", name)) => named("query", name).map(HashKey::Query),
        Some(("cookie", name)) => named("cookie", name).map(HashKey::Cookie),
        Some(("path", depth)) => match depth.parse::<usize>() {
            Ok(depth @ 1..=16) => Ok(HashKey::Path(depth)),
            _ => Err(format!(
                "`hash:path:N` needs N between 1 and 16, not {depth:?}"
            )),
        },
        _ => Err(format!(
            "hash balancing takes source_ip, header:NAME, query:NAME, cookie:NAME or path:N, not {key:?}"
        )),
    }
}

/// `sticky = { cookie = "NAME", ... }` or `sticky = { learn = "...", ... }`.
fn read_sticky(t: &mut Table<'_>) -> Read<Option<StickyConfig>> {
    let Some(mut st) = t.table("sticky")? else {
        return Ok(None);
    };
    let (errors, span) = (st.errors(), st.span().clone());
    let cookie = st.optional("cookie", None, |s: &str| cookie_name(s).map(Some));
    let learn = st.optional("learn", None, |s: &str| parse_learn(s).map(Some));
    let sticky = match (cookie?, learn?) {
        (Some(name), None) => {
            let same_site = st.optional("same_site", SameSite::Lax, |s: &str| match s {
                "Lax" | "lax" => Ok(SameSite::Lax),
                "Strict" | "strict" => Ok(SameSite::Strict),
                "None" | "none" => Ok(SameSite::None),
                _ => Err(format!(
                    "`same_site` must be \"Lax\", \"Strict\" or \"None\", not {s:?}"
                )),
            });
            let secure = st.optional("secure", false, |b: bool| Ok(b));
            let max_age = duration(&mut st, "max_age", Duration::ZERO);
            let secret = st.optional("secret", String::new(), |s: &str| Ok(s.to_owned()));
            st.finish();
            let max_age = max_age?;
            StickyConfig::Cookie(StickyCookie {
                name,
                same_site: same_site?,
                secure: secure?,
                max_age: (!max_age.is_zero()).then_some(max_age),
                secret: secret?,
            })
        }
        (None, Some(source)) => {
            let table_size = st.optional("table_size", DEFAULT_LEARN_TABLE_SIZE, |n: i64| {
                positive("table_size", n)
            });
            let expiry = duration(&mut st, "expiry", DEFAULT_LEARN_EXPIRY);
            st.finish();
            StickyConfig::Learn(StickyLearn {
                source,
                table_size: table_size?,
                expiry: expiry?,
            })
        }
        (Some(_), Some(_)) => {
            st.finish();
            return Err(errors.error(&span, "`sticky` takes either `cookie` or `learn`, not both"));
        }
        (None, None) => {
            st.finish();
            return Err(errors.error(
                &span,
                "`sticky` needs `cookie = \"NAME\"` (wharf inserts a cookie) or `learn = \"cookie:NAME\"` / `learn = \"engine.io\"`",
            ));
        }
    };
    Ok(Some(sticky))
}

fn cookie_name(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.chars().all(is_token_char) {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "a cookie name must be made of token characters, not {s:?}"
        ))
    }
}

fn parse_learn(s: &str) -> Result<LearnSource, String> {
    match s.strip_prefix("cookie:") {
        _ if s == "engine.io" => Ok(LearnSource::EngineIo),
        Some(name) => cookie_name(name).map(LearnSource::Cookie),
        None => Err(format!(
            "`learn` must be \"cookie:NAME\" or \"engine.io\", not {s:?}"
        )),
    }
}

/// A non-empty list of distinct servers.
fn read_servers(t: &mut Table<'_>) -> Read<Vec<ServerConfig>> {
    let list = t.get_required::<&DeArray<'_>>("servers")?;
    let errors = t.errors();
    if list.value.is_empty() {
        return Err(errors.error(
            &list.span,
            "`servers` is empty; a pool needs at least one server",
        ));
    }
    let pool = t.name().to_owned();
    let mut seen: Vec<SocketAddr> = Vec::new();
    all(list.value.iter().map(|item| {
        let server = read_server(errors, item, &pool)?;
        if seen.contains(&server.address) {
            return Err(errors.error(
                &item.span(),
                format!("server {} is listed twice in {pool}", server.address),
            ));
        }
        seen.push(server.address);
        Ok(server)
    }))
}

/// `"127.0.0.1:3001"` or `{ address = "127.0.0.1:3001", weight = 2 }`.
fn read_server<'a>(
    errors: &'a Collector<'a>,
    item: &'a Spanned<DeValue<'a>>,
    pool: &str,
) -> Read<ServerConfig> {
    let name = format!("the server table of {pool}");
    if let Some(mut t) = Table::from_item(errors, item, String::new(), name) {
        let address = t.required("address", parse_server_address);
        let weight = t.optional("weight", 1, parse_weight);
        t.finish();
        return Ok(ServerConfig {
            address: address?,
            weight: weight?,
        });
    }
    match item.get_ref() {
        DeValue::String(s) => parse_server_address(s)
            .map(|address| ServerConfig { address, weight: 1 })
            .map_err(|message| errors.error(&item.span(), message)),
        other => Err(errors.error(
            &item.span(),
            format!(
                "each entry of `servers` must be an address like \"127.0.0.1:3001\" \
                 or a table like {{ address = \"127.0.0.1:3001\", weight = 2 }}, not {}",
                type_name(other)
            ),
        )),
    }
}

/// An `IP:port` to connect to. Host names are refused, `localhost` included:
/// it may mean 127.0.0.1 or ::1, and a server listening on only one of them
/// would be unreachable half the time.
fn parse_server_address(s: &str) -> Result<SocketAddr, String> {
    let Ok(address) = s.parse::<SocketAddr>() else {
        let hint = match s.split_once(':') {
            Some((host, _)) if host.eq_ignore_ascii_case("localhost") => {
                " (write 127.0.0.1 or [::1], whichever the server listens on)"
            }
            _ => "",
        };
        return Err(format!(
            "a server address must be like 127.0.0.1:3001, not {s:?}{hint}"
        ));
    };
    if address.port() == 0 {
        return Err(format!(
            "server address {s:?} has port 0, which cannot be connected to"
        ));
    }
    Ok(address)
}

fn parse_weight(n: i64) -> Result<u32, String> {
    match u32::try_from(n) {
        Ok(weight) if (1..=MAX_WEIGHT).contains(&weight) => Ok(weight),
        _ => Err(format!(
            "`weight` must be between 1 and {MAX_WEIGHT}, not {n}"
        )),
    }
}

fn read_pool_timeouts(t: &mut Table<'_>) -> Read<PoolTimeouts> {
    let defaults = PoolTimeouts::default();
    let Some(mut timeouts) = t.table("timeouts")? else {
        return Ok(defaults);
    };
    let connect = duration(&mut timeouts, "connect", defaults.connect);
    let response = duration(&mut timeouts, "response", defaults.response);
    let tunnel_idle = duration(&mut timeouts, "tunnel_idle", defaults.tunnel_idle);
    let server_idle = duration(&mut timeouts, "server_idle", defaults.server_idle);
    let queue = duration(&mut timeouts, "queue", defaults.queue);
    let upload_idle = duration(&mut timeouts, "upload_idle", defaults.upload_idle);
    timeouts.finish();
    Ok(PoolTimeouts {
        connect: connect?,
        response: response?,
        tunnel_idle: tunnel_idle?,
        server_idle: server_idle?,
        queue: queue?,
        upload_idle: upload_idle?,
    })
}

// ---------------------------------------------------------------- values

/// An optional timeout; zero is refused since it would time out at once.
fn duration(t: &mut Table<'_>, key: &'static str, default: Duration) -> Read<Duration> {
    t.optional(key, default, |DurationStr(s)| nonzero_duration(key, s))
}

fn nonzero_duration(key: &str, s: &str) -> Result<Duration, String> {
    let duration = window(key, s)?;
    if duration.is_zero() {
        return Err(format!("`{key}` must be longer than zero"));
    }
    Ok(duration)
}

/// A duration where zero is allowed (a spread over time: zero is "at once");
/// capped far beyond any useful value, so it is safe to add to any instant.
fn window(key: &str, s: &str) -> Result<Duration, String> {
    let duration =
        parse_duration(s).map_err(|e| format!("`{key}` is not a valid duration: {e}"))?;
    if duration > MAX_DURATION {
        return Err(format!("`{key}` must be at most 365d"));
    }
    Ok(duration)
}

/// The largest duration a config may give.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);
/// The largest count a config may give (connections, queue, table sizes).
const MAX_COUNT: usize = 100_000_000;

fn positive(key: &str, n: i64) -> Result<usize, String> {
    let n = usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("`{key}` must be at least 1, not {n}"))?;
    match n > MAX_COUNT {
        true => Err(format!("`{key}` must be at most {MAX_COUNT}, not {n}")),
        false => Ok(n),
    }
}

fn non_negative(key: &str, n: i64) -> Result<usize, String> {
    let n = usize::try_from(n).map_err(|_| format!("`{key}` must be 0 or more, not {n}"))?;
    match n > MAX_COUNT {
        true => Err(format!("`{key}` must be at most {MAX_COUNT}, not {n}")),
        false => Ok(n),
    }
}
