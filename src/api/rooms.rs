//! The room endpoints of the published REST API.

use super::AppState;
use super::Authorized;
use super::forward::{activate, or_forward};
use crate::error::ApiError;
use crate::model::{ConferenceType, NewRoom, RoomRecord, RoomView};
use actix_web::http::header;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

const NAME_MAX: usize = 512;
const DESCRIPTION_MAX: usize = 4096;
const PAGE_DEFAULT: u64 = 25;
const PAGE_MAX: u64 = 100;

/// `POST /api/realtime/room`
pub async fn create(
    _: Authorized,
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let body = read_body(&req, payload, state.settings.max_body_bytes).await?;
    let fields = json_object(&req, &body)?;
    let new = new_room(&fields, state.rooms.limits().mesh)?;
    let created = state.rooms.create(new).await?;
    for owner in &created.place_elsewhere {
        if activate(&req, owner, &created.record.id).await {
            break;
        }
    }
    Ok(room_envelope(&state, &created.record))
}

/// `GET /api/realtime/room/{id}`
pub async fn fetch(
    _: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let room = match or_forward(&req, state.rooms.fetch(&id).await).await {
        Ok(room) => room?,
        Err(forwarded) => return forwarded,
    };
    Ok(HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .body(room))
}

#[derive(Deserialize)]
pub struct ListQuery {
    #[serde(rename = "numberOfRecords")]
    number_of_records: Option<String>,
    token: Option<String>,
}

/// `GET /api/realtime/room?numberOfRecords=&token=`
pub async fn list(
    _: Authorized,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let limit = match query.number_of_records.as_deref() {
        None => PAGE_DEFAULT,
        Some(raw) => whole_number("numberOfRecords", raw, 1, PAGE_MAX)?,
    };
    let after = match query.token.as_deref() {
        None | Some("") => None,
        Some(token) => Some(
            state
                .page_tokens
                .decode(token)
                .ok_or_else(|| ApiError::invalid_token(token))?,
        ),
    };
    let page = state.rooms.page(after.as_ref(), limit as usize).await?;
    let limits = state.rooms.limits();
    Ok(HttpResponse::Ok().json(ListBody {
        data: page.rooms.iter().map(|r| r.view(&limits)).collect(),
        token: page.next.map(|cursor| state.page_tokens.encode(&cursor)),
    }))
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    id: Option<String>,
}

/// `DELETE /api/realtime/room?id=`
pub async fn delete_by_query(
    _: Authorized,
    req: HttpRequest,
    query: web::Query<DeleteQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    match query.id.as_deref() {
        None | Some("") => Err(ApiError::parameter_missing("id")),
        Some(id) => delete(&req, &state, id).await,
    }
}

/// `DELETE /api/realtime/room/{id}`: the same answers as the query form.
pub async fn delete_by_path(
    _: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    delete(&req, &state, &id).await
}

/// `DELETE /api/realtime/room/`: the path form with an empty id.
pub async fn delete_without_id(_: Authorized) -> Result<HttpResponse, ApiError> {
    Err(ApiError::parameter_missing("id"))
}

async fn delete(req: &HttpRequest, state: &AppState, id: &str) -> Result<HttpResponse, ApiError> {
    let room = match or_forward(req, state.rooms.delete(id).await).await {
        Ok(room) => room.map_err(ApiError::from_delete)?,
        Err(forwarded) => return forwarded,
    };
    Ok(room_envelope(state, &room))
}

/// `{"room": {...}}`, as POST and DELETE answer.
fn room_envelope(state: &AppState, room: &RoomRecord) -> HttpResponse {
    #[derive(Serialize)]
    struct Envelope<'a> {
        room: RoomView<'a>,
    }
    HttpResponse::Ok().json(Envelope {
        room: room.view(&state.rooms.limits()),
    })
}

/// `{"data": [...], "token": "..."}`; no `token` key on the last page.
#[derive(Serialize)]
struct ListBody<'a> {
    data: Vec<RoomView<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

/// Reads the whole body, refusing more than `limit` bytes (413) without reading it all. A
/// body cut by its deadline or a shutdown (`crate::body`) answers 408 or 503.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(ApiError::payload_too_large(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| crate::body::payload_error(&e))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::payload_too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Applies the contract's media-type rules and parses the body into a JSON object.
/// No body at all (with a JSON content type, or with none) is an empty object.
fn json_object(req: &HttpRequest, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|value| value.to_str().unwrap_or(""));
    json_object_of(content_type, body)
}

/// [`json_object`] on the `Content-Type` value (`None` when absent) and the body.
fn json_object_of(content_type: Option<&str>, body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match content_type {
        None if body.is_empty() => return Ok(Map::new()),
        None => return Err(ApiError::unsupported_media_type()),
        Some(value) if !is_json_media_type(value) => {
            return Err(ApiError::unsupported_media_type());
        }
        Some(_) => {}
    }
    if body.is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => Err(ApiError::invalid_json()),
    }
}

/// `application/json`, with any parameters (`; charset=utf-8`).
fn is_json_media_type(value: &str) -> bool {
    let essence = value.split(';').next().unwrap_or("").trim();
    essence.eq_ignore_ascii_case("application/json")
}

/// The whole create-room body check, from the `Content-Type` value (`None` when absent) and
/// the body bytes to the validated request: what `create` does before it touches the store.
/// The fuzz target `create_room` drives this (see `crate::fuzzing`).
pub(crate) fn parse_create_body(
    content_type: Option<&str>,
    body: &[u8],
    mesh_limit: u32,
) -> Result<NewRoom, ApiError> {
    new_room(&json_object_of(content_type, body)?, mesh_limit)
}

/// Validates the fields of a create request, in the order of the published table.
/// Unknown fields are ignored; `null` counts as absent.
fn new_room(fields: &Map<String, Value>, mesh_limit: u32) -> Result<NewRoom, ApiError> {
    let field = |name: &str| fields.get(name).filter(|v| !v.is_null());
    let text = |name: &str, max: usize| -> Result<Option<String>, ApiError> {
        match field(name) {
            None => Ok(None),
            Some(Value::String(s)) if s.chars().count() > max => {
                Err(ApiError::string_size(name, max))
            }
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(ApiError::invalid_value(name)),
        }
    };
    let name = text("name", NAME_MAX)?;
    let description = text("description", DESCRIPTION_MAX)?;
    let conference_type = match field("conferenceType") {
        None => None,
        Some(Value::String(s)) => Some(
            ConferenceType::parse(s).ok_or_else(|| ApiError::invalid_value("conferenceType"))?,
        ),
        Some(_) => return Err(ApiError::invalid_value("conferenceType")),
    };
    const AUTO: &str = "autoUpgradeParticipantCount";
    let auto_upgrade = match field(AUTO) {
        None => None,
        Some(Value::String(s)) => Some(whole_number(AUTO, s, 2, mesh_limit.into())? as u32),
        Some(Value::Number(n)) => Some(json_whole_number(AUTO, n, 2, mesh_limit.into())? as u32),
        Some(_) => return Err(ApiError::invalid_value(AUTO)),
    };
    Ok(NewRoom {
        name,
        description,
        conference_type,
        auto_upgrade_participant_count: auto_upgrade,
    })
}

/// A whole number written as text, within `min..=max`: `BASE-00016` when it is not a whole
/// number, `BASE-00015` when it is one outside the range (however large or negative).
fn whole_number(name: &str, raw: &str, min: u64, max: u64) -> Result<u64, ApiError> {
    let digits = raw.strip_prefix(['-', '+']).unwrap_or(raw);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::invalid_value(name));
    }
    match raw.parse::<i128>() {
        Ok(n) if n >= i128::from(min) && n <= i128::from(max) => Ok(n as u64),
        _ => Err(ApiError::number_size(name, min, max)),
    }
}

/// The same for a JSON number: `4` and `4.0` are whole, `2.5` is not.
fn json_whole_number(
    name: &str,
    n: &serde_json::Number,
    min: u64,
    max: u64,
) -> Result<u64, ApiError> {
    let value = if let Some(i) = n.as_i64() {
        i as f64
    } else if let Some(u) = n.as_u64() {
        u as f64
    } else {
        n.as_f64()
            .filter(|f| f.is_finite() && f.fract() == 0.0)
            .ok_or_else(|| ApiError::invalid_value(name))?
    };
    if value >= min as f64 && value <= max as f64 {
        Ok(value as u64)
    } else {
        Err(ApiError::number_size(name, min, max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;

    #[test]
    fn whole_numbers() {
        assert_eq!(whole_number("n", "10", 1, 100), Ok(10));
        assert_eq!(
            whole_number("n", "0", 1, 100).unwrap_err().code,
            Code::NumberSize
        );
        assert_eq!(
            whole_number("n", "-5", 1, 100).unwrap_err().code,
            Code::NumberSize
        );
        assert_eq!(
            whole_number("n", "99999999999999999999999999999999999999999", 1, 100)
                .unwrap_err()
                .code,
            Code::NumberSize
        );
        for bad in ["", "2.5", "ten", "1e2", " 5", "-"] {
            assert_eq!(
                whole_number("n", bad, 1, 100).unwrap_err().code,
                Code::InvalidValue,
                "{bad:?}"
            );
        }
    }

    #[test]
    fn json_numbers() {
        let n = |v: &str| serde_json::from_str::<serde_json::Number>(v).unwrap();
        assert_eq!(json_whole_number("n", &n("4"), 2, 7), Ok(4));
        assert_eq!(json_whole_number("n", &n("4.0"), 2, 7), Ok(4));
        assert_eq!(
            json_whole_number("n", &n("2.5"), 2, 7).unwrap_err().code,
            Code::InvalidValue
        );
        assert_eq!(
            json_whole_number("n", &n("1e300"), 2, 7).unwrap_err().code,
            Code::NumberSize
        );
        assert_eq!(
            json_whole_number("n", &n("-3"), 2, 7).unwrap_err().code,
            Code::NumberSize
        );
    }

    #[test]
    fn media_types() {
        assert!(is_json_media_type("application/json"));
        assert!(is_json_media_type("Application/JSON; charset=utf-8"));
        assert!(!is_json_media_type("text/plain"));
        assert!(!is_json_media_type("application/jsonx"));
    }
}
