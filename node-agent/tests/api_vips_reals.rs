//! VIPs and reals over HTTP, against a real Balancer in testing mode: the
//! whole lifecycle (add, list, flags, hash function, reals one by one and in
//! batches, shared reals and their indices, weight 0, real flags, delete),
//! GET parameters as a JSON body and as a query string giving the same
//! answers, and the table of bad inputs with their exact codes and the field
//! each message names. Needs root (it loads the BPF program): without it,
//! prints `SKIPPED (needs root)`.

mod support {
    pub mod api;
}

use axum::http::StatusCode;
use serde_json::{json, Value};

use support::api::*;

/// GETs `path` with `params` as a JSON body and as a query string; asserts
/// both answers are equal and returns it.
async fn get_both(api: &Api, path: &str, params: &[(&str, Value)]) -> Answer {
    let body: serde_json::Map<String, Value> = params.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
    let query: Vec<String> = params
        .iter()
        .map(|(k, v)| format!("{k}={}", v.as_str().map_or_else(|| v.to_string(), str::to_owned).replace(':', "%3A")))
        .collect();
    let by_body = api.send("GET", path, Value::Object(body)).await;
    let by_query = api.call("GET", &format!("{path}?{}", query.join("&"))).await;
    assert_eq!((by_body.status, &by_body.body), (by_query.status, &by_query.body), "GET {path}");
    by_body
}

/// A bad request (method, path, body) and its answer's status, code and a
/// part of its message.
type BadRequest = (&'static str, &'static str, Option<String>, StatusCode, &'static str, &'static str);

fn key(address: &str, port: u16, proto: u8) -> [(&'static str, Value); 3] {
    [("address", json!(address)), ("port", json!(port)), ("proto", json!(proto))]
}

#[tokio::test]
async fn vip_and_real_lifecycle() {
    if skip_without_root("vip_and_real_lifecycle") {
        return;
    }
    let api = Api::new();
    api.create().await;
    assert_eq!(api.data("/api/v1/vips").await, json!([]));

    let web = vip("10.0.0.1", 80, 6);
    let dns = vip("10.0.0.2", 53, 17);
    let v6 = vip("2001:db8::1", 0, 6);
    api.add_vip("10.0.0.1", 80, 6, 0).await;
    api.add_vip("10.0.0.2", 53, 17, 1).await; // NO_SPORT
    api.add_vip("2001:db8::1", 0, 6, 0).await;
    let dup = api.send("POST", "/api/v1/vips", json!({"address": "10.0.0.1", "port": 80, "proto": 6})).await;
    assert_error(&dup, StatusCode::CONFLICT, "ALREADY_EXISTS", "VIP 10.0.0.1:80/tcp already exists");
    assert_eq!(api.data("/api/v1/vips").await, json!([web, dns, v6]));

    // Flags: get, set, clear; through body and query alike.
    let flags = get_both(&api, "/api/v1/vips/flags", &key("10.0.0.2", 53, 17)).await;
    assert_eq!((flags.status, flags.body), (StatusCode::OK, data(json!({"flags": 1}))));
    for (flag, set, expect) in [(2, true, 3), (1, false, 2), (32 | 128, true, 162), (160, false, 2)] {
        let body = json!({"address": "10.0.0.2", "port": 53, "proto": 17, "flag": flag, "set": set});
        let answer = api.send("PUT", "/api/v1/vips/flags", body).await;
        assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()), "flag {flag} set {set}");
        let flags = get_both(&api, "/api/v1/vips/flags", &key("10.0.0.2", 53, 17)).await;
        assert_eq!(flags.body, data(json!({"flags": expect})));
    }
    let unknown = get_both(&api, "/api/v1/vips/flags", &key("10.9.9.9", 80, 6)).await;
    assert_error(&unknown, StatusCode::NOT_FOUND, "NOT_FOUND", "VIP 10.9.9.9:80/tcp");

    // Reals one by one; a real shared by two VIPs has one index.
    api.add_real(web.clone(), "10.1.0.1", 10).await;
    api.add_real(web.clone(), "10.1.0.2", 20).await;
    api.add_real(dns.clone(), "10.1.0.2", 5).await;
    api.add_real(v6.clone(), "fd00::1", 1).await;
    let reals = get_both(&api, "/api/v1/vips/reals", &key("10.0.0.1", 80, 6)).await;
    assert_eq!(
        reals.body,
        data(json!([
            {"address": "10.1.0.1", "weight": 10, "flags": 0, "healthy": true},
            {"address": "10.1.0.2", "weight": 20, "flags": 0, "healthy": true},
        ]))
    );
    let dns_reals = get_both(&api, "/api/v1/vips/reals", &key("10.0.0.2", 53, 17)).await;
    assert_eq!(dns_reals.body, data(json!([{"address": "10.1.0.2", "weight": 5, "flags": 0, "healthy": true}])));
    let index = |address: &'static str| {
        let api = &api;
        async move {
            let answer = get_both(api, "/api/v1/reals/index", &[("address", json!(address))]).await;
            assert_eq!(answer.status, StatusCode::OK);
            answer.body["data"]["index"].as_i64().unwrap()
        }
    };
    let (i1, i2, i6) = (index("10.1.0.1").await, index("10.1.0.2").await, index("fd00::1").await);
    assert_eq!((i1, i2, i6), (1, 2, 3));
    assert_eq!(index("10.1.0.99").await, -1);

    // Adding an existing real updates its weight (0 drains it).
    api.add_real(web.clone(), "10.1.0.1", 0).await;
    let reals = get_both(&api, "/api/v1/vips/reals", &key("10.0.0.1", 80, 6)).await;
    assert_eq!(reals.body["data"][0], json!({"address": "10.1.0.1", "weight": 0, "flags": 0, "healthy": true}));

    // Batch: add (one new, one update), then delete; indices follow.
    let batch = json!({"vip": web, "action": 0, "reals": [
        {"address": "10.1.0.3", "weight": 7, "flags": 0, "healthy": true},
        {"address": "10.1.0.1", "weight": 4, "flags": 0},
    ]});
    let answer = api.send("PUT", "/api/v1/vips/reals/batch", batch).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    assert_eq!(index("10.1.0.3").await, 4);
    let reals = get_both(&api, "/api/v1/vips/reals", &key("10.0.0.1", 80, 6)).await;
    assert_eq!(
        reals.body,
        data(json!([
            {"address": "10.1.0.1", "weight": 4, "flags": 0, "healthy": true},
            {"address": "10.1.0.2", "weight": 20, "flags": 0, "healthy": true},
            {"address": "10.1.0.3", "weight": 7, "flags": 0, "healthy": true},
        ]))
    );
    // Deleting 10.1.0.2 from web keeps it (dns uses it); 10.1.0.9 is not there: not an error.
    let batch = json!({"vip": web, "action": 1, "reals": [{"address": "10.1.0.2"}, {"address": "10.1.0.9"}]});
    let answer = api.send("PUT", "/api/v1/vips/reals/batch", batch).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    assert_eq!(index("10.1.0.2").await, 2);
    let gone = json!({"vip": dns, "real": {"address": "10.1.0.2", "weight": 0, "flags": 0}});
    let answer = api.send("DELETE", "/api/v1/vips/reals", gone.clone()).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    assert_eq!(index("10.1.0.2").await, -1, "no VIP uses it any more");
    // Again: already gone, success (katran-server's answer).
    let answer = api.send("DELETE", "/api/v1/vips/reals", gone).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));

    // Real flags: LOCAL_REAL set and cleared; unknown reals are 404.
    for (set, expect) in [(true, 2), (false, 0)] {
        let answer =
            api.send("PUT", "/api/v1/reals/flags", json!({"address": "10.1.0.3", "flags": 2, "set": set})).await;
        assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
        let reals = get_both(&api, "/api/v1/vips/reals", &key("10.0.0.1", 80, 6)).await;
        assert_eq!(
            reals.body["data"][1],
            json!({"address": "10.1.0.3", "weight": 7, "flags": expect, "healthy": true})
        );
    }
    let answer = api.send("PUT", "/api/v1/reals/flags", json!({"address": "10.1.0.77", "flags": 2, "set": true})).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND", "real 10.1.0.77");

    // Hash function: 1 (Maglev V2) and back; 2 is not one.
    for hash in [1, 0] {
        let body = json!({"address": "10.0.0.1", "port": 80, "proto": 6, "hash_function": hash});
        let answer = api.send("PUT", "/api/v1/vips/hash-function", body).await;
        assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
        let guard = api.state.balancer.read().unwrap();
        let info = guard.as_ref().unwrap().vips().into_iter().find(|v| v.id.port == 80).unwrap();
        assert_eq!(info.hash_function.katran_id(), hash);
    }

    // Delete VIPs: the v6 one releases its real.
    let answer = api.send("DELETE", "/api/v1/vips", v6.clone()).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    assert_eq!(index("fd00::1").await, -1);
    let answer = api.send("DELETE", "/api/v1/vips", v6).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND", "VIP [2001:db8::1]:0/tcp not found");
    assert_eq!(api.data("/api/v1/vips").await, json!([web, dns]));
}

#[tokio::test]
async fn tables_fill_up() {
    if skip_without_root("tables_fill_up") {
        return;
    }
    let api = Api::new();
    api.create().await; // 8 VIPs, 32 reals
    for i in 0..8 {
        api.add_vip(&format!("10.0.1.{i}"), 80, 6, 0).await;
    }
    let full = api.send("POST", "/api/v1/vips", json!({"address": "10.0.1.100", "port": 80, "proto": 6})).await;
    assert_error(&full, StatusCode::INSUFFICIENT_STORAGE, "SPACE_EXHAUSTED", "VIPs exhausted: all 8 in use");
    let reals: Vec<Value> = (0..33).map(|i| json!({"address": format!("10.2.0.{i}"), "weight": 1})).collect();
    let batch = json!({"vip": vip("10.0.1.0", 80, 6), "action": 0, "reals": reals});
    let full = api.send("PUT", "/api/v1/vips/reals/batch", batch).await;
    assert_error(&full, StatusCode::INSUFFICIENT_STORAGE, "SPACE_EXHAUSTED", "reals exhausted: all 32 in use");
    // All or nothing: none of the batch was added.
    assert_eq!(api.data("/api/v1/vips/reals?address=10.0.1.0&port=80&proto=6").await, json!([]));
}

#[tokio::test]
async fn bad_input_is_400_naming_the_field() {
    if skip_without_root("bad_input_is_400_naming_the_field") {
        return;
    }
    let api = Api::new();
    api.create().await;
    api.add_vip("10.0.0.1", 80, 6, 0).await;
    let web = vip("10.0.0.1", 80, 6);

    const BAD: StatusCode = StatusCode::BAD_REQUEST;
    const INVALID: &str = "INVALID_REQUEST";
    let cases: Vec<BadRequest> = vec![
        // Malformed and empty bodies.
        ("POST", "/api/v1/vips", Some("{\"address\": ".into()), BAD, INVALID, "invalid request body: address: EOF while parsing"),
        ("POST", "/api/v1/vips", Some("not json".into()), BAD, INVALID, "invalid request body: expected"),
        ("POST", "/api/v1/vips", Some("[1, 2]".into()), BAD, INVALID, "[0]: invalid type: integer"),
        ("POST", "/api/v1/vips", Some("\"10.0.0.1\"".into()), BAD, INVALID, "invalid type: string \"10.0.0.1\", expected struct NewVip"),
        ("POST", "/api/v1/vips", Some("".into()), BAD, INVALID, "invalid request body: empty"),
        ("POST", "/api/v1/vips", None, BAD, INVALID, "invalid request body: empty"),
        ("PUT", "/api/v1/utils/mac", Some("  \n".into()), BAD, INVALID, "invalid request body: empty"),
        // Missing fields, wrong types.
        ("POST", "/api/v1/vips", Some(r#"{"address": "10.0.0.3", "proto": 6}"#.into()), BAD, INVALID, "missing field `port`"),
        ("POST", "/api/v1/vips", Some(r#"{"address": "10.0.0.3", "port": "80", "proto": 6}"#.into()), BAD, INVALID, "port: invalid type: string \"80\", expected an integer from 0 to 65535"),
        ("POST", "/api/v1/vips/reals", Some(json!({"vip": {"address": "10.0.0.1", "port": 80}, "real": {"address": "10.1.0.1", "weight": 1}}).to_string()), BAD, INVALID, "vip: missing field `proto`"),
        ("POST", "/api/v1/vips/reals", Some(json!({"vip": web, "real": {"address": "10.1.0.1"}}).to_string()), BAD, INVALID, "real: missing field `weight`"),
        ("PUT", "/api/v1/vips/reals/batch", Some(json!({"vip": web, "action": 0, "reals": [{"address": "10.1.0.1"}]}).to_string()), BAD, INVALID, "reals[0].weight: required"),
        ("PUT", "/api/v1/vips/flags", Some(r#"{"address": "10.0.0.1", "port": 80, "proto": 6, "flag": 1}"#.into()), BAD, INVALID, "missing field `set`"),
        ("GET", "/api/v1/vips/flags", None, BAD, INVALID, "invalid query string: missing parameter `address`"),
        ("GET", "/api/v1/stats/real?index=x", None, BAD, INVALID, "invalid query string: index: expected an integer from 0 to 4294967295, got \"x\""),
        // Out of range ports and protos, in bodies and queries.
        ("POST", "/api/v1/vips", Some(r#"{"address": "10.0.0.3", "port": 65536, "proto": 6}"#.into()), BAD, INVALID, "port: invalid value: integer `65536`"),
        ("POST", "/api/v1/vips", Some(r#"{"address": "10.0.0.3", "port": -1, "proto": 6}"#.into()), BAD, INVALID, "port: invalid value: integer `-1`"),
        ("POST", "/api/v1/vips", Some(r#"{"address": "10.0.0.3", "port": 80, "proto": 256}"#.into()), BAD, INVALID, "proto: invalid value: integer `256`"),
        ("GET", "/api/v1/vips/flags?address=10.0.0.1&port=65536&proto=6", None, BAD, INVALID, "port: expected an integer from 0 to 65535, got \"65536\""),
        ("GET", "/api/v1/stats/vip?address=10.0.0.1&port=80&proto=256", None, BAD, INVALID, "proto: expected an integer from 0 to 255, got \"256\""),
        ("DELETE", "/api/v1/lru", Some(json!({"dst_vip": web, "src_ip": "192.0.2.1", "src_port": 70000}).to_string()), BAD, INVALID, "src_port: invalid value"),
        ("GET", "/api/v1/utils/real-for-flow?src=192.0.2.1&dst=10.0.0.1&src_port=1&dst_port=99999&proto=6", None, BAD, INVALID, "dst_port: expected an integer from 0 to 65535, got \"99999\""),
        // A protocol a VIP cannot carry.
        ("POST", "/api/v1/vips", Some(r#"{"address": "10.0.0.3", "port": 80, "proto": 1}"#.into()), BAD, INVALID, "proto: 1 is not TCP (6) or UDP (17)"),
        // Bad addresses.
        ("POST", "/api/v1/vips", Some(r#"{"address": "10.0.0.256", "port": 80, "proto": 6}"#.into()), BAD, INVALID, "address: \"10.0.0.256\" is not an IP address"),
        ("POST", "/api/v1/vips", Some(r#"{"address": "", "port": 80, "proto": 6}"#.into()), BAD, INVALID, "address: \"\" is not an IP address"),
        ("POST", "/api/v1/vips", Some(r#"{"address": "224.0.0.1", "port": 80, "proto": 6}"#.into()), BAD, INVALID, "address: 224.0.0.1 must not be a multicast address"),
        ("POST", "/api/v1/vips", Some(r#"{"address": "::ffff:10.0.0.3", "port": 80, "proto": 6}"#.into()), BAD, INVALID, "address: ::ffff:10.0.0.3 must not be an IPv4-mapped IPv6 address"),
        ("POST", "/api/v1/vips", Some(r#"{"address": "127.0.0.1", "port": 80, "proto": 6}"#.into()), BAD, INVALID, "address: 127.0.0.1 must not be a loopback address"),
        ("POST", "/api/v1/vips/reals", Some(json!({"vip": web, "real": {"address": "255.255.255.255", "weight": 1}}).to_string()), BAD, INVALID, "real address: 255.255.255.255 must not be the broadcast address"),
        ("POST", "/api/v1/vips/reals", Some(json!({"vip": web, "real": {"address": "10.1.0.x", "weight": 1}}).to_string()), BAD, INVALID, "real.address: \"10.1.0.x\" is not an IP address"),
        ("POST", "/api/v1/vips/reals", Some(json!({"vip": {"address": "nope", "port": 80, "proto": 6}, "real": {"address": "10.1.0.1", "weight": 1}}).to_string()), BAD, INVALID, "vip.address: \"nope\" is not an IP address"),
        ("PUT", "/api/v1/vips/reals/batch", Some(json!({"vip": web, "action": 0, "reals": [{"address": "10.1.0.1", "weight": 1}, {"address": "::g", "weight": 1}]}).to_string()), BAD, INVALID, "reals[1].address"),
        ("GET", "/api/v1/reals/index?address=1.2.3", None, BAD, INVALID, "address: \"1.2.3\" is not an IP address"),
        ("DELETE", "/api/v1/lru", Some(json!({"dst_vip": web, "src_ip": "client", "src_port": 1}).to_string()), BAD, INVALID, "src_ip: \"client\" is not an IP address"),
        ("GET", "/api/v1/utils/real-for-flow?src=x&dst=10.0.0.1&src_port=1&dst_port=80&proto=6", None, BAD, INVALID, "src: \"x\" is not an IP address"),
        // Bad MACs.
        ("PUT", "/api/v1/utils/mac", Some(r#"{"mac": "aa:bb:cc:dd:ee"}"#.into()), BAD, INVALID, "mac: \"aa:bb:cc:dd:ee\" is not a MAC address"),
        ("PUT", "/api/v1/utils/mac", Some(r#"{"mac": "aa:bb:cc:dd:ee:zz"}"#.into()), BAD, INVALID, "mac: "),
        ("PUT", "/api/v1/utils/mac", Some(r#"{"mac": 5}"#.into()), BAD, INVALID, "mac: invalid type"),
        // Flags: bits no flag uses are 400; flags weir lacks (reserved) are 501.
        ("POST", "/api/v1/vips", Some(r#"{"address": "10.0.0.3", "port": 80, "proto": 6, "flags": 1024}"#.into()), BAD, INVALID, "flags: 0x400 has bits no VIP flag uses"),
        ("PUT", "/api/v1/vips/flags", Some(r#"{"address": "10.0.0.1", "port": 80, "proto": 6, "flag": 2048, "set": true}"#.into()), BAD, INVALID, "invalid flags: 0x800 has bits"),
        ("POST", "/api/v1/vips", Some(r#"{"address": "10.0.0.3", "port": 80, "proto": 6, "flags": 4}"#.into()), StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "VIP flag QUIC_VIP (0x4)"),
        ("PUT", "/api/v1/vips/flags", Some(r#"{"address": "10.0.0.1", "port": 80, "proto": 6, "flag": 80, "set": true}"#.into()), StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", "SRC_ROUTING|GLOBAL_LRU"),
        ("POST", "/api/v1/vips/reals", Some(json!({"vip": web, "real": {"address": "10.1.0.1", "weight": 1, "flags": 4}}).to_string()), BAD, INVALID, "real flags: 0x4 has bits no real flag uses"),
        ("PUT", "/api/v1/reals/flags", Some(r#"{"address": "10.1.0.1", "flags": 256, "set": true}"#.into()), BAD, INVALID, "flags: invalid value: integer `256`"),
        // Batch actions other than 0 and 1; hash functions other than 0 and 1.
        ("PUT", "/api/v1/vips/reals/batch", Some(json!({"vip": web, "action": 2, "reals": []}).to_string()), BAD, INVALID, "action: 2 is not 0 (add) or 1 (delete)"),
        ("PUT", "/api/v1/vips/hash-function", Some(r#"{"address": "10.0.0.1", "port": 80, "proto": 6, "hash_function": 2}"#.into()), BAD, INVALID, "hash_function: 2 is not 0 (Maglev) or 1 (Maglev V2)"),
        // Simulate: not base64, too short.
        ("POST", "/api/v1/utils/simulate-packet", Some(r#"{"packet": "not base64!"}"#.into()), BAD, INVALID, "packet: not standard base64"),
        ("POST", "/api/v1/utils/simulate-packet", Some(r#"{"packet": "AAAA"}"#.into()), BAD, INVALID, "packet: 3 bytes is shorter than an Ethernet header"),
        // Real index 0 or past max_reals is not a real.
        ("GET", "/api/v1/stats/real?index=0", None, BAD, INVALID, "index: 0 is not a real index (1..=32)"),
        // Unknown map names: 404 naming the accepted names.
        ("GET", "/api/v1/stats/bpf-map?map_name=vip_stats", None, StatusCode::NOT_FOUND, "NOT_FOUND", "map_name: no map \"vip_stats\"; weir's maps are weir_vips"),
        ("GET", "/api/v1/utils/map-fd?map_name=weir_decaps", None, StatusCode::NOT_FOUND, "NOT_FOUND", "map_name: no map \"weir_decaps\""),
    ];
    let before = api.state.counters.snapshot();
    for (method, path, body, status, code, needle) in &cases {
        let answer = api.raw(method, path, body.as_deref()).await;
        assert_error(&answer, *status, code, needle);
    }
    // Nothing changed.
    assert_eq!(api.data("/api/v1/vips").await, json!([web]));
    assert_eq!(api.data("/api/v1/vips/reals?address=10.0.0.1&port=80&proto=6").await, json!([]));
    assert_eq!(api.data("/api/v1/utils/mac").await, json!({"mac": "02:00:00:00:00:01"}));
    // Every bad address counted (parsed or refused as not unicast), and no BPF failure.
    let after = api.state.counters.snapshot();
    assert_eq!(after.addr_validation_failed - before.addr_validation_failed, 12);
    assert_eq!(after.bpf_failed_calls, 0);
}
