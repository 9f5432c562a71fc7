//! Signaling load client. Pairs of sockets relay ~1 KB messages through a server: Convene
//! (pairs joined to rooms of their own, `signal {to}`), or the bare relay (`/?pair=K`).
//!
//! `bench_ws_load relay <convene|bare> <http://addr> <sockets> <seconds> [api-key]`
//!   prints `messages_per_second=… p50_ms=… p99_ms=…`
//! `bench_ws_load idle <convene|bare> <http://addr> <sockets> <hold-seconds> [api-key]`
//!   joins every socket, prints `joined=N seconds=…`, then holds them open.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Messages each socket keeps in flight.
const WINDOW: usize = 4;

async fn connect(url: &str) -> Ws {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 4096;
    config.write_buffer_size = 0;
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), false)
        .await
        .expect("connect");
    ws
}

async fn next_json(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await.expect("socket open").expect("frame") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).expect("json"),
            _ => continue,
        }
    }
}

/// Opens `sockets` sockets in pairs; answers each socket with the address of its partner.
async fn open_pairs(target: &str, base: &str, sockets: usize, key: &str) -> Vec<(Ws, String)> {
    let ws_base = base.replacen("http", "ws", 1);
    let mut out = Vec::with_capacity(sockets);
    if target == "bare" {
        for i in 0..sockets {
            out.push((
                connect(&format!("{ws_base}/?pair={}", i / 2)).await,
                "partner".to_string(),
            ));
        }
        return out;
    }
    let http = reqwest::Client::new();
    // Pairs are set up 32 at a time.
    let pairs: Vec<Vec<(Ws, String)>> = futures_util::stream::iter(0..sockets / 2)
        .map(|_| join_pair(&http, base, &ws_base, key))
        .buffer_unordered(32)
        .collect()
        .await;
    out.extend(pairs.into_iter().flatten());
    out
}

/// Creates a room and joins two sockets to it.
async fn join_pair(
    http: &reqwest::Client,
    base: &str,
    ws_base: &str,
    key: &str,
) -> Vec<(Ws, String)> {
    let room: Value = http
        .post(format!("{base}/api/realtime/room"))
        .header("x-vcs-token", key)
        .json(&json!({}))
        .send()
        .await
        .expect("create room")
        .json()
        .await
        .expect("room json");
    let token = room["room"]["token"].as_str().expect("token").to_string();
    let mut a = connect(&format!("{ws_base}/api/realtime/signaling")).await;
    a.send(Message::text(
        json!({"type": "join", "token": token}).to_string(),
    ))
    .await
    .unwrap();
    let joined_a = next_json(&mut a).await;
    let mut b = connect(&format!("{ws_base}/api/realtime/signaling")).await;
    b.send(Message::text(
        json!({"type": "join", "token": token}).to_string(),
    ))
    .await
    .unwrap();
    let joined_b = next_json(&mut b).await;
    let _announce = next_json(&mut a).await; // participantJoined
    let address_a = joined_a["address"].as_str().expect("address").to_string();
    let address_b = joined_b["address"].as_str().expect("address").to_string();
    vec![(a, address_b), (b, address_a)]
}

fn message(to: &str, start: Instant, padding: &str) -> Message {
    let t = start.elapsed().as_micros() as u64;
    Message::text(format!(
        r#"{{"type":"signal","to":"{to}","data":{{"t":{t},"p":"{padding}"}}}}"#
    ))
}

async fn relay(target: String, base: String, sockets: usize, seconds: u64, key: String) {
    let pairs = open_pairs(&target, &base, sockets, &key).await;
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let padding = "x".repeat(1000);
    let tasks: Vec<_> = pairs
        .into_iter()
        .map(|(mut ws, to)| {
            let padding = padding.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                for _ in 0..WINDOW {
                    ws.send(message(&to, start, &padding)).await.unwrap();
                }
                loop {
                    let frame = tokio::time::timeout_at(deadline.into(), ws.next()).await;
                    let Ok(Some(Ok(Message::Text(text)))) = frame else {
                        if matches!(frame, Ok(Some(Ok(_)))) {
                            continue;
                        }
                        break;
                    };
                    let now = start.elapsed().as_micros() as u64;
                    let value: Value = serde_json::from_str(text.as_str()).unwrap();
                    if let Some(t) = value["data"]["t"].as_u64() {
                        latencies.push((now.saturating_sub(t)) as u32);
                        if ws.send(message(&to, start, &padding)).await.is_err() {
                            break;
                        }
                    }
                }
                latencies
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.unwrap());
    }
    all.sort_unstable();
    let pick = |q: f64| {
        all.get(((all.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(0) as f64
            / 1000.0
    };
    println!(
        "messages_per_second={:.0} p50_ms={:.3} p99_ms={:.3}",
        all.len() as f64 / seconds as f64,
        pick(0.5),
        pick(0.99)
    );
}

async fn idle(target: String, base: String, sockets: usize, hold: u64, key: String) {
    let start = Instant::now();
    let pairs = open_pairs(&target, &base, sockets, &key).await;
    println!(
        "joined={} seconds={:.3}",
        pairs.len(),
        start.elapsed().as_secs_f64()
    );
    let deadline = Instant::now() + Duration::from_secs(hold);
    // Keep reading (so pings are answered) until the hold ends.
    let tasks: Vec<_> = pairs
        .into_iter()
        .map(|(mut ws, _)| {
            tokio::spawn(async move {
                while tokio::time::timeout_at(deadline.into(), ws.next())
                    .await
                    .is_ok_and(|f| f.is_some())
                {}
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let sockets: usize = arg(4).parse().expect("sockets");
    let seconds: u64 = arg(5).parse().expect("seconds");
    match arg(1).as_str() {
        "relay" => relay(arg(2), arg(3), sockets, seconds, arg(6)).await,
        "idle" => idle(arg(2), arg(3), sockets, seconds, arg(6)).await,
        _ => eprintln!("usage: see the top of bench/ws_load.rs"),
    }
}
