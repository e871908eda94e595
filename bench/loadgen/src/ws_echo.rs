//! Closed-loop WebSocket echo load: each connection sends one message, waits
//! for its echo, records the round trip and sends the next, until the time or
//! the message budget runs out.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{self, Ws};
use crate::stats::Latencies;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    ws: client::WsTarget,
    /// Concurrent websockets.
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Seconds of load after every websocket is open.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many messages in all.
    #[arg(long, default_value_t = 20_000_000)]
    max_messages: u64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

const SAMPLES_PER_CONNECTION: usize = 200_000;

pub async fn run(args: Args) -> anyhow::Result<()> {
    client::check_loopback(args.ws.target)?;
    let mut sockets = Vec::with_capacity(args.conns);
    for _ in 0..args.conns {
        let ws = tokio::time::timeout(
            Duration::from_secs(10),
            client::open_ws(args.ws.target, None, None, &args.ws.path),
        )
        .await??;
        sockets.push(ws);
    }
    let budget = Arc::new(AtomicU64::new(args.max_messages));
    let payload = Message::binary(vec![b'x'; args.size]);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = sockets
        .into_iter()
        .map(|ws| tokio::spawn(echo_loop(ws, payload.clone(), deadline, budget.clone())))
        .collect();
    let mut latencies = Latencies::new(SAMPLES_PER_CONNECTION * args.conns);
    let mut errors = 0u64;
    for task in tasks {
        let (samples, failed) = task.await?;
        latencies.merge(samples);
        errors += u64::from(failed);
    }
    let seconds = started.elapsed().as_secs_f64();
    let messages = args.max_messages - budget.load(Ordering::Relaxed);
    println!(
        "messages={messages} seconds={seconds:.3} rate={:.0} p50_ms={:.3} p99_ms={:.3} errors={errors}",
        messages as f64 / seconds,
        latencies.quantile_ms(0.50),
        latencies.quantile_ms(0.99),
    );
    Ok(())
}

/// Returns the round trips it measured and whether the connection failed.
async fn echo_loop(
    mut ws: Ws,
    payload: Message,
    deadline: Instant,
    budget: Arc<AtomicU64>,
) -> (Latencies, bool) {
    let mut latencies = Latencies::new(SAMPLES_PER_CONNECTION);
    let failed = loop {
        if Instant::now() >= deadline {
            break false;
        }
        // Take one message from the shared budget; stop when it is spent.
        if budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_err()
        {
            break false;
        }
        let sent = Instant::now();
        if ws.send(payload.clone()).await.is_err() {
            break true;
        }
        let echoed = tokio::time::timeout(Duration::from_secs(5), ws.next()).await;
        match echoed {
            Ok(Some(Ok(Message::Binary(_)))) => latencies.record(sent.elapsed()),
            _ => break true,
        }
    };
    let _ = ws.close(None).await;
    (latencies, failed)
}
