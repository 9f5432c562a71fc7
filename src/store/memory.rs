//! The in-memory store: the default, so `cargo run` needs nothing else.

use super::{Cursor, ExpiredRoom, Store, StoreError};
use crate::model::RoomRecord;
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

/// Rooms ordered by `(creation_time, id)`, so a page is one range walk, and each room's
/// creation time by id, so a room is found by id without a walk.
#[derive(Default)]
pub struct MemoryStore {
    rooms: Mutex<Rooms>,
}

#[derive(Default)]
struct Rooms {
    by_time: BTreeMap<(u64, String), RoomRecord>,
    created: HashMap<String, u64>,
}

impl Rooms {
    fn insert(&mut self, room: &RoomRecord) {
        self.created.insert(room.id.clone(), room.creation_time);
        self.by_time.insert(key(room), room.clone());
    }

    fn remove(&mut self, room: &RoomRecord) {
        if self.by_time.remove(&key(room)).is_some() {
            self.created.remove(&room.id);
        }
    }
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn rooms(&self) -> std::sync::MutexGuard<'_, Rooms> {
        // A panic while holding the lock cannot leave the maps half-written (no operation
        // can panic between its two writes), so a poisoned lock is still usable.
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn key(room: &RoomRecord) -> (u64, String) {
    (room.creation_time, room.id.clone())
}

#[async_trait]
impl Store for MemoryStore {
    async fn create(&self, room: &RoomRecord) -> Result<(), StoreError> {
        self.rooms().insert(room);
        Ok(())
    }

    async fn update(&self, room: &RoomRecord) -> Result<(), StoreError> {
        if let Some(stored) = self.rooms().by_time.get_mut(&key(room)) {
            *stored = room.clone();
        }
        Ok(())
    }

    async fn get(&self, id: &str, now_ms: u64) -> Result<Option<RoomRecord>, StoreError> {
        let rooms = self.rooms();
        Ok(rooms
            .created
            .get(id)
            .and_then(|&time| rooms.by_time.get(&(time, id.to_string())))
            .filter(|r| !r.is_expired(now_ms))
            .cloned())
    }

    async fn delete(&self, room: &RoomRecord) -> Result<(), StoreError> {
        self.rooms().remove(room);
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
            Some(c) => rooms.by_time.range(..(c.creation_time, c.id.clone())),
            None => rooms.by_time.range(..),
        };
        Ok(range
            .rev()
            .map(|(_, r)| r)
            .filter(|r| !r.is_expired(now_ms))
            .take(limit)
            .cloned()
            .collect())
    }

    async fn sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut guard = self.rooms();
        let rooms = &mut *guard;
        let before = rooms.by_time.len();
        let created = &mut rooms.created;
        rooms.by_time.retain(|_, r| {
            let keep = !r.is_expired(now_ms);
            if !keep {
                created.remove(&r.id);
            }
            keep
        });
        Ok(before - rooms.by_time.len())
    }

    async fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredRoom>, StoreError> {
        let rooms = self.rooms();
        let mut expired: Vec<&RoomRecord> = rooms
            .by_time
            .values()
            .filter(|r| r.is_expired(now_ms))
            .collect();
        expired.sort_by_key(|r| r.expires_at());
        Ok(expired
            .into_iter()
            .take(limit)
            .map(|r| ExpiredRoom {
                id: r.id.clone(),
                creation_time: r.creation_time,
            })
            .collect())
    }

    async fn finish_expired(&self, room: &ExpiredRoom) -> Result<bool, StoreError> {
        let mut rooms = self.rooms();
        let removed = rooms
            .by_time
            .remove(&(room.creation_time, room.id.clone()))
            .is_some();
        if removed {
            rooms.created.remove(&room.id);
        }
        Ok(removed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConferenceType;

    fn room(id: &str, creation_time: u64, ttl_seconds: u64) -> RoomRecord {
        RoomRecord {
            id: id.to_string(),
            name: None,
            description: None,
            creation_time,
            modification_time: creation_time,
            conference_type: ConferenceType::Mesh,
            auto_upgrade_participant_count: None,
            room_token_ttl_seconds: 60,
            room_ttl_seconds: ttl_seconds,
            endpoint_ttl_seconds: 60,
            nonce: "n".into(),
            token: "t".into(),
            token_expires_at: 0,
            participant_count: 0,
            access: Default::default(),
        }
    }

    #[tokio::test]
    async fn get_finds_a_room_by_id_until_it_expires() {
        let store = MemoryStore::new();
        let (a, b) = (room("RO-a", 1_000, 10), room("RO-b", 2_000, 10));
        store.create(&a).await.unwrap();
        store.create(&b).await.unwrap();
        assert_eq!(store.get("RO-a", 1_000).await.unwrap(), Some(a.clone()));
        assert_eq!(store.get("RO-b", 11_999).await.unwrap(), Some(b.clone()));
        assert_eq!(store.get("RO-c", 1_000).await.unwrap(), None);
        // Expired: gone for `get` even before a sweep removes it.
        assert_eq!(store.get("RO-a", 11_000).await.unwrap(), None);
        assert_eq!(store.get("RO-b", 12_000).await.unwrap(), None);
    }

    #[tokio::test]
    async fn get_sees_updates_and_not_deleted_or_swept_rooms() {
        let store = MemoryStore::new();
        let a = room("RO-a", 1_000, 10);
        store.create(&a).await.unwrap();
        let changed = RoomRecord {
            participant_count: 3,
            conference_type: ConferenceType::Sfu,
            ..a.clone()
        };
        store.update(&changed).await.unwrap();
        assert_eq!(store.get("RO-a", 1_000).await.unwrap(), Some(changed));
        store.delete(&a).await.unwrap();
        assert_eq!(store.get("RO-a", 1_000).await.unwrap(), None);
        // A room already gone stays gone.
        store.update(&a).await.unwrap();
        assert_eq!(store.get("RO-a", 1_000).await.unwrap(), None);

        let (b, c) = (room("RO-b", 1_000, 1), room("RO-c", 1_000, 100));
        store.create(&b).await.unwrap();
        store.create(&c).await.unwrap();
        assert_eq!(store.sweep(5_000).await.unwrap(), 1);
        assert!(
            !store.rooms().created.contains_key("RO-b"),
            "id index swept too"
        );
        assert_eq!(store.get("RO-b", 1_000).await.unwrap(), None);
        assert_eq!(store.get("RO-c", 5_000).await.unwrap(), Some(c));
    }

    #[tokio::test]
    async fn an_expired_room_is_finished_once() {
        let store = MemoryStore::new();
        let (a, b, c) = (
            room("RO-a", 1_000, 3),
            room("RO-b", 2_000, 1),
            room("RO-c", 1_000, 100),
        );
        for r in [&a, &b, &c] {
            store.create(r).await.unwrap();
        }
        let expired = store.expired(5_000, 10).await.unwrap();
        let ids: Vec<&str> = expired.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(
            ids,
            ["RO-b", "RO-a"],
            "earliest expiry first, live rooms not"
        );
        assert_eq!(store.expired(5_000, 1).await.unwrap().len(), 1);
        assert!(store.finish_expired(&expired[0]).await.unwrap());
        assert!(!store.finish_expired(&expired[0]).await.unwrap(), "once");
        store.delete(&a).await.unwrap();
        assert!(
            !store.finish_expired(&expired[1]).await.unwrap(),
            "a room removed meanwhile is not finished again"
        );
        assert!(store.expired(5_000, 10).await.unwrap().is_empty());
        assert!(!store.rooms().created.contains_key("RO-b"));
    }
}
