//! The admin page (`/admin`) in a real browser: `web/tests/admin/page.test.mjs`, Debian's
//! Chromium driven by playwright-core, against the real binary, inside a network namespace
//! that has only loopback (as `tests/browser.rs` runs the SDK tests). Leaves a screenshot in
//! `tests/artifacts/admin.png`.
//!
//! Without Chromium or the npm packages the test says how to install them and passes as
//! skipped, unless `CONVENE_REQUIRE_BROWSER=1`, when it fails.

use std::path::Path;
use std::process::Command;

#[test]
fn admin_page_in_chromium() {
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
        eprintln!("skipped: the admin page test needs Chromium and playwright-core: {how}");
        return;
    }
    let status = Command::new("unshare")
        .args([
            "--net",
            "sh",
            "-c",
            "ip link set lo up && exec node --test --test-concurrency=1 web/tests/admin/page.test.mjs",
        ])
        .current_dir(root)
        .env("CONVENE_BIN", env!("CARGO_BIN_EXE_convene"))
        .status()
        .expect("run unshare (root is needed for a network namespace)");
    assert!(status.success(), "admin page test failed: {status}");
}
