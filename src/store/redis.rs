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
//! into a [`StoreError`] (and a 503) instead of a hang. A command that timed out may still
//! sit in the connection and run when a frozen Redis wakes up, so every write is a script
//! that first compares Redis's clock with a deadline a little before the client's timeout,
//! and does nothing past it: a write that answered 503 leaves no trace.
//!
//! Each thread that uses the store (each HTTP worker, the system thread) has its own
//! connection manager, made on first use: a command and its answer stay on the thread that
//! asked, instead of waking the one thread that would otherwise drive a shared connection.

use super::{Cursor, Store, StoreError};
use crate::metrics::METRICS;
use crate::model::RoomRecord;
use async_trait::async_trait;
use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Rooms fetched per round trip when loading everything at start-up.
const LOAD_BATCH: usize = 1000;

/// Tells store instances apart in the per-thread connections.
static STORES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's connection manager of each store, by store id.
    static CONNECTIONS: RefCell<HashMap<u64, ConnectionManager>> = RefCell::new(HashMap::new());
}

pub struct RedisStore {
    id: u64,
    client: redis::Client,
    config: ConnectionManagerConfig,
    timeout: Duration,
    prefix: String,
    scripts: Scripts,
}

/// The write scripts. Each takes the deadline (ms since the epoch) as `ARGV[1]` and returns
/// 0 without writing when Redis's clock has passed it.
struct Scripts {
    create: redis::Script,
    update: redis::Script,
    delete: redis::Script,
}

const PAST_DEADLINE: &str = r"
local t = redis.call('TIME')
if tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) > tonumber(ARGV[1]) then
  return 0
end
";

impl Scripts {
    fn new() -> Self {
        let guarded = |body: &str| redis::Script::new(&format!("{PAST_DEADLINE}{body}\nreturn 1"));
        Self {
            // KEYS: room, index, expiry. ARGV: deadline, json, expires_at, member.
            create: guarded(
                "redis.call('SET', KEYS[1], ARGV[2], 'PXAT', ARGV[3])
                 redis.call('ZADD', KEYS[2], 0, ARGV[4])
                 redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])",
            ),
            // KEYS: room. ARGV: deadline, json, expires_at.
            update: guarded("redis.call('SET', KEYS[1], ARGV[2], 'XX', 'PXAT', ARGV[3])"),
            // KEYS: room, index, expiry. ARGV: deadline, member.
            delete: guarded(
                "redis.call('DEL', KEYS[1])
                 redis.call('ZREM', KEYS[2], ARGV[2])
                 redis.call('ZREM', KEYS[3], ARGV[2])",
            ),
        }
    }
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
        // Made here once only to refuse a bad configuration now rather than on first use.
        client
            .get_connection_manager_lazy(config.clone())
            .map_err(|e| StoreError(e.to_string()))?;
        Ok(Self {
            id: STORES.fetch_add(1, Ordering::Relaxed),
            scripts: Scripts::new(),
            client,
            config,
            timeout,
            prefix: prefix.to_string(),
        })
    }

    /// This thread's connection manager, made (without connecting) on first use.
    fn conn(&self) -> Result<ConnectionManager, StoreError> {
        CONNECTIONS.with(|connections| {
            if let Some(conn) = connections.borrow().get(&self.id) {
                return Ok(conn.clone());
            }
            let conn = self
                .client
                .get_connection_manager_lazy(self.config.clone())
                .map_err(|e| StoreError(e.to_string()))?;
            connections.borrow_mut().insert(self.id, conn.clone());
            Ok(conn)
        })
    }

    fn room_key(&self, id: &str) -> String {
        format!("{}:room:{id}", self.prefix)
    }

    /// The latest Redis time at which a write started now may still run: a little before
    /// the client gives up, so that a write that runs also answers in time.
    fn deadline(&self) -> u64 {
        let timeout = self.timeout.as_millis() as u64;
        crate::model::now_ms() + timeout - (timeout / 4).min(250)
    }

    /// Runs a guarded write script: the deadline goes first among its arguments.
    async fn write(
        &self,
        script: &redis::Script,
        keys: &[String],
        args: &[String],
    ) -> Result<(), StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        invocation.arg(self.deadline());
        for arg in args {
            invocation.arg(arg);
        }
        let invocation = &invocation;
        match self
            .timed(move |mut conn| async move { invocation.invoke_async::<i64>(&mut conn).await })
            .await?
        {
            1 => Ok(()),
            _ => {
                METRICS.store_error();
                Err(StoreError(
                    "the write reached Redis after its deadline".into(),
                ))
            }
        }
    }

    fn index_key(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    fn expiry_key(&self) -> String {
        format!("{}:rooms:expiry", self.prefix)
    }

    /// Runs `op` on this thread's connection within the timeout. When the connection turned
    /// out broken (Redis restarted since this thread last used it), the manager reconnects
    /// and `op` gets one more try within the same time; every operation here may run twice
    /// (reads, and writes that set or remove the same values).
    async fn timed<T, F: Future<Output = redis::RedisResult<T>>>(
        &self,
        op: impl Fn(ConnectionManager) -> F,
    ) -> Result<T, StoreError> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut outcome = tokio::time::timeout_at(deadline, op(self.conn()?)).await;
        if let Ok(Err(e)) = &outcome
            && (e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal())
        {
            outcome = tokio::time::timeout_at(deadline, op(self.conn()?)).await;
        }
        match outcome {
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

    async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, StoreError> {
        self.timed(move |mut conn| async move { cmd.query_async(&mut conn).await })
            .await
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
        let keys = &keys;
        let values: Vec<Option<String>> = self
            .timed(move |mut conn| async move { conn.mget(keys).await })
            .await?;
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
        let pipe = &pipe;
        self.timed(move |mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
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
        let keys = [self.room_key(&room.id), self.index_key(), self.expiry_key()];
        let args = [
            to_json(room),
            room.expires_at().to_string(),
            member(room.creation_time, &room.id),
        ];
        self.write(&self.scripts.create, &keys, &args).await
    }

    async fn update(&self, room: &RoomRecord) -> Result<(), StoreError> {
        let keys = [self.room_key(&room.id)];
        self.write(
            &self.scripts.update,
            &keys,
            &[to_json(room), room.expires_at().to_string()],
        )
        .await
    }

    async fn delete(&self, room: &RoomRecord) -> Result<(), StoreError> {
        let keys = [self.room_key(&room.id), self.index_key(), self.expiry_key()];
        self.write(
            &self.scripts.delete,
            &keys,
            &[member(room.creation_time, &room.id)],
        )
        .await
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
                .arg(self.index_key())
                .arg(&max)
                .arg("-")
                .arg("LIMIT")
                .arg(0)
                .arg(want)
                .to_owned();
            let members: Vec<String> = self.query(&cmd).await?;
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
            let cmd = redis::cmd("ZRANGEBYLEX")
                .arg(self.index_key())
                .arg(&min)
                .arg("+")
                .arg("LIMIT")
                .arg(0)
                .arg(LOAD_BATCH)
                .to_owned();
            let members: Vec<String> = self.query(&cmd).await?;
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
            let cmd = redis::cmd("ZRANGEBYSCORE")
                .arg(self.expiry_key())
                .arg("-inf")
                .arg(now_ms)
                .arg("LIMIT")
                .arg(0)
                .arg(LOAD_BATCH)
                .to_owned();
            let members: Vec<String> = self.query(&cmd).await?;
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
        self.query::<String>(&redis::cmd("PING")).await.map(drop)
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
