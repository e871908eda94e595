//! SockJS through wharf, with real Node.js servers (tests/node/sockjs-server.js,
//! the `sockjs` package) and an XHR-polling client written from the SockJS
//! protocol (tests/node/sockjs-client.js): three servers behind one pool, many
//! clients, each opening a session at `/echo/<server>/<session>/xhr`, long
//! polling it, and sending messages with `.../xhr_send`. A session lives in
//! one server's memory, so every request of it must reach that server:
//! without stickiness most clients fail, with it all succeed.
//!
//! Needs Node.js and `npm ci --prefix tests/node`; fails saying so without them.

#[path = "node/harness.rs"]
mod harness;

use harness::{assert_all_ok, run_client, start_servers, start_wharf, wharf_config};

const SERVER: &str = "sockjs-server.js";
const CLIENT: &str = "sockjs-client.js";
const NAMES: &[&str] = &["a", "b", "c"];
const CLIENTS: usize = 20;
const MESSAGES: usize = 5;

/// Starts three servers and wharf with `pool_extra`, and runs the clients
/// through wharf against the SockJS prefix `/echo`.
async fn run(pool_extra: &str, cookies: bool) -> harness::Summary {
    let servers = start_servers(SERVER, NAMES, &[]).await;
    let (_wharf, addr) = start_wharf(&wharf_config(&servers, pool_extra)).await;
    run_client(
        CLIENT,
        &format!("http://{addr}/echo"),
        CLIENTS,
        MESSAGES,
        cookies,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_cookie_keeps_every_session_on_its_server() {
    let summary = run("sticky = { cookie = \"wharf\" }", true).await;
    assert_all_ok("sticky cookie, cookie-keeping clients", &summary, CLIENTS);
}

/// `/echo/<server>/<session>/xhr`: the first three path segments name the
/// session, so hashing them sends all of a session's requests to one server,
/// with no cookie at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_of_session_path_keeps_cookieless_clients_on_their_server() {
    let summary = run("balance = \"hash:path:3\"", false).await;
    assert_all_ok("hash:path:3, clients without cookies", &summary, CLIENTS);
}

/// The control: round robin and no stickiness. A poll that reaches another
/// server opens a new session there, a send gets 404; this is what shows the
/// tests above can fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_without_stickiness_breaks_sessions() {
    let summary = run("balance = \"round_robin\"", true).await;
    assert!(
        summary.failed > 0,
        "without stickiness some clients should fail, but none did: {summary:#?}"
    );
    assert_eq!(summary.ok + summary.failed, CLIENTS, "{summary:#?}");
}
