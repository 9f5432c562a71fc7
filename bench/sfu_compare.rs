//! SFU side by side: the same str0m peers and the same stamped synthetic media
//! (bench/sfu_peer.rs) against Convene's SFU or Janus's videoroom plugin, on 127.0.0.1.
//!
//! `bench_sfu_compare <convene|janus> <http://addr> <api-key|-> <fanout|room|conference> <n> <seconds> <loss-percent>`
//!
//! - `fanout N`: one publisher (Opus 50 packets/s, VP8 30 fps) and N subscribers.
//! - `room N`: N participants, each publishing and receiving the N−1 others.
//! - `conference N` (Convene only): N participants, each publishing simulcast video (q, h,
//!   f: 320×180, 640×360, 1280×720) and receiving the others, 3 of them speaking (the others
//!   muted), each showing one speaker large, 8 thumbnails and nobody else (`views`); see
//!   [`conference`] for what it measures and prints. Janus's videoroom is left out: it has
//!   simulcast and a per-subscriber `substream`, but chosen by each subscriber's explicit
//!   request (no element sizes, no pausing of unused layers at the publisher), so the same
//!   views would measure the client's choice rather than the server's.
//!
//! Convene: a room created over REST, every participant one peer connection negotiated over
//! the signaling WebSocket (`signal {to: "sfu"}`), as bench/sfu_load.rs does; in a room of N
//! participants they join one after the other, each once the one before is connected.
//!
//! Janus (videoroom through its HTTP API; `addr` is the transport's, base path `/janus`):
//! each participant has a session of its own, kept alive by a long poll that also carries
//! its events; a room is created (VP8 and Opus, no bitrate cap, no periodic keyframe
//! requests); a publisher attaches a videoroom handle, `join`s as publisher, then
//! `configure`s with the client's offer and gets Janus's answer; a subscriber attaches a
//! handle, `join`s as subscriber with `streams` (one `feed` per publisher it receives: in a
//! room of N, one subscription handle and peer connection with the N−1 others' tracks),
//! answers Janus's offer and sends it with `start`. Janus is a full ICE agent (not ICE-lite):
//! the client's host candidate is in its SDP (and `trickle` `completed` follows), Janus's
//! candidates come in its SDP (half-trickle) or trickled on the long poll; str0m does full
//! ICE against them.
//!
//! Waits until every receiver gets audio and a video keyframe from each of its publishers,
//! plus 1 s, then measures for `seconds` and prints one line: `forwarded_packets_per_second=…
//! server_cpu_us_per_packet=… delay_p50_ms=… delay_p99_ms=… loss_percent=… receive_mbps=…
//! published_packets_per_second=… video_fps_per_stream=… server_udp_drops_per_second=…
//! client_udp_drops_per_second=…`. A
//! forwarded packet is an RTP datagram (media or retransmission) that reached a receiver's
//! socket, counted before the client's own loss; the CPU is that of the process
//! BENCH_SERVER_PID (environment) over the window ÷ forwarded packets. Delay is per media frame (an Opus packet, a whole VP8 frame):
//! from the publisher's write to the receiver's str0m giving out the frame. Loss is the share
//! of frames that never reached a receiver's application (after retransmissions). UDP drops
//! are datagrams the kernel dropped for a full socket receive buffer, on the server's sockets
//! and on the client's (every other socket of the network namespace): a process that did not
//! keep up.

#[path = "measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "sfu_peer.rs"]
#[allow(dead_code)]
mod sfu_peer;

use futures_util::StreamExt;
use serde_json::{Value, json};
use sfu_peer::{
    Counters, DONE, Joined, LAYERS, MEASURING, Role, Status, convene_join, spawn_peer, wait_for,
};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc as tmpsc;

/// Subscribers set up at once.
const SETUP_CONCURRENCY: usize = 10;

/// A Janus session: its id, and a long poll that hands each event to its handle's channel.
struct Janus {
    http: reqwest::Client,
    url: String,
    handles: Mutex<HashMap<u64, tmpsc::UnboundedSender<Value>>>,
}

static TRANSACTION: AtomicU64 = AtomicU64::new(0);

fn transaction() -> String {
    format!("t{}", TRANSACTION.fetch_add(1, Ordering::Relaxed))
}

/// POSTs `body` (with a new transaction) to `url`; returns Janus's reply, failing on an error.
async fn janus_post(http: &reqwest::Client, url: &str, mut body: Value) -> Value {
    body["transaction"] = json!(transaction());
    let reply: Value = http
        .post(url)
        .json(&body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("janus {url}: {e}"))
        .json()
        .await
        .expect("janus json");
    if reply["janus"] == "error" || reply["plugindata"]["data"]["error"].is_string() {
        panic!("janus refused {body}: {reply}");
    }
    reply
}

impl Janus {
    /// Creates a session and starts its long poll (which also keeps it alive).
    async fn session(http: &reqwest::Client, base: &str, stop: Arc<AtomicBool>) -> Arc<Janus> {
        let reply = janus_post(http, base, json!({"janus": "create"})).await;
        let id = reply["data"]["id"].as_u64().expect("session id");
        let janus = Arc::new(Janus {
            http: http.clone(),
            url: format!("{base}/{id}"),
            handles: Mutex::new(HashMap::new()),
        });
        let poll = janus.clone();
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let got = poll.http.get(format!("{}?maxev=10", poll.url)).send().await;
                let events: Value = match got {
                    Ok(res) => res.json().await.unwrap_or_default(),
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let events = match events {
                    Value::Array(events) => events,
                    one => vec![one],
                };
                for event in events {
                    let Some(sender) = event["sender"].as_u64() else {
                        continue;
                    };
                    if let Some(to) = poll.handles.lock().unwrap().get(&sender) {
                        let _ = to.send(event);
                    }
                }
            }
        });
        janus
    }

    /// Attaches a videoroom handle; returns its id and its events.
    async fn attach(&self) -> (u64, tmpsc::UnboundedReceiver<Value>) {
        let reply = janus_post(
            &self.http,
            &self.url,
            json!({"janus": "attach", "plugin": "janus.plugin.videoroom"}),
        )
        .await;
        let id = reply["data"]["id"].as_u64().expect("handle id");
        let (to, events) = tmpsc::unbounded_channel();
        self.handles.lock().unwrap().insert(id, to);
        (id, events)
    }

    /// A videoroom request (with a JSEP when given); returns the immediate reply (`success`
    /// with the plugin's data, or `ack` when the answer comes as an event).
    async fn message(&self, handle: u64, body: Value, jsep: Option<Value>) -> Value {
        let mut message = json!({"janus": "message", "body": body});
        if let Some(jsep) = jsep {
            message["jsep"] = jsep;
        }
        janus_post(&self.http, &format!("{}/{handle}", self.url), message).await
    }

    async fn trickle_completed(&self, handle: u64) {
        janus_post(
            &self.http,
            &format!("{}/{handle}", self.url),
            json!({"janus": "trickle", "candidate": {"completed": true}}),
        )
        .await;
    }
}

/// Waits for the handle's next event from the videoroom plugin (skipping `webrtcup`,
/// `media` and the like); fails on a plugin error.
async fn plugin_event(events: &mut tmpsc::UnboundedReceiver<Value>) -> Value {
    loop {
        let event = tokio::time::timeout(sfu_peer::SETUP_LIMIT, events.recv())
            .await
            .expect("a videoroom event in time")
            .expect("the long poll runs");
        if event["janus"] == "event" {
            if event["plugindata"]["data"]["error"].is_string() {
                panic!("videoroom error: {event}");
            }
            return event;
        }
    }
}

/// Carries a handle's signals: the media thread's offer (publisher: `configure`) or answer
/// (subscriber: `start`) to Janus; Janus's JSEPs and trickled candidates to the media thread.
fn janus_bridge(
    janus: Arc<Janus>,
    handle: u64,
    mut events: tmpsc::UnboundedReceiver<Value>,
    to_media: std::sync::mpsc::Sender<Value>,
    mut from_media: tmpsc::UnboundedReceiver<Value>,
) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                event = events.recv() => {
                    let Some(event) = event else { return };
                    if std::env::var_os("BENCH_DEBUG").is_some() {
                        eprintln!("janus {handle} <- {event}");
                    }
                    if let Some(jsep) = event.get("jsep") {
                        let _ = to_media.send(json!({"description": jsep}));
                    } else if event["janus"] == "trickle" {
                        let _ = to_media.send(json!({"candidate": event["candidate"]}));
                    } else if event["janus"] == "hangup"
                        || event["plugindata"]["data"]["error"].is_string()
                    {
                        eprintln!("janus handle {handle}: {event}");
                    }
                }
                data = from_media.recv() => {
                    let Some(data) = data else { return };
                    if std::env::var_os("BENCH_DEBUG").is_some() {
                        eprintln!("janus {handle} -> {data}");
                    }
                    let d = &data["description"];
                    let request = match d["type"].as_str() {
                        Some("offer") => json!({"request": "configure"}),
                        Some("answer") => json!({"request": "start"}),
                        _ => continue,
                    };
                    janus.message(handle, request, Some(d.clone())).await;
                    janus.trickle_completed(handle).await;
                }
            }
        }
    });
}

/// A Janus publisher with feed id `feed`: joins, then its peer offers through `configure`.
async fn janus_publisher(
    janus: Arc<Janus>,
    room: u64,
    feed: u64,
    role: Role,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Arc<Status> {
    let (handle, mut events) = janus.attach().await;
    janus
        .message(
            handle,
            json!({"request": "join", "ptype": "publisher", "room": room, "id": feed}),
            None,
        )
        .await;
    let joined = plugin_event(&mut events).await;
    assert_eq!(
        joined["plugindata"]["data"]["videoroom"], "joined",
        "{joined}"
    );
    let (status, to_media, from_media) = spawn_peer(role, counters, stop);
    janus_bridge(janus, handle, events, to_media, from_media);
    status
}

/// A Janus subscriber to `feeds`: joins, answers Janus's offer, and `start`s.
async fn janus_subscriber(
    janus: Arc<Janus>,
    room: u64,
    feeds: Vec<u64>,
    role: Role,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Arc<Status> {
    let (handle, mut events) = janus.attach().await;
    let streams: Vec<Value> = feeds.iter().map(|f| json!({"feed": f})).collect();
    janus
        .message(
            handle,
            json!({"request": "join", "ptype": "subscriber", "room": room, "streams": streams}),
            None,
        )
        .await;
    let attached = plugin_event(&mut events).await;
    assert_eq!(
        attached["plugindata"]["data"]["videoroom"], "attached",
        "{attached}"
    );
    let (status, to_media, from_media) = spawn_peer(role, counters, stop);
    let _ = to_media.send(json!({"description": attached["jsep"]}));
    janus_bridge(janus, handle, events, to_media, from_media);
    status
}

/// UDP datagrams the kernel dropped so far for a full socket receive buffer, on the sockets
/// of process `pid` and on every other socket of this network namespace (the client's), from
/// the `drops` column of /proc/net/udp (sockets matched by inode with /proc/PID/fd).
fn udp_drops(pid: &str) -> (f64, f64) {
    let server: HashSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_string())
        })
        .collect();
    let (mut of_server, mut others) = (0.0, 0.0);
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(inode), Some(drops)) = (fields.get(9), fields.get(12)) else {
                continue;
            };
            let drops: f64 = drops.parse().unwrap_or(0.0);
            if server.contains(*inode) {
                of_server += drops;
            } else {
                others += drops;
            }
        }
    }
    (of_server, others)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, target, base, key, mode, n, seconds, loss] = &args[..] else {
        eprintln!(
            "usage: bench_sfu_compare <convene|janus> <http://addr> <api-key|-> <fanout|room|conference> <n> <seconds> <loss-percent>"
        );
        std::process::exit(2);
    };
    let n: usize = n.parse().expect("n");
    let seconds: f64 = seconds.parse().expect("seconds");
    let loss: f64 = loss.parse().expect("loss percent");
    let room_mode = match mode.as_str() {
        "fanout" => false,
        "room" => true,
        "conference" if target == "convene" => {
            conference(
                base.trim_end_matches('/').to_string(),
                key,
                n,
                seconds,
                loss,
            )
            .await;
            std::process::exit(0);
        }
        "conference" => panic!("conference: Convene only (see the module's documentation)"),
        other => panic!("mode {other}: fanout, room or conference"),
    };
    let base = base.trim_end_matches('/').to_string();
    let http = reqwest::Client::new();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    // Publishers, and each receiving peer with the number of publishers it receives.
    let publisher_count = if room_mode { n } else { 1 };
    let publisher_role = |i: usize| Role {
        publishes: Some(i as u32),
        simulcast: false,
        speaks: true,
        offers: true,
        receives: room_mode && target == "convene",
        loss_percent: if room_mode { loss } else { 0.0 },
    };
    let receiver_role = Role {
        publishes: None,
        simulcast: false,
        speaks: false,
        offers: target == "convene",
        receives: true,
        loss_percent: loss,
    };
    let (receivers, sources): (Vec<Arc<Status>>, usize) = match target.as_str() {
        "convene" => {
            let ws_url = format!("{}/api/realtime/signaling", base.replacen("http", "ws", 1));
            let token = sfu_peer::convene_room(&http, &base, key).await;
            let join = |role: Role| {
                sfu_peer::convene_peer(
                    ws_url.clone(),
                    token.clone(),
                    role,
                    counters.clone(),
                    stop.clone(),
                )
            };
            if room_mode {
                // One after the other, each once the one before is connected.
                let mut all = Vec::new();
                for i in 0..n {
                    let status = join(publisher_role(i)).await;
                    wait_for(
                        "a participant's connection",
                        std::slice::from_ref(&status),
                        |s| s.connected.load(Ordering::Relaxed),
                    )
                    .await;
                    all.push(status);
                }
                (all, n - 1)
            } else {
                let publisher = join(publisher_role(0)).await;
                wait_for("the publisher's connection", &[publisher], |s| {
                    s.connected.load(Ordering::Relaxed)
                })
                .await;
                let subscribers = futures_util::stream::iter(0..n)
                    .map(|_| join(receiver_role))
                    .buffer_unordered(SETUP_CONCURRENCY)
                    .collect()
                    .await;
                (subscribers, 1)
            }
        }
        "janus" => {
            let base = format!("{base}/janus");
            let control = Janus::session(&http, &base, stop.clone()).await;
            let (handle, _events) = control.attach().await;
            let room = 1_000 + u64::from(std::process::id());
            control
                .message(
                    handle,
                    json!({"request": "create", "room": room, "publishers": publisher_count + 1,
                        "audiocodec": "opus", "videocodec": "vp8", "bitrate": 0, "fir_freq": 0,
                        "notify_joining": false}),
                    None,
                )
                .await;
            let feed = |i: usize| 1 + i as u64;
            let mut sessions = Vec::new();
            let mut publishers = Vec::new();
            for i in 0..publisher_count {
                let session = Janus::session(&http, &base, stop.clone()).await;
                publishers.push(
                    janus_publisher(
                        session.clone(),
                        room,
                        feed(i),
                        publisher_role(i),
                        counters.clone(),
                        stop.clone(),
                    )
                    .await,
                );
                sessions.push(session);
            }
            wait_for("the publishers' connections", &publishers, |s| {
                s.connected.load(Ordering::Relaxed)
            })
            .await;
            let subscribers = if room_mode {
                // Each participant's subscription (in its own session) to the others.
                futures_util::stream::iter(sessions.into_iter().enumerate())
                    .map(|(i, session)| {
                        let feeds = (0..n).filter(|&j| j != i).map(feed).collect();
                        janus_subscriber(
                            session,
                            room,
                            feeds,
                            receiver_role,
                            counters.clone(),
                            stop.clone(),
                        )
                    })
                    .buffer_unordered(SETUP_CONCURRENCY)
                    .collect()
                    .await
            } else {
                let (http, base, counters, stop) = (&http, &base, &counters, &stop);
                futures_util::stream::iter(0..n)
                    .map(|_| async move {
                        let session = Janus::session(http, base, stop.clone()).await;
                        janus_subscriber(
                            session,
                            room,
                            vec![feed(0)],
                            receiver_role,
                            counters.clone(),
                            stop.clone(),
                        )
                        .await
                    })
                    .buffer_unordered(SETUP_CONCURRENCY)
                    .collect()
                    .await
            };
            (subscribers, publisher_count - usize::from(room_mode))
        }
        other => panic!("target {other}: convene or janus"),
    };
    wait_for("every receiver's audio and video", &receivers, |s| {
        s.receives(sources)
    })
    .await;
    // Let the keyframes that the joins asked for go by.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let snapshot = |c: &Counters| {
        (
            c.rtp_in.load(Ordering::Relaxed),
            c.rtp_out.load(Ordering::Relaxed),
            c.video_frames.load(Ordering::Relaxed),
            c.rtp_bytes_in.load(Ordering::Relaxed),
        )
    };
    counters.phase.store(MEASURING, Ordering::Relaxed);
    eprintln!("measuring for {seconds} s");
    let cpu_before = measure::server_cpu()[0];
    let server_pid = std::env::var("BENCH_SERVER_PID").unwrap_or_default();
    let drops_before = udp_drops(&server_pid);
    let before = snapshot(&counters);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let after = snapshot(&counters);
    let cpu_after = measure::server_cpu()[0];
    let drops_after = udp_drops(&server_pid);
    let elapsed = start.elapsed().as_secs_f64();
    counters.phase.store(DONE, Ordering::Relaxed);
    // Each receiving peer adds its frames received and expected at its next turn.
    let receiving = receivers.len();
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.flushed.load(Ordering::Relaxed) < receiving && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);

    let forwarded = (after.0 - before.0) as f64;
    println!(
        "forwarded_packets_per_second={:.0} server_cpu_us_per_packet={:.2} delay_p50_ms={:.2} delay_p99_ms={:.2} loss_percent={:.3} receive_mbps={:.1} published_packets_per_second={:.0} video_fps_per_stream={:.1} server_udp_drops_per_second={:.0} client_udp_drops_per_second={:.0}",
        forwarded / elapsed,
        if forwarded > 0.0 {
            (cpu_after - cpu_before) / forwarded
        } else {
            f64::NAN
        },
        counters.delay_ms(0.5),
        counters.delay_ms(0.99),
        counters.loss_percent(),
        (after.3 - before.3) as f64 * 8.0 / elapsed / 1e6,
        (after.1 - before.1) as f64 / elapsed,
        (after.2 - before.2) as f64 / elapsed / (receivers.len() * sources).max(1) as f64,
        (drops_after.0 - drops_before.0) / elapsed,
        (drops_after.1 - drops_before.1) / elapsed,
    );
    std::process::exit(0);
}

/// Thumbnails each participant of a conference shows (besides the speaker, large).
const THUMBNAILS: usize = 8;
/// The speaker's size and a thumbnail's, in device pixels.
const LARGE: (u32, u32) = (1280, 720);
const THUMBNAIL: (u32, u32) = (320, 180);
/// Participants 0 to SPEAKERS − 1 send audio; the others are muted.
const SPEAKERS: usize = 3;
/// After every receiver gets what it shows, this long before the window (unless the
/// environment's BENCH_WARMUP_SECONDS says otherwise): layer switches (each on a keyframe of
/// the new layer) and pauses settle, and the downlink estimates that the loss of the joins
/// cut grow back (8 % a second, beyond 1.5 × the rate sent only after 10 clear seconds; with
/// 3 s, the 0 % run of a room of 50 got 81 % of its frames at the expected layer).
const WARMUP: Duration = Duration::from_secs(15);

/// What participant `i` of a conference of `n` shows of participant `j`: its size, or
/// `None` (hidden: 0 × 0). Participant 0 is the speaker, shown large by everyone (and
/// participant 0 shows participant 1 large); participant `i` shows the next
/// [`THUMBNAILS`] participants after it (mod `n`, skipping itself and its large one) as
/// thumbnails; everyone else is hidden, as on a gallery's first page.
fn gallery(n: usize, i: usize, j: usize) -> Option<(u32, u32)> {
    let large = usize::from(i == 0);
    if j == i {
        return None;
    }
    if j == large {
        return Some(LARGE);
    }
    (1..n)
        .map(|d| (i + d) % n)
        .filter(|&k| k != large)
        .take(THUMBNAILS)
        .any(|k| k == j)
        .then_some(THUMBNAIL)
}

/// The stamp layer (1–3) a view of `size` asks for: the smallest layer of [`LAYERS`] that
/// covers it within a quarter (the server's rule, docs/sfu.md), else the best.
fn layer_for((width, height): (u32, u32)) -> u8 {
    let k = LAYERS
        .iter()
        .position(|l| u32::from(l.width) * 4 >= width * 3 && u32::from(l.height) * 4 >= height * 3)
        .unwrap_or(LAYERS.len() - 1);
    k as u8 + 1
}

/// `{views: […]}` of participant `i` for the participants `others` (number, address).
fn views(n: usize, i: usize, others: &[(usize, &str)]) -> Value {
    let list: Vec<Value> = others
        .iter()
        .map(|&(j, address)| {
            let (width, height) = gallery(n, i, j).unwrap_or((0, 0));
            json!({"address": address, "width": width, "height": height})
        })
        .collect();
    json!({ "views": list })
}

/// CPU time of this process (the client: every peer), in µs.
fn own_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<f64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0.0))
        .collect();
    (fields.get(11).unwrap_or(&0.0) + fields.get(12).unwrap_or(&0.0)) * 10_000.0
}

/// The conference scenario (Convene only): `n` participants in one SFU room, each publishing
/// simulcast video (layers q, h, f of [`LAYERS`]) and receiving the others; [`SPEAKERS`] of
/// them send audio, the others are muted. Each tells the server what it shows
/// ([`gallery`]): the speaker large, [`THUMBNAILS`] thumbnails, everyone else hidden; views
/// are sent as participants join (each new one's views of those before it, and theirs of
/// it), so no one ever receives a video it does not show. They join one after the other,
/// each once the one before is connected; once every receiver has keyframes from as many
/// publishers as it shows, and audio from the speakers, plus [`WARMUP`], the window of
/// `seconds` is measured. Prints one line of `key=value`.
async fn conference(base: String, key: &str, n: usize, seconds: f64, loss: f64) {
    assert!(
        n > THUMBNAILS + 1,
        "a conference needs more than {} participants",
        THUMBNAILS + 1
    );
    let http = reqwest::Client::new();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let ws_url = format!("{}/api/realtime/signaling", base.replacen("http", "ws", 1));
    let token = sfu_peer::convene_room(&http, &base, key).await;
    let setup = Instant::now();
    let mut joined: Vec<Joined> = Vec::new();
    for k in 0..n {
        let role = Role {
            publishes: Some(k as u32),
            simulcast: true,
            speaks: k < SPEAKERS,
            offers: true,
            receives: true,
            loss_percent: loss,
        };
        let peer = convene_join(
            ws_url.clone(),
            token.clone(),
            role,
            counters.clone(),
            stop.clone(),
        )
        .await;
        if k > 0 {
            let before: Vec<(usize, &str)> = joined
                .iter()
                .enumerate()
                .map(|(j, p)| (j, p.address.as_str()))
                .collect();
            let _ = peer.to_sfu.send(views(n, k, &before));
        }
        for (i, p) in joined.iter().enumerate() {
            let _ = p.to_sfu.send(views(n, i, &[(k, peer.address.as_str())]));
        }
        wait_for(
            "a participant's connection",
            std::slice::from_ref(&peer.status),
            |s| s.connected.load(Ordering::Relaxed),
        )
        .await;
        joined.push(peer);
    }
    let statuses: Vec<Arc<Status>> = joined.iter().map(|p| p.status.clone()).collect();
    let shown = THUMBNAILS + 1;
    wait_for(
        "every receiver's audio and the videos it shows",
        &statuses,
        |s| {
            s.connected.load(Ordering::Relaxed)
                && s.keyframe_sources.load(Ordering::Relaxed) >= shown
                && s.audio_sources.load(Ordering::Relaxed) >= SPEAKERS - 1
        },
    )
    .await;
    let setup_seconds = setup.elapsed().as_secs_f64();
    eprintln!("set up in {setup_seconds:.1} s; warming up");
    let warmup = std::env::var("BENCH_WARMUP_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(WARMUP, Duration::from_secs_f64);
    tokio::time::sleep(warmup).await;

    let snapshot = |c: &Counters| {
        (
            c.rtp_in.load(Ordering::Relaxed),
            c.rtp_out.load(Ordering::Relaxed),
            c.rtp_bytes_in.load(Ordering::Relaxed),
            c.frames_out.each_ref().map(|f| f.load(Ordering::Relaxed)),
        )
    };
    counters.phase.store(MEASURING, Ordering::Relaxed);
    eprintln!("measuring for {seconds} s");
    let server_pid = std::env::var("BENCH_SERVER_PID").unwrap_or_default();
    let (cpu_before, client_before) = (measure::server_cpu()[0], own_cpu());
    let drops_before = udp_drops(&server_pid);
    let before = snapshot(&counters);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let after = snapshot(&counters);
    let (cpu_after, client_after) = (measure::server_cpu()[0], own_cpu());
    let drops_after = udp_drops(&server_pid);
    let elapsed = start.elapsed().as_secs_f64();
    counters.phase.store(DONE, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(5);
    while counters.flushed.load(Ordering::Relaxed) < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, Ordering::Relaxed);

    // Per (receiver, publisher): video frames received per stamp layer, and expected.
    let mut video: HashMap<(usize, usize), [(u64, u64); 4]> = HashMap::new();
    let (mut audio_received, mut audio_expected) = (0u64, 0u64);
    for t in counters.tracks.lock().unwrap().iter() {
        let Some(receiver) = t.receiver else { continue };
        if t.video {
            let entry = video
                .entry((receiver as usize, t.source as usize))
                .or_default();
            entry[usize::from(t.layer.min(3))].0 += t.received;
            entry[usize::from(t.layer.min(3))].1 += t.expected;
        } else {
            audio_received += t.received;
            audio_expected += t.expected;
        }
    }
    let (mut at_layer, mut frames, mut received, mut expected, mut hidden) = (0, 0, 0, 0, 0);
    let (mut worst_layer, mut worst_loss, mut without) = (100.0f64, 0.0f64, 0);
    let (mut large_frames, mut large_pairs, mut thumb_frames, mut thumb_pairs) = (0, 0, 0, 0);
    for i in 0..n {
        for j in (0..n).filter(|&j| j != i) {
            let layers = video.get(&(i, j)).copied().unwrap_or_default();
            let got: u64 = layers.iter().map(|l| l.0).sum();
            let Some(size) = gallery(n, i, j) else {
                hidden += got;
                continue;
            };
            let wanted = usize::from(layer_for(size));
            let exp: u64 = layers.iter().map(|l| l.1).sum();
            if got == 0 {
                without += 1;
                continue;
            }
            at_layer += layers[wanted].0;
            frames += got;
            received += got;
            expected += exp;
            worst_layer = worst_layer.min(100.0 * layers[wanted].0 as f64 / got as f64);
            worst_loss = worst_loss.max(100.0 * exp.saturating_sub(got) as f64 / exp as f64);
            if size == LARGE {
                (large_frames, large_pairs) = (large_frames + layers[wanted].0, large_pairs + 1);
            } else {
                (thumb_frames, thumb_pairs) = (thumb_frames + layers[wanted].0, thumb_pairs + 1);
            }
        }
    }
    let percent = |part: u64, whole: u64| {
        if whole > 0 {
            100.0 * part as f64 / whole as f64
        } else {
            f64::NAN
        }
    };
    let fps = |frames: u64, pairs: u64| frames as f64 / elapsed / pairs.max(1) as f64;
    let forwarded = (after.0 - before.0) as f64;
    let published_fps = |k: usize| (after.3[k] - before.3[k]) as f64 / elapsed;
    println!(
        "forwarded_packets_per_second={:.0} server_cpu_us_per_packet={:.2} server_cpu_percent={:.0} client_cpu_percent={:.0} delay_p50_ms={:.2} delay_p99_ms={:.2} video_loss_percent={:.3} video_loss_worst_pair_percent={:.2} audio_loss_percent={:.3} expected_layer_percent={:.2} expected_layer_worst_pair_percent={:.1} pairs_without_video={} hidden_frames={} mbps_per_subscriber={:.2} fps_large={:.1} fps_thumbnail={:.1} published_packets_per_second={:.0} published_fps_q={:.0} published_fps_h={:.0} published_fps_f={:.0} server_udp_drops_per_second={:.0} client_udp_drops_per_second={:.0} setup_seconds={:.1} largest_signal_bytes={}",
        forwarded / elapsed,
        if forwarded > 0.0 {
            (cpu_after - cpu_before) / forwarded
        } else {
            f64::NAN
        },
        (cpu_after - cpu_before) / elapsed / 1e4,
        (client_after - client_before) / elapsed / 1e4,
        counters.delay_ms(0.5),
        counters.delay_ms(0.99),
        100.0 - percent(received, expected),
        worst_loss,
        100.0 - percent(audio_received, audio_expected),
        percent(at_layer, frames),
        worst_layer,
        without,
        hidden,
        (after.2 - before.2) as f64 * 8.0 / elapsed / 1e6 / n as f64,
        fps(large_frames, large_pairs),
        fps(thumb_frames, thumb_pairs),
        (after.1 - before.1) as f64 / elapsed,
        published_fps(1),
        published_fps(2),
        published_fps(3),
        (drops_after.0 - drops_before.0) / elapsed,
        (drops_after.1 - drops_before.1) / elapsed,
        setup_seconds,
        sfu_peer::LARGEST_SIGNAL.load(Ordering::Relaxed),
    );
}
