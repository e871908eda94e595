//! Following RFC 6455 frames from their headers alone (no I/O).
//!
//! A [`FrameTracker`] is fed the bytes one endpoint sends, in order, and tells
//! where each frame starts and ends: payloads are never buffered whole and
//! never unmasked, so a message of any size costs nothing but its header.
//! Only control frames (at most 131 bytes on the wire) are looked into, so
//! that a close code or a pong can be recognised, and the caller holds a
//! header or control frame until it is whole ([`Step::NeedMore`]). Because a
//! header is never passed on in pieces, the receiving stream is between two
//! frames whenever the tracker is not inside a data frame's payload
//! ([`FrameTracker::at_boundary`]): there wharf may insert a frame of its own,
//! even between the fragments of a message (control frames may go there,
//! §5.4).
//!
//! Violations of §5.2 (reserved bits, masking, opcodes, lengths) and §5.4–5.5
//! (fragmentation, control frames) are reported, never passed on.

/// The largest payload of a control frame (§5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// Which endpoint sends the frames a tracker reads: clients must mask every
/// frame, servers must not (§5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sender {
    Client,
    Server,
}

/// What the negotiated extensions (`Sec-WebSocket-Extensions` of the 101)
/// allow in the reserved bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extensions {
    /// RSV1..RSV3 as they sit in the first header byte (0x40, 0x20, 0x10).
    pub rsv_allowed: u8,
    /// permessage-deflate (RFC 7692 §6) sets RSV1 on a message's first frame
    /// only, never on a continuation or control frame.
    pub rsv_on_first_frame_only: bool,
}

impl Extensions {
    /// No extension negotiated: every reserved bit must be zero.
    pub const NONE: Extensions = Extensions {
        rsv_allowed: 0,
        rsv_on_first_frame_only: false,
    };

    /// From the server's `Sec-WebSocket-Extensions` values: permessage-deflate
    /// alone allows RSV1 on first frames; an extension wharf does not know
    /// may use any reserved bit, so then none is checked.
    pub fn negotiated<'a>(values: impl IntoIterator<Item = &'a str>) -> Extensions {
        let mut extensions = Extensions::NONE;
        let names = values
            .into_iter()
            .flat_map(|value| value.split(','))
            .map(|ext| ext.split(';').next().unwrap_or("").trim())
            .filter(|name| !name.is_empty());
        for name in names {
            if name.eq_ignore_ascii_case("permessage-deflate") {
                extensions.rsv_allowed |= 0x40;
                extensions.rsv_on_first_frame_only = extensions.rsv_allowed == 0x40;
            } else {
                extensions.rsv_allowed = 0x70;
                extensions.rsv_on_first_frame_only = false;
            }
        }
        extensions
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn from_bits(bits: u8) -> Option<Opcode> {
        Some(match bits {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            _ => return None,
        })
    }

    pub fn bits(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Opcode::Close | Opcode::Ping | Opcode::Pong)
    }
}

/// A frame header that breaks RFC 6455.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Violation {
    #[error("reserved bits {0:#04x} set that no negotiated extension defines")]
    ReservedBits(u8),
    #[error("a client frame is not masked")]
    UnmaskedClientFrame,
    #[error("a server frame is masked")]
    MaskedServerFrame,
    #[error("unknown opcode {0:#x}")]
    UnknownOpcode(u8),
    #[error("a control frame longer than 125 bytes")]
    ControlTooLong,
    #[error("a fragmented control frame")]
    FragmentedControl,
    #[error("a continuation frame with no message to continue")]
    UnexpectedContinuation,
    #[error("a new message before the previous one's last fragment")]
    UnfinishedMessage,
    #[error("a 64-bit payload length with its most significant bit set")]
    LengthOverflow,
    #[error("a close frame with a 1-byte payload")]
    CloseOneByte,
}

/// A data frame's header, just read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DataFrame {
    /// Bytes of the header; the payload follows.
    pub header_len: usize,
    pub opcode: Opcode,
    pub fin: bool,
    pub payload_len: u64,
    /// The message's size so far, this frame's payload included (summed over
    /// fragments; for a compressed message, its compressed size).
    pub message_len: u64,
}

/// A whole control frame, with its payload unmasked (a copy).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ControlFrame {
    /// Bytes of the whole frame, header included.
    pub len: usize,
    pub opcode: Opcode,
    payload: [u8; MAX_CONTROL_PAYLOAD],
    payload_len: u8,
}

impl ControlFrame {
    pub fn payload(&self) -> &[u8] {
        &self.payload[..usize::from(self.payload_len)]
    }

    /// A close frame's status code; `None` for a close without one (1005).
    pub fn close_code(&self) -> Option<u16> {
        match (self.opcode, self.payload()) {
            (Opcode::Close, [hi, lo, ..]) => Some(u16::from_be_bytes([*hi, *lo])),
            _ => None,
        }
    }
}

impl std::fmt::Debug for ControlFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlFrame")
            .field("len", &self.len)
            .field("opcode", &self.opcode)
            .field("payload", &self.payload())
            .finish()
    }
}

/// What comes next in the input given to [`FrameTracker::step`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The next `n` bytes are payload of the current data frame.
    Payload(usize),
    /// A data frame header (`header_len` bytes); its payload follows.
    Data(DataFrame),
    /// A whole control frame (`len` bytes).
    Control(ControlFrame),
    /// The input is empty, or ends inside a header or control frame: hold
    /// those bytes and step again once more have arrived after them.
    NeedMore,
    /// The frame starting here breaks the protocol; the stream cannot be
    /// followed any further.
    Violation(Violation),
}

/// Follows the frames one endpoint sends. See the module doc.
#[derive(Debug, Clone)]
pub struct FrameTracker {
    sender: Sender,
    extensions: Extensions,
    /// Payload bytes of the current data frame not seen yet.
    payload_left: u64,
    /// A fragmented message is in progress (its last frame not seen yet).
    in_message: bool,
    /// Payload bytes of the message in progress so far.
    message_len: u64,
    failed: Option<Violation>,
}

impl FrameTracker {
    pub fn new(sender: Sender, extensions: Extensions) -> Self {
        FrameTracker {
            sender,
            extensions,
            payload_left: 0,
            in_message: false,
            message_len: 0,
            failed: None,
        }
    }

    pub fn sender(&self) -> Sender {
        self.sender
    }

    /// Not inside a data frame's payload: the bytes passed on so far end
    /// with a whole frame (held bytes are not passed on).
    pub fn at_boundary(&self) -> bool {
        self.payload_left == 0
    }

    /// Reads what comes first in `input`, which continues exactly where the
    /// last step's consumed bytes ended (held bytes given again in front).
    pub fn step(&mut self, input: &[u8]) -> Step {
        if let Some(violation) = self.failed {
            return Step::Violation(violation);
        }
        if self.payload_left > 0 {
            if input.is_empty() {
                return Step::NeedMore;
            }
            let n = usize::try_from(self.payload_left)
                .map_or(input.len(), |left| left.min(input.len()));
            self.payload_left -= n as u64;
            return Step::Payload(n);
        }
        match self.header(input) {
            Ok(step) => step,
            Err(violation) => {
                self.failed = Some(violation);
                Step::Violation(violation)
            }
        }
    }

    fn header(&mut self, input: &[u8]) -> Result<Step, Violation> {
        let [b0, b1, ..] = *input else {
            return Ok(Step::NeedMore);
        };
        let fin = b0 & 0x80 != 0;
        let rsv = b0 & 0x70;
        let opcode = Opcode::from_bits(b0 & 0x0F).ok_or(Violation::UnknownOpcode(b0 & 0x0F))?;
        let masked = b1 & 0x80 != 0;
        let len7 = b1 & 0x7F;
        match (self.sender, masked) {
            (Sender::Client, false) => return Err(Violation::UnmaskedClientFrame),
            (Sender::Server, true) => return Err(Violation::MaskedServerFrame),
            _ => {}
        }
        let first_frame = matches!(opcode, Opcode::Text | Opcode::Binary);
        let rsv_ok = rsv & !self.extensions.rsv_allowed == 0
            && (rsv == 0 || !self.extensions.rsv_on_first_frame_only || first_frame);
        if !rsv_ok {
            return Err(Violation::ReservedBits(rsv));
        }
        if opcode.is_control() {
            if !fin {
                return Err(Violation::FragmentedControl);
            }
            if usize::from(len7) > MAX_CONTROL_PAYLOAD {
                return Err(Violation::ControlTooLong);
            }
        } else if opcode == Opcode::Continuation && !self.in_message {
            return Err(Violation::UnexpectedContinuation);
        } else if first_frame && self.in_message {
            return Err(Violation::UnfinishedMessage);
        }
        let length_bytes = match len7 {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask_bytes = if masked { 4 } else { 0 };
        let header_len = 2 + length_bytes + mask_bytes;
        if input.len() < header_len {
            return Ok(Step::NeedMore);
        }
        let payload_len = match length_bytes {
            2 => u64::from(u16::from_be_bytes([input[2], input[3]])),
            8 => {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(&input[2..10]);
                let len = u64::from_be_bytes(bytes);
                if len >> 63 != 0 {
                    return Err(Violation::LengthOverflow);
                }
                len
            }
            _ => u64::from(len7),
        };
        if opcode.is_control() {
            return self.control(input, opcode, header_len, masked, len7);
        }
        let message_len = match opcode {
            Opcode::Continuation => self.message_len.saturating_add(payload_len),
            _ => payload_len,
        };
        self.in_message = !fin;
        self.message_len = if fin { 0 } else { message_len };
        self.payload_left = payload_len;
        Ok(Step::Data(DataFrame {
            header_len,
            opcode,
            fin,
            payload_len,
            message_len,
        }))
    }

    fn control(
        &self,
        input: &[u8],
        opcode: Opcode,
        header_len: usize,
        masked: bool,
        len7: u8,
    ) -> Result<Step, Violation> {
        let payload_len = usize::from(len7);
        let len = header_len + payload_len;
        if input.len() < len {
            return Ok(Step::NeedMore);
        }
        if opcode == Opcode::Close && payload_len == 1 {
            return Err(Violation::CloseOneByte);
        }
        let mut payload = [0; MAX_CONTROL_PAYLOAD];
        payload[..payload_len].copy_from_slice(&input[header_len..len]);
        if masked {
            let key = &input[header_len - 4..header_len];
            apply_mask(&mut payload[..payload_len], key);
        }
        Ok(Step::Control(ControlFrame {
            len,
            opcode,
            payload,
            payload_len: len7,
        }))
    }
}

fn apply_mask(bytes: &mut [u8], key: &[u8]) {
    for (i, byte) in bytes.iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// A control frame of wharf's own, masked with `mask` when it goes to a
/// server (wharf is then the client, §5.3).
pub fn control_frame(opcode: Opcode, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let payload = &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)];
    let mut frame = Vec::with_capacity(6 + payload.len());
    frame.push(0x80 | opcode.bits());
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    frame.push(mask_bit | payload.len() as u8);
    if let Some(key) = mask {
        frame.extend_from_slice(&key);
    }
    let payload_start = frame.len();
    frame.extend_from_slice(payload);
    if let Some(key) = mask {
        apply_mask(&mut frame[payload_start..], &key);
    }
    frame
}

/// A close frame with `code` and a short reason.
pub fn close_frame(code: u16, reason: &str, mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    control_frame(Opcode::Close, &payload, mask)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
pub(crate) mod tests;
