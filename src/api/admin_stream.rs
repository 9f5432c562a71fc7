//! `GET /api/realtime/admin/events`: the admin event stream's WebSocket (the stream task
//! is in `src/admin/stream.rs`). See `docs/admin.md`.

use super::AppState;
use crate::admin::stream::{self, MAX_FRAME, Upgrade};
use crate::auth::presented_key;
use crate::error::{ApiError, Code};
use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Deserialize;

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
    // No frame over the limit is ever buffered: the guard fails the stream at its header.
    let body = crate::wsguard::guard(&req, body, MAX_FRAME).await;
    let (response, ws, frames) = actix_ws::handle(&req, body).map_err(|_| {
        ApiError::new(
            Code::InvalidValue,
            "This endpoint takes a WebSocket upgrade.",
        )
    })?;
    // A socket that still has to authenticate holds a place among the pending ones.
    let upgrade = if authenticated {
        Upgrade::Authenticated { last_seq }
    } else {
        Upgrade::Pending(state.pending.acquire(req.peer_addr().map(|a| a.ip()))?)
    };
    let frames = frames
        .max_frame_size(MAX_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME);
    let context = stream::Context {
        api_keys: state.api_keys.clone(),
        events: state.admin_events.clone(),
        ping_interval: state.signaling.ping_interval,
        shutdown: state.shutdown.clone(),
    };
    actix_web::rt::spawn(stream::run(ws, frames, context, upgrade));
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
