//! `GET /api/realtime/admin/events`: the live event stream of every room's state.
//!
//! Authenticated by the `x-vcs-token` header, or (browsers cannot set headers on a
//! WebSocket) by `{"type":"auth","apiKey":...,"lastSeq"?:n}` as the first message. Browser
//! pages must come from an allowed origin. First a snapshot (or, with `lastSeq` still in
//! the log, the events after it), then every change. See `docs/admin.md`.

use crate::auth::presented_key;
use crate::error::{ApiError, Code};
use crate::signaling::protocol::{ServerMessage, close};
use crate::startup::AppState;
use crate::wsguard::is_too_big;
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Session};
use serde::Deserialize;
use std::time::Duration;

/// Time a socket has to send its `auth` message.
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest frame an admin client may send (only `auth` and pings are expected).
const MAX_FRAME: usize = 4096;
/// How long the server waits for the client's close frame after sending its own.
const CLOSE_LINGER: Duration = Duration::from_secs(5);

#[derive(Deserialize)]
pub struct StreamQuery {
    #[serde(rename = "lastSeq")]
    last_seq: Option<String>,
}

pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    query: web::Query<StreamQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !origin_allowed(&req, &state.settings.admin_allowed_origins) {
        return Err(ApiError::forbidden_origin());
    }
    // Two key headers are refused; an empty one is no key: the client signs in by its
    // first message.
    let header_key = presented_key(req.headers())?.filter(|v| !v.trim().is_empty());
    let authenticated = match header_key {
        Some(key) => {
            state.api_keys.check(Some(key))?;
            true
        }
        None => false,
    };
    let last_seq = match query.last_seq.as_deref() {
        None | Some("") => None,
        Some(raw) => Some(
            raw.parse::<u64>()
                .map_err(|_| ApiError::invalid_value("lastSeq"))?,
        ),
    };
    let body = crate::wsguard::guard(&req, body, MAX_FRAME).await;
    let (response, ws, frames) = actix_ws::handle(&req, body).map_err(|_| {
        ApiError::new(
            Code::InvalidValue,
            "This endpoint takes a WebSocket upgrade.",
        )
    })?;
    // A socket that still has to authenticate holds a place among the pending ones.
    let pending = if authenticated {
        None
    } else {
        Some(state.pending.acquire(req.peer_addr().map(|a| a.ip()))?)
    };
    let frames = frames
        .max_frame_size(MAX_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME);
    let state = state.into_inner();
    actix_web::rt::spawn(async move {
        let mut frames = frames;
        let mut ws = ws;
        let last_seq = if authenticated {
            last_seq
        } else {
            let outcome = authenticate(&mut ws, &mut frames, &state).await;
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
        };
        stream(ws, frames, state, last_seq).await;
    });
    Ok(response)
}

/// Browser pages send `Origin`; other clients do not, and are let in by their API key.
/// With no list of allowed origins, only the service's own pages are: the `Origin` must be
/// the request's own scheme and `Host` (`https://host` is not the origin of `http://host`).
/// The request's scheme is the connection's, or the one a proxy in front names in
/// `Forwarded`/`X-Forwarded-Proto` (which a browser page cannot set).
fn origin_allowed(req: &HttpRequest, allowed: &[String]) -> bool {
    let Some(origin) = req
        .headers()
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
    else {
        return true;
    };
    if allowed.is_empty() {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let scheme = match req.connection_info().scheme().to_ascii_lowercase().as_str() {
            "https" | "wss" => "https",
            _ => "http",
        };
        let Some((origin_scheme, origin_host)) = origin.split_once("://") else {
            return false;
        };
        return !host.is_empty()
            && origin_scheme.eq_ignore_ascii_case(scheme)
            && origin_host.eq_ignore_ascii_case(host);
    }
    allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}

async fn authenticate(
    ws: &mut Session,
    frames: &mut actix_ws::AggregatedMessageStream,
    state: &AppState,
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
    state
        .api_keys
        .check(key)
        .map_err(|e| (e, close::INVALID_TOKEN))?;
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
    state: std::sync::Arc<AppState>,
    last_seq: Option<u64>,
) {
    let mut shutdown = state.shutdown.clone();
    let subscription = state.rooms.services().events.subscribe(last_seq);
    for text in subscription.backlog {
        if ws.text(&*text).await.is_err() {
            return;
        }
    }
    let mut live = subscription.live;
    let mut heartbeat = tokio::time::interval(state.rooms.services().signaling.ping_interval);
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
