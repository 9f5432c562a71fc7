//! What the SFU load clients (bench/sfu_load.rs, bench/sfu_compare.rs) share: a headless str0m
//! peer connection on a thread and a UDP socket of its own on 127.0.0.1, its synthetic media,
//! what it counts and measures, and Convene's signaling (`signal {to: "sfu"}` both ways).
//!
//! Media: synthetic Opus (20 ms frames of 80 bytes: 50 packets/s) and VP8 at 30 fps (delta
//! frames of 2,000 bytes, a 20,000-byte keyframe every 3 s and whenever the server asks for
//! one), about what a 640×360 camera at ~600 kbit/s sends; or, with [`Role::simulcast`], VP8 in
//! the three simulcast layers of [`LAYERS`] (rids q, h, f, as the browser SDK sends them), each
//! with keyframes of its own size, pausing the layers the server's `layers` signal leaves out.
//! Every frame carries a stamp (see [`stamp`]): the publisher's number, a sequence number per
//! track (per layer), the send time and the layer, so a receiver knows the one-way delay of
//! each frame (one process: one clock), which frames never arrived, and which layer it got. With a loss of L %, a receiving peer drops L % of the datagrams it receives
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
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
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
/// The audio level (RFC 6464, −dBov) a speaking simulcast publisher sends with its audio, as
/// a browser does (publishers without simulcast send none, as in the scenarios before it).
const SPEAKING_LEVEL: i8 = -30;
/// Where the stamp sits: after the VP8 key frame's 10-byte header (inside a delta frame's
/// filler), after the Opus TOC byte.
const VIDEO_STAMP_AT: usize = 10;
const AUDIO_STAMP_AT: usize = 1;
const STAMP_BYTES: usize = 17;

/// A simulcast layer a publisher sends (see [`LAYERS`]).
pub struct LayerSpec {
    pub rid: &'static str,
    pub width: u16,
    pub height: u16,
    pub fps: u64,
    /// Bytes of a delta frame and of a keyframe.
    pub delta_bytes: usize,
    pub keyframe_bytes: usize,
    /// The layer's RTP time base (each layer has its own, as a browser's SSRCs do).
    rtp_base: u64,
}

/// The simulcast layers, lowest first, as the browser SDK sends a 720p camera (a quarter,
/// half and full size; at most 150 kbit/s, 500 kbit/s and 1.5 Mbit/s): with a keyframe of
/// about 4.5 delta frames every [`SIMULCAST_KEYFRAME_SECS`], q carries ~142 kbit/s at
/// 15 fps, h ~451 kbit/s and f ~1.37 Mbit/s at 30 fps. str0m packetizes a frame in RTP
/// payloads of at most ~1,150 bytes: q's delta frames are one packet, h's two, f's five.
/// In a stamp, layer `k` of this list is `k + 1` (0: a track without simulcast).
pub const LAYERS: [LayerSpec; 3] = [
    LayerSpec {
        rid: "q",
        width: 320,
        height: 180,
        fps: 15,
        delta_bytes: 1_100,
        keyframe_bytes: 5_000,
        rtp_base: 0,
    },
    LayerSpec {
        rid: "h",
        width: 640,
        height: 360,
        fps: 30,
        delta_bytes: 1_800,
        keyframe_bytes: 9_000,
        rtp_base: 1_000_000_000,
    },
    LayerSpec {
        rid: "f",
        width: 1280,
        height: 720,
        fps: 30,
        delta_bytes: 5_500,
        keyframe_bytes: 25_000,
        rtp_base: 3_000_000_000,
    },
];
/// A simulcast layer sends a keyframe this often (and when asked, and when resumed).
const SIMULCAST_KEYFRAME_SECS: u64 = 3;

/// The name of a stamp's layer: `q`, `h`, `f`, or `-` (no simulcast).
pub fn layer_name(layer: u8) -> &'static str {
    match layer {
        1..=3 => LAYERS[usize::from(layer) - 1].rid,
        _ => "-",
    }
}
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
    /// last sequence number received in the window, per run of a simulcast layer); added by
    /// each peer when the window ends.
    pub frames_received: AtomicU64,
    pub frames_expected: AtomicU64,
    /// Peers that have added theirs.
    pub flushed: AtomicUsize,
    /// Every received track of the window, as each peer adds it when the window ends.
    pub tracks: Mutex<Vec<TrackResult>>,
    /// Video frames the publishers wrote, per stamp layer (0: no simulcast, 1–3: q, h, f).
    pub frames_out: [AtomicU64; 4],
    /// One-way delays of the frames received in the window.
    delays: Vec<AtomicU64>,
}

/// One track a receiving peer got in the measured window: a publisher's audio, or one layer
/// of its video.
#[derive(Debug, Clone)]
pub struct TrackResult {
    /// The receiving peer's publisher number (`None`: a peer that does not publish).
    pub receiver: Option<u32>,
    pub source: u32,
    pub video: bool,
    /// The stamp's layer (0: no simulcast or audio, 1–3: q, h, f).
    pub layer: u8,
    pub received: u64,
    /// From the first to the last sequence number received in the window.
    pub expected: u64,
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
            tracks: Mutex::new(Vec::new()),
            frames_out: Default::default(),
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
    /// A publisher sends its video in the three simulcast layers of [`LAYERS`].
    pub simulcast: bool,
    /// A publisher sends audio (with an audio level of speech); otherwise its audio m-line
    /// stays silent, as a muted browser's does.
    pub speaks: bool,
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
/// since [`epoch`] (u64), little-endian, and the layer (u8: 0 none, 1–3 q, h, f).
fn stamp(frame: &mut [u8], at: usize, source: u32, seq: u32, layer: u8) {
    let sent = epoch().elapsed().as_micros() as u64;
    frame[at..at + 4].copy_from_slice(&source.to_le_bytes());
    frame[at + 4..at + 8].copy_from_slice(&seq.to_le_bytes());
    frame[at + 8..at + 16].copy_from_slice(&sent.to_le_bytes());
    frame[at + 16] = layer;
}

/// A frame's stamp: publisher, sequence number, send time, layer.
fn read_stamp(frame: &[u8], at: usize) -> Option<(u32, u32, u64, u8)> {
    let s = frame.get(at..at + STAMP_BYTES)?;
    Some((
        u32::from_le_bytes(s[0..4].try_into().ok()?),
        u32::from_le_bytes(s[4..8].try_into().ok()?),
        u64::from_le_bytes(s[8..16].try_into().ok()?),
        s[16],
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

/// One received track (a publisher's audio, or a layer of its video) in the measured window.
#[derive(Default)]
struct Track {
    /// The first and last sequence numbers of its current run of frames.
    first: Option<u32>,
    last: u32,
    received: u64,
    /// Frames expected in its earlier runs (a layer forwarded, then another, then it again:
    /// the frames in between were not forwarded, not lost).
    done: u64,
}

impl Track {
    /// Frames expected: from the first to the last sequence number of each run.
    fn expected(&self) -> u64 {
        self.done
            + self
                .first
                .map_or(0, |first| u64::from(self.last.wrapping_sub(first)) + 1)
    }
}

/// What a receiving peer keeps of the tracks it receives.
#[derive(Default)]
struct Received {
    /// By (publisher, video, layer).
    tracks: HashMap<(u32, bool, u8), Track>,
    /// (publisher, video) whose first frame (audio) or first keyframe (video) has arrived.
    started: std::collections::HashSet<(u32, bool)>,
    /// The layer of each publisher's last video frame in the window.
    layer_now: HashMap<u32, u8>,
}

impl Received {
    fn frame(&mut self, counters: &Counters, status: &Status, video: bool, data: &[u8], key: bool) {
        let Some((source, seq, sent, layer)) = read_stamp(
            data,
            if video {
                VIDEO_STAMP_AT
            } else {
                AUDIO_STAMP_AT
            },
        ) else {
            return;
        };
        if (key || !video) && self.started.insert((source, video)) {
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
        let switched = video
            && self
                .layer_now
                .insert(source, layer)
                .is_some_and(|l| l != layer);
        let track = self.tracks.entry((source, video, layer)).or_default();
        if switched && track.first.is_some() {
            // Back to this layer after another: a new run.
            track.done = track.expected();
            track.first = None;
        }
        let delay = (epoch().elapsed().as_micros() as u64).saturating_sub(sent);
        let bucket = ((delay / BUCKET_US) as usize).min(BUCKETS - 1);
        counters.delays[bucket].fetch_add(1, Ordering::Relaxed);
        if track.first.is_none() {
            (track.first, track.last) = (Some(seq), seq);
        }
        let first = track.first.unwrap_or(seq);
        // Frames from before the window (a late retransmission) are not counted.
        if seq.wrapping_sub(first) < u32::MAX / 2 {
            track.received += 1;
            if seq.wrapping_sub(track.last) < u32::MAX / 2 {
                track.last = seq;
            }
        }
    }

    /// Adds the window's frames received and expected, and its tracks, to the counters.
    fn flush(&self, counters: &Counters, receiver: Option<u32>) {
        let (mut received, mut expected) = (0, 0);
        let mut results = Vec::new();
        for (&(source, video, layer), track) in &self.tracks {
            if track.first.is_some() || track.done > 0 {
                let n = track.expected();
                received += track.received;
                expected += n;
                results.push(TrackResult {
                    receiver,
                    source,
                    video,
                    layer,
                    received: track.received,
                    expected: n,
                });
            }
        }
        counters.tracks.lock().unwrap().extend(results);
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
        let simulcast = role.simulcast.then(|| {
            let mut s = Simulcast::new();
            for layer in &LAYERS {
                s.add_send_layer(SimulcastLayer::new(layer.rid));
            }
            s
        });
        let v = change.add_media(MediaKind::Video, Direction::SendOnly, None, None, simulcast);
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
    let mut layers: Vec<SendLayer> = LAYERS
        .iter()
        .map(|spec| SendLayer {
            rid: Rid::from(spec.rid),
            interval: Duration::from_micros(1_000_000 / spec.fps),
            next: start,
            on: true,
            keyframe: true,
            frame_no: 0,
            last_keyframe: start,
        })
        .collect();
    let (mut frame_no, mut audio_no): (u32, u32) = (0, 0);
    let mut random: u64 = 0x9e37_79b9_7f4a_7c15 ^ (local.port() as u64);
    let mut received = Received::default();
    let mut flushed = false;
    while !stop.load(Ordering::Relaxed) {
        while let Ok(data) = signals_in.try_recv() {
            // The server's `layers`: the encodings someone uses; the others pause, and one
            // resumed starts with a keyframe (as a browser's encoder does).
            if let Some(active) = data["layers"]["active"].as_array() {
                for layer in &mut layers {
                    let on = active.iter().any(|r| r.as_str() == Some(&*layer.rid));
                    layer.keyframe |= on && !layer.on;
                    layer.on = on;
                }
                continue;
            }
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
                && role.speaks
                && now >= next_audio
            {
                next_audio += Duration::from_millis(20);
                audio_no = audio_no.wrapping_add(1);
                let mut frame = vec![0xfc; OPUS_BYTES];
                stamp(&mut frame, AUDIO_STAMP_AT, source, audio_no, 0);
                let level = role.simulcast.then_some(SPEAKING_LEVEL);
                write(&mut rtc, mid, Codec::Opus, now, start, frame, None, level);
            }
            if let Some(mid) = video
                && !role.simulcast
                && now >= next_video
            {
                next_video += frame_interval;
                frame_no = frame_no.wrapping_add(1);
                let key = want_keyframe || frame_no.is_multiple_of(KEYFRAME_EVERY);
                want_keyframe = false;
                let mut frame = vp8(key, frame_no);
                stamp(&mut frame, VIDEO_STAMP_AT, source, frame_no, 0);
                write(&mut rtc, mid, Codec::Vp8, now, start, frame, None, None);
                counters.frames_out[0].fetch_add(1, Ordering::Relaxed);
            }
            if let Some(mid) = video
                && role.simulcast
            {
                for (k, (layer, spec)) in layers.iter_mut().zip(&LAYERS).enumerate() {
                    if now < layer.next {
                        continue;
                    }
                    layer.next += layer.interval;
                    // A paused layer's clock goes on, so it resumes in step.
                    if !layer.on {
                        continue;
                    }
                    layer.frame_no = layer.frame_no.wrapping_add(1);
                    let periodic = now.duration_since(layer.last_keyframe)
                        >= Duration::from_secs(SIMULCAST_KEYFRAME_SECS);
                    let key = std::mem::take(&mut layer.keyframe) || periodic;
                    if key {
                        layer.last_keyframe = now;
                    }
                    let mut frame = vp8_layer(spec, key, layer.frame_no);
                    let at = k as u8 + 1;
                    stamp(&mut frame, VIDEO_STAMP_AT, source, layer.frame_no, at);
                    let ticks = (now - start).as_micros() as u64 * 90 / 1000 + spec.rtp_base;
                    let time = MediaTime::new(ticks, Frequency::NINETY_KHZ);
                    write_at(
                        &mut rtc,
                        mid,
                        Codec::Vp8,
                        now,
                        time,
                        frame,
                        Some(layer.rid),
                        None,
                    );
                    counters.frames_out[usize::from(at)].fetch_add(1, Ordering::Relaxed);
                }
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
                    Event::KeyframeRequest(request) => {
                        want_keyframe = true;
                        for layer in &mut layers {
                            if request.rid.is_none_or(|r| r == layer.rid) {
                                layer.keyframe = true;
                            }
                        }
                    }
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
            received.flush(&counters, role.publishes);
        }

        let mut wait = timeout.saturating_duration_since(Instant::now());
        if role.publishes.is_some() {
            let next = if role.simulcast {
                layers.iter().map(|l| l.next).min().unwrap_or(next_video)
            } else {
                next_video
            };
            let next = if role.speaks {
                next.min(next_audio)
            } else {
                next
            };
            wait = wait.min(next.saturating_duration_since(Instant::now()));
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

/// Writes a frame of `codec` on `mid`, its RTP time from the peer's `start`; see [`write_at`].
#[allow(clippy::too_many_arguments)]
fn write(
    rtc: &mut Rtc,
    mid: Mid,
    codec: Codec,
    now: Instant,
    start: Instant,
    data: Vec<u8>,
    rid: Option<Rid>,
    level: Option<i8>,
) {
    write_at(rtc, mid, codec, now, (now - start).into(), data, rid, level);
}

/// Writes a frame of `codec` on `mid` at RTP time `time`: of simulcast layer `rid` when
/// given, with an audio level (RFC 6464, speech) when given.
#[allow(clippy::too_many_arguments)]
fn write_at(
    rtc: &mut Rtc,
    mid: Mid,
    codec: Codec,
    now: Instant,
    time: MediaTime,
    data: Vec<u8>,
    rid: Option<Rid>,
    level: Option<i8>,
) {
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
    let writer = match rid {
        Some(rid) => writer.rid(rid),
        None => writer,
    };
    let writer = match level {
        Some(level) => writer.audio_level(level, true),
        None => writer,
    };
    let _ = writer.write(pt, now, time, data);
}

/// A simulcast layer a publisher sends, as it goes.
struct SendLayer {
    rid: Rid,
    interval: Duration,
    /// When its next frame is due.
    next: Instant,
    /// The server did not pause it.
    on: bool,
    /// Its next frame is a keyframe.
    keyframe: bool,
    /// Its frames' sequence number (the stamp's).
    frame_no: u32,
    last_keyframe: Instant,
}

/// A frame of simulcast layer `spec`: a key frame (frame tag with the key-frame bit clear,
/// start code, the layer's width and height, as RFC 6386 §9.1 has them) or an inter frame,
/// then filler, at the layer's sizes.
fn vp8_layer(spec: &LayerSpec, key: bool, n: u32) -> Vec<u8> {
    let mut frame = if key {
        let mut header = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
        header.extend(spec.width.to_le_bytes());
        header.extend(spec.height.to_le_bytes());
        header
    } else {
        vec![0x11, 0x02, 0x00]
    };
    let size = if key {
        spec.keyframe_bytes
    } else {
        spec.delta_bytes
    };
    frame.resize(size, n as u8);
    frame
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
    convene_join(ws_url, token, role, counters, stop)
        .await
        .status
}

/// The largest signaling message a peer's media thread sent (an SDP offer or answer), in
/// bytes: Convene refuses one over `signaling_max_frame_bytes`.
pub static LARGEST_SIGNAL: AtomicUsize = AtomicUsize::new(0);

/// A participant joined to a Convene room (see [`convene_join`]).
pub struct Joined {
    pub status: Arc<Status>,
    /// Its address in the room (from `joined`).
    pub address: String,
    /// `data` sent here goes to the server as `signal {to: "sfu", data}` (`views`, say).
    pub to_sfu: tmpsc::UnboundedSender<Value>,
}

/// [`convene_peer`], answering the participant's address and a way to signal `sfu`.
pub async fn convene_join(
    ws_url: String,
    token: String,
    role: Role,
    counters: Arc<Counters>,
    stop: Arc<AtomicBool>,
) -> Joined {
    let (mut ws, _) = tokio_tungstenite::connect_async(&ws_url)
        .await
        .expect("signaling socket");
    ws.send(Message::text(
        json!({"type": "join", "token": token}).to_string(),
    ))
    .await
    .expect("join");
    let address = loop {
        let text = match ws.next().await {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => panic!("closed before joined: {frame:?}"),
            Some(Ok(_)) => continue,
            other => panic!("the socket ended before joined: {other:?}"),
        };
        let message: Value = serde_json::from_str(&text).expect("json");
        match message["type"].as_str() {
            Some("joined") => break message["address"].as_str().unwrap_or_default().to_string(),
            Some("error") => panic!("join refused: {message}"),
            _ => {}
        }
    };
    let (status, to_media, mut from_media) = spawn_peer(role, counters, stop);
    let (to_sfu, mut from_driver) = tmpsc::unbounded_channel::<Value>();
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
                    LARGEST_SIGNAL.fetch_max(text.len(), Ordering::Relaxed);
                    if ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
                Some(data) = from_driver.recv() => {
                    let text = json!({"type": "signal", "to": "sfu", "data": data}).to_string();
                    if ws.send(Message::text(text)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Joined {
        status,
        address,
        to_sfu,
    }
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
