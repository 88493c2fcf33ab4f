//! The endpoints that reach the datapath, against a real Balancer in
//! testing mode: simulate-packet through the real program (a TCP SYN to a
//! VIP comes back encapsulated toward the real real-for-flow names, byte for
//! byte as the datapath's rules build it), exact counters after simulated
//! packets, per-core packets, map usage, userspace counters, connection-table
//! delete and purge, the MAC, and the program's and maps' fds. Needs root:
//! without it, prints `SKIPPED (needs root)`.

mod support {
    pub mod api;
}

use std::net::IpAddr;

use axum::http::StatusCode;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};

use support::api::*;
use weir_test_support::packet::*;

const VIP: &str = "10.0.0.1";
const CLIENT: &str = "198.51.100.7";

/// Simulates `frame`; returns the answer's data.
async fn simulate(api: &Api, frame: &[u8]) -> Value {
    let answer = api.send("POST", "/api/v1/utils/simulate-packet", json!({"packet": STANDARD.encode(frame)})).await;
    assert_eq!(answer.status, StatusCode::OK, "{}", answer.body);
    assert_eq!(answer.body.as_object().unwrap().len(), 2, "{}", answer.body);
    answer.body["data"].clone()
}

fn counter(v1: u64, v2: u64) -> Value {
    json!({"v1": v1, "v2": v2})
}

/// `/proc/self/fd/<fd>`'s target: what kind of object the fd is.
fn fd_kind(fd: &Value) -> String {
    let fd = fd["fd"].as_i64().unwrap();
    std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap().to_string_lossy().into_owned()
}

#[tokio::test]
async fn simulate_real_for_flow_and_stats() {
    if skip_without_root("simulate_real_for_flow_and_stats") {
        return;
    }
    let api = Api::new();
    api.create().await;
    api.add_vip(VIP, 80, 6, 0).await;
    let web = vip(VIP, 80, 6);
    api.add_real(web.clone(), "10.1.0.1", 1).await;
    api.add_real(web.clone(), "10.1.0.2", 1).await;

    let globals =
        ["lru", "lru/miss", "lru/fallback", "icmp-too-big", "ch-drop", "xdp/total", "xdp/tx", "xdp/drop", "xdp/pass"];
    for stat in globals {
        assert_eq!(api.data(&format!("/api/v1/stats/{stat}")).await, counter(0, 0), "{stat}");
    }

    // A SYN to the VIP: encapsulated toward one of its reals, exactly.
    let client: IpAddr = CLIENT.parse().unwrap();
    let vip_addr: IpAddr = VIP.parse().unwrap();
    let syn_frame = syn(sock(client, 40000), sock(vip_addr, 80));
    let out = simulate(&api, &syn_frame).await;
    assert_eq!(out["verdict"], json!("XDP_TX"));
    let packet = STANDARD.decode(out["packet"].as_str().unwrap()).unwrap();
    let real = outer_dst(&packet);
    assert!(["10.1.0.1", "10.1.0.2"].contains(&real.to_string().as_str()), "{real}");
    assert_eq!(
        packet,
        encapsulated(&syn_frame, TESTING_MAC, real),
        "{}",
        first_difference(&packet, &encapsulated(&syn_frame, TESTING_MAC, real))
    );

    // real-for-flow names the same real for a new connection, and the SYN's
    // connection as existing, asked by query or by body.
    let flow = format!("src={CLIENT}&dst={VIP}&src_port=40000&dst_port=80&proto=6");
    let want = data(json!({"address": real.to_string(), "existing": real.to_string()}));
    let by_query = api.call("GET", &format!("/api/v1/utils/real-for-flow?{flow}")).await;
    assert_eq!((by_query.status, by_query.body), (StatusCode::OK, want.clone()));
    let body = json!({"src": CLIENT, "dst": VIP, "src_port": 40000, "dst_port": 80, "proto": 6});
    let by_body = api.send("GET", "/api/v1/utils/real-for-flow", body).await;
    assert_eq!((by_body.status, by_body.body), (StatusCode::OK, want));
    // A flow to no VIP has no real.
    let none = api
        .call("GET", &format!("/api/v1/utils/real-for-flow?src={CLIENT}&dst=10.0.0.99&src_port=1&dst_port=80&proto=6"))
        .await;
    assert_error(&none, StatusCode::NOT_FOUND, "NOT_FOUND", "no real for the flow");

    // Not for a VIP: passed, no packet. Too big once encapsulated: answered
    // with an ICMP "fragmentation needed" (balancer_too_big.rs has its bytes).
    let pass_frame = syn(sock(client, 40000), sock("10.0.0.99".parse::<IpAddr>().unwrap(), 80));
    assert_eq!(simulate(&api, &pass_frame).await, json!({"packet": null, "verdict": "XDP_PASS"}));
    let big_frame = ack_of_l3_len(sock(client, 40001), sock(vip_addr, 80), 1481);
    let answer = simulate(&api, &big_frame).await;
    assert_eq!(answer["verdict"], "XDP_TX", "{answer}");
    let reply = STANDARD.decode(answer["packet"].as_str().expect("the reply")).unwrap();
    assert_eq!((reply.len(), reply[23], reply[34], reply[35]), (126, 1, 3, 4), "an ICMP type 3 code 4: {answer}");

    // Counters: the SYN (ring, SYN miss, sent); the SYN to no VIP (passed);
    // the too-big ACK (ring, non-SYN miss, answered). real-for-flow counts
    // nothing.
    let (syn_len, pass_len, big_len) = (syn_frame.len() as u64, pass_frame.len() as u64, big_frame.len() as u64);
    let syn_l3 = l3_len(&syn_frame);
    let expected = [
        ("lru", counter(2, 2)),
        ("lru/miss", counter(1, 1)),
        ("lru/fallback", counter(0, 0)),
        ("icmp-too-big", counter(1, 0)),
        ("ch-drop", counter(0, 0)),
        ("xdp/total", counter(3, syn_len + pass_len + big_len)),
        ("xdp/tx", counter(2, syn_len + big_len)),
        ("xdp/drop", counter(0, 0)),
        ("xdp/pass", counter(1, pass_len)),
    ];
    for (stat, want) in expected {
        assert_eq!(api.data(&format!("/api/v1/stats/{stat}")).await, want, "{stat}");
    }
    let vip_stats = api.data(&format!("/api/v1/stats/vip?address={VIP}&port=80&proto=6")).await;
    assert_eq!(vip_stats, counter(1, syn_l3));
    let index = api.data(&format!("/api/v1/reals/index?address={real}")).await["index"].as_i64().unwrap();
    let other = if index == 1 { 2 } else { 1 };
    assert_eq!(api.data(&format!("/api/v1/stats/real?index={index}")).await, counter(1, syn_l3));
    assert_eq!(api.send("GET", "/api/v1/stats/real", json!({"index": other})).await.body, data(counter(0, 0)));

    // Per-core packets: one count per possible CPU, adding up to every run.
    let counts = api.data("/api/v1/stats/per-core-packets").await;
    let counts: Vec<u64> = counts["counts"].as_array().unwrap().iter().map(|c| c.as_u64().unwrap()).collect();
    assert_eq!(counts.len(), possible_cpus());
    assert_eq!(counts.iter().sum::<u64>(), 3);
    assert_eq!(api.data("/api/v1/stats/flood-status").await, json!({"under_flood": false}));

    // Map usage, by weir's names and Katran's.
    let usage = [
        ("vip_map", 8, 1),
        ("weir_vips", 8, 1),
        ("reals", 32, 2),
        ("reals_stats", 32, 2),
        ("ch_rings", 8 * 65537, 65537),
        ("lru", 1024, 2),
        ("fallback_cache", 1024, 2),
        ("weir_conns", 1024, 2),
        ("weir_vip_stats", 8, 1),
        ("weir_vip_filter", 4096, 1),
        ("weir_stats", 1, 1),
        ("stats", 1, 1),
        ("ctl_array", 1, 1),
    ];
    for (map, max, current) in usage {
        let answer = api.call("GET", &format!("/api/v1/stats/bpf-map?map_name={map}")).await;
        assert_eq!(answer.body, data(json!({"max_entries": max, "current_entries": current})), "{map}");
    }

    // Connection table: delete the SYN's flow (then it is gone), purge the rest.
    let entry = json!({"dst_vip": web, "src_ip": CLIENT, "src_port": 40000});
    let answer = api.send("DELETE", "/api/v1/lru", entry.clone()).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, data(json!({"maps": ["weir_conns"]}))));
    let answer = api.send("DELETE", "/api/v1/lru", entry).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, data(json!({"maps": []}))));
    let answer = api.send("DELETE", "/api/v1/lru/vip", web.clone()).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, data(json!({"deleted_count": 1}))));
    let answer = api.send("DELETE", "/api/v1/lru/vip", web.clone()).await;
    assert_eq!(answer.body, data(json!({"deleted_count": 0})));
    assert_eq!(api.data("/api/v1/stats/bpf-map?map_name=weir_conns").await["current_entries"], json!(0));
    let answer = api.send("DELETE", "/api/v1/lru/vip", vip(VIP, 81, 6)).await;
    assert_error(&answer, StatusCode::NOT_FOUND, "NOT_FOUND", "VIP 10.0.0.1:81/tcp");

    // No Balancer call failed in BPF, no address was bad.
    let userspace = api.data("/api/v1/stats/userspace").await;
    assert_eq!(userspace, json!({"bpf_failed_calls": 0, "addr_validation_failed": 0}));
    api.call("GET", "/api/v1/reals/index?address=10.1.0").await;
    api.send("POST", "/api/v1/vips", json!({"address": "ff02::1", "port": 80, "proto": 6})).await;
    let userspace = api.data("/api/v1/stats/userspace").await;
    assert_eq!(userspace, json!({"bpf_failed_calls": 0, "addr_validation_failed": 2}));
}

/// Every counter the REST API reports, and the connection table's size.
async fn observable(api: &Api) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for stat in
        ["lru", "lru/miss", "lru/fallback", "icmp-too-big", "ch-drop", "xdp/total", "xdp/tx", "xdp/drop", "xdp/pass"]
    {
        out.push((stat.to_owned(), api.data(&format!("/api/v1/stats/{stat}")).await));
    }
    out.push(("vip".into(), api.data(&format!("/api/v1/stats/vip?address={VIP}&port=80&proto=6")).await));
    for index in [1, 2] {
        out.push((format!("real {index}"), api.data(&format!("/api/v1/stats/real?index={index}")).await));
    }
    out.push(("per-core".into(), api.data("/api/v1/stats/per-core-packets").await));
    out.push(("conns".into(), api.data("/api/v1/stats/bpf-map?map_name=weir_conns").await));
    out
}

/// Issue #10 over REST: after a real is drained, real-for-flow names the
/// other real for every flow, including the 100 asked about (and opened)
/// before; `existing` keeps naming the real of each open connection; and 100
/// questions leave every counter and the connection table as they were.
#[tokio::test]
async fn real_for_flow_after_a_drain_names_only_the_live_real() {
    if skip_without_root("real_for_flow_after_a_drain_names_only_the_live_real") {
        return;
    }
    let api = Api::new();
    api.create().await;
    api.add_vip(VIP, 80, 6, 0).await;
    let web = vip(VIP, 80, 6);
    api.add_real(web.clone(), "10.1.0.1", 1).await;
    api.add_real(web.clone(), "10.1.0.2", 1).await;
    let ask = |port: u16| {
        let api = &api;
        async move {
            let uri = format!("/api/v1/utils/real-for-flow?src={CLIENT}&dst={VIP}&src_port={port}&dst_port=80&proto=6");
            let answer = api.call("GET", &uri).await;
            assert_eq!(answer.status, StatusCode::OK, "port {port}: {:?}", answer.body);
            answer.body["data"].clone()
        }
    };

    // Asked first: no connection exists; then each is opened by a SYN.
    let (client, vip_addr): (IpAddr, IpAddr) = (CLIENT.parse().unwrap(), VIP.parse().unwrap());
    let mut opened = Vec::new();
    for port in 40000..40100u16 {
        let answer = ask(port).await;
        assert_eq!(answer["existing"], Value::Null, "port {port}");
        let out = simulate(&api, &syn(sock(client, port), sock(vip_addr, 80))).await;
        let real = outer_dst(&STANDARD.decode(out["packet"].as_str().unwrap()).unwrap()).to_string();
        assert_eq!(answer["address"], json!(real), "port {port}: the SYN went where real-for-flow said");
        opened.push(real);
    }
    assert!(opened.iter().any(|r| r == "10.1.0.1"), "no flow on 10.1.0.1: the test proves nothing");

    // Drain 10.1.0.1 and ask again, 100 times.
    api.add_real(web.clone(), "10.1.0.1", 0).await;
    let before = observable(&api).await;
    for (port, real) in (40000..40100u16).zip(&opened) {
        assert_eq!(ask(port).await, json!({"address": "10.1.0.2", "existing": real}), "port {port}");
    }
    assert_eq!(observable(&api).await, before, "100 questions changed a counter or the connection table");
}

#[tokio::test]
async fn mac_and_fds() {
    if skip_without_root("mac_and_fds") {
        return;
    }
    let api = Api::new();
    api.create().await;
    assert_eq!(api.data("/api/v1/utils/mac").await, json!({"mac": "02:00:00:00:00:01"}));
    let answer = api.send("PUT", "/api/v1/utils/mac", json!({"mac": "AA:BB:CC:DD:EE:0F"})).await;
    assert_eq!((answer.status, answer.body), (StatusCode::OK, ok()));
    assert_eq!(api.data("/api/v1/utils/mac").await, json!({"mac": "aa:bb:cc:dd:ee:0f"}));

    // The new MAC is the Ethernet destination of what the program sends.
    api.add_vip(VIP, 80, 6, 0).await;
    api.add_real(vip(VIP, 80, 6), "10.1.0.1", 1).await;
    let frame = syn(sock(CLIENT.parse::<IpAddr>().unwrap(), 1), sock(VIP.parse::<IpAddr>().unwrap(), 80));
    let out = simulate(&api, &frame).await;
    let packet = STANDARD.decode(out["packet"].as_str().unwrap()).unwrap();
    assert_eq!(packet, encapsulated(&frame, [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f], "10.1.0.1".parse().unwrap()));
    // base64 wrapped at 76 columns, as the `base64` tool writes it, is the same packet.
    let encoded = STANDARD.encode(&frame);
    let wrapped: Vec<&str> = encoded.as_bytes().chunks(76).map(|c| std::str::from_utf8(c).unwrap()).collect();
    let answer = api.send("POST", "/api/v1/utils/simulate-packet", json!({"packet": wrapped.join("\n") + "\n"})).await;
    assert_eq!(answer.body, data(out));

    // File descriptors of this process: the program, each map (Katran's names
    // give the weir twin's fd).
    let prog = api.data("/api/v1/utils/prog-fd").await;
    assert_eq!(fd_kind(&prog), "anon_inode:bpf-prog");
    let mut fds = std::collections::BTreeSet::new();
    for map in [
        "weir_vips",
        "weir_vip_filter",
        "weir_reals",
        "weir_ch_rings",
        "weir_conns",
        "weir_ctl",
        "weir_vip_stats",
        "weir_real_stats",
        "weir_stats",
    ] {
        let fd = api.data(&format!("/api/v1/utils/map-fd?map_name={map}")).await;
        assert_eq!(fd_kind(&fd), "anon_inode:bpf-map", "{map}");
        assert!(fds.insert(fd["fd"].as_i64().unwrap()), "{map}: fd shared with another map");
    }
    for (katran, weir) in [("vip_map", "weir_vips"), ("ch_rings", "weir_ch_rings"), ("lru", "weir_conns")] {
        let by_katran = api.send("GET", "/api/v1/utils/map-fd", json!({"map_name": katran})).await;
        assert_eq!(by_katran.body["data"], api.data(&format!("/api/v1/utils/map-fd?map_name={weir}")).await);
    }
}
