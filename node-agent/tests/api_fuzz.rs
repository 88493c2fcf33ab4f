//! The API against its own OpenAPI document (issue 11's fuzz proof): every
//! operation of the served `/api/v1/openapi.json` gets requests generated
//! from its schemas — valid ones, and mutations (a wrong type, a number out
//! of range, a bad enum value, a bad address or pattern, a missing field, an
//! extra field, a huge string, bad JSON, another content type) — with a fixed
//! seed and a bounded count. Asserted for every answer:
//! - no 5xx but 501, 503 and 507 (and those only where documented);
//! - its status is one the document lists for the operation;
//! - its JSON body validates against the documented schema of that status;
//! - a mutation the schema refuses is refused (4xx, or 501 when it also asks
//!   for a feature weir lacks), and a refused request changes nothing (`GET /api/v1/config/export/json` is the same after).
//!
//! The validator is a small one for the subset utoipa emits (`$ref`, `type`
//! including arrays with `null`, `oneOf`/`allOf`/`anyOf`, `properties`,
//! `required`, `items`, `enum`, `minimum`/`maximum`, `pattern`, and the
//! custom format `ip`): the `jsonschema` crate is not in the offline
//! registry. Needs root (a testing-mode balancer loads the program).

mod support {
    pub mod api;
}

use std::net::IpAddr;

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Map, Value};
use tower::ServiceExt;

use support::api::*;

/// Requests per operation: valid ones, then mutations of them.
const VALID: usize = 40;
const MUTATIONS: usize = 120;

/// xorshift64*: a fixed seed, the same run every time.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Addresses the generator uses: the VIPs and reals the setup made, others.
const ADDRESSES: &[&str] = &["10.0.0.1", "10.0.0.2", "192.168.1.1", "192.168.1.2", "2001:db8::1", "fc00::7"];

/// The document and what resolving in it needs.
struct Doc(Value);

impl Doc {
    /// `schema` with its `$ref` followed.
    fn resolve<'a>(&'a self, schema: &'a Value) -> &'a Value {
        match schema.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix("#/components/schemas/").unwrap_or_else(|| panic!("ref {r}"));
                self.resolve(&self.0["components"]["schemas"][name])
            }
            None => schema,
        }
    }

    fn types(schema: &Value) -> Vec<&str> {
        match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        }
    }

    /// Why `value` does not fit `schema`, if it does not.
    fn check(&self, schema: &Value, value: &Value, at: &str) -> Result<(), String> {
        let schema = self.resolve(schema);
        let bad = |why: String| Err(format!("{at}: {why} ({value})"));
        if let Some(all) = schema["allOf"].as_array() {
            for s in all {
                self.check(s, value, at)?;
            }
        }
        for key in ["oneOf", "anyOf"] {
            if let Some(any) = schema[key].as_array() {
                if !any.iter().any(|s| self.check(s, value, at).is_ok()) {
                    return bad(format!("fits no {key} alternative"));
                }
            }
        }
        let types = Self::types(schema);
        if !types.is_empty() {
            let fits = types.iter().any(|t| match *t {
                "null" => value.is_null(),
                "boolean" => value.is_boolean(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "string" => value.is_string(),
                "array" => value.is_array(),
                "object" => value.is_object(),
                other => panic!("type {other}"),
            });
            if !fits {
                return bad(format!("not of type {types:?}"));
            }
        }
        if let Some(values) = schema["enum"].as_array() {
            if !values.contains(value) {
                return bad(format!("not one of {values:?}"));
            }
        }
        if let Some(n) = value.as_f64() {
            if schema["minimum"].as_f64().is_some_and(|min| n < min) {
                return bad(format!("below {}", schema["minimum"]));
            }
            if schema["maximum"].as_f64().is_some_and(|max| n > max) {
                return bad(format!("above {}", schema["maximum"]));
            }
        }
        if let Some(text) = value.as_str() {
            if let Some(pattern) = schema["pattern"].as_str() {
                if !regex::Regex::new(pattern).unwrap().is_match(text) {
                    return bad(format!("does not match {pattern}"));
                }
            }
            if schema["format"] == "ip" && text.parse::<IpAddr>().is_err() {
                return bad("not an IP address".into());
            }
        }
        if let Some(obj) = value.as_object() {
            for name in schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str) {
                if !obj.contains_key(name) {
                    return bad(format!("no required field {name}"));
                }
            }
            if let Some(props) = schema["properties"].as_object() {
                for (name, v) in obj {
                    if let Some(s) = props.get(name) {
                        self.check(s, v, &format!("{at}.{name}"))?;
                    }
                }
            }
        }
        if let (Some(items), Some(values)) = (schema.get("items"), value.as_array()) {
            for (i, v) in values.iter().enumerate() {
                self.check(items, v, &format!("{at}[{i}]"))?;
            }
        }
        Ok(())
    }

    /// A value `schema` accepts.
    fn generate(&self, schema: &Value, rng: &mut Rng) -> Value {
        let schema = self.resolve(schema);
        if let Some(one) = schema["oneOf"].as_array().or(schema["anyOf"].as_array()) {
            // Prefer the non-null alternative: null is the default, the rest says more.
            let real: Vec<&Value> = one.iter().filter(|s| s["type"] != "null").collect();
            if real.is_empty() {
                return Value::Null;
            }
            let chosen: &Value = real[rng.below(real.len())];
            return self.generate(chosen, rng);
        }
        if let Some(all) = schema["allOf"].as_array() {
            return self.generate(&all[0], rng);
        }
        if let Some(values) = schema["enum"].as_array() {
            let values: Vec<&Value> = values.iter().filter(|v| !v.is_null()).collect();
            return (*rng.pick(&values)).clone();
        }
        let types: Vec<&str> = Self::types(schema).into_iter().filter(|t| *t != "null").collect();
        match types.first().copied().unwrap_or("object") {
            "boolean" => json!(rng.below(2) == 1),
            "integer" | "number" => {
                let min = schema["minimum"].as_u64().unwrap_or(0);
                let max = schema["maximum"].as_u64().unwrap_or(min + 100).min(min + 100_000);
                // Small values most of the time: they name things that exist.
                // or the schema's example (port 80: the setup's VIPs).
                let example = schema["examples"].as_array().and_then(|e| e.first()).and_then(Value::as_u64);
                let n = match (rng.below(3), example) {
                    (0, Some(example)) => example,
                    (1, _) => min + rng.below(3) as u64,
                    _ => min + rng.next() % (max - min + 1),
                };
                json!(n.min(max))
            }
            "string" if schema["format"] == "ip" => json!(rng.pick(ADDRESSES)),
            "string" => match schema["examples"].as_array().and_then(|e| e.first()).or(schema.get("example")) {
                Some(example) => example.clone(),
                None if schema.get("pattern").is_some() => panic!("a pattern without an example: {schema}"),
                None => json!(*rng.pick(&["vip_map", "weir_vips", "", "x"])),
            },
            "array" => {
                let items = &schema["items"];
                Value::Array((0..rng.below(3)).map(|_| self.generate(items, rng)).collect())
            }
            _ => {
                let required: Vec<&str> =
                    schema["required"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let mut obj = Map::new();
                for (name, s) in schema["properties"].as_object().into_iter().flatten() {
                    if required.contains(&name.as_str()) || rng.below(3) == 0 {
                        obj.insert(name.clone(), self.generate(s, rng));
                    }
                }
                Value::Object(obj)
            }
        }
    }

    /// The leaf fields of `value` (paths) with their schemas.
    fn leaves<'a>(
        &'a self,
        schema: &'a Value,
        value: &Value,
        path: Vec<String>,
        out: &mut Vec<(Vec<String>, &'a Value)>,
    ) {
        let schema = self.resolve(schema);
        let schema = match schema["oneOf"].as_array() {
            Some(one) => one.iter().find(|s| s["type"] != "null").map_or(schema, |s| self.resolve(s)),
            None => schema,
        };
        match value.as_object() {
            Some(obj) if schema.get("properties").is_some() => {
                for (name, v) in obj {
                    if let Some(s) = schema["properties"].get(name) {
                        let mut p = path.clone();
                        p.push(name.clone());
                        self.leaves(s, v, p, out);
                    }
                }
            }
            _ => out.push((path, schema)),
        }
    }
}

fn set(value: &mut Value, path: &[String], new: Option<Value>) {
    let (last, parents) = path.split_last().expect("a field");
    let mut at = value;
    for p in parents {
        at = &mut at[p.as_str()];
    }
    let obj = at.as_object_mut().expect("an object");
    match new {
        Some(v) => obj.insert(last.clone(), v),
        None => obj.remove(last),
    };
}

/// A schema-invalid replacement for a field of `schema`, if one exists.
fn invalid_for(schema: &Value, rng: &mut Rng) -> Option<Value> {
    let types = Doc::types(schema);
    let mut options = vec![];
    if let Some(values) = schema["enum"].as_array() {
        options.push(if values.iter().any(Value::is_string) { json!("zz") } else { json!(99) });
    }
    if let Some(max) = schema["maximum"].as_u64() {
        options.push(json!(max + 1));
        options.push(json!(u64::MAX));
    }
    if schema["minimum"].as_u64() == Some(1) || schema["minimum"].as_u64() == Some(1280) {
        options.push(json!(schema["minimum"].as_u64().unwrap() - 1));
    }
    if types.contains(&"integer") {
        options.extend([json!(-1), json!(1.5), json!("7")]);
    }
    if types.contains(&"string") {
        options.push(json!(12));
        if schema.get("pattern").is_some() {
            options.push(json!("zz"));
        }
        if schema["format"] == "ip" {
            options.extend([json!("10.0.0"), json!("not-an-ip"), json!("10.0.0.1/24"), json!("x".repeat(100_000))]);
        }
    }
    if types.contains(&"boolean") {
        options.extend([json!("yes"), json!(1)]);
    }
    if types.contains(&"object") {
        options.push(json!([]));
    }
    if types.contains(&"array") {
        options.push(json!({}));
    }
    (!options.is_empty()).then(|| rng.pick(&options).clone())
}

/// One operation of the document.
struct Operation {
    method: String,
    path: String,
    op: Value,
}

impl Operation {
    fn id(&self) -> &str {
        self.op["operationId"].as_str().unwrap_or_default()
    }

    /// The schema of a JSON body, and whether one is required.
    fn body(&self) -> Option<(&Value, bool)> {
        let body = self.op.get("requestBody")?;
        Some((&body["content"]["application/json"]["schema"], body["required"] == json!(true)))
    }

    /// The query parameters as one object schema.
    fn params(&self) -> Option<Value> {
        let params = self.op["parameters"].as_array().filter(|p| !p.is_empty())?;
        let props: Map<String, Value> =
            params.iter().map(|p| (p["name"].as_str().unwrap().to_owned(), p["schema"].clone())).collect();
        let required: Vec<&Value> =
            params.iter().filter(|p| p["required"] == json!(true)).map(|p| &p["name"]).collect();
        Some(json!({"type": "object", "properties": props, "required": required}))
    }
}

/// A request: body text and content type, or a query string.
#[derive(Debug, Clone)]
struct Sent {
    query: String,
    body: Option<String>,
    content_type: &'static str,
    /// The schema refuses it: the server must (4xx).
    invalid: bool,
    what: String,
}

fn query_of(params: &Value) -> String {
    let pairs: Vec<String> = params
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            let encoded: String = text
                .bytes()
                .map(|b| {
                    if b.is_ascii_alphanumeric() || b"-._".contains(&b) {
                        (b as char).to_string()
                    } else {
                        format!("%{b:02X}")
                    }
                })
                .collect();
            format!("{k}={encoded}")
        })
        .collect();
    pairs.join("&")
}

/// The valid requests and mutations of `op`.
fn requests(doc: &Doc, op: &Operation, rng: &mut Rng) -> Vec<Sent> {
    let json_body = |v: &Value, invalid: bool, what: String| Sent {
        query: String::new(),
        body: Some(v.to_string()),
        content_type: "application/json",
        invalid,
        what,
    };
    let mut out = vec![];
    let valid = if op.id() == "lb_reload" { 1 } else { VALID };
    if let Some(params) = op.params() {
        for _ in 0..valid {
            let v = doc.generate(&params, rng);
            out.push(Sent {
                query: query_of(&v),
                body: None,
                content_type: "",
                invalid: false,
                what: format!("valid query {v}"),
            });
        }
        for _ in 0..MUTATIONS / 2 {
            let mut v = doc.generate(&params, rng);
            let mut leaves = vec![];
            doc.leaves(&params, &v, vec![], &mut leaves);
            leaves.retain(|(path, _)| !path.is_empty());
            if leaves.is_empty() {
                continue;
            }
            let (path, schema) = rng.pick(&leaves).clone();
            let new = if rng.below(3) == 0 {
                None
            } else {
                invalid_for(schema, rng)
                    .filter(|n| !n.is_array() && !n.is_object() && n.as_str().is_none_or(|s| s.len() < 1000))
            };
            let required = params["required"].as_array().unwrap().contains(&json!(path[0]));
            // In a query every value is text: a mutation is invalid only if it fits
            // neither as that text nor as the JSON it spells (`?port=7` is the port 7).
            let text_of = |n: &Value| n.as_str().map_or_else(|| n.to_string(), str::to_owned);
            let invalid = match &new {
                None => required,
                Some(n) => {
                    doc.check(schema, &json!(text_of(n)), "").is_err()
                        && doc.check(schema, &text_of(n).parse::<Value>().unwrap_or(json!(text_of(n))), "").is_err()
                }
            };
            let what = format!("query {path:?} := {new:?}");
            set(&mut v, &path, new);
            out.push(Sent { query: query_of(&v), body: None, content_type: "", invalid, what });
        }
    }
    if let Some((schema, required)) = op.body() {
        let schema = schema.clone();
        for _ in 0..valid {
            let v = doc.generate(&schema, rng);
            out.push(json_body(&v, false, format!("valid body {v}")));
        }
        for i in 0..MUTATIONS {
            let mut v = doc.generate(&schema, rng);
            let mut leaves = vec![];
            doc.leaves(&schema, &v, vec![], &mut leaves);
            leaves.retain(|(path, _)| !path.is_empty());
            let sent = match (i % 7, leaves.is_empty()) {
                (0..=2, false) => {
                    let (path, s) = rng.pick(&leaves).clone();
                    match invalid_for(s, rng) {
                        Some(new) => {
                            let what = format!("body {path:?} := {}", truncate(&new));
                            set(&mut v, &path, Some(new));
                            let invalid = doc.check(&schema, &v, "").is_err();
                            json_body(&v, invalid, what)
                        }
                        None => continue,
                    }
                }
                (3, false) => {
                    let (path, _) = rng.pick(&leaves).clone();
                    set(&mut v, &path, None);
                    let invalid = doc.check(&schema, &v, "").is_err();
                    json_body(&v, invalid, format!("body without {path:?}"))
                }
                (4, _) => {
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("unknown_field".into(), json!({"x": [1, 2]}));
                    }
                    json_body(&v, false, "an extra field".into())
                }
                (5, _) => {
                    let text = rng.pick(&["{", "[1,2]", "null", "\"text\"", "{\"a\":", "\u{0}"]).to_string();
                    let nested = "[".repeat(100_000);
                    let text = if rng.below(4) == 0 { nested } else { text };
                    Sent {
                        query: String::new(),
                        body: Some(text.clone()),
                        content_type: "application/json",
                        invalid: true,
                        what: format!("bad JSON {}", truncate(&json!(text))),
                    }
                }
                _ => Sent {
                    query: String::new(),
                    body: Some(v.to_string()),
                    content_type: "text/plain",
                    invalid: false,
                    what: format!("text/plain body {v}"),
                },
            };
            // An optional body that is `null` is no body.
            let invalid = sent.invalid && (required || sent.body.as_deref() != Some("null"));
            out.push(Sent { invalid, ..sent });
        }
    }
    if out.is_empty() {
        out.push(Sent { query: String::new(), body: None, content_type: "", invalid: false, what: "no input".into() });
    }
    out
}

fn truncate(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 80 {
        format!("{}... ({} bytes)", &text[..80], text.len())
    } else {
        text
    }
}

async fn send(router: &axum::Router, method: &str, uri: &str, sent: &Sent) -> (u16, Option<String>, Vec<u8>) {
    let mut request = Request::builder().method(method).uri(uri);
    if !sent.content_type.is_empty() {
        request = request.header("content-type", sent.content_type);
    }
    let request = request.body(sent.body.clone().map_or_else(Body::empty, Body::from)).unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, content_type, bytes.to_vec())
}

#[tokio::test]
async fn every_operation_answers_as_documented() {
    if skip_without_root("every_operation_answers_as_documented") {
        return;
    }
    let started = std::time::Instant::now();
    let api = Api::new();
    api.create().await;
    api.add_vip("10.0.0.1", 80, 6, 0).await;
    api.add_vip("2001:db8::1", 80, 17, 0).await;
    api.add_real(vip("10.0.0.1", 80, 6), "192.168.1.1", 10).await;
    api.add_real(vip("2001:db8::1", 80, 17), "fc00::7", 10).await;
    let router = weir_agent::api::router(api.state.clone());
    let doc = Doc(api.call("GET", "/api/v1/openapi.json").await.body);

    let mut operations = vec![];
    for (path, item) in doc.0["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            operations.push(Operation { method: method.to_uppercase(), path: path.clone(), op: op.clone() });
        }
    }
    let mut rng = Rng(0x5eed_0011);
    let mut failures = vec![];
    let mut sent_count = 0;
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for op in &operations {
        // Closing the balancer would leave nothing to fuzz.
        if op.id() == "lb_close" {
            continue;
        }
        for sent in requests(&doc, op, &mut rng) {
            let uri = if sent.query.is_empty() { op.path.clone() } else { format!("{}?{}", op.path, sent.query) };
            let before = api.call("GET", "/api/v1/config/export/json").await.body;
            let (status, content_type, bytes) = send(&router, &op.method, &uri, &sent).await;
            sent_count += 1;
            *by_status.entry(status).or_default() += 1;
            let mut fail = |why: String| failures.push(format!("{} {} [{}]: {why}", op.method, op.path, sent.what));
            let documented = &op.op["responses"][status.to_string()];
            if status >= 500 && ![501, 503, 507].contains(&status) {
                fail(format!("{status}: {}", String::from_utf8_lossy(&bytes)));
            }
            if documented.is_null() {
                fail(format!("status {status} is not documented: {}", String::from_utf8_lossy(&bytes)));
                continue;
            }
            if content_type.as_deref() == Some("application/json") {
                let body: Value = match serde_json::from_slice(&bytes) {
                    Ok(body) => body,
                    Err(e) => {
                        fail(format!("{status}: not JSON: {e}"));
                        continue;
                    }
                };
                if let Some(schema) = documented["content"]["application/json"].get("schema") {
                    if let Err(why) = doc.check(schema, &body, "body") {
                        fail(format!("{status}: the body does not fit the documented schema: {why}"));
                    }
                }
            }
            // Refused: a 4xx, or 501 when the request also asks for a feature
            // weir lacks (which check answers first is the handler's order).
            let refused = (400..500).contains(&status) || status == 501;
            if sent.invalid && !refused {
                fail(format!(
                    "the schema refuses it but the server answered {status}: {}",
                    String::from_utf8_lossy(&bytes)
                ));
            }
            if refused {
                let after = api.call("GET", "/api/v1/config/export/json").await.body;
                if after != before {
                    fail(format!("refused ({status}) but the configuration changed: {before} -> {after}"));
                }
            }
        }
    }
    eprintln!("{sent_count} requests over {} operations in {:?}: {by_status:?}", operations.len(), started.elapsed());
    assert!(failures.is_empty(), "{} failures:\n{}", failures.len(), failures.join("\n"));
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "{:?}", started.elapsed());
}

/// The document states what the server enforces: a few constraints read
/// back, exactly, and each operation's statuses listed one by one.
#[tokio::test]
async fn the_document_states_the_constraints() {
    let api = Api::new();
    let doc = Doc(api.call("GET", "/api/v1/openapi.json").await.body);
    let schema = |name: &str| doc.0["components"]["schemas"][name].clone();
    let vip_key = schema("VipKey");
    assert_eq!(vip_key["properties"]["proto"]["enum"], json!([6, 17]));
    assert_eq!(vip_key["properties"]["address"]["format"], json!("ip"));
    assert_eq!(
        (&vip_key["properties"]["port"]["minimum"], &vip_key["properties"]["port"]["maximum"]),
        (&json!(0), &json!(65535))
    );
    // Query parameters are required (utoipa drops `required` with `schema_with`; docs.rs puts it back).
    let params = doc.0["paths"]["/api/v1/vips/flags"]["get"]["parameters"].as_array().unwrap().clone();
    assert!(params.iter().all(|p| p["required"] == json!(true)), "{params:?}");
    assert_eq!(schema("FeatureQuery")["properties"]["feature"]["enum"], json!([1, 2, 4, 8, 16, 32, 64]));
    assert_eq!(schema("RealsBatch")["properties"]["action"]["enum"], json!([0, 1]));
    assert_eq!(schema("HashFunctionChange")["properties"]["hash_function"]["enum"], json!([0, 1]));
    assert_eq!(schema("NewVip")["properties"]["flags"]["maximum"], json!(1023));
    assert_eq!(schema("Real")["properties"]["flags"]["maximum"], json!(3));
    assert_eq!(schema("Mac")["properties"]["mac"]["pattern"], json!("^[0-9a-fA-F]{2}([:-][0-9a-fA-F]{2}){5}$"));
    let create = schema("CreateLb");
    for (field, min, max) in [
        ("max_vips", 1, 65_536),
        ("max_reals", 1, 1_048_576),
        ("ch_ring_size", 1, 16_777_216),
        ("lru_size", 1, 134_217_728),
        ("mtu", 1280, 9216),
    ] {
        let f = &create["properties"][field];
        assert_eq!((&f["minimum"], &f["maximum"]), (&json!(min), &json!(max)), "{field}");
    }
    let packet = &schema("SimulatePacket")["properties"]["packet"];
    for (text, fits) in
        [("AAAAAAAAAAAAAAAAAAAAAA==", true), ("AAE=", true), ("AAB=", false), ("AA", false), ("A A\nA A", true)]
    {
        assert_eq!(doc.check(packet, &json!(text), "packet").is_ok(), fits, "{text}");
    }
    let statuses = |method: &str, path: &str| -> Vec<String> {
        doc.0["paths"][path][method]["responses"].as_object().unwrap().keys().cloned().collect()
    };
    assert_eq!(statuses("post", "/api/v1/vips"), ["201", "400", "409", "413", "500", "501", "503", "507"]);
    assert_eq!(statuses("get", "/api/v1/vips"), ["200", "503"]);
    assert_eq!(statuses("get", "/health"), ["200"]);
    assert_eq!(statuses("get", "/api/v1/stats/quic-icmp"), ["501"]);
}

/// `/lb/reload`'s `config` is an object (any answers 501, weir does not
/// reload with another configuration); another JSON type is a bad request.
#[tokio::test]
async fn reload_config_of_another_type_is_400() {
    let api = Api::new();
    let answer = api.send("POST", "/api/v1/lb/reload", json!({"config": []})).await;
    assert_error(
        &answer,
        axum::http::StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "config: invalid type: sequence, expected a map",
    );
    let answer = api.send("POST", "/api/v1/lb/reload", json!({"config": {}})).await;
    assert_error(
        &answer,
        axum::http::StatusCode::NOT_IMPLEMENTED,
        "FEATURE_DISABLED",
        "config: reloading with another",
    );
}
