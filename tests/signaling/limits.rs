//! What a client can make the server hold: frames whose header claims more than the limit
//! are refused at the header (before their payload is buffered), and sockets that have not
//! joined yet are capped, overall and per address.

use crate::raw_ws::{self, CONTINUATION, PING, RawWs, ServerFrame, TEXT, TEXT_FIRST};
use crate::support::*;
use crate::ws::{self, Client, SIGNALING};
use serde_json::{Value, json};

const MB: u64 = 1 << 20;

/// Sends the header of a 256 MB text frame and 1 KiB of its payload (nothing more) on
/// `socket`, and checks the refusal: it cannot wait for the payload.
async fn send_huge_frame_header(socket: &mut RawWs) {
    socket.write(&raw_ws::header(TEXT, 256 * MB)).await.unwrap();
    socket.write(&[b'x'; 1024]).await.unwrap();
}

#[tokio::test]
async fn a_frame_header_claiming_256_mb_is_refused_before_its_payload() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap().to_string();
    // Warm up: a socket that joins and leaves, so the baseline includes a session's memory.
    let (mut warm, _) = Client::join(&app, &token, "warm").await;
    warm.send(json!({"type": "leave"})).await;
    warm.expect_close(1000).await;
    let before = app.rss_bytes();

    // A socket that never joined…
    let mut stranger = RawWs::connect(app.host_port(), SIGNALING, &[])
        .await
        .unwrap();
    send_huge_frame_header(&mut stranger).await;
    stranger.expect_too_big().await;
    stranger.assert_connection_ended().await;

    // …and one that joined: the same.
    let mut member = RawWs::connect(app.host_port(), SIGNALING, &[])
        .await
        .unwrap();
    let join = json!({"type": "join", "token": token, "name": "M"}).to_string();
    member
        .write(&raw_ws::frame(TEXT, join.as_bytes()))
        .await
        .unwrap();
    match member.next().await {
        ServerFrame::Text(text) => assert!(text.contains("\"joined\""), "{text}"),
        other => panic!("expected joined, got {other:?}"),
    }
    send_huge_frame_header(&mut member).await;
    member.expect_too_big().await;
    member.assert_connection_ended().await;

    // Whatever the clients streamed was not kept.
    let after = app.rss_bytes();
    assert!(
        after < before + 8 * MB,
        "RSS grew from {before} to {after} bytes"
    );
    // The server carries on.
    let (mut c, _) = Client::join(&app, &token, "C").await;
    c.assert_alive().await;
}

#[tokio::test]
async fn a_fragmented_message_is_refused_at_the_header_that_passes_the_limit() {
    let app = TestApp::spawn_with(Backend::Memory, small_frames())
        .await
        .unwrap();
    let before = app.rss_bytes();
    // 40 KiB, a ping between fragments, then a continuation that declares 30 KiB more: 70 KiB
    // is over 64 KiB. Only 1 KiB of that continuation is sent; the refusal cannot wait for it.
    let mut socket = RawWs::connect(app.host_port(), SIGNALING, &[])
        .await
        .unwrap();
    socket
        .write(&raw_ws::frame(TEXT_FIRST, &[b' '; 40 * 1024]))
        .await
        .unwrap();
    socket.write(&raw_ws::frame(PING, b"p")).await.unwrap();
    socket
        .write(&raw_ws::header(CONTINUATION, 30 * 1024))
        .await
        .unwrap();
    socket.write(&[b' '; 1024]).await.unwrap();
    socket.expect_too_big().await;
    socket.assert_connection_ended().await;

    // A continuation that claims 256 MB on its own.
    let mut socket = RawWs::connect(app.host_port(), SIGNALING, &[])
        .await
        .unwrap();
    socket
        .write(&raw_ws::frame(TEXT_FIRST, b"{\"type\":"))
        .await
        .unwrap();
    socket
        .write(&raw_ws::header(CONTINUATION, 256 * MB))
        .await
        .unwrap();
    socket.write(&[b' '; 1024]).await.unwrap();
    socket.expect_too_big().await;
    socket.assert_connection_ended().await;

    let after = app.rss_bytes();
    assert!(
        after < before + 8 * MB,
        "RSS grew from {before} to {after} bytes"
    );
}

#[tokio::test]
async fn a_control_frame_over_125_bytes_is_refused() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let mut socket = RawWs::connect(app.host_port(), SIGNALING, &[])
        .await
        .unwrap();
    socket.write(&raw_ws::header(PING, 126)).await.unwrap();
    socket.expect_too_big().await;
}

#[tokio::test]
async fn a_frame_of_exactly_the_limit_is_read() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_SIGNALING_MAX_FRAME_BYTES", "1000"),
    )
    .await
    .unwrap();
    let mut socket = RawWs::connect(app.host_port(), SIGNALING, &[])
        .await
        .unwrap();
    // A 1000-byte ping message: answered by pong, not refused.
    let mut text = r#"{"type":"ping","pad":""#.to_string();
    text.push_str(&" ".repeat(1000 - text.len() - 2));
    text.push_str("\"}");
    assert_eq!(text.len(), 1000);
    socket
        .write(&raw_ws::frame(TEXT, text.as_bytes()))
        .await
        .unwrap();
    assert_eq!(
        socket.next().await,
        ServerFrame::Text(r#"{"type":"pong"}"#.into())
    );
    // One byte more is refused.
    text.insert(text.len() - 2, ' ');
    socket
        .write(&raw_ws::frame(TEXT, text.as_bytes()))
        .await
        .unwrap();
    socket.expect_too_big().await;
}

fn error_body(status: u16, code: &str, id: &str, description: &str) -> Value {
    json!({"httpCode": status, "code": code, "id": id, "description": [description]})
}

#[tokio::test]
async fn sockets_not_joined_yet_are_capped_per_address() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default()
            .env("CONVENE_SIGNALING_MAX_PENDING_SOCKETS", "100")
            .env("CONVENE_SIGNALING_MAX_PENDING_SOCKETS_PER_IP", "2"),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let refused = error_body(
        429,
        "REALTIME-00017",
        "TOO_MANY_CONNECTIONS",
        "This address already has ::= [2] sockets that have not joined or authenticated yet.",
    );
    let mut a = Client::connect(&app).await;
    let mut b = Client::connect(&app).await;
    assert_eq!(
        ws::try_connect(ws::request(&app, SIGNALING)).await.err(),
        Some((429, refused.clone()))
    );
    // Admin streams without a header key count too.
    assert_eq!(
        ws::try_connect(ws::request(&app, ws::EVENTS)).await.err(),
        Some((429, refused.clone()))
    );
    // Joining frees a place.
    a.send(json!({"type": "join", "token": token, "name": "A"}))
        .await;
    a.expect("joined").await;
    let mut c = Client::connect(&app).await;
    assert_eq!(
        ws::try_connect(ws::request(&app, SIGNALING)).await.err(),
        Some((429, refused.clone()))
    );
    // So does closing (the server's close frame comes after the place is given up).
    b.close(1000, "").await;
    b.expect_close(1000).await;
    let mut d = Client::connect(&app).await;
    // Joined sockets do not count: A is still there, C and D hold the two places.
    a.assert_alive().await;
    c.assert_alive().await;
    d.assert_alive().await;
}

#[tokio::test]
async fn sockets_not_joined_yet_are_capped_overall() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default()
            .env("CONVENE_SIGNALING_MAX_PENDING_SOCKETS", "2")
            .env("CONVENE_SIGNALING_MAX_PENDING_SOCKETS_PER_IP", "100"),
    )
    .await
    .unwrap();
    let refused = error_body(
        503,
        "REALTIME-00018",
        "TOO_MANY_PENDING_CONNECTIONS",
        "Too many sockets have not joined or authenticated yet. Try again later.",
    );
    let _signaling = Client::connect(&app).await;
    let mut admin = Client::connect_request(ws::request(&app, ws::EVENTS)).await;
    assert_eq!(
        ws::try_connect(ws::request(&app, SIGNALING)).await.err(),
        Some((503, refused.clone()))
    );
    // An admin stream with its key in the header has authenticated already: not counted.
    let mut keyed = Client::connect_request(ws::with_header(
        ws::request(&app, ws::EVENTS),
        "x-vcs-token",
        API_KEY,
    ))
    .await;
    keyed.expect("snapshot").await;
    // Authenticating by the first message frees the place (before the snapshot is sent).
    admin.send(json!({"type": "auth", "apiKey": API_KEY})).await;
    admin.expect("snapshot").await;
    let _again = Client::connect(&app).await;
    assert_eq!(
        ws::try_connect(ws::request(&app, ws::EVENTS)).await.err(),
        Some((503, refused))
    );
}

/// A 64 KiB frame limit (the default is 256 KiB), which the sizes in these tests are made for.
fn small_frames() -> Options {
    Options::default().env("CONVENE_SIGNALING_MAX_FRAME_BYTES", 64 * 1024)
}
