//! Prometheus metrics, kept by the `prometheus` crate and served at `/metrics` in the text
//! exposition format (on the main listener, or on its own when `metrics_bind` is set).
//!
//! The metrics are process-wide (one registry in the static `METRICS`), so every layer
//! (HTTP middleware, room actors, sessions, the store) counts without carrying a handle.
//! Gauges of rooms and participants are read from the admin event hub, which holds the live
//! state, at each scrape. The registry also holds the crate's process collector
//! (`process_cpu_seconds_total`, `process_resident_memory_bytes`, `process_open_fds`, …, read
//! from `/proc` on Linux), `convene_build_info{version}`, `convene_node_info{node_id}` and
//! `convene_cluster_nodes` (the live nodes in Redis, set by the node heartbeat).

use prometheus::core::Collector;
use prometheus::process_collector::ProcessCollector;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};
use std::sync::LazyLock;

/// Upper bounds (seconds) of the request latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Reasons a participant leaves; each is shown from the start (at 0).
/// `replaced`: a newer join of the same identity took its place.
const LEAVE_REASONS: [&str; 6] = [
    "left",
    "kicked",
    "disconnected",
    "roomClosed",
    "expired",
    "replaced",
];

/// Why a join is refused: a token that does not verify (or is stale), a room that does not
/// exist (any more), a full room, a store that failed, a room token of before a rotation,
/// a banned identity.
pub(crate) const REFUSAL_REASONS: [&str; 6] =
    ["token", "gone", "full", "unavailable", "rotated", "banned"];

/// Kinds of WebSocket connection counted by `convene_websocket_connections`.
pub(crate) const SOCKET_KINDS: [&str; 2] = ["signaling", "admin"];

/// The order labels are written in. The crate sorts them by name; the series keep the
/// order they have always had (`route`, `method`, `status`).
const LABEL_ORDER: [&str; 3] = ["route", "method", "status"];

pub struct Metrics {
    registry: Registry,
    rooms: IntGaugeVec,
    participants: IntGauge,
    joins: IntCounter,
    leaves: IntCounterVec,
    upgrades: IntCounter,
    relayed: IntCounter,
    store_errors: IntCounter,
    requests: IntCounterVec,
    durations: HistogramVec,
    websockets: IntGaugeVec,
    join_refusals: IntCounterVec,
    cluster_nodes: IntGauge,
    node_info: IntGaugeVec,
    forwards: IntCounterVec,
    rooms_lost: IntCounter,
    placed: IntCounterVec,
    drained: IntCounterVec,
    bridge_links: IntCounterVec,
    bridge_dropped: IntCounter,
    /// A process collector of its own, read for the node registry's CPU share.
    process: ProcessCollector,
    sfu: SfuMetrics,
    webhooks: WebhookMetrics,
    /// `(name, help, type)` of every family, so that one without series yet still shows
    /// its `HELP` and `TYPE` lines.
    families: Vec<(String, String, &'static str)>,
}

/// Why a webhook event was dropped undelivered: its retry time ran out, or the queue of
/// its URL was full.
pub(crate) const WEBHOOK_DROP_REASONS: [&str; 2] = ["expired", "overflow"];

/// The webhook dispatcher's (src/webhooks) counters.
struct WebhookMetrics {
    queued: IntCounter,
    delivered: IntCounter,
    retried: IntCounter,
    dropped: IntCounterVec,
}

/// The media plane's (src/media) counters and gauges.
struct SfuMetrics {
    peers: IntGauge,
    tracks: IntGauge,
    forwarded: IntCounter,
    forwarded_bytes: IntCounter,
    nacks: IntCounter,
    keyframe_requests: IntCounter,
    ice_failures: IntCounter,
}

pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Holds one open WebSocket connection in `convene_websocket_connections`; dropping it
/// counts the connection closed.
pub(crate) struct OpenSocket(IntGauge);

impl Drop for OpenSocket {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    fn new() -> Self {
        let mut families = Vec::new();
        let registry = Registry::new();
        let mut register = |c: Box<dyn Collector>, kind: &'static str| {
            for desc in c.desc() {
                families.push((desc.fq_name.clone(), desc.help.clone(), kind));
            }
            registry
                .register(c)
                .expect("metric names and labels are unique");
        };
        let rooms = IntGaugeVec::new(
            Opts::new(
                "convene_rooms",
                "Active rooms (with an actor) by conference type.",
            ),
            &["conference_type"],
        )
        .unwrap();
        let participants =
            IntGauge::new("convene_participants", "Participants holding a seat.").unwrap();
        let joins =
            IntCounter::new("convene_joins_total", "Participants admitted to rooms.").unwrap();
        let leaves = IntCounterVec::new(
            Opts::new("convene_leaves_total", "Participants gone, by reason."),
            &["reason"],
        )
        .unwrap();
        let upgrades =
            IntCounter::new("convene_upgrades_total", "MESH rooms upgraded to SFU.").unwrap();
        let relayed = IntCounter::new(
            "convene_signaling_messages_relayed_total",
            "Signal and message deliveries to participants.",
        )
        .unwrap();
        let store_errors = IntCounter::new(
            "convene_store_errors_total",
            "Failed or timed-out store operations.",
        )
        .unwrap();
        let requests = IntCounterVec::new(
            Opts::new(
                "convene_http_requests_total",
                "REST requests by route, method and status.",
            ),
            &LABEL_ORDER,
        )
        .unwrap();
        let durations = HistogramVec::new(
            HistogramOpts::new(
                "convene_http_request_duration_seconds",
                "REST request latency by route, method and status.",
            )
            .buckets(BUCKETS.to_vec()),
            &LABEL_ORDER,
        )
        .unwrap();
        let websockets = IntGaugeVec::new(
            Opts::new(
                "convene_websocket_connections",
                "Open WebSocket connections by kind (signaling, admin).",
            ),
            &["kind"],
        )
        .unwrap();
        let join_refusals = IntCounterVec::new(
            Opts::new(
                "convene_join_refusals_total",
                "Signaling joins refused, by reason (token, gone, full).",
            ),
            &["reason"],
        )
        .unwrap();
        let build_info = IntGaugeVec::new(
            Opts::new(
                "convene_build_info",
                "The running build; always 1, the version is in the label.",
            ),
            &["version"],
        )
        .unwrap();
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        let cluster_nodes = IntGauge::new(
            "convene_cluster_nodes",
            "Live nodes registered in Redis, this one included, as of the last heartbeat (1 without Redis).",
        )
        .unwrap();
        let node_info = IntGaugeVec::new(
            Opts::new(
                "convene_node_info",
                "This node; always 1, its id is in the label.",
            ),
            &["node_id"],
        )
        .unwrap();
        for reason in LEAVE_REASONS {
            leaves.with_label_values(&[reason]);
        }
        for reason in REFUSAL_REASONS {
            join_refusals.with_label_values(&[reason]);
        }
        for kind in SOCKET_KINDS {
            websockets.with_label_values(&[kind]);
        }
        register(Box::new(rooms.clone()), "gauge");
        register(Box::new(participants.clone()), "gauge");
        register(Box::new(joins.clone()), "counter");
        register(Box::new(leaves.clone()), "counter");
        register(Box::new(upgrades.clone()), "counter");
        register(Box::new(relayed.clone()), "counter");
        register(Box::new(store_errors.clone()), "counter");
        register(Box::new(requests.clone()), "counter");
        register(Box::new(durations.clone()), "histogram");
        register(Box::new(websockets.clone()), "gauge");
        register(Box::new(join_refusals.clone()), "counter");
        register(Box::new(build_info), "gauge");
        register(Box::new(cluster_nodes.clone()), "gauge");
        register(Box::new(node_info.clone()), "gauge");
        let forwards = IntCounterVec::new(
            Opts::new(
                "convene_forwarded_requests_total",
                "REST requests for rooms owned by another node, sent on to the owner.",
            ),
            &["outcome"],
        )
        .unwrap();
        let rooms_lost = IntCounter::new(
            "convene_rooms_lost_total",
            "Room actors stopped because this node lost the room's lease.",
        )
        .unwrap();
        register(Box::new(forwards.clone()), "counter");
        register(Box::new(rooms_lost.clone()), "counter");
        let placed = IntCounterVec::new(
            Opts::new(
                "convene_rooms_placed_elsewhere_total",
                "Rooms created here and placed on a less-loaded node, by whether it started them.",
            ),
            &["outcome"],
        )
        .unwrap();
        register(Box::new(placed.clone()), "counter");
        let drained = IntCounterVec::new(
            Opts::new(
                "convene_rooms_drained_total",
                "Rooms this node handed to another node while draining (SIGTERM), by outcome: `started` (another node started it with its seats), `released` (seats stored and lease released, but no node started it: its next use does), `failed` (its last write or release failed, or it had stopped).",
            ),
            &["outcome"],
        )
        .unwrap();
        register(Box::new(drained.clone()), "counter");
        let bridge_links = IntCounterVec::new(
            Opts::new(
                "convene_bridge_links_total",
                "Signaling sockets bridged between nodes: `edge` (a socket of this node bridged to the room's owner), `hosted` (another node's socket served here), `reattached` (a bridged socket whose owner was lost, resuming its seat on the next owner).",
            ),
            &["side"],
        )
        .unwrap();
        let bridge_dropped = IntCounter::new(
            "convene_bridge_links_dropped_total",
            "Bridged sockets dropped because the bus broke or the other node is gone.",
        )
        .unwrap();
        register(Box::new(bridge_links.clone()), "counter");
        register(Box::new(bridge_dropped.clone()), "counter");
        let gauge = |name: &str, help: &str| IntGauge::new(name, help).unwrap();
        let counter = |name: &str, help: &str| IntCounter::new(name, help).unwrap();
        let sfu = SfuMetrics {
            peers: gauge("convene_sfu_peers_connected", "Media peer connections up."),
            tracks: gauge("convene_sfu_tracks", "Tracks published to the media plane."),
            forwarded: counter(
                "convene_sfu_forwarded_frames_total",
                "Media frames (audio packets, video frames) forwarded to subscribers.",
            ),
            forwarded_bytes: counter(
                "convene_sfu_forwarded_bytes_total",
                "Payload bytes forwarded to subscribers.",
            ),
            nacks: counter(
                "convene_sfu_nacks_total",
                "NACKs received from subscribers.",
            ),
            keyframe_requests: counter(
                "convene_sfu_keyframe_requests_total",
                "Keyframe requests sent to publishers.",
            ),
            ice_failures: counter(
                "convene_sfu_ice_failures_total",
                "Media peers dropped because ICE did not complete in time.",
            ),
        };
        let webhooks = WebhookMetrics {
            queued: counter(
                "convene_webhooks_queued_total",
                "Webhook deliveries queued (one per event and URL; with Redis, once written to the outbox).",
            ),
            delivered: counter(
                "convene_webhooks_delivered_total",
                "Webhook deliveries answered with a 2xx status.",
            ),
            retried: counter(
                "convene_webhooks_retried_total",
                "Webhook requests that failed (no answer in time, or not 2xx) and will be tried again.",
            ),
            dropped: IntCounterVec::new(
                Opts::new(
                    "convene_webhooks_dropped_total",
                    "Webhook deliveries given up, by reason (expired: retried for webhook_retry_seconds; overflow: queue full).",
                ),
                &["reason"],
            )
            .unwrap(),
        };
        for reason in WEBHOOK_DROP_REASONS {
            webhooks.dropped.with_label_values(&[reason]);
        }
        for c in [&webhooks.queued, &webhooks.delivered, &webhooks.retried] {
            register(Box::new(c.clone()), "counter");
        }
        register(Box::new(webhooks.dropped.clone()), "counter");
        register(Box::new(sfu.peers.clone()), "gauge");
        register(Box::new(sfu.tracks.clone()), "gauge");
        for c in [
            &sfu.forwarded,
            &sfu.forwarded_bytes,
            &sfu.nacks,
            &sfu.keyframe_requests,
            &sfu.ice_failures,
        ] {
            register(Box::new(c.clone()), "counter");
        }
        // CPU seconds, resident and virtual memory, open and maximum file descriptors,
        // threads, start time; nothing on systems without `/proc`.
        registry
            .register(Box::new(ProcessCollector::for_self()))
            .expect("process metrics are unique");
        Self {
            registry,
            rooms,
            participants,
            joins,
            leaves,
            upgrades,
            relayed,
            store_errors,
            requests,
            durations,
            websockets,
            join_refusals,
            cluster_nodes,
            node_info,
            forwards,
            rooms_lost,
            placed,
            drained,
            bridge_links,
            bridge_dropped,
            process: ProcessCollector::for_self(),
            sfu,
            webhooks,
            families,
        }
    }

    pub fn joined(&self) {
        self.joins.inc();
    }

    pub fn left(&self, reason: &str) {
        self.leaves.with_label_values(&[reason]).inc();
    }

    pub fn upgraded(&self) {
        self.upgrades.inc();
    }

    pub fn relayed(&self, messages: u64) {
        self.relayed.inc_by(messages);
    }

    /// A REST request forwarded to a room's owner: `outcome` is `answered` (whatever the
    /// owner's status) or `unavailable` (503 here).
    pub fn forwarded(&self, outcome: &str) {
        self.forwards.with_label_values(&[outcome]).inc();
    }

    /// A room created here was sent to another node: `outcome` is `started` (that node
    /// started it) or `refused` (it did not, or could not be reached: the next node in
    /// line is asked; after the last, the room is stored and its first use starts it).
    pub fn placed_elsewhere(&self, outcome: &str) {
        self.placed.with_label_values(&[outcome]).inc();
    }

    /// A room handed over while draining, by `outcome` (see `HandedOver::label`).
    pub fn room_drained(&self, outcome: &str) {
        self.drained.with_label_values(&[outcome]).inc();
    }

    pub fn room_lost(&self) {
        self.rooms_lost.inc();
    }

    /// A socket bridged between nodes, on `side` (`edge` or `hosted`).
    pub fn bridge_link(&self, side: &str) {
        self.bridge_links.with_label_values(&[side]).inc();
    }

    pub fn bridge_dropped(&self, links: usize) {
        self.bridge_dropped.inc_by(links as u64);
    }

    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// A signaling join refused; `reason` is one of `REFUSAL_REASONS`.
    pub(crate) fn join_refused(&self, reason: &str) {
        self.join_refusals.with_label_values(&[reason]).inc();
    }

    /// A WebSocket connection of `kind` (one of `SOCKET_KINDS`) opened; it counts as open
    /// until the returned guard is dropped.
    #[must_use = "the connection counts as closed when the guard is dropped"]
    pub(crate) fn socket_opened(&self, kind: &str) -> OpenSocket {
        let gauge = self.websockets.with_label_values(&[kind]);
        gauge.inc();
        OpenSocket(gauge)
    }

    /// This node's id, shown as `convene_node_info{node_id}` (set once, at start-up).
    pub fn node(&self, id: &str) {
        self.node_info.reset();
        self.node_info.with_label_values(&[id]).set(1);
    }

    /// CPU seconds (user and system) the process has used, from `/proc` (`None` where
    /// there is none).
    pub fn process_cpu_seconds(&self) -> Option<f64> {
        self.process
            .collect()
            .iter()
            .find(|f| f.name() == "process_cpu_seconds_total")
            .and_then(|f| f.get_metric().first())
            .map(|m| m.get_counter().get_value())
    }

    /// The live nodes seen at the last heartbeat.
    pub fn cluster_nodes(&self, n: usize) {
        self.cluster_nodes.set(i64::try_from(n).unwrap_or(i64::MAX));
    }

    /// A media peer connection came up.
    pub fn sfu_peer_connected(&self) {
        self.sfu.peers.inc();
    }

    /// A media peer connection that was up is gone.
    pub fn sfu_peer_disconnected(&self) {
        self.sfu.peers.dec();
    }

    /// Published tracks came (positive) or went (negative).
    pub fn sfu_tracks(&self, delta: i64) {
        self.sfu.tracks.add(delta);
    }

    /// Media frames (an audio packet or a video frame) written toward subscribers.
    pub fn sfu_forwarded(&self, frames: u64, bytes: u64) {
        self.sfu.forwarded.inc_by(frames);
        self.sfu.forwarded_bytes.inc_by(bytes);
    }

    /// NACKs received from subscribers (answered from the send buffer).
    pub fn sfu_nacks(&self, n: u64) {
        self.sfu.nacks.inc_by(n);
    }

    /// A keyframe request (PLI) sent to a publisher.
    pub fn sfu_keyframe_request(&self) {
        self.sfu.keyframe_requests.inc();
    }

    /// A media peer dropped because ICE did not complete in time.
    pub fn sfu_ice_failure(&self) {
        self.sfu.ice_failures.inc();
    }

    /// Webhook deliveries queued (with Redis: written to the outbox).
    pub fn webhooks_queued(&self, n: u64) {
        self.webhooks.queued.inc_by(n);
    }

    /// A webhook delivery answered 2xx.
    pub fn webhook_delivered(&self) {
        self.webhooks.delivered.inc();
    }

    /// A webhook request failed and its event will be tried again.
    pub fn webhook_retried(&self) {
        self.webhooks.retried.inc();
    }

    /// A webhook delivery given up; `reason` is one of `WEBHOOK_DROP_REASONS`.
    pub(crate) fn webhook_dropped(&self, reason: &str) {
        self.webhooks.dropped.with_label_values(&[reason]).inc();
    }

    /// A finished HTTP request. `route` is the matched pattern, never the raw path, so
    /// room ids do not explode the label set.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let status = status.to_string();
        let labels = [route, method, status.as_str()];
        self.requests.with_label_values(&labels).inc();
        self.durations.with_label_values(&labels).observe(seconds);
    }

    /// The text exposition format, with the live gauges of rooms and participants.
    pub fn render(&self, mesh_rooms: usize, sfu_rooms: usize, participants: usize) -> String {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.rooms
            .with_label_values(&["MESH"])
            .set(gauge(mesh_rooms));
        self.rooms.with_label_values(&["SFU"]).set(gauge(sfu_rooms));
        self.participants.set(gauge(participants));
        let mut families = self.registry.gather();
        for family in &mut families {
            for metric in family.mut_metric() {
                metric.mut_label().sort_by_key(|label| {
                    LABEL_ORDER
                        .iter()
                        .position(|name| *name == label.name())
                        .unwrap_or(usize::MAX)
                });
            }
        }
        let mut out = String::new();
        if let Err(e) = TextEncoder::new().encode_utf8(&families, &mut out) {
            tracing::warn!(error = %e, "metrics could not be encoded");
        }
        for (name, help, kind) in &self.families {
            if !families.iter().any(|f| f.name() == name) {
                out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_without_series_still_say_their_type() {
        let m = Metrics::new();
        let text = m.render(0, 0, 0);
        assert!(
            text.contains("# TYPE convene_http_requests_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE convene_http_request_duration_seconds histogram\n"),
            "{text}"
        );
        assert!(text.contains("convene_build_info{version=\""), "{text}");
    }

    #[test]
    fn request_labels_keep_their_order_and_sockets_count_down_on_drop() {
        let m = Metrics::new();
        m.request("/r/{id}", "GET", 404, 0.001);
        let open = m.socket_opened("admin");
        let text = m.render(0, 0, 0);
        assert!(
            text.contains(
                r#"convene_http_requests_total{route="/r/{id}",method="GET",status="404"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"convene_websocket_connections{kind="admin"} 1"#),
            "{text}"
        );
        drop(open);
        assert!(
            m.render(0, 0, 0)
                .contains(r#"convene_websocket_connections{kind="admin"} 0"#)
        );
    }
}
