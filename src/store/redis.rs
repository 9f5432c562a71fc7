//! The Redis store.
//!
//! Keys, under a configurable prefix `P`:
//! - `P:room:{id}`: the room's JSON record, expiring when the room does (`PXAT`).
//! - `P:rooms`: the list index, a sorted set with every score 0 whose members are
//!   `{creationTime:013}|{id}`, so lexicographic order is creation order and a page is one
//!   `ZREVRANGEBYLEX` with `LIMIT`: O(log N + page), whatever the number of rooms.
//! - `P:rooms:expiry`: the same members scored by expiry time, so a sweep finds expired
//!   rooms without scanning and drops them from the index.
//!
//! Every operation is bounded by the configured timeout, so a slow or dead Redis turns
//! into a [`StoreError`] (and a 503) instead of a hang.

use super::{Cursor, Store, StoreError};
use crate::metrics::METRICS;
use crate::room::RoomRecord;
use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::future::Future;
use std::time::Duration;

/// Rooms fetched per round trip when loading everything at start-up.
const LOAD_BATCH: usize = 1000;

pub struct RedisStore {
    conn: ConnectionManager,
    timeout: Duration,
    prefix: String,
}

impl RedisStore {
    /// Creates the store without connecting; the first operation connects, and the
    /// connection manager reconnects by itself after Redis comes back.
    pub fn new(url: &str, prefix: &str, timeout: Duration) -> Result<Self, StoreError> {
        let client = redis::Client::open(url).map_err(|e| StoreError(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = client
            .get_connection_manager_lazy(config)
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(Self {
            conn,
            timeout,
            prefix: prefix.to_string(),
        })
    }

    fn room_key(&self, id: &str) -> String {
        format!("{}:room:{id}", self.prefix)
    }

    fn index_key(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    fn expiry_key(&self) -> String {
        format!("{}:rooms:expiry", self.prefix)
    }

    async fn timed<T>(
        &self,
        op: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                METRICS.store_error();
                Err(StoreError(e.to_string()))
            }
            Err(_) => {
                METRICS.store_error();
                Err(StoreError(format!(
                    "no answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }

    /// Reads the records of index members; members whose key has expired are dropped
    /// from the index on the way.
    async fn records(&self, members: &[String]) -> Result<Vec<RoomRecord>, StoreError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.room_key(member_id(m)))
            .collect();
        let mut conn = self.conn.clone();
        let values: Vec<Option<String>> = self.timed(conn.mget(&keys)).await?;
        let mut rooms = Vec::with_capacity(values.len());
        let mut gone = Vec::new();
        for (member, value) in members.iter().zip(values) {
            match value.and_then(|v| serde_json::from_str::<RoomRecord>(&v).ok()) {
                Some(room) => rooms.push(room),
                None => gone.push(member.clone()),
            }
        }
        if !gone.is_empty() {
            self.forget(&gone).await?;
        }
        Ok(rooms)
    }

    /// Removes members (and their keys) from both indexes.
    async fn forget(&self, members: &[String]) -> Result<(), StoreError> {
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.room_key(member_id(m)))
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrem(self.index_key(), members)
            .ignore()
            .zrem(self.expiry_key(), members)
            .ignore()
            .del(keys)
            .ignore();
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }
}

fn member(creation_time: u64, id: &str) -> String {
    format!("{creation_time:013}|{id}")
}

fn member_id(member: &str) -> &str {
    member.split_once('|').map_or(member, |(_, id)| id)
}

fn to_json(room: &RoomRecord) -> String {
    serde_json::to_string(room).expect("a room record always serializes")
}

#[async_trait]
impl Store for RedisStore {
    async fn create(&self, room: &RoomRecord) -> Result<(), StoreError> {
        let m = member(room.creation_time, &room.id);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(self.room_key(&room.id))
            .arg(to_json(room))
            .arg("PXAT")
            .arg(room.expires_at())
            .ignore()
            .zadd(self.index_key(), &m, 0)
            .ignore()
            .zadd(self.expiry_key(), &m, room.expires_at())
            .ignore();
        let mut conn = self.conn.clone();
        self.timed(pipe.query_async::<()>(&mut conn)).await
    }

    async fn update(&self, room: &RoomRecord) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("SET")
            .arg(self.room_key(&room.id))
            .arg(to_json(room))
            .arg("XX")
            .arg("PXAT")
            .arg(room.expires_at())
            .to_owned();
        self.timed(cmd.query_async::<Option<String>>(&mut conn))
            .await
            .map(drop)
    }

    async fn delete(&self, room: &RoomRecord) -> Result<(), StoreError> {
        self.forget(&[member(room.creation_time, &room.id)]).await
    }

    async fn page(
        &self,
        after: Option<&Cursor>,
        limit: usize,
        now_ms: u64,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        let mut rooms = Vec::with_capacity(limit);
        let mut max = match after {
            Some(c) => format!("({}", member(c.creation_time, &c.id)),
            None => "+".to_string(),
        };
        while rooms.len() < limit {
            let want = limit - rooms.len();
            let mut conn = self.conn.clone();
            let cmd = redis::cmd("ZREVRANGEBYLEX")
                .arg(self.index_key())
                .arg(&max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(want)
                .to_owned();
            let members: Vec<String> = self.timed(cmd.query_async(&mut conn)).await?;
            let Some(last) = members.last() else { break };
            max = format!("({last}");
            let exhausted = members.len() < want;
            rooms.extend(
                self.records(&members)
                    .await?
                    .into_iter()
                    .filter(|r| !r.is_expired(now_ms)),
            );
            if exhausted {
                break;
            }
        }
        Ok(rooms)
    }

    async fn load_all(&self, now_ms: u64) -> Result<Vec<RoomRecord>, StoreError> {
        self.sweep(now_ms).await?;
        let mut rooms = Vec::new();
        let mut min = "-".to_string();
        loop {
            let mut conn = self.conn.clone();
            let cmd = redis::cmd("ZRANGEBYLEX")
                .arg(self.index_key())
                .arg(&min)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(LOAD_BATCH)
                .to_owned();
            let members: Vec<String> = self.timed(cmd.query_async(&mut conn)).await?;
            let Some(last) = members.last() else { break };
            min = format!("({last}");
            let done = members.len() < LOAD_BATCH;
            rooms.extend(
                self.records(&members)
                    .await?
                    .into_iter()
                    .filter(|r| !r.is_expired(now_ms)),
            );
            if done {
                break;
            }
        }
        Ok(rooms)
    }

    async fn sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut swept = 0;
        loop {
            let mut conn = self.conn.clone();
            let cmd = redis::cmd("ZRANGEBYSCORE")
                .arg(self.expiry_key())
                .arg("-inf")
                .arg(now_ms)
                .arg("LIMIT")
                .arg(0)
                .arg(LOAD_BATCH)
                .to_owned();
            let members: Vec<String> = self.timed(cmd.query_async(&mut conn)).await?;
            if members.is_empty() {
                return Ok(swept);
            }
            self.forget(&members).await?;
            swept += members.len();
            if members.len() < LOAD_BATCH {
                return Ok(swept);
            }
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        self.timed(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_sort_by_creation_time_then_id() {
        let a = member(999, "RO-b");
        let b = member(1000, "RO-a");
        let c = member(1000, "RO-b");
        assert!(a < b && b < c);
        assert_eq!(member_id(&c), "RO-b");
    }
}
