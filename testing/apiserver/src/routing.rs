//! Routing: the HTTP entry point. Parses the path into a kind, namespace and
//! name, and serves get, list (selectors, pagination), create, replace, patch
//! (merge, JSON, strategic, server-side apply), delete and deleteCollection
//! against the [`crate::store`]; watches are handed to [`crate::watch`] and
//! discovery paths to [`crate::discovery`].

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::discovery::{api_group_list, api_resource_list};
use crate::error::{json_response, qualified, ApiError};
use crate::selectors::{parse_field_selector, parse_label_selector, Selectors};
use crate::store::{broadcast_last, ObjKey, Part, Shared, WriteGuard};
use crate::watch::watch;
use crate::{fields, requests, ResourceKind};

pub(crate) fn present(o: &Value, meta_only: bool) -> Value {
    if meta_only {
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": o["metadata"]})
    } else {
        o.clone()
    }
}

pub(crate) fn encode_continue(rv: u64, (ns, name): &ObjKey) -> String {
    let raw = serde_json::to_vec(&json!({"rv": rv, "ns": ns, "name": name})).unwrap_or_default();
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn decode_continue(c: &str) -> Result<(u64, ObjKey), ApiError> {
    let bad = || ApiError::bad_request("continue key is not valid");
    if !c.len().is_multiple_of(2) || !c.is_ascii() {
        return Err(bad());
    }
    let bytes = (0..c.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&c[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    let rv = v["rv"].as_u64().ok_or_else(bad)?;
    Ok((rv, (v["ns"].as_str().ok_or_else(bad)?.to_string(), v["name"].as_str().ok_or_else(bad)?.to_string())))
}

pub(crate) struct Target {
    pub(crate) kind: ResourceKind,
    pub(crate) namespace: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) status: bool,
}

pub(crate) fn query_map(uri: &Uri) -> HashMap<String, String> {
    let mut m = HashMap::new();
    for pair in uri.query().unwrap_or("").split('&').filter(|s| !s.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        m.insert(percent_decode(k), percent_decode(v));
    }
    m
}

pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("zz");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub(crate) async fn handle(shared: Arc<Shared>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    requests::record(&shared, &method, &uri, &headers);
    if let Some(err) = requests::take_fault(&shared, &method, &uri) {
        return err.into_response();
    }
    match route(shared, method, uri, headers, body).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

pub(crate) async fn route(
    shared: Arc<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let segs: Vec<String> = uri.path().split('/').filter(|s| !s.is_empty()).map(percent_decode).collect();
    let segs: Vec<&str> = segs.iter().map(|s| s.as_str()).collect();
    let (group, version, rest): (&str, &str, &[&str]) = match segs.as_slice() {
        ["version"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"major": "1", "minor": "33", "gitVersion": "v1.33.0-weir-apiserver-double",
                    "gitCommit": "", "gitTreeState": "clean", "buildDate": "", "goVersion": "",
                    "compiler": "", "platform": "linux/amd64"}),
            ))
        }
        ["api"] => {
            return Ok(json_response(
                StatusCode::OK,
                &json!({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []}),
            ))
        }
        ["apis"] => return Ok(json_response(StatusCode::OK, &api_group_list(&shared))),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource")),
    };
    if rest.is_empty() {
        return Ok(json_response(StatusCode::OK, &api_resource_list(&shared, group, version)));
    }
    let (namespace, rest) =
        if rest[0] == "namespaces" && rest.len() >= 3 && rest[2] != "status" && rest[2] != "finalize" {
            (Some(rest[1].to_string()), &rest[2..])
        } else {
            (None, rest)
        };
    let kind = shared
        .lock()
        .kinds
        .get(&(group.to_string(), version.to_string(), rest[0].to_string()))
        .cloned()
        .ok_or_else(|| ApiError::new(404, "NotFound", "the server could not find the requested resource"))?;
    if namespace.is_some() && !kind.namespaced {
        return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    let target = Target {
        namespace,
        name: rest.get(1).map(|s| s.to_string()),
        status: match rest.get(2) {
            None => false,
            Some(&"status") if kind.status_subresource => true,
            Some(_) => return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource")),
        },
        kind,
    };
    if rest.len() > 3 {
        return Err(ApiError::new(404, "NotFound", "the server could not find the requested resource"));
    }
    let q = query_map(&uri);
    if target.name.is_none() && target.kind.namespaced && target.namespace.is_none() && method != Method::GET {
        return Err(ApiError::new(405, "MethodNotAllowed", "namespace required"));
    }
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let ns = target.namespace.as_deref();
    let kind = &target.kind;
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    let meta_only =
        headers.get("accept").and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("as=PartialObjectMetadata"));
    // The manager of non-apply writes: `fieldManager`, else the user agent's
    // product name, like the real server.
    let manager = q.get("fieldManager").filter(|m| !m.is_empty()).cloned().unwrap_or_else(|| {
        headers
            .get("user-agent")
            .and_then(|v| v.to_str().ok())
            .and_then(|ua| ua.split('/').next())
            .filter(|s| !s.is_empty())
            .unwrap_or("unknown")
            .to_string()
    });
    match (&method, &target.name) {
        (&Method::GET, None) => {
            let sel = Selectors {
                labels: parse_label_selector(q.get("labelSelector").map(|s| s.as_str()).unwrap_or(""))?,
                fields: parse_field_selector(q.get("fieldSelector").map(|s| s.as_str()).unwrap_or(""))?,
            };
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(shared, target, sel, q, meta_only);
            }
            let st = shared.lock();
            // Pagination: the continue token carries the list's resourceVersion
            // and the last key; every page reports the first page's
            // resourceVersion, so a watch from it replays whatever changed while
            // paging (the pages themselves are read from current state).
            let (list_rv, after) = match q.get("continue").filter(|c| !c.is_empty()) {
                Some(c) => {
                    let (rv, key) = decode_continue(c)?;
                    if rv < st.compacted {
                        return Err(ApiError::new(
                            410,
                            "Expired",
                            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                        ));
                    }
                    (rv, Some(key))
                }
                None => (st.rv, None),
            };
            let limit = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0);
            let matching: Vec<(&ObjKey, &Value)> = st
                .objects
                .get(&kind.key())
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| after.as_ref().is_none_or(|a| *k > a))
                        .filter(|((o_ns, _), o)| ns.is_none_or(|n| n == o_ns) && sel.matches(o))
                        .collect()
                })
                .unwrap_or_default();
            let mut metadata = json!({"resourceVersion": list_rv.to_string()});
            let page = match limit {
                Some(l) if matching.len() > l => {
                    let last = matching[l - 1].0;
                    metadata["continue"] = json!(encode_continue(list_rv, last));
                    metadata["remainingItemCount"] = json!(matching.len() - l);
                    &matching[..l]
                }
                _ => &matching[..],
            };
            let items: Vec<Value> = page.iter().map(|(_, o)| present(o, meta_only)).collect();
            let (api_version, list_kind) = if meta_only {
                ("meta.k8s.io/v1".to_string(), "PartialObjectMetadataList".to_string())
            } else {
                (kind.api_version(), format!("{}List", kind.kind))
            };
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": api_version,
                    "kind": list_kind,
                    "metadata": metadata,
                    "items": items,
                }),
            ))
        }
        (&Method::GET, Some(name)) => {
            let st = shared.lock();
            let obj = st.get_obj(kind, ns, name).ok_or_else(|| ApiError::not_found(kind, name))?;
            Ok(json_response(StatusCode::OK, &present(&obj, meta_only)))
        }
        (&Method::POST, None) => {
            let obj: Value = parse_body(&body, &content_type)?;
            let mut st = WriteGuard::new(&shared, dry_run);
            let created = st.create(kind, ns, obj, false, Some(&manager))?;
            broadcast_last(&shared, &st);
            Ok(json_response(StatusCode::CREATED, &created))
        }
        (&Method::PUT, Some(name)) => {
            let obj: Value = parse_body(&body, &content_type)?;
            let mut st = WriteGuard::new(&shared, dry_run);
            let old = st.get_obj(kind, ns, name).ok_or_else(|| ApiError::not_found(kind, name))?;
            let part = if target.status { Part::Status } else { Part::Main };
            let res = st.update(kind, old, obj, part, Some(&manager))?;
            broadcast_last(&shared, &st);
            Ok(json_response(StatusCode::OK, &res))
        }
        (&Method::PATCH, Some(name)) => {
            let part = if target.status { Part::Status } else { Part::Main };
            let mut st = WriteGuard::new(&shared, dry_run);
            let old = st.get_obj(kind, ns, name);
            let rv_before = st.rv;
            let res = match content_type.as_str() {
                "application/apply-patch+yaml" => {
                    let apply_manager = q
                        .get("fieldManager")
                        .filter(|m| !m.is_empty())
                        .ok_or_else(|| {
                            ApiError::bad_request(
                                "PATCH, application/apply-patch+yaml requires fieldManager to be set",
                            )
                        })?
                        .clone();
                    let applied: Value = serde_yaml::from_slice(&body)
                        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
                    let applied = fields::check_applied(&applied, kind, name)?;
                    match old {
                        None if target.status => return Err(ApiError::not_found(kind, name)),
                        None => {
                            let mut obj = applied.clone();
                            fields::track_apply_create(kind, &mut obj, &apply_manager);
                            let created = st.create(kind, ns, obj, false, None)?;
                            broadcast_last(&shared, &st);
                            return Ok(json_response(StatusCode::CREATED, &created));
                        }
                        Some(old) => {
                            let force = q.get("force").is_some_and(|f| f == "true");
                            let mut merged = fields::apply(kind, &old, &applied, &apply_manager, force, target.status)?;
                            if applied["metadata"]["resourceVersion"].is_null() {
                                merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                            }
                            st.update(kind, old, merged, part, None)?
                        }
                    }
                }
                "application/merge-patch+json" | "application/strategic-merge-patch+json" | "application/json-patch+json" => {
                    let old = old.ok_or_else(|| ApiError::not_found(kind, name))?;
                    let patch: Value = serde_json::from_slice(&body)
                        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
                    let mut merged = old.clone();
                    if content_type == "application/json-patch+json" {
                        let p: json_patch::Patch = serde_json::from_value(patch)
                            .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
                        json_patch::patch(&mut merged, &p).map_err(|e| {
                            ApiError::new(422, "Invalid", format!("the server rejected our request due to an error in our request: {e}"))
                        })?;
                    } else {
                        json_patch::merge(&mut merged, &patch);
                    }
                    if merged["metadata"]["resourceVersion"].as_str().is_none_or(|s| s.is_empty()) {
                        merged["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                    }
                    st.update(kind, old, merged, part, Some(&manager))?
                }
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other})"),
                    ))
                }
            };
            if st.rv != rv_before {
                broadcast_last(&shared, &st);
            }
            Ok(json_response(StatusCode::OK, &res))
        }
        (&Method::DELETE, Some(name)) => {
            if target.status {
                return Err(ApiError::new(405, "MethodNotAllowed", "cannot delete status"));
            }
            let opts: Value = if body.is_empty() { Value::Null } else { parse_body(&body, &content_type)? };
            let dry_run = dry_run || body_dry_run(&opts);
            let mut st = WriteGuard::new(&shared, dry_run);
            if let Some(obj) = st.get_obj(kind, ns, name) {
                for (field, what) in [("uid", "UID"), ("resourceVersion", "ResourceVersion")] {
                    if let Some(want) = opts["preconditions"][field].as_str() {
                        if obj["metadata"][field].as_str() != Some(want) {
                            return Err(ApiError::new(
                                409,
                                "Conflict",
                                format!(
                                    "Operation cannot be fulfilled on {} \"{}\": Precondition failed: {} in precondition: {}, {} in object meta: {}",
                                    qualified(kind),
                                    name,
                                    what,
                                    want,
                                    what,
                                    obj["metadata"][field].as_str().unwrap_or("")
                                ),
                            )
                            .with_details(kind, name));
                        }
                    }
                }
            }
            let rv_before = st.rv;
            let res = st.delete(kind, ns, name)?;
            if st.rv != rv_before {
                broadcast_last(&shared, &st);
            }
            Ok(json_response(StatusCode::OK, &res))
        }
        (&Method::DELETE, None) => {
            let sel = Selectors {
                labels: parse_label_selector(q.get("labelSelector").map(|s| s.as_str()).unwrap_or(""))?,
                fields: parse_field_selector(q.get("fieldSelector").map(|s| s.as_str()).unwrap_or(""))?,
            };
            let opts: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let dry_run = dry_run || body_dry_run(&opts);
            let mut st = WriteGuard::new(&shared, dry_run);
            let names: Vec<String> = st
                .objects
                .get(&kind.key())
                .map(|m| {
                    m.iter()
                        .filter(|((o_ns, _), o)| ns.is_none_or(|n| n == o_ns) && sel.matches(o))
                        .map(|((_, n), _)| n.clone())
                        .collect()
                })
                .unwrap_or_default();
            let mut items = Vec::new();
            for name in names {
                let obj = st.get_obj(kind, ns, &name);
                let rv_before = st.rv;
                st.delete(kind, ns, &name)?;
                if st.rv != rv_before {
                    broadcast_last(&shared, &st);
                }
                items.extend(obj);
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({
                    "apiVersion": kind.api_version(),
                    "kind": format!("{}List", kind.kind),
                    "metadata": {"resourceVersion": st.rv.to_string()},
                    "items": items,
                }),
            ))
        }
        _ => Err(ApiError::new(
            405,
            "MethodNotAllowed",
            format!("the server does not allow this method on the requested resource ({method})"),
        )),
    }
}

/// The store locked for a write; for `dryRun=All` requests nothing is stored
/// and the resourceVersion/uid counters are restored on drop.
/// `dryRun: ["All"]` in a DeleteOptions body.
pub(crate) fn body_dry_run(opts: &Value) -> bool {
    opts["dryRun"].as_array().is_some_and(|a| a.iter().any(|v| v == "All"))
}

pub(crate) fn parse_body(body: &Bytes, content_type: &str) -> Result<Value, ApiError> {
    if content_type.contains("yaml") {
        serde_yaml::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))
    } else {
        serde_json::from_slice(body).map_err(|e| ApiError::bad_request(format!("error decoding JSON: {e}")))
    }
}
