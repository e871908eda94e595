//! A bare TCP relay in three I/O models, to measure what the kernel costs a
//! proxy per message and what io_uring or splice would save (issue 12's
//! "ways that are open"; `bench/run` measures it beside the proxies).
//!
//! Each accepted connection is joined to a new connection to `--target`,
//! and bytes are copied both ways, nothing else: no parsing, no timers, no
//! allocation per message. The three models differ only in how the bytes
//! move:
//!
//! - `epoll`: level-triggered epoll, one `recv` per readable event and one
//!   `send` to the peer, as HAProxy and wharf do.
//! - `uring`: io_uring; a receive is pending on each socket while it has
//!   nothing to pass on; its completion queues the send to the peer, whose
//!   completion queues the next receive. Everything queued in a turn goes in
//!   one `io_uring_enter`.
//! - `splice`: as `epoll`, but the bytes go socket → pipe → socket with
//!   `splice(2)` and never enter user space.
//!
//! One thread; it stops by itself after `--seconds`. Loopback only.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};

#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Model {
    Epoll,
    Uring,
    Splice,
}

#[derive(clap::Args)]
pub struct Args {
    #[arg(long, value_enum)]
    model: Model,
    #[arg(long)]
    listen: SocketAddr,
    #[arg(long)]
    target: SocketAddr,
    /// The relay stops after this long.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

const BUFFER: usize = 16 * 1024;
/// File descriptors above this are refused (the relay indexes by fd).
const MAX_FD: usize = 4096;

pub fn run(args: Args) -> anyhow::Result<()> {
    crate::client::check_loopback(args.listen)?;
    crate::client::check_loopback(args.target)?;
    let listener = TcpListener::bind(args.listen)?;
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    match args.model {
        Model::Epoll => run_epoll(listener, args.target, deadline, false),
        Model::Splice => run_epoll(listener, args.target, deadline, true),
        Model::Uring => run_uring(listener, args.target, deadline),
    }
}

/// Connects to the target for a new client: both sockets without Nagle.
fn join(client: RawFd, target: SocketAddr) -> io::Result<RawFd> {
    let server = TcpStream::connect(target)?;
    server.set_nodelay(true)?;
    if server.as_raw_fd() as usize >= MAX_FD || client as usize >= MAX_FD {
        return Err(io::Error::other("too many connections for the relay"));
    }
    let on: libc::c_int = 1;
    // SAFETY: a valid socket and a pointer to a c_int of the right size.
    unsafe {
        libc::setsockopt(
            client,
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(server.into_raw_fd())
}

fn check(result: libc::c_int) -> io::Result<libc::c_int> {
    if result < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(result)
    }
}

/// A byte-moving system call's result: the bytes moved, or `None` when it
/// would have blocked.
fn moved(n: isize) -> io::Result<Option<usize>> {
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock => Ok(None),
        _ => Err(e),
    }
}

/// Sends all of `bytes`, waiting for room if the socket is full (rare with
/// small messages; this is a measurement tool, not a proxy).
fn send_all(fd: RawFd, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        // SAFETY: `bytes` is valid for its length.
        let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_NOSIGNAL) };
        match moved(n)? {
            Some(n) => bytes = &bytes[n..],
            None => wait_writable(fd),
        }
    }
    Ok(())
}

/// One `splice(2)` of up to `len` bytes, never waiting.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<Option<usize>> {
    let flags = libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK;
    // SAFETY: plain system call on descriptors the relay owns.
    moved(unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            flags,
        )
    })
}

fn wait_writable(fd: RawFd) {
    let mut poll = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut poll, 1, 1000) };
}

fn close(fd: RawFd) {
    // SAFETY: the relay owns `fd` and forgets it after this.
    unsafe { libc::close(fd) };
}

fn run_epoll(
    listener: TcpListener,
    target: SocketAddr,
    deadline: Instant,
    splice: bool,
) -> anyhow::Result<()> {
    listener.set_nonblocking(true)?;
    let listen_fd = listener.as_raw_fd();
    // SAFETY: plain syscalls on descriptors this function owns.
    let epoll = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    let watch = |fd: RawFd| {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: a valid epoll instance and event.
        check(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) })
    };
    watch(listen_fd)?;
    let mut peer = vec![-1; MAX_FD];
    // Per socket, the pipe its bytes go through (splice only).
    let mut pipe = vec![[-1, -1]; MAX_FD];
    let mut buffer = vec![0u8; BUFFER];
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    while Instant::now() < deadline {
        // SAFETY: `events` has room for its length.
        let ready =
            unsafe { libc::epoll_wait(epoll, events.as_mut_ptr(), events.len() as i32, 100) };
        for event in &events[..ready.max(0) as usize] {
            let fd = event.u64 as RawFd;
            if fd == listen_fd {
                while let Ok((client, _)) = listener.accept() {
                    // Never blocking: a stale event (a reused descriptor)
                    // must not stop the thread.
                    client.set_nonblocking(true)?;
                    let client = client.into_raw_fd();
                    let Ok(server) = join(client, target) else {
                        close(client);
                        continue;
                    };
                    // SAFETY: set O_NONBLOCK on a socket the relay owns.
                    unsafe { libc::fcntl(server, libc::F_SETFL, libc::O_NONBLOCK) };
                    for (a, b) in [(client, server), (server, client)] {
                        peer[a as usize] = b;
                        if splice {
                            let mut fds = [0; 2];
                            // SAFETY: room for two descriptors.
                            check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
                            pipe[a as usize] = fds;
                        }
                        watch(a)?;
                    }
                }
                continue;
            }
            let to = peer[fd as usize];
            if to < 0 {
                continue;
            }
            let moved = if splice {
                splice_once(fd, to, pipe[fd as usize])
            } else {
                copy_once(fd, to, &mut buffer)
            };
            if !matches!(moved, Ok(true)) {
                for end in [fd, to] {
                    peer[end as usize] = -1;
                    if splice {
                        pipe[end as usize].into_iter().for_each(close);
                    }
                    close(end);
                }
            }
        }
    }
    Ok(())
}

/// One `recv` and the `send` of what it got. Ok(false): the peer closed.
fn copy_once(from: RawFd, to: RawFd, buffer: &mut [u8]) -> io::Result<bool> {
    // SAFETY: `buffer` is valid for its length.
    let n = unsafe {
        libc::recv(
            from,
            buffer.as_mut_ptr().cast(),
            buffer.len(),
            libc::MSG_DONTWAIT,
        )
    };
    match moved(n)? {
        Some(0) => Ok(false),
        Some(n) => send_all(to, &buffer[..n]).map(|()| true),
        None => Ok(true),
    }
}

/// One `splice` into the socket's pipe and as many out of it as it takes.
fn splice_once(from: RawFd, to: RawFd, [pipe_out, pipe_in]: [RawFd; 2]) -> io::Result<bool> {
    let mut left = match splice(from, pipe_in, BUFFER)? {
        Some(0) => return Ok(false),
        Some(n) => n,
        None => return Ok(true),
    };
    while left > 0 {
        match splice(pipe_out, to, left)? {
            Some(n) => left -= n,
            None => wait_writable(to),
        }
    }
    Ok(true)
}

/// What an io_uring completion was for: the operation and the socket.
const ACCEPT: u64 = 1 << 32;
const RECV: u64 = 2 << 32;
const SEND: u64 = 3 << 32;
const STOP: u64 = 4 << 32;

fn run_uring(listener: TcpListener, target: SocketAddr, deadline: Instant) -> anyhow::Result<()> {
    let listen_fd = listener.as_raw_fd();
    // Declared before the ring, so dropped after it: no pending receive
    // outlives its buffer.
    let mut buffers: Vec<Vec<u8>> = vec![Vec::new(); MAX_FD];
    // Completions run when the relay asks for them, on its own thread: no
    // interrupt of the thread for each (kernel 6.1's DEFER_TASKRUN).
    let mut ring: IoUring = IoUring::builder()
        .setup_coop_taskrun()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(1024)?;
    let mut peer = vec![-1; MAX_FD];
    let mut completions: Vec<(u64, i32)> = Vec::with_capacity(1024);
    // Per socket: bytes of its buffer received, and how many of them sent.
    let mut pending = vec![(0usize, 0usize); MAX_FD];
    let stop_after = types::Timespec::from(deadline.saturating_duration_since(Instant::now()));
    let mut queue = vec![
        opcode::Accept::new(
            types::Fd(listen_fd),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build()
        .user_data(ACCEPT),
        opcode::Timeout::new(&stop_after).build().user_data(STOP),
    ];
    let recv = |fd: RawFd, buffer: &mut Vec<u8>| {
        opcode::Recv::new(types::Fd(fd), buffer.as_mut_ptr(), buffer.len() as u32)
            .build()
            .user_data(RECV | fd as u64)
    };
    loop {
        // SAFETY: every buffer and timespec an entry points to lives until
        // its completion (buffers are never freed while their socket is open).
        unsafe {
            let mut submission = ring.submission();
            for entry in queue.drain(..) {
                submission.push(&entry)?;
            }
        }
        ring.submit_and_wait(1)?;
        completions.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        for (user_data, result) in completions.drain(..) {
            let fd = (user_data & 0xffff_ffff) as RawFd;
            match user_data & !0xffff_ffff {
                STOP => return Ok(()),
                ACCEPT => {
                    queue.push(
                        opcode::Accept::new(
                            types::Fd(listen_fd),
                            std::ptr::null_mut(),
                            std::ptr::null_mut(),
                        )
                        .build()
                        .user_data(ACCEPT),
                    );
                    if result < 0 {
                        // Out of descriptors, say: back off instead of spinning.
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                    let Ok(server) = join(result, target) else {
                        close(result);
                        continue;
                    };
                    for (a, b) in [(result, server), (server, result)] {
                        peer[a as usize] = b;
                        buffers[a as usize] = vec![0; BUFFER];
                        queue.push(recv(a, &mut buffers[a as usize]));
                    }
                }
                RECV => {
                    let to = peer[fd as usize];
                    if to < 0 {
                        // Its peer closed first and shut this one down.
                        close(fd);
                        continue;
                    }
                    if result <= 0 {
                        end_pair(&mut peer, fd, to);
                        continue;
                    }
                    pending[fd as usize] = (result as usize, 0);
                    let buffer = &buffers[fd as usize];
                    queue.push(
                        opcode::Send::new(types::Fd(to), buffer.as_ptr(), result as u32)
                            .flags(libc::MSG_NOSIGNAL)
                            .build()
                            .user_data(SEND | fd as u64),
                    );
                }
                SEND => {
                    let to = peer[fd as usize];
                    if to < 0 {
                        // Its peer closed while this send was out.
                        close(fd);
                        continue;
                    }
                    if result < 0 {
                        end_pair(&mut peer, fd, to);
                        continue;
                    }
                    let (received, sent) = &mut pending[fd as usize];
                    *sent += result as usize;
                    if *sent < *received {
                        let rest = &buffers[fd as usize][*sent..*received];
                        queue.push(
                            opcode::Send::new(types::Fd(to), rest.as_ptr(), rest.len() as u32)
                                .flags(libc::MSG_NOSIGNAL)
                                .build()
                                .user_data(SEND | fd as u64),
                        );
                    } else {
                        queue.push(recv(fd, &mut buffers[fd as usize]));
                    }
                }
                _ => {}
            }
        }
    }
}

/// Closes `fd`, whose exchange with `to` is over, and shuts `to` down: its
/// pending receive (or send) then completes and closes it.
fn end_pair(peer: &mut [RawFd], fd: RawFd, to: RawFd) {
    peer[fd as usize] = -1;
    peer[to as usize] = -1;
    // SAFETY: a socket the relay owns.
    unsafe { libc::shutdown(to, libc::SHUT_RDWR) };
    close(fd);
}
