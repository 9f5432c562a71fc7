//! Redis faults: a dead or frozen Redis turns writes into 503 `BASE-00020` within 2 s,
//! reads of live rooms keep working, readiness follows Redis, and everything recovers.

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// The contract: a request that needs an unavailable store answers 503 within 2 s.
const WITHIN: Duration = Duration::from_secs(2);

async fn assert_unavailable(res: reqwest::Response) {
    assert_error(
        res,
        503,
        "BASE-00020",
        Some("SERVICE_UNAVAILABLE"),
        "The service is temporarily unavailable. Try again later.",
    )
    .await;
}

/// Sends the request and asserts a 503 `BASE-00020` that came within 2 s.
async fn assert_unavailable_in_time(req: reqwest::RequestBuilder, what: &str) {
    let started = Instant::now();
    let res = req.send().await.unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < WITHIN, "{what} took {elapsed:?}");
    assert_unavailable(res).await;
}

fn post(app: &TestApp) -> reqwest::RequestBuilder {
    app.request(Method::POST, "/api/realtime/room")
        .header("content-type", "application/json")
        .body(r#"{"name": "during the outage"}"#)
}

fn delete_query(app: &TestApp, id: &str) -> reqwest::RequestBuilder {
    app.request(Method::DELETE, &format!("/api/realtime/room?id={id}"))
}

fn delete_path(app: &TestApp, id: &str) -> reqwest::RequestBuilder {
    app.request(Method::DELETE, &format!("/api/realtime/room/{id}"))
}

fn id(room: &Value) -> &str {
    room["id"].as_str().unwrap()
}

async fn listed_ids(app: &TestApp) -> HashSet<String> {
    let list = json_ok(app.list("?numberOfRecords=100").await).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

async fn health(app: &TestApp) -> Value {
    json_ok(app.client.get(app.url("/healthz")).send().await.unwrap()).await
}

async fn ready(app: &TestApp) -> bool {
    app.client
        .get(app.url("/readyz"))
        .send()
        .await
        .is_ok_and(|r| r.status() == 200)
}

/// Waits until a create works again; answers the room it created.
async fn wait_for_recovery(app: &TestApp) -> Value {
    let created = std::cell::RefCell::new(None);
    let recovered = eventually(Duration::from_secs(15), || async {
        let res = post(app).send().await.unwrap();
        if res.status() != 200 {
            return false;
        }
        *created.borrow_mut() = Some(res.json::<Value>().await.unwrap()["room"].clone());
        true
    })
    .await;
    assert!(recovered, "creating rooms did not work again within 15 s");
    created.into_inner().unwrap()
}

/// What every outage looks like from outside, for `a` and `b`, two live rooms.
async fn assert_outage(app: &TestApp, a: &Value, b: &Value) {
    for _ in 0..3 {
        assert_unavailable_in_time(post(app), "POST").await;
    }
    assert_unavailable_in_time(delete_query(app, id(a)), "DELETE ?id=").await;
    assert_unavailable_in_time(delete_path(app, id(b)), "DELETE /{id}").await;
    assert_unavailable_in_time(app.request(Method::GET, "/api/realtime/room"), "list").await;
    // Active rooms are served from memory.
    for room in [a, b] {
        assert_eq!(&json_ok(app.get_room(id(room)).await).await, room);
    }
    // A room without an actor would be activated from the store, which cannot answer:
    // without it the service cannot tell an unknown room from a stored one.
    assert_unavailable_in_time(
        app.request(
            Method::GET,
            "/api/realtime/room/RO-00000000-0000-4000-8000-000000000000",
        ),
        "GET an unknown room",
    )
    .await;
    assert_eq!(health(app).await, json!({"status": "ok"}));
    assert_unavailable_in_time(app.client.get(app.url("/readyz")), "readyz").await;
}

/// After an outage: `a` and `b` (whose deletes failed) are still there, everywhere.
async fn assert_recovered(app: &TestApp, a: &Value, b: &Value) {
    let created = wait_for_recovery(app).await;
    assert!(eventually(Duration::from_secs(10), || ready(app)).await);
    let listed = listed_ids(app).await;
    for room in [a, b, &created] {
        assert_eq!(&json_ok(app.get_room(id(room)).await).await, room);
        assert!(listed.contains(id(room)), "{} is not listed", id(room));
    }
}

#[tokio::test]
async fn killed_redis() {
    let Some(mut app) = TestApp::spawn_with_own_redis(Options::default()).await else {
        return;
    };
    let a = app.new_room(json!({"name": "a"})).await;
    let b = app
        .new_room(json!({"name": "b", "conferenceType": "SFU"}))
        .await;

    app.redis.as_mut().unwrap().kill();
    assert_outage(&app, &a, &b).await;

    app.redis.as_mut().unwrap().restart();
    assert_recovered(&app, &a, &b).await;
    // The deletes that failed can be done now.
    assert_eq!(
        json_ok(delete_query(&app, id(&a)).send().await.unwrap()).await,
        json!({"room": a})
    );
    assert_eq!(
        json_ok(delete_path(&app, id(&b)).send().await.unwrap()).await,
        json!({"room": b})
    );
    assert!(!listed_ids(&app).await.contains(id(&a)));
}

#[tokio::test]
async fn frozen_redis() {
    let Some(app) = TestApp::spawn_with_own_redis(Options::default()).await else {
        return;
    };
    let a = app.new_room(json!({"name": "a"})).await;
    let b = app.new_room(json!({"name": "b"})).await;

    app.redis.as_ref().unwrap().freeze();
    assert_outage(&app, &a, &b).await;

    app.redis.as_ref().unwrap().thaw();
    let created = wait_for_recovery(&app).await;
    assert!(eventually(Duration::from_secs(10), || ready(&app)).await);
    for room in [&a, &b, &created] {
        assert_eq!(&json_ok(app.get_room(id(room)).await).await, room);
    }
}

#[tokio::test]
async fn a_503_leaves_no_trace_once_redis_thaws() {
    let Some(mut app) = TestApp::spawn_with_own_redis(Options::default()).await else {
        return;
    };
    let a = app.new_room(json!({"name": "a"})).await;
    let b = app.new_room(json!({"name": "b"})).await;

    // While Redis is frozen, the writes answer 503 (three creates, two deletes)…
    app.redis.as_ref().unwrap().freeze();
    assert_outage(&app, &a, &b).await;
    app.redis.as_ref().unwrap().thaw();
    let created = wait_for_recovery(&app).await;

    // …and a 503 means that nothing happened: the rooms whose delete failed still exist,
    // in the list too, and no create that failed shows up as a room, now or after a
    // restart.
    let expected: HashSet<String> = [&a, &b, &created].map(|r| id(r).to_string()).into();
    let mut wrong = Vec::new();
    let listed = listed_ids(&app).await;
    for room in [&a, &b, &created] {
        let status = app.get_room(id(room)).await.status();
        if status != 200 {
            wrong.push(format!("GET {} answers {status}", id(room)));
        }
        if !listed.contains(id(room)) {
            wrong.push(format!("{} is not listed", id(room)));
        }
    }
    for extra in listed.difference(&expected) {
        let status = app.get_room(extra).await.status();
        wrong.push(format!("{extra} is listed (GET answers {status})"));
    }
    app.restart();
    let after_restart = listed_ids(&app).await;
    if after_restart != expected {
        wrong.push(format!(
            "after a restart: missing {:?}, extra {:?}",
            expected.difference(&after_restart).collect::<Vec<_>>(),
            after_restart.difference(&expected).collect::<Vec<_>>()
        ));
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
}
