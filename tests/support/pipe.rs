//! Raw byte ends for tests that write HTTP by hand on both sides of wharf:
//! a client that sends an upgrade request byte for byte, and a backend whose
//! connections the test drives itself (answering `101` by hand, then
//! behaving as a plain byte server).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use super::within;

/// One end of a raw TCP connection with its read buffer.
pub struct RawEnd {
    pub stream: TcpStream,
    /// Read and not yet taken.
    pub buf: Vec<u8>,
}

impl RawEnd {
    fn new(stream: TcpStream) -> RawEnd {
        stream.set_nodelay(true).expect("nodelay");
        RawEnd {
            stream,
            buf: Vec::new(),
        }
    }

    pub async fn connect(addr: SocketAddr) -> RawEnd {
        let stream = within("connect", TcpStream::connect(addr))
            .await
            .expect("connect");
        RawEnd::new(stream)
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        within("a write", self.stream.write_all(bytes))
            .await
            .expect("write");
    }

    /// Reads more bytes into the buffer; false on EOF.
    pub async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = within("bytes to read", self.stream.read(&mut chunk))
            .await
            .expect("read");
        self.buf.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// Reads one HTTP head (up to and including the blank line); the bytes
    /// after it stay buffered. None on EOF before any byte of it.
    pub async fn read_head(&mut self) -> Option<String> {
        for _ in 0..10_000 {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buf.drain(..end + 4).collect();
                return Some(String::from_utf8(head).expect("ASCII head"));
            }
            if !self.fill().await {
                assert!(
                    self.buf.is_empty(),
                    "EOF inside a head: {:?}",
                    String::from_utf8_lossy(&self.buf)
                );
                return None;
            }
        }
        panic!("head too long");
    }

    /// [`read_head`](Self::read_head) where EOF fails the test.
    pub async fn head(&mut self) -> String {
        self.read_head().await.expect("a head, not EOF")
    }

    pub async fn read_exact(&mut self, n: usize) -> Vec<u8> {
        for _ in 0..100_000 {
            if self.buf.len() >= n {
                return self.buf.drain(..n).collect();
            }
            assert!(
                self.fill().await,
                "EOF after {:?} ({} of {n} bytes)",
                String::from_utf8_lossy(&self.buf),
                self.buf.len()
            );
        }
        panic!("too many reads");
    }

    /// One line without its CRLF.
    pub async fn read_line(&mut self) -> String {
        for _ in 0..10_000 {
            if let Some(end) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..end + 2).collect();
                return String::from_utf8_lossy(&line[..end]).into_owned();
            }
            assert!(self.fill().await, "EOF inside a line");
        }
        panic!("line too long");
    }

    /// Reads everything up to EOF.
    pub async fn read_to_end(&mut self) -> Vec<u8> {
        for _ in 0..100_000 {
            if !self.fill().await {
                return std::mem::take(&mut self.buf);
            }
        }
        panic!("no EOF after 100000 reads");
    }

    /// Shuts down the write half (sends FIN); reading goes on.
    pub async fn shutdown_write(&mut self) {
        within("shutdown", self.stream.shutdown())
            .await
            .expect("shutdown");
    }
}

/// A backend speaking HTTP by hand: each accepted connection is handed to the
/// test, which reads the request and writes whatever it wants.
pub struct RawBackend {
    pub addr: SocketAddr,
    /// Accepted connections, in order.
    pub conns: mpsc::UnboundedReceiver<RawEnd>,
}

impl RawBackend {
    pub async fn start() -> RawBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind raw backend");
        let addr = listener.local_addr().expect("raw backend address");
        let (tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                if tx.send(RawEnd::new(stream)).is_err() {
                    break;
                }
            }
        });
        RawBackend { addr, conns }
    }

    pub async fn next_conn(&mut self) -> RawEnd {
        within("a connection at the raw backend", self.conns.recv())
            .await
            .expect("raw backend still accepting")
    }
}
