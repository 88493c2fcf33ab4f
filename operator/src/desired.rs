//! The pure half of the arbitration controller: from a snapshot of the cluster to the
//! statuses that must be written. No client and no clock (the caller passes `now`), so the
//! same snapshot always gives the same answer.
//!
//! An object appears in [`Plan`] only when its desired status differs from the one it
//! has: [`set_condition`] keeps `lastTransitionTime` when a condition's status does not
//! change, so an unchanged verdict computes to exactly the stored status.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use weir_crds::lenient::Lenient;
use weir_crds::status::{accepted_condition, programmed_condition, set_condition, NodeReport};
use weir_crds::v1alpha1::{
    condition, BalancerNode, RealServer, RealServerStatus, VirtualService, VirtualServiceStatus,
};
use weir_crds::validation::{arbitrate, selector_matches, ObjectKey, RealPlan, Reason, Verdict};

use crate::rollup::{fail_open_condition, healthy_condition, roll_up, transition, Transition, VirtualServiceRollup};

/// Labels of each Node, by Node name (a BalancerNode is named after its Node).
pub type NodeLabels = BTreeMap<String, BTreeMap<String, String>>;

/// Everything the arbitration looks at.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub virtual_services: Vec<Arc<VirtualService>>,
    pub real_servers: Vec<Arc<RealServer>>,
    pub balancer_nodes: Vec<Arc<BalancerNode>>,
    pub node_labels: NodeLabels,
    /// Stored objects the types reject (see [`weir_crds::lenient`]): they take no part in
    /// the arbitration and are marked `Accepted=False InvalidSpec`.
    pub invalid_virtual_services: Vec<Arc<Lenient<VirtualService>>>,
    pub invalid_real_servers: Vec<Arc<Lenient<RealServer>>>,
}

/// A status to write, and the verdict to announce when the object just became not accepted.
#[derive(Clone, Debug)]
pub struct Update<K, S> {
    pub object: Arc<K>,
    pub status: S,
    /// Set when `Accepted` turns False or changes reason while False: worth an Event.
    pub rejected: Option<Verdict>,
    /// Set when health turns bad or good again (RealServer `Healthy`, VirtualService
    /// `FailOpen`): worth an Event.
    pub transition: Option<Transition>,
}

/// The statuses that differ from the stored ones.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub virtual_services: Vec<Update<VirtualService, VirtualServiceStatus>>,
    pub real_servers: Vec<Update<RealServer, RealServerStatus>>,
    pub invalid_virtual_services: Vec<Update<Lenient<VirtualService>, VirtualServiceStatus>>,
    pub invalid_real_servers: Vec<Update<Lenient<RealServer>, RealServerStatus>>,
}

fn key_of<K: kube::Resource>(obj: &K) -> ObjectKey {
    ObjectKey::new(obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Whether `verdict` is a rejection the object did not already carry.
fn newly_rejected(old: &[Condition], verdict: &Verdict) -> Option<Verdict> {
    if verdict.accepted() {
        return None;
    }
    let before = old.iter().find(|c| c.type_ == condition::ACCEPTED);
    let same = before.is_some_and(|c| c.status == "False" && c.reason == verdict.reason.as_str());
    (!same).then(|| verdict.clone())
}

/// Computes what to write for `snapshot`.
pub fn plan(snapshot: &Snapshot, now: &Time) -> Plan {
    let arbitration = arbitrate(
        snapshot.virtual_services.iter().map(|vs| vs.as_ref()),
        snapshot.real_servers.iter().map(|rs| rs.as_ref()),
    );
    let reals: BTreeMap<&ObjectKey, &[RealPlan]> =
        arbitration.accepted_vips().map(|vip| (&vip.owner, vip.reals.as_slice())).collect();
    // The BalancerNodes of existing Nodes (one without a Node does not count: its node is
    // gone, and `node_gc` deletes it), by name, with their reports indexed once per pass.
    let names: Vec<String> = snapshot.balancer_nodes.iter().map(|bn| bn.name_any()).collect();
    let mut nodes: Vec<Node> = snapshot
        .balancer_nodes
        .iter()
        .zip(&names)
        .filter_map(|(bn, name)| {
            Some(Node {
                name,
                labels: snapshot.node_labels.get(name)?,
                report: bn.status.as_ref().map(NodeReport::new),
            })
        })
        .collect();
    nodes.sort_by(|a, b| a.name.cmp(b.name));
    let mut out = Plan::default();
    // Each accepted VirtualService's health, for its RealServers below.
    let mut health: BTreeMap<ObjectKey, VirtualServiceRollup> = BTreeMap::new();

    for vs in &snapshot.virtual_services {
        let key = key_of(vs.as_ref());
        let Some(verdict) = arbitration.virtual_services.get(&key) else { continue };
        let generation = vs.metadata.generation;
        let accepted: &[RealPlan] = reals.get(&key).copied().unwrap_or_default();
        let accepted_reals = u32::try_from(accepted.len()).unwrap_or(u32::MAX);
        let targets: Vec<&Node> =
            nodes.iter().filter(|n| selector_matches(vs.spec.node_selector.as_ref(), n.labels)).collect();
        let (target, programmed) = count_nodes(&targets, &key, generation.unwrap_or_default(), accepted);
        let rollup = verdict.accepted().then(|| {
            let reporting: Vec<_> = targets.iter().map(|n| (n.name, n.report.as_ref())).collect();
            roll_up(&reporting, &key, generation.unwrap_or_default(), accepted)
        });
        let old = vs.status.clone().unwrap_or_default();
        let mut new = VirtualServiceStatus {
            observed_generation: generation,
            conditions: old.conditions.clone(),
            programmed_nodes: programmed,
            target_nodes: target,
            reals: accepted_reals,
            healthy_reals: rollup.as_ref().and_then(VirtualServiceRollup::healthy_reals),
        };
        set_condition(&mut new.conditions, accepted_condition(verdict, generation, now.clone()));
        let programmed_now = programmed_condition(programmed, target, verdict.accepted(), generation, now.clone());
        set_condition(&mut new.conditions, programmed_now);
        let fail_open = fail_open_condition(rollup.as_ref(), generation, now);
        let transition = transition(&old.conditions, &fail_open, "True");
        set_condition(&mut new.conditions, fail_open);
        if let Some(rollup) = rollup {
            health.insert(key, rollup);
        }
        if new != old {
            let rejected = newly_rejected(&old.conditions, verdict);
            out.virtual_services.push(Update { object: vs.clone(), status: new, rejected, transition });
        }
    }

    for rs in &snapshot.real_servers {
        let key = key_of(rs.as_ref());
        let Some(verdict) = arbitration.real_servers.get(&key) else { continue };
        let generation = rs.metadata.generation;
        let old = rs.status.clone().unwrap_or_default();
        let mut new = RealServerStatus { observed_generation: generation, conditions: old.conditions.clone() };
        set_condition(&mut new.conditions, accepted_condition(verdict, generation, now.clone()));
        let vs_key = ObjectKey::new(key.namespace.clone(), rs.spec.virtual_service_name.clone());
        let real = verdict.accepted().then(|| health.get(&vs_key).and_then(|h| h.reals.get(&key))).flatten();
        let healthy = healthy_condition(real, generation, now);
        let transition = transition(&old.conditions, &healthy, "False");
        set_condition(&mut new.conditions, healthy);
        if new != old {
            let rejected = newly_rejected(&old.conditions, verdict);
            out.real_servers.push(Update { object: rs.clone(), status: new, rejected, transition });
        }
    }
    for vs in &snapshot.invalid_virtual_services {
        if let Some((verdict, generation, conditions, stored)) = unreadable(vs, now) {
            let mut status = VirtualServiceStatus { observed_generation: generation, conditions, ..Default::default() };
            set_condition(&mut status.conditions, programmed_condition(0, 0, false, generation, now.clone()));
            push_unreadable(&mut out.invalid_virtual_services, vs, status, verdict, stored);
        }
    }
    for rs in &snapshot.invalid_real_servers {
        if let Some((verdict, generation, conditions, stored)) = unreadable(rs, now) {
            let status = RealServerStatus { observed_generation: generation, conditions };
            push_unreadable(&mut out.invalid_real_servers, rs, status, verdict, stored);
        }
    }
    out
}

/// For an object that does not decode: its verdict (`InvalidSpec`, naming the field and the
/// value's problem), generation, conditions with `Accepted` set, and its stored status.
fn unreadable<K>(obj: &Lenient<K>, now: &Time) -> Option<(Verdict, Option<i64>, Vec<Condition>, serde_json::Value)> {
    let invalid = obj.invalid()?;
    let verdict = Verdict { reason: Reason::InvalidSpec, message: format!("cannot be read: {}", invalid.error) };
    let generation = invalid.metadata.generation;
    let mut conditions = invalid.conditions();
    set_condition(&mut conditions, accepted_condition(&verdict, generation, now.clone()));
    Some((verdict, generation, conditions, invalid.status.clone()))
}

/// Queues `status` for an unreadable object unless it is what is stored; with an Event when
/// the rejection is new.
fn push_unreadable<K, S: serde::Serialize>(
    out: &mut Vec<Update<Lenient<K>, S>>,
    obj: &Arc<Lenient<K>>,
    status: S,
    verdict: Verdict,
    stored: serde_json::Value,
) {
    if serde_json::to_value(&status).ok() == Some(stored.clone()) {
        return;
    }
    let old = obj.invalid().map(|i| i.conditions()).unwrap_or_default();
    let rejected = newly_rejected(&old, &verdict);
    out.push(Update { object: obj.clone(), status, rejected, transition: None });
}

/// A balancer node: its name, its Node's labels and its report.
struct Node<'a> {
    name: &'a str,
    labels: &'a BTreeMap<String, String>,
    report: Option<NodeReport<'a>>,
}

/// (target, programmed) among the VirtualService's `targets` (the nodes its nodeSelector
/// selects): a target programs it when it reports it at `generation` with its accepted
/// `reals` as they are now (weights included).
fn count_nodes(targets: &[&Node], key: &ObjectKey, generation: i64, reals: &[RealPlan]) -> (u32, u32) {
    let programmed =
        targets.iter().filter(|n| n.report.as_ref().is_some_and(|r| r.has_programmed(key, generation, reals)));
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    (count(targets.len()), count(programmed.count()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{balancer_node, real_server, virtual_service};

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_000).unwrap())
    }

    /// Stores every update of `plan` back into `snapshot`, as the API server would.
    fn apply(snapshot: &mut Snapshot, plan: Plan) {
        for u in plan.virtual_services {
            let i = snapshot.virtual_services.iter().position(|vs| Arc::ptr_eq(vs, &u.object)).unwrap();
            let mut vs = (*u.object).clone();
            vs.status = Some(u.status);
            snapshot.virtual_services[i] = Arc::new(vs);
        }
        for u in plan.real_servers {
            let i = snapshot.real_servers.iter().position(|rs| Arc::ptr_eq(rs, &u.object)).unwrap();
            let mut rs = (*u.object).clone();
            rs.status = Some(u.status);
            snapshot.real_servers[i] = Arc::new(rs);
        }
    }

    fn cond<'a>(conditions: &'a [Condition], type_: &str) -> &'a Condition {
        conditions.iter().find(|c| c.type_ == type_).unwrap()
    }

    #[test]
    fn accepted_objects_converge_and_then_plan_nothing() {
        let mut s = Snapshot {
            virtual_services: vec![Arc::new(virtual_service("web", "10.0.0.1").generation(3).build())],
            real_servers: vec![Arc::new(real_server("r1", "web", "10.1.0.1").build())],
            balancer_nodes: vec![Arc::new(balancer_node("n1").programmed("default", "web", 3, 1).build())],
            node_labels: [("n1".to_owned(), BTreeMap::new())].into(),
            ..Snapshot::default()
        };
        let p = plan(&s, &now());
        assert_eq!((p.virtual_services.len(), p.real_servers.len()), (1, 1));
        let st = &p.virtual_services[0].status;
        assert_eq!((st.observed_generation, st.reals, st.target_nodes, st.programmed_nodes), (Some(3), 1, 1, 1));
        assert_eq!(cond(&st.conditions, "Programmed").message, "1/1 nodes");
        assert!(p.virtual_services[0].rejected.is_none());
        apply(&mut s, p);
        let again = plan(&s, &now());
        assert!(again.virtual_services.is_empty() && again.real_servers.is_empty(), "steady state writes nothing");
    }

    #[test]
    fn rejection_is_announced_once() {
        let mut s = Snapshot {
            virtual_services: vec![Arc::new(virtual_service("v6", "2001:db8::1").build())],
            real_servers: vec![Arc::new(real_server("r4", "v6", "10.1.0.1").build())],
            ..Snapshot::default()
        };
        let p = plan(&s, &now());
        let rejected = p.real_servers[0].rejected.clone().unwrap();
        assert_eq!(rejected.reason.as_str(), "AddressFamilyMismatch");
        apply(&mut s, p);
        assert!(plan(&s, &now()).real_servers.is_empty());
    }

    #[test]
    fn targets_follow_node_labels_and_generation() {
        let s = Snapshot {
            virtual_services: vec![Arc::new(
                virtual_service("web", "10.0.0.1").generation(2).selector("lb", "yes").build(),
            )],
            balancer_nodes: vec![
                Arc::new(balancer_node("a").programmed("default", "web", 1, 0).build()),
                Arc::new(balancer_node("b").build()),
                Arc::new(balancer_node("gone").build()),
            ],
            node_labels: [
                ("a".to_owned(), [("lb".to_owned(), "yes".to_owned())].into()),
                ("b".to_owned(), BTreeMap::new()),
            ]
            .into(),
            ..Snapshot::default()
        };
        let st = &plan(&s, &now()).virtual_services[0].status;
        assert_eq!((st.target_nodes, st.programmed_nodes), (1, 0), "stale generation does not count");
        assert_eq!(cond(&st.conditions, "Programmed").message, "0/1 nodes");
    }

    #[test]
    fn a_node_missing_reals_does_not_count() {
        let s = |reported: u32| Snapshot {
            virtual_services: vec![Arc::new(virtual_service("web", "10.0.0.1").generation(1).build())],
            real_servers: vec![
                Arc::new(real_server("r1", "web", "10.1.0.1").build()),
                Arc::new(real_server("r2", "web", "10.1.0.2").build()),
            ],
            balancer_nodes: vec![Arc::new(balancer_node("n1").programmed("default", "web", 1, reported).build())],
            node_labels: [("n1".to_owned(), BTreeMap::new())].into(),
            ..Snapshot::default()
        };
        let programmed = |reported| plan(&s(reported), &now()).virtual_services[0].status.programmed_nodes;
        assert_eq!(programmed(1), 0, "behind on a RealServer, or one left out for capacity");
        assert_eq!(programmed(2), 1);
    }

    #[test]
    fn health_rolls_up_and_transitions_are_announced() {
        let nodes = |b_unhealthy: &[&str]| {
            let b_healthy = 2 - b_unhealthy.len() as u32;
            vec![
                Arc::new(balancer_node("node-a").programmed("default", "web", 1, 2).health(2, &[]).build()),
                Arc::new(
                    balancer_node("node-b").programmed("default", "web", 1, 2).health(b_healthy, b_unhealthy).build(),
                ),
            ]
        };
        let mut s = Snapshot {
            virtual_services: vec![Arc::new(virtual_service("web", "10.0.0.1").build())],
            real_servers: vec![
                Arc::new(real_server("r1", "web", "10.1.0.1").build()),
                Arc::new(real_server("r2", "web", "10.1.0.2").build()),
            ],
            balancer_nodes: nodes(&[]),
            node_labels: [("node-a".to_owned(), BTreeMap::new()), ("node-b".to_owned(), BTreeMap::new())].into(),
            ..Snapshot::default()
        };
        let healthy = |p: &Plan, rs: usize| {
            let c = cond(&p.real_servers[rs].status.conditions, "Healthy");
            (c.status.clone(), c.message.clone())
        };
        let p = plan(&s, &now());
        assert_eq!(p.virtual_services[0].status.healthy_reals, Some(2));
        assert_eq!(cond(&p.virtual_services[0].status.conditions, "FailOpen").message, "fails open on 0/2 nodes");
        assert_eq!(healthy(&p, 1), ("True".into(), "healthy on 2/2 nodes".into()));
        assert!(p.real_servers.iter().all(|u| u.transition.is_none()), "turning healthy first is no transition");
        apply(&mut s, p);

        // r2 goes down on node-b.
        s.balancer_nodes = nodes(&["10.1.0.2"]);
        let p = plan(&s, &now());
        assert_eq!(p.virtual_services[0].status.healthy_reals, Some(1));
        assert_eq!(p.real_servers.len(), 1, "only r2 changes");
        assert_eq!(healthy(&p, 0), ("False".into(), "unhealthy on 1/2 nodes: node-b".into()));
        let t = p.real_servers[0].transition.clone().unwrap();
        assert_eq!(
            (t.warning, t.reason.as_str(), t.note.as_str()),
            (true, "Unhealthy", "unhealthy on 1/2 nodes: node-b")
        );
        apply(&mut s, p);
        assert!(plan(&s, &now()).real_servers.is_empty(), "announced once");

        // And back up.
        s.balancer_nodes = nodes(&[]);
        let p = plan(&s, &now());
        let t = p.real_servers[0].transition.clone().unwrap();
        assert_eq!((t.warning, t.reason.as_str(), t.note.as_str()), (false, "Healthy", "healthy on 2/2 nodes"));
        apply(&mut s, p);
        let again = plan(&s, &now());
        assert!(again.virtual_services.is_empty() && again.real_servers.is_empty());
    }
}
