//! Liveness never depends on the store; readiness does.

use super::AppState;
use crate::admin::events::Events;
use crate::error::ApiError;
use actix_web::dev::Server;
use actix_web::http::Method;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::json;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

pub async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

pub async fn ready(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.rooms.services().store.ping().await?;
    Ok(HttpResponse::Ok().json(json!({"status": "ready"})))
}

/// `/metrics` on the main listener; not there (404) when it has a listener of its own
/// (`metrics_bind`).
pub async fn metrics(
    req: HttpRequest,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    if !state.settings.metrics_bind.is_empty() {
        return Err(ApiError::not_found(req.path()));
    }
    Ok(scrape(&state.events))
}

/// Prometheus metrics, in the text exposition format.
fn scrape(events: &Events) -> HttpResponse {
    let (mesh, sfu, participants) = events.gauges();
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4; charset=utf-8")
        .body(crate::metrics::METRICS.render(mesh, sfu, participants))
}

/// The listener of `metrics_bind`: one worker that answers `GET /metrics` and nothing else
/// (other paths 404, other methods 405, as on the main listener). The caller runs the
/// server and stops it.
pub(crate) fn metrics_server(
    bind: &str,
    events: Arc<Events>,
) -> std::io::Result<(Server, SocketAddr)> {
    let listener = TcpListener::bind(bind)?;
    let addr = listener.local_addr()?;
    let events = web::Data::from(events);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(events.clone())
            .service(super::routes_of(
                "/metrics",
                vec![(
                    Method::GET,
                    web::to(|events: web::Data<Events>| async move { scrape(&events) }),
                )],
            ))
            .default_service(web::to(super::not_found))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run();
    Ok((server, addr))
}
