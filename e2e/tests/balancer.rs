//! The balancer end to end: real TCP connections from a client namespace to a
//! VIP, through the XDP balancer (driver mode) on the lb host's veth, IP-in-IP
//! to real namespaces that decapsulate in XDP and answer the client directly.

use std::collections::BTreeMap;
use std::time::Duration;

use weir_agent::dataplane::{RealSpec, VipId};
use weir_e2e::lb::{self, vip_socket};
use weir_e2e::{connect_once, serve, serve_long_lived, skip_unless_root, Conn, Server, Topology, TopologyConfig};
use weir_ebpf::abi::Stat;

const TIMEOUT: Duration = Duration::from_secs(3);

fn topology(reals: usize) -> Topology {
    let topo = Topology::build(TopologyConfig { reals, ..TopologyConfig::default() }).expect("build the topology");
    topo.attach_decap().expect("attach decap on the reals");
    topo
}

/// A server on every real answering with the real's role ("real0", ...).
fn servers(topo: &Topology, vip: VipId, long_lived: bool) -> Vec<Server> {
    topo.reals
        .iter()
        .map(|real| {
            let start = if long_lived { serve_long_lived } else { serve };
            start(&real.ns, vec![vip_socket(vip)], real.role.clone()).expect("start a server")
        })
        .collect()
}

/// `n` fresh connections to `vip`; how many each real served. Long-lived
/// servers answer only once asked, so those connections ask once.
fn connect_many(topo: &Topology, vip: VipId, n: usize, long_lived: bool) -> BTreeMap<String, usize> {
    let mut served = BTreeMap::new();
    for i in 0..n {
        let name = if long_lived {
            Conn::open(&topo.client.ns, vip_socket(vip), TIMEOUT).and_then(|mut conn| conn.ask())
        } else {
            connect_once(&topo.client.ns, vip_socket(vip), TIMEOUT)
        };
        let name = name.unwrap_or_else(|e| panic!("connection {i} of {n} to {vip} failed: {e:#}"));
        *served.entry(name).or_insert(0) += 1;
    }
    served
}

fn balanced_over_every_real(family_v6: bool, real_v6: bool) {
    let topo = topology(3);
    let mut balancer = lb::start(&topo, true).expect("start the balancer");
    let vip = lb::vip(&topo, family_v6).unwrap();
    lb::add_vip(&mut balancer, &topo, vip, &[0, 1, 2], real_v6).unwrap();
    let _servers = servers(&topo, vip, false);

    let served = connect_many(&topo, vip, 200, false);
    assert_eq!(served.values().sum::<usize>(), 200);
    for real in &topo.reals {
        assert!(served.get(&real.role).copied().unwrap_or(0) > 0, "{} served nothing: {served:?}", real.role);
    }
    // Every connection is at least SYN, ACK, request ACK, FIN, ... through XDP_TX.
    let tx = balancer.stat(Stat::XdpTx).unwrap();
    assert!(tx.v1 >= 200 * 3, "XDP_TX packets: {tx:?}");
    let vip_stats = balancer.vip_stats(&vip).unwrap();
    assert_eq!(vip_stats.v1, tx.v1, "every TX packet was a VIP packet");
    let syn_misses = balancer.stat(Stat::LruMiss).unwrap().v1;
    assert_eq!(syn_misses, 200, "one SYN per connection took the ring");
}

#[test]
fn ipv4_tcp_reaches_every_real() {
    if skip_unless_root("ipv4_tcp_reaches_every_real") {
        return;
    }
    balanced_over_every_real(false, false);
}

#[test]
fn ipv6_tcp_reaches_every_real() {
    if skip_unless_root("ipv6_tcp_reaches_every_real") {
        return;
    }
    balanced_over_every_real(true, true);
}

#[test]
fn ipv4_vip_with_ipv6_reals() {
    if skip_unless_root("ipv4_vip_with_ipv6_reals") {
        return;
    }
    balanced_over_every_real(false, true);
}

#[test]
fn long_lived_connection_keeps_its_real_while_reals_are_added() {
    if skip_unless_root("long_lived_connection_keeps_its_real_while_reals_are_added") {
        return;
    }
    let topo = topology(4);
    let mut balancer = lb::start(&topo, true).unwrap();
    let vip = lb::vip(&topo, false).unwrap();
    lb::add_vip(&mut balancer, &topo, vip, &[0, 1], false).unwrap();
    let _servers = servers(&topo, vip, true);

    let mut conns: Vec<(Conn, String)> = (0..8)
        .map(|_| {
            let mut conn = Conn::open(&topo.client.ns, vip_socket(vip), TIMEOUT).unwrap();
            let real = conn.ask().unwrap();
            (conn, real)
        })
        .collect();
    for i in [2, 3] {
        let addr = lb::real_addr(&topo, i, false).unwrap();
        balancer.add_real(&vip, RealSpec { addr, weight: 1, flags: 0 }).unwrap();
    }
    for (conn, real) in &mut conns {
        for _ in 0..3 {
            assert_eq!(&conn.ask().unwrap(), real, "a long-lived connection changed real");
        }
    }
    // New connections do reach the added reals.
    let served = connect_many(&topo, vip, 100, true);
    assert!(served.contains_key("real2") && served.contains_key("real3"), "{served:?}");
}

#[test]
fn drained_real_gets_no_new_connections_but_keeps_its_own() {
    if skip_unless_root("drained_real_gets_no_new_connections_but_keeps_its_own") {
        return;
    }
    let topo = topology(3);
    let mut balancer = lb::start(&topo, true).unwrap();
    let vip = lb::vip(&topo, false).unwrap();
    lb::add_vip(&mut balancer, &topo, vip, &[0, 1, 2], false).unwrap();
    let _servers = servers(&topo, vip, true);

    // An established connection on real0, found by opening until one lands there.
    let mut on_real0 = (0..100)
        .find_map(|_| {
            let mut conn = Conn::open(&topo.client.ns, vip_socket(vip), TIMEOUT).unwrap();
            (conn.ask().unwrap() == "real0").then_some(conn)
        })
        .expect("no connection reached real0 in 100 tries");

    let real0 = lb::real_addr(&topo, 0, false).unwrap();
    balancer.add_real(&vip, RealSpec { addr: real0, weight: 0, flags: 0 }).unwrap();
    assert_eq!(balancer.reals(&vip).unwrap().iter().find(|r| r.addr == real0).unwrap().weight, 0);

    let served = connect_many(&topo, vip, 100, true);
    assert!(!served.contains_key("real0"), "a drained real got new connections: {served:?}");
    assert_eq!(served.values().sum::<usize>(), 100);
    assert_eq!(on_real0.ask().unwrap(), "real0", "the drained real's own connection moved");
}

#[test]
fn restarted_agent_adopts_the_datapath_without_dropping_traffic() {
    if skip_unless_root("restarted_agent_adopts_the_datapath_without_dropping_traffic") {
        return;
    }
    let topo = topology(2);
    let vip = lb::vip(&topo, false).unwrap();
    let mut balancer = lb::start(&topo, false).unwrap();
    lb::add_vip(&mut balancer, &topo, vip, &[0, 1], false).unwrap();
    let _servers = servers(&topo, vip, true);
    let mut conn = Conn::open(&topo.client.ns, vip_socket(vip), TIMEOUT).unwrap();
    let real = conn.ask().unwrap();

    // The agent stops without cleanup: the pinned datapath keeps forwarding.
    drop(balancer);
    assert_eq!(conn.ask().unwrap(), real, "the connection broke while no agent ran");
    assert_eq!(connect_many(&topo, vip, 20, true).values().sum::<usize>(), 20);

    // A new agent adopts it: same VIP and reals, same connection, new ones work.
    let mut adopted = lb::start(&topo, true).unwrap();
    let vips = adopted.vips();
    assert_eq!(vips.len(), 1);
    assert_eq!(vips[0].id, vip);
    assert_eq!(adopted.reals(&vip).unwrap().len(), 2);
    assert_eq!(conn.ask().unwrap(), real, "the connection broke across the adoption");
    let served = connect_many(&topo, vip, 40, true);
    assert_eq!(served.len(), 2, "{served:?}");

    // The adopted Balancer is fully in charge: a change reaches the datapath.
    adopted.del_real(&vip, lb::real_addr(&topo, 1, false).unwrap()).unwrap();
    let served = connect_many(&topo, vip, 20, true);
    assert_eq!(served.keys().collect::<Vec<_>>(), ["real0"], "{served:?}");
}

/// The id of the XDP program on `iface` in `ns`, if any.
fn xdp_prog_id(ns: &weir_e2e::Netns, iface: &str) -> Option<String> {
    let link = ns.ip(["-d", "link", "show", "dev", iface]).expect("ip link show");
    link.split("prog/xdp id ").nth(1).and_then(|t| t.split_whitespace().next()).map(str::to_owned)
}

/// Issue #10: balancers in two namespaces, on interfaces of one name (`eth0`)
/// and one pin root, never adopt each other's pins: each is attached to its
/// own interface with its own program and state, and a restart in one adopts
/// that one's datapath only.
#[test]
fn balancers_on_same_named_interfaces_in_two_namespaces_stay_apart() {
    if skip_unless_root("balancers_on_same_named_interfaces_in_two_namespaces_stay_apart") {
        return;
    }
    let config = TopologyConfig { reals: 2, ipv6: false, real_iface: Some("eth0".into()), ..TopologyConfig::default() };
    let topo = Topology::build(config).expect("build the topology");
    let (ns0, ns1) = (&topo.reals[0].ns, &topo.reals[1].ns);
    let config =
        |cleanup| weir_agent::dataplane::BalancerConfig { main_interface: "eth0".into(), ..lb::config(&topo, cleanup) };
    let vip = lb::vip(&topo, false).unwrap();

    let mut first = ns0.run(|| weir_agent::dataplane::Balancer::new(config(false))).expect("balancer in real0");
    first.add_vip(weir_agent::dataplane::VipSpec { id: vip, flags: 0 }).unwrap();
    let second = ns1.run(|| weir_agent::dataplane::Balancer::new(config(true))).expect("balancer in real1");
    assert!(first.is_attached() && second.is_attached());
    assert_eq!(second.vips(), vec![], "real1's balancer adopted real0's state");
    let (id0, id1) = (xdp_prog_id(ns0, "eth0"), xdp_prog_id(ns1, "eth0"));
    assert!(id0.is_some() && id1.is_some() && id0 != id1, "programs: real0 {id0:?}, real1 {id1:?}");

    // real0's agent restarts (no cleanup): it adopts its own datapath.
    drop(first);
    let first = ns0.run(|| weir_agent::dataplane::Balancer::new(config(true))).expect("restart in real0");
    assert_eq!(first.vips().iter().map(|v| v.id).collect::<Vec<_>>(), vec![vip], "real0's state not adopted");
    assert!(first.is_attached() && second.is_attached());
    let (new0, new1) = (xdp_prog_id(ns0, "eth0"), xdp_prog_id(ns1, "eth0"));
    assert!(new0.is_some() && new0 != id0, "real0's program was not replaced in its link: {new0:?}");
    assert_eq!(new1, id1, "real1's program changed when real0 restarted");
    drop((first, second));
    assert_eq!((xdp_prog_id(ns0, "eth0"), xdp_prog_id(ns1, "eth0")), (None, None), "cleanup left a program");
}
