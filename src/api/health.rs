//! Liveness never depends on the store; readiness does.

use crate::error::ApiError;
use crate::startup::AppState;
use actix_web::{HttpResponse, web};
use serde_json::json;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.rooms.services().store.ping().await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}
