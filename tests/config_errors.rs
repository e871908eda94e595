//! The config parser, seen from outside: valid files become the expected model
//! (defaults included), and every mistake is reported as `file:line:col: sentence`.

use std::net::SocketAddr;
use std::time::Duration;

use wharf::config::{
    BalanceConfig, Config, DEFAULT_IDLE_CONNECTIONS, DEFAULT_LISTENER_MAX_CONNECTIONS, HostMatch,
    ListenerTimeouts, PoolTimeouts, ServerConfig, parse_str,
};

/// Parses a config that must be valid.
fn parse_ok(text: &str) -> Config {
    match parse_str("wharf.toml", text) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

/// Parses a config that must be invalid; returns each error as displayed.
fn errors(text: &str) -> Vec<String> {
    match parse_str("wharf.toml", text) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    }
}

/// Asserts that `text` yields exactly one error, equal to `expected`.
fn assert_single_error(text: &str, expected: &str) {
    assert_eq!(errors(text), vec![expected.to_owned()]);
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const FULL: &str = r#"
[[listener]]
name = "public"
bind = "0.0.0.0:8443"
max_connections = 500
timeouts = { request_header = "5s" }

[[listener.route]]
host = "App.Example.COM"
path_prefix = "/socket.io/"
pool = "realtime"
upgrades = ["WebSocket", "my-proto"]

[[listener.route]]
host = "*.example.com"
pool = "web"

[[listener]]
name = "local"
bind = "localhost:8080"

[[listener.route]]
pool = "web"

[pool.realtime]
servers = ["127.0.0.1:3001", "[::1]:3002", { address = "127.0.0.1:3003", weight = 2 }]
balance = "least_conn"
mode = "http"
timeouts = { connect = "1s", response = "30s", tunnel_idle = "1h30m", server_idle = "500ms" }
idle_connections = 0

[pool.web]
servers = ["127.0.0.1:4000"]

[pool.unused]
servers = [{ address = "10.0.0.1:80" }]
balance = "random_two"
"#;

#[test]
fn full_config_parses_into_the_model() {
    let config = parse_ok(FULL);

    assert_eq!(config.listeners.len(), 2);
    let public = &config.listeners[0];
    assert_eq!(public.name, "public");
    assert_eq!(public.bind, addr("0.0.0.0:8443"));
    assert_eq!(public.max_connections, 500);
    assert_eq!(
        public.timeouts,
        ListenerTimeouts {
            request_header: Duration::from_secs(5),
            ..ListenerTimeouts::default()
        }
    );
    assert_eq!(public.routes.len(), 2);
    let socket_io = &public.routes[0];
    assert_eq!(
        socket_io.host,
        Some(HostMatch::Exact("app.example.com".into()))
    );
    assert_eq!(socket_io.path_prefix.as_deref(), Some("/socket.io/"));
    assert_eq!(socket_io.pool, "realtime");
    assert_eq!(socket_io.upgrades, ["websocket", "my-proto"]);
    let wildcard = &public.routes[1];
    assert_eq!(
        wildcard.host,
        Some(HostMatch::Suffix(".example.com".into()))
    );
    assert_eq!(wildcard.path_prefix, None);
    assert_eq!(wildcard.upgrades, ["websocket"]);

    let local = &config.listeners[1];
    assert_eq!(local.bind, addr("127.0.0.1:8080"));
    assert_eq!(local.max_connections, DEFAULT_LISTENER_MAX_CONNECTIONS);
    assert_eq!(local.timeouts, ListenerTimeouts::default());

    // Pools keep file order, not alphabetical order.
    let names: Vec<&str> = config.pools.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["realtime", "web", "unused"]);

    let realtime = config.pool("realtime").expect("realtime pool");
    assert_eq!(
        realtime.servers,
        [
            ServerConfig {
                address: addr("127.0.0.1:3001"),
                weight: 1
            },
            ServerConfig {
                address: addr("[::1]:3002"),
                weight: 1
            },
            ServerConfig {
                address: addr("127.0.0.1:3003"),
                weight: 2
            },
        ]
    );
    assert_eq!(realtime.balance, BalanceConfig::LeastConn);
    assert_eq!(
        realtime.timeouts,
        PoolTimeouts {
            connect: Duration::from_secs(1),
            response: Duration::from_secs(30),
            tunnel_idle: Duration::from_secs(5400),
            server_idle: Duration::from_millis(500),
            queue: Duration::from_secs(5),
            upload_idle: Duration::from_secs(10),
        }
    );
    assert_eq!(realtime.idle_connections, 0);

    let web = config.pool("web").expect("web pool");
    assert_eq!(web.balance, BalanceConfig::RoundRobin);
    assert_eq!(web.timeouts, PoolTimeouts::default());
    assert_eq!(web.idle_connections, DEFAULT_IDLE_CONNECTIONS);

    let unused = config.pool("unused").expect("unused pool");
    assert_eq!(unused.balance, BalanceConfig::RandomTwo);
    assert_eq!(unused.servers[0].weight, 1);
}

#[test]
fn timeouts_may_be_written_as_sub_tables_or_dotted_keys() {
    let config = parse_ok(
        r#"
[[listener]]
name = "a"
bind = "127.0.0.1:0"
timeouts.request_header = "10s"
[[listener.route]]
pool = "web"
[pool.web]
servers = ["127.0.0.1:4000"]
[pool.web.timeouts]
tunnel_idle = "1d"
"#,
    );
    assert_eq!(
        config.listeners[0].timeouts.request_header,
        Duration::from_secs(10)
    );
    assert_eq!(
        config.pools[0].timeouts.tunnel_idle,
        Duration::from_secs(86_400)
    );
    assert_eq!(
        config.pools[0].timeouts.connect,
        PoolTimeouts::default().connect
    );
}

#[test]
fn listeners_on_port_zero_do_not_clash() {
    let config = parse_ok(
        r#"
[[listener]]
name = "a"
bind = "127.0.0.1:0"
[[listener.route]]
pool = "web"
[[listener]]
name = "b"
bind = "127.0.0.1:0"
[[listener.route]]
pool = "web"
[pool.web]
servers = ["127.0.0.1:4000"]
"#,
    );
    assert_eq!(config.listeners.len(), 2);
}

#[test]
fn unknown_key_suggests_the_closest_known_key() {
    assert_single_error(
        r#"[[listener]]
name = "a"
bind = "127.0.0.1:8080"
[[listener.route]]
path_prefx = "/api/"
pool = "web"
[pool.web]
servers = ["127.0.0.1:4000"]
"#,
        "wharf.toml:5:1: unknown key `path_prefx` in [[listener.route]]; did you mean `path_prefix`?",
    );
}

#[test]
fn unknown_key_far_from_any_known_key_gets_no_suggestion() {
    assert_single_error(
        r#"[[listener]]
name = "a"
bind = "127.0.0.1:8080"
[[listener.route]]
pool = "web"
[pool.web]
servers = ["127.0.0.1:4000"]
colour = "blue"
"#,
        "wharf.toml:8:1: unknown key `colour` in [pool.web]",
    );
}

#[test]
fn route_to_a_missing_pool_points_at_the_pool_name() {
    assert_single_error(
        r#"[[listener]]
name = "a"
bind = "127.0.0.1:8080"
[[listener.route]]
pool = "api"
[pool.web]
servers = ["127.0.0.1:4000"]
"#,
        "wharf.toml:5:8: route refers to pool `api`, which is not defined",
    );
}

#[test]
fn duplicate_listener_names_and_binds_are_errors() {
    let errors = errors(
        r#"[[listener]]
name = "public"
bind = "0.0.0.0:80"
[[listener.route]]
pool = "web"

[[listener]]
name = "public"
bind = "127.0.0.1:80"
[[listener.route]]
pool = "web"

[[listener]]
name = "other"
bind = "0.0.0.0:80"
[[listener.route]]
pool = "web"

[pool.web]
servers = ["127.0.0.1:4000"]
"#,
    );
    assert_eq!(
        errors,
        [
            "wharf.toml:8:8: listener name `public` is already used by the listener at line 2",
            "wharf.toml:9:8: `bind` 127.0.0.1:80 overlaps 0.0.0.0:80, used by the listener at line 3",
            "wharf.toml:15:8: `bind` 0.0.0.0:80 is already used by the listener at line 3",
        ]
    );
}

/// A one-listener config whose listener has `bind = <bind>`.
fn with_bind(bind: &str) -> String {
    format!(
        "[[listener]]\nname = \"a\"\nbind = {bind}\n[[listener.route]]\npool = \"web\"\n\
         [pool.web]\nservers = [\"127.0.0.1:4000\"]\n"
    )
}

#[test]
fn bad_bind_addresses_are_explained() {
    assert_single_error(
        &with_bind("\"example.com:80\""),
        "wharf.toml:3:8: `bind` must be an address like 127.0.0.1:8080, not \"example.com:80\"",
    );
    assert_single_error(
        &with_bind("\"127.0.0.1\""),
        "wharf.toml:3:8: `bind` must be an address like 127.0.0.1:8080, not \"127.0.0.1\"",
    );
    assert_single_error(
        &with_bind("8080"),
        "wharf.toml:3:8: `bind` must be a string, not an integer",
    );
    let config = parse_ok(&with_bind("\"[::1]:8080\""));
    assert_eq!(config.listeners[0].bind, addr("[::1]:8080"));
}

/// A one-pool config whose pool has `timeouts = { <timeouts> }`.
fn with_pool_timeouts(timeouts: &str) -> String {
    format!(
        "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:8080\"\n[[listener.route]]\npool = \"web\"\n\
         [pool.web]\nservers = [\"127.0.0.1:4000\"]\ntimeouts = {{ {timeouts} }}\n"
    )
}

#[test]
fn bad_durations_are_explained() {
    assert_single_error(
        &with_pool_timeouts("connect = \"5\""),
        "wharf.toml:8:24: `connect` is not a valid duration: \"5\" has no unit; add one of ms, s, m, h, d, as in \"5s\"",
    );
    assert_single_error(
        &with_pool_timeouts("response = \"10 seconds\""),
        "wharf.toml:8:25: `response` is not a valid duration: \"10 seconds\" has an unknown unit \" seconds\"; use ms, s, m, h or d",
    );
    assert_single_error(
        &with_pool_timeouts("tunnel_idle = \"0s\""),
        "wharf.toml:8:28: `tunnel_idle` must be longer than zero",
    );
    assert_single_error(
        &with_pool_timeouts("server_idle = 4"),
        "wharf.toml:8:28: `server_idle` must be a duration string like \"5s\", not an integer",
    );
}

/// A one-pool config whose pool has `servers = <servers>`.
fn with_servers(servers: &str) -> String {
    format!(
        "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:8080\"\n[[listener.route]]\npool = \"web\"\n\
         [pool.web]\nservers = {servers}\n"
    )
}

#[test]
fn bad_weights_and_servers_are_explained() {
    assert_single_error(
        &with_servers(r#"[{ address = "127.0.0.1:1", weight = 0 }]"#),
        "wharf.toml:7:48: `weight` must be between 1 and 1000, not 0",
    );
    assert_single_error(
        &with_servers(r#"[{ address = "127.0.0.1:1", weight = 1001 }]"#),
        "wharf.toml:7:48: `weight` must be between 1 and 1000, not 1001",
    );
    assert_single_error(
        &with_servers(r#"[{ address = "127.0.0.1:1", weight = "2" }]"#),
        "wharf.toml:7:48: `weight` must be an integer, not a string",
    );
    assert_single_error(
        &with_servers(r#"["127.0.0.1:1", "127.0.0.1:1"]"#),
        "wharf.toml:7:27: server 127.0.0.1:1 is listed twice in [pool.web]",
    );
    assert_single_error(
        &with_servers("[]"),
        "wharf.toml:7:11: `servers` is empty; a pool needs at least one server",
    );
    assert_single_error(
        &with_servers(r#"[{ weight = 2 }]"#),
        "wharf.toml:7:12: the server table of [pool.web] is missing `address`",
    );
    let localhost = errors(&with_servers(r#"["localhost:3000"]"#));
    assert_eq!(localhost.len(), 1);
    assert!(
        localhost[0].starts_with("wharf.toml:7:12: a server address must be like 127.0.0.1:3001"),
        "{localhost:?}"
    );
}

/// A one-route config whose route has `upgrades = <upgrades>`.
fn with_upgrades(upgrades: &str) -> String {
    format!(
        "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:8080\"\n[[listener.route]]\npool = \"web\"\n\
         upgrades = {upgrades}\n[pool.web]\nservers = [\"127.0.0.1:4000\"]\n"
    )
}

#[test]
fn h2c_upgrades_are_refused_with_the_reason() {
    let errors = errors(&with_upgrades(r#"["websocket", "H2C"]"#));
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].starts_with("wharf.toml:6:26: `h2c` cannot be allowed to upgrade"),
        "{errors:?}"
    );
    assert!(errors[0].contains("past wharf"), "{errors:?}");
}

#[test]
fn upgrade_names_must_be_tokens_and_may_be_empty() {
    assert_single_error(
        &with_upgrades(r#"["web socket"]"#),
        "wharf.toml:6:13: upgrade protocol \"web socket\" is not a valid protocol name (an HTTP token such as \"websocket\")",
    );
    let config = parse_ok(&with_upgrades("[]"));
    assert!(config.listeners[0].routes[0].upgrades.is_empty());
}

/// A one-route config whose route has `host = <host>`.
fn with_host(host: &str) -> String {
    format!(
        "[[listener]]\nname = \"a\"\nbind = \"127.0.0.1:8080\"\n[[listener.route]]\nhost = {host}\npool = \"web\"\n\
         [pool.web]\nservers = [\"127.0.0.1:4000\"]\n"
    )
}

#[test]
fn bad_hosts_are_refused() {
    for host in [
        "\"\"",
        "\"app example.com\"",
        "\"app.example.com:8080\"",
        "\"a*.example.com\"",
        "\"*\"",
    ] {
        let errors = errors(&with_host(host));
        assert_eq!(errors.len(), 1, "{host}: {errors:?}");
        assert!(
            errors[0].starts_with("wharf.toml:5:8: `host` "),
            "{host}: {errors:?}"
        );
    }
}

#[test]
fn a_syntax_error_is_reported_with_the_toml_message_and_position() {
    let errors = errors(
        r#"[[listener]]
name = "a"
bind = "127.0.0.1:8080"
[[listener.route]]
pool = web
[pool.web]
servers = ["127.0.0.1:4000"]
"#,
    );
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("wharf.toml:5:8: string values must be quoted"),
        "{errors:?}"
    );
}

#[test]
fn a_syntax_error_does_not_hide_mistakes_elsewhere() {
    let errors = errors(
        r#"[[listener]]
name = "a"
bind = "127.0.0.1:8080"
max_conections = 10
[[listener.route]]
pool = "web"
[pool.web]
servers = ["127.0.0.1:4000",
"#,
    );
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0],
        "wharf.toml:4:1: unknown key `max_conections` in [[listener]]; did you mean `max_connections`?"
    );
    assert!(
        errors[1].starts_with("wharf.toml:8:29: unclosed array"),
        "{errors:?}"
    );
}

#[test]
fn echoes_of_a_syntax_error_are_not_reported() {
    // The broken header loses [pool.web]; "pool `web` is not defined" would be noise.
    let errors = errors(
        r#"[[listener]]
name = "a"
bind = "127.0.0.1:8080"
[[listener.route]]
pool = "web"
[pool.web
servers = ["127.0.0.1:4000"]
"#,
    );
    assert!(
        errors[0].starts_with("wharf.toml:6:10: unclosed table"),
        "{errors:?}"
    );
    assert!(
        errors.iter().all(|e| !e.contains("not defined")),
        "{errors:?}"
    );
}

#[test]
fn duplicate_toml_keys_are_reported() {
    assert_single_error(
        r#"[[listener]]
name = "a"
name = "b"
bind = "127.0.0.1:8080"
[[listener.route]]
pool = "web"
[pool.web]
servers = ["127.0.0.1:4000"]
"#,
        "wharf.toml:3:1: duplicate key `name`",
    );
}

#[test]
fn every_mistake_in_a_file_is_reported_at_once_in_file_order() {
    let errors = errors(
        r#"[[listener]]
name = ""
bind = "127.0.0.1:80"
max_connections = -5

[[listener.route]]
host = "app.example.com"
pool = "realtime"
upgrades = ["websocket", "h2c"]

[[listener]]
bind = "127.0.0.1:81"

[pool.realtime]
servers = ["127.0.0.1:3001", { address = "127.0.0.1:3002", wieght = 2 }]
balance = "fastest"
timeouts = { connect = "3", response = "60s" }
idle_connections = "many"
"#,
    );
    let h2c = errors
        .iter()
        .position(|e| e.starts_with("wharf.toml:9:26: `h2c` cannot be allowed"));
    assert!(h2c.is_some(), "{errors:?}");
    let others: Vec<&str> = errors
        .iter()
        .enumerate()
        .filter(|(i, _)| Some(*i) != h2c)
        .map(|(_, e)| e.as_str())
        .collect();
    assert_eq!(
        others,
        [
            "wharf.toml:2:8: `name` must not be empty",
            "wharf.toml:4:19: `max_connections` must be at least 1, not -5",
            "wharf.toml:11:1: [[listener]] is missing `name`",
            "wharf.toml:11:1: the listener has no [[listener.route]]; add at least one to say which pool gets its requests",
            "wharf.toml:15:60: unknown key `wieght` in the server table of [pool.realtime]; did you mean `weight`?",
            "wharf.toml:16:11: `balance` must be \"round_robin\", \"least_conn\", \"random_two\" or \"hash:KEY\", not \"fastest\"",
            "wharf.toml:17:24: `connect` is not a valid duration: \"3\" has no unit; add one of ms, s, m, h, d, as in \"3s\"",
            "wharf.toml:18:20: `idle_connections` must be an integer, not a string",
        ]
    );
}

#[test]
fn an_empty_file_has_no_listener() {
    assert_single_error(
        "",
        "wharf.toml:1:1: the config has no [[listener]]; add one with a `name`, a `bind` address and a [[listener.route]]",
    );
}

/// The config contract of DESIGN.md, whole, is accepted (with its files present).
#[test]
fn the_whole_design_contract_parses() {
    let dir = std::env::temp_dir().join(format!("wharf-contract-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("certs")).unwrap();
    for file in ["certs/app.pem", "certs/app.key", "crossdomain.xml"] {
        std::fs::write(dir.join(file), "x").unwrap();
    }
    let text = r#"
[admin]
bind = "127.0.0.1:9090"
token = "change-me"

[access_log]
to = "stdout"
format = "json"

[[listener]]
name = "public"
bind = "0.0.0.0:8443"
proxy_protocol = ["10.0.0.0/8"]
tcp_pool = "legacy"
flash_policy = "crossdomain.xml"

[listener.tls]
certificates = [ { cert = "certs/app.pem", key = "certs/app.key" } ]
plaintext = "serve"

[[listener.route]]
host = "app.example.com"
path_prefix = "/socket.io/"
pool = "realtime"
upgrades = ["websocket"]

[[listener.route]]
pool = "web"

[pool.realtime]
servers = ["127.0.0.1:3001", "127.0.0.1:3002", { address = "127.0.0.1:3003", weight = 2 }]
balance = "least_conn"
sticky = { cookie = "wharf" }
health = { path = "/health", interval = "1s", timeout = "500ms", rise = 2, fall = 3 }
timeouts = { connect = "3s", response = "60s", tunnel_idle = "1h", queue = "5s" }
max_connections = 2000
drain_timeout = "5m"
send_proxy_protocol = "v2"

[pool.web]
servers = ["127.0.0.1:4000"]

[pool.legacy]
mode = "tcp"
servers = ["127.0.0.1:4000"]
"#;
    let file = dir.join("wharf.toml");
    let config = wharf::config::parse_str(&file.display().to_string(), text);
    std::fs::remove_dir_all(&dir).unwrap();
    let config = config.unwrap_or_else(|e| panic!("{e}"));
    let public = &config.listeners[0];
    assert_eq!(public.tcp_pool.as_deref(), Some("legacy"));
    assert_eq!(public.flash_policy.as_deref(), Some(&b"x"[..]));
    assert_eq!(public.proxy_protocol.len(), 1);
    let tls = public.tls.as_ref().expect("tls");
    assert_eq!(tls.certificates[0].cert, dir.join("certs/app.pem"));
    assert_eq!(
        config.pool("legacy").unwrap().mode,
        wharf::config::PoolMode::Tcp
    );
}

#[test]
fn issue_3_keys_are_checked() {
    let errors = errors(
        r#"[[listener]]
name = "a"
bind = "127.0.0.1:0"
proxy_protocol = ["10.0.0.0/33"]
tcp_pool = "web"
[listener.tls]
certificates = [{ cert = "missing.pem", key = "missing.key" }]
plaintext = "maybe"
[[listener.route]]
pool = "raw"
[[listener.route]]
sni = "db.example.com"
pool = "web"
[pool.web]
servers = ["127.0.0.1:4000"]
[pool.raw]
mode = "tcp"
servers = ["127.0.0.1:4001"]
[pool.other]
servers = ["127.0.0.1:4002"]
send_proxy_protocol = "v3"
"#,
    );
    assert_eq!(errors.len(), 8, "{errors:#?}");
    assert!(
        errors[0].starts_with("wharf.toml:4:19: `proxy_protocol` entries must be CIDRs"),
        "{errors:#?}"
    );
    assert!(
        errors[1].contains("`tcp_pool` must name a pool with `mode = \"tcp\"`"),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("the certificate file missing.pem does not exist")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("`plaintext` must be")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("route sends HTTP to pool `raw`, which is a TCP pool")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("a route with `sni` needs a pool with `mode = \"tcp\"`")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|e| e.contains("`send_proxy_protocol` must be")),
        "{errors:#?}"
    );
}

#[test]
fn odd_input_never_panics() {
    let inputs = [
        "\u{feff}",
        "[[listener]]\nname = \"é\"\nbind = \"[::1]:99999\"\n",
        "listener = [1, \"x\", { route = 5 }]",
        "[[listener]]\n[[listener.route]]\n[[listener.route.x]]\n",
        "pool = { a = 1, b = { servers = [[1]] } }",
        "[pool.a]\nservers = [{ address = 1, weight = 99999999999999999999 }]\n",
        "a = 1979-05-27\n[[",
        "\"\u{0}\" = 1",
    ];
    for input in inputs {
        let result = parse_str("odd.toml", input);
        assert!(result.is_err(), "{input:?} should be rejected");
    }
}

#[test]
fn health_limits_and_ejection_keys_parse_with_defaults() {
    let config = parse_ok(
        r#"
[admin]
bind = "127.0.0.1:9090"

[[listener]]
name = "a"
bind = "127.0.0.1:0"
[[listener.route]]
pool = "checked"

[pool.checked]
servers = ["127.0.0.1:4000"]
health = { path = "/health", host = "app.internal", interval = "100ms", timeout = "50ms", rise = 1, fall = 4 }
max_connections = 10
queue_size = 20
drain_timeout = "30s"
retries = 0
ejection = { connect_failures = 2, server_errors = 0, base_time = "1s", max_time = "10s" }
timeouts = { queue = "250ms" }

[pool.plain]
servers = ["127.0.0.1:4001"]
health = {}
"#,
    );
    assert_eq!(
        config.admin.as_ref().map(|a| a.bind),
        Some(addr("127.0.0.1:9090"))
    );
    let checked = config.pool("checked").expect("checked");
    let health = checked.health.as_ref().expect("health");
    assert_eq!(
        health.check,
        wharf::config::HealthCheck::Http {
            path: "/health".into(),
            host: Some("app.internal".into())
        }
    );
    assert_eq!(
        (health.interval, health.timeout),
        (Duration::from_millis(100), Duration::from_millis(50))
    );
    assert_eq!((health.rise, health.fall), (1, 4));
    assert_eq!(checked.max_connections, Some(10));
    assert_eq!(checked.queue_size, 20);
    assert_eq!(checked.drain_timeout, Duration::from_secs(30));
    assert_eq!(checked.retries, 0);
    assert_eq!(checked.ejection.connect_failures, 2);
    assert_eq!(checked.ejection.server_errors, 0);
    assert_eq!(checked.timeouts.queue, Duration::from_millis(250));

    let plain = config.pool("plain").expect("plain");
    let health = plain.health.as_ref().expect("tcp health");
    assert_eq!(health.check, wharf::config::HealthCheck::Tcp);
    assert_eq!(health.rise, wharf::config::HealthConfig::DEFAULT_RISE);
    assert_eq!(plain.max_connections, None);
    assert_eq!(plain.retries, wharf::config::DEFAULT_RETRIES);
}

#[test]
fn bad_health_and_limit_values_are_reported_together() {
    let errors = errors(
        r#"[[listener]]
name = "a"
bind = "127.0.0.1:0"
[[listener.route]]
pool = "p"
[pool.p]
servers = ["127.0.0.1:4000"]
health = { path = "health", interval = "10ms", rise = 0 }
max_connections = 0
retries = 99
"#,
    );
    assert_eq!(
        errors,
        [
            "wharf.toml:8:19: health `path` must start with / and have no spaces, not \"health\"",
            "wharf.toml:8:40: health `interval` must be at least 100ms",
            "wharf.toml:8:55: health `rise` must be between 1 and 100, not 0",
            "wharf.toml:9:19: `max_connections` must be at least 1, not 0",
            "wharf.toml:10:11: `retries` must be 10 at most, not 99",
        ]
    );
}

#[test]
fn sticky_and_hash_keys_parse_and_bad_ones_are_explained() {
    use wharf::config::{HashKey, LearnSource, SameSite, StickyConfig};
    let config = parse_ok(
        r#"
[[listener]]
name = "a"
bind = "127.0.0.1:0"
[[listener.route]]
pool = "cookie"

[pool.cookie]
servers = ["127.0.0.1:4000"]
sticky = { cookie = "srv", same_site = "None", max_age = "1h", secret = "k" }

[pool.eio]
servers = ["127.0.0.1:4000"]
sticky = { learn = "engine.io", table_size = 10, expiry = "5m" }
balance = "hash:path:3"

[pool.io]
servers = ["127.0.0.1:4000"]
sticky = { learn = "cookie:io" }
balance = "hash:header:X-User"
"#,
    );
    let Some(StickyConfig::Cookie(cookie)) = &config.pool("cookie").unwrap().sticky else {
        panic!("cookie sticky expected");
    };
    assert_eq!(
        (cookie.name.as_str(), cookie.same_site),
        ("srv", SameSite::None)
    );
    assert_eq!(cookie.max_age, Some(Duration::from_secs(3600)));
    let eio = config.pool("eio").unwrap();
    let Some(StickyConfig::Learn(learn)) = &eio.sticky else {
        panic!("learn sticky expected");
    };
    assert_eq!(
        (learn.source.clone(), learn.table_size),
        (LearnSource::EngineIo, 10)
    );
    assert_eq!(eio.hash, Some(HashKey::Path(3)));
    assert_eq!(
        config.pool("io").unwrap().hash,
        Some(HashKey::Header("x-user".into()))
    );

    let errors = errors(
        r#"[[listener]]
name = "a"
bind = "127.0.0.1:0"
[[listener.route]]
pool = "p"
[pool.p]
servers = ["127.0.0.1:4000"]
balance = "hash:path:zero"
sticky = { cookie = "a b" }
[pool.q]
servers = ["127.0.0.1:4000"]
sticky = { learn = "socket.io" }
"#,
    );
    assert_eq!(
        errors,
        [
            "wharf.toml:8:11: `hash:path:N` needs N between 1 and 16, not \"zero\"",
            "wharf.toml:9:21: a cookie name must be made of token characters, not \"a b\"",
            "wharf.toml:12:20: `learn` must be \"cookie:NAME\" or \"engine.io\", not \"socket.io\"",
        ]
    );
}

const ONE_LISTENER: &str = r#"
[[listener]]
name = "a"
bind = "127.0.0.1:0"
[[listener.route]]
pool = "p"

[pool.p]
servers = ["127.0.0.1:4000"]
"#;

#[test]
fn admin_off_loopback_needs_a_token() {
    assert_single_error(
        &format!("[admin]\nbind = \"0.0.0.0:9090\"\n{ONE_LISTENER}"),
        "wharf.toml:2:8: the admin listener on 0.0.0.0:9090 is reachable from other hosts: \
         set `token` in [admin], or bind to 127.0.0.1",
    );
    let config = parse_ok(&format!(
        "[admin]\nbind = \"0.0.0.0:9090\"\ntoken = \"s3cret-token\"\n{ONE_LISTENER}"
    ));
    let admin = config.admin.expect("admin");
    assert_eq!(admin.token.as_deref(), Some("s3cret-token"));
    let config = parse_ok(&format!("[admin]\nbind = \"[::1]:9090\"\n{ONE_LISTENER}"));
    assert_eq!(config.admin.expect("admin").token, None);
    assert_single_error(
        &format!("[admin]\nbind = \"127.0.0.1:9090\"\ntoken = \"short\"\n{ONE_LISTENER}"),
        "wharf.toml:3:9: `token` must be at least 8 characters, without spaces",
    );
}

#[test]
fn access_log_keys_parse() {
    use wharf::config::{AccessLogFormat, AccessLogTarget};
    let config = parse_ok(&format!("[access_log]\n{ONE_LISTENER}"));
    let log = config.access_log.expect("access_log");
    assert_eq!(log.to, AccessLogTarget::Stdout);
    assert_eq!(log.format, AccessLogFormat::Json);
    let config = parse_ok(&format!(
        "[access_log]\nto = \"logs/access.log\"\nformat = \"text\"\n{ONE_LISTENER}"
    ));
    let log = config.access_log.expect("access_log");
    assert_eq!(
        log.to,
        AccessLogTarget::File(std::path::PathBuf::from("logs/access.log"))
    );
    assert_eq!(log.format, AccessLogFormat::Text);
    assert_single_error(
        &format!("[access_log]\nformat = \"xml\"\n{ONE_LISTENER}"),
        "wharf.toml:2:10: `format` must be \"json\" or \"text\", not \"xml\"",
    );
}
