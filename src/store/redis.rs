//! The Redis store, on one Redis server or a Redis Cluster.
//!
//! Keys, under a configurable prefix `P` (see `conn::Keys`):
//! - `P:{room:<id>}`: the room's JSON record, expiring when the room does (`PXAT`).
//! - `P:{rooms}`: the list index, a sorted set with every score 0 whose members are
//!   `{creationTime:013}|{id}`, so lexicographic order is creation order and a page is one
//!   `ZREVRANGEBYLEX` with `LIMIT`: O(log N + page), whatever the number of rooms.
//! - `P:{rooms}:expiry`: the same members scored by expiry time, so a sweep finds expired
//!   rooms without scanning and drops them from the index.
//! - `P:{room:<id>}:lease` and `P:{room:<id>}:fence`: the room's ownership lease and
//!   fencing number (`super::lease`); a fenced write checks the latter in the same script.
//!
//! Every operation is bounded by the configured timeout, so a slow or dead Redis turns
//! into a [`StoreError`] (and a 503) instead of a hang. A command that timed out may still
//! sit in the connection and run when a frozen Redis wakes up, so every write is a script
//! that first compares Redis's clock with a deadline a little before the client's timeout,
//! and does nothing past it: a write that answered 503 leaves no trace.
//!
//! On one server, create and delete are one script each over the record and both indexes.
//! On a cluster the record (slot of `{room:<id>}`) and the indexes (slot of `{rooms}`) are
//! written by two scripts: create writes the record first and the index after (a page
//! never meets a member before its record; an index write that fails removes the record
//! again, and the room's id was never told anyone), delete removes the record first (the
//! room is gone from that moment; an index member left behind is dropped by the next page
//! that meets it, or by the sweep at the room's expiry).

use super::conn::Redis;
use super::lease::{FencedError, Lease};
use super::{Cursor, ExpiredRoom, Store, StoreError};
use crate::metrics::METRICS;
use crate::model::{RoomRecord, Seat};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;

/// Expired index members dropped per round trip by the sweep.
const SWEEP_BATCH: usize = 1000;

pub struct RedisStore {
    redis: Arc<Redis>,
    scripts: Scripts,
}

/// The write scripts. Each takes the deadline (ms since the epoch) as `ARGV[1]` and returns
/// 0 without writing when Redis's clock has passed it; a fenced one returns -1 without
/// writing when the room's stored fence is not the one given; 1 when it wrote.
struct Scripts {
    create: redis::Script,
    update: redis::Script,
    update_fenced: redis::Script,
    seats_fenced: redis::Script,
    delete: redis::Script,
    delete_fenced: redis::Script,
    /// Cluster: the record alone, then the indexes alone.
    create_record: redis::Script,
    index_add: redis::Script,
    delete_record: redis::Script,
    delete_record_fenced: redis::Script,
    index_remove: redis::Script,
    /// The claim of an expired room's end: answers 1 when it took the member out of the
    /// expiry index (and dropped the room), 2 when the member was gone already.
    finish_expired: redis::Script,
    /// Cluster: the same claim on the indexes alone.
    finish_expired_index: redis::Script,
}

const PAST_DEADLINE: &str = r"
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[1]) then
  return 0
end
";

/// Refuses the write when the fence key (`KEYS[f]`) does not hold `ARGV[a]`.
fn fence_check(f: usize, a: usize) -> String {
    format!("if redis.call('GET', KEYS[{f}]) ~= ARGV[{a}] then return -1 end\n")
}

impl Scripts {
    fn new() -> Self {
        let guarded = |body: &str| redis::Script::new(&format!("{PAST_DEADLINE}{body}\nreturn 1"));
        // KEYS: room, index, expiry, lease, fence. ARGV: deadline, member[, fence].
        let delete = "redis.call('DEL', KEYS[1], KEYS[4], KEYS[5])
                 redis.call('ZREM', KEYS[2], ARGV[2])
                 redis.call('ZREM', KEYS[3], ARGV[2])";
        // KEYS: room, lease, fence. ARGV: deadline[, fence].
        let delete_record = "redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])";
        Self {
            // KEYS: room, index, expiry. ARGV: deadline, json, expires_at, member.
            create: guarded(
                "redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
                 redis.call('ZADD', KEYS[2], 0, ARGV[4])
                 redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])",
            ),
            // KEYS: room. ARGV: deadline, json, expires_at.
            update: guarded("redis.call('SET', KEYS[1], ARGV[2], 'XX', 'PXAT', ARGV[3])"),
            // KEYS: room, fence. ARGV: deadline, json, expires_at, fence.
            update_fenced: guarded(&format!(
                "{}redis.call('SET', KEYS[1], ARGV[2], 'XX', 'PXAT', ARGV[3])",
                fence_check(2, 4)
            )),
            // KEYS: seats, fence. ARGV: deadline, json (empty: no seats), expires_at, fence.
            seats_fenced: guarded(&format!(
                "{}if ARGV[2] == '' then redis.call('DEL', KEYS[1])
                 else redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3]) end",
                fence_check(2, 4)
            )),
            delete: guarded(delete),
            delete_fenced: guarded(&format!("{}{delete}", fence_check(5, 3))),
            // KEYS: room. ARGV: deadline, json, expires_at.
            create_record: guarded("redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])"),
            // KEYS: index, expiry. ARGV: deadline, expires_at, member.
            index_add: guarded(
                "redis.call('ZADD', KEYS[1], 0, ARGV[3])
                 redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])",
            ),
            delete_record: guarded(delete_record),
            delete_record_fenced: guarded(&format!("{}{delete_record}", fence_check(3, 2))),
            // KEYS: index, expiry. ARGV: deadline, member.
            index_remove: guarded(
                "redis.call('ZREM', KEYS[1], ARGV[2])
                 redis.call('ZREM', KEYS[2], ARGV[2])",
            ),
            // KEYS: expiry, index, room, lease, fence. ARGV: deadline, member.
            finish_expired: guarded(
                "if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 2 end
                 redis.call('ZREM', KEYS[2], ARGV[2])
                 redis.call('DEL', KEYS[3], KEYS[4], KEYS[5])",
            ),
            // KEYS: expiry, index. ARGV: deadline, member.
            finish_expired_index: guarded(
                "if redis.call('ZREM', KEYS[1], ARGV[2]) == 0 then return 2 end
                 redis.call('ZREM', KEYS[2], ARGV[2])",
            ),
        }
    }
}

/// What a guarded write script answered.
enum Written {
    Done,
    /// The fence did not match; nothing was written.
    Stale,
    /// A claim found its member gone: another caller made it first.
    Taken,
}

impl RedisStore {
    /// Creates the store without connecting; the first operation connects, and the
    /// connections reconnect by themselves after Redis comes back. `urls` as
    /// [`Redis::open`] takes them.
    pub fn new(
        urls: &[String],
        cluster: bool,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        Ok(Self::over(Arc::new(Redis::open(
            urls, cluster, prefix, timeout,
        )?)))
    }

    /// The store over a Redis handle that the leases and the node registry may share.
    pub fn over(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            scripts: Scripts::new(),
        }
    }

    /// The Redis handle, for the leases and the node registry.
    pub fn redis(&self) -> &Arc<Redis> {
        &self.redis
    }

    /// Runs a guarded write script: the deadline goes first among its arguments.
    async fn write(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<Written, StoreError> {
        let mut all = Vec::with_capacity(args.len() + 1);
        all.push(self.redis.deadline().to_string());
        all.extend_from_slice(args);
        match self.redis.eval::<i64>(script, keys, &all).await? {
            1 => Ok(Written::Done),
            -1 => Ok(Written::Stale),
            2 => Ok(Written::Taken),
            _ => {
                METRICS.store_error();
                Err(StoreError(
                    "the write reached Redis after its deadline".into(),
                ))
            }
        }
    }

    /// A write that is never fenced: `Stale` cannot come back.
    async fn write_unfenced(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<(), StoreError> {
        self.write(script, keys, args).await.map(drop)
    }

    /// Reads the records of index members; members whose key has vanished before their
    /// expiry (a delete whose index write failed) are dropped from the index on the way.
    /// Those of expired rooms stay for the sweep, which tells of their end
    /// ([`Store::finish_expired`]).
    async fn records(
        &self,
        members: &[String],
        now_ms: u64,
    ) -> Result<Vec<RoomRecord>, StoreError> {
        if members.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = members
            .iter()
            .map(|m| self.redis.keys.room(member_id(m)))
            .collect();
        // On a cluster the client splits the `MGET` by slot and puts the answers back in
        // order.
        let values: Vec<Option<String>> = self.redis.query(redis::cmd("MGET").arg(&keys)).await?;
        let mut rooms = Vec::with_capacity(values.len());
        let mut gone = Vec::new();
        for (member, value) in members.iter().zip(values) {
            match value.and_then(|v| serde_json::from_str::<RoomRecord>(&v).ok()) {
                Some(room) => rooms.push(room),
                None => gone.push(member.clone()),
            }
        }
        if !gone.is_empty() {
            let expiries: Vec<Option<f64>> = self
                .redis
                .query(
                    redis::cmd("ZMSCORE")
                        .arg(self.redis.keys.expiry())
                        .arg(&gone),
                )
                .await?;
            let unexpired: Vec<String> = gone
                .into_iter()
                .zip(expiries)
                .filter(|(_, at)| at.is_none_or(|at| at > now_ms as f64))
                .map(|(member, _)| member)
                .collect();
            if !unexpired.is_empty() {
                self.forget(&unexpired).await?;
            }
        }
        Ok(rooms)
    }

    /// Up to `limit` members (`<creation time>|<id>`) of the expiry index whose rooms
    /// expired at `now_ms` or before, soonest first.
    async fn expiring(&self, now_ms: u64, limit: usize) -> Result<Vec<String>, StoreError> {
        let cmd = redis::cmd("ZRANGEBYSCORE")
            .arg(self.redis.keys.expiry())
            .arg("-inf")
            .arg(now_ms)
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .to_owned();
        self.redis.query(&cmd).await
    }

    /// Removes members from both indexes, and their rooms' keys (record, lease, fence).
    async fn forget(&self, members: &[String]) -> Result<(), StoreError> {
        let keys = &self.redis.keys;
        let room_keys: Vec<String> = members
            .iter()
            .map(|m| member_id(m))
            .flat_map(|id| [keys.room(id), keys.lease(id), keys.fence(id)])
            .collect();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrem(keys.index(), members)
            .ignore()
            .zrem(keys.expiry(), members)
            .ignore();
        if self.redis.is_cluster() {
            // A transaction may not span slots: the indexes in one, then a `DEL` that the
            // client splits by slot.
            let pipe = &pipe;
            self.redis
                .timed(move |mut conn| async move { pipe.query_async::<()>(&mut conn).await })
                .await?;
            self.redis.query(redis::cmd("DEL").arg(&room_keys)).await
        } else {
            pipe.del(room_keys).ignore();
            let pipe = &pipe;
            self.redis
                .timed(move |mut conn| async move { pipe.query_async::<()>(&mut conn).await })
                .await
        }
    }

    /// Replaces the room's record only if `lease` (of this room) is still the room's last
    /// one: its fence is the room's stored fence. A stale owner's write is refused with
    /// [`FencedError::Stale`] and changes nothing. A room already gone stays gone.
    pub async fn update_fenced(&self, room: &RoomRecord, lease: &Lease) -> Result<(), FencedError> {
        if lease.room != room.id {
            return Err(FencedError::stale(lease));
        }
        let keys = &self.redis.keys;
        let written = self
            .write(
                &self.scripts.update_fenced,
                &[&keys.room(&room.id), &keys.fence(&room.id)],
                &[
                    to_json(room),
                    room.expires_at().to_string(),
                    lease.fence.to_string(),
                ],
            )
            .await?;
        match written {
            Written::Done | Written::Taken => Ok(()),
            Written::Stale => Err(FencedError::stale(lease)),
        }
    }

    /// Writes the room's seats (removes them when there are none) only if `lease` is still
    /// the room's last one, as [`Self::update_fenced`]; they expire with the room.
    pub async fn save_seats_fenced(
        &self,
        room: &RoomRecord,
        seats: &[Seat],
        lease: &Lease,
    ) -> Result<(), FencedError> {
        if lease.room != room.id {
            return Err(FencedError::stale(lease));
        }
        let keys = &self.redis.keys;
        let json = if seats.is_empty() {
            String::new()
        } else {
            serde_json::to_string(seats).expect("seats always serialize")
        };
        let written = self
            .write(
                &self.scripts.seats_fenced,
                &[&keys.seats(&room.id), &keys.fence(&room.id)],
                &[json, room.expires_at().to_string(), lease.fence.to_string()],
            )
            .await?;
        match written {
            Written::Done | Written::Taken => Ok(()),
            Written::Stale => Err(FencedError::stale(lease)),
        }
    }

    /// The room's seats as its owner last wrote them; none when there are none (or they
    /// cannot be read back).
    pub async fn seats(&self, id: &str) -> Result<Vec<Seat>, StoreError> {
        let value: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(self.redis.keys.seats(id)))
            .await?;
        Ok(value
            .and_then(|v| serde_json::from_str(&v).ok())
            .unwrap_or_default())
    }

    /// Removes the room (record, lease, fence, index entries) only if `lease` is still the
    /// room's last one, as [`Self::update_fenced`].
    pub async fn delete_fenced(&self, room: &RoomRecord, lease: &Lease) -> Result<(), FencedError> {
        if lease.room != room.id {
            return Err(FencedError::stale(lease));
        }
        let keys = &self.redis.keys;
        let (id, member) = (&room.id, member(room.creation_time, &room.id));
        let fence = lease.fence.to_string();
        let written = if self.redis.is_cluster() {
            self.write(
                &self.scripts.delete_record_fenced,
                &[&keys.room(id), &keys.lease(id), &keys.fence(id)],
                &[fence],
            )
            .await?
        } else {
            self.write(
                &self.scripts.delete_fenced,
                &[
                    &keys.room(id),
                    &keys.index(),
                    &keys.expiry(),
                    &keys.lease(id),
                    &keys.fence(id),
                ],
                &[member.clone(), fence],
            )
            .await?
        };
        match written {
            Written::Stale => Err(FencedError::stale(lease)),
            Written::Done | Written::Taken => {
                if self.redis.is_cluster() {
                    self.unindex(&member).await;
                }
                Ok(())
            }
        }
    }

    /// Removes an expired room as [`Self::delete_fenced`] does, its owner's last write; on
    /// a Redis Cluster the index entries go first (unfenced, as the sweep drops them), so
    /// the lease is held until the room is out of the expiry index, and a sweeping node
    /// that finds no lease finds no room to finish either.
    pub async fn delete_expired_fenced(
        &self,
        room: &RoomRecord,
        lease: &Lease,
    ) -> Result<(), FencedError> {
        if self.redis.is_cluster() && lease.room == room.id {
            let keys = &self.redis.keys;
            self.write_unfenced(
                &self.scripts.index_remove,
                &[&keys.index(), &keys.expiry()],
                &[member(room.creation_time, &room.id)],
            )
            .await?;
        }
        self.delete_fenced(room, lease).await
    }

    /// Cluster: drops a deleted room's index entries. The room is gone already, so a
    /// failure only leaves a member that the next page meeting it (or the sweep) drops.
    async fn unindex(&self, member: &str) {
        let keys = &self.redis.keys;
        if let Err(e) = self
            .write_unfenced(
                &self.scripts.index_remove,
                &[&keys.index(), &keys.expiry()],
                &[member.to_string()],
            )
            .await
        {
            tracing::warn!(error = %e, "a deleted room's index entry is left for the sweep");
        }
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
        let keys = &self.redis.keys;
        let (json, expires_at) = (to_json(room), room.expires_at().to_string());
        let member = member(room.creation_time, &room.id);
        let room_key = keys.room(&room.id);
        if !self.redis.is_cluster() {
            return self
                .write_unfenced(
                    &self.scripts.create,
                    &[&room_key, &keys.index(), &keys.expiry()],
                    &[json, expires_at, member],
                )
                .await;
        }
        self.write_unfenced(
            &self.scripts.create_record,
            &[&room_key],
            &[json, expires_at.clone()],
        )
        .await?;
        let indexed = self
            .write_unfenced(
                &self.scripts.index_add,
                &[&keys.index(), &keys.expiry()],
                &[expires_at, member],
            )
            .await;
        if let Err(e) = indexed {
            // Nobody has heard of the room yet: take the record back, so the 503 leaves no
            // room behind. Should that fail too, the record is unlisted, its id was never
            // told anyone, and it expires with the room.
            if let Err(undo) = self
                .redis
                .query::<()>(redis::cmd("DEL").arg(&room_key))
                .await
            {
                tracing::warn!(error = %undo, "an unindexed room record is left to expire");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn update(&self, room: &RoomRecord) -> Result<(), StoreError> {
        self.write_unfenced(
            &self.scripts.update,
            &[&self.redis.keys.room(&room.id)],
            &[to_json(room), room.expires_at().to_string()],
        )
        .await
    }

    async fn get(&self, id: &str, now_ms: u64) -> Result<Option<RoomRecord>, StoreError> {
        let key = self.redis.keys.room(id);
        let value: Option<String> = self.redis.query(redis::cmd("GET").arg(&key)).await?;
        // Redis expires the key at the room's expiry (`PXAT`); the check covers the
        // milliseconds in between, and a value that does not parse is no room.
        Ok(value
            .and_then(|v| serde_json::from_str::<RoomRecord>(&v).ok())
            .filter(|r| r.id == id && !r.is_expired(now_ms)))
    }

    async fn delete(&self, room: &RoomRecord) -> Result<(), StoreError> {
        let keys = &self.redis.keys;
        let (id, member) = (&room.id, member(room.creation_time, &room.id));
        if !self.redis.is_cluster() {
            return self
                .write_unfenced(
                    &self.scripts.delete,
                    &[
                        &keys.room(id),
                        &keys.index(),
                        &keys.expiry(),
                        &keys.lease(id),
                        &keys.fence(id),
                    ],
                    &[member],
                )
                .await;
        }
        self.write_unfenced(
            &self.scripts.delete_record,
            &[&keys.room(id), &keys.lease(id), &keys.fence(id)],
            &[],
        )
        .await?;
        self.unindex(&member).await;
        Ok(())
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
            let cmd = redis::cmd("ZREVRANGEBYLEX")
                .arg(self.redis.keys.index())
                .arg(&max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(want)
                .to_owned();
            let members: Vec<String> = self.redis.query(&cmd).await?;
            let Some(last) = members.last() else { break };
            max = format!("({last}");
            let exhausted = members.len() < want;
            rooms.extend(
                self.records(&members, now_ms)
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

    async fn sweep(&self, now_ms: u64) -> Result<usize, StoreError> {
        let mut swept = 0;
        loop {
            let members = self.expiring(now_ms, SWEEP_BATCH).await?;
            if members.is_empty() {
                return Ok(swept);
            }
            self.forget(&members).await?;
            swept += members.len();
            if members.len() < SWEEP_BATCH {
                return Ok(swept);
            }
        }
    }

    async fn expired(&self, now_ms: u64, limit: usize) -> Result<Vec<ExpiredRoom>, StoreError> {
        let members = self.expiring(now_ms, limit).await?;
        Ok(members
            .iter()
            .filter_map(|m| {
                let (time, id) = m.split_once('|')?;
                Some(ExpiredRoom {
                    id: id.to_string(),
                    creation_time: time.parse().ok()?,
                })
            })
            .collect())
    }

    async fn finish_expired(&self, room: &ExpiredRoom) -> Result<bool, StoreError> {
        let keys = &self.redis.keys;
        let id = &room.id;
        let member = member(room.creation_time, id);
        let (room_key, lease, fence) = (keys.room(id), keys.lease(id), keys.fence(id));
        let written = if self.redis.is_cluster() {
            self.write(
                &self.scripts.finish_expired_index,
                &[&keys.expiry(), &keys.index()],
                &[member],
            )
            .await?
        } else {
            self.write(
                &self.scripts.finish_expired,
                &[&keys.expiry(), &keys.index(), &room_key, &lease, &fence],
                &[member],
            )
            .await?
        };
        let claimed = matches!(written, Written::Done);
        if claimed && self.redis.is_cluster() {
            // The room's own slot: what `PXAT` has not taken yet (lease, fence). The claim
            // stands whatever this answers: the room's end is this caller's to tell.
            if let Err(e) = self
                .redis
                .query::<()>(redis::cmd("DEL").arg(&[room_key, lease, fence]))
                .await
            {
                tracing::warn!(room = %id, error = %e, "an expired room's lease and fence are left behind");
            }
        }
        Ok(claimed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.redis
            .query::<String>(&redis::cmd("PING"))
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
