//! API keys on every room endpoint: missing, empty, unknown, and both configured keys.

use crate::both_stores;
use crate::support::*;
use reqwest::{Method, RequestBuilder};
use serde_json::{Value, json};

/// Every room endpoint, for an existing room `id`: (method, path, body).
fn endpoints(id: &str) -> Vec<(Method, String, Option<&'static str>)> {
    vec![
        (Method::POST, "/api/realtime/room".into(), Some("{}")),
        (Method::GET, format!("/api/realtime/room/{id}"), None),
        (Method::GET, "/api/realtime/room".into(), None),
        (
            Method::GET,
            "/api/realtime/room?numberOfRecords=5".into(),
            None,
        ),
        (Method::DELETE, format!("/api/realtime/room?id={id}"), None),
        (Method::DELETE, format!("/api/realtime/room/{id}"), None),
    ]
}

fn without_key(app: &TestApp, method: Method, path: &str, body: Option<&str>) -> RequestBuilder {
    let mut req = app.client.request(method, app.url(path));
    if let Some(body) = body {
        req = req
            .header("content-type", "application/json")
            .body(body.to_string());
    }
    req
}

async fn assert_missing(res: reqwest::Response) {
    assert_error(res, 401, "BASE-00001", None, "Authorization missing.").await;
}

async fn assert_unknown(res: reqwest::Response, key: &str) {
    assert_error(
        res,
        400,
        "REALTIME-00009",
        Some("INVALID_TOKEN"),
        &format!("The token ::= [{key}] is invalid."),
    )
    .await;
}

/// The room is untouched and nothing else was created.
async fn assert_only_room(app: &TestApp, room: &Value) {
    let id = room["id"].as_str().unwrap();
    assert_eq!(&json_ok(app.get_room(id).await).await, room);
    let list = json_ok(app.list("").await).await;
    assert_eq!(list, json!({"data": [room]}));
}

both_stores!(missing_key_everywhere, |app: TestApp| async move {
    let room = app.new_room(json!({"name": "kept"})).await;
    for (method, path, body) in endpoints(room["id"].as_str().unwrap()) {
        let res = without_key(&app, method.clone(), &path, body)
            .send()
            .await
            .unwrap();
        assert_missing(res).await;
    }
    assert_only_room(&app, &room).await;
});

both_stores!(empty_key_everywhere, |app: TestApp| async move {
    let room = app.new_room(json!({"name": "kept"})).await;
    for key in ["", " ", "   "] {
        for (method, path, body) in endpoints(room["id"].as_str().unwrap()) {
            let res = without_key(&app, method.clone(), &path, body)
                .header("x-vcs-token", key)
                .send()
                .await
                .unwrap();
            assert_missing(res).await;
        }
    }
    assert_only_room(&app, &room).await;
});

// Two key headers are refused whatever their order and values, so that a key that comes
// second (or first) can never ride along with a good one.
both_stores!(two_key_headers_everywhere, |app: TestApp| async move {
    let room = app.new_room(json!({"name": "kept"})).await;
    for (first, second) in [
        (API_KEY, "wrong"),
        ("wrong", API_KEY),
        (API_KEY, API_KEY),
        (API_KEY, SECOND_API_KEY),
        ("", API_KEY),
    ] {
        for (method, path, body) in endpoints(room["id"].as_str().unwrap()) {
            let res = without_key(&app, method.clone(), &path, body)
                .header("x-vcs-token", first)
                .header("x-vcs-token", second)
                .send()
                .await
                .unwrap();
            assert_error(
                res,
                400,
                "BASE-00016",
                Some("INVALID_VALUE"),
                "The parameter with name ::= [x-vcs-token] has an invalid value.",
            )
            .await;
        }
    }
    // The same over a raw socket, with the two headers as separate lines on the wire.
    let request = format!(
        "GET /api/realtime/room HTTP/1.1\r\nHost: x\r\nx-vcs-token: {API_KEY}\r\nX-Vcs-Token: wrong\r\nConnection: close\r\n\r\n"
    );
    let res = raw_http(app.host_port(), request.as_bytes()).await;
    assert_eq!(res.status, 400);
    assert_eq!(res.json()["code"], "BASE-00016");
    assert_only_room(&app, &room).await;
});

both_stores!(unknown_key_everywhere, |app: TestApp| async move {
    let room = app.new_room(json!({"name": "kept"})).await;
    let almost = &API_KEY[..API_KEY.len() - 1];
    let longer = format!("{API_KEY}x");
    let both = format!("{API_KEY},{SECOND_API_KEY}");
    let upper = API_KEY.to_uppercase();
    for key in [
        "nope",
        "ce0ef13256b4eff41bef65af69f53ae750a81c15fd124c235a59eecaa766105bc",
        almost,
        &longer,
        &both,
        &upper,
    ] {
        for (method, path, body) in endpoints(room["id"].as_str().unwrap()) {
            let res = without_key(&app, method.clone(), &path, body)
                .header("x-vcs-token", key)
                .send()
                .await
                .unwrap();
            assert_unknown(res, key).await;
        }
    }
    assert_only_room(&app, &room).await;
});

both_stores!(
    the_key_is_read_from_x_vcs_token_only,
    |app: TestApp| async move {
        for (name, value) in [
            ("authorization", format!("Bearer {API_KEY}")),
            ("x-api-key", API_KEY.to_string()),
        ] {
            let res = app
                .client
                .get(app.url("/api/realtime/room"))
                .header(name, value)
                .send()
                .await
                .unwrap();
            assert_missing(res).await;
        }
        // Header names are case-insensitive, as in all of HTTP.
        let res = app
            .client
            .get(app.url("/api/realtime/room"))
            .header("X-VCS-TOKEN", API_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(json_ok(res).await, json!({"data": []}));
    }
);

both_stores!(both_configured_keys_work, |app: TestApp| async move {
    for (create_key, other_key) in [(API_KEY, SECOND_API_KEY), (SECOND_API_KEY, API_KEY)] {
        let with = |key: &str, method: Method, path: &str| {
            app.client
                .request(method, app.url(path))
                .header("x-vcs-token", key)
        };
        let mut rooms = Vec::new();
        for _ in 0..2 {
            let res = with(create_key, Method::POST, "/api/realtime/room")
                .header("content-type", "application/json")
                .body("{\"name\": \"keys\"}")
                .send()
                .await
                .unwrap();
            rooms.push(json_ok(res).await["room"].clone());
        }
        for key in [API_KEY, SECOND_API_KEY] {
            for room in &rooms {
                let id = room["id"].as_str().unwrap();
                let res = with(key, Method::GET, &format!("/api/realtime/room/{id}"))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(&json_ok(res).await, room);
            }
            let res = with(key, Method::GET, "/api/realtime/room?numberOfRecords=2")
                .send()
                .await
                .unwrap();
            let list = json_ok(res).await;
            assert_eq!(list["data"].as_array().unwrap().len(), 2);
        }
        let id0 = rooms[0]["id"].as_str().unwrap();
        let res = with(
            other_key,
            Method::DELETE,
            &format!("/api/realtime/room?id={id0}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(json_ok(res).await, json!({"room": rooms[0]}));
        let id1 = rooms[1]["id"].as_str().unwrap();
        let res = with(
            create_key,
            Method::DELETE,
            &format!("/api/realtime/room/{id1}"),
        )
        .send()
        .await
        .unwrap();
        assert_eq!(json_ok(res).await, json!({"room": rooms[1]}));
    }
    assert_eq!(json_ok(app.list("").await).await, json!({"data": []}));
});

both_stores!(auth_comes_before_validation, |app: TestApp| async move {
    let huge = format!("{{\"name\":\"{}\"}}", "a".repeat(70 * 1024));
    let bad_posts: [(Option<&str>, &str); 6] = [
        (Some("application/json"), "{"),
        (Some("application/json"), "[]"),
        (Some("application/json"), "{\"name\": 5}"),
        (Some("text/plain"), "hello"),
        (None, "{}"),
        (Some("application/json"), &huge),
    ];
    for (key, check_unknown) in [(None, false), (Some("wrong-key"), true)] {
        for (content_type, body) in bad_posts {
            let mut req = app.client.post(app.url("/api/realtime/room"));
            if let Some(ct) = content_type {
                req = req.header("content-type", ct);
            }
            if let Some(key) = key {
                req = req.header("x-vcs-token", key);
            }
            let res = req.body(body.to_string()).send().await.unwrap();
            if check_unknown {
                assert_unknown(res, "wrong-key").await;
            } else {
                assert_missing(res).await;
            }
        }
        for path in [
            "/api/realtime/room?numberOfRecords=0",
            "/api/realtime/room?numberOfRecords=abc",
            "/api/realtime/room?token=B53AF55E",
            "/api/realtime/room/RO-00000000-0000-4000-8000-000000000000",
        ] {
            let mut req = app.client.get(app.url(path));
            if let Some(key) = key {
                req = req.header("x-vcs-token", key);
            }
            let res = req.send().await.unwrap();
            if check_unknown {
                assert_unknown(res, "wrong-key").await;
            } else {
                assert_missing(res).await;
            }
        }
        for path in [
            "/api/realtime/room",
            "/api/realtime/room?id=",
            "/api/realtime/room?id=RO-00000000-0000-4000-8000-000000000000",
            "/api/realtime/room/RO-00000000-0000-4000-8000-000000000000",
        ] {
            let mut req = app.client.delete(app.url(path));
            if let Some(key) = key {
                req = req.header("x-vcs-token", key);
            }
            let res = req.send().await.unwrap();
            if check_unknown {
                assert_unknown(res, "wrong-key").await;
            } else {
                assert_missing(res).await;
            }
        }
    }
    assert_eq!(json_ok(app.list("").await).await, json!({"data": []}));
});
