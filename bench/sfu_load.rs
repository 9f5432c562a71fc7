//! SFU load client: one publisher and N subscribers in one SFU room, each a headless str0m
//! peer connection over real UDP on 127.0.0.1, negotiated through Convene's signaling
//! WebSocket (`signal {to: "sfu"}` both ways), as tests/sfu/peer.rs does.
//!
//! The peers, their synthetic media and the signaling are bench/sfu_peer.rs's (shared with
//! bench/sfu_compare.rs). Each subscriber offers one receive-only audio m-line (so that it
//! has a connection), then answers the server's offers of the publisher's tracks and counts
//! what arrives. With a loss of L %, every subscriber drops L % of the datagrams it receives
//! once connected (at random), so the server's NACK/RTX work shows.
//!
//! `bench_sfu_load <http://addr> <api-key> <subscribers> <seconds> <loss-percent>`
//!   waits until every subscriber receives the publisher's audio and video (a keyframe
//!   included), then measures for `seconds` and prints
//!   `forwarded_packets_per_second=… server_cpu_us_per_packet=… published_packets_per_second=…
//!   nacks_per_second=… video_fps_per_subscriber=…`. A forwarded packet is an RTP datagram
//!   (media or retransmission) that reached a subscriber's socket, counted before the
//!   client's own loss; the CPU is that of the process BENCH_SERVER_PID (environment) over
//!   the measured window; NACKs are the server's `convene_sfu_nacks_total` (from /metrics).

#[path = "measure.rs"]
#[allow(dead_code)]
mod measure;
#[path = "sfu_peer.rs"]
#[allow(dead_code)]
mod sfu_peer;

use futures_util::StreamExt;
use sfu_peer::{Counters, Role, Status, convene_peer, convene_room, wait_for};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Subscribers joined at once.
const SETUP_CONCURRENCY: usize = 10;

/// The server's `convene_sfu_nacks_total` (0 when it cannot be read).
async fn nacks(http: &reqwest::Client, base: &str) -> f64 {
    let Ok(res) = http.get(format!("{base}/metrics")).send().await else {
        return 0.0;
    };
    let text = res.text().await.unwrap_or_default();
    text.lines()
        .find(|l| l.starts_with("convene_sfu_nacks_total "))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, key, subscribers, seconds, loss] = &args[..] else {
        eprintln!(
            "usage: bench_sfu_load <http://addr> <api-key> <subscribers> <seconds> <loss-percent>"
        );
        std::process::exit(2);
    };
    let subscribers: usize = subscribers.parse().expect("subscribers");
    let seconds: f64 = seconds.parse().expect("seconds");
    let loss: f64 = loss.parse().expect("loss percent");
    let base = base.trim_end_matches('/').to_string();
    let ws_url = format!("{}/api/realtime/signaling", base.replacen("http", "ws", 1));
    let http = reqwest::Client::new();
    let token = convene_room(&http, &base, key).await;
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));

    let publisher = convene_peer(
        ws_url.clone(),
        token.clone(),
        Role {
            publishes: Some(0),
            simulcast: false,
            speaks: true,
            offers: true,
            receives: false,
            loss_percent: 0.0,
        },
        counters.clone(),
        stop.clone(),
    )
    .await;
    wait_for("the publisher's connection", &[publisher], |s| {
        s.connected.load(Ordering::Relaxed)
    })
    .await;
    let statuses: Vec<Arc<Status>> = futures_util::stream::iter(0..subscribers)
        .map(|_| {
            convene_peer(
                ws_url.clone(),
                token.clone(),
                Role {
                    publishes: None,
                    simulcast: false,
                    speaks: false,
                    offers: true,
                    receives: true,
                    loss_percent: loss,
                },
                counters.clone(),
                stop.clone(),
            )
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    wait_for("every subscriber's audio and video", &statuses, |s| {
        s.receives(1)
    })
    .await;
    // Let the keyframes that the joins asked for go by.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let snapshot = |c: &Counters| {
        (
            c.rtp_in.load(Ordering::Relaxed),
            c.rtp_out.load(Ordering::Relaxed),
            c.video_frames.load(Ordering::Relaxed),
        )
    };
    let nacks_before = nacks(&http, &base).await;
    let cpu_before = measure::server_cpu()[0];
    let before = snapshot(&counters);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let after = snapshot(&counters);
    let cpu_after = measure::server_cpu()[0];
    let elapsed = start.elapsed().as_secs_f64();
    let nacks_after = nacks(&http, &base).await;
    stop.store(true, Ordering::Relaxed);

    let forwarded = (after.0 - before.0) as f64;
    println!(
        "forwarded_packets_per_second={:.0} server_cpu_us_per_packet={:.2} published_packets_per_second={:.0} nacks_per_second={:.1} video_fps_per_subscriber={:.1}",
        forwarded / elapsed,
        if forwarded > 0.0 {
            (cpu_after - cpu_before) / forwarded
        } else {
            f64::NAN
        },
        (after.1 - before.1) as f64 / elapsed,
        (nacks_after - nacks_before) / elapsed,
        (after.2 - before.2) as f64 / elapsed / subscribers.max(1) as f64,
    );
    std::process::exit(0);
}
