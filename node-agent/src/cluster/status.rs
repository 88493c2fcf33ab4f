//! The node's BalancerNode: what this agent has programmed, written only by
//! this agent (the operator rolls it up into `VirtualService.status`).
//!
//! [`node_status`] is pure: the Balancer, the plan and the pass's [`Report`]
//! in, the status out. Each programmed VirtualService carries the health of
//! its reals on this node (healthy count, unhealthy addresses, fail-open), read
//! from the Balancer, which the prober keeps up to date. A VirtualService counts as programmed at its plan
//! generation when cluster mode owns its VIP and no op for it failed in the
//! pass; a VIP held by a REST-created VIP (conflict) or with a hash function
//! the datapath lacks is not programmed, and `Ready` says why — as it does for
//! objects the node's capacity left out (the operator then counts the node as
//! not programmed: it reports fewer reals, or not the VirtualService).
//!
//! [`Writer`] server-side applies it: it creates the object once (with an
//! ownerReference to the Node, so it goes when the Node goes), then applies
//! `/status` only when the status changed.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource};
use serde_json::json;
use weir_crds::status::{programmed_virtual_services, set_condition};
use weir_crds::v1alpha1::{
    condition, AttachMode, BalancerNode, BalancerNodeStatus, CapacityUsage, ProgrammedVirtualService,
};
use weir_crds::validation::{NodePlan, ObjectKey};

use super::health::report_health;
use super::reconcile::planned_id;
use super::{Reconciler, Report};
use crate::dataplane::{self, Balancer, VipId};

/// The field manager of the agent's writes.
pub const FIELD_MANAGER: &str = "weir-agent";

/// The status after a pass. `previous`: the conditions last written (their
/// transition times are kept while their status holds).
pub fn node_status(
    lb: &Balancer,
    plan: &NodePlan,
    report: &Report,
    reconciler: &Reconciler,
    previous: &[Condition],
    reported: &[ProgrammedVirtualService],
    now: Time,
) -> BalancerNodeStatus {
    let failed: BTreeSet<VipId> = report.errors.iter().map(|e| *e.op.vip()).collect();
    let programmed_plan = NodePlan {
        vips: plan
            .vips
            .iter()
            .filter(|v| {
                let id = planned_id(v);
                reconciler.owned().get(&id) == Some(&v.owner) && !failed.contains(&id)
            })
            .cloned()
            .collect(),
        ..NodePlan::default()
    };
    let config = lb.config();
    let vips = lb.vips();
    let real_addrs: BTreeSet<_> =
        vips.iter().flat_map(|v| lb.reals(&v.id).unwrap_or_default().into_iter().map(|r| r.addr)).collect();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    let mut conditions = previous.to_vec();
    set_condition(&mut conditions, ready_condition(plan, report, programmed_plan.vips.len(), now));
    BalancerNodeStatus {
        interface: (!config.testing).then(|| config.main_interface.clone()),
        attach_mode: Some(match (config.testing, config.attach_mode) {
            (true, _) => AttachMode::Testing,
            (false, dataplane::AttachMode::Driver) => AttachMode::Native,
            (false, dataplane::AttachMode::Generic) => AttachMode::Generic,
            (false, dataplane::AttachMode::Auto) => AttachMode::Auto,
        }),
        capacity: CapacityUsage {
            vips_used: count(vips.len()),
            vips_max: config.max_vips,
            reals_used: count(real_addrs.len()),
            reals_max: config.max_reals,
        },
        virtual_services: with_frozen(with_health(lb, &programmed_plan), reported, reconciler),
        conditions,
    }
}

/// What `plan` programs, each VirtualService with the health of its reals.
fn with_health(lb: &Balancer, plan: &NodePlan) -> Vec<ProgrammedVirtualService> {
    let ids: BTreeMap<&ObjectKey, VipId> = plan.vips.iter().map(|v| (&v.owner, planned_id(v))).collect();
    let mut entries = programmed_virtual_services(plan);
    for entry in &mut entries {
        if let Some(id) = ids.get(&ObjectKey::new(&entry.namespace, &entry.name)) {
            report_health(lb, id, entry);
        }
    }
    entries
}

/// `programmed` and, from what was `reported` before, the VirtualServices
/// whose VIPs are kept as they were because they cannot be read (see
/// [`Reconciler::freeze`]): they are still programmed as reported, and a
/// restarted agent must find them in the report to take their VIPs back.
fn with_frozen(
    mut programmed: Vec<ProgrammedVirtualService>,
    reported: &[ProgrammedVirtualService],
    reconciler: &Reconciler,
) -> Vec<ProgrammedVirtualService> {
    for entry in reported {
        let owner = ObjectKey::new(&entry.namespace, &entry.name);
        // Frozen ones are rare: the scans run only for them.
        if reconciler.is_frozen(&owner)
            && reconciler.owned().values().any(|o| *o == owner)
            && !programmed.iter().any(|p| p.name == entry.name && p.namespace == entry.namespace)
        {
            programmed.push(entry.clone());
        }
    }
    programmed.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    programmed
}

/// `Ready`: True when the pass left nothing undone; otherwise the first
/// kind of trouble, with every object it concerns.
fn ready_condition(plan: &NodePlan, report: &Report, programmed: usize, now: Time) -> Condition {
    let excluded: Vec<String> = plan
        .excluded_virtual_services
        .iter()
        .map(|(k, v)| format!("VirtualService {k}: {}", v.message))
        .chain(plan.excluded_real_servers.iter().map(|(k, v)| format!("RealServer {k}: {}", v.message)))
        .collect();
    let (ok, reason, message) = if !report.conflicts.is_empty() {
        let list: Vec<String> = report.conflicts.iter().map(|c| format!("{} ({})", c.owner, c.vip)).collect();
        (false, "VipConflict", format!("VIPs already created over the REST API: {}", list.join(", ")))
    } else if !report.errors.is_empty() {
        let list: Vec<String> = report.errors.iter().map(|e| format!("{}: {}", e.op.vip(), e.error)).collect();
        (false, "ProgrammingFailed", list.join("; "))
    } else if !excluded.is_empty() {
        (false, "CapacityExceeded", excluded.join("; "))
    } else {
        (true, "InSync", format!("{programmed} VirtualServices programmed"))
    };
    Condition {
        type_: condition::READY.to_owned(),
        status: if ok { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message,
        observed_generation: None,
        last_transition_time: now,
    }
}

/// Applies the node's BalancerNode status, only when it changed.
pub struct Writer {
    api: Api<BalancerNode>,
    node_name: String,
    created: bool,
    written: Option<BalancerNodeStatus>,
}

impl Writer {
    pub fn new(client: Client, node_name: String) -> Self {
        Writer { api: Api::all(client), node_name, created: false, written: None }
    }

    /// Starts from the status a previous agent wrote (read back after a
    /// restart): its conditions keep their transition times while their
    /// status holds, and an unchanged status is not written again.
    pub fn restore(&mut self, status: BalancerNodeStatus) {
        self.created = true;
        self.written = Some(status);
    }

    /// The VirtualServices last reported as programmed (for [`node_status`]).
    pub fn programmed(&self) -> &[ProgrammedVirtualService] {
        self.written.as_ref().map_or(&[], |s| &s.virtual_services)
    }

    /// The conditions last written (for [`node_status`]).
    pub fn conditions(&self) -> &[Condition] {
        self.written.as_ref().map_or(&[], |s| &s.conditions)
    }

    /// Writes `status` unless it is what was last written. `node`: the Node
    /// object, for the ownerReference of a newly created BalancerNode.
    pub async fn write(&mut self, status: &BalancerNodeStatus, node: Option<&Node>) -> Result<(), kube::Error> {
        if self.written.as_ref() == Some(status) {
            return Ok(());
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        if !self.created {
            let owner = node.and_then(|n| {
                n.controller_owner_ref(&()).map(|mut r| {
                    r.controller = None;
                    r.block_owner_deletion = None;
                    r
                })
            });
            let mut body = json!({
                "apiVersion": BalancerNode::api_version(&()),
                "kind": BalancerNode::kind(&()),
                "metadata": { "name": self.node_name },
                "spec": {},
            });
            if let Some(owner) = owner {
                body["metadata"]["ownerReferences"] = json!([owner]);
            }
            self.api.patch(&self.node_name, &params, &Patch::Apply(&body)).await?;
            self.created = true;
        }
        let body = json!({
            "apiVersion": BalancerNode::api_version(&()),
            "kind": BalancerNode::kind(&()),
            "status": status,
        });
        match self.api.patch_status(&self.node_name, &params, &Patch::Apply(&body)).await {
            Ok(_) => {
                self.written = Some(status.clone());
                Ok(())
            }
            Err(e) => {
                // Deleted behind our back (e.g. by the operator's GC): create it again next time.
                if matches!(&e, kube::Error::Api(s) if s.code == 404) {
                    self.created = false;
                }
                Err(e)
            }
        }
    }
}
