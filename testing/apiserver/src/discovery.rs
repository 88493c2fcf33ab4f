//! Discovery documents: `/apis` (`APIGroupList`) and `/api/v1`,
//! `/apis/{group}/{version}` (`APIResourceList`) from the registered kinds.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::store::Shared;

pub(crate) fn api_group_list(shared: &Shared) -> Value {
    let st = shared.lock();
    let mut groups: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for k in st.kinds.values().filter(|k| !k.group.is_empty()) {
        let v = groups.entry(k.group.clone()).or_default();
        if !v.contains(&k.version) {
            v.push(k.version.clone());
        }
    }
    let groups: Vec<Value> = groups
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions, "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

pub(crate) fn api_resource_list(shared: &Shared, group: &str, version: &str) -> Value {
    let st = shared.lock();
    let mut resources = Vec::new();
    for k in st.kinds.values().filter(|k| k.group == group && k.version == version) {
        resources.push(json!({
            "name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced,
            "kind": k.kind,
            "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
        }));
        if k.status_subresource {
            resources.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}
