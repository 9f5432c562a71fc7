//! The cluster-wide admin event stream (with `cluster`, see `docs/admin.md`, "Several
//! nodes"): every node ships its own hub's changes, in order, to one Redis Stream
//! (`store::AdminLog`), which numbers the events cluster-wide, and every node reads the
//! whole stream into a second hub, the one its admin streams subscribe to. A node's own
//! hub still counts its own rooms for metrics and placement.
//!
//! A node that starts asks the others for their rooms (`resync`); every node answers, in
//! order with its events, with its whole state (`nodeState`), which replaces that node's
//! rooms in every cluster-wide hub. Rooms of nodes that left the node list are dropped.

use super::events::{Change, Events, NodeRoom};
use crate::store::{AdminLog, LogEntry, Nodes};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// What a node appends to the stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Shipped {
    /// A change of one of its rooms; `visible`: an event (numbered), else a change of the
    /// live set only.
    Change { visible: bool, change: Change },
    /// Its active rooms now (replaces what the others knew of its rooms).
    NodeState { rooms: Vec<NodeRoom> },
    /// A request to every node for its `nodeState`.
    Resync,
}

/// Entries a node may have queued for Redis; beyond, it drops them and ships its whole
/// state once Redis takes entries again.
const QUEUE: usize = 4096;
/// Entries read at once.
const BATCH: usize = 512;

/// Starts shipping `local`'s changes and reading the cluster's stream into `cluster`,
/// from where it ends now (read before this returns, so that every event after it is seen),
/// and asks every node for its rooms; every `every`, drops from `cluster` the rooms of
/// nodes no longer live.
pub async fn start(
    local: Arc<Events>,
    cluster: Arc<Events>,
    log: Arc<AdminLog>,
    nodes: Arc<Nodes>,
    node: String,
    block: Duration,
    every: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let (seq, after) = log
        .position()
        .await
        .map_err(|e| format!("CONVENE_REDIS_URL: cannot read the admin event stream: {e}"))?;
    cluster.start_at(seq);
    let (tx, rx) = mpsc::channel(QUEUE);
    local.set_feed(tx);
    local.ship(Some(Shipped::Resync));
    actix_web::rt::spawn(write(rx, log.clone(), node));
    actix_web::rt::spawn(prune(cluster.clone(), nodes, every));
    // Reads block their connection; a thread of its own has a connection of its own.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("admin-events".into())
        .spawn(move || runtime.block_on(read(local, cluster, log, after, block)))?;
    Ok(())
}

/// Appends what `rx` gives, in order; a failed append is retried until it succeeds (the
/// queue behind it fills meanwhile, see [`QUEUE`]).
async fn write(mut rx: mpsc::Receiver<Shipped>, log: Arc<AdminLog>, node: String) {
    let mut n = 0u64;
    while let Some(item) = rx.recv().await {
        n += 1;
        let numbered = matches!(item, Shipped::Change { visible: true, .. });
        let body = serde_json::to_string(&item).expect("entries always serialize");
        let mut wait = Duration::from_millis(100);
        while let Err(e) = log.append(&node, n, numbered, &body).await {
            tracing::warn!(error = %e, "could not append to the admin event stream; retrying");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_secs(2));
        }
    }
}

/// Reads the stream after the entry `after` into `cluster`, answering resync requests
/// with `local`'s state.
async fn read(
    local: Arc<Events>,
    cluster: Arc<Events>,
    log: Arc<AdminLog>,
    mut after: String,
    block: Duration,
) {
    loop {
        let entries = match log.read(&after, block, BATCH).await {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the admin event stream; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        for entry in entries {
            after = entry.id.clone();
            if !apply(&local, &cluster, &entry) {
                // Events were missed (the stream was trimmed past this node, or Redis lost
                // them): every node's state again.
                tracing::warn!(
                    seq = entry.seq,
                    "missed admin events; asking every node for its rooms"
                );
                local.ship(Some(Shipped::Resync));
            }
        }
    }
}

/// Applies one entry; `false` when its seq shows that events were missed.
fn apply(local: &Events, cluster: &Events, entry: &LogEntry) -> bool {
    let Ok(item) = serde_json::from_str::<Shipped>(&entry.body) else {
        tracing::warn!(id = %entry.id, "unreadable admin event entry skipped");
        return true;
    };
    match item {
        Shipped::Change {
            visible: true,
            change,
        } => cluster.publish_at(Some(entry.seq), &entry.node, &change),
        Shipped::Change { change, .. } => cluster.publish_at(None, &entry.node, &change),
        Shipped::NodeState { rooms } => {
            cluster.replace_node(&entry.node, rooms);
            true
        }
        Shipped::Resync => {
            local.ship(None);
            true
        }
    }
}

/// Drops the rooms of nodes that left the node list, every `every`.
async fn prune(cluster: Arc<Events>, nodes: Arc<Nodes>, every: Duration) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if let Ok(live) = nodes.live().await {
            let ids: Vec<String> = live.into_iter().map(|n| n.id).collect();
            cluster.retain_nodes(&ids);
        }
    }
}
