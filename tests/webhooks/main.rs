//! Webhooks (`docs/webhooks.md`): the real binary POSTs room events to a receiver that
//! runs inside the test (`receiver.rs`), which checks every signature and can fail or hold
//! requests to force retries; with Redis, events survive a SIGKILL of the service.

#[path = "../api/support.rs"]
mod support;

#[path = "../support/ws.rs"]
#[allow(dead_code)]
mod ws;

mod receiver;

use receiver::{Answer, Receiver, SECRET, TestCa};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use support::*;
use ws::Client;

const DEADLINE: Duration = Duration::from_secs(30);

/// The service's settings for webhooks to `receiver`: quick retries for the tests.
fn hooks(receiver: &Receiver) -> Options {
    Options::default()
        .env("CONVENE_WEBHOOK_URLS", &receiver.url)
        .env("CONVENE_WEBHOOK_SECRET", SECRET)
        .env("CONVENE_WEBHOOK_BACKOFF_MS", 50)
        .env("CONVENE_WEBHOOK_TIMEOUT_MS", 500)
}

/// The types of a room's delivered events, in the order each event was first delivered
/// (a repeated delivery of an event already seen is skipped).
fn first_deliveries(delivered: &[Value], room: &str) -> Vec<String> {
    let mut seen = HashSet::new();
    delivered
        .iter()
        .filter(|e| e["roomId"] == room && seen.insert(e["id"].as_str().unwrap().to_string()))
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn distinct_ids(delivered: &[Value]) -> HashSet<String> {
    delivered
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

async fn kick(app: &TestApp, room: &str, address: &str) {
    let res = app
        .request(
            Method::DELETE,
            &format!("/api/realtime/room/{room}/participants/{address}"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn signed_events_tell_what_happened_in_each_room_in_order() {
    let receiver = Receiver::start().await;
    let app = TestApp::spawn_with(Backend::Memory, hooks(&receiver))
        .await
        .unwrap();
    let room = app.new_room(json!({"name": "Standup"})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    let (mut al, joined_al) = Client::join(&app, token, "Al").await;
    let (_bo, joined_bo) = Client::join(&app, token, "Bo").await;
    let (al_address, bo_address) = (
        joined_al["address"].as_str().unwrap(),
        joined_bo["address"].as_str().unwrap(),
    );
    kick(&app, id, bo_address).await;
    al.send(json!({"type": "leave"})).await;
    assert!(eventually(DEADLINE, || async { receiver.delivered().len() == 6 }).await);
    assert_eq!(app.delete_room(id).await.status(), 200);
    // A room that becomes SFU when its second participant joins.
    let upgrading = app
        .new_room(json!({"autoUpgradeParticipantCount": 2}))
        .await;
    let upgrading_id = upgrading["id"].as_str().unwrap();
    let upgrading_token = upgrading["token"].as_str().unwrap();
    let _c = Client::join(&app, upgrading_token, "Cy").await;
    let _d = Client::join(&app, upgrading_token, "Di").await;
    assert!(eventually(DEADLINE, || async { receiver.delivered().len() == 11 }).await);

    let received = receiver.received();
    assert_eq!(received.len(), 11, "nothing failed, nothing was sent twice");
    for request in &received {
        assert!(request.verified, "signature: {:?}", request.headers);
        assert_eq!(request.headers["content-type"], "application/json");
        assert_eq!(
            request.headers["convene-event-id"], request.json["id"],
            "the header names the event"
        );
        assert!(request.headers["user-agent"].starts_with("convene/"));
        assert!(!request.body.contains(token), "no room token in events");
    }
    let mut events: Vec<Value> = receiver.delivered();
    assert_eq!(
        distinct_ids(&events).len(),
        11,
        "every event has its own id"
    );
    let mut last = 0;
    for event in &mut events {
        let at = event["timestamp"].as_u64().unwrap();
        assert!(at >= last && at + 60_000 > now_ms(), "{event}");
        last = at;
        assert!(uuid::Uuid::parse_str(event["id"].as_str().unwrap()).is_ok());
        let object = event.as_object_mut().unwrap();
        object.remove("id");
        object.remove("timestamp");
    }
    let in_room = |room: &str| -> Vec<Value> {
        events
            .iter()
            .filter(|e| e["roomId"] == room)
            .cloned()
            .collect()
    };
    let standup = in_room(id);
    assert_eq!(
        standup[0],
        json!({"type": "roomStarted", "roomId": id,
               "room": {"name": "Standup", "creationTime": room["creationTime"],
                        "conferenceType": "MESH", "roomTTLSeconds": room["roomTTLSeconds"]}})
    );
    assert_eq!(standup[1]["type"], "participantJoined");
    assert_eq!(standup[1]["participant"]["address"], al_address);
    assert_eq!(standup[1]["participant"]["name"], "Al");
    assert_eq!(standup[2]["participant"]["address"], bo_address);
    assert_eq!(
        standup[3..],
        [
            json!({"type": "participantKicked", "roomId": id,
                   "participant": {"address": bo_address, "name": "Bo"}}),
            json!({"type": "participantLeft", "roomId": id,
                   "participant": {"address": bo_address, "name": "Bo"}, "reason": "kicked"}),
            json!({"type": "participantLeft", "roomId": id,
                   "participant": {"address": al_address, "name": "Al"}, "reason": "left"}),
            json!({"type": "roomFinished", "roomId": id, "reason": "deleted", "participants": 0}),
        ]
    );
    let types: Vec<Value> = in_room(upgrading_id)
        .iter()
        .map(|e| e["type"].clone())
        .collect();
    assert_eq!(
        types,
        [
            "roomStarted",
            "participantJoined",
            "participantJoined",
            "conferenceTypeChanged"
        ]
    );
    assert_eq!(
        in_room(upgrading_id)[3],
        json!({"type": "conferenceTypeChanged", "roomId": upgrading_id,
               "previousConferenceType": "MESH", "conferenceType": "SFU"})
    );
    assert_eq!(app.metric("convene_webhooks_delivered_total").await, 11.0);
    assert_eq!(app.metric("convene_webhooks_queued_total").await, 11.0);
    assert_eq!(app.metric("convene_webhooks_retried_total").await, 0.0);
}

#[tokio::test]
async fn failed_and_unanswered_requests_are_retried_in_order_per_room() {
    let receiver = Receiver::start().await;
    // The first request gets no answer (the service's 500 ms timeout ends it), the next
    // three get 500; every other one is answered 200.
    receiver.plan(
        &[Answer::Hang, Answer::Fail, Answer::Fail, Answer::Fail],
        Answer::Ok,
    );
    let app = TestApp::spawn_with(Backend::Memory, hooks(&receiver))
        .await
        .unwrap();
    let mut rooms = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..3 {
        let room = app.new_room(json!({})).await;
        let token = room["token"].as_str().unwrap();
        let mut addresses = Vec::new();
        for name in ["A", "B"] {
            let (client, joined) = Client::join(&app, token, name).await;
            addresses.push(joined["address"].clone());
            clients.push(client);
        }
        rooms.push((room["id"].as_str().unwrap().to_string(), addresses));
    }
    assert!(
        eventually(DEADLINE, || async {
            distinct_ids(&receiver.delivered()).len() == 9
        })
        .await,
        "{:?}",
        receiver.received()
    );
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 9, "each event answered 200 once");
    for (room, addresses) in &rooms {
        assert_eq!(
            first_deliveries(&delivered, room),
            ["roomStarted", "participantJoined", "participantJoined"]
        );
        let joined: Vec<&Value> = delivered
            .iter()
            .filter(|e| e["roomId"] == room.as_str() && e["type"] == "participantJoined")
            .map(|e| &e["participant"]["address"])
            .collect();
        assert_eq!(joined, addresses.iter().collect::<Vec<_>>(), "join order");
    }
    let received = receiver.received();
    assert_eq!(received.len(), 13, "9 events, 4 of them tried twice");
    assert!(received.iter().all(|r| r.verified));
    // A retried request is the same event, signed again.
    let failed_ids: Vec<&Value> = received[..4].iter().map(|r| &r.json["id"]).collect();
    assert!(
        failed_ids
            .iter()
            .all(|id| delivered.iter().any(|e| e["id"] == **id))
    );
    assert_eq!(app.metric("convene_webhooks_retried_total").await, 4.0);
    assert_eq!(app.metric("convene_webhooks_delivered_total").await, 9.0);
    assert_eq!(
        app.metric("convene_webhooks_dropped_total{reason=\"expired\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn an_event_past_its_retry_time_is_dropped_and_its_room_goes_on() {
    let receiver = Receiver::start().await;
    receiver.plan(&[], Answer::Fail);
    let app = TestApp::spawn_with(
        Backend::Memory,
        hooks(&receiver).env("CONVENE_WEBHOOK_RETRY_SECONDS", 1),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({})).await;
    assert!(
        eventually(DEADLINE, || async {
            app.metric("convene_webhooks_dropped_total{reason=\"expired\"}")
                .await
                == 1.0
        })
        .await
    );
    assert!(app.metric("convene_webhooks_retried_total").await >= 1.0);
    receiver.plan(&[], Answer::Ok);
    let (_a, joined) = Client::join(&app, room["token"].as_str().unwrap(), "A").await;
    assert!(eventually(DEADLINE, || async { !receiver.delivered().is_empty() }).await);
    let delivered = receiver.delivered();
    assert_eq!(delivered.len(), 1, "{delivered:?}");
    assert_eq!(delivered[0]["type"], "participantJoined");
    assert_eq!(delivered[0]["participant"]["address"], joined["address"]);
    let started: Vec<_> = receiver
        .received()
        .into_iter()
        .filter(|r| r.json["type"] == "roomStarted")
        .collect();
    assert!(started.len() >= 2 && started.iter().all(|r| r.answer == Answer::Fail));
}

#[test]
fn bad_webhook_settings_stop_start_up_naming_the_setting() {
    let not_a_cert =
        std::env::temp_dir().join(format!("convene-not-a-ca-{}.pem", uuid::Uuid::new_v4()));
    std::fs::write(
        &not_a_cert,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let not_a_cert = not_a_cert.to_str().unwrap().to_string();
    let https = ("CONVENE_WEBHOOK_URLS", "https://127.0.0.1:9/x");
    let secret = ("CONVENE_WEBHOOK_SECRET", SECRET);
    for (env, names) in [
        (
            vec![("CONVENE_WEBHOOK_URLS", "http://127.0.0.1:9/x")],
            "CONVENE_WEBHOOK_SECRET",
        ),
        (
            vec![("CONVENE_WEBHOOK_URLS", "ftp://example.org/x"), secret],
            "CONVENE_WEBHOOK_URLS",
        ),
        (
            vec![
                https,
                secret,
                ("CONVENE_WEBHOOK_CA_FILE", "/nonexistent/ca.pem"),
            ],
            "CONVENE_WEBHOOK_CA_FILE",
        ),
        (
            vec![
                https,
                secret,
                ("CONVENE_WEBHOOK_CA_FILE", not_a_cert.as_str()),
            ],
            "CONVENE_WEBHOOK_CA_FILE",
        ),
    ] {
        let mut options = Options::default();
        for (key, value) in env {
            options = options.env(key, value);
        }
        let exited = run_to_exit(options, Duration::from_secs(30));
        assert_eq!(exited.status.code(), Some(2), "{exited:?}");
        assert!(exited.stderr.contains(names), "{exited:?}");
    }
    let _ = std::fs::remove_file(not_a_cert);
}

/// The outbox stream of a webhook URL (`docs/webhooks.md`, "With Redis").
fn stream_key(url: &str) -> String {
    let hex: String = Sha256::digest(url.as_bytes())[..8]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("convene:{{webhooks}}:{hex}")
}

#[tokio::test]
async fn with_redis_a_killed_service_delivers_every_event_after_its_restart() {
    let receiver = Receiver::start().await;
    // Three requests are answered; from the fourth on the receiver holds every request
    // (a slow receiver), and the service is killed while it waits.
    receiver.plan(&[Answer::Ok, Answer::Ok, Answer::Ok], Answer::Hang);
    let Some(mut app) = TestApp::spawn_with_own_redis(hooks(&receiver)).await else {
        eprintln!("skipped: no redis-server");
        return;
    };
    let mut expected: HashMap<String, Vec<&str>> = HashMap::new();
    let mut clients = Vec::new();
    for i in 0..4 {
        let room = app.new_room(json!({})).await;
        let id = room["id"].as_str().unwrap().to_string();
        let token = room["token"].as_str().unwrap();
        let (mut a, _) = Client::join(&app, token, "A").await;
        let (mut b, _) = Client::join(&app, token, "B").await;
        a.send(json!({"type": "leave"})).await;
        b.expect("participantLeft").await;
        let mut types = vec![
            "roomStarted",
            "participantJoined",
            "participantJoined",
            "participantLeft",
        ];
        if i == 0 {
            assert_eq!(app.delete_room(&id).await.status(), 200);
            types.push("roomFinished");
        } else {
            clients.push(b);
        }
        expected.insert(id, types);
    }
    let total: usize = expected.values().map(Vec::len).sum();
    assert_eq!(total, 17);
    // Every event is in the outbox, and the receiver holds requests.
    assert!(
        eventually(DEADLINE, || async {
            app.metric("convene_webhooks_queued_total").await == total as f64
        })
        .await
    );
    assert!(
        eventually(DEADLINE, || async {
            receiver.received().iter().any(|r| r.answer == Answer::Hang)
        })
        .await
    );
    let before = distinct_ids(&receiver.delivered()).len();
    assert!(before <= 3);
    app.kill();
    drop(clients);
    receiver.plan(&[], Answer::Ok);
    app.restart();
    assert!(
        eventually(DEADLINE, || async {
            distinct_ids(&receiver.delivered()).len() == total
        })
        .await,
        "delivered {} of {total}",
        distinct_ids(&receiver.delivered()).len()
    );
    let delivered = receiver.delivered();
    for (room, types) in &expected {
        assert_eq!(&first_deliveries(&delivered, room), types, "room {room}");
    }
    assert!(receiver.received().iter().all(|r| r.verified));
    let duplicates = delivered.len() - total;
    eprintln!(
        "webhooks across a SIGKILL: {total} events, {before} delivered before the kill, all delivered after the restart, {duplicates} delivered twice"
    );
    // Delivered entries leave the outbox.
    let key = stream_key(&receiver.url);
    let redis = app.redis.as_ref().unwrap();
    assert!(
        eventually(DEADLINE, || async {
            redis::cmd("XLEN")
                .arg(&key)
                .query::<u64>(&mut redis.conn())
                .unwrap()
                == 0
        })
        .await
    );
}

/// A `cluster` node on `redis` with webhooks to `receiver`, with a room lease (and so a
/// deliverer's lease) of one second.
fn node(redis: &RedisServer, id: &str, receiver: &Receiver) -> TestApp {
    TestApp::spawn_on(
        &redis.url(),
        hooks(receiver)
            .env("CONVENE_CLUSTER", 1)
            .env("CONVENE_NODE_ID", id)
            .env("CONVENE_ROOM_LEASE_MS", 1000),
    )
}

fn deliverer(redis: &RedisServer) -> Option<String> {
    redis::cmd("GET")
        .arg("convene:{webhooks}:deliverer")
        .query(&mut redis.conn())
        .unwrap()
}

#[tokio::test]
async fn in_a_cluster_one_node_delivers_and_another_takes_over_when_it_dies() {
    let Some(redis) = RedisServer::start() else {
        eprintln!("skipped: no redis-server");
        return;
    };
    let receiver = Receiver::start().await;
    let mut nodes = [node(&redis, "n1", &receiver), node(&redis, "n2", &receiver)];
    for node in &nodes {
        for _ in 0..3 {
            node.new_room(json!({})).await;
        }
    }
    assert!(
        eventually(DEADLINE, || async {
            distinct_ids(&receiver.delivered()).len() == 6
        })
        .await
    );
    assert_eq!(
        receiver.received().len(),
        6,
        "the events of both nodes, each delivered once: only one node delivers"
    );
    let holder = deliverer(&redis).expect("a node holds the deliverer's role");
    let (dead, alive, survivor_id) = if holder == "n1" {
        (0, 1, "n2")
    } else {
        (1, 0, "n1")
    };
    nodes[dead].kill();
    let survivor = &nodes[alive];
    let late = survivor.new_room(json!({})).await;
    assert!(
        eventually(DEADLINE, || async {
            receiver
                .delivered()
                .iter()
                .any(|e| e["roomId"] == late["id"])
        })
        .await
    );
    assert_eq!(deliverer(&redis).as_deref(), Some(survivor_id));
    assert_eq!(distinct_ids(&receiver.delivered()).len(), 7);
}

#[tokio::test]
async fn with_redis_a_service_killed_while_a_slow_receiver_answers_loses_nothing() {
    let receiver = Receiver::start().await;
    // The receiver records each request (it has the event) and answers 200 only 200 ms
    // later: the service is killed with requests in that window.
    receiver.slow(Duration::from_millis(200));
    let Some(mut app) = TestApp::spawn_with_own_redis(hooks(&receiver)).await else {
        eprintln!("skipped: no redis-server");
        return;
    };
    let mut rooms = Vec::new();
    for _ in 0..12 {
        let room = app.new_room(json!({})).await;
        let (mut a, _) = Client::join(&app, room["token"].as_str().unwrap(), "A").await;
        a.send(json!({"type": "leave"})).await;
        rooms.push((room["id"].as_str().unwrap().to_string(), a));
    }
    let total = 36;
    assert!(
        eventually(DEADLINE, || async {
            app.metric("convene_webhooks_queued_total").await == total as f64
        })
        .await
    );
    assert!(eventually(DEADLINE, || async { receiver.received().len() >= 12 }).await);
    app.kill();
    let before = distinct_ids(&receiver.delivered()).len();
    receiver.slow(Duration::ZERO);
    app.restart();
    assert!(
        eventually(DEADLINE, || async {
            distinct_ids(&receiver.delivered()).len() == total
        })
        .await,
        "delivered {} of {total}",
        distinct_ids(&receiver.delivered()).len()
    );
    let delivered = receiver.delivered();
    for (room, _) in &rooms {
        assert_eq!(
            first_deliveries(&delivered, room),
            ["roomStarted", "participantJoined", "participantLeft"],
            "room {room}"
        );
    }
    let duplicates = delivered.len() - total;
    eprintln!(
        "webhooks across a SIGKILL with a slow receiver: {total} events, {before} received before the kill, all after the restart, {duplicates} received twice (deduplicated by id)"
    );
    assert!(
        duplicates <= before,
        "only events in flight at the kill come twice"
    );
}

#[tokio::test]
async fn with_redis_events_wait_through_a_redis_outage_and_go_out_in_order() {
    let receiver = Receiver::start().await;
    let Some(mut app) = TestApp::spawn_with_own_redis(hooks(&receiver)).await else {
        eprintln!("skipped: no redis-server");
        return;
    };
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    assert!(eventually(DEADLINE, || async { receiver.delivered().len() == 2 }).await);
    app.redis.as_mut().unwrap().kill();
    // The room is active on this single node: joins and leaves go on without Redis, and
    // their events wait for the outbox.
    let (mut b, _) = Client::join(&app, token, "B").await;
    a.send(json!({"type": "leave"})).await;
    b.expect("participantLeft").await;
    assert_eq!(app.metric("convene_webhooks_queued_total").await, 2.0);
    app.redis.as_mut().unwrap().restart();
    assert!(eventually(DEADLINE, || async { receiver.delivered().len() == 4 }).await);
    assert_eq!(
        first_deliveries(&receiver.delivered(), id),
        [
            "roomStarted",
            "participantJoined",
            "participantJoined",
            "participantLeft"
        ]
    );
    assert_eq!(app.metric("convene_webhooks_queued_total").await, 4.0);
}

#[tokio::test]
async fn on_a_redis_cluster_the_outbox_keeps_events_across_a_kill() {
    let Some(cluster) = RedisCluster::start() else {
        eprintln!("skipped: no redis-server");
        return;
    };
    let receiver = Receiver::start().await;
    receiver.plan(&[], Answer::Fail);
    let options = hooks(&receiver).env("CONVENE_REDIS_CLUSTER", "1");
    let mut app = TestApp::spawn_on(&cluster.url_setting(), options.clone());
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(
            app.new_room(json!({})).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(app.delete_room(&ids[0]).await.status(), 200);
    assert!(
        eventually(DEADLINE, || async {
            app.metric("convene_webhooks_queued_total").await == 4.0
        })
        .await
    );
    app.kill();
    receiver.plan(&[], Answer::Ok);
    let app = TestApp::spawn_on(&cluster.url_setting(), options);
    assert!(
        eventually(DEADLINE, || async {
            distinct_ids(&receiver.delivered()).len() == 4
        })
        .await
    );
    let delivered = receiver.delivered();
    assert_eq!(
        first_deliveries(&delivered, &ids[0]),
        ["roomStarted", "roomFinished"]
    );
    assert_eq!(first_deliveries(&delivered, &ids[2]), ["roomStarted"]);
    drop(app);
}

#[tokio::test]
async fn without_redis_events_beyond_the_queue_limit_are_dropped_and_counted() {
    let receiver = Receiver::start().await;
    receiver.plan(&[], Answer::Hang);
    let app = TestApp::spawn_with(
        Backend::Memory,
        hooks(&receiver).env("CONVENE_WEBHOOK_QUEUE_LIMIT", 2),
    )
    .await
    .unwrap();
    for _ in 0..5 {
        app.new_room(json!({})).await;
    }
    assert!(
        eventually(DEADLINE, || async {
            app.metric("convene_webhooks_dropped_total{reason=\"overflow\"}")
                .await
                == 3.0
        })
        .await
    );
    assert_eq!(app.metric("convene_webhooks_queued_total").await, 2.0);
    receiver.plan(&[], Answer::Ok);
    assert!(eventually(DEADLINE, || async { receiver.delivered().len() == 2 }).await);
    assert!(
        app.log_text()
            .contains("webhook event dropped: the queue is full")
    );
}

#[tokio::test]
async fn over_https_events_arrive_signed_when_the_receiver_chains_to_the_ca_file() {
    let ca = TestCa::new("Convene webhook test CA");
    let ca_file = ca.write();
    let receiver = Receiver::start_tls(&ca).await;
    assert!(receiver.url.starts_with("https://127.0.0.1:"));
    let app = TestApp::spawn_with(
        Backend::Memory,
        hooks(&receiver).env("CONVENE_WEBHOOK_CA_FILE", &ca_file),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({"name": "Secure"})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    let (_al, _) = Client::join(&app, token, "Al").await;
    assert_eq!(app.delete_room(id).await.status(), 200);
    assert!(eventually(DEADLINE, || async { receiver.delivered().len() == 3 }).await);
    assert_eq!(
        first_deliveries(&receiver.delivered(), id),
        ["roomStarted", "participantJoined", "roomFinished"]
    );
    for request in receiver.received() {
        assert!(request.verified, "signature: {:?}", request.headers);
        assert!(!request.body.contains(token));
    }
    // The receiver records a request before it answers: the service counts it once the
    // answer reached it.
    assert!(
        eventually(DEADLINE, || async {
            app.metric("convene_webhooks_delivered_total").await == 3.0
        })
        .await
    );
    assert_eq!(app.metric("convene_webhooks_retried_total").await, 0.0);
    let _ = std::fs::remove_file(ca_file);
}

#[tokio::test]
async fn an_https_receiver_with_an_untrusted_certificate_gets_nothing_and_is_retried() {
    // The service trusts one CA (and the system's roots); the receiver's certificate comes
    // from another, which nothing trusts.
    let trusted = TestCa::new("Convene webhook test CA");
    let ca_file = trusted.write();
    let stranger = TestCa::new("Someone else's CA");
    let receiver = Receiver::start_tls(&stranger).await;
    let app = TestApp::spawn_with(
        Backend::Memory,
        hooks(&receiver).env("CONVENE_WEBHOOK_CA_FILE", &ca_file),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({})).await;
    assert!(
        eventually(DEADLINE, || async {
            app.metric("convene_webhooks_retried_total").await >= 3.0
        })
        .await
    );
    assert!(receiver.received().is_empty(), "no request got through");
    assert_eq!(app.metric("convene_webhooks_delivered_total").await, 0.0);
    // The service goes on serving.
    let res = app.get_room(room["id"].as_str().unwrap()).await;
    assert_eq!(res.status(), 200);
    let _ = std::fs::remove_file(ca_file);
}

/// Settings under which rooms nobody uses passivate after a second, every room expires
/// four seconds after its creation, and the store is swept every second.
fn expiring(receiver: &Receiver) -> Options {
    hooks(receiver)
        .env("CONVENE_ROOM_IDLE_SECONDS", 1)
        .env("CONVENE_ROOM_TTL_SECONDS", 4)
        .env("CONVENE_STORE_SWEEP_INTERVAL_SECONDS", 1)
}

/// The `roomFinished` requests the receiver got for `room` (every request, repeats too).
fn finished_requests(receiver: &Receiver, room: &str) -> Vec<Value> {
    receiver
        .received()
        .into_iter()
        .map(|r| r.json)
        .filter(|e| e["roomId"] == room && e["type"] == "roomFinished")
        .collect()
}

/// Waits for the `roomFinished` of `room` and answers its body without id and timestamp,
/// checking that the id is the room's one id of its end.
async fn finished(receiver: &Receiver, room: &str) -> Value {
    assert!(
        eventually(DEADLINE, || async {
            !finished_requests(receiver, room).is_empty()
        })
        .await,
        "no roomFinished for {room}: {:?}",
        receiver.delivered()
    );
    let mut event = finished_requests(receiver, room).remove(0);
    assert!(uuid::Uuid::parse_str(event["id"].as_str().unwrap()).is_ok());
    let object = event.as_object_mut().unwrap();
    object.remove("id");
    object.remove("timestamp").unwrap();
    event
}

fn expired_without_actor(app: &TestApp, room: &str) -> bool {
    app.log_text()
        .lines()
        .any(|l| l.contains("room expired without an actor") && l.contains(room))
}

/// A room that expires while passivated gets its `roomFinished` from the sweep, as one that
/// expires while in use gets it from its actor: one each, of the same shape. A later room
/// ending the same way is the barrier: by then several sweeps have run past both.
async fn rooms_that_expire_passivated_or_active_finish_once(backend: Backend) {
    let receiver = Receiver::start().await;
    let Some(app) = TestApp::spawn_with(backend, expiring(&receiver)).await else {
        return;
    };
    let idle = app.new_room(json!({})).await;
    let idle = idle["id"].as_str().unwrap().to_string();
    let busy = app.new_room(json!({})).await;
    let (busy, token) = (
        busy["id"].as_str().unwrap().to_string(),
        busy["token"].as_str().unwrap().to_string(),
    );
    let (_al, _) = Client::join(&app, &token, "Al").await;
    assert!(
        eventually(DEADLINE, || async { app.active_rooms().await == 1 }).await,
        "the unused room passivates"
    );
    assert_eq!(
        finished(&receiver, &idle).await,
        json!({"type": "roomFinished", "roomId": idle, "reason": "expired", "participants": 0})
    );
    assert_eq!(
        finished(&receiver, &busy).await,
        json!({"type": "roomFinished", "roomId": busy, "reason": "expired", "participants": 1})
    );
    assert!(expired_without_actor(&app, &idle), "the sweep ended it");
    assert!(!expired_without_actor(&app, &busy), "its actor ended it");
    assert_eq!(app.get_room(&idle).await.status(), 404);

    let barrier = app.new_room(json!({})).await;
    let barrier = barrier["id"].as_str().unwrap().to_string();
    finished(&receiver, &barrier).await;
    for room in [&idle, &busy, &barrier] {
        let requests = finished_requests(&receiver, room);
        assert_eq!(
            requests.len(),
            1,
            "one roomFinished for {room}: {requests:?}"
        );
    }
    let ids: Vec<Value> = [&idle, &busy, &barrier]
        .iter()
        .map(|r| finished_requests(&receiver, r)[0]["id"].clone())
        .collect();
    assert!(
        ids[0] != ids[1] && ids[1] != ids[2],
        "one id per room: {ids:?}"
    );
    // (Under a shared `REDIS_URL` the keys have a prefix of their own.)
    if backend == Backend::Redis && std::env::var("REDIS_URL").is_err() {
        let mut conn = app.redis_conn();
        let left: Vec<String> = redis::cmd("ZRANGE")
            .arg("convene:{rooms}:expiry")
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        assert!(left.is_empty(), "expiry index: {left:?}");
    }
}

#[tokio::test]
async fn a_room_that_expires_while_passivated_gets_one_room_finished() {
    rooms_that_expire_passivated_or_active_finish_once(Backend::Memory).await;
}

#[tokio::test]
async fn with_redis_a_room_that_expires_while_passivated_gets_one_room_finished() {
    rooms_that_expire_passivated_or_active_finish_once(Backend::Redis).await;
}

/// Two `cluster` nodes sweep one Redis: every room that expired without an actor gets
/// exactly one `roomFinished` (one node takes it out of the expiry index, through the
/// outbox), and a room in use on one node is left to its owner's actor by the other.
#[tokio::test]
async fn in_a_cluster_each_expired_room_is_finished_by_one_node() {
    let Some(redis) = RedisServer::start() else {
        eprintln!("skipped: no redis-server");
        return;
    };
    let receiver = Receiver::start().await;
    let node = |id: &str| {
        TestApp::spawn_on(
            &redis.url(),
            expiring(&receiver)
                .env("CONVENE_CLUSTER", 1)
                .env("CONVENE_NODE_ID", id)
                .env("CONVENE_ROOM_LEASE_MS", 1000),
        )
    };
    let nodes = [node("n1"), node("n2")];
    let mut idle = Vec::new();
    for node in &nodes {
        for _ in 0..3 {
            let room = node.new_room(json!({})).await;
            idle.push(room["id"].as_str().unwrap().to_string());
        }
    }
    let busy = nodes[0].new_room(json!({})).await;
    let (busy, token) = (
        busy["id"].as_str().unwrap().to_string(),
        busy["token"].as_str().unwrap().to_string(),
    );
    let (_al, _) = Client::join(&nodes[0], &token, "Al").await;
    for room in &idle {
        assert_eq!(
            finished(&receiver, room).await,
            json!({"type": "roomFinished", "roomId": room, "reason": "expired", "participants": 0})
        );
    }
    assert_eq!(
        finished(&receiver, &busy).await["participants"],
        1,
        "its owner's actor ended it"
    );
    let barrier = nodes[1].new_room(json!({})).await;
    let barrier = barrier["id"].as_str().unwrap().to_string();
    finished(&receiver, &barrier).await;
    for room in idle.iter().chain([&busy, &barrier]) {
        let requests = finished_requests(&receiver, room);
        assert_eq!(
            requests.len(),
            1,
            "one roomFinished for {room}: {requests:?}"
        );
    }
    let swept_by = |node: &TestApp| {
        idle.iter()
            .filter(|r| expired_without_actor(node, r))
            .count()
    };
    eprintln!(
        "expired rooms finished by n1: {}, by n2: {}",
        swept_by(&nodes[0]),
        swept_by(&nodes[1])
    );
    assert_eq!(swept_by(&nodes[0]) + swept_by(&nodes[1]), idle.len());
}
