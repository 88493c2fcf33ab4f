//! [`contains`]: whether a live object still holds everything the operator applied.
//!
//! Containment, not equality: the API server adds defaults (`restartPolicy`, probe
//! timings, `hostPort`…), status and metadata, and those are not drift. What is: a changed
//! value, a removed field, a list that grew or shrank, a deleted object.

use serde_json::Value;

/// Whether `live` contains `desired`: every key of a desired object is present in the live
/// one and contained in it; arrays have the same length and are contained element-wise;
/// scalars are equal. Two leniencies mirror what the server does to a faithful apply:
/// a desired `null`, `{}` or `[]` may be absent (Go's `omitempty` drops them), and
/// resource quantities compare by value (`1000m` is stored as `1`).
pub fn contains(live: &Value, desired: &Value) -> bool {
    contains_at(live, desired, false)
}

fn contains_at(live: &Value, desired: &Value, quantities: bool) -> bool {
    match (live, desired) {
        (Value::Object(live), Value::Object(desired)) => desired.iter().all(|(key, d)| match live.get(key) {
            Some(l) => contains_at(l, d, quantities || key == "limits" || key == "requests"),
            None => is_empty(d),
        }),
        (Value::Array(live), Value::Array(desired)) => {
            live.len() == desired.len() && live.iter().zip(desired).all(|(l, d)| contains_at(l, d, quantities))
        }
        (Value::String(l), Value::String(d)) if quantities && l != d => {
            matches!((quantity(l), quantity(d)), (Some(l), Some(d)) if (l - d).abs() <= 1e-9 * l.abs().max(d.abs()))
        }
        (live, desired) => live == desired,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        _ => false,
    }
}

/// The value of a Kubernetes quantity (`500m`, `1.5Gi`, `2e3`), approximately.
fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 15] = [
        ("Ki", 1024.0),
        ("Mi", 1_048_576.0),
        ("Gi", 1_073_741_824.0),
        ("Ti", 1_099_511_627_776.0),
        ("Pi", 1_125_899_906_842_624.0),
        ("Ei", 1_152_921_504_606_846_976.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let text = text.trim();
    for (suffix, factor) in SUFFIXES {
        if let Some(number) = text.strip_suffix(suffix) {
            return number.parse::<f64>().ok().map(|n| n * factor);
        }
    }
    text.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn server_additions_are_not_drift() {
        let desired = json!({"spec": {"a": 1, "list": [{"x": 1}]}});
        let live = json!({"spec": {"a": 1, "b": 2, "list": [{"x": 1, "y": 2}]}, "status": {}});
        assert!(contains(&live, &desired));
    }

    #[test]
    fn changes_and_removals_are_drift() {
        let desired = json!({"spec": {"a": 1, "list": [{"x": 1}, {"x": 2}]}});
        assert!(!contains(&json!({"spec": {"a": 2, "list": [{"x": 1}, {"x": 2}]}}), &desired));
        assert!(!contains(&json!({"spec": {"list": [{"x": 1}, {"x": 2}]}}), &desired));
        assert!(!contains(&json!({"spec": {"a": 1, "list": [{"x": 1}]}}), &desired));
        assert!(!contains(&json!({"spec": {"a": 1, "list": [{"x": 1}, {"x": 2}, {"x": 3}]}}), &desired));
        assert!(!contains(&json!({"spec": {"a": 1, "list": [{"x": 2}, {"x": 1}]}}), &desired));
        assert!(!contains(&Value::Null, &desired));
    }

    #[test]
    fn omitted_empties_are_not_drift() {
        assert!(contains(&json!({"a": 1}), &json!({"a": 1, "m": {}, "l": [], "n": null})));
        assert!(!contains(&json!({"a": 1}), &json!({"b": false})));
        assert!(!contains(&json!({"a": 1}), &json!({"b": 0})));
    }

    #[test]
    fn quantities_compare_by_value_under_resources() {
        let desired = json!({"resources": {"limits": {"cpu": "1000m", "memory": "1024Mi"}}});
        assert!(contains(&json!({"resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}), &desired));
        assert!(!contains(&json!({"resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}), &desired));
        // Elsewhere strings are strings.
        assert!(!contains(&json!({"image": "1"}), &json!({"image": "1000m"})));
        assert_eq!(quantity("1.5Gi"), Some(1.5 * 1_073_741_824.0));
        assert_eq!(quantity("2e3"), Some(2000.0));
        assert_eq!(quantity("x"), None);
    }
}
