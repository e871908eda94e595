//! The `wharf` command: `run`, `check` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "A load balancer and reverse proxy for WebSocket applications"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given config file.
    Run { config: PathBuf },
    /// Validate a config file; print every mistake as file:line:col.
    Check { config: PathBuf },
    /// Start three built-in demo servers behind wharf and print the URL.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging();
    match cli.command {
        Command::Check { config: path } => match wharf::config::load(&path) {
            Ok(config) => {
                // Certificates parse, and each key matches its certificate.
                let mut ok = true;
                for listener in &config.listeners {
                    let Some(tls) = &listener.tls else { continue };
                    let files: Vec<_> = tls
                        .certificates
                        .iter()
                        .map(|c| wharf::tls::CertificateFiles::new(&c.cert, &c.key))
                        .collect();
                    if let Err(e) = wharf::tls::TlsTerminator::load(&files) {
                        eprintln!("{}: listener `{}`: {e}", path.display(), listener.name);
                        ok = false;
                    }
                }
                if !ok {
                    return ExitCode::FAILURE;
                }
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(errors) => {
                eprint!("{errors}");
                ExitCode::FAILURE
            }
        },
        Command::Run { config } => {
            let config = match wharf::config::load(&config) {
                Ok(config) => config,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            block_on(async move {
                let running = wharf::start(config).await?;
                reload_certificates_on_sighup(&running);
                wait_for_stop_signal().await;
                tracing::info!("stopping");
                running.shutdown().await;
                Ok(())
            })
        }
        Command::Demo { bind } => block_on(wharf::demo::run(bind)),
    }
}

fn block_on(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wharf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP re-reads the TLS certificates; open connections are untouched.
fn reload_certificates_on_sighup(running: &wharf::Running) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP; certificates will not be reloaded");
            return;
        };
        let shared = running.shared().clone();
        tokio::spawn(async move {
            while hangups.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading certificates");
                shared.snapshot().reload_certificates();
            }
        });
    }
}

async fn wait_for_stop_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
