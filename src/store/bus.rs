//! The message bus between nodes (with `cluster`): Redis pub/sub, one channel per node
//! (`P:bridge:<node>`). What one node publishes to another arrives in the order it was
//! published: every message leaves through one publisher task on one connection, and every
//! message arrives through one subscription. Pub/sub keeps nothing: a message published
//! while the receiver's subscription is down is lost, so the bus says so (`Broken`, or
//! `Undelivered` for a node nobody listens for) and its user drops what depended on it.
//!
//! Classic `PUBLISH`/`SUBSCRIBE` work alike on one Redis and on a Redis Cluster (where a
//! message published on any master reaches subscribers on every master); both connections
//! go to the first of the configured URLs that answers.

use crate::model::StoreError;
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::mpsc;

/// How many messages one pipeline of the publisher carries at most.
const BATCH: usize = 256;
/// How long the bus waits before connecting again after a failure.
const RETRY: Duration = Duration::from_millis(200);

/// What the bus tells its user.
#[derive(Debug)]
pub enum BusEvent {
    /// A message published to this node.
    Message(Vec<u8>),
    /// Messages may have been lost in either direction (the subscription or the publisher's
    /// connection broke); everything sent before may be gone.
    Broken,
    /// A message to this node found nobody subscribed: the node is gone.
    Undelivered(String),
}

/// The sending half of the bus, cheap to clone.
#[derive(Clone)]
pub struct Bus {
    node: String,
    tx: mpsc::Sender<(String, Vec<u8>)>,
}

impl Bus {
    /// Starts the publisher and the subscriber of node `node` on the first of `urls` that
    /// answers, and waits (at most `timeout`) until the subscription is in place; answers
    /// the handle and the events (the messages to this node among them).
    pub async fn start(
        urls: &[String],
        prefix: &str,
        node: &str,
        timeout: Duration,
    ) -> Result<(Self, mpsc::Receiver<BusEvent>), StoreError> {
        let clients = urls
            .iter()
            .map(|u| super::conn::client(u))
            .collect::<Result<Vec<_>, _>>()?;
        if clients.is_empty() {
            return Err(StoreError("no Redis URL for the bus".into()));
        }
        let prefix = prefix.to_string();
        let (tx, outgoing) = mpsc::channel(65_536);
        let (events, received) = mpsc::channel(65_536);
        tokio::spawn(publish(
            clients.clone(),
            prefix.clone(),
            timeout,
            outgoing,
            events.clone(),
        ));
        let (subscribed, first) = tokio::sync::oneshot::channel();
        tokio::spawn(subscribe(
            clients,
            channel(&prefix, node),
            events,
            subscribed,
        ));
        if tokio::time::timeout(timeout, first).await.is_err() {
            tracing::warn!("the bus is not subscribed yet; it goes on trying");
        }
        Ok((
            Self {
                node: node.to_string(),
                tx,
            },
            received,
        ))
    }

    /// This node's id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Queues `payload` for node `to`, waiting while the publisher is behind; `false` once
    /// the bus has stopped.
    pub async fn send(&self, to: &str, payload: Vec<u8>) -> bool {
        self.tx.send((to.to_string(), payload)).await.is_ok()
    }
}

/// The channel of messages to `node`.
fn channel(prefix: &str, node: &str) -> String {
    format!("{prefix}:bridge:{node}")
}

/// One connection to the first client that answers, trying each in turn until one does.
async fn connect_any<T, F: std::future::Future<Output = redis::RedisResult<T>>>(
    clients: &[redis::Client],
    what: &str,
    connect: impl Fn(redis::Client) -> F,
) -> T {
    let mut failures = 0u32;
    loop {
        for client in clients {
            match tokio::time::timeout(Duration::from_secs(2), connect(client.clone())).await {
                Ok(Ok(conn)) => return conn,
                Ok(Err(e)) if failures.is_multiple_of(25) => {
                    tracing::warn!(error = %e, "the bus could not connect its {what}")
                }
                _ => {}
            }
        }
        failures += 1;
        tokio::time::sleep(RETRY).await;
    }
}

/// The publisher: drains the queue in pipelines of `PUBLISH`es, in order, on one
/// connection. A pipeline that fails breaks the bus (its messages are lost); a `PUBLISH`
/// that reached no subscriber names the node that is gone.
async fn publish(
    clients: Vec<redis::Client>,
    prefix: String,
    timeout: Duration,
    mut outgoing: mpsc::Receiver<(String, Vec<u8>)>,
    events: mpsc::Sender<BusEvent>,
) {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let mut conn = None;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        if outgoing.recv_many(&mut batch, BATCH).await == 0 {
            return;
        }
        if conn.is_none() {
            conn = Some(
                connect_any(&clients, "publisher", |c| {
                    let config = config.clone();
                    async move {
                        c.get_multiplexed_async_connection_with_config(&config)
                            .await
                    }
                })
                .await,
            );
        }
        let Some(c) = conn.as_mut() else { continue };
        let mut pipe = redis::pipe();
        for (to, payload) in &batch {
            pipe.cmd("PUBLISH").arg(channel(&prefix, to)).arg(payload);
        }
        match pipe.query_async::<Vec<i64>>(c).await {
            Ok(receivers) => {
                let mut gone: Vec<&str> = Vec::new();
                for ((to, _), n) in batch.iter().zip(receivers) {
                    if n == 0 && !gone.contains(&to.as_str()) {
                        gone.push(to);
                    }
                }
                for to in gone {
                    let _ = events.send(BusEvent::Undelivered(to.to_string())).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, lost = batch.len(), "the bus could not publish");
                conn = None;
                let _ = events.send(BusEvent::Broken).await;
            }
        }
        batch.clear();
    }
}

/// The subscriber: this node's channel, subscribed again whenever the connection breaks
/// (which breaks the bus: what was published meanwhile is lost).
async fn subscribe(
    clients: Vec<redis::Client>,
    channel: String,
    events: mpsc::Sender<BusEvent>,
    subscribed: tokio::sync::oneshot::Sender<()>,
) {
    let mut subscribed = Some(subscribed);
    loop {
        let mut pubsub = connect_any(&clients, "subscriber", |c| async move {
            c.get_async_pubsub().await
        })
        .await;
        if let Err(e) = pubsub.subscribe(&channel).await {
            tracing::warn!(error = %e, "the bus could not subscribe");
            tokio::time::sleep(RETRY).await;
            continue;
        }
        if let Some(subscribed) = subscribed.take() {
            let _ = subscribed.send(());
        }
        let mut messages = pubsub.into_on_message();
        while let Some(message) = messages.next().await {
            if events
                .send(BusEvent::Message(message.get_payload_bytes().to_vec()))
                .await
                .is_err()
            {
                return;
            }
        }
        tracing::warn!("the bus lost its subscription; subscribing again");
        if events.send(BusEvent::Broken).await.is_err() {
            return;
        }
        tokio::time::sleep(RETRY).await;
    }
}
