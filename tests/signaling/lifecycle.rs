use crate::support::*;
use crate::ws::{Client, Incoming, Pair};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

async fn app_with(options: Options) -> TestApp {
    TestApp::spawn_with(Backend::Memory, options).await.unwrap()
}

#[tokio::test]
async fn a_silent_client_is_dropped_after_the_timeout_and_the_grace_period() {
    let app = app_with(
        Options::default()
            .env("CONVENE_SIGNALING_PING_INTERVAL_MS", "100")
            .env("CONVENE_SIGNALING_CLIENT_TIMEOUT_MS", "400")
            .env("CONVENE_SIGNALING_RESUME_GRACE_MS", "200"),
    )
    .await;
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    // B never reads again, so it never answers the server's pings.
    let (b, joined_b) = Client::join(&app, token, "B").await;
    a.expect("participantJoined").await;
    // A reads (and so answers pings) while it waits.
    let left = a.expect("participantLeft").await;
    assert_eq!(left["address"], joined_b["address"]);
    assert_eq!(left["reason"], "disconnected");
    a.assert_alive().await;
    // What B would have read: pings it never answered, then the close for the timeout.
    let mut b = b;
    b.expect_close(4015).await;
}

async fn participants(app: &TestApp, room: &Value) -> Vec<Value> {
    let res = app.participants(room["id"].as_str().unwrap()).await;
    json_ok(res).await["data"].as_array().unwrap().clone()
}

#[tokio::test]
async fn a_dropped_participant_resumes_with_its_address_and_nobody_sees_it_leave() {
    const GRACE_MS: u64 = 1500;
    let app = app_with(
        Options::default()
            .env("CONVENE_SIGNALING_RESUME_GRACE_MS", GRACE_MS)
            .env("CONVENE_MESH_MAX_PARTICIPANTS", "2"),
    )
    .await;
    let Pair {
        room,
        mut a,
        joined_a,
        b,
        joined_b,
        ..
    } = Pair::join(&app).await;
    let token = room["token"].as_str().unwrap();
    b.drop_connection();
    // The server has seen the drop: B keeps its seat, without a socket.
    let seen = eventually(Duration::from_secs(5), || async {
        participants(&app, &room)
            .await
            .iter()
            .any(|p| p["address"] == joined_b["address"] && p["connected"] == false)
    })
    .await;
    assert!(seen, "the server never noticed the dropped connection");
    let dropped_by = Instant::now();
    // B still exists while it waits: a signal to it is no error (it is lost).
    a.send(json!({"type": "signal", "to": joined_b["address"], "data": "lost"}))
        .await;
    a.send(json!({"type": "ping"})).await;
    a.expect("pong").await;
    // The seat is kept: a newcomer finds the room full.
    let mut c = Client::connect(&app).await;
    c.send(json!({"type": "join", "token": token})).await;
    c.expect_error("REALTIME-00010", Some("CONFERENCE_ROOM_FULL"))
        .await;
    c.expect_close(4009).await;

    let mut b = Client::connect(&app).await;
    b.send(json!({"type": "join", "token": token, "resume": joined_b["resumeToken"]}))
        .await;
    let resumed = b.expect("joined").await;
    assert!(
        dropped_by.elapsed() < Duration::from_millis(GRACE_MS),
        "too slow to test"
    );
    assert_eq!(resumed["address"], joined_b["address"]);
    assert_eq!(resumed["participants"][0]["address"], joined_a["address"]);
    assert_eq!(resumed["participants"].as_array().unwrap().len(), 1);
    // Let the grace period of the drop run out: its timer must not remove B any more.
    let after_grace = dropped_by + Duration::from_millis(GRACE_MS + 300);
    assert!(
        eventually(Duration::from_secs(10), || async {
            Instant::now() >= after_grace
        })
        .await
    );
    // The next thing A sees is B's message: no participantLeft, no participantJoined.
    b.send(json!({"type": "message", "data": "back"})).await;
    let next = a.expect("message").await;
    assert_eq!(next["from"], joined_b["address"]);
    assert_eq!(next["data"], "back");
    // The seat was kept, not doubled, and B is connected again.
    let list = participants(&app, &room).await;
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|p| p["connected"] == true), "{list:?}");
    // And B still works both ways.
    a.send(json!({"type": "signal", "to": joined_b["address"], "data": "hello again"}))
        .await;
    assert_eq!(b.expect("signal").await["data"], "hello again");
}

#[tokio::test]
async fn without_a_resume_the_others_see_a_disconnect_and_the_resume_token_dies() {
    let app = app_with(Options::default().env("CONVENE_SIGNALING_RESUME_GRACE_MS", "200")).await;
    let Pair {
        room,
        mut a,
        b,
        joined_b,
        ..
    } = Pair::join(&app).await;
    let token = room["token"].as_str().unwrap();
    b.drop_connection();
    let left = a.expect("participantLeft").await;
    assert_eq!(
        left,
        json!({"type": "participantLeft", "address": joined_b["address"], "reason": "disconnected"})
    );
    // A resume after the grace period is an ordinary join with a new address.
    let mut b = Client::connect(&app).await;
    b.send(json!({"type": "join", "token": token, "resume": joined_b["resumeToken"]}))
        .await;
    let joined = b.expect("joined").await;
    assert_ne!(joined["address"], joined_b["address"]);
    a.expect("participantJoined").await;
}

#[tokio::test]
async fn a_resume_while_the_old_socket_is_open_closes_the_old_one() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let Pair {
        room,
        mut a,
        b: mut old,
        joined_b,
        ..
    } = Pair::join(&app).await;
    let token = room["token"].as_str().unwrap();
    let mut new = Client::connect(&app).await;
    new.send(json!({"type": "join", "token": token, "resume": joined_b["resumeToken"]}))
        .await;
    assert_eq!(new.expect("joined").await["address"], joined_b["address"]);
    old.expect_close(4012).await;
    new.send(json!({"type": "message", "data": "from the new socket"}))
        .await;
    let next = a.expect("message").await;
    assert_eq!(next["data"], "from the new socket");
}

#[tokio::test]
async fn a_participant_is_removed_after_the_endpoint_ttl() {
    let app = app_with(Options::default().env("CONVENE_ENDPOINT_TTL_SECONDS", "1")).await;
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let (mut a, joined_a) = Client::join(&app, token, "A").await;
    // B joins a little later, so A expires first.
    let (mut b, _) = Client::join(&app, token, "B").await;
    a.expect("participantJoined").await;
    a.expect_error("REALTIME-00015", Some("ENDPOINT_EXPIRED"))
        .await;
    a.expect_close(4014).await;
    let left = b.expect("participantLeft").await;
    assert_eq!(
        left,
        json!({"type": "participantLeft", "address": joined_a["address"], "reason": "expired"})
    );
}

#[tokio::test]
async fn deleting_a_room_closes_every_socket_and_kills_its_token() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let Pair {
        room, mut a, mut b, ..
    } = Pair::join(&app).await;
    let token = room["token"].as_str().unwrap();
    assert_eq!(
        app.delete_room(room["id"].as_str().unwrap()).await.status(),
        200
    );
    for c in [&mut a, &mut b] {
        assert_eq!(
            c.recv().await,
            json!({"type": "roomClosed", "reason": "deleted"})
        );
        c.expect_close(4010).await;
    }
    let mut late = Client::connect(&app).await;
    late.send(json!({"type": "join", "token": token})).await;
    late.expect_error("REALTIME-00004", Some("CONFERENCE_ROOM_DOES_NOT_EXIST"))
        .await;
    late.expect_close(4004).await;
}

#[tokio::test]
async fn an_expiring_room_closes_every_socket() {
    let app = app_with(Options::default().env("CONVENE_ROOM_TTL_SECONDS", "1")).await;
    let room = app.new_room(json!({})).await;
    let (mut a, _) = Client::join(&app, room["token"].as_str().unwrap(), "A").await;
    assert_eq!(
        a.recv().await,
        json!({"type": "roomClosed", "reason": "expired"})
    );
    a.expect_close(4011).await;
    // The room is gone for good: its (still valid) token finds no room.
    let mut late = Client::connect(&app).await;
    late.send(json!({"type": "join", "token": room["token"]}))
        .await;
    late.expect_error("REALTIME-00004", Some("CONFERENCE_ROOM_DOES_NOT_EXIST"))
        .await;
    late.expect_close(4004).await;
}

#[tokio::test]
async fn joins_racing_a_delete_either_join_then_close_or_are_refused() {
    // Seats for all ten, so that only the delete decides.
    let app = app_with(Options::default().env("CONVENE_MESH_MAX_PARTICIPANTS", "10")).await;
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap().to_string();
    let mut clients = Vec::new();
    for _ in 0..10 {
        clients.push(Client::connect(&app).await);
    }
    let joins: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            let token = token.clone();
            tokio::spawn(async move {
                c.send(json!({"type": "join", "token": token})).await;
                let mut seen = Vec::new();
                loop {
                    match c.next().await {
                        Incoming::Text(v) => seen.push(v["type"].as_str().unwrap().to_string()),
                        Incoming::Closed(code, _) => return (seen, code),
                    }
                }
            })
        })
        .collect();
    assert_eq!(
        app.delete_room(room["id"].as_str().unwrap()).await.status(),
        200
    );
    for join in joins {
        let (seen, code) = join.await.unwrap();
        match code {
            4010 => {
                assert_eq!(seen.first().map(String::as_str), Some("joined"), "{seen:?}");
                assert_eq!(
                    seen.last().map(String::as_str),
                    Some("roomClosed"),
                    "{seen:?}"
                );
                assert!(
                    seen.iter().all(
                        |t| ["joined", "participantJoined", "roomClosed"].contains(&t.as_str())
                    )
                );
            }
            4004 => assert_eq!(seen, ["error"]),
            other => panic!("closed with {other} after {seen:?}"),
        }
    }
    assert_eq!(app.list("").await.status(), 200, "the server still answers");
}

#[tokio::test]
async fn a_participant_that_does_not_read_is_dropped_not_buffered() {
    let app = app_with(
        Options::default()
            .env("CONVENE_SIGNALING_QUEUE_CAPACITY", "4")
            .env("CONVENE_SIGNALING_RATE_PER_SECOND", "100000")
            .env("CONVENE_SIGNALING_RATE_BURST", "100000")
            .env("CONVENE_SIGNALING_RESUME_GRACE_MS", "200")
            .env("CONVENE_SIGNALING_CLIENT_TIMEOUT_MS", "600000"),
    )
    .await;
    let Pair {
        mut a, b, joined_b, ..
    } = Pair::join(&app).await;
    let big = "x".repeat(50_000);
    let to = joined_b["address"].as_str().unwrap();
    // B never reads: socket buffers fill, then its queue, then the room drops it. A keeps
    // sending until it sees B leave, in rounds of 2 (so that A's own queue of 4 never
    // overflows: once B is gone each signal to it earns A an error).
    let mut sent = 0;
    let left = loop {
        a.send(json!({"type": "signal", "to": to, "data": big}))
            .await;
        sent += 1;
        assert!(sent < 5_000, "B was never dropped");
        if sent % 2 == 0 {
            a.send(json!({"type": "ping"})).await;
            let mut found = None;
            loop {
                let message = a.recv().await;
                match message["type"].as_str() {
                    Some("pong") => break,
                    Some("participantLeft") => found = Some(message),
                    _ => {}
                }
            }
            if let Some(left) = found {
                break left;
            }
        }
    };
    assert_eq!(left["address"], to);
    assert_eq!(left["reason"], "disconnected");
    drop(b);
}

#[tokio::test]
async fn shutdown_closes_sockets_with_1001() {
    let mut app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let (mut a, _) = Client::join(&app, room["token"].as_str().unwrap(), "A").await;
    let mut waiting = Client::connect(&app).await;
    let closed = tokio::spawn(async move {
        a.expect_close(1001).await;
        waiting.expect_close(1001).await;
    });
    let status = tokio::task::spawn_blocking(move || app.stop())
        .await
        .unwrap()
        .unwrap();
    closed.await.unwrap();
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn a_close_from_the_client_is_answered_and_counts_as_a_drop() {
    let app = app_with(Options::default().env("CONVENE_SIGNALING_RESUME_GRACE_MS", "200")).await;
    let Pair {
        mut a,
        mut b,
        joined_b,
        ..
    } = Pair::join(&app).await;
    // The closing handshake: the server answers B's close frame with one of its own.
    b.close(1000, "bye").await;
    assert_eq!(b.next().await, Incoming::Closed(1000, String::new()));
    let left = a.expect("participantLeft").await;
    assert_eq!(
        left,
        json!({"type": "participantLeft", "address": joined_b["address"], "reason": "disconnected"})
    );
}
