//! What the signaling load clients (bench/ws_load.rs, bench/cross_node.rs) share: a lean
//! WebSocket client (small read buffer, frames written at once), its next JSON message, and
//! the send time stamped in a relayed message.

use futures_util::StreamExt;
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `url`; a refused connect (a full accept queue under a burst of connects) is
/// tried again a little later, up to 20 times.
pub async fn connect(url: &str) -> Ws {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 4096;
    config.write_buffer_size = 0;
    let mut tries = 0;
    loop {
        match tokio_tungstenite::connect_async_with_config(url, Some(config), true).await {
            Ok((ws, _)) => return ws,
            Err(e) if tries < 20 => {
                tries += 1;
                if tries == 20 {
                    eprintln!("connect {url}: {e}");
                }
                tokio::time::sleep(Duration::from_millis(50 * tries)).await;
            }
            Err(e) => panic!("connect {url}: {e}"),
        }
    }
}

/// The next text message, parsed.
pub async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("socket open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json"),
            _ => continue,
        }
    }
}

/// The `t` of a relayed message, found without parsing the whole JSON text (the client shares
/// the machine's cores with the servers, so it does as little as it can).
pub fn sent_at(text: &str) -> Option<u64> {
    let at = text.find(r#"{"t":"#)? + 5;
    let digits = &text[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}
