//! Request heads sent together at the end of a worker's turn.
//!
//! A worker that forwards the requests of many clients in one turn puts each
//! bodiless request head in the outbox, and they go out together when the
//! turn ends, as HAProxy batches its sends: a server process is then woken
//! once for many requests instead of once for each, and waking a process on
//! another core is the dearest part of a small request. Measured with
//! `wrk -c50` through one worker on this 2-core machine (`/proc` CPU time,
//! 3 interleaved pairs of 6 s): the backend slept 0.066 times per request
//! instead of 0.14–0.20 and spent 6.2/5.9/7.1 µs per request instead of
//! 7.0/8.3/7.6, wharf's p99 fell from 1.61–1.95 to 1.13–1.18 ms, and wharf's
//! own CPU per request stayed within noise (about 0.5 µs more user time,
//! less system time).
//!
//! A turn ends when the worker sleeps (tokio's `on_thread_park`, which
//! `wharf run` installs: [`send_deferred`]) or, for a worker that never runs
//! out of tasks, when its deferred tasks are woken: the worker's flusher task
//! waits there (`yield_now`) once a head is queued. Tokio wakes them when it
//! next looks for socket events, at most `EVENT_INTERVAL` (main.rs) tasks
//! later, and the flusher runs first after that look: the heads of the tasks
//! one look made ready go out together, before the next look's tasks run. Only a thread whose park
//! hook has run defers; any other (a test's runtime, `block_on`) sends at
//! once. The outbox holds the socket (`Arc<Socket>`), so its descriptor stays
//! open until the head is sent even if the request is dropped meanwhile. A
//! send that fails or is only partly taken is handed back to the request,
//! which learns of it through [`Socket::poll_deferred`].

use std::cell::{Cell, RefCell};
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker, ready};

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::Notify;

/// A turn holding this many heads sends them at once rather than wait, so
/// that a long turn does not hold the first ones back.
const MAX_BATCH: usize = 128;

/// Heads deferred since the start, for tests (one relaxed add per head).
static DEFERRED: AtomicU64 = AtomicU64::new(0);

/// Heads waiting for the end of the turn, from every worker: whichever turn
/// ends first sends them all.
static OUTBOX: Mutex<Vec<(Arc<Socket>, Bytes)>> = Mutex::new(Vec::new());

thread_local! {
    /// Whether this thread sends what is deferred before it sleeps.
    static SENDS_BEFORE_PARKING: Cell<bool> = const { Cell::new(false) };
    /// Wakes this worker's flusher task (spawned on the first head queued here).
    static FLUSHER: RefCell<Option<Arc<Notify>>> = const { RefCell::new(None) };
}

fn outbox() -> MutexGuard<'static, Vec<(Arc<Socket>, Bytes)>> {
    OUTBOX.lock().unwrap_or_else(|e| e.into_inner())
}

/// A connection's socket, shared with the outbox while a head waits there.
#[derive(Debug)]
pub struct Socket {
    pub stream: TcpStream,
    deferred: Mutex<Deferred>,
}

#[derive(Debug, Default)]
struct Deferred {
    state: State,
    /// The request's task, woken if the send fails or stops short.
    waker: Option<Waker>,
}

#[derive(Debug, Default)]
enum State {
    /// Nothing in the outbox (never deferred, or sent whole).
    #[default]
    Clear,
    Queued,
    /// The socket took this many bytes and then no more for now.
    Partial(usize),
    /// The send failed after this many bytes.
    Failed(usize, io::Error),
}

/// How a deferred head fared, seen from its request.
pub enum Sent {
    /// Sent whole, or still waiting in the outbox.
    Fine,
    /// The request writes the rest itself, from this offset.
    From(usize),
}

impl Socket {
    pub fn new(stream: TcpStream) -> Arc<Socket> {
        Arc::new(Socket {
            stream,
            deferred: Mutex::new(Deferred::default()),
        })
    }

    fn deferred(&self) -> MutexGuard<'_, Deferred> {
        self.deferred.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How the head this request deferred fared; `Err((written, error))` if
    /// its send failed after `written` bytes.
    pub fn poll_deferred(&self, cx: &mut Context<'_>) -> Result<Sent, (usize, io::Error)> {
        let mut deferred = self.deferred();
        match std::mem::take(&mut deferred.state) {
            State::Clear => Ok(Sent::Fine),
            State::Queued => {
                deferred.state = State::Queued;
                match &deferred.waker {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => deferred.waker = Some(cx.waker().clone()),
                }
                Ok(Sent::Fine)
            }
            State::Partial(written) => Ok(Sent::From(written)),
            State::Failed(written, error) => Err((written, error)),
        }
    }
}

/// Queues `head` to be sent on `socket` at the end of this worker's turn;
/// `false` (nothing queued) on a thread that does not send before sleeping.
pub fn defer(socket: &Arc<Socket>, head: &Bytes) -> bool {
    if !SENDS_BEFORE_PARKING.get() {
        return false;
    }
    socket.deferred().state = State::Queued;
    DEFERRED.fetch_add(1, Ordering::Relaxed);
    let queued = {
        let mut outbox = outbox();
        outbox.push((socket.clone(), head.clone()));
        outbox.len()
    };
    if queued >= MAX_BATCH {
        send_all();
    } else if queued == 1 {
        wake_flusher();
    }
    true
}

/// Makes sure this worker's turn ends with a send even if the worker never
/// sleeps: its flusher task waits among the deferred tasks, which tokio
/// wakes whenever it polls for events, busy or not.
fn wake_flusher() {
    FLUSHER.with_borrow_mut(|flusher| {
        let notify = flusher.get_or_insert_with(|| {
            let notify = Arc::new(Notify::new());
            let woken = notify.clone();
            tokio::spawn(async move {
                loop {
                    woken.notified().await;
                    tokio::task::yield_now().await;
                    send_all();
                }
            });
            notify
        });
        notify.notify_one();
    });
}

/// How many request heads were deferred since the process started.
pub fn deferred_total() -> u64 {
    DEFERRED.load(Ordering::Relaxed)
}

/// The park hook of `wharf run`'s runtime: sends every deferred head. From
/// its first call on, this thread defers.
pub fn send_deferred() {
    SENDS_BEFORE_PARKING.set(true);
    send_all();
}

fn send_all() {
    let batch = std::mem::take(&mut *outbox());
    for (socket, head) in batch {
        // Under the lock: the request cannot see its head sent, finish, and
        // queue its connection's next head before this one's outcome is set.
        let mut deferred = socket.deferred();
        let state = send_now(&socket.stream, &head);
        let failed = !matches!(state, State::Clear);
        deferred.state = state;
        if failed && let Some(waker) = deferred.waker.take() {
            waker.wake();
        }
    }
}

fn send_now(stream: &TcpStream, head: &[u8]) -> State {
    let mut written = 0;
    while written < head.len() {
        match stream.try_write(&head[written..]) {
            Ok(0) => return State::Failed(written, io::ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return State::Partial(written),
            Err(e) => return State::Failed(written, e),
        }
    }
    State::Clear
}

/// Writes `bytes` to `stream` from `written` on; `Ready(Ok)` once all are.
pub fn poll_write_rest(
    stream: &TcpStream,
    cx: &mut Context<'_>,
    bytes: &[u8],
    written: &mut usize,
) -> Poll<io::Result<()>> {
    while *written < bytes.len() {
        ready!(stream.poll_write_ready(cx))?;
        match stream.try_write(&bytes[*written..]) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => *written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    Poll::Ready(Ok(()))
}
