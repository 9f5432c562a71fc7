//! The browser SDK, the demo page and the admin page, compiled into the binary so that the service serves
//! them with nothing else installed.

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

fn serve(asset: &Asset) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((CONTENT_TYPE, asset.media_type))
        .insert_header((CACHE_CONTROL, "no-cache"))
        .body(asset.body)
}

/// The SDK's files, which applications on any origin may import (CORS).
fn serve_sdk(asset: &Asset) -> HttpResponse {
    let mut res = serve(asset);
    res.headers_mut()
        .insert(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    res
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    let get = |path: &str, route: Route| super::routes_of(path, vec![(Method::GET, route)]);
    cfg.service(get(
        "/sdk/convene.js",
        web::to(|| async { serve_sdk(&SDK) }),
    ))
    .service(get(
        "/sdk/convene.d.ts",
        web::to(|| async { serve_sdk(&SDK_TYPES) }),
    ))
    .service(get("/demo", web::to(|| async { serve(&DEMO) })))
    .service(get("/admin", web::to(|| async { serve(&ADMIN) })));
}
