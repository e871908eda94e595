//! Load generator and backend servers for wharf's benchmark (`bench/run`).
//!
//! One binary with a subcommand per job, so that the benchmark needs nothing
//! but this crate, wrk and the proxies under test: the two backends (a
//! keep-alive HTTP/1.1 responder and a WebSocket echo server), the WebSocket
//! and TLS load, the idle-websocket memory probe, and the results table.
//! Every load mode is bounded both in time and in count, and connects only to
//! 127.0.0.0/8. Results are printed as one `key=value` line for the script.

mod client;
mod http_server;
mod relay;
mod stats;
mod table;
mod tls_handshakes;
mod ws_echo;
mod ws_idle;
mod ws_server;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "Backends and load for wharf's benchmark (bench/run)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Keep-alive HTTP/1.1 responder: `GET /headers` answers with the request
    /// head it received, anything else with a 6-byte body.
    HttpServer {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// WebSocket echo server.
    WsServer {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Closed-loop WebSocket echo load: each connection sends a message and
    /// waits for its echo before sending the next.
    WsEcho(ws_echo::Args),
    /// Opens many websockets in bursts, measures the proxy's RSS per idle
    /// websocket, then checks that every one still echoes.
    WsIdle(ws_idle::Args),
    /// Full TLS handshakes (no resumption) as fast as the server allows.
    TlsHandshakes(tls_handshakes::Args),
    /// A bare TCP relay (epoll, io_uring or splice), to measure what each
    /// I/O model costs per message (`bench/io-models`).
    Relay(relay::Args),
    /// Prints the results table from the measurements file the script wrote.
    Table {
        /// Tab-separated lines: figure, target, value (one per round).
        #[arg(long)]
        results: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    let command = match Cli::parse().command {
        Command::Table { results } => {
            print!("{}", table::render(&std::fs::read_to_string(results)?)?);
            return Ok(());
        }
        Command::Relay(args) => return relay::run(args),
        command => command,
    };
    // One thread: the script pins the load and the backends to one core.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        match command {
            Command::HttpServer { listen } => http_server::run(listen).await,
            Command::WsServer { listen } => ws_server::run(listen).await,
            Command::WsEcho(args) => ws_echo::run(args).await,
            Command::WsIdle(args) => ws_idle::run(args).await,
            Command::TlsHandshakes(args) => tls_handshakes::run(args).await,
            Command::Table { .. } | Command::Relay(_) => Ok(()),
        }
    })
}
