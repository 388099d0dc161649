//! The shape checks: each top-level module imports only modules of lower
//! layers (`src/lib.rs`, "Layers"), read from the `crate::` paths of every
//! source file, so no module cycle can form; and no source file outside tests
//! grows past `MAX_LINES`, so no module becomes the place everything goes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Lower numbers are lower layers; a module may import only lower numbers.
const LAYERS: &[(&str, u8)] = &[
    // Leaves.
    ("units", 0),
    ("telemetry", 0),
    ("lifecycle", 0),
    // What sluice makes of ingress-nginx's keys and snippets, as data.
    ("compat", 0),
    // Pure decisions: balancing, then the request policies that reuse its keys
    // (canary and rate-limit keys hash as `upstream-hash-by` does).
    ("balance", 1),
    ("policy", 2),
    // Protocols, pools, the HTTP/1 client, TLS to pods.
    ("upstream", 3),
    // The model.
    ("routing", 4),
    // The typed config file: read by both the sources and the pipeline.
    ("config", 5),
    // Sources -> table | request pipeline.
    ("discovery", 6),
    ("proxy", 6),
    // Wiring: the admin API and config reloads, the server that starts them,
    // the command line.
    ("admin", 7),
    ("reload", 7),
    ("server", 8),
    ("demo", 8),
    // The `sluice migrate` report: translation with the options the server uses.
    ("migrate", 8),
    ("main", 9),
];

/// Test support any module's tests may use.
const TEST_SUPPORT: &[&str] = &["fuzz"];

fn layer(module: &str) -> u8 {
    LAYERS
        .iter()
        .find(|(name, _)| *name == module)
        .map(|(_, layer)| *layer)
        .unwrap_or_else(|| panic!("module `{module}` has no layer: add it to LAYERS"))
}

/// The top-level modules `text` names through `prefix` (`crate::` or `sluice::`),
/// in plain paths and in `prefix{a, b::c}` groups.
fn imported(text: &str, prefix: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.trim_start();
        if code.starts_with("//") {
            continue;
        }
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            rest = &rest[at + prefix.len()..];
            let names: Vec<&str> = match rest.strip_prefix('{') {
                Some(group) => group
                    .split('}')
                    .next()
                    .unwrap_or_default()
                    .split(',')
                    .collect(),
                None => vec![rest],
            };
            for name in names {
                let name: String = name
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        }
    }
    found
}

fn sources(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut upward: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let top = relative.components().next().unwrap().as_os_str();
        let module = Path::new(top)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if module == "lib" || TEST_SUPPORT.contains(&module.as_str()) {
            continue;
        }
        let text = std::fs::read_to_string(file).unwrap();
        let prefix = if module == "main" {
            "sluice::"
        } else {
            "crate::"
        };
        for target in imported(&text, prefix) {
            if target == module || TEST_SUPPORT.contains(&target.as_str()) {
                continue;
            }
            if layer(&target) >= layer(&module) {
                upward
                    .entry((module.clone(), target))
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    let found: Vec<String> = upward
        .iter()
        .map(|((from, to), files)| format!("{from} -> {to} (in {files:?})"))
        .collect();
    assert!(
        found.is_empty(),
        "imports of the same or a higher layer (see LAYERS):\n{}",
        found.join("\n")
    );
}

/// Longest a source file may be, tests excluded.
const MAX_LINES: usize = 700;

#[test]
fn no_source_file_is_too_long() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut long = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if file.file_stem().is_some_and(|s| s == "tests") {
            continue;
        }
        // A file's own unit tests do not count.
        let code = text.split("\n#[cfg(test)]\nmod tests").next().unwrap_or("");
        let lines = code.lines().count();
        if lines > MAX_LINES {
            long.push(format!("{} ({lines} lines)", file.display()));
        }
    }
    assert!(
        long.is_empty(),
        "split these (over {MAX_LINES} lines outside tests):\n{}",
        long.join("\n")
    );
}

#[test]
fn imports_are_read_from_paths_and_groups() {
    let text = "use crate::routing::{Route, Backend};\nuse crate::{balance::pick, policy};\n// crate::admin in a comment\nlet x = crate::units::parse_size(\"1k\");";
    let found: Vec<String> = imported(text, "crate::").into_iter().collect();
    assert_eq!(found, ["balance", "policy", "routing", "units"]);
}
