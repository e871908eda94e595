//! Stickiness through wharf: the inserted cookie, learned session cookies,
//! learned Engine.IO sids, and consistent hashing on request keys.

mod support;

use std::collections::HashSet;

use http::{Method, Request, header};
use support::{
    Backend, Client, full_body, get_with, one_pool_config, public, set_cookie, start_wharf,
};

async fn three_backends() -> Vec<Backend> {
    vec![
        Backend::normal("a").await,
        Backend::normal("b").await,
        Backend::normal("c").await,
    ]
}

fn addrs(backends: &[Backend]) -> Vec<std::net::SocketAddr> {
    backends.iter().map(|b| b.addr).collect()
}

#[tokio::test]
async fn inserted_cookie_pins_every_request_and_is_stripped() {
    let backends = three_backends().await;
    let running = start_wharf(&one_pool_config(
        &addrs(&backends),
        r#"sticky = { cookie = "srv" }"#,
    ))
    .await;
    let mut client = Client::connect(public(&running)).await;

    let first = client.get("app.test", "/").await;
    let cookie = set_cookie(&first, "srv").expect("a sticky cookie on the first response");
    let raw = first.header("set-cookie").unwrap();
    assert!(
        raw.contains("Path=/") && raw.contains("HttpOnly") && raw.contains("SameSite=Lax"),
        "{raw}"
    );
    assert!(!raw.contains("Secure"), "no Secure on plaintext: {raw}");
    assert!(
        !raw.contains("127.0.0.1"),
        "the cookie leaks an address: {raw}"
    );

    for _ in 0..20 {
        let reply = get_with(
            &mut client,
            "/",
            &[("cookie", &format!("other=1; {cookie}"))],
        )
        .await;
        assert_eq!(
            reply.backend(),
            first.backend(),
            "a pinned request went elsewhere"
        );
        assert!(
            set_cookie(&reply, "srv").is_none(),
            "a valid cookie was set again"
        );
    }
    let pinned = backends.iter().find(|b| b.name == first.backend()).unwrap();
    let seen = pinned.last_seen();
    assert_eq!(
        seen.one("cookie").as_deref(),
        Some("other=1"),
        "wharf's cookie reached the server"
    );
}

#[tokio::test]
async fn a_forged_cookie_is_balanced_and_re_pinned() {
    let backends = three_backends().await;
    let running = start_wharf(&one_pool_config(
        &addrs(&backends),
        r#"sticky = { cookie = "srv" }"#,
    ))
    .await;
    let mut client = Client::connect(public(&running)).await;
    let mut served = HashSet::new();
    for _ in 0..6 {
        let reply = get_with(&mut client, "/", &[("cookie", "srv=forged-token")]).await;
        assert_eq!(reply.status, 200);
        assert!(
            set_cookie(&reply, "srv").is_some(),
            "no new cookie for a forged one"
        );
        served.insert(reply.backend());
    }
    assert_eq!(
        served.len(),
        3,
        "forged cookies should be balanced like new clients"
    );
}

#[tokio::test]
async fn same_config_gives_the_same_cookie_on_two_wharfs() {
    let backends = three_backends().await;
    let config = one_pool_config(
        &addrs(&backends),
        r#"sticky = { cookie = "srv", secret = "k" }"#,
    );
    let one = start_wharf(&config).await;
    let two = start_wharf(&config).await;
    let first = support::get(public(&one), "app.test", "/").await;
    let cookie = set_cookie(&first, "srv").unwrap();
    let mut client = Client::connect(public(&two)).await;
    let reply = get_with(&mut client, "/", &[("cookie", &cookie)]).await;
    assert_eq!(
        reply.backend(),
        first.backend(),
        "the second wharf did not honour the first's cookie"
    );
}

#[tokio::test]
async fn a_drained_server_loses_its_pinned_clients() {
    let backends = three_backends().await;
    let running = start_wharf(&one_pool_config(
        &addrs(&backends),
        r#"sticky = { cookie = "srv" }"#,
    ))
    .await;
    let mut client = Client::connect(public(&running)).await;
    let first = client.get("app.test", "/").await;
    let cookie = set_cookie(&first, "srv").unwrap();
    let snapshot = running.shared().snapshot();
    let pool = snapshot.pool("web").unwrap();
    let pinned = pool
        .servers
        .iter()
        .find(|s| {
            backends
                .iter()
                .any(|b| b.addr == s.address && b.name == first.backend())
        })
        .unwrap();
    pinned.set_admin(wharf::upstream::AdminState::Drain, "test");
    let reply = get_with(&mut client, "/", &[("cookie", &cookie)]).await;
    assert_ne!(
        reply.backend(),
        first.backend(),
        "a drained server got a pinned request"
    );
    let new_cookie = set_cookie(&reply, "srv").expect("re-pinned with a new cookie");
    assert_ne!(new_cookie, cookie);
}

#[tokio::test]
async fn a_learned_cookie_routes_to_the_server_that_set_it() {
    let backends = three_backends().await;
    let running = start_wharf(&one_pool_config(
        &addrs(&backends),
        r#"sticky = { learn = "cookie:io" }"#,
    ))
    .await;
    let mut client = Client::connect(public(&running)).await;
    // The backend sets `io=session-42` (the support backend echoes x-reply-header).
    let first = get_with(
        &mut client,
        "/",
        &[("x-reply-header", "set-cookie: io=session-42; Path=/")],
    )
    .await;
    assert_eq!(set_cookie(&first, "io").as_deref(), Some("io=session-42"));
    for _ in 0..10 {
        let reply = get_with(&mut client, "/", &[("cookie", "io=session-42")]).await;
        assert_eq!(reply.backend(), first.backend());
    }
    // An unknown session is balanced.
    let mut served = HashSet::new();
    for _ in 0..6 {
        served.insert(
            get_with(&mut client, "/", &[("cookie", "io=unknown")])
                .await
                .backend(),
        );
    }
    assert_eq!(served.len(), 3);
}

#[tokio::test]
async fn an_engine_io_sid_is_learned_from_the_handshake_body() {
    let backends = three_backends().await;
    let running = start_wharf(&one_pool_config(
        &addrs(&backends),
        r#"sticky = { learn = "engine.io" }"#,
    ))
    .await;
    let mut client = Client::connect(public(&running)).await;
    // The support backend's /echo sends the request body back: a handshake answer.
    let handshake = Request::builder()
        .method(Method::POST)
        .uri("/echo?EIO=4&transport=polling")
        .header(header::HOST, "app.test")
        .body(full_body(
            r#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"]}"#,
        ))
        .unwrap();
    let first = client.request(handshake).await;
    assert_eq!(first.status, 200);
    assert!(first.text().contains("lv_VI97HAXpY6yYWAAAC"));
    // /echo answers without naming itself: find who served the handshake.
    let owner = backends
        .iter()
        .find(|b| b.requests() == 1)
        .expect("one backend saw the handshake");
    for _ in 0..10 {
        let reply = client
            .get(
                "app.test",
                "/?EIO=4&transport=polling&sid=lv_VI97HAXpY6yYWAAAC",
            )
            .await;
        assert_eq!(
            reply.backend(),
            owner.name,
            "a request with the learned sid went elsewhere"
        );
    }
    let mut served = HashSet::new();
    for _ in 0..6 {
        served.insert(
            client
                .get("app.test", "/?EIO=4&transport=polling&sid=other")
                .await
                .backend(),
        );
    }
    assert_eq!(served.len(), 3, "unknown sids should be balanced");
}

#[tokio::test]
async fn hashing_on_a_header_is_stable_across_two_wharfs_and_falls_back_without_it() {
    let backends = three_backends().await;
    let config = one_pool_config(&addrs(&backends), r#"balance = "hash:header:x-user""#);
    let one = start_wharf(&config).await;
    let two = start_wharf(&config).await;
    let mut c1 = Client::connect(public(&one)).await;
    let mut c2 = Client::connect(public(&two)).await;
    let mut used = HashSet::new();
    for user in 0..30 {
        let user = format!("user-{user}");
        let a = get_with(&mut c1, "/", &[("x-user", &user)]).await.backend();
        let b = get_with(&mut c2, "/", &[("x-user", &user)]).await.backend();
        let again = get_with(&mut c1, "/", &[("x-user", &user)]).await.backend();
        assert_eq!(a, b, "two wharfs disagree on {user}");
        assert_eq!(a, again, "{user} moved");
        used.insert(a);
    }
    assert_eq!(used.len(), 3, "30 keys should use every server");
    // Without the header: round robin.
    let mut served = HashSet::new();
    for _ in 0..3 {
        served.insert(c1.get("app.test", "/").await.backend());
    }
    assert_eq!(served.len(), 3);
}

#[tokio::test]
async fn hashing_on_path_segments_keeps_a_sockjs_session_together() {
    let backends = three_backends().await;
    let running = start_wharf(&one_pool_config(
        &addrs(&backends),
        r#"balance = "hash:path:3""#,
    ))
    .await;
    let mut client = Client::connect(public(&running)).await;
    let mut used = HashSet::new();
    for session in 0..30 {
        let base = format!("/echo/{}/session{session}", session % 1000);
        let open = client
            .get("app.test", &format!("{base}/xhr"))
            .await
            .backend();
        for transport in ["xhr_send", "xhr", "xhr_send"] {
            let next = client
                .get("app.test", &format!("{base}/{transport}"))
                .await
                .backend();
            assert_eq!(next, open, "{base} moved between servers");
        }
        used.insert(open);
    }
    assert_eq!(used.len(), 3);
}

#[tokio::test]
async fn a_down_server_moves_only_its_own_keys() {
    let backends = three_backends().await;
    let running = start_wharf(&one_pool_config(
        &addrs(&backends),
        r#"balance = "hash:query:sid""#,
    ))
    .await;
    let mut client = Client::connect(public(&running)).await;
    let mut home = Vec::new();
    for k in 0..30 {
        home.push(
            client
                .get("app.test", &format!("/?sid={k}"))
                .await
                .backend(),
        );
    }
    let snapshot = running.shared().snapshot();
    let pool = snapshot.pool("web").unwrap();
    let down = backends.iter().find(|b| b.name == "b").unwrap();
    pool.server(down.addr)
        .unwrap()
        .set_admin(wharf::upstream::AdminState::Maintenance, "test");
    for (k, before) in home.iter().enumerate() {
        let now = client
            .get("app.test", &format!("/?sid={k}"))
            .await
            .backend();
        if before == "b" {
            assert_ne!(now, "b");
        } else {
            assert_eq!(&now, before, "key {k} moved although its server is up");
        }
    }
}
