//! The WebSocket client of the signaling and admin tests (tokio-tungstenite): signaling
//! participants and admin event streams. Each test crate mounts this file with
//! `#[path = "../support/ws.rs"] mod ws;` and uses what it needs.

use crate::support::{API_KEY, TestApp};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::{Error, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

/// How long anything expected may take to arrive.
pub const WAIT: Duration = Duration::from_secs(10);
pub const EVENTS: &str = "/api/realtime/admin/events";
pub const SIGNALING: &str = "/api/realtime/signaling";

/// What arrived next on a socket.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    Text(Value),
    Closed(u16, String),
}

pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// A WebSocket upgrade request for `path` of the app.
pub fn request(app: &TestApp, path: &str) -> Request {
    format!("ws://{}{path}", app.host_port())
        .into_client_request()
        .unwrap()
}

/// A request with one more header.
pub fn with_header(mut request: Request, name: &'static str, value: &str) -> Request {
    request.headers_mut().insert(name, value.parse().unwrap());
    request
}

/// Tries an upgrade: `Ok(client)` on 101, `Err((status, body))` when refused.
pub async fn try_connect(request: Request) -> Result<Client, (u16, Value)> {
    match connect_async(request).await {
        Ok((ws, response)) => {
            assert_eq!(response.status(), 101);
            Ok(Client { ws })
        }
        Err(Error::Http(response)) => {
            let body = response
                .body()
                .as_ref()
                .map(|b| serde_json::from_slice(b).expect("a JSON error body"))
                .unwrap_or(Value::Null);
            Err((response.status().as_u16(), body))
        }
        Err(e) => panic!("connect: {e}"),
    }
}

impl Client {
    /// A signaling socket, not joined yet.
    pub async fn connect(app: &TestApp) -> Self {
        Self::connect_request(request(app, SIGNALING)).await
    }

    /// Connects with a prepared upgrade request (another path, extra headers).
    pub async fn connect_request(request: Request) -> Self {
        match try_connect(request).await {
            Ok(c) => c,
            Err((status, body)) => panic!("upgrade refused: {status} {body}"),
        }
    }

    /// Connects over a socket with a small receive buffer, so that a client that stops
    /// reading soon stops the server's writes.
    pub async fn connect_small_buffer(request: Request, bytes: u32) -> Self {
        let uri = request.uri().clone();
        let addr = format!("{}:{}", uri.host().unwrap(), uri.port_u16().unwrap());
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
        let (ws, _) = tokio_tungstenite::client_async(request, MaybeTlsStream::Plain(stream))
            .await
            .expect("connect");
        Self { ws }
    }

    /// An admin event stream authenticated by the key in its first message.
    pub async fn stream(app: &TestApp, last_seq: Option<u64>) -> Self {
        let mut c = Self::connect_request(request(app, EVENTS)).await;
        let mut auth = json!({"type": "auth", "apiKey": API_KEY});
        if let Some(seq) = last_seq {
            auth["lastSeq"] = seq.into();
        }
        c.send(auth).await;
        c
    }

    /// A participant: connects to signaling, joins, answers the client and its `joined`.
    pub async fn join(app: &TestApp, token: &str, name: &str) -> (Self, Value) {
        Self::join_with(app, json!({"type": "join", "token": token, "name": name})).await
    }

    /// Joins with this `join` message.
    pub async fn join_with(app: &TestApp, join: Value) -> (Self, Value) {
        let mut c = Self::connect(app).await;
        c.send(join).await;
        let joined = c.expect("joined").await;
        (c, joined)
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

    /// Sends any frame; answers whether it could be written.
    pub async fn send_raw(&mut self, message: Message) -> bool {
        self.ws.send(message).await.is_ok()
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

    /// The next text frame as it came or the close (code and reason), skipping control
    /// frames and waiting at most `wait`.
    pub async fn next_raw_within(&mut self, wait: Duration) -> Result<String, (u16, String)> {
        loop {
            let frame = tokio::time::timeout(wait, self.ws.next())
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
                Some(Err(e)) => return Err((1006, e.to_string())),
                None => return Err((1006, String::new())),
            }
        }
    }

    /// The next text message or the close, waiting at most `wait`.
    pub async fn recv_within(&mut self, wait: Duration) -> Incoming {
        match self.next_raw_within(wait).await {
            Ok(text) => Incoming::Text(serde_json::from_str(&text).expect("JSON")),
            Err((code, reason)) => Incoming::Closed(code, reason),
        }
    }

    /// The next text message or the close, skipping control frames.
    pub async fn next(&mut self) -> Incoming {
        self.recv_within(WAIT).await
    }

    /// The next text message exactly as the server wrote it; fails on a close.
    pub async fn recv_text(&mut self) -> String {
        match self.next_raw_within(WAIT).await {
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

    /// Proves a signaling socket works and nothing more has arrived: a `ping` is answered
    /// by the very next message, `pong`.
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

/// The usual start of a signaling test: a room created over REST with A and B joined, in
/// that order, and A has seen B's `participantJoined` (so nothing of the set-up is left
/// unread on either socket).
pub struct Pair {
    pub room: Value,
    pub a: Client,
    pub joined_a: Value,
    pub b: Client,
    pub joined_b: Value,
}

impl Pair {
    /// A default room (`{}`) with A and B joined.
    pub async fn join(app: &TestApp) -> Self {
        Self::join_room(app, json!({})).await
    }

    /// A room created with this body, with A and B joined.
    pub async fn join_room(app: &TestApp, body: Value) -> Self {
        let room = app.new_room(body).await;
        let token = room["token"].as_str().unwrap();
        let (mut a, joined_a) = Client::join(app, token, "A").await;
        let (b, joined_b) = Client::join(app, token, "B").await;
        let announced = a.expect("participantJoined").await;
        assert_eq!(
            announced["participant"]["address"], joined_b["address"],
            "{announced}"
        );
        Self {
            room,
            a,
            joined_a,
            b,
            joined_b,
        }
    }
}
