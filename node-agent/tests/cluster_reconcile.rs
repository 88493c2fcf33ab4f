//! Cluster-mode reconciliation against a real Balancer in testing mode: plans
//! come from VirtualService and RealServer objects through
//! `weir_crds::validation::resolve`, exactly as the agent computes them, and
//! the result is checked through the Balancer's reads and by simulating SYNs.
//!
//! Every test loads the program (BPF_PROG_TEST_RUN needs root): without root
//! it prints `SKIPPED (needs root): <test>` and returns.

mod support {
    pub mod cluster;
}

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use weir_agent::cluster::{Op, Reconciler};
use weir_agent::dataplane::{Balancer, BalancerConfig, CheckKind, HashFunction, RealSpec, VipId, VipSpec};
use weir_crds::v1alpha1::{
    HashFunction as CrdHash, HealthCheckSpec, HealthCheckType, RealServer, VipFlag, VirtualService,
};
use weir_crds::validation::{resolve, Capacity, NodeInfo, NodePlan};

use support::cluster::*;

fn vs(name: &str, address: Ipv4Addr) -> VirtualService {
    virtual_service(name, address, None)
}

fn rs(name: &str, vs: &str, addr: IpAddr, weight: u32) -> RealServer {
    real_server(name, vs, addr, weight)
}

fn plan(vss: &[VirtualService], rss: &[RealServer]) -> NodePlan {
    let node = NodeInfo { labels: BTreeMap::new(), capacity: Capacity { max_vips: 16, max_reals: 256 } };
    resolve(vss, rss, &node).plan
}

/// Reconciles and asserts no op failed; returns the ops.
fn reconcile(rec: &mut Reconciler, lb: &mut Balancer, plan: &NodePlan) -> Vec<Op> {
    let report = rec.reconcile(plan, lb);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    report.ops
}

/// Where a new TCP connection (a SYN) from `src_port` to the VIP goes, if forwarded.
#[test]
fn plan_is_applied_and_reapplying_is_a_no_op() {
    if skip_unless_root("plan_is_applied_and_reapplying_is_a_no_op") {
        return;
    }
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    let mut rec = Reconciler::new();
    let p = plan(&[vs("web", VIP)], &[rs("a", "web", real(1), 5), rs("b", "web", real(2), 5)]);
    let ops = reconcile(&mut rec, &mut lb, &p);
    assert_eq!(ops.len(), 3, "VIP, its (dummy) check, reals: {ops:?}");
    assert_eq!(
        lb.reals(&vip_id()).unwrap(),
        vec![RealSpec { addr: real(1), weight: 5, flags: 0 }, RealSpec { addr: real(2), weight: 5, flags: 0 }]
    );
    assert_eq!(rec.owner(&vip_id()).map(|k| k.to_string()).as_deref(), Some("default/web"));
    assert!(reconcile(&mut rec, &mut lb, &p).is_empty());
    let got = syn_lands_on(&lb, 40000).expect("forwarded");
    assert!(got == real(1) || got == real(2), "{got}");
}

#[test]
fn weight_change_is_one_real_batch_and_the_datapath_follows() {
    if skip_unless_root("weight_change_is_one_real_batch_and_the_datapath_follows") {
        return;
    }
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    let mut rec = Reconciler::new();
    let vss = [vs("web", VIP)];
    reconcile(&mut rec, &mut lb, &plan(&vss, &[rs("a", "web", real(1), 5), rs("b", "web", real(2), 5)]));
    // Draining a: weight 0.
    let ops = reconcile(&mut rec, &mut lb, &plan(&vss, &[rs("a", "web", real(1), 0), rs("b", "web", real(2), 5)]));
    assert_eq!(
        ops,
        vec![Op::UpsertReals { vip: vip_id(), reals: vec![RealSpec { addr: real(1), weight: 0, flags: 0 }] }]
    );
    for port in 40000..40016 {
        assert_eq!(syn_lands_on(&lb, port), Some(real(2)), "source port {port}");
    }
}

#[test]
fn deleted_virtual_service_removes_its_vip() {
    if skip_unless_root("deleted_virtual_service_removes_its_vip") {
        return;
    }
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    let mut rec = Reconciler::new();
    reconcile(&mut rec, &mut lb, &plan(&[vs("web", VIP)], &[rs("a", "web", real(1), 1)]));
    let ops = reconcile(&mut rec, &mut lb, &plan(&[], &[rs("a", "web", real(1), 1)]));
    assert_eq!(ops, vec![Op::DelVip(vip_id())]);
    assert!(lb.vips().is_empty());
    assert_eq!(lb.real_index(real(1)), None);
    assert!(rec.owned().is_empty());
    assert_eq!(syn_lands_on(&lb, 40000), None);
}

#[test]
fn flags_and_hash_function_changes() {
    if skip_unless_root("flags_and_hash_function_changes") {
        return;
    }
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    let mut rec = Reconciler::new();
    let mut web = vs("web", VIP);
    web.spec.flags = vec![VipFlag::NoSport];
    let rss = [rs("a", "web", real(1), 1)];
    reconcile(&mut rec, &mut lb, &plan(std::slice::from_ref(&web), &rss));
    assert_eq!(lb.vip_info(&vip_id()).unwrap().flags, VipFlag::NoSport.bit());
    web.spec.flags = vec![VipFlag::DportHash];
    web.spec.hash_function = CrdHash::MaglevV2;
    let ops = reconcile(&mut rec, &mut lb, &plan(std::slice::from_ref(&web), &rss));
    assert_eq!(
        ops,
        vec![
            Op::SetFlags { vip: vip_id(), clear: VipFlag::NoSport.bit(), set: VipFlag::DportHash.bit() },
            Op::SetHash { vip: vip_id(), hash: HashFunction::MaglevV2 },
        ]
    );
    let info = lb.vip_info(&vip_id()).unwrap();
    assert_eq!((info.flags, info.hash_function), (VipFlag::DportHash.bit(), HashFunction::MaglevV2));
    assert!(reconcile(&mut rec, &mut lb, &plan(&[web], &rss)).is_empty());
    assert_eq!(syn_lands_on(&lb, 40000), Some(real(1)));
}

#[test]
fn rest_vips_are_left_alone() {
    if skip_unless_root("rest_vips_are_left_alone") {
        return;
    }
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    let rest = VipId { addr: Ipv4Addr::new(10, 100, 0, 9).into(), port: 443, proto: 6 };
    lb.add_vip(VipSpec { id: rest, flags: 0 }).unwrap();
    lb.add_real(&rest, RealSpec { addr: real(9), weight: 3, flags: 0 }).unwrap();
    // A VirtualService claiming the REST VIP's address is a conflict, not a takeover.
    let mut clash = vs("clash", Ipv4Addr::new(10, 100, 0, 9));
    clash.spec.port = 443;
    let mut rec = Reconciler::new();
    let report = rec.reconcile(&plan(&[vs("web", VIP), clash], &[rs("c", "clash", real(1), 1)]), &mut lb);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!(report.conflicts.len(), 1);
    assert_eq!(report.conflicts[0].vip, rest);
    assert_eq!(rec.owner(&rest), None);
    assert_eq!(lb.reals(&rest).unwrap(), vec![RealSpec { addr: real(9), weight: 3, flags: 0 }]);
    // Nothing planned: only the owned VIP goes.
    let ops = reconcile(&mut rec, &mut lb, &NodePlan::default());
    assert_eq!(ops, vec![Op::DelVip(vip_id())]);
    assert_eq!(lb.vips().iter().map(|v| v.id).collect::<Vec<_>>(), vec![rest]);
    assert_eq!(lb.reals(&rest).unwrap(), vec![RealSpec { addr: real(9), weight: 3, flags: 0 }]);
}

#[test]
fn vip_whose_reals_all_go_stays_with_an_empty_ring() {
    if skip_unless_root("vip_whose_reals_all_go_stays_with_an_empty_ring") {
        return;
    }
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    let mut rec = Reconciler::new();
    let vss = [vs("web", VIP)];
    reconcile(&mut rec, &mut lb, &plan(&vss, &[rs("a", "web", real(1), 1), rs("b", "web", real(2), 1)]));
    let ops = reconcile(&mut rec, &mut lb, &plan(&vss, &[]));
    assert_eq!(ops, vec![Op::DelReals { vip: vip_id(), addrs: vec![real(1), real(2)] }]);
    assert_eq!(lb.vip_info(&vip_id()).unwrap().reals, 0);
    assert_eq!(syn_lands_on(&lb, 40000), None);
    // A RealServer comes back: the SYN lands on it.
    reconcile(&mut rec, &mut lb, &plan(&vss, &[rs("c", "web", real(3), 1)]));
    assert_eq!(syn_lands_on(&lb, 40001), Some(real(3)));
}

#[test]
fn restarted_reconciler_adopts_only_what_it_programmed() {
    if skip_unless_root("restarted_reconciler_adopts_only_what_it_programmed") {
        return;
    }
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    let vss = [vs("web", VIP)];
    reconcile(&mut Reconciler::new(), &mut lb, &plan(&vss, &[rs("a", "web", real(1), 5)]));
    // A new Reconciler (the agent restarted) knows nothing: the VIP looks REST-made.
    let next = plan(&vss, &[rs("a", "web", real(1), 7)]);
    let mut fresh = Reconciler::new();
    assert_eq!(fresh.diff(&next, &lb).conflicts.len(), 1);
    // Adopting from a status that does not list it changes nothing.
    fresh.adopt(&next, &[], &lb);
    assert!(fresh.owned().is_empty());
    // Listed as programmed: adopted, and only the weight change is applied.
    let programmed = weir_crds::status::programmed_virtual_services(&next);
    fresh.adopt(&next, &programmed, &lb);
    let ops = reconcile(&mut fresh, &mut lb, &next);
    assert_eq!(
        ops,
        vec![Op::UpsertReals { vip: vip_id(), reals: vec![RealSpec { addr: real(1), weight: 7, flags: 0 }] }]
    );
}

#[test]
fn a_failing_op_does_not_stop_the_others() {
    if skip_unless_root("a_failing_op_does_not_stop_the_others") {
        return;
    }
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    let missing = VipId { addr: Ipv4Addr::new(10, 100, 0, 7).into(), port: 80, proto: 6 };
    let ops = [
        Op::UpsertReals { vip: missing, reals: vec![RealSpec { addr: real(1), weight: 1, flags: 0 }] },
        Op::AddVip { vip: vip_id(), flags: 0, hash: HashFunction::MaglevV2 },
        Op::UpsertReals { vip: vip_id(), reals: vec![RealSpec { addr: real(2), weight: 1, flags: 0 }] },
    ];
    let errors = weir_agent::cluster::apply(&mut lb, &ops);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].op, ops[0]);
    assert_eq!(errors[0].error.code().as_str(), "NOT_FOUND");
    assert_eq!(lb.vip_info(&vip_id()).unwrap().hash_function, HashFunction::MaglevV2);
    assert_eq!(syn_lands_on(&lb, 40000), Some(real(2)));
}

/// A Balancer whose prober is on, as cluster mode's is: new reals start unhealthy, except
/// on a VIP whose check is `dummy`.
fn probed_balancer() -> Balancer {
    let mut config = BalancerConfig::testing();
    config.prober = true;
    Balancer::new(config).unwrap()
}

fn healthy(lb: &Balancer) -> Vec<(IpAddr, bool)> {
    lb.health_status(&vip_id()).unwrap().into_iter().map(|r| (r.addr, r.healthy)).collect()
}

#[test]
fn the_check_follows_the_spec_and_reals_start_as_it_says() {
    if skip_unless_root("the_check_follows_the_spec_and_reals_start_as_it_says") {
        return;
    }
    let mut lb = probed_balancer();
    let mut rec = Reconciler::new();
    let rss = [rs("a", "web", real(1), 5), rs("b", "web", real(2), 5)];
    // No spec.healthCheck: a dummy check, every real healthy from the start.
    let ops = reconcile(&mut rec, &mut lb, &plan(&[vs("web", VIP)], &rss));
    assert!(matches!(&ops[1], Op::SetHealthCheck { check, .. } if check.kind == CheckKind::Dummy), "{ops:?}");
    assert_eq!(healthy(&lb), [(real(1), true), (real(2), true)]);
    assert!(reconcile(&mut rec, &mut lb, &plan(&[vs("web", VIP)], &rss)).is_empty(), "reapplying is a no-op");

    // A TCP check on 8080: stored as asked; reals new to the VIP wait for the prober.
    let mut web = vs("web", VIP);
    web.spec.health_check = Some(HealthCheckSpec { port: Some(8080), ..HealthCheckSpec::new(HealthCheckType::Tcp) });
    let with_c = [rs("a", "web", real(1), 5), rs("b", "web", real(2), 5), rs("c", "web", real(3), 5)];
    reconcile(&mut rec, &mut lb, &plan(std::slice::from_ref(&web), &with_c));
    let check = lb.health_check(&vip_id()).unwrap().unwrap();
    assert_eq!((check.kind, check.port, check.interval_ms, check.unhealthy_threshold), (CheckKind::Tcp, 8080, 5000, 3));
    assert_eq!(healthy(&lb), [(real(1), true), (real(2), true), (real(3), false)]);
    assert!(reconcile(&mut rec, &mut lb, &plan(std::slice::from_ref(&web), &with_c)).is_empty());
    // What the prober found is not the reconciler's to undo.
    lb.set_reals_health(&vip_id(), &[(real(1), false)]).unwrap();
    assert!(reconcile(&mut rec, &mut lb, &plan(std::slice::from_ref(&web), &with_c)).is_empty());
    assert_eq!(healthy(&lb), [(real(1), false), (real(2), true), (real(3), false)]);

    // The check removed: dummy again, and every real healthy.
    reconcile(&mut rec, &mut lb, &plan(&[vs("web", VIP)], &with_c));
    assert_eq!(lb.health_check(&vip_id()).unwrap().unwrap().kind, CheckKind::Dummy);
    assert_eq!(healthy(&lb), [(real(1), true), (real(2), true), (real(3), true)]);
}

#[test]
fn a_probing_check_without_the_prober_fails_and_says_why() {
    if skip_unless_root("a_probing_check_without_the_prober_fails_and_says_why") {
        return;
    }
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    let mut rec = Reconciler::new();
    let mut web = vs("web", VIP);
    web.spec.health_check = Some(HealthCheckSpec::new(HealthCheckType::Tcp));
    let report = rec.reconcile(&plan(&[web], &[rs("a", "web", real(1), 5)]), &mut lb);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert!(matches!(report.errors[0].op, Op::SetHealthCheck { .. }));
    assert_eq!(
        report.errors[0].error.to_string(),
        "a tcp health check without the prober (only dummy checks run without it) is not supported by this datapath"
    );
    // The reals are programmed all the same (and healthy: no prober decides otherwise).
    assert_eq!(lb.reals(&vip_id()).unwrap().len(), 1);
}
