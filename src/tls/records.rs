//! TLS 1.3 record protection done by wharf once rustls has finished a
//! handshake (RFC 8446 §5.2, §7.1, §4.6.3).
//!
//! A rustls connection that is only waiting for the next record still holds
//! about 3.6 KB: its connection state (1.3 KB), two expanded AES-GCM keys
//! (1.2 KB), its key schedule and state machine (about 1 KB). That is most of
//! what an idle TLS websocket costs (`bench/run --only idle`: 5.8 KB per TLS
//! websocket against 1.7 KB plain). A connection handed over to [`Records`]
//! keeps about 200 bytes instead: each direction's traffic secret (for key
//! updates), key, IV and sequence number. The AEAD key is expanded for each
//! batch of records and dropped after it (122 ns for AES-128-GCM, measured
//! with aws-lc-rs on this machine), so an idle connection holds no key
//! schedule at all.
//!
//! What is handled here after the handshake: application data, alerts
//! (close_notify ends the stream, user_canceled is ignored, anything else is
//! an error), and KeyUpdate from the client (answered with our own when it
//! asks). wharf updates its own sending key before the suite's
//! confidentiality limit, as rustls does. Anything else (a handshake message
//! other than KeyUpdate, an unprotected record) ends the connection with an
//! alert, as RFC 8446 requires.

use aws_lc_rs::{aead, hkdf};
use rustls::{CipherSuite, ConnectionTrafficSecrets, ExtractedSecrets};
use zeroize::Zeroize;

/// The most plaintext one record carries (RFC 8446 §5.1).
pub const MAX_FRAGMENT: usize = 16_384;
/// Record header: type, legacy version, length.
pub const HEADER_LEN: usize = 5;
/// What protection adds to a record's plaintext: the inner content type and
/// the AEAD tag (every TLS 1.3 suite has a 16-byte tag).
const OVERHEAD: usize = HEADER_LEN + 1 + TAG_LEN;
const TAG_LEN: usize = 16;
/// The largest ciphertext a record may carry (RFC 8446 §5.2).
const MAX_CIPHERTEXT: usize = MAX_FRAGMENT + 256;
/// As rustls: more empty application-data records in a row than this is a
/// peer burning our time.
const MAX_EMPTY_IN_A_ROW: u8 = 32;
/// As rustls (and BoringSSL): KeyUpdates between two application data
/// records.
const MAX_KEY_UPDATES_IN_A_ROW: u8 = 32;
/// As rustls: warning alerts (user_canceled) before data.
const MAX_WARNINGS_IN_A_ROW: u8 = 4;

const TYPE_ALERT: u8 = 21;
const TYPE_HANDSHAKE: u8 = 22;
const TYPE_APPLICATION_DATA: u8 = 23;
const HANDSHAKE_KEY_UPDATE: u8 = 24;

/// Alert descriptions sent here (RFC 8446 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alert {
    CloseNotify = 0,
    UnexpectedMessage = 10,
    BadRecordMac = 20,
    RecordOverflow = 22,
    IllegalParameter = 47,
    DecodeError = 50,
    InternalError = 80,
}

/// Why a record could not be taken: the connection is over, and `alert`
/// (if any: not after the client's own fatal alert) tells the client why.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct RecordError {
    pub alert: Option<Alert>,
    reason: &'static str,
}

fn fail(alert: Alert, reason: &'static str) -> RecordError {
    RecordError {
        alert: Some(alert),
        reason,
    }
}

/// The TLS 1.3 suites rustls offers with the aws-lc-rs provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Suite {
    Aes128Gcm,
    Aes256Gcm,
    Chacha20Poly1305,
}

impl Suite {
    fn of(suite: CipherSuite) -> Option<Suite> {
        match suite {
            CipherSuite::TLS13_AES_128_GCM_SHA256 => Some(Suite::Aes128Gcm),
            CipherSuite::TLS13_AES_256_GCM_SHA384 => Some(Suite::Aes256Gcm),
            CipherSuite::TLS13_CHACHA20_POLY1305_SHA256 => Some(Suite::Chacha20Poly1305),
            _ => None,
        }
    }

    fn aead(self) -> &'static aead::Algorithm {
        match self {
            Suite::Aes128Gcm => &aead::AES_128_GCM,
            Suite::Aes256Gcm => &aead::AES_256_GCM,
            Suite::Chacha20Poly1305 => &aead::CHACHA20_POLY1305,
        }
    }

    fn hkdf(self) -> hkdf::Algorithm {
        match self {
            Suite::Aes256Gcm => hkdf::HKDF_SHA384,
            Suite::Aes128Gcm | Suite::Chacha20Poly1305 => hkdf::HKDF_SHA256,
        }
    }

    /// The length of a traffic secret: the suite's hash.
    fn secret_len(self) -> usize {
        match self {
            Suite::Aes256Gcm => 48,
            Suite::Aes128Gcm | Suite::Chacha20Poly1305 => 32,
        }
    }

    /// Records sent under one key before it is updated: rustls's figures
    /// for its aws-lc-rs suites.
    fn confidentiality_limit(self) -> u64 {
        match self {
            Suite::Aes128Gcm | Suite::Aes256Gcm => 1 << 24,
            Suite::Chacha20Poly1305 => u64::MAX,
        }
    }
}

/// The length asked of an HKDF expansion.
struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label with an empty context (RFC 8446 §7.1). Lengths here
/// are at most 48 bytes, far under HKDF's limit: an error cannot happen, but
/// is one rather than a key of zeroes.
fn expand_label(
    alg: hkdf::Algorithm,
    secret: &[u8],
    label: &[u8],
    out: &mut [u8],
) -> Result<(), RecordError> {
    let prk = hkdf::Prk::new_less_safe(alg, secret);
    let length = (out.len() as u16).to_be_bytes();
    let label_len = [(6 + label.len()) as u8];
    let info: [&[u8]; 5] = [&length, &label_len, b"tls13 ", label, &[0]];
    prk.expand(&info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| fail(Alert::InternalError, "TLS key derivation failed"))
}

/// One direction's keys: the traffic secret they come from, and where the
/// sequence is.
struct Direction {
    secret: [u8; 48],
    key: [u8; 32],
    iv: [u8; 12],
    seq: u64,
}

impl Direction {
    /// `secret` is the suite's hash long (checked by the caller).
    fn new(suite: Suite, secret: &[u8], seq: u64) -> Result<Direction, RecordError> {
        let mut direction = Direction {
            secret: [0; 48],
            key: [0; 32],
            iv: [0; 12],
            seq,
        };
        direction.secret[..secret.len()].copy_from_slice(secret);
        direction.derive(suite)?;
        Ok(direction)
    }

    fn derive(&mut self, suite: Suite) -> Result<(), RecordError> {
        let secret = &self.secret[..suite.secret_len()];
        let key_len = suite.aead().key_len();
        expand_label(suite.hkdf(), secret, b"key", &mut self.key[..key_len])?;
        expand_label(suite.hkdf(), secret, b"iv", &mut self.iv)
    }

    /// The next generation of keys (RFC 8446 §7.2).
    fn update(&mut self, suite: Suite) -> Result<(), RecordError> {
        let len = suite.secret_len();
        let mut next = [0u8; 48];
        let expanded = expand_label(
            suite.hkdf(),
            &self.secret[..len],
            b"traffic upd",
            &mut next[..len],
        );
        self.secret = next;
        next.zeroize();
        expanded?;
        self.seq = 0;
        self.derive(suite)
    }

    fn aead_key(&self, suite: Suite) -> Result<aead::LessSafeKey, RecordError> {
        let key = &self.key[..suite.aead().key_len()];
        aead::UnboundKey::new(suite.aead(), key)
            .map(aead::LessSafeKey::new)
            .map_err(|_| fail(Alert::InternalError, "TLS key could not be set up"))
    }

    /// The nonce of the next record, which it uses up.
    fn next_nonce(&mut self) -> Result<aead::Nonce, RecordError> {
        let mut nonce = self.iv;
        for (n, s) in nonce[4..].iter_mut().zip(self.seq.to_be_bytes()) {
            *n ^= s;
        }
        self.seq = self
            .seq
            .checked_add(1)
            .ok_or(fail(Alert::InternalError, "TLS sequence number exhausted"))?;
        Ok(aead::Nonce::assume_unique_for_key(nonce))
    }
}

impl Drop for Direction {
    fn drop(&mut self) {
        self.secret.zeroize();
        self.key.zeroize();
        self.iv.zeroize();
    }
}

/// What one opened record was.
#[derive(Debug, PartialEq, Eq)]
pub enum Opened {
    /// Application data, at this range of the record buffer.
    Data(std::ops::Range<usize>),
    /// close_notify: the client sends nothing more.
    Closed,
    /// Nothing for the reader: an ignored alert, an empty record, a key
    /// update.
    Nothing,
    /// A key update that asks for ours: [`Records::seal_key_update`] must
    /// come before anything else is sealed.
    KeyUpdateAsked,
}

/// A connection's TLS 1.3 record protection after the handshake.
pub struct Records {
    suite: Suite,
    rx: Direction,
    tx: Direction,
    empty_in_a_row: u8,
    key_updates_in_a_row: u8,
    warnings_in_a_row: u8,
    /// The client asked for our KeyUpdate and it is not sealed yet.
    owes_key_update: bool,
}

impl std::fmt::Debug for Records {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Records")
            .field("suite", &self.suite)
            .finish_non_exhaustive()
    }
}

impl Records {
    /// Takes over from rustls, given the application traffic secrets it
    /// logged (`client_secret`, `server_secret`) and what it extracted at the
    /// end of the handshake. `None` for a suite this does not know, or when
    /// the keys derived here are not those rustls has.
    pub fn take_over(
        suite: CipherSuite,
        client_secret: &[u8],
        server_secret: &[u8],
        extracted: &ExtractedSecrets,
    ) -> Option<Records> {
        let suite = Suite::of(suite)?;
        if client_secret.len() != suite.secret_len() || server_secret.len() != suite.secret_len() {
            return None;
        }
        let mut records = Records {
            suite,
            rx: Direction::new(suite, client_secret, extracted.rx.0).ok()?,
            tx: Direction::new(suite, server_secret, extracted.tx.0).ok()?,
            empty_in_a_row: 0,
            key_updates_in_a_row: 0,
            warnings_in_a_row: 0,
            owes_key_update: false,
        };
        let key_len = suite.aead().key_len();
        let same = |direction: &Direction, theirs: &ConnectionTrafficSecrets| {
            let (key, iv) = match theirs {
                ConnectionTrafficSecrets::Aes128Gcm { key, iv }
                | ConnectionTrafficSecrets::Aes256Gcm { key, iv }
                | ConnectionTrafficSecrets::Chacha20Poly1305 { key, iv } => (key, iv),
                _ => return false,
            };
            direction.key[..key_len] == *key.as_ref() && direction.iv[..] == *iv.as_ref()
        };
        // Should rustls have followed KeyUpdates that came with the client's
        // Finished (at most 32 in a row), its key is a later generation.
        // `TlsConnection` stops rustls at the Finished, so this is a guard.
        for _ in 0..MAX_KEY_UPDATES_IN_A_ROW {
            if same(&records.rx, &extracted.rx.1) {
                break;
            }
            records.rx.update(suite).ok()?;
            records.rx.seq = extracted.rx.0;
        }
        (same(&records.rx, &extracted.rx.1) && same(&records.tx, &extracted.tx.1))
            .then_some(records)
    }

    /// A KeyUpdate answer waits to be sealed.
    pub fn owes_key_update(&self) -> bool {
        self.owes_key_update
    }

    /// The key that opens the client's records, for one batch of them.
    pub fn opener(&self) -> Result<aead::LessSafeKey, RecordError> {
        self.rx.aead_key(self.suite)
    }

    /// The length of the record at the start of `data` (header included),
    /// once its header is there; an error for a header no client may send.
    pub fn record_len(data: &[u8]) -> Result<Option<usize>, RecordError> {
        let Some(header) = data.get(..HEADER_LEN) else {
            return Ok(None);
        };
        if header[0] != TYPE_APPLICATION_DATA {
            // After the handshake every record is protected (RFC 8446 §5).
            return Err(fail(
                Alert::UnexpectedMessage,
                "unprotected TLS record after the handshake",
            ));
        }
        let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
        if len > MAX_CIPHERTEXT {
            return Err(fail(Alert::RecordOverflow, "TLS record too large"));
        }
        Ok(Some(HEADER_LEN + len))
    }

    /// Opens the whole record `record` in place with `opener` (from
    /// [`opener`](Self::opener), replaced by this call after a key update).
    pub fn open(
        &mut self,
        opener: &mut aead::LessSafeKey,
        record: &mut [u8],
    ) -> Result<Opened, RecordError> {
        let (header, body) = record.split_at_mut(HEADER_LEN);
        let nonce = self.rx.next_nonce()?;
        let aad = aead::Aad::from(&header[..]);
        let inner_len = opener
            .open_in_place(nonce, aad, body)
            .map_err(|_| fail(Alert::BadRecordMac, "TLS record failed authentication"))?
            .len();
        // The content type is the last byte that is not padding.
        if inner_len > MAX_FRAGMENT + 1 {
            // Padding included (RFC 8446 §5.4).
            return Err(fail(Alert::RecordOverflow, "TLS plaintext too large"));
        }
        let inner = &body[..inner_len];
        let Some(type_at) = inner.iter().rposition(|&b| b != 0) else {
            return Err(fail(
                Alert::UnexpectedMessage,
                "TLS record without a content type",
            ));
        };
        let content = &inner[..type_at];
        match inner[type_at] {
            TYPE_APPLICATION_DATA => {
                if content.len() > MAX_FRAGMENT {
                    return Err(fail(Alert::RecordOverflow, "TLS plaintext too large"));
                }
                if content.is_empty() {
                    self.empty_in_a_row += 1;
                    if self.empty_in_a_row > MAX_EMPTY_IN_A_ROW {
                        return Err(fail(Alert::UnexpectedMessage, "too many empty TLS records"));
                    }
                    return Ok(Opened::Nothing);
                }
                self.empty_in_a_row = 0;
                self.key_updates_in_a_row = 0;
                self.warnings_in_a_row = 0;
                Ok(Opened::Data(HEADER_LEN..HEADER_LEN + type_at))
            }
            TYPE_ALERT => match *content {
                // In TLS 1.3 every alert but these two is fatal (RFC 8446 §6).
                [_, 0] => Ok(Opened::Closed),
                // user_canceled: a close_notify is to follow.
                [1 | 2, 90] => {
                    self.warnings_in_a_row += 1;
                    if self.warnings_in_a_row > MAX_WARNINGS_IN_A_ROW {
                        return Err(fail(
                            Alert::UnexpectedMessage,
                            "too many TLS warning alerts",
                        ));
                    }
                    Ok(Opened::Nothing)
                }
                [1 | 2, _] => Err(RecordError {
                    alert: None,
                    reason: "the client ended the connection with a TLS alert",
                }),
                [_, _] => Err(fail(
                    Alert::IllegalParameter,
                    "TLS alert of an unknown level",
                )),
                _ => Err(fail(Alert::DecodeError, "malformed TLS alert")),
            },
            TYPE_HANDSHAKE => {
                // The only handshake message a client may send now is a whole
                // KeyUpdate, the last message under its key (RFC 8446 §5.1).
                let &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, request] = content else {
                    return Err(fail(
                        Alert::UnexpectedMessage,
                        "unexpected TLS handshake message after the handshake",
                    ));
                };
                if request > 1 {
                    return Err(fail(Alert::IllegalParameter, "malformed TLS KeyUpdate"));
                }
                self.key_updates_in_a_row += 1;
                if self.key_updates_in_a_row > MAX_KEY_UPDATES_IN_A_ROW {
                    return Err(fail(Alert::UnexpectedMessage, "too many TLS KeyUpdates"));
                }
                self.rx.update(self.suite)?;
                *opener = self.opener()?;
                if request == 1 {
                    // One answer for any number of requests (RFC 8446 §4.6.3).
                    self.owes_key_update = true;
                    return Ok(Opened::KeyUpdateAsked);
                }
                Ok(Opened::Nothing)
            }
            _ => Err(fail(Alert::UnexpectedMessage, "unknown TLS content type")),
        }
    }

    /// Seals `plaintext` (at most [`MAX_FRAGMENT`] bytes) as one application
    /// data record into `room` (at least `plaintext.len()` + [`OVERHEAD`] +
    /// a key update's record); returns the bytes written. When the key has
    /// reached its limit, a KeyUpdate goes first and the record under the
    /// new key.
    pub fn seal_data(&mut self, plaintext: &[u8], room: &mut [u8]) -> Result<usize, RecordError> {
        let mut at = 0;
        if self.owes_key_update || self.tx.seq >= self.suite.confidentiality_limit() {
            at = self.seal_key_update(room)?;
        }
        let key = self.tx.aead_key(self.suite)?;
        let n = self.seal_with(&key, TYPE_APPLICATION_DATA, plaintext, &mut room[at..])?;
        Ok(at + n)
    }

    /// Seals an alert (close_notify, or why the connection ends) into
    /// `room`; returns the bytes written.
    pub fn seal_alert(&mut self, alert: Alert, room: &mut [u8]) -> Result<usize, RecordError> {
        let level = if alert == Alert::CloseNotify { 1 } else { 2 };
        let key = self.tx.aead_key(self.suite)?;
        self.seal_with(&key, TYPE_ALERT, &[level, alert as u8], room)
    }

    /// Room to give [`seal_data`](Self::seal_data) for `len` bytes of plaintext.
    pub const fn room_for(len: usize) -> usize {
        len + OVERHEAD + KEY_UPDATE_RECORD
    }

    /// Seals a KeyUpdate that does not ask for the client's into `room`
    /// (at least 27 bytes), then moves to the next sending
    /// key; returns the bytes written.
    pub fn seal_key_update(&mut self, room: &mut [u8]) -> Result<usize, RecordError> {
        let key = self.tx.aead_key(self.suite)?;
        let n = self.seal_with(
            &key,
            TYPE_HANDSHAKE,
            &[HANDSHAKE_KEY_UPDATE, 0, 0, 1, 0],
            room,
        )?;
        self.tx.update(self.suite)?;
        self.owes_key_update = false;
        Ok(n)
    }

    fn seal_with(
        &mut self,
        key: &aead::LessSafeKey,
        content_type: u8,
        plaintext: &[u8],
        room: &mut [u8],
    ) -> Result<usize, RecordError> {
        let body_len = plaintext.len() + 1 + TAG_LEN;
        let total = HEADER_LEN + body_len;
        let Some(room) = room.get_mut(..total) else {
            return Err(fail(Alert::InternalError, "TLS write room too small"));
        };
        let (header, body) = room.split_at_mut(HEADER_LEN);
        header.copy_from_slice(&[TYPE_APPLICATION_DATA, 3, 3, 0, 0]);
        header[3..].copy_from_slice(&(body_len as u16).to_be_bytes());
        let (inner, tag_room) = body.split_at_mut(plaintext.len() + 1);
        inner[..plaintext.len()].copy_from_slice(plaintext);
        inner[plaintext.len()] = content_type;
        let nonce = self.tx.next_nonce()?;
        let tag = key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(&header[..]), inner)
            .map_err(|_| fail(Alert::InternalError, "TLS record could not be sealed"))?;
        tag_room.copy_from_slice(tag.as_ref());
        Ok(total)
    }
}

/// A sealed KeyUpdate record: header, 4 + 1 bytes of message, type, tag.
const KEY_UPDATE_RECORD: usize = OVERHEAD + 5;

#[cfg(test)]
#[path = "records_tests.rs"]
mod tests;

/// A client's side of the records, driven by hand in tests.
#[cfg(test)]
impl Records {
    /// A record sealed as this side sends it, whatever its inner plaintext
    /// (content, type, padding).
    pub(crate) fn seal_inner(&mut self, inner: &[u8]) -> Vec<u8> {
        let key = self.tx.aead_key(self.suite).unwrap();
        let mut record = vec![TYPE_APPLICATION_DATA, 3, 3];
        record.extend_from_slice(&((inner.len() + TAG_LEN) as u16).to_be_bytes());
        let mut body = inner.to_vec();
        let nonce = self.tx.next_nonce().unwrap();
        let tag = key
            .seal_in_place_separate_tag(nonce, aead::Aad::from(&record[..]), &mut body)
            .unwrap();
        record.extend_from_slice(&body);
        record.extend_from_slice(tag.as_ref());
        record
    }

    /// `content`, then `content_type`, then `padding` zero bytes, sealed.
    pub(crate) fn seal_raw(&mut self, content_type: u8, content: &[u8], padding: usize) -> Vec<u8> {
        let mut inner = content.to_vec();
        inner.push(content_type);
        inner.resize(inner.len() + padding, 0);
        self.seal_inner(&inner)
    }

    /// Moves this side's sending key on, as after sending a KeyUpdate.
    pub(crate) fn update_tx_for_test(&mut self) {
        self.tx.update(self.suite).unwrap();
    }
}
