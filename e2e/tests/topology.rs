//! The topology on its own, without a balancer: if these fail, the plumbing is
//! broken, not weir. Each test builds its own namespaces (unique names), so
//! they run in parallel.

use std::net::{IpAddr, SocketAddr};

use weir_e2e::topology::fmt_mac;
use weir_e2e::{
    connect_once, netns, serve, serve_long_lived, skip_unless_root, Conn, Topology, TopologyConfig, DEFAULT_TIMEOUT,
    VIP_V4, VIP_V6,
};

fn dual_stack(reals: usize) -> Topology {
    Topology::build(TopologyConfig { reals, ipv6: true, ..TopologyConfig::default() }).expect("build the topology")
}

fn sock(ip: IpAddr, port: u16) -> SocketAddr {
    SocketAddr::new(ip, port)
}

#[test]
fn client_reaches_each_real_over_tcp_v4_and_v6() {
    if skip_unless_root("client_reaches_each_real_over_tcp_v4_and_v6") {
        return;
    }
    let topo = dual_stack(2);
    let servers: Vec<_> = topo
        .reals
        .iter()
        .map(|real| {
            let addrs = real.addrs().into_iter().map(|ip| sock(ip, 8080)).collect();
            serve(&real.ns, addrs, real.role.clone()).expect("start a server on the real")
        })
        .collect();
    for (real, server) in topo.reals.iter().zip(&servers) {
        assert_eq!(real.addrs().len(), 2, "{} is dual-stack", real.role);
        for ip in real.addrs() {
            let name = connect_once(&topo.client.ns, sock(ip, 8080), DEFAULT_TIMEOUT)
                .unwrap_or_else(|e| panic!("client -> {} ({ip}): {e:#}", real.role));
            assert_eq!(name, real.role, "answer from {ip}");
        }
        assert_eq!(server.accepted(), 2, "{} saw one v4 and one v6 connection", real.role);
    }
}

#[test]
fn lb_is_reachable_from_the_client() {
    if skip_unless_root("lb_is_reachable_from_the_client") {
        return;
    }
    let topo = dual_stack(1);
    let addrs = topo.lb.addrs().into_iter().map(|ip| sock(ip, 8080)).collect();
    let _server = serve(&topo.lb.ns, addrs, "lb".to_owned()).expect("start a server on the lb");
    for ip in topo.lb.addrs() {
        let name = connect_once(&topo.client.ns, sock(ip, 8080), DEFAULT_TIMEOUT)
            .unwrap_or_else(|e| panic!("client -> lb ({ip}): {e:#}"));
        assert_eq!(name, "lb");
    }
}

#[test]
fn long_lived_connection_answers_every_line() {
    if skip_unless_root("long_lived_connection_answers_every_line") {
        return;
    }
    let topo = dual_stack(1);
    let real = &topo.reals[0];
    let addrs = real.addrs().into_iter().map(|ip| sock(ip, 8080)).collect();
    let server = serve_long_lived(&real.ns, addrs, real.role.clone()).expect("start a server");
    for ip in real.addrs() {
        let mut conn = Conn::open(&topo.client.ns, sock(ip, 8080), DEFAULT_TIMEOUT).expect("connect");
        for _ in 0..5 {
            assert_eq!(conn.ask().expect("ask"), "real0");
        }
        assert_eq!(conn.peer_addr(), sock(ip, 8080));
    }
    assert_eq!(server.accepted(), 2);
    // Dropping the server with a connection still open must not hang.
    let _open = Conn::open(&topo.client.ns, sock(real.addrs()[0], 8080), DEFAULT_TIMEOUT).expect("connect");
    drop(server);
}

#[test]
fn vips_are_local_on_every_real_and_routed_to_the_lb() {
    if skip_unless_root("vips_are_local_on_every_real_and_routed_to_the_lb") {
        return;
    }
    let topo = dual_stack(2);
    assert_eq!(topo.vips(), vec![IpAddr::V4(VIP_V4), IpAddr::V6(VIP_V6)]);
    for real in &topo.reals {
        let addrs = topo.vips().into_iter().map(|ip| sock(ip, 80)).collect();
        let _server = serve(&real.ns, addrs, real.role.clone()).expect("serve on the VIPs");
        for vip in topo.vips() {
            let name = connect_once(&real.ns, sock(vip, 80), DEFAULT_TIMEOUT)
                .unwrap_or_else(|e| panic!("{} -> its own VIP {vip}: {e:#}", real.role));
            assert_eq!(name, real.role);
        }
    }
    for vip in topo.vips() {
        let route = topo.router.ip(["route", "get", &vip.to_string()]).expect("ip route get");
        let via = topo.lb.addr(vip.is_ipv6()).expect("lb address").to_string();
        assert!(
            route.contains(&format!("via {via} ")) && route.contains(&format!("dev {} ", topo.lb.router_iface)),
            "router sends {vip} to the lb: {route}"
        );
    }
}

#[test]
fn interfaces_macs_and_router_xdp_are_as_advertised() {
    if skip_unless_root("interfaces_macs_and_router_xdp_are_as_advertised") {
        return;
    }
    let topo = dual_stack(2);
    for host in topo.hosts() {
        let link = host.ns.ip(["link", "show", "dev", &host.iface]).expect("ip link show");
        assert!(link.contains(&format!("link/ether {} ", fmt_mac(host.mac))), "{}: {link}", host.role);
        assert!(link.contains(&format!("mtu {} ", host.mtu)), "{}: {link}", host.role);
        let router_link = topo.router.ip(["link", "show", "dev", &host.router_iface]).expect("ip link show");
        assert!(router_link.contains(&format!("link/ether {} ", fmt_mac(host.router_mac))), "{router_link}");
        let features = host.ns.exec("ethtool", ["-k", &host.iface]).expect("ethtool -k");
        assert!(features.contains("tx-checksumming: off"), "{}: tx checksum offload still on", host.role);
    }
    assert_eq!(topo.lb.mtu, topo.fabric_mtu);
    assert_eq!(topo.reals[0].mtu, topo.fabric_mtu);
    assert_eq!(topo.client.mtu, weir_e2e::topology::CLIENT_MTU);
    assert_eq!(topo.lb_iface(), "vlb");
    assert_eq!(topo.lb_mac(), topo.lb.mac);
    assert_eq!(topo.default_mac(), topo.lb.router_mac);
    // XDP_PASS sits on the router's lb-facing veth, in driver mode.
    let rlb = topo.router.ip(["link", "show", "dev", &topo.lb.router_iface]).expect("ip link show");
    assert!(rlb.contains("xdp "), "no native XDP program on {}: {rlb}", topo.lb.router_iface);
    // Reverse-path filtering is off and only the router forwards.
    let sysctl = |ns: &netns::Netns, key: &str| {
        ns.sh(&format!("cat /proc/sys/{}", key.replace('.', "/"))).unwrap().trim().to_owned()
    };
    assert_eq!(sysctl(&topo.router, "net.ipv4.ip_forward"), "1");
    assert_eq!(sysctl(&topo.router, "net.ipv6.conf.all.forwarding"), "1");
    assert_eq!(sysctl(&topo.router, "net.ipv4.conf.all.rp_filter"), "0");
    assert_eq!(sysctl(&topo.router, "net.ipv4.conf.rlb.rp_filter"), "0");
    assert_eq!(sysctl(&topo.lb.ns, "net.ipv4.ip_forward"), "0");
    assert_eq!(sysctl(&topo.reals[1].ns, "net.ipv4.conf.vreal1.rp_filter"), "0");
}

#[test]
fn ipv4_only_topology_has_no_ipv6() {
    if skip_unless_root("ipv4_only_topology_has_no_ipv6") {
        return;
    }
    let topo = Topology::build(TopologyConfig { reals: 1, ipv6: false, ..TopologyConfig::default() }).expect("build");
    assert_eq!(topo.vips(), vec![IpAddr::V4(VIP_V4)]);
    assert!(topo.hosts().all(|h| h.v6.is_none() && h.addrs().len() == 1));
    let real = &topo.reals[0];
    let _server = serve(&real.ns, vec![sock(IpAddr::V4(real.v4), 8080)], "real0".to_owned()).expect("serve");
    assert_eq!(
        connect_once(&topo.client.ns, sock(IpAddr::V4(real.v4), 8080), DEFAULT_TIMEOUT).expect("connect"),
        "real0"
    );
}

#[test]
fn teardown_leaves_no_namespace_behind() {
    if skip_unless_root("teardown_leaves_no_namespace_behind") {
        return;
    }
    let before = netns::list().expect("list namespaces");
    let topo = dual_stack(2);
    let names = topo.netns_names();
    let pin_root = topo.pin_root.clone();
    assert_eq!(names.len(), 5, "router, client, lb, real0, real1");
    let during = netns::list().expect("list namespaces");
    for name in &names {
        assert!(!before.contains(name), "{name} existed before the topology");
        assert!(during.contains(name), "{name} missing while the topology lives");
    }
    drop(topo);
    let after = netns::list().expect("list namespaces");
    for name in &names {
        assert!(!after.contains(name), "{name} survived the topology");
    }
    assert!(!pin_root.exists(), "{} survived the topology", pin_root.display());
}

#[test]
fn teardown_happens_when_a_test_panics() {
    if skip_unless_root("teardown_happens_when_a_test_panics") {
        return;
    }
    let names = std::sync::Mutex::new(Vec::new());
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let topo = dual_stack(1);
        *names.lock().unwrap() = topo.netns_names();
        panic!("a failing test (expected)");
    }));
    assert!(result.is_err());
    let names = names.into_inner().unwrap();
    assert_eq!(names.len(), 4);
    let after = netns::list().expect("list namespaces");
    for name in &names {
        assert!(!after.contains(name), "{name} survived a panicking test");
    }
}

#[test]
fn cleanup_stale_removes_only_dead_processes_namespaces() {
    if skip_unless_root("cleanup_stale_removes_only_dead_processes_namespaces") {
        return;
    }
    // A pid that has surely exited: a child we waited for.
    let mut child = std::process::Command::new("true").spawn().expect("spawn true");
    let dead_pid = child.id();
    child.wait().expect("wait for true");
    assert!(!netns::pid_alive(dead_pid));
    let stale = format!("{}{dead_pid}-0-stale", netns::NETNS_PREFIX);
    std::process::Command::new("ip").args(["netns", "add", &stale]).status().expect("ip netns add");
    let alive = netns::Netns::new("alive").expect("create a namespace");

    let removed = Topology::cleanup_stale().expect("cleanup_stale");
    let after = netns::list().expect("list namespaces");
    assert!(removed.contains(&stale), "removed {removed:?}");
    assert!(!after.contains(&stale), "{stale} is still there");
    assert!(after.contains(&alive.name().to_owned()), "a live process's namespace was removed");
}

#[test]
fn default_gateway_mac_is_the_routers() {
    if skip_unless_root("default_gateway_mac_is_the_routers") {
        return;
    }
    let topo = Topology::build(TopologyConfig { reals: 0, ..TopologyConfig::default() }).expect("build the topology");
    // `--default-mac gateway`: read in the lb's namespace; the neighbour entry does not
    // exist yet, so the resolver has to make the kernel resolve it.
    let iface = topo.lb_iface().to_owned();
    let mac = topo.lb.ns.run(move || weir_agent::dataplane::gateway::default_gateway_mac(&iface));
    assert_eq!(fmt_mac(mac.expect("resolved")), fmt_mac(topo.default_mac()));
    // An interface without a default route is a clear error.
    let err = topo.lb.ns.run(|| weir_agent::dataplane::gateway::default_gateway_mac("lo")).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid default_mac: gateway: lo has no IPv4 default route (name the next hop's MAC instead)"
    );
}
