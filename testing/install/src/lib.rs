//! Helpers of weir's install tests (`tests/`): where the repository is, where helm is, how
//! the chart renders, and how a YAML stream splits into JSON documents.
//!
//! The tests need `helm` for everything that renders the chart; without it they print
//! `SKIPPED (needs helm: scripts/helm.sh)` and pass, so that a machine without helm still
//! runs the rest. CI installs helm with `scripts/helm.sh` first.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// The namespace the tests install into (the one `deploy/weir.yaml` uses).
pub const NAMESPACE: &str = "weir-system";

/// The repository's root directory.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("the repository root exists")
}

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    repo_root().join("charts/weir")
}

/// The values files of `charts/weir/ci/`, sorted.
pub fn ci_values() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(chart_dir().join("ci"))
        .expect("charts/weir/ci exists")
        .map(|e| e.expect("read charts/weir/ci").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "charts/weir/ci holds no values files");
    files
}

/// The helm binary: `$HELM`, else `helm` on PATH, else `/usr/local/bin/helm` (where
/// `scripts/helm.sh` installs it).
pub fn helm() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("HELM").map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(path);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).map(|dir| dir.join("helm")).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path.into_iter().chain([PathBuf::from("/usr/local/bin/helm")]).find(|p| p.is_file())
}

/// helm, or `None` after saying loudly that `test` is skipped.
pub fn helm_or_skip(test: &str) -> Option<PathBuf> {
    let found = helm();
    if found.is_none() {
        eprintln!("SKIPPED (needs helm: scripts/helm.sh): {test}");
    }
    found
}

/// `helm template weir charts/weir --namespace weir-system <args>`: the rendered stream, or
/// helm's error output.
pub fn template(helm: &Path, args: &[&str]) -> Result<String, String> {
    let out = Command::new(helm)
        .args(["template", "weir"])
        .arg(chart_dir())
        .args(["--namespace", NAMESPACE])
        .args(args)
        .output()
        .expect("run helm");
    if out.status.success() {
        Ok(String::from_utf8(out.stdout).expect("helm writes UTF-8"))
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Every non-empty document of a YAML stream, as JSON.
pub fn documents(stream: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(stream)
        .map(|doc| {
            let value: serde_yaml::Value =
                serde::Deserialize::deserialize(doc).unwrap_or_else(|e| panic!("a rendered document is not YAML: {e}"));
            serde_json::to_value(value).expect("YAML maps to JSON")
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// `value` with every number as a float: YAML and Go's templates turn `65535.0` into `65535`
/// and k8s-openapi turns it back, so numbers compare by value, not by representation.
pub fn normalize_numbers(value: &Value) -> Value {
    match value {
        Value::Number(n) => n.as_f64().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.iter().map(normalize_numbers).collect()),
        Value::Object(map) => Value::Object(map.iter().map(|(k, v)| (k.clone(), normalize_numbers(v))).collect()),
        other => other.clone(),
    }
}

/// The first place where `a` and `b` differ, as a JSON path, or `None` when they are equal.
pub fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for key in x.keys().chain(y.keys()) {
                let here = format!("{path}.{key}");
                match (x.get(key), y.get(key)) {
                    (Some(l), Some(r)) => {
                        if let Some(d) = first_difference(l, r, &here) {
                            return Some(d);
                        }
                    }
                    (l, r) => return Some(format!("{here}: {l:?} vs {r:?}")),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            x.iter().zip(y).enumerate().find_map(|(i, (l, r))| first_difference(l, r, &format!("{path}[{i}]")))
        }
        _ if a == b => None,
        _ => Some(format!("{path}: {a} vs {b}")),
    }
}

/// The documents of `docs` of one kind.
pub fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

/// The one document of `kind` named `name`.
pub fn named<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    let found: Vec<_> = docs.iter().filter(|d| d["kind"] == kind && d["metadata"]["name"] == name).collect();
    assert_eq!(found.len(), 1, "expected one {kind} {name}, found {}", found.len());
    found[0]
}
