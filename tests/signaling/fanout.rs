//! What one frame fans out: repeated recipients, `to` lists longer than the room, and the
//! sender's fan-out budget (docs/signaling.md, "Relays and fan-out").

use crate::support::*;
use crate::ws::{Client, Incoming};
use serde_json::{Value, json};

/// A flood's sender: sends `frames`, then a `ping`, and reads up to the `pong`; answers how
/// many of the frames were refused with TOO_MANY_MESSAGES for their fan-out (no other
/// answer may come).
async fn flood_and_count_refusals(sender: &mut Client, frames: &[Value]) -> usize {
    for frame in frames {
        sender.send(frame.clone()).await;
    }
    sender.send(json!({"type": "ping"})).await;
    let mut refused = 0;
    loop {
        let message = sender.recv().await;
        if message["type"] == "pong" {
            return refused;
        }
        assert_eq!(message["code"], "REALTIME-00014", "{message}");
        assert_eq!(message["id"], "TOO_MANY_MESSAGES", "{message}");
        assert!(
            message["description"][0]
                .as_str()
                .unwrap()
                .contains("bytes per second"),
            "{message}"
        );
        refused += 1;
    }
}

/// A fan-out budget of 10 kB/s with a 20 kB burst, small enough to flood in a test.
fn small_budget() -> Options {
    Options::default()
        .env("CONVENE_SIGNALING_FANOUT_BYTES_PER_SECOND", "10000")
        .env("CONVENE_SIGNALING_FANOUT_BURST_BYTES", "20000")
}

/// The next `count` messages of `client` are these relayed ones, then comes `marker`:
/// nothing was delivered twice and the socket was not closed (4016 or otherwise).
async fn expect_then_marker(client: &mut Client, kind: &str, count: usize, marker: &str) {
    for _ in 0..count {
        match client.next().await {
            Incoming::Text(message) => {
                assert_eq!(message["type"], kind, "{message}");
                assert_ne!(
                    message["data"], marker,
                    "fewer deliveries than accepted frames"
                );
            }
            Incoming::Closed(code, reason) => panic!("recipient closed: {code} {reason}"),
        }
    }
    match client.next().await {
        Incoming::Text(message) => assert_eq!(message["data"], marker, "{message}"),
        Incoming::Closed(code, reason) => panic!("recipient closed: {code} {reason}"),
    }
}

#[tokio::test]
async fn one_frame_naming_the_victim_300_times_delivers_once_and_drops_nobody() {
    // A room large enough that 300 entries are within its size, and the default queue
    // (256): before the fix, this one frame put 300 copies into the victim's queue and the
    // server dropped the victim as too slow (4016).
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_SFU_MAX_PARTICIPANTS", "300"),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({"conferenceType": "SFU"})).await;
    let token = room["token"].as_str().unwrap();
    let (mut attacker, _) = Client::join(&app, token, "attacker").await;
    let (mut victim, joined) = Client::join(&app, token, "victim").await;
    attacker.expect("participantJoined").await;
    let victim_address = joined["address"].clone();
    let frame = json!({
        "type": "message",
        "to": vec![victim_address.clone(); 300],
        "data": "x".repeat(600),
    });
    assert!(frame.to_string().len() > 12_000, "the attack's frame size");
    attacker.send(frame).await;
    attacker
        .send(json!({"type": "message", "to": [victim_address], "data": "marker"}))
        .await;
    attacker.assert_alive().await;
    expect_then_marker(&mut victim, "message", 1, "marker").await;
    victim.assert_alive().await;
}

#[tokio::test]
async fn a_to_longer_than_the_room_is_refused_and_one_within_it_delivers_once() {
    // MESH rooms hold 7 by default.
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    let (mut b, joined) = Client::join(&app, token, "B").await;
    a.expect("participantJoined").await;
    let b_address = joined["address"].clone();

    // Eight entries in a room of seven: refused, whoever they name; nothing relayed.
    a.send(json!({"type": "message", "to": vec![b_address.clone(); 8], "data": "8"}))
        .await;
    let error = a.expect_error("BASE-00016", Some("INVALID_VALUE")).await;
    assert!(
        error["description"][0].as_str().unwrap().contains("[to]"),
        "{error}"
    );
    let mut eight_distinct: Vec<Value> = (0..7).map(|i| json!(format!("PA-{i}"))).collect();
    eight_distinct.push(b_address.clone());
    a.send(json!({"type": "message", "to": eight_distinct, "data": "8"}))
        .await;
    a.expect_error("BASE-00016", Some("INVALID_VALUE")).await;

    // Seven entries, all B: one delivery.
    a.send(json!({"type": "message", "to": vec![b_address.clone(); 7], "data": "7"}))
        .await;
    a.send(json!({"type": "message", "to": [b_address], "data": "marker"}))
        .await;
    assert_eq!(b.expect("message").await["data"], "7");
    expect_then_marker(&mut b, "message", 0, "marker").await;
    a.assert_alive().await;
    b.assert_alive().await;
}

#[tokio::test]
async fn a_sender_flooding_everyone_exhausts_its_own_budget_and_the_others_stay() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        small_budget().env("CONVENE_SIGNALING_QUEUE_CAPACITY", "8"),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    let (mut b, joined_b) = Client::join(&app, token, "B").await;
    a.expect("participantJoined").await;
    let (mut c, joined_c) = Client::join(&app, token, "C").await;
    a.expect("participantJoined").await;
    b.expect("participantJoined").await;

    // Each frame fans out about 2 x 5 KB: far more of them than the budget pays for.
    let frames = vec![json!({"type": "message", "data": "y".repeat(5000)}); 30];
    let refused = flood_and_count_refusals(&mut a, &frames).await;
    assert!(refused > 0, "no frame was refused");
    let relayed = frames.len() - refused;

    // The others got exactly the frames that were paid for, are still connected, and still
    // get later messages.
    c.send(json!({"type": "message", "to": [joined_b["address"]], "data": "later"}))
        .await;
    b.send(json!({"type": "message", "to": [joined_c["address"]], "data": "later"}))
        .await;
    expect_then_marker(&mut b, "message", relayed, "later").await;
    expect_then_marker(&mut c, "message", relayed, "later").await;
    // The sender keeps its socket.
    a.assert_alive().await;
}

#[tokio::test]
async fn a_media_state_flood_is_charged_for_what_it_fans_out() {
    let app = TestApp::spawn_with(Backend::Memory, small_budget())
        .await
        .unwrap();
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    // A large participantInfo makes every participantUpdated about 4 KB.
    let (mut a, _) = Client::join_with(
        &app,
        json!({"type": "join", "token": token, "participantInfo": {"pad": "z".repeat(4000)}}),
    )
    .await;
    let (mut b, joined_b) = Client::join(&app, token, "B").await;
    a.expect("participantJoined").await;

    let frames: Vec<Value> = (0..30)
        .map(|i| json!({"type": "mediaState", "audio": i % 2 == 0}))
        .collect();
    let refused = flood_and_count_refusals(&mut a, &frames).await;
    assert!(refused > 0, "no mediaState was refused");
    let relayed = frames.len() - refused;

    a.assert_alive().await;
    // A relayed message goes socket to socket and the updates through the room's actor, so
    // the two may interleave. A leave goes through the actor after every accepted
    // mediaState: what B gets before A's participantLeft is everything the room relayed.
    a.send(json!({"type": "message", "to": [joined_b["address"]], "data": "later"}))
        .await;
    a.send(json!({"type": "leave"})).await;
    let (mut updates, mut later) = (0, 0);
    loop {
        match b.next().await {
            Incoming::Text(m) if m["type"] == "participantUpdated" => updates += 1,
            Incoming::Text(m) if m["type"] == "message" => {
                assert_eq!(m["data"], "later", "{m}");
                later += 1;
            }
            Incoming::Text(m) if m["type"] == "participantLeft" => break,
            Incoming::Text(m) => panic!("unexpected message: {m}"),
            Incoming::Closed(code, reason) => panic!("recipient closed: {code} {reason}"),
        }
    }
    assert_eq!(
        updates, relayed,
        "one participantUpdated per accepted mediaState"
    );
    assert_eq!(later, 1, "the later message, once");
    b.assert_alive().await;
}

#[tokio::test]
async fn signals_to_the_media_plane_are_charged_too() {
    let app = TestApp::spawn_with(Backend::Memory, small_budget())
        .await
        .unwrap();
    let room = app.new_room(json!({"conferenceType": "SFU"})).await;
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    // Views of 20 others, about 1.3 KB each: 30 of them are twice the burst.
    let views: Vec<Value> = (0..20)
        .map(|i| json!({"address": format!("PA-{i:036}"), "width": 320, "height": 180}))
        .collect();
    let frames: Vec<Value> = (0..30)
        .map(|_| json!({"type": "signal", "to": "sfu", "data": {"views": views}}))
        .collect();
    let refused = flood_and_count_refusals(&mut a, &frames).await;
    assert!(refused > 0, "no signal to sfu was refused");
    assert!(refused < frames.len(), "every signal to sfu was refused");
    a.assert_alive().await;
}
