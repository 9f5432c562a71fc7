//! The HTTP surface: routes, and the answers for anything that matches no route.

mod admin_stream;
mod assets;
mod forward;
mod health;
mod participants;
mod rooms;
mod signaling;

pub(crate) use health::metrics_server;
pub(crate) use rooms::parse_create_body;

use crate::admin::events::Events;
use crate::auth::{ApiKeys, presented_key};
use crate::config::Settings;
use crate::error::ApiError;
use crate::paging::PageTokens;
use crate::room::Rooms;
use crate::signaling::SignalingConfig;
use crate::wsguard::PendingSockets;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
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
    /// This node's admin event hub, which follows its rooms' events (metrics, load).
    pub events: Arc<Events>,
    /// The hub admin streams follow: with `cluster`, every room of the cluster (see
    /// `admin::cluster`); else the same as `events`.
    pub admin_events: Arc<Events>,
    pub signaling: Arc<SignalingConfig>,
    /// Turns `true` when the service shuts down; every signaling session watches it.
    pub shutdown: watch::Receiver<bool>,
    /// Sockets that have not joined (signaling) or authenticated (admin stream) yet.
    pub pending: PendingSockets,
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
        let checked = presented_key(req.headers()).and_then(|key| state.api_keys.check(key));
        ready(checked.map(|()| Authorized))
    }
}

/// Registers every route of the service. Every resource answers other methods with 405.
/// Request bodies have a deadline (`crate::body`) on every resource but the WebSocket ones,
/// whose payload is the socket itself.
pub fn configure(cfg: &mut web::ServiceConfig) {
    assets::configure(cfg);
    let websocket = |path: &str, routes: Vec<Route>| {
        routes
            .into_iter()
            .fold(web::resource(path), |r, route| r.route(route))
            .default_service(web::to(method_not_allowed))
    };
    let resource =
        |path: &str, routes: Vec<Route>| websocket(path, routes).wrap(from_fn(body_deadline));
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
    .service(websocket(
        "/api/realtime/signaling",
        vec![web::get().to(signaling::connect)],
    ))
    .service(websocket(
        "/api/realtime/admin/events",
        vec![web::get().to(admin_stream::connect)],
    ))
    .service(resource("/metrics", vec![web::get().to(health::metrics)]))
    .service(resource("/healthz", vec![web::get().to(health::live)]))
    .service(resource("/readyz", vec![web::get().to(health::ready)]));
}

/// Middleware: the request body's deadline (`crate::body`), with the service's setting and
/// shutdown signal.
async fn body_deadline(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<AppState>>() else {
        return Err(ApiError::internal().into());
    };
    let seconds = state.settings.request_body_timeout_seconds;
    let shutdown = state.shutdown.clone();
    crate::body::deadline(req, next, seconds, shutdown).await
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
