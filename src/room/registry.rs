//! The registry actor owns the set of live rooms; [`Rooms`] is the cloneable handle that
//! REST handlers and signaling sessions use.
//!
//! The registry is the only writer of the room directory (id → the room actor's address,
//! and the record and seats that the actor publishes). Handles read it directly under a
//! read lock, so finding a room costs no trip through the registry's mailbox, and fetching
//! or listing rooms none through a room's: they read the published record.

use super::RoomServices;
use super::actor::{Peers, Published, RoomActor, RoomHandle, Snapshot, read_snapshot, snapshot_of};
use super::events::RoomEvent;
use crate::model::{
    ConferenceType, Cursor, Limits, NewRoom, RoomError, RoomRecord, StoreError, now_ms,
};
use actix::prelude::*;
use actix_web::web::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// Rooms handed to the registry at once while restoring.
const RESTORE_BATCH: usize = 1000;

/// A live room: its actor, and the record and the seats it publishes.
struct Entry {
    addr: Addr<RoomActor>,
    snapshot: Snapshot,
    peers: Peers,
}

/// Live rooms by id. Written only by the registry actor.
type Directory = Arc<RwLock<HashMap<String, Entry>>>;

pub struct Registry {
    rooms: Directory,
    services: Arc<RoomServices>,
}

impl Registry {
    fn rooms(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        // Each write is a single insert or remove, so a poisoned lock is still consistent.
        self.rooms.write().unwrap_or_else(|e| e.into_inner())
    }
}

impl Actor for Registry {
    type Context = Context<Self>;
}

/// Starts the actors of rooms that are already in the store.
#[derive(Message)]
#[rtype(result = "()")]
struct Register(Vec<Arc<RoomRecord>>);

impl Handler<Register> for Registry {
    type Result = ();

    fn handle(&mut self, Register(records): Register, ctx: &mut Context<Self>) {
        for record in records {
            let id = record.id.clone();
            let (snapshot, peers) = (snapshot_of(&record), Peers::default());
            let services = self.services.clone();
            let actor = RoomActor::new(
                record,
                services,
                ctx.address(),
                snapshot.clone(),
                peers.clone(),
            );
            let addr = actor.start();
            self.rooms().insert(
                id,
                Entry {
                    addr,
                    snapshot,
                    peers,
                },
            );
        }
    }
}

/// Sent by a room actor when it stops.
#[derive(Message)]
#[rtype(result = "()")]
pub(super) struct RoomGone(pub String);

impl Handler<RoomGone> for Registry {
    type Result = ();

    fn handle(&mut self, RoomGone(id): RoomGone, _: &mut Context<Self>) {
        // Room ids are never reused, so this is the stopped room's own entry.
        self.rooms().remove(&id);
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

impl Rooms {
    /// Starts the registry actor on the current arbiter.
    pub fn start(services: RoomServices) -> Self {
        let services = Arc::new(services);
        let directory = Directory::default();
        let registry = Registry {
            rooms: directory.clone(),
            services: services.clone(),
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

    /// Starts an actor for every live room in the store; answers how many.
    pub async fn restore(&self) -> Result<usize, StoreError> {
        let now = now_ms();
        let rooms = self.services.store.load_all(now).await?;
        let count = rooms.len();
        let mut batch = Vec::with_capacity(RESTORE_BATCH);
        for mut record in rooms {
            // Nobody is connected to a room that was just restored.
            record.participant_count = 0;
            // A token signed with another secret (a generated one, or a rotated one) or
            // expired is replaced, so every restored room has a working token.
            if record.token_is_stale(now) || self.services.tokens.verify(&record.token).is_err() {
                record.refresh_token(&self.services.tokens, now);
            }
            batch.push(Arc::new(record));
            if batch.len() == RESTORE_BATCH {
                self.services
                    .publish(&RoomEvent::RoomsRestored(batch.clone()));
                self.register(std::mem::take(&mut batch)).await;
            }
        }
        self.services
            .publish(&RoomEvent::RoomsRestored(batch.clone()));
        self.register(batch).await;
        Ok(count)
    }

    async fn register(&self, records: Vec<Arc<RoomRecord>>) {
        // The registry lives as long as the system; a failed send means it is shutting down.
        let _ = self.registry.send(Register(records)).await;
    }

    /// Creates a room: written to the store first, so a 200 means the room is stored.
    pub async fn create(&self, new: NewRoom) -> Result<Arc<RoomRecord>, StoreError> {
        let s = &self.services;
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
        });
        s.store.create(&record).await?;
        s.publish(&RoomEvent::RoomCreated(record.clone()));
        self.register(vec![record.clone()]).await;
        Ok(record)
    }

    fn directory(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.directory.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The handle of a live room.
    pub async fn get(&self, id: &str) -> Option<RoomHandle> {
        self.directory()
            .get(id)
            .filter(|entry| entry.addr.connected())
            .map(|entry| RoomHandle::new(entry.addr.clone(), entry.peers.clone()))
    }

    /// A live room's published record, unless it has expired.
    fn snapshot(&self, id: &str, now: u64) -> Option<Arc<Published>> {
        let directory = self.directory();
        read_snapshot(&directory.get(id)?.snapshot).filter(|p| !p.record.is_expired(now))
    }

    /// A live room's published JSON; `NotFound` when there is none. Answered from
    /// the room's snapshot; only a token that needs replacing takes a trip to the room's actor.
    pub async fn fetch(&self, id: &str) -> Result<Bytes, RoomError> {
        let now = now_ms();
        let limits = &self.services.limits;
        let json = match self.snapshot(id, now) {
            Some(published) if !published.record.token_is_stale(now) => {
                Some(published.json(limits))
            }
            Some(_) => match self.get(id).await {
                Some(room) => room.record().await.map(|record| {
                    serde_json::to_vec(&record.view(limits))
                        .expect("a room always serializes")
                        .into()
                }),
                None => None,
            },
            None => None,
        };
        json.ok_or_else(|| RoomError::NotFound(id.to_string()))
    }

    /// Deletes a room; `NotFound` when there is none, `Store` when the store fails (and
    /// then the room stays).
    pub async fn delete(&self, id: &str) -> Result<Arc<RoomRecord>, RoomError> {
        let gone = || RoomError::NotFound(id.to_string());
        let Some(room) = self.get(id).await else {
            return Err(gone());
        };
        room.delete().await?.ok_or_else(gone)
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
        // A live room is shown as its actor published it: its token was issued by this
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
