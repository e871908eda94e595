//! Reloading the config in place: websockets and requests survive five
//! reloads of different kinds, live state follows each server's identity,
//! a bad config changes nothing, and no connection is ever refused.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::StatusCode;
use support::*;
use wharf::upstream::{AdminState, Health};

/// A config file with one TLS-capable listener `public` on `bind`, routes
/// `extra_routes` first, then everything to pool `p` with `servers`.
fn config_text(
    bind: SocketAddr,
    cert: &str,
    extra_routes: &str,
    servers: &[SocketAddr],
    pool_extra: &str,
    extra: &str,
) -> String {
    let servers: Vec<String> = servers.iter().map(|s| format!("\"{s}\"")).collect();
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listener]]
name = "public"
bind = "{bind}"
[listener.tls]
certificates = [{{ cert = "{cert}.pem", key = "{cert}.key" }}]
plaintext = "serve"
{extra_routes}
[[listener.route]]
pool = "p"

[pool.p]
servers = [{servers}]
{pool_extra}
{extra}
"#,
        servers = servers.join(", ")
    )
}

/// A self-signed certificate for localhost as `stem.pem`/`stem.key`; its DER.
fn write_certificate(dir: &TempDir, stem: &str) -> Vec<u8> {
    dir.cert(stem, &["localhost", "127.0.0.1"]).to_vec()
}

/// A free loopback port, so that the config names a fixed address that
/// reloads compare.
async fn free_address() -> SocketAddr {
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    socket.local_addr().unwrap()
}

/// Waits until `progress` has moved by `n` from now: traffic is flowing.
async fn wait_for_progress(progress: &AtomicUsize, n: usize) {
    let start = progress.load(Ordering::Relaxed);
    within("traffic through wharf", async {
        while progress.load(Ordering::Relaxed) < start + n {
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    })
    .await;
}

async fn reload(running: &Running, dir: &TempDir, text: &str) {
    dir.write("wharf.toml", text);
    let summary = within("a reload", running.reload())
        .await
        .expect("the reload applies");
    eprintln!("{summary}");
}

/// Requests on one keep-alive connection, then on new ones, until `stop`;
/// counts the answers that were 200 (also in `progress`) and those that were not.
fn request_loop(
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicUsize>,
) -> tokio::task::JoinHandle<(usize, usize)> {
    tokio::spawn(async move {
        let (mut ok, mut failed) = (0, 0);
        let mut client = Client::connect(addr).await;
        // Bounded: at most 60 s or 100,000 requests.
        let started = std::time::Instant::now();
        while !stop.load(Ordering::Relaxed)
            && started.elapsed() < Duration::from_secs(60)
            && ok + failed < 100_000
        {
            if client.is_closed() {
                client = Client::connect(addr).await;
            }
            match client.get("app.test", "/").await.status {
                StatusCode::OK => {
                    ok += 1;
                    progress.fetch_add(1, Ordering::Relaxed);
                }
                status => {
                    eprintln!("request failed: {status}");
                    failed += 1
                }
            }
        }
        (ok, failed)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_reloads_drop_no_websocket_and_fail_no_request() {
    let dir = TempDir::new("reload");
    let first_cert = write_certificate(&dir, "one");
    let a = Backend::normal("a").await;
    let b = Backend::normal("b").await;
    let c = Backend::normal("c").await;
    let bind = free_address().await;
    let base = |cert: &str, routes: &str, servers: &[SocketAddr], pool_extra: &str, extra: &str| {
        config_text(bind, cert, routes, servers, pool_extra, extra)
    };
    let running = start_from_file(&dir, &base("one", "", &[a.addr, b.addr], "", "")).await;
    let addr = public(&running);

    let mut sockets = Vec::new();
    for _ in 0..500 {
        sockets.push(ws_connect(addr, "/ws-echo").await);
    }
    assert_eq!(a.websockets() + b.websockets(), 500);
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let loops: Vec<_> = (0..2)
        .map(|_| request_loop(addr, stop.clone(), progress.clone()))
        .collect();
    // Each reload happens while requests are flowing.
    let flowing = || wait_for_progress(&progress, 20);

    // 1. A route added.
    flowing().await;
    let only_c = "[[listener.route]]\npath_prefix = \"/c/\"\npool = \"c\"\n";
    let pool_c = format!("[pool.c]\nservers = [\"{}\"]\n", c.addr);
    reload(
        &running,
        &dir,
        &base("one", only_c, &[a.addr, b.addr], "", &pool_c),
    )
    .await;
    assert_eq!(get(addr, "app.test", "/c/x").await.text(), "c");

    // 2. The pool's servers changed: c joins a and b.
    flowing().await;
    let servers = [a.addr, b.addr, c.addr];
    reload(&running, &dir, &base("one", only_c, &servers, "", &pool_c)).await;
    let before = c.requests();
    for _ in 0..6 {
        get(addr, "app.test", "/").await;
    }
    assert!(c.requests() > before, "the new server gets requests");

    // 3. A timeout changed: the response timeout now cuts a slow answer.
    flowing().await;
    let short = "timeouts = { response = \"200ms\" }";
    reload(
        &running,
        &dir,
        &base("one", only_c, &servers, short, &pool_c),
    )
    .await;
    assert_eq!(
        get(addr, "app.test", "/slow/1000").await.status,
        StatusCode::GATEWAY_TIMEOUT
    );

    // 4. The certificate replaced.
    assert_eq!(presented_certificate(addr).await, first_cert);
    let second_cert = write_certificate(&dir, "two");
    flowing().await;
    reload(
        &running,
        &dir,
        &base("two", only_c, &servers, short, &pool_c),
    )
    .await;
    assert_eq!(presented_certificate(addr).await, second_cert);

    // 5. A listener added.
    flowing().await;
    let second = free_address().await;
    let listener = format!(
        "{pool_c}\n[[listener]]\nname = \"second\"\nbind = \"{second}\"\n[[listener.route]]\npool = \"c\"\n"
    );
    reload(
        &running,
        &dir,
        &base("two", only_c, &servers, short, &listener),
    )
    .await;
    assert_eq!(get(second, "app.test", "/").await.text(), "c");

    flowing().await;
    stop.store(true, Ordering::Relaxed);
    for task in loops {
        let (ok, failed) = within("the request loops", task).await.unwrap();
        eprintln!("requests during the reloads: {ok} ok, {failed} failed");
        assert!(ok > 0);
        assert_eq!(failed, 0, "no request fails across reloads");
    }
    for (i, ws) in sockets.iter_mut().enumerate() {
        ws_echo(ws, &format!("still here {i}")).await;
    }
    running.shutdown().await;
}

#[tokio::test]
async fn a_removed_server_gets_no_new_requests_but_keeps_its_websockets() {
    let dir = TempDir::new("reload");
    write_certificate(&dir, "one");
    let a = Backend::normal("a").await;
    let b = Backend::normal("b").await;
    let bind = free_address().await;
    let running = start_from_file(
        &dir,
        &config_text(bind, "one", "", &[a.addr, b.addr], "", ""),
    )
    .await;
    let addr = public(&running);
    let mut sockets = Vec::new();
    for _ in 0..10 {
        sockets.push(ws_connect(addr, "/ws-echo").await);
    }
    assert!(a.websockets() > 0 && b.websockets() > 0);

    reload(
        &running,
        &dir,
        &config_text(bind, "one", "", &[b.addr], "", ""),
    )
    .await;
    let before = a.requests();
    for _ in 0..20 {
        assert_eq!(get(addr, "app.test", "/").await.text(), "b");
    }
    assert_eq!(
        a.requests(),
        before,
        "no new request for the removed server"
    );
    for ws in &mut sockets {
        ws_echo(ws, "after the reload").await;
    }
    let admin = running.admin_addr().unwrap();
    let pools = get(admin, &admin.to_string(), "/api/pools/p").await;
    assert_eq!(pools.status, StatusCode::OK, "{}", pools.text());
    let pools = pools.text();
    assert!(!pools.contains(&a.addr.to_string()), "{pools}");
    running.shutdown().await;
}

#[tokio::test]
async fn a_reload_with_errors_changes_nothing_and_reports_every_error() {
    let dir = TempDir::new("reload");
    write_certificate(&dir, "one");
    let a = Backend::normal("a").await;
    let bind = free_address().await;
    let good = config_text(bind, "one", "", &[a.addr], "", "");
    let running = start_from_file(&dir, &good).await;
    let admin = running.admin_addr().unwrap();

    let bad = good
        .replace("servers = [", "servers = [\"nowhere\", ")
        .replace("pool = \"p\"", "pool = \"p\"\nhots = \"x\"");
    dir.write("wharf.toml", &bad);
    let mut client = Client::connect(admin).await;
    // As the admin listener asks of a client without its token: a Host
    // naming it and a JSON content type for a change.
    let mut request = get_request(&admin.to_string(), "/api/reload");
    *request.method_mut() = http::Method::POST;
    request.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    let reply = client.request(request).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let errors = body["errors"].as_array().expect("a list of errors");
    assert_eq!(errors.len(), 2, "{body}");
    for error in errors {
        let error = error.as_str().unwrap();
        assert!(error.contains("wharf.toml:"), "file:line:col: {error}");
    }
    // Still serving the old config.
    assert_eq!(get(public(&running), "app.test", "/").await.text(), "a");

    // A certificate that cannot be loaded fails the reload too.
    dir.write("wharf.toml", good.replace("one.pem", "missing.pem"));
    let error = running.reload().await.expect_err("a missing certificate");
    assert!(error.sentences()[0].contains("missing.pem"), "{error}");

    // A bind that fails fails the whole reload: the new route is not applied.
    let taken = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let taken_addr = taken.local_addr().unwrap();
    let with_listener = format!(
        "{good}\n[[listener]]\nname = \"second\"\nbind = \"{taken_addr}\"\n[[listener.route]]\npool = \"p\"\n"
    );
    dir.write("wharf.toml", &with_listener);
    let error = running.reload().await.expect_err("the address is taken");
    assert!(error.to_string().contains("cannot bind"), "{error}");
    assert!(running.listener_addr("second").is_none());
    running.shutdown().await;
}

#[tokio::test]
async fn down_and_drained_servers_stay_so_across_a_reload() {
    let dir = TempDir::new("reload");
    write_certificate(&dir, "one");
    let a = Backend::normal("a").await;
    let b = Backend::normal("b").await;
    let c = Backend::normal("c").await;
    let bind = free_address().await;
    let servers = [a.addr, b.addr, c.addr];
    let running = start_from_file(&dir, &config_text(bind, "one", "", &servers, "", "")).await;
    let pool = running.shared().snapshot().pool("p").unwrap().clone();
    pool.servers[0].record_check(false, 1, 1, "test: down");
    pool.servers[1].set_admin(AdminState::Drain, "test");

    reload(
        &running,
        &dir,
        &config_text(bind, "one", "", &servers, "balance = \"least_conn\"", ""),
    )
    .await;
    let pool = running.shared().snapshot().pool("p").unwrap().clone();
    assert_eq!(pool.servers[0].state().health, Health::Down);
    assert_eq!(pool.servers[1].state().admin, AdminState::Drain);
    for _ in 0..10 {
        assert_eq!(get(public(&running), "app.test", "/").await.text(), "c");
    }
    running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tight_connect_loop_sees_no_refusal_across_reloads() {
    let dir = TempDir::new("reload");
    write_certificate(&dir, "one");
    let a = Backend::normal("a").await;
    let bind = free_address().await;
    let base = config_text(bind, "one", "", &[a.addr], "", "");
    let running = start_from_file(&dir, &base).await;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicUsize::new(0));
    let connector = {
        let (stop, progress) = (stop.clone(), progress.clone());
        tokio::spawn(async move {
            let mut failures = Vec::new();
            // Bounded: 30 s or 20,000 connections (local ports) at most.
            let started = std::time::Instant::now();
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(30)
                && progress.load(Ordering::Relaxed) < 20_000
            {
                let mut raw = RawClient::connect(bind).await;
                let answer = raw
                    .request(b"GET / HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\n\r\n")
                    .await;
                match answer.status {
                    200 => progress.fetch_add(1, Ordering::Relaxed),
                    other => {
                        failures.push(other);
                        0
                    }
                };
            }
            failures
        })
    };
    let second = free_address().await;
    let second_listener = format!(
        "\n[[listener]]\nname = \"second\"\nbind = \"{second}\"\n[[listener.route]]\npool = \"p\"\n"
    );
    let reloads = [
        // The limit changed.
        base.replace(
            "name = \"public\"\n",
            "name = \"public\"\nmax_connections = 500\n",
        ),
        // Renamed: the socket goes to the new name.
        base.replace("name = \"public\"", "name = \"front\""),
        // Another listener added, then removed.
        format!("{base}{second_listener}"),
        base.clone(),
        // A timeout of the pool changed.
        config_text(
            bind,
            "one",
            "",
            &[a.addr],
            "timeouts = { connect = \"2s\" }",
            "",
        ),
    ];
    for text in &reloads {
        wait_for_progress(&progress, 20).await;
        reload(&running, &dir, text).await;
    }
    wait_for_progress(&progress, 20).await;
    stop.store(true, Ordering::Relaxed);
    let failures = connector.await.unwrap();
    assert!(failures.is_empty(), "requests that failed: {failures:?}");
    running.shutdown().await;
}

#[tokio::test]
async fn sticky_cookies_and_hashing_decide_the_same_after_a_reload() {
    let dir = TempDir::new("reload");
    write_certificate(&dir, "one");
    let servers = [
        Backend::normal("a").await,
        Backend::normal("b").await,
        Backend::normal("c").await,
        Backend::normal("d").await,
    ];
    let all: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    // Before: a, b, c. After: d added, the others listed in another order.
    let before = vec![all[0], all[1], all[2]];
    let after = vec![all[2], all[3], all[0], all[1]];
    let bind = free_address().await;
    let pools = |addresses: &[SocketAddr]| {
        let list: Vec<String> = addresses.iter().map(|a| format!("\"{a}\"")).collect();
        format!(
            "[pool.hashed]\nservers = [{}]\nbalance = \"hash:header:x-user\"\n",
            list.join(", ")
        )
    };
    let hashed_route = "[[listener.route]]\npath_prefix = \"/h/\"\npool = \"hashed\"\n";
    let sticky = "sticky = { cookie = \"srv\", secret = \"s3cret\" }";
    let config = |addresses: &[SocketAddr]| {
        config_text(
            bind,
            "one",
            hashed_route,
            addresses,
            sticky,
            &pools(addresses),
        )
    };
    let running = start_from_file(&dir, &config(&before)).await;
    let addr = public(&running);

    let decisions = async || {
        let mut seen = Vec::new();
        for user in 0..30 {
            let mut request = get_request("app.test", "/h/x");
            request
                .headers_mut()
                .insert("x-user", user.to_string().parse().unwrap());
            seen.push(Client::connect(addr).await.request(request).await.text());
        }
        seen
    };
    let first = get(addr, "app.test", "/").await;
    let cookie = first.header("set-cookie").expect("a sticky cookie");
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let pinned = first.text();
    let hashed_before = decisions().await;

    reload(&running, &dir, &config(&after)).await;
    for _ in 0..5 {
        let mut request = get_request("app.test", "/");
        request
            .headers_mut()
            .insert("cookie", cookie.parse().unwrap());
        let reply = Client::connect(addr).await.request(request).await;
        assert_eq!(reply.text(), pinned, "the cookie names the same server");
        assert!(reply.header("set-cookie").is_none(), "no re-pinning");
    }
    // A key moves only to the new server; every other stays where it was.
    let hashed_after = decisions().await;
    let moved = hashed_before
        .iter()
        .zip(&hashed_after)
        .filter(|(b, a)| b != a)
        .inspect(|(_, a)| assert_eq!(*a, "d", "a key moved between servers that stayed"))
        .count();
    assert!(
        moved < hashed_before.len() / 2,
        "{moved} of {} keys moved",
        hashed_before.len()
    );
    running.shutdown().await;
}
