//! Request heads: at most 32 KiB (`config::MAX_HEAD_BYTES`) and 96 header fields, refused with
//! the table's 431 body; bodies, pipelining and keep-alive are unaffected.

use crate::support::*;
use serde_json::{Value, json};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const MAX_HEAD: usize = 32 * 1024;
const TOO_LARGE: &str = "The request head is larger than ::= [32768] bytes.";

async fn app() -> TestApp {
    TestApp::spawn(Backend::Memory).await.unwrap()
}

/// A `GET` of the room list whose head is exactly `size` bytes (padded with one header).
fn list_request_of(size: usize) -> String {
    let start = format!(
        "GET /api/realtime/room HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\nConnection: close\r\nX-Pad: "
    );
    let end = "\r\n\r\n";
    let pad = size - start.len() - end.len();
    let request = format!("{start}{}{end}", "a".repeat(pad));
    assert_eq!(request.len(), size);
    request
}

#[tokio::test]
async fn a_head_of_exactly_32_kib_is_served() {
    let app = app().await;
    let res = raw_http(app.host_port(), list_request_of(MAX_HEAD).as_bytes()).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert_eq!(res.json(), json!({"data": []}));
}

#[tokio::test]
async fn a_head_one_byte_over_gets_431_with_the_table_body() {
    let app = app().await;
    let res = raw_http(app.host_port(), list_request_of(MAX_HEAD + 1).as_bytes()).await;
    assert_raw_error(&res, 431, "BASE-00021", "HEADERS_TOO_LARGE", TOO_LARGE);
    assert!(res.header("x-request-id").is_some(), "{res:?}");
    // Far over, in the request line this time, sent in one go and with a key.
    let long = "a".repeat(200 * 1024);
    let request = format!(
        "GET /api/realtime/room/{long} HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\n\r\n"
    );
    let res = raw_http(app.host_port(), request.as_bytes()).await;
    assert_raw_error(&res, 431, "BASE-00021", "HEADERS_TOO_LARGE", TOO_LARGE);
    // The service serves on.
    assert_eq!(json_ok(app.list("").await).await, json!({"data": []}));
}

#[tokio::test]
async fn more_than_96_header_fields_get_431_with_the_table_body() {
    let app = app().await;
    let request = |fields: usize| {
        let mut request = format!(
            "GET /api/realtime/room HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\nConnection: close\r\n"
        );
        for i in 3..fields {
            request.push_str(&format!("x-field-{i}: v\r\n"));
        }
        request.push_str("\r\n");
        request
    };
    let res = raw_http(app.host_port(), request(96).as_bytes()).await;
    assert_eq!(res.status, 200, "{res:?}");
    let res = raw_http(app.host_port(), request(97).as_bytes()).await;
    assert_raw_error(
        &res,
        431,
        "BASE-00021",
        "HEADERS_TOO_LARGE",
        "The request has more than ::= [96] header fields.",
    );
}

/// Reads answers off `stream` until it closes; each must have a `Content-Length`.
async fn answers_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<(u16, Value)> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut bytes)).await;
    assert!(read.is_ok(), "the connection did not close");
    let mut answers = Vec::new();
    let mut rest = &bytes[..];
    while !rest.is_empty() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .unwrap_or_else(|| panic!("no head in {:?}", String::from_utf8_lossy(rest)));
        let head = std::str::from_utf8(&rest[..end])
            .unwrap()
            .to_ascii_lowercase();
        let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .unwrap_or_else(|| panic!("no content-length: {head}"))
            .trim()
            .parse()
            .unwrap();
        let body = &rest[end + 4..end + 4 + length];
        answers.push((status, serde_json::from_slice(body).unwrap()));
        rest = &rest[end + 4 + length..];
    }
    answers
}

/// Keep-alive and pipelining with bodies larger than the head limit (a body is not a head),
/// framed by `Content-Length` and chunked, then an oversized head: every earlier request is
/// answered, in order, then the 431, then the connection closes.
#[tokio::test]
async fn pipelined_requests_with_large_bodies_are_served_then_an_oversized_head_is_refused() {
    let app = app().await;
    let body = format!("{{\"name\": \"by length\"}}{}", " ".repeat(40 * 1024));
    let mut wire = format!(
        "POST /api/realtime/room HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let chunked_body = format!("{{\"name\": \"chunked\"}}{}", " ".repeat(40 * 1024));
    wire.push_str(&format!(
        "POST /api/realtime/room HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ));
    for piece in chunked_body.as_bytes().chunks(10_000) {
        wire.push_str(&format!(
            "{:x}\r\n{}\r\n",
            piece.len(),
            std::str::from_utf8(piece).unwrap()
        ));
    }
    wire.push_str("0\r\n\r\n");
    wire.push_str(&format!(
        "GET /api/realtime/room HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\n\r\n"
    ));
    // The last one's head is over the limit (it would be `Connection: close` otherwise).
    wire.push_str(&list_request_of(MAX_HEAD + 100));

    let mut stream = tokio::net::TcpStream::connect(app.host_port())
        .await
        .unwrap();
    // The server may stop reading after the refusal; what it answered is what counts.
    let _ = stream.write_all(wire.as_bytes()).await;
    let answers = answers_until_closed(&mut stream).await;
    let statuses: Vec<u16> = answers.iter().map(|(s, _)| *s).collect();
    assert_eq!(statuses, [200, 200, 200, 431], "{answers:?}");
    assert_eq!(answers[0].1["room"]["name"], "by length");
    assert_eq!(answers[1].1["room"]["name"], "chunked");
    assert_eq!(answers[2].1["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        answers[3].1,
        json!({"httpCode": 431, "code": "BASE-00021", "id": "HEADERS_TOO_LARGE",
            "description": [TOO_LARGE]})
    );
}

/// The same requests one at a time on one keep-alive connection, as reqwest sends them.
#[tokio::test]
async fn keep_alive_requests_are_served() {
    let app = app().await;
    for i in 0..5 {
        let body = format!("{{\"name\": \"room {i}\"}}{}", " ".repeat(35 * 1024));
        let res = app
            .request(reqwest::Method::POST, "/api/realtime/room")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }
    let list = json_ok(app.list("").await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 5);
}
