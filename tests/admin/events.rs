use crate::client::{Client, Incoming};
use crate::support::*;
use serde_json::{Value, json};
use tokio_tungstenite::connect_async;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

const EVENTS: &str = "/api/realtime/admin/events";

/// An event stream authenticated by the key in the first message.
async fn stream(app: &TestApp, last_seq: Option<u64>) -> Client {
    let mut c = Client::connect_path(app, EVENTS).await;
    let mut auth = json!({"type": "auth", "apiKey": API_KEY});
    if let Some(seq) = last_seq {
        auth["lastSeq"] = seq.into();
    }
    c.send(auth).await;
    c
}

/// The next event, which must have this type and the expected sequence number.
async fn event(c: &mut Client, kind: &str, seq: &mut u64) -> Value {
    let e = c.expect(kind).await;
    *seq += 1;
    assert_eq!(e["seq"], *seq, "{e}");
    e
}

#[tokio::test]
async fn snapshot_then_every_change_in_order() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default()
            .env("CONVENE_ROOM_TOKEN_TTL_SECONDS", "2")
            .env("CONVENE_SIGNALING_RESUME_GRACE_MS", "100"),
    )
    .await
    .unwrap();
    let existing = app.new_room(json!({"name": "Existing"})).await;
    let (_p, joined_p) = Client::join(&app, existing["token"].as_str().unwrap(), "Pat").await;

    let mut s = stream(&app, None).await;
    let snapshot = s.expect("snapshot").await;
    let mut seq = snapshot["seq"].as_u64().unwrap();
    assert_eq!(seq, 2, "roomCreated and participantJoined came before");
    let rooms = snapshot["rooms"].as_array().unwrap();
    assert_eq!(rooms.len(), 1);
    assert_eq!(rooms[0]["id"], existing["id"]);
    assert_eq!(rooms[0]["name"], "Existing");
    assert_eq!(rooms[0]["participants"][0]["address"], joined_p["address"]);

    let room = app
        .new_room(json!({"name": "Live", "autoUpgradeParticipantCount": 2}))
        .await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    let created = event(&mut s, "roomCreated", &mut seq).await;
    assert_eq!(created["room"], room);

    let (mut a, joined_a) = Client::join(&app, token, "A").await;
    let e = event(&mut s, "participantJoined", &mut seq).await;
    assert_eq!(e["roomId"], id);
    assert_eq!(e["participant"]["address"], joined_a["address"]);
    assert_eq!(e["participant"]["name"], "A");

    let (b, joined_b) = Client::join(&app, token, "B").await;
    assert_eq!(
        event(&mut s, "participantJoined", &mut seq).await["participant"]["address"],
        joined_b["address"]
    );
    let upgraded = event(&mut s, "roomUpgraded", &mut seq).await;
    assert_eq!(upgraded["room"]["conferenceType"], "SFU");
    assert_eq!(upgraded["room"]["maxParticipants"], 100);

    a.send(json!({"type": "mediaState", "video": false})).await;
    let updated = event(&mut s, "participantUpdated", &mut seq).await;
    assert_eq!(updated["participant"]["video"], false);

    b.drop_connection();
    let left = event(&mut s, "participantLeft", &mut seq).await;
    assert_eq!(
        left,
        json!({"type": "participantLeft", "seq": seq, "roomId": id, "address": joined_b["address"], "reason": "disconnected"})
    );

    a.send(json!({"type": "leave"})).await;
    let left = event(&mut s, "participantLeft", &mut seq).await;
    assert_eq!(left["reason"], "left");

    // A GET once the token is stale refreshes it: roomUpdated.
    let exp = jwt_claims(token)["exp"].as_u64().unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            now_ms() / 1000 + 1 >= exp
        })
        .await
    );
    let fetched = json_ok(app.get_room(id).await).await;
    assert_ne!(fetched["token"], room["token"]);
    let e = event(&mut s, "roomUpdated", &mut seq).await;
    assert_eq!(e["room"]["token"], fetched["token"]);

    assert_eq!(app.delete_room(id).await.status(), 200);
    assert_eq!(event(&mut s, "roomDeleted", &mut seq).await["roomId"], id);
}

#[tokio::test]
async fn an_expired_room_is_an_event() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_ROOM_TTL_SECONDS", "1"),
    )
    .await
    .unwrap();
    let mut s = stream(&app, None).await;
    let mut seq = s.expect("snapshot").await["seq"].as_u64().unwrap();
    let room = app.new_room(json!({})).await;
    event(&mut s, "roomCreated", &mut seq).await;
    assert_eq!(
        event(&mut s, "roomExpired", &mut seq).await["roomId"],
        room["id"]
    );
}

#[tokio::test]
async fn a_reconnecting_client_gets_exactly_what_it_missed() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let mut s = stream(&app, None).await;
    let mut seq = s.expect("snapshot").await["seq"].as_u64().unwrap();
    let first = app.new_room(json!({"name": "1"})).await;
    event(&mut s, "roomCreated", &mut seq).await;
    drop(s);
    let second = app.new_room(json!({"name": "2"})).await;
    let third = app.new_room(json!({"name": "3"})).await;
    assert_eq!(
        app.delete_room(first["id"].as_str().unwrap())
            .await
            .status(),
        200
    );

    let mut s = stream(&app, Some(seq)).await;
    assert_eq!(
        event(&mut s, "roomCreated", &mut seq).await["room"]["id"],
        second["id"]
    );
    assert_eq!(
        event(&mut s, "roomCreated", &mut seq).await["room"]["id"],
        third["id"]
    );
    assert_eq!(
        event(&mut s, "roomDeleted", &mut seq).await["roomId"],
        first["id"]
    );
    // Then live, with no repeat.
    let fourth = app.new_room(json!({"name": "4"})).await;
    assert_eq!(
        event(&mut s, "roomCreated", &mut seq).await["room"]["id"],
        fourth["id"]
    );
}

#[tokio::test]
async fn a_client_too_far_behind_gets_a_fresh_snapshot() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_ADMIN_EVENT_LOG_SIZE", "2"),
    )
    .await
    .unwrap();
    for name in ["1", "2", "3", "4"] {
        app.new_room(json!({"name": name})).await;
    }
    let mut s = stream(&app, Some(1)).await;
    let snapshot = s.expect("snapshot").await;
    assert_eq!(snapshot["seq"], 4);
    assert_eq!(snapshot["rooms"].as_array().unwrap().len(), 4);
    assert_eq!(snapshot["rooms"][0]["name"], "4", "newest first");
    // A lastSeq still in the log gets the events after it.
    let mut s = stream(&app, Some(3)).await;
    assert_eq!(s.expect("roomCreated").await["seq"], 4);
}

#[tokio::test]
async fn the_key_may_come_in_the_header_with_last_seq_in_the_query() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    app.new_room(json!({})).await;
    let mut request = crate::client::ws_url(&app, EVENTS)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-vcs-token", API_KEY.parse().unwrap());
    let mut s = Client::from_request(request).await;
    assert_eq!(s.expect("snapshot").await["seq"], 1);

    let mut request = crate::client::ws_url(&app, &format!("{EVENTS}?lastSeq=0"))
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("x-vcs-token", SECOND_API_KEY.parse().unwrap());
    let mut s = Client::from_request(request).await;
    assert_eq!(s.expect("roomCreated").await["seq"], 1);
}

#[tokio::test]
async fn bad_keys_and_bad_queries_are_refused() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    // Unknown key in the first message.
    let mut c = Client::connect_path(&app, EVENTS).await;
    c.send(json!({"type": "auth", "apiKey": "nope"})).await;
    c.expect_error("REALTIME-00009", Some("INVALID_TOKEN"))
        .await;
    c.expect_close(4001).await;
    // A first message that is not auth.
    let mut c = Client::connect_path(&app, EVENTS).await;
    c.send(json!({"type": "hello"})).await;
    c.expect_error("BASE-00001", None).await;
    c.expect_close(4001).await;
    // Unknown key in the header: 400 before any upgrade.
    let res = app
        .client
        .get(app.url(EVENTS))
        .header("x-vcs-token", "nope")
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        400,
        "REALTIME-00009",
        Some("INVALID_TOKEN"),
        "The token ::= [nope] is invalid.",
    )
    .await;
    let res = app
        .request(reqwest::Method::GET, &format!("{EVENTS}?lastSeq=abc"))
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        400,
        "BASE-00016",
        Some("INVALID_VALUE"),
        "The parameter with name ::= [lastSeq] has an invalid value.",
    )
    .await;
}

async fn upgrade_status(app: &TestApp, origin: &str) -> Result<u16, u16> {
    let mut request = crate::client::ws_url(app, EVENTS)
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("origin", origin.parse().unwrap());
    match connect_async(request).await {
        Ok((_, response)) => Ok(response.status().as_u16()),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn browser_origins_are_checked() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    assert_eq!(upgrade_status(&app, "http://evil.example").await, Err(403));
    assert_eq!(
        upgrade_status(&app, &format!("http://{}", app.host_port())).await,
        Ok(101)
    );
    let res = app
        .request(reqwest::Method::GET, EVENTS)
        .header("origin", "http://evil.example")
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        403,
        "BASE-00004",
        Some("FORBIDDEN"),
        "This origin may not open the admin event stream.",
    )
    .await;

    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_ADMIN_ALLOWED_ORIGINS", "https://ops.example.com"),
    )
    .await
    .unwrap();
    assert_eq!(
        upgrade_status(&app, "https://ops.example.com").await,
        Ok(101)
    );
    assert_eq!(
        upgrade_status(&app, &format!("http://{}", app.host_port())).await,
        Err(403)
    );
}

#[tokio::test]
async fn streams_close_with_1001_on_shutdown() {
    let mut app = TestApp::spawn(Backend::Memory).await.unwrap();
    let mut s = stream(&app, None).await;
    s.expect("snapshot").await;
    let closed = tokio::spawn(async move { s.next().await });
    let status = tokio::task::spawn_blocking(move || app.stop())
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(closed.await.unwrap(), Incoming::Closed(1001, _)));
    assert!(status.success());
}
