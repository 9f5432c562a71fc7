use crate::client::Client;
use crate::support::*;
use serde_json::json;
use std::collections::HashMap;

/// `/metrics` as `series → value`, series written as in the text (`name{labels}`).
async fn scrape(app: &TestApp) -> HashMap<String, f64> {
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = res.text().await.unwrap();
    let mut series = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad line {line}"));
        series.insert(
            name.to_string(),
            value
                .parse::<f64>()
                .unwrap_or_else(|_| panic!("bad value in {line}")),
        );
    }
    series
}

fn get(series: &HashMap<String, f64>, name: &str) -> f64 {
    series.get(name).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn counters_and_gauges_follow_what_happens() {
    let app = TestApp::spawn(Backend::Memory).await.unwrap();
    let before = scrape(&app).await;
    let room = app
        .new_room(json!({"autoUpgradeParticipantCount": 2}))
        .await;
    app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let (mut a, _) = Client::join(&app, token, "A").await;
    let (mut b, _) = Client::join(&app, token, "B").await;
    a.expect("participantJoined").await;
    a.expect("conferenceTypeChanged").await;
    b.expect("conferenceTypeChanged").await;
    a.send(json!({"type": "message", "data": "hi"})).await;
    b.expect("message").await;
    let during = scrape(&app).await;
    assert_eq!(get(&during, r#"convene_rooms{conference_type="SFU"}"#), 1.0);
    assert_eq!(
        get(&during, r#"convene_rooms{conference_type="MESH"}"#),
        1.0
    );
    assert_eq!(get(&during, "convene_participants"), 2.0);
    assert_eq!(
        get(&during, "convene_joins_total") - get(&before, "convene_joins_total"),
        2.0
    );
    assert_eq!(get(&during, "convene_upgrades_total"), 1.0);
    assert_eq!(
        get(&during, "convene_signaling_messages_relayed_total"),
        1.0
    );
    let posts =
        r#"convene_http_requests_total{route="/api/realtime/room",method="POST",status="200"}"#;
    assert_eq!(get(&during, posts), 2.0);
    let bucket = r#"convene_http_request_duration_seconds_count{route="/api/realtime/room",method="POST",status="200"}"#;
    assert_eq!(get(&during, bucket), 2.0);

    b.send(json!({"type": "leave"})).await;
    a.expect("participantLeft").await;
    let missing = app.get_room("RO-nope").await;
    assert_eq!(missing.status(), 404);
    let after = scrape(&app).await;
    assert_eq!(get(&after, r#"convene_leaves_total{reason="left"}"#), 1.0);
    assert_eq!(get(&after, "convene_participants"), 1.0);
    let not_found =
        r#"convene_http_requests_total{route="/api/realtime/room/{id}",method="GET",status="404"}"#;
    assert_eq!(get(&after, not_found), 1.0);
}

#[tokio::test]
async fn store_errors_are_counted() {
    let Some(mut app) = TestApp::spawn_with_own_redis(Options::default()).await else {
        return;
    };
    assert_eq!(get(&scrape(&app).await, "convene_store_errors_total"), 0.0);
    app.redis.as_mut().unwrap().kill();
    assert_eq!(app.create_room(json!({})).await.status(), 503);
    assert!(get(&scrape(&app).await, "convene_store_errors_total") >= 1.0);
}
