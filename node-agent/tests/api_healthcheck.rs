//! Katran's healthcheck API over HTTP (`/healthcheck/dsts`, `/healthcheck/keys`,
//! `/stats/hc-prog`, `/utils/hc-prog-fd`, DirectHC in `/features`), against a
//! testing balancer created with `enable_hc` (its healthcheck program loaded
//! with private maps, not attached): exact codes and bodies, the requests
//! katran-cli sends (`hc dst list|add|remove`), bad input that changes
//! nothing, and the counters of probes run through the real program. Tests
//! that need root print `SKIPPED (needs root): <test>` and return.

mod support {
    pub mod api;
}

use std::net::IpAddr;

use axum::http::StatusCode;
use serde_json::{json, Value};
use support::api::*;
use weir_agent::dataplane::healthcheck::{PROBER_MARKS, TC_ACT_OK, TC_ACT_UNSPEC};
use weir_test_support::packet::{sock, syn, udp};

/// A testing balancer that runs its healthcheck program, on `lo` (ifindex 1).
const CREATE_HC: &str = r#"{"testing": true, "enable_hc": true, "main_interface": "lo", "max_vips": 8,
    "max_reals": 32, "lru_size": 1024, "default_mac": "02:00:00:00:00:01", "katran_src_v4": "10.9.9.9"}"#;
const LO: u32 = 1;

async fn hc_api() -> Api {
    let api = Api::new();
    let answer = api.raw("POST", "/api/v1/lb/create", Some(CREATE_HC)).await;
    assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()), "create");
    api
}

fn zero_stats() -> Value {
    json!({"packets_processed": 0, "packets_dropped": 0, "packets_skipped": 0, "packets_too_big": 0})
}

/// Runs `frame` with socket mark `mark` through the balancer's healthcheck
/// program, leaving by `lo`; the TC verdict.
fn probe(api: &Api, frame: &[u8], mark: u32) -> i32 {
    let guard = api.state.balancer.read().unwrap();
    let hc = guard.as_ref().unwrap().healthchecker().unwrap();
    hc.simulate(frame, mark, LO).unwrap().verdict
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Every endpoint of the module and a body it would accept.
fn calls() -> Vec<(&'static str, &'static str, Option<Value>)> {
    vec![
        ("GET", "/api/v1/healthcheck/dsts", None),
        ("POST", "/api/v1/healthcheck/dsts", Some(json!({"somark": 100, "dst": "10.0.0.2"}))),
        ("DELETE", "/api/v1/healthcheck/dsts", Some(json!({"somark": 100}))),
        ("POST", "/api/v1/healthcheck/keys", Some(vip("10.0.0.1", 80, 6))),
        ("DELETE", "/api/v1/healthcheck/keys", Some(vip("10.0.0.1", 80, 6))),
        ("GET", "/api/v1/stats/hc-prog", None),
        ("GET", "/api/v1/utils/hc-prog-fd", None),
    ]
}

async fn send(api: &Api, method: &str, uri: &str, body: &Option<Value>) -> Answer {
    match body {
        Some(body) => api.send(method, uri, body.clone()).await,
        None => api.call(method, uri).await,
    }
}

#[tokio::test]
async fn before_create_every_call_is_503() {
    let api = Api::new();
    for (method, uri, body) in calls() {
        let answer = send(&api, method, uri, &body).await;
        assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "LB_NOT_INITIALIZED", "");
    }
    assert_eq!(api.data("/api/v1/features/check?feature=16").await, json!({"available": false}));
}

#[tokio::test]
async fn without_enable_hc_every_call_is_501_naming_it() {
    if skip_without_root("without_enable_hc_every_call_is_501_naming_it") {
        return;
    }
    let api = Api::new();
    api.create().await;
    for (method, uri, body) in calls() {
        let answer = send(&api, method, uri, &body).await;
        assert_error(&answer, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "created without enable_hc: true");
    }
    assert_eq!(api.data("/api/v1/features/check?feature=16").await, json!({"available": false}));
    let answer = api.send("POST", "/api/v1/features/install", json!({"feature": 16})).await;
    assert_error(&answer, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "create it with enable_hc: true");
    assert_eq!(api.data("/api/v1/lb/status").await["programs"]["healthcheck"], Value::Null);
}

#[tokio::test]
async fn katran_cli_hc_dst_list_add_remove() {
    if skip_without_root("katran_cli_hc_dst_list_add_remove") {
        return;
    }
    let api = hc_api().await;
    assert_eq!(api.call("GET", "/api/v1/healthcheck/dsts").await.body, data(json!([])));
    // `hc dst add 100 192.168.1.1`, then an IPv6 real, then a replacement.
    for (somark, dst) in [(100, "192.168.1.1"), (101, "fc00::2"), (7, "10.0.0.3"), (7, "10.0.0.4")] {
        let answer = api.send("POST", "/api/v1/healthcheck/dsts", json!({"somark": somark, "dst": dst})).await;
        assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()), "add {somark} {dst}");
    }
    assert_eq!(
        api.call("GET", "/api/v1/healthcheck/dsts").await.body,
        data(json!([
            {"somark": 7, "dst": "10.0.0.4"},
            {"somark": 100, "dst": "192.168.1.1"},
            {"somark": 101, "dst": "fc00::2"},
        ]))
    );
    // `hc dst remove 100`; removing it again is 404 (katran's delHealthcheckerDst returns false).
    let answer = api.send("DELETE", "/api/v1/healthcheck/dsts", json!({"somark": 100})).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    let answer = api.send("DELETE", "/api/v1/healthcheck/dsts", json!({"somark": 100})).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND", "somark: no healthcheck destination has mark 100");
    assert_eq!(
        api.data("/api/v1/healthcheck/dsts").await,
        json!([{"somark": 7, "dst": "10.0.0.4"}, {"somark": 101, "dst": "fc00::2"}])
    );
}

#[tokio::test]
async fn bad_dsts_are_400_and_change_nothing() {
    if skip_without_root("bad_dsts_are_400_and_change_nothing") {
        return;
    }
    let api = hc_api().await;
    let answer = api.send("POST", "/api/v1/healthcheck/dsts", json!({"somark": 5, "dst": "10.0.0.5"})).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let prober = *PROBER_MARKS.start();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("POST", json!({"somark": 0, "dst": "10.0.0.2"}), "somark: 0 marks no socket"),
        ("POST", json!({"somark": prober, "dst": "10.0.0.2"}), "reserved for weir's own prober"),
        ("POST", json!({"somark": PROBER_MARKS.end(), "dst": "10.0.0.2"}), "reserved for weir's own prober"),
        ("POST", json!({"somark": 5, "dst": "10.0.0"}), "dst: \"10.0.0\" is not an IP address"),
        ("POST", json!({"somark": 5, "dst": "224.0.0.1"}), "dst: 224.0.0.1 must not be a multicast address"),
        ("POST", json!({"somark": 5, "dst": "0.0.0.0"}), "must not be the unspecified address"),
        ("POST", json!({"somark": 5, "dst": "::ffff:10.0.0.9"}), "IPv4-mapped"),
        ("POST", json!({"somark": 5}), "dst"),
        ("POST", json!({"somark": -1, "dst": "10.0.0.2"}), "somark"),
        ("POST", json!({"somark": 4294967296u64, "dst": "10.0.0.2"}), "somark"),
        ("DELETE", json!({"somark": 0}), "somark: 0 marks no socket"),
        ("DELETE", json!({"somark": prober}), "reserved for weir's own prober"),
        ("DELETE", json!({}), "somark"),
    ];
    for (method, body, needle) in cases {
        let answer = api.send(method, "/api/v1/healthcheck/dsts", body.clone()).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST", needle);
    }
    let answer = api.raw("POST", "/api/v1/healthcheck/dsts", Some("{\"somark\":")).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "");
    assert_eq!(api.data("/api/v1/healthcheck/dsts").await, json!([{"somark": 5, "dst": "10.0.0.5"}]));
    // The unparsable address and the three that are not unicast were counted,
    // as katran counts refused addresses.
    assert_eq!(api.data("/api/v1/stats/userspace").await["addr_validation_failed"], json!(4));
}

#[tokio::test]
async fn keys_are_added_once_and_deleted_once() {
    if skip_without_root("keys_are_added_once_and_deleted_once") {
        return;
    }
    let api = hc_api().await;
    let key = vip("10.0.0.1", 80, 6);
    let answer = api.send("POST", "/api/v1/healthcheck/keys", key.clone()).await;
    assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
    let answer = api.send("POST", "/api/v1/healthcheck/keys", key.clone()).await;
    assert_error(&answer, StatusCode::CONFLICT, "ALREADY_EXISTS", "healthcheck key 10.0.0.1:80/tcp");
    let answer = api.send("DELETE", "/api/v1/healthcheck/keys", key.clone()).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    let answer = api.send("DELETE", "/api/v1/healthcheck/keys", key.clone()).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND", "healthcheck key 10.0.0.1:80/tcp");
    for (body, needle) in [
        (vip("10.0.0", 80, 6), "address: \"10.0.0\" is not an IP address"),
        (json!({"address": "10.0.0.1", "port": 65536, "proto": 6}), "port"),
        (json!({"address": "10.0.0.1", "port": 80, "proto": 256}), "proto"),
        (json!({"address": "10.0.0.1", "port": 80}), "proto"),
    ] {
        for method in ["POST", "DELETE"] {
            let answer = api.send(method, "/api/v1/healthcheck/keys", body.clone()).await;
            assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST", needle);
        }
    }
}

#[tokio::test]
async fn hc_prog_counts_probes_and_keys() {
    if skip_without_root("hc_prog_counts_probes_and_keys") {
        return;
    }
    let api = hc_api().await;
    assert_eq!(api.call("GET", "/api/v1/stats/hc-prog").await.body, data(zero_stats()));
    api.send("POST", "/api/v1/healthcheck/dsts", json!({"somark": 100, "dst": "10.0.0.2"})).await;
    api.send("POST", "/api/v1/healthcheck/keys", vip("10.100.0.1", 80, 6)).await;

    let to_vip = syn(sock(ip("192.168.0.7"), 40000), sock(ip("10.100.0.1"), 80));
    assert_eq!(probe(&api, &to_vip, 100), TC_ACT_OK, "a probe, encapsulated, leaves by lo");
    assert_eq!(probe(&api, &to_vip, 100), TC_ACT_OK);
    assert_eq!(probe(&api, &to_vip, 0), TC_ACT_UNSPEC, "unmarked: not a probe");
    assert_eq!(probe(&api, &to_vip, 555), TC_ACT_UNSPEC, "a mark without a real: not a probe");
    // An IPv6 probe to the IPv4 real cannot leave as VIP traffic would: dropped.
    let v6 = udp(sock(ip("fd00::7"), 40000), sock(ip("2001:db8::1"), 53));
    assert_eq!(probe(&api, &v6, 100), weir_agent::dataplane::healthcheck::TC_ACT_SHOT);
    assert_eq!(
        api.call("GET", "/api/v1/stats/hc-prog").await.body,
        data(json!({"packets_processed": 2, "packets_dropped": 1, "packets_skipped": 2, "packets_too_big": 0}))
    );
    {
        let guard = api.state.balancer.read().unwrap();
        let hc = guard.as_ref().unwrap().healthchecker().unwrap();
        // The first key takes index 0; both probes were to its VIP.
        assert_eq!(hc.key_packets(0).unwrap(), 2);
        // The control entry comes from the configuration.
        let ctl = hc.ctl();
        assert_eq!((ctl.ifindex, ctl.mtu, ctl.dst_mac, ctl.src_v4), (LO, 1500, [2, 0, 0, 0, 0, 1], [10, 9, 9, 9]));
    }
    // A deleted key's counter starts again at 0 when its index is reused.
    api.send("DELETE", "/api/v1/healthcheck/keys", vip("10.100.0.1", 80, 6)).await;
    api.send("POST", "/api/v1/healthcheck/keys", vip("10.100.0.2", 80, 6)).await;
    let guard = api.state.balancer.read().unwrap();
    assert_eq!(guard.as_ref().unwrap().healthchecker().unwrap().key_packets(0).unwrap(), 0);
}

#[tokio::test]
async fn hc_prog_fd_is_the_classifier_and_mac_changes_reach_probes() {
    if skip_without_root("hc_prog_fd_is_the_classifier_and_mac_changes_reach_probes") {
        return;
    }
    let api = hc_api().await;
    let fd = api.data("/api/v1/utils/hc-prog-fd").await["fd"].as_i64().expect("an fd");
    let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).unwrap();
    // BPF_PROG_TYPE_SCHED_CLS is 3.
    assert!(info.lines().any(|l| l == "prog_type:\t3"), "{info}");
    assert_ne!(fd, api.data("/api/v1/utils/prog-fd").await["fd"].as_i64().unwrap());

    let answer = api.send("PUT", "/api/v1/utils/mac", json!({"mac": "02:00:00:00:00:bb"})).await;
    assert_eq!(answer.status, StatusCode::OK);
    {
        let guard = api.state.balancer.read().unwrap();
        let ctl = guard.as_ref().unwrap().healthchecker().unwrap().ctl();
        assert_eq!(ctl.dst_mac, [2, 0, 0, 0, 0, 0xbb]);
    }

    assert_eq!(api.data("/api/v1/features/check?feature=16").await, json!({"available": true}));
    let answer = api.send("POST", "/api/v1/features/install", json!({"feature": 16})).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    let answer = api.send("POST", "/api/v1/features/remove", json!({"feature": 16})).await;
    assert_error(&answer, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "DirectHC");
    assert_eq!(
        api.data("/api/v1/lb/status").await["programs"]["healthcheck"],
        json!(format!("weir_healthcheck, built into weir-agent {}", env!("CARGO_PKG_VERSION")))
    );
    let export = api.data("/api/v1/config/export/json").await;
    assert_eq!(export["lb"]["features"]["enable_healthcheck"], json!(true));
}

#[tokio::test]
async fn a_program_path_alone_enables_the_built_in_program() {
    if skip_without_root("a_program_path_alone_enables_the_built_in_program") {
        return;
    }
    let api = Api::new();
    let body = json!({"testing": true, "healthchecking_prog_path": "/opt/katran/healthchecking_ipip.o",
        "max_vips": 8, "max_reals": 32, "lru_size": 1024});
    let answer = api.send("POST", "/api/v1/lb/create", body).await;
    assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
    assert_eq!(api.call("GET", "/api/v1/stats/hc-prog").await.body, data(zero_stats()));
    assert_eq!(
        api.data("/api/v1/lb/status").await["notices"],
        json!(["healthchecking_prog_path /opt/katran/healthchecking_ipip.o: not loaded; weir runs its built-in \
                healthcheck program"])
    );
}
