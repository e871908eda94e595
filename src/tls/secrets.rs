//! The TLS 1.3 application traffic secrets of a handshake, taken from
//! rustls's key log for [`super::records`].
//!
//! rustls hands over keys and IVs at the end of a handshake but not the
//! traffic secrets that key updates are derived from; it gives those only to
//! a `KeyLog`. Our configs carry [`CaptureSecrets`], which keeps the two
//! application traffic secrets in a slot of the current thread. rustls logs
//! them synchronously inside the call that processes a handshake's records,
//! so [`capture`] empties the slot before such a call and takes what it holds
//! after it: other connections on the thread cannot interleave.

use std::cell::RefCell;

use rustls::KeyLog;
use zeroize::Zeroize;

const CLIENT_LABEL: &str = "CLIENT_TRAFFIC_SECRET_0";
const SERVER_LABEL: &str = "SERVER_TRAFFIC_SECRET_0";

/// The two application traffic secrets of a handshake, as far as logged.
#[derive(Default)]
pub struct TrafficSecrets {
    pub client: Option<Secret>,
    pub server: Option<Secret>,
}

impl TrafficSecrets {
    fn merge(&mut self, other: TrafficSecrets) {
        if other.client.is_some() {
            self.client = other.client;
        }
        if other.server.is_some() {
            self.server = other.server;
        }
    }
}

/// One secret (at most a SHA-384 hash long), zeroed when dropped.
pub struct Secret {
    bytes: [u8; 48],
    len: u8,
}

impl Secret {
    fn new(secret: &[u8]) -> Option<Secret> {
        let mut bytes = [0; 48];
        bytes.get_mut(..secret.len())?.copy_from_slice(secret);
        Some(Secret {
            bytes,
            len: secret.len() as u8,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        self.bytes.zeroize();
    }
}

thread_local! {
    static SLOT: RefCell<TrafficSecrets> = RefCell::default();
}

/// The key log of wharf's server configs.
#[derive(Debug)]
pub struct CaptureSecrets;

impl KeyLog for CaptureSecrets {
    fn will_log(&self, label: &str) -> bool {
        label == CLIENT_LABEL || label == SERVER_LABEL
    }

    fn log(&self, label: &str, _client_random: &[u8], secret: &[u8]) {
        SLOT.with_borrow_mut(|slot| match label {
            CLIENT_LABEL => slot.client = Secret::new(secret),
            SERVER_LABEL => slot.server = Secret::new(secret),
            _ => {}
        });
    }
}

/// Runs `step` (one synchronous round of a handshake) and adds to `into`
/// what rustls logged during it.
pub fn capture<T>(into: &mut TrafficSecrets, step: impl FnOnce() -> T) -> T {
    SLOT.with_borrow_mut(|slot| *slot = TrafficSecrets::default());
    let result = step();
    into.merge(SLOT.with_borrow_mut(std::mem::take));
    result
}
