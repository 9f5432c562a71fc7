//! The browser SDK, the demo page and the admin page, compiled into the binary so that the service serves
//! them with nothing else installed.

use actix_web::http::header::{
    ACCESS_CONTROL_ALLOW_ORIGIN, CACHE_CONTROL, CONTENT_TYPE, HeaderValue,
};
use actix_web::{HttpResponse, web};

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
    cfg.route(
        "/sdk/convene.js",
        web::get().to(|| async { serve_sdk(&SDK) }),
    )
    .route(
        "/sdk/convene.d.ts",
        web::get().to(|| async { serve_sdk(&SDK_TYPES) }),
    )
    .route("/demo", web::get().to(|| async { serve(&DEMO) }))
    .route("/admin", web::get().to(|| async { serve(&ADMIN) }));
}
