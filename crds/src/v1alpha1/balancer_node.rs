//! `BalancerNode`: cluster-scoped, one object per balancer node (named after the Node),
//! written only by that node's agent; the operator reads them all to fill
//! `VirtualService.status` ("Programmed n/m nodes").
//!
//! Everything the agent reports lives in `status`, behind the status subresource: it is
//! observed state, not desired state, so by convention it is status; and RBAC can then
//! grant agents `balancernodes/status` (plus create of the empty object) while nothing
//! else writes it. The spec is empty on purpose — there is nothing to ask of an agent
//! through this object (its configuration comes from the operator's DaemonSet).
//! The agent should set an ownerReference to its Node so the object goes with the Node;
//! the operator also removes objects of nodes that are gone.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Deliberately empty: see the module docs.
#[derive(CustomResource, JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "lb.weir.dev",
    version = "v1alpha1",
    kind = "BalancerNode",
    status = "BalancerNodeStatus",
    shortname = "wbn",
    category = "weir",
    doc = "What one balancer node's agent has programmed; named after the Node, written only by its agent.",
    printcolumn(name = "Interface", type_ = "string", json_path = ".status.interface"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".status.attachMode"),
    printcolumn(name = "VIPs", type_ = "integer", json_path = ".status.capacity.vipsUsed"),
    printcolumn(name = "Reals", type_ = "integer", json_path = ".status.capacity.realsUsed"),
    printcolumn(name = "Ready", type_ = "string", json_path = r#".status.conditions[?(@.type=="Ready")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
pub struct BalancerNodeSpec {}

/// How the XDP program is attached.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// In the driver (XDP_FLAGS_DRV_MODE).
    Native,
    /// In the generic (skb) path.
    #[default]
    Generic,
    /// The kernel's choice: in the driver when it supports XDP, else generic
    /// (`--xdp-mode auto`, Katran's `xdp_attach_flags: 0`).
    Auto,
    /// Offloaded to the NIC.
    Offload,
    /// Not attached: testing mode, packets only through BPF_PROG_TEST_RUN.
    Testing,
}

/// Capacity usage against the datapath's configured limits.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CapacityUsage {
    /// VIPs programmed (from VirtualServices and over REST).
    pub vips_used: u32,
    /// `max_vips`.
    pub vips_max: u32,
    /// Distinct real addresses programmed (reals are shared across VIPs by address).
    pub reals_used: u32,
    /// `max_reals`.
    pub reals_max: u32,
}

/// One VirtualService as this node has programmed it.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProgrammedVirtualService {
    pub namespace: String,
    pub name: String,
    /// The VirtualService's `metadata.generation` that is in the datapath; the operator
    /// counts the node as programmed only when it equals the current generation.
    pub generation: i64,
    /// Reals programmed for it (weight-0 reals included: they are programmed, draining).
    pub reals: u32,
    /// A digest of the reals as programmed (address, weight and flags of each). A weight
    /// change (a drain) moves no generation of the VirtualService, so the operator compares
    /// this with the accepted RealServers to count the node only once it applied the change.
    /// Absent in an older agent's report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reals_digest: Option<String>,
    /// The VIP it is programmed as. A restarted agent reads it to take back (and, when the
    /// VirtualService went away meanwhile, remove) the VIPs it created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vip: Option<ProgrammedVip>,
    /// Reals healthy on this node (new flows may pick them). Absent in an older agent's
    /// report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_reals: Option<u32>,
    /// The addresses of the unhealthy reals, sorted, at most 64 (`MAX_UNHEALTHY_LISTED`):
    /// when the list is cut, `healthyReals` plus its length falls short of `reals`, and the
    /// reals not listed have no known health on this node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), extend("x-kubernetes-list-type" = "set"))]
    pub unhealthy_reals: Vec<String>,
    /// Every real is unhealthy on this node: all stay in the ring (fail open).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
}

/// The most unhealthy real addresses one [`ProgrammedVirtualService`] lists (a bound on the
/// object's size: 1,000 VirtualServices whose reals are all down stay far below etcd's limit).
pub const MAX_UNHEALTHY_LISTED: usize = 64;

/// A VIP's identity in the datapath.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ProgrammedVip {
    pub address: String,
    pub port: u16,
    pub protocol: super::Protocol,
}

/// Everything the agent reports.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BalancerNodeStatus {
    /// Network interface the program is attached to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,

    /// How it is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attach_mode: Option<AttachMode>,

    /// Usage against limits.
    #[serde(default)]
    pub capacity: CapacityUsage,

    /// VirtualServices programmed on this node, sorted by namespace/name so that
    /// unchanged state serialises identically (no-op applies stay no-ops).
    // Counts rather than real lists keep the object small at 1,000 VIPs × 10 reals; only
    // unhealthy reals are listed, and a bounded number of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["namespace", "name"]))]
    pub virtual_services: Vec<ProgrammedVirtualService>,

    /// `Ready`: attached and in sync with the cluster's desired state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
