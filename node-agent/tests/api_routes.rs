//! The API's surface against katran-rest-api.md: every documented (method,
//! path) is served, another method answers 405 in the envelope, unknown paths
//! 404, the endpoints of missing features 501, `/features/check` tells the
//! truth, the health endpoints, and `/api/v1/openapi.json` documents every
//! endpoint. The checks that need no balancer run without root; the rest
//! print `SKIPPED (needs root)` without it.

mod support {
    pub mod api;
}

use axum::http::StatusCode;
use serde_json::{json, Value};

use support::api::*;

/// Every endpoint of katran-rest-api.md, in the document's order.
const ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/health"),
    ("POST", "/api/v1/lb/create"),
    ("POST", "/api/v1/lb/close"),
    ("GET", "/api/v1/lb/status"),
    ("POST", "/api/v1/lb/load-bpf-progs"),
    ("POST", "/api/v1/lb/attach-bpf-progs"),
    ("POST", "/api/v1/lb/reload"),
    ("GET", "/api/v1/vips"),
    ("POST", "/api/v1/vips"),
    ("DELETE", "/api/v1/vips"),
    ("GET", "/api/v1/vips/flags"),
    ("PUT", "/api/v1/vips/flags"),
    ("PUT", "/api/v1/vips/hash-function"),
    ("GET", "/api/v1/vips/reals"),
    ("POST", "/api/v1/vips/reals"),
    ("DELETE", "/api/v1/vips/reals"),
    ("PUT", "/api/v1/vips/reals/batch"),
    ("GET", "/api/v1/reals/index"),
    ("PUT", "/api/v1/reals/flags"),
    ("GET", "/api/v1/stats/vip"),
    ("GET", "/api/v1/stats/vip/decap"),
    ("GET", "/api/v1/stats/real"),
    ("GET", "/api/v1/stats/lru"),
    ("GET", "/api/v1/stats/lru/miss"),
    ("GET", "/api/v1/stats/lru/fallback"),
    ("GET", "/api/v1/stats/lru/global"),
    ("GET", "/api/v1/stats/icmp-too-big"),
    ("GET", "/api/v1/stats/ch-drop"),
    ("GET", "/api/v1/stats/src-routing"),
    ("GET", "/api/v1/stats/inline-decap"),
    ("GET", "/api/v1/stats/decap"),
    ("GET", "/api/v1/stats/quic-icmp"),
    ("GET", "/api/v1/stats/quic-packets"),
    ("GET", "/api/v1/stats/tcp-server-id-routing"),
    ("GET", "/api/v1/stats/xdp/total"),
    ("GET", "/api/v1/stats/xdp/tx"),
    ("GET", "/api/v1/stats/xdp/drop"),
    ("GET", "/api/v1/stats/xdp/pass"),
    ("GET", "/api/v1/stats/hc-prog"),
    ("GET", "/api/v1/stats/bpf-map"),
    ("GET", "/api/v1/stats/userspace"),
    ("GET", "/api/v1/stats/per-core-packets"),
    ("GET", "/api/v1/stats/flood-status"),
    ("GET", "/api/v1/stats/monitor"),
    ("GET", "/api/v1/quic/reals"),
    ("PUT", "/api/v1/quic/reals"),
    ("GET", "/api/v1/routing/src-rules"),
    ("POST", "/api/v1/routing/src-rules"),
    ("DELETE", "/api/v1/routing/src-rules"),
    ("DELETE", "/api/v1/routing/src-rules/all"),
    ("GET", "/api/v1/routing/src-rules/size"),
    ("GET", "/api/v1/routing/decap/inline"),
    ("POST", "/api/v1/routing/decap/inline"),
    ("DELETE", "/api/v1/routing/decap/inline"),
    ("GET", "/api/v1/healthcheck/dsts"),
    ("POST", "/api/v1/healthcheck/dsts"),
    ("DELETE", "/api/v1/healthcheck/dsts"),
    ("POST", "/api/v1/healthcheck/keys"),
    ("DELETE", "/api/v1/healthcheck/keys"),
    ("GET", "/api/v1/features/check"),
    ("POST", "/api/v1/features/install"),
    ("POST", "/api/v1/features/remove"),
    ("DELETE", "/api/v1/lru"),
    ("DELETE", "/api/v1/lru/vip"),
    ("POST", "/api/v1/monitor/stop"),
    ("POST", "/api/v1/monitor/restart"),
    ("GET", "/api/v1/utils/mac"),
    ("PUT", "/api/v1/utils/mac"),
    ("GET", "/api/v1/utils/real-for-flow"),
    ("POST", "/api/v1/utils/simulate-packet"),
    ("GET", "/api/v1/utils/prog-fd"),
    ("GET", "/api/v1/utils/hc-prog-fd"),
    ("GET", "/api/v1/utils/map-fd"),
    ("GET", "/api/v1/utils/global-lru-map-fds"),
    ("POST", "/api/v1/utils/src-ip-encap"),
];

/// What the current katran-server API adds (shared/specs/katran-rest-api-current.md).
const CURRENT_ENDPOINTS: &[(&str, &str)] = &[
    ("PUT", "/api/v1/vips/reals/health"),
    ("PUT", "/api/v1/vips/reals/health/batch"),
    ("PUT", "/api/v1/vips/healthcheck"),
    ("GET", "/api/v1/vips/healthcheck"),
    ("DELETE", "/api/v1/vips/healthcheck"),
    ("GET", "/api/v1/vips/healthcheck/status"),
    ("GET", "/api/v1/config/export"),
    ("GET", "/api/v1/config/export/json"),
];

/// weir's additions to the document.
const WEIR_ENDPOINTS: &[(&str, &str)] = &[
    ("GET", "/health/ready"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/system/info"),
    ("GET", "/api/v1/limits/effective"),
];

/// The endpoints of features the datapath lacks, and the feature each names.
const DISABLED: &[(&str, &str, &str)] = &[
    ("GET", "/api/v1/stats/vip/decap", "inline decapsulation"),
    ("GET", "/api/v1/stats/lru/global", "global LRU"),
    ("GET", "/api/v1/stats/src-routing", "source routing"),
    ("GET", "/api/v1/stats/inline-decap", "inline decapsulation"),
    ("GET", "/api/v1/stats/decap", "inline decapsulation"),
    ("GET", "/api/v1/stats/quic-icmp", "QUIC"),
    ("GET", "/api/v1/stats/quic-packets", "QUIC"),
    ("GET", "/api/v1/stats/tcp-server-id-routing", "TCP server-id routing"),
    ("GET", "/api/v1/stats/monitor", "monitor"),
    ("GET", "/api/v1/quic/reals", "QUIC"),
    ("PUT", "/api/v1/quic/reals", "QUIC"),
    ("GET", "/api/v1/routing/src-rules", "source routing"),
    ("POST", "/api/v1/routing/src-rules", "source routing"),
    ("DELETE", "/api/v1/routing/src-rules", "source routing"),
    ("DELETE", "/api/v1/routing/src-rules/all", "source routing"),
    ("GET", "/api/v1/routing/src-rules/size", "source routing"),
    ("GET", "/api/v1/routing/decap/inline", "inline decapsulation"),
    ("POST", "/api/v1/routing/decap/inline", "inline decapsulation"),
    ("DELETE", "/api/v1/routing/decap/inline", "inline decapsulation"),
    ("POST", "/api/v1/monitor/stop", "monitor"),
    ("POST", "/api/v1/monitor/restart", "monitor"),
    ("GET", "/api/v1/utils/global-lru-map-fds", "global LRU"),
    ("POST", "/api/v1/utils/src-ip-encap", "source-IP encapsulation"),
];

/// Every endpoint answers its documented method — whatever it answers, not
/// 404 or 405 — and PATCH (which no endpoint uses) with 405 in the envelope,
/// with an `Allow` header naming the documented method.
async fn assert_route_table(api: &Api) {
    // `/lb/close` last, so that after create every other endpoint meets the balancer.
    let close = ("POST", "/api/v1/lb/close");
    let table =
        ENDPOINTS.iter().chain(CURRENT_ENDPOINTS).chain(WEIR_ENDPOINTS).filter(|e| **e != close).chain([&close]);
    for &(method, path) in table {
        let answer = api.raw(method, path, Some("{}")).await;
        assert!(
            answer.status != StatusCode::NOT_FOUND && answer.status != StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}: {} {}",
            answer.status,
            answer.body
        );
        // The two documents that are not enveloped on success.
        if !(answer.status == StatusCode::OK && ["/api/v1/openapi.json", "/api/v1/config/export"].contains(&path)) {
            let success = answer.body["success"].as_bool();
            assert!(success.is_some(), "{method} {path}: no envelope: {}", answer.body);
        }
        let wrong = api.raw("PATCH", path, Some("{}")).await;
        assert_error(&wrong, StatusCode::METHOD_NOT_ALLOWED, "METHOD_NOT_ALLOWED", "method PATCH is not allowed");
        let allow = wrong.allow.unwrap_or_else(|| panic!("PATCH {path}: no Allow header"));
        assert!(allow.split(", ").any(|m| m == method), "PATCH {path}: Allow {allow:?} lacks {method}");
    }
}

#[tokio::test]
async fn every_documented_endpoint_is_routed_before_create() {
    assert_route_table(&Api::new()).await;
}

#[tokio::test]
async fn every_documented_endpoint_is_routed_after_create() {
    if skip_without_root("every_documented_endpoint_is_routed_after_create") {
        return;
    }
    let api = Api::new();
    api.create().await;
    assert_route_table(&api).await;
}

#[tokio::test]
async fn unknown_paths_are_404_in_the_envelope() {
    let api = Api::new();
    for (method, path) in [
        ("GET", "/"),
        ("GET", "/api/v1"),
        ("GET", "/api/v1/nope"),
        ("POST", "/api/v1/vips/"),
        ("DELETE", "/api/v2/vips"),
    ] {
        let answer = api.call(method, path).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND", &format!("no endpoint {method} {path}"));
    }
}

#[tokio::test]
async fn disabled_features_answer_501() {
    let api = Api::new();
    let check = |answer: &Answer, method: &str, path: &str, feature: &str| {
        assert_error(answer, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", feature);
        let message = answer.body["error"]["message"].as_str().unwrap();
        assert!(message.starts_with(&format!("{method} {path}: ")), "{message}");
        assert!(message.ends_with("is not available: weir's datapath does not implement it yet"), "{message}");
    };
    // Before create, with or without a body: the feature is missing either way.
    for &(method, path, feature) in DISABLED {
        check(&api.call(method, path).await, method, path, feature);
        check(&api.raw(method, path, Some("{not json")).await, method, path, feature);
    }
    if skip_without_root("disabled_features_answer_501 (after create)") {
        return;
    }
    api.create().await;
    for &(method, path, feature) in DISABLED {
        let body = json!({"address": "10.0.0.1", "port": 80, "proto": 6, "limit": 1000});
        check(&api.send(method, path, body).await, method, path, feature);
    }
}

#[tokio::test]
async fn features_check_tells_the_truth() {
    let api = Api::new();
    let features = [
        (1, false),  // SrcRouting
        (2, false),  // InlineDecap
        (4, false),  // Introspection
        (8, false),  // GUEEncap
        (16, false), // DirectHC: only with a balancer that runs its healthcheck program (api_healthcheck.rs)
        (32, true),  // LocalDeliveryOpt: LOCAL_VIP + LOCAL_REAL → XDP_PASS
        (64, false), // FlowDebug
    ];
    for (feature, available) in features {
        let by_query = api.call("GET", &format!("/api/v1/features/check?feature={feature}")).await;
        let by_body = api.send("GET", "/api/v1/features/check", json!({"feature": feature})).await;
        for answer in [by_query, by_body] {
            assert_eq!(
                (answer.status, answer.body),
                (StatusCode::OK, data(json!({"available": available}))),
                "feature {feature}"
            );
        }
        let change = json!({"feature": feature, "prog_path": "/x.o"});
        let install = api.send("POST", "/api/v1/features/install", change.clone()).await;
        let remove = api.send("POST", "/api/v1/features/remove", change).await;
        if available {
            // Built in: installing needs a balancer (then there is nothing to do); removing is refused.
            assert_error(&install, StatusCode::SERVICE_UNAVAILABLE, "LB_NOT_INITIALIZED", "lb/create");
            assert_error(&remove, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "cannot be removed");
        } else if feature == 16 {
            // Built in, but no balancer runs the healthcheck program yet.
            assert_error(&install, StatusCode::SERVICE_UNAVAILABLE, "LB_NOT_INITIALIZED", "lb/create");
            assert_error(&remove, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "enable_hc: true");
        } else {
            let name = format!("({feature}): weir's datapath does not implement");
            assert_error(&install, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", &name);
            assert_error(&remove, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", &name);
        }
    }
    for bad in ["/api/v1/features/check?feature=3", "/api/v1/features/check?feature=128"] {
        assert_error(&api.call("GET", bad).await, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "feature: ");
    }
    let missing = api.call("GET", "/api/v1/features/check").await;
    assert_error(&missing, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "missing parameter `feature`");
    if skip_without_root("features_check_tells_the_truth (install after create)") {
        return;
    }
    api.create().await;
    let install = api.send("POST", "/api/v1/features/install", json!({"feature": 32})).await;
    assert_eq!((install.status, install.body), (StatusCode::OK, ok()));
}

#[tokio::test]
async fn health_and_readiness() {
    let api = Api::new();
    let health = api.call("GET", "/health").await;
    assert_eq!((health.status, health.body), (StatusCode::OK, data(json!({"status": "ok", "read_only": false}))));
    // 503 keeps katran's error envelope and carries the readiness data too.
    let ready = api.call("GET", "/health/ready").await;
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        ready.body,
        json!({"success": false,
               "error": {"code": "LB_NOT_INITIALIZED",
                         "message": "not ready: no balancer yet (POST /api/v1/lb/create, or start with --config)"},
               "data": {"ready": false, "status": "not_ready", "reason": "no_balancer"}})
    );
    let status = api.call("GET", "/api/v1/lb/status").await;
    assert_eq!((status.status, status.body), (StatusCode::OK, data(json!({"initialized": false, "ready": false}))));
    if skip_without_root("health_and_readiness (after create)") {
        return;
    }
    api.create().await;
    let ready = api.call("GET", "/health/ready").await;
    assert_eq!((ready.status, ready.body), (StatusCode::OK, data(json!({"ready": true, "status": "ready"}))));
    let health = api.call("GET", "/health").await;
    assert_eq!((health.status, health.body), (StatusCode::OK, data(json!({"status": "ok", "read_only": false}))));
}

#[tokio::test]
async fn openapi_documents_every_endpoint() {
    let api = Api::new();
    let answer = api.call("GET", "/api/v1/openapi.json").await;
    assert_eq!(answer.status, StatusCode::OK);
    let doc = answer.body;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{}", doc["openapi"]);
    assert_eq!(doc["info"]["title"], json!("weir-agent"));
    let paths = doc["paths"].as_object().unwrap();
    let mut documented = 0;
    for &(method, path) in ENDPOINTS.iter().chain(CURRENT_ENDPOINTS).chain(WEIR_ENDPOINTS) {
        let op = &paths.get(path).unwrap_or_else(|| panic!("{path} is not documented"))[method.to_lowercase()];
        assert!(op.is_object(), "{method} {path} is not documented");
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path}: no responses");
        documented += 1;
    }
    // Nothing is documented that the document and weir's additions do not name.
    let operations: usize = paths
        .values()
        .map(|item| {
            ["get", "put", "post", "delete", "patch", "head", "options", "trace"]
                .iter()
                .filter(|m| item.get(**m).is_some())
                .count()
        })
        .sum();
    assert_eq!(operations, documented);
    // Operation ids are unique (they are the handlers' names).
    let mut ids: Vec<&str> = paths
        .values()
        .flat_map(|item| item.as_object().unwrap().values())
        .filter_map(|op| op.get("operationId").and_then(Value::as_str))
        .collect();
    ids.sort_unstable();
    let before = ids.len();
    ids.dedup();
    assert_eq!(ids.len(), before, "duplicate operation ids");
    // The envelopes are described, and GET parameters documented as query parameters.
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in ["Failure", "Acknowledged", "CreateLb", "VipKey", "Success_Vec_VipListed"] {
        assert!(schemas.contains_key(schema), "no schema {schema}");
    }
    let params: Vec<&str> = paths["/api/v1/vips/flags"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    assert_eq!(params, ["address", "port", "proto"]);
    // And it is the same description the library hands out.
    assert_eq!(doc, serde_json::to_value(weir_agent::api::openapi()).unwrap());
}
