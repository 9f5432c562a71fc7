//! The upper bound for signaling: a bare WebSocket relay with no protocol at all. A client
//! connects to `/?pair=K`; every text frame it sends goes to the other socket of pair K,
//! unchanged. Each socket has a reader task and a writer task fed by a channel; the writer
//! sends whatever has queued up before it flushes. Read buffers are 4 KiB, like the load
//! client's. `bench_bare_relay 127.0.0.1:0` prints `listening on ADDR`.

// The handshake callback's error type is tungstenite's `ErrorResponse`, fixed by its API.
#![allow(clippy::result_large_err)]

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// The senders of the (at most two) sockets of each pair.
type Pairs = Arc<Mutex<HashMap<String, Vec<mpsc::Sender<Message>>>>>;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = TcpListener::bind(bind).await?;
    println!("listening on {}", listener.local_addr()?);
    let pairs: Pairs = Arc::default();
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(serve(stream, pairs.clone()));
    }
}

async fn serve(stream: tokio::net::TcpStream, pairs: Pairs) {
    let mut pair = String::new();
    let callback = |req: &Request, res: Response| {
        let query = req.uri().query().unwrap_or("");
        pair = query.trim_start_matches("pair=").to_string();
        Ok(res)
    };
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 4096;
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)).await
    else {
        return;
    };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<Message>(256);
    let index = {
        let mut pairs = pairs.lock().unwrap();
        let members = pairs.entry(pair.clone()).or_default();
        members.push(tx);
        members.len() - 1
    };
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if sink.feed(message).await.is_err() {
                return;
            }
            while let Ok(message) = rx.try_recv() {
                if sink.feed(message).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
    });
    // The partner's sender, looked up until the partner has connected, then kept.
    let mut partner: Option<mpsc::Sender<Message>> = None;
    while let Some(Ok(message)) = source.next().await {
        if !message.is_text() {
            continue;
        }
        if partner.is_none() {
            partner = pairs
                .lock()
                .unwrap()
                .get(&pair)
                .and_then(|members| members.get(1 - index.min(1)).cloned());
        }
        if let Some(partner) = &partner {
            // Dropped when the partner's queue is full, like a relay that never waits.
            let _ = partner.try_send(message);
        }
    }
    writer.abort();
    pairs.lock().unwrap().remove(&pair);
}
