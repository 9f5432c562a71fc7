//! The cluster-wide admin event stream (`docs/admin.md`, "Several nodes"): with
//! `CONVENE_CLUSTER=1`, the admin stream of any node shows every room of the cluster, each
//! with its owner's `node`, numbered once for the whole cluster (one Redis Stream), so that
//! a client resumes on any node with the `lastSeq` it saw on another.

use crate::one_redis_and_cluster;
use crate::support::*;
use crate::ws::Client;
use serde_json::{Value, json};
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(20);
const IDS: [&str; 3] = ["a", "b", "c"];

fn node(redis: &SharedRedis, id: &str) -> TestApp {
    TestApp::spawn_on(
        &redis.url(),
        redis
            .options()
            .env("CONVENE_CLUSTER", 1)
            .env("CONVENE_NODE_ID", id),
    )
}

/// The id of the node holding the room's lease.
fn owner(redis: &SharedRedis, id: &Value) -> String {
    let lease = format!("convene:{{room:{}}}:lease", id.as_str().unwrap());
    let value = redis.get(&lease).expect("the room's lease");
    value.split_once('|').unwrap().1.to_string()
}

/// The next message, which must be an event of this type with the next sequence number.
async fn next(s: &mut Client, kind: &str, seq: &mut u64) -> Value {
    let e = s.recv().await;
    *seq += 1;
    assert_eq!(
        (e["type"].as_str(), e["seq"].as_u64()),
        (Some(kind), Some(*seq)),
        "{e}"
    );
    e
}

/// The room object of the REST API, with `node`.
fn located(room: &Value, node: &str) -> Value {
    let mut room = room.clone();
    room["node"] = node.into();
    room
}

one_redis_and_cluster!(every_node_streams_every_room_of_the_cluster_with_one_numbering);
async fn every_node_streams_every_room_of_the_cluster_with_one_numbering(redis: SharedRedis) {
    let nodes = IDS.map(|id| node(&redis, id));
    let by_id = |id: &str| &nodes[IDS.iter().position(|n| *n == id).unwrap()];
    let [a, b, c] = &nodes;

    let mut on_b = Client::stream(b, None).await;
    assert_eq!(
        on_b.recv().await,
        json!({"type": "snapshot", "seq": 0, "rooms": []})
    );
    let mut seq = 0;
    let mut on_c = Client::stream(c, None).await;
    assert_eq!(on_c.expect("snapshot").await["seq"], 0);
    let mut c_seq = 0;

    // Rooms made through A and C, whoever owns them, reach B's stream with their owner.
    let r1 = a.new_room(json!({"name": "first"})).await;
    let o1 = owner(&redis, &r1["id"]);
    let e = next(&mut on_b, "roomCreated", &mut seq).await;
    assert_eq!(e["room"], located(&r1, &o1));
    let r2 = c.new_room(json!({"name": "second"})).await;
    let o2 = owner(&redis, &r2["id"]);
    let e = next(&mut on_b, "roomCreated", &mut seq).await;
    assert_eq!(e["room"], located(&r2, &o2));

    // A client reads A's stream up to there, then goes away.
    let mut on_a = Client::stream(a, None).await;
    let snapshot = on_a.expect("snapshot").await;
    let mut a_seq = snapshot["seq"].as_u64().unwrap();
    while a_seq < seq {
        a_seq = on_a.recv().await["seq"].as_u64().unwrap();
    }
    on_a.close(1000, "").await;

    // A participant on the first room's owner, one bridged to the second's from another
    // node: events made on two nodes, numbered one after the other.
    let (_p1, joined1) = Client::join(by_id(&o1), r1["token"].as_str().unwrap(), "P1").await;
    let e3 = next(&mut on_b, "participantJoined", &mut seq).await;
    assert_eq!(e3["roomId"], r1["id"]);
    assert_eq!(e3["participant"]["address"], joined1["address"]);
    let edge = IDS.iter().find(|id| **id != o2).unwrap();
    let (_p2, joined2) = Client::join(by_id(edge), r2["token"].as_str().unwrap(), "P2").await;
    let e4 = next(&mut on_b, "participantJoined", &mut seq).await;
    assert_eq!(e4["roomId"], r2["id"]);
    assert_eq!(e4["participant"]["address"], joined2["address"]);

    // C's stream saw the same events with the same numbers.
    for kind in ["roomCreated", "roomCreated", "participantJoined"] {
        next(&mut on_c, kind, &mut c_seq).await;
    }
    assert_eq!(next(&mut on_c, "participantJoined", &mut c_seq).await, e4);

    // The client resumes on C with what it saw on A: exactly the events it missed, then
    // the live ones.
    let mut resumed = Client::stream(c, Some(a_seq)).await;
    assert_eq!(resumed.recv().await, e3);
    assert_eq!(resumed.recv().await, e4);
    let r3 = b.new_room(json!({"name": "third"})).await;
    let o3 = owner(&redis, &r3["id"]);
    let mut r_seq = e4["seq"].as_u64().unwrap();
    let e5 = next(&mut resumed, "roomCreated", &mut r_seq).await;
    assert_eq!(e5["room"], located(&r3, &o3));
    assert_eq!(next(&mut on_b, "roomCreated", &mut seq).await, e5);

    // A node started after the rooms exist shows them all, with their participants and
    // owners, once the others answered its request for their rooms.
    let d = node(&redis, "d");
    let last = std::sync::Mutex::new(Value::Null);
    let complete = eventually(DEADLINE, || async {
        let mut s = Client::stream(&d, None).await;
        let snapshot = s.expect("snapshot").await;
        let done = snapshot["rooms"].as_array().unwrap().len() == 3;
        *last.lock().unwrap() = snapshot;
        done
    })
    .await;
    let snapshot = last.into_inner().unwrap();
    assert!(complete, "{snapshot}");
    assert_eq!(snapshot["seq"], seq);
    let rooms = snapshot["rooms"].as_array().unwrap();
    let ids: Vec<&Value> = rooms.iter().map(|r| &r["id"]).collect();
    assert_eq!(ids, [&r3["id"], &r2["id"], &r1["id"]], "newest first");
    let nodes_of: Vec<&Value> = rooms.iter().map(|r| &r["node"]).collect();
    assert_eq!(nodes_of, [&json!(o3), &json!(o2), &json!(o1)]);
    assert_eq!(rooms[0]["participants"], json!([]));
    assert_eq!(rooms[1]["participants"], json!([e4["participant"]]));
    assert_eq!(rooms[2]["participants"], json!([e3["participant"]]));
}

#[tokio::test]
async fn a_single_node_keeps_admin_events_out_of_redis_and_rooms_carry_no_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let app = TestApp::spawn_on(&redis.url(), Options::default());
    let mut s = Client::stream(&app, None).await;
    s.expect("snapshot").await;
    let room = app.new_room(json!({"name": "alone"})).await;
    let e = s.expect("roomCreated").await;
    assert_eq!(e["room"], room, "no node on a single node");
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("convene:{admin}*")
        .query(&mut redis.conn())
        .unwrap();
    assert_eq!(keys, Vec::<String>::new());
}

/// The rooms of the snapshot of a new stream on `app`, as (id, node).
async fn rooms_in_snapshot(app: &TestApp) -> Vec<(Value, Value)> {
    let mut s = Client::stream(app, None).await;
    let snapshot = s.expect("snapshot").await;
    snapshot["rooms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].clone(), r["node"].clone()))
        .collect()
}

#[tokio::test]
async fn the_rooms_of_a_node_that_died_leave_the_other_nodes_snapshots() {
    let Some(redis) = SharedRedis::single() else {
        return;
    };
    let mut nodes = [node(&redis, "a"), node(&redis, "b")];
    let room = nodes[0].new_room(json!({"name": "doomed"})).await;
    let dead = IDS
        .iter()
        .position(|n| *n == owner(&redis, &room["id"]))
        .unwrap();
    let survivor = &nodes[1 - dead];
    let expected = vec![(room["id"].clone(), json!(IDS[dead]))];
    assert!(
        eventually(DEADLINE, || async {
            rooms_in_snapshot(survivor).await == expected
        })
        .await
    );

    nodes[dead].kill();
    let survivor = &nodes[1 - dead];
    assert!(
        eventually(DEADLINE, || async {
            rooms_in_snapshot(survivor).await.is_empty()
        })
        .await,
        "the dead node's room stays"
    );
}
