//! The in-memory store: the default, so `cargo run` needs nothing else.

use super::{Cursor, Store, StoreError};
use crate::model::RoomRecord;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Rooms ordered by `(creation_time, id)`, so a page is one range walk.
#[derive(Default)]
pub struct MemoryStore {
    rooms: Mutex<BTreeMap<(u64, String), RoomRecord>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, BTreeMap<(u64, String), RoomRecord>> {
        // A panic while holding the lock cannot leave the map half-written (every
        // operation is a single insert or remove), so a poisoned lock is still usable.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(room: &RoomRecord) -> (u64, String) {
    (room.creation_time, room.id.clone())
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, room: &RoomRecord) -> Result<(), StoreError> {
        self.rooms().insert(key(room), room.clone());
        Ok(())
    }

    async fn update(&self, room: &RoomRecord) -> Result<(), StoreError> {
        if let Some(stored) = self.rooms().get_mut(&key(room)) {
            *stored = room.clone();
        }
        Ok(())
    }

    async fn delete(&self, room: &RoomRecord) -> Result<(), StoreError> {
        self.rooms().remove(&key(room));
        Ok(())
    }

    async fn page(
        &self,
        after: Option<&Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        let rooms = self.rooms();
        let range = match after {
            Some(c) => rooms.range(..(c.creation_time, c.id.clone())),
            None => rooms.range(..),
        };
        Ok(range
            .rev()
            .map(|(_, r)| r)
            .filter(|r| !r.is_expired(now_ms))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn load_all(&self, now_ms: u64) -> Result<Vec<RoomRecord>, StoreError> {
        Ok(self
            .rooms()
            .values()
            .filter(|r| !r.is_expired(now_ms))
            .cloned()
            .collect())
    }

    async fn sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut rooms = self.rooms();
        let before = rooms.len();
        rooms.retain(|_, r| !r.is_expired(now_ms));
        Ok(before - rooms.len())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
