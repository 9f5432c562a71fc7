//! `GET /api/realtime/signaling`: the signaling WebSocket (the session task and the wire
//! format are in `src/signaling/`).

use super::AppState;
use crate::error::{ApiError, Code};
use crate::signaling::session;
use actix_web::{HttpRequest, HttpResponse, web};

/// `GET /api/realtime/signaling`: upgrades to a WebSocket and hands it to a session task.
pub async fn connect(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let config = &state.signaling;
    // No frame over the limit is ever buffered: the guard fails the stream at its header.
    let body = crate::wsguard::guard(&req, body, config.max_frame_bytes).await;
    let (response, ws, frames) = actix_ws::handle(&req, body).map_err(|_| {
        ApiError::new(
            Code::InvalidValue,
            "This endpoint takes a WebSocket upgrade.",
        )
    })?;
    // Held until the socket joins or closes.
    let pending = state.pending.acquire(req.peer_addr().map(|a| a.ip()))?;
    let frames = frames
        .max_frame_size(config.max_frame_bytes)
        .aggregate_continuations()
        .max_continuation_size(config.max_frame_bytes);
    actix_web::rt::spawn(session::run(
        ws,
        frames,
        state.rooms.clone(),
        state.signaling.clone(),
        state.shutdown.clone(),
        pending,
        state.bridge.clone(),
    ));
    Ok(response)
}
