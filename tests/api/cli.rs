//! The command line of the real binary: `--help`, `--version`, `config check`, refusals of
//! unknown commands, and JSON log mode, where every line the service writes is JSON (the
//! line with a generated API key included).

use crate::support::*;
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn run(args: &[&str], options: Options) -> Exited {
    run_args_to_exit(args, options, WAIT)
}

#[test]
fn help_names_the_subcommands_and_the_settings() {
    for flag in ["--help", "-h", "help"] {
        let exited = run(&[flag], Options::default());
        assert_eq!(exited.status.code(), Some(0), "{flag}: {exited:?}");
        let help = &exited.stdout;
        for words in [
            "Usage:",
            "convene serve",
            "convene config check",
            "--version",
            "--help",
            "CONVENE_CONFIG",
            "CONVENE_API_KEYS",
            "README.md",
            "/api/openapi.json",
        ] {
            assert!(help.contains(words), "{flag}: no {words:?} in\n{help}");
        }
        assert!(!help.contains("listening on"), "{help}");
        assert_eq!(exited.stderr, "", "{flag}");
    }
}

#[test]
fn version_prints_the_crate_version() {
    for flag in ["--version", "-V"] {
        let exited = run(&[flag], Options::default());
        assert_eq!(exited.status.code(), Some(0), "{flag}: {exited:?}");
        assert_eq!(
            exited.stdout,
            format!("convene {}\n", env!("CARGO_PKG_VERSION"))
        );
    }
}

#[test]
fn unknown_commands_are_refused_with_the_usage() {
    for args in [
        &["--frobnicate"][..],
        &["config"],
        &["config", "show"],
        &["serve", "--now"],
    ] {
        let exited = run(args, Options::default());
        assert_eq!(exited.status.code(), Some(2), "{args:?}: {exited:?}");
        assert!(exited.stderr.starts_with("convene: "), "{}", exited.stderr);
        assert!(exited.stderr.contains("Usage:"), "{}", exited.stderr);
        assert_eq!(exited.stdout, "", "{args:?}");
    }
}

/// Secrets of every kind, set through the environment and a `CONVENE_CONFIG` file.
const SECRETS: [&str; 5] = [
    "first-key-hunter2",
    "second-key-hunter2",
    "token-secret-hunter2-0123456789abcdef",
    "turn-secret-hunter2",
    "redis-password-hunter2",
];

#[test]
fn config_check_prints_the_effective_settings_with_secrets_redacted() {
    let file = std::env::temp_dir().join(format!("convene-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(
        &file,
        format!("turn_secret = \"{}\"\nroom_ttl_seconds = 600\n", SECRETS[3]),
    )
    .unwrap();
    let exited = run(
        &["config", "check"],
        Options::default()
            .env("CONVENE_CONFIG", file.display())
            .env("CONVENE_API_KEYS", format!("{},{}", SECRETS[0], SECRETS[1]))
            .env("CONVENE_TOKEN_SECRET", SECRETS[2])
            // Checked, never connected to: nothing listens there.
            .env(
                "CONVENE_REDIS_URL",
                format!("redis://convene:{}@127.0.0.1:{}/2", SECRETS[4], free_port()),
            )
            .env("CONVENE_MESH_MAX_PARTICIPANTS", "5")
            .env("CONVENE_LOG_FORMAT", "json"),
    );
    let _ = std::fs::remove_file(&file);
    assert_eq!(exited.status.code(), Some(0), "{exited:?}");
    assert_eq!(exited.stderr, "");
    let out = &exited.stdout;
    for secret in SECRETS {
        assert!(!out.contains(secret), "{secret} printed:\n{out}");
    }
    assert!(!out.contains("listening on"), "{out}");
    // The output is TOML that a `CONVENE_CONFIG` file could hold.
    let table: toml::Table = out.parse().expect("TOML");
    let text = |key: &str| table[key].as_str().unwrap().to_string();
    assert_eq!(
        table["api_keys"],
        toml::Value::Array(vec!["[redacted]".into(), "[redacted]".into()])
    );
    assert_eq!(text("token_secret"), "[redacted]");
    assert_eq!(text("turn_secret"), "[redacted]");
    assert!(
        text("redis_url").starts_with("redis://convene:[redacted]@127.0.0.1:"),
        "{out}"
    );
    // Settings from each layer: the environment, the file, the defaults.
    assert_eq!(table["mesh_max_participants"].as_integer(), Some(5));
    assert_eq!(table["room_ttl_seconds"].as_integer(), Some(600));
    assert_eq!(table["sfu_max_participants"].as_integer(), Some(100));
    assert_eq!(text("log_format"), "json");
    assert_eq!(text("bind"), "127.0.0.1:0");
    // Every setting is there: as many as a check without secrets shows.
    let plain = run(&["config", "check"], Options::default());
    assert_eq!(plain.status.code(), Some(0), "{plain:?}");
    let plain: toml::Table = plain.stdout.parse().unwrap();
    assert_eq!(plain.len(), table.len());
    assert!(table.len() > 50, "{}", table.len());
}

#[test]
fn config_check_refuses_a_bad_setting_naming_it() {
    for (name, value) in [
        ("CONVENE_MESH_MAX_PARTICIPANTS", "1"),
        ("CONVENE_TOKEN_SECRET", "short"),
        ("CONVENE_BIND", "nowhere"),
        ("CONVENE_LOG_FORMAT", "xml"),
        ("CONVENE_REDIS_URL", "http://not-redis"),
        ("CONVENE_CONFIG", "/nonexistent/convene.toml"),
    ] {
        let exited = run(&["config", "check"], Options::default().env(name, value));
        assert_eq!(exited.status.code(), Some(2), "{name}={value}: {exited:?}");
        assert!(
            exited
                .stderr
                .starts_with("convene: invalid configuration: ")
                && exited.stderr.contains(name),
            "{name}={value}: {}",
            exited.stderr
        );
        assert_eq!(exited.stdout, "", "{name}={value}");
    }
    // A bad secret is named, not printed.
    let exited = run(
        &["config", "check"],
        Options::default().env("CONVENE_TOKEN_SECRET", "hunter2"),
    );
    assert!(!exited.stderr.contains("hunter2"), "{}", exited.stderr);
}

/// With `CONVENE_LOG_FORMAT=json`, every line the service writes, from the first (the
/// generated API key) to the last (stopped), is a JSON object with a timestamp, a level
/// and a message; the key line carries the key in `api_key`, and the key works.
#[tokio::test]
async fn json_log_mode_writes_only_json_lines_the_generated_key_included() {
    let mut app = TestApp::spawn_with(
        Backend::Memory,
        Options::default()
            .env("CONVENE_LOG_FORMAT", "json")
            .env("CONVENE_API_KEYS", "")
            .env("CONVENE_TOKEN_SECRET", ""),
    )
    .await
    .unwrap();
    let first = app.stdout.lock().unwrap()[0].clone();
    let first: Value = serde_json::from_str(&first).expect("the first line is JSON");
    assert_eq!(
        first["message"],
        "No API key configured (CONVENE_API_KEYS): generated one for this run"
    );
    let key = first["api_key"].as_str().expect("api_key").to_string();
    assert!(
        key.len() >= 32 && key.bytes().all(|b| b.is_ascii_hexdigit()),
        "{key}"
    );
    app.api_key = key.clone();
    let room = app.new_room(json!({"name": "json logs"})).await;
    let res = app
        .request(Method::GET, "/api/realtime/room?numberOfRecords=0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        app.get_room(room["id"].as_str().unwrap()).await.status(),
        200
    );
    let status = app.stop().unwrap();
    assert_eq!(status.code(), Some(0));

    let lines = app.logs.lock().unwrap().clone();
    assert!(lines.len() >= 6, "{lines:#?}");
    for line in &lines {
        let value: Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(value["timestamp"].is_string(), "{line}");
        assert!(value["level"].is_string(), "{line}");
        assert!(value["message"].is_string(), "{line}");
    }
    let messages: Vec<String> = lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["message"].to_string())
        .collect();
    for wanted in [
        "no token secret configured",
        "listening on",
        "request finished",
        "stopped",
    ] {
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with(&format!("\"{wanted}"))),
            "no {wanted:?} line: {messages:#?}"
        );
    }
    // The key is in its own line only.
    assert_eq!(lines.iter().filter(|l| l.contains(&key)).count(), 1);
}

/// A start-up that fails in JSON log mode says why in a JSON line too, and writes nothing
/// that is not JSON (no text line on stderr).
#[test]
fn a_failed_start_up_in_json_log_mode_is_reported_in_json() {
    let exited = run(
        &[],
        Options::default()
            .env("CONVENE_LOG_FORMAT", "json")
            .env(
                "CONVENE_REDIS_URL",
                format!("redis://127.0.0.1:{}/", free_port()),
            )
            .env("CONVENE_STORE_STARTUP_TIMEOUT_SECONDS", 1),
    );
    assert_eq!(exited.status.code(), Some(1), "{exited:?}");
    assert_eq!(exited.stderr, "");
    let lines: Vec<Value> = exited
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines.iter().any(|l| l["level"] == "ERROR"
            && l["message"].as_str().is_some_and(
                |m| m.starts_with("start-up failed") && m.contains("CONVENE_REDIS_URL")
            )),
        "{lines:#?}"
    );
}
