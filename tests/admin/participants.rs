use crate::client::Client;
use crate::support::*;
use reqwest::Method;
use serde_json::json;

fn participants_path(id: &str) -> String {
    format!("/api/realtime/room/{id}/participants")
}

#[tokio::test]
async fn participants_are_listed_in_join_order_with_their_state() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_SIGNALING_RESUME_GRACE_MS", "60000"),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    let mut a = Client::connect(&app).await;
    a.send(json!({"type": "join", "token": token, "name": "Al", "participantInfo": {"role": "host"}, "audio": false}))
        .await;
    let joined_a = a.expect("joined").await;
    let (b, joined_b) = Client::join(&app, token, "Bea").await;
    a.expect("participantJoined").await;

    let body = json_ok(
        app.request(Method::GET, &participants_path(id))
            .send()
            .await
            .unwrap(),
    )
    .await;
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[0]["address"], joined_a["address"]);
    assert_eq!(data[0]["name"], "Al");
    assert_eq!(data[0]["participantInfo"], json!({"role": "host"}));
    assert_eq!(data[0]["audio"], false);
    assert_eq!(data[0]["video"], true);
    assert!(data[0]["joinedAt"].as_u64().unwrap() <= data[1]["joinedAt"].as_u64().unwrap());
    assert_eq!(data[0]["connected"], true);
    assert_eq!(data[1]["address"], joined_b["address"]);

    // A dropped socket keeps its seat, not connected.
    b.drop_connection();
    let shows_disconnected = eventually(std::time::Duration::from_secs(5), || async {
        let body = json_ok(
            app.request(Method::GET, &participants_path(id))
                .send()
                .await
                .unwrap(),
        )
        .await;
        body["data"][1]["connected"] == false
    })
    .await;
    assert!(shows_disconnected);
}

#[tokio::test]
async fn kicking_closes_the_socket_tells_the_others_and_kills_the_resume_token() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    let (mut b, joined_b) = Client::join(&app, token, "B").await;
    a.expect("participantJoined").await;
    let address = joined_b["address"].as_str().unwrap();

    let res = app
        .request(
            Method::DELETE,
            &format!("{}/{address}", participants_path(id)),
        )
        .send()
        .await
        .unwrap();
    let body = json_ok(res).await;
    assert_eq!(body["participant"]["address"], address);
    assert_eq!(body["participant"]["name"], "B");
    assert_eq!(
        b.recv().await,
        json!({"type": "roomClosed", "reason": "kicked"})
    );
    b.expect_close(4013).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "participantLeft", "address": address, "reason": "kicked"})
    );

    let mut again = Client::connect(&app).await;
    again
        .send(json!({"type": "join", "token": token, "resume": joined_b["resumeToken"]}))
        .await;
    assert_ne!(
        again.expect("joined").await["address"],
        address,
        "the resume token died with the seat"
    );
}

#[tokio::test]
async fn unknown_rooms_and_participants_and_bad_keys_get_the_published_errors() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let missing = "RO-00000000-0000-4000-8000-000000000000";
    let room_text = format!("A conference room with id ::= [{missing}] does not exist.");
    let res = app
        .request(Method::GET, &participants_path(missing))
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        404,
        "REALTIME-00004",
        Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
        &room_text,
    )
    .await;
    let res = app
        .request(
            Method::DELETE,
            &format!("{}/PA-x", participants_path(missing)),
        )
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        404,
        "REALTIME-00004",
        Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
        &room_text,
    )
    .await;
    let res = app
        .request(Method::DELETE, &format!("{}/PA-x", participants_path(id)))
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        404,
        "REALTIME-00011",
        Some("PARTICIPANT_DOES_NOT_EXIST"),
        "A participant with address ::= [PA-x] does not exist in this room.",
    )
    .await;
    let res = app
        .client
        .get(app.url(&participants_path(id)))
        .send()
        .await
        .unwrap();
    assert_error(res, 401, "BASE-00001", None, "Authorization missing.").await;
    let res = app
        .client
        .delete(app.url(&format!("{}/PA-x", participants_path(id))))
        .header("x-vcs-token", "bad")
        .send()
        .await
        .unwrap();
    assert_error(
        res,
        400,
        "REALTIME-00009",
        Some("INVALID_TOKEN"),
        "The token ::= [bad] is invalid.",
    )
    .await;
}
