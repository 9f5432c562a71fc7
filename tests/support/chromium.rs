//! Runs `node --test` files in Debian's Chromium (playwright-core) against this build's
//! binary, inside a network namespace that has only loopback (traffic to other addresses is
//! forbidden on these machines; see `docs/browser-tests.md`). Output is streamed as it runs.
//!
//! Without Chromium, the npm packages or the right to make a network namespace, the run says
//! what is missing and passes as skipped, unless `CONVENE_REQUIRE_BROWSER=1`, when it fails.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn skip_or_fail(what: &str, why: &str) {
    let required = std::env::var("CONVENE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "{what} required (CONVENE_REQUIRE_BROWSER=1) but {why}"
    );
    // Straight to stderr, past the test harness's capture, so that the skip shows.
    let _ = writeln!(std::io::stderr(), "skipped: {what}: {why}");
}

/// Runs `files` (paths relative to the crate root) one at a time; `what` names them in
/// messages; `timeout` only stops a hung browser.
pub fn run(what: &str, files: &[String], timeout: Duration) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let how = "install them with `apt-get install -y chromium` and `(cd web && npm ci)`";
    if !Path::new("/usr/bin/chromium").exists() {
        return skip_or_fail(what, &format!("/usr/bin/chromium is missing: {how}"));
    }
    if !root.join("web/node_modules/playwright-core").exists() {
        return skip_or_fail(
            what,
            &format!("web/node_modules/playwright-core is missing: {how}"),
        );
    }
    let namespace_ok = Command::new("unshare")
        .args(["--net", "true"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !namespace_ok {
        return skip_or_fail(
            what,
            "`unshare --net` failed: it needs root (or CAP_SYS_ADMIN) for a loopback-only network namespace",
        );
    }
    assert!(!files.is_empty(), "{what}: no test files");
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
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {timeout:?}: killed");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(status.success(), "{what} failed: {status}");
}
