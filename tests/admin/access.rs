//! Who may join a room: participant tokens (`POST …/room/{id}/token`) with their identity
//! and permissions, bans that come with a removal, and the rotation of the room token
//! (`POST …/room/{id}/token/rotate`). REST over real HTTP, signaling over real WebSockets.

use crate::both_stores;
use crate::support::*;
use crate::ws::Client;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

async fn issue(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.request(Method::POST, &format!("/api/realtime/room/{id}/token"))
        .json(&body)
        .send()
        .await
        .unwrap()
}

/// A participant token of room `id` for this request body.
async fn token_for(app: &TestApp, id: &str, body: Value) -> String {
    let issued = json_ok(issue(app, id, body).await).await;
    issued["token"].as_str().unwrap().to_string()
}

async fn rotate(app: &TestApp, id: &str) -> reqwest::Response {
    app.request(
        Method::POST,
        &format!("/api/realtime/room/{id}/token/rotate"),
    )
    .send()
    .await
    .unwrap()
}

/// `DELETE …/participants/{address}` with this query (`""`, `"?ban=true"`, …).
async fn kick(app: &TestApp, id: &str, address: &str, query: &str) -> reqwest::Response {
    app.request(
        Method::DELETE,
        &format!("/api/realtime/room/{id}/participants/{address}{query}"),
    )
    .send()
    .await
    .unwrap()
}

async fn participants(app: &TestApp, id: &str) -> Value {
    json_ok(app.participants(id).await).await["data"].clone()
}

/// A `join` with `token` that must be refused with this error and close code.
async fn refused(app: &TestApp, token: &str, code: &str, id: &str, close: u16) -> Value {
    let mut c = Client::connect(app).await;
    c.send(json!({"type": "join", "token": token})).await;
    let error = c.expect_error(code, Some(id)).await;
    c.expect_close(close).await;
    error
}

fn room_of(room: &Value) -> (String, String) {
    (
        room["id"].as_str().unwrap().to_string(),
        room["token"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn a_participant_token_joins_as_its_identity_with_its_permissions() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let (id, room_token) = room_of(&app.new_room(json!({"name": "Tokens"})).await);
    let mut admin = Client::stream(&app, None).await;
    admin.expect("snapshot").await;
    let (mut b, _) = Client::join(&app, &room_token, "Bea").await;
    admin.expect("participantJoined").await;

    let before = now_ms();
    let issued = json_ok(
        issue(
            &app,
            &id,
            json!({"identity": "alice@example.com", "name": "Alice",
                   "participantInfo": {"role": "viewer"}, "canSendMessages": false,
                   "ttlSeconds": 600}),
        )
        .await,
    )
    .await;
    assert_eq!(issued["roomId"], id);
    assert_eq!(issued["identity"], "alice@example.com");
    let expires_at = issued["expiresAt"].as_u64().unwrap();
    assert!(
        expires_at >= before / 1000 * 1000 + 600_000 && expires_at <= now_ms() + 600_000,
        "{issued}"
    );
    let token = issued["token"].as_str().unwrap();
    assert!(jwt_verifies(token, TOKEN_SECRET));
    let claims = jwt_claims(token);
    assert_eq!(claims["sub"], id);
    assert_eq!(claims["grant"]["identity"], "alice@example.com");
    assert_eq!(claims["exp"].as_u64().unwrap() * 1000, expires_at);

    // The token's name wins over the join's own.
    let (mut a, joined) = Client::join_with(
        &app,
        json!({"type": "join", "token": token, "name": "Mallory", "video": false}),
    )
    .await;
    let permissions = json!({"canPublish": true, "canSubscribe": true, "canSendMessages": false});
    assert_eq!(joined["identity"], "alice@example.com");
    assert_eq!(joined["permissions"], permissions);
    let address = joined["address"].clone();
    let seen = b.expect("participantJoined").await["participant"].clone();
    let alice = json!({"address": address, "identity": "alice@example.com", "name": "Alice",
        "participantInfo": {"role": "viewer"}, "audio": true, "video": false,
        "joinedAt": seen["joinedAt"].as_u64().unwrap(), "permissions": permissions});
    assert_eq!(seen, alice);
    let listed = participants(&app, &id).await;
    assert_eq!(listed[1]["identity"], "alice@example.com");
    assert_eq!(listed[1]["permissions"], permissions);
    assert!(
        listed[0].get("identity").is_none(),
        "the room token names nobody"
    );
    let event = admin.expect("participantJoined").await;
    assert_eq!(event["participant"], alice);

    // canSendMessages: false refuses its messages (and nobody gets them); signals pass.
    a.send(json!({"type": "message", "data": "hello"})).await;
    a.expect_error("REALTIME-00034", Some("MESSAGE_FORBIDDEN"))
        .await;
    a.send(json!({"type": "signal", "to": listed[0]["address"], "data": {"candidate": "c"}}))
        .await;
    assert_eq!(b.expect("signal").await["from"], address);
    b.assert_alive().await;
    // The others' messages reach it.
    b.send(json!({"type": "message", "data": "hi"})).await;
    assert_eq!(a.expect("message").await["data"], "hi");

    // Its leave names its identity on the admin stream.
    assert_eq!(
        kick(&app, &id, address.as_str().unwrap(), "")
            .await
            .status(),
        200
    );
    a.expect("roomClosed").await;
    let left = admin.expect("participantLeft").await;
    assert_eq!(left["identity"], "alice@example.com", "{left}");
    assert_eq!(left["reason"], "kicked");
}

#[tokio::test]
async fn a_second_join_of_an_identity_replaces_the_first_socket() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let (id, room_token) = room_of(&app.new_room(json!({})).await);
    let token = token_for(&app, &id, json!({"identity": "alice"})).await;
    let (mut b, _) = Client::join(&app, &room_token, "Bea").await;
    let (mut first, joined_first) =
        Client::join_with(&app, json!({"type": "join", "token": token})).await;
    b.expect("participantJoined").await;

    let (mut second, joined_second) =
        Client::join_with(&app, json!({"type": "join", "token": token})).await;
    first.expect_close(4012).await;
    assert_ne!(joined_second["address"], joined_first["address"]);
    let left = b.expect("participantLeft").await;
    assert_eq!(
        (&left["address"], &left["reason"]),
        (&joined_first["address"], &json!("replaced"))
    );
    let joined = b.expect("participantJoined").await;
    assert_eq!(joined["participant"]["address"], joined_second["address"]);
    assert_eq!(joined["participant"]["identity"], "alice");
    let listed = participants(&app, &id).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    second.assert_alive().await;
}

#[tokio::test]
async fn a_participant_that_may_not_publish_has_its_sending_sdp_refused_in_mesh() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let (id, room_token) = room_of(&app.new_room(json!({})).await);
    let token = token_for(
        &app,
        &id,
        json!({"identity": "viewer", "canPublish": false}),
    )
    .await;
    let (mut b, joined_b) = Client::join(&app, &room_token, "Bea").await;
    let (mut a, joined) = Client::join_with(&app, json!({"type": "join", "token": token})).await;
    assert_eq!(joined["permissions"]["canPublish"], false);
    b.expect("participantJoined").await;
    let to = joined_b["address"].clone();
    let sdp = |direction: &str| {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=mid:0\r\na={direction}\r\n"
        )
    };
    a.send(json!({"type": "signal", "to": to,
                  "data": {"description": {"type": "offer", "sdp": sdp("sendrecv")}}}))
        .await;
    a.expect_error("REALTIME-00033", Some("PUBLISH_FORBIDDEN"))
        .await;
    // Receiving only is allowed: the answer that takes the others' media passes.
    a.send(json!({"type": "signal", "to": to,
                  "data": {"description": {"type": "answer", "sdp": sdp("recvonly")}}}))
        .await;
    let relayed = b.expect("signal").await;
    assert_eq!(relayed["data"]["description"]["type"], "answer");
    // The one refused offer never reached B.
    b.assert_alive().await;
    a.assert_alive().await;
}

/// The rule of `canSubscribe: false` in a MESH room (docs/api.md): media flows between the
/// browsers, so the server does not enforce it. The participant joins, everyone is shown its
/// permission, and its SDP that receives media (`sendrecv`, `recvonly`) is relayed like
/// anyone's, where a participant without `canPublish` has its sending SDP refused. Once the
/// room is SFU (here by its upgrade), the media server enforces it.
#[tokio::test]
async fn in_mesh_can_subscribe_is_shown_not_enforced_and_its_receiving_sdp_is_relayed() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let (id, room_token) = room_of(
        &app.new_room(json!({"autoUpgradeParticipantCount": 3}))
            .await,
    );
    let token = token_for(
        &app,
        &id,
        json!({"identity": "camera-1", "canSubscribe": false}),
    )
    .await;
    let (mut b, joined_b) = Client::join(&app, &room_token, "Bea").await;
    let (mut a, joined) = Client::join_with(&app, json!({"type": "join", "token": token})).await;
    let withheld = json!({"canPublish": true, "canSubscribe": false, "canSendMessages": true});
    assert_eq!(joined["permissions"], withheld);
    assert_eq!(joined["room"]["conferenceType"], "MESH");
    let seen = b.expect("participantJoined").await;
    assert_eq!(
        seen["participant"]["permissions"], withheld,
        "shown to the others"
    );
    let to = joined_b["address"].clone();
    let sdp = |direction: &str| {
        format!(
            "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=mid:0\r\na={direction}\r\n"
        )
    };
    for (kind, direction) in [("offer", "sendrecv"), ("answer", "recvonly")] {
        a.send(json!({"type": "signal", "to": to,
                      "data": {"description": {"type": kind, "sdp": sdp(direction)}}}))
            .await;
        let relayed = b.expect("signal").await;
        assert_eq!(relayed["from"], joined["address"]);
        assert_eq!(relayed["data"]["description"]["type"], kind);
        assert!(
            relayed["data"]["description"]["sdp"]
                .as_str()
                .unwrap()
                .contains(&format!("a={direction}")),
            "relayed unchanged"
        );
    }
    // A third participant upgrades the room: from then on the media server enforces it
    // (nothing is forwarded to the participant; `tests/sfu`, the media engine's unit tests).
    let (_c, _) = Client::join(&app, &room_token, "Cy").await;
    a.expect("participantJoined").await;
    let upgraded = a.expect("conferenceTypeChanged").await;
    assert_eq!(upgraded["conferenceType"], "SFU");
    b.expect("participantJoined").await;
    b.expect("conferenceTypeChanged").await;
    a.assert_alive().await;
    b.assert_alive().await;
}

#[tokio::test]
async fn token_requests_are_validated_in_the_published_error_format() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let (id, _) = room_of(&app.new_room(json!({})).await);
    let cases = [
        (json!({}), 400, "BASE-00011", Some("PARAMETER_MISSING"),
         "The parameter with name ::= [identity] is missing.".to_string()),
        (json!({"identity": ""}), 400, "BASE-00016", Some("INVALID_VALUE"),
         "The parameter with name ::= [identity] has an invalid value.".to_string()),
        (json!({"identity": "tab\there"}), 400, "BASE-00016", Some("INVALID_VALUE"),
         "The parameter with name ::= [identity] has an invalid value.".to_string()),
        (json!({"identity": "x".repeat(257)}), 400, "BASE-00013", Some("STRING_SIZE"),
         "The parameter with name ::= [identity] is larger than ::= [256] characters".to_string()),
        (json!({"identity": "a", "ttlSeconds": 0}), 400, "BASE-00015", Some("NUMBER_SIZE"),
         "The parameter with name ::= [ttlSeconds] is is not within the range from ::= [1] to [2592000]".to_string()),
        (json!({"identity": "a", "ttlSeconds": 2_592_001}), 400, "BASE-00015", Some("NUMBER_SIZE"),
         "The parameter with name ::= [ttlSeconds] is is not within the range from ::= [1] to [2592000]".to_string()),
        (json!({"identity": "a", "ttlSeconds": "an hour"}), 400, "BASE-00016", Some("INVALID_VALUE"),
         "The parameter with name ::= [ttlSeconds] has an invalid value.".to_string()),
        (json!({"identity": "a", "canPublish": "no"}), 400, "BASE-00016", Some("INVALID_VALUE"),
         "The parameter with name ::= [canPublish] has an invalid value.".to_string()),
    ];
    for (body, status, code, error_id, description) in cases {
        assert_error(
            issue(&app, &id, body).await,
            status,
            code,
            error_id,
            &description,
        )
        .await;
    }
    // The identity's limit counts characters, not bytes.
    assert_eq!(
        issue(&app, &id, json!({"identity": "é".repeat(256)}))
            .await
            .status(),
        200
    );

    let missing = "RO-00000000-0000-4000-8000-000000000000";
    let gone = format!("A conference room with id ::= [{missing}] does not exist.");
    for res in [
        issue(&app, missing, json!({"identity": "a"})).await,
        rotate(&app, missing).await,
        kick(&app, missing, "PA-x", "?ban=true").await,
    ] {
        assert_error(
            res,
            404,
            "REALTIME-00004",
            Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
            &gone,
        )
        .await;
    }
    // The API key comes first.
    let res = app
        .client
        .post(app.url(&format!("/api/realtime/room/{id}/token")))
        .json(&json!({"identity": "a"}))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "BASE-00001", None, "Authorization missing.").await;
    let res = app
        .client
        .post(app.url(&format!("/api/realtime/room/{id}/token/rotate")))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "BASE-00001", None, "Authorization missing.").await;
    // Bad ban parameters.
    for (query, name) in [
        ("?ban=maybe", "ban"),
        ("?ban=false&banSeconds=5", "banSeconds"),
    ] {
        assert_error(
            kick(&app, &id, "PA-x", query).await,
            400,
            "BASE-00016",
            Some("INVALID_VALUE"),
            &format!("The parameter with name ::= [{name}] has an invalid value."),
        )
        .await;
    }
    assert_error(
        kick(&app, &id, "PA-x", "?banSeconds=0").await,
        400,
        "BASE-00015",
        Some("NUMBER_SIZE"),
        "The parameter with name ::= [banSeconds] is is not within the range from ::= [1] to [31536000]",
    )
    .await;
}

#[tokio::test]
async fn an_anonymous_participant_cannot_be_banned_and_stays() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let (id, room_token) = room_of(&app.new_room(json!({})).await);
    let (mut a, joined) = Client::join(&app, &room_token, "Anon").await;
    let address = joined["address"].as_str().unwrap();
    assert_error(
        kick(&app, &id, address, "?ban=true").await,
        409,
        "REALTIME-00035",
        Some("PARTICIPANT_WITHOUT_IDENTITY"),
        &format!(
            "The participant with address ::= [{address}] joined without an identity and cannot be banned; rotate the room token instead."
        ),
    )
    .await;
    a.assert_alive().await;
    assert_eq!(participants(&app, &id).await.as_array().unwrap().len(), 1);
}

both_stores!(
    bans_and_rotations_hold_and_survive_passivation,
    Options::default().env("CONVENE_ROOM_IDLE_SECONDS", 1),
    |app: TestApp| async move {
        let (id, old_token) = room_of(&app.new_room(json!({})).await);
        let alice = token_for(&app, &id, json!({"identity": "alice"})).await;
        let bob = token_for(&app, &id, json!({"identity": "bob"})).await;
        let (mut a, joined_a) =
            Client::join_with(&app, json!({"type": "join", "token": alice})).await;
        let (mut anon, _) = Client::join(&app, &old_token, "Anon").await;
        a.expect("participantJoined").await;

        // A ban until the room ends.
        let before = now_ms();
        let res = kick(
            &app,
            &id,
            joined_a["address"].as_str().unwrap(),
            "?ban=true",
        )
        .await;
        let body = json_ok(res).await;
        assert_eq!(body["participant"]["identity"], "alice");
        let room = json_ok(app.get_room(&id).await).await;
        let end = room["creationTime"].as_u64().unwrap()
            + room["roomTTLSeconds"].as_u64().unwrap() * 1000;
        assert_eq!(body["bannedUntil"], end);
        a.expect("roomClosed").await;
        a.expect_close(4013).await;
        anon.expect("participantLeft").await;
        let error = refused(&app, &alice, "REALTIME-00031", "PARTICIPANT_BANNED", 4003).await;
        assert_eq!(
            error["description"][0],
            format!(
                "The identity ::= [alice] is banned from the conference room with id ::= [{id}] until ::= [{end}]."
            )
        );
        // A timed ban: its end is banSeconds from the kick.
        let (_b, joined_b) = Client::join_with(&app, json!({"type": "join", "token": bob})).await;
        anon.expect("participantJoined").await;
        let body = json_ok(
            kick(
                &app,
                &id,
                joined_b["address"].as_str().unwrap(),
                "?banSeconds=600",
            )
            .await,
        )
        .await;
        anon.expect("participantLeft").await;
        let until = body["bannedUntil"].as_u64().unwrap();
        assert!(
            until >= before + 600_000 && until <= now_ms() + 600_000,
            "{body}"
        );
        refused(&app, &bob, "REALTIME-00031", "PARTICIPANT_BANNED", 4003).await;
        // Another identity still joins.
        let carol = token_for(&app, &id, json!({"identity": "carol"})).await;
        let (mut carol_socket, _) =
            Client::join_with(&app, json!({"type": "join", "token": carol})).await;
        carol_socket.send(json!({"type": "leave"})).await;
        carol_socket.expect_close(1000).await;
        anon.expect("participantJoined").await;
        anon.expect("participantLeft").await;

        // Rotation: the old room token takes no new seat; whoever is inside stays.
        let rotated = json_ok(rotate(&app, &id).await).await["room"].clone();
        let new_token = rotated["token"].as_str().unwrap().to_string();
        assert_ne!(new_token, old_token);
        assert_eq!(rotated["id"], id);
        assert_eq!(
            json_ok(app.get_room(&id).await).await["token"],
            new_token.as_str()
        );
        let error = refused(
            &app,
            &old_token,
            "REALTIME-00032",
            "ROOM_TOKEN_ROTATED",
            4001,
        )
        .await;
        assert_eq!(
            error["description"][0],
            "The room token was rotated: fetch the room for its current token."
        );
        anon.assert_alive().await;
        let (mut new_socket, _) = Client::join(&app, &new_token, "New").await;
        anon.expect("participantJoined").await;
        new_socket.send(json!({"type": "leave"})).await;
        new_socket.expect_close(1000).await;
        anon.expect("participantLeft").await;
        anon.send(json!({"type": "leave"})).await;
        anon.expect_close(1000).await;

        // The room passivates (nobody in it); its bans and rotation come back with it.
        assert!(
            eventually(Duration::from_secs(20), || async {
                app.active_rooms().await == 0
            })
            .await,
            "the room never passivated"
        );
        refused(&app, &alice, "REALTIME-00031", "PARTICIPANT_BANNED", 4003).await;
        refused(
            &app,
            &old_token,
            "REALTIME-00032",
            "ROOM_TOKEN_ROTATED",
            4001,
        )
        .await;
        let (_c, joined) = Client::join(&app, &new_token, "After").await;
        assert_eq!(joined["room"]["id"], id);
        // The refusals are counted by their reason; the replaced seat by its leave reason.
        let metrics = app.metrics_text().await;
        for line in [
            r#"convene_join_refusals_total{reason="banned"} 3"#,
            r#"convene_join_refusals_total{reason="rotated"} 2"#,
            r#"convene_leaves_total{reason="replaced"} 0"#,
        ] {
            assert!(
                metrics.lines().any(|l| l == line),
                "no {line:?} in\n{metrics}"
            );
        }
    }
);

#[tokio::test]
async fn bans_and_rotations_survive_a_restart_with_redis() {
    let Some(mut app) = TestApp::spawn(Backend::Redis).await else {
        return;
    };
    let (id, old_token) = room_of(&app.new_room(json!({})).await);
    let alice = token_for(&app, &id, json!({"identity": "alice"})).await;
    let (_a, joined) = Client::join_with(&app, json!({"type": "join", "token": alice})).await;
    json_ok(
        kick(
            &app,
            &id,
            joined["address"].as_str().unwrap(),
            "?banSeconds=3600",
        )
        .await,
    )
    .await;
    let new_token = json_ok(rotate(&app, &id).await).await["room"]["token"]
        .as_str()
        .unwrap()
        .to_string();

    app.restart();
    refused(&app, &alice, "REALTIME-00031", "PARTICIPANT_BANNED", 4003).await;
    refused(
        &app,
        &old_token,
        "REALTIME-00032",
        "ROOM_TOKEN_ROTATED",
        4001,
    )
    .await;
    let (_c, joined) = Client::join(&app, &new_token, "After").await;
    assert_eq!(joined["room"]["id"], id);
    // The participant token of a deleted room never works again.
    assert_eq!(app.delete_room(&id).await.status(), 200);
    let bob = issue(&app, &id, json!({"identity": "bob"})).await;
    assert_eq!(bob.status(), 404);
}
