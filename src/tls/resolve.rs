//! Choosing the certificate for a handshake from the client's SNI.
//!
//! The rules, in order:
//! 1. a certificate with the exact name (case-insensitive, a trailing dot ignored);
//! 2. a certificate with a wildcard name `*.example.com`, which stands for
//!    exactly one label (`a.example.com`, not `example.com` nor `a.b.example.com`);
//! 3. the first configured certificate (also when the client sends no SNI,
//!    e.g. when it connects by IP address).
//!
//! When several certificates have the same name the first configured wins.
//! The set of certificates sits behind an [`ArcSwap`] so that a reload replaces
//! it atomically: a handshake sees either the old set or the new one, never a mix.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::certs::LoadedCert;

/// The certificates of one listener and their name index.
#[derive(Debug)]
pub(crate) struct CertSet {
    certs: Vec<LoadedCert>,
    exact: HashMap<String, usize>,
    /// `*.example.com` indexed as `example.com`.
    wildcard: HashMap<String, usize>,
}

impl CertSet {
    /// `certs` must not be empty: the first is the default.
    pub(crate) fn new(certs: Vec<LoadedCert>) -> CertSet {
        debug_assert!(!certs.is_empty());
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        for (i, cert) in certs.iter().enumerate() {
            for name in &cert.names {
                if name.parse::<IpAddr>().is_ok() {
                    continue; // SNI never carries an address
                }
                let name = normalize(name);
                match name.strip_prefix("*.") {
                    Some(parent) if !parent.is_empty() && !parent.contains('*') => {
                        wildcard.entry(parent.to_string()).or_insert(i);
                    }
                    Some(_) => {}
                    None if name.contains('*') => {} // partial wildcards are not honoured
                    None => {
                        exact.entry(name).or_insert(i);
                    }
                }
            }
        }
        CertSet {
            certs,
            exact,
            wildcard,
        }
    }

    /// The index of the certificate for `sni`.
    pub(crate) fn select(&self, sni: Option<&str>) -> usize {
        let Some(sni) = sni else { return 0 };
        let sni = normalize(sni);
        if let Some(&i) = self.exact.get(&sni) {
            return i;
        }
        sni.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn key(&self, index: usize) -> &Arc<CertifiedKey> {
        &self.certs[index].key
    }

    pub(crate) fn names(&self) -> Vec<Vec<String>> {
        self.certs.iter().map(|c| c.names.clone()).collect()
    }
}

fn normalize(name: &str) -> String {
    name.strip_suffix('.').unwrap_or(name).to_ascii_lowercase()
}

/// The rustls certificate resolver of a listener; [`SniResolver::replace`]
/// swaps in a freshly loaded set.
#[derive(Debug)]
pub(crate) struct SniResolver {
    current: ArcSwap<CertSet>,
}

impl SniResolver {
    pub(crate) fn new(set: CertSet) -> SniResolver {
        SniResolver {
            current: ArcSwap::from_pointee(set),
        }
    }

    pub(crate) fn replace(&self, set: CertSet) {
        self.current.store(Arc::new(set));
    }

    pub(crate) fn names(&self) -> Vec<Vec<String>> {
        self.current.load().names()
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let set = self.current.load();
        Some(set.key(set.select(client_hello.server_name())).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A set whose certificates only carry names; the keys are real but
    /// irrelevant to selection.
    fn set(names: &[&[&str]]) -> CertSet {
        let provider = rustls::crypto::aws_lc_rs::default_provider();
        let (cert, key) = crate::tls::self_signed(&["x.test"]).unwrap();
        use rustls_pki_types::pem::PemObject;
        let chain =
            vec![rustls_pki_types::CertificateDer::from_pem_slice(cert.as_bytes()).unwrap()];
        let key = rustls_pki_types::PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
        let signing = provider.key_provider.load_private_key(key).unwrap();
        let certified = Arc::new(CertifiedKey::new(chain, signing));
        CertSet::new(
            names
                .iter()
                .map(|n| LoadedCert {
                    key: certified.clone(),
                    names: n.iter().map(|s| s.to_string()).collect(),
                })
                .collect(),
        )
    }

    #[test]
    fn exact_names_are_case_insensitive() {
        let s = set(&[&["a.test"], &["b.test", "www.b.test"]]);
        assert_eq!(s.select(Some("a.test")), 0);
        assert_eq!(s.select(Some("b.test")), 1);
        assert_eq!(s.select(Some("WWW.B.Test")), 1);
        assert_eq!(s.select(Some("www.b.test.")), 1);
    }

    #[test]
    fn absent_or_unknown_sni_gets_the_first() {
        let s = set(&[&["a.test"], &["b.test"]]);
        assert_eq!(s.select(None), 0);
        assert_eq!(s.select(Some("c.test")), 0);
        let s = set(&[&["b.test"], &["a.test"]]);
        assert_eq!(s.select(None), 0);
        assert_eq!(s.select(Some("a.test")), 1);
    }

    #[test]
    fn wildcard_matches_exactly_one_label() {
        let s = set(&[&["default.test"], &["*.example.com"]]);
        assert_eq!(s.select(Some("a.example.com")), 1);
        assert_eq!(s.select(Some("A.Example.COM")), 1);
        assert_eq!(s.select(Some("example.com")), 0);
        assert_eq!(s.select(Some("a.b.example.com")), 0);
        assert_eq!(s.select(Some("aexample.com")), 0);
    }

    #[test]
    fn exact_beats_wildcard_and_first_configured_wins() {
        let s = set(&[
            &["*.example.com"],
            &["api.example.com"],
            &["api.example.com", "x.test"],
        ]);
        assert_eq!(s.select(Some("api.example.com")), 1);
        assert_eq!(s.select(Some("www.example.com")), 0);
        assert_eq!(s.select(Some("x.test")), 2);
    }

    #[test]
    fn partial_wildcards_and_addresses_match_nothing() {
        let s = set(&[&["default.test"], &["f*.example.com", "127.0.0.1", "*."]]);
        assert_eq!(s.select(Some("foo.example.com")), 0);
        assert_eq!(s.select(Some("127.0.0.1")), 0);
    }
}
