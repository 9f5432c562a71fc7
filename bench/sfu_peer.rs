//! What the SFU load clients (bench/sfu_load.rs, bench/sfu_compare.rs) share: a headless str0m
//! peer connection on a thread and a UDP socket of its own on 127.0.0.1, its synthetic media,
//! what it counts and measures, and Convene's signaling (`signal {to: "sfu"}` both ways).
//!
//! Media: synthetic Opus (20 ms frames of 80 bytes: 50 packets/s) and VP8 at 30 fps (delta
//! frames of 2,000 bytes, a 20,000-byte keyframe every 3 s and whenever the server asks for
//! one), about what a 640×360 camera at ~600 kbit/s sends. Every frame carries a stamp (see
//! [`stamp`]): the publisher's number, a sequence number per track and the send time, so a
//! receiver knows the one-way delay of each frame (one process: one clock) and which frames
//! never arrived. With a loss of L %, a receiving peer drops L % of the datagrams it receives
//! once connected (at random), so the server's NACK/RTX work shows.
//!
//! Signals between a peer's media thread and its signaling are JSON values in Convene's shape:
//! `{description: {type, sdp}}` or `{candidate: {candidate, …}}`; a client for another server
//! translates.

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::UdpSocket;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::mpsc as tmpsc;
use tokio_tungstenite::tungstenite::Message;

/// How long set-up (joins, ICE, DTLS, the first keyframe everywhere) may take.
pub const SETUP_LIMIT: Duration = Duration::from_secs(180);
const VIDEO_FPS: u64 = 30;
const KEYFRAME_EVERY: u32 = 90;
const DELTA_BYTES: usize = 2_000;
const KEYFRAME_BYTES: usize = 20_000;
const OPUS_BYTES: usize = 80;
/// Where the stamp sits: after the VP8 key frame's 10-byte header (inside a delta frame's
/// filler), after the Opus TOC byte.
const VIDEO_STAMP_AT: usize = 10;
const AUDIO_STAMP_AT: usize = 1;
const STAMP_BYTES: usize = 16;
/// The delay histogram: buckets of 10 µs up to 5 s (the last bucket holds anything later).
const BUCKET_US: u64 = 10;
const BUCKETS: usize = 500_000;

/// The measurement's phases: set-up, the measured window, after it.
pub const SETUP: u8 = 0;
pub const MEASURING: u8 = 1;
pub const DONE: u8 = 2;

/// What every peer adds to.
pub struct Counters {
    /// RTP datagrams that reached receiving peers' sockets.
    pub rtp_in: AtomicU64,
    /// Their bytes.
    pub rtp_bytes_in: AtomicU64,
    /// RTP datagrams the publishers sent.
    pub rtp_out: AtomicU64,
    /// Video frames receivers got.
    pub video_frames: AtomicU64,
    /// [`SETUP`], [`MEASURING`] or [`DONE`]: frames are stamped always, and their delay and
    /// loss are recorded while MEASURING.
    pub phase: AtomicU8,
    /// Frames received in the window, and frames expected (per track, from the first to the
    /// last sequence number received in the window); added by each peer when the window ends.
    pub frames_received: AtomicU64,
    pub frames_expected: AtomicU64,
    /// Peers that have added theirs.
    pub flushed: AtomicUsize,
    /// One-way delays of the frames received in the window.
    delays: Vec<AtomicU64>,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            rtp_in: AtomicU64::new(0),
            rtp_bytes_in: AtomicU64::new(0),
            rtp_out: AtomicU64::new(0),
            video_frames: AtomicU64::new(0),
            phase: AtomicU8::new(SETUP),
            frames_received: AtomicU64::new(0),
            frames_expected: AtomicU64::new(0),
            flushed: AtomicUsize::new(0),
            delays: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Counters {
    /// The `q` quantile (0 to 1) of the recorded delays, in milliseconds (NaN with none).
    pub fn delay_ms(&self, q: f64) -> f64 {
        let counts: Vec<u64> = self
            .delays
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        if total == 0 {
            return f64::NAN;
        }
        let rank = ((total - 1) as f64 * q) as u64;
        let mut seen = 0;
        for (i, n) in counts.iter().enumerate() {
            seen += n;
            if seen > rank {
                // The bucket's middle.
                return (i as f64 + 0.5) * BUCKET_US as f64 / 1000.0;
            }
        }
        f64::NAN
    }

    /// The share of the frames expected in the window that never reached the application of
    /// a receiver (after retransmissions), in percent.
    pub fn loss_percent(&self) -> f64 {
        let expected = self.frames_expected.load(Ordering::Relaxed) as f64;
        let received = self.frames_received.load(Ordering::Relaxed) as f64;
        if expected > 0.0 {
            (100.0 * (expected - received) / expected).max(0.0)
        } else {
            f64::NAN
        }
    }
}

/// One peer's state as the driver waits on it.
#[derive(Default)]
pub struct Status {
    pub connected: AtomicBool,
    /// Publishers whose audio arrived.
    pub audio_sources: AtomicUsize,
    /// Publishers whose video keyframe arrived.
    pub keyframe_sources: AtomicUsize,
}

impl Status {
    /// Connected and receiving audio and video (a keyframe) from `sources` publishers.
    pub fn receives(&self, sources: usize) -> bool {
        self.connected.load(Ordering::Relaxed)
            && self.audio_sources.load(Ordering::Relaxed) >= sources
            && self.keyframe_sources.load(Ordering::Relaxed) >= sources
    }
}

/// What a peer does.
#[derive(Clone, Copy)]
pub struct Role {
    /// Offers audio and video (sendonly) and sends them, stamped with this publisher number;
    /// otherwise offers one receive-only audio m-line (when `offers`).
    pub publishes: Option<u32>,
    /// Makes the first offer (Convene: every peer; Janus: publishers only, its subscribers
    /// answer the server's offer).
    pub offers: bool,
    /// Counts and measures what arrives, dropping `loss_percent` of the datagrams received.
    pub receives: bool,
    pub loss_percent: f64,
}

/// The clock of every stamp: the process's first call.
fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// A frame's stamp: publisher (u32), sequence number of the track (u32), send time in µs
/// since [`epoch`] (u64), little-endian.
fn stamp(frame: &mut [u8], at: usize, source: u32, seq: u32) {
    let sent = epoch().elapsed().as_micros() as u64;
    frame[at..at + 4].copy_from_slice(&source.to_le_bytes());
    frame[at + 4..at + 8].copy_from_slice(&seq.to_le_bytes());
    frame[at + 8..at + STAMP_BYTES].copy_from_slice(&sent.to_le_bytes());
}

fn read_stamp(frame: &[u8], at: usize) -> Option<(u32, u32, u64)> {
    let s = frame.get(at..at + STAMP_BYTES)?;
    Some((
        u32::from_le_bytes(s[0..4].try_into().ok()?),
        u32::from_le_bytes(s[4..8].try_into().ok()?),
        u64::from_le_bytes(s[8..16].try_into().ok()?),
    ))
}

/// An RTP (not RTCP, STUN or DTLS) datagram: RFC 7983's first byte 128–191, and a payload
/// type outside RTCP's packet types 192–223 (RFC 5761).
fn is_rtp(bytes: &[u8]) -> bool {
    bytes.len() >= 12 && (128..=191).contains(&bytes[0]) && !(64..=95).contains(&(bytes[1] & 0x7f))
}

pub fn description(kind: &str, sdp: String) -> Value {
    json!({"description": {"type": kind, "sdp": sdp}})
}

/// One received track (a publisher's audio or video) in the measured window.
#[derive(Default)]
struct Track {
    first: Option<u32>,
    last: u32,
    received: u64,
    /// Whether its first frame (audio) or first keyframe (video) has arrived.
    started: bool,
}

/// What a receiving peer keeps of the tracks it receives.
#[derive(Default)]
struct Received {
    tracks: HashMap<(u32, bool), Track>,
}

impl Received {
    fn frame(&mut self, counters: &Counters, status: &Status, video: bool, data: &[u8], key: bool) {
        let Some((source, seq, sent)) = read_stamp(
            data,
            if video {
                VIDEO_STAMP_AT
            } else {
                AUDIO_STAMP_AT
            },
        ) else {
            return;
        };
        let track = self.tracks.entry((source, video)).or_default();
        if !track.started && (key || !video) {
            track.started = true;
            let sources = if video {
                &status.keyframe_sources
            } else {
                &status.audio_sources
            };
            sources.fetch_add(1, Ordering::Relaxed);
        }
        if counters.phase.load(Ordering::Relaxed) != MEASURING {
            return;
        }
        let delay = (epoch().elapsed().as_micros() as u64).saturating_sub(sent);
        let bucket = ((delay / BUCKET_US) as usize).min(BUCKETS - 1);
        counters.delays[bucket].fetch_add(1, Ordering::Relaxed);
        let first = *track.first.get_or_insert(seq);
        // Frames from before the window (a late retransmission) are not counted.
        if seq.wrapping_sub(first) < u32::MAX / 2 {
            track.received += 1;
            if seq.wrapping_sub(track.last) < u32::MAX / 2 {
                track.last = seq;
            }
        }
    }

    /// Adds the window's frames received and expected to the counters.
    fn flush(&self, counters: &Counters) {
        let (mut received, mut expected) = (0, 0);
        for track in self.tracks.values() {
            if let Some(first) = track.first {
                received += track.received;
                expected += u64::from(track.last.wrapping_sub(first)) + 1;
            }
        }
        counters
            .frames_received
            .fetch_add(received, Ordering::Relaxed);
        counters
            .frames_expected
            .fetch_add(expected, Ordering::Relaxed);
        counters.flushed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The offer of what `role` sends (or one receive-only audio m-line); returns the mids of the
/// audio and video it publishes.
fn offer(
    rtc: &mut Rtc,
    role: Role,
    signals_out: &tmpsc::UnboundedSender<Value>,
) -> (Option<Mid>, Option<Mid>, SdpPendingOffer) {
    let mut change = rtc.sdp_api();
    let (audio, video) = if role.publishes.is_some() {
        let a = change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let v = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, None);
        (Some(a), Some(v))
    } else {
        change.add_media(MediaKind::Audio, Direction::RecvOnly, None, None, None);
        (None, None)
    };
    let (offer, pending) = change.apply().expect("something to offer");
    let _ = signals_out.send(description("offer", offer.to_sdp_string()));
    (audio, video, pending)
}

/// A peer connection on a thread of its own: offers (when the role says so), answers the
/// server's offers, takes the server's trickled candidates, writes stamped synthetic media
/// (publisher) and counts and measures what arrives (receiver), until `stop`.
pub fn media_thread(
    role: Role,
    signals_in: mpsc::Receiver<Value>,
    signals_out: tmpsc::UnboundedSender<Value>,
    status: Arc<Status>,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) {
    let ip = std::env::var("BENCH_PEER_IP").unwrap_or_else(|_| "127.0.0.1".into());
    let socket = UdpSocket::bind((ip.as_str(), 0)).expect("udp");
    let local = socket.local_addr().expect("local addr");
    let start = Instant::now();
    epoch();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(start);
    rtc.add_local_candidate(Candidate::host(local, "udp").expect("candidate"));
    let (mut audio, mut video, mut pending) = (None, None, None);
    if role.offers {
        let (a, v, p) = offer(&mut rtc, role, &signals_out);
        (audio, video, pending) = (a, v, Some(p));
    }

    let mut buf = vec![0u8; 2048];
    let frame_interval = Duration::from_micros(1_000_000 / VIDEO_FPS);
    let (mut next_audio, mut next_video) = (start, start);
    let mut want_keyframe = true;
    let (mut frame_no, mut audio_no): (u32, u32) = (0, 0);
    let mut random: u64 = 0x9e37_79b9_7f4a_7c15 ^ (local.port() as u64);
    let mut received = Received::default();
    let mut flushed = false;
    while !stop.load(Ordering::Relaxed) {
        while let Ok(data) = signals_in.try_recv() {
            if let Some(c) = data["candidate"]["candidate"].as_str() {
                let c = c.trim_start_matches("a=");
                if let Ok(c) = Candidate::from_sdp_string(c) {
                    rtc.add_remote_candidate(c);
                }
                continue;
            }
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
                    let offer_sdp = SdpOffer::from_sdp_string(sdp).expect("server offer");
                    // Glare: the server's offer wins (the server ignores ours meanwhile);
                    // accepting it rolls ours back, so ours is made again after the answer.
                    let again = pending.take().is_some();
                    let answer = rtc
                        .sdp_api()
                        .accept_offer(offer_sdp)
                        .expect("offer accepted");
                    let _ = signals_out.send(description("answer", answer.to_sdp_string()));
                    if again {
                        let (a, v, p) = offer(&mut rtc, role, &signals_out);
                        (audio, video, pending) = (a, v, Some(p));
                    }
                }
                _ => {}
            }
        }

        let now = Instant::now();
        if let Some(source) = role.publishes
            && rtc.is_connected()
        {
            if let Some(mid) = audio
                && now >= next_audio
            {
                next_audio += Duration::from_millis(20);
                audio_no = audio_no.wrapping_add(1);
                let mut frame = vec![0xfc; OPUS_BYTES];
                stamp(&mut frame, AUDIO_STAMP_AT, source, audio_no);
                write(&mut rtc, mid, Codec::Opus, now, start, frame);
            }
            if let Some(mid) = video
                && now >= next_video
            {
                next_video += frame_interval;
                frame_no = frame_no.wrapping_add(1);
                let key = want_keyframe || frame_no.is_multiple_of(KEYFRAME_EVERY);
                want_keyframe = false;
                let mut frame = vp8(key, frame_no);
                stamp(&mut frame, VIDEO_STAMP_AT, source, frame_no);
                write(&mut rtc, mid, Codec::Vp8, now, start, frame);
            }
        }

        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    if role.publishes.is_some() && is_rtp(&t.contents) {
                        counters.rtp_out.fetch_add(1, Ordering::Relaxed);
                    }
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => match event {
                    Event::Connected => status.connected.store(true, Ordering::Relaxed),
                    Event::KeyframeRequest(_) => want_keyframe = true,
                    Event::MediaData(data) if role.receives => {
                        let is_video = rtc
                            .media(data.mid)
                            .is_some_and(|m| m.kind() == MediaKind::Video);
                        if is_video {
                            counters.video_frames.fetch_add(1, Ordering::Relaxed);
                        }
                        received.frame(
                            &counters,
                            &status,
                            is_video,
                            &data.data,
                            data.is_keyframe(),
                        );
                    }
                    _ => {}
                },
                Err(e) => panic!("client rtc failed: {e}"),
            }
        };
        if role.receives && !flushed && counters.phase.load(Ordering::Relaxed) == DONE {
            flushed = true;
            received.flush(&counters);
        }

        let mut wait = timeout.saturating_duration_since(Instant::now());
        if role.publishes.is_some() {
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
            if role.receives && is_rtp(&buf[..n]) {
                counters.rtp_in.fetch_add(1, Ordering::Relaxed);
                counters.rtp_bytes_in.fetch_add(n as u64, Ordering::Relaxed);
            }
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            let lost = role.loss_percent > 0.0
                && rtc.is_connected()
                && ((random % 1_000_000) as f64 / 10_000.0) < role.loss_percent;
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

/// Starts a peer's media thread; returns its status and the two ends of its signals (to the
/// media thread, from it).
pub fn spawn_peer(
    role: Role,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> (
    Arc<Status>,
    mpsc::Sender<Value>,
    tmpsc::UnboundedReceiver<Value>,
) {
    let status = Arc::new(Status::default());
    let (to_media, signals_in) = mpsc::channel();
    let (signals_out, from_media) = tmpsc::unbounded_channel();
    let thread_status = status.clone();
    std::thread::spawn(move || {
        media_thread(role, signals_in, signals_out, thread_status, counters, stop)
    });
    (status, to_media, from_media)
}

/// Joins a Convene room with `token` over signaling and starts the peer's media thread; a
/// task carries `signal`s between the two until the socket ends.
pub async fn convene_peer(
    ws_url: String,
    token: String,
    role: Role,
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
    let (status, to_media, mut from_media) = spawn_peer(role, counters, stop);
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

/// Creates an SFU room on Convene; returns its token.
pub async fn convene_room(http: &reqwest::Client, base: &str, key: &str) -> String {
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
    room["room"]["token"]
        .as_str()
        .unwrap_or_else(|| panic!("create answered {room}"))
        .to_string()
}

/// Waits until `ready` holds of every status; fails after [`SETUP_LIMIT`].
pub async fn wait_for(what: &str, statuses: &[Arc<Status>], ready: impl Fn(&Status) -> bool) {
    let deadline = Instant::now() + SETUP_LIMIT;
    while !statuses.iter().all(|s| ready(s)) {
        if Instant::now() >= deadline {
            let n = statuses.iter().filter(|s| ready(s)).count();
            let late: Vec<String> = statuses
                .iter()
                .filter(|s| !ready(s))
                .map(|s| {
                    format!(
                        "connected {}, audio from {}, keyframes from {}",
                        s.connected.load(Ordering::Relaxed),
                        s.audio_sources.load(Ordering::Relaxed),
                        s.keyframe_sources.load(Ordering::Relaxed)
                    )
                })
                .collect();
            panic!(
                "set-up timed out waiting for {what} ({n} of {} ready; the others: {late:?})",
                statuses.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
