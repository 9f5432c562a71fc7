//! The connection to Redis that the room store, the leases and the node registry share: one
//! server or a Redis Cluster, every round trip bounded by the store timeout, and the key
//! names of all three in one place so that they agree on hash tags.
//!
//! Each thread that uses Redis (each HTTP worker, the system thread) has its own
//! connection, made on first use: a command and its answer stay on the thread that asked,
//! instead of waking the one thread that would otherwise drive a shared connection. On a
//! single server that is a `ConnectionManager` (it reconnects by itself); on a cluster a
//! `ClusterConnection` (it follows the slot map, `MOVED` and `ASK` by itself, and splits
//! multi-key `MGET`/`DEL` by slot).

use super::StoreError;
use crate::metrics::METRICS;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How every connection to Redis is opened: with `TCP_NODELAY`, so that a command is sent
/// at once even while an earlier one on the connection waits for its answer (redis-rs
/// leaves Nagle's algorithm on, which holds it back until the earlier one's ACK comes, up
/// to a round trip to a Redis on another machine).
fn tcp_settings() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// A client of the server at `url`, its connections opened with [`tcp_settings`].
pub(super) fn client(url: &str) -> Result<redis::Client, StoreError> {
    use redis::IntoConnectionInfo;
    let info = (url.into_connection_info()).map_err(|e| StoreError(e.to_string()))?;
    redis::Client::open(info.set_tcp_settings(tcp_settings()))
        .map_err(|e| StoreError(e.to_string()))
}

/// Tells Redis handles apart in the per-thread connections.
static HANDLES: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// This thread's connection of each Redis handle, by handle id.
    static CONNECTIONS: RefCell<HashMap<u64, Conn>> = RefCell::new(HashMap::new());
}

/// What the service talks to.
enum Client {
    Single(redis::Client, ConnectionManagerConfig),
    Cluster(ClusterClient, ClusterConfig),
}

/// One thread's connection.
#[derive(Clone)]
pub(crate) enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// A handle on Redis (one server or a cluster), cheap to share behind an `Arc`.
pub struct Redis {
    id: u64,
    client: Client,
    timeout: Duration,
    pub(crate) keys: Keys,
}

impl Redis {
    /// Makes the handle without connecting; the first operation connects, and connections
    /// reconnect by themselves after Redis comes back. With `cluster`, `urls` are seed
    /// nodes of a Redis Cluster (one is enough; the others are found); without it, `urls`
    /// must be exactly one URL.
    pub fn open(
        urls: &[String],
        cluster: bool,
        prefix: &str,
        timeout: Duration,
    ) -> Result<Self, StoreError> {
        let client = if cluster {
            if urls.is_empty() {
                return Err(StoreError("no Redis Cluster node given".into()));
            }
            let client = ClusterClient::builder(urls.iter().map(String::as_str))
                .tcp_settings(tcp_settings())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                .retries(3)
                .max_retry_wait(200)
                .build()
                .map_err(|e| StoreError(e.to_string()))?;
            let config = ClusterConfig::new()
                .set_connection_timeout(timeout)
                .set_response_timeout(timeout);
            Client::Cluster(client, config)
        } else {
            let [url] = urls else {
                return Err(StoreError(
                    "several Redis URLs need cluster mode (CONVENE_REDIS_CLUSTER)".into(),
                ));
            };
            let client = client(url)?;
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            // Made here once only to refuse a bad configuration now rather than on first use.
            client
                .get_connection_manager_lazy(config.clone())
                .map_err(|e| StoreError(e.to_string()))?;
            Client::Single(client, config)
        };
        Ok(Self {
            id: HANDLES.fetch_add(1, Ordering::Relaxed),
            client,
            timeout,
            keys: Keys::new(prefix),
        })
    }

    /// Whether this handle talks to a Redis Cluster (where a script or transaction may
    /// only touch keys of one slot).
    pub fn is_cluster(&self) -> bool {
        matches!(self.client, Client::Cluster(..))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// This thread's connection, made (without connecting) on first use.
    fn conn(&self) -> Result<Conn, StoreError> {
        CONNECTIONS.with(|connections| {
            if let Some(conn) = connections.borrow().get(&self.id) {
                return Ok(conn.clone());
            }
            let conn = match &self.client {
                Client::Single(client, config) => Conn::Single(
                    client
                        .get_connection_manager_lazy(config.clone())
                        .map_err(|e| StoreError(e.to_string()))?,
                ),
                Client::Cluster(client, config) => {
                    Conn::Cluster(client.get_pending_async_connection_with_config(config.clone()))
                }
            };
            connections.borrow_mut().insert(self.id, conn.clone());
            Ok(conn)
        })
    }

    /// The latest Redis time at which a write started now may still run: a little before
    /// the client gives up, so that a write that runs also answers in time.
    pub(crate) fn deadline(&self) -> u64 {
        let timeout = self.timeout.as_millis() as u64;
        crate::model::now_ms() + timeout - (timeout / 4).min(250)
    }

    /// Runs `op` on this thread's connection within the timeout. When the connection turned
    /// out broken (Redis restarted since this thread last used it), it reconnects and `op`
    /// gets one more try within the same time; every operation here may run twice (reads,
    /// writes that set or remove the same values, and scripts whose second run finds their
    /// own first one's effect).
    pub(crate) async fn timed<T, F: Future<Output = redis::RedisResult<T>>>(
        &self,
        op: impl Fn(Conn) -> F,
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

    pub(crate) async fn query<T: redis::FromRedisValue>(
        &self,
        cmd: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.timed(move |mut conn| async move { cmd.query_async(&mut conn).await })
            .await
    }

    /// Runs a script with these keys and arguments. On a cluster all keys must share a
    /// slot (see [`Keys`]).
    pub(crate) async fn eval<T: redis::FromRedisValue>(
        &self,
        script: &redis::Script,
        keys: &[&str],
        args: &[String],
    ) -> Result<T, StoreError> {
        let mut invocation = script.prepare_invoke();
        for key in keys {
            invocation.key(*key);
        }
        for arg in args {
            invocation.arg(arg.as_str());
        }
        let invocation = &invocation;
        self.timed(move |mut conn| async move { invocation.invoke_async::<T>(&mut conn).await })
            .await
    }
}

/// Key names, under the prefix `P`. Every key of one room carries the hash tag
/// `{room:<id>}`, so a script over a room's record, lease and fence touches one slot of a
/// Redis Cluster; the room indexes share the tag `{rooms}` and the node registry `{nodes}`.
/// The prefix never holds a brace (the settings refuse one), so the tag is always ours.
pub(crate) struct Keys {
    prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
        }
    }

    /// `P:{room:<id>}`: the room's JSON record.
    pub(crate) fn room(&self, id: &str) -> String {
        format!("{}:{{room:{id}}}", self.prefix)
    }

    /// `P:{room:<id>}:lease`: `<fence>|<node>` of the room's owner, expiring with the lease.
    pub(crate) fn lease(&self, id: &str) -> String {
        format!("{}:{{room:{id}}}:lease", self.prefix)
    }

    /// `P:{room:<id>}:fence`: the room's last fencing number; it never expires while the
    /// room exists, so it never goes back.
    pub(crate) fn fence(&self, id: &str) -> String {
        format!("{}:{{room:{id}}}:fence", self.prefix)
    }

    /// `P:{room:<id>}:seats`: the room's seats as its owner last wrote them (with
    /// `cluster`), expiring with the room.
    pub(crate) fn seats(&self, id: &str) -> String {
        format!("{}:{{room:{id}}}:seats", self.prefix)
    }

    /// `P:{seated}`: the nodes that have rooms with seats listed; `P:{seated}:<node>`: that
    /// node's rooms with seats (`seated.rs`).
    pub(crate) fn seated(&self, node: Option<&str>) -> String {
        match node {
            None => format!("{}:{{seated}}", self.prefix),
            Some(node) => format!("{}:{{seated}}:{node}", self.prefix),
        }
    }

    /// `P:{rooms}`: the list index.
    pub(crate) fn index(&self) -> String {
        format!("{}:{{rooms}}", self.prefix)
    }

    /// `P:{rooms}:expiry`: the index by expiry time.
    pub(crate) fn expiry(&self) -> String {
        format!("{}:{{rooms}}:expiry", self.prefix)
    }

    /// `P:{nodes}`: live node ids scored by the Redis time their registration expires.
    pub(crate) fn nodes(&self) -> String {
        format!("{}:{{nodes}}", self.prefix)
    }

    /// `P:{nodes}:<id>`: a node's JSON registration, expiring with it.
    pub(crate) fn node(&self, id: &str) -> String {
        format!("{}:{{nodes}}:{id}", self.prefix)
    }

    /// `P:{webhooks}:<name>`: a webhook URL's outbox stream, or the deliverer's role
    /// (`outbox.rs`).
    pub(crate) fn webhooks(&self, name: &str) -> String {
        format!("{}:{{webhooks}}:{name}", self.prefix)
    }

    /// `P:{admin}:<name>`: the cluster's admin event stream (`events`), its last sequence
    /// number (`seq`), and what each node appended last (`writer:<node>`) (`admin_log.rs`).
    pub(crate) fn admin(&self, name: &str) -> String {
        format!("{}:{{admin}}:{name}", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The part of a key that Redis Cluster hashes: the first `{…}` with something inside.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    #[test]
    fn the_keys_of_one_room_share_a_slot() {
        let keys = Keys::new("convene");
        for id in ["RO-1", "odd}id", "{x}", ""] {
            let tag = hash_tag(&keys.room(id)).to_string();
            assert_eq!(hash_tag(&keys.lease(id)), tag, "{id}");
            assert_eq!(hash_tag(&keys.fence(id)), tag, "{id}");
            assert_eq!(hash_tag(&keys.seats(id)), tag, "{id}");
        }
        assert_eq!(hash_tag(&keys.index()), hash_tag(&keys.expiry()));
        assert_eq!(hash_tag(&keys.nodes()), hash_tag(&keys.node("n1")));
        assert_eq!(
            hash_tag(&keys.webhooks("0123abcd")),
            hash_tag(&keys.webhooks("deliverer"))
        );
        assert_eq!(
            hash_tag(&keys.admin("events")),
            hash_tag(&keys.admin("seq"))
        );
        assert_eq!(
            hash_tag(&keys.admin("events")),
            hash_tag(&keys.admin("writer:n1"))
        );
        assert_eq!(keys.room("RO-1"), "convene:{room:RO-1}");
    }
}
