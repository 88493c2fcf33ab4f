//! `VirtualService`: one VIP — (address, port, protocol) with its flags and hash function —
//! and the balancer nodes that program it.
//!
//! Membership: a VirtualService does **not** list its reals. The single source of truth is
//! `RealServer.spec.virtualServiceName` (same namespace), as an EndpointSlice names its
//! Service. Why: one writer per fact (whoever manages a backend creates or deletes its
//! RealServer without touching a shared list), no two places that can disagree, and
//! VirtualService objects stay small however many reals they have.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::{HashFunction, HealthCheckSpec, Protocol, VipFlag};

/// A virtual IP that every selected balancer node forwards to the VirtualService's
/// accepted RealServers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "lb.weir.dev",
    version = "v1alpha1",
    kind = "VirtualService",
    namespaced,
    status = "VirtualServiceStatus",
    // `vs` is Istio's; `wvs` keeps both usable in one cluster.
    shortname = "wvs",
    category = "weir",
    doc = "A virtual IP (address, port, protocol) balanced by weir over the RealServers that name it.",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.address"),
    printcolumn(name = "Port", type_ = "integer", json_path = ".spec.port"),
    printcolumn(name = "Protocol", type_ = "string", json_path = ".spec.protocol"),
    printcolumn(name = "Reals", type_ = "integer", json_path = ".status.reals"),
    // Reals healthy on every node that reports them (see `status.healthyReals`).
    printcolumn(name = "Healthy", type_ = "integer", json_path = ".status.healthyReals"),
    // The message of `Programmed` reads "n/m nodes": the column needs no extra field.
    printcolumn(name = "Programmed", type_ = "string", json_path = r#".status.conditions[?(@.type=="Programmed")].message"#),
    printcolumn(name = "Accepted", type_ = "string", json_path = r#".status.conditions[?(@.type=="Accepted")].status"#),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    selectable = ".spec.address"
)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.port != 0 || !has(self.healthCheck) || has(self.healthCheck.port)").message("healthCheck.port is required for a port-less VirtualService (port 0)")
)]
pub struct VirtualServiceSpec {
    /// The VIP: an IPv4 or IPv6 address (no zone, not unspecified).
    // maxLength bounds the CEL cost estimate; 45 is the longest textual IPv6 address.
    #[schemars(length(min = 2, max = 45))]
    #[x_kube(
        validation = Rule::new("isIP(self)").message("address must be an IPv4 or IPv6 address"),
        validation = Rule::new("!isIP(self) || !ip(self).isUnspecified()").message("address must not be unspecified (0.0.0.0 or ::)")
    )]
    pub address: String,

    /// Destination port; 0 makes a port-less VIP (every port of the address).
    pub port: u16,

    /// TCP or UDP.
    #[serde(default)]
    pub protocol: Protocol,

    /// VIP flags by name; the datapath implements exactly these five.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5), extend("x-kubernetes-list-type" = "set"))]
    pub flags: Vec<VipFlag>,

    /// Consistent-hashing algorithm (default Maglev).
    #[serde(default)]
    pub hash_function: HashFunction,

    /// Balancer nodes (by Node labels) that program this VIP; absent means every balancer
    /// node. An empty selector also selects every node, as everywhere in Kubernetes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // No CEL here on purpose: LabelSelector's schema (from k8s-openapi) has unbounded lists
    // and strings, so a rule over matchExpressions risks the apiserver's CEL cost budget and
    // the whole CRD being refused. `validation::validate_selector` reports bad operators as
    // `Accepted=False` instead. TODO(#4): bounded selector schema + admission-time rules.
    pub node_selector: Option<LabelSelector>,

    /// How every selected node probes the reals; absent, every real counts as healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckSpec>,
}

/// Observed state, written by the operator only (agents report in their BalancerNode).
#[derive(Serialize, Deserialize, JsonSchema, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct VirtualServiceStatus {
    /// The `metadata.generation` the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// `Accepted` (the shared rules admit it; reasons from `validation::Reason`),
    /// `Programmed` (message "n/m nodes") and `FailOpen` (True: on some node every real is
    /// unhealthy, so all of them stay in the ring; the message names the nodes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,

    /// Nodes whose BalancerNode reports this VirtualService at its current generation.
    #[serde(default)]
    pub programmed_nodes: u32,

    /// Balancer nodes the nodeSelector selects.
    #[serde(default)]
    pub target_nodes: u32,

    /// Accepted RealServers.
    #[serde(default)]
    pub reals: u32,

    /// Accepted RealServers healthy on every node that reports their health; absent until
    /// a node has. A real unhealthy on some node is not counted (its RealServer's `Healthy`
    /// condition names the nodes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_reals: Option<u32>,
}
