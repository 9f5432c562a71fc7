//! `DELETE /api/realtime/room?id=` and `DELETE /api/realtime/room/{id}`.

use crate::both_stores;
use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};

async fn delete_by_path(app: &TestApp, id: &str) -> reqwest::Response {
    app.request(Method::DELETE, &format!("/api/realtime/room/{id}"))
        .send()
        .await
        .unwrap()
}

async fn assert_does_not_exist(res: reqwest::Response, id: &str) {
    assert_error(
        res,
        400,
        "REALTIME-00004",
        Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
        &format!("A conference room with id ::= [{id}] does not exist."),
    )
    .await;
}

async fn assert_id_missing(res: reqwest::Response) {
    assert_error(
        res,
        400,
        "BASE-00011",
        Some("PARAMETER_MISSING"),
        "The parameter with name ::= [id] is missing.",
    )
    .await;
}

async fn listed_ids(app: &TestApp) -> Vec<String> {
    let list = json_ok(app.list("?numberOfRecords=100").await).await;
    list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect()
}

/// Deletes `room` by query (or by path) and checks every consequence, a second delete
/// of the same id included.
async fn delete_and_check(app: &TestApp, room: &Value, by_path: bool) {
    let id = room["id"].as_str().unwrap().to_string();
    let delete = || async {
        if by_path {
            delete_by_path(app, &id).await
        } else {
            app.delete_room(&id).await
        }
    };
    assert!(listed_ids(app).await.contains(&id));
    let body = json_ok(delete().await).await;
    assert_eq!(body, json!({"room": room}));
    assert_error(
        app.get_room(&id).await,
        404,
        "REALTIME-00004",
        Some("CONFERENCE_ROOM_DOES_NOT_EXIST"),
        &format!("A conference room with id ::= [{id}] does not exist."),
    )
    .await;
    assert!(!listed_ids(app).await.contains(&id));
    assert_does_not_exist(delete().await, &id).await;
}

both_stores!(delete_by_query, |app: TestApp| async move {
    let keep = app.new_room(json!({"name": "keep"})).await;
    let room = app
        .new_room(
            json!({"name": "Room A", "description": "d", "conferenceType": "SFU",
            "autoUpgradeParticipantCount": 3}),
        )
        .await;
    delete_and_check(&app, &room, false).await;
    // The other room is untouched.
    let keep_id = keep["id"].as_str().unwrap();
    assert_eq!(json_ok(app.get_room(keep_id).await).await, keep);
    assert_eq!(listed_ids(&app).await, [keep_id]);
});

both_stores!(delete_by_path, |app: TestApp| async move {
    let keep = app.new_room(json!({"name": "keep"})).await;
    let room = app.new_room(json!({"name": "by path"})).await;
    delete_and_check(&app, &room, true).await;
    let keep_id = keep["id"].as_str().unwrap();
    assert_eq!(listed_ids(&app).await, [keep_id]);
});

both_stores!(the_two_forms_see_each_other, |app: TestApp| async move {
    let a = app.new_room(json!({"name": "a"})).await;
    let b = app.new_room(json!({"name": "b"})).await;
    let (a_id, b_id) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());
    assert_eq!(
        json_ok(app.delete_room(a_id).await).await,
        json!({"room": a})
    );
    assert_does_not_exist(delete_by_path(&app, a_id).await, a_id).await;
    assert_eq!(
        json_ok(delete_by_path(&app, b_id).await).await,
        json!({"room": b})
    );
    assert_does_not_exist(app.delete_room(b_id).await, b_id).await;
});

both_stores!(delete_unknown_ids, |app: TestApp| async move {
    for id in [
        "RO-fafd9427-fedf-4e58-9150-97d86a25fe58",
        "RO-00000000-0000-4000-8000-000000000000",
        "nothing",
    ] {
        assert_does_not_exist(app.delete_room(id).await, id).await;
        assert_does_not_exist(delete_by_path(&app, id).await, id).await;
    }
});

both_stores!(delete_without_id, |app: TestApp| async move {
    let room = app.new_room(json!({})).await;
    for path in [
        "/api/realtime/room",
        "/api/realtime/room?id=",
        "/api/realtime/room?other=1",
        "/api/realtime/room?ID=x",
    ] {
        let res = app.request(Method::DELETE, path).send().await.unwrap();
        assert_id_missing(res).await;
    }
    assert_eq!(listed_ids(&app).await, [room["id"].as_str().unwrap()]);
});

both_stores!(delete_with_an_empty_path_id, |app: TestApp| async move {
    // `DELETE /api/realtime/room/{id}` with an empty id answers as `?id=` does.
    let res = app
        .request(Method::DELETE, "/api/realtime/room/")
        .send()
        .await
        .unwrap();
    assert_id_missing(res).await;
});

both_stores!(concurrent_deletes_succeed_once, |app: TestApp| async move {
    for _ in 0..3 {
        let room = app.new_room(json!({"name": "race"})).await;
        let id = room["id"].as_str().unwrap().to_string();
        let answers = futures_util::future::join_all((0..8).map(|i| {
            let (app, id) = (&app, id.clone());
            async move {
                if i % 2 == 0 {
                    app.delete_room(&id).await
                } else {
                    delete_by_path(app, &id).await
                }
            }
        }))
        .await;
        let mut ok = 0;
        for res in answers {
            if res.status() == 200 {
                ok += 1;
                assert_eq!(json_ok(res).await, json!({"room": room}));
            } else {
                assert_does_not_exist(res, &id).await;
            }
        }
        assert_eq!(ok, 1, "exactly one delete succeeds");
    }
    assert_eq!(listed_ids(&app).await, Vec::<String>::new());
});
