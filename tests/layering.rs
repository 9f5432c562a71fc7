//! Layers import downward only (the rule is in ARCHITECTURE.md, "Layers"). This test reads
//! every `crate::` path in `src/` (in `use` lines, grouped `use crate::{...}` included, and
//! in code) and fails on an import of a module that is not below the importing one,
//! printing the file and line.

use std::path::Path;

/// The top-level modules of `src/`, bottom up. A module may import the modules of lower
/// rows, never those of its own row or higher ones. `lib.rs` and `main.rs` sit on top.
const LAYERS: &[&[&str]] = &[
    // Leaves that import nothing of the crate.
    &["config", "token", "metrics"],
    // The record types and domain errors that every layer shares.
    &["model"],
    // The error table (it maps the domain errors), list cursors.
    &["error", "paging"],
    // API keys, logging and the request middleware; the HTTP and socket guards: request
    // body deadlines, request head limits, WebSocket frame limits and pending-socket caps.
    &["auth", "telemetry", "body", "heads", "wsguard"],
    &["store"],
    // The SFU media plane (str0m): rooms tell it who takes part; it knows no room rules.
    &["media"],
    &["room"],
    // Session task and wire protocol.
    &["signaling"],
    // The admin event hub and stream task (they use signaling's wire errors and codes);
    // the webhook dispatcher (a room observer, over the store's outbox).
    &["admin", "webhooks"],
    // Every HTTP handler, the two WebSocket `connect`s, `AppState`.
    &["api"],
    &["startup"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|row| row.contains(&module))
}

/// The top-level modules that a line names after `crate::` (for `crate::{a::X, b}`, the
/// group may span the following lines, which `rest` gives).
fn imported<'a>(line: &str, rest: impl Iterator<Item = &'a str>) -> Vec<String> {
    let mut found = Vec::new();
    let mut text = line.to_string();
    if text.contains("crate::{") {
        // Take the group whole, up to its closing brace.
        let depth = |t: &str| t.matches('{').count() as i64 - t.matches('}').count() as i64;
        let mut rest = rest;
        while depth(&text[text.find("crate::{").unwrap()..]) > 0 {
            match rest.next() {
                Some(next) => text.push_str(next),
                None => break,
            }
        }
    }
    let mut from = 0;
    while let Some(at) = text[from..].find("crate::") {
        let start = from + at + "crate::".len();
        from = start;
        // `convene::crate::` does not exist; `$crate::` (macros) is not ours to check.
        let before = &text[..start - "crate::".len()];
        if before.ends_with('$') || before.ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let tail = &text[start..];
        if let Some(group) = tail.strip_prefix('{') {
            let mut depth = 0;
            let mut item_start = true;
            let mut word = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        item_start = true;
                        continue;
                    }
                    _ => {}
                }
                if item_start && depth == 0 {
                    if c.is_alphanumeric() || c == '_' {
                        word.push(c);
                        continue;
                    }
                    if !word.is_empty() {
                        found.push(std::mem::take(&mut word));
                        item_start = false;
                    }
                }
            }
            if !word.is_empty() {
                found.push(word);
            }
        } else {
            let name: String = tail
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// Every import against the rule in one file of `src/` (`path` relative to `src/`).
fn violations(path: &str, text: &str) -> Vec<String> {
    let module = path
        .split('/')
        .next()
        .unwrap_or(path)
        .trim_end_matches(".rs");
    if module == "lib" || module == "main" {
        return Vec::new();
    }
    let Some(own) = layer(module) else {
        return vec![format!(
            "src/{path}: module `{module}` has no layer in tests/layering.rs"
        )];
    };
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        for target in imported(line, lines[i + 1..].iter().copied()) {
            if target == module || target == "self" {
                continue;
            }
            match layer(&target) {
                Some(l) if l < own => {}
                _ => found.push(format!(
                    "src/{path}:{}: `{module}` imports `{target}`, which is not below it: {}",
                    i + 1,
                    line.trim()
                )),
            }
        }
        // Nothing below `api` names the handlers' state.
        if line.contains("AppState") && own < layer("api").unwrap() {
            found.push(format!(
                "src/{path}:{}: `{module}` names `AppState`, which only `api` and above may",
                i + 1
            ));
        }
    }
    found
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, root, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let relative = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            out.push((relative, std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn every_import_in_src_goes_down_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&root, &root, &mut files);
    assert!(files.len() > 20, "src/ has {} files", files.len());
    let found: Vec<String> = files
        .iter()
        .flat_map(|(path, text)| violations(path, text))
        .collect();
    assert!(
        found.is_empty(),
        "imports against the layering rule:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_checker_finds_upward_and_sideways_imports() {
    // Upward, in a `use` line.
    let found = violations(
        "store/mod.rs",
        "use std::fmt;\nuse crate::room::RoomRecord;\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("src/store/mod.rs:2:"), "{found:?}");
    // Upward, in a group that spans lines.
    let found = violations(
        "room/actor.rs",
        "use crate::{\n    model::Limits,\n    admin::events::Events,\n};\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].contains("imports `admin`"), "{found:?}");
    // Upward, as a path in code.
    let found = violations(
        "room/state.rs",
        "fn f() -> u16 {\n    crate::signaling::protocol::close::NORMAL\n}\n",
    );
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(found[0].starts_with("src/room/state.rs:2:"), "{found:?}");
    // Sideways, within one row.
    assert_eq!(
        violations("error.rs", "use crate::paging::PageTokens;").len(),
        1
    );
    // `AppState` below `api`.
    assert_eq!(
        violations("signaling/mod.rs", "fn f(state: &AppState) {}").len(),
        1
    );
    // A module without a layer.
    assert_eq!(violations("newthing.rs", "").len(), 1);
}

#[test]
fn the_checker_lets_downward_imports_and_comments_pass() {
    let text = "use crate::model::{Cursor, RoomRecord};\nuse crate::{metrics::METRICS, model::now_ms};\n// crate::api::AppState in a comment\nlet x = crate::model::now_ms();\nuse super::Cursor;\n";
    assert_eq!(violations("store/redis.rs", text), Vec::<String>::new());
    assert_eq!(
        violations(
            "api/rooms.rs",
            "use crate::room::Rooms;\nuse super::AppState;"
        ),
        Vec::<String>::new()
    );
}
