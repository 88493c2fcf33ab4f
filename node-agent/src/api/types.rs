//! The wire types of katran-server's API: request bodies (and query
//! parameters) and response `data`, field for field as the document names
//! them. Addresses travel as strings and are parsed by the handlers, so a bad
//! one answers 400 naming its field and counts in `addr_validation_failed`.
//! Unknown fields are ignored; a missing required field is a 400.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

pub use crate::dataplane::KatranConfig as CreateLb;
use crate::schemas;

// ---- VIPs and reals ----

/// A VIP: address, port (0 = every port) and IP protocol (6 TCP, 17 UDP).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct VipKey {
    #[schema(schema_with = schemas::address)]
    #[param(schema_with = schemas::address)]
    pub address: String,
    #[schema(schema_with = schemas::port)]
    #[param(schema_with = schemas::port)]
    pub port: u16,
    #[schema(schema_with = schemas::proto)]
    #[param(schema_with = schemas::proto)]
    pub proto: u8,
}

/// `POST /vips`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct NewVip {
    #[schema(schema_with = schemas::address)]
    pub address: String,
    #[schema(schema_with = schemas::port)]
    pub port: u16,
    #[schema(schema_with = schemas::proto)]
    pub proto: u8,
    #[serde(default)]
    #[schema(schema_with = schemas::vip_flags)]
    pub flags: u32,
}

/// `GET /vips/flags` data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VipFlags {
    pub flags: u32,
}

/// `PUT /vips/flags`: sets (`set: true`) or clears the bits of `flag`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ModifyVipFlags {
    #[schema(schema_with = schemas::address)]
    pub address: String,
    #[schema(schema_with = schemas::port)]
    pub port: u16,
    #[schema(schema_with = schemas::proto)]
    pub proto: u8,
    #[schema(schema_with = schemas::vip_flags)]
    pub flag: u32,
    pub set: bool,
}

/// `PUT /vips/hash-function`: 0 Maglev, 1 Maglev V2.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HashFunctionChange {
    #[schema(schema_with = schemas::address)]
    pub address: String,
    #[schema(schema_with = schemas::port)]
    pub port: u16,
    #[schema(schema_with = schemas::proto)]
    pub proto: u8,
    #[schema(schema_with = schemas::hash_func)]
    pub hash_function: u32,
}

/// A real of a VIP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Real {
    #[schema(schema_with = schemas::address)]
    pub address: String,
    /// Relative weight; 0 drains the real (its connections stay).
    pub weight: u32,
    #[serde(default)]
    #[schema(schema_with = schemas::real_flags)]
    pub flags: u8,
}

/// A real of `GET /vips/reals` (and of `/config/export`): the current API's
/// `healthy` says whether new flows may pick it (unhealthy reals are listed
/// too). Read from a document, a missing `healthy` is false.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RealState {
    #[schema(example = "192.168.1.1")]
    pub address: String,
    pub weight: u32,
    pub flags: u8,
    #[serde(default)]
    pub healthy: bool,
}

impl From<(crate::dataplane::RealSpec, bool)> for RealState {
    fn from((r, healthy): (crate::dataplane::RealSpec, bool)) -> Self {
        Self { address: r.addr.to_string(), weight: r.weight, flags: r.flags, healthy }
    }
}

/// A real named by its address; other fields (weight, flags) are ignored.
#[derive(Debug, Clone, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RealAddress {
    #[schema(schema_with = schemas::address)]
    #[param(schema_with = schemas::address)]
    pub address: String,
}

/// `POST /vips/reals`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct VipReal {
    pub vip: VipKey,
    pub real: Real,
}

/// `DELETE /vips/reals`: the real's weight and flags are ignored.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct VipRealDelete {
    pub vip: VipKey,
    pub real: RealAddress,
}

/// A real of a batch: `weight` is required to add, ignored to delete.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct BatchReal {
    #[schema(schema_with = schemas::address)]
    pub address: String,
    pub weight: Option<u32>,
    #[serde(default)]
    #[schema(schema_with = schemas::real_flags)]
    pub flags: u8,
}

/// `PUT /vips/reals/batch`: action 0 adds (or updates), 1 deletes.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RealsBatch {
    pub vip: VipKey,
    #[schema(schema_with = schemas::action)]
    pub action: u32,
    pub reals: Vec<BatchReal>,
}

/// `GET /reals/index` data: -1 when no VIP uses the address.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RealIndex {
    pub index: i64,
}

/// `PUT /reals/flags`: sets (`set: true`) or clears the bits of `flags`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct ModifyRealFlags {
    #[schema(schema_with = schemas::address)]
    pub address: String,
    #[schema(schema_with = schemas::real_flags)]
    pub flags: u8,
    pub set: bool,
}

// ---- Real health and health checks (the current API) ----

/// `PUT /vips/reals/health`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RealHealthUpdate {
    pub vip: VipKey,
    #[schema(schema_with = schemas::address)]
    pub address: String,
    pub healthy: bool,
}

/// `PUT /vips/reals/health/batch`: reals the VIP lacks are skipped.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RealsHealthBatch {
    pub vip: VipKey,
    pub reals: Vec<RealHealthItem>,
}

/// A real of [`RealsHealthBatch`].
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct RealHealthItem {
    #[schema(schema_with = schemas::address)]
    pub address: String,
    pub healthy: bool,
}

/// A VIP's health check, as `PUT /vips/healthcheck` takes it and `GET`
/// returns it (defaults applied). Numbers ≤ 0 count as omitted; `port`
/// defaults to the VIP's (required on a port-less VIP).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HealthCheckConfig {
    /// `tcp`, `http`, `https`, `udp` (weir's addition) or `dummy` (no
    /// probe: always healthy).
    #[serde(rename = "type", default)]
    #[schema(example = "tcp")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<i64>,
    /// Needed for `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http: Option<HttpCheckConfig>,
    /// Needed for `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub https: Option<HttpCheckConfig>,
    /// Needed for `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub udp: Option<UdpCheckConfig>,
    /// Default 5000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<i64>,
    /// Default 2000; below `interval_ms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<i64>,
    /// Consecutive successes to turn healthy; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthy_threshold: Option<i64>,
    /// Consecutive failures to turn unhealthy; default 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unhealthy_threshold: Option<i64>,
}

/// An HTTP(S) check's request and expected status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HttpCheckConfig {
    #[serde(default)]
    #[schema(example = "/healthz")]
    pub path: String,
    /// Default 200.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expected_status: Option<i64>,
    /// The Host header (and the SNI for https).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// https only; default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_tls_verify: Option<bool>,
}

/// A UDP check's datagram and the reply it expects (weir's addition).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UdpCheckConfig {
    /// The datagram sent, as text.
    #[serde(default)]
    #[schema(example = "ping")]
    pub payload: String,
    /// The reply expected, byte for byte; omitted: any reply passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expect: Option<String>,
}

/// `PUT /vips/healthcheck`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct VipHealthCheck {
    pub vip: VipKey,
    pub healthcheck: HealthCheckConfig,
}

/// `GET /vips/healthcheck/status` data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthStatus {
    pub vip: VipKey,
    pub reals: Vec<RealHealthStatus>,
    /// weir: every real is unhealthy, so all stay in the ring.
    pub fail_open: bool,
}

/// A real of [`HealthStatus`]; times are RFC 3339 UTC in seconds, omitted
/// while unknown (no probe yet).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct RealHealthStatus {
    #[schema(example = "192.168.1.1")]
    pub address: String,
    pub healthy: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2025-01-15T10:30:00Z")]
    pub last_check_time: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "2025-01-15T10:30:00Z")]
    pub last_status_change: Option<String>,
    pub consecutive_failures: u32,
}

/// An item of `GET /vips`: the VIP's key, and weir's `fail_open` when true.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct VipListed {
    #[serde(flatten)]
    pub key: VipKey,
    /// weir: every real of the VIP is unhealthy, so all of them stay in its
    /// ring (sent only when true).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub fail_open: bool,
}

// ---- Stats ----

/// A counter pair summed over CPUs; what v1 and v2 count depends on the
/// endpoint (for VIPs and reals: packets and L3 bytes).
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
pub struct Counter {
    pub v1: u64,
    pub v2: u64,
}

/// `GET /stats/real` parameters.
#[derive(Debug, Clone, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RealStatsQuery {
    /// The real's index (`GET /reals/index`): 1 to `max_reals` (0 is no real).
    #[schema(minimum = 1)]
    #[param(minimum = 1)]
    pub index: u32,
}

/// A BPF map by name: weir's (`weir_vips`, ...) or Katran's (`vip_map`, ...).
#[derive(Debug, Clone, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MapName {
    #[schema(example = "vip_map")]
    pub map_name: String,
}

/// `GET /stats/bpf-map` data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct MapUsage {
    pub max_entries: u32,
    pub current_entries: u32,
}

/// `GET /stats/per-core-packets` data: packets per CPU (all possible CPUs,
/// or the configured `forwarding_cores` in their order).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PerCorePackets {
    pub counts: Vec<u64>,
}

/// `GET /stats/flood-status` data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FloodStatus {
    pub under_flood: bool,
}

// ---- LRU ----

/// `DELETE /lru`: one flow's connection-table entry.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct LruEntry {
    pub dst_vip: VipKey,
    #[schema(schema_with = schemas::address)]
    pub src_ip: String,
    #[schema(schema_with = schemas::port)]
    pub src_port: u16,
}

/// `DELETE /lru` data: the maps the entry was deleted from (weir has one
/// connection table, `weir_conns`; empty when there was no entry).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LruMaps {
    pub maps: Vec<String>,
}

/// `DELETE /lru/vip` data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DeletedCount {
    pub deleted_count: u64,
}

// ---- Utils ----

/// A MAC address, `aa:bb:cc:dd:ee:ff`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Mac {
    #[schema(schema_with = schemas::mac)]
    pub mac: String,
}

/// `GET /utils/real-for-flow` parameters.
#[derive(Debug, Clone, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FlowQuery {
    #[schema(schema_with = schemas::address)]
    #[param(schema_with = schemas::address)]
    pub src: String,
    #[schema(schema_with = schemas::address)]
    #[param(schema_with = schemas::address)]
    pub dst: String,
    #[schema(schema_with = schemas::port)]
    #[param(schema_with = schemas::port)]
    pub src_port: u16,
    #[schema(schema_with = schemas::port)]
    #[param(schema_with = schemas::port)]
    pub dst_port: u16,
    #[schema(schema_with = schemas::proto)]
    #[param(schema_with = schemas::proto)]
    pub proto: u8,
}

/// `GET /utils/real-for-flow` data: katran's `address`, plus weir's
/// `existing` (clients that do not know it ignore it).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FlowReal {
    /// The real a new connection of the flow goes to (the ring's choice, as
    /// for a TCP SYN).
    #[schema(example = "10.1.0.2")]
    pub address: String,
    /// The real the flow's existing connection goes to, read from the
    /// connection table; null when the table has no entry the datapath would
    /// honour (its next packet then goes to `address`). Differs from
    /// `address` when the ring changed under an open connection (a drained
    /// or added real).
    #[schema(example = "10.1.0.1", nullable)]
    pub existing: Option<String>,
}

/// `POST /utils/simulate-packet`: an Ethernet frame, standard base64.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct SimulatePacket {
    #[schema(schema_with = schemas::base64)]
    pub packet: String,
}

/// `POST /utils/simulate-packet` data: the frame the program sent
/// (standard base64) when the verdict is XDP_TX, otherwise `null`; and the
/// verdict (a weir addition: `XDP_TX`, `XDP_PASS`, `XDP_DROP`, ...).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SimulatedPacket {
    pub packet: Option<String>,
    #[schema(example = "XDP_TX")]
    pub verdict: String,
}

/// A file descriptor of this process.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Fd {
    pub fd: i32,
}

// ---- Lifecycle, health, features ----

/// `GET /lb/status` data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LbStatus {
    /// A balancer exists (`/lb/create` succeeded).
    pub initialized: bool,
    /// It is attached to its interface (or exists in testing mode).
    pub ready: bool,
    /// Once initialized: the programs that run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub programs: Option<LbPrograms>,
    /// What the create body asked for that weir does not do (a program path
    /// it did not load, a feature it lacks...), one sentence each.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notices: Vec<String>,
    /// Once initialized (weir's addition): the kernel memory its BPF maps
    /// hold, in bytes (the kernel's `memlock` accounting, summed over the
    /// maps). It is not part of the agent's resident memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub map_memory_bytes: Option<u64>,
}

/// The programs a balancer runs: weir's own, whatever paths the create body named.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct LbPrograms {
    #[schema(example = "weir_balancer, built into weir-agent 0.1.0")]
    pub balancer: String,
    /// The healthcheck program, when the balancer runs one (`enable_hc`).
    pub healthcheck: Option<String>,
}

/// `POST /lb/reload`: weir reloads its own program with the same
/// configuration; `path` and `config` must be empty.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
pub struct Reload {
    pub path: Option<String>,
    /// A configuration object (any, even `{}`, answers 501); another JSON
    /// type is 400.
    #[schema(value_type = Option<Object>)]
    pub config: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `GET /features/check` parameters: a Katran feature bit.
#[derive(Debug, Clone, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FeatureQuery {
    #[schema(schema_with = schemas::feature)]
    #[param(schema_with = schemas::feature)]
    pub feature: u32,
}

/// `GET /features/check` data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct FeatureAvailable {
    pub available: bool,
}

/// `POST /features/install` and `/features/remove`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct FeatureChange {
    #[schema(schema_with = schemas::feature)]
    pub feature: u32,
    pub prog_path: Option<String>,
}

impl From<crate::dataplane::VipId> for VipKey {
    fn from(id: crate::dataplane::VipId) -> Self {
        Self { address: id.addr.to_string(), port: id.port, proto: id.proto }
    }
}
