//! Katran's `KatranConfig` (the body of `/lb/create`, and of `--config FILE`)
//! onto weir's [`BalancerConfig`]: [`BalancerConfig::from_katran`], the one
//! path from a Katran configuration to a Balancer (REST and cluster mode).
//!
//! A missing field (or `null`) means Katran's default; an explicit value is
//! taken as given (`root_map_pos: 0` is 0). weir never silently ignores a
//! field: it uses it, refuses it, or accepts it and says so.
//!
//! | field | weir |
//! |---|---|
//! | `main_interface` | the interface to attach to; required unless `testing` |
//! | `main_interface_index` | 0/missing: found by name. Otherwise it must be the index of `main_interface` (400 if not), or names the interface when `main_interface` is missing. Unused in testing mode |
//! | `default_mac` | the Ethernet destination of encapsulated packets; required unless `testing` (then `02:00:00:00:00:01`); a malformed MAC is 400 |
//! | `max_vips`, `max_reals`, `ch_ring_size`, `lru_size` | table sizes (defaults 512, 4096, 65537, 8000000); 0 is 400. `lru_size` is the one connection table's size (per-CPU LRU lists), Katran's total over its per-CPU tables |
//! | `hash_func`, `hash_function` | the hash of new VIPs: `hash_func` 0 Maglev, 1 Maglev V2 (the original API); `hash_function` `"maglev"` / `"maglev_v2"`, any case, blank is `maglev_v2` (the current API). Both given must agree; neither is Maglev (the original API's default). Other values 400 |
//! | `testing` | load without attaching (BPF_PROG_TEST_RUN only); nothing is pinned, so a test balancer never touches the host's pinned datapath |
//! | `cleanup_on_shutdown` | default true: `/lb/close` (and shutdown) detach and unpin; false leaves the datapath forwarding for the next agent to adopt |
//! | `forwarding_cores` | the CPUs `/stats/per-core-packets` reports, in order |
//! | `xdp_attach_flags` | 0: the kernel picks (driver when supported, else generic), as in Katran; `XDP_FLAGS_DRV_MODE` (4): driver mode; `XDP_FLAGS_SKB_MODE` (2): generic mode; `XDP_FLAGS_UPDATE_IF_NOEXIST` (1) accepted (weir's XDP link never replaces another program); `XDP_FLAGS_HW_MODE` (8): 501; other bits, or SKB and DRV together: 400 |
//! | `mtu` (weir's) | the egress link's L3 MTU (default 1500) |
//! | `enable_hc` | true: the Balancer runs weir's built-in healthcheck program (DirectHC) on the TC egress of `hc_interface`, and `/healthcheck/*`, `/stats/hc-prog`, `/utils/hc-prog-fd` serve it; false: they answer 501. Omitted: true when `healthchecking_prog_path` is set (as the current katran-server decides), else false |
//! | `hc_interface`, `hc_interface_index` | where the healthcheck program is attached (TC egress): missing, the main interface. `hc_interface_index` 0/missing: found by name; otherwise it must be `hc_interface`'s index (400 if not) or names it. Encapsulated probes leave by the main interface either way |
//! | `katran_src_v4`, `katran_src_v6` | checked (400 if not an address of the right family); the outer sources of health probes (the balancer derives its outer source from the client, as Katran's default IP-in-IP build) |
//! | `flow_debug: true` | 501: no flow-debug maps (feature FlowDebug) |
//! | `enable_cid_v3: true` | 501: no QUIC |
//!
//! Accepted without being acted on — katran-server deployments always send
//! some of them — and kept in [`KatranSettings`]: each that asks for what weir
//! does not do is logged as a warning and listed in `/lb/status`'s `notices`,
//! and all are given back by `/config/export`:
//!
//! | field | why weir does not act on it |
//! |---|---|
//! | `balancer_prog_path` | weir's balancer program is built into weir-agent (`/lb/status` names the one that runs) |
//! | `healthchecking_prog_path` | weir's healthcheck program is built into weir-agent (`enable_hc` runs it) |
//! | `v4_tun_interface`, `v6_tun_interface`, `tunnel_based_hc_encap` | weir's healthcheck program encapsulates probes itself, as the balancer does (DirectHC): it needs no tunnel interfaces |
//! | `priority` | the healthcheck program is attached through a TCX link, which has no priority |
//! | `use_root_map`, `root_map_path`, `root_map_pos` | weir attaches to the interface itself, not into a root array |
//! | `numa_nodes` | the connection table is one map with per-CPU LRU lists, not one per NUMA node |
//! | `forwarding_cores` naming CPUs the host lacks | used for `/stats/per-core-packets`, which reports 0 for them |
//! | `max_lpm_src_size`, `max_decap_dst`, `global_lru_size` | sizes of tables of features weir lacks (source routing, inline decap, global LRU); using those features is refused where it is asked for |
//! | `local_mac` | checked (400 if malformed): weir's sent frames take the received frame's destination MAC, the interface's own, as source |
//! | `memlock_unlimited` | accepted: since Linux 5.11 BPF memory is charged to the cgroup, RLIMIT_MEMLOCK does not apply |
//!
//! Checks happen in that order, so the first offending field is named; then
//! an existing balancer answers 409 ALREADY_EXISTS; then the Balancer
//! validates the sizes and loads (and unless testing, attaches) the program.

use std::ffi::CStr;
use std::net::IpAddr;

use serde::Deserialize;
use utoipa::ToSchema;

use super::config::{AttachMode, BalancerConfig, KatranSettings, Pins};
use super::maglev::HashFunction;
use crate::error::Code;
use crate::schemas;

/// What `/lb/status` and the notices call the program that runs.
pub const BALANCER_PROGRAM: &str = concat!("weir_balancer, built into weir-agent ", env!("CARGO_PKG_VERSION"));

const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

/// The default MAC of a testing balancer without `default_mac`.
const TESTING_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// A Katran configuration weir refuses; the message names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KatranError {
    /// A malformed or contradictory field (INVALID_REQUEST).
    #[error("{0}")]
    Invalid(String),
    /// An unparsable address (INVALID_REQUEST, counted in katran's
    /// `addr_validation_failed`).
    #[error("{0}")]
    BadAddress(String),
    /// A field asking for a feature weir lacks (FEATURE_DISABLED).
    #[error("{0}")]
    Disabled(String),
    /// The host could not be asked what the configuration needs (INTERNAL_ERROR).
    #[error("{0}")]
    Internal(String),
}

impl KatranError {
    fn invalid(message: impl Into<String>) -> Self {
        KatranError::Invalid(message.into())
    }

    pub fn code(&self) -> Code {
        match self {
            KatranError::Invalid(_) | KatranError::BadAddress(_) => Code::InvalidRequest,
            KatranError::Disabled(_) => Code::FeatureDisabled,
            KatranError::Internal(_) => Code::InternalError,
        }
    }
}

/// `POST /lb/create`: katran's `KatranConfig`. Every field is optional; a
/// missing field (or `null`) means Katran's default, an explicit value means
/// that value (so `root_map_pos: 0` is 0, unlike the reference server). How
/// each maps onto weir — used, checked and accepted, or refused — is the
/// table in the `katran` module's documentation.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[schema(as = CreateLb)]
pub struct KatranConfig {
    #[schema(example = "eth0")]
    pub main_interface: Option<String>,
    pub balancer_prog_path: Option<String>,
    pub healthchecking_prog_path: Option<String>,
    pub v4_tun_interface: Option<String>,
    pub v6_tun_interface: Option<String>,
    pub hc_interface: Option<String>,
    #[schema(schema_with = schemas::optional_mac)]
    pub default_mac: Option<String>,
    #[schema(schema_with = schemas::optional_mac)]
    pub local_mac: Option<String>,
    pub root_map_path: Option<String>,
    pub root_map_pos: Option<u32>,
    pub use_root_map: Option<bool>,
    #[schema(example = 512, minimum = 1, maximum = 65536)]
    pub max_vips: Option<u32>,
    #[schema(example = 4096, minimum = 1, maximum = 1048576)]
    pub max_reals: Option<u32>,
    /// max_vips × ch_ring_size is at most 2^28 ring slots.
    #[schema(example = 65537, minimum = 1, maximum = 16777216)]
    pub ch_ring_size: Option<u32>,
    #[schema(example = 8000000, minimum = 1, maximum = 134217728)]
    pub lru_size: Option<u32>,
    pub max_lpm_src_size: Option<u32>,
    pub max_decap_dst: Option<u32>,
    pub global_lru_size: Option<u32>,
    pub enable_hc: Option<bool>,
    pub tunnel_based_hc_encap: Option<bool>,
    pub testing: Option<bool>,
    pub memlock_unlimited: Option<bool>,
    pub flow_debug: Option<bool>,
    pub enable_cid_v3: Option<bool>,
    pub cleanup_on_shutdown: Option<bool>,
    pub forwarding_cores: Option<Vec<u32>>,
    pub numa_nodes: Option<Vec<u32>>,
    pub xdp_attach_flags: Option<u32>,
    pub priority: Option<u32>,
    pub main_interface_index: Option<u32>,
    pub hc_interface_index: Option<u32>,
    pub katran_src_v4: Option<String>,
    pub katran_src_v6: Option<String>,
    #[schema(schema_with = schemas::optional_hash_func)]
    pub hash_func: Option<u32>,
    #[schema(schema_with = schemas::hash_function_name)]
    pub hash_function: Option<String>,
    /// weir: the L3 MTU of the egress link (default 1500); packets larger
    /// once encapsulated are dropped and counted.
    #[schema(minimum = 1280, maximum = 9216)]
    pub mtu: Option<u32>,
}

fn disabled(field: &str, why: &str) -> KatranError {
    KatranError::Disabled(format!("{field}: {why}"))
}

/// A MAC of field `field` (weir's one MAC parser).
fn parse_mac(field: &str, text: &str) -> Result<[u8; 6], KatranError> {
    text.parse::<weir_crds::mac::Mac>().map(|mac| mac.0).map_err(|e| KatranError::invalid(format!("{field}: {e}")))
}

fn given(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|t| !t.is_empty())
}

impl BalancerConfig {
    /// The Balancer configuration a Katran configuration asks for (every check
    /// of the module table but the Balancer's own), pinned at `pins` (the
    /// agent's --pin-root and --state-dir; `None`: the defaults). The one path
    /// from Katran's configuration to a Balancer: `/lb/create`, `--config` and
    /// cluster mode all take it.
    pub fn from_katran(r: &KatranConfig, pins: Option<&Pins>) -> Result<Self, KatranError> {
        let testing = r.testing.unwrap_or(false);
        let mut c = BalancerConfig { testing, ..BalancerConfig::default() };
        if testing {
            c.pin_root = None;
        } else if let Some(pins) = pins {
            c.pin_root = Some(pins.pin_root.clone());
            c.state_dir = pins.state_dir.clone();
        }

        c.main_interface = r.main_interface.clone().unwrap_or_default();
        if let Some(index) = r.main_interface_index.filter(|&i| i != 0 && !testing) {
            let name = interface_name(index)
                .ok_or_else(|| KatranError::invalid(format!("main_interface_index: no interface has index {index}")))?;
            if c.main_interface.is_empty() {
                c.main_interface = name;
            } else if c.main_interface != name {
                return Err(KatranError::invalid(format!(
                    "main_interface_index: {index} is {name}, not main_interface {}",
                    c.main_interface
                )));
            }
        }
        // Without one the MAC stays unset, which the Balancer refuses unless
        // testing (cluster mode may set the gateway's in between).
        c.default_mac = match given(&r.default_mac) {
            Some(mac) => parse_mac("default_mac", mac)?,
            None if testing => TESTING_MAC,
            None => BalancerConfig::default().default_mac,
        };
        c.max_vips = r.max_vips.unwrap_or(c.max_vips);
        c.max_reals = r.max_reals.unwrap_or(c.max_reals);
        c.ch_ring_size = r.ch_ring_size.unwrap_or(c.ch_ring_size);
        c.lru_size = r.lru_size.unwrap_or(c.lru_size);
        c.hash_function = hash_function(r)?;
        c.cleanup_on_shutdown = r.cleanup_on_shutdown.unwrap_or(c.cleanup_on_shutdown);
        c.forwarding_cores = r.forwarding_cores.clone().unwrap_or_default();
        c.attach_mode = attach_mode(r.xdp_attach_flags.unwrap_or(0))?;
        c.mtu = r.mtu.unwrap_or(c.mtu);

        if r.flow_debug == Some(true) {
            return Err(disabled("flow_debug", "weir has no flow-debug maps (feature FlowDebug)"));
        }
        if r.enable_cid_v3 == Some(true) {
            return Err(disabled("enable_cid_v3", "weir's datapath has no QUIC support yet"));
        }
        c.katran = katran_settings(r, &c)?;
        Ok(c)
    }
}

/// The hash function of new VIPs: the current API's `hash_function` name
/// (`"maglev"`, `"maglev_v2"`, any case; blank is `maglev_v2`, its default) or
/// the original `hash_func` id (0, 1); both given must agree. Neither: Maglev,
/// the original API's default, so bodies written for it keep their meaning.
fn hash_function(r: &KatranConfig) -> Result<HashFunction, KatranError> {
    let by_name = match r.hash_function.as_deref().map(str::trim) {
        None => None,
        Some(name) if name.is_empty() || name.eq_ignore_ascii_case("maglev_v2") => Some(HashFunction::MaglevV2),
        Some(name) if name.eq_ignore_ascii_case("maglev") => Some(HashFunction::Maglev),
        Some(name) => {
            return Err(KatranError::invalid(format!("hash_function: {name:?} is not \"maglev\" or \"maglev_v2\"")));
        }
    };
    let by_id = match r.hash_func {
        None => None,
        Some(id) => Some(
            HashFunction::from_katran(id)
                .ok_or_else(|| KatranError::invalid(format!("hash_func: {id} is not 0 (Maglev) or 1 (Maglev V2)")))?,
        ),
    };
    match (by_name, by_id) {
        (Some(name), Some(id)) if name != id => Err(KatranError::invalid(format!(
            "hash_function: {:?} and hash_func {} name different hash functions; give one",
            r.hash_function.as_deref().unwrap_or_default(),
            r.hash_func.unwrap_or_default()
        ))),
        (name, id) => Ok(name.or(id).unwrap_or(HashFunction::Maglev)),
    }
}

/// The Katran settings weir accepts without acting on them (checked where
/// they have a format), each with its notice when it asks for something weir
/// does not do (module table).
fn katran_settings(r: &KatranConfig, c: &BalancerConfig) -> Result<KatranSettings, KatranError> {
    let d = KatranSettings::default();
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let mut k = KatranSettings {
        balancer_prog_path: text(&r.balancer_prog_path),
        healthchecking_prog_path: text(&r.healthchecking_prog_path),
        hc_interface: text(&r.hc_interface),
        v4_tun_interface: text(&r.v4_tun_interface),
        v6_tun_interface: text(&r.v6_tun_interface),
        local_mac: given(&r.local_mac).map(|mac| parse_mac("local_mac", mac)).transpose()?,
        root_map_path: text(&r.root_map_path),
        root_map_pos: r.root_map_pos.unwrap_or(d.root_map_pos),
        use_root_map: r.use_root_map.unwrap_or(false),
        max_lpm_src_size: r.max_lpm_src_size.unwrap_or(d.max_lpm_src_size),
        max_decap_dst: r.max_decap_dst.unwrap_or(d.max_decap_dst),
        global_lru_size: r.global_lru_size.unwrap_or(d.global_lru_size),
        // The current katran-server's rule; weir's program stands in for the path.
        enable_hc: r.enable_hc.unwrap_or(given(&r.healthchecking_prog_path).is_some()),
        tunnel_based_hc_encap: r.tunnel_based_hc_encap.unwrap_or(d.tunnel_based_hc_encap),
        memlock_unlimited: r.memlock_unlimited.unwrap_or(d.memlock_unlimited),
        priority: r.priority.unwrap_or(d.priority),
        numa_nodes: r.numa_nodes.clone().unwrap_or_default(),
        katran_src_v4: None,
        katran_src_v6: None,
        notices: Vec::new(),
    };
    for (field, value, want_v6) in
        [("katran_src_v4", &r.katran_src_v4, false), ("katran_src_v6", &r.katran_src_v6, true)]
    {
        if let Some(text) = given(value) {
            let addr =
                text.parse().map_err(|_| KatranError::BadAddress(format!("{field}: {text:?} is not an IP address")))?;
            match addr {
                IpAddr::V4(v4) if !want_v6 => k.katran_src_v4 = Some(v4),
                IpAddr::V6(v6) if want_v6 => k.katran_src_v6 = Some(v6),
                addr => {
                    return Err(KatranError::invalid(format!(
                        "{field}: {addr} is not an IPv{} address",
                        if want_v6 { 6 } else { 4 }
                    )));
                }
            }
        }
    }

    let mut notices = Vec::new();
    if !k.balancer_prog_path.is_empty() {
        notices.push(format!(
            "balancer_prog_path {}: not loaded; weir runs its built-in balancer program ({BALANCER_PROGRAM})",
            k.balancer_prog_path
        ));
    }
    if !k.healthchecking_prog_path.is_empty() {
        notices.push(format!(
            "healthchecking_prog_path {}: not loaded; {}",
            k.healthchecking_prog_path,
            if k.enable_hc {
                "weir runs its built-in healthcheck program"
            } else {
                "enable_hc is false: no healthcheck program runs"
            }
        ));
    }
    k.hc_interface = hc_interface(r, c)?;
    if !k.enable_hc && !k.hc_interface.is_empty() {
        notices.push(format!("hc_interface {}: unused; enable_hc is false", k.hc_interface));
    }
    for (field, value) in [("v4_tun_interface", &k.v4_tun_interface), ("v6_tun_interface", &k.v6_tun_interface)] {
        if !value.is_empty() {
            notices.push(format!(
                "{field} {value}: unused; weir's healthcheck program encapsulates probes itself (DirectHC)"
            ));
        }
    }
    if k.use_root_map {
        notices.push(format!(
            "use_root_map: weir attaches its program to {} directly, not into a root array ({} position {}); \
             chaining other XDP programs in front of it is not available yet",
            if c.testing { "no interface (testing)" } else { c.main_interface.as_str() },
            if k.root_map_path.is_empty() { "no path" } else { k.root_map_path.as_str() },
            k.root_map_pos
        ));
    }
    if !k.numa_nodes.is_empty() {
        notices.push(
            "numa_nodes: unused; weir's connection table is one map with per-CPU LRU lists, not one map per NUMA node"
                .into(),
        );
    }
    let cpus = aya::util::nr_cpus().map_err(|(op, e)| KatranError::Internal(format!("{op}: {e}")))?;
    let missing: Vec<String> =
        c.forwarding_cores.iter().filter(|&&cpu| cpu as usize >= cpus).map(u32::to_string).collect();
    if !missing.is_empty() {
        notices.push(format!(
            "forwarding_cores: CPUs {} do not exist on this host (it has {cpus}); /stats/per-core-packets reports 0 \
             for them",
            missing.join(", ")
        ));
    }
    for notice in &notices {
        tracing::warn!(%notice, "lb/create: a Katran setting weir does not act on");
    }
    k.notices = notices;
    Ok(k)
}
/// The interface the healthcheck program is attached to, as named (empty:
/// the main one): `hc_interface`, or the one `hc_interface_index` names,
/// which must then be the same (as `main_interface_index`).
fn hc_interface(r: &KatranConfig, c: &BalancerConfig) -> Result<String, KatranError> {
    let named = r.hc_interface.clone().unwrap_or_default();
    let Some(index) = r.hc_interface_index.filter(|&i| i != 0 && !c.testing) else {
        return Ok(named);
    };
    let name = interface_name(index)
        .ok_or_else(|| KatranError::invalid(format!("hc_interface_index: no interface has index {index}")))?;
    if !named.is_empty() && named != name {
        return Err(KatranError::invalid(format!("hc_interface_index: {index} is {name}, not hc_interface {named}")));
    }
    Ok(name)
}

/// Katran's raw `xdp_attach_flags` as a weir attach mode.
fn attach_mode(flags: u32) -> Result<AttachMode, KatranError> {
    let known = XDP_FLAGS_UPDATE_IF_NOEXIST | XDP_FLAGS_SKB_MODE | XDP_FLAGS_DRV_MODE | XDP_FLAGS_HW_MODE;
    if flags & !known != 0 {
        return Err(KatranError::invalid(format!(
            "xdp_attach_flags: {flags:#x} has bits that are not XDP attach flags"
        )));
    }
    if flags & XDP_FLAGS_HW_MODE != 0 {
        return Err(disabled("xdp_attach_flags", "XDP_FLAGS_HW_MODE (8): weir does not offload to NIC hardware"));
    }
    match (flags & XDP_FLAGS_SKB_MODE != 0, flags & XDP_FLAGS_DRV_MODE != 0) {
        (true, true) => Err(KatranError::invalid(
            "xdp_attach_flags: XDP_FLAGS_SKB_MODE (2) and XDP_FLAGS_DRV_MODE (4) are exclusive",
        )),
        (true, false) => Ok(AttachMode::Generic),
        (false, true) => Ok(AttachMode::Driver),
        (false, false) => Ok(AttachMode::Auto),
    }
}

/// The name of the interface with `index`, if there is one.
fn interface_name(index: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
    let name = unsafe { libc::if_indextoname(index, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success buf holds a NUL-terminated name.
    Some(unsafe { CStr::from_ptr(buf.as_ptr()) }.to_string_lossy().into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> Result<BalancerConfig, KatranError> {
        BalancerConfig::from_katran(&serde_json::from_str(json).unwrap(), None)
    }

    fn code_and_message(json: &str) -> (&'static str, String) {
        let e = config(json).unwrap_err();
        (e.code().as_str(), e.to_string())
    }

    #[test]
    fn fields_map_onto_the_config() {
        let c = config(
            r#"{"main_interface":"eth0","default_mac":"aa:bb:cc:dd:ee:0f","max_vips":8,"max_reals":9,
                "ch_ring_size":13,"lru_size":1000,"hash_func":1,"cleanup_on_shutdown":false,
                "forwarding_cores":[0],"xdp_attach_flags":2,"mtu":9000,"root_map_pos":0,
                "tunnel_based_hc_encap":true,"priority":2307,"memlock_unlimited":true,
                "max_lpm_src_size":3000000,"max_decap_dst":6,"global_lru_size":100000,
                "katran_src_v4":"10.0.0.1","katran_src_v6":"fc00::1","local_mac":"11:22:33:44:55:66",
                "enable_hc":false,"use_root_map":false,"flow_debug":false,"enable_cid_v3":false,"numa_nodes":[]}"#,
        )
        .unwrap();
        assert_eq!(c.main_interface, "eth0");
        assert_eq!(c.default_mac, [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f]);
        assert_eq!((c.max_vips, c.max_reals, c.ch_ring_size, c.lru_size, c.mtu), (8, 9, 13, 1000, 9000));
        assert_eq!(c.hash_function, HashFunction::MaglevV2);
        assert!(!c.cleanup_on_shutdown && !c.testing);
        assert_eq!(c.forwarding_cores, vec![0]);
        assert_eq!(c.attach_mode, AttachMode::Generic);
        assert!(c.pin_root.is_some());
    }

    #[test]
    fn missing_fields_are_katran_defaults() {
        let c = config(r#"{"testing":true}"#).unwrap();
        let d = BalancerConfig::default();
        assert_eq!((c.max_vips, c.max_reals, c.ch_ring_size, c.lru_size), (512, 4096, 65537, 8_000_000));
        assert_eq!((c.mtu, c.hash_function, c.cleanup_on_shutdown), (d.mtu, HashFunction::Maglev, true));
        assert_eq!(c.default_mac, TESTING_MAC);
        assert!(c.testing && c.pin_root.is_none());
        assert_eq!(c.attach_mode, AttachMode::Auto);
    }

    #[test]
    fn refused_fields_are_named() {
        let cases: &[(&str, &str, &str)] = &[
            (r#"{"testing":true,"flow_debug":true}"#, "FEATURE_DISABLED", "flow_debug"),
            (r#"{"testing":true,"enable_cid_v3":true}"#, "FEATURE_DISABLED", "enable_cid_v3"),
            (r#"{"testing":true,"xdp_attach_flags":8}"#, "FEATURE_DISABLED", "xdp_attach_flags"),
            (r#"{"testing":true,"xdp_attach_flags":6}"#, "INVALID_REQUEST", "xdp_attach_flags"),
            (r#"{"testing":true,"xdp_attach_flags":16}"#, "INVALID_REQUEST", "xdp_attach_flags"),
            (r#"{"testing":true,"hash_func":2}"#, "INVALID_REQUEST", "hash_func"),
            (r#"{"testing":true,"hash_function":"ring"}"#, "INVALID_REQUEST", "hash_function"),
            (r#"{"testing":true,"hash_function":"maglev","hash_func":1}"#, "INVALID_REQUEST", "hash_function"),
            (r#"{"testing":true,"default_mac":"aa:bb"}"#, "INVALID_REQUEST", "default_mac"),
            (r#"{"testing":true,"local_mac":"zz:bb:cc:dd:ee:ff"}"#, "INVALID_REQUEST", "local_mac"),
            (r#"{"testing":true,"katran_src_v4":"fc00::1"}"#, "INVALID_REQUEST", "katran_src_v4"),
            (r#"{"testing":true,"katran_src_v6":"nope"}"#, "INVALID_REQUEST", "katran_src_v6"),
            (
                r#"{"main_interface":"lo","main_interface_index":4000000000,"default_mac":"02:00:00:00:00:01"}"#,
                "INVALID_REQUEST",
                "main_interface_index",
            ),
        ];
        for (json, code, field) in cases {
            let (got, message) = code_and_message(json);
            assert_eq!((got, message.starts_with(&format!("{field}: "))), (*code, true), "{json}: {message}");
        }
    }

    /// shared/specs/katran-rest-api.md's example body, verbatim.
    const SPEC_EXAMPLE: &str = r#"{
  "main_interface": "eth0",
  "balancer_prog_path": "/path/to/balancer.o",
  "healthchecking_prog_path": "/path/to/healthchecker.o",
  "v4_tun_interface": "ipip0",
  "v6_tun_interface": "ipip6tnl0",
  "hc_interface": "eth0",
  "default_mac": "aa:bb:cc:dd:ee:ff",
  "local_mac": "11:22:33:44:55:66",
  "root_map_path": "/sys/fs/bpf/root_map",
  "root_map_pos": 2,
  "use_root_map": true,
  "max_vips": 512,
  "max_reals": 4096,
  "ch_ring_size": 65537,
  "lru_size": 8000000,
  "max_lpm_src_size": 3000000,
  "max_decap_dst": 6,
  "global_lru_size": 100000,
  "enable_hc": true,
  "tunnel_based_hc_encap": true,
  "testing": false,
  "memlock_unlimited": true,
  "flow_debug": false,
  "enable_cid_v3": false,
  "cleanup_on_shutdown": true,
  "forwarding_cores": [0, 1, 2, 3],
  "numa_nodes": [0, 0, 1, 1],
  "xdp_attach_flags": 0,
  "priority": 2307,
  "main_interface_index": 0,
  "hc_interface_index": 0,
  "katran_src_v4": "10.0.0.1",
  "katran_src_v6": "fc00::1",
  "hash_func": 0
}"#;

    #[test]
    fn the_spec_example_is_accepted_and_what_weir_does_not_do_is_said() {
        let c = config(SPEC_EXAMPLE).unwrap();
        assert_eq!(
            (c.main_interface.as_str(), c.hash_function, c.attach_mode),
            ("eth0", HashFunction::Maglev, AttachMode::Auto)
        );
        assert_eq!(c.forwarding_cores, vec![0, 1, 2, 3]);
        let k = &c.katran;
        assert_eq!(k.balancer_prog_path, "/path/to/balancer.o");
        assert_eq!((k.use_root_map, k.root_map_pos, k.enable_hc, k.priority), (true, 2, true, 2307));
        assert_eq!(k.local_mac, Some([0x11, 0x22, 0x33, 0x44, 0x55, 0x66]));
        assert_eq!(k.katran_src_v6, Some("fc00::1".parse().unwrap()));
        let fields: Vec<&str> = k.notices.iter().map(|n| n.split([' ', ':']).next().unwrap()).collect();
        let mut want = vec![
            "balancer_prog_path",
            "healthchecking_prog_path",
            "v4_tun_interface",
            "v6_tun_interface",
            "use_root_map",
            "numa_nodes",
        ];
        if aya::util::nr_cpus().unwrap() < 4 {
            want.push("forwarding_cores");
        }
        assert_eq!(fields, want, "{:#?}", k.notices);
        assert_eq!(
            k.notices[0],
            format!("balancer_prog_path /path/to/balancer.o: not loaded; weir runs its built-in balancer program ({BALANCER_PROGRAM})")
        );
        // A body asking for nothing weir lacks has no notices.
        assert!(config(r#"{"testing":true}"#).unwrap().katran.notices.is_empty());
    }

    #[test]
    fn enable_hc_follows_the_program_path_when_omitted() {
        let hc = |json: &str| {
            let c = config(json).unwrap();
            (c.katran.enable_hc, c.katran.hc_interface, c.katran.notices)
        };
        assert_eq!(hc(r#"{"testing":true}"#), (false, String::new(), vec![]));
        assert_eq!(hc(r#"{"testing":true,"enable_hc":true}"#), (true, String::new(), vec![]));
        assert_eq!(
            hc(r#"{"testing":true,"healthchecking_prog_path":"/hc.o"}"#),
            (
                true,
                String::new(),
                vec![
                    "healthchecking_prog_path /hc.o: not loaded; weir runs its built-in healthcheck program".to_owned()
                ]
            )
        );
        assert_eq!(
            hc(r#"{"testing":true,"healthchecking_prog_path":"/hc.o","enable_hc":false,"hc_interface":"hc0"}"#),
            (
                false,
                "hc0".to_owned(),
                vec![
                    "healthchecking_prog_path /hc.o: not loaded; enable_hc is false: no healthcheck program runs"
                        .to_owned(),
                    "hc_interface hc0: unused; enable_hc is false".to_owned()
                ]
            )
        );
        let c = config(
            r#"{"main_interface":"lo","default_mac":"02:00:00:00:00:01","enable_hc":true,"hc_interface_index":1}"#,
        )
        .unwrap();
        assert_eq!(c.katran.hc_interface, interface_name(1).unwrap());
        let (code, message) = code_and_message(
            r#"{"main_interface":"lo","default_mac":"02:00:00:00:00:01","hc_interface":"hc0","hc_interface_index":1}"#,
        );
        assert_eq!((code, message.starts_with("hc_interface_index: 1 is ")), ("INVALID_REQUEST", true), "{message}");
    }

    #[test]
    fn hash_function_names_and_ids() {
        let hash = |json: &str| config(json).unwrap().hash_function;
        assert_eq!(hash(r#"{"testing":true,"hash_function":"maglev_v2"}"#), HashFunction::MaglevV2);
        assert_eq!(hash(r#"{"testing":true,"hash_function":"MAGLEV_V2"}"#), HashFunction::MaglevV2);
        assert_eq!(hash(r#"{"testing":true,"hash_function":""}"#), HashFunction::MaglevV2);
        assert_eq!(hash(r#"{"testing":true,"hash_function":"Maglev"}"#), HashFunction::Maglev);
        assert_eq!(hash(r#"{"testing":true,"hash_function":"maglev_v2","hash_func":1}"#), HashFunction::MaglevV2);
        assert_eq!(hash(r#"{"testing":true,"hash_func":1}"#), HashFunction::MaglevV2);
        assert_eq!(hash(r#"{"testing":true}"#), HashFunction::Maglev);
    }

    #[test]
    fn main_interface_index_names_the_interface() {
        let c = config(r#"{"main_interface_index":1,"default_mac":"02:00:00:00:00:01"}"#).unwrap();
        assert_eq!(c.main_interface, interface_name(1).unwrap());
        let (code, message) = code_and_message(
            r#"{"main_interface":"not-lo","main_interface_index":1,"default_mac":"02:00:00:00:00:01"}"#,
        );
        assert_eq!(code, "INVALID_REQUEST");
        assert!(message.contains("not main_interface not-lo"), "{message}");
    }
}
