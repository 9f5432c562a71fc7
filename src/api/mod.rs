//! The HTTP surface: routes, and the answers for anything that matches no route.

mod access;
mod admin_stream;
mod assets;
mod forward;
pub use forward::start_there;
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
use crate::signaling::bridge::Bridge;
use crate::wsguard::PendingSockets;
use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::{Method, header};
use actix_web::middleware::{Next, from_fn};
use actix_web::{FromRequest, HttpRequest, HttpResponse, Resource, ResponseError, Route, web};
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
    /// With `cluster`: the signal relay to rooms owned by other nodes.
    pub bridge: Option<Arc<Bridge>>,
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

/// The OpenAPI 3.1 document of every route below (served at `/api/openapi.json`). It is
/// written by hand; `tests/api/openapi.rs` keeps it true (every route registered here is
/// described and every described operation answers, examples and real answers validate
/// against its schemas, and schemathesis finds nothing against the running service).
pub const OPENAPI: &str = include_str!("openapi.json");

/// Registers every route of the service. Every resource answers other methods with 405
/// and an `Allow` header naming its methods. Request bodies have a deadline
/// (`crate::body`) on every resource but the WebSocket ones, whose payload is the socket
/// itself.
pub fn configure(cfg: &mut web::ServiceConfig) {
    assets::configure(cfg);
    let resource = |path: &str, routes: Vec<(Method, Route)>| {
        routes_of(path, routes).wrap(from_fn(body_deadline))
    };
    cfg.service(resource(
        "/api/realtime/room",
        vec![
            (Method::POST, web::to(rooms::create)),
            (Method::GET, web::to(rooms::list)),
            (Method::DELETE, web::to(rooms::delete_by_query)),
        ],
    ))
    // An empty path id is a missing id, as with `?id=`.
    .service(resource(
        "/api/realtime/room/",
        vec![(Method::DELETE, web::to(rooms::delete_without_id))],
    ))
    .service(resource(
        "/api/realtime/room/{id}",
        vec![
            (Method::GET, web::to(rooms::fetch)),
            (Method::DELETE, web::to(rooms::delete_by_path)),
        ],
    ))
    .service(resource(
        "/api/realtime/room/{id}/token",
        vec![(Method::POST, web::to(access::issue))],
    ))
    .service(resource(
        "/api/realtime/room/{id}/token/rotate",
        vec![(Method::POST, web::to(access::rotate))],
    ))
    .service(resource(
        "/api/realtime/room/{id}/participants",
        vec![(Method::GET, web::to(participants::list))],
    ))
    .service(resource(
        "/api/realtime/room/{id}/participants/{address}",
        vec![(Method::DELETE, web::to(participants::remove))],
    ))
    .service(routes_of(
        "/api/realtime/signaling",
        vec![(Method::GET, web::to(signaling::connect))],
    ))
    .service(routes_of(
        "/api/realtime/admin/events",
        vec![(Method::GET, web::to(admin_stream::connect))],
    ))
    .service(resource(
        "/api/openapi.json",
        vec![(Method::GET, web::to(openapi))],
    ))
    .service(resource(
        "/metrics",
        vec![(Method::GET, web::to(health::metrics))],
    ))
    .service(resource(
        "/healthz",
        vec![(Method::GET, web::to(health::live))],
    ))
    .service(resource(
        "/readyz",
        vec![(Method::GET, web::to(health::ready))],
    ));
}

/// A resource of `path` with one route per method, answering any other method with 405
/// and `Allow`.
fn routes_of(path: &str, routes: Vec<(Method, Route)>) -> Resource {
    let allow = routes
        .iter()
        .map(|(method, _)| method.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    routes
        .into_iter()
        .fold(web::resource(path), |r, (method, route)| {
            r.route(route.method(method))
        })
        .default_service(web::to(move |req: HttpRequest| {
            let allow = allow.clone();
            async move { method_not_allowed(req, &allow) }
        }))
}

/// `GET /api/openapi.json`: the document of the API.
async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type(header::ContentType::json())
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(OPENAPI)
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

/// 405 `BASE-00003`, with the `Allow` header that RFC 9110 asks for (the methods the
/// resource takes, e.g. `GET, DELETE`).
fn method_not_allowed(req: HttpRequest, allow: &str) -> HttpResponse {
    let mut res = ApiError::method_not_allowed(req.method().as_str(), req.path()).error_response();
    if let Ok(value) = header::HeaderValue::from_str(allow) {
        res.headers_mut().insert(header::ALLOW, value);
    }
    res
}
