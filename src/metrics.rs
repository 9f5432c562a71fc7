//! Prometheus metrics, rendered by hand in the text exposition format at `/metrics`.
//!
//! Counters are process-wide statics, so every layer (HTTP middleware, room actors, the
//! store) counts without carrying a handle. Gauges of rooms and participants are read from
//! the admin event hub, which holds the live state.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Upper bounds (seconds) of the request latency histogram's buckets.
const BUCKETS: [f64; 12] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

#[derive(Default, Clone)]
struct Histogram {
    buckets: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

pub struct Metrics {
    joins: AtomicU64,
    upgrades: AtomicU64,
    relayed: AtomicU64,
    store_errors: AtomicU64,
    sfu: SfuMetrics,
    leaves: Mutex<BTreeMap<String, u64>>,
    /// By (route, method, status).
    requests: Mutex<BTreeMap<(String, String, u16), Histogram>>,
}

/// The media plane's (src/media) counters and gauges.
struct SfuMetrics {
    peers: AtomicI64,
    tracks: AtomicI64,
    forwarded: AtomicU64,
    forwarded_bytes: AtomicU64,
    nacks: AtomicU64,
    keyframe_requests: AtomicU64,
    ice_failures: AtomicU64,
}

pub static METRICS: Metrics = Metrics {
    joins: AtomicU64::new(0),
    upgrades: AtomicU64::new(0),
    relayed: AtomicU64::new(0),
    store_errors: AtomicU64::new(0),
    sfu: SfuMetrics {
        peers: AtomicI64::new(0),
        tracks: AtomicI64::new(0),
        forwarded: AtomicU64::new(0),
        forwarded_bytes: AtomicU64::new(0),
        nacks: AtomicU64::new(0),
        keyframe_requests: AtomicU64::new(0),
        ice_failures: AtomicU64::new(0),
    },
    leaves: Mutex::new(BTreeMap::new()),
    requests: Mutex::new(BTreeMap::new()),
};

impl Metrics {
    pub fn joined(&self) {
        self.joins.fetch_add(1, Ordering::Relaxed);
    }

    pub fn left(&self, reason: &str) {
        *self
            .leaves
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(reason.to_string())
            .or_default() += 1;
    }

    pub fn upgraded(&self) {
        self.upgrades.fetch_add(1, Ordering::Relaxed);
    }

    pub fn relayed(&self, messages: u64) {
        self.relayed.fetch_add(messages, Ordering::Relaxed);
    }

    pub fn store_error(&self) {
        self.store_errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A media peer connection came up.
    pub fn sfu_peer_connected(&self) {
        self.sfu.peers.fetch_add(1, Ordering::Relaxed);
    }

    /// A media peer connection that was up is gone.
    pub fn sfu_peer_disconnected(&self) {
        self.sfu.peers.fetch_sub(1, Ordering::Relaxed);
    }

    /// Published tracks came (positive) or went (negative).
    pub fn sfu_tracks(&self, delta: i64) {
        self.sfu.tracks.fetch_add(delta, Ordering::Relaxed);
    }

    /// Media frames (an audio packet or a video frame) written toward subscribers.
    pub fn sfu_forwarded(&self, frames: u64, bytes: u64) {
        self.sfu.forwarded.fetch_add(frames, Ordering::Relaxed);
        self.sfu.forwarded_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// NACKs received from subscribers (answered from the send buffer).
    pub fn sfu_nacks(&self, n: u64) {
        self.sfu.nacks.fetch_add(n, Ordering::Relaxed);
    }

    /// A keyframe request (PLI) sent to a publisher.
    pub fn sfu_keyframe_request(&self) {
        self.sfu.keyframe_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A media peer dropped because ICE did not complete in time.
    pub fn sfu_ice_failure(&self) {
        self.sfu.ice_failures.fetch_add(1, Ordering::Relaxed);
    }

    /// A finished HTTP request. `route` is the matched pattern, never the raw path, so
    /// room ids do not explode the label set.
    pub fn request(&self, route: &str, method: &str, status: u16, seconds: f64) {
        let mut requests = self.requests.lock().unwrap_or_else(|e| e.into_inner());
        let h = requests
            .entry((route.to_string(), method.to_string(), status))
            .or_default();
        h.count += 1;
        h.sum += seconds;
        for (bucket, le) in h.buckets.iter_mut().zip(BUCKETS) {
            if seconds <= le {
                *bucket += 1;
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self, mesh_rooms: usize, sfu_rooms: usize, participants: usize) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        let _ = writeln!(
            out,
            "# HELP convene_rooms Live rooms by conference type.\n# TYPE convene_rooms gauge"
        );
        let _ = writeln!(
            out,
            "convene_rooms{{conference_type=\"MESH\"}} {mesh_rooms}"
        );
        let _ = writeln!(out, "convene_rooms{{conference_type=\"SFU\"}} {sfu_rooms}");
        let _ = writeln!(
            out,
            "# HELP convene_participants Participants holding a seat.\n# TYPE convene_participants gauge\nconvene_participants {participants}"
        );
        counter(
            &mut out,
            "convene_joins_total",
            "Participants admitted to rooms.",
            self.joins.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP convene_leaves_total Participants gone, by reason.\n# TYPE convene_leaves_total counter"
        );
        for (reason, n) in self.leaves.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = writeln!(out, "convene_leaves_total{{reason=\"{reason}\"}} {n}");
        }
        counter(
            &mut out,
            "convene_upgrades_total",
            "MESH rooms upgraded to SFU.",
            self.upgrades.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "convene_signaling_messages_relayed_total",
            "Signal and message deliveries to participants.",
            self.relayed.load(Ordering::Relaxed),
        );
        counter(
            &mut out,
            "convene_store_errors_total",
            "Failed or timed-out store operations.",
            self.store_errors.load(Ordering::Relaxed),
        );
        let sfu = &self.sfu;
        let _ = writeln!(
            out,
            "# HELP convene_sfu_peers_connected Media peer connections up.\n# TYPE convene_sfu_peers_connected gauge\nconvene_sfu_peers_connected {}",
            sfu.peers.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            out,
            "# HELP convene_sfu_tracks Tracks published to the media plane.\n# TYPE convene_sfu_tracks gauge\nconvene_sfu_tracks {}",
            sfu.tracks.load(Ordering::Relaxed)
        );
        for (name, help, value) in [
            (
                "convene_sfu_forwarded_frames_total",
                "Media frames (audio packets, video frames) forwarded to subscribers.",
                &sfu.forwarded,
            ),
            (
                "convene_sfu_forwarded_bytes_total",
                "Payload bytes forwarded to subscribers.",
                &sfu.forwarded_bytes,
            ),
            (
                "convene_sfu_nacks_total",
                "NACKs received from subscribers.",
                &sfu.nacks,
            ),
            (
                "convene_sfu_keyframe_requests_total",
                "Keyframe requests sent to publishers.",
                &sfu.keyframe_requests,
            ),
            (
                "convene_sfu_ice_failures_total",
                "Media peers dropped because ICE did not complete in time.",
                &sfu.ice_failures,
            ),
        ] {
            counter(&mut out, name, help, value.load(Ordering::Relaxed));
        }
        let requests = self
            .requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let _ = writeln!(
            out,
            "# HELP convene_http_requests_total REST requests by route, method and status.\n# TYPE convene_http_requests_total counter"
        );
        for ((route, method, status), h) in &requests {
            let _ = writeln!(
                out,
                "convene_http_requests_total{{route=\"{route}\",method=\"{method}\",status=\"{status}\"}} {}",
                h.count
            );
        }
        let name = "convene_http_request_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} REST request latency by route, method and status.\n# TYPE {name} histogram"
        );
        for ((route, method, status), h) in &requests {
            let labels = format!("route=\"{route}\",method=\"{method}\",status=\"{status}\"");
            for (n, le) in h.buckets.iter().zip(BUCKETS) {
                let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {n}");
            }
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum);
            let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
        }
        out
    }
}
