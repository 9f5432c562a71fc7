//! Real-browser tests of the SDK and the demo (`web/tests/*.test.mjs`), run in Chromium as
//! `tests/support/chromium.rs` describes.

#[path = "support/chromium.rs"]
mod chromium;

use std::time::Duration;

#[test]
fn browser_tests() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(root.join("web/tests"))
        .expect("web/tests")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".test.mjs"))
        .map(|name| format!("web/tests/{name}"))
        .collect();
    files.sort();
    // The whole run normally takes about a minute.
    chromium::run("browser tests", &files, Duration::from_secs(15 * 60));
}
