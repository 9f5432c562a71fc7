//! The admin event stream refuses frames over its 4096-byte limit at their header, before
//! their payload is buffered, whether the socket has authenticated or not.

use crate::raw_ws::{self, RawWs, ServerFrame, TEXT, TEXT_FIRST};
use crate::support::*;
use crate::ws::EVENTS;
use serde_json::Value;

const MB: u64 = 1 << 20;

async fn expect_too_big(socket: &mut RawWs) {
    match socket.next().await {
        ServerFrame::Text(text) => {
            let error: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(error["type"], "error", "{error}");
            assert_eq!(error["code"], "BASE-00018", "{error}");
            assert_eq!(error["id"], "PAYLOAD_TOO_LARGE", "{error}");
        }
        other => panic!("expected the PAYLOAD_TOO_LARGE error, got {other:?}"),
    }
    assert_eq!(socket.next().await, ServerFrame::Close(1009));
    // The client goes on streaming; the server ends the connection all the same.
    socket.keep_writing(&vec![b'x'; 64 * 1024], 512).await;
    socket.wait_for_end().await;
}

async fn snapshot(socket: &mut RawWs) {
    match socket.next().await {
        ServerFrame::Text(text) => assert!(text.contains("\"snapshot\""), "{text}"),
        other => panic!("expected the snapshot, got {other:?}"),
    }
}

#[tokio::test]
async fn a_frame_header_claiming_256_mb_is_refused_before_and_after_authentication() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    // Warm up with one stream, so the baseline includes a stream's memory.
    let mut warm = RawWs::connect(app.host_port(), EVENTS, &[("x-vcs-token", API_KEY)])
        .await
        .unwrap();
    snapshot(&mut warm).await;
    let before = app.rss_bytes();

    // Not authenticated yet.
    let mut stranger = RawWs::connect(app.host_port(), EVENTS, &[]).await.unwrap();
    stranger
        .write(&raw_ws::header(TEXT, 256 * MB))
        .await
        .unwrap();
    stranger.write(&[b'x'; 1024]).await.unwrap();
    expect_too_big(&mut stranger).await;

    // Authenticated by the header, streaming.
    let mut admin = RawWs::connect(app.host_port(), EVENTS, &[("x-vcs-token", API_KEY)])
        .await
        .unwrap();
    snapshot(&mut admin).await;
    admin.write(&raw_ws::header(TEXT, 256 * MB)).await.unwrap();
    admin.write(&[b'x'; 1024]).await.unwrap();
    expect_too_big(&mut admin).await;

    // Fragments that add up to more than 4096 bytes.
    let mut fragments = RawWs::connect(app.host_port(), EVENTS, &[]).await.unwrap();
    fragments
        .write(&raw_ws::frame(TEXT_FIRST, &[b' '; 3000]))
        .await
        .unwrap();
    fragments
        .write(&raw_ws::header(raw_ws::CONTINUATION, 2000))
        .await
        .unwrap();
    expect_too_big(&mut fragments).await;

    let after = app.rss_bytes();
    assert!(
        after < before + 8 * MB,
        "RSS grew from {before} to {after} bytes"
    );
}

#[tokio::test]
async fn an_auth_message_of_exactly_4096_bytes_is_read() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let mut socket = RawWs::connect(app.host_port(), EVENTS, &[]).await.unwrap();
    let mut auth = format!(r#"{{"type":"auth","apiKey":"{API_KEY}","pad":""#);
    auth.push_str(&" ".repeat(4096 - auth.len() - 2));
    auth.push_str("\"}");
    assert_eq!(auth.len(), 4096);
    socket
        .write(&raw_ws::frame(TEXT, auth.as_bytes()))
        .await
        .unwrap();
    snapshot(&mut socket).await;
}
