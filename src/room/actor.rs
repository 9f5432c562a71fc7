//! One actor per live room: it alone changes the room's state (its record and its
//! participants), and it stops when the room is deleted or its `roomTTLSeconds` run out.
//!
//! Participants are held with the sender of their socket's bounded queue. The actor never
//! waits on a socket: it `try_send`s, and a participant whose queue is full or closed loses
//! its socket (and gets the resume grace period, like any dropped socket).
//!
//! `signal` and `message` do not pass through the actor: it publishes its seats (address →
//! the socket's session and queue sender) in a [`Peers`] table that only it writes, and
//! sessions relay straight into each other's queues through it. A relay that finds a full
//! or closed queue tells the actor, which drops that participant as above.

use super::registry::{Registry, RoomGone};
use super::{ConferenceType, Limits, RoomRecord, RoomServices, now_ms};
use crate::admin::events::Event;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::signaling::protocol::{Outbound, Participant, RoomInfo, ServerMessage, close};
use crate::store::StoreError;
use actix::prelude::*;
use actix_web::web::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;
use tokio::sync::mpsc;

/// How long participant-count changes are gathered before one store write.
const PERSIST_DELAY: Duration = Duration::from_millis(100);

/// The room's record as the REST API shows it, published by the room's actor on every
/// change the API can see, and `None` from the moment the room is deleted or expires.
/// Fetches and list pages read it without a trip to the actor.
pub(super) type Snapshot = Arc<RwLock<Option<Arc<Published>>>>;

/// One published version of a room's record, with its JSON made on the first fetch.
pub struct Published {
    pub record: Arc<RoomRecord>,
    json: OnceLock<Bytes>,
}

impl Published {
    fn new(record: Arc<RoomRecord>) -> Arc<Self> {
        Arc::new(Self {
            record,
            json: OnceLock::new(),
        })
    }

    /// The room object of the published API, serialized once per version.
    pub fn json(&self, limits: &Limits) -> Bytes {
        self.json
            .get_or_init(|| {
                serde_json::to_vec(&self.record.view(limits))
                    .expect("a room always serializes")
                    .into()
            })
            .clone()
    }
}

pub(super) fn snapshot_of(record: &Arc<RoomRecord>) -> Snapshot {
    Arc::new(RwLock::new(Some(Published::new(record.clone()))))
}

/// Reads a snapshot; a poisoned lock still holds a whole value (writes are one store).
pub(super) fn read_snapshot(snapshot: &Snapshot) -> Option<Arc<Published>> {
    snapshot.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// The room's seats as sessions see them: every seated participant's address, with its
/// socket's link while it has one (`None` while it waits for a resume). Written only by the
/// room's actor, always before it tells anyone of the change.
pub(super) type Peers = Arc<RwLock<HashMap<String, Option<Link>>>>;

/// A participant's socket: which session, and the sender of its outbound queue.
#[derive(Clone)]
pub(super) struct Link {
    session: u64,
    tx: mpsc::Sender<Outbound>,
}

struct Member {
    participant: Participant,
    resume_token: String,
    /// `None` while the socket is gone and the participant waits for a resume.
    link: Option<Link>,
    grace: Option<SpawnHandle>,
    expiry: SpawnHandle,
}

pub(super) struct RoomActor {
    /// Shared with the snapshot and the admin event hub until it changes
    /// (`Arc::make_mut`), so a room's record is held once. Its `participant_count` is the
    /// one it was created or restored with: the count is `members.len()`, and only the
    /// store's copy carries it.
    record: Arc<RoomRecord>,
    services: Arc<RoomServices>,
    registry: Addr<Registry>,
    snapshot: Snapshot,
    peers: Peers,
    /// In join order.
    members: Vec<Member>,
    persist_scheduled: bool,
}

impl RoomActor {
    pub(super) fn new(
        record: Arc<RoomRecord>,
        services: Arc<RoomServices>,
        registry: Addr<Registry>,
        snapshot: Snapshot,
        peers: Peers,
    ) -> Self {
        Self {
            record,
            services,
            registry,
            snapshot,
            peers,
            members: Vec::new(),
            persist_scheduled: false,
        }
    }

    /// Publishes the record for readers outside the actor.
    fn publish(&self) {
        self.set_snapshot(Some(Published::new(self.record.clone())));
    }

    /// Publishes that the room is gone: fetches answer 404 from now on.
    fn publish_gone(&self) {
        self.set_snapshot(None);
    }

    fn set_snapshot(&self, value: Option<Arc<Published>>) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = value;
    }

    fn peers(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Option<Link>>> {
        // Each write is one insert, remove or clear: a poisoned lock is still whole.
        self.peers.write().unwrap_or_else(|e| e.into_inner())
    }

    fn schedule_expiry(&self, ctx: &mut Context<Self>) {
        let left = self.record.expires_at().saturating_sub(now_ms());
        ctx.run_later(Duration::from_millis(left), |act, ctx| act.expire(ctx));
    }

    fn expire(&mut self, ctx: &mut Context<Self>) {
        if !self.record.is_expired(now_ms()) {
            // Timers far in the future may fire early; look again later.
            return self.schedule_expiry(ctx);
        }
        tracing::info!(room = %self.record.id, "room expired");
        self.publish_gone();
        self.close_all("expired", close::ROOM_EXPIRED);
        self.services
            .events
            .publish(Event::RoomExpired(&self.record.id));
        // Best effort: Redis expires the key by itself and the sweep cleans the index.
        let (store, record) = (self.services.store.clone(), self.record.clone());
        actix::spawn(async move {
            if let Err(e) = store.delete(&record).await {
                tracing::warn!(room = %record.id, error = %e, "could not remove an expired room");
            }
        });
        ctx.stop();
    }

    /// Writes the record to the store in the background; the room never waits for it.
    fn persist(&self, ctx: &mut Context<Self>) {
        let store = self.services.store.clone();
        let record = RoomRecord {
            participant_count: self.members.len() as u32,
            ..(*self.record).clone()
        };
        ctx.spawn(
            async move {
                if let Err(e) = store.update(&record).await {
                    tracing::warn!(room = %record.id, error = %e, "could not persist a room change");
                }
            }
            .into_actor(self),
        );
    }

    /// Persists soon, once for any number of changes in the meantime.
    fn persist_soon(&mut self, ctx: &mut Context<Self>) {
        if !self.persist_scheduled {
            self.persist_scheduled = true;
            ctx.run_later(PERSIST_DELAY, |act, ctx| {
                act.persist_scheduled = false;
                act.persist(ctx);
            });
        }
    }

    /// media: the media plane, when this room's media goes through it (SFU rooms).
    fn media(&self) -> Option<&crate::media::MediaPlane> {
        if self.record.conference_type == ConferenceType::Sfu {
            self.services.media.as_ref()
        } else {
            None
        }
    }

    fn max_participants(&self) -> u32 {
        self.services
            .limits
            .max_participants(self.record.conference_type)
    }

    fn index_of(&self, address: &str) -> Option<usize> {
        self.members
            .iter()
            .position(|m| m.participant.address == address)
    }

    /// The member behind a message from a session, if that session still speaks for it.
    fn sender(&self, address: &str, session: u64) -> Option<usize> {
        self.index_of(address).filter(|&i| {
            self.members[i]
                .link
                .as_ref()
                .is_some_and(|l| l.session == session)
        })
    }

    /// Queues a message for one member. A full or closed queue costs the member its socket.
    fn send(&mut self, i: usize, message: Outbound, ctx: &mut Context<Self>) {
        let Some(link) = &self.members[i].link else {
            return;
        };
        if link.tx.try_send(message).is_err() {
            let address = self.members[i].participant.address.clone();
            tracing::info!(room = %self.record.id, %address, "participant dropped: outbound queue full or closed");
            self.unlink(i, ctx);
        }
    }

    /// Queues a message for every member but `except`.
    fn broadcast(
        &mut self,
        message: &ServerMessage<'_>,
        except: Option<&str>,
        ctx: &mut Context<Self>,
    ) {
        let text = message.text();
        for i in (0..self.members.len()).rev() {
            if except != Some(self.members[i].participant.address.as_str()) {
                self.send(i, Outbound::Text(text.clone()), ctx);
            }
        }
    }

    fn send_error(&mut self, i: usize, error: &ApiError, ctx: &mut Context<Self>) {
        self.send(i, Outbound::Text(ServerMessage::error(error).text()), ctx);
    }

    /// The member's socket is gone: keep its seat for the resume grace period.
    fn unlink(&mut self, i: usize, ctx: &mut Context<Self>) {
        let member = &mut self.members[i];
        member.link = None;
        let address = member.participant.address.clone();
        self.peers().insert(address.clone(), None);
        let grace = self.services.signaling.resume_grace;
        let handle = ctx.run_later(grace, move |act, ctx| {
            if let Some(i) = act
                .index_of(&address)
                .filter(|&i| act.members[i].link.is_none())
            {
                act.remove(i, "disconnected", ctx);
            }
        });
        if let Some(old) = self.members[i].grace.replace(handle) {
            ctx.cancel_future(old);
        }
    }

    /// Removes a member and tells the others.
    fn remove(&mut self, i: usize, reason: &str, ctx: &mut Context<Self>) {
        let member = self.members.remove(i);
        ctx.cancel_future(member.expiry);
        if let Some(grace) = member.grace {
            ctx.cancel_future(grace);
        }
        let address = member.participant.address;
        self.peers().remove(&address);
        // media: nothing is forwarded from or to a participant that is gone.
        if let Some(media) = self.media() {
            media.remove_participant(&self.record.id, &address);
        }
        tracing::info!(room = %self.record.id, %address, reason, "participant left");
        METRICS.left(reason);
        self.services
            .events
            .publish(Event::ParticipantLeft(&self.record.id, &address, reason));
        self.broadcast(
            &ServerMessage::ParticipantLeft {
                address: &address,
                reason,
            },
            None,
            ctx,
        );
        self.persist_soon(ctx);
    }

    /// Tells everyone the room is closing and closes their sockets.
    fn close_all(&mut self, reason: &str, code: u16) {
        let text = ServerMessage::RoomClosed { reason }.text();
        self.peers().clear();
        // media: the room's media ends with it.
        if let Some(media) = self.media() {
            media.remove_room(&self.record.id);
        }
        for member in self.members.drain(..) {
            METRICS.left("roomClosed");
            if let Some(link) = member.link {
                let _ = link.tx.try_send(Outbound::Text(text.clone()));
                let _ = link.tx.try_send(Outbound::Close(code, "room closed"));
            }
        }
    }

    /// Sends `joined` to member `i`.
    fn send_joined(&mut self, i: usize, ctx: &mut Context<Self>) {
        let member = &self.members[i];
        let address = &member.participant.address;
        let ice = self
            .services
            .signaling
            .ice
            .servers_for(address, now_ms() / 1000);
        let text = ServerMessage::Joined {
            address,
            room: RoomInfo {
                id: &self.record.id,
                name: self.record.name.as_deref(),
                conference_type: self.record.conference_type,
                max_participants: self.max_participants(),
            },
            participants: self
                .members
                .iter()
                .filter(|m| &m.participant.address != address)
                .map(|m| &m.participant)
                .collect(),
            ice_servers: &ice,
            resume_token: &member.resume_token,
        }
        .text();
        self.send(i, Outbound::Text(text), ctx);
    }

    /// Applies the MESH→SFU rule after a join; answers whether the room was upgraded.
    fn maybe_upgrade(&mut self, ctx: &mut Context<Self>) -> bool {
        let count = self.members.len() as u32;
        if self.record.conference_type != ConferenceType::Mesh
            || self
                .record
                .auto_upgrade_participant_count
                .is_none_or(|at| count < at)
        {
            return false;
        }
        let record = Arc::make_mut(&mut self.record);
        record.conference_type = ConferenceType::Sfu;
        record.modification_time = now_ms().max(record.modification_time);
        tracing::info!(room = %record.id, participants = count, "room upgraded to SFU");
        // media: from the upgrade on, everyone present takes part in the room's media.
        if let Some(media) = self.media() {
            for member in &self.members {
                media.add_participant(&self.record.id, &member.participant.address);
            }
        }
        self.publish();
        METRICS.upgraded();
        self.services
            .events
            .publish(Event::RoomUpgraded(&self.record));
        let message = ServerMessage::ConferenceTypeChanged {
            conference_type: ConferenceType::Sfu,
            reason: "participantCount",
            participant_count: count,
        };
        self.broadcast(&message, None, ctx);
        true
    }
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.schedule_expiry(ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.registry.do_send(RoomGone(self.record.id.clone()));
    }
}

/// The room's record, with a usable token.
#[derive(Message)]
#[rtype(result = "Arc<RoomRecord>")]
struct GetRecord;

impl Handler<GetRecord> for RoomActor {
    type Result = MessageResult<GetRecord>;

    fn handle(&mut self, _: GetRecord, ctx: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        if self.record.token_is_stale(now) {
            Arc::make_mut(&mut self.record).refresh_token(&self.services.tokens, now);
            self.publish();
            self.persist(ctx);
            self.services
                .events
                .publish(Event::RoomUpdated(&self.record));
        }
        MessageResult(self.record.clone())
    }
}

/// Removes the room from the store, then closes every socket and stops the actor.
/// Atomic: no other message of this room is handled while the store answers, so a room
/// is deleted exactly once, and a join waiting behind the delete finds the room gone.
#[derive(Message)]
#[rtype(result = "Result<Arc<RoomRecord>, StoreError>")]
struct Delete;

impl Handler<Delete> for RoomActor {
    type Result = AtomicResponse<Self, Result<Arc<RoomRecord>, StoreError>>;

    fn handle(&mut self, _: Delete, _: &mut Context<Self>) -> Self::Result {
        let (store, record) = (self.services.store.clone(), self.record.clone());
        AtomicResponse::new(Box::pin(
            async move { store.delete(&record).await.map(|()| record) }
                .into_actor(self)
                .map(|result, act, ctx| {
                    if result.is_ok() {
                        act.publish_gone();
                        act.close_all("deleted", close::ROOM_DELETED);
                        act.services
                            .events
                            .publish(Event::RoomDeleted(&act.record.id));
                        ctx.stop();
                    }
                    result
                }),
        ))
    }
}

/// Why a join was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinRefused {
    /// The token is not one of this room's.
    Token,
    /// The room is gone.
    Gone,
    /// No seat left.
    Full { max: u32 },
}

#[derive(Message)]
#[rtype(result = "Result<String, JoinRefused>")]
struct Join {
    nonce: String,
    request: crate::signaling::protocol::JoinRequest,
    link: Link,
}

impl Handler<Join> for RoomActor {
    type Result = Result<String, JoinRefused>;

    fn handle(
        &mut self,
        Join {
            nonce,
            request,
            link,
        }: Join,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        if nonce != self.record.nonce {
            return Err(JoinRefused::Token);
        }
        // A resume within the grace period: same address, and nobody sees a leave.
        if let Some(token) = &request.resume
            && let Some(i) = self.members.iter().position(|m| &m.resume_token == token)
        {
            let address = self.members[i].participant.address.clone();
            self.peers().insert(address.clone(), Some(link.clone()));
            let member = &mut self.members[i];
            if let Some(old) = member.link.replace(link) {
                let _ = old.tx.try_send(Outbound::Close(
                    close::REPLACED,
                    "resumed on another connection",
                ));
            }
            if let Some(grace) = member.grace.take() {
                ctx.cancel_future(grace);
            }
            tracing::info!(room = %self.record.id, %address, "participant resumed");
            self.send_joined(i, ctx);
            return Ok(address);
        }
        let max = self.max_participants();
        if self.members.len() as u32 >= max {
            return Err(JoinRefused::Full { max });
        }
        let address = format!("PA-{}", uuid::Uuid::new_v4());
        let endpoint_ttl = Duration::from_secs(self.record.endpoint_ttl_seconds);
        let expiring = address.clone();
        let expiry = ctx.run_later(endpoint_ttl, move |act, ctx| {
            if let Some(i) = act.index_of(&expiring) {
                let error = ApiError::endpoint_expired(act.record.endpoint_ttl_seconds);
                act.send_error(i, &error, ctx);
                if let Some(i) = act.index_of(&expiring) {
                    act.send(
                        i,
                        Outbound::Close(close::ENDPOINT_EXPIRED, "endpoint expired"),
                        ctx,
                    );
                }
                if let Some(i) = act.index_of(&expiring) {
                    act.remove(i, "expired", ctx);
                }
            }
        });
        let participant = Participant {
            address: address.clone(),
            name: request.name,
            participant_info: request.participant_info,
            audio: request.audio,
            video: request.video,
            joined_at: now_ms(),
        };
        self.peers().insert(address.clone(), Some(link.clone()));
        self.members.push(Member {
            participant,
            resume_token: uuid::Uuid::new_v4().simple().to_string(),
            link: Some(link),
            grace: None,
            expiry,
        });
        let i = self.members.len() - 1;
        // media: a new participant of an SFU room may negotiate with the media plane.
        if let Some(media) = self.media() {
            media.add_participant(&self.record.id, &address);
        }
        tracing::info!(room = %self.record.id, %address, "participant joined");
        METRICS.joined();
        self.send_joined(i, ctx);
        let participant = self.members[i].participant.clone();
        let room = &self.record.id;
        self.services
            .events
            .publish(Event::ParticipantJoined(room, &participant));
        self.broadcast(
            &ServerMessage::ParticipantJoined {
                participant: &participant,
            },
            Some(&address),
            ctx,
        );
        self.maybe_upgrade(ctx);
        self.persist_soon(ctx);
        Ok(address)
    }
}

/// What a joined participant asks of its room.
enum Action {
    MediaState {
        audio: Option<bool>,
        video: Option<bool>,
    },
    Leave,
    Disconnected,
}

#[derive(Message)]
#[rtype(result = "()")]
struct FromParticipant {
    address: String,
    session: u64,
    action: Action,
}

impl Handler<FromParticipant> for RoomActor {
    type Result = ();

    fn handle(
        &mut self,
        FromParticipant {
            address,
            session,
            action,
        }: FromParticipant,
        ctx: &mut Context<Self>,
    ) {
        // Messages of a socket that no longer speaks for the participant are dropped.
        let Some(i) = self.sender(&address, session) else {
            return;
        };
        match action {
            Action::MediaState { audio, video } => {
                let participant = &mut self.members[i].participant;
                participant.audio = audio.unwrap_or(participant.audio);
                participant.video = video.unwrap_or(participant.video);
                let participant = participant.clone();
                let room = &self.record.id;
                self.services
                    .events
                    .publish(Event::ParticipantUpdated(room, &participant));
                self.broadcast(
                    &ServerMessage::ParticipantUpdated {
                        participant: &participant,
                    },
                    Some(&address),
                    ctx,
                );
            }
            Action::Leave => {
                self.send(i, Outbound::Close(close::NORMAL, "left"), ctx);
                if let Some(i) = self.index_of(&address) {
                    self.remove(i, "left", ctx);
                }
            }
            Action::Disconnected => self.unlink(i, ctx),
        }
    }
}

/// A participant as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ParticipantState {
    #[serde(flatten)]
    pub participant: Participant,
    /// `false` while the participant's socket is gone and its seat waits for a resume.
    pub connected: bool,
}

#[derive(Message)]
#[rtype(result = "Vec<ParticipantState>")]
struct ListParticipants;

impl Handler<ListParticipants> for RoomActor {
    type Result = MessageResult<ListParticipants>;

    fn handle(&mut self, _: ListParticipants, _: &mut Context<Self>) -> Self::Result {
        MessageResult(
            self.members
                .iter()
                .map(|m| ParticipantState {
                    participant: m.participant.clone(),
                    connected: m.link.is_some(),
                })
                .collect(),
        )
    }
}

/// Removes a participant on an admin's request: it gets `roomClosed {reason: "kicked"}`
/// and close 4013, its resume token dies with its seat, the others get `participantLeft`.
#[derive(Message)]
#[rtype(result = "Option<ParticipantState>")]
struct Kick(String);

impl Handler<Kick> for RoomActor {
    type Result = Option<ParticipantState>;

    fn handle(&mut self, Kick(address): Kick, ctx: &mut Context<Self>) -> Self::Result {
        let i = self.index_of(&address)?;
        let state = ParticipantState {
            participant: self.members[i].participant.clone(),
            connected: self.members[i].link.is_some(),
        };
        if let Some(link) = self.members[i].link.take() {
            let _ = link.tx.try_send(Outbound::Text(
                ServerMessage::RoomClosed { reason: "kicked" }.text(),
            ));
            let _ = link
                .tx
                .try_send(Outbound::Close(close::KICKED, "removed by an admin"));
        }
        self.remove(i, "kicked", ctx);
        Some(state)
    }
}

/// media: a `signal` to `sfu`: to the media plane in an SFU room, `SFU_UNAVAILABLE`
/// in a MESH room.
#[derive(Message)]
#[rtype(result = "()")]
struct SfuSignal {
    address: String,
    session: u64,
    data: serde_json::Value,
}

impl Handler<SfuSignal> for RoomActor {
    type Result = ();

    fn handle(&mut self, signal: SfuSignal, ctx: &mut Context<Self>) {
        let Some(i) = self.sender(&signal.address, signal.session) else {
            return;
        };
        match self.media() {
            Some(media) => media.signal(&self.record.id, &signal.address, signal.data),
            None => self.send_error(i, &ApiError::sfu_unavailable(), ctx),
        }
    }
}

/// A relay found this participant's queue full or closed.
#[derive(Message)]
#[rtype(result = "()")]
struct Overflow {
    address: String,
    session: u64,
}

impl Handler<Overflow> for RoomActor {
    type Result = ();

    fn handle(&mut self, Overflow { address, session }: Overflow, ctx: &mut Context<Self>) {
        // Only the socket that overflowed loses the seat's link, not one that resumed since.
        if let Some(i) = self.sender(&address, session) {
            tracing::info!(room = %self.record.id, %address, "participant dropped: outbound queue full or closed");
            self.unlink(i, ctx);
        }
    }
}

#[derive(Message)]
#[rtype(result = "usize")]
struct CountParticipants;

impl Handler<CountParticipants> for RoomActor {
    type Result = usize;

    fn handle(&mut self, _: CountParticipants, _: &mut Context<Self>) -> usize {
        self.members.len()
    }
}

/// A cloneable handle on one room's actor.
#[derive(Clone)]
pub struct RoomHandle {
    addr: Addr<RoomActor>,
    peers: Peers,
}

impl RoomHandle {
    pub(super) fn new(addr: Addr<RoomActor>, peers: Peers) -> Self {
        Self { addr, peers }
    }

    /// Queues a relayed message for one participant; a full or closed queue is the room's
    /// to deal with.
    fn deliver(&self, to: &str, link: &Link, text: Arc<str>) {
        METRICS.relayed(1);
        if link.tx.try_send(Outbound::Text(text)).is_err() {
            self.addr.do_send(Overflow {
                address: to.to_string(),
                session: link.session,
            });
        }
    }

    /// Runs `relay` over the seats when `session` still speaks for `from`; messages of a
    /// socket that no longer does are dropped.
    fn with_peers<T: Default>(
        &self,
        from: &str,
        session: u64,
        relay: impl FnOnce(&HashMap<String, Option<Link>>) -> T,
    ) -> T {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        match peers.get(from) {
            Some(Some(link)) if link.session == session => relay(&peers),
            _ => T::default(),
        }
    }

    /// The room's record; `None` once the room is gone.
    pub async fn record(&self) -> Option<Arc<RoomRecord>> {
        self.addr.send(GetRecord).await.ok()
    }

    /// Deletes the room: `Ok(None)` when it was already gone.
    pub async fn delete(&self) -> Result<Option<Arc<RoomRecord>>, StoreError> {
        match self.addr.send(Delete).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Takes a seat (or resumes one) for a socket; the room sends `joined` into `tx`.
    /// Answers the participant's address.
    pub async fn join(
        &self,
        nonce: String,
        request: crate::signaling::protocol::JoinRequest,
        session: u64,
        tx: mpsc::Sender<Outbound>,
    ) -> Result<String, JoinRefused> {
        let link = Link { session, tx };
        self.addr
            .send(Join {
                nonce,
                request,
                link,
            })
            .await
            .unwrap_or(Err(JoinRefused::Gone))
    }

    fn tell(&self, address: &str, session: u64, action: Action) {
        self.addr.do_send(FromParticipant {
            address: address.to_string(),
            session,
            action,
        });
    }

    /// Relays a `signal` (already serialized, with `from`) straight to one participant's
    /// queue; answers the error for the sender, if any. A participant waiting for a resume
    /// exists, but what is relayed to it meanwhile is lost.
    pub fn signal(&self, from: &str, session: u64, to: &str, text: Arc<str>) -> Option<ApiError> {
        self.with_peers(from, session, |peers| {
            if to == "sfu" {
                // media: the room decides whether its media plane takes it.
                let data = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|mut v| v.get_mut("data").map(serde_json::Value::take))
                    .unwrap_or_default();
                self.addr.do_send(SfuSignal {
                    address: from.to_string(),
                    session,
                    data,
                });
                None
            } else if to == from {
                Some(ApiError::participant_does_not_exist(to))
            } else {
                self.relay_to(peers, to, text)
            }
        })
    }

    /// Relays a `message` to the listed participants, or to everyone else; answers an
    /// error for each listed address that is not in the room.
    pub fn message(
        &self,
        from: &str,
        session: u64,
        to: Option<&[String]>,
        text: Arc<str>,
    ) -> Vec<ApiError> {
        self.with_peers(from, session, |peers| match to {
            None => {
                for (address, link) in peers.iter().filter(|(a, _)| a.as_str() != from) {
                    if let Some(link) = link {
                        self.deliver(address, link, text.clone());
                    }
                }
                Vec::new()
            }
            Some(to) => to
                .iter()
                .filter_map(|address| self.relay_to(peers, address, text.clone()))
                .collect(),
        })
    }

    /// Relays to one seated participant (lost while it waits for a resume); answers the
    /// error for an address that holds no seat.
    fn relay_to(
        &self,
        peers: &HashMap<String, Option<Link>>,
        to: &str,
        text: Arc<str>,
    ) -> Option<ApiError> {
        match peers.get(to) {
            Some(Some(link)) => {
                self.deliver(to, link, text);
                None
            }
            Some(None) => None,
            None => Some(ApiError::participant_does_not_exist(to)),
        }
    }

    /// media: delivers the media plane's `signal` (`from: "sfu"`) to one participant;
    /// lost while it waits for a resume.
    pub fn signal_from_sfu(&self, to: &str, data: &serde_json::Value) {
        let text: Arc<str> = serde_json::json!({"type": "signal", "from": "sfu", "data": data})
            .to_string()
            .into();
        self.deliver_to_seat(to, text);
    }

    /// media: tells one participant that the media plane could not use its `signal`.
    pub fn sfu_rejected(&self, to: &str, reason: &str) {
        let text = ServerMessage::error(&ApiError::sfu_signal_rejected(reason)).text();
        self.deliver_to_seat(to, text);
    }

    fn deliver_to_seat(&self, to: &str, text: Arc<str>) {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(link)) = peers.get(to) {
            self.deliver(to, link, text);
        }
    }

    pub fn media_state(&self, from: &str, session: u64, audio: Option<bool>, video: Option<bool>) {
        self.tell(from, session, Action::MediaState { audio, video });
    }

    pub fn leave(&self, from: &str, session: u64) {
        self.tell(from, session, Action::Leave);
    }

    /// The participant's socket is gone; a resume may follow within the grace period.
    pub fn disconnected(&self, address: &str, session: u64) {
        self.tell(address, session, Action::Disconnected);
    }

    /// The participants, in join order; `None` once the room is gone.
    pub async fn participants(&self) -> Option<Vec<ParticipantState>> {
        self.addr.send(ListParticipants).await.ok()
    }

    /// Removes a participant; `Ok(None)` when there is no such participant, `Err` when
    /// the room is gone.
    pub async fn kick(&self, address: &str) -> Result<Option<ParticipantState>, ()> {
        self.addr
            .send(Kick(address.to_string()))
            .await
            .map_err(drop)
    }

    /// How many participants hold a seat (joined, or waiting for a resume).
    pub async fn participant_count(&self) -> usize {
        self.addr.send(CountParticipants).await.unwrap_or(0)
    }
}
