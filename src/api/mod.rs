//! The HTTP surface: routes, and the answers for anything that matches no route.

mod assets;
mod health;
mod rooms;

use crate::error::ApiError;
use actix_web::{HttpRequest, HttpResponse, web};

/// Registers every route of the service.
pub fn configure(cfg: &mut web::ServiceConfig) {
    assets::configure(cfg);
    cfg.service(
        web::resource("/api/realtime/room")
            .route(web::post().to(rooms::create))
            .route(web::get().to(rooms::list))
            .route(web::delete().to(rooms::delete_by_query))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/api/realtime/room/{id}")
            .route(web::get().to(rooms::fetch))
            .route(web::delete().to(rooms::delete_by_path))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(health::live))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(health::ready))
            .default_service(web::to(method_not_allowed)),
    );
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
