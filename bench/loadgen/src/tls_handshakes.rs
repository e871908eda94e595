//! Full TLS handshakes, no resumption, from many source addresses. After each
//! handshake the client sends close_notify and waits for the server to close,
//! so every counted handshake was completed on the server's side too.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_rustls::TlsConnector;

use crate::client;

#[derive(clap::Args)]
pub struct Args {
    #[arg(long)]
    target: SocketAddr,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 16)]
    conns: usize,
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many handshakes in all.
    #[arg(long, default_value_t = 200_000)]
    max: u64,
    /// Loopback source addresses to spread connections over (127.0.0.2 and up).
    #[arg(long, default_value_t = 100)]
    sources: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    client::check_loopback(args.target)?;
    let connector = client::tls_connector()?;
    let budget = Arc::new(AtomicU64::new(args.max));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = (0..args.conns)
        .map(|n| {
            let (connector, budget, errors) = (connector.clone(), budget.clone(), errors.clone());
            tokio::spawn(async move {
                let mut i = n;
                while Instant::now() < deadline
                    && budget
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| b.checked_sub(1))
                        .is_ok()
                {
                    let from = client::source(i, args.sources);
                    let attempt = handshake(&connector, args.target, from);
                    if !matches!(
                        tokio::time::timeout(Duration::from_secs(5), attempt).await,
                        Ok(Ok(()))
                    ) {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                    i += args.conns;
                }
            })
        })
        .collect();
    for task in tasks {
        task.await?;
    }
    let seconds = started.elapsed().as_secs_f64();
    let errors = errors.load(Ordering::Relaxed);
    let handshakes = args.max - budget.load(Ordering::Relaxed) - errors;
    println!(
        "handshakes={handshakes} seconds={seconds:.3} rate={:.0} errors={errors}",
        handshakes as f64 / seconds
    );
    Ok(())
}

async fn handshake(
    connector: &TlsConnector,
    target: SocketAddr,
    from: Option<std::net::Ipv4Addr>,
) -> anyhow::Result<()> {
    let tcp = client::connect(target, from).await?;
    let mut tls = connector.connect(client::server_name(), tcp).await?;
    tls.get_mut().1.send_close_notify();
    tls.flush().await?;
    // The server closes once it reads close_notify; what it sends before
    // (session tickets) is read and dropped.
    let mut sink = [0u8; 4096];
    loop {
        match tls.read(&mut sink).await {
            Ok(0) => break,
            Ok(_) => continue,
            // A close without close_notify, or a reset: the handshake was done.
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::UnexpectedEof | std::io::ErrorKind::ConnectionReset
                ) =>
            {
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Reset instead of a FIN: no TIME_WAIT left behind on the client side.
    let _ = tls.get_ref().0.set_zero_linger();
    Ok(())
}
