//! Operations against a real wharf: a real Prometheus scrapes `/metrics` and
//! its query API agrees with the traffic sent; headless Chromium shows on
//! `/status` what `/api/status` says and its drain button drains; the access
//! log has a line per request and per tunnel; the admin token and the
//! browser checks (Host, content type) hold.
//!
//! Backends are in-process on 127.0.0.1:0 (tests/support); Prometheus and
//! Chromium are Debian's, installed by the test if missing.

mod support;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http::{Method, Request};
use serde_json::Value;
use support::browser::Browser;
use support::{
    Backend, Client, RawClient, Reply, TempDir, empty_body, get, one_pool_config, percent_encode,
    public, require_program, start_wharf, with_admin, within, ws_connect, ws_echo,
};

/// wharf with an admin listener (`admin_extra` added to `[admin]`), `/ws-echo`
/// to pool `realtime` (server `a`), everything else to pool `web` (`a`, `b`).
fn config(a: SocketAddr, b: SocketAddr, admin_extra: &str, extra: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"
{admin_extra}

{extra}

[[listener]]
name = "public"
bind = "127.0.0.1:0"

[[listener.route]]
path_prefix = "/ws-echo"
pool = "realtime"

[[listener.route]]
pool = "web"

[pool.web]
servers = ["{a}", "{b}"]

[pool.realtime]
servers = ["{a}"]
"#
    )
}

fn admin(wharf: &support::Running) -> SocketAddr {
    wharf.admin_addr().expect("an admin listener")
}

/// `method path` on the admin listener with its own address as `Host`, plus `headers`.
async fn admin_request(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(empty_body()).expect("a request");
    Client::connect(addr).await.request(request).await
}

async fn api_status(addr: SocketAddr) -> Value {
    let reply = admin_request(addr, Method::GET, "/api/status", &[]).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    serde_json::from_slice(&reply.body).expect("status JSON")
}

/// Sends `n` GETs to `/`, each on its own connection; returns the bodies.
async fn get_n(wharf: &support::Running, n: usize) -> Vec<String> {
    let mut bodies = Vec::new();
    for _ in 0..n {
        let reply = support::get(public(wharf), "app.test", "/").await;
        assert_eq!(reply.status, 200);
        bodies.push(reply.text());
    }
    bodies
}

/// Opens a websocket through wharf, echoes once, and closes it.
async fn one_websocket(wharf: &support::Running) {
    let mut ws = ws_connect(public(wharf), "/ws-echo").await;
    ws_echo(&mut ws, "hello").await;
    within("a websocket close", ws.close(None))
        .await
        .expect("close");
    // Finish the close handshake before dropping the socket: a client that
    // vanishes first makes the tunnel end with an error, not a close.
    within("the server's close", async {
        use futures_util::StreamExt;
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
}

/// Waits until wharf says no websocket is open any more.
async fn wait_websockets_closed(admin: SocketAddr) {
    within("the websockets to close", async {
        loop {
            let status = api_status(admin).await;
            if status["listeners"][0]["routes"][0]["websockets_open"] == 0 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

// ------------------------------------------------------------------ Prometheus

/// A Prometheus server, stopped (by its PID) on drop.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Starts Prometheus scraping `target` five times a second.
    async fn start(target: SocketAddr) -> Prometheus {
        require_program("prometheus", "prometheus");
        let dir = TempDir::new("prometheus");
        let config = dir.write(
            "prometheus.yml",
            format!(
                "global:\n  scrape_interval: 200ms\n  scrape_timeout: 200ms\n\
                 scrape_configs:\n  - job_name: wharf\n    static_configs:\n      - targets: [\"{target}\"]\n"
            ),
        );
        let addr = support::refused_addr().await;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.0.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The single value of an instant `query`, once Prometheus has one.
    async fn query(&self, query: &str) -> Option<f64> {
        let path = format!("/api/v1/query?query={}", percent_encode(query));
        // Not up yet: no answer rather than a failed test.
        tokio::net::TcpStream::connect(self.addr).await.ok()?;
        let reply = support::get(self.addr, &self.addr.to_string(), &path).await;
        let answer: Value = serde_json::from_slice(&reply.body).ok()?;
        answer["data"]["result"][0]["value"][1]
            .as_str()?
            .parse()
            .ok()
    }

    /// Polls `query` until it gives `expected` (it lags a scrape behind).
    async fn wait_for(&self, query: &str, expected: f64) {
        let mut last = None;
        let found = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                last = self.query(query).await;
                if last == Some(expected) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await;
        assert!(
            found.is_ok(),
            "Prometheus says {query} = {last:?}, expected {expected}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_counters_that_match_the_traffic() {
    let (a, b) = (Backend::normal("a").await, Backend::normal("b").await);
    let wharf = start_wharf(&config(a.addr, b.addr, "", "")).await;
    let prometheus = Prometheus::start(admin(&wharf)).await;

    get_n(&wharf, 20).await;
    for _ in 0..3 {
        one_websocket(&wharf).await;
    }
    wait_websockets_closed(admin(&wharf)).await;

    prometheus
        .wait_for(r#"sum(wharf_server_requests_total{pool="web"})"#, 20.0)
        .await;
    for server in [a.addr, b.addr] {
        let query =
            format!(r#"wharf_server_responses_total{{pool="web",server="{server}",class="2xx"}}"#);
        prometheus.wait_for(&query, 10.0).await;
    }
    let checks = [
        (
            r#"wharf_route_requests_total{route="*/",class="2xx"}"#,
            20.0,
        ),
        (
            r#"wharf_route_requests_total{route="*/ws-echo",class="1xx"}"#,
            3.0,
        ),
        (
            r#"wharf_route_websockets_opened_total{route="*/ws-echo"}"#,
            3.0,
        ),
        (r#"wharf_route_websockets_open{route="*/ws-echo"}"#, 0.0),
        // Each websocket sent "hello" and had it echoed (the tunnel's own counts).
        (
            r#"wharf_route_websocket_messages_total{route="*/ws-echo",direction="to_server"}"#,
            3.0,
        ),
        (
            r#"wharf_route_websocket_messages_total{route="*/ws-echo",direction="to_client"}"#,
            3.0,
        ),
        (
            r#"wharf_server_responses_total{pool="realtime",class="1xx"}"#,
            3.0,
        ),
        (
            r#"wharf_listener_connections_accepted_total{listener="public"}"#,
            23.0,
        ),
        (r#"sum(wharf_server_health{pool="web",state="up"})"#, 2.0),
        (r#"sum(wharf_server_admin_state{state="ready"})"#, 3.0),
        (
            r#"sum(wharf_server_response_time_seconds_count{pool="web"})"#,
            20.0,
        ),
        (r#"wharf_pool_queue_length{pool="web"}"#, 0.0),
    ];
    for (query, expected) in checks {
        prometheus.wait_for(query, expected).await;
    }
    // Bytes: each answer's body is the backend's one-letter name.
    prometheus
        .wait_for(
            r#"sum(wharf_server_transferred_bytes_total{pool="web",direction="to_client"})"#,
            20.0,
        )
        .await;
}

// ------------------------------------------------------------------ status page

/// The text of the first element matching `selector`, as JavaScript.
fn text_of(selector: &str) -> String {
    format!("(document.querySelector('{selector}')?.textContent ?? null)")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_the_api_status_and_its_drain_button_drains() {
    let (a, b) = (Backend::normal("a").await, Backend::normal("b").await);
    let wharf = start_wharf(&config(a.addr, b.addr, "", "")).await;
    let admin = admin(&wharf);
    get_n(&wharf, 12).await;
    // A websocket left open while the page looks.
    let mut ws = ws_connect(public(&wharf), "/ws-echo").await;
    ws_echo(&mut ws, "still here").await;

    let mut browser = Browser::start(1280, 1000).await;
    browser.navigate(&format!("http://{admin}/status")).await;
    browser
        .wait_for(
            "the page to show every server",
            "document.querySelectorAll('tr[data-server]').length === 3",
        )
        .await;
    // A second poll, so that the rates are shown as well.
    browser
        .wait_for("a rate", &format!("{} !== '–'", text_of("#t-rps")))
        .await;

    let status = api_status(admin).await;
    for pool in status["pools"].as_array().expect("pools") {
        for server in pool["servers"].as_array().expect("servers") {
            let row = format!(
                "tr[data-pool=\"{}\"][data-server=\"{}\"]",
                pool["name"].as_str().unwrap(),
                server["address"].as_str().unwrap()
            );
            for (field, expected) in [
                ("requests", server["requests"].to_string()),
                ("tunnels", server["tunnels_open"].to_string()),
                ("active", server["active"].to_string()),
                ("admin", server["admin"].as_str().unwrap().to_owned()),
                (
                    "health",
                    server["health"]["state"].as_str().unwrap().to_owned(),
                ),
            ] {
                let shown = browser
                    .eval(&text_of(&format!("{row} [data-field=\"{field}\"]")))
                    .await;
                assert_eq!(shown, Value::String(expected), "{row} {field}");
            }
        }
    }
    assert_eq!(
        browser
            .eval(&text_of(
                "tr[data-route=\"*/ws-echo\"] [data-field=\"websockets\"]"
            ))
            .await,
        "1"
    );
    assert_eq!(browser.eval(&text_of("#t-ws")).await, "1");

    // The operator drains b from the page.
    let b_row = format!("tr[data-pool=\"web\"][data-server=\"{}\"]", b.addr);
    browser
        .eval(&format!(
            "document.querySelector('{b_row} button[data-action=\"drain\"]').click()"
        ))
        .await;
    browser
        .wait_for(
            "the page to show b draining",
            &format!(
                "{} === 'drain'",
                text_of(&format!("{b_row} [data-field=\"admin\"]"))
            ),
        )
        .await;
    let status = api_status(admin).await;
    assert_eq!(status["pools"][0]["servers"][1]["admin"], "drain");
    let history = &status["pools"][0]["servers"][1]["history"][0];
    assert!(
        history["cause"]
            .as_str()
            .unwrap()
            .starts_with("admin API from 127.0.0.1"),
        "{history}"
    );
    // Drained: new requests all go to a.
    assert_eq!(get_n(&wharf, 4).await, vec!["a"; 4]);
    // docs/status.png is made this way: WHARF_STATUS_SCREENSHOT=docs/status.png.
    if let Ok(path) = std::env::var("WHARF_STATUS_SCREENSHOT") {
        browser
            .wait_for(
                "the page to show the change",
                "document.querySelectorAll('.changes b').length > 0",
            )
            .await;
        std::fs::write(&path, browser.screenshot().await).expect("write the screenshot");
    }
    drop(ws);
}

// ------------------------------------------------------------------ access log

/// The JSON lines of the access log at `path`, once it has `count` of them
/// (the writer is off the data path: lines land a moment after the answer).
async fn access_log_lines(path: &std::path::Path, count: usize) -> Vec<Value> {
    within("the access log lines", async {
        loop {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let lines: Vec<Value> = text
                .lines()
                .map(|l| serde_json::from_str(l).expect("a JSON line"))
                .collect();
            if lines.len() >= count {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
}

/// `server_ms` runs from handing the request to the pool: a request that
/// waited for a slot under `max_connections` has that wait in it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_logs_server_time_includes_the_queue() {
    let backend = Backend::normal("a").await;
    let dir = TempDir::new("access-log-queue");
    let path = dir.0.join("access.log");
    let toml = format!(
        "{}\n[access_log]\nto = {:?}\nformat = \"json\"\n",
        support::one_pool_config(&[backend.addr], "max_connections = 1"),
        path.display().to_string()
    );
    let wharf = start_wharf(&toml).await;
    let addr = public(&wharf);
    let slow = tokio::spawn(async move { support::get(addr, "app.test", "/slow/400").await });
    backend.wait_requests(1).await;
    // Sent while the slow one holds the only slot: it queues until then.
    let queued = support::get(addr, "app.test", "/").await;
    assert_eq!(queued.status, 200);
    assert_eq!(slow.await.unwrap().status, 200);
    let lines = access_log_lines(&path, 2).await;
    let queued = lines
        .iter()
        .find(|l| l["path"] == "/")
        .expect("the queued request's line");
    let server_ms = queued["server_ms"].as_f64().unwrap();
    // The backend answers `/` at once: only the queue makes this long.
    assert!(server_ms >= 200.0, "server_ms = {server_ms}: {queued}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_access_log_has_a_line_per_request_and_per_tunnel() {
    let (a, b) = (Backend::normal("a").await, Backend::normal("b").await);
    let dir = TempDir::new("access-log");
    let path = dir.0.join("access.log");
    let extra = format!(
        "[access_log]\nto = {:?}\nformat = \"json\"",
        path.display().to_string()
    );
    let wharf = start_wharf(&config(a.addr, b.addr, "", &extra)).await;
    get_n(&wharf, 2).await;
    one_websocket(&wharf).await;

    let lines = access_log_lines(&path, 3).await;
    assert_eq!(lines.len(), 3, "{lines:?}");
    let requests: Vec<&Value> = lines.iter().filter(|l| l["kind"] == "request").collect();
    assert_eq!(requests.len(), 2, "{lines:?}");
    for line in &requests {
        assert_eq!(line["listener"], "public");
        assert_eq!(line["route"], "*/");
        assert_eq!(line["pool"], "web");
        assert_eq!(line["method"], "GET");
        assert_eq!(line["path"], "/");
        assert_eq!(line["status"], 200);
        assert_eq!(line["bytes_out"], 1, "the backend's name");
        assert!(line["duration_ms"].as_f64().unwrap() >= line["server_ms"].as_f64().unwrap());
        assert!(line["client"].as_str().unwrap().starts_with("127.0.0.1:"));
        assert!(line["time"].as_str().unwrap().ends_with('Z'));
    }
    let servers: Vec<&str> = requests
        .iter()
        .map(|l| l["server"].as_str().unwrap())
        .collect();
    assert!(
        servers.contains(&a.addr.to_string().as_str()),
        "{servers:?}"
    );
    assert!(
        servers.contains(&b.addr.to_string().as_str()),
        "{servers:?}"
    );
    let tunnel = lines
        .iter()
        .find(|l| l["kind"] == "tunnel")
        .expect("a tunnel line");
    assert_eq!(tunnel["status"], 101);
    assert_eq!(tunnel["path"], "/ws-echo");
    assert_eq!(tunnel["pool"], "realtime");
    assert_eq!(tunnel["closed_by"], "peer");
    assert!(tunnel["bytes_in"].as_u64().unwrap() > 0, "{tunnel}");
    assert!(tunnel["bytes_out"].as_u64().unwrap() > 0, "{tunnel}");
}

// ------------------------------------------------------------------ admin safety

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_admin_listener_answers_only_to_it() {
    let (a, b) = (Backend::normal("a").await, Backend::normal("b").await);
    let wharf = start_wharf(&config(a.addr, b.addr, "token = \"s3cret-token\"", "")).await;
    let admin = admin(&wharf);
    let bearer = ("authorization", "Bearer s3cret-token");

    let refused = admin_request(admin, Method::GET, "/metrics", &[]).await;
    assert_eq!(refused.status, 401);
    assert!(refused.headers.contains_key("www-authenticate"));
    let wrong = [("authorization", "Bearer s3cret-tokeX")];
    assert_eq!(
        admin_request(admin, Method::GET, "/api/status", &wrong)
            .await
            .status,
        401
    );
    let metrics = admin_request(admin, Method::GET, "/metrics", &[bearer]).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text().contains("wharf_server_requests_total"));
    assert!(
        metrics
            .header("content-type")
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    // The page has no data: it loads without the token, then asks for it.
    let page = admin_request(admin, Method::GET, "/status", &[]).await;
    assert_eq!(page.status, 200);
    assert!(page.text().contains("Admin token"));
    let drain = format!("/api/pools/web/servers/{}/drain", b.addr);
    assert_eq!(
        admin_request(admin, Method::POST, &drain, &[]).await.status,
        401
    );
    assert_eq!(
        admin_request(admin, Method::POST, &drain, &[bearer])
            .await
            .status,
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_a_browser_page_cannot_drive_the_admin_listener() {
    let (a, b) = (Backend::normal("a").await, Backend::normal("b").await);
    let wharf = start_wharf(&config(a.addr, b.addr, "", "")).await;
    let admin = admin(&wharf);
    let drain = format!("/api/pools/web/servers/{}/drain", b.addr);
    // A page on another origin can POST a form, without a JSON content type.
    let form = [("content-type", "application/x-www-form-urlencoded")];
    assert_eq!(
        admin_request(admin, Method::POST, &drain, &form)
            .await
            .status,
        403
    );
    // A page that rebound its own name to 127.0.0.1 sends its own name.
    let request = Request::builder()
        .uri("/api/status")
        .header("host", format!("rebound.example:{}", admin.port()))
        .body(empty_body())
        .unwrap();
    let rebound = Client::connect(admin).await.request(request).await;
    assert_eq!(rebound.status, 403);
    let json = [("content-type", "application/json")];
    assert_eq!(
        admin_request(admin, Method::POST, &drain, &json)
            .await
            .status,
        200
    );
    assert_eq!(get_n(&wharf, 2).await, vec!["a"; 2]);
}

// ------------------------------------------------------------------ reloads

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counters_survive_a_reload_that_reorders_servers_and_routes() {
    let (a, b) = (Backend::normal("a").await, Backend::normal("b").await);
    let dir = TempDir::new("metrics-reload");
    let wharf = support::start_from_file(&dir, &config(a.addr, b.addr, "", "")).await;
    get_n(&wharf, 6).await;
    // Servers listed the other way round, and a new route ahead of the others.
    let reordered = config(b.addr, a.addr, "", "").replace(
        "[[listener.route]]\npath_prefix = \"/ws-echo\"",
        "[[listener.route]]\npath_prefix = \"/new\"\npool = \"web\"\n\n[[listener.route]]\npath_prefix = \"/ws-echo\"",
    );
    dir.write("wharf.toml", &reordered);
    within("a reload", wharf.reload())
        .await
        .expect("the reload applies");
    get_n(&wharf, 4).await;

    let status = api_status(admin(&wharf)).await;
    let web = &status["pools"][0];
    assert_eq!(web["name"], "web");
    let requests: Vec<u64> = web["servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["requests"].as_u64().unwrap())
        .collect();
    assert_eq!(requests, vec![5, 5], "{web}");
    let routes = &status["listeners"][0]["routes"];
    assert_eq!(routes[0]["name"], "*/new");
    assert_eq!(routes[2]["name"], "*/");
    assert_eq!(routes[2]["requests"]["2xx"], 10, "{routes}");
    let metrics = admin_request(admin(&wharf), Method::GET, "/metrics", &[]).await;
    assert!(
        metrics.text().contains(
            "wharf_route_requests_total{listener=\"public\",route=\"*/\",class=\"2xx\"} 10"
        ),
        "{}",
        metrics.text()
    );
}

/// A request refused before any route was chosen (here, two `Host`
/// headers) is counted on its listener, not lost to the metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_answered_before_a_route_are_counted_on_the_listener() {
    let backend = Backend::normal("b").await;
    let wharf = start_wharf(&with_admin(&one_pool_config(&[backend.addr], ""))).await;
    let mut client = RawClient::connect(public(&wharf)).await;
    client
        .send(b"GET / HTTP/1.1\r\nHost: a.test\r\nHost: b.test\r\n\r\n")
        .await;
    assert_eq!(client.read_response().await.status, 400);
    assert_eq!(get(public(&wharf), "app.test", "/").await.status, 200);
    let metrics = admin_request(admin(&wharf), Method::GET, "/metrics", &[]).await;
    let text = metrics.text();
    for line in [
        "wharf_listener_unrouted_requests_total{listener=\"public\",class=\"4xx\"} 1",
        "wharf_listener_unrouted_requests_total{listener=\"public\",class=\"2xx\"} 0",
        "wharf_route_requests_total{listener=\"public\",route=\"*/\",class=\"2xx\"} 1",
        "wharf_route_requests_total{listener=\"public\",route=\"*/\",class=\"4xx\"} 0",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    assert_eq!(backend.requests(), 1);
}

// ------------------------------------------------------------------ process logs

#[tokio::test]
async fn log_format_json_writes_one_json_object_per_line() {
    use std::io::BufRead;
    let dir = TempDir::new("log-format");
    let config = dir.write(
        "wharf.toml",
        "[[listener]]\nname = \"public\"\nbind = \"127.0.0.1:0\"\n\
         [[listener.route]]\npool = \"p\"\n[pool.p]\nservers = [\"127.0.0.1:9\"]\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_wharf"))
        .args(["--log-format", "json", "run"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start wharf");
    let stderr = child.stderr.take().expect("stderr");
    let first = within(
        "a first log line",
        tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stderr)
                .read_line(&mut line)
                .map(|_| line)
        }),
    )
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let line = first.expect("the reader").expect("a line");
    let value: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(value["level"], "INFO", "{value}");
    assert!(value["message"].is_string(), "{value}");
    assert!(value["timestamp"].is_string(), "{value}");
}
