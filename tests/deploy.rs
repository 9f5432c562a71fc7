//! The production compose file (`docker-compose.yml`, docs/deploy.md), as Debian's
//! `docker-compose` reads it (`config`, which needs no Docker daemon): it parses with the
//! required secrets and refuses to without them; every image is pinned to a release; only
//! Caddy, the SFU's media port and coturn are published (never Convene's HTTP port or its
//! metrics listener); Convene and coturn share the TURN secret; Redis keeps an append-only
//! file. The Dockerfile's base images are pinned too.
//!
//! TURN over TLS: coturn publishes 5349/tcp with Caddy's certificate (Caddy's data volume
//! mounted read-only, `deploy/coturn/run.sh`), and clients are handed a `turns:` URL with
//! their TURN credentials (checked against the real binary); `run.sh` itself is run with
//! Debian's `turnserver` on a directory laid out as Caddy's, and a TLS client checks that it
//! serves Caddy's certificate and the renewed one after a renewal.
//!
//! Without `docker-compose` the compose checks are skipped with a message, unless
//! `CONVENE_REQUIRE_COMPOSE=1` (CI), when that is a failure; without `turnserver` or
//! `openssl` the `run.sh` test is, unless `CONVENE_REQUIRE_TURN=1`.

#[path = "api/support.rs"]
mod support;

#[path = "support/ws.rs"]
#[allow(dead_code)]
mod ws;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

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
    assert_eq!(coturn[..3], [3478, 3478, 5349]);
    assert_eq!(coturn[3..], (49160..=49260).collect::<Vec<_>>());
    assert_eq!(
        ports("coturn", &services)[..3],
        [
            ("udp".to_string(), 3478),
            ("tcp".to_string(), 3478),
            ("tcp".to_string(), 5349)
        ],
        "TURN over TLS is TCP"
    );
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
    assert!(
        urls.contains(&"turns:convene.localhost:5349?transport=tcp"),
        "{ice}"
    );
    turns_from_caddy_certificate(&services, "convene.localhost");

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

/// A service's published ports as (protocol, port), in order.
fn ports(service: &str, services: &BTreeMap<String, Vec<String>>) -> Vec<(String, u32)> {
    let mut out = Vec::new();
    let mut protocol = String::new();
    for line in &services[service] {
        let line = line.trim_start_matches("- ");
        if let Some(p) = line.strip_prefix("protocol: ") {
            protocol = p.to_string();
        } else if let Some(p) = line.strip_prefix("published: ") {
            out.push((protocol.clone(), p.trim_matches('\'').parse().unwrap()));
        }
    }
    out
}

/// coturn serves TURN over TLS with the certificate Caddy obtains for `domain`: Caddy's data
/// volume read-only in coturn, `run.sh` as the entrypoint (as root, for Caddy's keys), the
/// same domain for both, and a TLS listener in turnserver.conf.
fn turns_from_caddy_certificate(services: &BTreeMap<String, Vec<String>>, domain: &str) {
    let coturn = &services["coturn"];
    let caddy = &services["caddy"];
    assert!(
        caddy.contains(&"- caddy-data:/data:rw".to_string()),
        "{caddy:?}"
    );
    assert!(
        coturn.contains(&"- caddy-data:/caddy-data:ro".to_string()),
        "Caddy's data volume, read-only: {coturn:?}"
    );
    assert!(
        coturn
            .iter()
            .any(|l| l.ends_with("/deploy/coturn/run.sh:/etc/coturn/run.sh:ro")),
        "{coturn:?}"
    );
    let text = coturn.join("\n");
    assert!(
        text.contains("entrypoint:\n- /bin/sh\n- /etc/coturn/run.sh"),
        "{text}"
    );
    assert_eq!(setting(coturn, "user"), Some("0:0"));
    assert_eq!(setting(coturn, "CADDY_DATA"), Some("/caddy-data"));
    assert_eq!(setting(coturn, "CONVENE_DOMAIN"), Some(domain));
    assert_eq!(setting(caddy, "CONVENE_DOMAIN"), Some(domain));
    let conf = std::fs::read_to_string(root().join("deploy/coturn/turnserver.conf")).unwrap();
    let lines: Vec<&str> = conf.lines().map(str::trim).collect();
    assert!(lines.contains(&"tls-listening-port=5349"), "{conf}");
    assert!(!lines.contains(&"no-tls"), "{conf}");
}

#[test]
fn turns_urls_follow_the_domain() {
    let env = [
        ("CONVENE_API_KEYS", "key"),
        (
            "CONVENE_TOKEN_SECRET",
            "token-secret-of-at-least-32-bytes!!",
        ),
        ("CONVENE_TURN_SECRET", TURN_SECRET),
        ("CONVENE_DOMAIN", "meet.example.com"),
    ];
    let Some(output) = compose_config(&env) else {
        return skip_or_fail("docker-compose is missing: `apt-get install -y docker-compose`");
    };
    assert!(output.status.success());
    let services = services(&String::from_utf8(output.stdout).unwrap());
    let ice = setting(&services["convene"], "CONVENE_ICE_SERVERS").unwrap();
    assert!(
        ice.split(',')
            .any(|u| u == "turns:meet.example.com:5349?transport=tcp"),
        "{ice}"
    );
    turns_from_caddy_certificate(&services, "meet.example.com");
}

/// The URLs of the compose file's `CONVENE_ICE_SERVERS` as the real binary hands them to a
/// participant in `joined`: STUN without credentials, and both TURN entries and `turns:` in
/// one entry with its TURN REST credentials.
#[tokio::test]
async fn clients_get_the_turns_url_with_their_turn_credentials() {
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
    assert!(output.status.success());
    let services = services(&String::from_utf8(output.stdout).unwrap());
    let ice = setting(&services["convene"], "CONVENE_ICE_SERVERS")
        .unwrap()
        .to_string();
    let app = support::TestApp::spawn_with(
        support::Backend::Memory,
        support::Options::default()
            .env("CONVENE_ICE_SERVERS", &ice)
            .env("CONVENE_TURN_SECRET", TURN_SECRET),
    )
    .await
    .unwrap();
    let room = app.new_room(serde_json::json!({})).await;
    let (_client, joined) = ws::Client::join(&app, room["token"].as_str().unwrap(), "T").await;
    let servers = &joined["iceServers"];
    assert_eq!(
        servers[0],
        serde_json::json!({"urls": ["stun:convene.localhost:3478"]})
    );
    assert_eq!(
        servers[1]["urls"],
        serde_json::json!([
            "turn:convene.localhost:3478?transport=udp",
            "turn:convene.localhost:3478?transport=tcp",
            "turns:convene.localhost:5349?transport=tcp"
        ])
    );
    let username = servers[1]["username"].as_str().unwrap();
    assert!(username.ends_with(&format!(":{}", joined["address"].as_str().unwrap())));
    assert!(
        servers[1]["credential"]
            .as_str()
            .is_some_and(|c| c.len() == 28)
    );
}

/// Whether `program` is on the `PATH`.
fn installed(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A self-signed certificate and key for `name`, by `openssl`, written as Caddy lays out
/// what it obtains: `<data>/caddy/certificates/<issuer>/<name>/<name>.crt` and `.key`.
fn caddy_certificate(data: &Path, issuer: &str, name: &str) {
    let dir = data.join("caddy/certificates").join(issuer).join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let (crt, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .arg("-subj")
        .arg(format!("/CN={name}"))
        .arg("-addext")
        .arg(format!("subjectAltName=DNS:{name}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
}

/// The SHA-256 fingerprint of the certificate a TLS server on `port` presents for `name`
/// (`openssl s_client`), or `None` when no handshake completes.
fn served_fingerprint(port: u16, name: &str) -> Option<String> {
    let script = format!(
        "openssl s_client -connect 127.0.0.1:{port} -servername {name} </dev/null 2>/dev/null \
         | openssl x509 -noout -fingerprint -sha256"
    );
    let out = Command::new("sh").args(["-c", &script]).output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}

fn file_fingerprint(crt: &Path) -> String {
    let out = Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(crt)
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `deploy/coturn/run.sh` with Debian's turnserver and the deployment's turnserver.conf (on
/// free loopback ports): it waits for Caddy's certificate, serves it on the TLS port, and
/// after Caddy renews it (a new certificate in Caddy's directory) serves the new one without
/// a restart (SIGUSR2).
#[test]
fn run_sh_serves_caddy_s_certificate_and_reloads_it_when_renewed() {
    let required = std::env::var("CONVENE_REQUIRE_TURN").is_ok_and(|v| v == "1");
    for program in ["turnserver", "openssl"] {
        if !installed(program) {
            assert!(!required, "CONVENE_REQUIRE_TURN=1 but {program} is missing");
            eprintln!("skipped: {program} is missing (apt-get install -y coturn openssl)");
            return;
        }
    }
    let name = "turn.convene.test";
    let dir = std::env::temp_dir().join(format!("convene-run-sh-{}", uuid::Uuid::new_v4()));
    let data = dir.join("caddy-data");
    std::fs::create_dir_all(&dir).unwrap();
    // turnserver writes its pid file and database there after dropping to nobody.
    let _ = Command::new("chmod").arg("777").arg(&dir).status();
    let (port, tls_port) = (support::free_port(), support::free_port());
    let mut child = Command::new("sh")
        .arg(root().join("deploy/coturn/run.sh"))
        .args(["-c", "deploy/coturn/turnserver.conf"])
        .arg(format!("--listening-port={port}"))
        .arg(format!("--tls-listening-port={tls_port}"))
        .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
        .args(["--static-auth-secret=s", "--realm=convene.test"])
        .arg(format!(
            "--pidfile={}",
            dir.join("turnserver.pid").display()
        ))
        .arg(format!("--userdb={}", dir.join("turndb").display()))
        .current_dir(root())
        .env("CONVENE_DOMAIN", name)
        .env("CADDY_DATA", &data)
        .env("TLS_DIR", dir.join("tls"))
        .env("CHECK_SECONDS", "1")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Caddy obtains the certificate after coturn has started.
    caddy_certificate(&data, "local", name);
    let crt = data.join(format!("caddy/certificates/local/{name}/{name}.crt"));
    let first = file_fingerprint(&crt);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut served = None;
    while std::time::Instant::now() < deadline {
        served = served_fingerprint(tls_port, name);
        if served.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        served.as_deref(),
        Some(first.as_str()),
        "Caddy's certificate on TLS"
    );
    // Caddy renews: a new certificate (here from another issuer directory, newer).
    caddy_certificate(&data, "acme-v02.api.letsencrypt.org-directory", name);
    let renewed = file_fingerprint(&data.join(format!(
        "caddy/certificates/acme-v02.api.letsencrypt.org-directory/{name}/{name}.crt"
    )));
    assert_ne!(renewed, first);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while std::time::Instant::now() < deadline {
        served = served_fingerprint(tls_port, name);
        if served.as_deref() == Some(renewed.as_str()) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let still_running = child.try_wait().unwrap().is_none();
    // SIGTERM to the script stops turnserver too.
    let _ = Command::new("kill").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        served.as_deref(),
        Some(renewed.as_str()),
        "the renewed certificate, reloaded"
    );
    assert!(still_running, "reloaded, not restarted");
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
