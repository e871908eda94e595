//! Reading one configured certificate: the PEM chain, the PEM private key, the
//! check that the key belongs to the certificate, and the names the certificate
//! is for.
//!
//! Every failure becomes a [`TlsError`] that names the file and says what is
//! wrong with it in a plain sentence; nothing here panics on a bad file.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::{self, SectionKind};
use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::TlsError;

/// One certificate as configured: a PEM file with the certificate chain (the
/// server's certificate first, then any intermediates) and a PEM file with its
/// private key (PKCS#8, PKCS#1 RSA or SEC1 EC). Both may be the same file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl CertificateFiles {
    pub fn new(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> CertificateFiles {
        CertificateFiles {
            cert: cert.into(),
            key: key.into(),
        }
    }
}

/// A certificate read from its files, ready for handshakes.
#[derive(Debug)]
pub(crate) struct LoadedCert {
    pub(crate) key: Arc<CertifiedKey>,
    /// DNS names (lowercase) and IP addresses from the subjectAltName
    /// extension, or the subject's common name when there is no SAN.
    pub(crate) names: Vec<String>,
}

/// Reads and checks one certificate and its key.
pub(crate) fn load(
    files: &CertificateFiles,
    provider: &CryptoProvider,
) -> Result<LoadedCert, TlsError> {
    let chain = read_chain(&files.cert)?;
    let names = names_of(&chain[0]).map_err(|reason| TlsError::Certificate {
        path: files.cert.clone(),
        reason,
    })?;
    let key_der = read_key(&files.key)?;
    let signing_key = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|e| TlsError::Key {
            path: files.key.clone(),
            reason: format!("the private key cannot be used for TLS ({e})"),
        })?;
    let key = CertifiedKey::new(chain, signing_key);
    match key.keys_match() {
        Ok(()) => {}
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch)) => {
            return Err(TlsError::Mismatch {
                cert: files.cert.clone(),
                key: files.key.clone(),
            });
        }
        // The key type cannot report its public key: nothing to compare.
        Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
        Err(e) => {
            return Err(TlsError::Certificate {
                path: files.cert.clone(),
                reason: format!("the certificate cannot be used for TLS ({e})"),
            });
        }
    }
    Ok(LoadedCert {
        key: Arc::new(key),
        names,
    })
}

/// Every PEM section of `bytes`, in order; sections of kinds rustls does not
/// know (e.g. `EC PARAMETERS`) are skipped.
fn sections(bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, String> {
    let mut reader = bytes;
    let mut out = Vec::new();
    loop {
        match pem::from_buf(&mut reader) {
            Ok(Some(section)) => out.push(section),
            Ok(None) => return Ok(out),
            Err(e) => return Err(format!("it is not valid PEM ({e})")),
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("it cannot be read ({e})"))?;
    if bytes.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("it is empty".into());
    }
    Ok(bytes)
}

fn kind_name(kind: SectionKind) -> &'static str {
    match kind {
        SectionKind::Certificate => "a certificate",
        SectionKind::PublicKey => "a public key",
        SectionKind::RsaPrivateKey | SectionKind::PrivateKey | SectionKind::EcPrivateKey => {
            "a private key"
        }
        SectionKind::Crl => "a certificate revocation list",
        SectionKind::Csr => "a certificate signing request",
        SectionKind::EchConfigList => "an ECH config list",
        _ => "an unexpected PEM block",
    }
}

fn is_private_key(kind: SectionKind) -> bool {
    matches!(
        kind,
        SectionKind::RsaPrivateKey | SectionKind::PrivateKey | SectionKind::EcPrivateKey
    )
}

fn describe(found: &[(SectionKind, Vec<u8>)]) -> String {
    let mut kinds: Vec<&str> = found.iter().map(|(k, _)| kind_name(*k)).collect();
    kinds.dedup();
    let mut s = String::new();
    for (i, k) in kinds.iter().enumerate() {
        if i > 0 {
            s.push_str(if i + 1 == kinds.len() { " and " } else { ", " });
        }
        let _ = write!(s, "{k}");
    }
    s
}

fn read_chain(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |reason: String| TlsError::Certificate {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = read_file(path).map_err(err)?;
    let found = sections(&bytes).map_err(err)?;
    let chain: Vec<CertificateDer<'static>> = found
        .iter()
        .filter(|(k, _)| *k == SectionKind::Certificate)
        .map(|(_, der)| CertificateDer::from(der.clone()))
        .collect();
    if chain.is_empty() {
        return Err(err(if found.is_empty() {
            "it holds no PEM certificate (no -----BEGIN CERTIFICATE----- block)".into()
        } else if found.iter().all(|(k, _)| is_private_key(*k)) {
            "it holds a private key but no certificate (are the cert and key files swapped?)".into()
        } else {
            format!("it holds {} but no certificate", describe(&found))
        }));
    }
    for (i, der) in chain.iter().enumerate() {
        if let Err(e) = X509Certificate::from_der(der) {
            return Err(err(if i == 0 {
                format!("its certificate cannot be parsed ({e})")
            } else {
                format!(
                    "certificate number {} in the chain cannot be parsed ({e})",
                    i + 1
                )
            }));
        }
    }
    Ok(chain)
}

fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let err = |reason: String| TlsError::Key {
        path: path.to_path_buf(),
        reason,
    };
    let bytes = read_file(path).map_err(err)?;
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || text.contains("Proc-Type: 4,ENCRYPTED")
    {
        return Err(err(
            "its private key is encrypted with a passphrase; wharf needs it unencrypted".into(),
        ));
    }
    let found = sections(&bytes).map_err(err)?;
    let mut keys: Vec<PrivateKeyDer<'static>> = Vec::new();
    for (kind, der) in &found {
        match kind {
            SectionKind::PrivateKey => keys.push(PrivatePkcs8KeyDer::from(der.clone()).into()),
            SectionKind::RsaPrivateKey => keys.push(PrivatePkcs1KeyDer::from(der.clone()).into()),
            SectionKind::EcPrivateKey => keys.push(PrivateSec1KeyDer::from(der.clone()).into()),
            _ => {}
        }
    }
    match keys.len() {
        1 => Ok(keys.pop().expect("one key")),
        0 if found.is_empty() => Err(err(
            "it holds no PEM private key (no -----BEGIN PRIVATE KEY----- block)".into(),
        )),
        0 if found.iter().any(|(k, _)| *k == SectionKind::Certificate) => Err(err(
            "it holds a certificate but no private key (are the cert and key files swapped?)"
                .into(),
        )),
        0 => Err(err(format!(
            "it holds {} but no private key",
            describe(&found)
        ))),
        n => Err(err(format!(
            "it holds {n} private keys; it should hold exactly one"
        ))),
    }
}

/// The names a certificate is for: subjectAltName DNS names (lowercased) and
/// IP addresses, or the subject's common names when there is no SAN.
pub(crate) fn names_of(der: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|e| format!("its certificate cannot be parsed ({e})"))?;
    let san = cert
        .subject_alternative_name()
        .map_err(|e| format!("its subjectAltName extension cannot be parsed ({e})"))?;
    let mut names = Vec::new();
    match san {
        Some(san) => {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => names.push(dns.to_ascii_lowercase()),
                    GeneralName::IPAddress(bytes) => {
                        if let Some(ip) = ip_from_bytes(bytes) {
                            names.push(ip.to_string());
                        }
                    }
                    _ => {}
                }
            }
        }
        None => {
            for cn in cert.subject().iter_common_name() {
                if let Ok(cn) = cn.as_str() {
                    names.push(cn.to_ascii_lowercase());
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    names.retain(|n| seen.insert(n.clone()));
    Ok(names)
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(IpAddr::from),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> CryptoProvider {
        rustls::crypto::aws_lc_rs::default_provider()
    }

    struct Dir(PathBuf);
    impl Dir {
        fn new(tag: &str) -> Dir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "wharf-tls-unit-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
        fn write(&self, name: &str, body: &str) -> PathBuf {
            let p = self.0.join(name);
            std::fs::write(&p, body).unwrap();
            p
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn pair(names: &[&str]) -> (String, String) {
        super::super::self_signed(names).unwrap()
    }

    fn load_err(cert: &str, key: &str) -> String {
        let d = Dir::new("err");
        let files = CertificateFiles::new(d.write("c.pem", cert), d.write("k.pem", key));
        load(&files, &provider()).unwrap_err().to_string()
    }

    #[test]
    fn names_come_from_san_dns_and_ip() {
        let (cert, key) = pair(&["A.Test", "*.b.test", "127.0.0.1", "::1"]);
        let d = Dir::new("names");
        let files = CertificateFiles::new(d.write("c.pem", &cert), d.write("k.pem", &key));
        let loaded = load(&files, &provider()).unwrap();
        assert_eq!(loaded.names, ["a.test", "*.b.test", "127.0.0.1", "::1"]);
    }

    #[test]
    fn common_name_is_used_when_there_is_no_san() {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Legacy.Example");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let d = Dir::new("cn");
        let files = CertificateFiles::new(
            d.write("c.pem", &cert.pem()),
            d.write("k.pem", &key.serialize_pem()),
        );
        assert_eq!(load(&files, &provider()).unwrap().names, ["legacy.example"]);
    }

    #[test]
    fn one_file_may_hold_both_cert_and_key() {
        let (cert, key) = pair(&["both.test"]);
        let d = Dir::new("both");
        let p = d.write("both.pem", &format!("{cert}{key}"));
        let loaded = load(&CertificateFiles::new(&p, &p), &provider()).unwrap();
        assert_eq!(loaded.names, ["both.test"]);
    }

    #[test]
    fn key_for_another_certificate_is_refused() {
        let (cert, _) = pair(&["a.test"]);
        let (_, other_key) = pair(&["b.test"]);
        let e = load_err(&cert, &other_key);
        assert!(e.contains("does not belong to the certificate"), "{e}");
        assert!(e.contains("k.pem") && e.contains("c.pem"), "{e}");
    }

    #[test]
    fn empty_files_are_refused() {
        let (cert, key) = pair(&["a.test"]);
        let e = load_err("", &key);
        assert!(e.contains("c.pem") && e.contains("it is empty"), "{e}");
        let e = load_err(&cert, "\n\n");
        assert!(e.contains("k.pem") && e.contains("it is empty"), "{e}");
    }

    #[test]
    fn swapped_files_are_explained() {
        let (cert, key) = pair(&["a.test"]);
        let e = load_err(&key, &cert);
        assert!(e.contains("c.pem") && e.contains("swapped"), "{e}");
        // With the cert file right, the key file holding a certificate is named.
        let e = load_err(&cert, &cert);
        assert!(e.contains("k.pem") && e.contains("swapped"), "{e}");
    }

    #[test]
    fn garbage_is_refused() {
        let (cert, key) = pair(&["a.test"]);
        let e = load_err("hello, I am not a certificate\n", &key);
        assert!(
            e.contains("c.pem") && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = load_err(
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
            &key,
        );
        assert!(e.contains("c.pem") && e.contains("cannot be parsed"), "{e}");
        let e = load_err(
            &cert,
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        );
        assert!(e.contains("k.pem") && e.contains("cannot be used"), "{e}");
        let e = load_err(&cert[..cert.len() / 2], &key);
        assert!(e.contains("c.pem") && e.contains("not valid PEM"), "{e}");
        let e = load_err(
            &cert,
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n",
        );
        assert!(
            e.contains("k.pem") && e.contains("signing request but no private key"),
            "{e}"
        );
    }

    #[test]
    fn two_keys_are_ambiguous() {
        let (cert, key) = pair(&["a.test"]);
        let e = load_err(&cert, &format!("{key}{key}"));
        assert!(e.contains("k.pem") && e.contains("2 private keys"), "{e}");
    }

    #[test]
    fn missing_file_is_named() {
        let d = Dir::new("missing");
        let (_, key) = pair(&["a.test"]);
        let files = CertificateFiles::new(d.0.join("nope.pem"), d.write("k.pem", &key));
        let e = load(&files, &provider()).unwrap_err().to_string();
        assert!(
            e.contains("nope.pem") && e.contains("cannot be read"),
            "{e}"
        );
    }
}
