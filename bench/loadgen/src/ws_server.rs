//! The WebSocket backend: echoes every text and binary message.

use std::net::SocketAddr;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::client::ws_config;

pub async fn run(listen: SocketAddr) -> anyhow::Result<()> {
    crate::client::serve_forever(listen, echo).await
}

async fn echo(stream: TcpStream) -> anyhow::Result<()> {
    stream.set_nodelay(true)?;
    let mut ws = tokio_tungstenite::accept_async_with_config(stream, Some(ws_config())).await?;
    while let Some(message) = ws.next().await {
        match message? {
            m @ (Message::Text(_) | Message::Binary(_)) => ws.send(m).await?,
            Message::Close(_) => break,
            // Pings are answered by tungstenite itself on the next write or flush.
            _ => ws.flush().await?,
        }
    }
    Ok(())
}
