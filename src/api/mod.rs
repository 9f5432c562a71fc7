//! The HTTP surface: routes, and the answers for anything that matches no route.

mod admin_stream;
mod assets;
mod health;
mod participants;
mod rooms;
mod signaling;

use crate::admin::events::Events;
use crate::auth::{API_KEY_HEADER, ApiKeys};
use crate::config::Settings;
use crate::error::ApiError;
use crate::paging::PageTokens;
use crate::room::Rooms;
use crate::signaling::SignalingConfig;
use actix_web::dev::Payload;
use actix_web::{FromRequest, HttpRequest, HttpResponse, Route, web};
use std::future::{Ready, ready};
use std::sync::Arc;
use tokio::sync::watch;

/// What every handler can reach.
pub struct AppState {
    pub settings: Settings,
    pub api_keys: ApiKeys,
    pub rooms: Rooms,
    pub page_tokens: PageTokens,
    /// The admin event hub, which follows every room's events.
    pub events: Arc<Events>,
    pub signaling: Arc<SignalingConfig>,
    /// Turns `true` when the service shuts down; every signaling session watches it.
    pub shutdown: watch::Receiver<bool>,
}

/// Extractor: the request carries a valid API key. Put it first among a handler's
/// arguments so that authentication is checked before the body is read.
pub struct Authorized;

impl FromRequest for Authorized {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(ApiError::internal()));
        };
        let header = req
            .headers()
            .get(API_KEY_HEADER)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"));
        ready(state.api_keys.check(header).map(|()| Authorized))
    }
}

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
        vec![web::get().to(signaling::connect)],
    ))
    .service(resource(
        "/api/realtime/admin/events",
        vec![web::get().to(admin_stream::connect)],
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
