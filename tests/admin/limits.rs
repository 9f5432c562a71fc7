//! The admin event stream refuses frames over its 4096-byte limit at their header, before
//! their payload is buffered, whether the socket has authenticated or not.

use crate::raw_ws::{self, RawWs, ServerFrame, TEXT, TEXT_FIRST};
use crate::support::*;
use crate::ws::EVENTS;

const MB: u64 = 1 << 20;

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
    stranger.expect_too_big().await;
    stranger.assert_connection_ended().await;

    // Authenticated by the header, streaming.
    let mut admin = RawWs::connect(app.host_port(), EVENTS, &[("x-vcs-token", API_KEY)])
        .await
        .unwrap();
    snapshot(&mut admin).await;
    admin.write(&raw_ws::header(TEXT, 256 * MB)).await.unwrap();
    admin.write(&[b'x'; 1024]).await.unwrap();
    admin.expect_too_big().await;
    admin.assert_connection_ended().await;

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
    fragments.expect_too_big().await;
    fragments.assert_connection_ended().await;

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
