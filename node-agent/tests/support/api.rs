//! Shared by the `api_*` tests: the API's router over a fresh [`ApiState`],
//! requests sent with `oneshot` (no socket), answers parsed as JSON, and the
//! envelopes the answers must equal.

#![allow(dead_code)] // a helper module: not every test file uses every helper

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use weir_agent::api::{router, ApiState};

/// True (after saying so on stderr) when the test cannot load BPF.
pub use weir_test_support::skip_unless_root as skip_without_root;

/// What `POST /api/v1/lb/create` gets in these tests: testing mode, small tables.
pub const CREATE_TESTING: &str =
    r#"{"testing": true, "max_vips": 8, "max_reals": 32, "lru_size": 1024, "default_mac": "02:00:00:00:00:01"}"#;

/// One agent's API.
pub struct Api {
    pub state: ApiState,
    router: axum::Router,
}

/// An answer: status, parsed body, and the `Allow` header if any.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub allow: Option<String>,
}

impl Api {
    pub fn new() -> Self {
        let state = ApiState::default();
        Self { router: router(state.clone()), state }
    }

    /// An API whose agent runs weir's prober (`--prober`); on a tokio runtime.
    #[allow(dead_code)]
    pub fn with_prober() -> Self {
        let mut state = ApiState::default();
        let metrics = weir_agent::prober::ProbeMetrics::default();
        state.probing = Some(weir_agent::probing::Probing::start(state.balancer.clone(), metrics));
        Self { router: router(state.clone()), state }
    }

    /// Sends `method uri` with a raw body (`None`: no body at all).
    pub async fn raw(&self, method: &str, uri: &str, body: Option<&str>) -> Answer {
        let request = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(body.map_or_else(Body::empty, |b| Body::from(b.to_owned())))
            .unwrap();
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let allow = response.headers().get("allow").map(|v| v.to_str().unwrap().to_owned());
        let response_is_yaml = response.headers().get("content-type").is_some_and(|v| v == "application/x-yaml");
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let body = if method == "HEAD" {
            Value::Null
        } else if response_is_yaml {
            // /config/export: a YAML file, not an envelope.
            Value::String(String::from_utf8(bytes.to_vec()).unwrap())
        } else {
            serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                panic!("{method} {uri}: the answer is not JSON ({e}): {}", String::from_utf8_lossy(&bytes))
            })
        };
        Answer { status, body, allow }
    }

    /// Sends `method uri` with a JSON body.
    pub async fn send(&self, method: &str, uri: &str, body: Value) -> Answer {
        self.raw(method, uri, Some(&body.to_string())).await
    }

    /// Sends `method uri` without a body.
    pub async fn call(&self, method: &str, uri: &str) -> Answer {
        self.raw(method, uri, None).await
    }

    /// Creates a testing balancer; asserts the 201.
    pub async fn create(&self) {
        let answer = self.raw("POST", "/api/v1/lb/create", Some(CREATE_TESTING)).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()), "create");
    }

    /// `POST /api/v1/vips` of `address:port/proto`; asserts the 201.
    pub async fn add_vip(&self, address: &str, port: u16, proto: u8, flags: u32) {
        let body = json!({"address": address, "port": port, "proto": proto, "flags": flags});
        let answer = self.send("POST", "/api/v1/vips", body).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()), "add VIP {address}:{port}/{proto}");
    }

    /// `POST /api/v1/vips/reals`; asserts the 201.
    pub async fn add_real(&self, vip: Value, address: &str, weight: u32) {
        let body = json!({"vip": vip, "real": {"address": address, "weight": weight, "flags": 0}});
        let answer = self.send("POST", "/api/v1/vips/reals", body).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()), "add real {address}");
    }

    /// A GET expected to succeed: its `data`.
    pub async fn data(&self, uri: &str) -> Value {
        let answer = self.call("GET", uri).await;
        assert_eq!(answer.status, StatusCode::OK, "GET {uri}: {}", answer.body);
        assert_eq!(answer.body["success"], json!(true), "GET {uri}");
        answer.body["data"].clone()
    }
}

/// `{"success": true}`.
pub fn ok() -> Value {
    json!({"success": true})
}

/// `{"success": true, "data": data}`.
pub fn data(data: Value) -> Value {
    json!({"success": true, "data": data})
}

/// Asserts an error answer: status, code, exactly the envelope's keys, and
/// a message containing `needle`.
#[track_caller]
pub fn assert_error(answer: &Answer, status: StatusCode, code: &str, needle: &str) {
    assert_eq!(answer.status, status, "{}", answer.body);
    let obj = answer.body.as_object().unwrap_or_else(|| panic!("not an object: {}", answer.body));
    assert_eq!(obj.len(), 2, "envelope keys: {}", answer.body);
    assert_eq!(answer.body["success"], json!(false));
    let error = answer.body["error"].as_object().unwrap_or_else(|| panic!("no error object: {}", answer.body));
    assert_eq!(error.len(), 2, "error keys: {}", answer.body);
    assert_eq!(answer.body["error"]["code"], json!(code), "{}", answer.body);
    let message = answer.body["error"]["message"].as_str().unwrap();
    assert!(message.contains(needle), "message {message:?} does not contain {needle:?}");
}

/// A VIP key as JSON.
pub fn vip(address: &str, port: u16, proto: u8) -> Value {
    json!({"address": address, "port": port, "proto": proto})
}

/// The number of possible CPUs (`/sys/devices/system/cpu/possible`, e.g. `0-3`).
pub fn possible_cpus() -> usize {
    let text = std::fs::read_to_string("/sys/devices/system/cpu/possible").unwrap();
    text.trim()
        .split(',')
        .map(|range| match range.split_once('-') {
            Some((a, b)) => b.parse::<usize>().unwrap() - a.parse::<usize>().unwrap() + 1,
            None => 1,
        })
        .sum()
}

/// What `/lb/status` reports as `map_memory_bytes`: the kernel's `memlock`
/// of each of the balancer's maps (from this process's fdinfo), summed.
pub fn map_memory(api: &Api) -> u64 {
    let guard = api.state.balancer.read().unwrap();
    let lb = guard.as_ref().expect("a balancer");
    weir_ebpf::abi::map::BALANCER
        .iter()
        .map(|name| {
            let fd = lb.map_fd(name).unwrap();
            let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
            let line = info.lines().find_map(|l| l.strip_prefix("memlock:")).expect("a memlock line");
            line.trim().parse::<u64>().unwrap()
        })
        .sum()
}
