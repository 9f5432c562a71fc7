//! Storage of room records: a trait, an in-memory implementation (the default) and a Redis
//! one. Redis is the source of truth across restarts; the actors hold the live state.
//! With Redis, also what several nodes on one Redis share: the registry of live nodes and
//! fenced room-ownership leases (see `docs/cluster.md`), and the webhook outbox
//! (`docs/webhooks.md`), and the cluster's admin event stream (`docs/admin.md`).

mod admin_log;
mod bus;
mod conn;
mod lease;
mod memory;
mod nodes;
mod outbox;
mod redis;
mod seated;

pub use admin_log::{AdminLog, LogEntry};
pub use bus::{Bus, BusEvent};
pub use conn::Redis;
pub use lease::{FencedError, Lease, Leases};
pub use memory::MemoryStore;
pub use nodes::{NodeInfo, Nodes};
pub use outbox::{Outbox, OutboxEntry};
pub use redis::RedisStore;
pub use seated::Seated;

/// A stored room whose expiry has passed, as the store's expiry index names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredRoom {
    pub id: String,
    pub creation_time: u64,
}

use crate::model::{Cursor, RoomRecord, StoreError};
use async_trait::async_trait;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes a new room, with an expiry at its `expires_at`, and adds it to the index.
    async fn create(&self, room: &RoomRecord) -> Result<(), StoreError>;
    /// Replaces a room that is still stored; a room already gone stays gone.
    async fn update(&self, room: &RoomRecord) -> Result<(), StoreError>;
    /// One room by id: `None` when it is absent or has expired by `now_ms`. One round trip,
    /// whatever the number of rooms: rooms are activated on demand through it.
    async fn get(&self, id: &str, now_ms: u64) -> Result<Option<RoomRecord>, StoreError>;
    /// Removes a room and its index entries.
    async fn delete(&self, room: &RoomRecord) -> Result<(), StoreError>;
    /// Up to `limit` live rooms, newest first (by creation time, then id, both descending),
    /// strictly after `after`. Never slower because many rooms exist.
    async fn page(
        &self,
        after: Option<&Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<RoomRecord>, StoreError>;
    /// Drops rooms that expired from the index; returns how many.
    async fn sweep(&self, now_ms: u64) -> Result<usize, StoreError>;
    /// Up to `limit` rooms whose expiry has passed by `now_ms` and that the store still
    /// holds (only an actor's removal at expiry, or [`Store::finish_expired`], takes them
    /// out), earliest expiry first.
    async fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredRoom>, StoreError>;
    /// Removes an expired room (record and index entries) and answers whether this call
    /// took its entry out of the expiry index: of several callers at once (nodes sweeping
    /// the same Redis), exactly one gets `true`, so exactly one tells of the room's end.
    async fn finish_expired(&self, room: &ExpiredRoom) -> Result<bool, StoreError>;
    /// Whether the store answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
