//! Unit and property tests of the frame tracker. Frames are encoded by
//! tungstenite (a real implementation) so that the tracker is checked against
//! another reading of RFC 6455, not against itself.

use bytes::Bytes;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{
    Control as TControl, Data as TData, OpCode,
};
use tokio_tungstenite::tungstenite::protocol::frame::{Frame, FrameHeader};

use super::*;

/// One frame as a test describes it.
#[derive(Debug, Clone)]
pub(crate) struct Spec {
    pub opcode: Opcode,
    pub fin: bool,
    pub rsv1: bool,
    pub payload: Vec<u8>,
}

fn t_opcode(opcode: Opcode) -> OpCode {
    match opcode {
        Opcode::Continuation => OpCode::Data(TData::Continue),
        Opcode::Text => OpCode::Data(TData::Text),
        Opcode::Binary => OpCode::Data(TData::Binary),
        Opcode::Close => OpCode::Control(TControl::Close),
        Opcode::Ping => OpCode::Control(TControl::Ping),
        Opcode::Pong => OpCode::Control(TControl::Pong),
    }
}

pub(crate) fn encode(spec: &Spec, masked: bool, rng: &mut StdRng) -> Vec<u8> {
    let header = FrameHeader {
        is_final: spec.fin,
        rsv1: spec.rsv1,
        rsv2: false,
        rsv3: false,
        opcode: t_opcode(spec.opcode),
        mask: masked.then(|| rng.random()),
    };
    let mut out = Vec::new();
    Frame::from_payload(header, Bytes::from(spec.payload.clone()))
        .format(&mut out)
        .expect("encode");
    out
}

/// What the tracker reported, frame by frame, with payload bytes summed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Seen {
    Data {
        opcode: Opcode,
        fin: bool,
        len: u64,
        message: u64,
    },
    Control {
        opcode: Opcode,
        payload: Vec<u8>,
    },
}

impl Seen {
    /// A frame the tracker reported; `None` for payload and other steps.
    pub(crate) fn of(step: &Step) -> Option<Seen> {
        match step {
            Step::Data(frame) => Some(Seen::Data {
                opcode: frame.opcode,
                fin: frame.fin,
                len: frame.payload_len,
                message: frame.message_len,
            }),
            Step::Control(frame) => Some(Seen::Control {
                opcode: frame.opcode,
                payload: frame.payload().to_vec(),
            }),
            _ => None,
        }
    }
}

/// What a tracker decided about a stream: each frame with the offset it
/// starts at, the violation that stopped it with its offset, and what was
/// still held (bytes) or due (payload) when the stream ended.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Decisions {
    pub frames: Vec<(usize, Step)>,
    pub violation: Option<(usize, Violation)>,
    pub held: usize,
    pub payload_due: u64,
}

/// The module doc's bound on what a caller holds: the start of a header
/// (at most 14 bytes) or of a control frame (at most 131 bytes), never a
/// whole one.
pub(crate) fn assert_holds_less_than_a_frame_head(held: &[u8]) {
    const LONGEST_HEADER: usize = 2 + 8 + 4;
    let whole = match *held {
        [b0, b1, ..] if Opcode::from_bits(b0 & 0x0F).is_some_and(Opcode::is_control) => {
            2 + 4 * usize::from(b1 >> 7) + usize::from(b1 & 0x7F)
        }
        _ => LONGEST_HEADER,
    };
    assert!(
        held.len() < whole.max(LONGEST_HEADER) && whole <= MAX_CONTROL_PAYLOAD + 6,
        "holds {} bytes: {held:02x?}",
        held.len()
    );
}

/// Feeds `stream` in chunks cut at `cuts` (offsets past the end are ignored),
/// holding what the tracker asks to hold, as the tunnel does; checks that
/// payload bytes come in the right amounts, that the tracker is at a boundary
/// exactly between frames, that what is held stays within the bound, and that
/// a violation, once reported, stays.
pub(crate) fn follow(tracker: &mut FrameTracker, stream: &[u8], cuts: &[usize]) -> Decisions {
    let mut decisions = Decisions::default();
    let mut held: Vec<u8> = Vec::new();
    let mut read = 0;
    let mut ends: Vec<usize> = cuts.iter().copied().filter(|&c| c < stream.len()).collect();
    ends.sort_unstable();
    ends.push(stream.len());
    for end in ends {
        let mut chunk = std::mem::take(&mut held);
        chunk.extend_from_slice(&stream[read..end]);
        let start = end - chunk.len();
        read = end;
        let mut pos = 0;
        loop {
            let left = chunk.len() - pos;
            let step = tracker.step(&chunk[pos..]);
            match step {
                Step::Payload(n) => {
                    assert!(n > 0 && n <= left && n as u64 <= decisions.payload_due);
                    decisions.payload_due -= n as u64;
                    pos += n;
                }
                Step::Data(frame) => {
                    assert!(decisions.payload_due == 0 && frame.header_len <= left);
                    decisions.payload_due = frame.payload_len;
                    decisions.frames.push((start + pos, step));
                    pos += frame.header_len;
                }
                Step::Control(frame) => {
                    assert!(frame.len <= left);
                    decisions.frames.push((start + pos, step));
                    pos += frame.len;
                }
                Step::NeedMore => {
                    held = chunk[pos..].to_vec();
                    assert_holds_less_than_a_frame_head(&held);
                    break;
                }
                Step::Violation(v) => {
                    assert_eq!(tracker.step(&chunk[pos..]), step, "a violation stays");
                    decisions.violation = Some((start + pos, v));
                    return decisions;
                }
            }
            assert_eq!(tracker.at_boundary(), decisions.payload_due == 0);
        }
    }
    decisions.held = held.len();
    decisions
}

/// The frames of a stream that must be followed to its end.
fn track(
    tracker: &mut FrameTracker,
    stream: &[u8],
    cuts: &[usize],
) -> Result<Vec<Seen>, Violation> {
    let decisions = follow(tracker, stream, cuts);
    if let Some((_, violation)) = decisions.violation {
        return Err(violation);
    }
    assert_eq!(decisions.held, 0, "bytes left held at the end");
    assert_eq!(decisions.payload_due, 0);
    Ok(decisions
        .frames
        .iter()
        .filter_map(|(_, step)| Seen::of(step))
        .collect())
}

pub(crate) fn expected(specs: &[Spec]) -> Vec<Seen> {
    let mut message = 0u64;
    specs
        .iter()
        .map(|s| {
            if s.opcode.is_control() {
                return Seen::Control {
                    opcode: s.opcode,
                    payload: s.payload.clone(),
                };
            }
            if s.opcode != Opcode::Continuation {
                message = 0;
            }
            message += s.payload.len() as u64;
            Seen::Data {
                opcode: s.opcode,
                fin: s.fin,
                len: s.payload.len() as u64,
                message,
            }
        })
        .collect()
}

fn stream_of(specs: &[Spec], sender: Sender, rng: &mut StdRng) -> Vec<u8> {
    specs
        .iter()
        .flat_map(|s| encode(s, sender == Sender::Client, rng))
        .collect()
}

pub(crate) fn spec(opcode: Opcode, fin: bool, len: usize) -> Spec {
    Spec {
        opcode,
        fin,
        rsv1: false,
        payload: (0..len).map(|i| i as u8).collect(),
    }
}

fn one(bytes: &[u8], sender: Sender, extensions: Extensions) -> Step {
    FrameTracker::new(sender, extensions).step(bytes)
}

/// A random valid sequence: messages of 1..4 fragments with lengths across
/// the 7-bit, 16-bit and 64-bit encodings, control frames between fragments.
fn random_specs(rng: &mut StdRng, deflate: bool) -> Vec<Spec> {
    let mut specs = Vec::new();
    for _ in 0..rng.random_range(1..12) {
        let fragments = rng.random_range(1..=4);
        let rsv1 = deflate && rng.random_bool(0.5);
        for f in 0..fragments {
            let len = match rng.random_range(0..10) {
                0 => rng.random_range(126..70_000),
                1 => 125,
                2 => 126,
                3 => 65_535,
                4 => 65_536,
                _ => rng.random_range(0..126),
            };
            let opcode = match (f, rng.random_bool(0.5)) {
                (0, true) => Opcode::Text,
                (0, false) => Opcode::Binary,
                _ => Opcode::Continuation,
            };
            let mut s = spec(opcode, f + 1 == fragments, len);
            s.rsv1 = rsv1 && f == 0;
            specs.push(s);
            if rng.random_bool(0.3) {
                let opcode = [Opcode::Ping, Opcode::Pong, Opcode::Close][rng.random_range(0..3)];
                let len = match opcode {
                    Opcode::Close => [0, 2, 20, 125][rng.random_range(0..4)],
                    _ => rng.random_range(0..=125),
                };
                specs.push(spec(opcode, true, len));
            }
        }
    }
    specs
}

fn random_cuts(rng: &mut StdRng, len: usize) -> Vec<usize> {
    let n = rng.random_range(0..20);
    let mut cuts: Vec<usize> = (0..n).map(|_| rng.random_range(0..=len)).collect();
    // Cuts one byte apart: every header split at every place, somewhere.
    let start = rng.random_range(0..=len.min(40));
    cuts.extend((start..(start + 16).min(len)).step_by(1));
    cuts
}

#[test]
fn property_random_valid_streams_are_followed_whatever_the_chunking() {
    for seed in 0..400u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let sender = if seed % 2 == 0 {
            Sender::Client
        } else {
            Sender::Server
        };
        let deflate = seed % 3 == 0;
        let extensions = if deflate {
            Extensions::negotiated(["permessage-deflate; client_max_window_bits"])
        } else {
            Extensions::NONE
        };
        let specs = random_specs(&mut rng, deflate);
        let stream = stream_of(&specs, sender, &mut rng);
        let cuts = random_cuts(&mut rng, stream.len());
        let mut tracker = FrameTracker::new(sender, extensions);
        let seen = track(&mut tracker, &stream, &cuts)
            .unwrap_or_else(|v| panic!("seed {seed}: valid stream reported as {v}"));
        assert_eq!(seen, expected(&specs), "seed {seed}");
        assert!(tracker.at_boundary());
    }
}

#[test]
fn property_a_bad_frame_after_valid_ones_is_found_at_its_start() {
    let bad: &[(&str, Spec, Sender)] = &[
        (
            "rsv2",
            Spec {
                rsv1: false,
                ..spec(Opcode::Binary, true, 3)
            },
            Sender::Server,
        ),
        ("unmasked", spec(Opcode::Text, true, 3), Sender::Client),
    ];
    for seed in 0..100u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let specs = random_specs(&mut rng, false);
        // Only whole messages before the bad frame, so that it is not an
        // unfinished-message violation instead.
        let complete = specs
            .iter()
            .rposition(|s| s.fin && !s.opcode.is_control())
            .map_or(0, |i| i + 1);
        for (name, bad_spec, sender) in bad {
            let mut stream = stream_of(&specs[..complete], *sender, &mut rng);
            let good_len = stream.len();
            let mut frame = encode(bad_spec, false, &mut rng);
            if *name == "rsv2" {
                frame[0] |= 0x20;
            }
            stream.extend_from_slice(&frame);
            let mut tracker = FrameTracker::new(*sender, Extensions::NONE);
            let cuts = random_cuts(&mut rng, stream.len());
            let result = track(&mut tracker, &stream[..good_len], &cuts);
            assert!(result.is_ok(), "seed {seed} {name}");
            assert!(
                matches!(tracker.step(&frame), Step::Violation(_)),
                "seed {seed} {name}"
            );
        }
    }
}

#[test]
fn each_violation_is_named() {
    let client = Sender::Client;
    let server = Sender::Server;
    let none = Extensions::NONE;
    // Unmasked client frame; masked server frame.
    assert_eq!(
        one(&[0x81, 0x00], client, none),
        Step::Violation(Violation::UnmaskedClientFrame)
    );
    assert_eq!(
        one(&[0x81, 0x80], server, none),
        Step::Violation(Violation::MaskedServerFrame)
    );
    // Reserved bits without an extension, RSV1 with permessage-deflate.
    assert_eq!(
        one(&[0xC1, 0x00], server, none),
        Step::Violation(Violation::ReservedBits(0x40))
    );
    let deflate = Extensions::negotiated(["permessage-deflate"]);
    assert!(matches!(one(&[0xC1, 0x00], server, deflate), Step::Data(_)));
    assert_eq!(
        one(&[0xA1, 0x00], server, deflate),
        Step::Violation(Violation::ReservedBits(0x20))
    );
    // RSV1 on a control frame is not permessage-deflate's.
    assert_eq!(
        one(&[0xC9, 0x00], server, deflate),
        Step::Violation(Violation::ReservedBits(0x40))
    );
    // An unknown extension may use any bit.
    let unknown = Extensions::negotiated(["x-custom", "permessage-deflate"]);
    assert!(matches!(one(&[0xF2, 0x00], server, unknown), Step::Data(_)));
    // Opcodes 3-7 and B-F are reserved.
    for op in [0x3, 0x7, 0xB, 0xF] {
        assert_eq!(
            one(&[0x80 | op, 0x00], server, none),
            Step::Violation(Violation::UnknownOpcode(op))
        );
    }
    // Control frames: at most 125 bytes, never fragmented.
    assert_eq!(
        one(&[0x89, 126, 0, 200], server, none),
        Step::Violation(Violation::ControlTooLong)
    );
    assert_eq!(
        one(&[0x09, 0x00], server, none),
        Step::Violation(Violation::FragmentedControl)
    );
    // Continuations need a message; a message needs its last fragment first.
    assert_eq!(
        one(&[0x80, 0x00], server, none),
        Step::Violation(Violation::UnexpectedContinuation)
    );
    let mut tracker = FrameTracker::new(server, none);
    assert!(matches!(tracker.step(&[0x01, 0x00]), Step::Data(_)));
    assert_eq!(
        tracker.step(&[0x81, 0x00]),
        Step::Violation(Violation::UnfinishedMessage)
    );
    // Once failed, it stays failed.
    assert_eq!(
        tracker.step(&[0x80, 0x00]),
        Step::Violation(Violation::UnfinishedMessage)
    );
    // 64-bit length with the top bit set; close with a 1-byte body.
    let huge = [0x82, 127, 0x80, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(
        one(&huge, server, none),
        Step::Violation(Violation::LengthOverflow)
    );
    assert_eq!(
        one(&[0x88, 0x01, 0x03], server, none),
        Step::Violation(Violation::CloseOneByte)
    );
}

#[test]
fn violations_are_found_from_the_first_two_bytes_when_they_can_be() {
    // Nothing more is needed to know a server frame must not be masked.
    assert_eq!(
        one(&[0x82, 0xFE], Sender::Server, Extensions::NONE),
        Step::Violation(Violation::MaskedServerFrame)
    );
    assert_eq!(
        one(&[0x82], Sender::Server, Extensions::NONE),
        Step::NeedMore
    );
}

#[test]
fn control_frames_are_held_whole_and_unmasked() {
    let mut rng = StdRng::seed_from_u64(7);
    let close = Spec {
        payload: [&1001u16.to_be_bytes()[..], b"bye"].concat(),
        ..spec(Opcode::Close, true, 0)
    };
    let bytes = encode(&close, true, &mut rng);
    let mut tracker = FrameTracker::new(Sender::Client, Extensions::NONE);
    for cut in 0..bytes.len() {
        assert_eq!(tracker.step(&bytes[..cut]), Step::NeedMore, "cut at {cut}");
    }
    let Step::Control(frame) = tracker.step(&bytes) else {
        panic!("no control frame");
    };
    assert_eq!(frame.len, bytes.len());
    assert_eq!(frame.close_code(), Some(1001));
    assert_eq!(&frame.payload()[2..], b"bye");
}

#[test]
fn a_message_size_is_summed_over_fragments_and_resets_after() {
    let mut rng = StdRng::seed_from_u64(1);
    let specs = [
        spec(Opcode::Binary, false, 100),
        spec(Opcode::Ping, true, 4),
        spec(Opcode::Continuation, false, 200),
        spec(Opcode::Continuation, true, 50_000),
        spec(Opcode::Text, true, 7),
    ];
    let stream = stream_of(&specs, Sender::Client, &mut rng);
    let mut tracker = FrameTracker::new(Sender::Client, Extensions::NONE);
    let seen = track(&mut tracker, &stream, &[]).expect("valid");
    let messages: Vec<u64> = seen
        .iter()
        .filter_map(|s| match s {
            Seen::Data { message, .. } => Some(*message),
            Seen::Control { .. } => None,
        })
        .collect();
    assert_eq!(messages, [100, 300, 50_300, 7]);
}

#[test]
fn wharf_frames_are_read_back_by_tungstenite() {
    let frame = close_frame(1001, "going away", Some([1, 2, 3, 4]));
    let mut cursor = std::io::Cursor::new(&frame[..]);
    let (header, len) = FrameHeader::parse(&mut cursor)
        .expect("parse")
        .expect("whole");
    assert!(header.is_final && header.mask == Some([1, 2, 3, 4]));
    assert_eq!(header.opcode, OpCode::Control(TControl::Close));
    assert_eq!(len as usize, 2 + "going away".len());
    // And by the tracker, as a client's frame, unmasked.
    let Step::Control(read) = one(&frame, Sender::Client, Extensions::NONE) else {
        panic!("not a control frame");
    };
    assert_eq!(read.close_code(), Some(1001));
    assert_eq!(&read.payload()[2..], b"going away");
    let ping = control_frame(Opcode::Ping, b"wharf", None);
    assert_eq!(ping, [0x89, 5, b'w', b'h', b'a', b'r', b'f']);
}

#[test]
fn extensions_are_read_from_the_101() {
    assert_eq!(Extensions::negotiated(std::iter::empty()), Extensions::NONE);
    let deflate = Extensions::negotiated(["permessage-deflate; server_no_context_takeover"]);
    assert_eq!(deflate.rsv_allowed, 0x40);
    assert!(deflate.rsv_on_first_frame_only);
    let unknown = Extensions::negotiated(["permessage-deflate, x-webkit-thing"]);
    assert_eq!(unknown.rsv_allowed, 0x70);
    assert!(!unknown.rsv_on_first_frame_only);
}
