//! Access log lines: JSON (one object per line) or text (`key=value`
//! fields, logfmt style). Both carry the same fields, in the same order:
//!
//! `time kind client listener route pool server method path status bytes_in
//! bytes_out duration_ms server_ms sticky`, and for tunnels `closed_by
//! close_code`. A field with no value is `null` in JSON and `-` in text.
//! Text values with a space, a quote, `=` or a control character, and empty
//! ones, are written as JSON strings (quoted, escaped).

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use super::Entry;
use crate::admin::json::{rfc3339_utc, unix_ms};
use crate::config::AccessLogFormat;

/// The JSON shape of a line.
#[derive(Serialize)]
struct Line<'a> {
    time: String,
    kind: &'static str,
    client: String,
    listener: &'a str,
    route: Option<&'a str>,
    pool: Option<&'a str>,
    server: Option<String>,
    method: &'a str,
    path: &'a str,
    status: u16,
    bytes_in: u64,
    bytes_out: u64,
    duration_ms: f64,
    server_ms: Option<f64>,
    sticky: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    closed_by: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    close_code: Option<Option<u16>>,
}

impl<'a> Line<'a> {
    fn of(entry: &'a Entry) -> Line<'a> {
        Line {
            time: rfc3339_utc(unix_ms(entry.at)),
            kind: if entry.tunnel.is_some() {
                "tunnel"
            } else {
                "request"
            },
            client: entry.client.to_string(),
            listener: &entry.listener,
            route: entry.route.as_deref(),
            pool: entry.pool.as_deref(),
            server: entry.server.map(|s| s.to_string()),
            method: entry.method.as_str(),
            path: &entry.path,
            status: entry.status,
            bytes_in: entry.bytes_in,
            bytes_out: entry.bytes_out,
            duration_ms: millis(entry.duration),
            server_ms: entry.server_duration.map(millis),
            sticky: entry.sticky.map(|s| s.name()),
            closed_by: entry.tunnel.as_ref().map(|t| t.side),
            close_code: entry.tunnel.as_ref().map(|t| t.code),
        }
    }
}

/// Milliseconds with microsecond precision.
fn millis(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

/// Appends `entry` (without a newline) to `out`.
pub fn write(out: &mut String, entry: &Entry, format: AccessLogFormat) {
    let line = Line::of(entry);
    match format {
        AccessLogFormat::Json => match serde_json::to_string(&line) {
            Ok(json) => out.push_str(&json),
            // Strings, numbers and null only: this cannot fail.
            Err(_) => out.push_str(r#"{"error":"unencodable access log line"}"#),
        },
        AccessLogFormat::Text => write_text(out, &line),
    }
}

fn write_text(out: &mut String, line: &Line<'_>) {
    let mut field = |key: &str, value: Option<&str>| {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(key);
        out.push('=');
        match value {
            None => out.push('-'),
            Some(v) if needs_quotes(v) => {
                out.push_str(&serde_json::to_string(v).unwrap_or_else(|_| "\"?\"".into()))
            }
            Some(v) => out.push_str(v),
        }
    };
    let number = |n: f64| {
        let mut s = String::new();
        let _ = write!(s, "{n:.3}");
        s
    };
    field("time", Some(&line.time));
    field("kind", Some(line.kind));
    field("client", Some(&line.client));
    field("listener", Some(line.listener));
    field("route", line.route);
    field("pool", line.pool);
    field("server", line.server.as_deref());
    field("method", Some(line.method));
    field("path", Some(line.path));
    field("status", Some(&line.status.to_string()));
    field("bytes_in", Some(&line.bytes_in.to_string()));
    field("bytes_out", Some(&line.bytes_out.to_string()));
    field("duration_ms", Some(&number(line.duration_ms)));
    field("server_ms", line.server_ms.map(number).as_deref());
    field("sticky", line.sticky);
    if let Some(side) = line.closed_by {
        field("closed_by", Some(side));
        let code = line.close_code.flatten().map(|c| c.to_string());
        field("close_code", code.as_deref());
    }
}

fn needs_quotes(value: &str) -> bool {
    value.is_empty()
        || value == "-"
        || value
            .chars()
            .any(|c| c == ' ' || c == '"' || c == '=' || c == '\\' || c.is_control())
}
