//! Storage of room records: a trait, an in-memory implementation (the default) and a Redis
//! one. Redis is the source of truth across restarts; the actors hold the live state.

mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::RedisStore;

use crate::model::{Cursor, RoomRecord, StoreError};
use async_trait::async_trait;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Writes a new room, with an expiry at its `expires_at`, and adds it to the index.
    async fn create(&self, room: &RoomRecord) -> Result<(), StoreError>;
    /// Replaces a room that is still stored; a room already gone stays gone.
    async fn update(&self, room: &RoomRecord) -> Result<(), StoreError>;
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
    /// Every live room, for start-up.
    async fn load_all(&self, now_ms: u64) -> Result<Vec<RoomRecord>, StoreError>;
    /// Drops rooms that expired from the index; returns how many.
    async fn sweep(&self, now_ms: u64) -> Result<usize, StoreError>;
    /// Whether the store answers (for readiness).
    async fn ping(&self) -> Result<(), StoreError>;
}
