//! The current katran-server API's health endpoints over HTTP, against a
//! real Balancer in testing mode (katran-rest-api-current.md, "Real health"
//! and "VIP healthcheck configuration"): `PUT /vips/reals/health` (and
//! `/batch`), `healthy` on `GET /vips/reals` (ignored in add bodies),
//! `PUT|GET|DELETE /vips/healthcheck` with its defaults and its order of
//! errors, `GET /vips/healthcheck/status`, `fail_open` on `/vips`, the
//! health metrics, and health in `/config/export` and its import. The
//! bodies are the shapes katran-cli reads (`vip show`: `healthy` of each
//! real; `hc config`: `data.type`; `hc status`: `data.reals`). Exact codes
//! and bodies throughout. Needs root (it loads the BPF program).

mod support {
    pub mod api;
}

use axum::http::StatusCode;
use serde_json::{json, Value};

use support::api::*;

const REALS: &str = "/api/v1/vips/reals?address=10.0.0.1&port=80&proto=6";
const CHECK: &str = "/api/v1/vips/healthcheck?address=10.0.0.1&port=80&proto=6";
const STATUS: &str = "/api/v1/vips/healthcheck/status?address=10.0.0.1&port=80&proto=6";

fn real(address: &str, weight: u32, healthy: bool) -> Value {
    json!({"address": address, "weight": weight, "flags": 0, "healthy": healthy})
}

/// A balancer with VIP 10.0.0.1:80/tcp and reals 10.1.0.1, 10.1.0.2 (weight 1).
async fn with_vip() -> Api {
    let api = Api::new();
    api.create().await;
    api.add_vip("10.0.0.1", 80, 6, 0).await;
    api.add_real(vip("10.0.0.1", 80, 6), "10.1.0.1", 1).await;
    api.add_real(vip("10.0.0.1", 80, 6), "10.1.0.2", 1).await;
    api
}

async fn put(api: &Api, uri: &str, body: Value) -> Answer {
    api.send("PUT", uri, body).await
}

#[track_caller]
fn assert_ok(answer: &Answer) {
    assert_eq!((answer.status, &answer.body), (StatusCode::OK, &ok()));
}

/// The lines of the metrics exposition that start with `prefix`.
fn metric_lines(api: &Api, prefix: &str) -> Vec<String> {
    let metrics = weir_agent::metrics::Metrics::new(&api.state.datapath(), Default::default());
    metrics.encode().lines().filter(|l| l.starts_with(prefix)).map(str::to_owned).collect()
}

#[tokio::test]
async fn real_health_updates_one_by_one_and_in_batches() {
    if skip_without_root("real_health_updates_one_by_one_and_in_batches") {
        return;
    }
    let api = with_vip().await;
    let key = vip("10.0.0.1", 80, 6);
    assert_eq!(api.data(REALS).await, json!([real("10.1.0.1", 1, true), real("10.1.0.2", 1, true)]));

    let down = json!({"vip": key, "address": "10.1.0.1", "healthy": false});
    assert_ok(&put(&api, "/api/v1/vips/reals/health", down.clone()).await);
    assert_ok(&put(&api, "/api/v1/vips/reals/health", down).await); // no change: a no-op
    assert_eq!(api.data(REALS).await, json!([real("10.1.0.1", 1, false), real("10.1.0.2", 1, true)]));
    // katran-cli's `real update` re-adds with "healthy": false, ignored: the real keeps its health.
    let update = json!({"vip": key, "real": {"address": "10.1.0.2", "weight": 5, "flags": 0, "healthy": false}});
    assert_eq!(api.send("POST", "/api/v1/vips/reals", update).await.status, StatusCode::CREATED);
    let readd = json!({"vip": key, "action": 0, "reals": [{"address": "10.1.0.1", "weight": 2, "healthy": true}]});
    assert_ok(&put(&api, "/api/v1/vips/reals/batch", readd).await);
    assert_eq!(api.data(REALS).await, json!([real("10.1.0.1", 2, false), real("10.1.0.2", 5, true)]));
    assert_eq!(api.data("/api/v1/vips").await, json!([key]), "not failing open");
    assert_eq!(
        metric_lines(&api, "weir_agent_real_healthy{"),
        [
            r#"weir_agent_real_healthy{address="10.0.0.1",port="80",proto="tcp",real="10.1.0.1"} 0"#,
            r#"weir_agent_real_healthy{address="10.0.0.1",port="80",proto="tcp",real="10.1.0.2"} 1"#,
        ]
    );

    // A batch: both down (an unknown address is skipped) → fail open, said by /vips and the metric.
    let batch = json!({"vip": key, "reals": [
        {"address": "10.1.0.2", "healthy": false}, {"address": "10.9.9.9", "healthy": true}]});
    assert_ok(&put(&api, "/api/v1/vips/reals/health/batch", batch).await);
    assert_eq!(api.data(REALS).await, json!([real("10.1.0.1", 2, false), real("10.1.0.2", 5, false)]));
    assert_eq!(
        api.data("/api/v1/vips").await,
        json!([{"address": "10.0.0.1", "port": 80, "proto": 6, "fail_open": true}])
    );
    assert_eq!(
        metric_lines(&api, "weir_agent_vip_fail_open{"),
        [r#"weir_agent_vip_fail_open{address="10.0.0.1",port="80",proto="tcp"} 1"#]
    );
    let up = json!({"vip": key, "reals": [{"address": "10.1.0.1", "healthy": true}, {"address": "10.1.0.2", "healthy": true}]});
    assert_ok(&put(&api, "/api/v1/vips/reals/health/batch", up).await);
    assert_eq!(api.data(REALS).await, json!([real("10.1.0.1", 2, true), real("10.1.0.2", 5, true)]));
}

#[tokio::test]
async fn real_health_errors() {
    if skip_without_root("real_health_errors") {
        return;
    }
    let before = Api::new();
    // 503 before the balancer exists, whatever the body.
    for (uri, body) in [("/api/v1/vips/reals/health", "nonsense"), ("/api/v1/vips/reals/health/batch", "{}")] {
        let answer = before.raw("PUT", uri, Some(body)).await;
        assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "LB_NOT_INITIALIZED", "POST /api/v1/lb/create first");
    }
    let api = with_vip().await;
    let key = vip("10.0.0.1", 80, 6);
    let cases = [
        (
            json!({"vip": key, "address": "10.1.0.1"}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "missing field `healthy`",
        ),
        (
            json!({"vip": key, "address": "10.1.0", "healthy": true}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "address: \"10.1.0\" is not an IP address",
        ),
        (
            json!({"vip": vip("10.0.0.1", 81, 6), "address": "10.1.0.1", "healthy": true}),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "VIP 10.0.0.1:81/tcp not found",
        ),
        (
            json!({"vip": key, "address": "10.1.0.9", "healthy": true}),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "real 10.1.0.9 of VIP 10.0.0.1:80/tcp not found",
        ),
    ];
    for (body, status, code, needle) in cases {
        assert_error(&put(&api, "/api/v1/vips/reals/health", body).await, status, code, needle);
    }
    let twice = json!({"vip": key, "reals": [
        {"address": "10.1.0.1", "healthy": false}, {"address": "10.1.0.1", "healthy": true}]});
    let answer = put(&api, "/api/v1/vips/reals/health/batch", twice).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "10.1.0.1 appears twice in one batch");
    let bad = json!({"vip": key, "reals": [{"address": "x", "healthy": false}]});
    let answer = put(&api, "/api/v1/vips/reals/health/batch", bad).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "reals[0].address: \"x\" is not an IP address");
    let unknown = json!({"vip": vip("10.0.0.2", 80, 6), "reals": []});
    let answer = put(&api, "/api/v1/vips/reals/health/batch", unknown).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND", "VIP 10.0.0.2:80/tcp not found");
    // Nothing changed.
    assert_eq!(api.data(REALS).await, json!([real("10.1.0.1", 1, true), real("10.1.0.2", 1, true)]));
}

#[tokio::test]
async fn a_vip_health_check_is_stored_with_its_defaults() {
    if skip_without_root("a_vip_health_check_is_stored_with_its_defaults") {
        return;
    }
    let api = with_vip().await;
    let key = vip("10.0.0.1", 80, 6);
    // No check: `hc config` finds no `type`, `vip show` says "No healthcheck configured".
    assert_eq!(api.call("GET", CHECK).await.body, ok());
    assert_error(
        &api.call("GET", STATUS).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "health check of VIP 10.0.0.1:80/tcp not found",
    );
    assert_ok(
        &put(&api, "/api/v1/vips/reals/health", json!({"vip": key, "address": "10.1.0.2", "healthy": false})).await,
    );

    // dummy: defaults stored (shown, even for dummy), every real healthy.
    assert_ok(
        &put(
            &api,
            "/api/v1/vips/healthcheck",
            json!({"vip": key, "healthcheck": {"type": "dummy", "interval_ms": -1}}),
        )
        .await,
    );
    let defaults = json!({"type": "dummy", "port": 80, "interval_ms": 5000, "timeout_ms": 2000,
        "healthy_threshold": 3, "unhealthy_threshold": 3});
    assert_eq!(api.call("GET", CHECK).await.body, data(defaults.clone()));
    let status = |healthy: bool| {
        json!({"vip": key, "fail_open": false, "reals": [
        {"address": "10.1.0.1", "healthy": true, "consecutive_failures": 0},
        {"address": "10.1.0.2", "healthy": healthy, "consecutive_failures": 0}]})
    };
    assert_eq!(api.call("GET", STATUS).await.body, data(status(true)));
    // The same by JSON body (as the other GETs take).
    assert_eq!(api.send("GET", "/api/v1/vips/healthcheck", key.clone()).await.body, data(defaults));

    // Replaced: a sub-object that does not match the type is kept.
    let body = json!({"vip": key, "healthcheck": {"type": "dummy", "port": 8080, "http": {"path": "/h"},
        "interval_ms": 1000, "timeout_ms": 500, "healthy_threshold": 1, "unhealthy_threshold": 7}});
    assert_ok(&put(&api, "/api/v1/vips/healthcheck", body).await);
    assert_eq!(
        api.data(CHECK).await,
        json!({"type": "dummy", "port": 8080, "http": {"path": "/h", "expected_status": 200}, "interval_ms": 1000,
            "timeout_ms": 500, "healthy_threshold": 1, "unhealthy_threshold": 7})
    );

    // Deleted: the reals keep their health; a second delete is 404.
    assert_ok(
        &put(&api, "/api/v1/vips/reals/health", json!({"vip": key, "address": "10.1.0.2", "healthy": false})).await,
    );
    assert_ok(&api.send("DELETE", "/api/v1/vips/healthcheck", key.clone()).await);
    assert_eq!(api.call("GET", CHECK).await.body, ok());
    assert_eq!(api.data(REALS).await, json!([real("10.1.0.1", 1, true), real("10.1.0.2", 1, false)]));
    let again = api.call("DELETE", CHECK).await;
    assert_error(&again, StatusCode::NOT_FOUND, "NOT_FOUND", "health check of VIP 10.0.0.1:80/tcp not found");
}

#[tokio::test]
async fn health_check_errors_come_in_the_documented_order() {
    if skip_without_root("health_check_errors_come_in_the_documented_order") {
        return;
    }
    let before = Api::new();
    let answer = before.raw("PUT", "/api/v1/vips/healthcheck", Some("nonsense")).await;
    assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "LB_NOT_INITIALIZED", "lb/create");
    for uri in [CHECK, STATUS] {
        assert_error(
            &before.call("GET", uri).await,
            StatusCode::SERVICE_UNAVAILABLE,
            "LB_NOT_INITIALIZED",
            "lb/create",
        );
    }

    let api = with_vip().await;
    api.add_vip("10.0.0.3", 0, 6, 0).await;
    let key = vip("10.0.0.1", 80, 6);
    let hc = |check: Value| json!({"vip": key, "healthcheck": check});
    let cases: Vec<(Value, StatusCode, &str, &str)> = vec![
        (json!({"vip": key}), StatusCode::BAD_REQUEST, "INVALID_REQUEST", "missing field `healthcheck`"),
        // An unknown VIP before a bad check.
        (
            json!({"vip": vip("10.0.0.9", 80, 6), "healthcheck": {"type": "icmp"}}),
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "VIP 10.0.0.9:80/tcp not found",
        ),
        (
            hc(json!({"type": "icmp"})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "type: \"icmp\" is not \"http\", \"https\", \"tcp\", \"udp\" or \"dummy\"",
        ),
        (hc(json!({})), StatusCode::BAD_REQUEST, "INVALID_REQUEST", "type: \"\" is not"),
        // timeout below interval after defaults.
        (
            hc(json!({"type": "dummy", "interval_ms": 1000})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "timeout_ms: 2000 must be below interval_ms (1000)",
        ),
        (
            hc(json!({"type": "dummy", "port": 70000})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "port: 70000 is not 0-65535",
        ),
        (
            json!({"vip": vip("10.0.0.3", 0, 6), "healthcheck": {"type": "tcp"}}),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "port: required for the port-less VIP 10.0.0.3:0/tcp",
        ),
        (hc(json!({"type": "http"})), StatusCode::BAD_REQUEST, "INVALID_REQUEST", "http: required for type http"),
        (
            hc(json!({"type": "https", "https": {"path": ""}})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "https.path: required (non-empty) for type https",
        ),
        (
            hc(json!({"type": "http", "http": {"path": "/", "expected_status": 700}})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "http.expected_status: 700 is not an HTTP status (100-599)",
        ),
        (hc(json!({"type": "udp"})), StatusCode::BAD_REQUEST, "INVALID_REQUEST", "udp: required for type udp"),
        (
            hc(json!({"type": "udp", "udp": {"payload": ""}})),
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "udp.payload: required (non-empty) for type udp",
        ),
        // A valid check that probes, without the prober.
        (
            hc(json!({"type": "udp", "udp": {"payload": "ping"}})),
            StatusCode::NOT_IMPLEMENTED,
            "FEATURE_DISABLED",
            "a udp health check without the prober",
        ),
        (
            hc(json!({"type": "tcp"})),
            StatusCode::NOT_IMPLEMENTED,
            "FEATURE_DISABLED",
            "a tcp health check without the prober",
        ),
        (
            hc(json!({"type": "http", "http": {"path": "/"}})),
            StatusCode::NOT_IMPLEMENTED,
            "FEATURE_DISABLED",
            "a http health check without the prober",
        ),
    ];
    for (body, status, code, needle) in cases {
        let answer = put(&api, "/api/v1/vips/healthcheck", body.clone()).await;
        assert_error(&answer, status, code, needle);
        assert_eq!(api.call("GET", CHECK).await.body, ok(), "{body}: nothing stored");
    }
    let unknown = "/api/v1/vips/healthcheck?address=10.0.0.9&port=80&proto=6";
    assert_error(&api.call("GET", unknown).await, StatusCode::NOT_FOUND, "NOT_FOUND", "VIP 10.0.0.9:80/tcp not found");
    assert_error(
        &api.call("DELETE", unknown).await,
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "VIP 10.0.0.9:80/tcp not found",
    );
    assert_error(
        &api.call("GET", "/api/v1/vips/healthcheck?address=x&port=80&proto=6").await,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "address: \"x\" is not an IP address",
    );
}

#[tokio::test]
async fn with_the_prober_new_reals_start_unhealthy_and_checks_that_probe_are_stored() {
    if skip_without_root("with_the_prober_new_reals_start_unhealthy_and_checks_that_probe_are_stored") {
        return;
    }
    let api = with_vip().await;
    api.state.balancer.write().unwrap().as_mut().unwrap().set_prober_enabled(true).unwrap();
    let key = vip("10.0.0.1", 80, 6);
    api.add_real(key.clone(), "10.1.0.3", 1).await;
    assert_eq!(
        api.data(REALS).await,
        json!([real("10.1.0.1", 1, true), real("10.1.0.2", 1, true), real("10.1.0.3", 1, false)])
    );
    let https = json!({"vip": key, "healthcheck": {"type": "https", "port": 8443,
        "https": {"path": "/ready", "expected_status": 204, "host": "web.example"}}});
    assert_ok(&put(&api, "/api/v1/vips/healthcheck", https).await);
    assert_eq!(
        api.data(CHECK).await,
        json!({"type": "https", "port": 8443,
            "https": {"path": "/ready", "expected_status": 204, "host": "web.example", "skip_tls_verify": false},
            "interval_ms": 5000, "timeout_ms": 2000, "healthy_threshold": 3, "unhealthy_threshold": 3})
    );
    // Without probes (this agent runs no prober): no times, 0 failures.
    assert_eq!(
        api.data(STATUS).await,
        json!({"vip": key, "fail_open": false, "reals": [
            {"address": "10.1.0.1", "healthy": true, "consecutive_failures": 0},
            {"address": "10.1.0.2", "healthy": true, "consecutive_failures": 0},
            {"address": "10.1.0.3", "healthy": false, "consecutive_failures": 0}]})
    );
}

#[tokio::test]
async fn the_export_carries_health_and_checks_and_rebuilds_them() {
    if skip_without_root("the_export_carries_health_and_checks_and_rebuilds_them") {
        return;
    }
    let api = with_vip().await;
    let key = vip("10.0.0.1", 80, 6);
    assert_ok(
        &put(&api, "/api/v1/vips/reals/health", json!({"vip": key, "address": "10.1.0.2", "healthy": false})).await,
    );
    assert_ok(
        &put(&api, "/api/v1/vips/healthcheck", json!({"vip": key, "healthcheck": {"type": "dummy", "port": 81}})).await,
    );
    // dummy made every real healthy: take one down again for the export.
    assert_ok(
        &put(&api, "/api/v1/vips/reals/health", json!({"vip": key, "address": "10.1.0.2", "healthy": false})).await,
    );
    let doc = api.data("/api/v1/config/export/json").await;
    assert_eq!(doc["target_groups"], json!({"group-0": [real("10.1.0.1", 1, true), real("10.1.0.2", 1, false)]}));
    assert_eq!(
        doc["vips"][0]["healthcheck"],
        json!({"type": "dummy", "port": 81, "interval_ms": 5000, "timeout_ms": 2000, "healthy_threshold": 3,
            "unhealthy_threshold": 3})
    );
    assert_eq!(doc["lb"]["features"].get("healthchecker_endpoint"), None, "no prober");
    // YAML names `healthy` only when true.
    let yaml = api.call("GET", "/api/v1/config/export").await.body.as_str().unwrap().to_owned();
    let group: Value = serde_yaml::from_str::<Value>(&yaml).unwrap()["target_groups"]["group-0"].clone();
    assert_eq!(
        group,
        json!([{"address": "10.1.0.1", "weight": 1, "flags": 0, "healthy": true}, {"address": "10.1.0.2", "weight": 1, "flags": 0}])
    );

    // Import with the prober (healthchecker_endpoint): reals start unhealthy
    // unless the document says healthy: true. It needs an agent that runs one.
    let mut with_prober: Value = serde_yaml::from_str(&yaml).unwrap();
    with_prober["lb"]["features"]["healthchecker_endpoint"] = json!("builtin");
    with_prober["vips"][0]["healthcheck"] = json!({"type": "tcp"});
    let without = Api::new();
    let err = weir_agent::api::import_document(&without.state, with_prober.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        (err.status, err.message.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "lb.features.healthchecker_endpoint: weir's prober is off: start weir-agent with --prober"
        )
    );
    assert!(without.state.balancer.read().unwrap().is_none(), "nothing was created");
    let fresh = Api::with_prober();
    weir_agent::api::import_document(&fresh.state, with_prober.to_string().as_bytes()).unwrap();
    assert_eq!(fresh.data(REALS).await, json!([real("10.1.0.1", 1, true), real("10.1.0.2", 1, false)]));
    let exported = fresh.data("/api/v1/config/export/json").await;
    assert_eq!(exported["lb"]["features"]["healthchecker_endpoint"], json!("builtin"));
    assert_eq!(exported["vips"][0]["healthcheck"]["type"], json!("tcp"));
    assert_eq!(exported["vips"][0]["healthcheck"]["port"], json!(80));

    // A check that probes without healthchecker_endpoint is a document error: nothing is created.
    let mut no_prober: Value = serde_yaml::from_str(&yaml).unwrap();
    no_prober["vips"][0]["healthcheck"] = json!({"type": "tcp"});
    let other = Api::new();
    let err = weir_agent::api::import_document(&other.state, no_prober.to_string().as_bytes()).unwrap_err();
    assert_eq!(
        (err.status, err.message.as_str()),
        (
            StatusCode::BAD_REQUEST,
            "vips[0].healthcheck: a tcp check needs lb.features.healthchecker_endpoint (weir's prober)"
        )
    );
    assert!(other.state.balancer.read().unwrap().is_none());
}
