//! Room create+destroy cycles against Convene or Janus, with the same client design for both:
//! `concurrency` workers, each looping "create a room, then destroy it" over HTTP/1.1 keep-alive
//! (one shared reqwest client, so one connection per worker) until the time is up.
//!
//! `bench_rooms_load <convene|janus> <http://addr> <concurrency> <seconds> [api-key]`
//!   prints `cycles_per_second=… p50_ms=… p99_ms=… errors=… server_cpu_us_per_cycle=…
//!   redis_cpu_us_per_cycle=…`: the CPU time that the processes BENCH_SERVER_PID and
//!   BENCH_REDIS_PID (environment) used over the measured window, per cycle.
//!
//! Convene: `POST /api/realtime/room` then `DELETE /api/realtime/room/{id}`.
//! Janus (videoroom plugin, HTTP transport): each worker first makes a session
//! (`{"janus":"create"}`) and attaches a handle to `janus.plugin.videoroom` (not timed), then
//! cycles `{"janus":"message","body":{"request":"create"}}` and
//! `{"janus":"message","body":{"request":"destroy","room":N}}` on that handle; both are
//! synchronous requests of the plugin, answered in the HTTP response.

#[path = "measure.rs"]
mod measure;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn post(http: &reqwest::Client, url: &str, body: &Value) -> Result<Value, String> {
    let response = http
        .post(url)
        .json(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    response.json().await.map_err(|e| e.to_string())
}

/// A Janus session with a videoroom handle: the URL that messages go to.
async fn janus_handle(http: &reqwest::Client, base: &str) -> Result<String, String> {
    let session = post(
        http,
        &format!("{base}/janus"),
        &json!({"janus": "create", "transaction": "s"}),
    )
    .await?;
    let session = session["data"]["id"]
        .as_u64()
        .ok_or_else(|| format!("no session: {session}"))?;
    let handle = post(
        http,
        &format!("{base}/janus/{session}"),
        &json!({"janus": "attach", "plugin": "janus.plugin.videoroom", "transaction": "a"}),
    )
    .await?;
    let handle = handle["data"]["id"]
        .as_u64()
        .ok_or_else(|| format!("no handle: {handle}"))?;
    Ok(format!("{base}/janus/{session}/{handle}"))
}

async fn janus_cycle(http: &reqwest::Client, handle: &str) -> Result<(), String> {
    let created = post(
        http,
        handle,
        &json!({"janus": "message", "transaction": "c", "body": {"request": "create"}}),
    )
    .await?;
    let data = &created["plugindata"]["data"];
    let room = match (data["videoroom"].as_str(), data["room"].as_u64()) {
        (Some("created"), Some(room)) => room,
        _ => return Err(format!("create: {created}")),
    };
    let destroyed = post(
        http,
        handle,
        &json!({"janus": "message", "transaction": "d",
                "body": {"request": "destroy", "room": room}}),
    )
    .await?;
    match destroyed["plugindata"]["data"]["videoroom"].as_str() {
        Some("destroyed") => Ok(()),
        _ => Err(format!("destroy: {destroyed}")),
    }
}

async fn convene_cycle(http: &reqwest::Client, base: &str, key: &str) -> Result<(), String> {
    let created = http
        .post(format!("{base}/api/realtime/room"))
        .header("x-vcs-token", key)
        .json(&json!({"name": "Room A", "conferenceType": "MESH"}))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !created.status().is_success() {
        return Err(format!("create: {}", created.status()));
    }
    let created: Value = created.json().await.map_err(|e| e.to_string())?;
    let id = created["room"]["id"]
        .as_str()
        .ok_or_else(|| format!("create: {created}"))?;
    let deleted = http
        .delete(format!("{base}/api/realtime/room/{id}"))
        .header("x-vcs-token", key)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = deleted.status();
    let _ = deleted.bytes().await;
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("delete: {status}"))
    }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 5 {
        eprintln!("usage: see the top of bench/rooms_load.rs");
        std::process::exit(2);
    }
    let target = args[1].clone();
    let base = args[2].trim_end_matches('/').to_string();
    let concurrency: usize = args[3].parse().expect("concurrency");
    let seconds: u64 = args[4].parse().expect("seconds");
    let key = args.get(5).cloned().unwrap_or_default();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .expect("client");

    // Set-up (Janus sessions and handles) happens before the clock starts.
    let mut handles = Vec::with_capacity(concurrency);
    for _ in 0..concurrency {
        handles.push(if target == "janus" {
            janus_handle(&http, &base).await.expect("janus session")
        } else {
            String::new()
        });
    }
    let cpu_before = measure::server_cpu();
    let start = Instant::now();
    let deadline = start + Duration::from_secs(seconds);
    let workers: Vec<_> = handles
        .into_iter()
        .map(|handle| {
            let (http, base, key, target) =
                (http.clone(), base.clone(), key.clone(), target.clone());
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let mut errors = 0u64;
                let mut first_error = None;
                while Instant::now() < deadline {
                    let t = Instant::now();
                    let result = if target == "janus" {
                        janus_cycle(&http, &handle).await
                    } else {
                        convene_cycle(&http, &base, &key).await
                    };
                    match result {
                        Ok(()) => latencies.push(t.elapsed().as_micros() as u32),
                        Err(e) => {
                            errors += 1;
                            first_error.get_or_insert(e);
                        }
                    }
                }
                (latencies, errors, first_error)
            })
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for worker in workers {
        let (latencies, e, first) = worker.await.expect("worker");
        all.extend(latencies);
        errors += e;
        if let Some(first) = first {
            eprintln!("error: {first}");
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_after = measure::server_cpu();
    let count = all.len().max(1) as f64;
    let per_cycle = |i: usize| (cpu_after[i] - cpu_before[i]) / count;
    all.sort_unstable();
    let pick = |q: f64| measure::percentile_ms(&all, q);
    println!(
        "cycles_per_second={:.0} p50_ms={:.3} p99_ms={:.3} errors={errors} \
         server_cpu_us_per_cycle={:.1} redis_cpu_us_per_cycle={:.1}",
        all.len() as f64 / elapsed,
        pick(0.5),
        pick(0.99),
        per_cycle(0),
        per_cycle(1)
    );
}
