//! The HTTP backend: keep-alive HTTP/1.1 as cheap as it can be made, so that
//! the core the load shares with the backends goes to the load.
//! `GET /headers` answers with the request head it received, which lets the
//! script check what each proxy forwards.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const HEAD_LIMIT: usize = 64 * 1024;
const HELLO: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n";

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    crate::client::serve_forever(listen, serve).await
}

async fn serve(mut stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(4096);
    let mut out = Vec::with_capacity(4096);
    loop {
        // Answer every complete request in the buffer (pipelining), then write once.
        let mut close = false;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut request = httparse::Request::new(&mut headers);
            let head_len = match request.parse(&buf)? {
                httparse::Status::Complete(n) => n,
                httparse::Status::Partial => break,
            };
            let mut body_len = 0usize;
            for h in request.headers.iter() {
                if h.name.eq_ignore_ascii_case("content-length") {
                    body_len = std::str::from_utf8(h.value)?.trim().parse()?;
                } else if h.name.eq_ignore_ascii_case("connection")
                    && h.value.eq_ignore_ascii_case(b"close")
                {
                    close = true;
                }
            }
            if buf.len() < head_len + body_len {
                anyhow::ensure!(head_len + body_len <= HEAD_LIMIT, "request too large");
                break;
            }
            if request.path == Some("/headers") {
                let head = &buf[..head_len];
                out.extend_from_slice(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n",
                        head.len()
                    )
                    .as_bytes(),
                );
                out.extend_from_slice(head);
            } else {
                out.extend_from_slice(HELLO);
            }
            buf.drain(..head_len + body_len);
            if close {
                break;
            }
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return Ok(());
        }
        anyhow::ensure!(buf.len() < HEAD_LIMIT, "request head too large");
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}
