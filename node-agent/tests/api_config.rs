//! The current katran-server API's additions that need a balancer: the
//! configuration export (YAML and JSON) and its round trip through
//! `import_document` (what `--config FILE` does with an exported file),
//! `/lb/status`'s programs and notices, `healthy` on reals, and the
//! original API's edge cases weir used to answer differently (DELETE /vips
//! by query string, deleting a real the VIP lacks).

mod support {
    pub mod api;
}

use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{json, Value};
use tower::ServiceExt;
use weir_agent::api::ApiState;

use support::api::*;

/// A testing balancer as a katran-server deployment creates it: program
/// paths, the healthcheck program's settings, and the current API's hash
/// function name.
const KATRAN_CREATE: &str = r#"{"testing": true, "max_vips": 8, "max_reals": 32, "lru_size": 1024,
    "default_mac": "02:00:00:00:00:01", "balancer_prog_path": "/opt/katran/balancer.o",
    "healthchecking_prog_path": "/opt/katran/healthchecking_ipip.o", "hash_function": "maglev_v2",
    "local_mac": "02:00:00:00:00:02", "katran_src_v4": "10.0.0.254"}"#;

fn program() -> String {
    format!("weir_balancer, built into weir-agent {}", env!("CARGO_PKG_VERSION"))
}

/// GET `uri` without the JSON helper: status, headers of interest, raw body.
async fn get_raw(state: &ApiState, uri: &str) -> (StatusCode, Option<String>, Option<String>, String) {
    let request = Request::builder().uri(uri).body(Body::empty()).unwrap();
    let response = weir_agent::api::router(state.clone()).oneshot(request).await.unwrap();
    let header = |name: &str| response.headers().get(name).map(|v| v.to_str().unwrap().to_owned());
    let (status, content_type, disposition) =
        (response.status(), header("content-type"), header("content-disposition"));
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, content_type, disposition, String::from_utf8(bytes.to_vec()).unwrap())
}

#[tokio::test]
async fn export_before_create_is_503_in_the_envelope() {
    let api = Api::new();
    for uri in ["/api/v1/config/export", "/api/v1/config/export/json"] {
        let answer = api.call("GET", uri).await;
        assert_error(&answer, StatusCode::SERVICE_UNAVAILABLE, "LB_NOT_INITIALIZED", "lb/create");
    }
}

#[tokio::test]
async fn katran_create_bodies_are_accepted_and_reported() {
    if skip_without_root("katran_create_bodies_are_accepted_and_reported") {
        return;
    }
    let api = Api::new();
    let created = api.raw("POST", "/api/v1/lb/create", Some(KATRAN_CREATE)).await;
    assert_eq!((created.status, created.body), (StatusCode::CREATED, ok()));
    assert_eq!(
        api.data("/api/v1/lb/status").await,
        json!({
            "initialized": true,
            "ready": true,
            "programs": {"balancer": program(), "healthcheck": concat!("weir_healthcheck, built into weir-agent ", env!("CARGO_PKG_VERSION"))},
            "map_memory_bytes": map_memory(&api),
            "notices": [
                format!("balancer_prog_path /opt/katran/balancer.o: not loaded; weir runs its built-in balancer program ({})", program()),
                "healthchecking_prog_path /opt/katran/healthchecking_ipip.o: not loaded; weir runs its built-in healthcheck program",
            ],
        })
    );
    // hash_function "maglev_v2" is the hash of new VIPs.
    api.add_vip("10.0.0.1", 80, 6, 0).await;
    let doc = api.data("/api/v1/config/export/json").await;
    assert_eq!(doc["lb"]["hash_function"], json!("maglev_v2"));
    assert_eq!(doc["vips"][0]["hash_function"], json!("maglev_v2"));
}

#[tokio::test]
async fn the_export_describes_everything_and_rebuilds_it() {
    if skip_without_root("the_export_describes_everything_and_rebuilds_it") {
        return;
    }
    let api = Api::new();
    assert_eq!(api.raw("POST", "/api/v1/lb/create", Some(KATRAN_CREATE)).await.status, StatusCode::CREATED);
    let (web, dns, v6) = (vip("10.0.0.1", 80, 6), vip("10.0.0.2", 53, 17), vip("fc00::1", 443, 6));
    api.add_vip("10.0.0.1", 80, 6, 1).await;
    api.add_vip("10.0.0.2", 53, 17, 0).await;
    api.add_vip("fc00::1", 443, 6, 8).await;
    api.add_vip("10.0.0.3", 0, 6, 0).await;
    // Same reals, added in another order: one group.
    for (vip, reals) in [
        (&web, json!([{"address": "10.1.0.2", "weight": 2, "flags": 0}, {"address": "10.1.0.1", "weight": 1}])),
        (&dns, json!([{"address": "10.1.0.1", "weight": 1}, {"address": "10.1.0.2", "weight": 2}])),
        (&v6, json!([{"address": "fc00:1::1", "weight": 5}])),
    ] {
        let answer =
            api.send("PUT", "/api/v1/vips/reals/batch", json!({"vip": vip, "action": 0, "reals": reals})).await;
        assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    }
    let answer = api
        .send(
            "PUT",
            "/api/v1/vips/hash-function",
            json!({"address": "10.0.0.2", "port": 53, "proto": 17, "hash_function": 0}),
        )
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(api.send("PUT", "/api/v1/utils/mac", json!({"mac": "02:aa:bb:cc:dd:ee"})).await.status, StatusCode::OK);

    let mut doc = api.data("/api/v1/config/export/json").await;
    // `server`: the agent's effective settings, as /limits/effective reports them.
    let server = doc.as_object_mut().unwrap().remove("server").unwrap();
    assert_eq!(server, api.data("/api/v1/limits/effective").await);
    let real = |address: &str, weight: u32| json!({"address": address, "weight": weight, "flags": 0, "healthy": true});
    assert_eq!(
        doc,
        json!({
            "lb": {
                "interfaces": {"main": "", "healthcheck": "", "v4_tunnel": "", "v6_tunnel": ""},
                "programs": {"balancer": "/opt/katran/balancer.o", "healthcheck": "/opt/katran/healthchecking_ipip.o"},
                "root_map": {"enabled": false, "path": "", "position": 2},
                "mac": {"default": "02:aa:bb:cc:dd:ee", "local": "02:00:00:00:00:02"},
                "capacity": {"max_vips": 8, "max_reals": 32, "ch_ring_size": 65537, "lru_size": 1024,
                             "global_lru_size": 100000, "max_lpm_src": 3000000, "max_decap_dst": 6},
                "cpu": {"forwarding_cores": [], "numa_nodes": []},
                "xdp": {"attach_flags": 0, "priority": 2307},
                "encapsulation": {"src_v4": "10.0.0.254", "src_v6": ""},
                "features": {"enable_healthcheck": true, "tunnel_based_hc_encap": false, "flow_debug": false,
                             "enable_cid_v3": false, "memlock_unlimited": true, "cleanup_on_shutdown": true, "testing": true},
                "hash_function": "maglev_v2",
                "mtu": 1500,
            },
            "target_groups": {
                "group-0": [real("10.1.0.1", 1), real("10.1.0.2", 2)],
                "group-1": [],
                "group-2": [real("fc00:1::1", 5)],
            },
            // In the Balancer's order: by address, port, protocol.
            "vips": [
                {"address": "10.0.0.1", "port": 80, "proto": "tcp", "target_group": "group-0", "flags": 1, "hash_function": "maglev_v2"},
                {"address": "10.0.0.2", "port": 53, "proto": "udp", "target_group": "group-0", "flags": 0, "hash_function": "maglev"},
                {"address": "10.0.0.3", "port": 0, "proto": "tcp", "target_group": "group-1", "flags": 0, "hash_function": "maglev_v2"},
                {"address": "fc00::1", "port": 443, "proto": "tcp", "target_group": "group-2", "flags": 8, "hash_function": "maglev_v2"},
            ],
        })
    );

    // The YAML file: bare (no envelope), with katran-server's headers, the same content.
    let (status, content_type, disposition, yaml) = get_raw(&api.state, "/api/v1/config/export").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type.as_deref(), Some("application/x-yaml"));
    assert_eq!(disposition.as_deref(), Some("attachment; filename=\"katran-config.yaml\""));
    doc["server"] = server;
    assert_eq!(serde_yaml::from_str::<Value>(&yaml).unwrap(), doc);

    // The round trip: the file rebuilds the same state on a fresh agent.
    let fresh = Api::new();
    weir_agent::api::import_document(&fresh.state, yaml.as_bytes()).unwrap();
    assert_eq!(fresh.data("/api/v1/config/export/json").await, doc);
    assert_eq!(
        fresh.data("/api/v1/vips/reals?address=10.0.0.2&port=53&proto=17").await,
        json!([real("10.1.0.1", 1), real("10.1.0.2", 2)])
    );
    // Every real answers `healthy` (true: weir has no health checking yet).
    assert_eq!(fresh.data("/api/v1/vips/reals?address=fc00::1&port=443&proto=6").await, json!([real("fc00:1::1", 5)]));
}

#[tokio::test]
async fn a_bad_document_creates_nothing() {
    if skip_without_root("a_bad_document_creates_nothing") {
        return;
    }
    let api = Api::new();
    api.raw("POST", "/api/v1/lb/create", Some(CREATE_TESTING)).await;
    api.add_vip("10.0.0.1", 80, 6, 0).await;
    let good = api.data("/api/v1/config/export/json").await;
    for (change, code, needle) in [
        (
            json!({"vips": [{"address": "10.0.0.1", "port": 80, "proto": "sctp", "target_group": "group-0", "flags": 0}]}),
            "INVALID_REQUEST",
            "vips[0].proto: \"sctp\" is not tcp or udp",
        ),
        (
            json!({"vips": [{"address": "10.0.0.1", "port": 80, "proto": "tcp", "target_group": "group-9", "flags": 0}]}),
            "INVALID_REQUEST",
            "vips[0].target_group: no target group \"group-9\"",
        ),
        (
            json!({"vips": [{"address": "10.0.0.x", "port": 80, "proto": "tcp", "target_group": "group-0", "flags": 0}]}),
            "INVALID_REQUEST",
            "vips[0].address: \"10.0.0.x\" is not an IP address",
        ),
        // Refused by the Balancer once the balancer exists: it is dropped again.
        (
            json!({"vips": [{"address": "10.0.0.1", "port": 80, "proto": "tcp", "target_group": "group-0", "flags": 4}]}),
            "FEATURE_DISABLED",
            "VIP flag QUIC_VIP (0x4) is not supported by this datapath",
        ),
    ] {
        let mut doc = good.clone();
        doc.as_object_mut().unwrap().extend(change.as_object().unwrap().clone());
        let fresh = Api::new();
        let err = weir_agent::api::import_document(&fresh.state, doc.to_string().as_bytes()).unwrap_err();
        assert_eq!((err.code.as_str(), err.message.as_str()), (code, needle));
        assert!(fresh.state.balancer.read().unwrap().is_none(), "{needle}: a balancer was created");
    }
}

#[tokio::test]
async fn deletes_answer_like_katran_server() {
    if skip_without_root("deletes_answer_like_katran_server") {
        return;
    }
    let api = Api::new();
    api.create().await;
    let web = vip("10.0.0.1", 80, 6);
    api.add_vip("10.0.0.1", 80, 6, 0).await;
    api.add_real(web.clone(), "10.1.0.1", 1).await;
    // Deleting a real the VIP does not have: success, nothing changes.
    let answer = api.send("DELETE", "/api/v1/vips/reals", json!({"vip": web, "real": {"address": "10.1.0.9"}})).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    let batch = json!({"vip": web, "action": 1, "reals": [{"address": "10.1.0.8"}]});
    assert_eq!(api.send("PUT", "/api/v1/vips/reals/batch", batch).await.status, StatusCode::OK);
    assert_eq!(
        api.data("/api/v1/vips/reals?address=10.0.0.1&port=80&proto=6").await,
        json!([{"address": "10.1.0.1", "weight": 1, "flags": 0, "healthy": true}])
    );
    // The VIP must exist, though.
    let answer = api
        .send("DELETE", "/api/v1/vips/reals", json!({"vip": vip("10.0.0.9", 80, 6), "real": {"address": "10.1.0.1"}}))
        .await;
    assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND", "10.0.0.9");
    // DELETE /vips takes its parameters from the query string too.
    let answer = api.call("DELETE", "/api/v1/vips?address=10.0.0.1&port=80&proto=6").await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    assert_eq!(api.data("/api/v1/vips").await, json!([]));
    let answer = api.call("DELETE", "/api/v1/vips?address=10.0.0.1&port=x&proto=6").await;
    assert_error(
        &answer,
        StatusCode::BAD_REQUEST,
        "INVALID_REQUEST",
        "port: expected an integer from 0 to 65535, got \"x\"",
    );
}
