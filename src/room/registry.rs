//! The registry actor owns the set of active rooms; [`Rooms`] is the cloneable handle that
//! REST handlers and signaling sessions use.
//!
//! Rooms are activated on demand (virtual actors, as Orleans calls them): a room in the
//! store has an actor only while it is used. The first use of a room without one (fetch,
//! join, delete, kick, participants list, token refresh) asks the registry to `Activate`
//! it: the registry reads the record from the store once, however many requests for that
//! room arrive meanwhile, starts the actor and answers all of them. A room's actor stops
//! (passivates) after `room_idle_seconds` with nobody joined; its record stays in the store.
//!
//! The registry is the only writer of the room directory (id → the room actor's address,
//! and the record and seats that the actor publishes). Handles read it directly under a
//! read lock, so finding an active room costs no trip through the registry's mailbox, and
//! fetching or listing rooms none through a room's: they read the published record.

use super::RoomServices;
use super::actor::{
    HandedOver, Peers, Published, RoomActor, RoomHandle, Snapshot, StartElsewhere, read_snapshot,
    snapshot_of,
};
use super::events::RoomEvent;
use super::messages::{JoinRequest, Outbound};
use super::ownership::{Claim, Placement};
use super::state::{Ban, Kicked, ParticipantState};
use crate::model::{
    ConferenceType, Cursor, JoinRefused, Limits, NewRoom, Owner, RoomError, RoomRecord, Seat,
    StoreError, now_ms,
};
use crate::store::Lease;
use crate::token::Grant;
use actix::prelude::*;
use actix_web::web::Bytes;
use std::collections::HashMap;
use std::collections::hash_map::Entry as Slot;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// An active room: its actor, and the record and the seats it publishes. `generation`
/// tells this actor from an earlier or later one of the same room (ids are reused across
/// activations), so a stopped actor removes only its own entry.
struct Entry {
    addr: Addr<RoomActor>,
    snapshot: Snapshot,
    peers: Peers,
    generation: u64,
}

impl Entry {
    /// The handle of this entry's actor, unless the actor has stopped.
    fn handle(&self) -> Option<RoomHandle> {
        self.addr
            .connected()
            .then(|| RoomHandle::new(self.addr.clone(), self.peers.clone(), self.snapshot.clone()))
    }
}

/// Active rooms by id. Written only by the registry actor.
type Directory = Arc<RwLock<HashMap<String, Entry>>>;

/// Where a room's actor runs.
#[derive(Clone)]
enum Located {
    /// On this node.
    Here(RoomHandle),
    /// On another node, which holds the room's lease.
    Elsewhere(Owner),
}

/// What an activation answers: where the room runs, `None` when the store has no such
/// room (never created, deleted, or expired).
type Activated = Result<Option<Located>, StoreError>;

/// A stored room as an activation found it.
enum Found {
    Gone,
    /// The record, with this node's lease of it when there are leases, and the seats its
    /// previous owner stored (a takeover).
    Record(Box<RoomRecord>, Option<Lease>, Vec<Seat>),
    Elsewhere(Owner),
}

pub struct Registry {
    rooms: Directory,
    services: Arc<RoomServices>,
    /// Rooms whose record is being read from the store, with every request waiting for
    /// it: concurrent first uses of one room share one read and get one actor.
    loading: HashMap<String, Vec<oneshot::Sender<Activated>>>,
    generation: u64,
}

impl Registry {
    fn rooms(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        // Each write is a single insert or remove, so a poisoned lock is still consistent.
        self.rooms.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of a room whose actor runs.
    fn live(&self, id: &str) -> Option<RoomHandle> {
        self.rooms
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(id)
            .and_then(Entry::handle)
    }

    /// Starts the actor of a room, unless one runs already (a room created while it was
    /// being activated, or activated while it was being created). `activated`: the record
    /// comes from the store, and observers hear of it as `Activated` (a created room has
    /// been published as `RoomCreated` already).
    fn start_room(
        &mut self,
        record: Arc<RoomRecord>,
        activated: bool,
        lease: Option<Lease>,
        seats: Vec<Seat>,
        ctx: &mut Context<Self>,
    ) -> RoomHandle {
        if let Some(handle) = self.live(&record.id) {
            return handle;
        }
        self.generation += 1;
        let generation = self.generation;
        let (snapshot, peers) = (snapshot_of(&record), Peers::default());
        if activated {
            self.services.publish(&RoomEvent::Activated(record.clone()));
        }
        let actor = RoomActor::new(
            record.clone(),
            self.services.clone(),
            ctx.address(),
            snapshot.clone(),
            peers.clone(),
            generation,
            lease,
            seats,
        );
        let addr = actor.start();
        let handle = RoomHandle::new(addr.clone(), peers.clone(), snapshot.clone());
        // Replaces the entry of an actor that has stopped and not yet said so.
        self.rooms().insert(
            record.id.clone(),
            Entry {
                addr,
                snapshot,
                peers,
                generation,
            },
        );
        handle
    }

    /// Prepares a stored record for its new actor.
    fn activated_record(&self, mut record: RoomRecord) -> Arc<RoomRecord> {
        let now = now_ms();
        // Nobody is connected to a room that was just activated.
        record.participant_count = 0;
        // A token signed with another secret (a generated one, or a rotated one) or
        // expired is replaced, so every active room has a working token.
        if record.token_is_stale(now) || self.services.tokens.verify(&record.token).is_err() {
            record.refresh_token(&self.services.tokens, now);
        }
        Arc::new(record)
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

/// Starts the actor of a room just created (and written to the store).
#[derive(Message)]
#[rtype(result = "()")]
struct Register(Arc<RoomRecord>, Option<Lease>);

impl Handler<Register> for Registry {
    type Result = ();

    fn handle(&mut self, Register(record, lease): Register, ctx: &mut Context<Self>) {
        self.start_room(record, false, lease, Vec::new(), ctx);
    }
}

/// Finds a room's actor, starting it from the stored record when it has none.
#[derive(Message)]
#[rtype(result = "Result<Option<Located>, StoreError>")]
struct Activate(String);

impl Handler<Activate> for Registry {
    type Result = ResponseFuture<Activated>;

    fn handle(&mut self, Activate(id): Activate, ctx: &mut Context<Self>) -> Self::Result {
        if let Some(handle) = self.live(&id) {
            return Box::pin(async move { Ok(Some(Located::Here(handle))) });
        }
        let (tx, rx) = oneshot::channel();
        match self.loading.entry(id.clone()) {
            // Another request is reading this room: wait for the same answer.
            Slot::Occupied(mut waiting) => waiting.get_mut().push(tx),
            Slot::Vacant(slot) => {
                slot.insert(vec![tx]);
                let services = self.services.clone();
                let key = id.clone();
                // Spawned, not awaited: the registry goes on with other rooms meanwhile.
                ctx.spawn(
                    async move { find(&services, &key).await }
                        .into_actor(self)
                        .map(move |stored, act, ctx| {
                            let answer = match stored {
                                Ok(Found::Record(record, lease, seats)) => {
                                    let record = act.activated_record(*record);
                                    Ok(Some(Located::Here(
                                        act.start_room(record, true, lease, seats, ctx),
                                    )))
                                }
                                // Created since the read began: its actor runs now.
                                Ok(Found::Gone) => Ok(act.live(&id).map(Located::Here)),
                                Ok(Found::Elsewhere(owner)) => Ok(Some(Located::Elsewhere(owner))),
                                Err(e) => Err(e),
                            };
                            for waiter in act.loading.remove(&id).unwrap_or_default() {
                                let _ = waiter.send(answer.clone());
                            }
                        }),
                );
            }
        }
        // A dropped sender means the registry is stopping: no room then.
        Box::pin(async move { rx.await.unwrap_or(Ok(None)) })
    }
}

/// Reads a room for its activation. With leases, a stored room is claimed: this node takes
/// its lease (and reads the record again, as the previous owner last wrote it), or learns
/// which node holds it. A room that is not stored is never claimed (no fence is made up
/// for an id that names nothing).
async fn find(services: &RoomServices, id: &str) -> Result<Found, StoreError> {
    let Some(record) = services.store.get(id, now_ms()).await? else {
        return Ok(Found::Gone);
    };
    let Some(owning) = &services.ownership else {
        return Ok(Found::Record(Box::new(record), None, Vec::new()));
    };
    match owning.claim(id).await? {
        Claim::Elsewhere(owner) => Ok(Found::Elsewhere(owner)),
        Claim::Mine(lease) => match owning.get(id, now_ms()).await? {
            Some(record) => {
                // What the previous owner stored of its seats, if it died with some: a
                // failed read starts the room empty, as before seats were stored.
                let seats = owning.seats(id).await.unwrap_or_else(|e| {
                    tracing::warn!(room = %id, error = %e, "could not read a room's seats");
                    Vec::new()
                });
                if !seats.is_empty() {
                    // Listed as this node's at once, so that they are found again should
                    // this node die before its first write.
                    owning.list_seated(id, true).await;
                }
                Ok(Found::Record(Box::new(record), Some(lease), seats))
            }
            None => {
                // Deleted meanwhile (which removed the lease too) or expired.
                let _ = owning.leases.release(&lease).await;
                Ok(Found::Gone)
            }
        },
    }
}

/// Sent by a room actor when it stops (deleted, expired or passivated).
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RoomGone {
    pub id: String,
    pub generation: u64,
}

impl Handler<RoomGone> for Registry {
    type Result = ();

    fn handle(&mut self, gone: RoomGone, _: &mut Context<Self>) {
        // Only the stopped actor's own entry: the room may have a newer actor already.
        let mut rooms = self.rooms();
        if rooms
            .get(&gone.id)
            .is_some_and(|e| e.generation == gone.generation)
        {
            rooms.remove(&gone.id);
        }
    }
}

/// One page of the room list.
pub struct Page {
    pub rooms: Vec<Arc<RoomRecord>>,
    /// The cursor of the next page, when more rooms follow.
    pub next: Option<Cursor>,
}

/// The cloneable handle on the registry.
#[derive(Clone)]
pub struct Rooms {
    registry: Addr<Registry>,
    directory: Directory,
    services: Arc<RoomServices>,
}

/// A room just stored, and the nodes that should start it when it is not this one (in
/// order: the first that starts it has it).
pub struct Created {
    pub record: Arc<RoomRecord>,
    pub place_elsewhere: Vec<Owner>,
}

impl Rooms {
    /// Starts the registry actor on the current arbiter.
    pub fn start(services: RoomServices) -> Self {
        let services = Arc::new(services);
        let directory = Directory::default();
        let registry = Registry {
            rooms: directory.clone(),
            services: services.clone(),
            loading: HashMap::new(),
            generation: 0,
        }
        .start();
        Self {
            registry,
            directory,
            services,
        }
    }

    pub fn limits(&self) -> Limits {
        self.services.limits
    }

    pub fn services(&self) -> &Arc<RoomServices> {
        &self.services
    }

    async fn register(&self, record: Arc<RoomRecord>) {
        let lease = match &self.services.ownership {
            None => None,
            // A new room, placed here: nobody holds its lease, so this node takes it.
            Some(owning) => match owning.claim_placed(&record.id).await {
                Ok(Claim::Mine(lease)) => Some(lease),
                Ok(Claim::Elsewhere(owner)) => {
                    tracing::warn!(room = %record.id, owner = %owner.node, "a new room is owned by another node");
                    return;
                }
                Err(e) => {
                    // Stored all the same: the room's first use activates it.
                    tracing::warn!(room = %record.id, error = %e, "could not take a new room's lease");
                    return;
                }
            },
        };
        // The registry lives as long as the system; a failed send means it is shutting down.
        let _ = self.registry.send(Register(record, lease)).await;
    }

    /// Creates a room: written to the store first, so a 200 means the room is stored. With
    /// `cluster` the room goes to the least-loaded node: this one starts it, or the answer
    /// names the node that should (the caller has it activated there); when every node is at
    /// its limit nothing is stored.
    pub async fn create(&self, new: NewRoom) -> Result<Created, StoreError> {
        let s = &self.services;
        let placement = match &s.ownership {
            None => Placement::Here,
            Some(owning) => owning.place().await?,
        };
        let place_elsewhere = match placement {
            Placement::Here => Vec::new(),
            Placement::There(owners) => owners,
            Placement::Full => return Err(StoreError(super::ownership::FULL.to_string())),
        };
        let now = now_ms();
        let id = format!("RO-{}", uuid::Uuid::new_v4());
        let nonce = uuid::Uuid::new_v4().simple().to_string();
        let (token, token_expires_at) =
            s.tokens
                .issue(&id, &nonce, now / 1000, s.room_token_ttl_seconds);
        let record = Arc::new(RoomRecord {
            id,
            name: new.name,
            description: new.description,
            creation_time: now,
            modification_time: now,
            conference_type: new.conference_type.unwrap_or(ConferenceType::Mesh),
            auto_upgrade_participant_count: new.auto_upgrade_participant_count,
            room_token_ttl_seconds: s.room_token_ttl_seconds,
            room_ttl_seconds: s.room_ttl_seconds,
            endpoint_ttl_seconds: s.endpoint_ttl_seconds,
            nonce,
            token,
            token_expires_at,
            participant_count: 0,
            access: Default::default(),
        });
        s.store.create(&record).await?;
        s.publish(&RoomEvent::RoomCreated(record.clone()));
        if place_elsewhere.is_empty() {
            self.register(record.clone()).await;
        }
        Ok(Created {
            record,
            place_elsewhere,
        })
    }

    fn directory(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.directory.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of an active room, from the directory, without a mailbox trip.
    pub fn active(&self, id: &str) -> Option<RoomHandle> {
        self.directory().get(id).and_then(Entry::handle)
    }

    /// Tells of the end of rooms that expired without an actor (passivated, or never
    /// activated since a restart), and drops them from the store; answers how many. A room
    /// with an actor here, or (with `cluster`) a lease anywhere, is left to its actor,
    /// whose expiry timer tells of its end and removes it. Of several nodes sweeping one
    /// Redis, only the one whose `finish_expired` takes the room out of the expiry index
    /// publishes its `RoomExpired` (no seats: nobody sits in a room without an actor), so
    /// the webhooks (through the outbox, with Redis) send exactly one `roomFinished`.
    pub async fn sweep(&self, now: u64) -> Result<usize, StoreError> {
        const BATCH: usize = 1000;
        let store = &self.services.store;
        let mut finished = 0;
        loop {
            let expired = store.expired(now, BATCH).await?;
            let (listed, mut done) = (expired.len(), 0);
            for room in expired {
                if self.active(&room.id).is_some() {
                    continue;
                }
                if let Some(owning) = &self.services.ownership
                    && owning.leases.holder(&room.id).await?.is_some()
                {
                    continue;
                }
                if store.finish_expired(&room).await? {
                    tracing::info!(room = %room.id, "room expired without an actor");
                    self.services.publish(&RoomEvent::RoomExpired {
                        room_id: room.id,
                        seats: 0,
                    });
                    done += 1;
                }
            }
            finished += done;
            // Rooms left to their actors stay listed: another batch only while this one
            // was full and moved something.
            if listed < BATCH || done == 0 {
                return Ok(finished);
            }
        }
    }

    /// The handle of a room's actor, activated from the store when the room has none;
    /// `None` when there is no such room, `Elsewhere` when another node owns it.
    async fn get(&self, id: &str) -> Result<Option<RoomHandle>, RoomError> {
        if let Some(handle) = self.active(id) {
            return Ok(Some(handle));
        }
        match self.registry.send(Activate(id.to_string())).await {
            Ok(Ok(Some(Located::Here(handle)))) => Ok(Some(handle)),
            Ok(Ok(Some(Located::Elsewhere(owner)))) => Err(RoomError::Elsewhere(owner)),
            Ok(Ok(None)) => Ok(None),
            Ok(Err(e)) => Err(e.into()),
            // The registry has stopped: the service is shutting down.
            Err(_) => Ok(None),
        }
    }

    /// Runs `op` on the room's actor; `op` answers `None` when the actor had stopped
    /// before it handled the message. A handle taken just before the actor passivated
    /// finds it stopped, so that case goes through activation once more; a room deleted
    /// or expired meanwhile is no longer in the store, and answers `None`.
    async fn with_room<T, F, Fut>(&self, id: &str, op: F) -> Result<Option<T>, RoomError>
    where
        F: Fn(RoomHandle) -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        for _ in 0..2 {
            let Some(room) = self.get(id).await? else {
                return Ok(None);
            };
            if let Some(done) = op(room).await {
                return Ok(Some(done));
            }
        }
        Ok(None)
    }

    /// An active room's published record, unless it has expired.
    fn snapshot(&self, id: &str, now: u64) -> Option<Arc<Published>> {
        let directory = self.directory();
        read_snapshot(&directory.get(id)?.snapshot).filter(|p| !p.record.is_expired(now))
    }

    /// A room's published JSON; `NotFound` when there is none. Answered from the room's
    /// snapshot (the room is activated first when it has no actor); only a token that
    /// needs replacing takes a trip to the room's actor.
    pub async fn fetch(&self, id: &str) -> Result<Bytes, RoomError> {
        let now = now_ms();
        let limits = &self.services.limits;
        let published = match self.snapshot(id, now) {
            Some(published) => Some(published),
            None => match self.get(id).await? {
                Some(_) => self.snapshot(id, now),
                None => None,
            },
        };
        let json = match published {
            Some(published) if !published.record.token_is_stale(now) => {
                Some(published.json(limits))
            }
            Some(_) => self
                .with_room(id, |room| async move { room.record().await })
                .await?
                .map(|record| {
                    serde_json::to_vec(&record.view(limits))
                        .expect("a room always serializes")
                        .into()
                }),
            None => None,
        };
        json.ok_or_else(|| RoomError::NotFound(id.to_string()))
    }

    /// Deletes a room; `NotFound` when there is none, `Store` when the store fails (and
    /// then the room stays).
    pub async fn delete(&self, id: &str) -> Result<Arc<RoomRecord>, RoomError> {
        match self
            .with_room(id, |room| async move { room.delete().await.transpose() })
            .await?
        {
            Some(deleted) => Ok(deleted?),
            None => Err(RoomError::NotFound(id.to_string())),
        }
    }

    /// The room's participants in join order; `NotFound` when there is no room.
    pub async fn participants(&self, id: &str) -> Result<Vec<ParticipantState>, RoomError> {
        self.with_room(id, |room| async move { room.participants().await })
            .await?
            .ok_or_else(|| RoomError::NotFound(id.to_string()))
    }

    /// Removes a participant on an admin's request, banning its identity with `ban`;
    /// `NotFound` when there is no room, `Store` when the ban could not be written.
    pub async fn kick(
        &self,
        id: &str,
        address: &str,
        ban: Option<Ban>,
    ) -> Result<Kicked, RoomError> {
        match self
            .with_room(id, |room| async move { room.kick(address, ban).await })
            .await?
        {
            Some(kicked) => Ok(kicked?),
            None => Err(RoomError::NotFound(id.to_string())),
        }
    }

    /// Rotates a room's token (see `RoomState::rotate_token`): answers the record with
    /// the new token once the store has it.
    pub async fn rotate_token(&self, id: &str) -> Result<Arc<RoomRecord>, RoomError> {
        match self
            .with_room(id, |room| async move { room.rotate_token().await })
            .await?
        {
            Some(record) => Ok(record?),
            None => Err(RoomError::NotFound(id.to_string())),
        }
    }

    /// Issues a participant token of room `id` for `grant`, valid for `ttl_seconds`:
    /// the token and its expiry (seconds since the epoch). `NotFound` when there is no
    /// room. It needs only the room's nonce, which never changes: from the active room's
    /// snapshot, or else read from the store (the room is not activated, and another
    /// node's room needs no forward).
    pub async fn participant_token(
        &self,
        id: &str,
        grant: Grant,
        ttl_seconds: u64,
    ) -> Result<(String, u64), RoomError> {
        let now = now_ms();
        let record = match self.snapshot(id, now) {
            Some(published) => published.record.clone(),
            None => Arc::new(
                self.services
                    .store
                    .get(id, now)
                    .await?
                    .ok_or_else(|| RoomError::NotFound(id.to_string()))?,
            ),
        };
        Ok(self.services.tokens.issue_participant(
            &record.id,
            &record.nonce,
            grant,
            now / 1000,
            ttl_seconds,
        ))
    }

    /// Takes a seat (or resumes one) in room `id` for a socket; answers the room's handle
    /// and the participant's address. A store failure while activating the room is
    /// `JoinRefused::Unavailable`.
    pub async fn join(
        &self,
        id: &str,
        nonce: String,
        request: JoinRequest,
        session: u64,
        tx: mpsc::Sender<Outbound>,
    ) -> Result<(RoomHandle, String), JoinRefused> {
        let joined = self
            .with_room(id, |room| {
                let (nonce, request, tx) = (nonce.clone(), request.clone(), tx.clone());
                async move {
                    match room.join(nonce, request, session, tx).await {
                        // The actor stopped before it saw the join: try once more.
                        Err(JoinRefused::Gone) => None,
                        joined => Some(joined.map(|address| (room, address))),
                    }
                }
            })
            .await;
        match joined {
            Ok(Some(joined)) => joined,
            Ok(None) => Err(JoinRefused::Gone),
            Err(RoomError::Elsewhere(owner)) => Err(JoinRefused::Elsewhere(owner)),
            Err(e) => {
                tracing::warn!(room = %id, error = ?e, "could not activate a room for a join");
                Err(JoinRefused::Unavailable)
            }
        }
    }

    /// With `cluster`: takes over the rooms with seats of nodes that left the live node
    /// list, without waiting for a client to use them. The rooms of such a node (as listed
    /// by `store::Seated`) are shared among the live nodes under their limits by a hash of
    /// the room id, so that each is claimed by one node; a room whose dead owner's lease
    /// has not expired yet is looked at again at the next call. Entries that no longer hold
    /// (the room is gone, or another live node has it) are dropped. Answers how many rooms
    /// this node took over.
    pub async fn adopt_orphans(&self) -> Result<usize, StoreError> {
        let Some(owning) = &self.services.ownership else {
            return Ok(0);
        };
        if owning.is_draining() {
            return Ok(0);
        }
        let listed = owning.seated.nodes().await?;
        if listed.is_empty() {
            return Ok(0);
        }
        let me = owning.leases.node();
        let live = owning.nodes.live().await?;
        let dead: Vec<String> = listed
            .into_iter()
            .filter(|node| node != me && !live.iter().any(|n| &n.id == node))
            .collect();
        if dead.is_empty() {
            return Ok(0);
        }
        // Who shares the work: the live nodes that may take rooms (this one as it is now).
        let mut open: Vec<&str> = live
            .iter()
            .filter(|n| n.id != me && !n.is_full())
            .map(|n| n.id.as_str())
            .collect();
        if !owning.is_full_now() {
            open.push(me);
        }
        open.sort_unstable();
        let Some(mine) = open.iter().position(|id| *id == me) else {
            return Ok(0);
        };
        let mut taken = 0;
        for node in dead {
            for room in owning.seated.rooms(&node).await? {
                if share(&room, open.len()) != mine {
                    continue;
                }
                let done = match self.registry.send(Activate(room.clone())).await {
                    // Gone (deleted or expired): nothing to take.
                    Ok(Ok(None)) => true,
                    Ok(Ok(Some(Located::Here(_)))) => {
                        tracing::info!(%room, dead = %node, "took over a room with seats of a node that left");
                        taken += 1;
                        true
                    }
                    // Another live node has it already.
                    Ok(Ok(Some(Located::Elsewhere(owner)))) => owner.node != node,
                    // The dead node's lease still holds, or the store failed: next time.
                    Ok(Err(_)) | Err(_) => false,
                };
                if done && let Err(e) = owning.seated.unmark(&node, &room).await {
                    tracing::warn!(%room, error = %e, "could not update the list of rooms with seats");
                }
            }
        }
        Ok(taken)
    }

    /// Hands every active room to another node (a draining node; see
    /// `RoomHandle::hand_over`), a few at a time, for at most `timeout`: answers each
    /// handed room's outcome. Rooms not handed in time stay here (the shutdown releases
    /// their leases as before).
    pub async fn hand_over_all(&self, start: StartElsewhere, timeout: Duration) -> Vec<HandedOver> {
        use futures_util::StreamExt;
        let rooms: Vec<RoomHandle> = self
            .directory()
            .values()
            .filter_map(Entry::handle)
            .collect();
        let mut handing = futures_util::stream::iter(rooms)
            .map(|room| {
                let start = start.clone();
                async move { room.hand_over(start).await }
            })
            .buffer_unordered(16);
        let mut outcomes = Vec::new();
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                next = handing.next() => match next {
                    Some(outcome) => outcomes.push(outcome),
                    None => break,
                },
                _ = &mut deadline => {
                    tracing::warn!("some rooms were not handed over in time");
                    break;
                }
            }
        }
        outcomes
    }

    /// Stops every active room's actor and releases its lease (at a clean shutdown),
    /// waiting at most `timeout`; a lease not released expires.
    pub async fn release_leases(&self, timeout: Duration) {
        let rooms: Vec<RoomHandle> = self
            .directory()
            .values()
            .filter_map(Entry::handle)
            .collect();
        let released = futures_util::future::join_all(rooms.iter().map(RoomHandle::surrender));
        if tokio::time::timeout(timeout, released).await.is_err() {
            tracing::warn!("some room leases were not released in time; they expire");
        }
    }

    /// A page of rooms, newest first, strictly after `after`.
    pub async fn page(&self, after: Option<&Cursor>, limit: usize) -> Result<Page, StoreError> {
        let now = now_ms();
        let mut stored = self.services.store.page(after, limit + 1, now).await?;
        let next = if stored.len() > limit {
            stored.truncate(limit);
            stored.last().map(Cursor::of)
        } else {
            None
        };
        // An active room is shown as its actor published it: its token was issued by this
        // run. Otherwise the stored token may be signed with a secret this run does not have
        // (a generated one, or a rotated one). Either may be stale. Every listed room gets
        // a working token.
        let live: Vec<Option<Arc<Published>>> = {
            let directory = self.directory();
            stored
                .iter()
                .map(|r| {
                    directory
                        .get(&r.id)
                        .and_then(|e| read_snapshot(&e.snapshot))
                })
                .collect()
        };
        let tokens = &self.services.tokens;
        let rooms = stored
            .into_iter()
            .zip(live)
            .map(|(stored, live)| match live {
                Some(live) if !live.record.token_is_stale(now) => live.record.clone(),
                _ => {
                    let mut room = stored;
                    if room.token_is_stale(now) || tokens.verify(&room.token).is_err() {
                        room.refresh_token(tokens, now);
                    }
                    Arc::new(room)
                }
            })
            .collect();
        Ok(Page { rooms, next })
    }
}

/// Which of `n` nodes takes the room `id` over (FNV-1a of the id: the same on every node
/// and every build).
fn share(id: &str, n: usize) -> usize {
    let hash = id.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    (hash % n.max(1) as u64) as usize
}
