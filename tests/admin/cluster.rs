//! One owner per room on several nodes (`docs/cluster.md`): node processes with
//! `CONVENE_CLUSTER=1` on one private Redis, and again on a private three-master Redis
//! Cluster; a room's actor runs on the node holding its lease, and the REST calls of a
//! room made on another node are forwarded to the owner.
//! Without `cluster` (one node, the default) there are no leases: a Redis outage longer
//! than the lease time leaves the node's rooms and sockets as they were.

use crate::one_redis_and_cluster;
use crate::support::*;
use crate::ws::Client;
use reqwest::Method;
use serde_json::{Value, json};
use std::process::Command;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);

fn node(redis: &SharedRedis, id: &str, lease_ms: u64) -> TestApp {
    TestApp::spawn_on(
        &redis.url(),
        redis
            .options()
            .env("CONVENE_CLUSTER", 1)
            .env("CONVENE_NODE_ID", id)
            .env("CONVENE_ROOM_LEASE_MS", lease_ms),
    )
}

/// The room's lease as stored: (fence, node), `None` while nobody holds it.
fn holder(redis: &SharedRedis, id: &str) -> Option<(u64, String)> {
    let value = redis.get(&format!("convene:{{room:{id}}}:lease"))?;
    let (fence, node) = value.split_once('|').unwrap();
    Some((fence.parse().unwrap(), node.to_string()))
}

/// The room's stored record, byte for byte.
fn stored(redis: &SharedRedis, id: &str) -> Option<String> {
    redis.get(&format!("convene:{{room:{id}}}"))
}

/// Status and body of a request.
async fn call(app: &TestApp, method: Method, path: &str) -> (u16, Value) {
    let res = app.request(method, path).send().await.unwrap();
    let status = res.status().as_u16();
    let content_type = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body: Value = res.json().await.unwrap();
    assert_eq!(content_type.as_deref(), Some("application/json"), "{body}");
    (status, body)
}

fn signal(app: &TestApp, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(app.pid().unwrap().to_string())
        .status()
        .unwrap();
    assert!(status.success());
}

one_redis_and_cluster!(every_node_answers_for_a_room_owned_by_one);
async fn every_node_answers_for_a_room_owned_by_one(redis: SharedRedis) {
    let (a, b, c) = (
        node(&redis, "a", 5000),
        node(&redis, "b", 5000),
        node(&redis, "c", 5000),
    );
    let room = a.new_room(json!({"name": "one owner"})).await;
    let id = room["id"].as_str().unwrap();
    assert_eq!(holder(&redis, id), Some((1, "a".to_string())));

    let path = format!("/api/realtime/room/{id}");
    let on_a = call(&a, Method::GET, &path).await;
    assert_eq!(on_a.0, 200);
    for other in [&b, &c] {
        assert_eq!(call(other, Method::GET, &path).await, on_a);
    }
    // Only the owner runs the room: still node a's lease, fence 1.
    assert_eq!(holder(&redis, id), Some((1, "a".to_string())));

    // A participant joined on A is listed, and kicked, from B.
    let token = room["token"].as_str().unwrap();
    let (mut p, joined) = Client::join(&a, token, "P").await;
    let address = joined["address"].as_str().unwrap();
    let participants = format!("{path}/participants");
    let listed = call(&a, Method::GET, &participants).await;
    assert_eq!(listed.0, 200);
    assert_eq!(listed.1["data"][0]["address"], address);
    for other in [&b, &c] {
        assert_eq!(call(other, Method::GET, &participants).await, listed);
    }
    let (status, kicked) = call(&b, Method::DELETE, &format!("{participants}/{address}")).await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!(kicked["participant"]["address"], address);
    assert_eq!(p.expect("roomClosed").await["reason"], "kicked");
    p.expect_close(4013).await;
    assert_eq!(
        call(&c, Method::GET, &participants).await,
        (200, json!({"data": []}))
    );

    // Deleted from C; then every node answers as the owner would for a missing room.
    let (status, deleted) = call(&c, Method::DELETE, &path).await;
    assert_eq!((status, &deleted), (200, &json!({"room": on_a.1})));
    let gone_a = call(&a, Method::GET, &path).await;
    assert_eq!(gone_a.0, 404);
    assert_eq!(call(&b, Method::GET, &path).await, gone_a);
    let delete_again = call(&a, Method::DELETE, &path).await;
    assert_eq!(delete_again.0, 400);
    assert_eq!(call(&b, Method::DELETE, &path).await, delete_again);
    assert_eq!(holder(&redis, id), None);
    // B sent on the fetch, the list and the kick; a deleted room is nobody's, and every
    // node answers for it from the store.
    let answered = r#"convene_forwarded_requests_total{outcome="answered"}"#;
    assert_eq!(b.metric(answered).await, 3.0);
    assert_eq!(c.metric(answered).await, 4.0);
    assert_eq!(a.metric(answered).await, 0.0);
}

one_redis_and_cluster!(a_killed_owners_room_is_taken_over_by_the_next_node_asked);
async fn a_killed_owners_room_is_taken_over_by_the_next_node_asked(redis: SharedRedis) {
    let (mut a, b) = (node(&redis, "a", 1500), node(&redis, "b", 1500));
    let room = a.new_room(json!({"name": "orphan"})).await;
    let id = room["id"].as_str().unwrap().to_string();
    assert_eq!(holder(&redis, &id), Some((1, "a".to_string())));
    a.kill();

    // While A's lease lasts, B cannot reach the owner: 503, never a panic or a 404.
    let path = format!("/api/realtime/room/{id}");
    let deadline = std::time::Instant::now() + DEADLINE;
    let last = loop {
        let last = call(&b, Method::GET, &path).await;
        if last.0 == 200 {
            break last;
        }
        assert_eq!(last.0, 503, "{}", last.1);
        assert_eq!(last.1["code"], "BASE-00020");
        assert!(
            std::time::Instant::now() < deadline,
            "B never took the room over: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(last.1["id"], id.as_str());
    assert_eq!(last.1["name"], "orphan");
    // The fence rose: B holds the room under fence 2.
    assert_eq!(holder(&redis, &id), Some((2, "b".to_string())));
}

one_redis_and_cluster!(a_paused_owner_finds_its_room_taken_and_stops_it_without_writing);
async fn a_paused_owner_finds_its_room_taken_and_stops_it_without_writing(redis: SharedRedis) {
    let (a, b) = (node(&redis, "a", 1500), node(&redis, "b", 1500));
    let room = a.new_room(json!({"name": "paused"})).await;
    let id = room["id"].as_str().unwrap().to_string();
    let token = room["token"].as_str().unwrap();
    let (mut p, _) = Client::join(&a, token, "P").await;

    signal(&a, "STOP");
    // A cannot renew: its lease expires (Redis's clock), and B takes the room on a fetch.
    assert!(
        eventually(DEADLINE, || async { holder(&redis, &id).is_none() }).await,
        "A's lease never expired"
    );
    let path = format!("/api/realtime/room/{id}");
    assert!(
        eventually(DEADLINE, || async {
            call(&b, Method::GET, &path).await.0 == 200
        })
        .await,
        "B never took the room over"
    );
    assert_eq!(holder(&redis, &id), Some((2, "b".to_string())));
    let before = stored(&redis, &id);
    assert!(before.is_some());

    // A wakes up: its renewal (or its next write) is refused, and it stops the room,
    // closing the participant's socket with 1001 and a reason.
    signal(&a, "CONT");
    let reason = p.expect_close(1001).await;
    assert_eq!(reason, "room moved to another node");
    assert!(
        eventually(DEADLINE, || async {
            a.log_text().contains("room stopped on this node")
        })
        .await,
        "{} {}",
        a.log_text(),
        a.metrics_text().await
    );
    // A wrote nothing: the stored record is as B found it, B still owns the room, and
    // both nodes answer B's view of it.
    assert_eq!(stored(&redis, &id), before);
    assert_eq!(holder(&redis, &id), Some((2, "b".to_string())));
    let on_b = call(&b, Method::GET, &path).await;
    assert_eq!(on_b.0, 200);
    assert_eq!(call(&a, Method::GET, &path).await, on_b);
    assert_eq!(stored(&redis, &id), before);
}

one_redis_and_cluster!(an_owners_write_refused_as_stale_stops_the_room);
async fn an_owners_write_refused_as_stale_stops_the_room(redis: SharedRedis) {
    // A long lease: no renewal comes before the write below.
    let a = node(&redis, "a", 60_000);
    let room = a.new_room(json!({"name": "stolen"})).await;
    let id = room["id"].as_str().unwrap().to_string();
    assert_eq!(holder(&redis, &id), Some((1, "a".to_string())));
    // Another node takes the room behind A's back, as after an expiry: the fence rises.
    let mut conn = redis.conn();
    let fence: u64 = redis::cmd("INCR")
        .arg(format!("convene:{{room:{id}}}:fence"))
        .query(&mut *conn)
        .unwrap();
    assert_eq!(fence, 2);
    let () = redis::cmd("SET")
        .arg(format!("convene:{{room:{id}}}:lease"))
        .arg("2|ghost")
        .arg("PX")
        .arg(60_000)
        .query(&mut *conn)
        .unwrap();
    let before = stored(&redis, &id);

    // A join changes the participant count: A's write of it is refused, and A stops the
    // room at once, closing the socket.
    let (mut p, _) = Client::join(&a, room["token"].as_str().unwrap(), "P").await;
    assert_eq!(p.expect_close(1001).await, "room moved to another node");
    assert!(
        eventually(DEADLINE, || async {
            a.log_text().contains("a write was refused as stale")
        })
        .await,
        "{} {}",
        a.log_text(),
        a.metrics_text().await
    );
    assert_eq!(stored(&redis, &id), before, "A wrote nothing");
    // A does not start the room again: its owner (not a live node) cannot be reached.
    let (status, body) = call(&a, Method::GET, &format!("/api/realtime/room/{id}")).await;
    assert_eq!(
        (status, &body["code"]),
        (503, &json!("BASE-00020")),
        "{body}"
    );
    assert_eq!(holder(&redis, &id), Some((2, "ghost".to_string())));
    assert_eq!(a.metric("convene_rooms_lost_total").await, 1.0);
    assert_eq!(
        a.metric(r#"convene_forwarded_requests_total{outcome="unavailable"}"#)
            .await,
        1.0
    );
}

#[tokio::test]
async fn a_single_node_keeps_its_rooms_through_a_redis_outage_longer_than_the_lease() {
    // The default (no `cluster`), with the shortest lease time: no lease is taken at all.
    let Some(app) =
        TestApp::spawn_with_own_redis(Options::default().env("CONVENE_ROOM_LEASE_MS", 300)).await
    else {
        return;
    };
    let redis = app.redis.as_ref().unwrap();
    let room = app.new_room(json!({"name": "alone"})).await;
    let id = room["id"].as_str().unwrap().to_string();
    let (mut p, _) = Client::join(&app, room["token"].as_str().unwrap(), "P").await;
    let lease = || -> Option<String> {
        redis::cmd("GET")
            .arg(format!("convene:{{room:{id}}}:lease"))
            .query(&mut redis.conn())
            .unwrap()
    };
    assert_eq!(lease(), None, "no lease without cluster");

    // Redis is away for ten lease times: the socket stays open, the room is served.
    redis.freeze();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    p.assert_alive().await;
    let path = format!("/api/realtime/room/{id}");
    assert_eq!(call(&app, Method::GET, &path).await.0, 200);
    redis.thaw();
    p.assert_alive().await;
    assert_eq!(call(&app, Method::GET, &path).await.0, 200);
    assert_eq!(lease(), None);
    assert_eq!(app.metric("convene_rooms_lost_total").await, 0.0);
    assert!(!app.log_text().contains("room stopped on this node"));
}

/// A node with limits (`CONVENE_NODE_MAX_ROOMS`).
fn node_with_max_rooms(redis: &SharedRedis, id: &str, max_rooms: u64) -> TestApp {
    TestApp::spawn_on(
        &redis.url(),
        redis
            .options()
            .env("CONVENE_CLUSTER", 1)
            .env("CONVENE_NODE_ID", id)
            .env("CONVENE_NODE_MAX_ROOMS", max_rooms),
    )
}

one_redis_and_cluster!(new_rooms_go_to_the_least_loaded_node_and_a_full_node_takes_no_more);
async fn new_rooms_go_to_the_least_loaded_node_and_a_full_node_takes_no_more(redis: SharedRedis) {
    let a = node_with_max_rooms(&redis, "a", 2);
    // Alone, A takes its rooms up to its limit.
    let first = a.new_room(json!({"name": "first"})).await;
    let first_id = first["id"].as_str().unwrap();
    assert_eq!(holder(&redis, first_id), Some((1, "a".to_string())));
    let second = a.new_room(json!({"name": "second"})).await;
    assert_eq!(
        holder(&redis, second["id"].as_str().unwrap()),
        Some((1, "a".to_string()))
    );
    // A participant on A: its load is now 3 (two rooms and a participant).
    let (_p, _) = Client::join(&a, first["token"].as_str().unwrap(), "P").await;

    // At its limit and alone: a third room is refused, and nothing is stored.
    let refused = a.create_room(json!({"name": "third"})).await;
    assert_error(
        refused,
        503,
        "BASE-00020",
        Some("SERVICE_UNAVAILABLE"),
        "The service is temporarily unavailable. Try again later.",
    )
    .await;
    let listed = json_ok(a.list("").await).await;
    assert_eq!(listed["data"].as_array().unwrap().len(), 2, "{listed}");

    // B joins: a room created on A goes to B, which starts it at once; A answers for it.
    let mut b = node(&redis, "b", 5000);
    let third = a.new_room(json!({"name": "third"})).await;
    let third_id = third["id"].as_str().unwrap().to_string();
    assert_eq!(holder(&redis, &third_id), Some((1, "b".to_string())));
    let path = format!("/api/realtime/room/{third_id}");
    let on_b = call(&b, Method::GET, &path).await;
    assert_eq!(on_b.0, 200);
    assert_eq!(call(&a, Method::GET, &path).await, on_b);
    let started = r#"convene_rooms_placed_elsewhere_total{outcome="started"}"#;
    assert_eq!(a.metric(started).await, 1.0);

    // Without limits, the least loaded wins: C (empty) gets B's next room.
    let c = node(&redis, "c", 5000);
    let fourth = b.new_room(json!({"name": "fourth"})).await;
    assert_eq!(
        holder(&redis, fourth["id"].as_str().unwrap()),
        Some((1, "c".to_string()))
    );

    // B leaves cleanly: it drains, handing its room to C (the only other node under its
    // limits), not to A, which is full; A answers for it, forwarded to C.
    assert!(b.stop().is_some_and(|s| s.success()));
    assert_eq!(holder(&redis, &third_id), Some((2, "c".to_string())));
    let on_a = call(&a, Method::GET, &path).await;
    assert_eq!(on_a, on_b);
    assert_eq!(holder(&redis, &third_id), Some((2, "c".to_string())));
    assert_eq!(call(&c, Method::GET, &path).await, on_b);
}
