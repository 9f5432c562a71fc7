//! `GET /api/realtime/room`: page size, order, paging tokens, and walks that run while
//! rooms come and go.

use crate::both_stores;
use crate::support::*;
use serde_json::{Value, json};
use std::collections::HashSet;

/// Creates `n` rooms and answers them newest first (creationTime, then id, descending).
async fn create_rooms(app: &TestApp, n: usize) -> Vec<Value> {
    let mut rooms = Vec::with_capacity(n);
    for i in 0..n {
        let body = match i % 3 {
            0 => json!({"name": format!("room {i}")}),
            1 => json!({"name": format!("room {i}"), "conferenceType": "SFU"}),
            _ => json!({"description": format!("room {i}"), "autoUpgradeParticipantCount": 3}),
        };
        rooms.push(app.new_room(body).await);
    }
    newest_first(&mut rooms);
    rooms
}

fn newest_first(rooms: &mut [Value]) {
    rooms.sort_by_key(|room| std::cmp::Reverse(order_key(room)));
}

fn order_key(room: &Value) -> (u64, String) {
    (
        room["creationTime"].as_u64().unwrap(),
        room["id"].as_str().unwrap().to_string(),
    )
}

fn id(room: &Value) -> &str {
    room["id"].as_str().unwrap()
}

/// One page: its rooms and its token, checking that the body has no other keys.
async fn page(app: &TestApp, query: &str) -> (Vec<Value>, Option<String>) {
    let body = json_ok(app.list(query).await).await;
    let object = body.as_object().unwrap();
    for key in object.keys() {
        assert!(key == "data" || key == "token", "unexpected key {key}");
    }
    let token = object.get("token").map(|t| {
        let t = t.as_str().expect("the token is a string");
        assert!(!t.is_empty(), "a present token is not empty");
        t.to_string()
    });
    (body["data"].as_array().unwrap().clone(), token)
}

async fn assert_records_range(res: reqwest::Response) {
    assert_error(
        res,
        400,
        "BASE-00015",
        Some("NUMBER_SIZE"),
        "The parameter with name ::= [numberOfRecords] is is not within the range from ::= [1] to [100]",
    )
    .await;
}

async fn assert_bad_token(res: reqwest::Response, token: &str) {
    assert_error(
        res,
        400,
        "REALTIME-00009",
        Some("INVALID_TOKEN"),
        &format!("The token ::= [{token}] is invalid."),
    )
    .await;
}

both_stores!(empty_list, |app: TestApp| async move {
    for query in ["", "?numberOfRecords=1", "?numberOfRecords=100"] {
        assert_eq!(json_ok(app.list(query).await).await, json!({"data": []}));
    }
});

both_stores!(default_page_is_25_newest_first, |app: TestApp| async move {
    let rooms = create_rooms(&app, 30).await;
    let (data, token) = page(&app, "").await;
    assert_eq!(
        data,
        rooms[..25],
        "the 25 newest rooms, newest first, as created"
    );
    let token = token.expect("more rooms follow");
    let (data, token) = page(&app, &format!("?token={token}")).await;
    assert_eq!(data, rooms[25..]);
    assert_eq!(token, None, "the last page has no token");
});

both_stores!(every_valid_page_size, |app: TestApp| async move {
    let rooms = create_rooms(&app, 30).await;
    for n in 1..=100 {
        let (data, token) = page(&app, &format!("?numberOfRecords={n}")).await;
        let len = n.min(30);
        assert_eq!(data, rooms[..len], "numberOfRecords={n}");
        assert_eq!(token.is_some(), n < 30, "numberOfRecords={n}");
    }
    // Leading zeros and a plus sign are still whole numbers.
    for (query, len) in [("007", 7), ("%2B5", 5), ("0100", 30)] {
        let (data, _) = page(&app, &format!("?numberOfRecords={query}")).await;
        assert_eq!(data, rooms[..len], "numberOfRecords={query}");
    }
});

both_stores!(a_full_page_of_100, |app: TestApp| async move {
    let rooms = create_rooms(&app, 101).await;
    let (data, token) = page(&app, "?numberOfRecords=100").await;
    assert_eq!(data, rooms[..100]);
    let (data, token) = page(
        &app,
        &format!("?numberOfRecords=100&token={}", token.unwrap()),
    )
    .await;
    assert_eq!(data, rooms[100..]);
    assert_eq!(token, None);
});

both_stores!(walks_end_without_a_token, |app: TestApp| async move {
    let rooms = create_rooms(&app, 30).await;
    // 30 = 3 × 10 and 2 × 15: the last page is exactly full and still has no token.
    for size in [1, 7, 10, 15, 29, 30] {
        let mut seen = Vec::new();
        let mut query = format!("?numberOfRecords={size}");
        loop {
            let (data, token) = page(&app, &query).await;
            seen.extend(data.iter().cloned());
            match token {
                Some(t) => {
                    assert_eq!(data.len(), size, "every page but the last is full");
                    query = format!("?numberOfRecords={size}&token={t}");
                }
                None => break,
            }
        }
        assert_eq!(seen, rooms, "numberOfRecords={size}");
    }
});

both_stores!(out_of_range_page_sizes, |app: TestApp| async move {
    create_rooms(&app, 2).await;
    for n in [
        "0",
        "101",
        "-5",
        "-0",
        "1000",
        "99999999999999999999999",
        "-99999999999999999999999",
        "99999999999999999999999999999999999999999999999999",
    ] {
        assert_records_range(app.list(&format!("?numberOfRecords={n}")).await).await;
    }
});

both_stores!(
    page_sizes_that_are_not_whole_numbers,
    |app: TestApp| async move {
        create_rooms(&app, 2).await;
        for n in [
            "2.5", "abc", "", "1e2", "ten", "%205", "5%20", "0x10", "-", "1,2",
        ] {
            assert_error(
                app.list(&format!("?numberOfRecords={n}")).await,
                400,
                "BASE-00016",
                Some("INVALID_VALUE"),
                "The parameter with name ::= [numberOfRecords] has an invalid value.",
            )
            .await;
        }
    }
);

both_stores!(
    tokens_not_issued_by_the_service,
    |app: TestApp| async move {
        create_rooms(&app, 5).await;
        let (_, token) = page(&app, "?numberOfRecords=2").await;
        let token = token.unwrap();
        let mut tampered: Vec<char> = token.chars().collect();
        let middle = tampered.len() / 2;
        tampered[middle] = if tampered[middle] == 'A' { 'B' } else { 'A' };
        let tampered: String = tampered.into_iter().collect();
        let truncated = token[..token.len() - 4].to_string();
        let longer = format!("{token}AAAA");
        for bad in [
            tampered.as_str(),
            truncated.as_str(),
            longer.as_str(),
            "B53AF55E",
            "garbage",
            "not-base64!",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        ] {
            let res = app.list(&format!("?numberOfRecords=2&token={bad}")).await;
            assert_bad_token(res, bad).await;
            let res = app.list(&format!("?token={bad}")).await;
            assert_bad_token(res, bad).await;
        }
        // The real token still works.
        let (data, _) = page(&app, &format!("?numberOfRecords=2&token={token}")).await;
        assert_eq!(data.len(), 2);
    }
);

both_stores!(tokens_of_another_service, |app: TestApp| async move {
    // The same kind of service, with another secret, issues tokens this one refuses.
    let other = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env(
            "CONVENE_TOKEN_SECRET",
            "another-secret-of-at-least-32-bytes!",
        ),
    )
    .await
    .unwrap();
    create_rooms(&other, 3).await;
    create_rooms(&app, 3).await;
    let (_, foreign) = page(&other, "?numberOfRecords=1").await;
    let foreign = foreign.unwrap();
    assert_bad_token(
        app.list(&format!("?numberOfRecords=1&token={foreign}"))
            .await,
        &foreign,
    )
    .await;
});

both_stores!(the_cursor_room_may_be_deleted, |app: TestApp| async move {
    let rooms = create_rooms(&app, 10).await;
    let (data, token) = page(&app, "?numberOfRecords=4").await;
    assert_eq!(data, rooms[..4]);
    // Delete the last room of the page (the one the token points after), and the next one.
    assert_eq!(app.delete_room(id(&rooms[3])).await.status(), 200);
    assert_eq!(app.delete_room(id(&rooms[4])).await.status(), 200);
    let (data, token) = page(
        &app,
        &format!("?numberOfRecords=4&token={}", token.unwrap()),
    )
    .await;
    assert_eq!(data, rooms[5..9]);
    let (data, token) = page(
        &app,
        &format!("?numberOfRecords=4&token={}", token.unwrap()),
    )
    .await;
    assert_eq!(data, rooms[9..]);
    assert_eq!(token, None);
});

both_stores!(walk_while_rooms_come_and_go, |app: TestApp| async move {
    let rooms = create_rooms(&app, 40).await;
    let mut deleted: HashSet<String> = HashSet::new();
    let mut seen: Vec<Value> = Vec::new();
    let mut pages = 0;
    let mut query = "?numberOfRecords=7".to_string();
    loop {
        let (data, token) = page(&app, &query).await;
        pages += 1;
        for room in &data {
            assert!(
                !deleted.contains(id(room)),
                "page {pages} shows {} after its deletion",
                id(room)
            );
        }
        seen.extend(data.iter().cloned());
        let Some(token) = token else { break };
        assert_eq!(
            data.len(),
            7,
            "page {pages} is not the last and is not full"
        );
        query = format!("?numberOfRecords=7&token={token}");

        // Between pages: rooms come and go, seen and unseen, the cursor room included.
        let mut delete = |room: &Value| {
            deleted.insert(id(room).to_string());
            id(room).to_string()
        };
        let doomed: Vec<String> = match pages {
            1 => vec![delete(&rooms[0]), delete(&rooms[20])],
            2 => vec![delete(&rooms[13]), delete(&rooms[14])],
            3 => vec![delete(&rooms[39]), delete(&rooms[38]), delete(&rooms[37])],
            _ => vec![],
        };
        for room_id in doomed {
            assert_eq!(app.delete_room(&room_id).await.status(), 200);
        }
        app.new_room(json!({"name": format!("new after page {pages}")}))
            .await;
    }
    // Pages 1-5 are full; the fifth ends the walk exactly (37-39 are gone).
    assert_eq!(pages, 5);
    assert_eq!(seen.len(), 35);
    // Newest first across pages, and no room twice.
    for pair in seen.windows(2) {
        assert!(
            order_key(&pair[0]) > order_key(&pair[1]),
            "order across pages"
        );
    }
    let seen_ids: HashSet<&str> = seen.iter().map(id).collect();
    assert_eq!(seen_ids.len(), seen.len(), "no room appears twice");
    // Every room that existed for the whole walk appears, exactly as created.
    let never_deleted: Vec<&Value> = rooms.iter().filter(|r| !deleted.contains(id(r))).collect();
    for room in &never_deleted {
        let shown = seen.iter().find(|s| id(s) == id(room));
        assert_eq!(shown, Some(*room), "{} is missing from the walk", id(room));
    }
    // And the rooms deleted after they were seen were seen once, before their deletion.
    for index in [0, 13] {
        assert!(seen_ids.contains(id(&rooms[index])));
    }
    for index in [14, 20, 37, 38, 39] {
        assert!(!seen_ids.contains(id(&rooms[index])));
    }
});
