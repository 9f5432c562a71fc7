//! Real-browser tests (`web/tests/*.test.mjs`, run by `node --test`): Debian's Chromium driven
//! by playwright-core, against this build's binary, inside a network namespace that has only
//! loopback (traffic to other addresses is forbidden on these machines; see
//! `web/tests/harness.mjs`). Their output is streamed as they run.
//!
//! Without Chromium, the npm packages or the right to make a network namespace, the test says
//! what is missing and passes as skipped, unless `CONVENE_REQUIRE_BROWSER=1`, when it fails.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The whole run normally takes about a minute; this only stops a hung browser.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(15 * 60);

fn skip_or_fail(why: &str) {
    let required = std::env::var("CONVENE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "browser tests required (CONVENE_REQUIRE_BROWSER=1) but {why}"
    );
    // Straight to stderr, past the test harness's capture, so that the skip shows.
    let _ = writeln!(std::io::stderr(), "skipped: browser tests: {why}");
}

#[test]
fn browser_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let how = "install them with `apt-get install -y chromium` and `(cd web && npm ci)`";
    if !Path::new("/usr/bin/chromium").exists() {
        skip_or_fail(&format!("/usr/bin/chromium is missing: {how}"));
        return;
    }
    if !root.join("web/node_modules/playwright-core").exists() {
        skip_or_fail(&format!(
            "web/node_modules/playwright-core is missing: {how}"
        ));
        return;
    }
    let namespace_ok = Command::new("unshare")
        .args(["--net", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !namespace_ok {
        skip_or_fail(
            "`unshare --net` failed: they need root (or CAP_SYS_ADMIN) for a loopback-only network namespace",
        );
        return;
    }

    let mut files: Vec<String> = std::fs::read_dir(root.join("web/tests"))
        .expect("web/tests")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("web/tests/{name}"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no web/tests/*.test.mjs");
    // One file at a time: two cores are shared, and each file runs its own browser.
    let script = format!(
        "ip link set lo up && exec node --test --test-concurrency=1 {}",
        files.join(" ")
    );
    eprintln!("running in a loopback-only network namespace: {script}");
    // Output goes straight to ours (inherited), so it shows while the tests run.
    let mut child = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .current_dir(root)
        .env("CONVENE_BIN", env!("CARGO_BIN_EXE_convene"))
        .spawn()
        .expect("run unshare");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the browser tests") {
            break status;
        }
        if started.elapsed() > OVERALL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("browser tests still running after {OVERALL_TIMEOUT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "browser tests failed: {status}");
}
