//! Requests for a room that another node owns (holds its lease) go to that node: the same
//! method, path, query and API key, to its registered `httpAddr`, and its answer comes back
//! as it is (status, body, `Content-Type`). A forwarded request carries
//! [`FORWARDED_HEADER`]; a node that gets one for a room it does not own either answers
//! 503 instead of forwarding again, so two nodes that disagree never bounce a request.

use crate::auth::API_KEY_HEADER;
use crate::error::ApiError;
use crate::metrics::METRICS;
use crate::model::{Owner, RoomError};
use actix_web::http::StatusCode;
use actix_web::http::header::{CONTENT_TYPE, HeaderValue};
use actix_web::{HttpRequest, HttpResponse};
use std::sync::OnceLock;
use std::time::Duration;

/// Marks a request forwarded by another node.
pub const FORWARDED_HEADER: &str = "x-convene-forwarded";

/// How long a forward may take, connection included.
const TIMEOUT: Duration = Duration::from_secs(5);

fn client() -> &'static reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT.get_or_init(|| {
        reqwest::Client::builder()
            .timeout(TIMEOUT)
            .connect_timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client without TLS always builds")
    })
}

/// Forwards `req` when `result` says another node owns the room; otherwise hands `result`
/// back. `Ok` is the owner's answer, or 503 when the owner could not be reached.
pub async fn or_forward<T>(
    req: &HttpRequest,
    result: Result<T, RoomError>,
) -> Result<Result<T, RoomError>, Result<HttpResponse, ApiError>> {
    match result {
        Err(RoomError::Elsewhere(owner)) => Err(forward(req, &owner).await),
        other => Ok(other),
    }
}

/// The owner's answer to `req`, or 503 `BASE-00020` when it cannot be had.
async fn forward(req: &HttpRequest, owner: &Owner) -> Result<HttpResponse, ApiError> {
    let answer = try_forward(req, owner).await;
    METRICS.forwarded(if answer.is_some() {
        "answered"
    } else {
        "unavailable"
    });
    answer.ok_or_else(|| ApiError::owner_unavailable(&owner.node))
}

/// Has the room `id`, just created here and placed on `owner`, started there: a forwarded
/// fetch, which makes that node claim the free lease; answers whether it did. A failure is
/// logged (the caller tries the next node; after the last the room stays stored, and its
/// first use on any node starts it).
pub async fn activate(req: &HttpRequest, owner: &Owner, id: &str) -> bool {
    let key = req
        .headers()
        .get(API_KEY_HEADER)
        .map(|key| key.as_bytes().to_vec());
    let started = start_there(owner, id, key.as_deref(), "a new room").await;
    METRICS.placed_elsewhere(if started { "started" } else { "refused" });
    started
}

/// Has the room `id`, whose lease is free, started on `owner` (a forwarded fetch with the
/// API key `key`, which makes that node claim the lease and restore the stored seats);
/// answers whether it did. `what` names the room in the log of a failure.
pub async fn start_there(owner: &Owner, id: &str, key: Option<&[u8]>, what: &str) -> bool {
    let Some(addr) = owner.http_addr.as_deref() else {
        return false;
    };
    let url = format!("http://{addr}/api/realtime/room/{id}");
    let mut request = client().get(&url).header(FORWARDED_HEADER, "1");
    if let Some(key) = key {
        request = request.header(API_KEY_HEADER, key);
    }
    match request.send().await {
        Ok(answer) if answer.status().is_success() => return true,
        Ok(answer) => {
            tracing::info!(room = %id, node = %owner.node, status = answer.status().as_u16(), "the node chosen for {what} did not start it");
        }
        Err(e) => {
            tracing::warn!(room = %id, node = %owner.node, error = %e, "could not reach the node chosen for {what}");
        }
    }
    false
}

async fn try_forward(req: &HttpRequest, owner: &Owner) -> Option<HttpResponse> {
    if req.headers().contains_key(FORWARDED_HEADER) {
        tracing::warn!(owner = %owner.node, "a forwarded request found its room owned elsewhere");
        return None;
    }
    let addr = owner.http_addr.as_deref()?;
    let path = req
        .uri()
        .path_and_query()
        .map_or(req.uri().path(), |p| p.as_str());
    let url = format!("http://{addr}{path}");
    let method = reqwest::Method::from_bytes(req.method().as_str().as_bytes()).ok()?;
    let mut request = client().request(method, &url).header(FORWARDED_HEADER, "1");
    if let Some(key) = req.headers().get(API_KEY_HEADER) {
        request = request.header(API_KEY_HEADER, key.as_bytes());
    }
    let answer = match request.send().await {
        Ok(answer) => answer,
        Err(e) => {
            tracing::warn!(owner = %owner.node, url = %url, error = %e, "could not forward a request to the room's owner");
            return None;
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).ok()?;
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let body = match answer.bytes().await {
        Ok(body) => body,
        Err(e) => {
            tracing::warn!(owner = %owner.node, url = %url, error = %e, "the room's owner did not finish its answer");
            return None;
        }
    };
    let mut response = HttpResponse::build(status);
    if let Some(content_type) = content_type {
        response.insert_header((CONTENT_TYPE, content_type));
    }
    Some(response.body(body))
}
