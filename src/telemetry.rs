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

/// The words of the start-up line that prints a generated API key.
pub const GENERATED_KEY_TEXT: &str =
    "No API key configured (CONVENE_API_KEYS): generated one for this run";

/// The start-up line that prints an API key generated for this run (printed once on stdout,
/// never logged). In JSON log mode it is a JSON object like the log lines, with the key in
/// `api_key`; in text mode it is `<text>: <key>`.
pub fn generated_key_line(key: &str, json: bool) -> String {
    if !json {
        return format!("{GENERATED_KEY_TEXT}: {key}");
    }
    use tracing_subscriber::fmt::format::Writer;
    use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
    let mut timestamp = String::new();
    let _ = SystemTime.format_time(&mut Writer::new(&mut timestamp));
    serde_json::json!({
        "timestamp": timestamp,
        "level": "WARN",
        "message": GENERATED_KEY_TEXT,
        "api_key": key,
    })
    .to_string()
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
    let method = req.method().clone();
    let started = Instant::now();
    // The request cannot be cloned before routing, so errors and panics are returned as
    // errors, which actix renders through `ResponseError`: the published body again, with
    // the request's id.
    let outcome = AssertUnwindSafe(next.call(req))
        .catch_unwind()
        .instrument(span.clone())
        .await;
    let failed = |error: ApiError| {
        let status = error.code.status().as_u16();
        let seconds = started.elapsed().as_secs_f64();
        crate::metrics::METRICS.request(UNROUTED, method.as_str(), status, seconds);
        Err(Tagged {
            error,
            id: id.clone(),
        }
        .into())
    };
    let mut res = match outcome {
        Ok(Ok(res)) => published_error_body(res.map_into_boxed_body()),
        Ok(Err(e)) => {
            let status = e.as_response_error().status_code().as_u16();
            span.in_scope(|| tracing::info!(status, "request failed"));
            let error = e
                .as_error::<ApiError>()
                .cloned()
                .unwrap_or_else(|| ApiError::for_status(status, "", ""));
            return failed(error);
        }
        Err(_) => {
            span.in_scope(|| tracing::error!("handler panicked"));
            return failed(ApiError::internal());
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

/// The `route` label of a request that failed before a response existed (a panic, or an
/// error out of the middleware), when its matched pattern is no longer known.
const UNROUTED: &str = "unknown";

/// An error answer that keeps its request's id: after a panic the request is gone, so the
/// answer is rendered by actix from this error.
#[derive(Debug)]
struct Tagged {
    error: ApiError,
    id: String,
}

impl std::fmt::Display for Tagged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl ResponseError for Tagged {
    fn status_code(&self) -> actix_web::http::StatusCode {
        self.error.status_code()
    }

    fn error_response(&self) -> actix_web::HttpResponse {
        let mut res = self.error.error_response();
        if let Ok(value) = HeaderValue::from_str(&self.id) {
            res.headers_mut().insert(REQUEST_ID, value);
        }
        res
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_generated_key_line_in_both_formats() {
        assert_eq!(
            generated_key_line("abc123", false),
            "No API key configured (CONVENE_API_KEYS): generated one for this run: abc123"
        );
        let line = generated_key_line("abc123", true);
        assert!(!line.contains('\n'), "{line}");
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["api_key"], "abc123");
        assert_eq!(value["level"], "WARN");
        assert_eq!(value["message"], GENERATED_KEY_TEXT);
        let timestamp = value["timestamp"].as_str().unwrap();
        assert!(
            timestamp.ends_with('Z') && timestamp.contains('T'),
            "{timestamp}"
        );
    }
    use actix_web::middleware::from_fn;
    use actix_web::{App, HttpServer, web};

    /// A handler that panics still answers the published 500 body, over a real socket, with
    /// the request's id, and is counted.
    #[actix_web::test]
    async fn a_panicking_handler_answers_500_with_the_request_id() {
        async fn boom() -> &'static str {
            panic!("this handler always panics")
        }
        let server = HttpServer::new(|| {
            App::new()
                .wrap(from_fn(request_context))
                .route("/boom", web::get().to(boom))
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let addr = server.addrs()[0];
        let server = server.run();
        let handle = server.handle();
        actix_web::rt::spawn(server);

        let res = reqwest::Client::new()
            .get(format!("http://{addr}/boom"))
            .header("x-request-id", "panic-test-1")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status().as_u16(), 500);
        assert_eq!(res.headers()["x-request-id"], "panic-test-1");
        assert_eq!(res.headers()["content-type"], "application/json");
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["code"], "BASE-00000");
        assert_eq!(body["id"], "INTERNAL_ERROR");
        let metrics = crate::metrics::METRICS.render(0, 0, 0);
        assert!(
            metrics.contains(r#"route="unknown",method="GET",status="500""#),
            "{metrics}"
        );
        handle.stop(true).await;
    }
}
