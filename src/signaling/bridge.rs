//! The signal relay between nodes (with `cluster`; see `docs/cluster.md`). A signaling socket
//! whose room another node owns is bridged to that owner over the bus (`store::Bus`, Redis
//! pub/sub): the node that holds the socket (the *edge*) verifies the token, keeps the
//! socket's heartbeat, frame size limit and message rate, and passes every text frame to
//! the owner; the owner runs an ordinary signaling session for it (`session::serve` with a
//! `Wire::Bridged`), whose participant queue the room's actor fills like any other, and
//! whose frames go back over the bus. So the owner's room actor decides everything (seats,
//! relays, the MESH→SFU upgrade, the media plane), exactly as for its own sockets.
//!
//! One kind of relay does not go to the owner: a `signal` (or a `message` to listed
//! participants) between sockets that this node bridges into the same room is delivered
//! here, by the sender's edge, from the seats
//! their owner announced (`joined`, until the socket goes or `participantLeft`), so
//! participants on one node relay without Redis wherever their room lives (see
//! [`Bridge::relay_here`] for what stays the owner's).
//!
//! A bridged socket is a *link*: the edge's session id, under the edge's node id. What
//! breaks a link: the bus (a lost subscription or a failed publish: messages may be lost,
//! so every link goes), a message that found nobody subscribed (that node is gone: its
//! links go), the other node missing from the live node list, a clean close on either
//! side. The edge closes its socket with 1001 (the client resumes or joins again); the
//! owner's session ends as a dropped socket (the seat waits `signaling_resume_grace_ms` for
//! a resume).

use super::SignalingConfig;
use super::protocol::{self, ServerMessage, close};
use super::session::{self, ByteBudget, Frames, RateLimiter, Reattach, Wire, fanout_cost};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::model::Owner;
use crate::room::Rooms;
use crate::store::{Bus, BusEvent, Nodes};
use crate::token::Permissions;
use crate::wsguard::is_too_big;
use actix_ws::{AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, Session};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How many client frames may wait for the owner's session of one link.
const FRAMES: usize = 256;

/// Why an edge socket closes when its link is dropped (1001 unless said otherwise).
const LOST: &str = "bridge to the room's node lost";

/// One message on the bus.
#[derive(Debug, Serialize, Deserialize)]
struct Envelope {
    /// The sending node.
    node: String,
    /// The socket: its session id on the edge node.
    link: u64,
    #[serde(flatten)]
    body: Body,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
enum Body {
    /// Edge → owner: a socket of room `room` is bridged to you (its `join` follows).
    Open { room: String },
    /// Edge → owner: a text frame of the client.
    Frame { text: String },
    /// Edge → owner: the socket is gone (a resume may follow).
    Gone,
    /// Owner → edge: a text frame for the client.
    Out { text: String },
    /// Owner → edge: close the socket with this code.
    Close { code: u16, reason: String },
}

/// What the owner says to an edge socket.
enum FromOwner {
    Text(String),
    Close(u16, String),
}

/// An edge socket's link: the owner it is bridged to, its room, the sender of what the
/// owner says, why the link was dropped (read by the socket when its queue ends), its
/// participant's address once the owner said `joined`, and the others its client has been
/// told are in the room (`joined`'s list, `participantJoined`, not since `participantLeft`).
struct EdgeLink {
    owner: String,
    room: String,
    tx: mpsc::Sender<FromOwner>,
    why: Arc<OnceLock<(u16, String)>>,
    address: Option<String>,
    known: HashSet<String>,
}

impl EdgeLink {
    fn new(owner: String, room: String, tx: mpsc::Sender<FromOwner>) -> Self {
        Self {
            owner,
            room,
            tx,
            why: Arc::default(),
            address: None,
            known: HashSet::new(),
        }
    }
}

/// The edge side: this node's bridged sockets by link, and the seats they hold by room
/// and address (the links whose `joined` came, until they go or their participant left).
#[derive(Default)]
struct Edges {
    links: HashMap<u64, EdgeLink>,
    seats: HashMap<(String, String), u64>,
}

impl Edges {
    /// The link's seat, and the others its client knows of, as its owner's `joined` says.
    fn seat(&mut self, link: u64, address: &str, known: HashSet<String>) {
        let Some(edge) = self.links.get_mut(&link) else {
            return;
        };
        edge.address = Some(address.to_string());
        edge.known = known;
        let key = (edge.room.clone(), address.to_string());
        // A seat resumed on a new link of this node is no longer the old link's.
        if let Some(old) = self.seats.insert(key, link)
            && old != link
            && let Some(old) = self.links.get_mut(&old)
        {
            old.address = None;
        }
    }

    /// Forgets the seat of `address` in `room` (it left, or its socket goes).
    fn unseat(&mut self, room: &str, address: &str) {
        let key = (room.to_string(), address.to_string());
        if let Some(link) = self.seats.remove(&key)
            && let Some(edge) = self.links.get_mut(&link)
        {
            edge.address = None;
        }
    }

    fn remove(&mut self, link: u64) -> Option<EdgeLink> {
        let edge = self.links.remove(&link)?;
        if let Some(address) = &edge.address {
            let key = (edge.room.clone(), address.clone());
            if self.seats.get(&key) == Some(&link) {
                self.seats.remove(&key);
            }
        }
        Some(edge)
    }

    /// Where a relay of `link`'s participant to `to` can be delivered on this node: the
    /// sender's address and the recipient's link, when both are seated in one room and
    /// the recipient's client already knows the sender (so that it never hears from a
    /// participant before it hears that it joined, as from the owner it would not).
    fn route(&self, link: u64, to: &str) -> Option<(String, u64)> {
        let edge = self.links.get(&link)?;
        let from = edge.address.as_deref().filter(|from| *from != to)?;
        let target = *self.seats.get(&(edge.room.clone(), to.to_string()))?;
        // Both bridged to the same owner: not while a hand-over moves the room's links.
        let recipient = self.links.get(&target).filter(|r| r.owner == edge.owner)?;
        recipient
            .known
            .contains(from)
            .then(|| (from.to_string(), target))
    }

    /// Forgets `link`'s own seat (its participant is leaving, or the owner closed it).
    fn leave(&mut self, link: u64) {
        if let Some(edge) = self.links.get(&link)
            && let Some(address) = edge.address.clone()
        {
            let room = edge.room.clone();
            self.unseat(&room, &address);
        }
    }

    /// Keeps the links `keep` says to keep, and their seats only.
    fn retain(&mut self, mut keep: impl FnMut(&EdgeLink) -> bool) {
        self.links.retain(|_, edge| keep(edge));
        let links = &self.links;
        self.seats.retain(|_, link| links.contains_key(link));
    }

    /// Queues `message` for the socket of `link`; a socket whose queue is full is closed
    /// as too slow, as a socket of the owner would be.
    fn push(&mut self, link: u64, message: FromOwner) {
        let Some(edge) = self.links.get(&link) else {
            return;
        };
        if edge.tx.try_send(message).is_err() {
            let _ = edge
                .why
                .set((close::TOO_SLOW, "too slow: outbound queue full".to_string()));
            self.remove(link);
        }
    }
}

/// Whom a socket's relays went to through the owner: later signals to them go that way
/// too, so that what one participant relays another (`signal`, `message`) arrives in the
/// order sent. Bounded: after a `message` to everyone, or past [`VIA_OWNER_MAX`]
/// recipients, every signal of the socket does.
#[derive(Default)]
struct ViaOwner {
    peers: HashSet<String>,
    all: bool,
}

/// How many recipients [`ViaOwner`] notes one by one.
const VIA_OWNER_MAX: usize = 1024;

/// Longer than any address (`PA-` and a UUID): a `to` this long is never a seat here, so
/// it need not be noted.
const ADDRESS_MAX: usize = 64;

impl ViaOwner {
    fn note(&mut self, to: &str) {
        if self.all || to.len() > ADDRESS_MAX {
            return;
        }
        if self.peers.len() >= VIA_OWNER_MAX {
            self.note_all();
        } else {
            self.peers.insert(to.to_string());
        }
    }

    fn note_all(&mut self) {
        self.all = true;
        self.peers = HashSet::new();
    }

    /// Notes whom a frame that goes to the owner relays to.
    fn note_frame(&mut self, message: &protocol::ClientMessage) {
        match message {
            protocol::ClientMessage::Signal { to, .. } => self.note(to),
            protocol::ClientMessage::Message { to: Some(to), .. } => {
                to.iter().for_each(|to| self.note(to))
            }
            protocol::ClientMessage::Message { to: None, .. } => self.note_all(),
            _ => {}
        }
    }

    fn has(&self, to: &str) -> bool {
        self.all || self.peers.contains(to)
    }
}

/// Where a client's frame goes: relayed here, or to the room's owner.
enum Here {
    Relayed,
    Owner,
}

pub struct Bridge {
    bus: Bus,
    rooms: Rooms,
    config: Arc<SignalingConfig>,
    shutdown: watch::Receiver<bool>,
    /// Owner side: sockets of other nodes bridged to this node, by (node, link): the
    /// sender of their frames to the session that serves them here.
    hosted: Mutex<HashMap<(String, u64), mpsc::Sender<String>>>,
    /// Edge side: this node's sockets bridged to other nodes, and their seats.
    edges: Mutex<Edges>,
}

impl Bridge {
    /// Starts the bridge over `bus` (whose events it reads from now on); with `nodes`,
    /// every `check_every` it drops the links of nodes no longer in the live node list.
    pub fn start(
        bus: Bus,
        events: mpsc::Receiver<BusEvent>,
        rooms: Rooms,
        config: Arc<SignalingConfig>,
        shutdown: watch::Receiver<bool>,
        nodes: Option<Arc<Nodes>>,
        check_every: Duration,
    ) -> Arc<Self> {
        let bridge = Arc::new(Self {
            bus,
            rooms,
            config,
            shutdown,
            hosted: Mutex::default(),
            edges: Mutex::default(),
        });
        // On this thread's local set: the sessions it starts for hosted links hold actix
        // handles, which stay on the thread that made them.
        actix_web::rt::spawn(bridge.clone().dispatch(events));
        if let Some(nodes) = nodes {
            actix_web::rt::spawn(bridge.clone().watch_nodes(nodes, check_every));
        }
        bridge
    }

    fn hosted(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), mpsc::Sender<String>>> {
        self.hosted.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn edges(&self) -> std::sync::MutexGuard<'_, Edges> {
        self.edges.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn send(&self, to: &str, link: u64, body: Body) -> bool {
        let envelope = Envelope {
            node: self.bus.node().to_string(),
            link,
            body,
        };
        let payload = serde_json::to_vec(&envelope).expect("an envelope always serializes");
        self.bus.send(to, payload).await
    }

    async fn dispatch(self: Arc<Self>, mut events: mpsc::Receiver<BusEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                BusEvent::Message(bytes) => match serde_json::from_slice::<Envelope>(&bytes) {
                    Ok(envelope) => self.receive(envelope),
                    Err(e) => tracing::warn!(error = %e, "an unreadable message on the bus"),
                },
                BusEvent::Broken => {
                    // The edges of the hosted links may not know: they are told (once the
                    // bus works again) to re-attach their sockets.
                    for (node, link) in self.drop_links(|_| true) {
                        let body = Body::Close {
                            code: close::GOING_AWAY,
                            reason: LOST.to_string(),
                        };
                        self.send(&node, link, body).await;
                    }
                }
                BusEvent::Undelivered(node) => {
                    self.drop_links(|n| n == node);
                }
            }
        }
    }

    fn receive(self: &Arc<Self>, Envelope { node, link, body }: Envelope) {
        match body {
            Body::Open { room } => {
                let (tx, rx) = mpsc::channel(FRAMES);
                self.hosted().insert((node.clone(), link), tx);
                tracing::debug!(%room, %node, link, "a socket bridged from another node");
                METRICS.bridge_link("hosted");
                let wire = Wire::Bridged(BridgeOut {
                    bridge: self.clone(),
                    node,
                    link,
                });
                actix_web::rt::spawn(session::serve(
                    wire,
                    Frames::Bridged(rx),
                    Vec::new(),
                    self.rooms.clone(),
                    self.config.clone(),
                    self.shutdown.clone(),
                    None,
                    None,
                ));
            }
            Body::Frame { text } => {
                let key = (node, link);
                let mut hosted = self.hosted();
                if let Some(tx) = hosted.get(&key)
                    && tx.try_send(text).is_err()
                {
                    // The session here is behind by a whole queue: the link goes.
                    hosted.remove(&key);
                    drop(hosted);
                    let bridge = self.clone();
                    tokio::spawn(async move {
                        let (node, link) = key;
                        let reason = "too slow: bridged frames queue full".to_string();
                        let body = Body::Close {
                            code: close::TOO_SLOW,
                            reason,
                        };
                        bridge.send(&node, link, body).await;
                    });
                }
            }
            Body::Gone => {
                // Dropping the sender ends the session as a dropped socket.
                self.hosted().remove(&(node, link));
            }
            Body::Out { text } => self.to_edge(&node, link, FromOwner::Text(text)),
            Body::Close { code, reason } => {
                self.to_edge(&node, link, FromOwner::Close(code, reason))
            }
        }
    }

    /// Hands what the owner said to the edge socket of `link`, keeping the seats up to
    /// date first: a `joined` seats the link, a `participantLeft` (to any link of the
    /// room) and a close unseat.
    fn to_edge(&self, owner: &str, link: u64, message: FromOwner) {
        let mut edges = self.edges();
        let Some(edge) = edges.links.get(&link).filter(|e| e.owner == owner) else {
            return;
        };
        match &message {
            FromOwner::Text(text) if text.starts_with(r#"{"type":"joined""#) => {
                if let Ok(Said {
                    address: Some(address),
                    participants,
                    ..
                }) = serde_json::from_str(text)
                {
                    let known = participants.into_iter().map(|p| p.address).collect();
                    edges.seat(link, &address, known);
                }
            }
            FromOwner::Text(text) if text.starts_with(r#"{"type":"participantJoined""#) => {
                if let Ok(Said {
                    participant: Some(p),
                    ..
                }) = serde_json::from_str(text)
                {
                    edges
                        .links
                        .get_mut(&link)
                        .expect("looked up above")
                        .known
                        .insert(p.address);
                }
            }
            FromOwner::Text(text) if text.starts_with(r#"{"type":"participantLeft""#) => {
                if let Ok(Said {
                    address: Some(address),
                    ..
                }) = serde_json::from_str(text)
                {
                    let room = edge.room.clone();
                    edges.unseat(&room, &address);
                    edges
                        .links
                        .get_mut(&link)
                        .expect("looked up above")
                        .known
                        .remove(&address);
                }
            }
            FromOwner::Close(..) => edges.leave(link),
            FromOwner::Text(_) => {}
        }
        edges.push(link, message);
    }

    /// Relays the client's frame of `link` here when it is a `signal`, or a `message` to
    /// listed participants, whose every recipient's socket this node bridges into the same
    /// room and knows the sender ([`Edges::route`]), as the owner would have:
    /// `{type, from, data}` from the sender's seat, its fan-out charged to `fanout` (this
    /// node's budget for the socket, the size of the owner's). Everything else goes to the
    /// owner (`Here::Owner`), which decides as for any socket: other frames (a `message`
    /// to everyone among them: the room's roster is the owner's), a relay before the
    /// sender's `joined`, to itself, to `sfu`, an SDP that sends media from a participant
    /// that may not publish, a `message` from one that may not send them (`may`), one that
    /// lists a participant twice, one that this node's budget cannot pay for (the owner
    /// relays or refuses it with its own, answering in order with the socket's other
    /// frames), and a relay to anyone this link ever relayed to through the owner
    /// (`via_owner`, which this notes), so that what one participant relays another
    /// arrives in the order sent. A `leave` unseats the sender here at once.
    fn relay_here(
        &self,
        link: u64,
        text: &str,
        may: Permissions,
        via_owner: &mut ViaOwner,
        fanout: &mut ByteBudget,
    ) -> Here {
        use protocol::ClientMessage;
        let (kind, to, data) = match protocol::parse(text) {
            Ok(ClientMessage::Signal { to, data })
                if to != "sfu" && (may.can_publish || !protocol::sends_media(&data)) =>
            {
                ("signal", vec![to], data)
            }
            // A `message` to listed participants, each listed once (the owner refuses a
            // list longer than the room, and counts repeats against it).
            Ok(ClientMessage::Message { to: Some(to), data })
                if may.can_send_messages
                    && !to.is_empty()
                    && to.iter().collect::<HashSet<_>>().len() == to.len() =>
            {
                ("message", to, data)
            }
            Ok(ClientMessage::Leave) => {
                self.edges().leave(link);
                return Here::Owner;
            }
            Ok(message) => {
                via_owner.note_frame(&message);
                return Here::Owner;
            }
            Err(_) => return Here::Owner,
        };
        let mut edges = self.edges();
        let routes: Option<Vec<(String, u64)>> = (to.iter())
            .map(|to| edges.route(link, to).filter(|_| !via_owner.has(to)))
            .collect();
        let Some(routes) = routes else {
            to.iter().for_each(|to| via_owner.note(to));
            return Here::Owner;
        };
        let from = &routes[0].0;
        let relayed = protocol::relayed(kind, from, &data);
        let cost = fanout_cost(routes.len(), relayed.len());
        if !fanout.allow(cost, Instant::now()) {
            // Over this node's budget: the owner decides, with its own budget, in order
            // with the frames it has (an answer from here could overtake its answers).
            to.iter().for_each(|to| via_owner.note(to));
            return Here::Owner;
        }
        METRICS.relayed(routes.len() as u64);
        for (_, target) in routes {
            edges.push(target, FromOwner::Text(relayed.to_string()));
        }
        Here::Relayed
    }

    /// Drops every link with a node that `gone` names: edge sockets re-attach or close
    /// with 1001, the sessions of hosted ones end as dropped sockets. Answers the hosted
    /// links dropped.
    fn drop_links(&self, gone: impl Fn(&str) -> bool) -> Vec<(String, u64)> {
        let mut dropped = 0;
        let mut hosted = Vec::new();
        self.hosted().retain(|key, _| {
            let keep = !gone(&key.0);
            if !keep {
                hosted.push(key.clone());
                dropped += 1;
            }
            keep
        });
        self.edges().retain(|edge| {
            let keep = !gone(&edge.owner);
            if !keep {
                let _ = edge.why.set((close::GOING_AWAY, LOST.to_string()));
                dropped += 1;
            }
            keep
        });
        if dropped > 0 {
            tracing::warn!(links = dropped, "bridged sockets dropped");
            METRICS.bridge_dropped(dropped);
        }
        hosted
    }

    /// Drops the links of nodes that left the live node list.
    async fn watch_nodes(self: Arc<Self>, nodes: Arc<Nodes>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let linked = {
                let mut linked: HashSet<String> =
                    self.hosted().keys().map(|(node, _)| node.clone()).collect();
                linked.extend(self.edges().links.values().map(|e| e.owner.clone()));
                linked
            };
            if linked.is_empty() {
                continue;
            }
            // A failed read proves nothing: the next tick looks again.
            if let Ok(live) = nodes.live().await {
                let live: HashSet<String> = live.into_iter().map(|n| n.id).collect();
                self.drop_links(|node| linked.contains(node) && !live.contains(node));
            }
        }
    }

    /// Serves a socket of this node whose room `room` is owned by `owner`: opens the link,
    /// hands the owner the client's first frames (`start`: its `join`, and what followed
    /// it already) and then every text frame, and writes what the owner says, until either
    /// side closes or the link is dropped. A link dropped because the owner is gone, once
    /// the participant had its seat, is not the end: the socket waits until the room can
    /// have a new owner and is handed back ([`Reattach`]) to resume its seat there.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn edge(
        self: Arc<Self>,
        mut ws: Session,
        mut frames: AggregatedMessageStream,
        owner: Owner,
        room: String,
        may: Permissions,
        start: Vec<String>,
        config: Arc<SignalingConfig>,
        mut shutdown: watch::Receiver<bool>,
    ) -> Option<Reattach> {
        let _open = METRICS.socket_opened("signaling");
        METRICS.bridge_link("edge");
        let link = session::next_session();
        let to = owner.node;
        let (tx, mut rx) = mpsc::channel(config.queue_capacity.max(1));
        let edge = EdgeLink::new(to.clone(), room.clone(), tx);
        let why = edge.why.clone();
        self.edges().links.insert(link, edge);
        // The room token of the `join`, and the seat's resume token once the owner said
        // `joined`: what a resume elsewhere needs.
        let join = start
            .first()
            .and_then(|join| serde_json::from_str::<serde_json::Value>(join).ok())
            .unwrap_or_default();
        let token = join["token"].as_str().map(str::to_string);
        let mut resume = join["resume"].as_str().map(str::to_string);
        self.send(&to, link, Body::Open { room: room.clone() })
            .await;
        // Whom this socket relayed to through the owner: later signals to them go that way.
        let mut via_owner = ViaOwner::default();
        let mut fanout = ByteBudget::new(config.fanout_bytes_per_second, config.fanout_burst_bytes);
        for text in start {
            if let Ok(message) = protocol::parse(&text) {
                via_owner.note_frame(&message);
            }
            self.send(&to, link, Body::Frame { text }).await;
        }
        let mut limiter = RateLimiter::new(config.rate_per_second, config.rate_burst);
        let mut heartbeat = tokio::time::interval(config.ping_interval);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_heard = Instant::now();
        // How the socket ends: the close to send (none when the connection is gone), and
        // whether the owner must hear that the socket is gone.
        let (code, reason, tell_owner): (Option<u16>, String, bool) = loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    break (Some(close::GOING_AWAY), "server shutting down".into(), true)
                }
                said = rx.recv() => match said {
                    Some(FromOwner::Text(text)) => {
                        if text.starts_with(r#"{"type":"joined""#) {
                            resume = serde_json::from_str::<serde_json::Value>(&text)
                                .ok()
                                .and_then(|m| m["resumeToken"].as_str().map(str::to_string))
                                .or(resume);
                        }
                        if ws.text(text).await.is_err() {
                            break (None, String::new(), true);
                        }
                    }
                    Some(FromOwner::Close(code, reason)) => {
                        // The owner lost the link (its bus broke), or handed the room to
                        // another node (it is draining): re-attach, as below.
                        let handed_over = reason == protocol::HANDED_OVER;
                        if (reason == LOST || handed_over)
                            && let (Some(token), Some(resume)) = (&token, &resume)
                        {
                            self.edges().remove(link);
                            let join = serde_json::json!({"type": "join", "token": token, "resume": resume});
                            return self
                                .reattach(ws, frames, &room, &to, join.to_string(), &config, &mut shutdown, handed_over)
                                .await;
                        }
                        break (Some(code), reason, false);
                    }
                    None => {
                        let (code, reason) = why
                            .get()
                            .cloned()
                            .unwrap_or((close::GOING_AWAY, LOST.to_string()));
                        if reason == LOST
                            && let (Some(token), Some(resume)) = (&token, &resume)
                        {
                            self.edges().remove(link);
                            let join = serde_json::json!({"type": "join", "token": token, "resume": resume});
                            return self
                                .reattach(ws, frames, &room, &to, join.to_string(), &config, &mut shutdown, false)
                                .await;
                        }
                        break (Some(code), reason, true);
                    }
                },
                frame = frames.recv() => {
                    last_heard = Instant::now();
                    match frame {
                        None => break (None, String::new(), true),
                        Some(Ok(AggregatedMessage::Close(reason))) => {
                            let code = reason.map_or(close::NORMAL, |r| u16::from(r.code));
                            break (Some(code), String::new(), true);
                        }
                        Some(Err(e)) if is_too_big(&e) => {
                            let limit = config.max_frame_bytes;
                            let error = ApiError::payload_too_large(limit);
                            let _ = ws.text(&*ServerMessage::error(&error).text()).await;
                            break (Some(close::TOO_BIG), format!("frame larger than {limit} bytes"), true);
                        }
                        Some(Err(_)) => break (Some(close::PROTOCOL), "unreadable frame".into(), true),
                        Some(Ok(AggregatedMessage::Ping(bytes))) => {
                            let _ = ws.pong(&bytes).await;
                        }
                        Some(Ok(AggregatedMessage::Pong(_))) => {}
                        Some(Ok(AggregatedMessage::Binary(_))) => {
                            let error = ApiError::invalid_message();
                            let _ = ws.text(&*ServerMessage::error(&error).text()).await;
                        }
                        Some(Ok(AggregatedMessage::Text(text))) => {
                            if !limiter.allow(Instant::now()) {
                                let error = ApiError::too_many_messages(config.rate_per_second);
                                let _ = ws.text(&*ServerMessage::error(&error).text()).await;
                                break (Some(close::POLICY), "too many messages".into(), true);
                            }
                            match self.relay_here(link, &text, may, &mut via_owner, &mut fanout) {
                                Here::Relayed => {}
                                Here::Owner => {
                                    self.send(&to, link, Body::Frame { text: text.to_string() }).await;
                                }
                            }
                        }
                    }
                }
                _ = heartbeat.tick() => {
                    if last_heard.elapsed() > config.client_timeout {
                        break (Some(close::HEARTBEAT_TIMEOUT), "client timed out".into(), true);
                    }
                    if ws.ping(b"").await.is_err() {
                        break (None, String::new(), true);
                    }
                }
            }
        };
        self.edges().remove(link);
        if tell_owner {
            self.send(&to, link, Body::Gone).await;
        }
        if let Some(code) = code {
            close_ws(ws, code, reason).await;
        }
        None
    }

    /// A bridged socket whose link to `owner` was dropped (or whose room `owner` handed
    /// to another node): keeps the socket (answering
    /// pings, keeping the client's text frames, at most a queue's worth) until the room's
    /// lease is free or held by a live node (`owner` again, when only the bus broke), then
    /// hands the socket back with a resume of its seat first. Closed with 1001 when that
    /// takes longer than the resume grace.
    #[allow(clippy::too_many_arguments)]
    async fn reattach(
        &self,
        mut ws: Session,
        mut frames: AggregatedMessageStream,
        room: &str,
        owner: &str,
        join: String,
        config: &SignalingConfig,
        shutdown: &mut watch::Receiver<bool>,
        at_once: bool,
    ) -> Option<Reattach> {
        let Some(owning) = self.rooms.services().ownership.clone() else {
            close_ws(ws, close::GOING_AWAY, LOST.to_string()).await;
            return None;
        };
        METRICS.bridge_link("reattached");
        tracing::info!(%room, node = %owner, "bridge to the room's owner lost: waiting to resume a bridged seat");
        let mut first = vec![join];
        let deadline = tokio::time::sleep(config.resume_grace);
        tokio::pin!(deadline);
        // A room handed over by a draining node has its new owner already: the first look
        // is at once. Otherwise the owner (or the bus) has just been lost: a moment later.
        let every = Duration::from_millis(250);
        let first_look = tokio::time::Instant::now() + if at_once { Duration::ZERO } else { every };
        let mut look = tokio::time::interval_at(first_look, every);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => {
                    close_ws(ws, close::GOING_AWAY, "server shutting down".into()).await;
                    return None;
                }
                _ = &mut deadline => {
                    close_ws(ws, close::GOING_AWAY, LOST.to_string()).await;
                    return None;
                }
                frame = frames.recv() => match frame {
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if first.len() > config.queue_capacity {
                            close_ws(ws, close::GOING_AWAY, LOST.to_string()).await;
                            return None;
                        }
                        first.push(text.to_string());
                    }
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        let _ = ws.pong(&bytes).await;
                    }
                    Some(Ok(AggregatedMessage::Pong(_) | AggregatedMessage::Binary(_))) => {}
                    // The client went: the seat waits for its resume on the new owner.
                    _ => return None,
                },
                _ = look.tick() => {
                    let free = match owning.leases.holder(room).await {
                        Ok(None) => true,
                        Ok(Some(lease)) => match owning.nodes.live().await {
                            Ok(live) => live.iter().any(|n| n.id == lease.node),
                            Err(_) => false,
                        },
                        Err(_) => false,
                    };
                    if free {
                        return Some(Reattach { ws, frames, first });
                    }
                }
            }
        }
    }
}

/// What the edge reads of an owner's `joined` (`address`, `participants`),
/// `participantJoined` (`participant`) and `participantLeft` (`address`).
#[derive(Deserialize)]
struct Said {
    address: Option<String>,
    participant: Option<Addressed>,
    #[serde(default)]
    participants: Vec<Addressed>,
}

#[derive(Deserialize)]
struct Addressed {
    address: String,
}

async fn close_ws(ws: Session, code: u16, reason: String) {
    let _ = ws
        .close(Some(CloseReason {
            code: CloseCode::Other(code),
            description: Some(reason),
        }))
        .await;
}

/// The owner's side of a bridged socket: what its session writes goes back over the bus.
/// Dropped when the session ends, which forgets the link here.
pub(super) struct BridgeOut {
    bridge: Arc<Bridge>,
    node: String,
    link: u64,
}

impl BridgeOut {
    pub(super) async fn text(&mut self, text: &str) -> Result<(), ()> {
        let body = Body::Out {
            text: text.to_string(),
        };
        if self.bridge.send(&self.node, self.link, body).await {
            Ok(())
        } else {
            Err(())
        }
    }

    pub(super) async fn close(self, code: u16, reason: String) {
        self.bridge
            .send(&self.node, self.link, Body::Close { code, reason })
            .await;
    }
}

impl Drop for BridgeOut {
    fn drop(&mut self) {
        self.bridge
            .hosted()
            .remove(&(std::mem::take(&mut self.node), self.link));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(edges: &mut Edges, id: u64, owner: &str, room: &str) -> mpsc::Receiver<FromOwner> {
        let (tx, rx) = mpsc::channel(1);
        edges
            .links
            .insert(id, EdgeLink::new(owner.into(), room.into(), tx));
        rx
    }

    fn seated(edges: &Edges) -> Vec<(&str, &str, u64)> {
        let mut seats: Vec<_> = (edges.seats.iter())
            .map(|((room, address), link)| (room.as_str(), address.as_str(), *link))
            .collect();
        seats.sort();
        seats
    }

    #[test]
    fn a_links_seat_lasts_from_its_joined_until_it_leaves_or_goes() {
        let mut edges = Edges::default();
        let _one = link(&mut edges, 1, "a", "R");
        let _two = link(&mut edges, 2, "a", "R");
        let _three = link(&mut edges, 3, "b", "S");
        edges.seat(1, "PA-1", HashSet::new());
        edges.seat(2, "PA-2", HashSet::new());
        edges.seat(3, "PA-1", HashSet::new());
        edges.seat(9, "PA-9", HashSet::new());
        assert_eq!(
            seated(&edges),
            [("R", "PA-1", 1), ("R", "PA-2", 2), ("S", "PA-1", 3)]
        );
        // A participant that left (told to any link of the room) is unseated; its link stays.
        edges.unseat("R", "PA-2");
        assert_eq!(seated(&edges), [("R", "PA-1", 1), ("S", "PA-1", 3)]);
        assert!(edges.links[&2].address.is_none());
        // A seat resumed on a new link of this node is that link's; the old one going
        // leaves it.
        let _four = link(&mut edges, 4, "a", "R");
        edges.seat(4, "PA-1", HashSet::new());
        assert!(edges.remove(1).is_some());
        assert_eq!(seated(&edges), [("R", "PA-1", 4), ("S", "PA-1", 3)]);
        // Links dropped with their owner take their seats along.
        edges.retain(|edge| edge.owner != "a");
        assert_eq!(seated(&edges), [("S", "PA-1", 3)]);
        // A link whose queue is full is dropped as too slow, seat and all.
        edges.push(3, FromOwner::Text("one".into()));
        edges.push(3, FromOwner::Text("two".into()));
        assert!(edges.links.is_empty() && edges.seats.is_empty());
    }

    #[test]
    fn a_signal_stays_on_the_edge_only_to_a_seated_client_that_knows_the_sender() {
        let mut edges = Edges::default();
        let _x = link(&mut edges, 1, "a", "R");
        let _y = link(&mut edges, 2, "a", "R");
        let _z = link(&mut edges, 3, "a", "S");
        // Not seated yet: nothing here.
        assert_eq!(edges.route(1, "PA-2"), None);
        edges.seat(1, "PA-1", HashSet::new());
        edges.seat(2, "PA-2", HashSet::new());
        edges.seat(3, "PA-3", HashSet::new());
        // Y has not been told that X joined: to the owner, which tells it first.
        assert_eq!(edges.route(1, "PA-2"), None);
        edges.links.get_mut(&2).unwrap().known.insert("PA-1".into());
        assert_eq!(edges.route(1, "PA-2"), Some(("PA-1".into(), 2)));
        // Not to oneself, nor to a seat of another room, nor to one not on this node.
        edges.links.get_mut(&1).unwrap().known.insert("PA-1".into());
        assert_eq!(edges.route(1, "PA-1"), None);
        edges.links.get_mut(&3).unwrap().known.insert("PA-1".into());
        assert_eq!(edges.route(1, "PA-3"), None);
        assert_eq!(edges.route(1, "PA-9"), None);
        // Y gone: to the owner again.
        edges.unseat("R", "PA-2");
        assert_eq!(edges.route(1, "PA-2"), None);
    }

    #[test]
    fn a_signal_stays_on_the_edge_only_between_links_to_the_same_owner() {
        let mut edges = Edges::default();
        let _x = link(&mut edges, 1, "a", "R");
        let _y = link(&mut edges, 2, "b", "R");
        edges.seat(1, "PA-1", HashSet::new());
        edges.seat(2, "PA-2", HashSet::new());
        edges.links.get_mut(&2).unwrap().known.insert("PA-1".into());
        // Y's link still goes to the room's old owner (a hand-over under way).
        assert_eq!(edges.route(1, "PA-2"), None);
        edges.links.get_mut(&2).unwrap().owner = "a".into();
        assert_eq!(edges.route(1, "PA-2"), Some(("PA-1".into(), 2)));
        // A participant that leaves is unseated at once.
        edges.leave(1);
        assert_eq!(edges.route(1, "PA-2"), None);
    }

    #[test]
    fn what_went_through_the_owner_keeps_going_there_within_bounds() {
        let frame = |text: &str| protocol::parse(text).unwrap();
        let mut via = ViaOwner::default();
        via.note_frame(&frame(r#"{"type":"signal","to":"PA-1","data":1}"#));
        via.note_frame(&frame(
            r#"{"type":"message","to":["PA-2","PA-3"],"data":1}"#,
        ));
        via.note_frame(&frame(
            r#"{"type":"mediaState","audio":true,"video":false}"#,
        ));
        assert!(via.has("PA-1") && via.has("PA-2") && via.has("PA-3"));
        assert!(!via.has("PA-4") && !via.all);
        // A `to` longer than any address is never a seat: not kept.
        via.note(&"x".repeat(ADDRESS_MAX + 1));
        assert_eq!(via.peers.len(), 3);
        // Past the bound, everything goes to the owner, and the set is let go.
        for i in 3..VIA_OWNER_MAX {
            via.note(&format!("PB-{i}"));
        }
        assert!(!via.all && via.peers.len() == VIA_OWNER_MAX);
        via.note("PB-one-more");
        assert!(via.all && via.peers.is_empty() && via.has("PA-anyone"));
        // So does everything after a `message` to everyone.
        let mut via = ViaOwner::default();
        via.note_frame(&frame(r#"{"type":"message","data":"hi"}"#));
        assert!(via.has("PA-1"));
    }

    #[test]
    fn the_messages_the_edge_reads_start_as_it_looks_for_them() {
        let participant = crate::model::Participant {
            address: "PA-4".into(),
            identity: None,
            name: Some("n".into()),
            participant_info: None,
            audio: true,
            video: false,
            joined_at: 1,
            permissions: None,
        };
        let joined = ServerMessage::Joined {
            address: "PA-5",
            identity: None,
            name: None,
            permissions: None,
            room: protocol::RoomInfo {
                id: "R",
                name: None,
                conference_type: crate::model::ConferenceType::Mesh,
                max_participants: 7,
            },
            participants: vec![&participant],
            ice_servers: &[],
            resume_token: "t",
        }
        .text();
        assert!(joined.starts_with(r#"{"type":"joined""#), "{joined}");
        let said: Said = serde_json::from_str(&joined).unwrap();
        assert_eq!(said.address.as_deref(), Some("PA-5"));
        assert_eq!(said.participants[0].address, "PA-4");
        let arrived = ServerMessage::ParticipantJoined {
            participant: &participant,
        }
        .text();
        assert!(
            arrived.starts_with(r#"{"type":"participantJoined""#),
            "{arrived}"
        );
        let said: Said = serde_json::from_str(&arrived).unwrap();
        assert_eq!(said.participant.unwrap().address, "PA-4");
        let left = ServerMessage::ParticipantLeft {
            address: "PA-4",
            reason: "left",
        }
        .text();
        assert!(left.starts_with(r#"{"type":"participantLeft""#), "{left}");
        let said: Said = serde_json::from_str(&left).unwrap();
        assert_eq!(said.address.as_deref(), Some("PA-4"));
    }

    #[test]
    fn the_edge_reads_the_addresses_the_owner_names() {
        let said = |text: &str| serde_json::from_str::<Said>(text).unwrap();
        let left = said(r#"{"type":"participantLeft","address":"PA-3","reason":"left"}"#);
        assert_eq!(left.address.as_deref(), Some("PA-3"));
        let joined = said(
            r#"{"type":"participantJoined","participant":{"address":"PA-4","name":"n","audio":true}}"#,
        );
        assert_eq!(joined.participant.unwrap().address, "PA-4");
        let mine = said(
            r#"{"type":"joined","address":"PA-5","room":{"id":"R"},"participants":[{"address":"PA-1"},{"address":"PA-4"}],"resumeToken":"t"}"#,
        );
        assert_eq!(mine.address.as_deref(), Some("PA-5"));
        let known: Vec<_> = mine.participants.into_iter().map(|p| p.address).collect();
        assert_eq!(known, ["PA-1", "PA-4"]);
    }

    #[test]
    fn envelopes_read_back_as_written() {
        let envelope = Envelope {
            node: "a".into(),
            link: 7,
            body: Body::Frame {
                text: r#"{"type":"ping"}"#.into(),
            },
        };
        let bytes = serde_json::to_vec(&envelope).unwrap();
        assert_eq!(
            std::str::from_utf8(&bytes).unwrap(),
            r#"{"node":"a","link":7,"t":"frame","text":"{\"type\":\"ping\"}"}"#
        );
        let back: Envelope = serde_json::from_slice(&bytes).unwrap();
        assert!(matches!(back.body, Body::Frame { text } if text == r#"{"type":"ping"}"#));
        let gone: Envelope =
            serde_json::from_slice(br#"{"node":"b","link":1,"t":"gone"}"#).unwrap();
        assert!(matches!(gone.body, Body::Gone));
    }
}
