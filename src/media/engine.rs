//! The media thread: one UDP socket, one loop, every peer's `Rtc` driven until its next
//! timeout, and frames forwarded from each publisher to the other peers of its room.

use super::layers::{self, Downlink, LayerInfo, Speech, TsMap, View, Wish};
use super::signal::{self, ClientSignal};
use super::{Command, MediaConfig, MediaEvent, PublishedTrack};
use crate::metrics::METRICS;
use rayon::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::io::ErrorKind;
use std::net::{SocketAddr, UdpSocket};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid, Rid, Rids};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

/// The loop never sleeps longer than this, so commands are handled within it.
const MAX_WAIT: Duration = Duration::from_millis(10);
/// The `closed` reason told a client that resumes its seat while this media plane has no
/// connection for it (see [`Engine::resumed`]).
const NO_CONNECTION_HERE: &str = "no media connection on this server";
/// Remote ICE candidates a peer may add; more are ignored (the server is ICE-lite and
/// learns the client's address from its checks anyway).
const MAX_REMOTE_CANDIDATES: usize = 32;
/// Keyframe requests toward one published track are sent at most this often; requests in
/// between are merged into the next one.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(250);
/// Peers polled by one media thread in one go: fewer are not worth waking another thread
/// for (a room of 20 is polled by one; a room of 200, or many rooms, by all).
const POLL_CHUNK: usize = 16;
/// Datagrams read in one go before the peers are driven.
const RECEIVE_BATCH: usize = 64;
/// Timeouts of one peer that are already due handled in one poll (see [`poll`]): packetizing
/// what was written and then refreshing the send queue take two; more is a peer that keeps
/// asking, left to the next turn.
const DUE_TIMEOUTS_PER_POLL: usize = 4;
/// How often layers are chosen again, publishers told which layers are used, and active
/// speakers worked out.
const TICK: Duration = Duration::from_millis(100);
/// A layer that someone uses counts as unavailable when nothing of it arrived for this
/// long (the publisher's browser stopped sending it, for bandwidth or CPU) ...
const LAYER_STALE: Duration = Duration::from_secs(2);
/// ... unless it was asked for again this recently (it takes a moment to resume).
const LAYER_RESUME: Duration = Duration::from_secs(3);
/// Of a subscriber's estimate, this share is given to video (in percent), less what its
/// audio takes ([`AUDIO_BITRATE`] per audio track).
const VIDEO_SHARE: u64 = 90;
const AUDIO_BITRATE: u64 = 40_000;

type Sink = Box<dyn Fn(MediaEvent) + Send>;

pub(super) struct Engine {
    socket: UdpSocket,
    advertised: SocketAddr,
    config: MediaConfig,
    sink: Sink,
    members: Vec<Member>,
    next_id: u64,
    /// Remote address → member id, learnt when a member's `Rtc` accepts a packet.
    by_addr: HashMap<SocketAddr, u64>,
    /// The member whose peer connection is being worked on: the one that loses its
    /// connection if that work panics (see [`Engine::guard`]).
    handling: Option<u64>,
    /// Member id → index in `members`, rebuilt when members come or go.
    ids: HashMap<u64, usize>,
    /// The last active speakers told per room.
    speakers: HashMap<String, Vec<String>>,
    next_tick: Instant,
}

/// A participant of a room, with its peer connection once it has offered.
struct Member {
    id: u64,
    room: String,
    address: String,
    conn: Option<Conn>,
    /// What this member shows of each other's video (its `views` signal), by address.
    views: HashMap<String, View>,
    /// Its token lets it publish (otherwise its send tracks are refused) and subscribe
    /// (otherwise nothing is forwarded to it).
    can_publish: bool,
    can_subscribe: bool,
}

struct Conn {
    rtc: Rtc,
    started: Instant,
    /// When str0m wants to be polled next without new input.
    deadline: Instant,
    /// Input or a write since the last poll: poll before the deadline.
    dirty: bool,
    connected: bool,
    /// The client's DTLS fingerprint (see [`signal::fingerprint`]).
    fingerprint: Option<String>,
    /// Since when ICE has been lost (str0m's ICE-lite agent heard no check for 15 s, or
    /// the client restarted ICE); the connection is dropped when ICE is not back within
    /// the ICE timeout.
    lost_since: Option<Instant>,
    /// The server's offer waiting for the client's answer, with its SDP (said again when
    /// the client resumes its signaling socket: the first one may have been lost).
    pending: Option<(SdpPendingOffer, String)>,
    /// The client's first offer was answered: the server may offer from now on.
    negotiated: bool,
    candidates: usize,
    tracks_in: Vec<TrackIn>,
    tracks_out: Vec<TrackOut>,
    /// NACKs seen per sending mid (str0m's counters are cumulative).
    nacks: HashMap<Mid, u64>,
    /// Whether the member is speaking, from its audio levels.
    speech: Speech,
    /// Its downlink estimate, from its receiver reports.
    downlink: Downlink,
    /// Bytes sent per sending mid at the last egress statistics.
    sent: HashMap<Mid, u64>,
}

/// A track the member publishes.
struct TrackIn {
    mid: Mid,
    kind: MediaKind,
    /// Its simulcast layers, lowest first (as the client's SDP lists them), or one layer
    /// with no rid.
    layers: Vec<LayerIn>,
    /// The layers the publisher was last told are used (simulcast only).
    told: Option<Vec<Rid>>,
}

/// One layer of a published track.
struct LayerIn {
    rid: Option<Rid>,
    wants_keyframe: bool,
    last_keyframe_request: Option<Instant>,
    /// Size of its last VP8 keyframe.
    size: (u16, u16),
    last_packet: Option<Instant>,
    /// Someone uses it (so the publisher sends it), since when.
    used: bool,
    used_since: Option<Instant>,
    /// What it carries (bits per second), from the ingress statistics; the bytes counted
    /// at the last statistics.
    bitrate: u64,
    bytes_at: Option<(u64, Instant)>,
}

impl LayerIn {
    fn new(rid: Option<Rid>) -> Self {
        Self {
            rid,
            wants_keyframe: false,
            last_keyframe_request: None,
            size: (0, 0),
            last_packet: None,
            used: true,
            used_since: None,
            bitrate: 0,
            bytes_at: None,
        }
    }

    /// As layer selection sees it: available when it arrived at least once and, if it
    /// is used, recently (or it was asked for just now).
    fn info(&self, now: Instant) -> LayerInfo {
        let recent = |t: Option<Instant>, within: Duration| {
            t.is_some_and(|t| now.saturating_duration_since(t) < within)
        };
        let seen = self.last_packet.is_some()
            && (!self.used
                || recent(self.last_packet, LAYER_STALE)
                || recent(self.used_since, LAYER_RESUME));
        LayerInfo {
            rid: self.rid,
            size: self.size,
            seen,
            bitrate: self.bitrate,
        }
    }
}

impl TrackIn {
    fn new(mid: Mid, kind: MediaKind, rids: Vec<Rid>) -> Self {
        let layers = if rids.is_empty() {
            vec![LayerIn::new(None)]
        } else {
            rids.into_iter().map(|r| LayerIn::new(Some(r))).collect()
        };
        Self {
            mid,
            kind,
            layers,
            told: None,
        }
    }

    fn infos(&self, now: Instant) -> Vec<LayerInfo> {
        self.layers.iter().map(|l| l.info(now)).collect()
    }

    fn simulcast(&self) -> bool {
        self.layers.len() > 1
    }
}

/// Another member's track, sent to this member.
struct TrackOut {
    origin: u64,
    origin_address: String,
    origin_mid: Mid,
    kind: MediaKind,
    state: OutState,
    /// The layer to forward (`Some(None)`: the track's only layer); `None`: nothing.
    target: Option<Option<Rid>>,
    /// The layer being forwarded: it becomes the target at the target's next keyframe.
    current: Option<Option<Rid>>,
    ts: TsMap,
}

impl TrackOut {
    /// `origin`'s track, toward a new subscriber: audio as it comes, video from the
    /// layer chosen for an unknown view, from its next keyframe.
    fn new(origin: &Member, track: &TrackIn, now: Instant) -> Self {
        let (target, current) = match track.kind {
            MediaKind::Audio => (Some(None), Some(None)),
            MediaKind::Video => (layers::choose(&track.infos(now), View::Unknown), None),
        };
        Self {
            origin: origin.id,
            origin_address: origin.address.clone(),
            origin_mid: track.mid,
            kind: track.kind,
            state: OutState::ToOpen,
            target,
            current,
            ts: TsMap::default(),
        }
    }

    /// Whether a frame of layer `rid` goes out on this track, and if it starts the
    /// layer (a switch: its RTP time is rebased). A switch happens on a keyframe of the
    /// target layer only; until then the current layer goes on.
    fn take(&mut self, rid: Option<Rid>, keyframe: bool) -> Option<bool> {
        if self.target == Some(rid) && self.current != Some(rid) {
            if !keyframe {
                return None;
            }
            self.current = Some(rid);
            return Some(true);
        }
        (self.current == Some(rid)).then_some(false)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

/// What polling one member produced for the others.
enum Effect {
    TrackAdded(u64, Mid, MediaKind, Vec<Rid>),
    TrackRemoved(u64, Mid),
    Data(u64, Box<MediaData>),
    WantKeyframe(u64, Mid, Option<Rid>),
    Connected(u64),
    /// ICE lost (`false`) or back (`true`) on a connection that was up.
    Ice(u64, bool),
    Drop(u64, &'static str),
}

impl Conn {
    fn new(advertised: SocketAddr, now: Instant) -> Self {
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        if let Ok(candidate) = Candidate::host(advertised, "udp") {
            rtc.add_local_candidate(candidate);
        }
        Self {
            rtc,
            started: now,
            deadline: now,
            dirty: true,
            connected: false,
            fingerprint: None,
            lost_since: None,
            pending: None,
            negotiated: false,
            candidates: 0,
            tracks_in: Vec::new(),
            tracks_out: Vec::new(),
            nacks: HashMap::new(),
            speech: Speech::default(),
            downlink: Downlink::default(),
            sent: HashMap::new(),
        }
    }

    fn published(&self) -> Vec<PublishedTrack> {
        self.tracks_in
            .iter()
            .map(|t| PublishedTrack {
                mid: t.mid.to_string(),
                kind: kind_name(t.kind),
            })
            .collect()
    }
}

fn kind_name(kind: MediaKind) -> &'static str {
    match kind {
        MediaKind::Audio => "audio",
        MediaKind::Video => "video",
    }
}

impl Engine {
    pub(super) fn new(
        socket: UdpSocket,
        advertised: SocketAddr,
        config: MediaConfig,
        sink: Sink,
    ) -> Self {
        Self {
            socket,
            advertised,
            config,
            sink,
            members: Vec::new(),
            next_id: 0,
            by_addr: HashMap::new(),
            handling: None,
            ids: HashMap::new(),
            speakers: HashMap::new(),
            next_tick: Instant::now(),
        }
    }

    /// Runs until every handle is dropped.
    pub(super) fn run(mut self, commands: Receiver<Command>) {
        let mut buf = vec![0u8; 2048];
        loop {
            loop {
                match commands.try_recv() {
                    Ok(command) => {
                        self.guard("command", |e| e.command(command));
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        tracing::info!("media plane stopped");
                        return;
                    }
                }
            }
            let deadline = self
                .guard("drive", Self::drive)
                .unwrap_or_else(|| Instant::now() + MAX_WAIT);
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .clamp(Duration::from_millis(1), MAX_WAIT);
            let _ = self.socket.set_read_timeout(Some(wait));
            match self.socket.recv_from(&mut buf) {
                Ok((n, source)) => {
                    self.guard("datagram", |e| e.receive(&buf[..n], source));
                    // What else is waiting is read too before the peers are driven again:
                    // one drive per batch, not per datagram.
                    let _ = self.socket.set_nonblocking(true);
                    for _ in 1..RECEIVE_BATCH {
                        let Ok((n, source)) = self.socket.recv_from(&mut buf) else {
                            break;
                        };
                        self.guard("datagram", |e| e.receive(&buf[..n], source));
                    }
                    let _ = self.socket.set_nonblocking(false);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => tracing::debug!(error = %e, "media socket read failed"),
            }
            // Peers whose timeout came are handled in the next drive, with the polling.
        }
    }

    /// Runs `f` on the engine; a panic in it (str0m on odd input, say) costs only the peer
    /// connection of the member being handled (`handling`, told `PeerState {connected:
    /// false}`), never the loop and the other rooms. Answers `None` on a panic.
    fn guard<T>(&mut self, what: &'static str, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        self.handling = None;
        let result = guarded(what, || f(self));
        if result.is_none()
            && let Some(id) = self.handling
            && let Some(i) = self.index_of_id(id)
            && self.members[i].conn.is_some()
        {
            let (room, address) = (
                self.members[i].room.clone(),
                self.members[i].address.clone(),
            );
            self.handling = None;
            // Dropping may panic too (the `Rtc` is suspect): its connection is gone anyway.
            if guarded("drop after a panic", || {
                self.drop_conn(i, Some("media thread panicked"))
            })
            .is_none()
            {
                self.members[i].conn = None;
                self.by_addr.retain(|_, v| *v != id);
                self.emit(MediaEvent::Signal {
                    room: room.clone(),
                    to: address.clone(),
                    data: signal::closed("media thread panicked"),
                });
                self.emit(MediaEvent::PeerState {
                    room,
                    address,
                    connected: false,
                });
            }
        }
        self.handling = None;
        result
    }

    fn emit(&self, event: MediaEvent) {
        (self.sink)(event);
    }

    fn index(&self, room: &str, address: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.address == address && m.room == room)
    }

    fn index_of_id(&self, id: u64) -> Option<usize> {
        self.ids.get(&id).copied()
    }

    /// Rebuilds [`Engine::ids`] after members came or went.
    fn reindex(&mut self) {
        self.ids = self
            .members
            .iter()
            .enumerate()
            .map(|(i, m)| (m.id, i))
            .collect();
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::Add {
                room,
                address,
                can_publish,
                can_subscribe,
            } => {
                if self.index(&room, &address).is_none() {
                    self.next_id += 1;
                    self.members.push(Member {
                        id: self.next_id,
                        room,
                        address,
                        conn: None,
                        views: HashMap::new(),
                        can_publish,
                        can_subscribe,
                    });
                    self.reindex();
                }
            }
            Command::Remove { room, address } => {
                if let Some(i) = self.index(&room, &address) {
                    self.drop_conn(i, None);
                    self.members.remove(i);
                    self.reindex();
                }
            }
            Command::RemoveRoom { room } => {
                while let Some(i) = self.members.iter().position(|m| m.room == room) {
                    self.drop_conn(i, None);
                    self.members.remove(i);
                    self.reindex();
                }
            }
            Command::Signal {
                room,
                address,
                data,
            } => {
                // Signals of someone the rooms did not add are ignored.
                if let Some(i) = self.index(&room, &address) {
                    self.signal(i, &data);
                }
            }
            Command::Resumed { room, address } => {
                if let Some(i) = self.index(&room, &address) {
                    self.resumed(i);
                }
            }
        }
    }

    /// Member `i` resumed its signaling socket. An offer of the server sent while the
    /// socket was gone was lost, and while it is pending the server offers nothing else
    /// and ignores the client's offers (glare): it is said again, as it was. A client whose
    /// answer to it was already on its way answers it a second time; that second answer
    /// finds no offer pending and is rejected (`SFU_SIGNAL_REJECTED`), harmlessly.
    fn resumed(&mut self, i: usize) {
        let member = &self.members[i];
        // No connection here: the client's (if it has one) went with another media plane
        // (the room's previous owner, after a takeover) or its offer was lost with the
        // socket. Saying so makes it offer a new one now rather than wait for its ICE to fail.
        let Some(conn) = member.conn.as_ref() else {
            tracing::debug!(room = %member.room, address = %member.address, "resumed without a media connection here");
            self.emit(MediaEvent::Signal {
                room: member.room.clone(),
                to: member.address.clone(),
                data: signal::closed(NO_CONNECTION_HERE),
            });
            return;
        };
        let Some((_, sdp)) = conn.pending.as_ref() else {
            return;
        };
        tracing::debug!(room = %member.room, address = %member.address, "resumed: pending offer sent again");
        self.emit(MediaEvent::Signal {
            room: member.room.clone(),
            to: member.address.clone(),
            data: signal::description("offer", sdp.clone()),
        });
    }

    fn reject(&self, i: usize, reason: String) {
        let member = &self.members[i];
        tracing::debug!(room = %member.room, address = %member.address, %reason, "media signal rejected");
        self.emit(MediaEvent::Rejected {
            room: member.room.clone(),
            address: member.address.clone(),
            reason,
        });
    }

    fn signal(&mut self, i: usize, data: &Value) {
        self.handling = Some(self.members[i].id);
        match signal::parse(data) {
            Err(reason) => self.reject(i, reason),
            Ok(ClientSignal::Offer(sdp)) => self.offer(i, &sdp),
            Ok(ClientSignal::Answer(sdp)) => self.answer(i, &sdp),
            Ok(ClientSignal::Candidate(None)) => {}
            Ok(ClientSignal::Views(views)) => {
                let member = &mut self.members[i];
                for (address, width, height) in views {
                    if address != member.address {
                        member.views.insert(address, View::from_size(width, height));
                    }
                }
                self.retarget(i, Instant::now());
            }
            Ok(ClientSignal::Candidate(Some(text))) => {
                let Some(conn) = self.members[i].conn.as_mut() else {
                    return self.reject(i, "a candidate before any offer".into());
                };
                if conn.candidates >= MAX_REMOTE_CANDIDATES {
                    return;
                }
                match Candidate::from_sdp_string(&text) {
                    Ok(candidate) => {
                        conn.candidates += 1;
                        conn.dirty = true;
                        conn.rtc.add_remote_candidate(candidate);
                    }
                    Err(e) => self.reject(i, format!("bad ICE candidate: {e}")),
                }
            }
        }
    }

    /// The client's offer: the first one opens the peer connection. While an offer of the
    /// server is pending, a client offer is ignored (the server is the impolite side of
    /// perfect negotiation: the client rolls back and answers the server's offer).
    fn offer(&mut self, i: usize, sdp: &str) {
        // A member that may not publish has every send track refused.
        let allowed = if self.members[i].can_publish {
            self.config.max_tracks_per_participant
        } else {
            0
        };
        let (sdp, refused) = signal::limit_tracks(sdp, allowed);
        let offer = match SdpOffer::from_sdp_string(&sdp) {
            Ok(offer) => offer,
            Err(e) => return self.reject(i, format!("malformed SDP offer: {e}")),
        };
        // An offer of another peer connection of the client (it gave up on the old one, which
        // the server still kept): the old one is dropped, and this one starts afresh.
        let fingerprint = signal::fingerprint(&sdp).map(str::to_string);
        if fingerprint.is_some()
            && self.members[i]
                .conn
                .as_ref()
                .is_some_and(|c| c.fingerprint != fingerprint)
        {
            let member = &self.members[i];
            tracing::info!(room = %member.room, address = %member.address, "a new peer connection replaces the old one");
            self.drop_conn(i, None);
            let member = &self.members[i];
            self.emit(MediaEvent::PeerState {
                room: member.room.clone(),
                address: member.address.clone(),
                connected: false,
            });
        }
        if self.members[i]
            .conn
            .as_ref()
            .is_some_and(|c| c.pending.is_some())
        {
            tracing::debug!(address = %self.members[i].address, "glare: client offer ignored");
            return;
        }
        let fresh = self.members[i].conn.is_none();
        if fresh {
            let mut conn = Conn::new(self.advertised, Instant::now());
            conn.fingerprint = fingerprint;
            // Everything the others already publish is offered once this offer is answered
            // (nothing, to a member that may not subscribe).
            let (id, room) = (self.members[i].id, self.members[i].room.clone());
            let now = Instant::now();
            let others = self
                .members
                .iter()
                .filter(|m| m.id != id && m.room == room && self.members[i].can_subscribe);
            for other in others {
                for track in other.conn.iter().flat_map(|c| c.tracks_in.iter()) {
                    conn.tracks_out.push(TrackOut::new(other, track, now));
                }
            }
            self.members[i].conn = Some(conn);
        }
        let conn = self.members[i].conn.as_mut().expect("set above");
        conn.dirty = true;
        match conn.rtc.sdp_api().accept_offer(offer) {
            Ok(answer) => {
                conn.negotiated = true;
                if refused > 0 {
                    tracing::info!(address = %self.members[i].address, refused, "tracks over the limit refused");
                }
                let member = &self.members[i];
                self.emit(MediaEvent::Signal {
                    room: member.room.clone(),
                    to: member.address.clone(),
                    data: signal::description("answer", answer.to_sdp_string()),
                });
            }
            Err(e) => {
                if fresh {
                    self.members[i].conn = None;
                }
                self.reject(i, format!("SDP offer not accepted: {e}"));
            }
        }
    }

    fn answer(&mut self, i: usize, sdp: &str) {
        let answer = match SdpAnswer::from_sdp_string(sdp) {
            Ok(answer) => answer,
            Err(e) => return self.reject(i, format!("malformed SDP answer: {e}")),
        };
        let Some(conn) = self.members[i].conn.as_mut() else {
            return self.reject(i, "an answer, but the server made no offer".into());
        };
        let Some((pending, _)) = conn.pending.take() else {
            return self.reject(i, "an answer, but the server made no offer".into());
        };
        conn.dirty = true;
        let result = conn.rtc.sdp_api().accept_answer(pending, answer);
        let accepted = result.is_ok();
        let mut opened = Vec::new();
        for track in &mut conn.tracks_out {
            track.state = match (track.state, accepted) {
                (OutState::Negotiating(m), true) => {
                    if let Some(rid) = track.target {
                        opened.push((track.origin, track.origin_mid, rid));
                    }
                    OutState::Open(m)
                }
                (OutState::Negotiating(_), false) => OutState::ToOpen,
                (OutState::NegotiatingStop(m), false) => OutState::ToStop(m),
                (state, _) => state,
            };
        }
        if accepted {
            conn.tracks_out
                .retain(|t| !matches!(t.state, OutState::NegotiatingStop(_)));
            // A new subscriber needs a keyframe to start decoding.
            for (origin, mid, rid) in opened {
                self.want_keyframe(origin, mid, rid);
            }
        } else if let Err(e) = result {
            self.reject(i, format!("SDP answer not accepted: {e}"));
        }
    }

    /// Someone needs a keyframe of `origin`'s track `mid`, layer `rid` (`None`: the
    /// track's only layer, or every layer of a simulcast track).
    fn want_keyframe(&mut self, origin: u64, mid: Mid, rid: Option<Rid>) {
        let Some(o) = self.index_of_id(origin) else {
            return;
        };
        if let Some(track) = self.members[o]
            .conn
            .as_mut()
            .and_then(|c| c.tracks_in.iter_mut().find(|t| t.mid == mid))
        {
            for layer in &mut track.layers {
                if rid.is_none() || layer.rid == rid {
                    layer.wants_keyframe = true;
                }
            }
        }
    }

    /// Drops member `i`'s peer connection: its tracks stop being forwarded at once and
    /// the others' sessions drop them. `reason` (when the member stays) is told as
    /// `PeerState {connected: false}`.
    fn drop_conn(&mut self, i: usize, reason: Option<&str>) {
        let Some(mut conn) = self.members[i].conn.take() else {
            return;
        };
        conn.rtc.disconnect();
        let id = self.members[i].id;
        self.by_addr.retain(|_, v| *v != id);
        if conn.connected {
            METRICS.sfu_peer_disconnected();
        }
        METRICS.sfu_tracks(-(conn.tracks_in.len() as i64));
        for track in &conn.tracks_in {
            self.stop_forwarding(id, track.mid);
        }
        if let Some(reason) = reason {
            let member = &self.members[i];
            tracing::info!(room = %member.room, address = %member.address, reason, "media connection dropped");
            self.emit(MediaEvent::Signal {
                room: member.room.clone(),
                to: member.address.clone(),
                data: signal::closed(reason),
            });
            self.emit(MediaEvent::PeerState {
                room: member.room.clone(),
                address: member.address.clone(),
                connected: false,
            });
            if !conn.tracks_in.is_empty() {
                self.emit(MediaEvent::Tracks {
                    room: member.room.clone(),
                    address: member.address.clone(),
                    published: Vec::new(),
                });
            }
        }
    }

    /// Every session that receives `origin`'s track `mid` stops it.
    fn stop_forwarding(&mut self, origin: u64, mid: Mid) {
        for conn in self.members.iter_mut().filter_map(|m| m.conn.as_mut()) {
            conn.tracks_out.retain_mut(|t| {
                if t.origin != origin || t.origin_mid != mid {
                    return true;
                }
                match t.state {
                    OutState::ToOpen => false,
                    OutState::Negotiating(m) | OutState::Open(m) => {
                        t.state = OutState::ToStop(m);
                        true
                    }
                    OutState::ToStop(_) | OutState::NegotiatingStop(_) => true,
                }
            });
        }
    }

    fn track_added(&mut self, i: usize, mid: Mid, kind: MediaKind, rids: Vec<Rid>) {
        let limit = if self.members[i].can_publish {
            self.config.max_tracks_per_participant
        } else {
            0
        };
        let member = &mut self.members[i];
        let Some(conn) = member.conn.as_mut() else {
            return;
        };
        if conn.tracks_in.iter().any(|t| t.mid == mid) || conn.tracks_in.len() >= limit {
            return;
        }
        conn.tracks_in.push(TrackIn::new(mid, kind, rids));
        METRICS.sfu_tracks(1);
        let published = conn.published();
        let (id, room, address) = (member.id, member.room.clone(), member.address.clone());
        let now = Instant::now();
        let (publisher, others): (Vec<&mut Member>, Vec<&mut Member>) = self
            .members
            .iter_mut()
            .filter(|m| m.room == room)
            .partition(|m| m.id == id);
        let publisher = &*publisher[0];
        let track = publisher
            .conn
            .as_ref()
            .and_then(|c| c.tracks_in.last())
            .expect("pushed above");
        for other in others.into_iter().filter(|m| m.can_subscribe) {
            if let Some(conn) = other.conn.as_mut() {
                conn.tracks_out.push(TrackOut::new(publisher, track, now));
            }
        }
        self.emit(MediaEvent::Tracks {
            room,
            address,
            published,
        });
    }

    fn track_removed(&mut self, i: usize, mid: Mid) {
        let member = &mut self.members[i];
        let Some(conn) = member.conn.as_mut() else {
            return;
        };
        let before = conn.tracks_in.len();
        conn.tracks_in.retain(|t| t.mid != mid);
        if conn.tracks_in.len() == before {
            return;
        }
        METRICS.sfu_tracks(-1);
        let published = conn.published();
        let (id, room, address) = (member.id, member.room.clone(), member.address.clone());
        self.stop_forwarding(id, mid);
        self.emit(MediaEvent::Tracks {
            room,
            address,
            published,
        });
    }

    /// A datagram from the socket: to the peer that accepts it (by address first, then by
    /// ICE username); datagrams nobody accepts are dropped.
    fn receive(&mut self, bytes: &[u8], source: SocketAddr) {
        let Ok(receive) = Receive::new(Protocol::Udp, source, self.advertised, bytes) else {
            return;
        };
        let input = Input::Receive(Instant::now(), receive);
        let accepts = |m: &Member| m.conn.as_ref().is_some_and(|c| c.rtc.accepts(&input));
        let known = self
            .by_addr
            .get(&source)
            .and_then(|&id| self.index_of_id(id))
            .filter(|&i| accepts(&self.members[i]));
        let Some(i) = known.or_else(|| self.members.iter().position(accepts)) else {
            tracing::trace!(%source, "datagram from a stranger dropped");
            return;
        };
        self.by_addr.insert(source, self.members[i].id);
        self.input(i, input);
    }

    fn input(&mut self, i: usize, input: Input<'_>) {
        self.handling = Some(self.members[i].id);
        let Some(conn) = self.members[i].conn.as_mut() else {
            return;
        };
        if !conn.rtc.is_alive() {
            return;
        }
        conn.dirty = true;
        if let Err(e) = conn.rtc.handle_input(input) {
            tracing::debug!(address = %self.members[i].address, error = %e, "media input failed");
            self.drop_conn(i, Some("input failed"));
        }
    }

    /// Negotiates, polls every peer until its next timeout and forwards what they
    /// produced, until nothing more happens; answers the earliest timeout.
    fn drive(&mut self) -> Instant {
        let now = Instant::now();
        // Peers whose ICE never completed are dropped from media; their seats stay.
        let timeout = self.config.ice_timeout;
        // So are peers that lost ICE and did not get it back in time.
        while let Some((i, reason)) = self.members.iter().enumerate().find_map(|(i, m)| {
            let c = m.conn.as_ref()?;
            if !c.connected && now.duration_since(c.started) > timeout {
                Some((i, "ICE did not complete in time"))
            } else if c
                .lost_since
                .is_some_and(|t| now.duration_since(t) > timeout)
            {
                Some((i, "ICE lost"))
            } else {
                None
            }
        }) {
            METRICS.sfu_ice_failure();
            self.drop_conn(i, Some(reason));
        }
        self.tick(now);
        self.request_keyframes(now);
        loop {
            for i in 0..self.members.len() {
                self.handling = Some(self.members[i].id);
                self.negotiate(i);
            }
            self.handling = None;
            // Polling a peer (packetizing, encrypting and sending what was written to it,
            // handling its timers) touches that peer alone: the media threads share it out.
            // Only peers with something new, or whose timeout came, are polled.
            let (socket, now) = (&self.socket, Instant::now());
            let effects: Vec<Effect> = self
                .members
                .par_iter_mut()
                .with_min_len(POLL_CHUNK)
                .flat_map_iter(|member| {
                    let mut effects = Vec::new();
                    if let Some(conn) = member.conn.as_mut()
                        && (conn.dirty || now >= conn.deadline)
                    {
                        conn.dirty = false;
                        let id = member.id;
                        conn.deadline = guarded("poll", || {
                            // Its timers (RTCP, NACK, ICE, stats) first, when due.
                            if now >= conn.deadline
                                && conn.rtc.is_alive()
                                && let Err(e) = conn.rtc.handle_input(Input::Timeout(now))
                            {
                                tracing::debug!(error = %e, "media timeout failed");
                                effects.push(Effect::Drop(id, "input failed"));
                                return now + MAX_WAIT;
                            }
                            poll(id, conn, socket, &mut effects)
                        })
                        .unwrap_or_else(|| {
                            effects.push(Effect::Drop(id, "media thread panicked"));
                            now + MAX_WAIT
                        });
                    }
                    effects
                })
                .collect();
            if effects.is_empty() {
                return self
                    .members
                    .iter()
                    .filter_map(|m| m.conn.as_ref().map(|c| c.deadline))
                    .fold(now + MAX_WAIT, Instant::min);
            }
            for effect in effects {
                self.handling = None;
                self.apply(effect);
            }
        }
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::Data(origin, data) => self.forward(origin, &data),
            Effect::WantKeyframe(origin, mid, rid) => self.want_keyframe(origin, mid, rid),
            Effect::TrackAdded(id, mid, kind, rids) => {
                if let Some(i) = self.index_of_id(id) {
                    self.track_added(i, mid, kind, rids);
                }
            }
            Effect::TrackRemoved(id, mid) => {
                if let Some(i) = self.index_of_id(id) {
                    self.track_removed(i, mid);
                }
            }
            Effect::Connected(id) => {
                if let Some(i) = self.index_of_id(id) {
                    let member = &self.members[i];
                    METRICS.sfu_peer_connected();
                    self.emit(MediaEvent::PeerState {
                        room: member.room.clone(),
                        address: member.address.clone(),
                        connected: true,
                    });
                }
            }
            Effect::Ice(id, up) => {
                if let Some(i) = self.index_of_id(id) {
                    let member = &self.members[i];
                    tracing::info!(room = %member.room, address = %member.address, up, "media connection ICE");
                    self.emit(MediaEvent::PeerState {
                        room: member.room.clone(),
                        address: member.address.clone(),
                        connected: up,
                    });
                }
            }
            Effect::Drop(id, reason) => {
                if let Some(i) = self.index_of_id(id) {
                    self.drop_conn(i, Some(reason));
                }
            }
        }
    }

    /// One frame of `origin`'s to every other peer of its room that has the track open
    /// and forwards its layer (see [`TrackOut::take`]); a subscriber waiting for a switch
    /// to this layer asks for a keyframe of it.
    fn forward(&mut self, origin: u64, data: &MediaData) {
        let Some(o) = self.index_of_id(origin) else {
            return;
        };
        let keyframe = data.is_keyframe();
        let level = data.ext_vals.audio_level.zip(data.ext_vals.voice_activity);
        let mut forwarded = 0;
        let mut wanted = false;
        for j in 0..self.members.len() {
            if j == o || self.members[j].room != self.members[o].room {
                continue;
            }
            self.handling = Some(self.members[j].id);
            let member = &mut self.members[j];
            let Some(conn) = member.conn.as_mut() else {
                continue;
            };
            let Some(track) = conn.tracks_out.iter_mut().find(|t| {
                t.origin == origin
                    && t.origin_mid == data.mid
                    && matches!(t.state, OutState::Open(_))
            }) else {
                continue;
            };
            let OutState::Open(mid) = track.state else {
                continue;
            };
            let Some(switch) = track.take(data.rid, keyframe) else {
                wanted |= track.target == Some(data.rid);
                continue;
            };
            let (time, wallclock) = track.ts.map(data.time, data.network_time, switch);
            let Some(writer) = conn.rtc.writer(mid) else {
                continue;
            };
            let Some(pt) = writer.match_params(data.params) else {
                continue;
            };
            let writer = match level {
                Some((level, voice)) => writer.audio_level(level, voice),
                None => writer,
            };
            conn.dirty = true;
            match writer.write(pt, wallclock, time, data.data.clone()) {
                Ok(()) => forwarded += 1,
                Err(e) => {
                    tracing::debug!(address = %member.address, error = %e, "forwarding failed")
                }
            }
        }
        if wanted {
            self.want_keyframe(origin, data.mid, data.rid);
        }
        if forwarded > 0 {
            METRICS.sfu_forwarded(forwarded, forwarded * data.data.len() as u64);
        }
    }

    /// Every [`TICK`]: layers chosen again for every subscriber, publishers told which
    /// layers are used, active speakers told per room.
    fn tick(&mut self, now: Instant) {
        if now < self.next_tick {
            return;
        }
        self.next_tick = now + TICK;
        for j in 0..self.members.len() {
            self.retarget(j, now);
        }
        self.tell_layers(now);
        self.tell_speakers(now);
    }

    /// Chooses again the layer of every video member `j` receives, from its views, the
    /// layers available and its downlink estimate ([`layers::allocate`]); a new target is
    /// asked a keyframe for.
    fn retarget(&mut self, j: usize, now: Instant) {
        let Some(conn) = self.members[j].conn.as_ref() else {
            return;
        };
        let mut wishes = Vec::new();
        let mut audio = 0;
        for (k, out) in conn.tracks_out.iter().enumerate() {
            if out.kind != MediaKind::Video {
                audio += 1;
                continue;
            }
            let Some(track) = self.track_in(out.origin, out.origin_mid) else {
                continue;
            };
            let view = self.members[j]
                .views
                .get(&out.origin_address)
                .copied()
                .unwrap_or_default();
            let layers = track.infos(now);
            let wanted = layers::choose(&layers, view);
            wishes.push((
                k,
                Wish {
                    layers,
                    view,
                    wanted,
                    now: out.target,
                },
            ));
        }
        let targets: Vec<Option<Option<Rid>>> = match conn.downlink.estimate() {
            Some(estimate) => {
                let budget = (estimate * VIDEO_SHARE / 100).saturating_sub(audio * AUDIO_BITRATE);
                let list: Vec<Wish> = wishes.iter().map(|(_, w)| w.clone()).collect();
                layers::allocate(&list, budget)
            }
            None => wishes.iter().map(|(_, w)| w.wanted).collect(),
        };
        let mut wanted = Vec::new();
        let conn = self.members[j].conn.as_mut().expect("checked above");
        for ((k, _), target) in wishes.iter().zip(targets) {
            let out = &mut conn.tracks_out[*k];
            if out.target == target {
                continue;
            }
            out.target = target;
            match target {
                None => out.current = None,
                Some(rid) if out.current != target && matches!(out.state, OutState::Open(_)) => {
                    wanted.push((out.origin, out.origin_mid, rid));
                }
                Some(_) => {}
            }
        }
        for (origin, mid, rid) in wanted {
            self.want_keyframe(origin, mid, rid);
        }
    }

    fn track_in(&self, origin: u64, mid: Mid) -> Option<&TrackIn> {
        let o = self.index_of_id(origin)?;
        self.members[o]
            .conn
            .as_ref()?
            .tracks_in
            .iter()
            .find(|t| t.mid == mid)
    }

    /// Tells each simulcast publisher which layers someone receives or is switching to
    /// (and layers never seen, which its browser may start sending any time); it pauses
    /// the others. Said again only when it changes.
    fn tell_layers(&mut self, now: Instant) {
        let mut used: HashMap<(u64, Mid), Vec<Rid>> = HashMap::new();
        for conn in self.members.iter().filter_map(|m| m.conn.as_ref()) {
            for out in &conn.tracks_out {
                for rid in [out.target, out.current].into_iter().flatten().flatten() {
                    used.entry((out.origin, out.origin_mid))
                        .or_default()
                        .push(rid);
                }
            }
        }
        let mut told = Vec::new();
        for member in &mut self.members {
            let Some(conn) = member.conn.as_mut() else {
                continue;
            };
            if !conn.connected {
                continue;
            }
            for track in conn.tracks_in.iter_mut().filter(|t| t.simulcast()) {
                let wanted = used.get(&(member.id, track.mid));
                let mut active = Vec::new();
                for layer in &mut track.layers {
                    let rid = layer.rid.expect("simulcast layers have rids");
                    let in_use = wanted.is_some_and(|w| w.contains(&rid));
                    if in_use && !layer.used {
                        layer.used_since = Some(now);
                    }
                    layer.used = in_use;
                    if in_use || layer.last_packet.is_none() {
                        active.push(rid);
                    }
                }
                if track.told.as_ref() != Some(&active) {
                    let names: Vec<String> = active.iter().map(|r| r.to_string()).collect();
                    told.push((
                        member.room.clone(),
                        member.address.clone(),
                        signal::layers(&track.mid.to_string(), &names),
                    ));
                    track.told = Some(active);
                }
            }
        }
        for (room, to, data) in told {
            self.emit(MediaEvent::Signal { room, to, data });
        }
    }

    /// Works out each room's active speakers and tells the rooms whose list changed.
    fn tell_speakers(&mut self, now: Instant) {
        let mut rooms: HashMap<&str, Vec<(&str, &Speech)>> = HashMap::new();
        for member in &self.members {
            let list = rooms.entry(member.room.as_str()).or_default();
            if let Some(conn) = member.conn.as_ref() {
                list.push((member.address.as_str(), &conn.speech));
            }
        }
        let mut changed = Vec::new();
        for (room, members) in rooms {
            let speakers = layers::speakers(members.into_iter(), now);
            let before = self.speakers.get(room);
            if before.map_or(!speakers.is_empty(), |b| *b != speakers) {
                changed.push((room.to_string(), speakers));
            }
        }
        self.speakers
            .retain(|room, _| self.members.iter().any(|m| &m.room == room));
        for (room, speakers) in changed {
            self.speakers.insert(room.clone(), speakers.clone());
            self.emit(MediaEvent::ActiveSpeakers { room, speakers });
        }
    }

    /// Sends the keyframe requests gathered since the last ones, at most one per track
    /// per [`KEYFRAME_REQUEST_INTERVAL`].
    fn request_keyframes(&mut self, now: Instant) {
        for member in self.members.iter_mut() {
            let Some(conn) = member.conn.as_mut() else {
                continue;
            };
            self.handling = Some(member.id);
            if !conn.connected {
                continue;
            }
            for track in &mut conn.tracks_in {
                if track.kind != MediaKind::Video {
                    continue;
                }
                for layer in &mut track.layers {
                    let due = layer
                        .last_keyframe_request
                        .is_none_or(|t| now.duration_since(t) >= KEYFRAME_REQUEST_INTERVAL);
                    // A layer that never arrived cannot be asked yet (str0m knows no
                    // stream of it); the request waits for its first packet.
                    if !layer.wants_keyframe || !due || layer.last_packet.is_none() {
                        continue;
                    }
                    layer.wants_keyframe = false;
                    layer.last_keyframe_request = Some(now);
                    conn.dirty = true;
                    if let Some(mut writer) = conn.rtc.writer(track.mid)
                        && writer
                            .request_keyframe(layer.rid, KeyframeRequestKind::Pli)
                            .is_ok()
                    {
                        METRICS.sfu_keyframe_request();
                    }
                }
            }
        }
    }

    /// The server offers when tracks toward member `i` came or went, once the client's
    /// first offer is answered and no offer of the server is pending.
    fn negotiate(&mut self, i: usize) {
        let member = &mut self.members[i];
        let Some(conn) = member.conn.as_mut() else {
            return;
        };
        if !conn.negotiated
            || conn.pending.is_some()
            || !conn
                .tracks_out
                .iter()
                .any(|t| matches!(t.state, OutState::ToOpen | OutState::ToStop(_)))
        {
            return;
        }
        let Some((offer, pending)) = offer_tracks(&mut conn.rtc, &mut conn.tracks_out) else {
            conn.tracks_out
                .retain(|t| !matches!(t.state, OutState::NegotiatingStop(_)));
            return;
        };
        let sdp = offer.to_sdp_string();
        conn.pending = Some((pending, sdp.clone()));
        conn.dirty = true;
        let event = MediaEvent::Signal {
            room: member.room.clone(),
            to: member.address.clone(),
            data: signal::description("offer", sdp),
        };
        self.emit(event);
    }
}

/// How many times [`offer_tracks`] draws the new m-lines' mids before it gives up (and
/// tries again at the next drive).
const MID_DRAWS: usize = 32;

/// Makes the server's offer for the tracks to open (`ToOpen`, then `Negotiating`) and to stop
/// (`ToStop`, then `NegotiatingStop`); `None` when there is nothing to offer.
///
/// str0m draws each new m-line's mid at random (three characters of 59) and checks it
/// against the session's mids but not against the others of the same change: two tracks
/// added in one offer may get the same mid (for 100 tracks, about 2 % of offers; filling a
/// 50-person room, a third of the time one participant somewhere). A browser refuses such an
/// offer, str0m takes it and refuses the next one ("Changed order for m-line with mid"), and
/// either way that participant's media stops there. A change whose new mids repeat is
/// dropped before it is applied (str0m keeps nothing of it but its stops, which take effect
/// at once and show in any offer) and made again with fresh draws.
fn offer_tracks(rtc: &mut Rtc, tracks: &mut [TrackOut]) -> Option<(SdpOffer, SdpPendingOffer)> {
    for _ in 0..MID_DRAWS {
        let mut change = rtc.sdp_api();
        let mut opened = Vec::new();
        for (k, track) in tracks.iter().enumerate() {
            match track.state {
                OutState::ToOpen => {
                    let mid = change.add_media(
                        track.kind,
                        Direction::SendOnly,
                        Some(track.origin_address.clone()),
                        Some(format!("{}-{}", track.origin_address, track.origin_mid)),
                        None,
                    );
                    opened.push((k, mid));
                }
                OutState::ToStop(mid) => change.stop_media(mid),
                _ => {}
            }
        }
        let mut mids: Vec<Mid> = opened.iter().map(|(_, mid)| *mid).collect();
        mids.sort_unstable();
        mids.dedup();
        if mids.len() < opened.len() {
            tracing::debug!(
                tracks = opened.len(),
                "a mid drawn twice in one offer: drawn again"
            );
            continue;
        }
        for (k, mid) in opened {
            tracks[k].state = OutState::Negotiating(mid);
        }
        for track in tracks.iter_mut() {
            if let OutState::ToStop(mid) = track.state {
                track.state = OutState::NegotiatingStop(mid);
            }
        }
        return if change.has_changes() {
            change.apply()
        } else {
            None
        };
    }
    tracing::warn!("no offer made: mids drawn twice in every draw");
    None
}

/// Runs `f`, catching a panic: answers `None` (and logs it as an error) if `f` panicked.
fn guarded<T>(what: &'static str, f: impl FnOnce() -> T) -> Option<T> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(payload) => {
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "(no message)".into());
            tracing::error!(what, panic = %message, "media thread recovered from a panic");
            None
        }
    }
}

/// Polls one peer until it has nothing more to do now; answers when it wants to be
/// polled next.
///
/// A timeout that is already due is handled at once and the peer polled again: str0m
/// packetizes a written frame only when its timeout is handled (and its send queue is
/// refreshed the same way after sending), so answering a due timeout to the loop would leave
/// a forwarded frame unsent for a whole turn of it (the wait on the socket, the next batch of
/// datagrams, another polling pass; see BENCHMARKS.md §7).
fn poll(id: u64, conn: &mut Conn, socket: &UdpSocket, effects: &mut Vec<Effect>) -> Instant {
    let mut due = 0;
    loop {
        if !conn.rtc.is_alive() {
            effects.push(Effect::Drop(id, "connection closed"));
            return Instant::now() + MAX_WAIT;
        }
        let output = match conn.rtc.poll_output() {
            Ok(output) => output,
            Err(e) => {
                tracing::debug!(error = %e, "media poll failed");
                effects.push(Effect::Drop(id, "connection failed"));
                return Instant::now() + MAX_WAIT;
            }
        };
        match output {
            Output::Timeout(t) => {
                let now = Instant::now();
                if t > now || due == DUE_TIMEOUTS_PER_POLL {
                    return t;
                }
                due += 1;
                if let Err(e) = conn.rtc.handle_input(Input::Timeout(now)) {
                    tracing::debug!(error = %e, "media timeout failed");
                    effects.push(Effect::Drop(id, "input failed"));
                    return now + MAX_WAIT;
                }
            }
            Output::Transmit(t) => {
                if let Err(e) = socket.send_to(&t.contents, t.destination) {
                    tracing::trace!(error = %e, "media send failed");
                }
            }
            Output::Event(event) => on_event(id, conn, event, effects),
        }
    }
}

fn on_event(id: u64, conn: &mut Conn, event: Event, effects: &mut Vec<Effect>) {
    match event {
        Event::Connected if !conn.connected => {
            conn.connected = true;
            effects.push(Effect::Connected(id));
        }
        // Lost ICE may come back (the client restarts ICE): the connection is kept until
        // the ICE timeout (see `Engine::drive`).
        // An ICE restart of the client's puts the agent back to checking: lost too, until
        // the checks with the new credentials succeed.
        Event::IceConnectionStateChange(
            IceConnectionState::Disconnected | IceConnectionState::Checking,
        ) if conn.connected && conn.lost_since.is_none() => {
            conn.lost_since = Some(Instant::now());
            effects.push(Effect::Ice(id, false));
        }
        Event::IceConnectionStateChange(
            IceConnectionState::Connected | IceConnectionState::Completed,
        ) if conn.lost_since.is_some() => {
            conn.lost_since = None;
            effects.push(Effect::Ice(id, true));
        }
        Event::MediaAdded(e) if e.direction.is_receiving() => {
            let rids = e
                .simulcast
                .map(|s| s.recv.iter().map(|l| l.rid).collect())
                .unwrap_or_default();
            effects.push(Effect::TrackAdded(id, e.mid, e.kind, rids));
        }
        Event::MediaChanged(e) => {
            let known = conn.tracks_in.iter().any(|t| t.mid == e.mid);
            if e.direction.is_receiving() && !known {
                if let Some(media) = conn.rtc.media(e.mid) {
                    let rids = match media.rids_rx() {
                        Rids::Specific(rids) => rids.clone(),
                        _ => Vec::new(),
                    };
                    effects.push(Effect::TrackAdded(id, e.mid, media.kind(), rids));
                }
            } else if !e.direction.is_receiving() && known {
                effects.push(Effect::TrackRemoved(id, e.mid));
            }
        }
        Event::MediaData(data) => {
            let Some(track) = conn.tracks_in.iter_mut().find(|t| t.mid == data.mid) else {
                return;
            };
            let now = Instant::now();
            if track.kind == MediaKind::Audio
                && let Some(level) = data.ext_vals.audio_level
            {
                conn.speech.level(level, now);
            }
            let Some(layer) = track.layers.iter_mut().find(|l| l.rid == data.rid) else {
                // A layer the SDP did not list: not forwarded.
                return;
            };
            layer.last_packet = Some(now);
            if !data.contiguous {
                layer.wants_keyframe = true;
            }
            if let Some(size) = layers::vp8_size(&data.data) {
                layer.size = size;
            }
            effects.push(Effect::Data(id, Box::new(data)));
        }
        Event::KeyframeRequest(request) => {
            if let Some(track) = conn
                .tracks_out
                .iter()
                .find(|t| t.state == OutState::Open(request.mid))
                && let Some(rid) = track.current.or(track.target)
            {
                effects.push(Effect::WantKeyframe(track.origin, track.origin_mid, rid));
            }
        }
        Event::MediaIngressStats(stats) => {
            if let Some(layer) = conn
                .tracks_in
                .iter_mut()
                .find(|t| t.mid == stats.mid)
                .and_then(|t| t.layers.iter_mut().find(|l| l.rid == stats.rid))
            {
                if let Some((bytes, at)) = layer.bytes_at {
                    let secs = stats.timestamp.saturating_duration_since(at).as_secs_f64();
                    let bitrate = stats.bytes.saturating_sub(bytes) as f64 * 8.0 / secs;
                    // A paused layer keeps the rate it had: what resuming it would cost.
                    if secs > 0.0 && bitrate >= 1.0 {
                        layer.bitrate = bitrate as u64;
                    }
                }
                layer.bytes_at = Some((stats.bytes, stats.timestamp));
            }
        }
        Event::MediaEgressStats(stats) => {
            let sent = conn.sent.entry(stats.mid).or_default();
            let bytes = stats.bytes.saturating_sub(*sent);
            *sent = stats.bytes;
            conn.downlink.sample(bytes, stats.loss, stats.timestamp);
            let seen = conn.nacks.entry(stats.mid).or_default();
            if stats.nacks > *seen {
                METRICS.sfu_nacks(stats.nacks - *seen);
                *seen = stats.nacks;
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_panic_in_guarded_work_is_caught_and_answered_none() {
        assert_eq!(guarded("test", || 7), Some(7));
        assert_eq!(guarded("test", || -> u8 { panic!("boom") }), None);
        let message = String::from("formatted boom");
        assert_eq!(guarded("test", move || -> u8 { panic!("{message}") }), None);
    }

    fn engine() -> (Engine, Arc<Mutex<Vec<MediaEvent>>>) {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = {
            let events = events.clone();
            move |event| events.lock().unwrap().push(event)
        };
        let engine = Engine::new(socket, addr, MediaConfig::new(addr), Box::new(sink));
        (engine, events)
    }

    /// A client's offer with one audio track, in the SDK's `signal` data shape.
    fn client_offer() -> Value {
        let mut rtc = Rtc::builder().build(Instant::now());
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        rtc.add_local_candidate(Candidate::host(socket.local_addr().unwrap(), "udp").unwrap());
        let mut change = rtc.sdp_api();
        change.add_media(MediaKind::Audio, Direction::SendOnly, None, None, None);
        let (offer, _) = change.apply().unwrap();
        signal::description("offer", offer.to_sdp_string())
    }

    fn add_and_offer(engine: &mut Engine, address: &str) {
        for command in [
            Command::Add {
                room: "R".into(),
                address: address.into(),
                can_publish: true,
                can_subscribe: true,
            },
            Command::Signal {
                room: "R".into(),
                address: address.into(),
                data: client_offer(),
            },
        ] {
            assert!(engine.guard("command", |e| e.command(command)).is_some());
        }
    }

    /// The SDP of the server's answer to `address`, if it got one.
    fn answer_sdp(events: &[MediaEvent], address: &str) -> Option<String> {
        events.iter().find_map(|e| match e {
            MediaEvent::Signal { to, data, .. }
                if to == address && data["description"]["type"] == "answer" =>
            {
                data["description"]["sdp"].as_str().map(str::to_string)
            }
            _ => None,
        })
    }

    #[test]
    fn a_member_that_may_not_publish_has_its_send_tracks_answered_inactive() {
        let (mut engine, events) = engine();
        for (address, can_publish) in [("P", true), ("V", false)] {
            for command in [
                Command::Add {
                    room: "R".into(),
                    address: address.into(),
                    can_publish,
                    can_subscribe: true,
                },
                Command::Signal {
                    room: "R".into(),
                    address: address.into(),
                    data: client_offer(),
                },
            ] {
                assert!(engine.guard("command", |e| e.command(command)).is_some());
            }
        }
        let events = events.lock().unwrap();
        let audio_direction = |sdp: &str| {
            sdp.split("m=")
                .find(|section| section.starts_with("audio"))
                .and_then(|section| {
                    section.lines().find(|l| {
                        matches!(
                            *l,
                            "a=recvonly" | "a=sendonly" | "a=sendrecv" | "a=inactive"
                        )
                    })
                })
                .map(str::to_string)
        };
        let publisher = answer_sdp(&events, "P").expect("P is answered");
        assert_eq!(audio_direction(&publisher).as_deref(), Some("a=recvonly"));
        // The viewer's offer is answered too (it may still receive), its track refused.
        let viewer = answer_sdp(&events, "V").expect("V is answered");
        assert_eq!(audio_direction(&viewer).as_deref(), Some("a=inactive"));
    }

    /// Adds `address` to room R with these permissions, and has it offer.
    fn join_as(engine: &mut Engine, address: &str, can_publish: bool, can_subscribe: bool) {
        for command in [
            Command::Add {
                room: "R".into(),
                address: address.into(),
                can_publish,
                can_subscribe,
            },
            Command::Signal {
                room: "R".into(),
                address: address.into(),
                data: client_offer(),
            },
        ] {
            assert!(engine.guard("command", |e| e.command(command)).is_some());
        }
    }

    fn tracks_out(engine: &Engine, address: &str) -> usize {
        let i = engine.index("R", address).unwrap();
        engine.members[i].conn.as_ref().unwrap().tracks_out.len()
    }

    #[test]
    fn nothing_is_forwarded_to_a_member_that_may_not_subscribe() {
        let (mut engine, _events) = engine();
        join_as(&mut engine, "P", true, true);
        join_as(&mut engine, "S", true, true);
        join_as(&mut engine, "N", true, false);
        let p = engine.index("R", "P").unwrap();
        engine.track_added(p, Mid::from("0"), MediaKind::Audio, Vec::new());
        assert_eq!(tracks_out(&engine, "S"), 1);
        assert_eq!(tracks_out(&engine, "N"), 0);
        // Those who come later: the same.
        join_as(&mut engine, "S2", true, true);
        join_as(&mut engine, "N2", true, false);
        assert_eq!(tracks_out(&engine, "S2"), 1);
        assert_eq!(tracks_out(&engine, "N2"), 0);
        // A member that may not publish publishes nothing, even when told of a track.
        join_as(&mut engine, "V", false, true);
        let v = engine.index("R", "V").unwrap();
        engine.track_added(v, Mid::from("0"), MediaKind::Audio, Vec::new());
        assert_eq!(tracks_out(&engine, "S"), 1, "nothing of V's");
    }

    /// Track `k` of a publisher, to open toward a subscriber.
    fn audio_out(k: usize) -> TrackOut {
        TrackOut {
            origin: k as u64,
            origin_address: format!("P{k}"),
            origin_mid: Mid::from("0"),
            kind: MediaKind::Audio,
            state: OutState::ToOpen,
            target: Some(None),
            current: Some(None),
            ts: TsMap::default(),
        }
    }

    fn mids_of(sdp: &str) -> Vec<&str> {
        sdp.lines()
            .filter_map(|l| l.strip_prefix("a=mid:"))
            .collect()
    }

    #[test]
    fn an_offer_of_many_tracks_never_repeats_a_mid_and_the_client_takes_the_next_one() {
        // str0m draws a new m-line's mid among 205,379 and does not compare it with the
        // others of the same offer: with 600 tracks at once, more than half of its offers
        // would repeat one; eight rounds without a repeat would be luck of 1 in 1,000.
        for round in 0..8 {
            let now = Instant::now();
            let (mut server, mut client) = (Rtc::builder().build(now), Rtc::builder().build(now));
            let mut tracks: Vec<TrackOut> = (0..600).map(audio_out).collect();
            let (offer, pending) = offer_tracks(&mut server, &mut tracks).expect("an offer");
            let sdp = offer.to_sdp_string();
            let mut mids = mids_of(&sdp);
            mids.sort_unstable();
            mids.dedup();
            assert_eq!(mids.len(), 600, "round {round}: a mid repeated");
            let mut negotiating: Vec<String> = tracks
                .iter()
                .map(|t| match t.state {
                    OutState::Negotiating(mid) => mid.to_string(),
                    other => panic!("round {round}: {other:?}"),
                })
                .collect();
            negotiating.sort_unstable();
            assert_eq!(
                negotiating, mids,
                "round {round}: each track has its m-line"
            );

            let answer = client
                .sdp_api()
                .accept_offer(offer)
                .expect("first offer taken");
            server
                .sdp_api()
                .accept_answer(pending, answer)
                .expect("answer taken");
            // The next offer (where a repeated mid made str0m refuse it: "Changed order
            // for m-line with mid") is taken too.
            let mut more: Vec<TrackOut> = (600..602).map(audio_out).collect();
            let (offer, _) = offer_tracks(&mut server, &mut more).expect("a second offer");
            assert_eq!(mids_of(&offer.to_sdp_string()).len(), 602);
            if let Err(e) = client.sdp_api().accept_offer(offer) {
                panic!("round {round}: the next offer refused: {e}");
            }
        }
    }

    #[test]
    fn stops_and_opens_go_in_one_offer() {
        let now = Instant::now();
        let (mut server, mut client) = (Rtc::builder().build(now), Rtc::builder().build(now));
        let mut tracks: Vec<TrackOut> = (0..3).map(audio_out).collect();
        let (offer, pending) = offer_tracks(&mut server, &mut tracks).unwrap();
        let answer = client.sdp_api().accept_offer(offer).unwrap();
        server.sdp_api().accept_answer(pending, answer).unwrap();
        let OutState::Negotiating(first) = tracks[0].state else {
            panic!("{:?}", tracks[0].state)
        };
        tracks[0].state = OutState::ToStop(first);
        tracks[1].state = OutState::Open(Mid::from("x"));
        tracks[2].state = OutState::Open(Mid::from("y"));
        tracks.push(audio_out(3));
        let (offer, _) = offer_tracks(&mut server, &mut tracks).unwrap();
        assert_eq!(tracks[0].state, OutState::NegotiatingStop(first));
        assert!(matches!(tracks[3].state, OutState::Negotiating(_)));
        let sdp = offer.to_sdp_string();
        assert_eq!(mids_of(&sdp).len(), 4, "{sdp}");
        assert_eq!(
            sdp.matches("m=audio 0 ").count(),
            1,
            "one m-line stopped: {sdp}"
        );
        // Nothing to open or stop: no offer.
        let mut none: Vec<TrackOut> = Vec::new();
        assert!(offer_tracks(&mut server, &mut none).is_none());
    }

    fn answered(events: &[MediaEvent], address: &str) -> bool {
        events.iter().any(|e| {
            matches!(e, MediaEvent::Signal { to, data, .. }
                if to == address && data["description"]["type"] == "answer")
        })
    }

    #[test]
    fn a_panic_costs_only_the_handled_peer_its_connection_and_the_engine_goes_on() {
        let (mut engine, events) = engine();
        add_and_offer(&mut engine, "A");
        add_and_offer(&mut engine, "B");
        assert!(answered(&events.lock().unwrap(), "A"));
        assert!(answered(&events.lock().unwrap(), "B"));
        events.lock().unwrap().clear();

        // Work on A's connection panics halfway.
        let a = engine.members[engine.index("R", "A").unwrap()].id;
        let result = engine.guard("test", |e| -> () {
            e.handling = Some(a);
            panic!("str0m fell over")
        });
        assert_eq!(result, None);
        let a_index = engine.index("R", "A").unwrap();
        assert!(
            engine.members[a_index].conn.is_none(),
            "A's connection is dropped"
        );
        // A is told, on its socket and to operators.
        assert_eq!(
            *events.lock().unwrap(),
            [
                MediaEvent::Signal {
                    room: "R".into(),
                    to: "A".into(),
                    data: serde_json::json!({"closed": {"reason": "media thread panicked"}}),
                },
                MediaEvent::PeerState {
                    room: "R".into(),
                    address: "A".into(),
                    connected: false,
                }
            ]
        );
        // A keeps its place in the room, B keeps its connection.
        let b_index = engine.index("R", "B").unwrap();
        assert!(engine.members[b_index].conn.is_some());

        // A panic with no peer being handled costs nobody anything.
        events.lock().unwrap().clear();
        assert_eq!(
            engine.guard("test", |_| -> u8 { panic!("elsewhere") }),
            None
        );
        assert!(engine.members[b_index].conn.is_some());
        assert!(events.lock().unwrap().is_empty());

        // The engine goes on: A may offer again and gets an answer; the loop still drives.
        add_and_offer(&mut engine, "A");
        assert!(answered(&events.lock().unwrap(), "A"));
        assert!(engine.guard("drive", Engine::drive).is_some());
    }
}
