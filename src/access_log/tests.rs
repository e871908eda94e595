use std::net::SocketAddr;
use std::time::{Duration, Instant, UNIX_EPOCH};

use super::*;

fn entry(path: &str) -> Entry {
    Entry {
        at: UNIX_EPOCH + Duration::from_millis(1_738_324_800_123),
        client: "127.0.0.1:5555".parse().unwrap(),
        listener: "public".into(),
        route: Some("*/".into()),
        pool: Some("web".into()),
        server: Some("[::1]:3001".parse::<SocketAddr>().unwrap()),
        method: http::Method::GET,
        path: path.to_owned(),
        status: 200,
        bytes_in: 0,
        bytes_out: 12,
        duration: Duration::from_micros(1500),
        server_duration: Some(Duration::from_micros(1250)),
        sticky: Some(StickyDecision::New),
        tunnel: None,
    }
}

/// A fresh path in the system's temporary directory.
fn temp_path(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    std::env::temp_dir().join(format!("wharf-{name}-{}-{nanos}.log", std::process::id()))
}

/// Waits (bounded) until `path` has `lines` lines, and returns them.
fn wait_lines(path: &Path, lines: usize) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let found: Vec<String> = text.lines().map(str::to_owned).collect();
        if found.len() >= lines {
            return found;
        }
        assert!(Instant::now() < deadline, "{path:?} has {found:?}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn json_lines_carry_every_field() {
    let mut line = String::new();
    format::write(&mut line, &entry("/a b"), AccessLogFormat::Json);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["time"], "2025-01-31T12:00:00.123Z");
    assert_eq!(value["kind"], "request");
    assert_eq!(value["client"], "127.0.0.1:5555");
    assert_eq!(value["server"], "[::1]:3001");
    assert_eq!(value["path"], "/a b");
    assert_eq!(value["duration_ms"], 1.5);
    assert_eq!(value["server_ms"], 1.25);
    assert_eq!(value["sticky"], "new");
    assert!(value.get("closed_by").is_none());

    let mut tunnel = entry("/ws");
    tunnel.status = 101;
    tunnel.tunnel = Some(TunnelClose {
        side: "client",
        code: Some(1000),
    });
    line.clear();
    format::write(&mut line, &tunnel, AccessLogFormat::Json);
    let value: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(value["kind"], "tunnel");
    assert_eq!(value["closed_by"], "client");
    assert_eq!(value["close_code"], 1000);
}

#[test]
fn text_lines_quote_what_needs_it() {
    let mut e = entry("/a b");
    e.route = None;
    e.server_duration = None;
    let mut line = String::new();
    format::write(&mut line, &e, AccessLogFormat::Text);
    assert_eq!(
        line,
        "time=2025-01-31T12:00:00.123Z kind=request client=127.0.0.1:5555 listener=public \
         route=- pool=web server=[::1]:3001 method=GET path=\"/a b\" status=200 bytes_in=0 \
         bytes_out=12 duration_ms=1.500 server_ms=- sticky=new"
    );
}

#[test]
fn lines_reach_the_file_and_rotation_reopens_it() {
    let path = temp_path("access");
    let config = AccessLogConfig {
        to: AccessLogTarget::File(path.clone()),
        format: AccessLogFormat::Json,
    };
    let log = AccessLog::start(&config, Counter::default()).unwrap();
    log.log(entry("/one"));
    assert!(wait_lines(&path, 1)[0].contains("\"/one\""));
    // What logrotate does: move the file away, then signal.
    let rotated = path.with_extension("log.1");
    std::fs::rename(&path, &rotated).unwrap();
    log.reopen();
    log.log(entry("/two"));
    assert!(wait_lines(&path, 1)[0].contains("\"/two\""));
    assert_eq!(wait_lines(&rotated, 1).len(), 1);
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_file(&rotated);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_waiting() {
    // No writer: the queue only fills.
    let (queue, _lines) = sync_channel(QUEUE_LINES);
    let log = AccessLog {
        queue,
        dropped: Counter::default(),
        reopen: Arc::new(AtomicBool::new(false)),
    };
    let started = Instant::now();
    for _ in 0..QUEUE_LINES + 10 {
        log.log(entry("/"));
    }
    assert_eq!(log.dropped.get(), 10);
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn an_unwritable_file_is_an_error_at_start() {
    let config = AccessLogConfig {
        to: AccessLogTarget::File(temp_path("missing-dir").join("access.log")),
        format: AccessLogFormat::Text,
    };
    assert!(matches!(
        AccessLog::start(&config, Counter::default()),
        Err(AccessLogError::Open { .. })
    ));
}
