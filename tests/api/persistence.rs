//! The Redis store keeps rooms across restarts of the service and of Redis itself.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;

async fn create_mixed_rooms(app: &TestApp) -> Vec<Value> {
    let mut rooms = Vec::new();
    for body in [
        json!({}),
        json!({"name": "Room A", "description": "My room description",
            "conferenceType": "MESH", "autoUpgradeParticipantCount": "4"}),
        json!({"name": "Big", "conferenceType": "sfu", "autoUpgradeParticipantCount": 3}),
        json!({"name": "ünïcödé 😀", "conferenceType": "SFU"}),
        json!({"description": "only a description", "autoUpgradeParticipantCount": 7}),
    ] {
        rooms.push(app.new_room(body).await);
    }
    rooms
}

async fn full_list(app: &TestApp) -> Value {
    json_ok(app.list("?numberOfRecords=100").await).await
}

async fn assert_rooms_intact(app: &TestApp, rooms: &[Value], list: &Value) {
    for room in rooms {
        let id = room["id"].as_str().unwrap();
        assert_eq!(&json_ok(app.get_room(id).await).await, room, "{id}");
    }
    assert_eq!(&full_list(app).await, list, "same rooms in the same order");
}

#[tokio::test]
async fn rooms_survive_a_service_restart() {
    let Some(mut app) = TestApp::spawn(Backend::Redis).await else {
        return;
    };
    let rooms = create_mixed_rooms(&app).await;
    let gone = app
        .new_room(json!({"name": "deleted before the restart"}))
        .await;
    assert_eq!(
        app.delete_room(gone["id"].as_str().unwrap()).await.status(),
        200
    );
    let list = full_list(&app).await;
    assert_eq!(list["data"].as_array().unwrap().len(), rooms.len());
    let first_page = json_ok(app.list("?numberOfRecords=2").await).await;
    let token = first_page["token"].as_str().unwrap().to_string();
    let second_page = json_ok(app.list(&format!("?numberOfRecords=2&token={token}")).await).await;

    app.restart();
    assert_rooms_intact(&app, &rooms, &list).await;
    // A paging token issued before the restart still works.
    assert_eq!(
        json_ok(app.list(&format!("?numberOfRecords=2&token={token}")).await).await,
        second_page
    );
    let gone_id = gone["id"].as_str().unwrap();
    assert_eq!(app.get_room(gone_id).await.status(), 404);
    assert_eq!(app.delete_room(gone_id).await.status(), 400);

    // Rooms deleted after the restart stay deleted after the next one.
    let first = rooms[0]["id"].as_str().unwrap();
    assert_eq!(app.delete_room(first).await.status(), 200);
    let list = full_list(&app).await;
    app.restart();
    assert_rooms_intact(&app, &rooms[1..], &list).await;
    assert_eq!(app.get_room(first).await.status(), 404);
    // And new rooms still go to the top.
    let newest = app.new_room(json!({"name": "after"})).await;
    assert_eq!(full_list(&app).await["data"][0], newest);
}

#[tokio::test]
async fn rooms_survive_a_redis_restart() {
    let Some(mut app) = TestApp::spawn_with_own_redis(Options::default()).await else {
        return;
    };
    let rooms = create_mixed_rooms(&app).await;
    let list = full_list(&app).await;

    app.redis.as_mut().unwrap().restart();
    // The service reconnects by itself; the list comes from Redis.
    assert!(
        eventually(Duration::from_secs(10), || async {
            app.list("?numberOfRecords=100").await.status() == 200
        })
        .await
    );
    assert_rooms_intact(&app, &rooms, &list).await;
    let newer = app
        .new_room(json!({"name": "after the Redis restart"}))
        .await;

    // The data really is in Redis: a fresh service finds it there.
    app.restart();
    assert_rooms_intact(&app, &rooms, &full_list(&app).await).await;
    let list_after = full_list(&app).await;
    assert_eq!(list_after["data"][0], newer);
    assert_eq!(
        list_after["data"].as_array().unwrap()[1..],
        list["data"].as_array().unwrap()[..]
    );
}

#[tokio::test]
async fn tokens_follow_a_new_secret_after_a_restart() {
    let Some(mut app) = TestApp::spawn(Backend::Redis).await else {
        return;
    };
    let room = app.new_room(json!({"name": "secret"})).await;
    let id = room["id"].as_str().unwrap().to_string();
    let old = room["token"].as_str().unwrap().to_string();

    let other = "a-rotated-token-secret-of-32-bytes-or-more";
    let mut options = app.options().clone();
    options
        .env
        .push(("CONVENE_TOKEN_SECRET".into(), other.into()));
    app.restart_with(options);

    // Every room response carries a token that is valid at that moment: signed with the
    // secret the service now has.
    let fetched = json_ok(app.get_room(&id).await).await;
    let token = fetched["token"].as_str().unwrap();
    assert_ne!(token, old);
    assert!(jwt_verifies(token, other), "GET: {token}");
    let list = full_list(&app).await;
    let listed = list["data"][0]["token"].as_str().unwrap();
    assert!(
        jwt_verifies(listed, other),
        "the list answers a token signed with the old secret: {listed}"
    );
    let deleted = json_ok(app.delete_room(&id).await).await;
    let token = deleted["room"]["token"].as_str().unwrap();
    assert!(jwt_verifies(token, other), "DELETE: {token}");
}

#[tokio::test]
async fn rooms_live_on_a_redis_cluster_across_restarts() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let options = Options::default().env("CONVENE_REDIS_CLUSTER", "1");
    // One seed node is enough for the service to find the others.
    let mut app = TestApp::spawn_on(&cluster.urls()[1], options.clone());
    let rooms = create_mixed_rooms(&app).await;
    let gone = app.new_room(json!({"name": "deleted"})).await;
    assert_eq!(
        app.delete_room(gone["id"].as_str().unwrap()).await.status(),
        200
    );
    let list = full_list(&app).await;
    assert_eq!(list["data"].as_array().unwrap().len(), rooms.len());
    let ready = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    // Every node of the cluster as seeds this time.
    app.stop();
    let app = TestApp::spawn_on(&cluster.url_setting(), options);
    assert_rooms_intact(&app, &rooms, &list).await;
    assert_eq!(
        app.get_room(gone["id"].as_str().unwrap()).await.status(),
        404
    );
    for room in &rooms {
        let id = room["id"].as_str().unwrap();
        assert_eq!(app.delete_room(id).await.status(), 200, "{id}");
    }
    assert_eq!(full_list(&app).await, json!({"data": []}));
}
