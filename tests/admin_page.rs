//! The admin page (`/admin`) in a real browser: `web/tests/admin/page.test.mjs` (kept out of
//! `web/tests/*.test.mjs`, which `tests/browser.rs` runs), run in Chromium as
//! `tests/support/chromium.rs` describes. Leaves a screenshot in `tests/artifacts/admin.png`.

#[path = "support/chromium.rs"]
mod chromium;

use std::time::Duration;

#[test]
fn admin_page_in_chromium() {
    // The run normally takes about 20 s.
    let files = ["web/tests/admin/page.test.mjs".to_string()];
    chromium::run("admin page test", &files, Duration::from_secs(5 * 60));
}
