//! One actor per live room: it alone changes the room's state, and it stops when the room
//! is deleted or its `roomTTLSeconds` run out.

use super::registry::{Registry, RoomGone};
use super::{ConferenceType, RoomRecord, RoomServices, now_ms};
use crate::store::StoreError;
use actix::prelude::*;
use std::sync::Arc;
use std::time::Duration;

pub(super) struct RoomActor {
    record: RoomRecord,
    services: Arc<RoomServices>,
    registry: Addr<Registry>,
}

impl RoomActor {
    pub(super) fn new(
        record: RoomRecord,
        services: Arc<RoomServices>,
        registry: Addr<Registry>,
    ) -> Self {
        Self {
            record,
            services,
            registry,
        }
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
        let (store, record) = (self.services.store.clone(), self.record.clone());
        ctx.spawn(
            async move {
                if let Err(e) = store.update(&record).await {
                    tracing::warn!(room = %record.id, error = %e, "could not persist a room change");
                }
            }
            .into_actor(self),
        );
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
#[rtype(result = "RoomRecord")]
struct GetRecord;

impl Handler<GetRecord> for RoomActor {
    type Result = MessageResult<GetRecord>;

    fn handle(&mut self, _: GetRecord, ctx: &mut Context<Self>) -> Self::Result {
        let now = now_ms();
        if self.record.token_is_stale(now) {
            self.record.refresh_token(&self.services.tokens, now);
            self.persist(ctx);
        }
        MessageResult(self.record.clone())
    }
}

/// Removes the room from the store, then stops the actor. Atomic: no other message of this
/// room is handled while the store answers, so a room is deleted exactly once.
#[derive(Message)]
#[rtype(result = "Result<RoomRecord, StoreError>")]
struct Delete;

impl Handler<Delete> for RoomActor {
    type Result = AtomicResponse<Self, Result<RoomRecord, StoreError>>;

    fn handle(&mut self, _: Delete, _: &mut Context<Self>) -> Self::Result {
        let (store, record) = (self.services.store.clone(), self.record.clone());
        AtomicResponse::new(Box::pin(
            async move { store.delete(&record).await.map(|()| record) }
                .into_actor(self)
                .map(|result, _, ctx| {
                    if result.is_ok() {
                        ctx.stop();
                    }
                    result
                }),
        ))
    }
}

/// The number of joined participants changed; applies the MESH→SFU upgrade rule.
/// Answers the new conference type when this change upgraded the room.
#[derive(Message)]
#[rtype(result = "Option<ConferenceType>")]
struct ParticipantsChanged(u32);

impl Handler<ParticipantsChanged> for RoomActor {
    type Result = Option<ConferenceType>;

    fn handle(
        &mut self,
        ParticipantsChanged(count): ParticipantsChanged,
        ctx: &mut Context<Self>,
    ) -> Self::Result {
        let record = &mut self.record;
        record.participant_count = count;
        let upgrade = record.conference_type == ConferenceType::Mesh
            && record
                .auto_upgrade_participant_count
                .is_some_and(|at| count >= at);
        if upgrade {
            record.conference_type = ConferenceType::Sfu;
            record.modification_time = now_ms().max(record.modification_time);
            tracing::info!(room = %record.id, participants = count, "room upgraded to SFU");
        }
        self.persist(ctx);
        upgrade.then_some(ConferenceType::Sfu)
    }
}

/// A cloneable handle on one room's actor.
#[derive(Clone)]
pub struct RoomHandle {
    addr: Addr<RoomActor>,
}

impl RoomHandle {
    pub(super) fn new(addr: Addr<RoomActor>) -> Self {
        Self { addr }
    }

    /// The room's record; `None` once the room is gone.
    pub async fn record(&self) -> Option<RoomRecord> {
        self.addr.send(GetRecord).await.ok()
    }

    /// Deletes the room: `Ok(None)` when it was already gone.
    pub async fn delete(&self) -> Result<Option<RoomRecord>, StoreError> {
        match self.addr.send(Delete).await {
            Ok(result) => result.map(Some),
            Err(_) => Ok(None),
        }
    }

    /// Tells the room how many participants are joined; answers the new conference type
    /// when the room was upgraded by this change.
    pub async fn participants_changed(&self, count: u32) -> Option<ConferenceType> {
        self.addr
            .send(ParticipantsChanged(count))
            .await
            .ok()
            .flatten()
    }
}
