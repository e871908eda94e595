//! The `wharf` command: `run`, `check` and `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// jemalloc, not glibc's malloc: after a burst of TLS handshakes glibc keeps
/// the freed handshake memory resident behind every idle websocket (47 KB per
/// TLS websocket against 16 KB with jemalloc in `bench/run`).
#[cfg(unix)]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's options, read when it starts (`_RJEM_MALLOC_CONF` in the
/// environment is applied after them).
///
/// `tcache_nslots_small_min:64` (default 20): every request allocates an
/// 8 KiB read buffer (hyper reads ahead while the request's head still holds
/// the old one), and a worker runs the requests of many connections in one
/// turn before their frees come: with 20 cached slots the cache ran dry and
/// each allocation took jemalloc's slow path. Measured with
/// `bench/instructions`' harness (wrk -c50): 27,570 → 26,275 instructions per
/// request (-4.7%); RSS per idle websocket (`bench/run --only idle`): plain
/// 1,545 → 1,578 B, TLS 1,862 → 1,870 B.
#[cfg(unix)]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: MallocConf = MallocConf(c"tcache_nslots_small_min:64".as_ptr());

/// A C string pointer jemalloc reads at start: `const char *malloc_conf`.
#[cfg(unix)]
#[repr(transparent)]
struct MallocConf(*const std::ffi::c_char);

// SAFETY: it points at a string literal, never written.
#[cfg(unix)]
unsafe impl Sync for MallocConf {}

#[derive(Parser)]
#[command(
    name = "wharf",
    version,
    about = "A load balancer and reverse proxy for WebSocket applications"
)]
struct Cli {
    /// Process log lines as text or as one JSON object per line (stderr).
    /// Levels come from RUST_LOG (default `info`), e.g. `RUST_LOG=wharf=debug`.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Serve with the given config file. SIGHUP reloads it in place,
    /// SIGTERM or SIGINT stops gracefully (a second one at once).
    Run {
        config: PathBuf,
        /// A local socket through which a new wharf takes over the listening
        /// sockets of this one (binary upgrade without a refused connection):
        /// start the new binary with the same option and the old one stops
        /// gracefully once the new one serves.
        #[arg(long, value_name = "PATH")]
        upgrade_socket: Option<PathBuf>,
    },
    /// Validate a config file; print every mistake as file:line:col.
    Check { config: PathBuf },
    /// Start three built-in demo servers behind wharf and print the URL.
    Demo {
        /// Where the demo proxy listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        bind: SocketAddr,
        /// Where the status page, metrics and admin API listen.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin: SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config: path } => match wharf::runtime::load_checked(&path) {
            Ok((config, _)) => {
                for warning in wharf::config::warnings(&config) {
                    eprintln!("{}: warning: {warning}", path.display());
                }
                println!("{}: ok", path.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                for sentence in e.sentences() {
                    eprintln!("{sentence}");
                }
                ExitCode::FAILURE
            }
        },
        Command::Run {
            config: path,
            upgrade_socket,
        } => {
            let config = match wharf::config::load(&path) {
                Ok(config) => config,
                Err(errors) => {
                    eprint!("{errors}");
                    return ExitCode::FAILURE;
                }
            };
            for warning in wharf::config::warnings(&config) {
                tracing::warn!(config = %path.display(), "{warning}");
            }
            match wharf::fd::raise_limit() {
                Some(limit) => tracing::info!(limit, "open files allowed"),
                None => tracing::info!("open files: no limit"),
            }
            let workers = config.workers;
            block_on(workers, run(config, path, upgrade_socket))
        }
        Command::Demo { bind, admin } => block_on(None, wharf::demo::run(bind, admin)),
    }
}

/// `wharf run`: serves until a stop signal or a successor takes over, then
/// stops gracefully within `shutdown_timeout`.
async fn run(
    config: wharf::config::Config,
    path: PathBuf,
    upgrade_socket: Option<PathBuf>,
) -> anyhow::Result<()> {
    use anyhow::Context as _;

    let inherited = match &upgrade_socket {
        Some(socket) => {
            let socket = socket.clone();
            tokio::task::spawn_blocking(move || wharf::handover::take(&socket)).await??
        }
        None => None,
    };
    let (inherited, channel) = match inherited {
        Some(mut handover) => {
            tracing::info!(
                sockets = handover.sockets.len(),
                "taking over from the running wharf"
            );
            let sockets = std::mem::take(&mut handover.sockets);
            (sockets, Some(handover))
        }
        None => (Default::default(), None),
    };
    let options = wharf::StartOptions {
        config_path: Some(path),
        inherited,
    };
    let running = wharf::start_with(config, options).await?;
    // The next upgrade's socket is ready before the old wharf is told to
    // stop, so that a failure here leaves the old one serving.
    let successor = match &upgrade_socket {
        Some(socket) => {
            let listener = wharf::handover::listen(socket)
                .with_context(|| format!("cannot listen on {}", socket.display()))?;
            Some(tokio::spawn(wharf::handover::serve(
                listener,
                running.clone(),
            )))
        }
        None => None,
    };
    // Signal handlers before anyone hears we are ready: from then on systemd
    // may send ExecReload's SIGHUP (or an operator SIGUSR1/SIGUSR2), and a
    // process that does not catch those yet is killed by them.
    reload_on_sighup(&running);
    if upgrade_socket.is_some() {
        upgrade_on_sigusr2();
    }
    reopen_access_log_on_sigusr1(&running);
    // systemd learns the new main process before the old one stops.
    wharf::systemd::ready();
    if let Some(channel) = channel {
        channel.ready().context("telling the old wharf we serve")?;
    }
    let taken_over = async {
        match successor {
            Some(task) => {
                let _ = task.await;
            }
            None => std::future::pending().await,
        }
    };
    let handed_over = tokio::select! {
        () = stop_signal() => false,
        () = taken_over => true,
    };
    // A second signal while stopping exits at once.
    tokio::spawn(async {
        stop_signal().await;
        tracing::warn!("second stop signal: exiting now");
        std::process::exit(1);
    });
    // After a handover the service goes on in the new process: systemd
    // must not hear that it stops.
    if !handed_over {
        wharf::systemd::stopping();
    }
    // As the config says now: a reload may have changed it.
    let shutdown_timeout = running.shared().snapshot().config.shutdown_timeout;
    let finished = running.stop(shutdown_timeout).await;
    if !finished {
        tracing::warn!(timeout = ?shutdown_timeout, "shutdown_timeout passed with connections still open; closing them");
    }
    tracing::info!("stopped");
    Ok(())
}

/// Tasks a worker runs between two looks for socket events (see `block_on`).
const EVENT_INTERVAL: u32 = 200;

fn block_on(
    workers: Option<usize>,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    // Request heads a worker forwards in one turn go out together before it
    // sleeps (upstream/h1/outbox.rs).
    builder.on_thread_park(wharf::upstream::send_deferred);
    // How many tasks a worker runs between two looks for socket events
    // (tokio's default: 61). As HAProxy's `tune.maxpollevents` (200), a busy
    // worker then serves more of what is ready per look, with fewer
    // `epoll_wait` calls and larger batches of deferred sends. Measured with
    // `wrk -c50` through one worker (8 interleaved runs of 5 s): requests per
    // CPU-second higher in every pair, by 1-11% (median 3.6%), the backend
    // woken 0.050 times per request instead of 0.065; p99 within noise.
    // `bench/run --only http --proxies wharf,haproxy` pairs: 0.92 and 0.90 ×
    // HAProxy's requests per CPU-second before, 0.95, 0.93 and 1.00 after.
    builder.event_interval(EVENT_INTERVAL);
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("wharf: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(work);
    // Tasks still running (tunnels past the shutdown timeout) are not waited for.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wharf: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// SIGHUP reloads the config file in place; on an error nothing changes and
/// every error is logged.
fn reload_on_sighup(running: &wharf::Running) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut hangups) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; the config will not be reloaded");
        return;
    };
    let running = running.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            if let Err(e) = running.reload().await {
                for sentence in e.sentences() {
                    tracing::error!("reload refused, nothing changed: {sentence}");
                }
            }
        }
    });
}

/// SIGUSR2 starts the wharf binary found at the path this one was started
/// from (a newly installed one), with the same arguments: it takes over the
/// listening sockets through the upgrade socket, then this one stops.
fn upgrade_on_sigusr2() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else {
        tracing::warn!("cannot listen for SIGUSR2; upgrade by starting the new binary by hand");
        return;
    };
    tokio::spawn(async move {
        while usr2.recv().await.is_some() {
            let mut args = std::env::args_os();
            let Some(program) = args.next() else { continue };
            tracing::info!(program = %program.to_string_lossy(), "SIGUSR2: starting the new binary");
            match std::process::Command::new(&program).args(args).spawn() {
                // Reaped if it fails before taking over; once it has, this
                // process exits and it lives on.
                Ok(mut child) => {
                    std::thread::spawn(move || child.wait());
                }
                Err(e) => tracing::error!(error = %e, "cannot start the new binary; going on"),
            }
        }
    });
}

/// SIGUSR1 reopens the access log file (after log rotation moved it).
/// Caught even without an access log: its default action would kill wharf
/// (a logrotate `postrotate` signalling every wharf, say).
fn reopen_access_log_on_sigusr1(running: &wharf::Running) {
    use tokio::signal::unix::{SignalKind, signal};
    let access_log = running.shared().access_log.clone();
    let Ok(mut signals) = signal(SignalKind::user_defined1()) else {
        tracing::warn!("cannot listen for SIGUSR1; the access log will not be reopened");
        return;
    };
    tokio::spawn(async move {
        while signals.recv().await.is_some() {
            match &access_log {
                Some(access_log) => {
                    tracing::info!("SIGUSR1: reopening the access log");
                    access_log.reopen();
                }
                None => tracing::info!("SIGUSR1: no access log to reopen"),
            }
        }
    });
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

fn init_logging(format: LogFormat) {
    // rustls warns about what clients send (an IP address as SNI, as wrk and
    // some libraries do): one line per handshake, at a client's command.
    // wharf counts and logs failed handshakes itself; RUST_LOG can ask for them.
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,rustls=error"));
    // Colours only on a terminal: tracing-subscriber writes them by default
    // (unless NO_COLOR), and they would end up as escape codes in journald
    // and log files.
    use std::io::IsTerminal;
    let colour = std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|value| value.is_empty());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(colour)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().flatten_event(true).init(),
    }
}
