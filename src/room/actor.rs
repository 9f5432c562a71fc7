//! One actor per active room: it runs the room's [`RoomState`] (the rules) and executes the
//! effects that the state answers with: it holds each participant's queue sender and the
//! timers, writes the store, and publishes the record and the seats. It stops when the
//! room is deleted or its `roomTTLSeconds` run out, or when the state finds it idle
//! (passivation: the record stays in the store, and the registry starts a new actor on
//! the room's next use).
//!
//! The actor never waits on a socket: it `try_send`s, and a participant whose queue is full
//! or closed loses its socket (the state hears of it as an overflow, and gives the seat the
//! resume grace period, like any dropped socket).
//!
//! `signal` and `message` do not pass through the actor: it publishes its seats (address →
//! the socket's session and queue sender) in a [`Peers`] table that only it writes, and
//! sessions relay straight into each other's queues through it. A relay that finds a full
//! or closed queue tells the actor, which drops that participant as above.

use super::RoomServices;
use super::events::RoomEvent;
use super::messages::{Closing, JoinRequest, Notice, Outbound, RoomMessage};
use super::ownership::WriteError;
use super::registry::{Registry, RoomGone};
use super::state::{
    Ban, Effect, Kicked, MediaCommand, MediaReport, ParticipantState, RoomState, TimerId,
};
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::model::{ConferenceType, JoinRefused, Limits, RoomRecord, Seat, StoreError, now_ms};
use crate::store::Lease;
use actix::prelude::*;
use actix_web::web::Bytes;
use futures_util::future::BoxFuture;
use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::{Duration, Instant};
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

pub(super) struct RoomActor {
    state: RoomState,
    /// The effects of creating the state, executed when the actor starts.
    starting: Vec<Effect>,
    services: Arc<RoomServices>,
    registry: Addr<Registry>,
    snapshot: Snapshot,
    peers: Peers,
    /// Each linked participant's socket.
    links: HashMap<String, Link>,
    /// The socket of the join being handled, until the state links it to a seat.
    joining: Option<Link>,
    timers: HashMap<TimerId, SpawnHandle>,
    persist_scheduled: bool,
    /// Which of the room's successive actors this is (see `RoomGone`).
    generation: u64,
    /// With Redis, this node's lease of the room: every write is fenced by it.
    lease: Option<Lease>,
    /// When the lease was last taken or renewed.
    renewed: Instant,
    /// The lease is lost (a renewal refused, a write stale): nothing more is written.
    lost: bool,
    /// The expired room is being removed from the store: the actor stops once that is
    /// done (see `Effect::RemoveFromStore`).
    removing: bool,
}

impl RoomActor {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        record: Arc<RoomRecord>,
        services: Arc<RoomServices>,
        registry: Addr<Registry>,
        snapshot: Snapshot,
        peers: Peers,
        generation: u64,
        lease: Option<Lease>,
        seats: Vec<Seat>,
    ) -> Self {
        let (mut state, mut starting) = RoomState::new(record, services.clone(), Arc::new(now_ms));
        if !seats.is_empty() {
            starting.extend(state.restore(seats));
        }
        Self {
            state,
            starting,
            services,
            registry,
            snapshot,
            peers,
            links: HashMap::new(),
            joining: None,
            timers: HashMap::new(),
            persist_scheduled: false,
            generation,
            lease,
            renewed: Instant::now(),
            lost: false,
            removing: false,
        }
    }

    /// Replaces the room's stored record: fenced by the lease when the room has one, and
    /// then with its seats (which a node taking the room over gives back).
    fn write_update(&self, record: RoomRecord) -> BoxFuture<'static, Result<(), WriteError>> {
        let services = self.services.clone();
        let lease = self.lease.clone();
        let seats = self.state.seats();
        Box::pin(async move {
            match (&services.ownership, lease) {
                (Some(owning), Some(lease)) => {
                    owning.update(&record, &lease).await?;
                    owning.save_seats(&record, &seats, &lease).await
                }
                _ => services
                    .store
                    .update(&record)
                    .await
                    .map_err(WriteError::Store),
            }
        })
    }

    /// Removes the room from the store: fenced by the lease when the room has one.
    fn write_delete(&self, record: Arc<RoomRecord>) -> BoxFuture<'static, Result<(), WriteError>> {
        let services = self.services.clone();
        let lease = self.lease.clone();
        Box::pin(async move {
            match (&services.ownership, lease) {
                (Some(owning), Some(lease)) => owning.delete(&record, &lease).await,
                _ => services
                    .store
                    .delete(&record)
                    .await
                    .map_err(WriteError::Store),
            }
        })
    }

    /// Removes the expired room from the store: fenced by the lease when the room has
    /// one, the index entries before the lease.
    fn write_expired_removal(
        &self,
        record: Arc<RoomRecord>,
    ) -> BoxFuture<'static, Result<(), WriteError>> {
        let services = self.services.clone();
        let lease = self.lease.clone();
        Box::pin(async move {
            match (&services.ownership, lease) {
                (Some(owning), Some(lease)) => owning.delete_expired(&record, &lease).await,
                _ => services
                    .store
                    .delete(&record)
                    .await
                    .map_err(WriteError::Store),
            }
        })
    }

    /// Renews the lease; a refused renewal, or none for the whole lease time, loses the
    /// room.
    fn renew(&mut self, ctx: &mut Context<Self>) {
        let (Some(owning), Some(lease)) = (self.services.ownership.clone(), self.lease.clone())
        else {
            return;
        };
        if self.lost {
            return;
        }
        let asked = Instant::now();
        ctx.spawn(
            async move { owning.leases.renew(&lease).await }
                .into_actor(self)
                .map(move |renewed, act, ctx| match renewed {
                    Ok(true) => act.renewed = asked,
                    Ok(false) => act.lose("its lease renewal was refused", ctx),
                    Err(e) => {
                        tracing::warn!(room = %act.state.record().id, error = %e, "could not renew a room's lease");
                        let lease_time = act
                            .services
                            .ownership
                            .as_ref()
                            .map_or(Duration::MAX, |o| o.lease_time);
                        if act.renewed.elapsed() >= lease_time {
                            act.lose("its lease was not renewed within the lease time", ctx);
                        }
                    }
                }),
        );
    }

    /// The room's lease is lost (another node may own the room now): closes every socket,
    /// writes nothing more, and stops at once. Not a rule of the room: the state is dropped
    /// with the actor, and the room's next owner starts from the store.
    fn lose(&mut self, why: &str, ctx: &mut Context<Self>) {
        if self.lost {
            return;
        }
        self.lost = true;
        METRICS.room_lost();
        let id = self.state.record().id.clone();
        tracing::warn!(room = %id, fence = self.lease.as_ref().map(|l| l.fence), "room stopped on this node: {why}");
        for (_, link) in self.links.drain() {
            let _ = link.tx.try_send(Outbound::Close(Closing::OwnerLost));
        }
        self.peers().clear();
        self.set_snapshot(None);
        if let Some(media) = &self.services.media {
            media.remove_room(&id);
        }
        self.services.publish(&RoomEvent::Passivated(id));
        ctx.stop();
    }

    /// What a failed write means: a stale one loses the room.
    fn write_failed(&mut self, e: WriteError, what: &str, ctx: &mut Context<Self>) {
        match e {
            WriteError::Stale => self.lose("a write was refused as stale", ctx),
            WriteError::Store(e) => {
                tracing::warn!(room = %self.state.record().id, error = %e, "could not {what}")
            }
        }
    }

    fn set_snapshot(&self, value: Option<Arc<Published>>) {
        *self.snapshot.write().unwrap_or_else(|e| e.into_inner()) = value;
    }

    fn peers(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Option<Link>>> {
        // Each write is one insert, remove or clear: a poisoned lock is still whole.
        self.peers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Executes the state's effects in order. A queue found full or closed is reported
    /// back to the state at once, so nothing more reaches that socket.
    fn execute(&mut self, effects: Vec<Effect>, ctx: &mut Context<Self>) {
        for effect in effects {
            match effect {
                Effect::Send {
                    to,
                    session,
                    message,
                } => self.queue(&to, session, Outbound::Notice(message), ctx),
                Effect::Close {
                    to,
                    session,
                    closing,
                } => self.queue(&to, session, Outbound::Close(closing), ctx),
                Effect::SeatLinked { address, session } => {
                    if let Some(link) = self.joining.take_if(|l| l.session == session) {
                        self.peers().insert(address.clone(), Some(link.clone()));
                        self.links.insert(address, link);
                    }
                }
                Effect::SeatUnlinked { address } => {
                    self.links.remove(&address);
                    self.peers().insert(address, None);
                }
                Effect::SeatRemoved { address } => {
                    self.links.remove(&address);
                    self.peers().remove(&address);
                }
                Effect::SeatsCleared => self.peers().clear(),
                Effect::StartTimer { id, after } => {
                    let handle = ctx.run_later(after, move |act, ctx| {
                        act.timers.remove(&id);
                        let effects = act.state.timer_fired(id);
                        act.execute(effects, ctx);
                    });
                    self.timers.insert(id, handle);
                }
                Effect::CancelTimer(id) => {
                    if let Some(handle) = self.timers.remove(&id) {
                        ctx.cancel_future(handle);
                    }
                }
                Effect::PersistSoon => self.persist_soon(ctx),
                Effect::PersistNow => self.persist(ctx),
                Effect::RemoveFromStore => {
                    // The room expired. The actor stops only once the store no longer
                    // has it (`ctx.wait` holds the mailbox meanwhile), and keeps its
                    // directory entry (and, with `cluster`, its lease) until then: the
                    // sweep, which tells of the end of rooms that expire without an actor,
                    // leaves alone a room that has one, and finds nothing left to finish
                    // once it has gone.
                    if !self.lost {
                        self.removing = true;
                        let id = self.state.record().id.clone();
                        let removing = self.write_expired_removal(self.state.record().clone());
                        ctx.wait(removing.into_actor(self).map(move |removed, _, ctx| {
                            match removed {
                                Ok(()) => {}
                                Err(WriteError::Stale) => {
                                    tracing::warn!(room = %id, "an expired room's removal was refused: another node owns it now")
                                }
                                Err(WriteError::Store(e)) => {
                                    tracing::warn!(room = %id, error = %e, "could not remove an expired room")
                                }
                            }
                            ctx.stop();
                        }));
                    }
                }
                Effect::Publish(event) => self.services.publish(&event),
                Effect::PublishSnapshot => {
                    self.set_snapshot(Some(Published::new(self.state.record().clone())))
                }
                Effect::PublishGone => self.set_snapshot(None),
                // An expired room stops when its removal is done.
                Effect::Stop if self.removing => {}
                Effect::Stop => ctx.stop(),
                Effect::Passivate => self.passivate(ctx),
                Effect::Media(command) => self.tell_media(command),
            }
        }
    }

    /// Hands a command to the media plane, if the service runs one.
    fn tell_media(&self, command: MediaCommand) {
        let Some(media) = &self.services.media else {
            return;
        };
        let room = &self.state.record().id;
        match command {
            MediaCommand::Add {
                address,
                can_publish,
                can_subscribe,
            } => media.add_participant(room, &address, can_publish, can_subscribe),
            MediaCommand::Remove { address } => media.remove_participant(room, &address),
            MediaCommand::RemoveRoom => media.remove_room(room),
            MediaCommand::Signal { address, data } => media.signal(room, &address, data),
            MediaCommand::Resumed { address } => media.resumed(room, &address),
        }
    }

    /// Queues for a participant's socket, if it is still `session`'s. A full or closed
    /// queue costs the participant its socket.
    fn queue(&mut self, to: &str, session: u64, message: Outbound, ctx: &mut Context<Self>) {
        let Some(link) = self.links.get(to).filter(|l| l.session == session) else {
            return;
        };
        if link.tx.try_send(message).is_err() {
            let effects = self.state.overflow(to, session);
            self.execute(effects, ctx);
        }
    }

    /// Writes the record to the store in the background; the room never waits for it.
    fn persist(&self, ctx: &mut Context<Self>) {
        if self.lost {
            return;
        }
        let writing = self.write_update(self.state.stored_record());
        ctx.spawn(writing.into_actor(self).map(|written, act, ctx| {
            if let Err(e) = written {
                act.write_failed(e, "persist a room change", ctx);
            }
        }));
    }

    /// Writes the record of an idle room (nobody seated: participant count 0, and whatever
    /// change a pending `persist_soon` still had to write) and stops only once the store
    /// has it, so the room's next actor starts from it. `ctx.wait` holds the mailbox
    /// meanwhile; a message that arrives then is dropped when the actor stops, and the
    /// `Rooms` method that sent it retries through activation.
    /// With a lease, the lease is released after the write, before the actor stops.
    fn passivate(&mut self, ctx: &mut Context<Self>) {
        if self.lost {
            return;
        }
        let writing = self.write_update(self.state.stored_record());
        let releasing = self.services.ownership.clone().zip(self.lease.clone());
        ctx.wait(
            async move {
                writing.await?;
                if let Some((owning, lease)) = releasing
                    && let Err(e) = owning.leases.release(&lease).await
                {
                    tracing::warn!(room = %lease.room, error = %e, "could not release a room's lease (it expires)");
                }
                Ok(())
            }
                .into_actor(self)
                .map(|written, act, ctx| match written {
                    Ok(()) => {
                        let id = act.state.record().id.clone();
                        tracing::debug!(room = %id, "room passivated");
                        act.services.publish(&RoomEvent::Passivated(id));
                        ctx.stop();
                    }
                    Err(WriteError::Stale) => act.lose("a write was refused as stale", ctx),
                    Err(WriteError::Store(e)) => {
                        tracing::warn!(room = %act.state.record().id, error = %e, "could not passivate a room");
                        let effects = act.state.passivation_failed();
                        act.execute(effects, ctx);
                    }
                }),
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
}

impl Actor for RoomActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if let (Some(owning), Some(_)) = (&self.services.ownership, &self.lease) {
            ctx.run_interval(owning.renew_every(), |act, ctx| act.renew(ctx));
        }
        let effects = std::mem::take(&mut self.starting);
        self.execute(effects, ctx);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        self.registry.do_send(RoomGone {
            id: self.state.record().id.clone(),
            generation: self.generation,
        });
    }
}

/// The room's record, with a usable token.
#[derive(Message)]
#[rtype(result = "Arc<RoomRecord>")]
struct GetRecord;

impl Handler<GetRecord> for RoomActor {
    type Result = MessageResult<GetRecord>;

    fn handle(&mut self, _: GetRecord, ctx: &mut Context<Self>) -> Self::Result {
        let (record, effects) = self.state.get_record();
        self.execute(effects, ctx);
        MessageResult(record)
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
        let record = self.state.record().clone();
        let deleting = self.write_delete(record.clone());
        let lost = self.lost;
        AtomicResponse::new(Box::pin(
            async move {
                if lost {
                    return Err(WriteError::Stale);
                }
                deleting.await.map(|()| record)
            }
            .into_actor(self)
            .map(|result, act, ctx| match result {
                Ok(record) => {
                    let effects = act.state.delete_confirmed();
                    act.execute(effects, ctx);
                    Ok(record)
                }
                Err(WriteError::Stale) => {
                    act.lose("a write was refused as stale", ctx);
                    Err(StoreError(
                        "the room's ownership moved to another node".into(),
                    ))
                }
                Err(WriteError::Store(e)) => Err(e),
            }),
        ))
    }
}

/// Stops the actor at a clean shutdown, releasing its lease: nothing more is written.
#[derive(Message)]
#[rtype(result = "()")]
struct Surrender;

impl Handler<Surrender> for RoomActor {
    type Result = ResponseActFuture<Self, ()>;

    fn handle(&mut self, _: Surrender, _: &mut Context<Self>) -> Self::Result {
        let releasing = if self.lost {
            None
        } else {
            self.services.ownership.clone().zip(self.lease.clone())
        };
        self.lost = true;
        Box::pin(
            async move {
                if let Some((owning, lease)) = releasing
                    && let Err(e) = owning.leases.release(&lease).await
                {
                    tracing::warn!(room = %lease.room, error = %e, "could not release a room's lease (it expires)");
                }
            }
            .into_actor(self)
            .map(|(), _, ctx| ctx.stop()),
        )
    }
}

/// How a room of a draining node was handed over (see [`RoomHandle::hand_over`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HandedOver {
    /// Its seats are stored, its lease released, and another node started it.
    Started,
    /// Its seats are stored and its lease released, but no node started it: the next
    /// use (a resume, a re-attach) on any node takes it.
    Released,
    /// Its last write failed (its seats may be behind, its lease may expire instead of
    /// being released), or it had stopped already.
    Failed,
}

impl HandedOver {
    /// The `outcome` label of `convene_rooms_drained_total`.
    pub fn label(self) -> &'static str {
        match self {
            Self::Started => "started",
            Self::Released => "released",
            Self::Failed => "failed",
        }
    }
}

/// What starts a room on another node: given its id and how many seats it has, answers
/// whether a node started it.
pub type StartElsewhere = Arc<dyn Fn(String, usize) -> BoxFuture<'static, bool> + Send + Sync>;

/// Hands the room to another node (a draining node): writes the record and the seats
/// (fenced), releases the lease, has another node start the room (which gives the seats
/// back, waiting for resumes), then closes every socket with [`Closing::HandedOver`] and
/// stops. Atomic: nothing else of this room is handled meanwhile, so no seat changes
/// between the write and the closes.
/// Answers how it went, and the queues of the sockets it closed.
#[derive(Message)]
#[rtype(result = "(HandedOver, Vec<mpsc::Sender<Outbound>>)")]
struct HandOver(StartElsewhere);

impl Handler<HandOver> for RoomActor {
    type Result = AtomicResponse<Self, (HandedOver, Vec<mpsc::Sender<Outbound>>)>;

    fn handle(&mut self, HandOver(start): HandOver, _: &mut Context<Self>) -> Self::Result {
        let id = self.state.record().id.clone();
        let seats = self.state.seats().len();
        let handing = (!self.lost)
            .then(|| {
                self.services
                    .ownership
                    .clone()
                    .zip(self.lease.clone())
                    .map(|owning| (owning, self.write_update(self.state.stored_record())))
            })
            .flatten();
        // Nothing more is written by this actor, whatever happens below.
        self.lost = true;
        AtomicResponse::new(Box::pin(
            async move {
                let Some(((owning, lease), writing)) = handing else {
                    return Err(None);
                };
                let written = writing.await;
                let released = owning.leases.release(&lease).await;
                // The node that starts it lists it as its own.
                owning.list_seated(&lease.room, false).await;
                match (written, released) {
                    (Ok(()), Ok(_)) => {}
                    (Err(WriteError::Stale), _) => return Err(Some("its lease was lost")),
                    (Err(WriteError::Store(e)), _) | (_, Err(e)) => {
                        tracing::warn!(room = %lease.room, error = %e, "could not hand a room over cleanly");
                        return Err(Some("its last write or release failed"));
                    }
                }
                Ok(start(lease.room.clone(), seats).await)
            }
            .into_actor(self)
            .map(move |handed, act, ctx| {
                let outcome = match handed {
                    Ok(true) => HandedOver::Started,
                    Ok(false) => HandedOver::Released,
                    Err(None) => return (HandedOver::Failed, Vec::new()),
                    Err(Some(why)) => {
                        tracing::warn!(room = %id, "room handed over without its latest seats: {why}");
                        HandedOver::Failed
                    }
                };
                tracing::info!(room = %id, outcome = outcome.label(), seats, "room handed over");
                let mut closed = Vec::new();
                for (_, link) in act.links.drain() {
                    let _ = link.tx.try_send(Outbound::Close(Closing::HandedOver));
                    closed.push(link.tx);
                }
                act.peers().clear();
                act.set_snapshot(None);
                if let Some(media) = &act.services.media {
                    media.remove_room(&id);
                }
                act.services.publish(&RoomEvent::Passivated(id.clone()));
                ctx.stop();
                (outcome, closed)
            }),
        ))
    }
}

#[derive(Message)]
#[rtype(result = "Result<String, JoinRefused>")]
struct Join {
    nonce: String,
    request: JoinRequest,
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
        let (result, effects) = self.state.join(&nonce, request, link.session);
        self.joining = Some(link);
        self.execute(effects, ctx);
        self.joining = None;
        result
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
        let effects = match action {
            Action::MediaState { audio, video } => {
                self.state.media_state(&address, session, audio, video)
            }
            Action::Leave => self.state.leave(&address, session),
            Action::Disconnected => self.state.disconnected(&address, session),
        };
        self.execute(effects, ctx);
    }
}

#[derive(Message)]
#[rtype(result = "Vec<ParticipantState>")]
struct ListParticipants;

impl Handler<ListParticipants> for RoomActor {
    type Result = MessageResult<ListParticipants>;

    fn handle(&mut self, _: ListParticipants, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.state.list_participants())
    }
}

/// Removes a participant on an admin's request, banning its identity with a `Ban`: the
/// ban is written to the store before the answer.
#[derive(Message)]
#[rtype(result = "Result<Kicked, StoreError>")]
struct Kick(String, Option<Ban>);

impl Handler<Kick> for RoomActor {
    type Result = AtomicResponse<Self, Result<Kicked, StoreError>>;

    fn handle(&mut self, Kick(address, ban): Kick, ctx: &mut Context<Self>) -> Self::Result {
        let (kicked, effects) = self.state.kick(&address, ban);
        self.execute(effects, ctx);
        let write = ban.is_some() && matches!(kicked, Kicked::Removed { .. });
        self.written_then(write, kicked)
    }
}

/// Rotates the room token; the new record is written to the store before the answer.
#[derive(Message)]
#[rtype(result = "Result<Arc<RoomRecord>, StoreError>")]
struct RotateToken;

impl Handler<RotateToken> for RoomActor {
    type Result = AtomicResponse<Self, Result<Arc<RoomRecord>, StoreError>>;

    fn handle(&mut self, _: RotateToken, ctx: &mut Context<Self>) -> Self::Result {
        let (record, effects) = self.state.rotate_token();
        self.execute(effects, ctx);
        self.written_then(true, record)
    }
}

impl RoomActor {
    /// Answers `value` once the room's record is in the store (at once without `write`),
    /// holding the room's other messages meanwhile. A failed write answers the store's
    /// error (the change holds on this actor; the store gets it with the next write); a
    /// stale one loses the room.
    fn written_then<T: Send + 'static>(
        &mut self,
        write: bool,
        value: T,
    ) -> AtomicResponse<Self, Result<T, StoreError>> {
        let writing = (write && !self.lost).then(|| self.write_update(self.state.stored_record()));
        let lost = write && self.lost;
        AtomicResponse::new(Box::pin(
            async move {
                if lost {
                    return Err(WriteError::Stale);
                }
                match writing {
                    Some(writing) => writing.await,
                    None => Ok(()),
                }
            }
            .into_actor(self)
            .map(move |written, act, ctx| match written {
                Ok(()) => Ok(value),
                Err(WriteError::Stale) => {
                    act.lose("a write was refused as stale", ctx);
                    Err(StoreError(
                        "the room's ownership moved to another node".into(),
                    ))
                }
                Err(WriteError::Store(e)) => Err(e),
            }),
        ))
    }
}

/// A `signal` to `sfu`.
#[derive(Message)]
#[rtype(result = "()")]
struct SfuSignal {
    address: String,
    session: u64,
    data: serde_json::Value,
}

impl Handler<SfuSignal> for RoomActor {
    type Result = ();

    fn handle(
        &mut self,
        SfuSignal {
            address,
            session,
            data,
        }: SfuSignal,
        ctx: &mut Context<Self>,
    ) {
        let effects = self.state.sfu_signal(&address, session, data);
        self.execute(effects, ctx);
    }
}

/// The media plane reported on a participant's media connection.
#[derive(Message)]
#[rtype(result = "()")]
struct MediaChanged {
    address: String,
    report: MediaReport,
}

impl Handler<MediaChanged> for RoomActor {
    type Result = ();

    fn handle(&mut self, MediaChanged { address, report }: MediaChanged, ctx: &mut Context<Self>) {
        let effects = self.state.media_changed(&address, report);
        self.execute(effects, ctx);
    }
}

/// The media plane's active speakers for this room.
#[derive(Message)]
#[rtype(result = "()")]
struct ActiveSpeakers(Vec<String>);

impl Handler<ActiveSpeakers> for RoomActor {
    type Result = ();

    fn handle(&mut self, ActiveSpeakers(speakers): ActiveSpeakers, ctx: &mut Context<Self>) {
        let effects = self.state.active_speakers(speakers);
        self.execute(effects, ctx);
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
        let effects = self.state.overflow(&address, session);
        self.execute(effects, ctx);
    }
}

/// A cloneable handle on one room's actor.
#[derive(Clone)]
pub struct RoomHandle {
    addr: Addr<RoomActor>,
    peers: Peers,
    snapshot: Snapshot,
}

impl RoomHandle {
    pub(super) fn new(addr: Addr<RoomActor>, peers: Peers, snapshot: Snapshot) -> Self {
        Self {
            addr,
            peers,
            snapshot,
        }
    }

    /// The room's `maxParticipants` now (it grows when a MESH room upgrades to SFU); the
    /// SFU limit once the room is gone.
    pub fn max_participants(&self, limits: &Limits) -> u32 {
        let kind =
            read_snapshot(&self.snapshot).map_or(ConferenceType::Sfu, |p| p.record.conference_type);
        limits.max_participants(kind)
    }

    /// How many sockets a relay from `from` would reach now: the listed addresses (`to`,
    /// already without repeats) that hold a connected seat, or with `None` every connected
    /// participant but `from`. What the sender's fan-out budget is charged for.
    pub fn reach(&self, from: &str, to: Option<&[String]>) -> usize {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        match to {
            None => peers
                .iter()
                .filter(|(address, link)| address.as_str() != from && link.is_some())
                .count(),
            Some(to) => to
                .iter()
                .filter(|address| matches!(peers.get(address.as_str()), Some(Some(_))))
                .count(),
        }
    }

    /// Queues a relayed message for one participant; a full or closed queue is the room's
    /// to deal with.
    fn deliver(&self, to: &str, link: &Link, text: Arc<str>) {
        METRICS.relayed(1);
        self.push(to, link, Outbound::Text(text));
    }

    fn push(&self, to: &str, link: &Link, message: Outbound) {
        if link.tx.try_send(message).is_err() {
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

    /// Stops the room's actor and releases its lease (a clean shutdown).
    pub async fn surrender(&self) {
        let _ = self.addr.send(Surrender).await;
    }

    /// Hands the room to another node, which `start` asks to start it (a draining node;
    /// see [`HandOver`]), and waits (at most a second) until the sessions of the sockets it
    /// closed have ended, so that their close is the room's, not the server's shutdown.
    /// `Failed` when the room had stopped already.
    pub async fn hand_over(&self, start: StartElsewhere) -> HandedOver {
        let Ok((outcome, closed)) = self.addr.send(HandOver(start)).await else {
            return HandedOver::Failed;
        };
        let ended = futures_util::future::join_all(closed.iter().map(mpsc::Sender::closed));
        let _ = tokio::time::timeout(Duration::from_secs(1), ended).await;
        outcome
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
        request: JoinRequest,
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
            if to == from {
                Some(ApiError::participant_does_not_exist(to))
            } else {
                self.relay_to(peers, to, text)
            }
        })
    }

    /// A `signal` to `sfu`: the room hands `data` to its media plane, or answers
    /// `SFU_UNAVAILABLE` (a MESH room).
    pub fn signal_to_sfu(&self, from: &str, session: u64, data: serde_json::Value) {
        if self.with_peers(from, session, |_| true) {
            self.addr.do_send(SfuSignal {
                address: from.to_string(),
                session,
                data,
            });
        }
    }

    /// Delivers the media plane's `signal` (from `sfu`) to one participant; lost while
    /// it waits for a resume.
    pub fn signal_from_sfu(&self, to: &str, data: serde_json::Value) {
        self.deliver_to_seat(to, RoomMessage::SfuSignal { data });
    }

    /// What the media plane reports on a participant's media connection, for operators.
    pub fn media_changed(&self, address: &str, report: MediaReport) {
        self.addr.do_send(MediaChanged {
            address: address.to_string(),
            report,
        });
    }

    /// The media plane's active speakers for this room, loudest first.
    pub fn active_speakers(&self, speakers: Vec<String>) {
        self.addr.do_send(ActiveSpeakers(speakers));
    }

    /// Tells one participant that the media plane could not use its `signal`.
    pub fn sfu_rejected(&self, to: &str, reason: String) {
        self.deliver_to_seat(to, RoomMessage::SfuSignalRejected { reason });
    }

    fn deliver_to_seat(&self, to: &str, message: RoomMessage) {
        let peers = self.peers.read().unwrap_or_else(|e| e.into_inner());
        if let Some(Some(link)) = peers.get(to) {
            self.push(to, link, Outbound::Notice(Notice::new(message)));
        }
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

    /// Removes a participant (banning its identity with `ban`); `None` when the room is
    /// gone.
    pub async fn kick(
        &self,
        address: &str,
        ban: Option<Ban>,
    ) -> Option<Result<Kicked, StoreError>> {
        self.addr.send(Kick(address.to_string(), ban)).await.ok()
    }

    /// Rotates the room token; `None` when the room is gone.
    pub async fn rotate_token(&self) -> Option<Result<Arc<RoomRecord>, StoreError>> {
        self.addr.send(RotateToken).await.ok()
    }
}
