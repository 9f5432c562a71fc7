//! The admin event stream's task: the live event stream of every room's state, on the
//! socket that `GET /api/realtime/admin/events` (`src/api/admin_stream.rs`) upgraded.
//!
//! Authenticated by the `x-vcs-token` header, or (browsers cannot set headers on a
//! WebSocket) by `{"type":"auth","apiKey":...,"lastSeq"?:n}` as the first message. Browser
//! pages must come from an allowed origin. First a snapshot (or, with `lastSeq` still in
//! the log, the events after it), then every change. See `docs/admin.md`.

use super::events::Events;
use crate::auth::ApiKeys;
use crate::error::ApiError;
use crate::signaling::protocol::{ServerMessage, close};
use crate::wsguard::{PendingSlot, is_too_big};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// Time a socket has to send its `auth` message.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame an admin client may send (only `auth` and pings are expected).
pub const MAX_FRAME: usize = 4096;
/// How long the server waits for the client's close frame after sending its own.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

/// What a stream needs.
pub struct Context {
    /// To check the key of an `auth` message.
    pub api_keys: ApiKeys,
    pub events: Arc<Events>,
    /// The heartbeat.
    pub ping_interval: Duration,
    /// Turns `true` when the service shuts down.
    pub shutdown: watch::Receiver<bool>,
}

/// How the upgrade request signed in.
pub enum Upgrade {
    /// By its key header; `last_seq` is the query's.
    Authenticated { last_seq: Option<u64> },
    /// Not yet: the first message must be `auth`. The socket holds `pending`, its place
    /// among those not authenticated yet, until then.
    Pending(PendingSlot),
}

/// Runs one admin stream: first the `auth` message unless the upgrade request was
/// authenticated by its header, then the events.
pub async fn run(
    mut ws: Session,
    mut frames: actix_ws::AggregatedMessageStream,
    context: Context,
    upgrade: Upgrade,
) {
    let last_seq = match upgrade {
        Upgrade::Authenticated { last_seq } => last_seq,
        Upgrade::Pending(pending) => {
            let outcome = authenticate(&mut ws, &mut frames, &context.api_keys).await;
            drop(pending);
            match outcome {
                Ok(seq) => seq,
                Err((error, code)) => {
                    let _ = ws.text(&*ServerMessage::error(&error).text()).await;
                    let reason = if code == close::TOO_BIG {
                        "frame too large"
                    } else {
                        "not authenticated"
                    };
                    close_with(ws, &mut frames, code, reason).await;
                    return;
                }
            }
        }
    };
    stream(ws, frames, context, last_seq).await;
}

async fn authenticate(
    ws: &mut Session,
    frames: &mut actix_ws::AggregatedMessageStream,
    api_keys: &ApiKeys,
) -> Result<Option<u64>, (ApiError, u16)> {
    let refused = || (ApiError::authorization_missing(), close::INVALID_TOKEN);
    let first = tokio::time::timeout(AUTH_TIMEOUT, async {
        loop {
            match frames.recv().await {
                Some(Ok(AggregatedMessage::Text(text))) => return Ok(text),
                Some(Ok(AggregatedMessage::Ping(bytes))) => {
                    let _ = ws.pong(&bytes).await;
                }
                Some(Ok(AggregatedMessage::Pong(_))) => {}
                Some(Err(e)) if is_too_big(&e) => return Err(true),
                _ => return Err(false),
            }
        }
    })
    .await;
    let text = match first {
        Ok(Ok(text)) => text,
        Ok(Err(true)) => {
            return Err((ApiError::payload_too_large(MAX_FRAME), close::TOO_BIG));
        }
        _ => return Err(refused()),
    };
    let auth: serde_json::Value = serde_json::from_str(&text).map_err(|_| refused())?;
    if auth.get("type").and_then(|t| t.as_str()) != Some("auth") {
        return Err(refused());
    }
    // The key first, so that only a client with a good key learns about its `lastSeq`.
    let key = auth.get("apiKey").and_then(|k| k.as_str());
    api_keys.check(key).map_err(|e| (e, close::INVALID_TOKEN))?;
    match auth.get("lastSeq") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(seq) => match seq.as_u64() {
            Some(seq) => Ok(Some(seq)),
            None => Err((ApiError::invalid_value("lastSeq"), close::INVALID_TOKEN)),
        },
    }
}

async fn stream(
    mut ws: Session,
    mut frames: actix_ws::AggregatedMessageStream,
    context: Context,
    last_seq: Option<u64>,
) {
    let mut shutdown = context.shutdown.clone();
    let subscription = context.events.subscribe(last_seq);
    for text in subscription.backlog {
        if ws.text(&*text).await.is_err() {
            return;
        }
    }
    let mut live = subscription.live;
    let mut heartbeat = tokio::time::interval(context.ping_interval);
    let (code, reason) = loop {
        tokio::select! {
            _ = shutdown.changed() => break (close::GOING_AWAY, "server shutting down"),
            event = live.recv() => match event {
                Some(text) => {
                    if ws.text(&*text).await.is_err() {
                        return;
                    }
                }
                None => break (close::TOO_SLOW, "too slow: reconnect with lastSeq"),
            },
            frame = frames.recv() => match frame {
                Some(Ok(AggregatedMessage::Ping(bytes))) => {
                    let _ = ws.pong(&bytes).await;
                }
                Some(Ok(AggregatedMessage::Text(_) | AggregatedMessage::Binary(_) | AggregatedMessage::Pong(_))) => {}
                // Answer the closing handshake, echoing the client's code.
                Some(Ok(AggregatedMessage::Close(reason))) => {
                    let echo = reason.map(|r| CloseReason { code: r.code, description: None });
                    let _ = ws.close(echo).await;
                    return;
                }
                None => return,
                Some(Err(e)) if is_too_big(&e) => {
                    let _ = ws.text(&*ServerMessage::error(&ApiError::payload_too_large(MAX_FRAME)).text()).await;
                    break (close::TOO_BIG, "frame too large");
                }
                Some(Err(_)) => break (close::PROTOCOL, "unreadable frame"),
            },
            _ = heartbeat.tick() => {
                if ws.ping(b"").await.is_err() {
                    return;
                }
            }
        }
    };
    close_with(ws, &mut frames, code, reason).await;
}

/// Sends a close frame, then waits a while for the client's before the connection ends
/// (RFC 6455 §7.1.1). Ending it at once would make a client that is still reading earlier
/// messages, and sends anything meanwhile (a pong), get a connection reset instead of
/// those messages and the close code.
async fn close_with(
    ws: Session,
    frames: &mut actix_ws::AggregatedMessageStream,
    code: u16,
    reason: &str,
) {
    // A clone sends the close frame; `ws` keeps the connection open meanwhile.
    let _ = ws
        .clone()
        .close(Some(CloseReason {
            code: CloseCode::Other(code),
            description: Some(reason.to_string()),
        }))
        .await;
    let _ = tokio::time::timeout(CLOSE_LINGER, async {
        while let Some(Ok(frame)) = frames.recv().await {
            if matches!(frame, AggregatedMessage::Close(_)) {
                break;
            }
        }
    })
    .await;
    drop(ws);
}
