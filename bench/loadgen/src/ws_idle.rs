//! Memory per idle websocket in the proxy: opens `count` websockets in bursts
//! of `batch` handshakes at once from `sources` loopback addresses (clients
//! reconnecting after a deploy), lets them go idle, reads the proxy's RSS,
//! then checks that every websocket still echoes.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::stats::rss_kib;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    ws: client::WsTarget,
    /// Websockets to open (each costs the proxy two file descriptors).
    #[arg(long, default_value_t = 9000)]
    count: usize,
    /// Handshakes in flight at once.
    #[arg(long, default_value_t = 200)]
    batch: usize,
    /// Loopback source addresses (127.0.0.2 and up).
    #[arg(long, default_value_t = 100)]
    sources: usize,
    #[arg(long)]
    tls: bool,
    /// The proxy's processes whose RSS is measured (all of them are summed).
    #[arg(long = "pid", required = true)]
    pids: Vec<u32>,
    /// Time given to the proxy to settle before the RSS is read.
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Upper bound on the whole run.
    #[arg(long, default_value_t = 240)]
    timeout_secs: u64,
}

const STEP: Duration = Duration::from_secs(10);

pub async fn run(args: Args) -> anyhow::Result<()> {
    client::check_loopback(args.ws.target)?;
    tokio::time::timeout(Duration::from_secs(args.timeout_secs), measure(&args))
        .await
        .map_err(|_| anyhow::anyhow!("idle websocket run took over {}s", args.timeout_secs))?
}

async fn measure(args: &Args) -> anyhow::Result<()> {
    let tls = if args.tls {
        Some(client::tls_connector()?)
    } else {
        None
    };
    // One websocket first, so that what the proxy allocates once (its first
    // connection, TLS context, runtime) is in the baseline.
    let mut warm = open(args, tls.as_ref(), 0).await?;
    anyhow::ensure!(
        echoes(&mut warm, 0).await,
        "the first websocket does not echo"
    );
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let before = rss_kib(&args.pids)?;

    let started = Instant::now();
    let mut sockets: Vec<Ws> = Vec::with_capacity(args.count);
    let mut failed = 0usize;
    let mut next = 1usize;
    while sockets.len() + failed < args.count {
        let burst = args.batch.min(args.count - sockets.len() - failed);
        let opened = join_all((next..next + burst).map(|n| open(args, tls.as_ref(), n))).await;
        next += burst;
        for ws in opened {
            match ws {
                Ok(ws) => sockets.push(ws),
                Err(_) => failed += 1,
            }
        }
    }
    let open_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(args.settle_ms)).await;
    let after = rss_kib(&args.pids)?;
    let per_ws = (after.saturating_sub(before) * 1024) as f64 / sockets.len().max(1) as f64;

    let mut echoed = 0usize;
    for chunk in sockets.chunks_mut(args.batch.max(1)) {
        let results = join_all(chunk.iter_mut().enumerate().map(|(i, ws)| echoes(ws, i))).await;
        echoed += results.into_iter().filter(|ok| *ok).count();
    }
    println!(
        "opened={} failed={failed} echoed={echoed} open_seconds={open_seconds:.2} \
         rss_before_kib={before} rss_after_kib={after} bytes_per_ws={per_ws:.0}",
        sockets.len()
    );
    Ok(())
}

async fn open(
    args: &Args,
    tls: Option<&tokio_rustls::TlsConnector>,
    n: usize,
) -> anyhow::Result<Ws> {
    let from = client::source(n, args.sources);
    tokio::time::timeout(
        STEP,
        client::open_ws(args.ws.target, from, tls, &args.ws.path),
    )
    .await?
}

async fn echoes(ws: &mut Ws, n: usize) -> bool {
    let text = format!("still here {n}");
    let round_trip = async {
        ws.send(Message::text(text.clone())).await.ok()?;
        match ws.next().await? {
            Ok(Message::Text(echo)) => Some(echo.as_str() == text),
            _ => None,
        }
    };
    matches!(tokio::time::timeout(STEP, round_trip).await, Ok(Some(true)))
}
