//! TLS termination through the public API: certificates chosen by SNI, the
//! default certificate, TLS 1.2 and 1.3, ALPN, reload, and load errors.
//! Every handshake runs over real TCP on 127.0.0.1 with a rustls client.

mod support;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ProtocolVersion, RootCertStore};
use support::accept_any::{AcceptAny, provider};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use wharf::tls::{CertificateFiles, TlsError, TlsTerminator, self_signed};

const LIMIT: Duration = Duration::from_secs(10);

/// A temp dir removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new() -> Dir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "wharf-tls-certs-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&p).unwrap();
        Dir(p)
    }

    /// Writes `pair` as `<stem>.pem` and `<stem>.key`.
    fn write(&self, stem: &str, pair: &(String, String)) -> CertificateFiles {
        let files = CertificateFiles::new(
            self.0.join(format!("{stem}.pem")),
            self.0.join(format!("{stem}.key")),
        );
        std::fs::write(&files.cert, &pair.0).unwrap();
        std::fs::write(&files.key, &pair.1).unwrap();
        files
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

/// What the server saw of one handshake.
#[derive(Debug)]
struct Accepted {
    alpn: Option<Vec<u8>>,
}

/// Serves `term` on 127.0.0.1: each connection is handshaken, reported, then
/// echoed until EOF.
async fn serve(
    term: Arc<TlsTerminator>,
) -> (
    SocketAddr,
    mpsc::UnboundedReceiver<std::io::Result<Accepted>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let term = term.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match term.accept(tcp).await {
                    Ok(mut tls) => {
                        let alpn = tls.alpn_protocol().map(|p| p.to_vec());
                        let _ = tx.send(Ok(Accepted { alpn }));
                        let mut buf = [0u8; 1024];
                        loop {
                            match tls.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => {
                                    if tls.write_all(&buf[..n]).await.is_err() {
                                        return;
                                    }
                                    let _ = tls.flush().await;
                                }
                            }
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                    }
                }
            });
        }
    });
    (addr, rx)
}

struct Client {
    trust: Vec<String>,
    versions: Vec<&'static rustls::SupportedProtocolVersion>,
    alpn: Vec<Vec<u8>>,
    accept_any: bool,
}

impl Client {
    fn trusting(certs: &[&str]) -> Client {
        Client {
            trust: certs.iter().map(|c| c.to_string()).collect(),
            versions: vec![&rustls::version::TLS13, &rustls::version::TLS12],
            alpn: Vec::new(),
            accept_any: false,
        }
    }

    fn config(&self) -> Arc<ClientConfig> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&self.versions)
            .unwrap();
        let mut config = if self.accept_any {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
                .with_no_client_auth()
        } else {
            let mut roots = RootCertStore::empty();
            for pem in &self.trust {
                roots.add(der(pem)).unwrap();
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        config.alpn_protocols = self.alpn.clone();
        Arc::new(config)
    }

    async fn connect(&self, addr: SocketAddr, name: &str) -> std::io::Result<TlsStream<TcpStream>> {
        let server_name = match name.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(name.to_string()).unwrap(),
        };
        let tcp = TcpStream::connect(addr).await?;
        timeout(
            LIMIT,
            TlsConnector::from(self.config()).connect(server_name, tcp),
        )
        .await
        .expect("handshake timed out")
    }

    /// The DER of the certificate the server presented for `name`.
    async fn cert_for(&self, addr: SocketAddr, name: &str) -> CertificateDer<'static> {
        let tls = self.connect(addr, name).await.unwrap();
        presented(&tls)
    }
}

fn presented(tls: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    tls.get_ref().1.peer_certificates().expect("a certificate")[0]
        .clone()
        .into_owned()
}

/// Two certificates, for a.test and b.test (+ *.b.test), both also valid for
/// 127.0.0.1 so that a client connecting by IP accepts whichever is the default.
struct Setup {
    dir: Dir,
    a: (String, String),
    b: (String, String),
    a_files: CertificateFiles,
    b_files: CertificateFiles,
}

fn setup() -> Setup {
    let dir = Dir::new();
    let a = self_signed(&["a.test", "127.0.0.1"]).unwrap();
    let b = self_signed(&["b.test", "*.b.test", "127.0.0.1"]).unwrap();
    let a_files = dir.write("a", &a);
    let b_files = dir.write("b", &b);
    Setup {
        dir,
        a,
        b,
        a_files,
        b_files,
    }
}

async fn echo(tls: &mut TlsStream<TcpStream>, msg: &[u8]) {
    tls.write_all(msg).await.unwrap();
    tls.flush().await.unwrap();
    let mut back = vec![0u8; msg.len()];
    timeout(LIMIT, tls.read_exact(&mut back))
        .await
        .expect("echo timed out")
        .unwrap();
    assert_eq!(back, msg);
}

#[tokio::test]
async fn sni_picks_the_certificate_for_the_name() {
    let s = setup();
    let term = Arc::new(TlsTerminator::load(&[s.a_files.clone(), s.b_files.clone()]).unwrap());
    assert_eq!(
        term.names(),
        vec![
            vec!["a.test".to_string(), "127.0.0.1".into()],
            vec!["b.test".to_string(), "*.b.test".into(), "127.0.0.1".into()],
        ]
    );
    let (addr, _rx) = serve(term).await;
    let client = Client::trusting(&[&s.a.0, &s.b.0]);
    assert_eq!(client.cert_for(addr, "a.test").await, der(&s.a.0));
    assert_eq!(client.cert_for(addr, "b.test").await, der(&s.b.0));
    assert_eq!(client.cert_for(addr, "A.TEST").await, der(&s.a.0));
    assert_eq!(client.cert_for(addr, "www.b.test").await, der(&s.b.0));
    let mut tls = client.connect(addr, "b.test").await.unwrap();
    echo(&mut tls, b"hello over tls").await;
}

#[tokio::test]
async fn without_sni_or_with_an_unknown_name_the_first_certificate_is_served() {
    let s = setup();
    let client = Client::trusting(&[&s.a.0, &s.b.0]);
    let mut any = Client::trusting(&[]);
    any.accept_any = true;
    for (files, first) in [
        ([s.a_files.clone(), s.b_files.clone()], &s.a.0),
        ([s.b_files.clone(), s.a_files.clone()], &s.b.0),
    ] {
        let term = Arc::new(TlsTerminator::load(&files).unwrap());
        let (addr, _rx) = serve(term).await;
        // Connecting by IP address: rustls sends no SNI.
        assert_eq!(client.cert_for(addr, "127.0.0.1").await, der(first));
        assert_eq!(any.cert_for(addr, "c.test").await, der(first));
        assert_eq!(any.cert_for(addr, "x.y.b.test").await, der(first));
    }
}

#[tokio::test]
async fn tls12_only_and_tls13_only_clients_both_connect() {
    let s = setup();
    let term = Arc::new(TlsTerminator::load(&[s.a_files.clone(), s.b_files.clone()]).unwrap());
    let (addr, _rx) = serve(term).await;
    for (version, expect) in [
        (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
        (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
    ] {
        let mut client = Client::trusting(&[&s.a.0, &s.b.0]);
        client.versions = vec![version];
        let mut tls = client.connect(addr, "b.test").await.unwrap();
        assert_eq!(tls.get_ref().1.protocol_version(), Some(expect));
        assert_eq!(presented(&tls), der(&s.b.0));
        echo(&mut tls, b"ping").await;
    }
}

#[tokio::test]
async fn alpn_http11_is_negotiated_when_offered() {
    let s = setup();
    let term = Arc::new(TlsTerminator::load(std::slice::from_ref(&s.a_files)).unwrap());
    let (addr, mut rx) = serve(term).await;
    type Case = (&'static [&'static [u8]], Option<&'static [u8]>);
    let cases: [Case; 4] = [
        (&[b"http/1.1"], Some(b"http/1.1")),
        (&[b"h2", b"http/1.1"], Some(b"http/1.1")),
        // Offered but none of ours: the handshake goes on without ALPN.
        (&[b"h2"], None),
        (&[], None),
    ];
    for (offer, expect) in cases {
        let mut client = Client::trusting(&[&s.a.0]);
        client.alpn = offer.iter().map(|p| p.to_vec()).collect();
        let mut tls = client.connect(addr, "a.test").await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), expect, "offer {offer:?}");
        let seen = timeout(LIMIT, rx.recv()).await.unwrap().unwrap().unwrap();
        assert_eq!(seen.alpn.as_deref(), expect, "server side, offer {offer:?}");
        echo(&mut tls, b"x").await;
    }
}

#[tokio::test]
async fn terminator_with_h2_prefers_it() {
    let s = setup();
    let term =
        TlsTerminator::load_with_alpn(std::slice::from_ref(&s.a_files), &[b"h2", b"http/1.1"])
            .unwrap();
    let (addr, _rx) = serve(Arc::new(term)).await;
    let mut client = Client::trusting(&[&s.a.0]);
    client.alpn = vec![b"http/1.1".to_vec(), b"h2".to_vec()];
    let tls = client.connect(addr, "a.test").await.unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
}

#[tokio::test]
async fn reload_serves_new_certificates_and_keeps_open_connections() {
    let s = setup();
    let term = Arc::new(TlsTerminator::load(&[s.a_files.clone(), s.b_files.clone()]).unwrap());
    let (addr, _rx) = serve(term.clone()).await;
    let a2 = self_signed(&["a.test", "127.0.0.1"]).unwrap();
    assert_ne!(der(&a2.0), der(&s.a.0));
    let client = Client::trusting(&[&s.a.0, &a2.0, &s.b.0]);

    let mut before = client.connect(addr, "a.test").await.unwrap();
    assert_eq!(presented(&before), der(&s.a.0));
    echo(&mut before, b"before reload").await;

    s.dir.write("a", &a2);
    term.reload().unwrap();

    assert_eq!(client.cert_for(addr, "a.test").await, der(&a2.0));
    assert_eq!(client.cert_for(addr, "127.0.0.1").await, der(&a2.0));
    assert_eq!(client.cert_for(addr, "b.test").await, der(&s.b.0));
    // The connection opened before the reload still works both ways.
    echo(&mut before, b"after reload").await;
    echo(&mut before, &vec![7u8; 64 * 1024]).await;
}

#[tokio::test]
async fn failed_reload_keeps_the_certificates_in_use() {
    let s = setup();
    let term = Arc::new(TlsTerminator::load(&[s.a_files.clone(), s.b_files.clone()]).unwrap());
    let (addr, _rx) = serve(term.clone()).await;
    let a2 = self_signed(&["a.test", "127.0.0.1"]).unwrap();
    let client = Client::trusting(&[&s.a.0, &a2.0, &s.b.0]);

    // Half-way through a rotation: the new certificate with the old key.
    std::fs::write(&s.a_files.cert, &a2.0).unwrap();
    let e = term.reload().unwrap_err();
    assert!(matches!(e, TlsError::Mismatch { .. }), "{e}");
    assert!(
        e.to_string().contains(&*s.a_files.key.to_string_lossy()),
        "{e}"
    );
    assert_eq!(client.cert_for(addr, "a.test").await, der(&s.a.0));

    // A broken key file.
    std::fs::write(&s.a_files.key, "garbage").unwrap();
    let e = term.reload().unwrap_err();
    assert!(
        e.to_string().contains(&*s.a_files.key.to_string_lossy()),
        "{e}"
    );
    assert_eq!(client.cert_for(addr, "a.test").await, der(&s.a.0));

    // A missing file for the other certificate (a's files whole again).
    s.dir.write("a", &s.a);
    std::fs::remove_file(&s.b_files.cert).unwrap();
    let e = term.reload().unwrap_err();
    assert!(
        e.to_string().contains(&*s.b_files.cert.to_string_lossy()),
        "{e}"
    );
    assert_eq!(client.cert_for(addr, "b.test").await, der(&s.b.0));
    assert_eq!(client.cert_for(addr, "a.test").await, der(&s.a.0));

    // Once the files are whole again the reload goes through.
    s.dir.write("a", &a2);
    s.dir.write("b", &s.b);
    term.reload().unwrap();
    assert_eq!(client.cert_for(addr, "a.test").await, der(&a2.0));
}

#[test]
fn load_errors_name_the_file() {
    let s = setup();
    let bad = s.dir.write("bad", &(String::new(), s.b.1.clone()));
    let e = TlsTerminator::load(&[s.a_files.clone(), bad.clone()]).unwrap_err();
    let msg = e.to_string();
    assert!(msg.contains(&*bad.cert.to_string_lossy()), "{msg}");
    assert!(msg.contains("empty"), "{msg}");

    let wrong_key = CertificateFiles::new(&s.a_files.cert, &s.b_files.key);
    let msg = TlsTerminator::load(&[wrong_key]).unwrap_err().to_string();
    assert!(msg.contains(&*s.b_files.key.to_string_lossy()), "{msg}");
    assert!(msg.contains(&*s.a_files.cert.to_string_lossy()), "{msg}");
    assert!(msg.contains("does not belong"), "{msg}");

    let swapped = CertificateFiles::new(&s.a_files.key, &s.a_files.cert);
    let msg = TlsTerminator::load(&[swapped]).unwrap_err().to_string();
    assert!(msg.contains(&*s.a_files.key.to_string_lossy()), "{msg}");
    assert!(msg.contains("swapped"), "{msg}");
}

#[tokio::test]
async fn a_client_that_is_not_tls_gets_an_error_not_a_panic() {
    let s = setup();
    let term = Arc::new(TlsTerminator::load(std::slice::from_ref(&s.a_files)).unwrap());
    let (addr, mut rx) = serve(term).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n")
        .await
        .unwrap();
    let seen = timeout(LIMIT, rx.recv()).await.unwrap().unwrap();
    assert!(seen.is_err(), "{seen:?}");
    // The terminator still serves TLS afterwards.
    let client = Client::trusting(&[&s.a.0]);
    assert_eq!(client.cert_for(addr, "a.test").await, der(&s.a.0));
}

/// wharf's TLS moves its own bytes (src/tls/stream.rs): records split over
/// reads, records larger than the reader's buffer (the echo server reads
/// 1 KiB at a time), and a key update from the client all come through
/// whole, in TLS 1.3 and 1.2.
#[tokio::test]
async fn a_large_transfer_and_a_key_update_come_through_whole() {
    let s = setup();
    let term = Arc::new(TlsTerminator::load(std::slice::from_ref(&s.a_files)).unwrap());
    let (addr, _rx) = serve(term).await;
    let data: Vec<u8> = (0..1usize << 20)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    for version in [&rustls::version::TLS13, &rustls::version::TLS12] {
        let mut client = Client::trusting(&[&s.a.0]);
        client.versions = vec![version];
        let mut tls = client.connect(addr, "a.test").await.unwrap();
        let (first, second) = data.split_at(data.len() / 2);
        tls = echo_concurrently(tls, first).await;
        if version == &rustls::version::TLS13 {
            tls.get_mut().1.refresh_traffic_keys().unwrap();
        }
        echo_concurrently(tls, second).await;
    }
}

/// Writes `data` in odd-sized chunks while reading its echo back.
async fn echo_concurrently(tls: TlsStream<TcpStream>, data: &[u8]) -> TlsStream<TcpStream> {
    let (mut read, mut write) = tokio::io::split(tls);
    let writing = async {
        for chunk in data.chunks(7_777) {
            write.write_all(chunk).await.unwrap();
        }
        write.flush().await.unwrap();
    };
    let reading = async {
        let mut back = vec![0u8; data.len()];
        read.read_exact(&mut back).await.unwrap();
        back
    };
    let ((), back) = timeout(LIMIT, async { tokio::join!(writing, reading) })
        .await
        .expect("echo timed out");
    assert!(back == data, "the echo differs from what was sent");
    read.unsplit(write)
}

/// A record that does not decrypt gets the client a `bad_record_mac` alert,
/// and the server's connection ends.
#[tokio::test]
async fn a_record_that_does_not_decrypt_gets_an_alert() {
    let s = setup();
    let term = Arc::new(TlsTerminator::load(std::slice::from_ref(&s.a_files)).unwrap());
    let (addr, _rx) = serve(term).await;
    let mut tls = Client::trusting(&[&s.a.0])
        .connect(addr, "a.test")
        .await
        .unwrap();
    echo(&mut tls, b"before").await;
    let mut forged = vec![0x17, 0x03, 0x03, 0x00, 0x20];
    forged.extend_from_slice(&[0x5a; 0x20]);
    tls.get_mut().0.write_all(&forged).await.unwrap();
    let mut buf = [0u8; 16];
    let error = timeout(LIMIT, tls.read(&mut buf))
        .await
        .expect("no answer to a forged record")
        .expect_err("a forged record must not be read as data");
    assert!(
        error.to_string().contains("BadRecordMac"),
        "expected a bad_record_mac alert, got: {error}"
    );
}
