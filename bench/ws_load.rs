//! Signaling load client. Sockets come in pairs; each socket keeps `WINDOW` messages of ~1 KB
//! in flight to its partner through the server, and answers every message it receives with a
//! new one (ping-pong), for a fixed time. The same client drives every server, in its own
//! protocol:
//!
//! - `convene`: each pair gets a room (`POST /api/realtime/room`), both sockets `join` with its
//!   token, and send `signal {to: partner, data}`; they receive `signal {from, data}`.
//! - `peerjs`: the PeerJS server (npm `peer`): sockets open `/peerjs?key=peerjs&id=ID&token=T`,
//!   wait for `OPEN`, and send `{"type":"OFFER","dst":partner,"payload":data}`; they receive
//!   the same with `src`.
//! - `bare`: the bare relay (bench/bare_relay.rs): sockets open `/?pair=K` and send the same
//!   text as Convene's `signal`, which comes back unchanged.
//!
//! `data` is `{"t":<µs since start>,"p":"xxx…"}` (1,000 bytes of padding): the receiver reads
//! `t` back for the latency. Pairs are set up 32 at a time, the same way for every server.
//!
//! `bench_ws_load relay <convene|peerjs|bare> <http://addr> <sockets> <seconds> [api-key]`
//!   prints `messages_per_second=… p50_ms=… p99_ms=… server_cpu_us_per_message=…`; the last is
//!   the CPU time that the process BENCH_SERVER_PID (environment) used over the measured
//!   window, per relayed message (set-up excluded).
//! `bench_ws_load idle <convene|peerjs|bare> <http://addr> <sockets> <hold-seconds> [api-key]`
//!   opens (and joins) every socket, prints `joined=N seconds=…`, then holds them open.

#[path = "measure.rs"]
mod measure;
#[path = "ws_client.rs"]
mod ws_client;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use ws_client::{Ws, connect, next_json, sent_at};

/// Messages each socket keeps in flight.
const WINDOW: usize = 4;
/// Pairs set up at once.
const SETUP_CONCURRENCY: usize = 32;

/// Makes PeerJS ids unique across runs against the same server.
static RUN: AtomicU64 = AtomicU64::new(0);

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Convene,
    PeerJs,
    Bare,
}

impl Target {
    fn parse(s: &str) -> Target {
        match s {
            "convene" => Target::Convene,
            "peerjs" => Target::PeerJs,
            "bare" => Target::Bare,
            _ => panic!("unknown target {s}: convene, peerjs or bare"),
        }
    }
}

/// A socket and the address of its partner.
type Peer = (Ws, String);

/// Opens `sockets` sockets in pairs, `SETUP_CONCURRENCY` pairs at a time.
async fn open_pairs(target: Target, base: &str, sockets: usize, key: &str) -> Vec<Peer> {
    let ws_base = base.replacen("http", "ws", 1);
    let http = reqwest::Client::new();
    let run = RUN.fetch_add(1, Ordering::Relaxed);
    let nonce = std::process::id();
    let pairs: Vec<Vec<Peer>> = futures_util::stream::iter(0..sockets / 2)
        .map(|pair| {
            let (http, ws_base) = (&http, &ws_base);
            async move {
                match target {
                    Target::Convene => join_pair(http, base, ws_base, key).await,
                    Target::Bare => {
                        let url = format!("{ws_base}/?pair={pair}");
                        let a = connect(&url).await;
                        let b = connect(&url).await;
                        vec![(a, String::new()), (b, String::new())]
                    }
                    Target::PeerJs => {
                        let id = |side: u8| format!("b{nonce}-{run}-{pair}-{side}");
                        let mut out = Vec::new();
                        for side in 0..2u8 {
                            let url = format!(
                                "{ws_base}/peerjs?key=peerjs&id={}&token=t{pair}",
                                id(side)
                            );
                            let mut ws = connect(&url).await;
                            let open = next_json(&mut ws).await;
                            assert_eq!(open["type"], "OPEN", "PeerJS answered {open}");
                            out.push((ws, id(1 - side)));
                        }
                        out
                    }
                }
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    pairs.into_iter().flatten().collect()
}

/// Creates a room and joins two sockets to it.
async fn join_pair(http: &reqwest::Client, base: &str, ws_base: &str, key: &str) -> Vec<Peer> {
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
    let join = Message::text(json!({"type": "join", "token": token}).to_string());
    let mut a = connect(&format!("{ws_base}/api/realtime/signaling")).await;
    a.send(join.clone()).await.unwrap();
    let joined_a = next_json(&mut a).await;
    let mut b = connect(&format!("{ws_base}/api/realtime/signaling")).await;
    b.send(join).await.unwrap();
    let joined_b = next_json(&mut b).await;
    let _announce = next_json(&mut a).await; // participantJoined
    let address = |joined: &Value| {
        joined["address"]
            .as_str()
            .unwrap_or_else(|| panic!("join answered {joined}"))
            .to_string()
    };
    let (address_a, address_b) = (address(&joined_a), address(&joined_b));
    vec![(a, address_b), (b, address_a)]
}

fn message(target: Target, to: &str, t: u64, padding: &str) -> Message {
    Message::text(match target {
        Target::PeerJs => {
            format!(r#"{{"type":"OFFER","dst":"{to}","payload":{{"t":{t},"p":"{padding}"}}}}"#)
        }
        _ => format!(r#"{{"type":"signal","to":"{to}","data":{{"t":{t},"p":"{padding}"}}}}"#),
    })
}

async fn relay(target: Target, base: String, sockets: usize, seconds: u64, key: String) {
    let pairs = open_pairs(target, &base, sockets, &key).await;
    let cpu_before = measure::server_cpu();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let padding = "x".repeat(1000);
    let tasks: Vec<_> = pairs
        .into_iter()
        .map(|(mut ws, to)| {
            let padding = padding.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let now = || start.elapsed().as_micros() as u64;
                for _ in 0..WINDOW {
                    if ws
                        .send(message(target, &to, now(), &padding))
                        .await
                        .is_err()
                    {
                        return latencies;
                    }
                }
                loop {
                    let frame = tokio::time::timeout_at(deadline.into(), ws.next()).await;
                    let text = match frame {
                        Ok(Some(Ok(Message::Text(text)))) => text,
                        Ok(Some(Ok(_))) => continue,
                        _ => break,
                    };
                    if let Some(t) = sent_at(text.as_str()) {
                        let received = now();
                        latencies.push(received.saturating_sub(t) as u32);
                        if ws
                            .send(message(target, &to, received, &padding))
                            .await
                            .is_err()
                        {
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
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = measure::server_cpu();
    let count = all.len().max(1) as f64;
    let per_message = |i: usize| (cpu_after[i] - cpu_before[i]) / count;
    all.sort_unstable();
    let pick = |q: f64| measure::percentile_ms(&all, q);
    println!(
        "messages_per_second={:.0} p50_ms={:.3} p99_ms={:.3} server_cpu_us_per_message={:.2}",
        all.len() as f64 / elapsed,
        pick(0.5),
        pick(0.99),
        per_message(0)
    );
}

async fn idle(target: Target, base: String, sockets: usize, hold: u64, key: String) {
    let start = Instant::now();
    let pairs = open_pairs(target, &base, sockets, &key).await;
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
    if args.len() < 6 {
        eprintln!("usage: see the top of bench/ws_load.rs");
        std::process::exit(2);
    }
    let target = Target::parse(&args[2]);
    let base = args[3].trim_end_matches('/').to_string();
    let sockets: usize = args[4].parse().expect("sockets");
    let seconds: u64 = args[5].parse().expect("seconds");
    let key = args.get(6).cloned().unwrap_or_default();
    match args[1].as_str() {
        "relay" => relay(target, base, sockets, seconds, key).await,
        "idle" => idle(target, base, sockets, seconds, key).await,
        _ => eprintln!("usage: see the top of bench/ws_load.rs"),
    }
}
