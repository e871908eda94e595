//! The front of a connection, between accept and the protocol that serves
//! it: the PROXY header (trusted peers only), sniffing the first bytes, TLS
//! termination or passthrough, then HTTP, a Flash policy answer, or the
//! listener's TCP pool.
//!
//! - [`connection`]: one connection through these steps.
//! - [`sniff`]: what the first bytes say.
//! - `client_hello`: the server name of a TLS ClientHello, for passthrough.

pub(crate) mod client_hello;
mod connection;
pub mod sniff;

pub use connection::handle;
