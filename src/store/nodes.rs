//! The registry of live nodes in Redis: every node of a deployment that shares one Redis
//! (or Redis Cluster) registers itself, refreshes its entry every heartbeat and removes it
//! on a clean shutdown; an entry not refreshed expires on its own.
//!
//! Keys (all in the slot of the hash tag `{nodes}`): `P:{nodes}`, a sorted set of node
//! ids scored by the Redis time at which their registration expires, and `P:{nodes}:<id>`,
//! the node's JSON [`NodeInfo`], expiring at the same time. Expiry times come from Redis's
//! clock (`TIME` in the scripts), so the nodes' own clocks do not matter.

use super::StoreError;
use super::conn::Redis;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

/// What a node says about itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub id: String,
    /// Where other nodes and load balancers reach its HTTP API (`host:port`).
    pub http_addr: String,
    /// The media address it advertises to clients (`ip:port`, UDP).
    pub media_addr: String,
    /// Active rooms (with an actor) and participants holding a seat on it.
    pub rooms: u64,
    pub participants: u64,
    /// CPU time the process used over the last heartbeat, per second of wall time (1.0 is
    /// one core busy).
    pub cpu: f64,
    /// When it started, ms since the epoch.
    pub started_at: u64,
    pub version: String,
    /// A fingerprint of its token secret (not the secret), so that nodes that could not
    /// verify each other's room tokens can tell.
    pub secret_id: String,
    /// Its `node_max_rooms` and `node_max_participants` (0: no limit); absent in entries of
    /// nodes that predate them.
    #[serde(default)]
    pub max_rooms: u64,
    #[serde(default)]
    pub max_participants: u64,
    /// Draining (it got SIGTERM and hands its rooms to other nodes): it counts as full, so
    /// placement sends it nothing; absent in entries of nodes that predate draining.
    #[serde(default)]
    pub draining: bool,
}

impl NodeInfo {
    /// Whether a node with this load has reached one of its limits, or is draining.
    pub fn is_full(&self) -> bool {
        self.draining
            || at_limit(self.rooms, self.max_rooms)
            || at_limit(self.participants, self.max_participants)
    }

    /// What placement compares: active rooms plus seated participants.
    pub fn load(&self) -> u64 {
        self.rooms + self.participants
    }
}

fn at_limit(n: u64, max: u64) -> bool {
    max > 0 && n >= max
}

pub struct Nodes {
    redis: Arc<Redis>,
    ttl: Duration,
    register: redis::Script,
    live: redis::Script,
}

const NOW: &str = "local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
";

impl Nodes {
    /// The registry, whose entries live `ttl` after their last refresh.
    pub fn new(redis: Arc<Redis>, ttl: Duration) -> Self {
        Self {
            redis,
            ttl,
            // KEYS: nodes, node. ARGV: id, json, ttl (ms).
            register: redis::Script::new(&format!(
                "{NOW}redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
                 redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[1])
                 return 1"
            )),
            // KEYS: nodes. Drops expired ids, answers the others.
            live: redis::Script::new(&format!(
                "{NOW}redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
                 return redis.call('ZRANGE', KEYS[1], 0, -1)"
            )),
        }
    }

    /// Registers the node, or refreshes its registration, for another `ttl`.
    pub async fn register(&self, node: &NodeInfo) -> Result<(), StoreError> {
        let keys = &self.redis.keys;
        let json = serde_json::to_string(node).map_err(|e| StoreError(e.to_string()))?;
        self.redis
            .eval::<i64>(
                &self.register,
                &[&keys.nodes(), &keys.node(&node.id)],
                &[
                    node.id.clone(),
                    json,
                    self.ttl.as_millis().max(1).to_string(),
                ],
            )
            .await
            .map(drop)
    }

    /// Removes the node's registration (at a clean shutdown).
    pub async fn remove(&self, id: &str) -> Result<(), StoreError> {
        let keys = &self.redis.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .zrem(keys.nodes(), id)
            .ignore()
            .del(keys.node(id))
            .ignore();
        let pipe = &pipe;
        self.redis
            .timed(move |mut conn| async move { pipe.query_async::<()>(&mut conn).await })
            .await
    }

    /// The live nodes, by id. An entry that does not parse is skipped.
    pub async fn live(&self) -> Result<Vec<NodeInfo>, StoreError> {
        let keys = &self.redis.keys;
        let ids: Vec<String> = self.redis.eval(&self.live, &[&keys.nodes()], &[]).await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let node_keys: Vec<String> = ids.iter().map(|id| keys.node(id)).collect();
        let values: Vec<Option<String>> =
            self.redis.query(redis::cmd("MGET").arg(&node_keys)).await?;
        let mut nodes: Vec<NodeInfo> = values
            .into_iter()
            .flatten()
            .filter_map(|v| serde_json::from_str(&v).ok())
            .collect();
        nodes.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(nodes)
    }
}
