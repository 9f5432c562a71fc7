//! The admin event stream, `GET /api/realtime/admin/events`.

use crate::support::*;
use crate::ws::{self, Client, EVENTS, Incoming};
use serde_json::{Value, json};
use std::time::Duration;

/// The next event, which must have this type and the next sequence number.
async fn event(s: &mut Client, kind: &str, seq: &mut u64) -> Value {
    let e = s.expect(kind).await;
    *seq += 1;
    assert_eq!(e["seq"], *seq, "{e}");
    e
}

/// Creates a room as a marker and asserts that its `roomCreated` is the very next event:
/// nothing else came before it.
async fn marker(app: &TestApp, s: &mut Client, seq: &mut u64) {
    let room = app.new_room(json!({"name": "marker"})).await;
    let e = event(s, "roomCreated", seq).await;
    assert_eq!(
        e["room"]["id"], room["id"],
        "an unexpected event came first"
    );
}

/// The room's participants as the REST list shows them, without `connected` (the event
/// stream's participant objects).
async fn participants(app: &TestApp, id: &str) -> Vec<Value> {
    let body = json_ok(app.participants(id).await).await;
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let mut p = p.clone();
            p.as_object_mut().unwrap().remove("connected");
            p
        })
        .collect()
}

fn with_participants(room: &Value, participants: Vec<Value>) -> Value {
    let mut room = room.clone();
    room["participants"] = participants.into();
    room
}

async fn every_change_in_order(app: TestApp) {
    let existing = app
        .new_room(json!({"name": "Existing", "description": "There first"}))
        .await;
    let existing_id = existing["id"].as_str().unwrap();
    let (_pat, _) = Client::join_with(
        &app,
        json!({"type": "join", "token": existing["token"], "name": "Pat",
               "participantInfo": {"role": "host"}, "audio": false}),
    )
    .await;
    let pat = participants(&app, existing_id).await;
    assert_eq!(pat.len(), 1);
    assert_eq!(pat[0]["participantInfo"], json!({"role": "host"}));

    // The snapshot: every room with its participants; its seq is that of the last event in it.
    let mut s = Client::stream(&app, None).await;
    let snapshot = s.recv().await;
    assert_eq!(
        snapshot,
        json!({"type": "snapshot", "seq": 2, "rooms": [with_participants(&existing, pat.clone())]})
    );
    let mut seq = 2;

    let room = app
        .new_room(json!({"name": "Live", "autoUpgradeParticipantCount": 2}))
        .await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    let e = event(&mut s, "roomCreated", &mut seq).await;
    assert_eq!(e, json!({"type": "roomCreated", "seq": seq, "room": room}));

    let (mut a, joined_a) = Client::join(&app, token, "A").await;
    let e = event(&mut s, "participantJoined", &mut seq).await;
    let participant_a = e["participant"].clone();
    assert_eq!(
        e,
        json!({"type": "participantJoined", "seq": seq, "roomId": id, "participant": {
            "address": joined_a["address"], "name": "A", "audio": true, "video": true,
            "joinedAt": participant_a["joinedAt"]}})
    );
    let joined_at = participant_a["joinedAt"].as_u64().unwrap();
    assert!(joined_at >= room["creationTime"].as_u64().unwrap() && joined_at <= now_ms());

    // B's join upgrades the room (autoUpgradeParticipantCount 2): joined, then upgraded.
    let (mut b, joined_b) = Client::join(&app, token, "B").await;
    assert_eq!(joined_b["participants"], json!([participant_a]));
    let e = event(&mut s, "participantJoined", &mut seq).await;
    assert_eq!(e["roomId"], id);
    assert_eq!(e["participant"]["address"], joined_b["address"]);
    let upgraded = event(&mut s, "roomUpgraded", &mut seq).await;
    let mut expected = room.clone();
    expected["conferenceType"] = "SFU".into();
    expected["maxParticipants"] = 100.into();
    expected["modificationTime"] = upgraded["room"]["modificationTime"].clone();
    assert_eq!(
        upgraded,
        json!({"type": "roomUpgraded", "seq": seq, "room": expected})
    );
    assert!(
        upgraded["room"]["modificationTime"].as_u64().unwrap()
            >= room["modificationTime"].as_u64().unwrap()
    );
    a.expect("participantJoined").await;
    a.expect("conferenceTypeChanged").await;
    b.expect("conferenceTypeChanged").await;

    a.send(json!({"type": "mediaState", "video": false})).await;
    let mut updated_a = participant_a.clone();
    updated_a["video"] = false.into();
    assert_eq!(
        event(&mut s, "participantUpdated", &mut seq).await,
        json!({"type": "participantUpdated", "seq": seq, "roomId": id, "participant": updated_a})
    );

    // Left three ways: kicked by an admin, disconnected (grace over), left.
    let (_c, joined_c) = Client::join(&app, token, "C").await;
    event(&mut s, "participantJoined", &mut seq).await;
    let kick = app
        .request(
            reqwest::Method::DELETE,
            &format!(
                "/api/realtime/room/{id}/participants/{}",
                joined_c["address"].as_str().unwrap()
            ),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(kick.status(), 200);
    assert_eq!(
        event(&mut s, "participantLeft", &mut seq).await,
        json!({"type": "participantLeft", "seq": seq, "roomId": id, "address": joined_c["address"], "reason": "kicked"})
    );

    b.drop_connection();
    assert_eq!(
        event(&mut s, "participantLeft", &mut seq).await,
        json!({"type": "participantLeft", "seq": seq, "roomId": id, "address": joined_b["address"], "reason": "disconnected"})
    );

    a.send(json!({"type": "leave"})).await;
    assert_eq!(
        event(&mut s, "participantLeft", &mut seq).await,
        json!({"type": "participantLeft", "seq": seq, "roomId": id, "address": joined_a["address"], "reason": "left"})
    );

    // A deleted room takes its participants with it: roomDeleted, and no participantLeft.
    let (mut d, _) = Client::join(&app, token, "D").await;
    event(&mut s, "participantJoined", &mut seq).await;
    assert_eq!(app.delete_room(id).await.status(), 200);
    assert_eq!(
        event(&mut s, "roomDeleted", &mut seq).await,
        json!({"type": "roomDeleted", "seq": seq, "roomId": id})
    );
    assert_eq!(
        d.recv().await,
        json!({"type": "roomClosed", "reason": "deleted"})
    );
    marker(&app, &mut s, &mut seq).await;

    // A new stream's snapshot is the state those events led to.
    let mut fresh = Client::stream(&app, None).await;
    let snapshot = fresh.expect("snapshot").await;
    assert_eq!(snapshot["seq"], seq);
    let rooms = snapshot["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 2);
    assert_eq!(rooms[0]["name"], "marker", "newest first");
    assert_eq!(rooms[0]["participants"], json!([]));
    assert_eq!(rooms[1], with_participants(&existing, pat));
}

#[tokio::test]
async fn snapshot_then_every_change_in_order() {
    let options = Options::default().env("CONVENE_SIGNALING_RESUME_GRACE_MS", "100");
    let app = TestApp::spawn_with(Backend::Memory, options).await.unwrap();
    every_change_in_order(app).await;
}

#[tokio::test]
async fn snapshot_then_every_change_in_order_with_redis() {
    let options = Options::default().env("CONVENE_SIGNALING_RESUME_GRACE_MS", "100");
    let Some(app) = TestApp::spawn_with(Backend::Redis, options).await else {
        return;
    };
    every_change_in_order(app).await;
}

#[tokio::test]
async fn a_refreshed_token_is_a_room_update() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_ROOM_TOKEN_TTL_SECONDS", "2"),
    )
    .await
    .unwrap();
    let mut s = Client::stream(&app, None).await;
    let mut seq = s.expect("snapshot").await["seq"].as_u64().unwrap();
    assert_eq!(seq, 0);
    let room = app.new_room(json!({"name": "Short tokens"})).await;
    let id = room["id"].as_str().unwrap();
    event(&mut s, "roomCreated", &mut seq).await;

    // The token goes stale (less than a tenth of its lifetime, at least a second, left);
    // the next GET replaces it, and that is a roomUpdated.
    let exp = jwt_claims(room["token"].as_str().unwrap())["exp"]
        .as_u64()
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            now_ms() / 1000 + 1 >= exp
        })
        .await
    );
    let fetched = json_ok(app.get_room(id).await).await;
    assert_ne!(fetched["token"], room["token"]);
    assert_eq!(
        event(&mut s, "roomUpdated", &mut seq).await,
        json!({"type": "roomUpdated", "seq": seq, "room": fetched})
    );
    // A GET that finds a fresh token changes nothing.
    let again = json_ok(app.get_room(id).await).await;
    assert_eq!(again["token"], fetched["token"]);
    marker(&app, &mut s, &mut seq).await;
}

#[tokio::test]
async fn an_expired_room_is_an_event() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_ROOM_TTL_SECONDS", "1"),
    )
    .await
    .unwrap();
    let mut s = Client::stream(&app, None).await;
    let mut seq = s.expect("snapshot").await["seq"].as_u64().unwrap();
    let room = app.new_room(json!({})).await;
    event(&mut s, "roomCreated", &mut seq).await;
    let (mut p, _) = Client::join(&app, room["token"].as_str().unwrap(), "P").await;
    event(&mut s, "participantJoined", &mut seq).await;
    // The participant goes with the room: roomExpired and no participantLeft.
    assert_eq!(
        event(&mut s, "roomExpired", &mut seq).await,
        json!({"type": "roomExpired", "seq": seq, "roomId": room["id"]})
    );
    assert_eq!(
        p.recv().await,
        json!({"type": "roomClosed", "reason": "expired"})
    );
    marker(&app, &mut s, &mut seq).await;
}

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_what_it_missed() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let mut s = Client::stream(&app, None).await;
    let mut seq = s.expect("snapshot").await["seq"].as_u64().unwrap();
    let first = app.new_room(json!({"name": "1"})).await;
    event(&mut s, "roomCreated", &mut seq).await;
    s.drop_connection();

    // Missed while away: a room, a join, a media change, a deletion.
    let second = app.new_room(json!({"name": "2"})).await;
    let (mut p, joined) = Client::join(&app, second["token"].as_str().unwrap(), "P").await;
    p.send(json!({"type": "mediaState", "audio": false})).await;
    let updated = eventually(Duration::from_secs(5), || async {
        participants(&app, second["id"].as_str().unwrap()).await[0]["audio"] == false
    })
    .await;
    assert!(updated);
    assert_eq!(
        app.delete_room(first["id"].as_str().unwrap())
            .await
            .status(),
        200
    );

    let mut s = Client::stream(&app, Some(seq)).await;
    let e = event(&mut s, "roomCreated", &mut seq).await;
    assert_eq!(e["room"], second);
    let e = event(&mut s, "participantJoined", &mut seq).await;
    assert_eq!(e["participant"]["address"], joined["address"]);
    let e = event(&mut s, "participantUpdated", &mut seq).await;
    assert_eq!(e["participant"]["audio"], false);
    let e = event(&mut s, "roomDeleted", &mut seq).await;
    assert_eq!(e["roomId"], first["id"]);
    // Then live, with no repeat and no gap.
    marker(&app, &mut s, &mut seq).await;

    // Back with nothing missed: no snapshot, no backlog, just what happens next.
    drop(s);
    let mut s = Client::stream(&app, Some(seq)).await;
    marker(&app, &mut s, &mut seq).await;
}

#[tokio::test]
async fn a_client_too_far_behind_gets_a_fresh_snapshot() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_ADMIN_EVENT_LOG_SIZE", "2"),
    )
    .await
    .unwrap();
    let mut rooms = Vec::new();
    for name in ["1", "2", "3", "4"] {
        rooms.push(app.new_room(json!({"name": name})).await);
    }
    // The log keeps events 3 and 4: after 1, event 2 is missing.
    let mut s = Client::stream(&app, Some(1)).await;
    let snapshot = s.recv().await;
    // Newest first: by creation time, then id (rooms made in the same millisecond).
    let mut newest_first: Vec<Value> = rooms.iter().map(|r| with_participants(r, vec![])).collect();
    newest_first.sort_by_key(|r| {
        std::cmp::Reverse((
            r["creationTime"].as_u64(),
            r["id"].as_str().map(str::to_string),
        ))
    });
    assert_eq!(
        snapshot,
        json!({"type": "snapshot", "seq": 4, "rooms": newest_first})
    );
    let mut seq = 4;
    marker(&app, &mut s, &mut seq).await;

    // After 3 (log now 4 and 5): exactly 4, 5, then live.
    let mut s = Client::stream(&app, Some(3)).await;
    let mut seq = 3;
    assert_eq!(
        event(&mut s, "roomCreated", &mut seq).await["room"],
        rooms[3]
    );
    event(&mut s, "roomCreated", &mut seq).await;
    marker(&app, &mut s, &mut seq).await;

    // A sequence number this service never reached (as after its restart): a snapshot.
    let mut s = Client::stream(&app, Some(1000)).await;
    let snapshot = s.expect("snapshot").await;
    assert_eq!(snapshot["seq"], seq);
    assert_eq!(snapshot["rooms"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn after_a_restart_the_snapshot_has_the_rooms_in_use() {
    let Some(mut app) = TestApp::spawn(Backend::Redis).await else {
        return;
    };
    let room = app.new_room(json!({"name": "Kept"})).await;
    let mut s = Client::stream(&app, None).await;
    let seq = s.expect("snapshot").await["seq"].as_u64().unwrap();
    assert_eq!(seq, 1);
    drop(s);
    app.restart();
    // The old lastSeq means nothing to the new process: a snapshot, of the active rooms,
    // and no room is active before it is used (the REST list has them all).
    let mut s = Client::stream(&app, Some(5)).await;
    let snapshot = s.expect("snapshot").await;
    assert_eq!(snapshot, json!({"type": "snapshot", "seq": 0, "rooms": []}));
    // Used, the stored room is active again: the next snapshot has it.
    json_ok(app.get_room(room["id"].as_str().unwrap()).await).await;
    let mut s = Client::stream(&app, Some(5)).await;
    let snapshot = s.expect("snapshot").await;
    assert_eq!(snapshot["seq"], 0);
    let rooms = snapshot["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["id"], room["id"]);
    assert_eq!(rooms[0]["name"], "Kept");
    assert_eq!(rooms[0]["participants"], json!([]));
}

#[tokio::test]
async fn the_key_may_come_in_the_header_with_last_seq_in_the_query() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    // No auth message: the snapshot comes at once.
    let request = ws::with_header(ws::request(&app, EVENTS), "x-vcs-token", API_KEY);
    let mut s = Client::connect_request(request).await;
    assert_eq!(
        s.recv().await,
        json!({"type": "snapshot", "seq": 1, "rooms": [with_participants(&room, vec![])]})
    );

    // Any configured key; lastSeq in the query.
    let request = ws::with_header(
        ws::request(&app, &format!("{EVENTS}?lastSeq=0")),
        "x-vcs-token",
        SECOND_API_KEY,
    );
    let mut s = Client::connect_request(request).await;
    let mut seq = 0;
    assert_eq!(event(&mut s, "roomCreated", &mut seq).await["room"], room);
    marker(&app, &mut s, &mut seq).await;

    // The key in the first message works with either key too.
    let mut s = Client::connect_request(ws::request(&app, EVENTS)).await;
    s.send(json!({"type": "auth", "apiKey": SECOND_API_KEY, "lastSeq": seq}))
        .await;
    marker(&app, &mut s, &mut seq).await;
}

/// An auth message that is refused: the error, then close 4001.
async fn refused(app: &TestApp, first: &str, error: Value) {
    let mut c = Client::connect_request(ws::request(app, EVENTS)).await;
    c.send_text(first).await;
    assert_eq!(c.recv().await, error, "after {first}");
    c.expect_close(4001).await;
}

#[tokio::test]
async fn bad_keys_in_the_first_message_get_an_error_and_close_4001() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let missing = json!({"type": "error", "code": "BASE-00001", "id": null,
                         "description": ["Authorization missing."]});
    refused(
        &app,
        r#"{"type":"auth","apiKey":"nope"}"#,
        json!({"type": "error", "code": "REALTIME-00009", "id": "INVALID_TOKEN",
               "description": ["The token ::= [nope] is invalid."]}),
    )
    .await;
    refused(&app, r#"{"type":"auth"}"#, missing.clone()).await;
    refused(&app, r#"{"type":"auth","apiKey":""}"#, missing.clone()).await;
    refused(
        &app,
        r#"{"type":"hello","apiKey":"test-api-key"}"#,
        missing.clone(),
    )
    .await;
    refused(&app, "not json", missing.clone()).await;
    refused(&app, r#"{"type":"auth","apiKey":7}"#, missing).await;
}

#[tokio::test]
async fn a_bad_last_seq_in_the_first_message_is_an_invalid_value() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let invalid = json!({"type": "error", "code": "BASE-00016", "id": "INVALID_VALUE",
                         "description": ["The parameter with name ::= [lastSeq] has an invalid value."]});
    for seq in [
        r#""abc""#,
        "-1",
        "1.5",
        "18446744073709551616",
        "[1]",
        r#""41""#,
    ] {
        let first = format!(r#"{{"type":"auth","apiKey":"{API_KEY}","lastSeq":{seq}}}"#);
        refused(&app, &first, invalid.clone()).await;
    }
    // The key is checked first: a bad key with a bad lastSeq is about the key.
    refused(
        &app,
        r#"{"type":"auth","apiKey":"nope","lastSeq":"abc"}"#,
        json!({"type": "error", "code": "REALTIME-00009", "id": "INVALID_TOKEN",
               "description": ["The token ::= [nope] is invalid."]}),
    )
    .await;
    // null is no lastSeq: a snapshot.
    let mut c = Client::connect_request(ws::request(&app, EVENTS)).await;
    c.send_text(&format!(
        r#"{{"type":"auth","apiKey":"{API_KEY}","lastSeq":null}}"#
    ))
    .await;
    assert_eq!(c.expect("snapshot").await["seq"], 0);
}

#[tokio::test]
async fn an_empty_key_header_lets_the_client_sign_in_by_its_first_message() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    for blank in ["", " "] {
        let request = ws::with_header(ws::request(&app, EVENTS), "x-vcs-token", blank);
        let mut c = Client::connect_request(request).await;
        c.send(json!({"type": "auth", "apiKey": API_KEY})).await;
        assert_eq!(c.expect("snapshot").await["seq"], 0, "header {blank:?}");
    }
    // And is refused like any socket without a key when the first message has none.
    let request = ws::with_header(ws::request(&app, EVENTS), "x-vcs-token", "");
    let mut c = Client::connect_request(request).await;
    c.send(json!({"type": "auth"})).await;
    c.expect_error("BASE-00001", None).await;
    c.expect_close(4001).await;
}

#[tokio::test]
async fn bad_header_keys_and_queries_are_refused_before_the_upgrade() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let error = |status: u16, code: &str, id: Option<&str>, text: &str| json!({"httpCode": status, "code": code, "id": id, "description": [text]});
    let upgrade = |path: &str, key: Option<&str>| {
        let request = ws::request(&app, path);
        match key {
            Some(key) => ws::with_header(request, "x-vcs-token", key),
            None => request,
        }
    };
    assert_eq!(
        ws::try_connect(upgrade(EVENTS, Some("nope"))).await.err(),
        Some((
            400,
            error(
                400,
                "REALTIME-00009",
                Some("INVALID_TOKEN"),
                "The token ::= [nope] is invalid."
            )
        ))
    );
    let invalid = error(
        400,
        "BASE-00016",
        Some("INVALID_VALUE"),
        "The parameter with name ::= [lastSeq] has an invalid value.",
    );
    for query in ["abc", "-1", "1.5", "18446744073709551616"] {
        let path = format!("{EVENTS}?lastSeq={query}");
        assert_eq!(
            ws::try_connect(upgrade(&path, Some(API_KEY))).await.err(),
            Some((400, invalid.clone())),
            "{query}"
        );
        assert_eq!(
            ws::try_connect(upgrade(&path, None)).await.err(),
            Some((400, invalid.clone())),
            "{query} without a key"
        );
    }
    // The key header given twice, in either order: refused whatever the keys are.
    let twice = error(
        400,
        "BASE-00016",
        Some("INVALID_VALUE"),
        "The parameter with name ::= [x-vcs-token] has an invalid value.",
    );
    for (first, second) in [(API_KEY, "nope"), ("nope", API_KEY), (API_KEY, API_KEY)] {
        let mut request = upgrade(EVENTS, Some(first));
        request
            .headers_mut()
            .append("x-vcs-token", second.parse().unwrap());
        assert_eq!(
            ws::try_connect(request).await.err(),
            Some((400, twice.clone())),
            "{first} then {second}"
        );
    }
    // Not a WebSocket request at all.
    let res = app
        .request(reqwest::Method::GET, EVENTS)
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        400,
        "BASE-00016",
        Some("INVALID_VALUE"),
        "This endpoint takes a WebSocket upgrade.",
    )
    .await;
}

#[tokio::test]
async fn browser_origins_are_checked() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let forbidden = json!({"httpCode": 403, "code": "BASE-00004", "id": "FORBIDDEN",
                           "description": ["This origin may not open the admin event stream."]});
    let from =
        |app: &TestApp, origin: &str| ws::with_header(ws::request(app, EVENTS), "origin", origin);
    for origin in [
        "http://evil.example",
        "null",
        &format!("http://{}.evil.example", app.host_port()),
    ] {
        assert_eq!(
            ws::try_connect(from(&app, origin)).await.err(),
            Some((403, forbidden.clone())),
            "{origin}"
        );
    }
    // Even with a good key in the header.
    let request = ws::with_header(from(&app, "http://evil.example"), "x-vcs-token", API_KEY);
    assert_eq!(
        ws::try_connect(request).await.err(),
        Some((403, forbidden.clone()))
    );
    // A page of the service itself (Origin matching Host) gets in, then authenticates.
    let mut s = Client::connect_request(from(&app, &format!("http://{}", app.host_port()))).await;
    s.send(json!({"type": "auth", "apiKey": API_KEY})).await;
    assert_eq!(s.expect("snapshot").await["seq"], 0);
    // The scheme counts: an https page of the same host is another origin than this plain
    // http service.
    let https = format!("https://{}", app.host_port());
    assert_eq!(
        ws::try_connect(from(&app, &https)).await.err(),
        Some((403, forbidden.clone()))
    );
    // Behind a TLS-terminating proxy that says so, the https page is the service's own,
    // and the http one is not.
    let proxied = |origin: &str| ws::with_header(from(&app, origin), "x-forwarded-proto", "https");
    let mut s = Client::connect_request(proxied(&https)).await;
    s.send(json!({"type": "auth", "apiKey": API_KEY})).await;
    assert_eq!(s.expect("snapshot").await["seq"], 0);
    assert_eq!(
        ws::try_connect(proxied(&format!("http://{}", app.host_port())))
            .await
            .err(),
        Some((403, forbidden.clone()))
    );

    // A configured list replaces the default.
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env(
            "CONVENE_ADMIN_ALLOWED_ORIGINS",
            "https://ops.example.com,http://127.0.0.1:9",
        ),
    )
    .await
    .unwrap();
    for origin in ["https://ops.example.com", "http://127.0.0.1:9"] {
        let mut s = Client::connect_request(from(&app, origin)).await;
        s.send(json!({"type": "auth", "apiKey": API_KEY})).await;
        assert_eq!(s.expect("snapshot").await["seq"], 0, "{origin}");
    }
    for origin in [
        format!("http://{}", app.host_port()),
        "http://ops.example.com".to_string(),
        "https://ops.example.com:8443".to_string(),
    ] {
        assert_eq!(
            ws::try_connect(from(&app, &origin)).await.err(),
            Some((403, forbidden.clone())),
            "{origin}"
        );
    }
}

#[tokio::test]
async fn a_client_closing_the_stream_gets_the_closing_handshake() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let mut s = Client::stream(&app, None).await;
    s.expect("snapshot").await;
    s.close(1000, "").await;
    // The server's close frame, echoing the code (not a dropped connection, 1006).
    s.expect_close(1000).await;
}

#[tokio::test]
async fn streams_close_with_1001_on_shutdown() {
    let mut app = TestApp::spawn(Backend::Memory).await.unwrap();
    let mut s = Client::stream(&app, None).await;
    s.expect("snapshot").await;
    let closed = tokio::spawn(async move { s.next().await });
    let status = tokio::task::spawn_blocking(move || app.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(closed.await.unwrap(), Incoming::Closed(1001, _)));
    assert!(status.success());
}

#[tokio::test]
async fn a_slow_client_is_cut_off_and_rooms_do_not_wait() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default()
            .env("CONVENE_ADMIN_QUEUE_CAPACITY", "4")
            .env("CONVENE_SIGNALING_RATE_PER_SECOND", "100000")
            .env("CONVENE_SIGNALING_RATE_BURST", "100000")
            .env("CONVENE_SIGNALING_QUEUE_CAPACITY", "1000")
            // 300 updates of 60 kB to one peer fan out 18 MB, over the default burst.
            .env("CONVENE_SIGNALING_FANOUT_BYTES_PER_SECOND", "100000000")
            .env("CONVENE_SIGNALING_FANOUT_BURST_BYTES", "100000000"),
    )
    .await
    .unwrap();
    let mut slow = Client::connect_small_buffer(ws::request(&app, EVENTS), 4096).await;
    slow.send(json!({"type": "auth", "apiKey": API_KEY})).await;
    assert_eq!(slow.expect("snapshot").await["seq"], 0);

    // Large events: every participantUpdated carries a 60 kB participantInfo.
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let pad = "x".repeat(60_000);
    let (mut a, _) = Client::join_with(
        &app,
        json!({"type": "join", "token": token, "participantInfo": {"pad": pad}}),
    )
    .await;
    let (mut b, _) = Client::join(&app, token, "B").await;
    a.expect("participantJoined").await;

    // The slow stream reads nothing meanwhile; the room goes on at full speed.
    const UPDATES: u64 = 300;
    let started = std::time::Instant::now();
    for i in 0..UPDATES {
        a.send(json!({"type": "mediaState", "video": i % 2 == 1}))
            .await;
    }
    for i in 0..UPDATES {
        let e = b.expect("participantUpdated").await;
        assert_eq!(e["participant"]["video"], i % 2 == 1);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    let last = 3 + UPDATES;

    // The client says something (as a pong would) before it reads on: the server, which
    // has long sent its close, still waits for the closing handshake, so nothing is lost
    // to a connection reset.
    slow.send(json!({"type": "ping"})).await;

    // The slow stream got a gapless prefix of the events, then close 4016.
    let mut seq = 0;
    let code = loop {
        match slow.next().await {
            Incoming::Text(e) => {
                seq += 1;
                assert_eq!(e["seq"], seq);
            }
            Incoming::Closed(code, reason) => break (code, reason),
        }
    };
    assert_eq!(code.0, 4016, "after event {seq}: {code:?}");
    assert!(seq < last, "not cut off: all {seq} events arrived");

    // It reconnects with its lastSeq and gets the rest, with no gap.
    let mut s = Client::stream(&app, Some(seq)).await;
    while seq < last {
        event(&mut s, "participantUpdated", &mut seq).await;
    }
    marker(&app, &mut s, &mut seq).await;
}

#[tokio::test]
async fn a_resumed_participant_neither_leaves_nor_joins_again() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_SIGNALING_RESUME_GRACE_MS", "60000"),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let mut s = Client::stream(&app, None).await;
    let mut seq = s.expect("snapshot").await["seq"].as_u64().unwrap();
    let (p, joined) = Client::join(&app, token, "P").await;
    event(&mut s, "participantJoined", &mut seq).await;
    p.drop_connection();
    let waiting = eventually(Duration::from_secs(5), || async {
        let listed = app.participants(room["id"].as_str().unwrap()).await;
        json_ok(listed).await["data"][0]["connected"] == false
    })
    .await;
    assert!(waiting);
    let (_p, resumed) = Client::join_with(
        &app,
        json!({"type": "join", "token": token, "resume": joined["resumeToken"]}),
    )
    .await;
    assert_eq!(resumed["address"], joined["address"]);
    marker(&app, &mut s, &mut seq).await;
}

#[tokio::test]
async fn a_participant_past_its_endpoint_ttl_leaves_as_expired() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_ENDPOINT_TTL_SECONDS", "1"),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({})).await;
    let mut s = Client::stream(&app, None).await;
    let mut seq = s.expect("snapshot").await["seq"].as_u64().unwrap();
    let (_p, joined) = Client::join(&app, room["token"].as_str().unwrap(), "P").await;
    event(&mut s, "participantJoined", &mut seq).await;
    assert_eq!(
        event(&mut s, "participantLeft", &mut seq).await,
        json!({"type": "participantLeft", "seq": seq, "roomId": room["id"],
               "address": joined["address"], "reason": "expired"})
    );
}

#[tokio::test]
async fn a_socket_that_never_authenticates_is_closed_after_10_s() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let mut c = Client::connect_request(ws::request(&app, EVENTS)).await;
    let started = std::time::Instant::now();
    assert_eq!(
        c.recv_within(Duration::from_secs(15)).await,
        Incoming::Text(json!({"type": "error", "code": "BASE-00001", "id": null,
                              "description": ["Authorization missing."]}))
    );
    c.expect_close(4001).await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(9500) && waited < Duration::from_secs(14),
        "{waited:?}"
    );
}
