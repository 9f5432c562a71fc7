//! `GET /api/realtime/room/{id}`: the room as created, and 404 for anything else.

use crate::both_stores;
use crate::support::*;
use serde_json::json;

async fn assert_not_found(res: reqwest::Response, id: &str) {
    assert_error(
        res,
        404,
        "REALTIME-00004",
        Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
        &format!("A conference room with id ::= [{id}] does not exist."),
    )
    .await;
}

both_stores!(
    fetch_answers_the_room_as_created,
    |app: TestApp| async move {
        let bodies = [
            json!({}),
            json!({"name": "Room A", "description": "My room description",
            "conferenceType": "MESH", "autoUpgradeParticipantCount": "4"}),
            json!({"name": "Sfu", "conferenceType": "sfu", "autoUpgradeParticipantCount": 5}),
            json!({"description": "ünïcödé 😀"}),
        ];
        let mut rooms = Vec::new();
        for body in bodies {
            rooms.push(app.new_room(body).await);
        }
        // Twice, so that fetching changes nothing.
        for _ in 0..2 {
            for room in &rooms {
                let id = room["id"].as_str().unwrap();
                let fetched = json_ok(app.get_room(id).await).await;
                assert_eq!(&fetched, room, "no envelope, every field as created");
            }
        }
    }
);

both_stores!(fetch_unknown_ids, |app: TestApp| async move {
    let room = app.new_room(json!({})).await;
    let id = room["id"].as_str().unwrap();
    let upper = id.to_uppercase();
    for unknown in [
        "RO-7403cb88-8e88-452a-8bb7-0923923348f7",
        "RO-00000000-0000-4000-8000-000000000000",
        "nothing",
        &id[3..],
        &upper,
        &format!("{id}x"),
    ] {
        assert_not_found(app.get_room(unknown).await, unknown).await;
    }
    // The existing room is still there.
    assert_eq!(json_ok(app.get_room(id).await).await, room);
});

both_stores!(fetch_after_delete_is_404, |app: TestApp| async move {
    let room = app.new_room(json!({"name": "short-lived"})).await;
    let id = room["id"].as_str().unwrap();
    assert_eq!(
        json_ok(app.delete_room(id).await).await,
        json!({"room": room})
    );
    assert_not_found(app.get_room(id).await, id).await;
});
