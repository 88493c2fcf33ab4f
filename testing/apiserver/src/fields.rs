//! Server-side apply: checking an applied configuration against the URL
//! ([`check_applied`]) and simplified field ownership (`managedFields`).
//!
//! Fields are leaf paths of the JSON object: objects are descended into, lists
//! and scalars are atomic leaves (no list-map keys). Entries are stored in
//! `metadata.managedFields` in the real `FieldsV1` shape (`{"f:spec":{"f:x":{}}}`).

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use crate::error::ApiError;
use crate::store::now;
use crate::ResourceKind;

pub(crate) type Path = Vec<String>;
pub(crate) type FieldSet = BTreeSet<Path>;

const SYSTEM_METADATA: &[&str] = &[
    "name",
    "namespace",
    "generateName",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

fn leaf_paths(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, c) in m {
                prefix.push(k.clone());
                leaf_paths(c, prefix, out);
                prefix.pop();
            }
        }
        _ => {
            out.insert(prefix.clone());
        }
    }
}

/// The user-owned fields of `obj` for the main resource or the status subresource.
pub(crate) fn fields_of(obj: &Value, kind: &ResourceKind, status: bool) -> FieldSet {
    let mut out = FieldSet::new();
    let Some(m) = obj.as_object() else {
        return out;
    };
    for (k, v) in m {
        match k.as_str() {
            "apiVersion" | "kind" => {}
            "status" if kind.status_subresource && !status => {}
            _ if kind.status_subresource && status && k != "status" => {}
            "metadata" => {
                if let Some(md) = v.as_object() {
                    for (mk, mv) in md {
                        if !SYSTEM_METADATA.contains(&mk.as_str()) {
                            leaf_paths(mv, &mut vec!["metadata".into(), mk.clone()], &mut out);
                        }
                    }
                }
            }
            _ => leaf_paths(v, &mut vec![k.clone()], &mut out),
        }
    }
    out
}

pub(crate) fn get_path<'a>(v: &'a Value, p: &Path) -> Option<&'a Value> {
    p.iter().try_fold(v, |v, k| v.as_object()?.get(k))
}

fn remove_path(v: &mut Value, p: &Path) {
    let Some((last, parents)) = p.split_last() else {
        return;
    };
    let mut cur = v;
    for k in parents {
        match cur.as_object_mut().and_then(|m| m.get_mut(k)) {
            Some(c) => cur = c,
            None => return,
        }
    }
    if let Some(m) = cur.as_object_mut() {
        m.remove(last);
    }
}

fn overlaps(a: &Path, b: &Path) -> bool {
    a.starts_with(b) || b.starts_with(a)
}

fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = Map::new();
    for p in set {
        let mut cur = &mut root;
        for k in p {
            cur = cur.entry(format!("f:{k}")).or_insert_with(|| json!({})).as_object_mut().expect("object");
        }
    }
    Value::Object(root)
}

fn from_fields_v1(v: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(m) = v.as_object() else {
        return;
    };
    let mut any = false;
    for (k, c) in m {
        if let Some(k) = k.strip_prefix("f:") {
            any = true;
            prefix.push(k.to_string());
            from_fields_v1(c, prefix, out);
            prefix.pop();
        }
    }
    if !any && !prefix.is_empty() {
        out.insert(prefix.clone());
    }
}

pub(crate) struct Entry {
    manager: String,
    operation: String,
    subresource: String,
    api_version: String,
    time: Value,
    set: FieldSet,
}

pub(crate) fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    let mut set = FieldSet::new();
                    from_fields_v1(&e["fieldsV1"], &mut Vec::new(), &mut set);
                    Entry {
                        manager: e["manager"].as_str().unwrap_or("").into(),
                        operation: e["operation"].as_str().unwrap_or("").into(),
                        subresource: e["subresource"].as_str().unwrap_or("").into(),
                        api_version: e["apiVersion"].as_str().unwrap_or("").into(),
                        time: e["time"].clone(),
                        set,
                    }
                })
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn write_entries(obj: &mut Value, entries: Vec<Entry>) {
    let arr: Vec<Value> = entries
        .into_iter()
        .filter(|e| !e.set.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": to_fields_v1(&e.set),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = json!(e.subresource);
            }
            v
        })
        .collect();
    if arr.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(arr);
    }
}

/// Gives `manager` (operation `op`) ownership of `set` in `obj` and takes the
/// fields whose value changed between `old` and `obj` away from other managers.
fn assign(
    old: Option<&Value>,
    obj: &mut Value,
    kind: &ResourceKind,
    manager: &str,
    op: &str,
    status: bool,
    set: FieldSet,
) {
    let replace = op == "Apply";
    let sub = if status { "status" } else { "" };
    let mut es = entries(obj);
    let changed = |q: &Path, obj: &Value| old.and_then(|o| get_path(o, q)) != get_path(obj, q);
    for e in es.iter_mut() {
        if e.manager == manager && e.operation == op && e.subresource == sub {
            continue;
        }
        let snapshot = obj.clone();
        e.set.retain(|q| !(set.iter().any(|p| overlaps(p, q)) && changed(q, &snapshot)));
        // Fields that no longer exist are owned by nobody.
        e.set.retain(|q| get_path(&snapshot, q).is_some());
    }
    let time = json!(now());
    match es.iter_mut().find(|e| e.manager == manager && e.operation == op && e.subresource == sub) {
        Some(e) => {
            let new_set = if replace { set } else { e.set.union(&set).cloned().collect() };
            if new_set != e.set {
                e.time = time;
            }
            e.set = new_set;
            e.set.retain(|q| get_path(obj, q).is_some());
        }
        None => es.push(Entry {
            manager: manager.into(),
            operation: op.into(),
            subresource: sub.into(),
            api_version: kind.api_version(),
            time,
            set: set.into_iter().filter(|q| get_path(obj, q).is_some()).collect(),
        }),
    }
    write_entries(obj, es);
}

/// Records an Update operation by `manager` that turned `old` into `new`.
pub(crate) fn track_update(kind: &ResourceKind, old: Option<&Value>, new: &mut Value, manager: &str, status: bool) {
    let before = old.map(|o| fields_of(o, kind, status)).unwrap_or_default();
    let after = fields_of(new, kind, status);
    let changed: FieldSet =
        before.union(&after).filter(|p| old.and_then(|o| get_path(o, p)) != get_path(new, p)).cloned().collect();
    if changed.is_empty() {
        return;
    }
    assign(old, new, kind, manager, "Update", status, changed);
}

/// Server-side apply of `applied` by `manager` onto `old` (which exists).
pub(crate) fn apply(
    kind: &ResourceKind,
    old: &Value,
    applied: &Value,
    manager: &str,
    force: bool,
    status: bool,
) -> Result<Value, ApiError> {
    let sub = if status { "status" } else { "" };
    let set = fields_of(applied, kind, status);
    let es = entries(old);
    if !force {
        let mut conflicts = Vec::new();
        for p in &set {
            let value = get_path(applied, p);
            // Unchanged values and empty maps (which merge to nothing) never conflict.
            if value == get_path(old, p) || value.is_some_and(|v| v.as_object().is_some_and(|m| m.is_empty())) {
                continue;
            }
            // An owned map (an empty-map leaf) does not conflict with its members.
            let clashes =
                |q: &Path| q.starts_with(p) || (p.starts_with(q) && !get_path(old, q).is_some_and(Value::is_object));
            for e in es.iter().filter(|e| e.manager != manager) {
                if e.set.iter().any(clashes) {
                    conflicts.push(format!("conflict with \"{}\": .{}", e.manager, p.join(".")));
                }
            }
        }
        if !conflicts.is_empty() {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts.join("\n")
                ),
            )
            .with_details(kind, old["metadata"]["name"].as_str().unwrap_or("")));
        }
    }
    let mut merged = old.clone();
    // Fields this manager applied before but not now, owned by nobody else, are removed.
    if let Some(prev) = es.iter().find(|e| e.manager == manager && e.operation == "Apply" && e.subresource == sub) {
        for p in prev.set.difference(&set) {
            let others = es
                .iter()
                .filter(|e| !(e.manager == manager && e.operation == "Apply" && e.subresource == sub))
                .any(|e| e.set.iter().any(|q| overlaps(p, q)));
            if !others {
                remove_path(&mut merged, p);
            }
        }
    }
    let mut patch = applied.clone();
    if let Some(m) = patch["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    json_patch::merge(&mut merged, &patch);
    assign(Some(old), &mut merged, kind, manager, "Apply", status, set);
    Ok(merged)
}

/// Records an Apply that created the object.
pub(crate) fn track_apply_create(kind: &ResourceKind, obj: &mut Value, manager: &str) {
    let set = fields_of(obj, kind, false);
    if let Some(m) = obj["metadata"].as_object_mut() {
        m.remove("managedFields");
    }
    assign(None, obj, kind, manager, "Apply", false, set);
}

/// The applied configuration with `metadata.name` set from the URL; 400 when it
/// is not an object or names another kind or object.
pub(crate) fn check_applied(applied: &Value, kind: &ResourceKind, name: &str) -> Result<Value, ApiError> {
    if !applied.is_object() {
        return Err(ApiError::bad_request("applied configuration must be an object"));
    }
    if applied["apiVersion"].as_str() != Some(&kind.api_version()) || applied["kind"].as_str() != Some(&kind.kind) {
        return Err(ApiError::bad_request(format!(
            "apply configuration must have apiVersion {} and kind {}",
            kind.api_version(),
            kind.kind
        )));
    }
    if let Some(n) = applied["metadata"]["name"].as_str() {
        if n != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({name})"
            )));
        }
    }
    let mut a = applied.clone();
    if !a["metadata"].is_object() {
        a["metadata"] = json!({});
    }
    a["metadata"]["name"] = json!(name);
    Ok(a)
}
