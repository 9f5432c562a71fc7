//! Real-browser tests (`web/tests/*.test.mjs`): Debian's Chromium driven by playwright-core,
//! against the real binary, inside a network namespace that has only loopback (traffic to
//! other addresses is forbidden on these machines; see `web/tests/harness.mjs`).
//!
//! Without Chromium or the npm packages the test says how to install them and passes as
//! skipped, unless `CONVENE_REQUIRE_BROWSER=1`, when it fails.

use std::path::Path;
use std::process::Command;

#[test]
fn browser_tests() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let chromium = Path::new("/usr/bin/chromium");
    let playwright = root.join("web/node_modules/playwright-core");
    if !chromium.exists() || !playwright.exists() {
        let required = std::env::var("CONVENE_REQUIRE_BROWSER").is_ok_and(|v| v == "1");
        let how = "apt-get install -y chromium && (cd web && npm ci)";
        assert!(
            !required,
            "browser tests required (CONVENE_REQUIRE_BROWSER=1) but not installed: {how}"
        );
        eprintln!("skipped: browser tests need Chromium and playwright-core: {how}");
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
    let script = format!(
        "ip link set lo up && exec node --test --test-concurrency=1 {}",
        files.join(" ")
    );
    let status = Command::new("unshare")
        .args(["--net", "sh", "-c", &script])
        .current_dir(root)
        .env("CONVENE_BIN", env!("CARGO_BIN_EXE_convene"))
        .status()
        .expect("run unshare (root is needed for a network namespace)");
    assert!(status.success(), "browser tests failed: {status}");
}
