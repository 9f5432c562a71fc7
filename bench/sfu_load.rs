//! SFU load client: one publisher and N subscribers in one SFU room, each a headless str0m
//! peer connection over real UDP on 127.0.0.1, negotiated through Convene's signaling
//! WebSocket (`signal {to: "sfu"}` both ways), as tests/sfu/peer.rs does.
//!
//! The publisher sends synthetic Opus (20 ms frames of 80 bytes: 50 packets/s) and VP8 at
//! 30 fps (delta frames of 2,000 bytes, a 20,000-byte keyframe every 3 s and whenever the
//! server asks for one), about what a 640×360 camera at ~600 kbit/s sends. Each subscriber
//! offers one receive-only audio m-line (so that it has a connection), then answers the
//! server's offers of the publisher's tracks and counts what arrives. With a loss of L %,
//! every subscriber drops L % of the datagrams it receives once connected (at random), so
//! the server's NACK/RTX work shows.
//!
//! `bench_sfu_load <http://addr> <api-key> <subscribers> <seconds> <loss-percent>`
//!   waits until every subscriber receives the publisher's audio and video (a keyframe
//!   included), then measures for `seconds` and prints
//!   `forwarded_packets_per_second=… server_cpu_us_per_packet=… published_packets_per_second=…
//!   nacks_per_second=… video_fps_per_subscriber=…`. A forwarded packet is an RTP datagram
//!   (media or retransmission) that reached a subscriber's socket, counted before the
//!   client's own loss; the CPU is that of the process BENCH_SERVER_PID (environment) over
//!   the measured window; NACKs are the server's `convene_sfu_nacks_total` (from /metrics).

#[path = "measure.rs"]
#[allow(dead_code)]
mod measure;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::net::UdpSocket;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc as tmpsc;
use tokio_tungstenite::tungstenite::Message;

/// How long set-up (joins, ICE, DTLS, the first keyframe everywhere) may take.
const SETUP_LIMIT: Duration = Duration::from_secs(120);
/// Subscribers joined at once.
const SETUP_CONCURRENCY: usize = 10;
const VIDEO_FPS: u64 = 30;
const KEYFRAME_EVERY: u32 = 90;
const DELTA_BYTES: usize = 2_000;
const KEYFRAME_BYTES: usize = 20_000;
const OPUS_BYTES: usize = 80;

/// What every peer adds to.
#[derive(Default)]
struct Counters {
    /// RTP datagrams that reached subscribers' sockets.
    rtp_in: AtomicU64,
    /// RTP datagrams the publisher sent.
    rtp_out: AtomicU64,
    /// Video frames subscribers received.
    video_frames: AtomicU64,
}

/// One peer's state as the driver waits on it.
#[derive(Default)]
struct Status {
    connected: AtomicBool,
    audio: AtomicBool,
    keyframe: AtomicBool,
}

/// An RTP (not RTCP, STUN or DTLS) datagram: RFC 7983's first byte 128–191, and a payload
/// type outside RTCP's packet types 192–223 (RFC 5761).
fn is_rtp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && (128..=191).contains(&bytes[0]) && !(64..=95).contains(&(bytes[1] & 0x7f))
}

fn description(kind: &str, sdp: String) -> Value {
    json!({"description": {"type": kind, "sdp": sdp}})
}

/// A peer connection on a thread of its own: offers (publisher: audio and video sendonly;
/// subscriber: one recvonly audio m-line), answers the server's offers, writes synthetic
/// media (publisher) and counts what arrives (subscriber).
fn media_thread(
    publisher: bool,
    loss_percent: f64,
    signals_in: mpsc::Receiver<Value>,
    signals_out: tmpsc::UnboundedSender<Value>,
    status: Arc<Status>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("udp");
    let local = socket.local_addr().expect("local addr");
    let start = Instant::now();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(start);
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
    let mut change = rtc.sdp_api();
    let (audio, video) = if publisher {
        let a = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let v = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        (Some(a), Some(v))
    } else {
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        (None, None)
    };
    let (offer, pending) = change.apply().expect("something to offer");
    let mut pending: Option<SdpPendingOffer> = Some(pending);
    let _ = signals_out.send(description("offer", offer.to_sdp_string()));

    let mut buf = vec![0u8; 2048];
    let frame_interval = Duration::from_micros(1_000_000 / VIDEO_FPS);
    let (mut next_audio, mut next_video) = (start, start);
    let mut want_keyframe = true;
    let mut frame_no: u32 = 0;
    let mut random: u64 = 0x9e37_79b9_7f4a_7c15 ^ (local.port() as u64);
    let opus = vec![0xfc; OPUS_BYTES];
    while !stop.load(Ordering::Relaxed) {
        while let Ok(data) = signals_in.try_recv() {
            let Some(d) = data.get("description") else {
                continue;
            };
            let sdp = d["sdp"].as_str().unwrap_or_default();
            match d["type"].as_str() {
                Some("answer") => {
                    let answer = SdpAnswer::from_sdp_string(sdp).expect("server answer");
                    if let Some(p) = pending.take() {
                        rtc.sdp_api()
                            .accept_answer(p, answer)
                            .expect("answer accepted");
                    }
                }
                Some("offer") => {
                    let offer = SdpOffer::from_sdp_string(sdp).expect("server offer");
                    let answer = rtc.sdp_api().accept_offer(offer).expect("offer accepted");
                    let _ = signals_out.send(description("answer", answer.to_sdp_string()));
                }
                _ => {}
            }
        }

        let now = Instant::now();
        if publisher && rtc.is_connected() {
            if let Some(mid) = audio
                && now >= next_audio
            {
                next_audio += Duration::from_millis(20);
                write(&mut rtc, mid, Codec::Opus, now, start, opus.clone());
            }
            if let Some(mid) = video
                && now >= next_video
            {
                next_video += frame_interval;
                frame_no += 1;
                let key = want_keyframe || frame_no.is_multiple_of(KEYFRAME_EVERY);
                want_keyframe = false;
                write(&mut rtc, mid, Codec::Vp8, now, start, vp8(key, frame_no));
            }
        }

        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    if publisher && is_rtp(&t.contents) {
                        counters.rtp_out.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => match event {
                    Event::Connected => status.connected.store(true, Ordering::Relaxed),
                    Event::KeyframeRequest(_) => want_keyframe = true,
                    Event::MediaData(data) => {
                        let is_video = rtc
                            .media(data.mid)
                            .is_some_and(|m| m.kind() == MediaKind::Video);
                        if is_video {
                            counters.video_frames.fetch_add(1, Ordering::Relaxed);
                            if data.is_keyframe() {
                                status.keyframe.store(true, Ordering::Relaxed);
                            }
                        } else {
                            status.audio.store(true, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                },
                Err(e) => panic!("client rtc failed: {e}"),
            }
        };

        let mut wait = timeout.saturating_duration_since(Instant::now());
        if publisher {
            wait = wait.min(
                next_audio
                    .min(next_video)
                    .saturating_duration_since(Instant::now()),
            );
        }
        let wait = wait.clamp(Duration::from_micros(500), Duration::from_millis(5));
        socket.set_read_timeout(Some(wait)).expect("timeout");
        // One datagram per turn: str0m wants its output polled after each input.
        if let Ok((n, source)) = socket.recv_from(&mut buf) {
            if !publisher && is_rtp(&buf[..n]) {
                counters.rtp_in.fetch_add(1, Ordering::Relaxed);
            }
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let lost = loss_percent > 0.0
                && rtc.is_connected()
                && ((random % 1_000_000) as f64 / 10_000.0) < loss_percent;
            if !lost && let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n]) {
                rtc.handle_input(Input::Receive(Instant::now(), receive))
                    .expect("client input");
            }
        }
        rtc.handle_input(Input::Timeout(Instant::now()))
            .expect("client timeout");
    }
}

fn write(rtc: &mut Rtc, mid: Mid, codec: Codec, now: Instant, start: Instant, data: Vec<u8>) {
    let Some(writer) = rtc.writer(mid) else {
        return;
    };
    let Some(pt) = writer
        .payload_params()
        .find(|p| p.spec().codec == codec)
        .map(|p| p.pt())
    else {
        return;
    };
    let time: MediaTime = (now - start).into();
    let _ = writer.write(pt, now, time, data);
}

/// A VP8 frame: a key frame (frame tag with the key-frame bit clear, start code, 640×360)
/// or an inter frame, then filler, at the sizes above.
fn vp8(key: bool, n: u32) -> Vec<u8> {
    let mut frame = if key {
        vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0x80, 0x02, 0x68, 0x01]
    } else {
        vec![0x11, 0x02, 0x00]
    };
    let size = if key { KEYFRAME_BYTES } else { DELTA_BYTES };
    frame.resize(size, n as u8);
    frame
}

/// Joins the room with `token` over signaling and starts the peer's media thread; the
/// socket task carries `signal`s between the two until `stop`.
async fn peer(
    ws_url: String,
    token: String,
    publisher: bool,
    loss_percent: f64,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Arc<Status> {
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("signaling socket");
    ws.send(Message::text(
        json!({"type": "join", "token": token}).to_string(),
    ))
    .await
    .expect("join");
    loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => panic!("closed before joined: {frame:?}"),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended before joined: {other:?}"),
        };
        let message: Value = serde_json::from_str(&text).expect("json");
        match message["type"].as_str() {
            Some("joined") => break,
            Some("error") => panic!("join refused: {message}"),
            _ => {}
        }
    }
    let status = Arc::new(Status::default());
    let (to_media, signals_in) = mpsc::channel();
    let (signals_out, mut from_media) = tmpsc::unbounded_channel();
    {
        let (status, stop) = (status.clone(), stop.clone());
        std::thread::spawn(move || {
            media_thread(
                publisher,
                loss_percent,
                signals_in,
                signals_out,
                status,
                counters,
                stop,
            )
        });
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                incoming = ws.next() => match incoming {
                    Some(Ok(Message::Text(text))) => {
                        let message: Value = serde_json::from_str(&text).unwrap_or_default();
                        match (message["type"].as_str(), message["from"].as_str()) {
                            (Some("signal"), Some("sfu")) => {
                                let _ = to_media.send(message["data"].clone());
                            }
                            (Some("error"), _) => eprintln!("server error: {message}"),
                            _ => {}
                        }
                    }
                    Some(Ok(_)) => {}
                    _ => return,
                },
                Some(data) = from_media.recv() => {
                    let text = json!({"type": "signal", "to": "sfu", "data": data}).to_string();
                    if ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    status
}

/// The server's `convene_sfu_nacks_total` (0 when it cannot be read).
async fn nacks(http: &reqwest::Client, base: &str) -> f64 {
    let Ok(res) = http.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("convene_sfu_nacks_total "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

/// Waits until `ready` holds of every status; fails after [`SETUP_LIMIT`].
async fn wait_for(what: &str, statuses: &[Arc<Status>], ready: impl Fn(&Status) -> bool) {
    let deadline = Instant::now() + SETUP_LIMIT;
    while !statuses.iter().all(|s| ready(s)) {
        assert!(
            Instant::now() < deadline,
            "set-up timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, key, subscribers, seconds, loss] = &args[..] else {
        eprintln!(
            "usage: bench_sfu_load <http://addr> <api-key> <subscribers> <seconds> <loss-percent>"
        );
        std::process::exit(2);
    };
    let subscribers: usize = subscribers.parse().expect("subscribers");
    let seconds: f64 = seconds.parse().expect("seconds");
    let loss: f64 = loss.parse().expect("loss percent");
    let base = base.trim_end_matches('/').to_string();
    let ws_url = format!("{}/api/realtime/signaling", base.replacen("http", "ws", 1));
    let http = reqwest::Client::new();
    let room: Value = http
        .post(format!("{base}/api/realtime/room"))
        .header("x-vcs-token", key)
        .json(&json!({"conferenceType": "SFU"}))
        .send()
        .await
        .expect("create room")
        .json()
        .await
        .expect("room json");
    let token = room["room"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("create answered {room}"))
        .to_string();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));

    let publisher = peer(
        ws_url.clone(),
        token.clone(),
        true,
        0.0,
        counters.clone(),
        stop.clone(),
    )
    .await;
    wait_for("the publisher's connection", &[publisher], |s| {
        s.connected.load(Ordering::Relaxed)
    })
    .await;
    let statuses: Vec<Arc<Status>> = futures_util::stream::iter(0..subscribers)
        .map(|_| {
            peer(
                ws_url.clone(),
                token.clone(),
                false,
                loss,
                counters.clone(),
                stop.clone(),
            )
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    wait_for("every subscriber's audio and video", &statuses, |s| {
        s.connected.load(Ordering::Relaxed)
            && s.audio.load(Ordering::Relaxed)
            && s.keyframe.load(Ordering::Relaxed)
    })
    .await;
    // Let the keyframes that the joins asked for go by.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let snapshot = |c: &Counters| {
        (
            c.rtp_in.load(Ordering::Relaxed),
            c.rtp_out.load(Ordering::Relaxed),
            c.video_frames.load(Ordering::Relaxed),
        )
    };
    let nacks_before = nacks(&http, &base).await;
    let cpu_before = measure::server_cpu()[0];
    let before = snapshot(&counters);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let after = snapshot(&counters);
    let cpu_after = measure::server_cpu()[0];
    let elapsed = start.elapsed().as_secs_f64();
    let nacks_after = nacks(&http, &base).await;
    stop.store(true, Ordering::Relaxed);

    let forwarded = (after.0 - before.0) as f64;
    println!(
        "forwarded_packets_per_second={:.0} server_cpu_us_per_packet={:.2} published_packets_per_second={:.0} nacks_per_second={:.1} video_fps_per_subscriber={:.1}",
        forwarded / elapsed,
        if forwarded > 0.0 {
            (cpu_after - cpu_before) / forwarded
        } else {
            f64::NAN
        },
        (after.1 - before.1) as f64 / elapsed,
        (nacks_after - nacks_before) / elapsed,
        (after.2 - before.2) as f64 / elapsed / subscribers.max(1) as f64,
    );
    std::process::exit(0);
}
