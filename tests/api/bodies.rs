//! Request bodies have a deadline (`request_body_timeout_seconds`), and a shutdown cuts a
//! body that is still arriving: a slow or stalled upload holds neither a connection nor a
//! shutdown.

use crate::support::*;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TIMEOUT_TEXT: &str = "The request body was not received within ::= [1] seconds.";

async fn app_with_deadline(seconds: u64) -> TestApp {
    TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_REQUEST_BODY_TIMEOUT_SECONDS", seconds),
    )
    .await
    .unwrap()
}

/// Sends `head`, then one of `pieces` every 100 ms (the body's pace, not a wait) until the
/// server stops taking them; answers what the server answered before closing.
async fn trickle(app: &TestApp, head: String, piece: &'static [u8]) -> RawResponse {
    let stream = TcpStream::connect(app.host_port()).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    write.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let mut interval = tokio::time::interval(Duration::from_millis(100));
        // At most 10 minutes of trickle: far past any deadline the test configures.
        for _ in 0..6000 {
            interval.tick().await;
            if write.write_all(piece).await.is_err() {
                break;
            }
        }
    });
    let res = read_until_closed(&mut read).await;
    writer.abort();
    res
}

#[tokio::test]
async fn a_trickled_body_is_cut_at_its_deadline_with_408() {
    let app = app_with_deadline(1).await;
    // 10 bytes a second, a thousand declared: the body keeps arriving but never in time.
    let head = format!(
        "POST /api/realtime/room HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{"
    );
    let res = trickle(&app, head, b" ").await;
    assert_raw_error(&res, 408, "BASE-00019", "REQUEST_TIMEOUT", TIMEOUT_TEXT);
    assert!(res.header("x-request-id").is_some(), "{res:?}");
    // No room was created, and the service serves on.
    let list = json_ok(app.list("").await).await;
    assert_eq!(list, serde_json::json!({"data": []}));
}

#[tokio::test]
async fn a_trickled_chunked_body_is_cut_and_its_connection_closed() {
    let app = app_with_deadline(1).await;
    let head = format!(
        "POST /api/realtime/room HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n1\r\n{{\r\n"
    );
    // `read_until_closed` returns only once the server closes the connection: the rest of
    // the body is not drained after the answer.
    let res = trickle(&app, head, b"1\r\n \r\n").await;
    assert_raw_error(&res, 408, "BASE-00019", "REQUEST_TIMEOUT", TIMEOUT_TEXT);
}

#[tokio::test]
async fn a_body_in_time_is_served() {
    let app = app_with_deadline(1).await;
    let res = app
        .create_room(serde_json::json!({"name": "in time"}))
        .await;
    assert_eq!(res.status(), 200);
}

/// A shutdown does not wait for a stalled upload: the upload is answered 503 and closed, and
/// the process exits long before its shutdown timeout (60 s here; `stop` gives up after 35).
#[tokio::test]
async fn a_shutdown_cuts_a_stalled_upload() {
    let mut app = TestApp::spawn_with(
        Backend::Memory,
        Options::default()
            .env("CONVENE_SHUTDOWN_TIMEOUT_SECONDS", 60)
            .env("CONVENE_REQUEST_BODY_TIMEOUT_SECONDS", 3600),
    )
    .await
    .unwrap();
    let mut stream = TcpStream::connect(app.host_port()).await.unwrap();
    let head = format!(
        "POST /api/realtime/room HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"name\":"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // The upload is in the service: a request on another connection that comes after it is
    // answered, so the service has read what came before.
    assert_eq!(app.list("").await.status(), 200);

    let stopper = tokio::task::spawn_blocking(move || {
        let status = app.stop();
        (app, status)
    });
    let res = read_until_closed(&mut stream).await;
    assert_raw_error(
        &res,
        503,
        "BASE-00020",
        "SERVICE_UNAVAILABLE",
        "The service is temporarily unavailable. Try again later.",
    );
    let (app, status) = stopper.await.unwrap();
    let status = status.expect("the service was running");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", app.log_text());
}
