//! The Redis storage layer driven directly (`convene::storage`), on a private Redis and on a
//! private three-master Redis Cluster: the room store, the fenced room-ownership leases and
//! fenced writes, and the node registry. Real servers only; waits poll with a deadline.
//!
//! Each backend runs the whole set in one test (`on_one_redis`, `on_a_redis_cluster`), one
//! case after the other with a key prefix of its own, so the cluster is started once.

#[path = "../api/support.rs"]
mod support;

mod cases;

use support::{RedisCluster, RedisServer};

#[tokio::test]
async fn on_one_redis() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    cases::run_all(&[redis.url()], false).await;
}

#[tokio::test]
async fn on_a_redis_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    cases::run_all(&cluster.urls(), true).await;
}
