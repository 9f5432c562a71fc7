//! Logging, and the middleware that gives every request an id, a span and a log line, and
//! makes sure that every error answer has the published body.

use crate::error::ApiError;
use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderName, HeaderValue};
use actix_web::middleware::Next;
use actix_web::{Error, ResponseError};
use futures_util::FutureExt;
use std::panic::AssertUnwindSafe;
use std::time::Instant;
use tracing::Instrument;
use tracing_subscriber::EnvFilter;

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Installs the global subscriber: text or JSON lines on stdout.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_new(level).unwrap_or_else(|_| EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi);
    // `try_init` fails only when a subscriber is already installed (as in tests).
    let _ = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

/// Request id (the caller's `x-request-id` when it is short and plain, else a new one),
/// a span around the request, a log line when it ends, 500 instead of a panic, and the
/// published error body on every error answer, whoever produced it.
pub async fn request_context(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let span = tracing::info_span!("request", id = %id, method = %req.method(), path = %req.path());
    let started = Instant::now();
    // The request cannot be cloned before routing, so errors and panics are returned as
    // errors, which actix renders through `ResponseError`: the published body again.
    let outcome = AssertUnwindSafe(next.call(req))
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let mut res = match outcome {
        Ok(Ok(res)) => published_error_body(res.map_into_boxed_body()),
        Ok(Err(e)) => {
            let status = e.as_response_error().status_code().as_u16();
            span.in_scope(|| tracing::info!(status, "request failed"));
            if e.as_error::<ApiError>().is_some() {
                return Err(e);
            }
            return Err(ApiError::for_status(status, "", "").into());
        }
        Err(_) => {
            span.in_scope(|| tracing::error!("handler panicked"));
            return Err(ApiError::internal().into());
        }
    };
    if let Ok(value) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, value);
    }
    let status = res.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_string());
    crate::metrics::METRICS.request(&route, res.request().method().as_str(), status, seconds);
    let latency_ms = seconds * 1000.0;
    span.in_scope(|| tracing::info!(status, latency_ms, "request finished"));
    Ok(res)
}

/// Replaces a non-JSON error answer (one of actix's own) with the published error body.
fn published_error_body(res: ServiceResponse<BoxBody>) -> ServiceResponse<BoxBody> {
    let status = res.status();
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return res;
    }
    let error = ApiError::for_status(
        status.as_u16(),
        res.request().method().as_str(),
        res.request().path(),
    );
    let (req, _) = res.into_parts();
    ServiceResponse::new(req, error.error_response())
}
