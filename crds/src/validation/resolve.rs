//! Arbitration of a whole snapshot (the rules that need more than one object) and the
//! per-node plan (selector, capacity).
//!
//! Determinism: every decision walks objects in one total order — creationTimestamp
//! (oldest first; objects without one last), then namespace, then name — so the verdict
//! does not depend on input order, watch timing, or which process computes it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, Time};
use kube::api::ObjectMeta;

use super::{selector_matches, validate_real_server, validate_virtual_service, FieldError, ObjectKey};
use crate::v1alpha1::{HashFunction, HealthCheckSpec, Protocol, RealFlag, RealServer, VipFlag, VirtualService};
use weir_abi::VipFlags;

/// Why an object is (not) accepted; `as_str` is the condition's `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    Accepted,
    /// The spec fails [`validate_virtual_service`] / [`validate_real_server`].
    Invalid,
    /// An older VirtualService claims the same (address, port, protocol).
    AddressConflict,
    VirtualServiceNotFound,
    VirtualServiceNotAccepted,
    /// IPv4 real behind an IPv6 VIP: the datapath cannot encapsulate IPv6 in IPv4.
    AddressFamilyMismatch,
    /// An older RealServer already puts this address in the same VirtualService.
    DuplicateAddress,
    /// Past the node's max_vips / max_reals.
    CapacityExceeded,
    /// The stored object does not decode with the current types (e.g. a value an enum no
    /// longer has): see [`crate::lenient`].
    InvalidSpec,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Accepted => "Accepted",
            Reason::Invalid => "Invalid",
            Reason::AddressConflict => "AddressConflict",
            Reason::VirtualServiceNotFound => "VirtualServiceNotFound",
            Reason::VirtualServiceNotAccepted => "VirtualServiceNotAccepted",
            Reason::AddressFamilyMismatch => "AddressFamilyMismatch",
            Reason::DuplicateAddress => "DuplicateAddress",
            Reason::CapacityExceeded => "CapacityExceeded",
            Reason::InvalidSpec => "InvalidSpec",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict on one object: `Accepted` condition's reason and message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub reason: Reason,
    pub message: String,
}

impl Verdict {
    pub fn accepted(&self) -> bool {
        self.reason == Reason::Accepted
    }

    fn new(reason: Reason, message: impl Into<String>) -> Self {
        Verdict { reason, message: message.into() }
    }

    fn invalid(errors: &[FieldError]) -> Self {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        Verdict::new(Reason::Invalid, text.join("; "))
    }
}

/// One VIP to program, in plain types (agent-independent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VipPlan {
    pub owner: ObjectKey,
    /// The VirtualService's generation, to report in BalancerNode status.
    pub generation: i64,
    pub address: IpAddr,
    pub port: u16,
    pub protocol: Protocol,
    pub flags: VipFlags,
    pub hash_function: HashFunction,
    /// How the reals are probed; `None`: not at all (every real healthy).
    pub health_check: Option<HealthCheckSpec>,
    /// Accepted reals, in rule order; weight 0 included (draining).
    pub reals: Vec<RealPlan>,
}

/// One real of a [`VipPlan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RealPlan {
    pub owner: ObjectKey,
    pub address: IpAddr,
    pub weight: u32,
    /// Katran real flag bits. A number, not `RealFlags`: it is hashed into the reals
    /// digest as a number, and a real's flags are the Balancer API's numbers too.
    pub flags: u8,
}

/// The node-independent verdict on a snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Arbitration {
    pub virtual_services: BTreeMap<ObjectKey, Verdict>,
    pub real_servers: BTreeMap<ObjectKey, Verdict>,
    /// Accepted VIPs in rule order, with the selector that decides their nodes.
    accepted: Vec<(VipPlan, Option<LabelSelector>)>,
}

/// The node's datapath limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    pub max_vips: u32,
    /// Distinct real addresses (the datapath shares reals across VIPs by address).
    pub max_reals: u32,
}

/// What the rules need to know about one balancer node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    pub labels: BTreeMap<String, String>,
    pub capacity: Capacity,
}

/// What one node programs.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodePlan {
    /// In rule order (oldest VirtualService first).
    pub vips: Vec<VipPlan>,
    /// Accepted VirtualServices this node's labels do not select.
    pub not_selected: Vec<ObjectKey>,
    /// Accepted objects left out for capacity (reason `CapacityExceeded`).
    pub excluded_virtual_services: BTreeMap<ObjectKey, Verdict>,
    pub excluded_real_servers: BTreeMap<ObjectKey, Verdict>,
    pub vips_used: u32,
    pub reals_used: u32,
}

/// Arbitration and the node's plan together.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolution {
    pub arbitration: Arbitration,
    pub plan: NodePlan,
}

/// The total order of every decision: oldest first, then namespace/name.
type Rank = (bool, Option<Time>, ObjectKey);

fn rank(meta: &ObjectMeta) -> Rank {
    let ts = meta.creation_timestamp.clone();
    (ts.is_none(), ts, key(meta))
}

fn key(meta: &ObjectMeta) -> ObjectKey {
    ObjectKey::new(meta.namespace.clone().unwrap_or_default(), meta.name.clone().unwrap_or_default())
}

/// Decides which VirtualServices and RealServers are accepted, independent of any node.
pub fn arbitrate<'a>(
    virtual_services: impl IntoIterator<Item = &'a VirtualService>,
    real_servers: impl IntoIterator<Item = &'a RealServer>,
) -> Arbitration {
    let mut out = Arbitration::default();
    let mut vss: Vec<&VirtualService> = virtual_services.into_iter().collect();
    vss.sort_by_cached_key(|vs| rank(&vs.metadata));

    // The first (oldest) valid claimant of an (address, port, protocol) wins it.
    let mut claims: BTreeMap<(IpAddr, u16, Protocol), ObjectKey> = BTreeMap::new();
    let mut index: BTreeMap<ObjectKey, usize> = BTreeMap::new();
    for vs in vss {
        let k = key(&vs.metadata);
        let errors = validate_virtual_service(&vs.spec);
        let address = match errors.is_empty().then(|| vs.spec.address.parse::<IpAddr>()) {
            Some(Ok(a)) => a,
            _ => {
                out.virtual_services.insert(k, Verdict::invalid(&errors));
                continue;
            }
        };
        let claim = (address, vs.spec.port, vs.spec.protocol);
        if let Some(winner) = claims.get(&claim) {
            let msg = format!(
                "{address} port {} {} is already served by VirtualService {winner}, which is older",
                vs.spec.port,
                vs.spec.protocol.name()
            );
            out.virtual_services.insert(k, Verdict::new(Reason::AddressConflict, msg));
            continue;
        }
        claims.insert(claim, k.clone());
        out.virtual_services.insert(k.clone(), Verdict::new(Reason::Accepted, "accepted"));
        index.insert(k.clone(), out.accepted.len());
        let plan = VipPlan {
            owner: k,
            generation: vs.metadata.generation.unwrap_or_default(),
            address,
            port: vs.spec.port,
            protocol: vs.spec.protocol,
            flags: VipFlag::flags(&vs.spec.flags),
            hash_function: vs.spec.hash_function,
            health_check: vs.spec.health_check.clone(),
            reals: Vec::new(),
        };
        out.accepted.push((plan, vs.spec.node_selector.clone()));
    }

    let mut rss: Vec<&RealServer> = real_servers.into_iter().collect();
    rss.sort_by_cached_key(|rs| rank(&rs.metadata));
    // (VirtualService, address) → the RealServer that holds it.
    let mut holders: BTreeMap<(ObjectKey, IpAddr), ObjectKey> = BTreeMap::new();
    for rs in rss {
        let k = key(&rs.metadata);
        let verdict = match judge_real(&out, &index, &mut holders, rs, &k) {
            Ok((i, real)) => {
                out.accepted[i].0.reals.push(real);
                Verdict::new(Reason::Accepted, "accepted")
            }
            Err(rejection) => rejection,
        };
        out.real_servers.insert(k, verdict);
    }
    out
}

/// Judges one RealServer: `Ok` with its VIP's index in `accepted` and its plan, or the
/// rejection.
fn judge_real(
    out: &Arbitration,
    index: &BTreeMap<ObjectKey, usize>,
    holders: &mut BTreeMap<(ObjectKey, IpAddr), ObjectKey>,
    rs: &RealServer,
    k: &ObjectKey,
) -> Result<(usize, RealPlan), Verdict> {
    let errors = validate_real_server(&rs.spec);
    let address = match errors.is_empty().then(|| rs.spec.address.parse::<IpAddr>()) {
        Some(Ok(a)) => a,
        _ => return Err(Verdict::invalid(&errors)),
    };
    let vs_key = ObjectKey::new(k.namespace.clone(), rs.spec.virtual_service_name.clone());
    let vs_verdict = match out.virtual_services.get(&vs_key) {
        None => {
            return Err(Verdict::new(Reason::VirtualServiceNotFound, format!("VirtualService {vs_key} does not exist")))
        }
        Some(v) => v,
    };
    let Some(&i) = index.get(&vs_key) else {
        let msg = format!("VirtualService {vs_key} is not accepted ({}: {})", vs_verdict.reason, vs_verdict.message);
        return Err(Verdict::new(Reason::VirtualServiceNotAccepted, msg));
    };
    let vip = &out.accepted[i].0;
    if vip.address.is_ipv6() && address.is_ipv4() {
        let msg = format!("IPv4 real {address} cannot serve IPv6 VIP {} (no IPv6-in-IPv4 encapsulation)", vip.address);
        return Err(Verdict::new(Reason::AddressFamilyMismatch, msg));
    }
    if let Some(holder) = holders.get(&(vs_key.clone(), address)) {
        let msg =
            format!("address {address} is already a real of {vs_key} through RealServer {holder}, which is older");
        return Err(Verdict::new(Reason::DuplicateAddress, msg));
    }
    holders.insert((vs_key, address), k.clone());
    Ok((i, RealPlan { owner: k.clone(), address, weight: rs.spec.weight, flags: RealFlag::bits(&rs.spec.flags) }))
}

impl Arbitration {
    /// Accepted VIPs in rule order (all nodes), before selectors and capacity.
    pub fn accepted_vips(&self) -> impl Iterator<Item = &VipPlan> {
        self.accepted.iter().map(|(vip, _)| vip)
    }

    /// What `node` programs: the accepted VIPs its labels select, oldest first, until
    /// `max_vips`; their reals in rule order until `max_reals` distinct addresses. Objects
    /// past a limit are reported with `CapacityExceeded` — the same ones on every run.
    pub fn plan_node(&self, node: &NodeInfo) -> NodePlan {
        let Capacity { max_vips, max_reals } = node.capacity;
        let mut plan = NodePlan::default();
        let mut addresses: BTreeSet<IpAddr> = BTreeSet::new();
        for (vip, selector) in &self.accepted {
            if !selector_matches(selector.as_ref(), &node.labels) {
                plan.not_selected.push(vip.owner.clone());
                continue;
            }
            if plan.vips_used >= max_vips {
                let msg = format!("node is at max_vips ({max_vips}); older VirtualServices come first");
                plan.excluded_virtual_services.insert(vip.owner.clone(), Verdict::new(Reason::CapacityExceeded, msg));
                continue;
            }
            plan.vips_used += 1;
            let mut programmed = VipPlan { reals: Vec::with_capacity(vip.reals.len()), ..vip.clone() };
            for real in &vip.reals {
                // A shared address costs one slot however many VIPs use it.
                if !addresses.contains(&real.address) {
                    if addresses.len() as u64 >= u64::from(max_reals) {
                        let msg = format!("node is at max_reals ({max_reals}) distinct addresses");
                        plan.excluded_real_servers
                            .insert(real.owner.clone(), Verdict::new(Reason::CapacityExceeded, msg));
                        continue;
                    }
                    addresses.insert(real.address);
                }
                programmed.reals.push(real.clone());
            }
            plan.vips.push(programmed);
        }
        plan.reals_used = u32::try_from(addresses.len()).unwrap_or(u32::MAX);
        plan
    }
}

/// [`arbitrate`], then [`Arbitration::plan_node`] for `node`.
pub fn resolve<'a>(
    virtual_services: impl IntoIterator<Item = &'a VirtualService>,
    real_servers: impl IntoIterator<Item = &'a RealServer>,
    node: &NodeInfo,
) -> Resolution {
    let arbitration = arbitrate(virtual_services, real_servers);
    let plan = arbitration.plan_node(node);
    Resolution { arbitration, plan }
}
