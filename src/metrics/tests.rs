use std::sync::{Arc, Weak};
use std::time::Duration;

use super::live::{LiveListener, LivePool, LiveServer};
use super::*;
use crate::config::RouteConfig;

struct Fixed(LiveGauges);

impl LiveSource for Fixed {
    fn live_gauges(&self) -> LiveGauges {
        self.0.clone()
    }
}

/// The value of the sample line starting with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|value| value.split(' ').next()?.parse().ok())
}

#[test]
fn handles_taken_twice_are_the_same_counters() {
    let metrics = Metrics::new();
    let addr: SocketAddr = "127.0.0.1:3001".parse().unwrap();
    let first = metrics.server("web", addr);
    first.requests.inc();
    first.responded(503, Duration::from_millis(3));
    // As after a reload: the same identity, a new handle.
    let again = metrics.server("web", addr);
    again.requests.inc();
    assert_eq!(first.requests.get(), 2);
    assert_eq!(again.responses.of(599).get(), 1);
    let route = metrics.route("public", "*/");
    route.requests.inc(204);
    assert_eq!(metrics.route("public", "*/").requests.of(200).get(), 1);
}

#[test]
fn text_follows_prometheus_conventions() {
    let metrics = Metrics::new();
    let addr: SocketAddr = "[::1]:3001".parse().unwrap();
    let server = metrics.server("web", addr);
    server.bytes.to_client.inc_by(1500);
    server.responded(200, Duration::from_millis(20));
    let listener = metrics.listener("public");
    listener.accepted.inc();
    let config = RouteConfig {
        host: None,
        path_prefix: Some("/ws/".into()),
        pool: "web".into(),
        upgrades: vec![],
        sni: None,
        websocket: Default::default(),
    };
    let route = metrics.route("public", &route_name(&config));
    let ws = route.websocket_opened();
    route.closed(Some(1001));
    route.closed(None);
    let text = metrics.encode();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"wharf_server_transferred_bytes_total{pool="web",server="[::1]:3001",direction="to_client"}"#
        ),
        Some(1500.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"wharf_server_responses_total{pool="web",server="[::1]:3001",class="2xx"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"wharf_server_response_time_seconds_count{pool="web",server="[::1]:3001"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"wharf_route_websockets_open{listener="public",route="*/ws/"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"wharf_route_websocket_closes_total{listener="public",route="*/ws/",code="1001"}"#
        ),
        Some(1.0)
    );
    assert_eq!(route.closes_with(None), 1);
    drop(ws);
    let text = metrics.encode();
    assert_eq!(
        sample(
            &text,
            r#"wharf_route_websockets_open{listener="public",route="*/ws/"}"#
        ),
        Some(0.0)
    );
    assert_eq!(
        sample(
            &text,
            r#"wharf_listener_connections_accepted_total{listener="public"}"#
        ),
        Some(1.0)
    );
}

#[test]
fn live_gauges_are_read_at_scrape_time() {
    let live: Arc<dyn LiveSource> = Arc::new(Fixed(LiveGauges {
        listeners: vec![LiveListener {
            listener: "public".into(),
            open: 5,
        }],
        servers: vec![LiveServer {
            pool: "web".into(),
            server: "127.0.0.1:3001".into(),
            health: "rising",
            admin: "drain",
            serving: false,
            ejected: false,
            active: 7,
        }],
        pools: vec![LivePool {
            pool: "web".into(),
            queued: 3,
        }],
    }));
    let metrics = Metrics::new();
    let weak: Weak<dyn LiveSource> = Arc::downgrade(&live);
    metrics.set_live(weak);
    let text = metrics.encode();
    let server = r#"pool="web",server="127.0.0.1:3001""#;
    let value = |series: String| sample(&text, &series);
    assert_eq!(
        value(format!(r#"wharf_server_health{{{server},state="rising"}}"#)),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        value(format!(r#"wharf_server_health{{{server},state="up"}}"#)),
        Some(0.0)
    );
    assert_eq!(
        value(format!(
            r#"wharf_server_admin_state{{{server},state="drain"}}"#
        )),
        Some(1.0)
    );
    assert_eq!(
        value(format!("wharf_server_active_connections{{{server}}}")),
        Some(7.0)
    );
    assert_eq!(
        value(r#"wharf_pool_queue_length{pool="web"}"#.into()),
        Some(3.0)
    );
    assert_eq!(
        value(r#"wharf_listener_connections_open{listener="public"}"#.into()),
        Some(5.0)
    );
    drop(live);
    assert!(!metrics.encode().contains("wharf_pool_queue_length{"));
}

#[test]
fn status_classes() {
    assert_eq!(Class::of(101), Class::Informational);
    assert_eq!(Class::of(204), Class::Success);
    assert_eq!(Class::of(308), Class::Redirection);
    assert_eq!(Class::of(499), Class::ClientError);
    assert_eq!(Class::of(500), Class::ServerError);
    assert_eq!(Class::of(0), Class::ServerError);
}
