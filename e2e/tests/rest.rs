//! The datapath end to end, driven through weir-agent's katran-server REST
//! API instead of the Rust API: create the balancer on the lb host's NIC,
//! add a VIP and reals over HTTP, then real TCP from the client namespace.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use weir_e2e::rest::RestAgent;
use weir_e2e::topology::fmt_mac;
use weir_e2e::{connect_once, serve, skip_unless_root, Topology, TopologyConfig, VIP_V4};

#[test]
fn rest_api_programs_a_vip_that_serves_real_tcp() {
    if skip_unless_root("rest_api_programs_a_vip_that_serves_real_tcp") {
        return;
    }
    let topo = Topology::build(TopologyConfig { reals: 3, ..TopologyConfig::default() }).unwrap();
    topo.attach_decap().unwrap();
    let agent = RestAgent::start(&topo).unwrap();

    // Before create: the VIP endpoints are not there yet.
    let (status, body) = agent.call("GET", "/api/v1/vips", None).unwrap();
    assert_eq!((status, body["error"]["code"].as_str()), (503, Some("LB_NOT_INITIALIZED")), "{body}");

    agent
        .expect(
            "POST",
            "/api/v1/lb/create",
            Some(json!({
                "main_interface": topo.lb_iface(),
                "default_mac": fmt_mac(topo.default_mac()),
                "max_vips": 8, "max_reals": 64, "lru_size": 65536, "mtu": topo.fabric_mtu,
                "xdp_attach_flags": 4, // XDP_FLAGS_DRV_MODE
            })),
            201,
        )
        .unwrap();
    let mut status = agent.expect("GET", "/api/v1/lb/status", None, 200).unwrap();
    // The maps' kernel memory: the agent's to read (its fds), most of it the
    // 65536-entry connection table and 8 rings of 65537 4-byte slots.
    let map_memory = status.as_object_mut().unwrap().remove("map_memory_bytes").unwrap();
    assert!(map_memory.as_u64().unwrap() > 8 * 65537 * 4, "{map_memory}");
    assert_eq!(
        status,
        json!({"initialized": true, "ready": true,
               "programs": {"balancer": format!("weir_balancer, built into weir-agent {}", env!("CARGO_PKG_VERSION")), "healthcheck": null}})
    );
    assert_eq!(agent.expect("GET", "/health/ready", None, 200).unwrap()["status"], "ready");

    let vip = json!({"address": VIP_V4.to_string(), "port": 80, "proto": 6});
    agent
        .expect(
            "POST",
            "/api/v1/vips",
            Some(json!({"address": VIP_V4.to_string(), "port": 80, "proto": 6, "flags": 0})),
            201,
        )
        .unwrap();
    let reals: Vec<_> =
        topo.reals.iter().map(|r| json!({"address": r.v4.to_string(), "weight": 1, "flags": 0})).collect();
    agent
        .expect("PUT", "/api/v1/vips/reals/batch", Some(json!({"vip": vip, "action": 0, "reals": reals})), 200)
        .unwrap();
    assert_eq!(
        agent
            .expect("GET", "/api/v1/vips/reals?address=10.200.255.1&port=80&proto=6", None, 200)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );

    let socket = SocketAddr::new(VIP_V4.into(), 80);
    let _servers: Vec<_> = topo.reals.iter().map(|r| serve(&r.ns, vec![socket], r.role.clone()).unwrap()).collect();
    let mut served = BTreeMap::new();
    for i in 0..150 {
        let name = connect_once(&topo.client.ns, socket, Duration::from_secs(3))
            .unwrap_or_else(|e| panic!("connection {i} through the REST-programmed VIP failed: {e:#}"));
        *served.entry(name).or_insert(0) += 1;
    }
    assert_eq!(served.len(), 3, "every real serves some: {served:?}");

    // The counters over REST agree with what happened.
    let vip_stats = agent.expect("GET", "/api/v1/stats/vip?address=10.200.255.1&port=80&proto=6", None, 200).unwrap();
    let tx = agent.expect("GET", "/api/v1/stats/xdp/tx", None, 200).unwrap();
    assert_eq!(vip_stats["v1"], tx["v1"], "every transmitted packet was a VIP packet");
    assert!(tx["v1"].as_u64().unwrap() >= 150 * 3, "{tx}");
    let misses = agent.expect("GET", "/api/v1/stats/lru/miss", None, 200).unwrap();
    assert_eq!(misses["v1"], 150, "one SYN per connection took the ring");

    // real-for-flow names one of the reals; a drained real gets nothing new.
    let flow = json!({"src": "10.200.1.2", "dst": VIP_V4.to_string(), "src_port": 40000, "dst_port": 80, "proto": 6});
    let real = agent.expect("GET", "/api/v1/utils/real-for-flow", Some(flow), 200).unwrap()["address"].clone();
    assert!(topo.reals.iter().any(|r| json!(r.v4.to_string()) == real), "{real}");
    let drained = topo.reals[0].v4.to_string();
    agent
        .expect(
            "POST",
            "/api/v1/vips/reals",
            Some(json!({"vip": vip, "real": {"address": drained, "weight": 0, "flags": 0}})),
            201,
        )
        .unwrap();
    for _ in 0..60 {
        let name = connect_once(&topo.client.ns, socket, Duration::from_secs(3)).unwrap();
        assert_ne!(name, topo.reals[0].role, "a real drained over REST got a new connection");
    }

    agent.expect("POST", "/api/v1/lb/close", None, 200).unwrap();
    let link = topo.lb.ns.ip(["-d", "link", "show", topo.lb_iface()]).unwrap();
    assert!(!link.contains("weir_balancer"), "still attached after /lb/close: {link}");
}
