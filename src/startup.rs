//! Building and running the application: store, actors, HTTP server.

use crate::admin::events::Events;
use crate::api::{self, AppState};
use crate::auth::ApiKeys;
use crate::config::Settings;
use crate::error::ApiError;
use crate::heads::HeadGuard;
use crate::media::{MediaConfig, MediaEvent, MediaPlane};
use crate::metrics::METRICS;
use crate::model::Owner;
use crate::model::{Limits, now_ms};
use crate::paging::PageTokens;
use crate::room::RoomObserver;
use crate::room::{
    HandedOver, LoadNow, MediaReport, Ownership, RoomServices, Rooms, StartElsewhere,
};
use crate::signaling::SignalingConfig;
use crate::signaling::bridge::Bridge;
use crate::store::{
    AdminLog, Bus, Leases, MemoryStore, NodeInfo, Nodes, Outbox, Redis, RedisStore, Seated, Store,
};
use crate::telemetry;
use crate::token::{RoomTokens, secret_fingerprint};
use crate::webhooks::{Durable, WebhookConfig, Webhooks};
use crate::wsguard::PendingSockets;
use actix_http::{HttpService, KeepAlive, Protocol, Request, Response};
use actix_service::{
    IntoServiceFactory, Service, ServiceFactory, ServiceFactoryExt, fn_service, map_config,
};
use actix_web::body::MessageBody;
use actix_web::dev::{AppConfig, Server};
use actix_web::middleware::from_fn;
use actix_web::rt::net::TcpStream;
use actix_web::{App, web};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

pub struct Application {
    server: Server,
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    node: Node,
    rooms: Rooms,
}

/// This node: its id, and with Redis its entry in the registry of live nodes, refreshed by
/// a heartbeat task and removed at a clean shutdown.
struct Node {
    id: String,
    registry: Option<(Arc<Nodes>, tokio::task::JoinHandle<()>)>,
}

impl Application {
    /// Opens the store (waiting until it answers), starts the registry, and binds the
    /// server. No room gets an actor here: rooms are activated on first use. Runs inside an
    /// actix system (the registry and room actors live on the current arbiter).
    /// `settings` must carry at least one API key and a token secret.
    /// With Redis, it also registers this node among the live nodes; with `cluster`, after
    /// refusing to join other nodes whose room tokens it could not verify (see
    /// [`check_secret`]), and with room leases (see `room::ownership`).
    pub async fn build(settings: Settings) -> Result<Self, Box<dyn std::error::Error>> {
        let node_id = if settings.node_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            settings.node_id.clone()
        };
        METRICS.node(&node_id);
        METRICS.cluster_nodes(1);
        let urls = settings.redis_urls();
        let redis = if urls.is_empty() {
            None
        } else {
            Some(Arc::new(Redis::open(
                &urls,
                settings.redis_cluster,
                &settings.redis_key_prefix,
                settings.store_timeout(),
            )?))
        };
        let store: Arc<dyn Store> = match &redis {
            None => Arc::new(MemoryStore::new()),
            Some(redis) => Arc::new(RedisStore::over(redis.clone())),
        };
        let secret = settings.token_secret.as_bytes();
        let limits = Limits {
            mesh: settings.mesh_max_participants,
            sfu: settings.sfu_max_participants,
        };
        let events = Arc::new(Events::new(
            limits,
            settings.admin_event_log_size,
            settings.admin_queue_capacity,
        ));
        // What admin streams follow: with `cluster`, every room of the cluster, read back
        // from Redis (see `admin::cluster`); else this node's own hub.
        let admin_events = if settings.cluster {
            Arc::new(Events::new(
                limits,
                settings.admin_event_log_size,
                settings.admin_queue_capacity,
            ))
        } else {
            events.clone()
        };
        let signaling = Arc::new(SignalingConfig::from_settings(&settings));
        // The SFU's media plane, on a thread of its own; its events reach participants
        // through their rooms (see `deliver_media_events`).
        let (media, media_events) = start_media(&settings)?;
        let nodes = redis.as_ref().map(|redis| {
            Arc::new(Nodes::new(
                redis.clone(),
                Duration::from_millis(settings.node_ttl_ms),
            ))
        });
        let lease_time = Duration::from_millis(settings.room_lease_ms);
        // Set at SIGTERM with `cluster` (see [`drain`]); registered with the node's entry.
        let draining = Arc::new(AtomicBool::new(false));
        // Leases, fenced writes and forwarding only in a cluster: a single node keeps
        // serving its active rooms from memory through a Redis outage of any length.
        let owning = redis
            .as_ref()
            .zip(nodes.as_ref())
            .filter(|_| settings.cluster);
        let ownership = owning.map(|(redis, nodes)| {
            Arc::new(Ownership {
                leases: Leases::new(redis.clone(), &node_id, lease_time),
                store: Arc::new(RedisStore::over(redis.clone())),
                nodes: nodes.clone(),
                lease_time,
                max_rooms: settings.node_max_rooms,
                max_participants: settings.node_max_participants,
                load: load_of(events.clone()),
                draining: draining.clone(),
                seated: Seated::new(redis.clone()),
            })
        });
        let mut observers: Vec<Arc<dyn RoomObserver>> = vec![events.clone()];
        if let Some(webhooks) = start_webhooks(&settings, redis.as_ref(), &node_id, lease_time)? {
            observers.push(webhooks);
        }
        let rooms = Rooms::start(RoomServices {
            limits,
            room_token_ttl_seconds: settings.room_token_ttl_seconds,
            room_ttl_seconds: settings.room_ttl_seconds,
            endpoint_ttl_seconds: settings.endpoint_ttl_seconds,
            room_idle: Duration::from_secs(settings.room_idle_seconds),
            tokens: RoomTokens::new(secret, &settings.token_issuer, &settings.token_audience),
            resume_grace: signaling.resume_grace,
            store: store.clone(),
            observers,
            media: Some(media),
            ownership,
        });
        deliver_media_events(rooms.clone(), media_events);
        if settings.cluster {
            spawn_adopter(
                rooms.clone(),
                Duration::from_millis(settings.node_heartbeat_ms),
            );
        }
        wait_for_store(store.as_ref(), &settings).await?;
        if let Some(nodes) = nodes.as_ref().filter(|_| settings.cluster) {
            check_secret(nodes, &settings, &node_id).await?;
        }
        spawn_sweeper(
            rooms.clone(),
            Duration::from_secs(settings.store_sweep_interval_seconds),
        );

        let listener = TcpListener::bind(&settings.bind)?;
        let addr = listener.local_addr()?;
        let (shutdown, shutdown_rx) = watch::channel(false);
        let metrics_addr = serve_metrics(&settings, &events, shutdown_rx.clone())?;
        // The signal relay between nodes: subscribed before this node is in the node list,
        // so that no other node bridges a socket here before it listens.
        let bridge = match nodes.as_ref().filter(|_| settings.cluster) {
            None => None,
            Some(nodes) => {
                let (bus, bus_events) = Bus::start(
                    &urls,
                    &settings.redis_key_prefix,
                    &node_id,
                    settings.store_timeout(),
                )
                .await
                .map_err(|e| format!("CONVENE_REDIS_URL: cannot start the bus: {e}"))?;
                Some(Bridge::start(
                    bus,
                    bus_events,
                    rooms.clone(),
                    signaling.clone(),
                    shutdown_rx.clone(),
                    Some(nodes.clone()),
                    Duration::from_millis(settings.node_heartbeat_ms),
                ))
            }
        };
        let mut drain = None;
        let registry = match nodes {
            None => None,
            Some(nodes) => {
                let info = node_info(&settings, &node_id, addr);
                if let Some(ownership) = rooms.services().ownership.clone() {
                    drain = Some(Drain {
                        rooms: rooms.clone(),
                        ownership,
                        nodes: nodes.clone(),
                        info: info.clone(),
                        events: events.clone(),
                        api_key: settings.api_keys.first().cloned().unwrap_or_default(),
                        budget: Duration::from_secs(drain_seconds(&settings)),
                    });
                }
                nodes
                    .register(&info)
                    .await
                    .map_err(|e| format!("CONVENE_REDIS_URL: cannot register this node: {e}"))?;
                tracing::info!(node = %node_id, http = %info.http_addr, media = %info.media_addr, "registered in the node list");
                if let Ok(live) = nodes.live().await {
                    METRICS.cluster_nodes(live.len());
                }
                if let Some(redis) = redis.as_ref().filter(|_| settings.cluster) {
                    start_cluster_events(
                        &settings,
                        redis,
                        &nodes,
                        &node_id,
                        events.clone(),
                        admin_events.clone(),
                    )
                    .await?;
                }
                let heartbeat = spawn_heartbeat(
                    nodes.clone(),
                    info,
                    events.clone(),
                    draining.clone(),
                    Duration::from_millis(settings.node_heartbeat_ms),
                );
                Some((nodes, heartbeat))
            }
        };
        let state = web::Data::new(AppState {
            shutdown: shutdown_rx,
            api_keys: ApiKeys::new(&settings.api_keys),
            page_tokens: PageTokens::new(secret),
            rooms: rooms.clone(),
            events,
            admin_events,
            signaling,
            pending: PendingSockets::new(
                settings.signaling_max_pending_sockets,
                settings.signaling_max_pending_sockets_per_ip,
            ),
            settings: settings.clone(),
            bridge,
        });
        let app = move || {
            App::new()
                .app_data(state.clone())
                .app_data(
                    web::QueryConfig::default()
                        .error_handler(|_, _| ApiError::invalid_value("query").into()),
                )
                .app_data(
                    web::PathConfig::default()
                        .error_handler(|_, _| ApiError::invalid_value("path").into()),
                )
                .wrap(from_fn(telemetry::request_context))
                .configure(api::configure)
                .default_service(web::to(api::not_found))
        };
        let server = serve(listener, &settings, app)?;
        stop_on_signal(&server, shutdown, drain)?;
        Ok(Self {
            server,
            addr,
            metrics_addr,
            node: Node {
                id: node_id,
                registry,
            },
            rooms,
        })
    }

    /// This node's id (`node_id`, or the one made up at start-up).
    pub fn node_id(&self) -> &str {
        &self.node.id
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of the metrics listener, when `metrics_bind` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Serves until SIGTERM or SIGINT; then (with `cluster`) hands this node's rooms to
    /// other nodes (see [`drain`]), closes every signaling socket with 1001 (so SDKs
    /// reconnect elsewhere or later), finishes in-flight requests and returns.
    /// With Redis, it then removes this node from the node list.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some((nodes, heartbeat)) = self.node.registry {
            // The rooms' leases go first, so other nodes (or this one restarted) take the
            // rooms at once rather than after the lease time.
            self.rooms.release_leases(Duration::from_secs(2)).await;
            // Commands of this thread share one connection, in order: a refresh already
            // sent runs before the removal.
            heartbeat.abort();
            match nodes.remove(&self.node.id).await {
                Ok(()) => tracing::info!(node = %self.node.id, "removed from the node list"),
                Err(e) => {
                    tracing::warn!(error = %e, "could not leave the node list; the entry expires")
                }
            }
        }
        served
    }
}

/// With `cluster`: ships this node's room events to the cluster's admin event stream in
/// Redis and reads every node's back into `admin_events`, the hub of admin streams.
async fn start_cluster_events(
    settings: &Settings,
    redis: &Arc<Redis>,
    nodes: &Arc<Nodes>,
    node_id: &str,
    events: Arc<Events>,
    admin_events: Arc<Events>,
) -> Result<(), Box<dyn std::error::Error>> {
    let log = Arc::new(AdminLog::new(redis.clone(), settings.admin_event_log_size));
    // A read waits for entries a while, well within the store timeout.
    let block = (settings.store_timeout() / 2).min(Duration::from_secs(1));
    crate::admin::cluster::start(
        events,
        admin_events,
        log,
        nodes.clone(),
        node_id.to_string(),
        block.max(Duration::from_millis(10)),
        Duration::from_millis(settings.node_heartbeat_ms),
    )
    .await
}

/// Starts the webhook dispatcher when `webhook_urls` is set: durable (the outbox) with
/// Redis, and with `cluster` delivering only while this node holds the deliverer's role
/// (for a room lease's time, renewed as it runs).
fn start_webhooks(
    settings: &Settings,
    redis: Option<&Arc<Redis>>,
    node_id: &str,
    lease_time: Duration,
) -> Result<Option<Arc<Webhooks>>, Box<dyn std::error::Error>> {
    if settings.webhook_urls.is_empty() {
        return Ok(None);
    }
    let config = WebhookConfig {
        urls: settings.webhook_urls.clone(),
        secret: settings.webhook_secret.as_bytes().to_vec(),
        timeout: Duration::from_millis(settings.webhook_timeout_ms),
        retry: Duration::from_secs(settings.webhook_retry_seconds),
        backoff: Duration::from_millis(settings.webhook_backoff_ms),
        limit: settings.webhook_queue_limit,
        ca_certs: settings.webhook_ca_certs()?,
    };
    let durable = redis.map(|redis| Durable {
        outbox: Arc::new(Outbox::new(redis.clone())),
        deliverer: settings.cluster.then(|| (node_id.to_string(), lease_time)),
    });
    tracing::info!(
        urls = settings.webhook_urls.len(),
        durable = durable.is_some(),
        "webhooks on"
    );
    let webhooks = Webhooks::start(config, durable)
        .map_err(|e| format!("CONVENE_WEBHOOK_CA_FILE: the webhook client: {e}"))?;
    Ok(Some(webhooks))
}

/// Serves `app` on `listener` as actix-web's `HttpServer` does (HTTP/1.1, its keep-alive,
/// request and disconnect timeouts, graceful shutdown), but with every connection's socket
/// wrapped in a [`HeadGuard`], which answers an oversized request head with the table's
/// error (see `crate::heads`). `HttpServer` offers no way to wrap the socket.
fn serve<F, I, S, B>(listener: TcpListener, settings: &Settings, app: F) -> std::io::Result<Server>
where
    F: Fn() -> I + Send + Clone + 'static,
    I: IntoServiceFactory<S, Request>,
    S: ServiceFactory<Request, Config = AppConfig> + 'static,
    S::Error: Into<actix_web::Error> + 'static,
    S::InitError: std::fmt::Debug,
    S::Response: Into<Response<B>> + 'static,
    <S::Service as Service<Request>>::Future: 'static,
    S::Service: 'static,
    B: MessageBody + 'static,
{
    let addr = listener.local_addr()?;
    // With `cluster`, the drain had its part of `shutdown_timeout_seconds` already.
    let builder = Server::build()
        .shutdown_timeout(settings.shutdown_timeout_seconds - drain_seconds(settings))
        .disable_signals();
    // Tells open connections that the server stops, so idle keep-alive ones close at once.
    let stopping = builder.graceful_shutdown_signal();
    let mut builder = builder.listen("convene", listener, move || {
        let stopping = stopping.clone();
        // The same settings as actix-web's `HttpServer` defaults.
        let http = HttpService::build()
            .graceful_shutdown_signal(move || {
                let stopping = stopping.clone();
                async move { stopping.notified().await }
            })
            .keep_alive(KeepAlive::default())
            .client_request_timeout(Duration::from_secs(5))
            .client_disconnect_timeout(Duration::from_secs(1))
            .h1_allow_half_closed(true)
            .local_addr(addr)
            .finish(map_config(
                app()
                    .into_factory()
                    .map_err(|err| err.into().error_response()),
                |_| AppConfig::default(),
            ));
        fn_service(|io: TcpStream| async move {
            let _ = io.set_nodelay(true);
            let peer = io.peer_addr().ok();
            Ok::<_, actix_http::error::DispatchError>((HeadGuard::new(io), Protocol::Http1, peer))
        })
        .and_then(http)
    })?;
    if settings.workers > 0 {
        builder = builder.workers(settings.workers);
    }
    Ok(builder.run())
}

/// Installs the SIGTERM/SIGINT handlers now (so a signal that comes before the server is
/// first polled is not lost); on the first one, drains the node (with `cluster`, see
/// [`drain`]) and then stops the server gracefully.
fn stop_on_signal(
    server: &Server,
    shutdown: watch::Sender<bool>,
    drain: Option<Drain>,
) -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("shutting down");
        if let Some(drain) = drain {
            let budget = drain.budget;
            if tokio::time::timeout(budget, drain.run()).await.is_err() {
                tracing::warn!(
                    budget_ms = budget.as_millis() as u64,
                    "draining took its whole time; the rest of the rooms' leases are released"
                );
            }
        }
        let _ = shutdown.send(true);
        handle.stop(true).await;
    });
    Ok(())
}

/// The part of `shutdown_timeout_seconds` that draining may take (with `cluster`): half,
/// rounded down; the rest is the HTTP server's graceful stop.
fn drain_seconds(settings: &Settings) -> u64 {
    if settings.cluster {
        settings.shutdown_timeout_seconds / 2
    } else {
        0
    }
}

/// What a node of a cluster needs to drain at SIGTERM.
struct Drain {
    rooms: Rooms,
    ownership: Arc<Ownership>,
    nodes: Arc<Nodes>,
    /// This node's entry as registered (its load is filled in when draining).
    info: NodeInfo,
    events: Arc<Events>,
    /// The API key that the forwarded calls starting rooms on other nodes carry.
    api_key: String,
    budget: Duration,
}

/// A node that may take rooms of a draining node: its load as last registered, plus what
/// the drain sent it since.
struct Target {
    owner: Owner,
    load: u64,
    refused: bool,
}

impl Drain {
    /// Draining: the node registers itself as `draining` at once (it counts as full, so
    /// nobody places a room here and this node claims none), then hands every active room
    /// to the least-loaded other live node (see `RoomHandle::hand_over`: seats stored,
    /// lease released, the room started there, this node's sockets closed with 1001
    /// `room handed over to another node`, bridged ones re-attached by their edges). With
    /// no other live node under its limits the rooms stay, and the shutdown releases their
    /// leases as before.
    async fn run(self) {
        let began = Instant::now();
        self.ownership.start_draining();
        let mut info = self.info.clone();
        let (mesh, sfu, participants) = self.events.gauges();
        info.rooms = (mesh + sfu) as u64;
        info.participants = participants as u64;
        info.draining = true;
        if let Err(e) = self.nodes.register(&info).await {
            tracing::warn!(error = %e, "could not register this node as draining");
        }
        if info.rooms == 0 {
            return;
        }
        let targets: Vec<Target> = match self.nodes.live().await {
            Ok(live) => live
                .into_iter()
                .filter(|n| n.id != info.id && !n.is_full())
                .map(|n| Target {
                    load: n.load(),
                    owner: Owner {
                        node: n.id,
                        http_addr: Some(n.http_addr),
                    },
                    refused: false,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "draining: could not read the node list");
                Vec::new()
            }
        };
        if targets.is_empty() {
            tracing::info!(
                rooms = info.rooms,
                "draining: no other live node can take rooms; their leases are released"
            );
            return;
        }
        let targets = Arc::new(Mutex::new(targets));
        let key = Arc::new(self.api_key.into_bytes());
        let start: StartElsewhere = Arc::new(move |id: String, seats: usize| {
            let (targets, key) = (targets.clone(), key.clone());
            Box::pin(async move {
                loop {
                    // The least loaded first, counting the rooms sent to each so far.
                    let next = {
                        let targets = targets.lock().unwrap_or_else(|e| e.into_inner());
                        targets
                            .iter()
                            .filter(|t| !t.refused)
                            .min_by(|a, b| (a.load, &a.owner.node).cmp(&(b.load, &b.owner.node)))
                            .map(|t| t.owner.clone())
                    };
                    let Some(owner) = next else {
                        return false;
                    };
                    let started =
                        crate::api::start_there(&owner, &id, Some(&key), "a room handed over")
                            .await;
                    let mut targets = targets.lock().unwrap_or_else(|e| e.into_inner());
                    if let Some(target) = targets.iter_mut().find(|t| t.owner.node == owner.node) {
                        if started {
                            target.load += 1 + seats as u64;
                        } else {
                            // Full since its last heartbeat, or unreachable: not asked again.
                            target.refused = true;
                        }
                    }
                    if started {
                        return true;
                    }
                }
            })
        });
        let outcomes = self.rooms.hand_over_all(start, self.budget).await;
        for outcome in &outcomes {
            METRICS.room_drained(outcome.label());
        }
        let count = |o: HandedOver| outcomes.iter().filter(|&&x| x == o).count();
        tracing::info!(
            started = count(HandedOver::Started),
            released = count(HandedOver::Released),
            failed = count(HandedOver::Failed),
            ms = began.elapsed().as_millis() as u64,
            "drained: rooms handed to other nodes"
        );
    }
}

/// Starts the listener of `metrics_bind`, if set; it stops when the service shuts down.
fn serve_metrics(
    settings: &Settings,
    events: &Arc<Events>,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<Option<SocketAddr>> {
    if settings.metrics_bind.is_empty() {
        return Ok(None);
    }
    let (server, addr) = api::metrics_server(&settings.metrics_bind, events.clone())?;
    let handle = server.handle();
    actix_web::rt::spawn(server);
    actix_web::rt::spawn(async move {
        let _ = shutdown.changed().await;
        handle.stop(true).await;
    });
    Ok(Some(addr))
}

/// Starts the media plane from the `rtc_*` settings.
fn start_media(
    settings: &Settings,
) -> Result<(MediaPlane, mpsc::UnboundedReceiver<MediaEvent>), Box<dyn std::error::Error>> {
    let mut config = MediaConfig::new(settings.rtc_udp_bind());
    config.advertise_ip = settings.rtc_advertise_ip.parse().ok();
    config.advertise_port = Some(settings.rtc_advertise_port).filter(|&p| p != 0);
    config.max_tracks_per_participant = settings.rtc_max_tracks_per_participant;
    config.ice_timeout = Duration::from_millis(settings.rtc_ice_timeout_ms);
    config.udp_buffer_bytes = settings.rtc_udp_buffer_bytes;
    if settings.rtc_threads > 0 {
        config.threads = settings.rtc_threads;
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let media = MediaPlane::start(config, move |event| {
        let _ = tx.send(event);
    })
    .map_err(|e| {
        format!(
            "CONVENE_RTC_UDP_PORT: cannot bind UDP {}: {e}",
            settings.rtc_udp_bind()
        )
    })?;
    Ok((media, rx))
}

/// Hands the media plane's events to the rooms (active ones: a room with media has
/// participants, so it has an actor), which deliver them to their participants
/// (`signal {from: "sfu"}`, or an `error` for a rejected signal) and keep each
/// participant's media connection and tracks for operators (the admin stream and list).
fn deliver_media_events(rooms: Rooms, mut events: mpsc::UnboundedReceiver<MediaEvent>) {
    actix_web::rt::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                MediaEvent::Signal { room, to, data } => {
                    if let Some(room) = rooms.active(&room) {
                        room.signal_from_sfu(&to, data);
                    }
                }
                MediaEvent::Rejected {
                    room,
                    address,
                    reason,
                } => {
                    if let Some(room) = rooms.active(&room) {
                        room.sfu_rejected(&address, reason);
                    }
                }
                MediaEvent::PeerState {
                    room,
                    address,
                    connected,
                } => {
                    tracing::info!(%room, %address, connected, "media connection");
                    if let Some(room) = rooms.active(&room) {
                        room.media_changed(&address, MediaReport::Connection(connected));
                    }
                }
                MediaEvent::ActiveSpeakers { room, speakers } => {
                    if let Some(room) = rooms.active(&room) {
                        room.active_speakers(speakers);
                    }
                }
                MediaEvent::Tracks {
                    room,
                    address,
                    published,
                } => {
                    tracing::debug!(%room, %address, tracks = published.len(), "published tracks");
                    if let Some(room) = rooms.active(&room) {
                        room.media_changed(&address, MediaReport::Tracks(published));
                    }
                }
            }
        }
    });
}

/// Waits until the store answers, retrying while it is unreachable, so a service that
/// cannot reach Redis refuses to start instead of answering 503 to everything.
async fn wait_for_store(
    store: &dyn Store,
    settings: &Settings,
) -> Result<(), Box<dyn std::error::Error>> {
    let deadline = Instant::now() + Duration::from_secs(settings.store_startup_timeout_seconds);
    loop {
        match store.ping().await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(error = %e, "store unreachable at start-up; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(format!("CONVENE_REDIS_URL: cannot reach the store: {e}").into()),
        }
    }
}

/// With `cluster`: every `every`, takes over this node's share of the rooms with seats of
/// nodes that left the node list (see `Rooms::adopt_orphans`).
fn spawn_adopter(rooms: Rooms, every: Duration) {
    actix_web::rt::spawn(async move {
        let mut interval = tokio::time::interval(every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            match rooms.adopt_orphans().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(rooms = n, "took over rooms of nodes that left"),
                Err(e) => tracing::warn!(error = %e, "could not look for rooms of nodes that left"),
            }
        }
    });
}

/// Now and then (and at start-up), ends the rooms that expired without an actor: drops
/// them from the store and publishes their `RoomExpired` (`Rooms::sweep`), so webhooks send
/// their `roomFinished`. It tells no actor anything: an active room expires by its own
/// timer.
fn spawn_sweeper(rooms: Rooms, every: Duration) {
    actix_web::rt::spawn(async move {
        let mut interval = tokio::time::interval(every);
        loop {
            interval.tick().await;
            match rooms.sweep(now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::debug!(rooms = n, "swept expired rooms"),
                Err(e) => tracing::warn!(error = %e, "sweep failed"),
            }
        }
    });
}

/// In a cluster, refuses a generated token secret (never shared; the settings refuse it
/// already), and refuses to join other live nodes whose room tokens this node could not
/// verify, or that could not verify its own: the nodes of a cluster must share the token
/// secret (and issuer and audience), because a client may join a room on any of them. An entry of this
/// node's own id is its previous run's (a restart within `node_ttl_ms`) and is ignored.
/// Two nodes that start at the same moment may both find the list empty.
async fn check_secret(
    nodes: &Nodes,
    settings: &Settings,
    node_id: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    if settings.token_secret_generated {
        return Err("CONVENE_CLUSTER: needs CONVENE_TOKEN_SECRET (the same on every node); a generated one is refused in a cluster".into());
    }
    let others: Vec<NodeInfo> = nodes
        .live()
        .await
        .map_err(|e| format!("CONVENE_REDIS_URL: cannot read the node list: {e}"))?
        .into_iter()
        .filter(|n| n.id != node_id)
        .collect();
    let Some(first) = others.first() else {
        return Ok(());
    };
    let mine = own_secret_id(settings);
    if let Some(other) = others.iter().find(|n| n.secret_id != mine) {
        return Err(format!(
            "CONVENE_TOKEN_SECRET (with CONVENE_TOKEN_ISSUER and CONVENE_TOKEN_AUDIENCE) differs from that of node {} on this Redis: every node must verify the room tokens of every other",
            other.id
        )
        .into());
    }
    tracing::info!(others = others.len(), first = %first.id, "joining other live nodes");
    Ok(())
}

fn own_secret_id(settings: &Settings) -> String {
    secret_fingerprint(
        settings.token_secret.as_bytes(),
        &settings.token_issuer,
        &settings.token_audience,
    )
}

/// This node's load as the admin hub counts it, live: (active rooms, participants).
fn load_of(events: Arc<Events>) -> LoadNow {
    Box::new(move || {
        let (mesh, sfu, participants) = events.gauges();
        ((mesh + sfu) as u64, participants as u64)
    })
}

/// What this node registers: its addresses, and the load the heartbeat fills in.
fn node_info(settings: &Settings, id: &str, bound: SocketAddr) -> NodeInfo {
    let http_ip = routable(bound.ip());
    let http_addr = if settings.node_http_addr.is_empty() {
        SocketAddr::new(http_ip, bound.port()).to_string()
    } else {
        settings.node_http_addr.clone()
    };
    let media_ip = settings
        .rtc_advertise_ip
        .parse()
        .unwrap_or_else(|_| routable(settings.rtc_udp_bind().ip()));
    let media_port = match settings.rtc_advertise_port {
        0 => settings.rtc_udp_port,
        port => port,
    };
    NodeInfo {
        id: id.to_string(),
        http_addr,
        media_addr: SocketAddr::new(media_ip, media_port).to_string(),
        rooms: 0,
        participants: 0,
        cpu: 0.0,
        started_at: now_ms(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        secret_id: own_secret_id(settings),
        max_rooms: settings.node_max_rooms,
        max_participants: settings.node_max_participants,
        draining: false,
    }
}

/// `ip`, unless unspecified (0.0.0.0 or ::): then the machine's first non-loopback address
/// (found by asking the kernel for a route; nothing is sent), loopback when there is none.
fn routable(ip: std::net::IpAddr) -> std::net::IpAddr {
    if !ip.is_unspecified() {
        return ip;
    }
    let probe = || -> std::io::Result<std::net::IpAddr> {
        let socket = std::net::UdpSocket::bind("0.0.0.0:0")?;
        socket.connect("192.0.2.1:9")?;
        Ok(socket.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() && !ip.is_loopback() => ip,
        _ => std::net::Ipv4Addr::LOCALHOST.into(),
    }
}

/// Refreshes this node's registration every `every` with its current load (active rooms,
/// participants, CPU share since the last beat), then reads the live nodes into
/// `convene_cluster_nodes`. A failed beat is logged and the next one tries again; the
/// registration lives `node_ttl_ms` after the last one that succeeded.
fn spawn_heartbeat(
    nodes: Arc<Nodes>,
    mut info: NodeInfo,
    events: Arc<Events>,
    draining: Arc<AtomicBool>,
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    actix_web::rt::spawn(async move {
        let start = tokio::time::Instant::now() + every;
        let mut interval = tokio::time::interval_at(start, every);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last = (Instant::now(), METRICS.process_cpu_seconds());
        loop {
            interval.tick().await;
            let (mesh, sfu, participants) = events.gauges();
            info.rooms = (mesh + sfu) as u64;
            info.participants = participants as u64;
            info.draining = draining.load(Ordering::Relaxed);
            let now = (Instant::now(), METRICS.process_cpu_seconds());
            if let ((then, Some(before)), (at, Some(after))) = (last, now) {
                let wall = at.duration_since(then).as_secs_f64();
                if wall > 0.0 {
                    info.cpu = ((after - before).max(0.0) / wall * 1000.0).round() / 1000.0;
                }
            }
            last = now;
            if let Err(e) = nodes.register(&info).await {
                tracing::warn!(error = %e, "node heartbeat failed");
                continue;
            }
            match nodes.live().await {
                Ok(live) => METRICS.cluster_nodes(live.len()),
                Err(e) => tracing::warn!(error = %e, "could not read the node list"),
            }
        }
    })
}
