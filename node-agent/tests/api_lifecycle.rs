//! The balancer's lifecycle over HTTP: 503 LB_NOT_INITIALIZED before
//! `/lb/create`, create (201) and its refusals, 409 on a second create,
//! status, Katran's load/attach phases, reload, close and create again.
//! Everything but the 503 table loads the BPF program: without root those
//! parts print `SKIPPED (needs root)`.

mod support {
    pub mod api;
}

use axum::http::StatusCode;
use serde_json::json;

use support::api::*;

/// VIP, real, stats, LRU and utils endpoints with a valid request: each
/// answers 503 before `/lb/create`.
fn needs_balancer() -> Vec<(&'static str, &'static str, serde_json::Value)> {
    let key = vip("10.0.0.1", 80, 6);
    let real = json!({"address": "10.1.0.1", "weight": 1, "flags": 0});
    vec![
        ("GET", "/api/v1/vips", json!({})),
        ("POST", "/api/v1/vips", json!({"address": "10.0.0.1", "port": 80, "proto": 6, "flags": 0})),
        ("DELETE", "/api/v1/vips", key.clone()),
        ("GET", "/api/v1/vips/flags", key.clone()),
        ("PUT", "/api/v1/vips/flags", json!({"address": "10.0.0.1", "port": 80, "proto": 6, "flag": 1, "set": true})),
        (
            "PUT",
            "/api/v1/vips/hash-function",
            json!({"address": "10.0.0.1", "port": 80, "proto": 6, "hash_function": 1}),
        ),
        ("GET", "/api/v1/vips/reals", key.clone()),
        ("POST", "/api/v1/vips/reals", json!({"vip": key, "real": real})),
        ("DELETE", "/api/v1/vips/reals", json!({"vip": key, "real": real})),
        ("PUT", "/api/v1/vips/reals/batch", json!({"vip": key, "action": 0, "reals": [real]})),
        ("GET", "/api/v1/reals/index", json!({"address": "10.1.0.1"})),
        ("PUT", "/api/v1/reals/flags", json!({"address": "10.1.0.1", "flags": 2, "set": true})),
        ("GET", "/api/v1/stats/vip", key.clone()),
        ("GET", "/api/v1/stats/real", json!({"index": 1})),
        ("GET", "/api/v1/stats/lru", json!({})),
        ("GET", "/api/v1/stats/lru/miss", json!({})),
        ("GET", "/api/v1/stats/lru/fallback", json!({})),
        ("GET", "/api/v1/stats/icmp-too-big", json!({})),
        ("GET", "/api/v1/stats/ch-drop", json!({})),
        ("GET", "/api/v1/stats/xdp/total", json!({})),
        ("GET", "/api/v1/stats/xdp/tx", json!({})),
        ("GET", "/api/v1/stats/xdp/drop", json!({})),
        ("GET", "/api/v1/stats/xdp/pass", json!({})),
        ("GET", "/api/v1/stats/bpf-map", json!({"map_name": "vip_map"})),
        ("GET", "/api/v1/stats/userspace", json!({})),
        ("GET", "/api/v1/stats/per-core-packets", json!({})),
        ("GET", "/api/v1/stats/flood-status", json!({})),
        ("DELETE", "/api/v1/lru", json!({"dst_vip": key, "src_ip": "192.0.2.1", "src_port": 1234})),
        ("DELETE", "/api/v1/lru/vip", key.clone()),
        ("GET", "/api/v1/utils/mac", json!({})),
        ("PUT", "/api/v1/utils/mac", json!({"mac": "02:00:00:00:00:02"})),
        (
            "GET",
            "/api/v1/utils/real-for-flow",
            json!({"src": "192.0.2.1", "dst": "10.0.0.1", "src_port": 1234, "dst_port": 80, "proto": 6}),
        ),
        ("POST", "/api/v1/utils/simulate-packet", json!({"packet": "AAAAAAAAAAAAAAAAAAAA"})),
        ("GET", "/api/v1/utils/prog-fd", json!({})),
        ("GET", "/api/v1/utils/map-fd", json!({"map_name": "vip_map"})),
        ("POST", "/api/v1/lb/close", json!({})),
        ("POST", "/api/v1/lb/load-bpf-progs", json!({})),
        ("POST", "/api/v1/lb/attach-bpf-progs", json!({})),
        ("POST", "/api/v1/lb/reload", json!({})),
    ]
}

#[tokio::test]
async fn everything_is_503_before_create() {
    let api = Api::new();
    for (method, path, body) in needs_balancer() {
        let answer = api.send(method, path, body).await;
        assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "LB_NOT_INITIALIZED", "POST /api/v1/lb/create first");
    }
    // The userspace counters did not move: nothing reached a Balancer.
    assert_eq!(api.state.counters.snapshot(), Default::default());
}

#[tokio::test]
async fn create_status_close_create() {
    if skip_without_root("create_status_close_create") {
        return;
    }
    let api = Api::new();
    api.create().await;
    let status = api.call("GET", "/api/v1/lb/status").await;
    assert_eq!(
        (status.status, status.body),
        (
            StatusCode::OK,
            data(
                json!({"initialized": true, "ready": true, "programs": {"balancer": format!("weir_balancer, built into weir-agent {}", env!("CARGO_PKG_VERSION")), "healthcheck": null}, "map_memory_bytes": map_memory(&api)})
            )
        )
    );

    // A second create, valid or not in itself, is 409 while a balancer exists.
    let again = api.raw("POST", "/api/v1/lb/create", Some(CREATE_TESTING)).await;
    assert_error(&again, StatusCode::CONFLICT, "ALREADY_EXISTS", "already exists");

    // The configuration came through: sizes, MAC, hash function of new VIPs.
    {
        let guard = api.state.balancer.read().unwrap();
        let config = guard.as_ref().unwrap().config();
        assert_eq!((config.max_vips, config.max_reals, config.lru_size, config.ch_ring_size), (8, 32, 1024, 65537));
        assert!(config.testing && config.pin_root.is_none());
    }
    assert_eq!(api.data("/api/v1/utils/mac").await, json!({"mac": "02:00:00:00:00:01"}));

    // Katran's two phases: create did both that a testing balancer has.
    let load = api.call("POST", "/api/v1/lb/load-bpf-progs").await;
    assert_eq!((load.status, load.body), (StatusCode::OK, ok()));
    let attach = api.call("POST", "/api/v1/lb/attach-bpf-progs").await;
    assert_error(&attach, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "testing: true");
    // A testing balancer has nothing pinned for a new program to adopt.
    let reload = api.call("POST", "/api/v1/lb/reload").await;
    assert_error(&reload, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "reloading a testing-mode balancer");
    let reload = api.send("POST", "/api/v1/lb/reload", json!({"path": "/tmp/balancer.o", "config": null})).await;
    assert_error(&reload, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "path: weir's balancer program is built");
    let reload = api.send("POST", "/api/v1/lb/reload", json!({"config": {"max_vips": 3}})).await;
    assert_error(&reload, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "config: ");

    api.add_vip("10.0.0.1", 80, 6, 0).await;
    let close = api.call("POST", "/api/v1/lb/close").await;
    assert_eq!((close.status, close.body), (StatusCode::OK, ok()));
    let status = api.call("GET", "/api/v1/lb/status").await;
    assert_eq!(status.body, data(json!({"initialized": false, "ready": false})));
    let vips = api.call("GET", "/api/v1/vips").await;
    assert_error(&vips, StatusCode::SERVICE_UNAVAILABLE, "LB_NOT_INITIALIZED", "lb/create");
    let close = api.call("POST", "/api/v1/lb/close").await;
    assert_error(&close, StatusCode::SERVICE_UNAVAILABLE, "LB_NOT_INITIALIZED", "lb/create");

    // A new balancer starts empty.
    api.create().await;
    assert_eq!(api.data("/api/v1/vips").await, json!([]));
}

#[tokio::test]
async fn create_refusals_leave_no_balancer() {
    if skip_without_root("create_refusals_leave_no_balancer") {
        return;
    }
    let api = Api::new();
    let cases: &[(&str, StatusCode, &str, &str)] = &[
        ("", StatusCode::BAD_REQUEST, "INVALID_REQUEST", "empty"),
        ("{\"testing\": true", StatusCode::BAD_REQUEST, "INVALID_REQUEST", "invalid request body"),
        (r#"{"testing": "yes"}"#, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "testing: invalid type"),
        (r#"{"testing": true, "max_vips": -1}"#, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "max_vips"),
        (r#"{"testing": true, "max_vips": 0}"#, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "max_vips"),
        (r#"{"testing": true, "lru_size": 0}"#, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "lru_size"),
        (
            r#"{"testing": true, "default_mac": "02:00:00:00:00"}"#,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "default_mac",
        ),
        (r#"{"testing": true, "hash_func": 7}"#, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "hash_func"),
        (r#"{"main_interface": "eth0"}"#, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "default_mac"),
        (
            r#"{"main_interface": "weir-no-such0", "default_mac": "02:00:00:00:00:01", "cleanup_on_shutdown": true}"#,
            StatusCode::BAD_REQUEST,
            "INVALID_REQUEST",
            "main_interface",
        ),
        (r#"{"testing": true, "flow_debug": true}"#, StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "flow_debug"),
        (
            r#"{"testing": true, "enable_cid_v3": true}"#,
            StatusCode::NOT_IMPLEMENTED,
            "FEATURE_DISABLED",
            "enable_cid_v3",
        ),
        (r#"{"testing": true, "hash_function": "crc"}"#, StatusCode::BAD_REQUEST, "INVALID_REQUEST", "hash_function"),
        (
            r#"{"testing": true, "xdp_attach_flags": 8}"#,
            StatusCode::NOT_IMPLEMENTED,
            "FEATURE_DISABLED",
            "xdp_attach_flags",
        ),
    ];
    for &(body, status, code, needle) in cases {
        let answer = api.raw("POST", "/api/v1/lb/create", Some(body)).await;
        assert_error(&answer, status, code, needle);
        assert!(api.state.balancer.read().unwrap().is_none(), "{body}: a balancer was created");
    }
    // katran-rest-api.md's example, as a deployment sends it (program paths,
    // healthcheck program, root map, NUMA nodes), with only `testing` changed
    // so that it does not attach to this host's eth0, and the table sizes
    // shrunk for a test (api/create.rs's unit test checks the body verbatim):
    // accepted.
    let katran = json!({
        "main_interface": "eth0", "balancer_prog_path": "/path/to/balancer.o",
        "healthchecking_prog_path": "/path/to/healthchecker.o", "v4_tun_interface": "ipip0",
        "v6_tun_interface": "ipip6tnl0", "hc_interface": "eth0",
        "default_mac": "aa:bb:cc:dd:ee:ff", "local_mac": "11:22:33:44:55:66",
        "root_map_path": "/sys/fs/bpf/root_map", "root_map_pos": 2, "use_root_map": true,
        "max_vips": 4, "max_reals": 16, "ch_ring_size": 65537, "lru_size": 1000,
        "max_lpm_src_size": 3000000, "max_decap_dst": 6, "global_lru_size": 100000,
        "enable_hc": true, "tunnel_based_hc_encap": true, "testing": true, "memlock_unlimited": true,
        "flow_debug": false, "enable_cid_v3": false, "cleanup_on_shutdown": true, "forwarding_cores": [0, 1, 2, 3],
        "numa_nodes": [0, 0, 1, 1], "xdp_attach_flags": 0, "priority": 2307, "main_interface_index": 0,
        "hc_interface_index": 0, "katran_src_v4": "10.0.0.1", "katran_src_v6": "fc00::1", "hash_func": 0,
        "some_future_field": {"ignored": true}
    });
    let answer = api.send("POST", "/api/v1/lb/create", katran).await;
    assert_eq!((answer.status, answer.body), (StatusCode::CREATED, ok()));
    assert_eq!(api.data("/api/v1/utils/mac").await, json!({"mac": "aa:bb:cc:dd:ee:ff"}));
    // CPUs this host may lack report 0.
    assert_eq!(api.data("/api/v1/stats/per-core-packets").await, json!({"counts": [0, 0, 0, 0]}));
    let notices = api.data("/api/v1/lb/status").await["notices"].as_array().unwrap().len();
    // enable_hc and hc_interface are acted on now: no notices of theirs.
    assert!(notices >= 6, "{notices} notices");
    // hash_func 0: new VIPs use Maglev.
    api.add_vip("10.0.0.1", 80, 6, 0).await;
    let guard = api.state.balancer.read().unwrap();
    let lb = guard.as_ref().unwrap();
    assert_eq!(lb.vips()[0].hash_function, weir_agent::dataplane::HashFunction::Maglev);
}

#[tokio::test]
async fn create_from_json_is_the_endpoint() {
    if skip_without_root("create_from_json_is_the_endpoint") {
        return;
    }
    let api = Api::new();
    let err = weir_agent::api::create_from_json(&api.state, b"{\"testing\": true, \"flow_debug\": true}").unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED"));
    weir_agent::api::create_from_json(&api.state, CREATE_TESTING.as_bytes()).unwrap();
    let status = api.call("GET", "/api/v1/lb/status").await;
    assert_eq!(
        status.body,
        data(
            json!({"initialized": true, "ready": true, "programs": {"balancer": format!("weir_balancer, built into weir-agent {}", env!("CARGO_PKG_VERSION")), "healthcheck": null}, "map_memory_bytes": map_memory(&api)})
        )
    );
    let err = weir_agent::api::create_from_json(&api.state, CREATE_TESTING.as_bytes()).unwrap_err();
    assert_eq!((err.status, err.code.as_str()), (StatusCode::CONFLICT, "ALREADY_EXISTS"));
}
