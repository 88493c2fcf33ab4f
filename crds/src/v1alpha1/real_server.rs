//! `RealServer`: one backend address of one VirtualService.
//!
//! It names its VirtualService (`spec.virtualServiceName`, same namespace) — the only way
//! membership is decided (see `virtual_service.rs`). An address that serves several
//! VirtualServices has one RealServer per (VirtualService, address) pair; two RealServers
//! for the same pair are a conflict the shared rules settle (the oldest wins).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::RealFlag;

/// Largest weight accepted. Maglev rings have 65537 slots, so larger relative weights
/// could not be represented anyway; bounding it keeps weights meaningful and the sum of a
/// VIP's weights far from overflow.
pub const MAX_WEIGHT: u32 = 65535;

fn default_weight() -> u32 {
    1
}

/// A backend of a VirtualService: packets for the VIP are encapsulated to `address`.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lb.weir.dev",
    version = "v1alpha1",
    kind = "RealServer",
    namespaced,
    status = "RealServerStatus",
    shortname = "wrs",
    category = "weir",
    doc = "A backend address of the VirtualService named in spec.virtualServiceName (same namespace).",
    printcolumn(name = "VirtualService", type_ = "string", json_path = ".spec.virtualServiceName"),
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
    printcolumn(name = "Weight", type_ = "integer", json_path = ".spec.weight"),
    printcolumn(name = "Accepted", type_ = "string", json_path = r#".status.conditions[?(@.type=="Accepted")].status"#),
    printcolumn(name = "Reason", type_ = "string", json_path = r#".status.conditions[?(@.type=="Accepted")].reason"#, priority = "1"),
    printcolumn(name = "Healthy", type_ = "string", json_path = r#".status.conditions[?(@.type=="Healthy")].message"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    // Lets the operator and `kubectl get wrs --field-selector` list one VirtualService's reals.
    selectable = ".spec.virtualServiceName"
)]
#[serde(rename_all = "camelCase")]
pub struct RealServerSpec {
    /// Name of the VirtualService (same namespace) this real serves.
    #[schemars(length(min = 1, max = 253))]
    pub virtual_service_name: String,

    /// The real's IPv4 or IPv6 address. An IPv4 real cannot serve an IPv6 VIP (no
    /// IPv6-in-IPv4 encapsulation); that needs both objects and is decided by the rules.
    #[schemars(length(min = 2, max = 45))]
    #[x_kube(
        validation = Rule::new("isIP(self)").message("address must be an IPv4 or IPv6 address"),
        validation = Rule::new("!isIP(self) || !ip(self).isUnspecified()").message("address must not be unspecified (0.0.0.0 or ::)")
    )]
    pub address: String,

    /// Relative weight, 0..=65535 (default 1). 0 drains: existing flows stay, new ones avoid it.
    #[serde(default = "default_weight")]
    #[schemars(range(max = 65535))]
    pub weight: u32,

    /// Real flags by name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1), extend("x-kubernetes-list-type" = "set"))]
    pub flags: Vec<RealFlag>,
}

/// Observed state, written by the operator.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RealServerStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Accepted`, with a reason from `validation::Reason` when False; `Healthy` ("healthy
    /// on 3/3 nodes", "unhealthy on 1/3 nodes: node-a"; Unknown until a node reported).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
