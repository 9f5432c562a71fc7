//! The admin page (`/admin`) in a real browser: `web/tests/admin/page.test.mjs` (kept out of
//! `web/tests/*.test.mjs`, which `tests/browser.rs` runs), Debian's Chromium driven by
//! playwright-core, against this build's binary, inside a network namespace that has only
//! loopback, as `tests/browser.rs` runs the SDK tests. Leaves a screenshot in
//! `tests/artifacts/admin.png`. Its output is streamed as it runs.
//!
//! Without Chromium, the npm packages or the right to make a network namespace, the test says
//! what is missing and passes as skipped, unless `CONVENE_REQUIRE_BROWSER=1`, when it fails.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The run normally takes about 20 s; this only stops a hung browser.
const OVERALL_TIMEOUT: Duration = Duration::from_secs(5 * 60);

fn skip_or_fail(why: &str) {
    let required = std::env::var("CONVENE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "admin page test required (CONVENE_REQUIRE_BROWSER=1) but {why}"
    );
    // Straight to stderr, past the test harness's capture, so that the skip shows.
    let _ = writeln!(std::io::stderr(), "skipped: admin page test: {why}");
}

#[test]
fn admin_page_in_chromium() {
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
            "`unshare --net` failed: it needs root (or CAP_SYS_ADMIN) for a loopback-only network namespace",
        );
        return;
    }

    let script =
        "ip link set lo up && exec node --test --test-concurrency=1 web/tests/admin/page.test.mjs";
    eprintln!("running in a loopback-only network namespace: {script}");
    // Output goes straight to ours (inherited), so it shows while the test runs.
    let mut child = Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .current_dir(root)
        .env("CONVENE_BIN", env!("CARGO_BIN_EXE_convene"))
        .spawn()
        .expect("run unshare");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the admin page test") {
            break status;
        }
        if started.elapsed() > OVERALL_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("admin page test still running after {OVERALL_TIMEOUT:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "admin page test failed: {status}");
}
