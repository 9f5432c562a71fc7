//! `GET /metrics`, parsed from the Prometheus text format.

use crate::support::*;
use crate::ws::{Client, WAIT};
use reqwest::Method;
use serde_json::json;
use std::collections::HashMap;

/// One scrape: `series → value` (series written as in the text, `name{labels}`) and
/// `metric → type` from the `# TYPE` lines.
struct Scrape {
    series: HashMap<String, f64>,
    types: HashMap<String, String>,
}

impl Scrape {
    /// A series' value; absent series (a label value not seen yet) count as 0.
    fn get(&self, series: &str) -> f64 {
        self.series.get(series).copied().unwrap_or(0.0)
    }
}

async fn scrape(app: &TestApp) -> Scrape {
    scrape_url(app, &app.url("/metrics")).await
}

async fn scrape_url(app: &TestApp, url: &str) -> Scrape {
    // No API key needed.
    let res = app.client.get(url).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    let mut series = HashMap::new();
    let mut types = HashMap::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "two TYPE lines for {name}"
            );
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        let value = value
            .parse::<f64>()
            .unwrap_or_else(|_| panic!("bad value in {line}"));
        assert!(
            series.insert(name.to_string(), value).is_none(),
            "{name} twice"
        );
    }
    Scrape { series, types }
}

fn requests(route: &str, method: &str, status: u16) -> String {
    format!(r#"convene_http_requests_total{{route="{route}",method="{method}",status="{status}"}}"#)
}

/// Checks the latency histogram of one label set: buckets never decrease, `+Inf` and
/// `_count` equal the request count, the sum is positive.
fn assert_histogram(m: &Scrape, route: &str, method: &str, status: u16, count: f64) {
    let name = "convene_http_request_duration_seconds";
    let labels = format!(r#"route="{route}",method="{method}",status="{status}""#);
    let mut buckets: Vec<(f64, f64)> = m
        .series
        .iter()
        .filter_map(|(series, value)| {
            let rest = series.strip_prefix(&format!("{name}_bucket{{{labels},le=\""))?;
            let le = rest.strip_suffix("\"}")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().unwrap()
            };
            Some((le, *value))
        })
        .collect();
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    assert_eq!(buckets.len(), 13, "12 bounds and +Inf for {labels}");
    assert!(buckets.windows(2).all(|w| w[0].1 <= w[1].1), "{buckets:?}");
    assert_eq!(buckets.last().unwrap().1, count);
    assert_eq!(m.get(&format!("{name}_count{{{labels}}}")), count);
    assert!(m.get(&format!("{name}_sum{{{labels}}}")) > 0.0);
}

#[tokio::test]
async fn counters_and_gauges_follow_what_happens() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_SIGNALING_RESUME_GRACE_MS", "100"),
    )
    .await
    .unwrap();
    let before = scrape(&app).await;
    for (name, kind) in [
        ("convene_rooms", "gauge"),
        ("convene_participants", "gauge"),
        ("convene_joins_total", "counter"),
        ("convene_leaves_total", "counter"),
        ("convene_upgrades_total", "counter"),
        ("convene_signaling_messages_relayed_total", "counter"),
        ("convene_store_errors_total", "counter"),
        ("convene_http_requests_total", "counter"),
        ("convene_http_request_duration_seconds", "histogram"),
    ] {
        assert_eq!(
            before.types.get(name).map(String::as_str),
            Some(kind),
            "{name}"
        );
    }
    for series in [
        r#"convene_rooms{conference_type="MESH"}"#,
        r#"convene_rooms{conference_type="SFU"}"#,
        "convene_participants",
        "convene_joins_total",
        "convene_upgrades_total",
        "convene_signaling_messages_relayed_total",
        "convene_store_errors_total",
    ] {
        assert_eq!(before.series.get(series), Some(&0.0), "{series}");
    }

    let upgrading = app
        .new_room(json!({"autoUpgradeParticipantCount": 2}))
        .await;
    let other = app.new_room(json!({})).await;
    let up_id = upgrading["id"].as_str().unwrap();
    let other_id = other["id"].as_str().unwrap();
    let token = upgrading["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    let (mut b, joined_b) = Client::join(&app, token, "B").await;
    let b_address = joined_b["address"].as_str().unwrap();
    a.expect("participantJoined").await;
    a.expect("conferenceTypeChanged").await;
    b.expect("conferenceTypeChanged").await;
    let (_c, joined_c) = Client::join(&app, other["token"].as_str().unwrap(), "C").await;

    // Three deliveries: a message to everyone else, a signal, a message to a list.
    a.send(json!({"type": "message", "data": "hi"})).await;
    b.expect("message").await;
    a.send(json!({"type": "signal", "to": b_address, "data": {"sdp": "x"}}))
        .await;
    b.expect("signal").await;
    a.send(json!({"type": "message", "to": [b_address], "data": 1}))
        .await;
    b.expect("message").await;

    let during = scrape(&app).await;
    assert_eq!(during.get(r#"convene_rooms{conference_type="SFU"}"#), 1.0);
    assert_eq!(during.get(r#"convene_rooms{conference_type="MESH"}"#), 1.0);
    assert_eq!(during.get("convene_participants"), 3.0);
    assert_eq!(during.get("convene_joins_total"), 3.0);
    assert_eq!(during.get("convene_upgrades_total"), 1.0);
    assert_eq!(during.get("convene_signaling_messages_relayed_total"), 3.0);
    assert_eq!(
        during.get(&requests("/api/realtime/room", "POST", 200)),
        2.0
    );
    assert_histogram(&during, "/api/realtime/room", "POST", 200, 2.0);

    // Leaves of every reason: left, kicked, disconnected, and the room closing on them.
    b.send(json!({"type": "leave"})).await;
    a.expect("participantLeft").await;
    let res = app
        .request(
            Method::DELETE,
            &format!(
                "/api/realtime/room/{other_id}/participants/{}",
                joined_c["address"].as_str().unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (d, _) = Client::join(&app, token, "D").await;
    a.expect("participantJoined").await;
    d.drop_connection();
    assert_eq!(a.expect("participantLeft").await["reason"], "disconnected");
    assert_eq!(app.participants(up_id).await.status(), 200);
    assert_eq!(app.delete_room(up_id).await.status(), 200);
    a.expect("roomClosed").await;
    assert_eq!(app.get_room(up_id).await.status(), 404);

    let after = scrape(&app).await;
    for (reason, n) in [
        ("left", 1.0),
        ("kicked", 1.0),
        ("disconnected", 1.0),
        ("roomClosed", 1.0),
        ("expired", 0.0),
    ] {
        assert_eq!(
            after.get(&format!(r#"convene_leaves_total{{reason="{reason}"}}"#)),
            n,
            "{reason}"
        );
    }
    assert_eq!(after.get("convene_joins_total"), 4.0);
    assert_eq!(after.get("convene_participants"), 0.0);
    assert_eq!(after.get(r#"convene_rooms{conference_type="SFU"}"#), 0.0);
    assert_eq!(after.get(r#"convene_rooms{conference_type="MESH"}"#), 1.0);
    assert_eq!(after.get("convene_upgrades_total"), 1.0);
    // Requests by route pattern (never the raw path) and status.
    for (route, method, status) in [
        (
            "/api/realtime/room/{id}/participants/{address}",
            "DELETE",
            200,
        ),
        ("/api/realtime/room/{id}/participants", "GET", 200),
        ("/api/realtime/room", "DELETE", 200),
        ("/api/realtime/room/{id}", "GET", 404),
    ] {
        assert_eq!(
            after.get(&requests(route, method, status)),
            1.0,
            "{route} {method} {status}"
        );
        assert_histogram(&after, route, method, status, 1.0);
    }
    assert!(
        !after.series.keys().any(|s| s.contains(up_id)),
        "a room id in a label"
    );
}

#[tokio::test]
async fn store_errors_are_counted() {
    let Some(mut app) = TestApp::spawn_with_own_redis(Options::default()).await else {
        return;
    };
    let before = scrape(&app).await;
    assert_eq!(before.get("convene_store_errors_total"), 0.0);
    app.redis.as_mut().unwrap().kill();
    assert_error(
        app.create_room(json!({})).await,
        503,
        "BASE-00020",
        Some("SERVICE_UNAVAILABLE"),
        "The service is temporarily unavailable. Try again later.",
    )
    .await;
    let after = scrape(&app).await;
    assert!(after.get("convene_store_errors_total") >= 1.0);
    assert_eq!(after.get(&requests("/api/realtime/room", "POST", 503)), 1.0);
}

#[tokio::test]
async fn process_metrics_and_build_info() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let m = scrape(&app).await;
    for (name, kind) in [
        ("process_cpu_seconds_total", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
        ("process_max_fds", "gauge"),
        ("process_start_time_seconds", "gauge"),
        ("convene_build_info", "gauge"),
        ("convene_websocket_connections", "gauge"),
        ("convene_join_refusals_total", "counter"),
    ] {
        assert_eq!(m.types.get(name).map(String::as_str), Some(kind), "{name}");
    }
    assert!(m.series.contains_key("process_cpu_seconds_total"));
    // What the kernel says of the process itself.
    let rss = m.get("process_resident_memory_bytes");
    let told = app.rss_bytes() as f64;
    assert!(
        rss > 0.0 && rss < 4.0 * told && told < 4.0 * rss,
        "{rss} vs {told}"
    );
    let pid = app.pid().unwrap();
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count() as f64;
    assert!(
        m.get("process_open_fds") >= 3.0,
        "stdin, stdout, stderr at least"
    );
    assert!((m.get("process_open_fds") - fds).abs() <= 8.0, "{fds}");
    assert!(m.get("process_max_fds") >= m.get("process_open_fds"));
    let started = m.get("process_start_time_seconds");
    assert!(
        started > 1.0e9 && started <= now_ms() as f64 / 1000.0 + 1.0,
        "{started}"
    );
    let version = env!("CARGO_PKG_VERSION");
    assert_eq!(
        m.series
            .get(&format!(r#"convene_build_info{{version="{version}"}}"#)),
        Some(&1.0)
    );
    assert_eq!(
        m.series
            .keys()
            .filter(|s| s.starts_with("convene_build_info"))
            .count(),
        1
    );
}

/// Scrapes until `series` has `value` (the gauge follows a socket's task, which ends a
/// little after the client sees the close).
async fn wait_for(app: &TestApp, series: &str, value: f64) {
    let reached = eventually(WAIT, || async { scrape(app).await.get(series) == value }).await;
    assert!(
        reached,
        "{series} never became {value}: {}",
        scrape(app).await.get(series)
    );
}

#[tokio::test]
async fn open_websockets_are_counted_by_kind() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let signaling = r#"convene_websocket_connections{kind="signaling"}"#;
    let admin = r#"convene_websocket_connections{kind="admin"}"#;
    let before = scrape(&app).await;
    assert_eq!(before.series.get(signaling), Some(&0.0));
    assert_eq!(before.series.get(admin), Some(&0.0));

    // Counted from the upgrade, joined or not.
    let mut pending = Client::connect(&app).await;
    pending.assert_alive().await;
    assert_eq!(scrape(&app).await.get(signaling), 1.0);
    let room = app.new_room(json!({})).await;
    let (mut a, _) = Client::join(&app, room["token"].as_str().unwrap(), "A").await;
    let mut stream = Client::stream(&app, None).await;
    stream.expect("snapshot").await;
    let during = scrape(&app).await;
    assert_eq!(during.get(signaling), 2.0);
    assert_eq!(during.get(admin), 1.0);

    // Closed by the client, dropped, closed by the server: each counts down.
    a.close(1000, "bye").await;
    wait_for(&app, signaling, 1.0).await;
    pending.drop_connection();
    wait_for(&app, signaling, 0.0).await;
    stream.close(1000, "bye").await;
    wait_for(&app, admin, 0.0).await;
}

#[tokio::test]
async fn refused_joins_are_counted_by_reason() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default()
            .env("CONVENE_MESH_MAX_PARTICIPANTS", "2")
            .env("CONVENE_SFU_MAX_PARTICIPANTS", "2"),
    )
    .await
    .unwrap();
    let refusals = |reason: &str| format!(r#"convene_join_refusals_total{{reason="{reason}"}}"#);
    let before = scrape(&app).await;
    for reason in ["token", "gone", "full", "unavailable"] {
        assert_eq!(before.series.get(&refusals(reason)), Some(&0.0), "{reason}");
    }

    let refused = |join: serde_json::Value, code: u16| {
        let app = &app;
        async move {
            let mut c = Client::connect(app).await;
            c.send(join).await;
            c.expect("error").await;
            c.expect_close(code).await;
        }
    };
    refused(
        json!({"type": "join", "token": "not.a.token", "name": "X"}),
        4001,
    )
    .await;
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    let (_b, _) = Client::join(&app, token, "B").await;
    a.expect("participantJoined").await;
    refused(json!({"type": "join", "token": token, "name": "C"}), 4009).await;
    refused(json!({"type": "join", "token": token, "name": "D"}), 4009).await;
    assert_eq!(
        app.delete_room(room["id"].as_str().unwrap()).await.status(),
        200
    );
    refused(json!({"type": "join", "token": token, "name": "E"}), 4004).await;

    let after = scrape(&app).await;
    assert_eq!(after.get(&refusals("token")), 1.0);
    assert_eq!(after.get(&refusals("full")), 2.0);
    assert_eq!(after.get(&refusals("gone")), 1.0);
    assert_eq!(after.get("convene_joins_total"), 2.0);
}

#[tokio::test]
async fn metrics_bind_moves_metrics_to_their_own_listener() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_METRICS_BIND", "127.0.0.1:0"),
    )
    .await
    .unwrap();
    let logs = app.log_text();
    let metrics_addr = logs
        .split("metrics on ")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| c == '"' || c.is_whitespace()).next())
        .unwrap_or_else(|| panic!("no 'metrics on' line in {logs}"))
        .to_string();
    assert_ne!(metrics_addr, app.host_port());

    // Not on the main listener: the service's own 404.
    assert_error(
        app.client.get(app.url("/metrics")).send().await.unwrap(),
        404,
        "BASE-00002",
        Some("NOT_FOUND"),
        "The resource ::= [/metrics] does not exist.",
    )
    .await;
    // On the second one, with the same content; the REST API is not there.
    app.new_room(json!({})).await;
    let m = scrape_url(&app, &format!("http://{metrics_addr}/metrics")).await;
    assert_eq!(m.get(r#"convene_rooms{conference_type="MESH"}"#), 1.0);
    assert_eq!(
        m.types.get("process_open_fds").map(String::as_str),
        Some("gauge")
    );
    assert_eq!(m.get(&requests("/api/realtime/room", "POST", 200)), 1.0);
    let api = app
        .client
        .get(format!("http://{metrics_addr}/api/realtime/room"))
        .header("x-vcs-token", API_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(api.status(), 404);
    let post = app
        .client
        .post(format!("http://{metrics_addr}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET");
}

#[tokio::test]
async fn this_node_is_named_and_alone_without_redis() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_NODE_ID", "node-x"),
    )
    .await
    .unwrap();
    let m = scrape(&app).await;
    assert_eq!(m.types["convene_cluster_nodes"], "gauge");
    assert_eq!(m.types["convene_node_info"], "gauge");
    assert_eq!(
        m.series.get(r#"convene_node_info{node_id="node-x"}"#),
        Some(&1.0)
    );
    assert_eq!(m.get("convene_cluster_nodes"), 1.0);
    // A node without a configured id gets a UUID.
    let other = TestApp::spawn(Backend::Memory).await.unwrap();
    let m = scrape(&other).await;
    let ids: Vec<&String> = m
        .series
        .keys()
        .filter(|s| s.starts_with("convene_node_info"))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let id = ids[0]
        .trim_start_matches(r#"convene_node_info{node_id=""#)
        .trim_end_matches(r#""}"#);
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
}

/// The nodes registered in the Redis at `url` (prefix `convene`), by id: each one's JSON.
fn registered(redis: &RedisServer) -> Vec<serde_json::Value> {
    let mut conn = redis.conn();
    let mut ids: Vec<String> = redis::cmd("ZRANGE")
        .arg("convene:{nodes}")
        .arg(0)
        .arg(-1)
        .query(&mut conn)
        .unwrap();
    // The set is ordered by each node's expiry, which the last heartbeat moved: by id, as
    // promised.
    ids.sort();
    ids.iter()
        .filter_map(|id| {
            let json: Option<String> = redis::cmd("GET")
                .arg(format!("convene:{{nodes}}:{id}"))
                .query(&mut conn)
                .unwrap();
            json.map(|j| serde_json::from_str(&j).unwrap())
        })
        .collect()
}

#[tokio::test]
async fn nodes_on_one_redis_see_each_other_and_a_killed_one_goes() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let a = TestApp::spawn_on(
        &redis.url(),
        Options::default().env("CONVENE_NODE_ID", "node-a"),
    );
    let mut b = TestApp::spawn_on(
        &redis.url(),
        Options::default()
            .env("CONVENE_NODE_ID", "node-b")
            .env("CONVENE_NODE_HTTP_ADDR", "b.example:8080")
            .env("CONVENE_RTC_ADVERTISE_IP", "192.0.2.7")
            .env("CONVENE_RTC_ADVERTISE_PORT", "40000"),
    );
    wait_for(&a, "convene_cluster_nodes", 2.0).await;
    wait_for(&b, "convene_cluster_nodes", 2.0).await;
    assert_eq!(
        scrape(&b)
            .await
            .series
            .get(r#"convene_node_info{node_id="node-b"}"#),
        Some(&1.0)
    );

    // What each registered: addresses, load, start, version, the secret's fingerprint.
    a.new_room(json!({})).await;
    let nodes = registered(&redis);
    let ids: Vec<&str> = nodes.iter().map(|n| n["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["node-a", "node-b"]);
    let (na, nb) = (&nodes[0], &nodes[1]);
    assert_eq!(na["httpAddr"], a.host_port());
    assert_eq!(nb["httpAddr"], "b.example:8080");
    assert_eq!(nb["mediaAddr"], "192.0.2.7:40000");
    assert_eq!(na["version"], env!("CARGO_PKG_VERSION"));
    assert!(na["startedAt"].as_u64().unwrap() <= now_ms());
    assert!(na["cpu"].as_f64().unwrap() >= 0.0);
    assert!(nb["participants"].as_u64().is_some());
    assert_eq!(na["secretId"], nb["secretId"]);
    assert_eq!(na["secretId"].as_str().unwrap().len(), 16);
    // The load follows: node a's new room (active, it has an actor) shows at a heartbeat.
    assert!(
        eventually(WAIT, || async {
            registered(&redis)
                .iter()
                .any(|n| n["id"] == "node-a" && n["rooms"] == 1)
        })
        .await,
        "{:?}",
        registered(&redis)
    );

    // Killed, node b cannot say goodbye: it disappears once its entry expires.
    b.kill();
    wait_for(&a, "convene_cluster_nodes", 1.0).await;
    let ids: Vec<String> = registered(&redis)
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["node-a"]);

    // Stopped cleanly, node a removes its entry before it exits.
    let mut a = a;
    assert_eq!(a.stop().and_then(|s| s.code()), Some(0));
    assert_eq!(registered(&redis), Vec::<serde_json::Value>::new());
    let mut conn = redis.conn();
    let exists: bool = redis::cmd("EXISTS")
        .arg("convene:{nodes}:node-a")
        .query(&mut conn)
        .unwrap();
    assert!(!exists);
}
