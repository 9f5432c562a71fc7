//! The production compose file (`docker-compose.yml`, docs/deploy.md), as Debian's
//! `docker-compose` reads it (`config`, which needs no Docker daemon): it parses with the
//! required secrets and refuses to without them; every image is pinned to a release; only
//! Caddy, the SFU's media port and coturn are published (never Convene's HTTP port or its
//! metrics listener); Convene and coturn share the TURN secret; Redis keeps an append-only
//! file. The Dockerfile's base images are pinned too.
//!
//! Without `docker-compose` the compose checks are skipped with a message, unless
//! `CONVENE_REQUIRE_COMPOSE=1` (CI), when that is a failure.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;

const TURN_SECRET: &str = "deploy-test-turn-secret";

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `docker-compose -f docker-compose.yml config` with `env` (and nothing else of ours), or
/// None when docker-compose is not installed.
fn compose_config(env: &[(&str, &str)]) -> Option<std::process::Output> {
    let mut command = Command::new("docker-compose");
    command
        .args(["-f", "docker-compose.yml", "config"])
        .current_dir(root())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    match command.output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("docker-compose: {e}"),
    }
}

fn skip_or_fail(why: &str) {
    let required = std::env::var("CONVENE_REQUIRE_COMPOSE").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "compose checks required (CONVENE_REQUIRE_COMPOSE=1) but {why}"
    );
    let _ = writeln!(std::io::stderr(), "skipped: compose checks: {why}");
}

/// The lines of `config`'s output under each service (`services:` → two-space keys).
fn services(yaml: &str) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut in_services = false;
    let mut current: Option<String> = None;
    for line in yaml.lines() {
        if !line.starts_with(' ') {
            in_services = line.trim_end() == "services:";
            current = None;
            continue;
        }
        if !in_services {
            continue;
        }
        if let Some(name) = line.strip_prefix("  ").and_then(|l| l.strip_suffix(':'))
            && !name.starts_with(' ')
        {
            current = Some(name.to_string());
            continue;
        }
        if let Some(service) = &current {
            out.entry(service.clone())
                .or_default()
                .push(line.trim().to_string());
        }
    }
    out
}

/// A tag that names a release: at least major.minor, not `latest`.
fn pinned(image: &str) -> bool {
    let Some((_, tag)) = image.rsplit_once(':') else {
        return false;
    };
    let version = tag.split('-').next().unwrap_or("");
    let parts: Vec<&str> = version.split('.').collect();
    parts.len() >= 2
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

#[test]
fn compose_file_is_valid_pinned_and_keeps_metrics_private() {
    let env = [
        ("CONVENE_API_KEYS", "key"),
        (
            "CONVENE_TOKEN_SECRET",
            "token-secret-of-at-least-32-bytes!!",
        ),
        ("CONVENE_TURN_SECRET", TURN_SECRET),
    ];
    let Some(output) = compose_config(&env) else {
        return skip_or_fail("docker-compose is missing: `apt-get install -y docker-compose`");
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "docker-compose config failed: {stderr}"
    );
    let yaml = String::from_utf8(output.stdout).unwrap();
    let services = services(&yaml);
    // Debian's docker-compose lists the `cluster` profile's nodes too (checked below).
    assert_eq!(
        services.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "caddy",
            "convene",
            "convene-b",
            "convene-c",
            "coturn",
            "redis"
        ]
    );

    // Every image names a release (convene:local is built from the Dockerfile, checked below).
    for (name, lines) in &services {
        let image = lines
            .iter()
            .find_map(|l| l.strip_prefix("image: "))
            .unwrap_or_else(|| panic!("{name} has no image"));
        if name.starts_with("convene") {
            assert_eq!(image, "convene:local");
        } else {
            assert!(
                pinned(image),
                "{name}: image {image} is not pinned to a release"
            );
        }
    }

    // What is published, per service: Convene's 8080 and 9090 (metrics) never.
    let published = |service: &str| -> Vec<u32> {
        services[service]
            .iter()
            .filter_map(|l| l.trim_start_matches("- ").strip_prefix("published: "))
            .map(|p| p.trim_matches('\'').parse().unwrap())
            .collect()
    };
    assert_eq!(published("caddy"), [80, 443, 443]);
    assert_eq!(published("convene"), [7882]);
    assert_eq!(published("convene-b"), [7883]);
    assert_eq!(published("convene-c"), [7884]);
    assert_eq!(published("redis"), Vec::<u32>::new());
    let coturn = published("coturn");
    assert_eq!(coturn[..2], [3478, 3478]);
    assert_eq!(coturn[2..], (49160..=49260).collect::<Vec<_>>());
    for ports in [
        published("caddy"),
        published("convene"),
        published("convene-b"),
        published("convene-c"),
        coturn,
    ] {
        assert!(
            !ports.contains(&8080) && !ports.contains(&9090),
            "{ports:?}"
        );
    }
    let convene = &services["convene"];
    assert!(convene.contains(&"CONVENE_METRICS_BIND: 0.0.0.0:9090".to_string()));

    // The TURN secret is the same for both; Convene hands out STUN and TURN.
    assert!(convene.contains(&format!("CONVENE_TURN_SECRET: {TURN_SECRET}")));
    assert!(
        services["coturn"].contains(&format!("- --static-auth-secret={TURN_SECRET}")),
        "{:?}",
        services["coturn"]
    );
    let ice = convene
        .iter()
        .find_map(|l| l.strip_prefix("CONVENE_ICE_SERVERS: "))
        .expect("CONVENE_ICE_SERVERS");
    let urls: Vec<&str> = ice.split(',').collect();
    assert!(urls.iter().any(|u| u.starts_with("stun:")), "{ice}");
    assert!(urls.iter().any(|u| u.starts_with("turn:")), "{ice}");

    // Redis persists to an append-only file.
    let redis = services["redis"].join("\n");
    assert!(
        redis.contains("- --appendonly\n- 'yes'") || redis.contains("- --appendonly\n- \"yes\""),
        "{redis}"
    );

    // The same file refuses to start without the TURN secret, naming it.
    let without: Vec<_> = env
        .iter()
        .copied()
        .filter(|(k, _)| *k != "CONVENE_TURN_SECRET")
        .collect();
    let output = compose_config(&without).unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("set CONVENE_TURN_SECRET"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn dockerfile_base_images_are_pinned() {
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).unwrap();
    let images: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("FROM "))
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(images.len(), 2, "{images:?}");
    for image in images {
        assert!(
            pinned(image),
            "Dockerfile: {image} is not pinned to a release"
        );
    }
}

/// The value of `key: value` among a service's lines.
fn setting<'a>(lines: &'a [String], key: &str) -> Option<&'a str> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .map(|v| v.trim_matches('\''))
}

#[test]
fn the_cluster_profile_adds_two_nodes_behind_the_same_balancer() {
    let env = [
        ("CONVENE_API_KEYS", "key"),
        (
            "CONVENE_TOKEN_SECRET",
            "token-secret-of-at-least-32-bytes!!",
        ),
        ("CONVENE_TURN_SECRET", TURN_SECRET),
        ("CONVENE_CLUSTER", "1"),
    ];
    let Some(output) = compose_config(&env) else {
        return skip_or_fail("docker-compose is missing: `apt-get install -y docker-compose`");
    };
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let services = services(&String::from_utf8(output.stdout).unwrap());
    let nodes = ["convene", "convene-b", "convene-c"];
    let mut ids = Vec::new();
    let mut addrs = Vec::new();
    for node in nodes {
        let lines = &services[node];
        // One cluster on one Redis, with the same secrets everywhere.
        assert_eq!(setting(lines, "CONVENE_CLUSTER"), Some("1"), "{node}");
        assert_eq!(
            setting(lines, "CONVENE_REDIS_URL"),
            Some("redis://redis:6379/0")
        );
        assert_eq!(setting(lines, "CONVENE_TURN_SECRET"), Some(TURN_SECRET));
        assert!(setting(lines, "CONVENE_TOKEN_SECRET").is_some(), "{node}");
        ids.push(setting(lines, "CONVENE_NODE_ID").unwrap().to_string());
        addrs.push(
            setting(lines, "CONVENE_NODE_HTTP_ADDR")
                .unwrap()
                .to_string(),
        );
        // Caddy reaches every node under one name.
        let text = lines.join("\n");
        assert!(text.contains("- convene-nodes"), "{node}: {text}");
        // Only the first node runs without the profile.
        assert_eq!(
            text.contains("profiles:\n- cluster"),
            node != "convene",
            "{node}: {text}"
        );
    }
    assert_eq!(ids, ["convene-a", "convene-b", "convene-c"]);
    assert_eq!(addrs, ["convene:8080", "convene-b:8080", "convene-c:8080"]);
    // Each node's media port is its own, advertised and published.
    assert_eq!(setting(&services["convene"], "CONVENE_RTC_UDP_PORT"), None);
    assert_eq!(
        setting(&services["convene-b"], "CONVENE_RTC_UDP_PORT"),
        Some("7883")
    );
    assert_eq!(
        setting(&services["convene-c"], "CONVENE_RTC_UDP_PORT"),
        Some("7884")
    );
    // Caddy spreads over the alias, so one node or three need the same Caddyfile.
    let caddyfile = std::fs::read_to_string(root().join("deploy/Caddyfile")).unwrap();
    assert!(
        caddyfile.contains("dynamic a convene-nodes 8080"),
        "{caddyfile}"
    );
}
