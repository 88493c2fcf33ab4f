//! The whole configuration as one document, in the current katran-server
//! API's shape: `GET /config/export` (bare YAML, a file to keep) and
//! `/config/export/json` (the same, enveloped), and [`import_document`], which
//! rebuilds a balancer from such a document (`weir-agent --config FILE` takes
//! one, YAML or JSON, as katran-server's `-config` does).
//!
//! The document is built from live state: the balancer's configuration, every
//! VIP with its flags and hash function, every real with its weight, flags and
//! health, the default MAC. Reals are sorted by address, and VIPs whose real
//! lists are identical share a target group (`group-0`, `group-1`, ... in VIP
//! order), so identical sets never split. Each VIP carries its `healthcheck`;
//! reals their `healthy` (in YAML only when true; on import, `healthy: true`
//! starts a real healthy whatever the default). weir's additions: `lb.mtu`, and each
//! VIP's `hash_function` (Katran's document has one for the whole balancer).
//! `server` is the agent's effective server settings (`/limits/effective`'s
//! document; informational, not imported).

use std::collections::BTreeMap;
use std::net::IpAddr;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use weir_abi::Protocol;

use super::create::create;
use super::error::ApiError;
use super::reply::{Data, Success};
use super::types::{CreateLb, HealthCheckConfig, RealState};
use super::utils::{format_mac, parse_mac};
use super::vip_health::{from_wire, to_wire};
use super::ApiState;
use crate::dataplane::{AttachMode, Balancer, CheckKind, HashFunction, RealAction, RealSpec, VipId, VipSpec};

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new().routes(routes!(config_export)).routes(routes!(config_export_json))
}

/// The configuration document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ConfigDocument {
    /// The agent's effective server settings (informational: not imported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub server: Option<serde_json::Value>,
    pub lb: LbSection,
    #[serde(default)]
    pub target_groups: BTreeMap<String, Vec<RealState>>,
    #[serde(default)]
    pub vips: Vec<VipEntry>,
}

/// The balancer: what `/lb/create` was given, grouped as katran-server exports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LbSection {
    pub interfaces: Interfaces,
    pub programs: Programs,
    pub root_map: RootMap,
    pub mac: Macs,
    pub capacity: Capacity,
    pub cpu: Cpu,
    pub xdp: Xdp,
    pub encapsulation: Encapsulation,
    pub features: Features,
    /// `maglev` or `maglev_v2`: the hash function of new VIPs.
    pub hash_function: String,
    /// weir: the egress link's L3 MTU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Interfaces {
    pub main: String,
    pub healthcheck: String,
    pub v4_tunnel: String,
    pub v6_tunnel: String,
}

/// The program paths the create body named (weir runs its built-in ones).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Programs {
    pub balancer: String,
    pub healthcheck: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RootMap {
    pub enabled: bool,
    pub path: String,
    pub position: u32,
}

/// MACs as `aa:bb:cc:dd:ee:ff`, `""` when unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Macs {
    pub default: String,
    pub local: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Capacity {
    pub max_vips: u32,
    pub max_reals: u32,
    pub ch_ring_size: u32,
    pub lru_size: u32,
    pub global_lru_size: u32,
    pub max_lpm_src: u32,
    pub max_decap_dst: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Cpu {
    pub forwarding_cores: Vec<u32>,
    pub numa_nodes: Vec<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Xdp {
    pub attach_flags: u32,
    pub priority: u32,
}

/// Katran's GUE sources, `""` when unset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Encapsulation {
    pub src_v4: String,
    pub src_v6: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Features {
    pub enable_healthcheck: bool,
    pub tunnel_based_hc_encap: bool,
    pub flow_debug: bool,
    pub enable_cid_v3: bool,
    pub memlock_unlimited: bool,
    pub cleanup_on_shutdown: bool,
    pub testing: bool,
    /// Set (to [`BUILTIN_PROBER`]) when weir's prober checks reals: new
    /// reals start unhealthy, and checks other than `dummy` are accepted.
    /// Importing any non-empty value enables the prober.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthchecker_endpoint: Option<String>,
}

/// What `healthchecker_endpoint` says for weir's prober (katran-server's
/// names an external service; weir's runs in the agent).
pub const BUILTIN_PROBER: &str = "builtin";

/// A VIP and the name of its target group.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VipEntry {
    pub address: String,
    pub port: u16,
    /// `tcp` or `udp`.
    pub proto: String,
    pub target_group: String,
    pub flags: u32,
    /// weir: `maglev` or `maglev_v2`; missing means `lb.hash_function`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_function: Option<String>,
    /// The VIP's health check (`/vips/healthcheck`'s object), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<HealthCheckConfig>,
}

/// The whole configuration, as a YAML file (`katran-config.yaml`).
#[utoipa::path(get, path = "/api/v1/config/export", tag = "config",
    responses(
        (status = 200, description = "The configuration document (bare YAML, no envelope)", content_type = "application/x-yaml", body = ConfigDocument),
        (status = 503, description = "LB_NOT_INITIALIZED", body = super::reply::Failure),
    ))]
async fn config_export(State(state): State<ApiState>) -> Result<Response, ApiError> {
    let doc = state.blocking(|state| state.blocking_read(|lb| Ok(export(state, lb)))).await?;
    let mut doc = serde_yaml::to_value(&doc).map_err(|e| ApiError::internal(format!("config as YAML: {e}")))?;
    // The YAML form names `healthy` only when true (the reference's loader
    // reads a missing one as false).
    if let Some(groups) = doc.get_mut("target_groups").and_then(|g| g.as_mapping_mut()) {
        for real in groups.values_mut().filter_map(|g| g.as_sequence_mut()).flatten() {
            if let Some(real) = real.as_mapping_mut().filter(|r| r.get("healthy") == Some(&false.into())) {
                real.remove("healthy");
            }
        }
    }
    let yaml = serde_yaml::to_string(&doc).map_err(|e| ApiError::internal(format!("config as YAML: {e}")))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-yaml"),
            (header::CONTENT_DISPOSITION, "attachment; filename=\"katran-config.yaml\""),
        ],
        yaml,
    )
        .into_response())
}

/// The whole configuration, as JSON in the envelope.
#[utoipa::path(get, path = "/api/v1/config/export/json", tag = "config",
    responses(
        (status = 200, description = "The configuration document", body = Success<ConfigDocument>),
        (status = 503, description = "LB_NOT_INITIALIZED", body = super::reply::Failure),
    ))]
async fn config_export_json(State(state): State<ApiState>) -> Result<Data<ConfigDocument>, ApiError> {
    Ok(Data(state.blocking(|state| state.blocking_read(|lb| Ok(export(state, lb)))).await?))
}

/// The document of `lb`'s live state.
fn export(state: &ApiState, lb: &Balancer) -> ConfigDocument {
    let c = lb.config();
    let k = &c.katran;
    let attach_flags = match c.attach_mode {
        AttachMode::Auto => 0,
        AttachMode::Generic => 1 << 1,
        AttachMode::Driver => 1 << 2,
    };
    let lb_section = LbSection {
        interfaces: Interfaces {
            main: c.main_interface.clone(),
            healthcheck: k.hc_interface.clone(),
            v4_tunnel: k.v4_tun_interface.clone(),
            v6_tunnel: k.v6_tun_interface.clone(),
        },
        programs: Programs { balancer: k.balancer_prog_path.clone(), healthcheck: k.healthchecking_prog_path.clone() },
        root_map: RootMap { enabled: k.use_root_map, path: k.root_map_path.clone(), position: k.root_map_pos },
        mac: Macs { default: format_mac(lb.default_mac()), local: k.local_mac.map(format_mac).unwrap_or_default() },
        capacity: Capacity {
            max_vips: c.max_vips,
            max_reals: c.max_reals,
            ch_ring_size: c.ch_ring_size,
            lru_size: c.lru_size,
            global_lru_size: k.global_lru_size,
            max_lpm_src: k.max_lpm_src_size,
            max_decap_dst: k.max_decap_dst,
        },
        cpu: Cpu { forwarding_cores: c.forwarding_cores.clone(), numa_nodes: k.numa_nodes.clone() },
        xdp: Xdp { attach_flags, priority: k.priority },
        encapsulation: Encapsulation {
            src_v4: k.katran_src_v4.map(|a| a.to_string()).unwrap_or_default(),
            src_v6: k.katran_src_v6.map(|a| a.to_string()).unwrap_or_default(),
        },
        features: Features {
            enable_healthcheck: k.enable_hc,
            tunnel_based_hc_encap: k.tunnel_based_hc_encap,
            flow_debug: false,
            enable_cid_v3: false,
            memlock_unlimited: k.memlock_unlimited,
            cleanup_on_shutdown: c.cleanup_on_shutdown,
            testing: c.testing,
            healthchecker_endpoint: lb.prober_enabled().then(|| BUILTIN_PROBER.to_owned()),
        },
        hash_function: c.hash_function.name().to_owned(),
        mtu: Some(c.mtu),
    };

    let mut groups: Vec<Vec<RealState>> = Vec::new();
    let mut vips = Vec::new();
    for vip in lb.vips() {
        let mut reals: Vec<RealState> =
            lb.reals_with_health(&vip.id).unwrap_or_default().into_iter().map(RealState::from).collect();
        reals.sort_by_key(|r| r.address.parse::<IpAddr>().ok());
        let group = groups.iter().position(|g| *g == reals).unwrap_or_else(|| {
            groups.push(reals);
            groups.len() - 1
        });
        vips.push(VipEntry {
            address: vip.id.addr.to_string(),
            port: vip.id.port,
            // The Balancer has no other VIP protocols; a number, as the reference prints.
            proto: Protocol::label_or_number(vip.id.proto),
            target_group: format!("group-{group}"),
            flags: vip.flags,
            hash_function: Some(vip.hash_function.name().to_owned()),
            healthcheck: lb.health_check(&vip.id).ok().flatten().as_ref().map(to_wire),
        });
    }
    ConfigDocument {
        server: serde_json::to_value(state.system.limits()).ok(),
        lb: lb_section,
        target_groups: groups.into_iter().enumerate().map(|(i, g)| (format!("group-{i}"), g)).collect(),
        vips,
    }
}

/// Whether `bytes` hold a configuration document (an object with `lb`), as
/// opposed to a `/lb/create` body. YAML or JSON (JSON is YAML).
pub fn is_document(bytes: &[u8]) -> bool {
    serde_yaml::from_slice::<serde_yaml::Value>(bytes).is_ok_and(|v| v.get("lb").is_some())
}

/// Rebuilds the balancer a configuration document describes: creates it
/// from `lb` (exactly as `/lb/create` would), then adds every VIP with its
/// flags and hash function and its target group's reals. Every address,
/// protocol, group and hash function is checked before anything is created;
/// when the Balancer refuses a VIP or a real, the balancer is dropped again
/// (with `cleanup_on_shutdown: false` its pinned datapath stays, as after
/// `/lb/close`). Blocking (it loads the program).
pub fn import_document(state: &ApiState, bytes: &[u8]) -> Result<(), ApiError> {
    let doc: ConfigDocument =
        serde_yaml::from_slice(bytes).map_err(|e| ApiError::invalid(format!("configuration document: {e}")))?;
    let prober = doc.lb.features.healthchecker_endpoint.as_deref().is_some_and(|e| !e.is_empty());
    if prober && state.probing.is_none() {
        return Err(ApiError::invalid(
            "lb.features.healthchecker_endpoint: weir's prober is off: start weir-agent with --prober",
        ));
    }
    let mut plan = Vec::with_capacity(doc.vips.len());
    for (i, vip) in doc.vips.iter().enumerate() {
        let field = |name: &str| format!("vips[{i}].{name}");
        let proto = match Protocol::from_name(&vip.proto) {
            Some(proto) => proto.number(),
            None => {
                let other = vip.proto.to_ascii_lowercase();
                other
                    .parse()
                    .map_err(|_| ApiError::invalid(format!("{}: {other:?} is not tcp or udp", field("proto"))))?
            }
        };
        let id = state.vip_of(&format!("vips[{i}]."), &vip.address, vip.port, proto)?;
        let hash = match vip.hash_function.as_deref() {
            None => None,
            Some(name) => Some(hash_by_name(&field("hash_function"), name)?),
        };
        let group = doc.target_groups.get(&vip.target_group).ok_or_else(|| {
            ApiError::invalid(format!("{}: no target group {:?}", field("target_group"), vip.target_group))
        })?;
        let mut reals = Vec::with_capacity(group.len());
        let mut healthy = Vec::new();
        for (j, real) in group.iter().enumerate() {
            let addr = state.ip(&format!("target_groups.{}[{j}].address", vip.target_group), &real.address)?;
            reals.push(RealSpec { addr, weight: real.weight, flags: real.flags });
            // `healthy: true` starts healthy whatever the default.
            if real.healthy {
                healthy.push((addr, true));
            }
        }
        let check = match &vip.healthcheck {
            None => None,
            Some(wire) => {
                let check = from_wire(wire).map_err(|e| {
                    ApiError::invalid(format!("{}: {}", field("healthcheck"), ApiError::from(e).message))
                })?;
                if check.kind != CheckKind::Dummy && !prober {
                    return Err(ApiError::invalid(format!(
                        "{}: a {} check needs lb.features.healthchecker_endpoint (weir's prober)",
                        field("healthcheck"),
                        check.kind.name()
                    )));
                }
                Some(check)
            }
        };
        plan.push(Planned { spec: VipSpec { id, flags: vip.flags }, hash, reals, healthy, check });
    }
    create(state, &create_body(&doc.lb)?)?;
    if prober {
        state.blocking_write(|lb| lb.set_prober_enabled(true))?;
    }
    for Planned { spec, hash, reals, healthy, check } in plan {
        let id: VipId = spec.id;
        let applied = state.blocking_write_vip(&id, |lb| {
            lb.add_vip(spec)?;
            if let Some(hash) = hash.filter(|&h| h != lb.config().hash_function) {
                lb.change_hash_function(&id, hash)?;
            }
            if let Some(check) = check {
                lb.set_health_check(&id, check)?;
            }
            lb.modify_reals(&id, RealAction::Add, &reals)?;
            lb.set_reals_health(&id, &healthy)
        });
        if let Err(e) = applied {
            // What only the Balancer can refuse (a VIP flag it lacks, a full
            // table, an IPv4 real behind an IPv6 VIP): the half-built balancer
            // goes, so a bad document leaves no balancer behind.
            state.write_lock().take();
            return Err(e);
        }
    }
    Ok(())
}

/// A VIP of a document, checked, to be added.
struct Planned {
    spec: VipSpec,
    hash: Option<HashFunction>,
    reals: Vec<RealSpec>,
    /// The reals the document says are healthy.
    healthy: Vec<(IpAddr, bool)>,
    check: Option<crate::dataplane::HealthCheck>,
}

fn hash_by_name(field: &str, name: &str) -> Result<HashFunction, ApiError> {
    match name.to_ascii_lowercase().as_str() {
        "maglev" => Ok(HashFunction::Maglev),
        "maglev_v2" | "" => Ok(HashFunction::MaglevV2),
        _ => Err(ApiError::invalid(format!("{field}: {name:?} is not \"maglev\" or \"maglev_v2\""))),
    }
}

/// The `/lb/create` body an `lb` section stands for.
fn create_body(lb: &LbSection) -> Result<CreateLb, ApiError> {
    let text = |s: &str| Some(s.to_owned()).filter(|s| !s.is_empty());
    if !lb.mac.default.is_empty() {
        parse_mac("lb.mac.default", &lb.mac.default)?;
    }
    Ok(CreateLb {
        main_interface: text(&lb.interfaces.main),
        balancer_prog_path: text(&lb.programs.balancer),
        healthchecking_prog_path: text(&lb.programs.healthcheck),
        v4_tun_interface: text(&lb.interfaces.v4_tunnel),
        v6_tun_interface: text(&lb.interfaces.v6_tunnel),
        hc_interface: text(&lb.interfaces.healthcheck),
        default_mac: text(&lb.mac.default),
        local_mac: text(&lb.mac.local),
        root_map_path: text(&lb.root_map.path),
        root_map_pos: Some(lb.root_map.position),
        use_root_map: Some(lb.root_map.enabled),
        max_vips: Some(lb.capacity.max_vips),
        max_reals: Some(lb.capacity.max_reals),
        ch_ring_size: Some(lb.capacity.ch_ring_size),
        lru_size: Some(lb.capacity.lru_size),
        max_lpm_src_size: Some(lb.capacity.max_lpm_src),
        max_decap_dst: Some(lb.capacity.max_decap_dst),
        global_lru_size: Some(lb.capacity.global_lru_size),
        enable_hc: Some(lb.features.enable_healthcheck),
        tunnel_based_hc_encap: Some(lb.features.tunnel_based_hc_encap),
        testing: Some(lb.features.testing),
        memlock_unlimited: Some(lb.features.memlock_unlimited),
        flow_debug: Some(lb.features.flow_debug),
        enable_cid_v3: Some(lb.features.enable_cid_v3),
        cleanup_on_shutdown: Some(lb.features.cleanup_on_shutdown),
        forwarding_cores: Some(lb.cpu.forwarding_cores.clone()),
        numa_nodes: Some(lb.cpu.numa_nodes.clone()),
        xdp_attach_flags: Some(lb.xdp.attach_flags),
        priority: Some(lb.xdp.priority),
        main_interface_index: None,
        hc_interface_index: None,
        katran_src_v4: text(&lb.encapsulation.src_v4),
        katran_src_v6: text(&lb.encapsulation.src_v6),
        hash_func: None,
        hash_function: Some(lb.hash_function.clone()),
        mtu: lb.mtu,
    })
}
