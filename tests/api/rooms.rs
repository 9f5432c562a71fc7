use crate::both_stores;
use crate::support::*;
use serde_json::{Value, json};

both_stores!(create_with_every_field, |app: TestApp| async move {
    let res = app
        .create_room(
            json!({"name": "Room A", "description": "My room description",
            "conferenceType": "MESH", "autoUpgradeParticipantCount": "4"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let room = &body["room"];
    let keys: Vec<&String> = room.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "name",
            "description",
            "creationTime",
            "conferenceType",
            "autoUpgradeParticipantCount",
            "modificationTime",
            "maxParticipants",
            "roomTokenTTLSeconds",
            "roomTTLSeconds",
            "endpointTTLSeconds",
            "token"
        ]
    );
    assert_eq!(room["name"], "Room A");
    assert_eq!(room["autoUpgradeParticipantCount"], 4);
    assert_eq!(room["maxParticipants"], 7);
    assert_eq!(room["roomTTLSeconds"], 86400);
    let fetched: Value = app
        .get_room(room["id"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(&fetched, room);
});
