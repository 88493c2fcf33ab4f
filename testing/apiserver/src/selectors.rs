//! Label and field selectors (`labelSelector`, `fieldSelector`), parsed from
//! the query and matched against stored objects by list, watch and
//! deleteCollection.
//!
//! Label selectors are `kube::core::Selector`s, so matching follows kube's
//! rules (`notin` and `!=` match an absent label). Their parser stays
//! hand-written: kube builds and renders selectors but has no parser for the
//! query-string form (`a=b,c in (d,e),!f`) a server must read. Field
//! selectors (`metadata.name`, `metadata.namespace` only) are not label
//! selectors and are hand-written too.

use std::collections::{BTreeMap, BTreeSet};

use kube::core::{Expression, Selector, SelectorExt};
use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone, Default)]
pub(crate) struct Selectors {
    pub(crate) labels: Selector,
    pub(crate) fields: Vec<(String, bool, String)>, // (field, equal?, value)
}

pub(crate) fn split_top_level(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => {
                depth += 1;
                cur.push(c)
            }
            ')' => {
                depth -= 1;
                cur.push(c)
            }
            ',' if depth == 0 => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    out.push(cur);
    out.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

pub(crate) fn parse_set(s: &str) -> Result<BTreeSet<String>, ApiError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: bad set {s}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

pub(crate) fn parse_label_selector(s: &str) -> Result<Selector, ApiError> {
    let mut reqs = Vec::new();
    for term in split_top_level(s) {
        let req = if let Some((k, v)) = term.split_once("!=") {
            Expression::NotEqual(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==") {
            Expression::Equal(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once('=') {
            Expression::Equal(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once(" notin ") {
            Expression::NotIn(k.trim().into(), parse_set(v)?)
        } else if let Some((k, v)) = term.split_once(" in ") {
            Expression::In(k.trim().into(), parse_set(v)?)
        } else if let Some(k) = term.strip_prefix('!') {
            Expression::DoesNotExist(k.trim().into())
        } else if term.contains(['(', ')', ' ', '<', '>']) {
            return Err(ApiError::bad_request(format!("unable to parse requirement: {term}")));
        } else {
            Expression::Exists(term)
        };
        reqs.push(req);
    }
    Ok(reqs.into_iter().collect())
}

pub(crate) fn parse_field_selector(s: &str) -> Result<Vec<(String, bool, String)>, ApiError> {
    let mut out = Vec::new();
    for term in split_top_level(s) {
        let (f, eq, v) = if let Some((f, v)) = term.split_once("!=") {
            (f, false, v)
        } else if let Some((f, v)) = term.split_once("==") {
            (f, true, v)
        } else if let Some((f, v)) = term.split_once('=') {
            (f, true, v)
        } else {
            return Err(ApiError::bad_request(format!("invalid field selector: {term}")));
        };
        let f = f.trim();
        if f != "metadata.name" && f != "metadata.namespace" {
            return Err(ApiError::bad_request(format!("field label not supported: {f}")));
        }
        out.push((f.to_string(), eq, v.trim().to_string()));
    }
    Ok(out)
}

impl Selectors {
    pub(crate) fn matches(&self, obj: &Value) -> bool {
        let labels_ok = self.labels.selects_all() || self.labels.matches(&labels_of(obj));
        labels_ok
            && self.fields.iter().all(|(f, eq, v)| {
                let actual = match f.as_str() {
                    "metadata.name" => obj["metadata"]["name"].as_str().unwrap_or(""),
                    _ => obj["metadata"]["namespace"].as_str().unwrap_or(""),
                };
                (actual == v) == *eq
            })
    }
}

/// The object's labels as kube's selectors take them; a label whose value is
/// not a string counts as absent.
fn labels_of(obj: &Value) -> BTreeMap<String, String> {
    obj["metadata"]["labels"]
        .as_object()
        .map(|l| l.iter().filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string()))).collect())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn label_selectors_match_as_the_api_server_does() {
        let obj = json!({"metadata": {"name": "a", "labels": {"app": "web", "tier": "front", "n": 1}}});
        let bare = json!({"metadata": {"name": "b"}});
        // (selector, matches obj, matches bare)
        let table = [
            ("", true, true),
            ("app=web", true, false),
            ("app==web", true, false),
            ("app!=web", false, true),
            ("app in (web, db)", true, false),
            ("app notin (web)", false, true),
            ("tier", true, false),
            ("!tier", false, true),
            ("app=web,tier=back", false, false),
            ("n", false, false), // a non-string value counts as absent
            ("!n", true, true),
        ];
        for (s, on_obj, on_bare) in table {
            let sel = Selectors { labels: parse_label_selector(s).unwrap(), fields: Vec::new() };
            assert_eq!(sel.matches(&obj), on_obj, "{s:?} on obj");
            assert_eq!(sel.matches(&bare), on_bare, "{s:?} on bare");
        }
        assert!(parse_label_selector("a b").is_err());
        assert!(parse_label_selector("a in b").is_err());
    }
}
