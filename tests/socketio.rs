//! Socket.IO 4 through wharf, with real Node.js servers and clients
//! (tests/node/socketio-server.js, tests/node/socketio-client.js): three
//! servers behind one pool, many clients that start on HTTP long-polling,
//! upgrade to websocket, then exchange acknowledged messages. Engine.IO keeps
//! its session in one server's memory, so every request of a session must
//! reach the server that answered its handshake: without stickiness most
//! clients fail, with it all succeed.
//!
//! Needs Node.js and `npm ci --prefix tests/node`; fails saying so without them.

#[path = "node/harness.rs"]
mod harness;

use harness::{assert_all_ok, run_client, start_servers, start_wharf, wharf_config};

const SERVER: &str = "socketio-server.js";
const CLIENT: &str = "socketio-client.js";
const NAMES: &[&str] = &["a", "b", "c"];
const CLIENTS: usize = 20;
const MESSAGES: usize = 5;

/// Starts three servers (with `server_args`) and wharf with `pool_extra`,
/// and runs the clients through wharf.
async fn run(pool_extra: &str, server_args: &[&str], cookies: bool) -> harness::Summary {
    let servers = start_servers(SERVER, NAMES, server_args).await;
    let (_wharf, addr) = start_wharf(&wharf_config(&servers, pool_extra)).await;
    run_client(
        CLIENT,
        &format!("http://{addr}"),
        CLIENTS,
        MESSAGES,
        cookies,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keeps_every_client_on_its_server() {
    let summary = run("sticky = { cookie = \"wharf\" }", &[], true).await;
    assert_all_ok("sticky cookie, cookie-keeping clients", &summary, CLIENTS);
    assert_eq!(
        summary.upgraded, CLIENTS,
        "every client upgraded: {summary:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_engine_io_sid_keeps_cookieless_clients_on_their_server() {
    let summary = run("sticky = { learn = \"engine.io\" }", &[], false).await;
    assert_all_ok(
        "learn engine.io, clients without cookies",
        &summary,
        CLIENTS,
    );
    assert_eq!(
        summary.upgraded, CLIENTS,
        "every client upgraded: {summary:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learned_io_cookie_keeps_every_client_on_its_server() {
    // The servers set Engine.IO's `io` cookie (the session id) on the handshake.
    let summary = run("sticky = { learn = \"cookie:io\" }", &["--io-cookie"], true).await;
    assert_all_ok("learn cookie:io, cookie-keeping clients", &summary, CLIENTS);
    assert_eq!(
        summary.upgraded, CLIENTS,
        "every client upgraded: {summary:#?}"
    );
}

/// The control: the same clients, round robin and no stickiness. Requests of
/// one session land on servers that never saw its handshake ("Session ID
/// unknown"), so clients fail; this is what shows the tests above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_without_stickiness_breaks_sessions() {
    let summary = run("balance = \"round_robin\"", &[], true).await;
    assert!(
        summary.failed > 0,
        "without stickiness some clients should fail, but none did: {summary:#?}"
    );
    assert_eq!(summary.ok + summary.failed, CLIENTS, "{summary:#?}");
}
