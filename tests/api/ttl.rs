//! Lifetimes: rooms disappear `roomTTLSeconds` after creation (from the API and from
//! Redis), and expired room tokens are replaced by fresh ones.

use crate::both_stores;
use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

fn ttl_options() -> Options {
    Options::default()
        .env("CONVENE_ROOM_TTL_SECONDS", 2)
        .env("CONVENE_STORE_SWEEP_INTERVAL_SECONDS", 1)
}

async fn listed_ids(app: &TestApp) -> Vec<String> {
    let list = json_ok(app.list("?numberOfRecords=100").await).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

async fn is_gone(app: &TestApp, id: &str) -> bool {
    app.get_room(id).await.status() == 404 && !listed_ids(app).await.iter().any(|i| i == id)
}

both_stores!(rooms_expire, ttl_options(), |app: TestApp| async move {
    let room = app.new_room(json!({"name": "brief"})).await;
    assert_eq!(room["roomTTLSeconds"], 2);
    let id = room["id"].as_str().unwrap().to_string();
    assert_eq!(json_ok(app.get_room(&id).await).await, room);
    assert_eq!(listed_ids(&app).await, [id.as_str()]);

    let expires_at = room["creationTime"].as_u64().unwrap() + 2000;
    assert!(
        eventually(Duration::from_secs(10), || is_gone(&app, &id)).await,
        "the room is still there 10 s after it was created"
    );
    // Not before its time.
    assert!(now_ms() >= expires_at);
    assert_error(
        app.get_room(&id).await,
        404,
        "REALTIME-00004",
        Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
        &format!("A conference room with id ::= [{id}] does not exist."),
    )
    .await;
    assert_error(
        app.delete_room(&id).await,
        400,
        "REALTIME-00004",
        Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
        &format!("A conference room with id ::= [{id}] does not exist."),
    )
    .await;
    assert_eq!(json_ok(app.list("").await).await, json!({"data": []}));
    // New rooms still work.
    let fresh = app.new_room(json!({})).await;
    assert_eq!(listed_ids(&app).await, [fresh["id"].as_str().unwrap()]);
});

/// Every Redis trace of a room, under the default prefix: its key and its index entries.
fn redis_traces(app: &TestApp, id: &str) -> Vec<String> {
    let mut conn = app.redis.as_ref().unwrap().conn();
    let mut traces = Vec::new();
    let key = format!("convene:{{room:{id}}}");
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    if exists {
        traces.push(key);
    }
    for index in ["convene:{rooms}", "convene:{rooms}:expiry"] {
        let members: Vec<String> = redis::cmd("ZRANGE")
            .arg(index)
            .arg(0)
            .arg(-1)
            .query(&mut conn)
            .unwrap();
        traces.extend(
            members
                .into_iter()
                .filter(|m| m.ends_with(id))
                .map(|m| format!("{index} {m}")),
        );
    }
    traces
}

#[tokio::test]
async fn expired_rooms_leave_nothing_in_redis() {
    let Some(app) = TestApp::spawn_with_own_redis(ttl_options()).await else {
        return;
    };
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap().to_string();
    let created = room["creationTime"].as_u64().unwrap();
    let member = format!("{created:013}|{id}");
    assert_eq!(
        redis_traces(&app, &id),
        [
            format!("convene:{{room:{id}}}"),
            format!("convene:{{rooms}} {member}"),
            format!("convene:{{rooms}}:expiry {member}"),
        ]
    );
    // The key expires by itself when the room does.
    let mut conn = app.redis.as_ref().unwrap().conn();
    let expire_at: i64 = redis::cmd("PEXPIRETIME")
        .arg(format!("convene:{{room:{id}}}"))
        .query(&mut conn)
        .unwrap();
    assert_eq!(expire_at, (created + 2000) as i64);
    let score: f64 = redis::cmd("ZSCORE")
        .arg("convene:{rooms}:expiry")
        .arg(&member)
        .query(&mut conn)
        .unwrap();
    assert_eq!(score, (created + 2000) as f64);

    assert!(
        eventually(Duration::from_secs(10), || async {
            redis_traces(&app, &id).is_empty()
        })
        .await,
        "still in Redis: {:?}",
        redis_traces(&app, &id)
    );
    assert!(is_gone(&app, &id).await);
}

#[tokio::test]
async fn expired_rooms_do_not_come_back_after_a_restart() {
    // Sweeps an hour apart: only the start-up itself can clean the expired room up.
    let options = Options::default()
        .env("CONVENE_ROOM_TTL_SECONDS", 2)
        .env("CONVENE_STORE_SWEEP_INTERVAL_SECONDS", 3600);
    let Some(mut app) = TestApp::spawn_with(Backend::Redis, options).await else {
        return;
    };
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap().to_string();
    app.stop();
    // While the service is down, Redis drops the room's key at its expiry (`PXAT`); the index
    // entries stay, since no sweep runs.
    let keys = |pattern: String| {
        let mut conn = app.redis_conn();
        let keys: Vec<String> = redis::cmd("KEYS").arg(pattern).query(&mut conn).unwrap();
        keys
    };
    assert_eq!(keys(format!("*{{room:{id}}}")).len(), 1);
    assert!(
        eventually(Duration::from_secs(10), || async {
            keys(format!("*{{room:{id}}}")).is_empty()
        })
        .await,
        "the room's key outlived its expiry"
    );
    assert!(room["creationTime"].as_u64().unwrap() + 2000 <= now_ms());
    app.restart();
    assert_eq!(app.get_room(&id).await.status(), 404);
    assert_eq!(json_ok(app.list("").await).await, json!({"data": []}));
}

/// Waits until a JWT verifier (leeway 0) refuses `token` as expired.
async fn wait_until_expired(token: &str) {
    assert!(jwt_verifies(token, TOKEN_SECRET), "valid to begin with");
    assert!(
        eventually(Duration::from_secs(5), || async {
            !jwt_verifies(token, TOKEN_SECRET)
        })
        .await,
        "{token} still verifies"
    );
}

/// The room's token is a fresh one: another token than `old`, for this room, valid now.
fn assert_fresh_token(room: &Value, old: &str) {
    let token = room["token"].as_str().unwrap();
    assert_ne!(token, old, "the expired token was not replaced");
    let claims = jwt_claims(token);
    assert_eq!(claims["sub"], room["id"]);
    let (iat, exp) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
    );
    assert_eq!(exp, iat + 2);
    assert!(exp * 1000 > now_ms(), "exp {exp} is not in the future");
    assert!(jwt_verifies(token, TOKEN_SECRET));
}

both_stores!(
    expired_tokens_are_replaced,
    Options::default().env("CONVENE_ROOM_TOKEN_TTL_SECONDS", 2),
    |app: TestApp| async move {
        let room = app.new_room(json!({"name": "tokens"})).await;
        assert_eq!(room["roomTokenTTLSeconds"], 2);
        let id = room["id"].as_str().unwrap().to_string();
        let old = room["token"].as_str().unwrap().to_string();
        wait_until_expired(&old).await;

        let fetched = json_ok(app.get_room(&id).await).await;
        assert_fresh_token(&fetched, &old);
        // Everything else is unchanged.
        let mut same = fetched.clone();
        same["token"] = room["token"].clone();
        assert_eq!(same, room);

        let list = json_ok(app.list("").await).await;
        let listed = &list["data"][0];
        assert_eq!(listed["id"], room["id"]);
        assert_fresh_token(listed, &old);

        // And again once the replacement has expired too.
        let second = fetched["token"].as_str().unwrap().to_string();
        wait_until_expired(&second).await;
        assert_fresh_token(&json_ok(app.get_room(&id).await).await, &second);
        let list = json_ok(app.list("").await).await;
        assert_fresh_token(&list["data"][0], &second);
    }
);
