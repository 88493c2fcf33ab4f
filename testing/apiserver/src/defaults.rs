//! A small part of the real API server's defaulting, for the built-in kinds
//! the operator manages, so that drift detection written against the double
//! also survives a real server (which fills these fields in).

use serde_json::{json, Value};

use crate::ResourceKind;

fn set_default(obj: &mut Value, key: &str, value: Value) {
    if let Some(m) = obj.as_object_mut() {
        m.entry(key.to_string()).or_insert(value);
    }
}

fn default_container(c: &mut Value) {
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    let image = c["image"].as_str().unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or("");
    let pull = if image.contains('@') {
        "IfNotPresent"
    } else {
        match last.split_once(':') {
            Some((_, tag)) if tag != "latest" => "IfNotPresent",
            _ => "Always",
        }
    };
    set_default(c, "imagePullPolicy", json!(pull));
    if let Some(ports) = c["ports"].as_array_mut() {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    if c.get("resources").is_none() {
        c["resources"] = json!({});
    }
}

fn default_pod_spec(spec: &mut Value) {
    if !spec.is_object() {
        return;
    }
    set_default(spec, "restartPolicy", json!("Always"));
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "securityContext", json!({}));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec[list].as_array_mut() {
            for c in cs {
                default_container(c);
            }
        }
    }
}

/// Fills in defaults the real server would, for the kinds it knows.
pub(crate) fn apply(kind: &ResourceKind, obj: &mut Value) {
    match (kind.group.as_str(), kind.kind.as_str()) {
        ("apps", "DaemonSet") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(
                spec,
                "updateStrategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}}),
            );
            default_pod_spec(&mut spec["template"]["spec"]);
        }
        ("apps", "Deployment") => {
            let spec = &mut obj["spec"];
            if !spec.is_object() {
                return;
            }
            set_default(spec, "replicas", json!(1));
            set_default(spec, "revisionHistoryLimit", json!(10));
            set_default(spec, "progressDeadlineSeconds", json!(600));
            set_default(
                spec,
                "strategy",
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            default_pod_spec(&mut spec["template"]["spec"]);
        }
        ("", "Pod") => default_pod_spec(&mut obj["spec"]),
        _ => {}
    }
}
