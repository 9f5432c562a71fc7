#![allow(dead_code)]

//! A small signaling client over tokio-tungstenite, for the tests.

use crate::support::TestApp;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

pub const WAIT: Duration = Duration::from_secs(10);

/// What arrived next on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Text(Value),
    Closed(u16, String),
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

pub fn ws_url(app: &TestApp, path: &str) -> String {
    format!("ws://{}{path}", app.host_port())
}

impl Client {
    pub async fn connect(app: &TestApp) -> Self {
        Self::connect_path(app, "/api/realtime/signaling").await
    }

    pub async fn connect_path(app: &TestApp, path: &str) -> Self {
        let (ws, _) = connect_async(ws_url(app, path)).await.expect("connect");
        Self { ws }
    }

    /// Connects with a prepared request (extra headers).
    pub async fn from_request(
        request: tokio_tungstenite::tungstenite::handshake::client::Request,
    ) -> Self {
        let (ws, _) = connect_async(request).await.expect("connect");
        Self { ws }
    }

    /// Connects and joins; answers the client and its `joined` message.
    pub async fn join(app: &TestApp, token: &str, name: &str) -> (Self, Value) {
        let mut client = Self::connect(app).await;
        client
            .send(json!({"type": "join", "token": token, "name": name}))
            .await;
        let joined = client.recv().await;
        assert_eq!(joined["type"], "joined", "{joined}");
        (client, joined)
    }

    pub async fn send(&mut self, message: Value) {
        self.send_text(&message.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, message: Message) -> bool {
        self.ws.send(message).await.is_ok()
    }

    /// The next text frame as it came (raw text) or the close, skipping control frames.
    pub async fn next_raw(&mut self) -> Result<String, (u16, String)> {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing arrived in time");
            match frame {
                Some(Ok(Message::Text(text))) => return Ok(text.as_str().to_string()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(match frame {
                        Some(f) => (u16::from(f.code), f.reason.to_string()),
                        None => (1005, String::new()),
                    });
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err((1006, String::new())),
            }
        }
    }

    /// The next text message or the close, skipping control frames.
    pub async fn next(&mut self) -> Incoming {
        match self.next_raw().await {
            Ok(text) => Incoming::Text(serde_json::from_str(&text).expect("JSON")),
            Err((code, reason)) => Incoming::Closed(code, reason),
        }
    }

    /// The next text message exactly as the server wrote it; fails on a close.
    pub async fn recv_text(&mut self) -> String {
        match self.next_raw().await {
            Ok(text) => text,
            Err(close) => panic!("expected a message, got close {close:?}"),
        }
    }

    /// The next text message; fails on a close.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Incoming::Text(v) => v,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next message, which must be of this type.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let message = self.recv().await;
        assert_eq!(message["type"], kind, "{message}");
        message
    }

    /// The next message must be this `error`, and the socket must carry on.
    pub async fn expect_error(&mut self, code: &str, id: Option<&str>) -> Value {
        let message = self.expect("error").await;
        assert_eq!(message["code"], code, "{message}");
        assert_eq!(message["id"], json!(id), "{message}");
        assert!(message["description"][0].is_string(), "{message}");
        message
    }

    /// The next thing must be the close, with this code; answers the reason.
    pub async fn expect_close(&mut self, code: u16) -> String {
        match self.next().await {
            Incoming::Closed(got, reason) => {
                assert_eq!(got, code, "closed with {got} ({reason})");
                reason
            }
            Incoming::Text(v) => panic!("expected close {code}, got {v}"),
        }
    }

    /// Sends one text message as several WebSocket frames (a first frame, then
    /// continuations); answers whether every frame could be written.
    pub async fn send_fragmented(&mut self, parts: &[&str]) -> bool {
        use tokio_tungstenite::tungstenite::protocol::frame::Frame;
        use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
        for (i, part) in parts.iter().enumerate() {
            let opcode = if i == 0 { Data::Text } else { Data::Continue };
            let last = i + 1 == parts.len();
            let frame = Frame::message(part.as_bytes().to_vec(), OpCode::Data(opcode), last);
            if self.ws.send(Message::Frame(frame)).await.is_err() {
                return false;
            }
        }
        true
    }

    /// Proves the socket still works: `ping` is answered by `pong`.
    pub async fn assert_alive(&mut self) {
        self.send(json!({"type": "ping"})).await;
        self.expect("pong").await;
    }

    /// Starts the closing handshake with this code and reason.
    pub async fn close(&mut self, code: u16, reason: &str) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        self.ws
            .close(Some(CloseFrame {
                code: code.into(),
                reason: reason.to_string().into(),
            }))
            .await
            .expect("close");
    }

    /// Drops the TCP connection without a close handshake.
    pub fn drop_connection(self) {
        drop(self.ws);
    }
}
