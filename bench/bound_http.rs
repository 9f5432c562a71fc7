//! The upper bound for REST: a bare actix-web handler of the same shape as Convene's room
//! create and fetch (parse JSON, make a UUID, answer JSON), nothing else.
//! `bench_bound_http 127.0.0.1:0` prints `listening on ADDR`.

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

async fn create(body: web::Json<Value>) -> HttpResponse {
    let id = format!("RO-{}", uuid::Uuid::new_v4());
    HttpResponse::Ok()
        .json(json!({"room": {"id": id, "name": body.get("name"), "conferenceType": "MESH"}}))
}

async fn fetch(id: web::Path<String>) -> HttpResponse {
    HttpResponse::Ok()
        .json(json!({"id": id.into_inner(), "name": "Room A", "conferenceType": "MESH"}))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = std::net::TcpListener::bind(bind)?;
    println!("listening on {}", listener.local_addr()?);
    HttpServer::new(|| {
        App::new()
            .route("/api/realtime/room", web::post().to(create))
            .route("/api/realtime/room/{id}", web::get().to(fetch))
    })
    .listen(listener)?
    .run()
    .await
}
