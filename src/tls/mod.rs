//! TLS termination for a listener, with rustls (aws-lc-rs provider).
//!
//! A [`TlsTerminator`] holds the certificates of one listener, chosen per
//! handshake by SNI (see [`resolve`] for the rules; the first certificate is the
//! default), speaks TLS 1.2 and 1.3, and negotiates ALPN `http/1.1`.
//! [`TlsTerminator::reload`] re-reads the files and swaps the certificates
//! atomically: open connections are untouched, new handshakes get the new ones,
//! and a reload that fails keeps the certificates in use.
//!
//! - [`certs`]: reading and checking the PEM files, the names a certificate is for.
//! - [`resolve`]: the SNI resolver behind an `ArcSwap`.
//! - [`stream`]: one connection: rustls for the handshake (and TLS 1.2),
//!   then [`records`] (TLS 1.3 record protection of wharf's own, with the
//!   traffic secrets [`secrets`] takes from rustls's key log).
//!
//! ALPN: the terminator selects the first of its protocols (today only
//! `http/1.1`; `h2` can be added with [`TlsTerminator::load_with_alpn`]) that
//! the client offers. A client that offers ALPN but none of ours is not turned
//! away (rustls alone would send `no_application_protocol`): the handshake goes
//! on without ALPN, so that non-HTTP protocols over TLS can still reach a TCP
//! pool; the caller sees `alpn_protocol() == None`.

mod certs;
mod records;
mod resolve;
mod secrets;
mod stream;

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

pub use certs::CertificateFiles;
use resolve::{CertSet, SniResolver};
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
pub use stream::TlsConnection;
use tokio::io::{AsyncRead, AsyncWrite};

/// The ALPN protocol id of HTTP/1.1.
pub const ALPN_HTTP_1_1: &[u8] = b"http/1.1";

/// Why certificates could not be loaded. Every variant names the file(s) and
/// its `Display` is a plain sentence.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate chain file is unusable.
    #[error("certificate file {}: {reason}", .path.display())]
    Certificate { path: PathBuf, reason: String },
    /// The private key file is unusable.
    #[error("private key file {}: {reason}", .path.display())]
    Key { path: PathBuf, reason: String },
    /// Both files are fine but the key is not the certificate's.
    #[error(
        "private key file {}: it does not belong to the certificate in {}",
        .key.display(),
        .cert.display()
    )]
    Mismatch { cert: PathBuf, key: PathBuf },
    /// `load` was given no certificate at all.
    #[error("TLS needs at least one certificate, and none is configured")]
    NoCertificates,
    /// rustls refused the configuration (not expected with the aws-lc-rs provider).
    #[error("the TLS configuration is not usable: {0}")]
    Config(String),
    /// `self_signed` failed.
    #[error("a self-signed certificate could not be made: {0}")]
    SelfSigned(String),
}

/// TLS termination for one listener; `Send + Sync`, shared (e.g. in an `Arc`)
/// by all its connections.
pub struct TlsTerminator {
    files: Vec<CertificateFiles>,
    provider: Arc<CryptoProvider>,
    resolver: Arc<SniResolver>,
    alpn: Vec<Vec<u8>>,
    /// Selects an ALPN protocol.
    with_alpn: Arc<ServerConfig>,
    /// For clients that offer ALPN but none of ours.
    without_alpn: Arc<ServerConfig>,
    /// Serializes reloads so that an older read never overwrites a newer one.
    reload_lock: Mutex<()>,
}

impl fmt::Debug for TlsTerminator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsTerminator")
            .field("files", &self.files)
            .field("names", &self.names())
            .finish_non_exhaustive()
    }
}

/// The crypto of TLS listeners: aws-lc-rs (RSA-2048 signatures twice as fast
/// as ring's here: 4,478 against 2,275 per second on one core), with the
/// AES-128-GCM suites preferred over the client's order. Their SHA-256 runs
/// on the CPU's SHA extensions, while SHA-384 (AES-256-GCM's key schedule
/// and transcript) has no hardware path on AMD: a tenth of an RSA handshake.
/// Browsers list AES-128-GCM first anyway; go's crypto/tls prefers it too.
pub fn crypto_provider() -> CryptoProvider {
    use rustls::CipherSuite::{
        TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
        TLS13_AES_128_GCM_SHA256,
    };
    let mut provider = rustls::crypto::aws_lc_rs::default_provider();
    // Stable: the provider's order stays among the others.
    provider.cipher_suites.sort_by_key(|suite| {
        !matches!(
            suite.suite(),
            TLS13_AES_128_GCM_SHA256
                | TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
                | TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        )
    });
    provider
}

impl TlsTerminator {
    /// Reads and checks every certificate and key (ALPN `http/1.1`). The first
    /// certificate is the default for clients without SNI or with an unknown
    /// name.
    pub fn load(files: &[CertificateFiles]) -> Result<TlsTerminator, TlsError> {
        Self::load_with_alpn(files, &[ALPN_HTTP_1_1])
    }

    /// Like [`load`](Self::load) with the ALPN protocols to offer, in order of
    /// preference (e.g. `[b"h2", b"http/1.1"]` once HTTP/2 is served).
    pub fn load_with_alpn(
        files: &[CertificateFiles],
        alpn: &[&[u8]],
    ) -> Result<TlsTerminator, TlsError> {
        let provider = Arc::new(crypto_provider());
        let set = read_all(files, &provider)?;
        let resolver = Arc::new(SniResolver::new(set));
        let alpn: Vec<Vec<u8>> = alpn.iter().map(|p| p.to_vec()).collect();
        let mut config = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(|e| TlsError::Config(e.to_string()))?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        config.alpn_protocols = alpn.clone();
        config.ignore_client_order = true;
        stream::allow_hand_over(&mut config);
        // Shares the session cache (an Arc) with `config`.
        let mut without_alpn = config.clone();
        without_alpn.alpn_protocols.clear();
        Ok(TlsTerminator {
            files: files.to_vec(),
            provider,
            resolver,
            alpn,
            with_alpn: Arc::new(config),
            without_alpn: Arc::new(without_alpn),
            reload_lock: Mutex::new(()),
        })
    }

    /// Re-reads every file. On success new handshakes use the new certificates
    /// (connections already open are untouched); on any error the certificates
    /// in use stay and the error is returned for the caller to log. Reads files
    /// synchronously: call it from `spawn_blocking` if that matters.
    pub fn reload(&self) -> Result<(), TlsError> {
        let _serial = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let set = read_all(&self.files, &self.provider)?;
        self.resolver.replace(set);
        Ok(())
    }

    /// Runs the server side of a TLS handshake on `stream` (a `TcpStream`, or
    /// a stream that has already had a PROXY header read from it). The caller
    /// bounds it with a timeout.
    pub async fn accept<IO>(&self, stream: IO) -> io::Result<TlsConnection<IO>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        TlsConnection::accept(stream, |hello| {
            let ours_offered = match hello.alpn() {
                Some(mut offered) => offered.any(|p| self.alpn.iter().any(|ours| ours == p)),
                None => true,
            };
            if ours_offered {
                self.with_alpn.clone()
            } else {
                self.without_alpn.clone()
            }
        })
        .await
    }

    /// The names of each certificate, in configured order: subjectAltName DNS
    /// names (lowercase) and IP addresses, or the common name without a SAN.
    pub fn names(&self) -> Vec<Vec<String>> {
        self.resolver.names()
    }

    /// The files this terminator reads.
    pub fn files(&self) -> &[CertificateFiles] {
        &self.files
    }
}

fn read_all(files: &[CertificateFiles], provider: &CryptoProvider) -> Result<CertSet, TlsError> {
    if files.is_empty() {
        return Err(TlsError::NoCertificates);
    }
    let certs = files
        .iter()
        .map(|f| certs::load(f, provider))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(CertSet::new(certs))
}

/// A throwaway self-signed certificate and its key, both PEM, for `names`
/// (DNS names and/or IP addresses such as `"localhost"`, `"127.0.0.1"`), for
/// `wharf demo` and tests. ECDSA P-256; valid from 1975 to 4096.
pub fn self_signed(names: &[&str]) -> Result<(String, String), TlsError> {
    let err = |e: rcgen::Error| TlsError::SelfSigned(e.to_string());
    let sans: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = rcgen::CertificateParams::new(sans).map_err(err)?;
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        names.first().copied().unwrap_or("wharf"),
    );
    let key = rcgen::KeyPair::generate().map_err(err)?;
    let cert = params.self_signed(&key).map_err(err)?;
    Ok((cert.pem(), key.serialize_pem()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn terminator_is_send_and_sync() {
        assert_send_sync::<TlsTerminator>();
    }

    #[test]
    fn no_certificates_is_an_error() {
        let e = TlsTerminator::load(&[]).unwrap_err();
        assert!(matches!(e, TlsError::NoCertificates), "{e}");
    }

    #[test]
    fn self_signed_names_round_trip() {
        let (cert, key) = self_signed(&["localhost", "127.0.0.1"]).unwrap();
        assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----"));
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(certs::names_of(&der).unwrap(), ["localhost", "127.0.0.1"]);
    }
}
