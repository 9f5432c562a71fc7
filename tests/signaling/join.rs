use crate::support::*;
use crate::ws::{Client, Incoming};
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::json;

async fn app_with(options: Options) -> TestApp {
    TestApp::spawn_with(Backend::Memory, options).await.unwrap()
}

#[tokio::test]
async fn join_announces_everyone_to_everyone() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({"name": "Room A"})).await;
    let token = room["token"].as_str().unwrap();

    let mut a = Client::connect(&app).await;
    a.send(json!({"type": "join", "token": token, "name": "Al", "participantInfo": {"role": "host"}, "video": false}))
        .await;
    let joined_a = a.expect("joined").await;
    let address_a = joined_a["address"].as_str().unwrap().to_string();
    assert!(
        address_a.starts_with("PA-") && address_a.len() == 39,
        "{address_a}"
    );
    assert_eq!(
        joined_a["room"],
        json!({"id": room["id"], "name": "Room A", "conferenceType": "MESH", "maxParticipants": 7})
    );
    assert_eq!(joined_a["participants"], json!([]));
    assert_eq!(joined_a["iceServers"], json!([]));
    assert!(
        joined_a["resumeToken"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );

    let mut b = Client::connect(&app).await;
    b.send(json!({"type": "join", "token": token, "name": "Bea", "participantInfo": {"seat": 2, "tags": ["x"]}, "audio": false}))
        .await;
    let joined_b = b.expect("joined").await;
    let address_b = joined_b["address"].as_str().unwrap();
    assert_ne!(address_b, address_a);
    let keys: Vec<&str> = joined_b
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        [
            "type",
            "address",
            "name",
            "room",
            "participants",
            "iceServers",
            "resumeToken"
        ]
    );
    assert_eq!(
        joined_b["name"], "Bea",
        "its own name, as the others see it"
    );
    let others = joined_b["participants"].as_array().unwrap();
    assert_eq!(others.len(), 1);
    let joined_at_a = others[0]["joinedAt"].as_u64().unwrap();
    assert!(joined_at_a <= now_ms() && joined_at_a + 60_000 > now_ms());
    assert_eq!(
        others[0],
        json!({"address": address_a, "name": "Al", "participantInfo": {"role": "host"}, "audio": true, "video": false, "joinedAt": joined_at_a})
    );

    let announced = a.expect("participantJoined").await;
    let joined_at_b = announced["participant"]["joinedAt"].as_u64().unwrap();
    assert!(joined_at_b >= joined_at_a);
    assert_eq!(
        announced,
        json!({"type": "participantJoined", "participant": {"address": address_b, "name": "Bea", "participantInfo": {"seat": 2, "tags": ["x"]}, "audio": false, "video": true, "joinedAt": joined_at_b}})
    );

    // A third participant without name or participantInfo: absent, not null.
    let (_c, joined_c) = Client::join(&app, token, "").await;
    assert_eq!(joined_c["participants"].as_array().unwrap().len(), 2);
    let mut bare = Client::connect(&app).await;
    bare.send(json!({"type": "join", "token": token})).await;
    let joined_bare = bare.expect("joined").await;
    let announced = a.expect("participantJoined").await;
    assert_eq!(announced["participant"]["address"], joined_c["address"]);
    let announced = a.expect("participantJoined").await;
    assert_eq!(announced["participant"]["address"], joined_bare["address"]);
    let participant = announced["participant"].as_object().unwrap();
    assert!(
        !participant.contains_key("name") && !participant.contains_key("participantInfo"),
        "{announced}"
    );
    assert_eq!(participant["audio"], true);
    assert_eq!(participant["video"], true);
}

#[tokio::test]
async fn ice_servers_carry_turn_rest_credentials() {
    let app = app_with(
        Options::default()
            .env(
                "CONVENE_ICE_SERVERS",
                "stun:stun.example.org:3478,turn:turn.example.org:3478",
            )
            .env("CONVENE_TURN_SECRET", "s3cret")
            .env("CONVENE_TURN_CREDENTIAL_TTL_SECONDS", "600"),
    )
    .await;
    let room = app.new_room(json!({})).await;
    let (_a, joined) = Client::join(&app, room["token"].as_str().unwrap(), "A").await;
    let ice = joined["iceServers"].as_array().unwrap();
    assert_eq!(ice[0], json!({"urls": ["stun:stun.example.org:3478"]}));
    assert_eq!(ice[1]["urls"], json!(["turn:turn.example.org:3478"]));
    let username = ice[1]["username"].as_str().unwrap();
    let (expiry, address) = username.split_once(':').unwrap();
    assert_eq!(address, joined["address"]);
    let expiry: u64 = expiry.parse().unwrap();
    let now = now_ms() / 1000;
    assert!(
        expiry >= now + 590 && expiry <= now + 610,
        "{expiry} vs {now}"
    );
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
    mac.update(username.as_bytes());
    let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    assert_eq!(ice[1]["credential"], expected);
}

#[tokio::test]
async fn seats_are_exact_under_a_join_race() {
    let app = app_with(Options::default().env("CONVENE_MESH_MAX_PARTICIPANTS", "3")).await;
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap().to_string();
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(Client::connect(&app).await);
    }
    let joins = clients.into_iter().map(|mut c| {
        let token = token.clone();
        tokio::spawn(async move {
            c.send(json!({"type": "join", "token": token})).await;
            let first = c.recv().await;
            if first["type"] == "joined" {
                (true, c)
            } else {
                assert_eq!(first["code"], "REALTIME-00010", "{first}");
                assert_eq!(first["id"], "CONFERENCE_ROOM_FULL");
                c.expect_close(4009).await;
                (false, c)
            }
        })
    });
    let results = futures_util::future::join_all(joins).await;
    let admitted = results.iter().filter(|r| r.as_ref().unwrap().0).count();
    assert_eq!(admitted, 3);
}

#[tokio::test]
async fn bad_tokens_are_refused_with_4001() {
    let app = app_with(Options::default().env("CONVENE_ROOM_TOKEN_TTL_SECONDS", "1")).await;
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap().to_string();
    let (head, rest) = token.split_once('.').unwrap();
    let (payload, _) = rest.split_once('.').unwrap();
    let other_secret = {
        let claims = jwt_claims(&token);
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes!"),
        )
        .unwrap()
    };
    for bad in [
        "garbage".to_string(),
        format!("{head}.{payload}.AAAA"),
        other_secret,
    ] {
        let mut c = Client::connect(&app).await;
        c.send(json!({"type": "join", "token": bad})).await;
        c.expect_error("REALTIME-00009", Some("INVALID_TOKEN"))
            .await;
        c.expect_close(4001).await;
    }
    // The same token once its `exp` has passed.
    let exp = jwt_claims(&token)["exp"].as_u64().unwrap();
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            now_ms() / 1000 > exp
        })
        .await
    );
    let mut c = Client::connect(&app).await;
    c.send(json!({"type": "join", "token": token})).await;
    c.expect_error("REALTIME-00009", Some("INVALID_TOKEN"))
        .await;
    c.expect_close(4001).await;
}

/// A token that carries a `nbf` ("not before") in the future is refused like any bad token,
/// even when it is signed with the service's secret; the same claims with a past `nbf` join.
#[tokio::test]
async fn a_token_not_valid_yet_is_refused_with_4001() {
    let app = app_with(Options::default()).await;
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap().to_string();
    let with_nbf = |nbf: u64| {
        let mut claims = jwt_claims(&token);
        claims["nbf"] = nbf.into();
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(TOKEN_SECRET.as_bytes()),
        )
        .unwrap()
    };
    let now = now_ms() / 1000;
    let mut c = Client::connect(&app).await;
    c.send(json!({"type": "join", "token": with_nbf(now + 3600)}))
        .await;
    c.expect_error("REALTIME-00009", Some("INVALID_TOKEN"))
        .await;
    c.expect_close(4001).await;

    let (_joined, joined) = Client::join(&app, &with_nbf(now - 60), "past nbf").await;
    assert_eq!(joined["type"], "joined", "{joined}");
}

#[tokio::test]
async fn a_socket_without_join_is_closed_and_other_messages_wait_for_join() {
    let app = app_with(Options::default().env("CONVENE_SIGNALING_JOIN_TIMEOUT_MS", "300")).await;
    let room = app.new_room(json!({})).await;
    let mut c = Client::connect(&app).await;
    c.send(json!({"type": "signal", "to": "PA-x", "data": {}}))
        .await;
    c.expect_error("REALTIME-00012", Some("NOT_JOINED")).await;
    for before in [
        json!({"type": "message", "data": "hi"}),
        json!({"type": "mediaState", "audio": false}),
        json!({"type": "leave"}),
    ] {
        c.send(before).await;
        c.expect_error("REALTIME-00012", Some("NOT_JOINED")).await;
    }
    c.assert_alive().await;
    // Pings do not count as a join: the socket is still closed at the join timeout.
    let reason = c.expect_close(4008).await;
    assert!(!reason.is_empty());
    // A socket that sends nothing at all is closed too.
    let mut silent = Client::connect(&app).await;
    silent.expect_close(4008).await;

    let connected = std::time::Instant::now();
    let (mut joined, _) = Client::join(&app, room["token"].as_str().unwrap(), "A").await;
    joined
        .send(json!({"type": "join", "token": room["token"]}))
        .await;
    joined
        .expect_error("REALTIME-00013", Some("ALREADY_JOINED"))
        .await;
    joined.assert_alive().await;
    // A joined socket outlives the join timeout.
    let later = connected + std::time::Duration::from_millis(600);
    assert!(
        eventually(std::time::Duration::from_secs(5), || async {
            std::time::Instant::now() >= later
        })
        .await
    );
    joined.assert_alive().await;
}

#[tokio::test]
async fn joins_after_the_room_is_gone_get_4004() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    assert_eq!(
        app.delete_room(room["id"].as_str().unwrap()).await.status(),
        200
    );
    let mut c = Client::connect(&app).await;
    c.send(json!({"type": "join", "token": room["token"]}))
        .await;
    c.expect_error("REALTIME-00004", Some("CONFERENCE_ROOM_DOES_NOT_EXIST"))
        .await;
    assert_eq!(
        c.next().await,
        Incoming::Closed(4004, "conference_room_does_not_exist".into())
    );
}
