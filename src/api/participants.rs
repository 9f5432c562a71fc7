//! The admin's view of a room's participants: list them, remove one.

use super::AppState;
use super::Authorized;
use super::forward::or_forward;
use super::rooms::whole_number;
use crate::error::ApiError;
use crate::room::{Ban, Kicked, ParticipantState};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::{Deserialize, Serialize};

/// A ban lasts at least a second and at most a year (and never past the room's end).
pub const BAN_SECONDS_MAX: u64 = 365 * 86_400;

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

#[derive(Deserialize)]
pub struct RemoveQuery {
    ban: Option<String>,
    #[serde(rename = "banSeconds")]
    ban_seconds: Option<String>,
}

/// The ban a removal asks for: `ban=true` (until the room ends), `banSeconds=n` (with
/// `ban=true` or alone), nothing with `ban=false` or neither.
pub(crate) fn ban_of(ban: Option<&str>, seconds: Option<&str>) -> Result<Option<Ban>, ApiError> {
    let ban = match ban {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiError::invalid_value("ban")),
    };
    let seconds = seconds
        .map(|raw| whole_number("banSeconds", raw, 1, BAN_SECONDS_MAX))
        .transpose()?;
    match (ban, seconds) {
        (Some(false), Some(_)) => Err(ApiError::invalid_value("banSeconds")),
        (_, Some(seconds)) => Ok(Some(Ban::Seconds(seconds))),
        (Some(true), None) => Ok(Some(Ban::RoomEnd)),
        _ => Ok(None),
    }
}

/// `DELETE /api/realtime/room/{id}/participants/{address}?ban=&banSeconds=`:
/// `{"participant": {...}}`, with `bannedUntil` when its identity was banned.
pub async fn remove(
    _: Authorized,
    req: HttpRequest,
    path: web::Path<(String, String)>,
    query: web::Query<RemoveQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body {
        participant: Box<ParticipantState>,
        #[serde(skip_serializing_if = "Option::is_none")]
        banned_until: Option<u64>,
    }
    let (id, address) = path.into_inner();
    let ban = ban_of(query.ban.as_deref(), query.ban_seconds.as_deref())?;
    let kicked = match or_forward(&req, state.rooms.kick(&id, &address, ban).await).await {
        Ok(kicked) => kicked?,
        Err(forwarded) => return forwarded,
    };
    match kicked {
        Kicked::Removed {
            participant,
            banned_until,
        } => Ok(HttpResponse::Ok().json(Body {
            participant,
            banned_until,
        })),
        Kicked::Missing => Err(ApiError::participant_does_not_exist(&address)),
        Kicked::WithoutIdentity => Err(ApiError::participant_without_identity(&address)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_are_read_from_the_query() {
        assert_eq!(ban_of(None, None), Ok(None));
        assert_eq!(ban_of(Some("false"), None), Ok(None));
        assert_eq!(ban_of(Some("true"), None), Ok(Some(Ban::RoomEnd)));
        assert_eq!(
            ban_of(Some("true"), Some("600")),
            Ok(Some(Ban::Seconds(600)))
        );
        assert_eq!(ban_of(None, Some("600")), Ok(Some(Ban::Seconds(600))));
        assert_eq!(
            ban_of(Some("yes"), None),
            Err(ApiError::invalid_value("ban"))
        );
        assert_eq!(
            ban_of(Some("false"), Some("600")),
            Err(ApiError::invalid_value("banSeconds"))
        );
        assert_eq!(
            ban_of(None, Some("0")),
            Err(ApiError::number_size("banSeconds", 1, BAN_SECONDS_MAX))
        );
        assert_eq!(
            ban_of(None, Some("soon")),
            Err(ApiError::invalid_value("banSeconds"))
        );
    }
}
