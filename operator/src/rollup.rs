//! Health, rolled up from the nodes' BalancerNode reports (pure, like [`crate::desired`]):
//! each RealServer's `Healthy` condition ("healthy on 3/3 nodes", "unhealthy on 2/3 nodes:
//! node-a, node-b"), and each VirtualService's `healthyReals` and `FailOpen` condition.
//!
//! A node's report counts for a VirtualService only when the node has programmed it as it
//! is now ([`NodeReport::has_programmed`]): the health of reals a node has not caught up
//! with says nothing about the reals the RealServers name. Within such a report a real is
//! healthy or unhealthy, or not known there when the node's list of unhealthy reals was cut
//! (see `weir_crds::v1alpha1::MAX_UNHEALTHY_LISTED`); then that node is left out of the
//! real's count.

use std::collections::BTreeMap;
use std::fmt::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use weir_crds::status::NodeReport;
use weir_crds::v1alpha1::condition;
use weir_crds::validation::{ObjectKey, RealPlan};

/// Node names listed in a message, at most (the count says how many more).
const LISTED_NODES: usize = 10;

/// One real's health over the nodes that report it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RealRollup {
    pub healthy_on: Vec<String>,
    pub unhealthy_on: Vec<String>,
}

/// One VirtualService's health over the nodes that report it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VirtualServiceRollup {
    /// Nodes whose reports give health.
    pub reporting: u32,
    /// Nodes on which every real is unhealthy (all kept in the ring).
    pub fail_open_on: Vec<String>,
    /// Per RealServer.
    pub reals: BTreeMap<ObjectKey, RealRollup>,
}

impl VirtualServiceRollup {
    /// Reals healthy on every node that reports them (and reported by one at least);
    /// `None` while no node reports health.
    pub fn healthy_reals(&self) -> Option<u32> {
        let healthy = self.reals.values().filter(|r| r.unhealthy_on.is_empty() && !r.healthy_on.is_empty()).count();
        (self.reporting > 0).then(|| u32::try_from(healthy).unwrap_or(u32::MAX))
    }
}

/// A node as the rollup sees it: its name and its report (when it has a status).
pub type ReportingNode<'a> = (&'a str, Option<&'a NodeReport<'a>>);

/// The health of VirtualService `key` (at `generation`, with its accepted `reals`) over
/// `nodes` (its target nodes, sorted by name).
pub fn roll_up(
    nodes: &[ReportingNode<'_>],
    key: &ObjectKey,
    generation: i64,
    reals: &[RealPlan],
) -> VirtualServiceRollup {
    let mut out = VirtualServiceRollup {
        reals: reals.iter().map(|r| (r.owner.clone(), RealRollup::default())).collect(),
        ..VirtualServiceRollup::default()
    };
    for (name, report) in nodes {
        let Some(report) = report.filter(|r| r.has_programmed(key, generation, reals)) else { continue };
        let Some(health) = report.health(key) else { continue };
        out.reporting += 1;
        if health.fail_open() {
            out.fail_open_on.push((*name).to_owned());
        }
        for real in reals {
            let rollup = out.reals.get_mut(&real.owner).expect("every real has an entry");
            match health.real(&real.address) {
                Some(true) => rollup.healthy_on.push((*name).to_owned()),
                Some(false) => rollup.unhealthy_on.push((*name).to_owned()),
                None => {}
            }
        }
    }
    out
}

fn make(type_: &str, status: &str, reason: &str, message: String, generation: Option<i64>, now: &Time) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: status.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: generation,
        last_transition_time: now.clone(),
    }
}

/// "node-a, node-b", the first [`LISTED_NODES`] of them, then how many more.
fn list(nodes: &[String]) -> String {
    let mut text = nodes.iter().take(LISTED_NODES).cloned().collect::<Vec<_>>().join(", ");
    if nodes.len() > LISTED_NODES {
        let _ = write!(text, " and {} more", nodes.len() - LISTED_NODES);
    }
    text
}

/// A RealServer's `Healthy` condition: `real` is its rollup, `None` when it is not accepted.
pub fn healthy_condition(real: Option<&RealRollup>, generation: Option<i64>, now: &Time) -> Condition {
    let make = |status, reason, message| make(condition::HEALTHY, status, reason, message, generation, now);
    let Some(real) = real else {
        return make("Unknown", "NotAccepted", "not accepted: no node programs it".to_owned());
    };
    let reporting = real.healthy_on.len() + real.unhealthy_on.len();
    match (reporting, real.unhealthy_on.len()) {
        (0, _) => make("Unknown", "NotReported", "no node has reported its health yet".to_owned()),
        (n, 0) => make("True", "Healthy", format!("healthy on {n}/{n} nodes")),
        (n, u) => make("False", "Unhealthy", format!("unhealthy on {u}/{n} nodes: {}", list(&real.unhealthy_on))),
    }
}

/// A VirtualService's `FailOpen` condition: `vs` is its rollup, `None` when it is not
/// accepted.
pub fn fail_open_condition(vs: Option<&VirtualServiceRollup>, generation: Option<i64>, now: &Time) -> Condition {
    let make = |status, reason, message| make(condition::FAIL_OPEN, status, reason, message, generation, now);
    let Some(vs) = vs else {
        return make("Unknown", "NotAccepted", "not accepted: no node programs it".to_owned());
    };
    let (n, open) = (vs.reporting, vs.fail_open_on.len());
    match (n, open) {
        (0, _) => make("Unknown", "NotReported", "no node has reported health yet".to_owned()),
        (n, 0) => make("False", "HealthyRealsAvailable", format!("fails open on 0/{n} nodes")),
        (n, o) => make(
            "True",
            "AllRealsUnhealthy",
            format!(
                "fails open on {o}/{n} nodes: {} (every real unhealthy; all stay in the ring)",
                list(&vs.fail_open_on)
            ),
        ),
    }
}

/// A health transition worth an Event: into the bad state (a Warning) or out of it back
/// to the good one (Normal). Unknown on either side is no transition: a new RealServer
/// that turns healthy, or one whose nodes stopped reporting, announces nothing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub warning: bool,
    /// The new condition's reason, e.g. `Unhealthy`.
    pub reason: String,
    pub note: String,
}

/// The transition from the condition of `new`'s type in `old` to `new`; `bad` is the
/// status that means trouble (`False` for `Healthy`, `True` for `FailOpen`).
pub fn transition(old: &[Condition], new: &Condition, bad: &str) -> Option<Transition> {
    let before = old.iter().find(|c| c.type_ == new.type_).map(|c| c.status.as_str());
    let good = if bad == "True" { "False" } else { "True" };
    let warning = match (before, new.status.as_str()) {
        (b, n) if n == bad && b != Some(bad) => true,
        (Some(b), n) if b == bad && n == good => false,
        _ => return None,
    };
    Some(Transition { warning, reason: new.reason.clone(), note: new.message.clone() })
}

#[cfg(test)]
mod tests {
    use weir_crds::v1alpha1::{BalancerNodeStatus, ProgrammedVirtualService};

    use super::*;

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap())
    }

    fn real(name: &str, last: u8) -> RealPlan {
        RealPlan {
            owner: ObjectKey::new("default", name),
            address: format!("10.1.0.{last}").parse().unwrap(),
            weight: 1,
            flags: 0,
        }
    }

    fn report(generation: i64, reals: u32, healthy: Option<u32>, unhealthy: &[&str]) -> BalancerNodeStatus {
        BalancerNodeStatus {
            virtual_services: vec![ProgrammedVirtualService {
                namespace: "default".into(),
                name: "web".into(),
                generation,
                reals,
                reals_digest: None,
                vip: None,
                healthy_reals: healthy,
                unhealthy_reals: unhealthy.iter().map(|s| s.to_string()).collect(),
                fail_open: healthy == Some(0) && reals > 0,
            }],
            ..BalancerNodeStatus::default()
        }
    }

    #[test]
    fn conditions_read_n_of_m_nodes() {
        let reals = [real("r1", 1), real("r2", 2)];
        let key = ObjectKey::new("default", "web");
        let (a, b, c, d) = (
            report(1, 2, Some(2), &[]),
            report(1, 2, Some(1), &["10.1.0.2"]),
            report(1, 2, Some(0), &["10.1.0.1", "10.1.0.2"]),
            report(1, 2, None, &[]),
        );
        let stale = report(0, 2, Some(0), &["10.1.0.1", "10.1.0.2"]);
        let reports: Vec<NodeReport> = [&a, &b, &c, &d, &stale].into_iter().map(NodeReport::new).collect();
        let names = ["node-a", "node-b", "node-c", "node-d", "node-e"];
        let nodes: Vec<ReportingNode> = names.iter().zip(&reports).map(|(n, r)| (*n, Some(r))).collect();
        let rollup = roll_up(&nodes, &key, 1, &reals);
        // node-d reports no health (an older agent), node-e an older generation: neither counts.
        assert_eq!(rollup.reporting, 3);
        assert_eq!(rollup.healthy_reals(), Some(0), "r1 is down on node-c, r2 on node-b and node-c");
        let message = |k: &str| {
            let c = healthy_condition(rollup.reals.get(&ObjectKey::new("default", k)), Some(1), &now());
            (c.status, c.reason, c.message)
        };
        assert_eq!(message("r1"), ("False".into(), "Unhealthy".into(), "unhealthy on 1/3 nodes: node-c".into()));
        assert_eq!(
            message("r2"),
            ("False".into(), "Unhealthy".into(), "unhealthy on 2/3 nodes: node-b, node-c".into())
        );
        let c = fail_open_condition(Some(&rollup), Some(1), &now());
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.message.as_str()),
            (
                "True",
                "AllRealsUnhealthy",
                "fails open on 1/3 nodes: node-c (every real unhealthy; all stay in the ring)"
            )
        );

        let healthy = roll_up(&nodes[..1], &key, 1, &reals);
        assert_eq!(healthy.healthy_reals(), Some(2));
        let c = healthy_condition(healthy.reals.get(&ObjectKey::new("default", "r1")), Some(1), &now());
        assert_eq!((c.status.as_str(), c.message.as_str()), ("True", "healthy on 1/1 nodes"));
        let c = fail_open_condition(Some(&healthy), Some(1), &now());
        assert_eq!((c.status.as_str(), c.message.as_str()), ("False", "fails open on 0/1 nodes"));

        let none = roll_up(&nodes[3..], &key, 1, &reals);
        assert_eq!(none.healthy_reals(), None);
        let c = healthy_condition(none.reals.get(&ObjectKey::new("default", "r1")), Some(1), &now());
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("Unknown", "NotReported"));
        assert_eq!(healthy_condition(None, Some(1), &now()).reason, "NotAccepted");
    }

    #[test]
    fn transitions_into_and_out_of_trouble() {
        let at = |status: &str| {
            let mut c = healthy_condition(None, None, &now());
            c.status = status.to_owned();
            c
        };
        let into = transition(&[at("True")], &at("False"), "False").unwrap();
        assert!(into.warning);
        assert!(transition(&[], &at("False"), "False").unwrap().warning, "a first report of trouble");
        assert!(!transition(&[at("False")], &at("True"), "False").unwrap().warning);
        assert_eq!(transition(&[at("Unknown")], &at("True"), "False"), None, "a new real turning healthy");
        assert_eq!(transition(&[at("False")], &at("False"), "False"), None);
        assert_eq!(transition(&[at("False")], &at("Unknown"), "False"), None);
    }

    #[test]
    fn long_node_lists_are_cut() {
        let nodes: Vec<String> = (0..12).map(|i| format!("n{i:02}")).collect();
        assert_eq!(list(&nodes), "n00, n01, n02, n03, n04, n05, n06, n07, n08, n09 and 2 more");
    }
}
