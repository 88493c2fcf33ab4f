//! The pure diff: order, minimality, ownership, idempotence on its own output.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr};

use weir_crds::v1alpha1::Protocol;
use weir_crds::validation::{NodePlan, ObjectKey, RealPlan, VipPlan};

use super::*;
use crate::dataplane::{CheckKind, HttpCheck, UdpCheck};
use weir_crds::v1alpha1::{HealthCheckSpec, HealthCheckType};

/// The `dummy` check a VirtualService without `spec.healthCheck` gets on port 80.
fn dummy() -> HealthCheck {
    crate::cluster::health::dummy_check(80)
}

fn ip(last: u8) -> IpAddr {
    Ipv4Addr::new(10, 0, 0, last).into()
}

fn vip_id(last: u8) -> VipId {
    VipId { addr: Ipv4Addr::new(10, 100, 0, last).into(), port: 80, proto: 6 }
}

fn vip(last: u8, reals: &[(u8, u32)]) -> VipPlan {
    VipPlan {
        owner: ObjectKey::new("default", format!("vs{last}")),
        generation: 1,
        address: vip_id(last).addr,
        port: 80,
        protocol: Protocol::Tcp,
        flags: VipFlags::empty(),
        hash_function: HashFunction::Maglev,
        health_check: None,
        reals: reals
            .iter()
            .map(|&(r, weight)| RealPlan {
                owner: ObjectKey::new("default", format!("rs{r}")),
                address: ip(r),
                weight,
                flags: 0,
            })
            .collect(),
    }
}

fn plan(vips: Vec<VipPlan>) -> NodePlan {
    NodePlan { vips, ..NodePlan::default() }
}

/// What the Balancer would hold after `plan` was applied.
fn observed(plan: &NodePlan) -> BTreeMap<VipId, ObservedVip> {
    plan.vips
        .iter()
        .map(|v| {
            let reals = v
                .reals
                .iter()
                .map(|r| (r.address, RealSpec { addr: r.address, weight: r.weight, flags: r.flags }))
                .collect();
            let health_check = Some(desired_check(v));
            (planned_id(v), ObservedVip { flags: v.flags, hash: v.hash_function, reals, health_check })
        })
        .collect()
}

fn owned_all(current: &BTreeMap<VipId, ObservedVip>) -> BTreeSet<VipId> {
    current.keys().copied().collect()
}

#[test]
fn empty_balancer_gets_vips_then_reals() {
    let p = plan(vec![vip(2, &[(1, 1)]), vip(1, &[(1, 5), (2, 5)])]);
    let d = diff(&p, &BTreeMap::new(), &BTreeSet::new());
    let h = HashFunction::Maglev;
    assert_eq!(
        d.ops,
        vec![
            Op::AddVip { vip: vip_id(1), flags: 0, hash: h },
            Op::AddVip { vip: vip_id(2), flags: 0, hash: h },
            Op::SetHealthCheck { vip: vip_id(1), check: dummy() },
            Op::SetHealthCheck { vip: vip_id(2), check: dummy() },
            Op::UpsertReals {
                vip: vip_id(1),
                reals: vec![
                    RealSpec { addr: ip(1), weight: 5, flags: 0 },
                    RealSpec { addr: ip(2), weight: 5, flags: 0 }
                ],
            },
            Op::UpsertReals { vip: vip_id(2), reals: vec![RealSpec { addr: ip(1), weight: 1, flags: 0 }] },
        ]
    );
    assert_eq!(d.desired_owners.len(), 2);
}

#[test]
fn applied_plan_diffs_to_nothing() {
    let p = plan(vec![vip(1, &[(1, 5), (2, 0)]), vip(2, &[])]);
    let current = observed(&p);
    let d = diff(&p, &current, &owned_all(&current));
    assert!(d.ops.is_empty(), "{:?}", d.ops);
    assert!(d.conflicts.is_empty());
}

#[test]
fn weight_change_is_one_batch_of_the_changed_real() {
    let current = observed(&plan(vec![vip(1, &[(1, 5), (2, 5)])]));
    let d = diff(&plan(vec![vip(1, &[(1, 5), (2, 9)])]), &current, &owned_all(&current));
    assert_eq!(
        d.ops,
        vec![Op::UpsertReals { vip: vip_id(1), reals: vec![RealSpec { addr: ip(2), weight: 9, flags: 0 }] }]
    );
}

#[test]
fn removals_come_before_additions() {
    let current = observed(&plan(vec![vip(1, &[(1, 1)]), vip(2, &[(2, 1), (3, 1)])]));
    let d = diff(&plan(vec![vip(2, &[(2, 1), (4, 1)]), vip(3, &[])]), &current, &owned_all(&current));
    assert_eq!(
        d.ops,
        vec![
            Op::DelVip(vip_id(1)),
            Op::DelReals { vip: vip_id(2), addrs: vec![ip(3)] },
            Op::AddVip { vip: vip_id(3), flags: 0, hash: HashFunction::Maglev },
            Op::SetHealthCheck { vip: vip_id(3), check: dummy() },
            Op::UpsertReals { vip: vip_id(2), reals: vec![RealSpec { addr: ip(4), weight: 1, flags: 0 }] },
        ]
    );
}

#[test]
fn flags_and_hash_changes() {
    let mut before = vip(1, &[]);
    before.flags = VipFlags::from_bits_retain(0b0101);
    let current = observed(&plan(vec![before]));
    let mut after = vip(1, &[]);
    after.flags = VipFlags::from_bits_retain(0b0110);
    after.hash_function = HashFunction::MaglevV2;
    let d = diff(&plan(vec![after]), &current, &owned_all(&current));
    assert_eq!(
        d.ops,
        vec![
            Op::SetFlags { vip: vip_id(1), clear: 0b0001, set: 0b0010 },
            Op::SetHash { vip: vip_id(1), hash: HashFunction::MaglevV2 },
        ]
    );
}

#[test]
fn unowned_vips_are_never_touched() {
    let current = observed(&plan(vec![vip(1, &[(1, 1)]), vip(2, &[(2, 1)])]));
    // vip 1 is REST's; vip 2 ours. The plan wants neither vip 2 nor a change to vip 1... but names vip 1.
    let owned: BTreeSet<VipId> = [vip_id(2)].into();
    let d = diff(&plan(vec![vip(1, &[(3, 1)])]), &current, &owned);
    assert_eq!(d.ops, vec![Op::DelVip(vip_id(2))]);
    assert_eq!(d.conflicts, vec![Conflict { vip: vip_id(1), owner: ObjectKey::new("default", "vs1") }]);
    assert!(d.desired_owners.is_empty());
    // And an empty plan deletes only what is owned.
    let d = diff(&NodePlan::default(), &current, &owned);
    assert_eq!(d.ops, vec![Op::DelVip(vip_id(2))]);
}

#[test]
fn shared_real_flags_follow_the_first_vip() {
    let mut a = vip(1, &[(1, 1)]);
    a.reals[0].flags = 2;
    let b = vip(2, &[(1, 1)]);
    let d = diff(&plan(vec![a, b]), &BTreeMap::new(), &BTreeSet::new());
    for op in &d.ops {
        if let Op::UpsertReals { reals, .. } = op {
            assert_eq!(reals[0].flags, 2, "{op:?}");
        }
    }
}

#[test]
fn a_check_is_set_before_the_reals_and_only_when_it_differs() {
    let mut web = vip(1, &[(1, 1)]);
    web.health_check = Some(HealthCheckSpec {
        path: Some("/healthz".into()),
        expected_status: Some(204),
        ..HealthCheckSpec::new(HealthCheckType::Http)
    });
    let http = HealthCheck {
        kind: CheckKind::Http,
        http: Some(HttpCheck { path: "/healthz".into(), expected_status: 204, host: None, skip_tls_verify: false }),
        ..dummy()
    };
    let d = diff(&plan(vec![web.clone()]), &BTreeMap::new(), &BTreeSet::new());
    assert_eq!(
        d.ops,
        vec![
            Op::AddVip { vip: vip_id(1), flags: 0, hash: HashFunction::Maglev },
            Op::SetHealthCheck { vip: vip_id(1), check: http.clone() },
            Op::UpsertReals { vip: vip_id(1), reals: vec![RealSpec { addr: ip(1), weight: 1, flags: 0 }] },
        ],
        "with the prober on, reals start as the check says: it comes first"
    );

    // Stored as planned: nothing to do. Another port (the VIP's by default): set again.
    let mut current = observed(&plan(vec![web.clone()]));
    assert!(diff(&plan(vec![web.clone()]), &current, &owned_all(&current)).ops.is_empty());
    let mut on_8080 = web.clone();
    on_8080.health_check.as_mut().unwrap().port = Some(8080);
    let d = diff(&plan(vec![on_8080]), &current, &owned_all(&current));
    assert_eq!(d.ops, vec![Op::SetHealthCheck { vip: vip_id(1), check: HealthCheck { port: 8080, ..http.clone() } }]);

    // The check removed from the spec: dummy (every real healthy), not no check at all.
    let plain = vip(1, &[(1, 1)]);
    let d = diff(&plan(vec![plain.clone()]), &current, &owned_all(&current));
    assert_eq!(d.ops, vec![Op::SetHealthCheck { vip: vip_id(1), check: dummy() }]);
    // A VIP some REST call stripped of its check gets it back.
    current.get_mut(&vip_id(1)).unwrap().health_check = None;
    let d = diff(&plan(vec![web]), &current, &owned_all(&current));
    assert_eq!(d.ops, vec![Op::SetHealthCheck { vip: vip_id(1), check: http }]);
}

#[test]
fn a_port_less_vip_gets_a_dummy_check_the_balancer_takes() {
    let mut any_port = vip(1, &[]);
    any_port.port = 0;
    assert_eq!(desired_check(&any_port).port, 0, "a dummy check needs no port");
    any_port.health_check = Some(HealthCheckSpec { port: Some(53), ..HealthCheckSpec::new(HealthCheckType::Tcp) });
    assert_eq!(desired_check(&any_port).port, 53);
}

#[test]
fn a_udp_check_carries_its_datagram_and_reply() {
    let mut dns = vip(1, &[]);
    dns.health_check = Some(HealthCheckSpec {
        payload: Some("ping".into()),
        expected_reply: Some("pong".into()),
        ..HealthCheckSpec::new(HealthCheckType::Udp)
    });
    let check = desired_check(&dns);
    assert_eq!(check.kind, CheckKind::Udp);
    assert_eq!(check.udp, Some(UdpCheck { payload: "ping".into(), expect: Some("pong".into()) }));
    assert_eq!((check.http, check.https), (None, None));
}
