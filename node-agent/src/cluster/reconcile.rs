//! From a node's [`NodePlan`] to Balancer calls: a pure, deterministic diff
//! ([`diff`]) and its application ([`apply`]) through the Balancer API only.
//!
//! **Ownership.** Cluster mode touches only the VIPs it owns. A VIP is owned
//! when the [`Reconciler`] created or adopted it for a planned VirtualService;
//! the owned set is remembered by the Reconciler. After a restart it is
//! rebuilt with [`Reconciler::adopt`] from the VIPs the node's BalancerNode
//! status lists as programmed (or set with
//! [`Reconciler::with_owned`]). The pure [`diff`] takes that set as an argument. Everything
//! else in the Balancer — VIPs created over REST — is left alone: never
//! deleted, never changed. A planned VIP whose (address, port, protocol) is
//! already held by an unowned VIP is not taken over; it is reported as a
//! [`Conflict`] and no op touches it.
//!
//! **Order.** Capacity is freed before it is used, so a plan that fits never
//! fails with SPACE_EXHAUSTED halfway: (1) delete owned VIPs no longer planned,
//! (2) delete reals per VIP (one batch each), (3) add VIPs, (4) flags and hash
//! function of existing VIPs, (5) health checks, (6) add/update reals per VIP
//! (one batch each). Within a phase, VIPs go in [`VipId`] order. The check
//! comes before the reals: with the prober enabled, a real starts healthy only
//! on a VIP whose check is `dummy` (see [`super::health`]).
//!
//! **Reals shared across VIPs.** The datapath keeps one set of flags per real
//! address; when VIPs disagree, the first VIP in plan order (the oldest
//! VirtualService) decides for all, so reapplying stays a no-op.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use weir_abi::VipFlags;
use weir_crds::v1alpha1::ProgrammedVirtualService;
use weir_crds::validation::{NodePlan, ObjectKey, VipPlan};

use super::health::desired_check;
use crate::dataplane::{Balancer, HashFunction, HealthCheck, RealAction, RealSpec, VipId, VipSpec};

/// One Balancer change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// An owned VIP that is no longer planned.
    DelVip(VipId),
    /// Reals leaving a VIP, one batch.
    DelReals {
        vip: VipId,
        addrs: Vec<IpAddr>,
    },
    /// A new VIP (with its hash function; its reals follow in [`Op::UpsertReals`]).
    AddVip {
        vip: VipId,
        flags: u32,
        hash: HashFunction,
    },
    /// Flag bits to clear and to set on an existing VIP.
    SetFlags {
        vip: VipId,
        clear: u32,
        set: u32,
    },
    SetHash {
        vip: VipId,
        hash: HashFunction,
    },
    /// The VIP's health check, as the Balancer stores it (`dummy` when the
    /// VirtualService has none).
    SetHealthCheck {
        vip: VipId,
        check: HealthCheck,
    },
    /// Reals to add or whose weight or flags change, one batch.
    UpsertReals {
        vip: VipId,
        reals: Vec<RealSpec>,
    },
}

impl Op {
    /// The VIP the op is about.
    pub fn vip(&self) -> &VipId {
        match self {
            Op::DelVip(vip)
            | Op::DelReals { vip, .. }
            | Op::AddVip { vip, .. }
            | Op::SetFlags { vip, .. }
            | Op::SetHash { vip, .. }
            | Op::SetHealthCheck { vip, .. }
            | Op::UpsertReals { vip, .. } => vip,
        }
    }
}

/// A VIP as the Balancer holds it (what [`diff`] compares against).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedVip {
    pub flags: VipFlags,
    pub hash: HashFunction,
    pub reals: BTreeMap<IpAddr, RealSpec>,
    pub health_check: Option<HealthCheck>,
}

/// A planned VIP that an unowned (REST-created) VIP already holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    pub vip: VipId,
    pub owner: ObjectKey,
}

/// What [`diff`] decided.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diff {
    pub ops: Vec<Op>,
    pub conflicts: Vec<Conflict>,
    /// The VIPs cluster mode owns once `ops` succeed, with their VirtualService.
    pub desired_owners: BTreeMap<VipId, ObjectKey>,
}

/// One op that failed.
#[derive(Debug)]
pub struct OpError {
    pub op: Op,
    pub error: crate::Error,
}

/// Reads the Balancer's VIPs and reals.
pub fn observe(balancer: &Balancer) -> BTreeMap<VipId, ObservedVip> {
    balancer
        .vips()
        .into_iter()
        .map(|info| {
            let reals = balancer.reals(&info.id).unwrap_or_default().into_iter().map(|r| (r.addr, r)).collect();
            let flags = VipFlags::from_bits_retain(info.flags);
            let health_check = balancer.health_check(&info.id).ok().flatten();
            (info.id, ObservedVip { flags, hash: info.hash_function, reals, health_check })
        })
        .collect()
}

/// The Balancer's id of a planned VIP.
pub fn planned_id(vip: &VipPlan) -> VipId {
    VipId { addr: vip.address, port: vip.port, proto: vip.protocol.number() }
}

/// The ops that bring the owned part of `current` to `plan`. Pure.
pub fn diff(plan: &NodePlan, current: &BTreeMap<VipId, ObservedVip>, owned: &BTreeSet<VipId>) -> Diff {
    let mut out = Diff::default();
    // One set of flags per real address: the first VIP in plan order decides.
    let mut real_flags: BTreeMap<IpAddr, u8> = BTreeMap::new();
    for real in plan.vips.iter().flat_map(|v| &v.reals) {
        real_flags.entry(real.address).or_insert(real.flags);
    }
    // VipId -> (flags, hash, reals); BTreeMap gives the phase order.
    let mut desired: BTreeMap<VipId, (VipFlags, HashFunction, BTreeMap<IpAddr, RealSpec>)> = BTreeMap::new();
    let mut checks: BTreeMap<VipId, HealthCheck> = BTreeMap::new();
    // Planned VIPs never deleted by this diff, even when not programmable.
    let mut keep: BTreeSet<VipId> = BTreeSet::new();
    for vip in &plan.vips {
        let id = planned_id(vip);
        keep.insert(id);
        if current.contains_key(&id) && !owned.contains(&id) {
            out.conflicts.push(Conflict { vip: id, owner: vip.owner.clone() });
            continue;
        }
        let mut reals = BTreeMap::new();
        for r in &vip.reals {
            let spec = RealSpec { addr: r.address, weight: r.weight, flags: real_flags[&r.address] };
            reals.entry(r.address).or_insert(spec);
        }
        out.desired_owners.insert(id, vip.owner.clone());
        desired.insert(id, (vip.flags, vip.hash_function, reals));
        checks.insert(id, desired_check(vip));
    }

    for id in owned.iter().filter(|id| !keep.contains(id) && current.contains_key(id)) {
        out.ops.push(Op::DelVip(*id));
    }
    for (id, (_, _, reals)) in &desired {
        if let Some(have) = current.get(id) {
            let addrs: Vec<IpAddr> = have.reals.keys().filter(|a| !reals.contains_key(a)).copied().collect();
            if !addrs.is_empty() {
                out.ops.push(Op::DelReals { vip: *id, addrs });
            }
        }
    }
    for (id, (flags, hash, _)) in &desired {
        if !current.contains_key(id) {
            out.ops.push(Op::AddVip { vip: *id, flags: flags.bits(), hash: *hash });
        }
    }
    for (id, (flags, hash, _)) in &desired {
        let Some(have) = current.get(id) else { continue };
        if have.flags != *flags {
            let (clear, set) = (have.flags.difference(*flags), flags.difference(have.flags));
            out.ops.push(Op::SetFlags { vip: *id, clear: clear.bits(), set: set.bits() });
        }
        if have.hash != *hash {
            out.ops.push(Op::SetHash { vip: *id, hash: *hash });
        }
    }
    for (id, check) in &checks {
        let have = current.get(id).and_then(|v| v.health_check.as_ref());
        if have != Some(check) {
            out.ops.push(Op::SetHealthCheck { vip: *id, check: check.clone() });
        }
    }
    for (id, (_, _, reals)) in &desired {
        let have = current.get(id).map(|v| &v.reals);
        let changed: Vec<RealSpec> =
            reals.values().filter(|r| have.and_then(|h| h.get(&r.addr)) != Some(*r)).copied().collect();
        if !changed.is_empty() {
            out.ops.push(Op::UpsertReals { vip: *id, reals: changed });
        }
    }
    out
}

/// Performs `ops` in order through the Balancer API. A failing op does not stop
/// the others; every failure is returned.
pub fn apply(balancer: &mut Balancer, ops: &[Op]) -> Vec<OpError> {
    let mut errors = Vec::new();
    for op in ops {
        if let Err(error) = apply_one(balancer, op) {
            errors.push(OpError { op: op.clone(), error });
        }
    }
    errors
}

fn apply_one(balancer: &mut Balancer, op: &Op) -> crate::Result<()> {
    match op {
        Op::DelVip(id) => balancer.del_vip(id),
        Op::DelReals { vip, addrs } => {
            let reals: Vec<RealSpec> = addrs.iter().map(|&addr| RealSpec { addr, weight: 0, flags: 0 }).collect();
            balancer.modify_reals(vip, RealAction::Delete, &reals)
        }
        Op::AddVip { vip, flags, hash } => {
            balancer.add_vip(VipSpec { id: *vip, flags: *flags })?;
            if balancer.vip_info(vip)?.hash_function != *hash {
                balancer.change_hash_function(vip, *hash)?;
            }
            Ok(())
        }
        Op::SetFlags { vip, clear, set } => {
            if *clear != 0 {
                balancer.modify_vip_flags(vip, *clear, false)?;
            }
            if *set != 0 {
                balancer.modify_vip_flags(vip, *set, true)?;
            }
            Ok(())
        }
        Op::SetHash { vip, hash } => balancer.change_hash_function(vip, *hash),
        Op::SetHealthCheck { vip, check } => balancer.set_health_check(vip, check.clone()),
        Op::UpsertReals { vip, reals } => balancer.modify_reals(vip, RealAction::Add, reals),
    }
}

/// What one [`Reconciler::reconcile`] did.
#[derive(Debug, Default)]
pub struct Report {
    pub ops: Vec<Op>,
    pub errors: Vec<OpError>,
    pub conflicts: Vec<Conflict>,
}

/// Diffs and applies plans, remembering which VIPs cluster mode owns.
#[derive(Debug, Default, Clone)]
pub struct Reconciler {
    owned: BTreeMap<VipId, ObjectKey>,
    /// The last plan's programmable VIPs (owned, or about to be) and real
    /// addresses, with their VirtualService: what the REST API must not change.
    claimed_vips: BTreeMap<VipId, ObjectKey>,
    claimed_reals: BTreeMap<IpAddr, ObjectKey>,
    /// A pass over complete lists has run.
    synced: bool,
    /// VirtualServices whose stored object does not decode (see [`Self::freeze`]).
    frozen: BTreeSet<ObjectKey>,
}

/// The API's view of what cluster mode owns: the reconciler under its lock.
impl crate::handles::Ownership for std::sync::Mutex<Reconciler> {
    fn vip_owner(&self, vip: &VipId) -> Option<String> {
        self.lock().unwrap_or_else(std::sync::PoisonError::into_inner).owner(vip).map(ToString::to_string)
    }

    fn real_owner(&self, addr: &IpAddr) -> Option<String> {
        self.lock().unwrap_or_else(std::sync::PoisonError::into_inner).real_owner(addr).map(ToString::to_string)
    }

    fn try_synced(&self) -> Option<bool> {
        match self.try_lock() {
            Ok(r) => Some(r.synced()),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner().synced()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }
}

impl Reconciler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Starts owning `owned` (e.g. restored after a restart).
    pub fn with_owned(owned: BTreeMap<VipId, ObjectKey>) -> Self {
        Reconciler { owned, ..Self::default() }
    }

    /// The owned VIPs and their VirtualServices.
    pub fn owned(&self) -> &BTreeMap<VipId, ObjectKey> {
        &self.owned
    }

    /// The VirtualService owning `vip`: cluster mode owns it, or the last plan
    /// is about to create it.
    pub fn owner(&self, vip: &VipId) -> Option<&ObjectKey> {
        self.owned.get(vip).or_else(|| self.claimed_vips.get(vip))
    }

    /// The VirtualService whose plan decides the flags of real `addr` (reals
    /// are shared across VIPs by address; the oldest VirtualService decides).
    pub fn real_owner(&self, addr: &IpAddr) -> Option<&ObjectKey> {
        self.claimed_reals.get(addr)
    }

    /// Whether a pass over complete lists has run (readiness in cluster mode:
    /// the datapath holds the cluster's state, as far as it could be applied;
    /// failures show in the BalancerNode's `Ready` condition).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Records that such a pass has run.
    pub fn mark_synced(&mut self) {
        self.synced = true;
    }

    /// After a restart: takes back ownership of the VIPs this node reported as
    /// programmed in its BalancerNode status before it stopped (`programmed`),
    /// when the Balancer still holds them. An entry that records its VIP is
    /// taken by that VIP, so a VIP whose VirtualService was deleted, moved or
    /// deselected meanwhile is owned again and the next diff removes it; an
    /// entry without one (an older agent's report) by its VirtualService's VIP
    /// in `plan`. Nothing else is taken: a REST VIP never is.
    pub fn adopt(&mut self, plan: &NodePlan, programmed: &[ProgrammedVirtualService], balancer: &Balancer) {
        for entry in programmed {
            let owner = ObjectKey::new(entry.namespace.clone(), entry.name.clone());
            let id = match &entry.vip {
                Some(vip) => {
                    vip.address.parse().ok().map(|addr| VipId { addr, port: vip.port, proto: vip.protocol.number() })
                }
                None => plan.vips.iter().find(|v| v.owner == owner).map(planned_id),
            };
            if let Some(id) = id.filter(|id| balancer.vip_info(id).is_ok()) {
                self.owned.entry(id).or_insert(owner);
            }
        }
    }

    /// The ops that would bring the Balancer to `plan` (nothing is changed).
    /// Keeps the VIPs of `owners` as they are, neither changed nor removed:
    /// VirtualServices that exist but cannot be read (a CRD change narrowed a
    /// field they use) are not deleted ones, and what they last programmed
    /// is the best guess of what they want. They are followed again once they
    /// can be read, and their VIPs removed once they are deleted.
    pub fn freeze(&mut self, owners: BTreeSet<ObjectKey>) {
        self.frozen = owners;
    }

    /// Whether `owner`'s VIPs are kept as they are (see [`Self::freeze`]).
    pub fn is_frozen(&self, owner: &ObjectKey) -> bool {
        self.frozen.contains(owner)
    }

    pub fn diff(&self, plan: &NodePlan, balancer: &Balancer) -> Diff {
        // A frozen VIP is not this diff's to change: as if another owner's.
        let owned: BTreeSet<VipId> =
            self.owned.iter().filter(|(_, owner)| !self.frozen.contains(owner)).map(|(id, _)| *id).collect();
        diff(plan, &observe(balancer), &owned)
    }

    /// Brings the Balancer to `plan`. Afterwards it owns the planned VIPs that
    /// exist, and keeps owning unplanned ones whose deletion failed (retried
    /// on the next call).
    pub fn reconcile(&mut self, plan: &NodePlan, balancer: &mut Balancer) -> Report {
        let d = self.diff(plan, balancer);
        let errors = apply(balancer, &d.ops);
        let present: BTreeSet<VipId> = balancer.vips().into_iter().map(|v| v.id).collect();
        let mut owned: BTreeMap<VipId, ObjectKey> =
            d.desired_owners.iter().filter(|(id, _)| present.contains(id)).map(|(id, o)| (*id, o.clone())).collect();
        for (id, owner) in &self.owned {
            let conflicting = d.conflicts.iter().any(|c| c.vip == *id);
            if present.contains(id) && !owned.contains_key(id) && (self.frozen.contains(owner) || !conflicting) {
                owned.insert(*id, owner.clone());
            }
        }
        self.owned = owned;
        self.claimed_reals = plan
            .vips
            .iter()
            .filter(|v| d.desired_owners.contains_key(&planned_id(v)))
            .flat_map(|v| v.reals.iter().map(move |r| (r.address, v.owner.clone())))
            .rev() // the first VIP in plan order wins: insert it last
            .collect();
        self.claimed_vips = d.desired_owners;
        Report { ops: d.ops, errors, conflicts: d.conflicts }
    }
}

#[cfg(test)]
mod tests;
