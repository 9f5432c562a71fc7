//! Webhooks: room events POSTed to the application's URLs (`webhook_urls`), signed,
//! retried with backoff, in order per room (`docs/webhooks.md`).
//!
//! [`Webhooks`] is a [`RoomObserver`]: it turns each room event into webhook events
//! ([`event::describe`]) and hands them, without waiting, to the dispatcher's channel.
//! Each URL is a [`Target`] with one queue per room; a room's queue is delivered by a task
//! of its own, one event at a time, each retried until its URL answers 2xx or its retry
//! time (`webhook_retry_seconds`, from when the event happened) runs out. So a room's
//! events arrive in order, and a failing room holds up only itself.
//!
//! Without Redis the queues are the only copy (a restart loses what they hold). With
//! Redis, the dispatcher first appends every event to each URL's stream in the outbox
//! (`store::Outbox`), and the queues are filled by reading the streams back; an entry
//! leaves its stream only after it was delivered or given up, so a crash loses nothing
//! that reached the outbox (and delivers again what was delivered but not yet removed:
//! at-least-once). With `cluster`, only the node that holds the deliverer's role (a
//! short lease in Redis, renewed while it runs) reads the streams; the others only append.

pub mod event;

use crate::metrics::METRICS;
use crate::model::now_ms;
use crate::room::{RoomEvent, RoomObserver};
use crate::store::{Outbox, OutboxEntry};
use event::{Names, WebhookEvent, describe, signature};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{Notify, Semaphore, mpsc};

/// The longest wait between two tries of one event.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// Outbox entries read at once.
const READ_BATCH: usize = 500;
/// Events appended to the outbox at once.
const APPEND_BATCH: usize = 200;
/// Requests in flight to one URL at once (one per room at most); other rooms wait their turn.
const MAX_IN_FLIGHT: usize = 64;

/// What the dispatcher needs from the settings.
#[derive(Clone)]
pub struct WebhookConfig {
    pub urls: Vec<String>,
    pub secret: Vec<u8>,
    pub timeout: Duration,
    pub retry: Duration,
    pub backoff: Duration,
    /// Events held in memory per URL (and between the rooms and the outbox).
    pub limit: usize,
    /// Extra CA certificates (DER) that `https://` receivers may chain to, besides the
    /// system's roots (`webhook_ca_file`).
    pub ca_certs: Vec<Vec<u8>>,
}

/// With Redis: the outbox, and with `cluster` this node's id and the deliverer's lease
/// time.
pub struct Durable {
    pub outbox: Arc<Outbox>,
    pub deliverer: Option<(String, Duration)>,
}

/// The observer that rooms publish to.
pub struct Webhooks {
    tx: mpsc::UnboundedSender<WebhookEvent>,
    names: Mutex<Names>,
    /// Events sent to the dispatcher and not yet queued (or, with Redis, appended).
    unqueued: Arc<AtomicUsize>,
    limit: usize,
    targets: usize,
}

impl RoomObserver for Webhooks {
    fn on_event(&self, event: &RoomEvent) {
        let events = {
            let mut names = self.names.lock().unwrap_or_else(|e| e.into_inner());
            describe(event, &mut names, now_ms())
        };
        for event in events {
            if self.unqueued.load(Ordering::Relaxed) >= self.limit {
                tracing::warn!(id = %event.id, room = %event.room, "webhook event dropped: the dispatcher is too far behind");
                for _ in 0..self.targets {
                    METRICS.webhook_dropped("overflow");
                }
                continue;
            }
            self.unqueued.fetch_add(1, Ordering::Relaxed);
            let _ = self.tx.send(event);
        }
    }
}

impl Webhooks {
    /// Starts the dispatcher's tasks (on the current Tokio runtime) and answers the
    /// observer to add to the rooms' observers; an error when the HTTP client cannot be
    /// made (a CA certificate that rustls refuses).
    pub fn start(config: WebhookConfig, durable: Option<Durable>) -> Result<Arc<Self>, String> {
        let client = client(&config)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let unqueued = Arc::new(AtomicUsize::new(0));
        let outbox = durable.as_ref().map(|d| d.outbox.clone());
        let targets: Vec<Arc<Target>> = config
            .urls
            .iter()
            .map(|url| {
                Arc::new(Target {
                    url: url.clone(),
                    stream: stream_name(url),
                    config: config.clone(),
                    client: client.clone(),
                    outbox: outbox.clone(),
                    state: Mutex::new(TargetState::default()),
                    appended: Notify::new(),
                    in_flight: Semaphore::new(MAX_IN_FLIGHT),
                })
            })
            .collect();
        let observer = Arc::new(Self {
            tx,
            names: Mutex::new(Names::default()),
            unqueued: unqueued.clone(),
            limit: config.limit,
            targets: targets.len(),
        });
        match durable {
            None => {
                tokio::spawn(queue_in_memory(rx, targets, unqueued));
            }
            Some(durable) => {
                for target in &targets {
                    tokio::spawn(read_outbox(
                        target.clone(),
                        durable.outbox.clone(),
                        durable.deliverer.clone(),
                    ));
                }
                tokio::spawn(append_to_outbox(rx, targets, durable.outbox, unqueued));
            }
        }
        Ok(observer)
    }
}

/// The client of every URL: no redirects, the request timeout for connecting too, and for
/// `https://` rustls (aws-lc-rs) trusting the system's roots and `ca_certs`.
fn client(config: &WebhookConfig) -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("convene/", env!("CARGO_PKG_VERSION")))
        .tls_backend_preconfigured(tls(config)?)
        .build()
        .map_err(|e| e.to_string())
}

/// The TLS settings of `https://` URLs: TLS 1.2 or 1.3, the receiver's certificate checked
/// against the system's roots (`rustls-native-certs`: `/etc/ssl/certs`, or `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`) and `ca_certs`. A machine without roots still starts (its `http://`
/// URLs work; its `https://` requests fail and are retried), with a warning.
fn tls(config: &WebhookConfig) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    let (system, _) = roots.add_parsable_certificates(native.certs);
    for der in &config.ca_certs {
        roots
            .add(der.clone().into())
            .map_err(|e| format!("a certificate of the CA file: {e}"))?;
    }
    let https = config.urls.iter().any(|url| url.starts_with("https://"));
    if https && roots.is_empty() {
        let why: Vec<String> = native.errors.iter().map(|e| e.to_string()).collect();
        tracing::warn!(errors = ?why, "no trusted root certificates (system or webhook_ca_file): https webhook requests will fail");
    } else if https {
        tracing::info!(
            system_roots = system,
            ca_file_roots = config.ca_certs.len(),
            "webhook TLS roots loaded"
        );
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The name of a URL's outbox stream: the first 16 hex digits of its SHA-256 (a URL may
/// carry a secret; the key shows none of it).
fn stream_name(url: &str) -> String {
    Sha256::digest(url.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One event in a room's queue; `stream_id` is its outbox entry, with Redis.
#[derive(Clone)]
struct Entry {
    stream_id: Option<String>,
    event: Arc<WebhookEvent>,
}

/// One webhook URL and its queues.
struct Target {
    url: String,
    stream: String,
    config: WebhookConfig,
    client: reqwest::Client,
    outbox: Option<Arc<Outbox>>,
    state: Mutex<TargetState>,
    /// Woken when this node appended to the outbox, so the reader reads at once.
    appended: Notify,
    /// Caps the requests in flight to this URL (`MAX_IN_FLIGHT`).
    in_flight: Semaphore,
}

#[derive(Default)]
struct TargetState {
    queues: HashMap<String, VecDeque<Entry>>,
    /// Entries in all queues.
    held: usize,
    /// Changed when the queues are dropped (a lost deliverer's role): the room tasks of
    /// an older generation stop without touching them.
    generation: u64,
}

impl Target {
    fn lock(&self) -> std::sync::MutexGuard<'_, TargetState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an entry behind the others of its room, starting the room's task when the
    /// room had none; answers false (nothing queued) when the queues are full.
    fn enqueue(self: &Arc<Self>, entry: Entry) -> bool {
        let mut state = self.lock();
        if state.held >= self.config.limit {
            return false;
        }
        state.held += 1;
        let generation = state.generation;
        let room = entry.event.room.clone();
        let queue = state.queues.entry(room.clone()).or_default();
        queue.push_back(entry);
        if queue.len() == 1 {
            tokio::spawn(self.clone().deliver_room(room, generation));
        }
        true
    }

    /// Drops every queue (the deliverer's role went to another node, which delivers the
    /// outbox from its oldest entry).
    fn reset(&self) {
        let mut state = self.lock();
        state.queues.clear();
        state.held = 0;
        state.generation += 1;
    }

    fn held(&self) -> usize {
        self.lock().held
    }

    /// Delivers a room's queue, in order, until it is empty.
    async fn deliver_room(self: Arc<Self>, room: String, generation: u64) {
        loop {
            let entry = {
                let mut state = self.lock();
                if state.generation != generation {
                    return;
                }
                match state.queues.get(&room).and_then(|q| q.front()) {
                    Some(entry) => entry.clone(),
                    None => {
                        state.queues.remove(&room);
                        return;
                    }
                }
            };
            if !self.deliver(&entry.event, generation).await {
                return;
            }
            let emptied = {
                let mut state = self.lock();
                if state.generation != generation {
                    return;
                }
                state.held -= 1;
                let queue = state
                    .queues
                    .get_mut(&room)
                    .expect("a room's task owns its queue");
                queue.pop_front();
                let emptied = queue.is_empty();
                if emptied {
                    state.queues.remove(&room);
                }
                emptied
            };
            if let (Some(outbox), Some(stream_id)) = (&self.outbox, &entry.stream_id)
                && let Err(e) = outbox.remove(&self.stream, stream_id).await
            {
                tracing::warn!(error = %e, id = %entry.event.id, "delivered webhook event not removed from the outbox; it will be sent again after a restart");
            }
            if emptied {
                return;
            }
        }
    }

    /// Sends one event until it is delivered or its retry time runs out (both answer
    /// true: the entry is done), or the queues were dropped meanwhile (false).
    async fn deliver(&self, event: &WebhookEvent, generation: u64) -> bool {
        let mut delay = self.config.backoff;
        loop {
            match self.attempt(event).await {
                Ok(()) => {
                    METRICS.webhook_delivered();
                    return true;
                }
                Err(why) => {
                    let deadline = event.at + self.config.retry.as_millis() as u64;
                    if now_ms() >= deadline {
                        METRICS.webhook_dropped("expired");
                        tracing::warn!(id = %event.id, room = %event.room, error = %why, "webhook event dropped: not delivered within webhook_retry_seconds");
                        return true;
                    }
                    METRICS.webhook_retried();
                    tracing::info!(id = %event.id, room = %event.room, error = %why, retry_in_ms = delay.as_millis() as u64, "webhook request failed; will retry");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_BACKOFF);
                    if self.lock().generation != generation {
                        return false;
                    }
                }
            }
        }
    }

    /// One signed POST of an event; `Ok` for a 2xx answer.
    async fn attempt(&self, event: &WebhookEvent) -> Result<(), String> {
        let _permit = self
            .in_flight
            .acquire()
            .await
            .map_err(|_| "the dispatcher stopped".to_string())?;
        let timestamp = now_ms() / 1000;
        let answer = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .header("convene-event-id", &event.id)
            .header(
                "convene-signature",
                signature(&self.config.secret, timestamp, &event.body),
            )
            .body(event.body.clone())
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    return "no answer in time".to_string();
                }
                // The causes too: a TLS failure says why (an untrusted certificate, ...).
                let mut why = e.to_string();
                let mut source = std::error::Error::source(&e);
                while let Some(cause) = source {
                    why = format!("{why}: {cause}");
                    source = cause.source();
                }
                why
            })?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("answered {}", answer.status().as_u16()))
        }
    }
}

/// Without Redis: every event goes straight into each URL's queues.
async fn queue_in_memory(
    mut rx: mpsc::UnboundedReceiver<WebhookEvent>,
    targets: Vec<Arc<Target>>,
    unqueued: Arc<AtomicUsize>,
) {
    while let Some(event) = rx.recv().await {
        unqueued.fetch_sub(1, Ordering::Relaxed);
        let event = Arc::new(event);
        for target in &targets {
            let entry = Entry {
                stream_id: None,
                event: event.clone(),
            };
            if target.enqueue(entry) {
                METRICS.webhooks_queued(1);
            } else {
                METRICS.webhook_dropped("overflow");
                tracing::warn!(id = %event.id, room = %event.room, "webhook event dropped: the queue is full");
            }
        }
    }
}

/// With Redis: appends events to every URL's stream, in order, in batches; an append that
/// fails is tried again (the events wait in order) until Redis takes it.
async fn append_to_outbox(
    mut rx: mpsc::UnboundedReceiver<WebhookEvent>,
    targets: Vec<Arc<Target>>,
    outbox: Arc<Outbox>,
    unqueued: Arc<AtomicUsize>,
) {
    let streams: Vec<String> = targets.iter().map(|t| t.stream.clone()).collect();
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < APPEND_BATCH {
            match rx.try_recv() {
                Ok(event) => batch.push(event),
                Err(_) => break,
            }
        }
        let entries: Vec<OutboxEntry> = batch
            .into_iter()
            .map(|e| OutboxEntry {
                id: e.id,
                room: e.room,
                at: e.at,
                body: e.body,
            })
            .collect();
        let mut failures = 0u32;
        while let Err(e) = outbox.append(&streams, &entries).await {
            if failures == 0 {
                tracing::warn!(error = %e, events = entries.len(), "webhook events not written to the outbox yet; retrying");
            }
            failures += 1;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        unqueued.fetch_sub(entries.len(), Ordering::Relaxed);
        METRICS.webhooks_queued((entries.len() * targets.len()) as u64);
        for target in &targets {
            target.appended.notify_one();
        }
    }
}

/// With Redis: reads a URL's stream into its queues, oldest first, never holding more
/// than the limit. With `cluster`, only while this node holds the deliverer's role; on
/// taking it, from the stream's start (everything still there is undelivered).
async fn read_outbox(
    target: Arc<Target>,
    outbox: Arc<Outbox>,
    deliverer: Option<(String, Duration)>,
) {
    let poll = match &deliverer {
        Some((_, lease)) => (*lease / 3).min(Duration::from_millis(250)),
        None => Duration::from_secs(1),
    };
    let mut holding = deliverer.is_none();
    let mut after: Option<String> = None;
    let mut claimed_at: Option<tokio::time::Instant> = None;
    loop {
        if let Some((node, lease)) = &deliverer
            && claimed_at.is_none_or(|t| t.elapsed() >= *lease / 3)
        {
            let held = outbox.claim(node, *lease).await.unwrap_or_else(|e| {
                tracing::warn!(error = %e, "could not renew the webhook deliverer's role");
                false
            });
            claimed_at = held.then(tokio::time::Instant::now);
            if held && !holding {
                tracing::info!(url_key = %target.stream, "this node delivers webhooks");
                after = None;
            } else if !held && holding {
                tracing::info!(url_key = %target.stream, "this node no longer delivers webhooks");
                target.reset();
            }
            holding = held;
        }
        let mut more = false;
        let space = target
            .config
            .limit
            .saturating_sub(target.held())
            .min(READ_BATCH);
        if holding && space > 0 {
            match outbox.read(&target.stream, after.as_deref(), space).await {
                Ok(rows) => {
                    more = rows.len() == space;
                    for (stream_id, entry) in rows {
                        after = Some(stream_id.clone());
                        let Some(entry) = entry else {
                            let _ = outbox.remove(&target.stream, &stream_id).await;
                            continue;
                        };
                        let event = Arc::new(WebhookEvent {
                            id: entry.id,
                            room: entry.room,
                            at: entry.at,
                            body: entry.body,
                        });
                        let queued = target.enqueue(Entry {
                            stream_id: Some(stream_id),
                            event,
                        });
                        debug_assert!(queued, "reads never exceed the limit");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "could not read the webhook outbox"),
            }
        }
        if !more {
            tokio::select! {
                _ = target.appended.notified() => {}
                _ = tokio::time::sleep(poll) => {}
            }
        }
    }
}
