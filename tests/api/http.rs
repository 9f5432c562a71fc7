//! Everything around the room endpoints: unknown paths, wrong methods, health, and the rule
//! that every error body is the published JSON one.

use crate::both_stores;
use crate::support::*;
use reqwest::Method;
use serde_json::json;

async fn assert_not_found(res: reqwest::Response, path: &str) {
    assert_error(
        res,
        404,
        "BASE-00002",
        Some("NOT_FOUND"),
        &format!("The resource ::= [{path}] does not exist."),
    )
    .await;
}

async fn assert_method_not_allowed(res: reqwest::Response, method: &str, path: &str) {
    assert_error(
        res,
        405,
        "BASE-00003",
        Some("METHOD_NOT_ALLOWED"),
        &format!("The method ::= [{method}] is not allowed for ::= [{path}]."),
    )
    .await;
}

both_stores!(unknown_paths, |app: TestApp| async move {
    for path in [
        "/nope",
        "/api",
        "/api/realtime",
        "/api/realtime/rooms",
        "/api/realtime/room/a/b",
        "/healthz/x",
    ] {
        for method in [Method::GET, Method::POST, Method::DELETE] {
            // With and without a key: an unknown path is 404 either way.
            let res = app.request(method.clone(), path).send().await.unwrap();
            assert_not_found(res, path).await;
            let res = app
                .client
                .request(method.clone(), app.url(path))
                .send()
                .await
                .unwrap();
            assert_not_found(res, path).await;
        }
    }
});

both_stores!(wrong_methods, |app: TestApp| async move {
    let room = app.new_room(json!({})).await;
    let room_path = format!("/api/realtime/room/{}", room["id"].as_str().unwrap());
    for (method, path) in [
        (Method::PUT, "/api/realtime/room"),
        (Method::PATCH, "/api/realtime/room"),
        (Method::OPTIONS, "/api/realtime/room"),
        (Method::PUT, room_path.as_str()),
        (Method::PATCH, room_path.as_str()),
        (Method::POST, room_path.as_str()),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/readyz"),
    ] {
        let res = app
            .request(method.clone(), path)
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_method_not_allowed(res, method.as_str(), path).await;
    }
    // Nothing changed.
    let list = json_ok(app.list("").await).await;
    assert_eq!(list, json!({"data": [room]}));
});

both_stores!(health_endpoints, |app: TestApp| async move {
    // No API key needed.
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(json_ok(res).await, json!({"status": "ok"}));
    let res = app.client.get(app.url("/readyz")).send().await.unwrap();
    assert_eq!(json_ok(res).await, json!({"status": "ready"}));
});

both_stores!(sdk_is_served_to_other_origins, |app: TestApp| async move {
    // Applications on another origin import the SDK: CORS allows any origin for /sdk/*
    // (and only there).
    for path in ["/sdk/convene.js", "/sdk/convene.d.ts"] {
        let res = app
            .client
            .get(app.url(path))
            .header("origin", "https://app.example.com")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["access-control-allow-origin"], "*", "{path}");
    }
    let res = app.client.get(app.url("/demo")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(!res.headers().contains_key("access-control-allow-origin"));
});

both_stores!(
    sdk_versioned_path_is_immutable_and_latest_revalidates,
    |app: TestApp| async move {
        // /sdk/v1/ is the SDK of major version 1, cached for a year as immutable so that a server
        // upgrade never changes a running client; /sdk/ is the latest, revalidated on every use.
        let latest = app
            .client
            .get(app.url("/sdk/convene.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(latest.headers()["cache-control"], "no-cache");
        let latest = latest.text().await.unwrap();
        for path in ["/sdk/v1/convene.js", "/sdk/v1/convene.d.ts"] {
            let res = app.client.get(app.url(path)).send().await.unwrap();
            assert_eq!(res.status(), 200, "{path}");
            assert_eq!(
                res.headers()["cache-control"],
                "public, max-age=31536000, immutable",
                "{path}"
            );
            assert_eq!(res.headers()["access-control-allow-origin"], "*", "{path}");
            let media_type = res.headers()["content-type"].to_str().unwrap().to_owned();
            let body = res.text().await.unwrap();
            if path.ends_with(".js") {
                assert!(media_type.starts_with("text/javascript"), "{media_type}");
                assert_eq!(body, latest);
                // The version the module reports is the package's, of major version 1.
                let package: serde_json::Value =
                    serde_json::from_str(include_str!("../../web/sdk/package.json")).unwrap();
                let version = package["version"].as_str().unwrap();
                assert!(version.starts_with("1."), "{version}");
                assert!(
                    body.contains(&format!("export const VERSION = '{version}';")),
                    "convene.js does not say VERSION = '{version}'"
                );
            } else {
                assert!(body.contains("export function joinRoom"));
            }
        }
        // No other major version exists: the published 404.
        let res = app
            .client
            .get(app.url("/sdk/v2/convene.js"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 404);
        let body: serde_json::Value = res.json().await.unwrap();
        assert_eq!(body["code"], "BASE-00002");
    }
);

both_stores!(request_ids, |app: TestApp| async move {
    // Every answer carries a request id; a plain one from the caller is kept.
    let res = app
        .request(Method::GET, "/api/realtime/room")
        .header("x-request-id", "my-request-1")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "my-request-1");
    let res = app.client.get(app.url("/nope")).send().await.unwrap();
    assert!(res.headers().contains_key("x-request-id"));
});

both_stores!(odd_requests_get_json_errors, |app: TestApp| async move {
    // Query strings that do not even parse as the handler's parameters.
    let res = app.list("?numberOfRecords=1&numberOfRecords=2").await;
    assert_error(
        res,
        400,
        "BASE-00016",
        Some("INVALID_VALUE"),
        "The parameter with name ::= [query] has an invalid value.",
    )
    .await;
    let res = app
        .request(Method::DELETE, "/api/realtime/room?id=a&id=b")
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        400,
        "BASE-00016",
        Some("INVALID_VALUE"),
        "The parameter with name ::= [query] has an invalid value.",
    )
    .await;
    // An id with characters that must be escaped is still just an unknown room.
    let res = app.get_room("a%20b").await;
    assert_error(
        res,
        404,
        "REALTIME-00004",
        Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
        "A conference room with id ::= [a b] does not exist.",
    )
    .await;
});

both_stores!(every_answer_is_json, |app: TestApp| async move {
    // One request of each kind; every answer, success or error, is application/json.
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap().to_string();
    let requests: Vec<reqwest::RequestBuilder> = vec![
        app.request(Method::POST, "/api/realtime/room"),
        app.request(Method::POST, "/api/realtime/room")
            .header("content-type", "text/plain")
            .body("x"),
        app.request(Method::POST, "/api/realtime/room")
            .header("content-type", "application/json")
            .body("{"),
        app.request(Method::POST, "/api/realtime/room")
            .header("content-type", "application/json")
            .body(" ".repeat(70_000)),
        app.request(Method::GET, &format!("/api/realtime/room/{id}")),
        app.request(Method::GET, "/api/realtime/room/unknown"),
        app.request(Method::GET, "/api/realtime/room"),
        app.request(Method::GET, "/api/realtime/room?numberOfRecords=0"),
        app.request(Method::GET, "/api/realtime/room?token=x"),
        app.request(Method::DELETE, "/api/realtime/room"),
        app.request(Method::DELETE, "/api/realtime/room?id=unknown"),
        app.client.get(app.url("/api/realtime/room")),
        app.client
            .get(app.url("/api/realtime/room"))
            .header("x-vcs-token", "bad"),
        app.request(Method::PUT, "/api/realtime/room"),
        app.request(Method::GET, "/nope"),
        app.request(Method::GET, "/healthz"),
        app.request(Method::GET, "/readyz"),
        app.request(Method::DELETE, &format!("/api/realtime/room/{id}")),
    ];
    for req in requests {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let url = res.url().to_string();
        let content_type = res
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_string());
        assert_eq!(content_type.as_deref(), Some("application/json"), "{url}");
        let body: serde_json::Value = res.json().await.unwrap();
        if status >= 400 {
            let keys: Vec<&String> = body.as_object().unwrap().keys().collect();
            assert_eq!(keys, ["httpCode", "code", "id", "description"], "{url}");
            assert_eq!(body["httpCode"], status, "{url}");
            assert_eq!(body["description"].as_array().unwrap().len(), 1, "{url}");
        }
    }
});
