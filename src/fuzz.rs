//! Property-based fuzzing, on stable Rust, of every parser that reads bytes
//! a peer chose: the protocol sniffer, the PROXY v1/v2 parser, the
//! ClientHello reader, the config loader, the Engine.IO handshake reader,
//! the request framing tap and path normalisation.
//!
//! Each target runs `PROPTEST_CASES` inputs (default 256, a second or two in
//! `cargo test`); for a long run:
//! `PROPTEST_CASES=1000000 cargo test --release --lib fuzz::`. Failures are
//! shrunk to a minimal input and printed. Besides "no panic", each target
//! checks a property the parser promises.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;

use crate::front::client_hello::server_name;
use crate::front::sniff::{Protocol, classify};
use crate::http::framing::Scanner;
use crate::http::strict::normalize_path;
use crate::proxy_protocol::{self, ProxyHeader};
use crate::sticky::engine_io::find_sid;

/// Bytes biased toward what the parsers look for.
fn protocol_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    let interesting = prop_oneof![
        any::<u8>(),
        Just(b'\r'),
        Just(b'\n'),
        Just(b' '),
        Just(b':'),
        Just(b'/'),
        Just(b'%'),
        Just(b'.'),
        Just(b'0'),
    ];
    proptest::collection::vec(interesting, 0..max)
}

/// `valid` with a few bytes replaced, inserted or removed.
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let len = valid.len().max(1);
    proptest::collection::vec((0..len, any::<u8>(), 0..3u8), 0..6).prop_map(move |edits| {
        let mut bytes = valid.clone();
        for (at, byte, kind) in edits {
            let at = at.min(bytes.len());
            match kind {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                _ if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {}
            }
        }
        bytes
    })
}

fn socket_addr() -> impl Strategy<Value = SocketAddr> {
    prop_oneof![
        (any::<[u8; 4]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
        (any::<[u8; 16]>(), any::<u16>())
            .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
    ]
}

const VALID_CONFIG: &str = r#"[[listener]]
name = "public"
bind = "127.0.0.1:8080"
proxy_protocol = ["10.0.0.0/8"]
limits = { header_field = 8192 }

[[listener.route]]
host = "*.example.com"
path_prefix = "/socket.io/"
pool = "rt"

[pool.rt]
servers = ["127.0.0.1:3001", { address = "127.0.0.1:3002", weight = 2 }]
balance = "hash:cookie:io"
sticky = { cookie = "wharf", secret = "s" }
timeouts = { connect = "1s", response = "5s" }
ejection = { max_percent = 50 }
"#;

proptest! {
    #[test]
    fn sniffing_never_panics_and_http_means_a_request_line(bytes in protocol_bytes(64)) {
        if classify(&bytes) == Some(Protocol::Http) {
            let space = bytes.iter().position(|&b| b == b' ');
            prop_assert!(space.is_some_and(|at| at > 0));
            prop_assert!(bytes[..space.unwrap()].iter().all(|b| b.is_ascii_uppercase() || *b == b'-' || *b == b'_'));
        }
    }

    #[test]
    fn proxy_headers_never_panic_and_never_claim_bytes_already_refused(bytes in prop_oneof![
        protocol_bytes(300),
        (socket_addr(), socket_addr()).prop_flat_map(|(s, d)| mutated(proxy_protocol::encode_v1(s, d))),
        (socket_addr(), socket_addr()).prop_flat_map(|(s, d)| mutated(proxy_protocol::encode_v2(s, d))),
    ]) {
        let whole = proxy_protocol::parse(&bytes);
        if let Ok(Some((_, used))) = &whole {
            prop_assert!(*used <= bytes.len());
        }
        // The parser's promise: a prefix that needs more never becomes a
        // header that ends within it.
        for end in 0..bytes.len() {
            if let Ok(None) = proxy_protocol::parse(&bytes[..end]) {
                if let Ok(Some((_, used))) = &whole {
                    prop_assert!(*used > end, "prefix of {end} needed more, whole ended at {used}");
                }
            }
        }
    }

    #[test]
    fn proxy_headers_round_trip(
        (source, destination) in (socket_addr(), any::<[u8; 16]>(), any::<u16>()).prop_map(|(s, ip, port)| {
            // The destination of the source's family.
            let ip = match s.ip() {
                IpAddr::V4(_) => IpAddr::from([ip[0], ip[1], ip[2], ip[3]]),
                IpAddr::V6(_) => IpAddr::from(ip),
            };
            (s, SocketAddr::new(ip, port))
        }),
        v2 in any::<bool>(),
    ) {
        let encoded = match v2 {
            true => proxy_protocol::encode_v2(source, destination),
            false => proxy_protocol::encode_v1(source, destination),
        };
        let parsed = proxy_protocol::parse(&encoded);
        prop_assert!(matches!(
            parsed,
            Ok(Some((ProxyHeader::Proxied { source: s, destination: d }, n)))
                if s == source && d == destination && n == encoded.len()
        ), "{parsed:?}");
    }

    #[test]
    fn client_hellos_never_panic(body in protocol_bytes(600), declared in any::<u16>()) {
        let mut record = vec![0x16, 3, 1];
        record.extend_from_slice(&declared.to_be_bytes());
        record.push(1);
        record.extend_from_slice(&body);
        if let Some(name) = server_name(&record) {
            prop_assert!(!name.is_empty() && name.len() < record.len());
        }
        let _ = server_name(&body);
    }

    #[test]
    fn the_config_loader_never_panics(text in prop_oneof![
        ".{0,400}",
        mutated(VALID_CONFIG.as_bytes().to_vec()).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        if let Err(errors) = crate::config::parse_str("fuzz.toml", &text) {
            prop_assert!(!errors.to_string().is_empty());
        }
    }

    #[test]
    fn engine_io_handshakes_are_read_or_ignored(prefix in protocol_bytes(40), sid in "[A-Za-z0-9_-]{1,40}", suffix in protocol_bytes(40)) {
        let mut body = prefix.clone();
        body.extend_from_slice(format!("0{{\"sid\":\"{sid}\",\"upgrades\":[]}}").as_bytes());
        body.extend_from_slice(&suffix);
        let found = find_sid(&body);
        prop_assert!(found.is_some());
        let _ = find_sid(&prefix);
        let _ = find_sid(&suffix);
    }

    #[test]
    fn the_framing_tap_agrees_with_itself_however_bytes_arrive(
        stream in prop_oneof![
            protocol_bytes(400),
            mutated(b"POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhelloPOST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx".to_vec()),
        ],
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let whole = Scanner::default().feed(&stream);
        let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        let mut scanner = Scanner::default();
        let mut found = None;
        let mut from = 0;
        for cut in cuts.into_iter().chain([stream.len()]) {
            if found.is_none() {
                found = scanner.feed(&stream[from..cut]);
            }
            from = cut;
        }
        prop_assert_eq!(found, whole);
    }

    #[test]
    fn normalised_paths_are_stable_and_free_of_dot_segments(path in "/[a-z./%0-9A-F]{0,40}") {
        if let Ok(normal) = normalize_path(&path) {
            let again = normalize_path(&normal).expect("a normal path normalises");
            prop_assert_eq!(again.as_ref(), normal.as_ref());
            prop_assert!(!normal.split('/').any(|s| s == "." || s == ".."), "{}", normal);
            prop_assert!(normal.starts_with('/'));
        }
    }
}
