//! Cross-node relay client (bench/run's `cross-node` case): the same signal relay on a
//! cluster of Convene nodes (`docs/cluster.md`) in several layouts, side by side in one run.
//!
//! Every layout gets its own rooms, one per pair of sockets, created before anything is
//! measured; the room's owner is read from its lease in Redis (`convene:{room:<id>}:lease`),
//! and the pair's two sockets join on the nodes the layout names:
//!
//! - `same`: both on the owner (relays stay in the owner's memory);
//! - `edge`: both on one node that is not the owner (that node relays between them itself);
//! - `mixed`: one on the owner, one on another node (every relay crosses the bus once);
//! - `cross`: one on each of two nodes that are not the owner (every relay crosses the bus
//!   twice: edge → owner → the other edge; needs three nodes).
//!
//! Then, round after round, each layout in turn (the order rotates every round, so the
//! machine's noise hits every layout alike) has its pairs send for `seconds`: every socket
//! sends `signal {to: partner, data}` with ~1 KB of data at `rate` per second (a fixed rate,
//! the sockets' ticks spread over the period), and the partner reads `t` (µs since the
//! client started) back for the one-way latency. The sockets of the other layouts stay
//! joined and silent. Before the rounds, one window of the same length with every socket
//! silent measures the background (heartbeats, lease renewals, Redis's own timers).
//!
//! For every window: the CPU time (user + system, /proc/PID/stat) of every process in
//! BENCH_PIDS (environment: redis-server first, then the nodes), and Redis's command counts
//! (`INFO commandstats`: every command, and `PUBLISH`), each before and after; the
//! window's own `INFO` is taken off.
//!
//! `bench_cross_node <redis-url> <pairs> <rate> <seconds> <rounds> <api-key> <id=http://addr>...`
//! prints `idle seconds=… cpu_us_per_second=… commands_per_second=…`, then one line per
//! window: `window layout=… round=… messages_per_second=… p50_ms=… p99_ms=…
//! cpu_us_per_message=… commands_per_message=… publishes_per_message=… lost=…
//! cpu_us_per_message_gross=… commands_per_message_gross=… redis_cpu_us_per_message=…`
//! (redis-server's part of the CPU: the first pid of BENCH_PIDS); the per-message figures
//! but the gross ones have the background's share over the window taken off. Redis's
//! command counts include the commands that scripts run.

#[path = "measure.rs"]
#[allow(dead_code)] // server_cpu: this client measures every process of BENCH_PIDS instead
mod measure;
#[path = "ws_client.rs"]
mod ws_client;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;

use ws_client::{Ws, connect, next_json, sent_at};

/// Pairs set up at once.
const SETUP_CONCURRENCY: usize = 16;
/// How long a window keeps reading after its senders stopped (the last messages in flight).
const DRAIN: Duration = Duration::from_secs(1);
/// How long the servers are left alone after the set-up before the silent window (the seats'
/// writes and the admin events of the joins are batched and written a little later).
const SETTLE: Duration = Duration::from_secs(2);

const LAYOUTS: [&str; 4] = ["same", "edge", "mixed", "cross"];

struct Node {
    id: String,
    url: String,
}

/// The room's owner (a node id) as its lease says.
async fn owner(redis: &mut redis::aio::MultiplexedConnection, room: &str) -> String {
    let lease: Option<String> = redis::cmd("GET")
        .arg(format!("convene:{{room:{room}}}:lease"))
        .query_async(redis)
        .await
        .expect("read the lease");
    let lease = lease.unwrap_or_else(|| panic!("room {room} has no owner"));
    lease.split_once('|').expect("fence|node").1.to_string()
}

/// A socket and the address of its partner.
type Peer = (Ws, String);

/// Creates a room (on the first node; placement puts it where it goes) and joins its pair
/// on the nodes `layout` names for its owner.
async fn pair(
    http: &reqwest::Client,
    mut redis: redis::aio::MultiplexedConnection,
    nodes: &[Node],
    layout: &str,
    key: &str,
) -> Vec<Peer> {
    let room: Value = http
        .post(format!("{}/api/realtime/room", nodes[0].url))
        .header("x-vcs-token", key)
        .json(&json!({}))
        .send()
        .await
        .expect("create room")
        .json()
        .await
        .expect("room json");
    let id = room["room"]["id"].as_str().expect("room id").to_string();
    let token = room["room"]["token"].as_str().expect("token").to_string();
    let owner = owner(&mut redis, &id).await;
    let o = nodes
        .iter()
        .position(|n| n.id == owner)
        .unwrap_or_else(|| panic!("owner {owner} is not one of the nodes given"));
    let n = nodes.len();
    let (on_a, on_b) = match layout {
        "same" => (o, o),
        "edge" => ((o + 1) % n, (o + 1) % n),
        "mixed" => (o, (o + 1) % n),
        _ => ((o + 1) % n, (o + 2) % n),
    };
    let join = Message::text(json!({"type": "join", "token": token}).to_string());
    let ws_url = |i: usize| {
        format!(
            "{}/api/realtime/signaling",
            nodes[i].url.replacen("http", "ws", 1)
        )
    };
    let mut a = connect(&ws_url(on_a)).await;
    a.send(join.clone()).await.unwrap();
    let joined_a = next_json(&mut a).await;
    let mut b = connect(&ws_url(on_b)).await;
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

/// Every command Redis has run so far, and its `PUBLISH`es.
async fn commands(redis: &mut redis::aio::MultiplexedConnection) -> (f64, f64) {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(redis)
        .await
        .expect("INFO commandstats");
    let (mut all, mut publish) = (0.0, 0.0);
    for line in info.lines() {
        let Some((name, rest)) = line.split_once(":calls=") else {
            continue;
        };
        let calls: f64 = rest
            .split(',')
            .next()
            .and_then(|c| c.parse().ok())
            .unwrap_or(0.0);
        all += calls;
        if name == "cmdstat_publish" {
            publish += calls;
        }
    }
    (all, publish)
}

/// CPU time (µs) used so far by every process of BENCH_PIDS together, and by the first
/// (redis-server) alone.
fn cpu(pids: &[String]) -> (f64, f64) {
    let all = pids.iter().map(|p| measure::cpu_micros(p)).sum();
    (all, pids.first().map_or(0.0, |p| measure::cpu_micros(p)))
}

/// What a window measured: over `seconds`, CPU µs, Redis commands and publishes (the
/// window's own INFO taken off), and the latencies (µs) of the messages received.
struct Window {
    seconds: f64,
    cpu: f64,
    redis_cpu: f64,
    commands: f64,
    publishes: f64,
    latencies: Vec<u32>,
    sent: u64,
}

/// Runs one window: the sockets of `peers` send at `rate` each for `seconds` (none when
/// `rate` is 0), and read until the window ends.
async fn window(
    peers: Vec<Peer>,
    rate: u32,
    seconds: u64,
    start: Instant,
    redis: &mut redis::aio::MultiplexedConnection,
    pids: &[String],
) -> (Vec<Peer>, Window) {
    let padding = "x".repeat(1000);
    let (c0, p0) = commands(redis).await;
    let cpu0 = cpu(pids);
    let began = Instant::now();
    let stop_sending = began + Duration::from_secs(seconds);
    let stop_reading = stop_sending + DRAIN;
    let count = peers.len().max(1) as u32;
    let tasks: Vec<_> = peers
        .into_iter()
        .enumerate()
        .map(|(i, (mut ws, to))| {
            let padding = padding.clone();
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut sent = 0u64;
                let now = || start.elapsed().as_micros() as u64;
                let period = Duration::from_secs(1) / rate.max(1);
                // Each socket's ticks start at its own offset in the period.
                let first = tokio::time::Instant::from(began) + period * (i as u32) / count;
                let mut tick = tokio::time::interval_at(first, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                let sending = rate > 0;
                loop {
                    tokio::select! {
                        _ = tick.tick(), if sending && Instant::now() < stop_sending => {
                            let text = format!(
                                r#"{{"type":"signal","to":"{to}","data":{{"t":{},"p":"{padding}"}}}}"#,
                                now()
                            );
                            if ws.send(Message::text(text)).await.is_err() {
                                break;
                            }
                            sent += 1;
                        }
                        frame = tokio::time::timeout_at(stop_reading.into(), ws.next()) => match frame {
                            Ok(Some(Ok(Message::Text(text)))) => {
                                if let Some(t) = sent_at(text.as_str()) {
                                    latencies.push(now().saturating_sub(t) as u32);
                                }
                            }
                            Ok(Some(Ok(_))) => {}
                            Ok(_) => panic!("a socket closed during the window"),
                            Err(_) => break,
                        }
                    }
                }
                ((ws, to), latencies, sent)
            })
        })
        .collect();
    let mut peers = Vec::new();
    let mut latencies = Vec::new();
    let mut sent = 0;
    for task in tasks {
        let (peer, l, s) = task.await.expect("socket task");
        peers.push(peer);
        latencies.extend(l);
        sent += s;
    }
    let cpu1 = cpu(pids);
    let seconds = began.elapsed().as_secs_f64();
    let (c1, p1) = commands(redis).await;
    latencies.sort_unstable();
    (
        peers,
        Window {
            seconds,
            cpu: cpu1.0 - cpu0.0,
            redis_cpu: cpu1.1 - cpu0.1,
            // The first INFO is counted in the difference; the second is not.
            commands: c1 - c0 - 1.0,
            publishes: p1 - p0,
            latencies,
            sent,
        },
    )
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 9 {
        eprintln!("usage: see the top of bench/cross_node.rs");
        std::process::exit(2);
    }
    let redis_url = &args[1];
    let pairs: usize = args[2].parse().expect("pairs");
    let rate: u32 = args[3].parse().expect("rate");
    let seconds: u64 = args[4].parse().expect("seconds");
    let rounds: usize = args[5].parse().expect("rounds");
    let key = args[6].clone();
    let nodes: Vec<Node> = args[7..]
        .iter()
        .map(|a| {
            let (id, url) = a.split_once('=').expect("id=http://addr");
            Node {
                id: id.to_string(),
                url: url.trim_end_matches('/').to_string(),
            }
        })
        .collect();
    assert!(nodes.len() >= 3, "the cross layout needs three nodes");
    let pids: Vec<String> = std::env::var("BENCH_PIDS")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let client = redis::Client::open(redis_url.as_str()).expect("redis url");
    let mut redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect to redis");
    let http = reqwest::Client::new();

    let mut layouts: Vec<Vec<Peer>> = Vec::new();
    for layout in LAYOUTS {
        let set_up = Instant::now();
        let peers: Vec<Vec<Peer>> = futures_util::stream::iter(0..pairs)
            .map(|_| pair(&http, redis.clone(), &nodes, layout, &key))
            .buffer_unordered(SETUP_CONCURRENCY)
            .collect()
            .await;
        eprintln!(
            "{layout}: {pairs} pairs joined in {:.1} s",
            set_up.elapsed().as_secs_f64()
        );
        layouts.push(peers.into_iter().flatten().collect());
    }
    let start = Instant::now();
    tokio::time::sleep(SETTLE).await;

    // The background: every socket joined and silent.
    let all: Vec<Peer> = layouts.iter_mut().flat_map(std::mem::take).collect();
    let (mut all, idle) = window(all, 0, seconds, start, &mut redis, &pids).await;
    let idle_cpu = idle.cpu / idle.seconds;
    let idle_redis_cpu = idle.redis_cpu / idle.seconds;
    let idle_commands = idle.commands / idle.seconds;
    println!(
        "idle seconds={:.2} cpu_us_per_second={idle_cpu:.0} commands_per_second={idle_commands:.1}",
        idle.seconds
    );
    for peers in layouts.iter_mut() {
        *peers = all.drain(..2 * pairs).collect();
    }

    for round in 0..rounds {
        for k in 0..LAYOUTS.len() {
            let l = (round + k) % LAYOUTS.len();
            let peers = std::mem::take(&mut layouts[l]);
            eprintln!("round {}: {} sending", round + 1, LAYOUTS[l]);
            let (peers, w) = window(peers, rate, seconds, start, &mut redis, &pids).await;
            layouts[l] = peers;
            let received = w.latencies.len() as f64;
            let per = |x: f64| x / received.max(1.0);
            let pick = |q: f64| measure::percentile_ms(&w.latencies, q);
            println!(
                "window layout={} round={} messages_per_second={:.0} p50_ms={:.3} p99_ms={:.3} \
                 cpu_us_per_message={:.2} commands_per_message={:.3} publishes_per_message={:.3} \
                 lost={} cpu_us_per_message_gross={:.2} commands_per_message_gross={:.3} \
                 redis_cpu_us_per_message={:.2}",
                LAYOUTS[l],
                round + 1,
                received / seconds as f64,
                pick(0.5),
                pick(0.99),
                per(w.cpu - idle_cpu * w.seconds),
                per(w.commands - idle_commands * w.seconds),
                per(w.publishes),
                w.sent.saturating_sub(w.latencies.len() as u64),
                per(w.cpu),
                per(w.commands),
                per(w.redis_cpu - idle_redis_cpu * w.seconds),
            );
        }
    }
}
