//! A WebSocket echo backend (tokio-tungstenite) that records every message
//! it reads, for the tests of websockets through wharf.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderMap, HeaderValue, StatusCode};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};

use super::within;

/// Message and frame limits large enough for the 16 MiB test, on both ends.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(64 << 20))
        .max_frame_size(None)
}

/// One connection accepted by the echo backend.
pub struct BackendConn {
    /// Request path of the handshake.
    pub path: String,
    /// Request headers exactly as the backend received them.
    pub headers: HeaderMap,
    /// Whether the WebSocket handshake completed.
    pub accepted: bool,
    /// Every message the backend read (text, binary, ping, pong, close), in order.
    pub messages: mpsc::UnboundedReceiver<Message>,
}

impl BackendConn {
    pub async fn next_message(&mut self) -> Message {
        within("a message at the backend", self.messages.recv())
            .await
            .expect("backend connection still reporting")
    }

    /// The next message that is not a ping or pong.
    pub async fn next_data_or_close(&mut self) -> Message {
        for _ in 0..100 {
            match self.next_message().await {
                Message::Ping(_) | Message::Pong(_) => continue,
                other => return other,
            }
        }
        panic!("backend saw only pings and pongs");
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("visible ASCII header"))
    }
}

/// An in-process WebSocket server that echoes every text and binary message.
/// Behaviour by request path:
/// - `/refuse`: refuses the handshake with `403 Forbidden`;
/// - `/close-policy`: closes at once with 1008 "policy";
/// - `/server-ping`: sends a ping "from-server" at once, then echoes;
/// - anything else: echoes.
///
/// It accepts the first subprotocol the client offers.
pub struct WsBackend {
    pub addr: SocketAddr,
    conns: mpsc::UnboundedReceiver<BackendConn>,
}

impl WsBackend {
    pub async fn start() -> WsBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().expect("backend address");
        let (tx, conns) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve_ws(stream, tx.clone()));
            }
        });
        WsBackend { addr, conns }
    }

    pub async fn next_conn(&mut self) -> BackendConn {
        within("a connection at the backend", self.conns.recv())
            .await
            .expect("backend still accepting")
    }
}

async fn serve_ws(stream: TcpStream, conns: mpsc::UnboundedSender<BackendConn>) {
    let mut seen: Option<(String, HeaderMap)> = None;
    // tungstenite's callback signature, large error type and all.
    #[allow(clippy::result_large_err)]
    let callback = |request: &Request, mut response: Response| {
        let path = request.uri().path().to_owned();
        seen = Some((path.clone(), request.headers().clone()));
        if path == "/refuse" {
            let mut refusal = ErrorResponse::new(Some("go away".to_owned()));
            *refusal.status_mut() = StatusCode::FORBIDDEN;
            let headers = refusal.headers_mut();
            headers.insert("x-refused", HeaderValue::from_static("yes"));
            headers.insert("content-length", HeaderValue::from_static("7"));
            return Err(refusal);
        }
        if let Some(offered) = request.headers().get("sec-websocket-protocol") {
            let first = offered
                .to_str()
                .unwrap_or("")
                .split(',')
                .next()
                .unwrap_or("")
                .trim();
            if let Ok(value) = HeaderValue::from_str(first) {
                response
                    .headers_mut()
                    .insert("sec-websocket-protocol", value);
            }
        }
        Ok(response)
    };
    let result =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config())).await;
    let Some((path, headers)) = seen else {
        // Not even a parseable handshake request; nothing to report.
        return;
    };
    let (events, messages) = mpsc::unbounded_channel();
    let _ = conns.send(BackendConn {
        path: path.clone(),
        headers,
        accepted: result.is_ok(),
        messages,
    });
    let Ok(mut ws) = result else { return };
    let greeting = match path.as_str() {
        "/close-policy" => {
            let frame = CloseFrame {
                code: CloseCode::Policy,
                reason: "policy".into(),
            };
            ws.close(Some(frame)).await
        }
        "/server-ping" => ws.send(Message::Ping("from-server".into())).await,
        _ => Ok(()),
    };
    if greeting.is_err() {
        return;
    }
    // Pings are answered and closes acknowledged by tungstenite itself (on
    // the next read); only data is echoed.
    while let Some(Ok(message)) = ws.next().await {
        let echo =
            matches!(message, Message::Text(_) | Message::Binary(_)).then(|| message.clone());
        let _ = events.send(message);
        if let Some(echo) = echo
            && ws.send(echo).await.is_err()
        {
            break;
        }
    }
}

/// A masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, opcode, payload, Some([0x37, 0xfa, 0x21, 0x3d]))
}

/// An unmasked server frame.
pub fn server_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    frame(fin, opcode, payload, None)
}

fn frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let masked = if mask.is_some() { 0x80 } else { 0 };
    let mut frame = vec![if fin { 0x80 } else { 0 } | opcode];
    match payload.len() {
        len @ 0..=125 => frame.push(masked | len as u8),
        len @ 126..=0xffff => {
            frame.push(masked | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        len => {
            frame.push(masked | 127);
            frame.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            frame.extend_from_slice(&mask);
            frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => frame.extend_from_slice(payload),
    }
    frame
}

/// Splits bytes a server sent into frames: (fin, opcode, payload); a
/// trailing incomplete frame is left out.
pub fn server_frames(mut bytes: &[u8]) -> Vec<(bool, u8, Vec<u8>)> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        assert_eq!(bytes[1] & 0x80, 0, "a server frame must not be masked");
        let (len, start) = match bytes[1] & 0x7f {
            126 if bytes.len() >= 4 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 if bytes.len() >= 10 => {
                let mut n = [0; 8];
                n.copy_from_slice(&bytes[2..10]);
                (u64::from_be_bytes(n) as usize, 10)
            }
            126 | 127 => break,
            n => (n as usize, 2),
        };
        if bytes.len() < start + len {
            break;
        }
        frames.push((
            bytes[0] & 0x80 != 0,
            bytes[0] & 0x0f,
            bytes[start..start + len].to_vec(),
        ));
        bytes = &bytes[start + len..];
    }
    frames
}

/// The close code of a close frame's payload.
pub fn close_code(payload: &[u8]) -> Option<u16> {
    (payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))
}
