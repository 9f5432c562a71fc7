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

    /// The next text message or the close, skipping control frames.
    pub async fn next(&mut self) -> Incoming {
        loop {
            let frame = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("nothing arrived in time");
            match frame {
                Some(Ok(Message::Text(text))) => {
                    return Incoming::Text(serde_json::from_str(text.as_str()).expect("JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return match frame {
                        Some(f) => Incoming::Closed(u16::from(f.code), f.reason.to_string()),
                        None => Incoming::Closed(1005, String::new()),
                    };
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Incoming::Closed(1006, String::new()),
            }
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

    /// The next thing must be the close, with this code.
    pub async fn expect_close(&mut self, code: u16) {
        match self.next().await {
            Incoming::Closed(got, reason) => assert_eq!(got, code, "closed with {got} ({reason})"),
            Incoming::Text(v) => panic!("expected close {code}, got {v}"),
        }
    }

    /// Proves the socket still works: `ping` is answered by `pong`.
    pub async fn assert_alive(&mut self) {
        self.send(json!({"type": "ping"})).await;
        self.expect("pong").await;
    }

    /// Drops the TCP connection without a close handshake.
    pub fn drop_connection(self) {
        drop(self.ws);
    }
}
