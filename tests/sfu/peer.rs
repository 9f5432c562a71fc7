//! A headless WebRTC client on str0m: one peer connection to the server's media plane
//! over real UDP on 127.0.0.1, negotiated through the real signaling WebSocket
//! (`signal {to: "sfu"}` both ways), publishing synthetic Opus (20 ms frames) and VP8
//! (a keyframe, then delta frames; a keyframe again whenever one is requested).
//!
//! The str0m side runs on a thread of its own; a tokio task bridges it and the signaling
//! socket, and records everything that arrives in [`Seen`], which tests wait on.

use crate::support::TestApp;
use crate::ws::{self, Incoming};
use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast, SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::sync::{Notify, mpsc as tmpsc};

/// How long anything expected may take: a failure guard, not a timing claim.
pub const WAIT: Duration = Duration::from_secs(15);

/// What a client has seen so far.
#[derive(Debug, Default)]
pub struct Seen {
    pub connected: bool,
    /// Incoming tracks: mid → (stream id, kind).
    pub tracks: HashMap<String, (String, &'static str)>,
    /// Incoming tracks that the server stopped.
    pub ended: HashSet<String>,
    /// Frames received per (stream id, kind).
    pub frames: HashMap<(String, &'static str), u64>,
    /// Video keyframes received per stream id.
    pub keyframes: HashMap<String, u64>,
    /// Keyframe requests this client got for what it publishes.
    pub keyframe_requests: u64,
    /// Every signaling message other than `signal` from `sfu`.
    pub messages: Vec<Value>,
    /// How the signaling socket closed, if it did.
    pub closed: Option<u16>,
    /// The SDP the server sent: (type, sdp).
    pub descriptions: Vec<(String, String)>,
    /// Video frames received per stream id, in order.
    pub video: HashMap<String, Vec<Frame>>,
    /// What the server said about this client's simulcast layers: the active rids, each time.
    pub layers_told: Vec<Vec<String>>,
}

/// A video frame received.
#[derive(Debug, Clone)]
pub struct Frame {
    /// The RTP time (90 kHz, extended).
    pub time: u64,
    pub keyframe: bool,
    /// The layer it came from: `q`, `h` or `f` (simulcast publishers), else `-`.
    pub layer: char,
    /// No packet was missing before it.
    pub contiguous: bool,
}

impl Seen {
    pub fn frames_from(&self, stream: &str, kind: &'static str) -> u64 {
        self.frames
            .get(&(stream.to_string(), kind))
            .copied()
            .unwrap_or(0)
    }

    /// Open (not ended) incoming tracks from this publisher.
    pub fn open_tracks_from(&self, stream: &str) -> usize {
        self.tracks
            .iter()
            .filter(|(mid, (s, _))| s == stream && !self.ended.contains(*mid))
            .count()
    }

    pub fn errors(&self) -> Vec<&Value> {
        self.messages
            .iter()
            .filter(|m| m["type"] == "error")
            .collect()
    }
}

/// What the bridge tells the media thread.
enum ToMedia {
    Offer,
    /// The audio level (−dBov) written with each audio frame from now on.
    Level(i8),
    /// Signals go out through this bridge from now on (after a resume).
    Rewire(tmpsc::UnboundedSender<FromMedia>),
    Signal(Value),
    Stop,
}

/// What the media thread tells the bridge.
enum FromMedia {
    Signal(Value),
}

/// How the client publishes.
#[derive(Debug, Clone, Copy)]
pub struct Publish {
    pub audio: bool,
    pub video: bool,
    /// Extra video tracks beyond the first (to go past the server's limit).
    pub extra_video: usize,
    /// Once connected, drop every n-th datagram from the server (0: none), as a lossy
    /// network would.
    pub drop_every: usize,
    /// Video in three simulcast layers (rids q, h, f: 160×90, 320×180, 640×360 keyframes,
    /// about 100, 320 and 960 kbit/s, each layer on an RTP time base of its own), pausing
    /// the layers the server says nobody uses.
    pub simulcast: bool,
    /// A downlink of this many kbit/s (0: unlimited): what arrives faster waits in a
    /// queue (of at most 300 ms; beyond it, datagrams are dropped), as on a thin link.
    pub downlink_kbps: u64,
}

impl Publish {
    pub const AV: Self = Self {
        audio: true,
        video: true,
        extra_video: 0,
        drop_every: 0,
        simulcast: false,
        downlink_kbps: 0,
    };
}

/// One participant: signaling socket, media thread and what it saw.
pub struct Peer {
    pub address: String,
    resume_token: String,
    app_host: String,
    pub seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    to_media: mpsc::Sender<ToMedia>,
    to_socket: Mutex<tmpsc::UnboundedSender<Value>>,
}

impl Peer {
    /// Joins the room with `token` and offers to the server with what `publish` says.
    pub async fn join(app: &TestApp, token: &str, publish: Publish) -> Self {
        let peer = Self::join_quiet(app, token, publish).await;
        peer.offer();
        peer
    }

    /// Joins without offering yet (see [`Peer::offer`]).
    pub async fn join_quiet(app: &TestApp, token: &str, publish: Publish) -> Self {
        let (ws, joined) = ws::Client::join(app, token, "headless").await;
        let address = joined["address"].as_str().unwrap().to_string();
        let resume_token = joined["resumeToken"].as_str().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let changed = Arc::new(Notify::new());
        let (to_media, media_rx) = mpsc::channel();
        let (from_media, from_media_rx) = tmpsc::unbounded_channel();
        let (to_socket, socket_rx) = tmpsc::unbounded_channel();
        {
            let (seen, changed) = (seen.clone(), changed.clone());
            std::thread::spawn(move || media_thread(publish, media_rx, from_media, seen, changed));
        }
        tokio::spawn(bridge(
            ws,
            from_media_rx,
            socket_rx,
            to_media.clone(),
            seen.clone(),
            changed.clone(),
        ));
        Self {
            address,
            resume_token,
            app_host: app.address.clone(),
            seen,
            changed,
            to_media,
            to_socket: Mutex::new(to_socket),
        }
    }

    /// Waits until `what` holds of what this client saw; fails after [`WAIT`].
    pub async fn wait_for(&self, what: &str, test: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let notified = self.changed.notified();
            if test(&self.seen.lock().unwrap()) {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "{}: timed out waiting for {what}; saw {:#?}",
                    self.address,
                    self.seen.lock().unwrap()
                );
            }
        }
    }

    /// Drops the signaling socket without a close handshake and resumes the seat on a new
    /// one (same address); the media thread and its peer connection carry on.
    pub async fn resume_signaling(&self, app: &TestApp, token: &str) {
        self.drop_signaling().await;
        self.rejoin_signaling(app, token).await;
    }

    /// Drops the signaling socket without a close handshake (see
    /// [`Peer::rejoin_signaling`]); the media thread and its peer connection carry on.
    pub async fn drop_signaling(&self) {
        self.send(json!({"type": "__drop"}));
        self.wait_for("the socket to drop", |s| s.closed.is_some())
            .await;
    }

    /// Resumes the seat on a new signaling socket (same address).
    pub async fn rejoin_signaling(&self, app: &TestApp, token: &str) {
        assert_eq!(self.app_host, app.address);
        let (ws, joined) = ws::Client::join_with(
            app,
            json!({"type": "join", "token": token, "resume": self.resume_token}),
        )
        .await;
        assert_eq!(joined["address"], self.address.as_str());
        let (from_media, from_media_rx) = tmpsc::unbounded_channel();
        let (to_socket, socket_rx) = tmpsc::unbounded_channel();
        let _ = self.to_media.send(ToMedia::Rewire(from_media));
        *self.to_socket.lock().unwrap() = to_socket;
        self.seen.lock().unwrap().closed = None;
        tokio::spawn(bridge(
            ws,
            from_media_rx,
            socket_rx,
            self.to_media.clone(),
            self.seen.clone(),
            self.changed.clone(),
        ));
    }

    /// Makes the client's first offer to the server.
    pub fn offer(&self) {
        let _ = self.to_media.send(ToMedia::Offer);
    }

    /// Sends a signaling message as it is.
    pub fn send(&self, message: Value) {
        let _ = self.to_socket.lock().unwrap().send(message);
    }

    /// Sends `signal {to: "sfu", data}`.
    pub fn signal_sfu(&self, data: Value) {
        self.send(json!({"type": "signal", "to": "sfu", "data": data}));
    }

    pub fn leave(&self) {
        self.send(json!({"type": "leave"}));
    }

    /// Sets the audio level sent with each audio frame (RFC 6464: 0 loudest, −127 silence).
    pub fn speak(&self, level: i8) {
        let _ = self.to_media.send(ToMedia::Level(level));
    }

    /// Says what this client shows of others: (address, width, height); 0 × 0 hides.
    pub fn views(&self, views: &[(&str, u32, u32)]) {
        let list: Vec<Value> = views
            .iter()
            .map(|(a, w, h)| json!({"address": a, "width": w, "height": h}))
            .collect();
        self.signal_sfu(json!({ "views": list }));
    }

    /// Stops the media thread (the bridge ends with the socket).
    pub fn stop(&self) {
        let _ = self.to_media.send(ToMedia::Stop);
    }

    pub fn snapshot<T>(&self, f: impl Fn(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Carries `signal`s between the socket and the media thread and records the rest.
async fn bridge(
    mut ws: ws::Client,
    mut from_media: tmpsc::UnboundedReceiver<FromMedia>,
    mut to_socket: tmpsc::UnboundedReceiver<Value>,
    to_media: mpsc::Sender<ToMedia>,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
) {
    let forever = Duration::from_secs(3600);
    loop {
        tokio::select! {
            incoming = ws.recv_within(forever) => match incoming {
                Incoming::Text(message) if message["type"] == "signal" && message["from"] == "sfu" => {
                    if let Some(active) = message["data"]["layers"]["active"].as_array() {
                        let rids = active.iter().filter_map(|r| r.as_str().map(String::from)).collect();
                        seen.lock().unwrap().layers_told.push(rids);
                        changed.notify_waiters();
                    }
                    if let Some(d) = message["data"].get("description") {
                        seen.lock().unwrap().descriptions.push((
                            d["type"].as_str().unwrap_or_default().to_string(),
                            d["sdp"].as_str().unwrap_or_default().to_string(),
                        ));
                    }
                    let _ = to_media.send(ToMedia::Signal(message["data"].clone()));
                }
                Incoming::Text(message) => {
                    seen.lock().unwrap().messages.push(message);
                    changed.notify_waiters();
                }
                Incoming::Closed(code, _) => {
                    seen.lock().unwrap().closed = Some(code);
                    changed.notify_waiters();
                    // The media thread goes on (sending) until the test drops the peer:
                    // only the server can stop what it forwards.
                    return;
                }
            },
            Some(FromMedia::Signal(data)) = from_media.recv() => {
                ws.send(json!({"type": "signal", "to": "sfu", "data": data})).await;
            }
            Some(message) = to_socket.recv() => {
                if message["type"] == "__drop" {
                    ws.drop_connection();
                    seen.lock().unwrap().closed = Some(1006);
                    changed.notify_waiters();
                    return;
                }
                ws.send(message).await
            }
        }
    }
}

/// The str0m client: offers what it publishes, answers the server's offers, writes
/// synthetic media once connected and records what arrives.
fn media_thread(
    publish: Publish,
    commands: mpsc::Receiver<ToMedia>,
    mut out: tmpsc::UnboundedSender<FromMedia>,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let start = Instant::now();
    let mut rtc = Rtc::builder()
        .clear_codecs()
        .enable_opus(true, false)
        .enable_vp8(true)
        .build(start);
    rtc.add_local_candidate(Candidate::host(local, "udp").unwrap());
    let mut audio: Option<Mid> = None;
    let mut videos: Vec<Mid> = Vec::new();
    let mut pending: Option<SdpPendingOffer> = None;
    let description = |kind: &str, sdp: String| json!({"description": {"type": kind, "sdp": sdp}});

    let mut buf = vec![0u8; 2048];
    let mut next_audio = start;
    let mut next_video = start;
    let mut want_keyframe = true;
    // When this client last asked for a keyframe of a video it receives without having had
    // one (the first packets of a stream lost on a lossy downlink leave nothing to NACK).
    let mut asked_keyframe: HashMap<Mid, Instant> = HashMap::new();
    let mut frame_no: u32 = 0;
    let mut received: usize = 0;
    let mut level: Option<i8> = None;
    let mut layers: Vec<SendLayer> = [
        ("q", (160, 90), 0, 600),
        ("h", (320, 180), 1_000_000_000, 2_000),
        ("f", (640, 360), 3_000_000_000, 6_000),
    ]
    .into_iter()
    .map(|(rid, size, base, bytes)| SendLayer {
        rid: Rid::from(rid),
        size,
        base,
        bytes,
        on: true,
        keyframe: true,
    })
    .collect();
    // The thin downlink: datagrams waiting, with when they are through.
    let mut downlink: std::collections::VecDeque<(Instant, SocketAddr, Vec<u8>)> =
        std::collections::VecDeque::new();
    let mut link_free = start;
    loop {
        // Commands from the bridge.
        loop {
            match commands.try_recv() {
                Ok(ToMedia::Offer) => {
                    let mut change = rtc.sdp_api();
                    if publish.audio {
                        audio = Some(change.add_media(
                            MediaKind::Audio,
                            Direction::SendOnly,
                            None,
                            None,
                            None,
                        ));
                    }
                    if publish.video {
                        for _ in 0..=publish.extra_video {
                            let simulcast = publish.simulcast.then(|| {
                                let mut s = Simulcast::new();
                                for layer in &layers {
                                    s.add_send_layer(SimulcastLayer::new(&layer.rid));
                                }
                                s
                            });
                            videos.push(change.add_media(
                                MediaKind::Video,
                                Direction::SendOnly,
                                None,
                                None,
                                simulcast,
                            ));
                        }
                    }
                    let (offer, p) = change.apply().expect("something to offer");
                    pending = Some(p);
                    let _ = out.send(FromMedia::Signal(description(
                        "offer",
                        offer.to_sdp_string(),
                    )));
                }
                Ok(ToMedia::Rewire(to)) => out = to,
                Ok(ToMedia::Level(l)) => level = Some(l),
                Ok(ToMedia::Signal(data)) => {
                    if let Some(active) = data["layers"]["active"].as_array() {
                        for layer in &mut layers {
                            let on = active.iter().any(|r| r.as_str() == Some(&*layer.rid));
                            // A layer resumed starts with a keyframe, as a browser's does.
                            layer.keyframe |= on && !layer.on;
                            layer.on = on;
                        }
                    }
                    let Some(d) = data.get("description") else {
                        continue;
                    };
                    let sdp = d["sdp"].as_str().unwrap_or_default();
                    match d["type"].as_str() {
                        Some("answer") => {
                            let answer = SdpAnswer::from_sdp_string(sdp).expect("server answer");
                            let pending = pending.take().expect("an answer to our offer");
                            rtc.sdp_api()
                                .accept_answer(pending, answer)
                                .expect("answer accepted");
                        }
                        Some("offer") => {
                            let offer = SdpOffer::from_sdp_string(sdp).expect("server offer");
                            let answer = rtc.sdp_api().accept_offer(offer).expect("offer ok");
                            let _ = out.send(FromMedia::Signal(description(
                                "answer",
                                answer.to_sdp_string(),
                            )));
                        }
                        other => panic!("unexpected description {other:?}"),
                    }
                }
                Ok(ToMedia::Stop) | Err(mpsc::TryRecvError::Disconnected) => {
                    rtc.disconnect();
                    return;
                }
                Err(mpsc::TryRecvError::Empty) => break,
            }
        }

        // Synthetic media, once connected.
        let now = Instant::now();
        if rtc.is_connected() {
            if let Some(mid) = audio
                && now >= next_audio
            {
                next_audio += Duration::from_millis(20);
                let pt = rtc.writer(mid).and_then(|w| {
                    w.payload_params()
                        .find(|p| p.spec().codec == Codec::Opus)
                        .map(|p| p.pt())
                });
                if let Some(level) = level
                    && let Some(pt) = pt
                    && let Some(writer) = rtc.writer(mid)
                {
                    let time: MediaTime = (now - start).into();
                    let _ = writer.audio_level(level, level > -50).write(
                        pt,
                        now,
                        time,
                        vec![0xfc, 0xff, 0xfe, 0x01],
                    );
                } else {
                    write(
                        &mut rtc,
                        mid,
                        Codec::Opus,
                        now,
                        start,
                        vec![0xfc, 0xff, 0xfe, 0x01],
                    );
                }
            }
            if publish.simulcast && now >= next_video && !videos.is_empty() {
                next_video += Duration::from_millis(50);
                frame_no += 1;
                let mid = videos[0];
                for layer in &mut layers {
                    if !layer.on {
                        continue;
                    }
                    let marker = layer.rid.as_bytes()[0];
                    let frame = if std::mem::take(&mut layer.keyframe) {
                        vp8_keyframe_of(layer.size, marker, layer.bytes * 3)
                    } else {
                        vp8_frame_of(marker, layer.bytes)
                    };
                    let Some(writer) = rtc.writer(mid) else {
                        continue;
                    };
                    let Some(pt) = writer
                        .payload_params()
                        .find(|p| p.spec().codec == Codec::Vp8)
                        .map(|p| p.pt())
                    else {
                        continue;
                    };
                    let ticks = (now - start).as_micros() as u64 * 90 / 1000 + layer.base;
                    let time = MediaTime::new(ticks, str0m::media::Frequency::NINETY_KHZ);
                    let _ = writer.rid(layer.rid).write(pt, now, time, frame);
                }
            } else if now >= next_video && !videos.is_empty() {
                next_video += Duration::from_millis(50);
                frame_no += 1;
                let frame = if want_keyframe {
                    want_keyframe = false;
                    vp8_keyframe(frame_no)
                } else {
                    vp8_delta(frame_no)
                };
                for &mid in &videos {
                    write(&mut rtc, mid, Codec::Vp8, now, start, frame.clone());
                }
            }
        }

        // Drive the peer connection until its next timeout.
        let timeout = loop {
            match rtc.poll_output() {
                Ok(Output::Timeout(t)) => break t,
                Ok(Output::Transmit(t)) => {
                    let _ = socket.send_to(&t.contents, t.destination);
                }
                Ok(Output::Event(event)) => {
                    let mut s = seen.lock().unwrap();
                    match event {
                        Event::Connected => s.connected = true,
                        Event::MediaAdded(e) if e.direction.is_receiving() => {
                            let stream = rtc
                                .media(e.mid)
                                .map(|m| m.stream_id().to_string())
                                .unwrap_or_default();
                            s.tracks
                                .insert(e.mid.to_string(), (stream, kind_name(e.kind)));
                        }
                        Event::MediaChanged(e) if !e.direction.is_receiving() => {
                            if s.tracks.contains_key(&e.mid.to_string()) {
                                s.ended.insert(e.mid.to_string());
                            }
                        }
                        Event::MediaData(data) => {
                            let (stream, kind) = s
                                .tracks
                                .get(&data.mid.to_string())
                                .cloned()
                                .unwrap_or_default();
                            *s.frames.entry((stream.clone(), kind)).or_default() += 1;
                            if kind == "video" {
                                let layer = match data.data.last() {
                                    Some(b'q') => 'q',
                                    Some(b'h') => 'h',
                                    Some(b'f') => 'f',
                                    _ => '-',
                                };
                                s.video.entry(stream.clone()).or_default().push(Frame {
                                    time: data.time.numer(),
                                    keyframe: data.is_keyframe(),
                                    layer,
                                    contiguous: data.contiguous,
                                });
                            }
                            if kind == "video" && data.is_keyframe() {
                                *s.keyframes.entry(stream).or_default() += 1;
                            } else if kind == "video"
                                && !s.keyframes.contains_key(&stream)
                                && asked_keyframe
                                    .get(&data.mid)
                                    .is_none_or(|at| at.elapsed() > Duration::from_millis(500))
                            {
                                // Delta frames and no keyframe yet: ask, as a browser would
                                // (it cannot decode them).
                                asked_keyframe.insert(data.mid, Instant::now());
                                if let Some(mut writer) = rtc.writer(data.mid) {
                                    let _ =
                                        writer.request_keyframe(data.rid, KeyframeRequestKind::Pli);
                                }
                            }
                        }
                        Event::KeyframeRequest(request) => {
                            s.keyframe_requests += 1;
                            want_keyframe = true;
                            for layer in &mut layers {
                                if request.rid.is_none_or(|r| r == layer.rid) {
                                    layer.keyframe = true;
                                }
                            }
                        }
                        _ => continue,
                    }
                    drop(s);
                    changed.notify_waiters();
                }
                Err(e) => panic!("client rtc failed: {e}"),
            }
        };

        let wait = timeout
            .min(next_audio)
            .min(next_video)
            .saturating_duration_since(Instant::now())
            .clamp(Duration::from_millis(1), Duration::from_millis(5));
        socket.set_read_timeout(Some(wait)).unwrap();
        if let Ok((n, source)) = socket.recv_from(&mut buf) {
            if let Some(micros) = (n as u64 * 8 * 1000).checked_div(publish.downlink_kbps) {
                let now = Instant::now();
                let start = link_free.max(now);
                if start.duration_since(now) < Duration::from_millis(300) {
                    link_free = start + Duration::from_micros(micros);
                    downlink.push_back((link_free, source, buf[..n].to_vec()));
                }
            } else if let Ok(receive) = Receive::new(Protocol::Udp, source, local, &buf[..n])
                && !(publish.drop_every > 0 && rtc.is_connected() && {
                    received += 1;
                    received.is_multiple_of(publish.drop_every)
                })
            {
                rtc.handle_input(Input::Receive(Instant::now(), receive))
                    .expect("client input");
            }
        }
        while downlink
            .front()
            .is_some_and(|(at, ..)| *at <= Instant::now())
        {
            let (_, source, datagram) = downlink.pop_front().expect("checked");
            if let Ok(receive) = Receive::new(Protocol::Udp, source, local, &datagram) {
                rtc.handle_input(Input::Receive(Instant::now(), receive))
                    .expect("client input");
            }
        }
        rtc.handle_input(Input::Timeout(Instant::now()))
            .expect("client timeout");
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
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

/// A VP8 key frame's header (frame tag with the key-frame bit clear, start code,
/// 160×120), then filler.
fn vp8_keyframe(n: u32) -> Vec<u8> {
    let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a, 0xa0, 0x00, 0x78, 0x00];
    frame.extend(std::iter::repeat_n(n as u8, 200));
    frame
}

/// A simulcast layer the client sends: keyframes of `size`, RTP time from `base`.
struct SendLayer {
    rid: Rid,
    size: (u16, u16),
    base: u64,
    /// Bytes of a delta frame (a keyframe is three times as big).
    bytes: usize,
    /// The server did not pause it.
    on: bool,
    /// Its next frame is a keyframe.
    keyframe: bool,
}

/// A VP8 key frame of `size`, `bytes` long, its filler `marker`.
fn vp8_keyframe_of(size: (u16, u16), marker: u8, bytes: usize) -> Vec<u8> {
    let mut frame = vec![0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a];
    frame.extend(size.0.to_le_bytes());
    frame.extend(size.1.to_le_bytes());
    frame.extend(std::iter::repeat_n(marker, bytes));
    frame
}

/// A VP8 inter frame `bytes` long, its filler `marker`.
fn vp8_frame_of(marker: u8, bytes: usize) -> Vec<u8> {
    let mut frame = vec![0x11, 0x02, 0x00];
    frame.extend(std::iter::repeat_n(marker, bytes));
    frame
}

/// A VP8 inter frame (key-frame bit set: not a key frame).
fn vp8_delta(n: u32) -> Vec<u8> {
    let mut frame = vec![0x11, 0x02, 0x00];
    frame.extend(std::iter::repeat_n(n as u8, 60));
    frame
}

/// The address a UDP socket of the media plane answers from is the one in its SDP.
#[allow(dead_code)]
pub fn candidate_addr(sdp: &str) -> Option<SocketAddr> {
    sdp.lines()
        .find(|l| l.starts_with("a=candidate:"))
        .and_then(|l| {
            let parts: Vec<&str> = l.split(' ').collect();
            format!("{}:{}", parts.get(4)?, parts.get(5)?).parse().ok()
        })
}
