//! Pure helpers that turn verdicts and plans into status: conditions with the shared
//! types and reasons, and the BalancerNode ↔ VirtualService bookkeeping the operator and
//! the agents both need. The caller supplies `now`, so everything stays deterministic.

use std::collections::HashMap;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::v1alpha1::{condition, BalancerNodeStatus, ProgrammedVip, ProgrammedVirtualService};
use crate::validation::{NodePlan, ObjectKey, RealPlan, Verdict};

fn make(type_: &str, ok: bool, reason: &str, message: String, generation: Option<i64>, now: Time) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: now,
    }
}

/// The `Accepted` condition for a verdict.
pub fn accepted_condition(verdict: &Verdict, generation: Option<i64>, now: Time) -> Condition {
    make(condition::ACCEPTED, verdict.accepted(), verdict.reason.as_str(), verdict.message.clone(), generation, now)
}

/// The `Programmed` condition of a VirtualService: True when every target node programs
/// it; the message is "n/m nodes" (the `Programmed` printer column shows it). A
/// VirtualService that is not `accepted` is never coming: reason `NotAccepted`, and the
/// message says so rather than reading like a rollout in progress.
pub fn programmed_condition(
    programmed: u32,
    target: u32,
    accepted: bool,
    generation: Option<i64>,
    now: Time,
) -> Condition {
    let nodes = format!("{programmed}/{target} nodes");
    let (ok, reason, message) = match (programmed, target) {
        _ if !accepted => (false, "NotAccepted", format!("not accepted ({nodes})")),
        (_, 0) => (false, "NoTargetNodes", nodes),
        (p, t) if p >= t => (true, "Programmed", nodes),
        _ => (false, "Pending", nodes),
    };
    make(condition::PROGRAMMED, ok, reason, message, generation, now)
}

/// Replaces the condition of the same type, keeping its `lastTransitionTime` when the
/// status did not change (as `meta.SetStatusCondition` does), so re-applying an unchanged
/// verdict is a no-op; keeps the list sorted by type for stable output.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    if let Some(old) = conditions.iter_mut().find(|c| c.type_ == new.type_) {
        if old.status == new.status {
            new.last_transition_time = old.last_transition_time.clone();
        }
        *old = new;
    } else {
        conditions.push(new);
        conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
    }
}

/// What an agent reports after applying `plan`: its VirtualServices sorted by
/// namespace/name, with generation and real count.
pub fn programmed_virtual_services(plan: &NodePlan) -> Vec<ProgrammedVirtualService> {
    let mut out: Vec<ProgrammedVirtualService> = plan
        .vips
        .iter()
        .map(|vip| ProgrammedVirtualService {
            namespace: vip.owner.namespace.clone(),
            name: vip.owner.name.clone(),
            generation: vip.generation,
            reals: u32::try_from(vip.reals.len()).unwrap_or(u32::MAX),
            reals_digest: Some(reals_digest(&vip.reals)),
            vip: Some(ProgrammedVip { address: vip.address.to_string(), port: vip.port, protocol: vip.protocol }),
            // The agent fills in health from its Balancer.
            healthy_reals: None,
            unhealthy_reals: Vec::new(),
            fail_open: false,
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    out
}

/// A digest of `reals` as the datapath holds them: address, weight and flags of each, in
/// address order. FNV-1a 64, in hex: stable across versions and platforms (unlike std's
/// `Hasher`s), so agent and operator compute the same value.
pub fn reals_digest(reals: &[RealPlan]) -> String {
    let mut items: Vec<String> = reals.iter().map(|r| format!("{}/{}/{}", r.address, r.weight, r.flags)).collect();
    items.sort();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in items.join(",").bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// One node's BalancerNode report, indexed by VirtualService (the operator looks up every
/// VirtualService in every node's report on each pass).
pub struct NodeReport<'a>(HashMap<(&'a str, &'a str), &'a ProgrammedVirtualService>);

impl<'a> NodeReport<'a> {
    pub fn new(status: &'a BalancerNodeStatus) -> Self {
        NodeReport(status.virtual_services.iter().map(|p| ((p.namespace.as_str(), p.name.as_str()), p)).collect())
    }

    fn get(&self, key: &ObjectKey) -> Option<&'a ProgrammedVirtualService> {
        self.0.get(&(key.namespace.as_str(), key.name.as_str())).copied()
    }

    /// Whether the node reports `key` programmed at `generation` with its accepted `reals`
    /// as they are now (count and, when the report has one, [`reals_digest`]). An older
    /// generation means the node has not caught up yet; other reals or weights mean it has
    /// not caught up with a RealServer change (a drain), or left some out for capacity:
    /// either way it does not count.
    pub fn has_programmed(&self, key: &ObjectKey, generation: i64, reals: &[RealPlan]) -> bool {
        let count = u32::try_from(reals.len()).unwrap_or(u32::MAX);
        self.get(key).is_some_and(|p| {
            p.generation == generation
                && p.reals == count
                && p.reals_digest.as_deref().is_none_or(|d| d == reals_digest(reals))
        })
    }

    /// The health of `key`'s reals on this node, when it reports it: see [`ReportedHealth`].
    pub fn health(&self, key: &ObjectKey) -> Option<ReportedHealth<'a>> {
        let p = self.get(key)?;
        let healthy = p.healthy_reals?;
        Some(ReportedHealth { entry: p, healthy })
    }
}

/// The health one node reports for one VirtualService's reals.
#[derive(Clone, Copy, Debug)]
pub struct ReportedHealth<'a> {
    entry: &'a ProgrammedVirtualService,
    healthy: u32,
}

impl ReportedHealth<'_> {
    /// Whether real `address` is healthy on the node; `None` when the node's list of
    /// unhealthy reals was cut (see [`crate::v1alpha1::MAX_UNHEALTHY_LISTED`]) and does not
    /// name it: then its health there is not known.
    pub fn real(&self, address: &IpAddr) -> Option<bool> {
        let listed = |a: &String| a.parse::<IpAddr>().is_ok_and(|a| a == *address);
        if self.entry.unhealthy_reals.iter().any(listed) {
            return Some(false);
        }
        let complete = u64::from(self.healthy) + self.entry.unhealthy_reals.len() as u64 >= u64::from(self.entry.reals);
        complete.then_some(true)
    }

    /// Reals healthy on the node.
    pub fn healthy(&self) -> u32 {
        self.healthy
    }

    /// Every real is unhealthy on the node (all kept in the ring).
    pub fn fail_open(&self) -> bool {
        self.entry.fail_open
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::validation::Reason;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn programmed_reads_n_of_m_nodes() {
        let c = programmed_condition(2, 3, true, Some(4), at(0));
        assert_eq!((c.status.as_str(), c.reason.as_str(), c.message.as_str()), ("False", "Pending", "2/3 nodes"));
        assert_eq!(programmed_condition(3, 3, true, None, at(0)).status, "True");
        assert_eq!(programmed_condition(0, 0, true, None, at(0)).reason, "NoTargetNodes");
        let c = programmed_condition(0, 2, false, None, at(0));
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            ("False", "NotAccepted", "not accepted (0/2 nodes)")
        );
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut cs = Vec::new();
        let v = Verdict { reason: Reason::Accepted, message: "accepted".into() };
        set_condition(&mut cs, accepted_condition(&v, Some(1), at(10)));
        set_condition(&mut cs, accepted_condition(&v, Some(2), at(20)));
        assert_eq!((cs.len(), cs[0].last_transition_time.clone(), cs[0].observed_generation), (1, at(10), Some(2)));
        let lost = Verdict { reason: Reason::AddressConflict, message: "older b/x".into() };
        set_condition(&mut cs, accepted_condition(&lost, Some(2), at(30)));
        assert_eq!(
            (cs[0].status.as_str(), cs[0].reason.as_str(), cs[0].last_transition_time.clone()),
            ("False", "AddressConflict", at(30))
        );
        set_condition(&mut cs, programmed_condition(0, 1, true, None, at(30)));
        assert_eq!(cs.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(), ["Accepted", "Programmed"]);
    }

    #[test]
    fn node_reports_round_trip() {
        let plan = NodePlan {
            vips: vec![crate::validation::VipPlan {
                owner: ObjectKey::new("a", "v"),
                generation: 3,
                address: "10.0.0.1".parse().unwrap(),
                port: 80,
                protocol: crate::v1alpha1::Protocol::Tcp,
                flags: weir_abi::VipFlags::empty(),
                hash_function: crate::v1alpha1::HashFunction::Maglev,
                health_check: None,
                reals: vec![],
            }],
            ..NodePlan::default()
        };
        let status = BalancerNodeStatus { virtual_services: programmed_virtual_services(&plan), ..Default::default() };
        let report = NodeReport::new(&status);
        let real = |weight| RealPlan {
            owner: ObjectKey::new("a", "r"),
            address: "10.1.0.1".parse().unwrap(),
            weight,
            flags: 0,
        };
        assert!(report.has_programmed(&ObjectKey::new("a", "v"), 3, &[]));
        assert!(!report.has_programmed(&ObjectKey::new("a", "v"), 4, &[]), "stale generation does not count");
        assert!(!report.has_programmed(&ObjectKey::new("a", "v"), 3, &[real(1)]), "a missing real does not count");

        // A drain: same generation, same count, another weight.
        let mut plan = plan;
        plan.vips[0].reals = vec![real(5)];
        let status = BalancerNodeStatus { virtual_services: programmed_virtual_services(&plan), ..Default::default() };
        let report = NodeReport::new(&status);
        assert!(report.has_programmed(&ObjectKey::new("a", "v"), 3, &[real(5)]));
        assert!(!report.has_programmed(&ObjectKey::new("a", "v"), 3, &[real(0)]), "the drain not applied yet");
        assert_eq!(reals_digest(&[real(5)]), status.virtual_services[0].reals_digest.clone().unwrap());
        assert_ne!(reals_digest(&[real(5)]), reals_digest(&[real(0)]));
        assert!(report.health(&ObjectKey::new("a", "v")).is_none(), "no health reported yet");
    }

    #[test]
    fn reported_health_knows_what_a_cut_list_leaves_out() {
        let entry = |reals, healthy, unhealthy: &[&str]| ProgrammedVirtualService {
            namespace: "a".into(),
            name: "v".into(),
            generation: 1,
            reals,
            reals_digest: None,
            vip: None,
            healthy_reals: Some(healthy),
            unhealthy_reals: unhealthy.iter().map(|s| s.to_string()).collect(),
            fail_open: false,
        };
        let (one, two): (IpAddr, IpAddr) = ("10.1.0.1".parse().unwrap(), "10.1.0.2".parse().unwrap());
        let status = BalancerNodeStatus { virtual_services: vec![entry(2, 1, &["10.1.0.2"])], ..Default::default() };
        let health = NodeReport::new(&status).health(&ObjectKey::new("a", "v")).unwrap();
        assert_eq!((health.real(&one), health.real(&two), health.healthy()), (Some(true), Some(false), 1));
        // Three reals, one healthy, a list cut after one: the third's health is not known.
        let status = BalancerNodeStatus { virtual_services: vec![entry(3, 1, &["10.1.0.2"])], ..Default::default() };
        let health = NodeReport::new(&status).health(&ObjectKey::new("a", "v")).unwrap();
        assert_eq!((health.real(&one), health.real(&two)), (None, Some(false)));
    }
}
