//! The browser SDK, the demo page and the admin page, compiled into the binary so that the service serves
//! them with nothing else installed.

use actix_web::http::header::{CACHE_CONTROL, CONTENT_TYPE};
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

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/sdk/convene.js", web::get().to(|| async { serve(&SDK) }))
        .route(
            "/sdk/convene.d.ts",
            web::get().to(|| async { serve(&SDK_TYPES) }),
        )
        .route("/demo", web::get().to(|| async { serve(&DEMO) }))
        .route("/admin", web::get().to(|| async { serve(&ADMIN) }));
}
