//! Fenced room-ownership leases in Redis (one server or a cluster).
//!
//! A node that owns a room holds its lease, `P:{room:<id>}:lease` = `<fence>|<node>`, which
//! expires unless renewed. Every acquisition takes the next fencing number from
//! `P:{room:<id>}:fence`, a counter without expiry: it never goes back, even after a lease
//! expired and another node acquired the room. Writes of a room that carry a lease
//! (`RedisStore::update_fenced`, `delete_fenced`) succeed only while the stored fence is
//! the lease's, so an owner that lost its lease (paused, partitioned, slow) cannot
//! overwrite its successor's state: its write is refused with [`FencedError::Stale`].
//!
//! Every operation is one Lua script over the keys of one room, which share the hash tag
//! `{room:<id>}` and so one slot of a Redis Cluster.

use super::StoreError;
use super::conn::Redis;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A node's ownership of a room, numbered by its fence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub room: String,
    pub node: String,
    pub fence: u64,
}

impl Lease {
    /// The lease key's value: `<fence>|<node>`.
    fn value(&self) -> String {
        format!("{}|{}", self.fence, self.node)
    }

    fn parse(room: &str, value: &str) -> Option<Self> {
        let (fence, node) = value.split_once('|')?;
        Some(Self {
            room: room.to_string(),
            node: node.to_string(),
            fence: fence.parse().ok()?,
        })
    }
}

/// Why a fenced write did not happen.
#[derive(Debug)]
pub enum FencedError {
    /// The room's stored fence is not the lease's: another node acquired the room since
    /// (or the room is gone). Nothing was written.
    Stale { room: String, fence: u64 },
    /// Redis did not answer in time, or failed.
    Store(StoreError),
}

impl FencedError {
    pub(crate) fn stale(lease: &Lease) -> Self {
        Self::Stale {
            room: lease.room.clone(),
            fence: lease.fence,
        }
    }
}

impl From<StoreError> for FencedError {
    fn from(e: StoreError) -> Self {
        Self::Store(e)
    }
}

impl fmt::Display for FencedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Stale { room, fence } => write!(
                f,
                "write of room {room} refused: fence {fence} is no longer the room's"
            ),
            Self::Store(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for FencedError {}

/// The lease operations of one node.
pub struct Leases {
    redis: Arc<Redis>,
    node: String,
    ttl: Duration,
    acquire: redis::Script,
    renew: redis::Script,
    release: redis::Script,
}

impl Leases {
    /// Leases taken by `node`, each valid for `ttl` after its acquisition or last renewal.
    pub fn new(redis: Arc<Redis>, node: &str, ttl: Duration) -> Self {
        Self {
            redis,
            node: node.to_string(),
            ttl,
            // KEYS: lease, fence. ARGV: node, ttl (ms).
            acquire: redis::Script::new(
                "if redis.call('EXISTS', KEYS[1]) == 1 then return false end
                 local fence = redis.call('INCR', KEYS[2])
                 redis.call('SET', KEYS[1], fence .. '|' .. ARGV[1], 'PX', ARGV[2])
                 return fence",
            ),
            // KEYS: lease. ARGV: value, ttl (ms).
            renew: redis::Script::new(
                "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
                 redis.call('PEXPIRE', KEYS[1], ARGV[2])
                 return 1",
            ),
            // KEYS: lease. ARGV: value.
            release: redis::Script::new(
                "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
                 redis.call('DEL', KEYS[1])
                 return 1",
            ),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn ttl_ms(&self) -> String {
        self.ttl.as_millis().max(1).to_string()
    }

    /// Takes the room's lease if nobody holds it (never held, released or expired), with
    /// the room's next fencing number; `None` while someone (this node included) holds it.
    pub async fn acquire(&self, room: &str) -> Result<Option<Lease>, StoreError> {
        let keys = &self.redis.keys;
        let fence: Option<u64> = self
            .redis
            .eval(
                &self.acquire,
                &[&keys.lease(room), &keys.fence(room)],
                &[self.node.clone(), self.ttl_ms()],
            )
            .await?;
        Ok(fence.map(|fence| Lease {
            room: room.to_string(),
            node: self.node.clone(),
            fence,
        }))
    }

    /// Extends the lease by the lease time from now, only if it is still held under the
    /// same fence by the same node; `false` when it was lost (expired, taken over).
    pub async fn renew(&self, lease: &Lease) -> Result<bool, StoreError> {
        let renewed: i64 = self
            .redis
            .eval(
                &self.renew,
                &[&self.redis.keys.lease(&lease.room)],
                &[lease.value(), self.ttl_ms()],
            )
            .await?;
        Ok(renewed == 1)
    }

    /// Gives the lease up, if it is still held under its fence; answers whether it was.
    /// The fence stays: the next acquisition gets a higher one.
    pub async fn release(&self, lease: &Lease) -> Result<bool, StoreError> {
        let released: i64 = self
            .redis
            .eval(
                &self.release,
                &[&self.redis.keys.lease(&lease.room)],
                &[lease.value()],
            )
            .await?;
        Ok(released == 1)
    }

    /// Who holds the room's lease now, if anyone.
    pub async fn holder(&self, room: &str) -> Result<Option<Lease>, StoreError> {
        let value: Option<String> = self
            .redis
            .query(redis::cmd("GET").arg(self.redis.keys.lease(room)))
            .await?;
        match value {
            None => Ok(None),
            Some(value) => Lease::parse(room, &value)
                .map(Some)
                .ok_or_else(|| StoreError(format!("unreadable lease of room {room}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_value_reads_back_and_junk_does_not() {
        let lease = Lease {
            room: "RO-1".into(),
            node: "node-a".into(),
            fence: 42,
        };
        assert_eq!(Lease::parse("RO-1", &lease.value()), Some(lease));
        for junk in ["", "|", "x|n", "42", "-1|n", "99999999999999999999999|n"] {
            assert_eq!(Lease::parse("RO-1", junk), None, "{junk:?}");
        }
    }
}
