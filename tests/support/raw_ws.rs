//! A WebSocket client over a raw TCP stream, for frames that no well-behaved client library
//! sends: headers that claim huge payloads, fragments that add up to too much. Test crates
//! mount it with `#[path = "../support/raw_ws.rs"] mod raw_ws;`.

use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long anything expected may take to arrive.
pub const WAIT: Duration = Duration::from_secs(10);

pub const TEXT: u8 = 0x81;
pub const TEXT_FIRST: u8 = 0x01;
pub const CONTINUATION: u8 = 0x00;
pub const PING: u8 = 0x89;

pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// A masked client frame header with this first byte and declared payload length.
pub fn header(first: u8, len: u64) -> Vec<u8> {
    let mut h = vec![first];
    if len < 126 {
        h.push(0x80 | len as u8);
    } else if len <= u64::from(u16::MAX) {
        h.push(0x80 | 126);
        h.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        h.push(0x80 | 127);
        h.extend_from_slice(&len.to_be_bytes());
    }
    // A zero mask: the payload goes as it is.
    h.extend_from_slice(&[0, 0, 0, 0]);
    h
}

/// A whole masked client frame.
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = header(first, payload.len() as u64);
    f.extend_from_slice(payload);
    f
}

/// What the server sent.
#[derive(Debug, PartialEq)]
pub enum ServerFrame {
    Text(String),
    Close(u16),
    /// The connection ended without a close frame.
    Ended,
}

impl RawWs {
    /// Upgrades `path` on `host_port` with these extra header lines; `Err(status line and
    /// body)` when the server does not switch protocols.
    pub async fn connect(
        host_port: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<Self, (String, String)> {
        let mut stream = TcpStream::connect(host_port).await.expect("connect");
        let mut head = format!(
            "GET {path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n"
        );
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).await.expect("write");
        let mut buf = Vec::new();
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                .await
                .expect("an answer to the upgrade in time")
                .expect("read");
            assert!(n > 0, "connection closed during the upgrade");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let status = head.lines().next().unwrap_or("").to_string();
        if !status.contains(" 101 ") {
            // The rest is the error body (small, with Content-Length): read until it ends.
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            while buf.len() < end + len {
                let mut chunk = [0u8; 4096];
                let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
                    .await
                    .expect("the error body in time")
                    .expect("read");
                assert!(n > 0, "connection closed in the error body");
                buf.extend_from_slice(&chunk[..n]);
            }
            return Err((status, String::from_utf8_lossy(&buf[end..]).to_string()));
        }
        buf.drain(..end);
        Ok(Self { stream, buf })
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// The next data or close frame from the server (pings and pongs skipped).
    pub async fn next(&mut self) -> ServerFrame {
        loop {
            let Some((opcode, payload)) = self.next_frame().await else {
                return ServerFrame::Ended;
            };
            match opcode {
                0x1 => return ServerFrame::Text(String::from_utf8(payload).expect("UTF-8")),
                0x8 => {
                    let code = if payload.len() >= 2 {
                        u16::from_be_bytes([payload[0], payload[1]])
                    } else {
                        1005
                    };
                    return ServerFrame::Close(code);
                }
                _ => continue,
            }
        }
    }

    /// One unmasked server frame: opcode and payload; `None` at the end of the connection.
    async fn next_frame(&mut self) -> Option<(u8, Vec<u8>)> {
        loop {
            if let Some((len, frame)) = parse(&self.buf) {
                self.buf.drain(..len);
                return Some(frame);
            }
            let mut chunk = [0u8; 8192];
            let read = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
                .await
                .expect("a frame from the server in time");
            match read {
                Ok(0) | Err(_) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Writes `chunk` up to `times` times, stopping when the connection fails; answers how
    /// many writes went through. A write that stalls (the server holds the connection but
    /// no longer reads) fails the test.
    pub async fn keep_writing(&mut self, chunk: &[u8], times: usize) -> usize {
        for i in 0..times {
            let write = tokio::time::timeout(WAIT, self.stream.write_all(chunk)).await;
            match write {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return i,
                Err(_) => panic!("write {i} stalled: the server holds the connection"),
            }
        }
        times
    }

    /// Waits for the server to end the connection (end of stream or reset); anything it
    /// still sends is skipped. Fails the test if the connection is still open after `WAIT`.
    pub async fn wait_for_end(&mut self) {
        let ended = tokio::time::timeout(WAIT, async {
            let mut chunk = [0u8; 8192];
            loop {
                match self.stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(ended.is_ok(), "the server did not end the connection");
    }

    /// The `error` `PAYLOAD_TOO_LARGE` then close 1009 that refuse an oversize frame.
    pub async fn expect_too_big(&mut self) {
        match self.next().await {
            ServerFrame::Text(text) => {
                let error: serde_json::Value = serde_json::from_str(&text).unwrap();
                assert_eq!(error["type"], "error", "{error}");
                assert_eq!(error["code"], "BASE-00018", "{error}");
                assert_eq!(error["id"], "PAYLOAD_TOO_LARGE", "{error}");
            }
            other => panic!("expected the PAYLOAD_TOO_LARGE error, got {other:?}"),
        }
        assert_eq!(self.next().await, ServerFrame::Close(1009));
    }

    /// After its close, the server ends the connection even though the client goes on
    /// streaming into it (32 MiB at most; whatever arrives after the close is read and
    /// thrown away for actix's `client_disconnect_timeout`, then the connection is closed).
    pub async fn assert_connection_ended(&mut self) {
        self.keep_writing(&vec![b'x'; 64 * 1024], 512).await;
        self.wait_for_end().await;
    }
}

/// A whole server frame at the start of `buf`: its length and (opcode, payload).
fn parse(buf: &[u8]) -> Option<(usize, (u8, Vec<u8>))> {
    if buf.len() < 2 {
        return None;
    }
    let opcode = buf[0] & 0x0f;
    let (len, at) = match buf[1] & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (
            u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize,
            10,
        ),
        126 | 127 => return None,
        n => (n as usize, 2),
    };
    if buf.len() < at + len {
        return None;
    }
    Some((at + len, (opcode, buf[at..at + len].to_vec())))
}
