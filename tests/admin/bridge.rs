//! The signal relay between nodes (`docs/cluster.md`, "Signaling on any node"): node
//! processes with `CONVENE_CLUSTER=1` on one private Redis (or a private Redis Cluster); a
//! signaling socket that reaches a node which does not own its room is bridged to the
//! owner over Redis pub/sub, and the owner's room decides everything.

use crate::one_redis_and_cluster;
use crate::support::*;
use crate::ws::{Client, Incoming};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// A cluster node (a lease of 1.5 s unless `options` say otherwise).
fn node_on(url: &str, id: &str, options: Options) -> TestApp {
    let mut all = Options::default()
        .env("CONVENE_CLUSTER", 1)
        .env("CONVENE_NODE_ID", id)
        .env("CONVENE_ROOM_LEASE_MS", 1500);
    all.env.extend(options.env);
    TestApp::spawn_on(url, all)
}

/// Three nodes, `a`, `b` and `c`, on `redis`.
fn three_nodes(redis: &SharedRedis, options: Options) -> [TestApp; 3] {
    let mut all = redis.options();
    all.env.extend(options.env);
    let url = redis.url();
    [
        node_on(&url, "a", all.clone()),
        node_on(&url, "b", all.clone()),
        node_on(&url, "c", all),
    ]
}

/// The room's lease holder as stored, `None` while nobody holds it.
fn holder(redis: &SharedRedis, id: &str) -> Option<String> {
    let value = redis.get(&format!("convene:{{room:{id}}}:lease"));
    Some(value?.split_once('|').unwrap().1.to_string())
}

/// How many `PUBLISH` commands the Redis at `port` has run.
fn publishes(port: u16) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query(
            &mut redis::Client::open(format!("redis://127.0.0.1:{port}/"))
                .unwrap()
                .get_connection()
                .unwrap(),
        )
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
        .map_or(0, |rest| rest.split(',').next().unwrap().parse().unwrap())
}

/// How many `PUBLISH` commands the Redis servers of `redis` have run (all masters of a
/// cluster).
fn publishes_on(redis: &SharedRedis) -> u64 {
    match redis {
        SharedRedis::Single(server) => publishes(server.port),
        SharedRedis::Cluster(cluster) => cluster.ports.iter().map(|&p| publishes(p)).sum(),
    }
}

/// The room's participants as `node` lists them (`GET …/participants`, its `data`).
async fn participants_on(node: &TestApp, id: &str) -> Vec<Value> {
    let listed = json_ok(node.participants(id).await).await;
    listed["data"].as_array().unwrap().clone()
}

/// The addresses of `seats`, in their order.
fn addresses_of(seats: &[Value]) -> Vec<&str> {
    seats
        .iter()
        .map(|p| p["address"].as_str().unwrap())
        .collect()
}

/// Joins one participant per node in `nodes`, in order; every earlier participant sees
/// each later one arrive. Answers the clients and their addresses.
async fn join_all(nodes: &[&TestApp], token: &str) -> (Vec<Client>, Vec<String>) {
    let mut clients: Vec<Client> = Vec::new();
    let mut addresses = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (c, joined) = Client::join(node, token, &format!("P{i}")).await;
        assert_eq!(
            joined["participants"].as_array().unwrap().len(),
            i,
            "{joined}"
        );
        let address = joined["address"].as_str().unwrap().to_string();
        for earlier in clients.iter_mut() {
            let seen = earlier.expect("participantJoined").await;
            assert_eq!(seen["participant"]["address"], address.as_str());
        }
        addresses.push(address);
        clients.push(c);
    }
    (clients, addresses)
}

/// Every participant signals the next one (in a ring) and each receives exactly that, from
/// the right sender; then the last one's broadcast `message` reaches every other one.
async fn relays_work(clients: &mut [Client], addresses: &[String], tag: &str) {
    let n = clients.len();
    for i in 0..n {
        let to = &addresses[(i + 1) % n];
        clients[i]
            .send(json!({"type": "signal", "to": to, "data": {"sdp": format!("{tag}-{i}")}}))
            .await;
    }
    for (i, client) in clients.iter_mut().enumerate() {
        let from = (i + n - 1) % n;
        let signal = client.expect("signal").await;
        assert_eq!(signal["from"], addresses[from].as_str(), "{signal}");
        assert_eq!(signal["data"]["sdp"], format!("{tag}-{from}"));
    }
    clients[n - 1]
        .send(json!({"type": "message", "data": {"hello": tag}}))
        .await;
    for client in clients.iter_mut().take(n - 1) {
        let message = client.expect("message").await;
        assert_eq!(message["from"], addresses[n - 1].as_str());
        assert_eq!(message["data"]["hello"], tag);
    }
    for client in clients.iter_mut() {
        client.assert_alive().await;
    }
}

one_redis_and_cluster!(six_sockets_on_three_nodes_relay_through_the_rooms_owner);
async fn six_sockets_on_three_nodes_relay_through_the_rooms_owner(redis: SharedRedis) {
    let [a, b, c] = three_nodes(&redis, Options::default());
    let room = a.new_room(json!({"name": "bridged"})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    assert_eq!(holder(&redis, id).as_deref(), Some("a"));

    let (mut clients, addresses) = join_all(&[&a, &b, &c, &a, &b, &c], token).await;
    relays_work(&mut clients, &addresses, "six").await;
    // A signal to nobody is refused by the owner, and the error comes back over the bridge.
    clients[1]
        .send(json!({"type": "signal", "to": "PA-nobody", "data": 1}))
        .await;
    clients[1]
        .expect_error("REALTIME-00011", Some("PARTICIPANT_DOES_NOT_EXIST"))
        .await;

    // Seats are the owner's: every node lists the six, in join order.
    for node in [&a, &b, &c] {
        assert_eq!(addresses_of(&participants_on(node, id).await), addresses);
    }
    // One owner all along; B and C each bridged their two sockets to A.
    assert_eq!(holder(&redis, id).as_deref(), Some("a"));
    let edge = r#"convene_bridge_links_total{side="edge"}"#;
    let hosted = r#"convene_bridge_links_total{side="hosted"}"#;
    assert_eq!(a.metric(hosted).await, 4.0);
    assert_eq!(a.metric(edge).await, 0.0);
    for node in [&b, &c] {
        assert_eq!(node.metric(edge).await, 2.0);
        assert_eq!(node.metric(hosted).await, 0.0);
    }

    // A participant on C leaves: everyone, on every node, sees it go.
    clients[5].send(json!({"type": "leave"})).await;
    assert_eq!(clients[5].expect_close(1000).await, "left");
    for client in clients.iter_mut().take(5) {
        let left = client.expect("participantLeft").await;
        assert_eq!(left["address"], addresses[5].as_str());
    }

    // A participant bridged through B loses its connection and resumes on C: same
    // address, nobody sees it leave, and relays to and from it work again.
    let mut clients: Vec<Client> = clients.into_iter().take(5).collect();
    let mut addresses: Vec<String> = addresses.into_iter().take(5).collect();
    let (d, joined) = Client::join(&b, token, "D").await;
    for client in clients.iter_mut() {
        client.expect("participantJoined").await;
    }
    let address = joined["address"].as_str().unwrap().to_string();
    d.drop_connection();
    let resume = json!({"type": "join", "token": token, "resume": joined["resumeToken"]});
    let (d, resumed) = Client::join_with(&c, resume).await;
    assert_eq!(resumed["address"], address.as_str());
    clients.push(d);
    addresses.push(address);
    // No `participantLeft` nor `participantJoined` for it: the relays below see the next
    // message each socket gets.
    relays_work(&mut clients, &addresses, "resumed").await;
}

one_redis_and_cluster!(relays_between_sockets_on_one_node_are_made_there_without_redis);
async fn relays_between_sockets_on_one_node_are_made_there_without_redis(redis: SharedRedis) {
    // A fan-out budget of 10 kB/s with a 20 kB burst, small enough to exhaust below (and
    // a message rate that lets the flood through).
    let budget = Options::default()
        .env("CONVENE_SIGNALING_FANOUT_BYTES_PER_SECOND", "10000")
        .env("CONVENE_SIGNALING_FANOUT_BURST_BYTES", "20000")
        .env("CONVENE_SIGNALING_RATE_BURST", "1000");
    let [a, b, c] = three_nodes(&redis, budget);
    let room = a.new_room(json!({"name": "one edge"})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    assert_eq!(holder(&redis, id).as_deref(), Some("a"));
    // X and Y bridged through B, Z through C; the owner, A, holds no socket.
    let (mut clients, addresses) = join_all(&[&b, &b, &c], token).await;
    let relayed = "convene_signaling_messages_relayed_total";
    let (on_a, on_b) = (a.metric(relayed).await, b.metric(relayed).await);
    let published = publishes_on(&redis);

    // X and Y signal each other, an SDP offer and answer first: every signal arrives, in
    // the order sent, relayed by B; Redis runs no PUBLISH for it.
    let sdp = "v=0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=sendrecv\r\n";
    for i in 0..20 {
        for (from, to) in [(0, 1), (1, 0)] {
            let data = json!({"seq": i, "description": {"type": "offer", "sdp": sdp}});
            let signal = json!({"type": "signal", "to": addresses[to], "data": data});
            clients[from].send(signal).await;
        }
    }
    for i in 0..20 {
        for (to, from) in [(1, 0), (0, 1)] {
            let signal = clients[to].expect("signal").await;
            assert_eq!(signal["from"], addresses[from].as_str(), "{signal}");
            assert_eq!(signal["data"]["seq"], i, "{signal}");
        }
    }
    assert_eq!(
        publishes_on(&redis),
        published,
        "a relay on one node used Redis"
    );
    assert_eq!(b.metric(relayed).await, on_b + 40.0);
    assert_eq!(a.metric(relayed).await, on_a);

    // To Z, on another node, through the owner as before; and what only the owner can
    // answer still comes from it: a signal to oneself, to someone not in the room.
    clients[0]
        .send(json!({"type": "signal", "to": addresses[2], "data": "far"}))
        .await;
    assert_eq!(clients[2].expect("signal").await["data"], "far");
    assert!(publishes_on(&redis) > published);
    for to in [addresses[0].as_str(), "PA-nobody"] {
        clients[0]
            .send(json!({"type": "signal", "to": to, "data": 1}))
            .await;
        clients[0]
            .expect_error("REALTIME-00011", Some("PARTICIPANT_DOES_NOT_EXIST"))
            .await;
    }

    // The relays B makes are charged to a fan-out budget of B's for the socket: a flood of
    // 1 kB signals is relayed by B until it is spent, then by the owner until the owner's
    // is, the rest is refused, the socket stays. Over B's budget the owner decides, so its
    // answers keep the order of the frames: the refusals come after its answer to the
    // signal sent before the flood (B answering them at once would overtake it), and
    // Y's signals reach X in the order sent. (From now on Y's signals to X go through the
    // owner: the relays on B below are X's.)
    let big = "x".repeat(1000);
    clients[1]
        .send(json!({"type": "signal", "to": "PA-nobody", "data": 1}))
        .await;
    for n in 0..60 {
        clients[1]
            .send(json!({"type": "signal", "to": addresses[0], "data": {"n": n, "pad": big}}))
            .await;
    }
    clients[1].send(json!({"type": "ping"})).await;
    clients[1]
        .expect_error("REALTIME-00011", Some("PARTICIPANT_DOES_NOT_EXIST"))
        .await;
    let mut refused = 0;
    loop {
        let message = clients[1].recv().await;
        if message["type"] == "pong" {
            break;
        }
        assert_eq!(message["id"], "TOO_MANY_MESSAGES", "{message}");
        refused += 1;
    }
    // Each budget (20 kB of burst) lets about 19 through.
    assert!((5..=40).contains(&refused), "{refused} of 60 refused");
    let mut last = -1;
    for _ in 0..60 - refused {
        let n = clients[0].expect("signal").await["data"]["n"]
            .as_i64()
            .unwrap();
        assert!(n > last, "signal {n} after {last}");
        last = n;
    }

    // A participant that may not publish, bridged through B too: its SDP that sends media
    // is refused (by the owner), a signal without one reaches X here.
    let issued = a
        .request(
            reqwest::Method::POST,
            &format!("/api/realtime/room/{id}/token"),
        )
        .json(&json!({"identity": "viewer", "canPublish": false}))
        .send()
        .await
        .unwrap();
    let viewer_token = json_ok(issued).await["token"].as_str().unwrap().to_string();
    let (mut viewer, joined) =
        Client::join_with(&b, json!({"type": "join", "token": viewer_token})).await;
    for client in clients.iter_mut() {
        client.expect("participantJoined").await;
    }
    let offer = json!({"description": {"type": "offer", "sdp": sdp}});
    viewer
        .send(json!({"type": "signal", "to": addresses[0], "data": offer}))
        .await;
    viewer
        .expect_error("REALTIME-00033", Some("PUBLISH_FORBIDDEN"))
        .await;
    viewer
        .send(json!({"type": "signal", "to": addresses[0], "data": "watching"}))
        .await;
    let signal = clients[0].expect("signal").await;
    assert_eq!(signal["from"], joined["address"], "{signal}");
    assert_eq!(signal["data"], "watching");

    // A `message` to Y alone is B's to relay too.
    let published = publishes_on(&redis);
    clients[0]
        .send(json!({"type": "message", "to": [addresses[1]], "data": "here"}))
        .await;
    let message = clients[1].expect("message").await;
    assert_eq!(message["from"], addresses[0].as_str(), "{message}");
    assert_eq!(message["data"], "here");
    assert_eq!(
        publishes_on(&redis),
        published,
        "a message on one node used Redis"
    );

    // X's `message` to Y and Z goes through the owner (Z is on C): X's signals to Y follow
    // it there (each crossing Redis), so Y gets them after it, in the order sent.
    let published = publishes_on(&redis);
    clients[0]
        .send(json!({"type": "message", "to": [addresses[1], addresses[2]], "data": "both"}))
        .await;
    for i in 0..3 {
        clients[0]
            .send(json!({"type": "signal", "to": addresses[1], "data": i}))
            .await;
    }
    assert_eq!(clients[2].expect("message").await["data"], "both");
    assert_eq!(clients[1].expect("message").await["data"], "both");
    for i in 0..3 {
        assert_eq!(clients[1].expect("signal").await["data"], i);
    }
    assert!(publishes_on(&redis) >= published + 8);

    // Y leaves: X sees it go, and a signal to Y is the owner's to refuse, not B's to relay.
    clients[1].send(json!({"type": "leave"})).await;
    assert_eq!(clients[1].expect_close(1000).await, "left");
    assert_eq!(
        clients[0].expect("participantLeft").await["address"],
        addresses[1].as_str()
    );
    clients[0]
        .send(json!({"type": "signal", "to": addresses[1], "data": 2}))
        .await;
    clients[0]
        .expect_error("REALTIME-00011", Some("PARTICIPANT_DOES_NOT_EXIST"))
        .await;

    // W, on B too, signals X before its own `joined` is back: that signal goes through the
    // owner, and so do W's later ones to X (each crossing Redis), so X gets them in order.
    let mut w = Client::connect(&b).await;
    w.send(json!({"type": "join", "token": token})).await;
    w.send(json!({"type": "signal", "to": addresses[0], "data": 0}))
        .await;
    w.expect("joined").await;
    clients[0].expect("participantJoined").await;
    assert_eq!(clients[0].expect("signal").await["data"], 0);
    let published = publishes_on(&redis);
    for i in 1..=5 {
        w.send(json!({"type": "signal", "to": addresses[0], "data": i}))
            .await;
    }
    for i in 1..=5 {
        assert_eq!(clients[0].expect("signal").await["data"], i);
    }
    assert!(publishes_on(&redis) >= published + 10);
}

one_redis_and_cluster!(fifty_concurrent_joins_spread_over_three_nodes_take_exactly_the_seats);
async fn fifty_concurrent_joins_spread_over_three_nodes_take_exactly_the_seats(redis: SharedRedis) {
    let seats = 40;
    let nodes = three_nodes(
        &redis,
        Options::default()
            .env("CONVENE_SFU_MAX_PARTICIPANTS", seats)
            .env("CONVENE_ROOM_LEASE_MS", 5000),
    );
    let room = nodes[1]
        .new_room(json!({"name": "crowded", "conferenceType": "SFU"}))
        .await;
    assert_eq!(room["maxParticipants"], seats);
    let (id, token) = (
        room["id"].as_str().unwrap().to_string(),
        room["token"].as_str().unwrap().to_string(),
    );
    let joins = (0..50).map(|i| {
        let node = &nodes[i % 3];
        let token = token.clone();
        async move {
            let mut c = Client::connect(node).await;
            c.send(json!({"type": "join", "token": token, "name": format!("P{i}")}))
                .await;
            match c.next().await {
                Incoming::Text(m) if m["type"] == "joined" => Ok((c, m)),
                Incoming::Text(m) => {
                    assert_eq!(m["type"], "error", "{m}");
                    assert_eq!(m["id"], "CONFERENCE_ROOM_FULL", "{m}");
                    Err(c.expect_close(4009).await)
                }
                other => panic!("{other:?}"),
            }
        }
    });
    let outcomes = futures_util::future::join_all(joins).await;
    let joined: Vec<_> = outcomes.into_iter().filter_map(Result::ok).collect();
    assert_eq!(
        joined.len(),
        seats,
        "{}",
        nodes
            .iter()
            .map(|n| n.log_text())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let mut addresses: Vec<&str> = joined
        .iter()
        .map(|(_, m)| m["address"].as_str().unwrap())
        .collect();
    addresses.sort();
    addresses.dedup();
    assert_eq!(addresses.len(), seats, "every seat is its own");
    for node in &nodes {
        assert_eq!(participants_on(node, &id).await.len(), seats);
        let fetched = json_ok(node.get_room(&id).await).await;
        assert_eq!(fetched["maxParticipants"], seats);
    }
    // One owner all along: B never lost the room.
    assert_eq!(holder(&redis, &id).as_deref(), Some("b"));
    assert_eq!(nodes[1].metric("convene_rooms_lost_total").await, 0.0);
}

one_redis_and_cluster!(a_mesh_to_sfu_upgrade_is_seen_by_participants_on_every_node);
async fn a_mesh_to_sfu_upgrade_is_seen_by_participants_on_every_node(redis: SharedRedis) {
    let [a, b, c] = three_nodes(&redis, Options::default());
    let room = c
        .new_room(json!({"name": "growing", "autoUpgradeParticipantCount": 3}))
        .await;
    assert_eq!(room["conferenceType"], "MESH");
    let token = room["token"].as_str().unwrap();
    let (mut p1, _) = Client::join(&a, token, "P1").await;
    let (mut p2, _) = Client::join(&b, token, "P2").await;
    p1.expect("participantJoined").await;
    let (mut p3, joined) = Client::join(&a, token, "P3").await;
    assert_eq!(joined["room"]["conferenceType"], "MESH");
    p1.expect("participantJoined").await;
    p2.expect("participantJoined").await;
    for p in [&mut p1, &mut p2, &mut p3] {
        let changed = p.expect("conferenceTypeChanged").await;
        assert_eq!(changed["conferenceType"], "SFU", "{changed}");
        assert_eq!(changed["participantCount"], 3);
    }
    // Exactly one upgrade, seen once by everyone: the next message each sees is a pong.
    for p in [&mut p1, &mut p2, &mut p3] {
        p.assert_alive().await;
    }
    let id = room["id"].as_str().unwrap();
    for node in [&a, &b, &c] {
        let fetched = json_ok(node.get_room(id).await).await;
        assert_eq!(fetched["conferenceType"], "SFU");
    }
}

one_redis_and_cluster!(when_the_owner_is_killed_every_participant_comes_back_with_its_address);
async fn when_the_owner_is_killed_every_participant_comes_back_with_its_address(
    redis: SharedRedis,
) {
    let [mut a, b, c] = three_nodes(&redis, Options::default());
    let room = a.new_room(json!({"name": "orphaned"})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    // One participant on the owner itself, one bridged through B, one through C.
    let mut clients: Vec<Client> = Vec::new();
    let mut seats: Vec<(String, String)> = Vec::new();
    for node in [&a, &b, &c] {
        let (client, joined) = Client::join(node, token, "P").await;
        for earlier in clients.iter_mut() {
            earlier.expect("participantJoined").await;
        }
        let address = joined["address"].as_str().unwrap().to_string();
        seats.push((address, joined["resumeToken"].as_str().unwrap().to_string()));
        clients.push(client);
    }
    // The owner has stored the three seats (what a resume on another node needs).
    let stored = || async {
        let value = redis.get(&format!("convene:{{room:{id}}}:seats"));
        value.is_some_and(|v| serde_json::from_str::<Vec<Value>>(&v).unwrap().len() == 3)
    };
    assert!(eventually(Duration::from_secs(10), stored).await);

    let killed = Instant::now();
    a.kill();
    let mut bridged = clients.split_off(1);
    // The participant whose socket was on A resumes through B: refused with 1001 while A's
    // lease lasts; the first resume after it expired takes the room over with the three
    // seats, and gets its own address back.
    let (address, resume) = &seats[0];
    let deadline = Instant::now() + Duration::from_secs(20);
    let on_a = loop {
        let mut client = Client::connect(&b).await;
        client
            .send(json!({"type": "join", "token": token, "resume": resume}))
            .await;
        match client.next().await {
            Incoming::Text(m) if m["type"] == "joined" => {
                assert_eq!(m["address"], address.as_str(), "{m}");
                assert_eq!(m["participants"].as_array().unwrap().len(), 2, "{m}");
                break client;
            }
            // A's lease still holds: refused for now, "going away".
            Incoming::Text(m) => {
                assert_eq!(m["code"], "BASE-00020", "{m}");
                assert_eq!(client.expect_close(1001).await, "service_unavailable");
            }
            Incoming::Closed(code, reason) => assert_eq!(code, 1001, "{reason}"),
        }
        assert!(Instant::now() < deadline, "never resumed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let resumed = killed.elapsed();
    // The participants bridged through B and C keep their sockets: those nodes find A gone
    // and resume their seats on the new owner themselves; the client sees `joined` again,
    // with its own address.
    for (client, (address, _)) in bridged.iter_mut().zip(&seats[1..]) {
        let joined = client.expect("joined").await;
        assert_eq!(joined["address"], address.as_str(), "{joined}");
        assert_eq!(
            joined["participants"].as_array().unwrap().len(),
            2,
            "{joined}"
        );
    }
    eprintln!(
        "owner killed ({}): the participant on it resumed after {resumed:?}, the bridged ones were re-attached after {:?} (same addresses)",
        redis.kind(),
        killed.elapsed()
    );
    let mut resumed = vec![on_a];
    resumed.append(&mut bridged);
    let owner = holder(&redis, id).unwrap();
    assert!(owner == "b" || owner == "c", "{owner}");
    // Nobody saw anyone leave or join: the first thing each socket gets is a relay.
    let addresses: Vec<String> = seats.into_iter().map(|(address, _)| address).collect();
    let relayed = std::panic::AssertUnwindSafe(relays_work(&mut resumed, &addresses, "after"));
    if let Err(panic) = futures_util::FutureExt::catch_unwind(relayed).await {
        eprintln!("B:\n{}\nC:\n{}", b.log_text(), c.log_text());
        std::panic::resume_unwind(panic);
    }
}
one_redis_and_cluster!(sigterm_drains_with_nobody_dropped);
async fn sigterm_drains_with_nobody_dropped(redis: SharedRedis) {
    let [mut a, b, c] = three_nodes(&redis, Options::default());
    let room = a.new_room(json!({"name": "drained"})).await;
    let id = room["id"].as_str().unwrap();
    let token = room["token"].as_str().unwrap();
    assert_eq!(holder(&redis, id).as_deref(), Some("a"));
    // Two participants on the owner itself, two bridged through B, two through C.
    let mut clients: Vec<Client> = Vec::new();
    let mut seats: Vec<(String, String)> = Vec::new();
    for node in [&a, &b, &c, &a, &b, &c] {
        let (client, joined) = Client::join(node, token, "P").await;
        for earlier in clients.iter_mut() {
            earlier.expect("participantJoined").await;
        }
        let address = joined["address"].as_str().unwrap().to_string();
        seats.push((address, joined["resumeToken"].as_str().unwrap().to_string()));
        clients.push(client);
    }
    let addresses: Vec<String> = seats.iter().map(|(address, _)| address.clone()).collect();

    let signalled = Instant::now();
    a.terminate();
    // A hands the room to B or C with its seats. Its own sockets are closed with 1001
    // "room handed over to another node", and their clients resume (as an SDK does) on the
    // other nodes; the sockets bridged through B and C stay open: their nodes re-attach
    // them to the new owner, and the client sees `joined` again.
    let mut back: Vec<Client> = Vec::new();
    for (i, mut client) in clients.into_iter().enumerate() {
        let (address, resume) = &seats[i];
        let joined = if i % 3 == 0 {
            let reason = client.expect_close(1001).await;
            assert_eq!(
                reason,
                "room handed over to another node",
                "{}",
                a.log_text()
            );
            let node = if i == 0 { &b } else { &c };
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let mut client = Client::connect(node).await;
                client
                    .send(json!({"type": "join", "token": token, "resume": resume}))
                    .await;
                match client.next().await {
                    Incoming::Text(m) if m["type"] == "joined" => {
                        back.push(client);
                        break m;
                    }
                    // Refused while the room has no owner yet (it should not happen: the
                    // room is started elsewhere before the sockets are closed).
                    Incoming::Text(m) => {
                        eprintln!("resume refused: {m}");
                        assert_eq!(m["code"], "BASE-00020", "{m}");
                        client.expect_close(1001).await;
                    }
                    Incoming::Closed(code, reason) => assert_eq!(code, 1001, "{reason}"),
                }
                assert!(Instant::now() < deadline, "never resumed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            let joined = client.expect("joined").await;
            back.push(client);
            joined
        };
        assert_eq!(joined["address"], address.as_str(), "{joined}");
        assert_eq!(
            joined["participants"].as_array().unwrap().len(),
            5,
            "{joined}"
        );
    }
    let everyone_back = signalled.elapsed();
    let owner = holder(&redis, id).unwrap();
    assert!(owner == "b" || owner == "c", "{owner}");
    // Nobody saw anyone leave or join: the first thing each socket gets is a relay.
    let relayed = std::panic::AssertUnwindSafe(relays_work(&mut back, &addresses, "drained"));
    if let Err(panic) = futures_util::FutureExt::catch_unwind(relayed).await {
        eprintln!(
            "A:\n{}\nB:\n{}\nC:\n{}",
            a.log_text(),
            b.log_text(),
            c.log_text()
        );
        std::panic::resume_unwind(panic);
    }
    // Every node lists the six, in join order, none of them waiting for a resume.
    for node in [&b, &c] {
        assert_eq!(addresses_of(&participants_on(node, id).await), addresses);
    }
    let status = a.wait_for_exit(Duration::from_secs(35)).await;
    let exited = signalled.elapsed();
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let log = a.log_text();
    assert!(
        log.contains("drained: rooms handed to other nodes"),
        "{log}"
    );
    eprintln!(
        "SIGTERM to the owner ({}): all six participants back (same addresses) after {everyone_back:?}; the owner exited (0) after {exited:?}",
        redis.kind()
    );
}

one_redis_and_cluster!(a_killed_owners_room_with_participants_is_taken_over_without_anyone_asking);
async fn a_killed_owners_room_with_participants_is_taken_over_without_anyone_asking(
    redis: SharedRedis,
) {
    let [mut a, b, c] = three_nodes(&redis, Options::default());
    let room = a.new_room(json!({"name": "orphaned at once"})).await;
    let id = room["id"].as_str().unwrap().to_string();
    let token = room["token"].as_str().unwrap();
    // Both participants are on the owner itself: no other node has a socket of the room.
    let (mut first, joined) = Client::join(&a, token, "P0").await;
    let mut addresses = vec![joined["address"].as_str().unwrap().to_string()];
    let (_second, joined) = Client::join(&a, token, "P1").await;
    first.expect("participantJoined").await;
    addresses.push(joined["address"].as_str().unwrap().to_string());
    // A has stored the two seats, and listed the room among its rooms with seats.
    let listed = |node: &str| redis.is_member(&format!("convene:{{seated}}:{node}"), &id);
    let stored = || async {
        let value = redis.get(&format!("convene:{{room:{id}}}:seats"));
        value.is_some_and(|v| serde_json::from_str::<Vec<Value>>(&v).unwrap().len() == 2)
            && listed("a")
    };
    assert!(
        eventually(Duration::from_secs(10), stored).await,
        "listed: {}\n{}",
        listed("a"),
        a.log_text()
    );

    let killed = Instant::now();
    a.kill();
    // Nobody asks for the room: B or C takes it over once A has left the node list and its
    // lease has expired, with both seats waiting for their resumes.
    let taken = || async { holder(&redis, &id).is_some_and(|h| h == "b" || h == "c") };
    assert!(
        eventually(Duration::from_secs(20), taken).await,
        "B:\n{}\nC:\n{}",
        b.log_text(),
        c.log_text()
    );
    let after = killed.elapsed();
    let owner = holder(&redis, &id).unwrap();
    for node in [&b, &c] {
        let seats = participants_on(node, &id).await;
        assert_eq!(addresses_of(&seats), addresses, "{seats:?}");
        assert!(seats.iter().all(|p| p["connected"] == false), "{seats:?}");
    }
    // The room is listed as the new owner's, and no longer as A's.
    assert!(listed(&owner));
    assert!(!listed("a"));
    eprintln!(
        "owner killed with both participants on it ({}): {owner} held the room after {after:?}, its two seats waiting for resumes, with no client asking",
        redis.kind()
    );
    // A resume on the other node gets its seat back, with its address.
    let other = if owner == "b" { &c } else { &b };
    let resume = json!({"type": "join", "token": token, "resume": joined["resumeToken"]});
    let (_back, resumed) = Client::join_with(other, resume).await;
    assert_eq!(resumed["address"], addresses[1].as_str());
}

#[tokio::test]
async fn without_cluster_relays_never_touch_redis() {
    let Some(app) = TestApp::spawn_with_own_redis(Options::default()).await else {
        return;
    };
    let port = app.redis.as_ref().unwrap().port;
    let room = app.new_room(json!({})).await;
    let token = room["token"].as_str().unwrap();
    let (mut clients, addresses) = join_all(&[&app, &app, &app], token).await;
    relays_work(&mut clients, &addresses, "alone").await;
    assert_eq!(publishes(port), 0);
    assert_eq!(
        app.metric(r#"convene_bridge_links_total{side="edge"}"#)
            .await,
        0.0
    );
}

#[tokio::test]
async fn when_the_bus_breaks_bridged_sockets_are_re_attached_with_their_address() {
    let Some(redis) = SharedRedis::single() else {
        return;
    };
    let [a, b, c] = three_nodes(&redis, Options::default());
    let room = a.new_room(json!({"name": "cut"})).await;
    let token = room["token"].as_str().unwrap();
    let (mut clients, addresses) = join_all(&[&a, &b, &c], token).await;

    // Every node's subscription is cut: messages may have been lost either way, so each
    // bridged link is dropped, and B and C resume their seats on A again.
    let killed: u64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query(&mut *redis.conn())
        .unwrap();
    assert_eq!(killed, 3, "one subscription per node");
    for (client, address) in clients.iter_mut().zip(&addresses).skip(1) {
        let joined = client.expect("joined").await;
        assert_eq!(joined["address"], address.as_str(), "{joined}");
    }
    // Nobody saw anyone leave, and relays work as before.
    relays_work(&mut clients, &addresses, "again").await;
    assert_eq!(
        holder(&redis, room["id"].as_str().unwrap()).as_deref(),
        Some("a")
    );
    assert!(
        b.metric(r#"convene_bridge_links_total{side="reattached"}"#)
            .await
            >= 1.0
    );
}
