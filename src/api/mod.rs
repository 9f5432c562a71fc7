//! The HTTP surface: routes, and the answers for anything that matches no route.

mod assets;
mod health;
mod participants;
mod rooms;

pub(crate) use rooms::parse_create_body;

use crate::error::ApiError;
use actix_web::{HttpRequest, HttpResponse, Route, web};

/// Registers every route of the service. Every resource answers other methods with 405.
pub fn configure(cfg: &mut web::ServiceConfig) {
    assets::configure(cfg);
    let resource = |path: &str, routes: Vec<Route>| {
        routes
            .into_iter()
            .fold(web::resource(path), |r, route| r.route(route))
            .default_service(web::to(method_not_allowed))
    };
    cfg.service(resource(
        "/api/realtime/room",
        vec![
            web::post().to(rooms::create),
            web::get().to(rooms::list),
            web::delete().to(rooms::delete_by_query),
        ],
    ))
    // An empty path id is a missing id, as with `?id=`.
    .service(resource(
        "/api/realtime/room/",
        vec![web::delete().to(rooms::delete_without_id)],
    ))
    .service(resource(
        "/api/realtime/room/{id}",
        vec![
            web::get().to(rooms::fetch),
            web::delete().to(rooms::delete_by_path),
        ],
    ))
    .service(resource(
        "/api/realtime/room/{id}/participants",
        vec![web::get().to(participants::list)],
    ))
    .service(resource(
        "/api/realtime/room/{id}/participants/{address}",
        vec![web::delete().to(participants::remove)],
    ))
    .service(resource(
        "/api/realtime/signaling",
        vec![web::get().to(crate::signaling::connect)],
    ))
    .service(resource(
        "/api/realtime/admin/events",
        vec![web::get().to(crate::admin::stream::connect)],
    ))
    .service(resource("/metrics", vec![web::get().to(health::metrics)]))
    .service(resource("/healthz", vec![web::get().to(health::live)]))
    .service(resource("/readyz", vec![web::get().to(health::ready)]));
}

/// The answer for a path that no route matches.
pub async fn not_found(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::not_found(req.path()))
}

async fn method_not_allowed(req: HttpRequest) -> Result<HttpResponse, ApiError> {
    Err(ApiError::method_not_allowed(
        req.method().as_str(),
        req.path(),
    ))
}
