//! `GET /api/realtime/admin/events`: the admin event stream's WebSocket (the stream task
//! is in `src/admin/stream.rs`). See `docs/admin.md`.

use super::AppState;
use crate::admin::stream::{self, MAX_FRAME};
use crate::auth::API_KEY_HEADER;
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
    let header_key = req.headers().get(API_KEY_HEADER);
    let authenticated = match header_key {
        Some(value) => {
            state
                .api_keys
                .check(Some(value.to_str().unwrap_or("\u{fffd}")))?;
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
    let (response, ws, frames) = actix_ws::handle(&req, body).map_err(|_| {
        ApiError::new(
            Code::InvalidValue,
            "This endpoint takes a WebSocket upgrade.",
        )
    })?;
    let frames = frames
        .max_frame_size(MAX_FRAME)
        .aggregate_continuations()
        .max_continuation_size(MAX_FRAME);
    let context = stream::Context {
        api_keys: state.api_keys.clone(),
        events: state.events.clone(),
        ping_interval: state.signaling.ping_interval,
        shutdown: state.shutdown.clone(),
    };
    actix_web::rt::spawn(stream::run(ws, frames, context, authenticated, last_seq));
    Ok(response)
}

/// Browser pages send `Origin`; other clients do not, and are let in by their API key.
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
        let origin_host = origin.split_once("://").map_or("", |(_, rest)| rest);
        return !host.is_empty() && origin_host.eq_ignore_ascii_case(host);
    }
    allowed
        .iter()
        .any(|a| a.trim_end_matches('/').eq_ignore_ascii_case(origin))
}
