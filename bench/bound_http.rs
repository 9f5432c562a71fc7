//! The upper bound for REST: a bare actix-web handler of the same shape as Convene's room
//! create and fetch, and nothing else. POST parses the JSON body, makes a UUID and answers a
//! room object with Convene's fields (a fixed string of a room token's length stands in for
//! the signed token); GET answers a fixed room object of the same size.
//! `bench_bound_http 127.0.0.1:0` prints `listening on ADDR`.

use actix_web::{App, HttpResponse, HttpServer, web};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateRoom {
    name: Option<String>,
    description: Option<String>,
    conference_type: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Room {
    id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    creation_time: u64,
    conference_type: String,
    modification_time: u64,
    max_participants: u32,
    #[serde(rename = "roomTokenTTLSeconds")]
    room_token_ttl_seconds: u64,
    #[serde(rename = "roomTTLSeconds")]
    room_ttl_seconds: u64,
    #[serde(rename = "endpointTTLSeconds")]
    endpoint_ttl_seconds: u64,
    token: &'static str,
}

#[derive(Serialize)]
struct Created {
    room: Room,
}

/// As long as one of Convene's room tokens.
const TOKEN: &str = concat!(
    "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJjb252ZW5lIiwiYXVkIjoiY29udmVuZS1yb29tIiwic",
    "3ViIjoiUk8tODcyZmM4MmItYzk2ZC00ZTMwLWIwYjktZmZkZjBmYzk5MDVkIiwibm9uY2UiOiJiN2Q3NzU2MmIyZW",
    "E0YWQyOWQyY2FkODJjMDdlYzI2MCIsImlhdCI6MTc5NTg1NTQ4NSwiZXhwIjoxNzk1OTQxODg1fQ.J97wnoscKdPHt",
    "L-jZSLnpM22OlAPwXy8brB0HaMFxsU"
);

fn room(id: String, body: CreateRoom) -> Room {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Room {
        id,
        name: body.name,
        description: body.description,
        creation_time: now,
        conference_type: body.conference_type.unwrap_or_else(|| "MESH".into()),
        modification_time: now,
        max_participants: 7,
        room_token_ttl_seconds: 86400,
        room_ttl_seconds: 86400,
        endpoint_ttl_seconds: 86400,
        token: TOKEN,
    }
}

async fn create(body: web::Json<CreateRoom>) -> HttpResponse {
    let id = format!("RO-{}", uuid::Uuid::new_v4());
    HttpResponse::Ok().json(Created {
        room: room(id, body.into_inner()),
    })
}

async fn fetch(fixed: web::Data<String>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(fixed.get_ref().clone())
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".into());
    let listener = std::net::TcpListener::bind(bind)?;
    println!("listening on {}", listener.local_addr()?);
    let sample = CreateRoom {
        name: Some("Room A".into()),
        description: Some("My room description".into()),
        conference_type: None,
    };
    let fixed = web::Data::new(
        serde_json::to_string(&room(
            "RO-872fc82b-c96d-4e30-b0b9-ffdf0fc9905d".into(),
            sample,
        ))
        .expect("json"),
    );
    HttpServer::new(move || {
        App::new()
            .app_data(fixed.clone())
            .route("/api/realtime/room", web::post().to(create))
            .route("/api/realtime/room/{id}", web::get().to(fetch))
    })
    .listen(listener)?
    .run()
    .await
}
