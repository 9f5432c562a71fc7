//! Liveness never depends on the store; readiness does.

use super::AppState;
use crate::error::ApiError;
use actix_web::{HttpResponse, web};
use serde_json::json;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.rooms.services().store.ping().await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

/// Prometheus metrics, in the text exposition format.
pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    let (mesh, sfu, participants) = state.events.gauges();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::METRICS.render(mesh, sfu, participants))
}
