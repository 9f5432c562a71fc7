//! The repository stands alone: no file points to documents outside it, and every relative
//! link of a Markdown file leads to a file of the repository.

use std::path::{Path, PathBuf};

/// Directories that are not the project's own text.
const SKIP: [&str; 4] = ["target", "node_modules", ".git", "artifacts"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            if !SKIP.contains(&name.as_str()) {
                files(&path, out);
            }
        } else {
            out.push(path);
        }
    }
}

/// The repository's text files, with their contents.
fn texts() -> Vec<(PathBuf, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    files(root, &mut all);
    all.into_iter()
        .filter_map(|p| {
            let text = String::from_utf8(std::fs::read(&p).ok()?).ok()?;
            Some((p, text))
        })
        .collect()
}

#[test]
fn nothing_points_to_the_shared_folder_outside_the_repository() {
    // Built from parts, so that this file does not name what it looks for.
    let needle = ["shared", "/"].concat();
    let mut found = Vec::new();
    for (path, text) in texts() {
        for (n, line) in text.lines().enumerate() {
            let hit = line.match_indices(&needle).any(|(i, _)| {
                // A path of its own, not the end of a longer word.
                !line[..i]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '-')
            });
            if hit {
                found.push(format!("{}:{}: {line}", path.display(), n + 1));
            }
        }
    }
    assert!(
        found.is_empty(),
        "links out of the repository:\n{}",
        found.join("\n")
    );
}

#[test]
fn markdown_links_lead_to_files_of_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .canonicalize()
        .unwrap();
    let mut checked = 0;
    let mut broken = Vec::new();
    for (path, text) in texts() {
        if path.extension().is_none_or(|e| e != "md") {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            for target in line
                .split("](")
                .skip(1)
                .filter_map(|rest| rest.split(')').next())
            {
                let target = target.split('#').next().unwrap().trim();
                if target.is_empty() || target.contains("://") || target.starts_with("mailto:") {
                    continue;
                }
                checked += 1;
                let resolved = path.parent().unwrap().join(target).canonicalize();
                if !resolved.is_ok_and(|p| p.starts_with(&root)) {
                    broken.push(format!("{}:{}: {target}", path.display(), n + 1));
                }
            }
        }
    }
    assert!(
        checked > 10,
        "only {checked} links found: is the parsing right?"
    );
    assert!(
        broken.is_empty(),
        "links that leave the repository or lead nowhere:\n{}",
        broken.join("\n")
    );
}
