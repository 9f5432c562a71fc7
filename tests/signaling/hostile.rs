use crate::support::*;
use crate::ws::{Client, Pair};
use serde_json::json;

#[tokio::test]
async fn bad_messages_get_errors_and_the_socket_and_room_carry_on() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let Pair { mut a, mut b, .. } = Pair::join(&app).await;
    let cases = [
        ("not json", "BASE-00014", None, None),
        ("[1,2]", "BASE-00014", None, None),
        (
            r#"{"type":"dance"}"#,
            "BASE-00016",
            Some("INVALID_VALUE"),
            Some("[type]"),
        ),
        (
            r#"{"data":1}"#,
            "BASE-00011",
            Some("PARAMETER_MISSING"),
            Some("[type]"),
        ),
        (
            r#"{"type":"signal","data":{}}"#,
            "BASE-00011",
            Some("PARAMETER_MISSING"),
            Some("[to]"),
        ),
        (
            r#"{"type":"signal","to":"PA-x"}"#,
            "BASE-00011",
            Some("PARAMETER_MISSING"),
            Some("[data]"),
        ),
        (
            r#"{"type":"message","to":"PA-x","data":1}"#,
            "BASE-00016",
            Some("INVALID_VALUE"),
            Some("[to]"),
        ),
        (
            r#"{"type":"mediaState","audio":"off"}"#,
            "BASE-00016",
            Some("INVALID_VALUE"),
            Some("[audio]"),
        ),
        (
            r#"{"type":"signal","to":"sfu","data":{}}"#,
            "REALTIME-00016",
            Some("SFU_UNAVAILABLE"),
            None,
        ),
    ];
    for (text, code, id, names) in cases {
        a.send_text(text).await;
        let error = a.expect_error(code, id).await;
        if let Some(names) = names {
            assert!(
                error["description"][0].as_str().unwrap().contains(names),
                "{error}"
            );
        }
        // After each bad frame the socket still works, and so does the room.
        a.assert_alive().await;
        b.send(json!({"type": "message", "data": text})).await;
        assert_eq!(a.expect("message").await["data"], text);
    }
    assert!(
        a.send_raw(tokio_tungstenite::tungstenite::Message::binary(vec![
            1, 2, 3
        ]))
        .await
    );
    a.expect_error("BASE-00014", None).await;
    a.assert_alive().await;
    b.send(json!({"type": "message", "data": "room still works"}))
        .await;
    assert_eq!(a.expect("message").await["data"], "room still works");
    assert_eq!(app.list("").await.status(), 200, "the server still answers");
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009() {
    let app = TestApp::spawn_with(Backend::Memory, small_frames())
        .await
        .unwrap();
    let room = app.new_room(json!({})).await;
    let (mut a, _) = Client::join(&app, room["token"].as_str().unwrap(), "A").await;
    a.send(json!({"type": "message", "data": "x".repeat(70 * 1024)}))
        .await;
    a.expect_error("BASE-00018", Some("PAYLOAD_TOO_LARGE"))
        .await;
    a.expect_close(1009).await;
    assert_eq!(app.list("").await.status(), 200);
}

#[tokio::test]
async fn a_frame_just_under_the_limit_is_relayed() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let Pair { mut a, mut b, .. } = Pair::join(&app).await;
    let data = "y".repeat(64 * 1024 - 100);
    let text = json!({"type": "message", "data": data}).to_string();
    assert!(text.len() <= 64 * 1024);
    b.send_text(&text).await;
    assert_eq!(a.expect("message").await["data"], data.as_str());
    b.assert_alive().await;
}

#[tokio::test]
async fn a_fragmented_message_over_the_limit_closes_with_1009() {
    // Each frame is small; together they are over 64 KiB. The limit is on the message.
    let app = TestApp::spawn_with(Backend::Memory, small_frames())
        .await
        .unwrap();
    let Pair {
        room, mut a, mut b, ..
    } = Pair::join(&app).await;
    let token = room["token"].as_str().unwrap();
    let filler = "x".repeat(30 * 1024);
    let head = r#"{"type":"message","data":""#;
    assert!(
        a.send_fragmented(&[head, &filler, &filler, &filler, "\"}"])
            .await
    );
    a.expect_error("BASE-00018", Some("PAYLOAD_TOO_LARGE"))
        .await;
    a.expect_close(1009).await;
    // B never saw the message, and the room carries on for B.
    let (mut c, joined_c) = Client::join(&app, token, "C").await;
    assert_eq!(
        b.expect("participantJoined").await["participant"]["address"],
        joined_c["address"]
    );
    c.send(json!({"type": "message", "data": "after"})).await;
    assert_eq!(b.expect("message").await["data"], "after");
    assert_eq!(app.list("").await.status(), 200);
}

#[tokio::test]
async fn a_fragmented_message_under_the_limit_is_one_message() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let Pair { mut a, mut b, .. } = Pair::join(&app).await;
    assert!(
        b.send_fragmented(&[r#"{"type":"message","#, r#""data":"in "#, r#"parts"}"#])
            .await
    );
    assert_eq!(a.expect("message").await["data"], "in parts");
}

#[tokio::test]
async fn a_flood_closes_with_1008() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default()
            .env("CONVENE_SIGNALING_RATE_PER_SECOND", "5")
            .env("CONVENE_SIGNALING_RATE_BURST", "5"),
    )
    .await
    .unwrap();
    let Pair {
        room, mut a, mut b, ..
    } = Pair::join(&app).await;
    let token = room["token"].as_str().unwrap();
    let (mut c, joined_c) = Client::join(&app, token, "C").await;
    a.expect("participantJoined").await;
    b.expect("participantJoined").await;
    for _ in 0..30 {
        if !a
            .send_raw(tokio_tungstenite::tungstenite::Message::text(
                r#"{"type":"ping"}"#,
            ))
            .await
        {
            break;
        }
    }
    let mut pongs = 0;
    loop {
        let message = a.recv().await;
        if message["type"] == "pong" {
            pongs += 1;
            continue;
        }
        assert_eq!(message["code"], "REALTIME-00014", "{message}");
        assert_eq!(message["id"], "TOO_MANY_MESSAGES");
        break;
    }
    assert!(pongs <= 5, "{pongs} messages got through a burst of 5");
    a.expect_close(1008).await;
    // The room carries on for B and C (A's seat waits for a resume).
    b.assert_alive().await;
    b.send(json!({"type": "message", "to": [joined_c["address"]], "data": "still here"}))
        .await;
    assert_eq!(c.expect("message").await["data"], "still here");
    assert_eq!(app.list("").await.status(), 200);
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_only_that_socket() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let Pair {
        room,
        mut a,
        mut b,
        joined_b,
        ..
    } = Pair::join(&app).await;
    let token = room["token"].as_str().unwrap();
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    let frame = Frame::message(
        b"{\"type\":\"ping\xff\"}".to_vec(),
        OpCode::Data(Data::Text),
        true,
    );
    assert!(
        a.send_raw(tokio_tungstenite::tungstenite::Message::Frame(frame))
            .await
    );
    a.expect_close(1002).await;
    // The room carries on for the others, and the server answers.
    let (mut c, _) = Client::join(&app, token, "C").await;
    b.expect("participantJoined").await;
    c.send(json!({"type": "message", "to": [joined_b["address"]], "data": "still here"}))
        .await;
    assert_eq!(b.expect("message").await["data"], "still here");
    assert_eq!(app.list("").await.status(), 200);
}

/// A 64 KiB frame limit (the default is 256 KiB), which the sizes in these tests are made for.
fn small_frames() -> Options {
    Options::default().env("CONVENE_SIGNALING_MAX_FRAME_BYTES", 64 * 1024)
}
