//! `POST /api/realtime/room`: defaults, every field, validation, media types, body limits,
//! and the shape of the room it answers (id, times, token).

use crate::both_stores;
use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

const AUTO: &str = "autoUpgradeParticipantCount";

/// Every key a room without the optional fields has, in the published order.
const REQUIRED_KEYS: [&str; 9] = [
    "id",
    "creationTime",
    "conferenceType",
    "modificationTime",
    "maxParticipants",
    "roomTokenTTLSeconds",
    "roomTTLSeconds",
    "endpointTTLSeconds",
    "token",
];

fn keys(room: &Value) -> Vec<&str> {
    room.as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect()
}

/// POST with a raw body and an optional content type.
async fn post(app: &TestApp, content_type: Option<&str>, body: &str) -> reqwest::Response {
    let mut req = app.request(Method::POST, "/api/realtime/room");
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    req.body(body.to_string()).send().await.unwrap()
}

/// Asserts a 200 `{"room": {...}}` with only the `room` key and answers the room.
async fn room_of(res: reqwest::Response) -> Value {
    let body = json_ok(res).await;
    assert_eq!(keys(&body), ["room"], "{body}");
    body["room"].clone()
}

/// The room every default gives: MESH, 7 participants, 86400 s lifetimes, no optional keys.
fn assert_default_room(room: &Value, before: u64, after: u64) {
    assert_eq!(keys(room), REQUIRED_KEYS, "{room}");
    let id = room["id"].as_str().unwrap();
    assert!(is_room_id(id), "{id}");
    assert_eq!(room["conferenceType"], "MESH");
    assert_eq!(room["maxParticipants"], 7);
    assert_eq!(room["roomTokenTTLSeconds"], 86400);
    assert_eq!(room["roomTTLSeconds"], 86400);
    assert_eq!(room["endpointTTLSeconds"], 86400);
    let created = room["creationTime"].as_u64().expect("integer creationTime");
    assert!(before <= created && created <= after, "{created}");
    assert_eq!(room["modificationTime"].as_u64(), Some(created));
}

async fn assert_invalid_value(res: reqwest::Response, name: &str) {
    assert_error(
        res,
        400,
        "BASE-00016",
        Some("INVALID_VALUE"),
        &format!("The parameter with name ::= [{name}] has an invalid value."),
    )
    .await;
}

async fn assert_auto_range(res: reqwest::Response, max: u32) {
    assert_error(
        res,
        400,
        "BASE-00015",
        Some("NUMBER_SIZE"),
        &format!(
            "The parameter with name ::= [autoUpgradeParticipantCount] is is not within the range from ::= [2] to [{max}]"
        ),
    )
    .await;
}

both_stores!(
    defaults_with_json_type_and_no_body,
    |app: TestApp| async move {
        for content_type in ["application/json", "application/json; charset=utf-8"] {
            let before = now_ms();
            let room = room_of(post(&app, Some(content_type), "").await).await;
            assert_default_room(&room, before, now_ms());
        }
    }
);

both_stores!(
    defaults_with_no_type_and_no_body,
    |app: TestApp| async move {
        let before = now_ms();
        let res = app
            .request(Method::POST, "/api/realtime/room")
            .send()
            .await
            .unwrap();
        assert_default_room(&room_of(res).await, before, now_ms());
    }
);

both_stores!(defaults_with_an_empty_object, |app: TestApp| async move {
    let before = now_ms();
    let room = room_of(app.create_room(json!({})).await).await;
    assert_default_room(&room, before, now_ms());
});

both_stores!(every_field_is_kept, |app: TestApp| async move {
    let before = now_ms();
    let room = room_of(
        app.create_room(
            json!({"name": "Room A", "description": "My room description",
            "conferenceType": "MESH", AUTO: 4}),
        )
        .await,
    )
    .await;
    let after = now_ms();
    assert_eq!(
        keys(&room),
        [
            "id",
            "name",
            "description",
            "creationTime",
            "conferenceType",
            AUTO,
            "modificationTime",
            "maxParticipants",
            "roomTokenTTLSeconds",
            "roomTTLSeconds",
            "endpointTTLSeconds",
            "token"
        ]
    );
    let created = room["creationTime"].as_u64().unwrap();
    assert!(before <= created && created <= after);
    assert_eq!(
        room,
        json!({
            "id": room["id"], "name": "Room A", "description": "My room description",
            "creationTime": created, "conferenceType": "MESH", AUTO: 4,
            "modificationTime": created, "maxParticipants": 7,
            "roomTokenTTLSeconds": 86400, "roomTTLSeconds": 86400, "endpointTTLSeconds": 86400,
            "token": room["token"],
        })
    );
});

both_stores!(
    absent_and_null_fields_have_no_key,
    |app: TestApp| async move {
        for body in [
            json!({}),
            json!({"name": null, "description": null, "conferenceType": null, AUTO: null}),
        ] {
            let room = room_of(app.create_room(body.clone()).await).await;
            assert_eq!(keys(&room), REQUIRED_KEYS, "{body}");
            assert_eq!(room["conferenceType"], "MESH", "{body}");
        }
        // Only the absent ones are missing.
        let room = room_of(app.create_room(json!({"name": "only a name"})).await).await;
        let mut expected = REQUIRED_KEYS.to_vec();
        expected.insert(1, "name");
        assert_eq!(keys(&room), expected);
        let room = room_of(app.create_room(json!({"description": "only text"})).await).await;
        let mut expected = REQUIRED_KEYS.to_vec();
        expected.insert(1, "description");
        assert_eq!(keys(&room), expected);
    }
);

both_stores!(unknown_fields_are_ignored, |app: TestApp| async move {
    let room = room_of(
        app.create_room(
            json!({"name": "n", "color": "blue", "maxParticipants": 1000,
            "id": "RO-mine", "nested": {"a": [1, 2]}}),
        )
        .await,
    )
    .await;
    let mut expected = REQUIRED_KEYS.to_vec();
    expected.insert(1, "name");
    assert_eq!(keys(&room), expected);
    assert_eq!(room["maxParticipants"], 7);
    assert!(is_room_id(room["id"].as_str().unwrap()));
});

both_stores!(
    conference_type_is_case_insensitive,
    |app: TestApp| async move {
        for (given, kind, max) in [
            ("MESH", "MESH", 7),
            ("mesh", "MESH", 7),
            ("Mesh", "MESH", 7),
            ("SFU", "SFU", 100),
            ("sfu", "SFU", 100),
            ("sFu", "SFU", 100),
        ] {
            let room = room_of(app.create_room(json!({"conferenceType": given})).await).await;
            assert_eq!(room["conferenceType"], kind, "{given}");
            assert_eq!(room["maxParticipants"], max, "{given}");
            // Fetched and listed the same way.
            let id = room["id"].as_str().unwrap();
            assert_eq!(json_ok(app.get_room(id).await).await, room);
        }
    }
);

both_stores!(
    other_conference_types_are_refused,
    |app: TestApp| async move {
        for given in [
            json!("P2P"),
            json!(""),
            json!("MESH "),
            json!("SFUX"),
            json!(1),
        ] {
            let res = app.create_room(json!({"conferenceType": given})).await;
            assert_invalid_value(res, "conferenceType").await;
        }
    }
);

both_stores!(
    auto_upgrade_as_number_or_string,
    |app: TestApp| async move {
        for (given, kept) in [
            (json!(4), 4),
            (json!("4"), 4),
            (json!(4.0), 4),
            (json!(2), 2),
            (json!("2"), 2),
            (json!(7), 7),
            (json!("7"), 7),
        ] {
            let room = room_of(app.create_room(json!({AUTO: given})).await).await;
            assert_eq!(room[AUTO], json!(kept), "{given}");
            assert!(room[AUTO].is_u64(), "returned as a number: {given}");
            let id = room["id"].as_str().unwrap();
            let fetched = json_ok(app.get_room(id).await).await;
            assert_eq!(fetched[AUTO], json!(kept), "{given}");
        }
    }
);

both_stores!(auto_upgrade_out_of_range, |app: TestApp| async move {
    for given in [
        json!(1),
        json!(8),
        json!(0),
        json!(-1),
        json!("1"),
        json!("8"),
        json!("-1"),
        json!("99999999999999999999999"),
        json!(1e300),
        json!(-4.0),
    ] {
        let res = app.create_room(json!({AUTO: given})).await;
        assert_auto_range(res, 7).await;
    }
    // Numbers too large for any integer type, written as JSON numbers.
    for raw in ["99999999999999999999999", "-99999999999999999999999"] {
        let body = format!("{{\"{AUTO}\": {raw}}}");
        let res = post(&app, Some("application/json"), &body).await;
        assert_auto_range(res, 7).await;
    }
});

both_stores!(auto_upgrade_not_a_whole_number, |app: TestApp| async move {
    for given in [
        json!(2.5),
        json!("2.5"),
        json!("four"),
        json!(""),
        json!(" 4"),
        json!(true),
        json!(false),
        json!([4]),
        json!({"n": 4}),
    ] {
        let res = app.create_room(json!({AUTO: given})).await;
        assert_invalid_value(res, AUTO).await;
    }
});

both_stores!(
    auto_upgrade_range_follows_the_mesh_limit,
    Options::default().env("CONVENE_MESH_MAX_PARTICIPANTS", 4),
    |app: TestApp| async move {
        let room = room_of(app.create_room(json!({AUTO: 4})).await).await;
        assert_eq!(room[AUTO], 4);
        assert_eq!(room["maxParticipants"], 4);
        assert_auto_range(app.create_room(json!({AUTO: 5})).await, 4).await;
    }
);

both_stores!(auto_upgrade_on_sfu_is_kept, |app: TestApp| async move {
    let room = room_of(
        app.create_room(json!({"conferenceType": "SFU", AUTO: "3"}))
            .await,
    )
    .await;
    assert_eq!(room["conferenceType"], "SFU");
    assert_eq!(room[AUTO], 3);
    assert_eq!(room["maxParticipants"], 100);
    let id = room["id"].as_str().unwrap();
    assert_eq!(json_ok(app.get_room(id).await).await, room);
    // The range is the MESH one on SFU rooms too.
    let res = app
        .create_room(json!({"conferenceType": "SFU", AUTO: 8}))
        .await;
    assert_auto_range(res, 7).await;
});

both_stores!(name_length_counts_characters, |app: TestApp| async move {
    for name in [
        "a".repeat(512),
        "é".repeat(512),
        "😀".repeat(512),
        "x".to_string(),
        String::new(),
    ] {
        let room = room_of(app.create_room(json!({"name": name})).await).await;
        assert_eq!(room["name"], json!(name));
    }
    for name in ["a".repeat(513), "é".repeat(513), "😀".repeat(513)] {
        let res = app.create_room(json!({"name": name})).await;
        assert_error(
            res,
            400,
            "BASE-00013",
            Some("STRING_SIZE"),
            "The parameter with name ::= [name] is larger than ::= [512] characters",
        )
        .await;
    }
});

both_stores!(
    description_length_counts_characters,
    |app: TestApp| async move {
        for description in ["d".repeat(4096), "é".repeat(4096)] {
            let room = room_of(app.create_room(json!({"description": description})).await).await;
            assert_eq!(room["description"], json!(description));
        }
        for description in ["d".repeat(4097), "é".repeat(4097)] {
            let res = app.create_room(json!({"description": description})).await;
            assert_error(
                res,
                400,
                "BASE-00013",
                Some("STRING_SIZE"),
                "The parameter with name ::= [description] is larger than ::= [4096] characters",
            )
            .await;
        }
    }
);

both_stores!(wrong_json_types, |app: TestApp| async move {
    for (body, name) in [
        (json!({"name": 5}), "name"),
        (json!({"name": true}), "name"),
        (json!({"name": ["a"]}), "name"),
        (json!({"name": {"first": "a"}}), "name"),
        (json!({"description": []}), "description"),
        (json!({"description": 1.5}), "description"),
        (json!({"conferenceType": 1}), "conferenceType"),
        (json!({"conferenceType": ["MESH"]}), "conferenceType"),
    ] {
        assert_invalid_value(app.create_room(body).await, name).await;
    }
    // Nothing was created by any of them.
    let list = json_ok(app.list("").await).await;
    assert_eq!(list, json!({"data": []}));
});

both_stores!(
    bodies_that_are_not_a_json_object,
    |app: TestApp| async move {
        for body in [
            "{",
            "{\"name\": }",
            "not json",
            "[]",
            "[{\"name\": \"a\"}]",
            "\"x\"",
            "null",
            "42",
            "true",
            "{\"name\": \"a\"} trailing",
        ] {
            let res = post(&app, Some("application/json"), body).await;
            assert_error(
                res,
                400,
                "BASE-00014",
                None,
                "The passed JSON body is invalid.",
            )
            .await;
        }
        let res = app
            .request(Method::POST, "/api/realtime/room")
            .header("content-type", "application/json")
            .body(vec![
                b'{', b'"', b'n', b'a', b'm', b'e', b'"', b':', b'"', 0xff, b'"', b'}',
            ])
            .send()
            .await
            .unwrap();
        assert_error(
            res,
            400,
            "BASE-00014",
            None,
            "The passed JSON body is invalid.",
        )
        .await;
    }
);

both_stores!(media_types_other_than_json, |app: TestApp| async move {
    for (content_type, body) in [
        (Some("text/plain"), "{\"name\": \"a\"}"),
        (Some("text/plain"), ""),
        (None, "{\"name\": \"a\"}"),
        (Some("application/x-www-form-urlencoded"), "name=a"),
        (Some("application/jsonx"), "{}"),
        (Some("application/xml"), ""),
        (Some("multipart/form-data; boundary=x"), ""),
    ] {
        let res = post(&app, content_type, body).await;
        assert_error(
            res,
            415,
            "BASE-00017",
            None,
            "Passed media type is not supported.",
        )
        .await;
    }
    let list = json_ok(app.list("").await).await;
    assert_eq!(list, json!({"data": []}));
});

both_stores!(json_media_type_with_parameters, |app: TestApp| async move {
    for content_type in [
        "application/json; charset=utf-8",
        "application/json;charset=UTF-8",
        "Application/JSON",
    ] {
        let room = room_of(post(&app, Some(content_type), "{\"name\": \"é\"}").await).await;
        assert_eq!(room["name"], "é", "{content_type}");
    }
});

/// A JSON object of exactly `len` bytes: `{"name":"a"}` padded with spaces.
fn padded_body(len: usize) -> String {
    let body = "{\"name\":\"a\"}";
    format!("{body}{}", " ".repeat(len - body.len()))
}

both_stores!(body_limit_is_64_kib, |app: TestApp| async move {
    let room = room_of(post(&app, Some("application/json"), &padded_body(65536)).await).await;
    assert_eq!(room["name"], "a");
    for len in [65537, 200 * 1024] {
        let res = post(&app, Some("application/json"), &padded_body(len)).await;
        assert_error(
            res,
            413,
            "BASE-00018",
            Some("PAYLOAD_TOO_LARGE"),
            "The request body is larger than ::= [65536] bytes.",
        )
        .await;
    }
    // Only the first room exists.
    let list = json_ok(app.list("").await).await;
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
});

both_stores!(chunked_body_over_the_limit, |app: TestApp| async move {
    // No Content-Length: the limit holds while the body streams in.
    let chunk = " ".repeat(16 * 1024);
    let mut request = format!(
        "POST /api/realtime/room HTTP/1.1\r\nHost: {}\r\nx-vcs-token: {API_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{{}}\r\n",
        app.host_port(),
        2
    );
    for _ in 0..5 {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let res = raw_http(app.host_port(), request.as_bytes()).await;
    assert_eq!(res.status, 413);
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(
        res.json(),
        json!({"httpCode": 413, "code": "BASE-00018", "id": "PAYLOAD_TOO_LARGE",
            "description": ["The request body is larger than ::= [65536] bytes."]})
    );
    // The same body under the limit, chunked, is fine.
    let request = format!(
        "POST /api/realtime/room HTTP/1.1\r\nHost: {}\r\nx-vcs-token: {API_KEY}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n\
         {:x}\r\n{{\"name\":\r\n{:x}\r\n\"chunked\"}}\r\n0\r\n\r\n",
        app.host_port(),
        8,
        10
    );
    let res = raw_http(app.host_port(), request.as_bytes()).await;
    assert_eq!(res.status, 200, "{:?}", String::from_utf8_lossy(&res.body));
    assert_eq!(res.header("content-type"), Some("application/json"));
    assert_eq!(res.json()["room"]["name"], "chunked");
});

both_stores!(id_times_and_token, |app: TestApp| async move {
    let mut ids = std::collections::HashSet::new();
    for _ in 0..20 {
        let before = now_ms();
        let room = room_of(app.create_room(json!({})).await).await;
        let after = now_ms();
        let id = room["id"].as_str().unwrap().to_string();
        assert!(is_room_id(&id), "{id}");
        assert!(ids.insert(id.clone()), "ids are unique");
        let created = room["creationTime"].as_u64().unwrap();
        assert!(before <= created && created <= after);
        assert_eq!(room["modificationTime"].as_u64(), Some(created));

        let token = room["token"].as_str().unwrap();
        let claims = jwt_claims(token);
        assert_eq!(claims["sub"], json!(id));
        let iat = claims["iat"].as_u64().expect("iat");
        assert!(before / 1000 <= iat && iat <= after / 1000, "{claims}");
        assert_eq!(claims["exp"].as_u64(), Some(iat + 86400), "{claims}");
        assert!(jwt_verifies(token, TOKEN_SECRET));
    }
});

both_stores!(
    token_lifetime_follows_configuration,
    Options::default().env("CONVENE_ROOM_TOKEN_TTL_SECONDS", 600),
    |app: TestApp| async move {
        let room = room_of(app.create_room(json!({})).await).await;
        assert_eq!(room["roomTokenTTLSeconds"], 600);
        let claims = jwt_claims(room["token"].as_str().unwrap());
        assert_eq!(
            claims["exp"].as_u64(),
            Some(claims["iat"].as_u64().unwrap() + 600)
        );
    }
);
