//! `GET /api/realtime/room/{id}/participants` and
//! `DELETE /api/realtime/room/{id}/participants/{address}`.

use crate::support::*;
use crate::ws::Client;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

fn list_path(id: &str) -> String {
    format!("/api/realtime/room/{id}/participants")
}

fn kick_path(id: &str, address: &str) -> String {
    format!("/api/realtime/room/{id}/participants/{address}")
}

async fn list(app: &TestApp, id: &str) -> Value {
    json_ok(
        app.request(Method::GET, &list_path(id))
            .send()
            .await
            .unwrap(),
    )
    .await
}

async fn kick(app: &TestApp, id: &str, address: &str) -> reqwest::Response {
    app.request(Method::DELETE, &kick_path(id, address))
        .send()
        .await
        .unwrap()
}

/// A participant object as the REST list shows it.
fn listed(participant: &Value, connected: bool) -> Value {
    let mut p = participant.clone();
    p["connected"] = connected.into();
    p
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
    assert_eq!(list(&app, id).await, json!({"data": []}));

    let (mut a, _) = Client::join_with(
        &app,
        json!({"type": "join", "token": token, "name": "Al",
               "participantInfo": {"role": "host", "seat": 1}, "audio": false}),
    )
    .await;
    let (b, joined_b) = Client::join_with(&app, json!({"type": "join", "token": token})).await;
    let (_c, joined_c) = Client::join(&app, token, "Cy").await;
    // B and C see everyone before them as the others see them.
    let al = joined_b["participants"][0].clone();
    let bea = a.expect("participantJoined").await["participant"].clone();
    let cy = a.expect("participantJoined").await["participant"].clone();
    assert_eq!(joined_c["participants"], json!([al, bea]));
    assert_eq!(
        al,
        json!({"address": al["address"], "name": "Al", "participantInfo": {"role": "host", "seat": 1},
               "audio": false, "video": true, "joinedAt": al["joinedAt"]})
    );
    assert_eq!(
        bea,
        json!({"address": joined_b["address"], "audio": true, "video": true, "joinedAt": bea["joinedAt"]}),
        "no name, no participantInfo: no such keys"
    );
    let times: Vec<u64> = [&al, &bea, &cy]
        .iter()
        .map(|p| p["joinedAt"].as_u64().unwrap())
        .collect();
    assert!(times.is_sorted(), "{times:?}");
    assert!(times[0] >= room["creationTime"].as_u64().unwrap() && times[2] <= now_ms());

    assert_eq!(
        list(&app, id).await,
        json!({"data": [listed(&al, true), listed(&bea, true), listed(&cy, true)]})
    );

    // A media change shows; a dropped socket keeps its seat, no longer connected.
    a.send(json!({"type": "mediaState", "audio": true, "video": false}))
        .await;
    let mut al_now = al.clone();
    al_now["audio"] = true.into();
    al_now["video"] = false.into();
    b.drop_connection();
    let expected = json!({"data": [listed(&al_now, true), listed(&bea, false), listed(&cy, true)]});
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let listed = list(&app, id).await;
        if listed == expected {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "last listed: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn kicking_closes_the_socket_tells_the_others_and_kills_the_resume_token() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    let (mut b, joined_b) = Client::join(&app, token, "B").await;
    let address = joined_b["address"].as_str().unwrap();
    let b_participant = a.expect("participantJoined").await["participant"].clone();
    let mut s = Client::stream(&app, None).await;
    let seq = s.expect("snapshot").await["seq"].as_u64().unwrap();

    let res = kick(&app, id, address).await;
    assert_eq!(
        json_ok(res).await,
        json!({"participant": listed(&b_participant, true)})
    );
    assert_eq!(
        b.recv().await,
        json!({"type": "roomClosed", "reason": "kicked"})
    );
    b.expect_close(4013).await;
    assert_eq!(
        a.recv().await,
        json!({"type": "participantLeft", "address": address, "reason": "kicked"})
    );
    a.assert_alive().await;
    assert_eq!(
        s.recv().await,
        json!({"type": "participantLeft", "seq": seq + 1, "roomId": id, "address": address, "reason": "kicked"})
    );
    assert_eq!(list(&app, id).await["data"].as_array().unwrap().len(), 1);

    // Gone for good: a second kick is a 404, and the resume token takes no seat back.
    let res = kick(&app, id, address).await;
    assert_error(
        res,
        404,
        "REALTIME-00011",
        Some("PARTICIPANT_DOES_NOT_EXIST"),
        &format!("A participant with address ::= [{address}] does not exist in this room."),
    )
    .await;
    let (_again, rejoined) = Client::join_with(
        &app,
        json!({"type": "join", "token": token, "name": "B", "resume": joined_b["resumeToken"]}),
    )
    .await;
    assert_ne!(
        rejoined["address"], address,
        "the resume token died with the seat"
    );
    assert!(rejoined["address"].as_str().unwrap().starts_with("PA-"));
    assert_eq!(
        a.expect("participantJoined").await["participant"]["address"],
        rejoined["address"]
    );
}

#[tokio::test]
async fn a_participant_waiting_for_a_resume_can_be_kicked() {
    let app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_SIGNALING_RESUME_GRACE_MS", "60000"),
    )
    .await
    .unwrap();
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    let (b, joined_b) = Client::join(&app, token, "B").await;
    let address = joined_b["address"].as_str().unwrap();
    let b_participant = a.expect("participantJoined").await["participant"].clone();
    b.drop_connection();
    let waiting = eventually(Duration::from_secs(5), || async {
        list(&app, id).await["data"][1]["connected"] == false
    })
    .await;
    assert!(waiting);

    let res = kick(&app, id, address).await;
    assert_eq!(
        json_ok(res).await,
        json!({"participant": listed(&b_participant, false)})
    );
    assert_eq!(
        a.recv().await,
        json!({"type": "participantLeft", "address": address, "reason": "kicked"})
    );
    let (_again, rejoined) = Client::join_with(
        &app,
        json!({"type": "join", "token": token, "resume": joined_b["resumeToken"]}),
    )
    .await;
    assert_ne!(rejoined["address"], address);
}

#[tokio::test]
async fn unknown_rooms_and_participants_get_the_published_errors() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let missing = "RO-00000000-0000-4000-8000-000000000000";
    let no_room = |id: &str| format!("A conference room with id ::= [{id}] does not exist.");
    let not_found = |res, id: &str| {
        let text = no_room(id);
        async move {
            assert_error(
                res,
                404,
                "REALTIME-00004",
                Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
                &text,
            )
            .await
        }
    };
    let res = app
        .request(Method::GET, &list_path(missing))
        .send()
        .await
        .unwrap();
    not_found(res, missing).await;
    not_found(kick(&app, missing, "PA-x").await, missing).await;
    let res = kick(&app, id, "PA-x").await;
    assert_error(
        res,
        404,
        "REALTIME-00011",
        Some("PARTICIPANT_DOES_NOT_EXIST"),
        "A participant with address ::= [PA-x] does not exist in this room.",
    )
    .await;

    // A deleted room is unknown too.
    assert_eq!(app.delete_room(id).await.status(), 200);
    let res = app
        .request(Method::GET, &list_path(id))
        .send()
        .await
        .unwrap();
    not_found(res, id).await;
    not_found(kick(&app, id, "PA-x").await, id).await;
}

#[tokio::test]
async fn both_endpoints_need_a_key() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let (_a, joined) = Client::join(&app, room["token"].as_str().unwrap(), "A").await;
    let address = joined["address"].as_str().unwrap();
    for (method, path) in [
        (Method::GET, list_path(id)),
        (Method::DELETE, kick_path(id, address)),
    ] {
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "BASE-00001", None, "Authorization missing.").await;
        let res = app
            .client
            .request(method.clone(), app.url(&path))
            .header("x-vcs-token", "")
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "BASE-00001", None, "Authorization missing.").await;
        let res = app
            .client
            .request(method, app.url(&path))
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
    // Nobody was removed by those.
    assert_eq!(
        list(&app, id).await["data"][0]["address"],
        joined["address"]
    );
}
