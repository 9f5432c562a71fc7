//! The admin's view of a room's participants: list them, remove one.

use super::AppState;
use super::Authorized;
use crate::error::ApiError;
use crate::room::ParticipantState;
use actix_web::{HttpResponse, web};
use serde::Serialize;

/// `GET /api/realtime/room/{id}/participants`: `{"data": [participant...]}` in join order.
pub async fn list(
    _: Authorized,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    #[derive(Serialize)]
    struct Body {
        data: Vec<ParticipantState>,
    }
    let room = state
        .rooms
        .get(&id)
        .await
        .ok_or_else(|| ApiError::room_not_found(&id))?;
    let data = room
        .participants()
        .await
        .ok_or_else(|| ApiError::room_not_found(&id))?;
    Ok(HttpResponse::Ok().json(Body { data }))
}

/// `DELETE /api/realtime/room/{id}/participants/{address}`: `{"participant": {...}}`.
pub async fn remove(
    _: Authorized,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    #[derive(Serialize)]
    struct Body {
        participant: ParticipantState,
    }
    let (id, address) = path.into_inner();
    let room = state
        .rooms
        .get(&id)
        .await
        .ok_or_else(|| ApiError::room_not_found(&id))?;
    match room.kick(&address).await {
        Ok(Some(participant)) => Ok(HttpResponse::Ok().json(Body { participant })),
        Ok(None) => Err(ApiError::participant_does_not_exist(&address)),
        Err(()) => Err(ApiError::room_not_found(&id)),
    }
}
