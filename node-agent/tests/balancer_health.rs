//! Real health through the `Balancer` API, proven with packets run through
//! the balancer XDP program (BPF_PROG_TEST_RUN): an unhealthy real gets no
//! new flow while an established flow to it keeps going (its
//! connection-table entry stays), it gets new flows again once healthy;
//! every real unhealthy → fail open (all of them in the ring, the VIP says
//! so); the prober switch makes new reals start unhealthy, a `dummy` check
//! makes them healthy; re-adding a real keeps its health; bad requests
//! change nothing. Every frame sent out must equal, byte for byte, the
//! encapsulation toward the real it names, and the reals' counters are exact.
//!
//! Needs root (it loads the program): without it, prints `SKIPPED (needs root)`.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use weir_agent::dataplane::{
    Balancer, BalancerConfig, CheckKind, Counter, HealthCheck, RealAction, RealSpec, Verdict, VipId, VipSpec,
};
use weir_agent::error::Code;
use weir_test_support::packet::*;
use weir_test_support::skip_unless_root;

const TCP: u8 = 6;
const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);

fn r4(i: u8) -> IpAddr {
    Ipv4Addr::new(10, 0, 0, i).into()
}

fn vip_id() -> VipId {
    VipId { addr: VIP.into(), port: 80, proto: TCP }
}

/// A testing balancer whose connection table no test can overflow (per-CPU
/// LRU lists split the entries between the possible CPUs).
fn balancer() -> Balancer {
    let cpus = aya::util::nr_cpus().expect("number of possible CPUs") as u32;
    Balancer::new(BalancerConfig { lru_size: (1024 * cpus).max(4096), ..BalancerConfig::testing() })
        .expect("load the balancer in testing mode")
}

fn add_vip(lb: &mut Balancer, reals: &[IpAddr]) -> VipId {
    let id = vip_id();
    lb.add_vip(VipSpec { id, flags: 0 }).unwrap();
    let specs: Vec<RealSpec> = reals.iter().map(|&addr| RealSpec { addr, weight: 1, flags: 0 }).collect();
    lb.modify_reals(&id, RealAction::Add, &specs).unwrap();
    id
}

/// Runs `frame`; asserts XDP_TX toward one of `reals`, byte for byte the
/// encapsulation toward the real the output names; returns that real.
fn sent_to(lb: &Balancer, what: &str, frame: &[u8], reals: &[IpAddr]) -> IpAddr {
    let sim = lb.simulate(frame).unwrap_or_else(|e| panic!("{what}: simulate: {e}"));
    assert_eq!(sim.verdict, Verdict::Tx, "{what}: verdict");
    let real = outer_dst(&sim.packet);
    assert!(reals.contains(&real), "{what}: sent to {real}, not one of {reals:?}");
    let want = encapsulated(frame, BalancerConfig::testing().default_mac, real);
    assert!(sim.packet == want, "{what}: output frame: {}", first_difference(&sim.packet, &want));
    real
}

fn flow(port: u16) -> SocketAddr {
    sock(CLIENT, port)
}

/// SYNs of flows `ports`, each sent to one of `reals`: the reals reached, in flow order.
fn syns(lb: &Balancer, what: &str, ports: std::ops::Range<u16>, reals: &[IpAddr]) -> Vec<IpAddr> {
    ports.map(|p| sent_to(lb, &format!("{what}: SYN {p}"), &syn(flow(p), sock(VIP, 80)), reals)).collect()
}

fn real_counter(lb: &Balancer, addr: IpAddr) -> Counter {
    lb.real_stats(lb.real_index(addr).expect("a real's index")).expect("the real's counters")
}

fn health(lb: &Balancer, id: &VipId) -> Vec<(IpAddr, u32, bool)> {
    lb.reals_with_health(id).unwrap().into_iter().map(|(r, h)| (r.addr, r.weight, h)).collect()
}

#[test]
fn an_unhealthy_real_gets_no_new_flow_and_keeps_its_established_ones() {
    if skip_unless_root("an_unhealthy_real_gets_no_new_flow_and_keeps_its_established_ones") {
        return;
    }
    let mut lb = balancer();
    let (a, b, c) = (r4(1), r4(2), r4(3));
    let id = add_vip(&mut lb, &[a, b, c]);
    let before = syns(&lb, "all healthy", 30000..30064, &[a, b, c]);
    let on_a: Vec<u16> = (30000..30064).zip(&before).filter(|&(_, &r)| r == a).map(|(p, _)| p).collect();
    assert!(!on_a.is_empty(), "no flow on {a}: the test proves nothing");

    lb.set_real_health(&id, a, false).unwrap();
    let info = lb.vip_info(&id).unwrap();
    assert_eq!((info.reals, info.healthy_reals, info.fail_open), (3, 2, false));
    assert_eq!(health(&lb, &id), vec![(a, 1, false), (b, 1, true), (c, 1, true)], "listed with its weight");
    // Only a's established flows may reach it from now on: count exactly those.
    let a_before = real_counter(&lb, a);
    let reached: BTreeSet<IpAddr> = syns(&lb, "a unhealthy", 20000..20200, &[b, c]).into_iter().collect();
    assert_eq!(reached, [b, c].into());
    let mut l3 = 0;
    for &p in &on_a {
        let ack = ack(flow(p), sock(VIP, 80));
        l3 += l3_len(&ack);
        assert_eq!(sent_to(&lb, &format!("ACK {p}, established on {a}"), &ack, &[a]), a);
    }
    let a_after = real_counter(&lb, a);
    assert_eq!((a_after.v1 - a_before.v1, a_after.v2 - a_before.v2), (on_a.len() as u64, l3), "{a}'s counters");
    // A new SYN of such a flow takes the ring, which has no a.
    sent_to(&lb, "SYN of a's flow again", &syn(flow(on_a[0]), sock(VIP, 80)), &[b, c]);

    // Healthy again: it gets new flows (the same ring as before it left).
    lb.set_real_health(&id, a, true).unwrap();
    assert_eq!(syns(&lb, "a healthy again", 30000..30064, &[a, b, c]), before);
    assert_eq!(lb.vip_info(&id).unwrap().healthy_reals, 3);
}

#[test]
fn every_real_unhealthy_fails_open() {
    if skip_unless_root("every_real_unhealthy_fails_open") {
        return;
    }
    let mut lb = balancer();
    let (a, b, c) = (r4(1), r4(2), r4(3));
    let id = add_vip(&mut lb, &[a, b, c]);
    let healthy = syns(&lb, "all healthy", 30000..30100, &[a, b, c]);

    lb.set_reals_health(&id, &[(a, false), (b, false), (c, false)]).unwrap();
    let info = lb.vip_info(&id).unwrap();
    assert_eq!((info.healthy_reals, info.fail_open), (0, true));
    // All of them in the ring: the very ring of all healthy.
    assert_eq!(syns(&lb, "all unhealthy", 30000..30100, &[a, b, c]), healthy);

    // One healthy again: it takes every new flow; the VIP no longer fails open.
    lb.set_reals_health(&id, &[(b, true)]).unwrap();
    assert!(!lb.vip_info(&id).unwrap().fail_open);
    assert_eq!(syns(&lb, "only b healthy", 30000..30100, &[b]), vec![b; 100]);

    // A batch promotes and demotes together; an address the VIP lacks is skipped.
    lb.set_reals_health(&id, &[(b, false), (c, true), (r4(9), true)]).unwrap();
    assert_eq!(health(&lb, &id), vec![(a, 1, false), (b, 1, false), (c, 1, true)]);
    assert_eq!(syns(&lb, "only c healthy", 30000..30100, &[c]), vec![c; 100]);
}

#[test]
fn the_prober_switch_decides_new_reals_and_known_ones_keep_their_health() {
    if skip_unless_root("the_prober_switch_decides_new_reals_and_known_ones_keep_their_health") {
        return;
    }
    let mut lb = balancer();
    let (a, b, c, d) = (r4(1), r4(2), r4(3), r4(4));
    assert!(!lb.prober_enabled());
    let id = add_vip(&mut lb, &[a]);
    lb.set_prober_enabled(true).unwrap();
    let add = |lb: &mut Balancer, addr, weight| {
        lb.modify_reals(&id, RealAction::Add, &[RealSpec { addr, weight, flags: 0 }]).unwrap();
    };
    add(&mut lb, b, 1);
    add(&mut lb, c, 1);
    assert_eq!(health(&lb, &id), vec![(a, 1, true), (b, 1, false), (c, 1, false)], "new reals start unhealthy");
    assert_eq!(syns(&lb, "only a healthy", 40000..40050, &[a]), vec![a; 50]);

    // Re-adding (katran-cli's `real update`) keeps the health, takes the weight.
    add(&mut lb, b, 7);
    add(&mut lb, a, 3);
    assert_eq!(health(&lb, &id), vec![(a, 3, true), (b, 7, false), (c, 1, false)]);
    assert_eq!(syns(&lb, "a still the only healthy", 40000..40050, &[a]), vec![a; 50]);

    // A deleted real forgets its health: back, it starts from the default.
    lb.modify_reals(&id, RealAction::Delete, &[RealSpec { addr: a, weight: 0, flags: 0 }]).unwrap();
    assert!(lb.vip_info(&id).unwrap().fail_open, "b and c unhealthy: fail open");
    add(&mut lb, a, 1);
    assert_eq!(lb.vip_info(&id).unwrap().healthy_reals, 0);

    // dummy: every real healthy, now and when added.
    let dummy = HealthCheck {
        kind: CheckKind::Dummy,
        port: 0,
        http: None,
        https: None,
        udp: None,
        interval_ms: 5000,
        timeout_ms: 2000,
        healthy_threshold: 3,
        unhealthy_threshold: 3,
    };
    lb.set_health_check(&id, dummy.clone()).unwrap();
    assert_eq!(lb.health_check(&id).unwrap(), Some(HealthCheck { port: 80, ..dummy }), "port 0 is the VIP's");
    add(&mut lb, d, 1);
    assert_eq!(health(&lb, &id), vec![(a, 1, true), (b, 7, true), (c, 1, true), (d, 1, true)]);
    let reached: BTreeSet<IpAddr> = syns(&lb, "all healthy", 40000..40200, &[a, b, c, d]).into_iter().collect();
    assert_eq!(reached, [a, b, c, d].into());

    // Without a dummy check, new reals start unhealthy again; the rest keep theirs.
    lb.del_health_check(&id).unwrap();
    add(&mut lb, r4(5), 1);
    assert_eq!(lb.vip_info(&id).unwrap().healthy_reals, 4);
}

#[test]
fn bad_health_requests_change_nothing() {
    if skip_unless_root("bad_health_requests_change_nothing") {
        return;
    }
    let mut lb = balancer();
    let (a, b) = (r4(1), r4(2));
    let id = add_vip(&mut lb, &[a, b]);
    lb.set_real_health(&id, b, false).unwrap();
    let other = VipId { port: 81, ..id };
    let err = |e: weir_agent::Error| (e.code(), e.to_string());

    assert_eq!(
        err(lb.set_real_health(&other, a, false).unwrap_err()),
        (Code::NotFound, "VIP 10.100.0.1:81/tcp not found".into())
    );
    assert_eq!(
        err(lb.set_real_health(&id, r4(9), false).unwrap_err()),
        (Code::NotFound, "real 10.0.0.9 of VIP 10.100.0.1:80/tcp not found".into())
    );
    assert_eq!(
        err(lb.set_reals_health(&id, &[(a, false), (a, true)]).unwrap_err()),
        (Code::InvalidRequest, "invalid reals: 10.0.0.1 appears twice in one batch".into())
    );
    let tcp = HealthCheck {
        kind: CheckKind::Tcp,
        port: 0,
        http: None,
        https: None,
        udp: None,
        interval_ms: 1000,
        timeout_ms: 2000,
        healthy_threshold: 3,
        unhealthy_threshold: 3,
    };
    assert_eq!(
        err(lb.set_health_check(&id, tcp.clone()).unwrap_err()),
        (Code::InvalidRequest, "invalid healthcheck: timeout_ms: 2000 must be below interval_ms (1000)".into())
    );
    assert_eq!(
        err(lb.set_health_check(&id, HealthCheck { interval_ms: 5000, ..tcp.clone() }).unwrap_err()),
        (
            Code::FeatureDisabled,
            "a tcp health check without the prober (only dummy checks run without it) is not supported by this \
             datapath"
                .into()
        )
    );
    assert_eq!(err(lb.del_health_check(&id).unwrap_err()).0, Code::NotFound);
    let portless = VipId { port: 0, ..id };
    lb.add_vip(VipSpec { id: portless, flags: 0 }).unwrap();
    assert_eq!(
        err(lb.set_health_check(&portless, HealthCheck { interval_ms: 5000, ..tcp.clone() }).unwrap_err()),
        (Code::InvalidRequest, "invalid healthcheck: port: required for the port-less VIP 10.100.0.1:0/tcp".into())
    );
    // A dummy check probes nothing: a port-less VIP takes one without a port.
    let dummy = HealthCheck { kind: CheckKind::Dummy, interval_ms: 5000, ..tcp };
    lb.set_health_check(&portless, dummy.clone()).unwrap();
    assert_eq!(lb.health_check(&portless).unwrap(), Some(dummy));
    lb.del_vip(&portless).unwrap();

    assert_eq!(health(&lb, &id), vec![(a, 1, true), (b, 1, false)]);
    assert_eq!(lb.health_check(&id).unwrap(), None);
    assert_eq!(syns(&lb, "only a healthy", 50000..50050, &[a]), vec![a; 50]);
}
