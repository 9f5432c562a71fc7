//! The upper bound for signaling: a bare WebSocket relay. A client connects to
//! `/?pair=K`; every text frame it sends goes to the other socket of pair K, unchanged.
//! `bench_bare_relay 127.0.0.1:0` prints `listening on ADDR`.

// The handshake callback's error type is tungstenite's `ErrorResponse`, fixed by its API.
#![allow(clippy::result_large_err)]

use futures_util::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{Request, Response};

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
        let pairs = pairs.clone();
        tokio::spawn(async move {
            let mut pair = String::new();
            let callback = |req: &Request, res: Response| {
                pair = req
                    .uri()
                    .query()
                    .unwrap_or("")
                    .trim_start_matches("pair=")
                    .to_string();
                Ok(res)
            };
            let Ok(ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
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
                    if sink.send(message).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(message)) = source.next().await {
                if !message.is_text() {
                    continue;
                }
                let partner = pairs
                    .lock()
                    .unwrap()
                    .get(&pair)
                    .and_then(|m| m.get(1 - index.min(1)).cloned());
                if let Some(partner) = partner {
                    let _ = partner.try_send(message);
                }
            }
            writer.abort();
            pairs.lock().unwrap().remove(&pair);
        });
    }
}
