//! Binary upgrade without a refused connection: the running wharf hands its
//! listening sockets to the new one over a local Unix socket (as HAProxy's
//! `-x` does), so both share the same kernel sockets and their accept
//! queues: nothing is closed, nothing refused. The new wharf says when it
//! serves; the old one then stops gracefully.
//!
//! The exchange, on the Unix socket given by `--upgrade-socket PATH`:
//! 1. the new wharf connects; the old one sends `wharf-handover 1\n`, then
//!    one line per listening socket with the address it was bound as, with
//!    the sockets themselves attached (SCM_RIGHTS), in the same order;
//! 2. the new wharf serves on them (and binds whatever else its config
//!    needs), then writes `ready\n`;
//! 3. the old wharf stops accepting and finishes its connections.
//!
//! If the new wharf fails before `ready`, the old one goes on as before.

use std::collections::HashMap;
use std::io::{self, BufRead, BufReader, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags, recvmsg, sendmsg,
};

const GREETING: &str = "wharf-handover 1";
/// The kernel passes at most this many descriptors in one message.
const MAX_SOCKETS: usize = 253;
/// How long the old wharf waits for the new one to say it serves.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Why a handover failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    #[error("handover socket {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("handover socket {path}: {message}")]
    Protocol { path: PathBuf, message: String },
}

/// Sockets taken over from a running wharf, and the way to tell it we serve.
#[derive(Debug)]
pub struct Inherited {
    pub sockets: HashMap<SocketAddr, TcpListener>,
    channel: UnixStream,
}

impl Inherited {
    /// Tells the old wharf that this one serves: it stops accepting.
    pub fn ready(mut self) -> io::Result<()> {
        self.channel.write_all(b"ready\n")
    }
}

/// Takes over the listening sockets of the wharf at `path`, if one runs
/// there; `Ok(None)` if none does (a first start). Blocking.
pub fn take(path: &Path) -> Result<Option<Inherited>, HandoverError> {
    let io_error = |source| HandoverError::Io {
        path: path.to_owned(),
        source,
    };
    let channel = match UnixStream::connect(path) {
        Ok(channel) => channel,
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(io_error(e)),
    };
    channel
        .set_read_timeout(Some(READY_TIMEOUT))
        .map_err(io_error)?;
    let mut text = vec![0u8; 64 * 1024];
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
    let mut control = RecvAncillaryBuffer::new(&mut space);
    let received = recvmsg(
        channel.as_fd(),
        &mut [IoSliceMut::new(&mut text)],
        &mut control,
        RecvFlags::CMSG_CLOEXEC,
    )
    .map_err(|e| io_error(e.into()))?;
    let mut fds: Vec<OwnedFd> = Vec::new();
    for message in control.drain() {
        if let RecvAncillaryMessage::ScmRights(received) = message {
            fds.extend(received);
        }
    }
    let protocol = |message: String| HandoverError::Protocol {
        path: path.to_owned(),
        message,
    };
    let text = std::str::from_utf8(&text[..received.bytes])
        .map_err(|_| protocol("the greeting is not text".to_owned()))?;
    let mut lines = text.lines();
    if lines.next() != Some(GREETING) {
        return Err(protocol(format!("expected `{GREETING}`")));
    }
    let addresses: Vec<SocketAddr> = lines
        .map(|line| {
            line.parse()
                .map_err(|_| protocol(format!("bad address {line:?}")))
        })
        .collect::<Result<_, _>>()?;
    if addresses.len() != fds.len() {
        return Err(protocol(format!(
            "{} addresses but {} sockets",
            addresses.len(),
            fds.len()
        )));
    }
    let sockets = addresses
        .into_iter()
        .zip(fds)
        .map(|(address, fd)| (address, TcpListener::from(fd)))
        .collect();
    Ok(Some(Inherited { sockets, channel }))
}

/// Offers `sockets` to the next wharf that connects to `channel`, and waits
/// until it says it serves. Blocking. `Ok(false)`: it went away first.
pub fn offer(mut channel: UnixStream, sockets: &[(SocketAddr, TcpListener)]) -> io::Result<bool> {
    let mut text = format!("{GREETING}\n");
    for (address, _) in sockets.iter().take(MAX_SOCKETS) {
        text.push_str(&format!("{address}\n"));
    }
    let fds: Vec<_> = sockets
        .iter()
        .take(MAX_SOCKETS)
        .map(|(_, socket)| socket.as_fd())
        .collect();
    let mut space = vec![MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(fds.len()))];
    let mut control = SendAncillaryBuffer::new(&mut space);
    if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(io::Error::other("too many sockets to hand over"));
    }
    sendmsg(
        channel.as_fd(),
        &[IoSlice::new(text.as_bytes())],
        &mut control,
        SendFlags::empty(),
    )?;
    channel.set_read_timeout(Some(READY_TIMEOUT))?;
    let mut answer = String::new();
    BufReader::new(&mut channel).read_line(&mut answer)?;
    Ok(answer.trim_end() == "ready")
}

/// Listens on `path` for the next wharf (replacing a stale socket file),
/// readable and writable by wharf's own user only: whoever connects gets
/// every listening socket and stops this wharf.
pub fn listen(path: &Path) -> io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Whether the peer of `channel` runs as wharf's own user (or root).
fn same_user(channel: &tokio::net::UnixStream) -> bool {
    let ours = rustix::process::getuid();
    rustix::net::sockopt::socket_peercred(channel)
        .is_ok_and(|peer| peer.uid == ours || peer.uid.is_root())
}

/// Serves handover requests on `listener` until a new wharf has taken the
/// sockets of `running` and serves; then returns, and the caller stops.
pub async fn serve(listener: tokio::net::UnixListener, running: crate::Running) {
    loop {
        let channel = match listener.accept().await {
            Ok((channel, _)) => channel,
            Err(e) => {
                tracing::warn!(error = %e, "handover socket: accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        if !same_user(&channel) {
            tracing::warn!("handover socket: a process of another user connected; refused");
            continue;
        }
        let sockets = running.listening_sockets();
        let offered = tokio::task::spawn_blocking(move || {
            let channel = channel.into_std()?;
            channel.set_nonblocking(false)?;
            offer(channel, &sockets)
        })
        .await;
        match offered {
            Ok(Ok(true)) => {
                tracing::info!("a new wharf took over the listening sockets and serves");
                return;
            }
            Ok(Ok(false)) => tracing::warn!("the new wharf went away before it served; going on"),
            Ok(Err(e)) => tracing::warn!(error = %e, "handover failed; going on"),
            Err(e) => tracing::warn!(error = %e, "handover task failed; going on"),
        }
    }
}
