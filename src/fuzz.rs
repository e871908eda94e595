//! Property-based fuzzing, on stable Rust, of every parser that reads bytes
//! a peer chose: the protocol sniffer, the PROXY v1/v2 parser, the
//! ClientHello reader, the config loader, the Engine.IO handshake reader,
//! the request framing tap, path normalisation, the WebSocket frame
//! tracker, and the server response head parser and body decoder of wharf's
//! HTTP/1.1 client.
//!
//! Each target runs `PROPTEST_CASES` inputs (default 256, a second or two in
//! `cargo test`); for a long run:
//! `PROPTEST_CASES=1000000 cargo test --release --lib fuzz::` (the frame
//! tracker's two targets alone, `fuzz::frame`, at 2000000 cases each: about
//! 95 s, 11 MB resident). Failures are
//! shrunk to a minimal input and printed. Besides "no panic", each target
//! checks a property the parser promises.

use std::net::{IpAddr, SocketAddr};

use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::front::client_hello::server_name;
use crate::front::sniff::{Protocol, classify};
use crate::http::framing::Scanner;
use crate::http::strict::normalize_path;
use crate::proxy_protocol::{self, ProxyHeader};
use crate::sticky::engine_io::find_sid;
use crate::tunnel::frame::tests::{Seen, Spec, encode, expected, follow, spec};
use crate::tunnel::frame::{Extensions, FrameTracker, Opcode, Sender};

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

/// Who sends the frames, and what the 101 negotiated: nothing,
/// permessage-deflate (RSV1 on first frames) or an unknown extension (any
/// reserved bit).
fn frame_settings() -> impl Strategy<Value = (Sender, Extensions)> {
    let sender = prop_oneof![Just(Sender::Client), Just(Sender::Server)];
    let extensions = prop_oneof![
        Just(Extensions::NONE),
        Just(Extensions::negotiated(["permessage-deflate"])),
        Just(Extensions::negotiated(["x-unknown"])),
    ];
    (sender, extensions)
}

/// A payload length, often at the edges of the 7-, 16- and 64-bit encodings;
/// `big` allows lengths up to 70,000.
fn payload_len(big: bool) -> impl Strategy<Value = usize> {
    let max: usize = if big { 70_000 } else { 300 };
    prop_oneof![
        6 => 0..126usize,
        1 => Just(125usize),
        1 => Just(126usize),
        1 => 126..max,
        1 => Just(if big { 65_535 } else { 127 }),
        1 => Just(if big { 65_536 } else { 128 }),
    ]
}

/// A valid sequence of frames: messages of 1 to 4 fragments, each fragment
/// followed now and then by a control frame (ping, pong or close, with a
/// payload of 0 to 125 bytes; a close never has 1), RSV1 on a message's first
/// frame when the extensions allow it.
fn valid_frames(extensions: Extensions, big: bool) -> impl Strategy<Value = Vec<Spec>> {
    let control = (0..3usize, 0..=125usize).prop_map(|(kind, len)| {
        let opcode = [Opcode::Ping, Opcode::Pong, Opcode::Close][kind];
        let len = if opcode == Opcode::Close && len == 1 {
            0
        } else {
            len
        };
        spec(opcode, true, len)
    });
    let fragment = (payload_len(big), proptest::option::weighted(0.3, control));
    let message = (
        any::<bool>(),
        any::<bool>(),
        proptest::collection::vec(fragment, 1..=4),
    );
    let rsv1_allowed = extensions.rsv_allowed & 0x40 != 0;
    proptest::collection::vec(message, 1..8).prop_map(move |messages| {
        let mut specs = Vec::new();
        for (text, rsv1, fragments) in messages {
            let last = fragments.len() - 1;
            for (i, (len, control)) in fragments.into_iter().enumerate() {
                let opcode = match (i, text) {
                    (0, true) => Opcode::Text,
                    (0, false) => Opcode::Binary,
                    _ => Opcode::Continuation,
                };
                let mut frame = spec(opcode, i == last, len);
                frame.rsv1 = rsv1 && rsv1_allowed && i == 0;
                specs.push(frame);
                specs.extend(control);
            }
        }
        specs
    })
}

/// Frames as `sender` sends them (masked with keys from `seed` for a client).
fn encoded(specs: &[Spec], sender: Sender, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let masked = sender == Sender::Client;
    specs.iter().map(|s| encode(s, masked, &mut rng)).collect()
}

/// Something shaped like a frame with any bits: a header byte often one of
/// the usual ones, any mask bit and length (extended lengths at their
/// edges, 2^63 among them), a mask key, and a payload usually as long as
/// declared.
fn frame_like() -> impl Strategy<Value = Vec<u8>> {
    let b0 = prop_oneof![
        any::<u8>(),
        proptest::sample::select(vec![
            0x81u8, 0x82, 0x01, 0x02, 0x00, 0x80, 0x88, 0x89, 0x8A, 0xC1, 0xC2
        ]),
    ];
    let length = prop_oneof![
        (0..126u8).prop_map(|n| (n, vec![])),
        (prop_oneof![0..400u16, any::<u16>()]).prop_map(|n| (126, n.to_be_bytes().to_vec())),
        (prop_oneof![0..400u64, any::<u64>(), Just(1u64 << 63)])
            .prop_map(|n| (127, n.to_be_bytes().to_vec())),
    ];
    let payload = proptest::collection::vec(any::<u8>(), 0..400);
    (
        b0,
        any::<bool>(),
        length,
        any::<[u8; 4]>(),
        payload,
        any::<bool>(),
    )
        .prop_map(
            |(b0, masked, (len7, extended), key, mut payload, as_declared)| {
                let mut frame = vec![b0, u8::from(masked) << 7 | len7];
                frame.extend_from_slice(&extended);
                if masked {
                    frame.extend_from_slice(&key);
                }
                let declared = match extended.len() {
                    0 => usize::from(len7),
                    _ => extended.iter().fold(0usize, |n, b| {
                        n.saturating_mul(256).saturating_add(usize::from(*b))
                    }),
                };
                if as_declared && declared <= payload.len() {
                    payload.truncate(declared);
                }
                frame.extend_from_slice(&payload);
                frame
            },
        )
}

/// Any byte stream a peer could send: noise, frame-shaped pieces, or a valid
/// sequence with a few bytes changed.
fn frame_streams(sender: Sender, extensions: Extensions) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(frame_like(), 1..6).prop_map(|frames| frames.concat()),
        (valid_frames(extensions, false), any::<u64>())
            .prop_flat_map(move |(specs, seed)| mutated(encoded(&specs, sender, seed).concat())),
    ]
}

fn cut_points(len: usize, cuts: Vec<usize>) -> Vec<usize> {
    cuts.into_iter().map(|c| c % (len + 1)).collect()
}

mod frame {
    use super::*;

    proptest! {
        #[test]
        fn any_stream_is_decided_alike_however_it_is_split(
            ((sender, extensions), stream) in frame_settings()
                .prop_flat_map(|(s, e)| (Just((s, e)), frame_streams(s, e))),
            cuts in proptest::collection::vec(any::<usize>(), 0..16),
            end in any::<usize>(),
        ) {
            // The stream and one of its prefixes, so that streams end at
            // more places (a held header at the end must be decided alike).
            let prefix = &stream[..end % (stream.len() + 1)];
            for stream in [&stream[..], prefix] {
                let cuts = cut_points(stream.len(), cuts.clone());
                let every_byte: Vec<usize> = (1..stream.len()).collect();
                let whole = follow(&mut FrameTracker::new(sender, extensions), stream, &[]);
                let chunked = follow(&mut FrameTracker::new(sender, extensions), stream, &cuts);
                let bytewise = follow(&mut FrameTracker::new(sender, extensions), stream, &every_byte);
                prop_assert_eq!(&chunked, &whole);
                prop_assert_eq!(&bytewise, &whole);
            }
        }

        #[test]
        fn valid_frames_are_accepted_with_every_boundary_found(
            ((sender, extensions), specs) in frame_settings()
                .prop_flat_map(|(s, e)| (Just((s, e)), valid_frames(e, true))),
            seed in any::<u64>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..24),
        ) {
            let frames = encoded(&specs, sender, seed);
            let stream = frames.concat();
            let cuts = cut_points(stream.len(), cuts);
            let decisions = follow(&mut FrameTracker::new(sender, extensions), &stream, &cuts);
            prop_assert_eq!(decisions.violation, None);
            prop_assert_eq!((decisions.held, decisions.payload_due), (0, 0));
            let starts: Vec<usize> = frames
                .iter()
                .scan(0, |at, frame| {
                    let start = *at;
                    *at += frame.len();
                    Some(start)
                })
                .collect();
            let found: Vec<usize> = decisions.frames.iter().map(|(at, _)| *at).collect();
            prop_assert_eq!(found, starts);
            let seen: Vec<Seen> = decisions.frames.iter().filter_map(|(_, step)| Seen::of(step)).collect();
            prop_assert_eq!(seen, expected(&specs));
        }
    }
}

/// wharf's HTTP/1.1 client reading what a server sent (`upstream::h1`).
mod server_response {
    use bytes::BytesMut;

    use super::*;
    use crate::upstream::MAX_RESPONSE_HEAD;
    use crate::upstream::h1::decode::{Decoder, Step};
    use crate::upstream::h1::head::{Framing, parse_response};

    fn valid_head() -> impl Strategy<Value = Vec<u8>> {
        let status = prop_oneof![
            Just(200u16),
            Just(204),
            Just(304),
            Just(101),
            Just(100),
            100..600u16
        ];
        let framing = prop_oneof![
            Just(String::new()),
            (0..100_000u64).prop_map(|n| format!("Content-Length: {n}\r\n")),
            Just("Transfer-Encoding: chunked\r\n".to_owned()),
        ];
        let fields = proptest::collection::vec("[A-Za-z-]{1,12}: [ -~]{0,20}", 0..6);
        (
            prop_oneof![Just("1.1"), Just("1.0")],
            status,
            framing,
            fields,
        )
            .prop_map(|(version, status, framing, fields)| {
                let mut head = format!("HTTP/{version} {status} Reason\r\n{framing}");
                for field in fields {
                    head.push_str(&field);
                    head.push_str("\r\n");
                }
                head.push_str("\r\n");
                head.into_bytes()
            })
    }

    /// A chunked body of `pieces`, with extensions on some size lines and
    /// the given trailer fields.
    fn chunked(pieces: &[Vec<u8>], extension: bool, trailers: &[(String, String)]) -> Vec<u8> {
        let mut body = Vec::new();
        for (i, piece) in pieces.iter().enumerate() {
            let ext = if extension && i % 2 == 0 {
                ";name=value"
            } else {
                ""
            };
            body.extend_from_slice(format!("{:X}{ext}\r\n", piece.len()).as_bytes());
            body.extend_from_slice(piece);
            body.extend_from_slice(b"\r\n");
        }
        body.extend_from_slice(b"0\r\n");
        for (name, value) in trailers {
            body.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        body.extend_from_slice(b"\r\n");
        body
    }

    /// Feeds `bytes` to a decoder in the pieces `cuts` make; the data, the
    /// trailers, and whether it ended (`Err` with the error's text).
    #[allow(clippy::type_complexity)]
    fn feed(
        framing: Framing,
        bytes: &[u8],
        cuts: &[usize],
    ) -> Result<(Vec<u8>, Option<usize>, bool), String> {
        let mut decoder = Decoder::new(framing);
        let mut buf = BytesMut::new();
        let (mut data, mut trailers, mut ended) = (Vec::new(), None, false);
        let mut bounds: Vec<usize> = cuts.to_vec();
        bounds.push(bytes.len());
        bounds.sort_unstable();
        let mut from = 0;
        for to in bounds {
            buf.extend_from_slice(&bytes[from..to]);
            from = to;
            loop {
                match decoder.decode(&mut buf).map_err(|e| e.to_string())? {
                    Step::Data(piece) => {
                        assert!(!piece.is_empty(), "an empty data frame");
                        data.extend_from_slice(&piece);
                    }
                    Step::Trailers(fields) => trailers = Some(fields.len()),
                    Step::End => {
                        ended = true;
                        break;
                    }
                    Step::NeedMore => {
                        // Nothing held past the bounds of a size line or a
                        // trailer section.
                        assert!(buf.len() < MAX_RESPONSE_HEAD, "{} bytes held", buf.len());
                        break;
                    }
                }
            }
            if ended {
                break;
            }
        }
        Ok((data, trailers, ended))
    }

    proptest! {
        #[test]
        fn response_heads_are_parsed_or_refused_and_every_prefix_waits(
            bytes in prop_oneof![protocol_bytes(300), valid_head(), valid_head().prop_flat_map(mutated)],
            head_request in any::<bool>(),
        ) {
            let mut buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(head)) = parse_response(&mut buf, head_request) {
                let used = bytes.len() - buf.len();
                prop_assert!(used > 0 && head.headers.len() <= 100);
                if head_request || head.status == 204 || head.status == 304 {
                    prop_assert_eq!(head.framing, Framing::Empty);
                }
                if head.framing == Framing::UntilClose {
                    prop_assert!(!head.keep_alive);
                }
                for cut in 0..used {
                    let mut prefix = BytesMut::from(&bytes[..cut]);
                    prop_assert!(matches!(parse_response(&mut prefix, head_request), Ok(None)), "prefix of {}", cut);
                    prop_assert_eq!(prefix.len(), cut);
                }
            }
        }

        #[test]
        fn chunked_bodies_decode_alike_however_they_are_split(
            pieces in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..300), 0..8),
            extension in any::<bool>(),
            trailers in proptest::collection::vec(("[a-z]{1,8}", "[ -~]{0,12}"), 0..3),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let body = chunked(&pieces, extension, &trailers);
            let cuts = cut_points(body.len(), cuts);
            let every_byte: Vec<usize> = (1..body.len()).collect();
            let want = (pieces.concat(), (!trailers.is_empty()).then_some(trailers.len()), true);
            prop_assert_eq!(feed(Framing::Chunked, &body, &[]), Ok(want.clone()));
            prop_assert_eq!(feed(Framing::Chunked, &body, &cuts), Ok(want.clone()));
            prop_assert_eq!(feed(Framing::Chunked, &body, &every_byte), Ok(want));
        }

        #[test]
        fn any_body_bytes_are_decided_alike_however_they_are_split(
            bytes in prop_oneof![
                protocol_bytes(400),
                (proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..40), 0..4), any::<bool>())
                    .prop_flat_map(|(pieces, ext)| mutated(chunked(&pieces, ext, &[]))),
            ],
            framing in prop_oneof![Just(Framing::Chunked), (0..500u64).prop_map(Framing::Length), Just(Framing::UntilClose)],
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let cuts = cut_points(bytes.len(), cuts);
            let whole = feed(framing, &bytes, &[]);
            prop_assert_eq!(feed(framing, &bytes, &cuts), whole.clone());
            if let Framing::Length(length) = framing {
                let (data, _, ended) = whole.expect("a sized body is never malformed");
                prop_assert_eq!(data.len() as u64, length.min(bytes.len() as u64));
                prop_assert_eq!(ended, bytes.len() as u64 >= length);
            }
        }
    }
}
