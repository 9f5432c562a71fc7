//! Who may join a room: participant tokens, and the rotation of the room token. (Bans
//! come with the removal of a participant, in `participants`.)

use super::AppState;
use super::Authorized;
use super::forward::or_forward;
use super::rooms::{json_object, json_whole_number, read_body, room_envelope, whole_number};
use crate::error::ApiError;
use crate::token::{Grant, Permissions};
use actix_web::{HttpRequest, HttpResponse, web};
use serde::Serialize;
use serde_json::{Map, Value};

/// Longest identity, in characters.
pub const IDENTITY_MAX: usize = 256;
/// Longest participant name, in characters (as in `join`).
const NAME_MAX: usize = 512;
/// Longest `participantInfo`, as JSON text, in bytes.
pub const INFO_MAX: usize = 4096;
/// A participant token lives at least a second and at most 30 days.
pub const TTL_MIN: u64 = 1;
pub const TTL_MAX: u64 = 30 * 86_400;

/// `POST /api/realtime/room/{id}/token`: a participant token for one identity.
pub async fn issue(
    _: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Body<'a> {
        token: String,
        room_id: &'a str,
        identity: &'a str,
        /// Milliseconds since the epoch, as every time of the API.
        expires_at: u64,
    }
    let body = read_body(&req, payload, state.settings.max_body_bytes).await?;
    let fields = json_object(&req, &body)?;
    let (grant, ttl) = token_request(&fields, state.settings.room_token_ttl_seconds)?;
    let identity = grant.identity.clone();
    // Any node can issue it (it needs only the room's nonce): never forwarded.
    let (token, exp) = state.rooms.participant_token(&id, grant, ttl).await?;
    Ok(HttpResponse::Ok().json(Body {
        token,
        room_id: &id,
        identity: &identity,
        expires_at: exp * 1000,
    }))
}

/// `POST /api/realtime/room/{id}/token/rotate`: `{"room": {...}}` with the new room token.
pub async fn rotate(
    _: Authorized,
    req: HttpRequest,
    id: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let room = match or_forward(&req, state.rooms.rotate_token(&id).await).await {
        Ok(room) => room?,
        Err(forwarded) => return forwarded,
    };
    Ok(room_envelope(&state, &room))
}

/// Validates a participant-token request: the grant and the TTL (`default_ttl` when
/// absent). Unknown fields are ignored; `null` counts as absent.
pub(crate) fn token_request(
    fields: &Map<String, Value>,
    default_ttl: u64,
) -> Result<(Grant, u64), ApiError> {
    let field = |name: &str| fields.get(name).filter(|v| !v.is_null());
    let identity = match field("identity") {
        None => return Err(ApiError::parameter_missing("identity")),
        Some(Value::String(s)) if s.chars().count() > IDENTITY_MAX => {
            return Err(ApiError::string_size("identity", IDENTITY_MAX));
        }
        Some(Value::String(s)) if !s.trim().is_empty() && !s.chars().any(char::is_control) => {
            s.clone()
        }
        Some(_) => return Err(ApiError::invalid_value("identity")),
    };
    let name = match field("name") {
        None => None,
        Some(Value::String(s)) if s.chars().count() > NAME_MAX => {
            return Err(ApiError::string_size("name", NAME_MAX));
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err(ApiError::invalid_value("name")),
    };
    let participant_info = match field("participantInfo") {
        None => None,
        Some(info @ Value::Object(_)) if info.to_string().len() > INFO_MAX => {
            return Err(ApiError::string_size("participantInfo", INFO_MAX));
        }
        Some(info @ Value::Object(_)) => Some(info.clone()),
        Some(_) => return Err(ApiError::invalid_value("participantInfo")),
    };
    let flag = |name: &str| match field(name) {
        None => Ok(true),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(ApiError::invalid_value(name)),
    };
    let permissions = Permissions {
        can_publish: flag("canPublish")?,
        can_subscribe: flag("canSubscribe")?,
        can_send_messages: flag("canSendMessages")?,
    };
    const TTL: &str = "ttlSeconds";
    let ttl = match field(TTL) {
        None => default_ttl.clamp(TTL_MIN, TTL_MAX),
        Some(Value::String(s)) => whole_number(TTL, s, TTL_MIN, TTL_MAX)?,
        Some(Value::Number(n)) => json_whole_number(TTL, n, TTL_MIN, TTL_MAX)?,
        Some(_) => return Err(ApiError::invalid_value(TTL)),
    };
    Ok((
        Grant {
            identity,
            name,
            participant_info,
            permissions,
        },
        ttl,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Code;
    use serde_json::json;

    fn request(body: Value) -> Result<(Grant, u64), ApiError> {
        token_request(body.as_object().unwrap(), 3600)
    }

    #[test]
    fn a_bare_identity_gets_every_permission_and_the_default_ttl() {
        let (grant, ttl) = request(json!({"identity": "alice"})).unwrap();
        assert_eq!(grant.identity, "alice");
        assert_eq!(grant.permissions, Permissions::default());
        assert_eq!(
            (grant.name, grant.participant_info, ttl),
            (None, None, 3600)
        );
    }

    #[test]
    fn every_field_is_taken() {
        let (grant, ttl) = request(json!({"identity": "ünï 1", "name": "Ann",
            "participantInfo": {"a": 1}, "canPublish": false, "canSubscribe": true,
            "canSendMessages": false, "ttlSeconds": "600"}))
        .unwrap();
        assert_eq!(grant.name.as_deref(), Some("Ann"));
        assert_eq!(grant.participant_info, Some(json!({"a": 1})));
        assert!(!grant.permissions.can_publish && grant.permissions.can_subscribe);
        assert!(!grant.permissions.can_send_messages);
        assert_eq!(ttl, 600);
        assert_eq!(
            request(json!({"identity": "a", "ttlSeconds": 60.0}))
                .unwrap()
                .1,
            60
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let code = |body: Value| request(body).unwrap_err();
        assert_eq!(code(json!({})), ApiError::parameter_missing("identity"));
        assert_eq!(
            code(json!({"identity": null})),
            ApiError::parameter_missing("identity")
        );
        for bad in [
            json!(""),
            json!("  "),
            json!("a\nb"),
            json!(5),
            json!(["a"]),
        ] {
            assert_eq!(
                code(json!({"identity": bad})),
                ApiError::invalid_value("identity")
            );
        }
        assert_eq!(
            code(json!({"identity": "x".repeat(257)})),
            ApiError::string_size("identity", 256)
        );
        assert!(request(json!({"identity": "é".repeat(256)})).is_ok());
        assert_eq!(
            code(json!({"identity": "a", "name": "n".repeat(513)})).code,
            Code::StringSize
        );
        assert_eq!(
            code(json!({"identity": "a", "participantInfo": "x"})),
            ApiError::invalid_value("participantInfo")
        );
        assert_eq!(
            code(json!({"identity": "a", "participantInfo": {"x": "y".repeat(4096)}})),
            ApiError::string_size("participantInfo", 4096)
        );
        assert_eq!(
            code(json!({"identity": "a", "canPublish": "no"})),
            ApiError::invalid_value("canPublish")
        );
        for ttl in [json!(0), json!(2_592_001), json!("-1")] {
            assert_eq!(
                code(json!({"identity": "a", "ttlSeconds": ttl})),
                ApiError::number_size("ttlSeconds", 1, 2_592_000)
            );
        }
        for ttl in [json!(1.5), json!("soon"), json!(true)] {
            assert_eq!(
                code(json!({"identity": "a", "ttlSeconds": ttl})),
                ApiError::invalid_value("ttlSeconds")
            );
        }
    }
}
