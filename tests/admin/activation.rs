//! Rooms are activated on demand: a room's actor starts on its first use and stops
//! (passivates) after `room_idle_seconds` with nobody joined; the room stays in the store.
//! Passivation is observed through the `convene_rooms` gauges (active rooms), never a sleep.

use crate::both_stores;
use crate::support::*;
use crate::ws::{Client, Incoming};
use reqwest::Method;
use serde_json::{Value, json};
use std::collections::HashSet;
use std::time::Duration;

async fn wait_for_active_rooms(app: &TestApp, n: u64) {
    assert!(
        eventually(Duration::from_secs(20), || async {
            app.active_rooms().await == n
        })
        .await,
        "active rooms never became {n} (now {})",
        app.active_rooms().await
    );
}

/// The rooms of a new admin stream's snapshot, by id.
async fn snapshot_ids(app: &TestApp) -> Vec<Value> {
    let mut s = Client::stream(app, None).await;
    let snapshot = s.expect("snapshot").await;
    snapshot["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect()
}

fn idle_one_second() -> Options {
    Options::default().env("CONVENE_ROOM_IDLE_SECONDS", 1)
}

both_stores!(
    a_passivated_room_comes_back_on_each_kind_of_use,
    idle_one_second(),
    |app: TestApp| async move {
        let room = app.new_room(json!({"name": "Idle"})).await;
        let id = room["id"].as_str().unwrap().to_string();
        let token = room["token"].as_str().unwrap().to_string();
        assert_eq!(snapshot_ids(&app).await, vec![room["id"].clone()]);

        // Unused, it passivates: out of the admin snapshot, still in the store.
        wait_for_active_rooms(&app, 0).await;
        assert_eq!(snapshot_ids(&app).await, Vec::<Value>::new());
        let list = json_ok(app.list("").await).await;
        assert_eq!(list["data"], json!([room]));

        // A fetch activates it, from the stored record.
        assert_eq!(json_ok(app.get_room(&id).await).await, room);
        assert_eq!(app.active_rooms().await, 1);
        assert_eq!(snapshot_ids(&app).await, vec![room["id"].clone()]);
        wait_for_active_rooms(&app, 0).await;

        // So does the participants list, and a kick.
        assert_eq!(
            json_ok(app.participants(&id).await).await,
            json!({"data": []})
        );
        wait_for_active_rooms(&app, 0).await;
        let res = app
            .request(
                Method::DELETE,
                &format!("/api/realtime/room/{id}/participants/PA-nobody"),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], "REALTIME-00011", "{body}");
        wait_for_active_rooms(&app, 0).await;

        // And a join: one actor, so the second participant sees the first.
        let (mut a, joined_a) = Client::join(&app, &token, "A").await;
        assert_eq!(joined_a["room"]["id"], room["id"]);
        let (mut b, joined_b) = Client::join(&app, &token, "B").await;
        assert_eq!(joined_b["participants"][0]["address"], joined_a["address"]);
        a.expect("participantJoined").await;
        a.send(json!({"type": "leave"})).await;
        a.expect_close(1000).await;
        b.expect("participantLeft").await;
        b.send(json!({"type": "leave"})).await;
        b.expect_close(1000).await;

        // Nobody left: it passivates again, and a delete activates it to delete it.
        wait_for_active_rooms(&app, 0).await;
        let deleted = json_ok(app.delete_room(&id).await).await;
        assert_eq!(deleted["room"]["id"], room["id"]);
        // Deleted rooms are not activated again.
        assert_eq!(app.get_room(&id).await.status(), 404);
        assert_eq!(app.delete_room(&id).await.status(), 400);
        assert_eq!(app.participants(&id).await.status(), 404);
        let mut c = Client::connect(&app).await;
        c.send(json!({"type": "join", "token": token})).await;
        c.expect_error("REALTIME-00004", Some("CONFERENCE_ROOM_DOES_NOT_EXIST"))
            .await;
        c.expect_close(4004).await;
        assert_eq!(app.active_rooms().await, 0);
    }
);

both_stores!(
    a_room_that_expires_without_an_actor_is_gone,
    idle_one_second().env("CONVENE_ROOM_TTL_SECONDS", 3),
    |app: TestApp| async move {
        let room = app.new_room(json!({"name": "Short"})).await;
        let id = room["id"].as_str().unwrap().to_string();
        wait_for_active_rooms(&app, 0).await;
        // The list reads the store without activating anything: wait for it to drop the room.
        assert!(
            eventually(Duration::from_secs(20), || async {
                json_ok(app.list("").await).await["data"] == json!([])
            })
            .await
        );
        assert_eq!(app.active_rooms().await, 0, "the list activated a room");
        assert_eq!(app.get_room(&id).await.status(), 404);
        assert_eq!(app.delete_room(&id).await.status(), 400);
        let mut c = Client::connect(&app).await;
        c.send(json!({"type": "join", "token": room["token"]}))
            .await;
        c.expect_error("REALTIME-00004", Some("CONFERENCE_ROOM_DOES_NOT_EXIST"))
            .await;
        assert_eq!(
            c.next().await,
            Incoming::Closed(4004, "conference_room_does_not_exist".into())
        );
        assert_eq!(app.active_rooms().await, 0);
    }
);

#[tokio::test]
async fn after_a_restart_rooms_are_stored_but_not_active_until_used() {
    let Some(mut app) = TestApp::spawn(Backend::Redis).await else {
        return;
    };
    let room = app.new_room(json!({"name": "Kept"})).await;
    let id = room["id"].as_str().unwrap().to_string();
    app.restart();
    assert_eq!(app.active_rooms().await, 0);
    assert_eq!(snapshot_ids(&app).await, Vec::<Value>::new());
    assert_eq!(json_ok(app.list("").await).await["data"], json!([room]));
    assert_eq!(app.active_rooms().await, 0, "the list activated a room");
    assert_eq!(json_ok(app.get_room(&id).await).await, room);
    assert_eq!(app.active_rooms().await, 1);
    assert_eq!(snapshot_ids(&app).await, vec![room["id"].clone()]);
}

#[tokio::test]
async fn fifty_concurrent_first_joins_make_one_actor() {
    let Some(mut app) = TestApp::spawn_with(
        Backend::Redis,
        Options::default().env("CONVENE_MESH_MAX_PARTICIPANTS", 20),
    )
    .await
    else {
        return;
    };
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap().to_string();
    let token = room["token"].as_str().unwrap().to_string();
    // A fresh service on the same Redis: the room has no actor.
    app.restart();
    assert_eq!(app.active_rooms().await, 0);

    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(Client::connect(&app).await);
    }
    let joins = clients.into_iter().map(|mut c| {
        let token = token.clone();
        tokio::spawn(async move {
            c.send(json!({"type": "join", "token": token})).await;
            let first = c.recv().await;
            if first["type"] == "joined" {
                Some((first, c))
            } else {
                assert_eq!(first["id"], "CONFERENCE_ROOM_FULL", "{first}");
                c.expect_close(4009).await;
                None
            }
        })
    });
    let results = futures_util::future::join_all(joins).await;
    let admitted: Vec<(Value, Client)> = results.into_iter().filter_map(|r| r.unwrap()).collect();
    assert_eq!(admitted.len(), 20);
    // One actor seated them one at a time: each saw everyone seated before it.
    let mut seen: Vec<usize> = admitted
        .iter()
        .map(|(joined, _)| joined["participants"].as_array().unwrap().len())
        .collect();
    seen.sort();
    assert_eq!(seen, (0..20).collect::<Vec<_>>());
    let addresses: HashSet<String> = admitted
        .iter()
        .map(|(joined, _)| joined["address"].as_str().unwrap().to_string())
        .collect();
    let listed: HashSet<String> = json_ok(app.participants(&id).await).await["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["address"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, addresses);
    assert_eq!(app.active_rooms().await, 1);
}

#[tokio::test]
async fn a_join_that_needs_activation_while_redis_is_down_is_503_and_going_away() {
    let Some(mut app) = TestApp::spawn_with_own_redis(Options::default()).await else {
        return;
    };
    let room = app.new_room(json!({"name": "outage"})).await;
    let token = room["token"].as_str().unwrap().to_string();
    // A fresh service: the room is stored but has no actor.
    app.restart();
    assert_eq!(app.active_rooms().await, 0);
    app.redis.as_mut().unwrap().kill();

    let mut c = Client::connect(&app).await;
    c.send(json!({"type": "join", "token": token})).await;
    c.expect_error("BASE-00020", Some("SERVICE_UNAVAILABLE"))
        .await;
    assert_eq!(c.expect_close(1001).await, "service_unavailable");
    assert_eq!(app.active_rooms().await, 0);

    // Once Redis is back, the same token joins: the room is activated then.
    app.redis.as_mut().unwrap().restart();
    assert!(
        eventually(Duration::from_secs(15), || async {
            let mut c = Client::connect(&app).await;
            c.send(json!({"type": "join", "token": token})).await;
            c.recv().await["type"] == "joined"
        })
        .await,
        "no join after Redis came back"
    );
    assert_eq!(app.active_rooms().await, 1);
}
