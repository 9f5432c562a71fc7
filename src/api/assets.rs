//! The browser SDK, the demo page and the admin page, compiled into the binary so that the service serves
//! them with nothing else installed.
//!
//! The SDK is served twice: `/sdk/convene.js` is always this build's SDK (revalidated on every
//! load, so it follows server upgrades), and `/sdk/v1/convene.js` is the SDK of major version
//! 1 (`web/sdk/package.json`), cached by browsers as immutable for a year, so that an
//! application that imports it is never changed under it by a server upgrade. A release that
//! breaks the SDK's surface gets a new major path (`/sdk/v2/`) and the old one stays served.

use actix_web::http::Method;
use actix_web::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE, HeaderValue,
};
use actix_web::{HttpResponse, Route, web};

/// A file of `web/`, with its media type.
struct Asset {
    body: &'static str,
    media_type: &'static str,
}

const SDK: Asset = Asset {
    body: include_str!("../../web/sdk/convene.js"),
    media_type: "text/javascript; charset=utf-8",
};
const SDK_TYPES: Asset = Asset {
    body: include_str!("../../web/sdk/convene.d.ts"),
    media_type: "application/typescript; charset=utf-8",
};
const DEMO: Asset = Asset {
    body: include_str!("../../web/demo/index.html"),
    media_type: "text/html; charset=utf-8",
};

const ADMIN: Asset = Asset {
    body: include_str!("../../web/admin/index.html"),
    media_type: "text/html; charset=utf-8",
};

/// `Cache-Control` of the latest files: revalidated on every use.
const LATEST: &str = "no-cache";
/// `Cache-Control` of the versioned SDK: never fetched again for a year.
const IMMUTABLE: &str = "public, max-age=31536000, immutable";

fn serve(asset: &Asset, cache_control: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, asset.media_type))
        .insert_header((CACHE_CONTROL, cache_control))
        .body(asset.body)
}

/// The SDK's files, which applications on any origin may import (CORS).
fn serve_sdk(asset: &Asset, cache_control: &'static str) -> HttpResponse {
    let mut res = serve(asset, cache_control);
    res.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let get = |path: &str, route: Route| super::routes_of(path, vec![(Method::GET, route)]);
    cfg.service(get(
        "/sdk/convene.js",
        web::to(|| async { serve_sdk(&SDK, LATEST) }),
    ))
    .service(get(
        "/sdk/convene.d.ts",
        web::to(|| async { serve_sdk(&SDK_TYPES, LATEST) }),
    ))
    .service(get(
        "/sdk/v1/convene.js",
        web::to(|| async { serve_sdk(&SDK, IMMUTABLE) }),
    ))
    .service(get(
        "/sdk/v1/convene.d.ts",
        web::to(|| async { serve_sdk(&SDK_TYPES, IMMUTABLE) }),
    ))
    .service(get("/demo", web::to(|| async { serve(&DEMO, LATEST) })))
    .service(get("/admin", web::to(|| async { serve(&ADMIN, LATEST) })));
}
