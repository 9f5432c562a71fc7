//! One task per socket: a single `select!` over the client's frames, the participant's
//! bounded outbound queue, the heartbeat, the join deadline and server shutdown.

use super::SignalingConfig;
use super::bridge::{Bridge, BridgeOut};
use super::protocol::{self, ClientMessage, ServerMessage, close};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::model::{JoinRefused, Owner, Participant};
use crate::room::{JoinRequest, Outbound, RoomHandle, Rooms};
use crate::token::Permissions;
use crate::wsguard::{PendingSlot, is_too_big};
use actix_ws::{
    AggregatedMessage, AggregatedMessageStream, CloseCode, CloseReason, ProtocolError, Session,
};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use tokio::sync::{mpsc, watch};

/// Tells sockets apart, so that a replaced socket cannot act for its participant.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// A participant's place in a room, once joined.
struct Membership {
    room: RoomHandle,
    address: String,
    outbound: mpsc::Receiver<Outbound>,
    /// About how long the `participantUpdated` a `mediaState` of this participant makes is.
    update_bytes: usize,
    /// What its token lets it do.
    may: Permissions,
}

/// Where a session's frames go: a WebSocket of this node, or (on a room's owner) a socket
/// of another node bridged over the bus.
pub(super) enum Wire {
    Ws(Session),
    Bridged(BridgeOut),
}

impl Wire {
    async fn text(&mut self, text: &str) -> Result<(), ()> {
        match self {
            Wire::Ws(ws) => ws.text(text).await.map_err(drop),
            Wire::Bridged(out) => out.text(text).await,
        }
    }

    async fn ping(&mut self, bytes: &[u8]) -> Result<(), ()> {
        match self {
            Wire::Ws(ws) => ws.ping(bytes).await.map_err(drop),
            Wire::Bridged(_) => Ok(()),
        }
    }

    async fn pong(&mut self, bytes: &[u8]) {
        if let Wire::Ws(ws) = self {
            let _ = ws.pong(bytes).await;
        }
    }

    async fn close(self, code: u16, reason: String) {
        match self {
            Wire::Ws(ws) => {
                let _ = ws
                    .close(Some(CloseReason {
                        code: CloseCode::Other(code),
                        description: Some(reason),
                    }))
                    .await;
            }
            Wire::Bridged(out) => out.close(code, reason).await,
        }
    }
}

/// Where a session's frames come from: a WebSocket, or the bus (a bridged socket's text
/// frames; the end of the channel is the end of the socket).
pub(super) enum Frames {
    Ws(AggregatedMessageStream),
    Bridged(mpsc::Receiver<String>),
}

impl Frames {
    async fn recv(&mut self) -> Option<Result<AggregatedMessage, ProtocolError>> {
        match self {
            Frames::Ws(frames) => frames.recv().await,
            Frames::Bridged(rx) => rx
                .recv()
                .await
                .map(|text| Ok(AggregatedMessage::Text(text.into()))),
        }
    }
}

struct Socket {
    ws: Wire,
    id: u64,
    rooms: Rooms,
    config: Arc<SignalingConfig>,
    member: Option<Membership>,
    limiter: RateLimiter,
    /// The socket's place among those not joined yet; given up at join.
    pending: Option<PendingSlot>,
    /// Bytes of relayed fan-out (size times recipients) this socket may still cause.
    fanout: ByteBudget,
    /// With `cluster`: the bridge to rooms owned by other nodes (`None` for a session that
    /// is itself bridged: a socket is bridged once, by the node it reached).
    bridge: Option<Arc<Bridge>>,
}

/// How the socket ends.
enum End {
    /// The client went away (closed, or the connection broke): a resume may follow.
    Dropped,
    /// Close with this code; the participant (if any) is already taken care of.
    Close(u16, String),
    /// Close with this code, and tell the room the participant's socket is gone.
    CloseDropped(u16, String),
    /// The room (`String`) is owned by another node: bridge the socket there, starting
    /// with this `join` frame; the token grants the participant `Permissions`.
    Bridge(Owner, String, String, Permissions),
}

/// A socket of this node whose bridge lost the room's owner, handed back to be served
/// again (its seat resumed wherever the room lives now): the client's frames that
/// `first` holds (a `join` with the seat's resume token, then what the client sent while
/// the room had no owner) come before the socket's next ones.
pub(super) struct Reattach {
    pub ws: Session,
    pub frames: AggregatedMessageStream,
    pub first: Vec<String>,
}

pub async fn run(
    ws: Session,
    frames: AggregatedMessageStream,
    rooms: Rooms,
    config: Arc<SignalingConfig>,
    shutdown: watch::Receiver<bool>,
    pending: PendingSlot,
    bridge: Option<Arc<Bridge>>,
) {
    let mut again = serve(
        Wire::Ws(ws),
        Frames::Ws(frames),
        Vec::new(),
        rooms.clone(),
        config.clone(),
        shutdown.clone(),
        Some(pending),
        bridge.clone(),
    )
    .await;
    while let Some(Reattach { ws, frames, first }) = again {
        again = serve(
            Wire::Ws(ws),
            Frames::Ws(frames),
            first,
            rooms.clone(),
            config.clone(),
            shutdown.clone(),
            None,
            bridge.clone(),
        )
        .await;
    }
}

/// A new session id (unique on this node).
pub(super) fn next_session() -> u64 {
    SESSIONS.fetch_add(1, Ordering::Relaxed)
}

/// The session of a socket of this node (`Wire::Ws`), or, on a room's owner, of a socket
/// bridged from another node (`Wire::Bridged`: the bridging node keeps the socket's
/// heartbeat, frame size limit and message rate; this side runs everything else).
/// `first`: frames of the client to handle before the socket's next ones (a re-attached
/// socket's). Answers a socket of this node to serve again (see [`Reattach`]).
#[allow(clippy::too_many_arguments)]
pub(super) async fn serve(
    ws: Wire,
    mut frames: Frames,
    first: Vec<String>,
    rooms: Rooms,
    config: Arc<SignalingConfig>,
    mut shutdown: watch::Receiver<bool>,
    pending: Option<PendingSlot>,
    bridge: Option<Arc<Bridge>>,
) -> Option<Reattach> {
    let bridged = matches!(ws, Wire::Bridged(_));
    let _open = METRICS.socket_opened(if bridged { "bridged" } else { "signaling" });
    let limiter = if bridged {
        // The bridging node limits the client's rate; frames may arrive here in bursts.
        RateLimiter::new(u32::MAX, u32::MAX)
    } else {
        RateLimiter::new(config.rate_per_second, config.rate_burst)
    };
    let mut socket = Socket {
        ws,
        id: next_session(),
        limiter,
        fanout: ByteBudget::new(config.fanout_bytes_per_second, config.fanout_burst_bytes),
        rooms,
        config: config.clone(),
        member: None,
        pending,
        bridge,
    };
    let join_deadline = tokio::time::sleep(config.join_timeout);
    tokio::pin!(join_deadline);
    let mut heartbeat = tokio::time::interval(config.ping_interval);
    heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_heard = Instant::now();

    // The frames a re-attached socket's client sent before (its resume first); what is
    // left of them when the socket is bridged goes to the owner after its `join`.
    let mut first = first.into_iter();
    let mut early = None;
    for text in first.by_ref() {
        if let Some(end) = socket.handle(&text).await {
            early = Some(end);
            break;
        }
    }
    let end = loop {
        if let Some(end) = early.take() {
            break end;
        }
        let joined = socket.member.is_some();
        tokio::select! {
            _ = shutdown.changed() => break End::CloseDropped(close::GOING_AWAY, "server shutting down".into()),
            out = next_outbound(&mut socket.member) => match out {
                Some(Outbound::Text(text)) => {
                    if socket.ws.text(&text).await.is_err() {
                        break End::Dropped;
                    }
                }
                Some(Outbound::Notice(notice)) => {
                    let text = notice.text(|message| protocol::render(message, &config.ice));
                    if socket.ws.text(&text).await.is_err() {
                        break End::Dropped;
                    }
                }
                Some(Outbound::Close(closing)) => {
                    let (code, reason) = protocol::closing(closing);
                    break End::Close(code, reason.into());
                }
                None => break End::Close(close::TOO_SLOW, "too slow: outbound queue full".into()),
            },
            frame = frames.recv() => {
                last_heard = Instant::now();
                match frame {
                    None => break End::Dropped,
                    // Answer the closing handshake (echoing the code), then treat it as a
                    // drop: the seat waits for a resume, as for a broken connection.
                    Some(Ok(AggregatedMessage::Close(reason))) => {
                        let code = reason.map_or(close::NORMAL, |r| u16::from(r.code));
                        break End::CloseDropped(code, String::new());
                    }
                    Some(Err(e)) if is_too_big(&e) => {
                        let limit = config.max_frame_bytes;
                        socket.send_error(&ApiError::payload_too_large(limit)).await;
                        break End::CloseDropped(close::TOO_BIG, format!("frame larger than {limit} bytes"));
                    }
                    Some(Err(_)) => break End::CloseDropped(close::PROTOCOL, "unreadable frame".into()),
                    Some(Ok(AggregatedMessage::Ping(bytes))) => {
                        socket.ws.pong(&bytes).await;
                    }
                    Some(Ok(AggregatedMessage::Pong(_))) => {}
                    Some(Ok(AggregatedMessage::Binary(_))) => {
                        socket.send_error(&ApiError::invalid_message()).await;
                    }
                    Some(Ok(AggregatedMessage::Text(text))) => {
                        if !socket.limiter.allow(Instant::now()) {
                            socket.send_error(&ApiError::too_many_messages(config.rate_per_second)).await;
                            break End::CloseDropped(close::POLICY, "too many messages".into());
                        }
                        if let Some(end) = socket.handle(&text).await {
                            break end;
                        }
                    }
                }
            }
            _ = &mut join_deadline, if !joined => {
                break End::Close(close::JOIN_TIMEOUT, "no join in time".into());
            }
            _ = heartbeat.tick(), if !bridged => {
                if last_heard.elapsed() > config.client_timeout {
                    break End::CloseDropped(close::HEARTBEAT_TIMEOUT, "client timed out".into());
                }
                if socket.ws.ping(b"").await.is_err() {
                    break End::Dropped;
                }
            }
        }
    };

    // Give up the place among unjoined sockets before the close frame goes out, so that a
    // client that saw the close can count on it.
    socket.pending = None;
    let (code, reason, dropped) = match end {
        End::Dropped => (None, String::new(), true),
        End::Close(code, reason) => (Some(code), reason, false),
        End::CloseDropped(code, reason) => (Some(code), reason, true),
        End::Bridge(owner, room, join, may) => {
            let (Wire::Ws(ws), Frames::Ws(frames), Some(bridge)) =
                (socket.ws, frames, socket.bridge)
            else {
                unreachable!("only a socket of this node is bridged")
            };
            drop(_open);
            let mut start = vec![join];
            start.extend(first);
            return bridge
                .edge(ws, frames, owner, room, may, start, config, shutdown)
                .await;
        }
    };
    if dropped && let Some(member) = &socket.member {
        member.room.disconnected(&member.address, socket.id);
    }
    if let Some(code) = code {
        socket.ws.close(code, reason).await;
    }
    None
}

/// The next message the room queued for this participant; never, before `join`.
async fn next_outbound(member: &mut Option<Membership>) -> Option<Outbound> {
    match member {
        Some(m) => m.outbound.recv().await,
        None => std::future::pending().await,
    }
}

impl Socket {
    async fn send_error(&mut self, error: &ApiError) {
        let _ = self.ws.text(&ServerMessage::error(error).text()).await;
    }

    /// Handles one text frame; answers how the socket ends, if it does.
    async fn handle(&mut self, text: &str) -> Option<End> {
        let message = match protocol::parse(text) {
            Ok(message) => message,
            Err(e) => {
                self.send_error(&e).await;
                return None;
            }
        };
        if let ClientMessage::Ping = message {
            let _ = self.ws.text(&ServerMessage::Pong.text()).await;
            return None;
        }
        if let ClientMessage::Join(request) = message {
            if self.member.is_some() {
                self.send_error(&ApiError::already_joined()).await;
                return None;
            }
            return self.join(request, text).await;
        }
        let Some(member) = &self.member else {
            self.send_error(&ApiError::not_joined()).await;
            return None;
        };
        let (room, from, session) = (&member.room, member.address.as_str(), self.id);
        let may = member.may;
        // What a frame fans out (its relayed size times the sockets it reaches) is charged to
        // the sender's budget before anything is relayed: over it, the frame is refused and
        // nobody else's queue sees it.
        let limits = self.rooms.limits();
        let fanout_refused = ApiError::too_much_fanout(self.config.fanout_bytes_per_second);
        let errors = match message {
            ClientMessage::Signal { to, data } if to == "sfu" => {
                // To the room's media plane: `data` as it came (the room answers
                // `SFU_UNAVAILABLE` where it has none), charged as one recipient.
                if !self
                    .fanout
                    .allow(fanout_cost(1, data.get().len()), Instant::now())
                {
                    vec![fanout_refused]
                } else {
                    let data = serde_json::from_str(data.get()).unwrap_or_default();
                    room.signal_to_sfu(from, session, data);
                    Vec::new()
                }
            }
            // In a MESH room the server sees no media: a participant that may not publish
            // cannot have an SDP that sends media relayed to the others.
            ClientMessage::Signal { data, .. }
                if !may.can_publish && protocol::sends_media(&data) =>
            {
                vec![ApiError::publish_forbidden()]
            }
            ClientMessage::Signal { to, data } => {
                let text = protocol::relayed("signal", from, &data);
                let reach = if to == from {
                    0
                } else {
                    room.reach(from, Some(std::slice::from_ref(&to)))
                };
                if !self
                    .fanout
                    .allow(fanout_cost(reach, text.len()), Instant::now())
                {
                    vec![fanout_refused]
                } else {
                    room.signal(from, session, &to, text).into_iter().collect()
                }
            }
            ClientMessage::Message { .. } if !may.can_send_messages => {
                vec![ApiError::message_forbidden()]
            }
            ClientMessage::Message { to, data } => {
                if to
                    .as_ref()
                    .is_some_and(|to| to.len() > room.max_participants(&limits) as usize)
                {
                    vec![ApiError::invalid_value("to")]
                } else {
                    let to = to.map(distinct);
                    let text = protocol::relayed("message", from, &data);
                    let reach = room.reach(from, to.as_deref());
                    if !self
                        .fanout
                        .allow(fanout_cost(reach, text.len()), Instant::now())
                    {
                        vec![fanout_refused]
                    } else {
                        room.message(from, session, to.as_deref(), text)
                    }
                }
            }
            ClientMessage::MediaState { audio, video } => {
                let cost = fanout_cost(room.reach(from, None), member.update_bytes);
                if !self.fanout.allow(cost, Instant::now()) {
                    vec![fanout_refused]
                } else {
                    room.media_state(from, session, audio, video);
                    Vec::new()
                }
            }
            ClientMessage::Leave => {
                room.leave(from, session);
                Vec::new()
            }
            ClientMessage::Join(_) | ClientMessage::Ping => unreachable!("handled above"),
        };
        for error in errors {
            self.send_error(&error).await;
        }
        None
    }

    async fn join(&mut self, mut request: JoinRequest, text: &str) -> Option<End> {
        let services = self.rooms.services().clone();
        let claims = match services.tokens.verify(&request.token) {
            Ok(claims) => claims,
            Err(_) => {
                return Some(self.refuse("", JoinRefused::Token).await);
            }
        };
        // Who joins, and as what, comes from the verified token only.
        let may = claims
            .grant
            .as_ref()
            .map_or_else(Permissions::default, |g| g.permissions);
        request.grant = claims.grant.map(Box::new);
        request.token_generation = claims.generation;
        let (tx, rx) = mpsc::channel(self.config.queue_capacity.max(1));
        let update_bytes = update_size(&request);
        // Activates the room when it has no actor (and retries once past a passivation).
        match self
            .rooms
            .join(&claims.sub, claims.nonce, request, self.id, tx)
            .await
        {
            Ok((room, address)) => {
                self.member = Some(Membership {
                    room,
                    address,
                    outbound: rx,
                    update_bytes,
                    may,
                });
                self.pending = None;
                None
            }
            // Owned by a live node: this node bridges the socket there (the owner checks
            // the token's nonce and decides the join).
            Err(JoinRefused::Elsewhere(owner))
                if self.bridge.is_some() && owner.http_addr.is_some() =>
            {
                self.pending = None;
                Some(End::Bridge(owner, claims.sub, text.to_string(), may))
            }
            Err(refused) => Some(self.refuse(&claims.sub, refused).await),
        }
    }

    /// Refuses a `join` of room `room_id` (empty when the token did not say): counts it by
    /// its reason, sends the error and closes with the refusal's code.
    async fn refuse(&mut self, room_id: &str, refused: JoinRefused) -> End {
        let (code, reason) = match refused {
            JoinRefused::Token => (close::INVALID_TOKEN, "token"),
            JoinRefused::Rotated => (close::INVALID_TOKEN, "rotated"),
            JoinRefused::Banned { .. } => (close::BANNED, "banned"),
            JoinRefused::Gone => (close::ROOM_NOT_FOUND, "gone"),
            JoinRefused::Full { .. } => (close::ROOM_FULL, "full"),
            // The store failed while activating the room, or its owner cannot be reached:
            // "going away", so the client tries again later.
            JoinRefused::Unavailable | JoinRefused::Elsewhere(_) => {
                (close::GOING_AWAY, "unavailable")
            }
        };
        METRICS.join_refused(reason);
        let error = ApiError::from_join_refused(room_id, &refused);
        self.send_error(&error).await;
        End::Close(
            code,
            error.code.id().unwrap_or("refused").to_ascii_lowercase(),
        )
    }
}

/// `to` without repeats, in its order: a participant listed twice gets the message once.
fn distinct(to: Vec<String>) -> Vec<String> {
    let mut seen = std::collections::HashSet::with_capacity(to.len());
    to.into_iter()
        .filter(|address| seen.insert(address.clone()))
        .collect()
}

/// What relaying `bytes` to `recipients` sockets costs the sender.
pub(super) fn fanout_cost(recipients: usize, bytes: usize) -> u64 {
    (recipients as u64).saturating_mul(bytes as u64)
}

/// About how long a `participantUpdated` of the participant this `join` makes is: the
/// measure of what one of its `mediaState`s fans out (a generous stand-in for the address,
/// which the room gives only after the join).
fn update_size(request: &JoinRequest) -> usize {
    let grant = request.grant.as_ref();
    let participant = Participant {
        address: "PA-".repeat(24),
        identity: grant.map(|g| g.identity.clone()),
        name: grant
            .and_then(|g| g.name.clone())
            .or_else(|| request.name.clone()),
        participant_info: grant
            .and_then(|g| g.participant_info.clone())
            .or_else(|| request.participant_info.clone()),
        audio: false,
        video: false,
        joined_at: u64::MAX,
        permissions: grant.map(|g| g.permissions),
    };
    ServerMessage::ParticipantUpdated {
        participant: &participant,
    }
    .text()
    .len()
}

/// A token bucket in bytes: `burst` at once, refilled at `per_second`. A frame passes when
/// the bucket holds its cost, or, for a frame that costs more than the whole burst (one
/// maximum-size frame to a full large room), when the bucket is full; either way its whole
/// cost is taken, so the bucket may go below zero and the sender then waits it out.
pub(super) struct ByteBudget {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl ByteBudget {
    pub(super) fn new(per_second: u64, burst: u64) -> Self {
        let burst = burst.max(1) as f64;
        Self {
            per_second: per_second as f64,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    pub(super) fn allow(&mut self, cost: u64, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        let cost = cost as f64;
        if self.tokens >= cost.min(self.burst) {
            self.tokens -= cost;
            true
        } else {
            false
        }
    }
}

/// A token bucket: `burst` messages at once, refilled at `per_second`.
pub(super) struct RateLimiter {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    pub(super) fn new(per_second: u32, burst: u32) -> Self {
        let burst = f64::from(burst.max(1));
        Self {
            per_second: f64::from(per_second),
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    pub(super) fn allow(&mut self, now: Instant) -> bool {
        let elapsed = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn repeated_recipients_count_once_in_their_order() {
        let to = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            distinct(to(&["b", "a", "b", "b", "c", "a"])),
            to(&["b", "a", "c"])
        );
        assert_eq!(distinct(vec!["v".to_string(); 300]), to(&["v"]));
        assert_eq!(distinct(Vec::new()), Vec::<String>::new());
    }

    #[test]
    fn fanout_costs_size_times_recipients() {
        assert_eq!(fanout_cost(99, 1000), 99_000);
        assert_eq!(fanout_cost(0, 65536), 0);
        assert_eq!(fanout_cost(usize::MAX, usize::MAX), u64::MAX);
    }

    #[test]
    fn byte_budget_takes_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut budget = ByteBudget::new(1000, 3000);
        assert!(budget.allow(2000, start));
        assert!(budget.allow(1000, start));
        assert!(!budget.allow(1, start), "the burst is spent");
        assert!(
            budget.allow(0, start),
            "a frame that reaches nobody costs nothing"
        );
        assert!(!budget.allow(600, start + Duration::from_millis(500)));
        assert!(budget.allow(500, start + Duration::from_millis(500)));
    }

    #[test]
    fn byte_budget_lets_one_frame_over_the_burst_through_a_full_bucket_then_waits() {
        let start = Instant::now();
        let mut budget = ByteBudget::new(1000, 3000);
        assert!(
            budget.allow(5000, start),
            "a full bucket pays any single frame"
        );
        // 2000 bytes in debt: 2 s to get back to zero, 2.1 s to afford 100 bytes.
        assert!(!budget.allow(100, start + Duration::from_secs(2)));
        assert!(budget.allow(100, start + Duration::from_millis(2100)));
        // Not full: a frame over the burst waits for a full bucket.
        assert!(!budget.allow(5000, start + Duration::from_millis(2200)));
        assert!(budget.allow(5000, start + Duration::from_millis(5200)));
    }

    #[test]
    fn rate_limiter_allows_a_burst_then_the_rate() {
        let start = Instant::now();
        let mut limiter = RateLimiter::new(10, 3);
        assert!((0..3).all(|_| limiter.allow(start)));
        assert!(!limiter.allow(start));
        assert!(limiter.allow(start + Duration::from_millis(100)));
        assert!(!limiter.allow(start + Duration::from_millis(100)));
    }
}
