use crate::support::*;
use crate::ws::Client;
use serde_json::{Value, json};
use std::time::Duration;

/// A room with three joined participants; answers the clients and their addresses.
async fn three(app: &TestApp, room: &Value) -> (Vec<Client>, Vec<String>) {
    let token = room["token"].as_str().unwrap();
    let mut clients: Vec<Client> = Vec::new();
    let mut addresses = Vec::new();
    for name in ["A", "B", "C"] {
        let (c, joined) = Client::join(app, token, name).await;
        for earlier in clients.iter_mut() {
            earlier.expect("participantJoined").await;
        }
        addresses.push(joined["address"].as_str().unwrap().to_string());
        clients.push(c);
    }
    (clients, addresses)
}

#[tokio::test]
async fn signal_reaches_one_participant_unchanged_and_cannot_be_forged() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let (mut c, addr) = three(&app, &room).await;
    // Odd spacing and key order survive: `data` is relayed byte for byte.
    let raw = format!(
        r#"{{"type":"signal","from":"PA-forged","to":"{}","data":{{"sdp" : "v=0\r\no=- 1 2 IN IP4 0.0.0.0", "z":1,"a":[ 1,2 ]}}}}"#,
        addr[1]
    );
    c[0].send_text(&raw).await;
    // The exact text: `data` is not re-serialized, and `from` is A's, not the forged one.
    let text = r#"{"type":"signal","from":"FROM","data":{"sdp" : "v=0\r\no=- 1 2 IN IP4 0.0.0.0", "z":1,"a":[ 1,2 ]}}"#
        .replace("FROM", &addr[0]);
    assert_eq!(c[1].recv_text().await, text);
    // C got nothing: the next thing it sees is a message sent after the signal.
    c[1].send(json!({"type": "message", "to": [addr[2]], "data": "after"}))
        .await;
    let next = c[2].expect("message").await;
    assert_eq!(next["data"], "after");
    assert_eq!(next["from"], addr[1].as_str());
}

#[tokio::test]
async fn signal_never_crosses_rooms_and_unknown_addresses_are_errors() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let one = app.new_room(json!({})).await;
    let two = app.new_room(json!({})).await;
    let (mut a, _) = Client::join(&app, one["token"].as_str().unwrap(), "A").await;
    let (mut x, joined_x) = Client::join(&app, two["token"].as_str().unwrap(), "X").await;
    let (mut y, _) = Client::join(&app, two["token"].as_str().unwrap(), "Y").await;
    x.expect("participantJoined").await;
    let x_address = joined_x["address"].as_str().unwrap();
    a.send(json!({"type": "signal", "to": x_address, "data": {"sdp": "offer"}}))
        .await;
    let error = a
        .expect_error("REALTIME-00011", Some("PARTICIPANT_DOES_NOT_EXIST"))
        .await;
    assert!(
        error["description"][0]
            .as_str()
            .unwrap()
            .contains(x_address)
    );
    a.send(json!({"type": "signal", "to": "PA-nobody", "data": 1}))
        .await;
    a.expect_error("REALTIME-00011", Some("PARTICIPANT_DOES_NOT_EXIST"))
        .await;
    // A carries on: pings, and relays in its own room.
    a.assert_alive().await;
    let (mut b, joined_b) = Client::join(&app, one["token"].as_str().unwrap(), "B").await;
    a.expect("participantJoined").await;
    a.send(json!({"type": "signal", "to": joined_b["address"], "data": "ok"}))
        .await;
    assert_eq!(b.expect("signal").await["data"], "ok");
    // X received nothing: the next thing it sees is Y's message, sent after A's signal.
    y.send(json!({"type": "message", "to": [x_address], "data": "marker"}))
        .await;
    assert_eq!(x.expect("message").await["data"], "marker");
}

#[tokio::test]
async fn messages_go_to_the_listed_or_to_everyone_else() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let (mut c, addr) = three(&app, &room).await;
    c[0].send(json!({"type": "message", "to": [addr[2]], "data": {"text": "only C"}}))
        .await;
    let got = c[2].expect("message").await;
    assert_eq!(
        got,
        json!({"type": "message", "from": addr[0], "data": {"text": "only C"}})
    );
    c[0].send(json!({"type": "message", "data": "all"})).await;
    for i in [1, 2] {
        let got = c[i].expect("message").await;
        assert_eq!(got["data"], "all");
    }
    // A, the sender, got nothing; B got only the broadcast.
    c[1].send(json!({"type": "message", "to": [addr[0]], "data": "marker"}))
        .await;
    assert_eq!(c[0].expect("message").await["data"], "marker");
    c[0].send(json!({"type": "message", "to": ["PA-nobody"], "data": 1}))
        .await;
    c[0].expect_error("REALTIME-00011", Some("PARTICIPANT_DOES_NOT_EXIST"))
        .await;
}

#[tokio::test]
async fn media_state_and_leave_reach_the_others() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let room = app.new_room(json!({})).await;
    let (mut c, addr) = three(&app, &room).await;
    c[0].send(json!({"type": "mediaState", "audio": false}))
        .await;
    for i in [1, 2] {
        let update = c[i].expect("participantUpdated").await;
        assert_eq!(update["participant"]["address"], addr[0].as_str());
        assert_eq!(update["participant"]["audio"], false);
        assert_eq!(update["participant"]["video"], true);
        assert_eq!(update["participant"]["name"], "A");
    }
    // A itself got no participantUpdated: the next thing it sees is B's message.
    c[1].send(json!({"type": "message", "to": [addr[0]], "data": "seen"}))
        .await;
    assert_eq!(c[0].expect("message").await["data"], "seen");
    // Only the field sent changes: now video, and audio stays off.
    c[0].send(json!({"type": "mediaState", "video": false}))
        .await;
    for i in [1, 2] {
        let update = c[i].expect("participantUpdated").await;
        assert_eq!(update["participant"]["audio"], false);
        assert_eq!(update["participant"]["video"], false);
    }
    c[0].send(json!({"type": "leave"})).await;
    c[0].expect_close(1000).await;
    for i in [1, 2] {
        let left = c[i].expect("participantLeft").await;
        assert_eq!(
            left,
            json!({"type": "participantLeft", "address": addr[0], "reason": "left"})
        );
    }
}

async fn auto_upgrade(backend: Backend) {
    let Some(app) = TestApp::spawn(backend).await else {
        return;
    };
    let room = app
        .new_room(json!({"autoUpgradeParticipantCount": 3}))
        .await;
    let id = room["id"].as_str().unwrap();
    let (mut c, addresses) = three(&app, &room).await;
    for client in c.iter_mut() {
        let changed = client.expect("conferenceTypeChanged").await;
        assert_eq!(
            changed,
            json!({"type": "conferenceTypeChanged", "conferenceType": "SFU", "reason": "participantCount", "participantCount": 3})
        );
    }
    let fetched = json_ok(app.get_room(id).await).await;
    assert_eq!(fetched["conferenceType"], "SFU");
    assert_eq!(fetched["maxParticipants"], 100);
    let time = |room: &serde_json::Value, field: &str| {
        room[field]
            .as_u64()
            .unwrap_or_else(|| panic!("no {field} in {room}"))
    };
    assert!(time(&fetched, "modificationTime") > time(&room, "modificationTime"));
    assert!(time(&fetched, "modificationTime") > time(&fetched, "creationTime"));
    // The list shows the room as a fetch does, straight away.
    let listed = json_ok(app.list("").await).await;
    assert_eq!(listed["data"][0], fetched);
    // A fourth join brings no second change: after its participantJoined, the next thing
    // everyone (and D) sees is a message sent after the join.
    let (mut d, joined) = Client::join(&app, room["token"].as_str().unwrap(), "D").await;
    assert_eq!(joined["room"]["conferenceType"], "SFU");
    assert_eq!(joined["room"]["maxParticipants"], 100);
    for client in c.iter_mut() {
        client.expect("participantJoined").await;
    }
    c[0].send(json!({"type": "message", "data": "after D"}))
        .await;
    assert_eq!(d.expect("message").await["data"], "after D");
    for client in c[1..].iter_mut() {
        assert_eq!(client.expect("message").await["data"], "after D");
    }
    d.send(json!({"type": "message", "to": [addresses[0]], "data": "from D"}))
        .await;
    assert_eq!(c[0].expect("message").await["data"], "from D");
    if backend == Backend::Redis {
        // The harness gives the service its own key prefix when it shares a REDIS_URL.
        let prefix = app
            .options()
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "CONVENE_REDIS_KEY_PREFIX")
            .map_or("convene".to_string(), |(_, v)| v.clone());
        let key = format!("{prefix}:{{room:{id}}}");
        let stored = eventually(Duration::from_secs(5), || {
            let mut conn = app.redis_conn();
            let key = key.clone();
            async move {
                let json: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn).unwrap();
                let record: Value = serde_json::from_str(&json.unwrap()).unwrap();
                record["conference_type"] == "SFU" && record["participant_count"] == 4
            }
        })
        .await;
        assert!(stored, "the Redis record shows the upgrade and the count");
    }
}

#[tokio::test]
async fn auto_upgrade_happens_once_memory() {
    auto_upgrade(Backend::Memory).await;
}

#[tokio::test]
async fn auto_upgrade_happens_once_and_is_persisted_redis() {
    auto_upgrade(Backend::Redis).await;
}
