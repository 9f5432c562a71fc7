//! The admin's view of a room's participants: list them, remove one.

use super::AppState;
use super::Authorized;
use super::forward::or_forward;
use crate::error::ApiError;
use crate::room::ParticipantState;
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;

/// `GET /api/realtime/room/{id}/participants`: `{"data": [participant...]}` in join order.
pub async fn list(
    _: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    #[derive(Serialize)]
    struct Body {
        data: Vec<ParticipantState>,
    }
    let data = match or_forward(&req, state.rooms.participants(&id).await).await {
        Ok(data) => data?,
        Err(forwarded) => return forwarded,
    };
    Ok(HttpResponse::Ok().json(Body { data }))
}

/// `DELETE /api/realtime/room/{id}/participants/{address}`: `{"participant": {...}}`.
pub async fn remove(
    _: Authorized,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    #[derive(Serialize)]
    struct Body {
        participant: ParticipantState,
    }
    let (id, address) = path.into_inner();
    let kicked = match or_forward(&req, state.rooms.kick(&id, &address).await).await {
        Ok(kicked) => kicked?,
        Err(forwarded) => return forwarded,
    };
    match kicked {
        Some(participant) => Ok(HttpResponse::Ok().json(Body { participant })),
        None => Err(ApiError::participant_does_not_exist(&address)),
    }
}
