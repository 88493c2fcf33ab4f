//! The agent's modules point one way: `server` → `api`, `cluster`,
//! `metrics` → `probing` → `handles`, `prober` → `dataplane` → `error`,
//! `schemas` (see `src/handles.rs`). This test reads the sources and fails when a module
//! names one above it (`crate::api` from `cluster`, `crate::dataplane` from
//! `error`, ...).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each module (a file or a folder of src/) and the top-level modules it must not name.
const RULES: &[(&str, &[&str])] = &[
    ("error", &["dataplane", "handles", "api", "cluster", "metrics", "server"]),
    ("schemas", &["dataplane", "handles", "api", "cluster", "metrics", "server"]),
    ("dataplane", &["handles", "api", "cluster", "metrics", "server"]),
    ("handles", &["api", "cluster", "metrics", "server"]),
    ("api", &["cluster", "metrics", "server"]),
    ("cluster", &["api", "metrics", "server"]),
    ("metrics", &["api", "cluster", "server"]),
    ("prober", &["handles", "api", "cluster", "metrics", "server", "probing"]),
    ("probing", &["api", "cluster", "metrics", "server"]),
];

fn sources(module: &str) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    let file = src.join(format!("{module}.rs"));
    if file.exists() {
        files.push(file);
    }
    let mut dirs = vec![src.join(module)];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.map(|e| e.unwrap().path()) {
            if entry.is_dir() {
                dirs.push(entry);
            } else if entry.extension().is_some_and(|e| e == "rs") {
                files.push(entry);
            }
        }
    }
    assert!(!files.is_empty(), "no sources for module {module}");
    files
}

/// The top-level modules `text` names as `crate::m` or `crate::{m, ...}`.
fn named_modules(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (at, _) in text.match_indices("crate::") {
        let rest = &text[at + "crate::".len()..];
        let heads: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => group[..group.find('}').unwrap_or(group.len())].split(',').collect(),
            None => vec![rest],
        };
        for head in heads {
            let name: String = head.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            names.insert(name);
        }
    }
    names
}

#[test]
fn modules_name_only_the_layers_below_them() {
    let mut violations = Vec::new();
    for (module, forbidden) in RULES {
        for file in sources(module) {
            let text = std::fs::read_to_string(&file).unwrap();
            for name in named_modules(&text) {
                if forbidden.contains(&name.as_str()) {
                    violations.push(format!("{} names crate::{name}", file.display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "layering violations:\n{}", violations.join("\n"));
}

#[test]
fn the_scan_finds_grouped_and_plain_paths() {
    let text = "use crate::api::ApiState;\nuse crate::{cluster, dataplane::Balancer};\nlet x = crate::metrics::x();";
    let want: BTreeSet<String> = ["api", "cluster", "dataplane", "metrics"].map(String::from).into();
    assert_eq!(named_modules(text), want);
}
