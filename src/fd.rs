//! File descriptors: wharf's own resource. At start the soft limit is raised
//! to the hard limit; running out (accept or connect failing with EMFILE,
//! ENFILE, or no local port left) is told apart from anything a peer did, so
//! that it never counts against a server's health.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::io::Errno;
use rustix::process::{Resource, getrlimit, setrlimit};

/// Raises the open-file soft limit to the hard limit; returns the limit now
/// in force (`None`: unlimited or unknown).
pub fn raise_limit() -> Option<u64> {
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if let Err(e) = setrlimit(Resource::Nofile, limit) {
            tracing::warn!(error = %e, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current
}

/// Whether an accept or connect failed for want of local resources (file
/// descriptors, buffers, local ports) rather than anything a peer did.
pub fn is_out_of_files(e: &io::Error) -> bool {
    let errno = Errno::from_io_error(e);
    [
        Errno::MFILE,
        Errno::NFILE,
        Errno::NOBUFS,
        Errno::NOMEM,
        Errno::ADDRNOTAVAIL,
    ]
    .iter()
    .any(|&known| errno == Some(known))
}

/// Whether wharf is out of local resources right now, to log once per episode.
static EXHAUSTED: AtomicBool = AtomicBool::new(false);

/// Notes that a connect or accept failed for want of local resources; the
/// first failure of an episode is logged.
pub fn report_exhausted(what: &str, e: &io::Error) {
    if !EXHAUSTED.swap(true, Ordering::Relaxed) {
        tracing::error!(%what, error = %e, "out of file descriptors or local ports: new connections fail until some are freed (raise `ulimit -n`, lower max_connections)");
    }
}

/// Notes that a connect succeeded: ends an episode of exhaustion.
pub fn report_recovered() {
    if EXHAUSTED.load(Ordering::Relaxed) && EXHAUSTED.swap(false, Ordering::Relaxed) {
        tracing::info!("file descriptors available again");
    }
}
