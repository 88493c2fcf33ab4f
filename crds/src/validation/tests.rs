//! Tests of the shared rules: per-object checks, selectors, conflicts, ordering,
//! families, duplicates, capacity.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;

use super::*;
use crate::v1alpha1::{
    HashFunction, Protocol, RealServer, RealServerSpec, VipFlag, VirtualService, VirtualServiceSpec,
};

fn meta(ns: &str, name: &str, created: i64) -> ObjectMeta {
    ObjectMeta {
        namespace: Some(ns.into()),
        name: Some(name.into()),
        generation: Some(1),
        creation_timestamp: Some(Time(Timestamp::from_second(1_700_000_000 + created).unwrap())),
        ..ObjectMeta::default()
    }
}

fn vs(ns: &str, name: &str, created: i64, address: &str, port: u16) -> VirtualService {
    let spec = VirtualServiceSpec {
        address: address.into(),
        port,
        protocol: Protocol::Tcp,
        flags: vec![VipFlag::NoSport, VipFlag::HashSrcDstPort],
        hash_function: HashFunction::MaglevV2,
        node_selector: None,
        health_check: None,
    };
    VirtualService { metadata: meta(ns, name, created), spec, status: None }
}

fn rs(ns: &str, name: &str, created: i64, vs: &str, address: &str, weight: u32) -> RealServer {
    let spec = RealServerSpec { virtual_service_name: vs.into(), address: address.into(), weight, flags: vec![] };
    RealServer { metadata: meta(ns, name, created), spec, status: None }
}

fn node(max_vips: u32, max_reals: u32, labels: &[(&str, &str)]) -> NodeInfo {
    let labels = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    NodeInfo { labels, capacity: Capacity { max_vips, max_reals } }
}

fn k(ns: &str, name: &str) -> ObjectKey {
    ObjectKey::new(ns, name)
}

fn reason_of(map: &BTreeMap<ObjectKey, Verdict>, ns: &str, name: &str) -> Reason {
    map[&k(ns, name)].reason
}

#[test]
fn per_object_errors_name_field_and_value() {
    let mut bad = vs("a", "v", 0, "10.0.0.300", 80).spec;
    let e = validate_virtual_service(&bad);
    assert_eq!((e[0].field.as_str(), e[0].value.as_str()), ("spec.address", "10.0.0.300"));
    bad.address = "::".into();
    assert_eq!(validate_virtual_service(&bad)[0].message, "must not be the unspecified address");
    bad.address = "fe80::1%eth0".into();
    assert_eq!(validate_virtual_service(&bad).len(), 1);
    bad.address = "::ffff:10.0.0.1".into();
    assert_eq!(validate_virtual_service(&bad)[0].field, "spec.address");
    bad.address = "2001:db8::1".into();
    assert!(validate_virtual_service(&bad).is_empty());

    let mut r = rs("a", "r", 0, "", "10.1.0.1", 70_000).spec;
    let fields: Vec<String> = validate_real_server(&r).into_iter().map(|e| e.field).collect();
    assert_eq!(fields, ["spec.virtualServiceName", "spec.weight"]);
    r.virtual_service_name = "v".into();
    r.weight = 0;
    assert!(validate_real_server(&r).is_empty(), "weight 0 (drain) is valid");
    // The Balancer's address rule is this one: what it refuses is never Accepted.
    for (address, message) in [
        ("255.255.255.255", "must not be the broadcast address"),
        ("127.0.0.1", "must not be a loopback address"),
        ("::ffff:10.1.0.1", "must not be an IPv4-mapped IPv6 address; write the IPv4 address"),
        ("::10.1.0.1", "must not be an IPv4-compatible IPv6 address; write the IPv4 address"),
    ] {
        r.address = address.into();
        let e = validate_real_server(&r);
        assert_eq!((e.len(), e[0].field.as_str(), e[0].message.as_str()), (1, "spec.address", message), "{address}");
    }
}

#[test]
fn vip_plan_carries_katran_values() {
    let r = resolve(&[vs("a", "v", 0, "10.0.0.1", 80)], &[rs("a", "r", 1, "v", "10.1.0.1", 0)], &node(8, 8, &[]));
    let vip = &r.plan.vips[0];
    assert_eq!(
        (vip.protocol.number(), vip.flags.bits(), vip.hash_function.katran_id(), vip.generation),
        (6, 1 | 128, 1, 1)
    );
    assert_eq!(vip.reals[0].weight, 0, "weight 0 is kept: the real drains");
    assert_eq!(vip.reals[0].address, "10.1.0.1".parse::<std::net::IpAddr>().unwrap());
}

#[test]
fn conflict_oldest_wins_then_namespace_name_then_next_oldest() {
    let old = vs("b", "old", 0, "10.0.0.1", 80);
    let young = vs("a", "young", 5, "10.0.0.1", 80);
    let other_port = vs("a", "p81", 9, "10.0.0.1", 81);
    let a = arbitrate([&young, &old, &other_port], []);
    assert_eq!(reason_of(&a.virtual_services, "b", "old"), Reason::Accepted);
    assert_eq!(reason_of(&a.virtual_services, "a", "young"), Reason::AddressConflict);
    assert!(a.virtual_services[&k("a", "young")].message.contains("b/old"), "names the winner");
    assert_eq!(reason_of(&a.virtual_services, "a", "p81"), Reason::Accepted);

    // Same timestamp: namespace, then name.
    let tie1 = vs("a", "z", 0, "10.0.0.1", 80);
    let a = arbitrate([&old, &tie1], []);
    assert_eq!(reason_of(&a.virtual_services, "a", "z"), Reason::Accepted);
    assert_eq!(reason_of(&a.virtual_services, "b", "old"), Reason::AddressConflict);

    // The winner deleted: the next oldest wins.
    let a = arbitrate([&young], []);
    assert_eq!(reason_of(&a.virtual_services, "a", "young"), Reason::Accepted);

    // No creationTimestamp (not yet persisted) ranks after every persisted object.
    let mut unsaved = vs("a", "a", 0, "10.0.0.1", 80);
    unsaved.metadata.creation_timestamp = None;
    let a = arbitrate([&unsaved, &young], []);
    assert_eq!(reason_of(&a.virtual_services, "a", "a"), Reason::AddressConflict);

    // Same address written differently is the same VIP.
    let spelled = vs("c", "long", 7, "2001:db8:0:0::1", 80);
    let short = vs("c", "short", 6, "2001:db8::1", 80);
    let a = arbitrate([&spelled, &short], []);
    assert_eq!(reason_of(&a.virtual_services, "c", "long"), Reason::AddressConflict);
}

#[test]
fn invalid_virtual_service_claims_nothing() {
    let mut broken = vs("a", "broken", 0, "10.0.0.1", 80);
    broken.spec.address = "not-an-ip".into();
    let fine = vs("a", "fine", 5, "10.0.0.1", 80);
    let a = arbitrate([&broken, &fine], []);
    assert_eq!(reason_of(&a.virtual_services, "a", "broken"), Reason::Invalid);
    assert_eq!(reason_of(&a.virtual_services, "a", "fine"), Reason::Accepted);
}

#[test]
fn real_server_reasons() {
    let v4 = vs("a", "v4", 0, "10.0.0.1", 80);
    let v6 = vs("a", "v6", 0, "2001:db8::1", 80);
    let loser = vs("a", "loser", 3, "10.0.0.1", 80);
    let reals = [
        rs("a", "missing", 0, "nope", "10.1.0.1", 1),
        rs("b", "other-ns", 0, "v4", "10.1.0.1", 1),
        rs("a", "to-loser", 0, "loser", "10.1.0.1", 1),
        rs("a", "v4-in-v6", 0, "v6", "10.1.0.1", 1),
        rs("a", "v6-in-v4", 0, "v4", "2001:db8::10", 1),
        rs("a", "first", 1, "v4", "10.1.0.1", 1),
        rs("a", "dup", 2, "v4", "10.1.0.1", 5),
        rs("a", "same-addr-other-vs", 2, "v6", "2001:db8::10", 1),
    ];
    let a = arbitrate([&v4, &v6, &loser], &reals);
    let got = |n: &str| reason_of(&a.real_servers, if n == "other-ns" { "b" } else { "a" }, n);
    assert_eq!(got("missing"), Reason::VirtualServiceNotFound);
    assert_eq!(got("other-ns"), Reason::VirtualServiceNotFound, "membership is same-namespace only");
    assert_eq!(got("to-loser"), Reason::VirtualServiceNotAccepted);
    assert_eq!(got("v4-in-v6"), Reason::AddressFamilyMismatch);
    assert_eq!(got("v6-in-v4"), Reason::Accepted, "IPv6 reals can serve IPv4 VIPs");
    assert_eq!(got("first"), Reason::Accepted);
    assert_eq!(got("dup"), Reason::DuplicateAddress);
    assert!(a.real_servers[&k("a", "dup")].message.contains("a/first"));
    assert_eq!(got("same-addr-other-vs"), Reason::Accepted);
    let v4_reals: Vec<&str> = a
        .accepted_vips()
        .find(|v| v.owner == k("a", "v4"))
        .unwrap()
        .reals
        .iter()
        .map(|r| r.owner.name.as_str())
        .collect();
    assert_eq!(v4_reals, ["v6-in-v4", "first"]);
}

#[test]
fn verdict_is_independent_of_input_order() {
    let vss: Vec<VirtualService> = (0..12)
        .map(|i| vs(&format!("ns{}", i % 3), &format!("v{i}"), i64::from(i % 4), "10.0.0.1", (i % 5) as u16))
        .collect();
    let rss: Vec<RealServer> = (0..40)
        .map(|i| {
            rs(
                &format!("ns{}", i % 3),
                &format!("r{i}"),
                i64::from(i % 7),
                &format!("v{}", i % 12),
                &format!("10.1.0.{}", i % 9),
                1,
            )
        })
        .collect();
    let n = node(3, 5, &[]);
    let expected = resolve(&vss, &rss, &n);
    let (mut v2, mut r2) = (vss.clone(), rss.clone());
    // A deterministic shuffle: several rotations and reversals.
    for step in 1..6 {
        let (nv, nr) = (v2.len(), r2.len());
        v2.rotate_left(step % nv);
        r2.reverse();
        r2.rotate_left(step * 7 % nr);
        assert_eq!(resolve(&v2, &r2, &n), expected);
    }
}

fn selector(labels: &[(&str, &str)], exprs: &[(&str, &str, &[&str])]) -> LabelSelector {
    LabelSelector {
        match_labels: (!labels.is_empty())
            .then(|| labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        match_expressions: (!exprs.is_empty()).then(|| {
            exprs
                .iter()
                .map(|(key, op, values)| LabelSelectorRequirement {
                    key: key.to_string(),
                    operator: op.to_string(),
                    values: (!values.is_empty()).then(|| values.iter().map(|v| v.to_string()).collect()),
                })
                .collect()
        }),
    }
}

#[test]
fn node_selectors() {
    let labels = node(1, 1, &[("zone", "a"), ("role", "edge")]).labels;
    let m = |s: LabelSelector| selector_matches(Some(&s), &labels);
    assert!(selector_matches(None, &labels));
    assert!(m(selector(&[], &[])), "empty selector selects all");
    assert!(m(selector(&[("zone", "a")], &[])));
    assert!(!m(selector(&[("zone", "b")], &[])));
    assert!(m(selector(&[], &[("zone", "In", &["a", "b"])])));
    assert!(!m(selector(&[], &[("zone", "In", &["b"])])));
    assert!(m(selector(&[], &[("zone", "NotIn", &["b"])])));
    assert!(m(selector(&[], &[("rack", "NotIn", &["b"])])), "NotIn matches a missing key");
    assert!(!m(selector(&[], &[("zone", "NotIn", &["a"])])));
    assert!(m(selector(&[], &[("role", "Exists", &[])])));
    assert!(!m(selector(&[], &[("rack", "Exists", &[])])));
    assert!(m(selector(&[], &[("rack", "DoesNotExist", &[])])));
    assert!(!m(selector(&[("zone", "a")], &[("role", "DoesNotExist", &[])])), "all terms must hold");
    assert!(!m(selector(&[], &[("zone", "Like", &["a"])])), "invalid operator selects nothing");

    let bad = selector(&[], &[("zone", "Like", &["a"]), ("zone", "In", &[]), ("x", "Exists", &["y"])]);
    let fields: Vec<String> = validate_selector("spec.nodeSelector", &bad).into_iter().map(|e| e.field).collect();
    assert_eq!(
        fields,
        [
            "spec.nodeSelector.matchExpressions[0].operator",
            "spec.nodeSelector.matchExpressions[1].values",
            "spec.nodeSelector.matchExpressions[2].values"
        ]
    );

    let mut edge = vs("a", "edge", 0, "10.0.0.1", 80);
    edge.spec.node_selector = Some(selector(&[("role", "edge")], &[]));
    let mut core = vs("a", "core", 0, "10.0.0.2", 80);
    core.spec.node_selector = Some(selector(&[], &[("role", "In", &["core"])]));
    let plan = resolve([&edge, &core], [], &node(8, 8, &[("role", "edge")])).plan;
    assert_eq!(plan.vips.iter().map(|v| v.owner.name.as_str()).collect::<Vec<_>>(), ["edge"]);
    assert_eq!(plan.not_selected, [k("a", "core")]);
}

#[test]
fn capacity_cut_is_deterministic() {
    let vss = [vs("a", "v3", 3, "10.0.0.3", 80), vs("a", "v1", 1, "10.0.0.1", 80), vs("a", "v2", 2, "10.0.0.2", 80)];
    let rss = [
        rs("a", "r1", 1, "v1", "10.1.0.1", 1),
        rs("a", "r2", 2, "v1", "10.1.0.2", 1),
        rs("a", "r3", 3, "v2", "10.1.0.1", 1), // shared address: no new slot
        rs("a", "r4", 4, "v2", "10.1.0.3", 1), // third distinct address: past max_reals
    ];
    let plan = resolve(&vss, &rss, &node(2, 2, &[])).plan;
    assert_eq!(plan.vips.iter().map(|v| v.owner.name.as_str()).collect::<Vec<_>>(), ["v1", "v2"]);
    assert_eq!(reason_of(&plan.excluded_virtual_services, "a", "v3"), Reason::CapacityExceeded);
    assert_eq!(reason_of(&plan.excluded_real_servers, "a", "r4"), Reason::CapacityExceeded);
    assert_eq!(plan.vips[1].reals.iter().map(|r| r.owner.name.as_str()).collect::<Vec<_>>(), ["r3"]);
    assert_eq!((plan.vips_used, plan.reals_used), (2, 2));
}

/// The health check's CEL rules and bounds, repeated in Rust: each error names the field.
#[test]
fn health_check_errors_name_field_and_value() {
    use crate::v1alpha1::{HealthCheckSpec, HealthCheckType};
    let fields = |spec: &VirtualServiceSpec| -> Vec<String> {
        validate_virtual_service(spec).into_iter().map(|e| format!("{}: {}", e.field, e.message)).collect()
    };
    let mut spec = vs("a", "v", 0, "10.0.0.1", 80).spec;
    spec.health_check = Some(HealthCheckSpec::new(HealthCheckType::Tcp));
    assert!(fields(&spec).is_empty(), "defaults are valid");

    let mut http = HealthCheckSpec::new(HealthCheckType::Http);
    spec.health_check = Some(http.clone());
    assert_eq!(fields(&spec), ["spec.healthCheck.path: required for type http"]);
    http.path = Some("healthz".into());
    spec.health_check = Some(http.clone());
    assert_eq!(fields(&spec), ["spec.healthCheck.path: must start with /"]);
    http.path = Some("/healthz".into());
    http.expected_status = Some(700);
    http.interval_milliseconds = 1000;
    http.timeout_milliseconds = 1000;
    spec.health_check = Some(http.clone());
    assert_eq!(
        fields(&spec),
        [
            "spec.healthCheck.timeoutMilliseconds: must be at least 1 and below intervalMilliseconds (1000)",
            "spec.healthCheck.expectedStatus: must be an HTTP status (100 to 599)",
        ]
    );

    let mut tcp = HealthCheckSpec::new(HealthCheckType::Tcp);
    tcp.path = Some("/x".into());
    tcp.skip_tls_verify = Some(true);
    tcp.payload = Some("ping".into());
    tcp.healthy_threshold = 11;
    tcp.interval_milliseconds = 999;
    tcp.timeout_milliseconds = 500;
    spec.health_check = Some(tcp);
    assert_eq!(
        fields(&spec),
        [
            "spec.healthCheck.intervalMilliseconds: must be 1000 to 300000",
            "spec.healthCheck.healthyThreshold: must be 1 to 10",
            "spec.healthCheck.path: applies to type http and https only",
            "spec.healthCheck.skipTlsVerify: applies to type https only",
            "spec.healthCheck.payload: applies to type udp only",
        ]
    );

    // A port-less VIP's check names its port.
    spec.port = 0;
    spec.health_check = Some(HealthCheckSpec::new(HealthCheckType::Udp));
    assert_eq!(
        fields(&spec),
        [
            "spec.healthCheck.port: required for a port-less VirtualService (port 0)",
            "spec.healthCheck.payload: required (non-empty) for type udp"
        ]
    );
    let udp =
        HealthCheckSpec { port: Some(53), payload: Some("ping".into()), ..HealthCheckSpec::new(HealthCheckType::Udp) };
    spec.health_check = Some(udp);
    assert!(fields(&spec).is_empty());

    // An invalid check makes the VirtualService not accepted, with the reason.
    let mut bad = vs("a", "v", 0, "10.0.0.1", 80);
    bad.spec.health_check = Some(HealthCheckSpec::new(HealthCheckType::Https));
    let verdict = &arbitrate([&bad], []).virtual_services[&k("a", "v")];
    assert_eq!(
        (verdict.reason, verdict.message.as_str()),
        (Reason::Invalid, "spec.healthCheck.path \"\": required for type https")
    );
}

#[test]
fn the_plan_carries_the_check() {
    use crate::v1alpha1::{HealthCheckSpec, HealthCheckType};
    let mut web = vs("a", "web", 0, "10.0.0.1", 80);
    web.spec.health_check = Some(HealthCheckSpec { port: Some(8080), ..HealthCheckSpec::new(HealthCheckType::Tcp) });
    let plain = vs("a", "plain", 1, "10.0.0.2", 80);
    let plan = resolve([&web, &plain], [], &node(16, 16, &[])).plan;
    assert_eq!(plan.vips[0].health_check, web.spec.health_check);
    assert_eq!(plan.vips[1].health_check, None);
}
