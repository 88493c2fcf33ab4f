//! Label and field selectors (`labelSelector`, `fieldSelector`), parsed from
//! the query and matched against stored objects by list, watch and
//! deleteCollection.
//!
//! The label-selector grammar is hand-written. `kube::core::Selector` does not
//! replace it: kube's `Selector` builds and renders selectors (from
//! `LabelSelector` or `Expression`s) and matches them against labels, but has
//! no parser for the query-string form (`a=b,c in (d,e),!f`) the server must
//! read, and field selectors are not label selectors at all.

use serde_json::Value;

use crate::error::ApiError;

#[derive(Debug, Clone)]
pub(crate) enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Selectors {
    pub(crate) labels: Vec<LabelReq>,
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

pub(crate) fn parse_set(s: &str) -> Result<Vec<String>, ApiError> {
    let s = s.trim();
    let inner = s
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: bad set {s}")))?;
    Ok(inner.split(',').map(|v| v.trim().to_string()).filter(|v| !v.is_empty()).collect())
}

pub(crate) fn parse_label_selector(s: &str) -> Result<Vec<LabelReq>, ApiError> {
    let mut reqs = Vec::new();
    for term in split_top_level(s) {
        let req = if let Some((k, v)) = term.split_once("!=") {
            LabelReq::Ne(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once("==") {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once('=') {
            LabelReq::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = term.split_once(" notin ") {
            LabelReq::NotIn(k.trim().into(), parse_set(v)?)
        } else if let Some((k, v)) = term.split_once(" in ") {
            LabelReq::In(k.trim().into(), parse_set(v)?)
        } else if let Some(k) = term.strip_prefix('!') {
            LabelReq::NotExists(k.trim().into())
        } else if term.contains(['(', ')', ' ', '<', '>']) {
            return Err(ApiError::bad_request(format!("unable to parse requirement: {term}")));
        } else {
            LabelReq::Exists(term)
        };
        reqs.push(req);
    }
    Ok(reqs)
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
        let labels = obj["metadata"]["labels"].as_object();
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(|v| v.as_str());
        let labels_ok = self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| !vs.iter().any(|v| v == l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
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
