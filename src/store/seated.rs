//! Which rooms have stored seats, by the node that owns them (with `cluster`): the index a
//! node reads to take over, at once, the rooms of a node that left the node list with
//! participants in them (see `docs/cluster.md`, "Takeover at once").
//!
//! Keys (all in the slot of the hash tag `{seated}`): `P:{seated}`, the set of node ids that
//! have rooms listed, and `P:{seated}:<node>`, the set of that node's rooms with seats. The
//! seats themselves live in each room's own slot (`P:{room:<id>}:seats`), so on a Redis
//! Cluster the index cannot be written in the seats' script: it is a hint, written right
//! after the seats, and a reader checks every room it finds (its lease, its record) and
//! drops the entries that no longer hold.

use super::StoreError;
use super::conn::Redis;
use std::sync::Arc;

pub struct Seated {
    redis: Arc<Redis>,
    mark: redis::Script,
    unmark: redis::Script,
}

impl Seated {
    pub fn new(redis: Arc<Redis>) -> Self {
        Self {
            redis,
            // KEYS: owners, the node's rooms. ARGV: node, room.
            mark: redis::Script::new(
                "redis.call('SADD', KEYS[1], ARGV[1])
                 redis.call('SADD', KEYS[2], ARGV[2])
                 return 1",
            ),
            // KEYS: owners, the node's rooms. ARGV: node, room. A node without rooms left
            // leaves the owners' set.
            unmark: redis::Script::new(
                "redis.call('SREM', KEYS[2], ARGV[2])
                 if redis.call('SCARD', KEYS[2]) == 0 then
                   redis.call('SREM', KEYS[1], ARGV[1])
                 end
                 return 1",
            ),
        }
    }

    fn keys(&self, node: &str) -> [String; 2] {
        let keys = &self.redis.keys;
        [keys.seated(None), keys.seated(Some(node))]
    }

    /// Lists `room` among `node`'s rooms with seats.
    pub async fn mark(&self, node: &str, room: &str) -> Result<(), StoreError> {
        let [owners, rooms] = self.keys(node);
        self.redis
            .eval::<i64>(
                &self.mark,
                &[&owners, &rooms],
                &[node.to_string(), room.to_string()],
            )
            .await
            .map(drop)
    }

    /// Removes `room` from `node`'s rooms with seats.
    pub async fn unmark(&self, node: &str, room: &str) -> Result<(), StoreError> {
        let [owners, rooms] = self.keys(node);
        self.redis
            .eval::<i64>(
                &self.unmark,
                &[&owners, &rooms],
                &[node.to_string(), room.to_string()],
            )
            .await
            .map(drop)
    }

    /// The nodes that have rooms with seats listed.
    pub async fn nodes(&self) -> Result<Vec<String>, StoreError> {
        self.redis
            .query(redis::cmd("SMEMBERS").arg(self.redis.keys.seated(None)))
            .await
    }

    /// `node`'s rooms with seats, as listed.
    pub async fn rooms(&self, node: &str) -> Result<Vec<String>, StoreError> {
        self.redis
            .query(redis::cmd("SMEMBERS").arg(self.redis.keys.seated(Some(node))))
            .await
    }
}
