//! The access log: one line per request and per finished tunnel, written off
//! the data path.
//!
//! A request hands its [`Entry`] to a bounded queue and goes on; a dedicated
//! writer thread formats the lines ([`format`]) and writes them, flushing
//! whenever the queue runs empty. If the writer falls behind (a slow disk, a
//! blocked stdout) and the queue is full, the entry is dropped and counted
//! (`wharf_access_log_dropped_lines_total`): requests never wait for the log.
//! A file target is reopened on [`AccessLog::reopen`] (SIGUSR1), for log
//! rotation: the old file is written to until the next line after the signal.

mod format;

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::time::{Duration, SystemTime};

use prometheus_client::metrics::counter::Counter;

use crate::config::{AccessLogConfig, AccessLogFormat, AccessLogTarget};

/// Entries waiting for the writer; beyond this they are dropped.
pub const QUEUE_LINES: usize = 8192;

/// How the sticky-session logic placed a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StickyDecision {
    /// The client named a server and went to it.
    Hit,
    /// The client named no server and was pinned to one now.
    New,
    /// The client's server could not be used; it was pinned to another.
    Repinned,
}

impl StickyDecision {
    pub fn name(self) -> &'static str {
        match self {
            StickyDecision::Hit => "hit",
            StickyDecision::New => "new",
            StickyDecision::Repinned => "repinned",
        }
    }
}

/// How a tunnel ended, for its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelClose {
    /// `client`, `server`, `idle`, `drain`, `error` or `shutdown`.
    pub side: &'static str,
    /// The websocket close code, when a close frame was seen.
    pub code: Option<u16>,
}

/// One line's worth: a request answered, or a tunnel finished.
#[derive(Debug, Clone)]
pub struct Entry {
    /// When the request arrived.
    pub at: SystemTime,
    pub client: SocketAddr,
    pub listener: Arc<str>,
    /// The route's name (see `metrics::route_name`); `None` when none matched.
    pub route: Option<Arc<str>>,
    pub pool: Option<Arc<str>>,
    pub server: Option<SocketAddr>,
    pub method: http::Method,
    /// The request path, without the query (which may hold secrets).
    pub path: String,
    /// The status the client got (101 for a tunnel).
    pub status: u16,
    /// Bytes from the client (request body; for a tunnel, all it sent).
    pub bytes_in: u64,
    /// Bytes to the client (response body; for a tunnel, all it got).
    pub bytes_out: u64,
    /// From the request's arrival to its last byte (a tunnel's: to its end).
    pub duration: Duration,
    /// From sending to the server to its response head.
    pub server_duration: Option<Duration>,
    pub sticky: Option<StickyDecision>,
    /// Set on a tunnel's line.
    pub tunnel: Option<TunnelClose>,
}

/// The sending side: cheap to clone, never blocks.
#[derive(Debug, Clone)]
pub struct AccessLog {
    queue: SyncSender<Entry>,
    dropped: Counter,
    reopen: Arc<AtomicBool>,
}

/// Why the access log could not start.
#[derive(Debug, thiserror::Error)]
pub enum AccessLogError {
    #[error("cannot open the access log {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("cannot start the access log writer: {0}")]
    Thread(io::Error),
}

impl AccessLog {
    /// Opens the target (a file must be writable now) and starts the writer
    /// thread; it ends once every clone of the returned handle is dropped.
    pub fn start(config: &AccessLogConfig, dropped: Counter) -> Result<AccessLog, AccessLogError> {
        let sink = Sink::open(&config.to)?;
        let (queue, lines) = sync_channel(QUEUE_LINES);
        let reopen = Arc::new(AtomicBool::new(false));
        let writer = Writer {
            lines,
            sink,
            format: config.format,
            target: config.to.clone(),
            reopen: reopen.clone(),
        };
        std::thread::Builder::new()
            .name("wharf-access-log".into())
            .spawn(move || writer.run())
            .map_err(AccessLogError::Thread)?;
        Ok(AccessLog {
            queue,
            dropped,
            reopen,
        })
    }

    /// Queues a line; drops (and counts) it if the writer is behind.
    pub fn log(&self, entry: Entry) {
        match self.queue.try_send(entry) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.inc();
            }
        }
    }

    /// Reopens a file target before the next line (log rotation).
    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }
}

/// Where the writer writes.
enum Sink {
    Stdout(BufWriter<io::Stdout>),
    File(BufWriter<File>),
}

impl Sink {
    fn open(target: &AccessLogTarget) -> Result<Sink, AccessLogError> {
        match target {
            AccessLogTarget::Stdout => Ok(Sink::Stdout(BufWriter::new(io::stdout()))),
            AccessLogTarget::File(path) => Ok(Sink::File(BufWriter::new(open_append(path)?))),
        }
    }

    fn writer(&mut self) -> &mut dyn Write {
        match self {
            Sink::Stdout(w) => w as &mut dyn Write,
            Sink::File(w) => w as &mut dyn Write,
        }
    }
}

fn open_append(path: &Path) -> Result<File, AccessLogError> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| AccessLogError::Open {
            path: path.to_owned(),
            source,
        })
}

/// The writer thread's state.
struct Writer {
    lines: Receiver<Entry>,
    sink: Sink,
    format: AccessLogFormat,
    target: AccessLogTarget,
    reopen: Arc<AtomicBool>,
}

impl Writer {
    fn run(mut self) {
        let mut line = String::with_capacity(512);
        // Blocks for the first line, then takes whatever else is queued
        // before flushing once.
        while let Ok(mut entry) = self.lines.recv() {
            loop {
                self.reopen_if_asked();
                line.clear();
                format::write(&mut line, &entry, self.format);
                line.push('\n');
                if let Err(e) = self.sink.writer().write_all(line.as_bytes()) {
                    tracing::warn!(error = %e, "cannot write the access log");
                }
                match self.lines.try_recv() {
                    Ok(next) => entry = next,
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            if let Err(e) = self.sink.writer().flush() {
                tracing::warn!(error = %e, "cannot write the access log");
            }
        }
    }

    fn reopen_if_asked(&mut self) {
        if !self.reopen.swap(false, Ordering::Relaxed) {
            return;
        }
        let AccessLogTarget::File(path) = &self.target else {
            return;
        };
        let _ = self.sink.writer().flush();
        match open_append(path) {
            Ok(file) => self.sink = Sink::File(BufWriter::new(file)),
            Err(e) => {
                tracing::error!(error = %e, "access log not reopened; still writing to the old file")
            }
        }
    }
}

#[cfg(test)]
mod tests;
