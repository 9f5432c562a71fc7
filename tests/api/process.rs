//! The service as a process: clean shutdown on SIGTERM, a generated API key when none is
//! configured, and a clear refusal of invalid configuration.

use crate::both_stores;
use crate::support::*;
use serde_json::json;
use std::time::Duration;

both_stores!(sigterm_exits_with_status_0, |mut app: TestApp| async move {
    app.new_room(json!({})).await;
    let status = app.stop().expect("the service was running");
    assert_eq!(status.code(), Some(0), "{status:?}\n{}", app.log_text());
});

#[tokio::test]
async fn sigterm_right_after_start() {
    let mut app = TestApp::spawn(Backend::Memory).await.unwrap();
    let status = app.stop().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

const GENERATED: &str = "generated one for this run: ";

#[tokio::test]
async fn a_key_is_generated_when_none_is_configured() {
    let mut app = TestApp::spawn_with(
        Backend::Memory,
        Options::default().env("CONVENE_API_KEYS", ""),
    )
    .await
    .unwrap();
    let stdout = app.stdout.lock().unwrap().clone();
    let lines: Vec<&String> = stdout.iter().filter(|l| l.contains(GENERATED)).collect();
    assert_eq!(lines.len(), 1, "printed once on stdout: {stdout:?}");
    let key = lines[0].split(GENERATED).nth(1).unwrap().trim().to_string();
    assert!(key.len() >= 32, "a long key: {key:?}");
    assert!(key.bytes().all(|b| b.is_ascii_hexdigit()), "{key:?}");
    // Printed once, and never in a log line.
    let all = app.logs.lock().unwrap().clone();
    assert_eq!(
        all.iter().filter(|l| l.contains(&key)).count(),
        1,
        "{all:?}"
    );

    // The configured keys of the harness are not in use…
    let res = app.list("").await;
    assert_error(
        res,
        400,
        "REALTIME-00009",
        Some("INVALID_TOKEN"),
        &format!("The token ::= [{API_KEY}] is invalid."),
    )
    .await;
    // …the generated one is.
    app.api_key = key.clone();
    let room = app.new_room(json!({"name": "with a generated key"})).await;
    assert_eq!(json_ok(app.list("").await).await, json!({"data": [room]}));
    assert_eq!(
        json_ok(app.delete_room(room["id"].as_str().unwrap()).await).await,
        json!({"room": room})
    );
    // Still printed only once after all that.
    let all = app.logs.lock().unwrap().clone();
    assert_eq!(all.iter().filter(|l| l.contains(&key)).count(), 1);

    // A restart generates another one.
    app.restart();
    let stdout = app.stdout.lock().unwrap().clone();
    let line = stdout.iter().find(|l| l.contains(GENERATED)).unwrap();
    let second = line.split(GENERATED).nth(1).unwrap().trim();
    assert_ne!(second, key);
}

/// Runs the service with one bad setting and checks that it refuses to start, naming it.
fn assert_refused(name: &str, value: &str) {
    let exited = run_to_exit(
        Options::default()
            .env(name, value)
            .env("CONVENE_STORE_STARTUP_TIMEOUT_SECONDS", 1),
        Duration::from_secs(30),
    );
    let code = exited.status.code();
    assert!(
        code.is_some_and(|c| c != 0),
        "{name}={value:?}: exit {:?}\n{}\n{}",
        exited.status,
        exited.stdout,
        exited.stderr
    );
    assert!(
        exited.stderr.contains(name),
        "{name}={value:?}: stderr does not name the setting:\n{}",
        exited.stderr
    );
    assert!(!exited.stdout.contains("listening on"), "{}", exited.stdout);
}

#[test]
fn invalid_configuration_is_refused() {
    for (name, value) in [
        ("CONVENE_MESH_MAX_PARTICIPANTS", "abc"),
        ("CONVENE_MESH_MAX_PARTICIPANTS", "-3"),
        ("CONVENE_MESH_MAX_PARTICIPANTS", "1"),
        ("CONVENE_TOKEN_SECRET", "short"),
        ("CONVENE_ROOM_TTL_SECONDS", "0"),
        ("CONVENE_ROOM_TOKEN_TTL_SECONDS", "ten"),
        ("CONVENE_BIND", "nowhere"),
        ("CONVENE_LOG_FORMAT", "xml"),
        ("CONVENE_REDIS_URL", "http://not-redis"),
        ("CONVENE_REQUEST_BODY_TIMEOUT_SECONDS", "0"),
        ("CONVENE_ROOM_LEASE_MS", "100"),
    ] {
        assert_refused(name, value);
    }
}

#[test]
fn unreachable_redis_is_refused_at_start_up() {
    let url = format!("redis://127.0.0.1:{}/", free_port());
    assert_refused("CONVENE_REDIS_URL", &url);
}

/// Runs a node on `redis` that must refuse to start, and answers its stderr.
fn assert_refused_beside_another_node(redis: &RedisServer, options: Options) -> String {
    let exited = run_to_exit(
        options.env("CONVENE_REDIS_URL", redis.url()),
        Duration::from_secs(30),
    );
    assert!(
        exited.status.code().is_some_and(|c| c != 0),
        "exit {:?}\n{}\n{}",
        exited.status,
        exited.stdout,
        exited.stderr
    );
    assert!(!exited.stdout.contains("listening on"), "{}", exited.stdout);
    exited.stderr
}

#[test]
fn cluster_without_redis_or_a_token_secret_is_refused_at_start_up() {
    // No Redis: the nodes of a cluster have nothing to share.
    let exited = run_to_exit(
        Options::default().env("CONVENE_CLUSTER", 1),
        Duration::from_secs(30),
    );
    assert!(exited.status.code().is_some_and(|c| c != 0), "{exited:?}");
    assert!(
        exited.stderr.contains("CONVENE_CLUSTER") && exited.stderr.contains("CONVENE_REDIS_URL"),
        "{}",
        exited.stderr
    );
    assert!(!exited.stdout.contains("listening on"), "{}", exited.stdout);
    // No configured token secret: a generated one is never shared.
    let exited = run_to_exit(
        Options::default()
            .env("CONVENE_CLUSTER", 1)
            .env("CONVENE_REDIS_URL", "redis://127.0.0.1:1/")
            .env("CONVENE_TOKEN_SECRET", ""),
        Duration::from_secs(30),
    );
    assert!(exited.status.code().is_some_and(|c| c != 0), "{exited:?}");
    assert!(
        exited.stderr.contains("CONVENE_CLUSTER") && exited.stderr.contains("CONVENE_TOKEN_SECRET"),
        "{}",
        exited.stderr
    );
    assert!(!exited.stdout.contains("listening on"), "{}", exited.stdout);
}

#[tokio::test]
async fn another_token_secret_is_refused_beside_a_cluster_node() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let cluster = || Options::default().env("CONVENE_CLUSTER", 1);
    let _first = TestApp::spawn_on(&redis.url(), cluster().env("CONVENE_NODE_ID", "first"));
    // Another configured secret could not verify the first node's tokens.
    let stderr = assert_refused_beside_another_node(
        &redis,
        cluster().env(
            "CONVENE_TOKEN_SECRET",
            "another-secret-of-at-least-32-bytes!!",
        ),
    );
    assert!(
        stderr.contains("CONVENE_TOKEN_SECRET") && stderr.contains("node first"),
        "{stderr}"
    );
    // The same secret is welcome: both nodes run.
    let second = TestApp::spawn_on(&redis.url(), cluster().env("CONVENE_NODE_ID", "second"));
    assert_eq!(second.get_room("RO-none").await.status(), 404);
}

/// Without `cluster` (the default) nothing of a cluster is enforced: two nodes on one Redis
/// both run with generated secrets, and neither takes a room lease. They register in the
/// node list all the same (docs/cluster.md).
#[tokio::test]
async fn without_cluster_two_nodes_with_generated_secrets_both_run() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let alone = || Options::default().env("CONVENE_TOKEN_SECRET", "");
    let first = TestApp::spawn_on(&redis.url(), alone().env("CONVENE_NODE_ID", "first"));
    let second = TestApp::spawn_on(&redis.url(), alone().env("CONVENE_NODE_ID", "second"));
    let room = first.new_room(json!({"name": "no lease"})).await;
    let id = room["id"].as_str().unwrap();
    assert_eq!(json_ok(first.get_room(id).await).await["id"], json!(id));
    assert_eq!(second.get_room("RO-none").await.status(), 404);
    let mut conn = redis.conn();
    let leases: Vec<String> = redis::cmd("KEYS")
        .arg("convene:*:lease")
        .query(&mut conn)
        .unwrap();
    assert!(leases.is_empty(), "{leases:?}");
    for node in ["first", "second"] {
        let n: u64 = redis::cmd("EXISTS")
            .arg(format!("convene:{{nodes}}:{node}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(n, 1, "{node} is registered");
    }
}
