//! `POST /api/v1/lb/create`: katran's `KatranConfig` onto weir's
//! [`BalancerConfig`], and [`create_from_json`] (also `--config FILE`).
//!
//! A missing field (or `null`) means Katran's default; an explicit value is
//! taken as given (`root_map_pos: 0` is 0). weir never silently ignores a
//! field that asks for something it cannot do:
//!
//! | field | weir |
//! |---|---|
//! | `main_interface` | the interface to attach to; required unless `testing` |
//! | `main_interface_index` | 0/missing: found by name. Otherwise it must be the index of `main_interface` (400 if not), or names the interface when `main_interface` is missing. Unused in testing mode |
//! | `default_mac` | the Ethernet destination of encapsulated packets; required unless `testing` (then `02:00:00:00:00:01`); a malformed MAC is 400 |
//! | `local_mac` | checked (400 if malformed), then unused: weir's sent frames take the received frame's destination MAC, the interface's own, as source |
//! | `max_vips`, `max_reals`, `ch_ring_size`, `lru_size` | table sizes (defaults 512, 4096, 65537, 8000000); 0 is 400. `lru_size` is the one connection table's size (per-CPU LRU lists), Katran's total over its per-CPU tables |
//! | `hash_func` | 0 Maglev, 1 Maglev V2: the hash of new VIPs; other values 400 |
//! | `testing` | load without attaching (BPF_PROG_TEST_RUN only); nothing is pinned, so a test balancer never touches the host's pinned datapath |
//! | `cleanup_on_shutdown` | default true: `/lb/close` (and shutdown) detach and unpin; false leaves the datapath forwarding for the next agent to adopt |
//! | `forwarding_cores` | the CPUs `/stats/per-core-packets` reports, in order; a CPU the host lacks is 400 |
//! | `xdp_attach_flags` | 0: the kernel picks (driver when supported, else generic), as in Katran; `XDP_FLAGS_DRV_MODE` (4): driver mode; `XDP_FLAGS_SKB_MODE` (2): generic mode; `XDP_FLAGS_UPDATE_IF_NOEXIST` (1) accepted (weir's XDP link never replaces another program); `XDP_FLAGS_HW_MODE` (8): 501; other bits, or SKB and DRV together: 400 |
//! | `mtu` (weir's) | the egress link's L3 MTU (default 1500) |
//! | `balancer_prog_path` | non-empty: 501 — weir's balancer is built into weir-agent; it cannot load another object |
//! | `healthchecking_prog_path`, `enable_hc: true` | 501: weir has no healthcheck program yet |
//! | `hc_interface`, `hc_interface_index`, `v4_tun_interface`, `v6_tun_interface` | non-empty / non-zero: 501 — they only configure the healthcheck program |
//! | `tunnel_based_hc_encap`, `priority` | accepted: the healthcheck program's encapsulation and TC priority, meaningless without it (Katran reads them only with `enable_hc`) |
//! | `use_root_map: true` | 501: weir attaches to the interface itself, not through a root-array program chain |
//! | `root_map_path`, `root_map_pos` | accepted: Katran reads them only with `use_root_map` |
//! | `numa_nodes` | non-empty: 501 — weir's connection table is one map with per-CPU LRU lists; it cannot be placed per NUMA node |
//! | `flow_debug: true` | 501: no flow-debug maps (feature FlowDebug) |
//! | `enable_cid_v3: true` | 501: no QUIC |
//! | `max_lpm_src_size`, `max_decap_dst`, `global_lru_size` | accepted: sizes of tables of features weir lacks (source routing, inline decap, global LRU); using those features is refused where it is asked for |
//! | `katran_src_v4`, `katran_src_v6` | checked (400 if not an address of the right family), then unused: Katran uses them only for GUE encapsulation; weir, like Katran's default IP-in-IP build, derives the outer source from the client |
//! | `memlock_unlimited` | accepted: since Linux 5.11 BPF memory is charged to the cgroup, RLIMIT_MEMLOCK does not apply |
//!
//! Checks happen in that order, so the first offending field is named; then
//! an existing balancer answers 409 ALREADY_EXISTS; then the Balancer
//! validates the sizes and loads (and unless testing, attaches) the program.

use std::ffi::CStr;
use std::net::IpAddr;

use axum::extract::State;

use super::error::ApiError;
use super::extract::{parse_json, RawBody};
use super::reply::{Acknowledged, Created};
use super::types::CreateLb;
use super::utils::parse_mac;
use super::ApiState;
use crate::dataplane::{AttachMode, Balancer, BalancerConfig, HashFunction};

endpoints!(lb_create);

const XDP_FLAGS_UPDATE_IF_NOEXIST: u32 = 1 << 0;
const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;
const XDP_FLAGS_HW_MODE: u32 = 1 << 3;

/// The default MAC of a testing balancer without `default_mac`.
const TESTING_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];

/// Creates the balancer from `/lb/create`'s JSON body — exactly what
/// `POST /api/v1/lb/create` does, for `--config FILE`: 400 INVALID_REQUEST
/// for a malformed body or field, 501 FEATURE_DISABLED for a field asking
/// for a feature weir lacks, 409 ALREADY_EXISTS when a balancer exists, and
/// the Balancer's own errors (400 for sizes, BPF_FAILED...). Blocking: it
/// loads and verifies the BPF program (call it from a blocking context).
pub fn create_from_json(state: &ApiState, body: &[u8]) -> Result<(), ApiError> {
    let request: CreateLb = parse_json(body)?;
    let config = config_of(state, &request)?;
    // The write lock is held while loading, so two creates cannot race.
    let mut guard = state.write_lock();
    if guard.is_some() {
        return Err(ApiError::already_exists("the load balancer already exists: POST /api/v1/lb/close first"));
    }
    *guard = Some(Balancer::new(config).map_err(|e| state.failed(e))?);
    Ok(())
}

/// Creates the load balancer (loads the program and, unless `testing`,
/// attaches it). See the module documentation for each field.
#[utoipa::path(post, path = "/api/v1/lb/create", tag = "lb", request_body = CreateLb,
    responses(
        (status = 201, description = "Created", body = Acknowledged),
        (status = 409, description = "ALREADY_EXISTS: a balancer exists", body = super::reply::Failure),
        (status = 501, description = "FEATURE_DISABLED: a field asks for a feature weir lacks", body = super::reply::Failure),
    ))]
async fn lb_create(State(state): State<ApiState>, RawBody(body): RawBody) -> Result<Created, ApiError> {
    // Loading runs the verifier: off the async workers.
    tokio::task::spawn_blocking(move || create_from_json(&state, &body))
        .await
        .map_err(|e| ApiError::internal(format!("create: {e}")))??;
    Ok(Created)
}

fn disabled(field: &str, why: &str) -> ApiError {
    ApiError::feature_disabled(format!("{field}: {why}"))
}

fn given(text: &Option<String>) -> Option<&str> {
    text.as_deref().filter(|t| !t.is_empty())
}

/// The Balancer configuration a create request asks for (every check of the
/// module table but the Balancer's own).
fn config_of(state: &ApiState, r: &CreateLb) -> Result<BalancerConfig, ApiError> {
    let testing = r.testing.unwrap_or(false);
    let mut c = BalancerConfig { testing, ..BalancerConfig::default() };
    if testing {
        c.pin_root = None;
    } else if let Some(pins) = &state.pins {
        c.pin_root = Some(pins.pin_root.clone());
        c.state_dir = pins.state_dir.clone();
    }

    c.main_interface = r.main_interface.clone().unwrap_or_default();
    if let Some(index) = r.main_interface_index.filter(|&i| i != 0 && !testing) {
        let name = interface_name(index)
            .ok_or_else(|| ApiError::invalid(format!("main_interface_index: no interface has index {index}")))?;
        if c.main_interface.is_empty() {
            c.main_interface = name;
        } else if c.main_interface != name {
            return Err(ApiError::invalid(format!(
                "main_interface_index: {index} is {name}, not main_interface {}",
                c.main_interface
            )));
        }
    }
    c.default_mac = match given(&r.default_mac) {
        Some(mac) => parse_mac("default_mac", mac)?,
        None if testing => TESTING_MAC,
        None => return Err(ApiError::invalid("default_mac: required (the default router's MAC) unless testing")),
    };
    if let Some(mac) = given(&r.local_mac) {
        parse_mac("local_mac", mac)?;
    }
    c.max_vips = r.max_vips.unwrap_or(c.max_vips);
    c.max_reals = r.max_reals.unwrap_or(c.max_reals);
    c.ch_ring_size = r.ch_ring_size.unwrap_or(c.ch_ring_size);
    c.lru_size = r.lru_size.unwrap_or(c.lru_size);
    if let Some(id) = r.hash_func {
        c.hash_function = HashFunction::from_katran(id)
            .ok_or_else(|| ApiError::invalid(format!("hash_func: {id} is not 0 (Maglev) or 1 (Maglev V2)")))?;
    }
    c.cleanup_on_shutdown = r.cleanup_on_shutdown.unwrap_or(c.cleanup_on_shutdown);
    c.forwarding_cores = r.forwarding_cores.clone().unwrap_or_default();
    c.attach_mode = attach_mode(r.xdp_attach_flags.unwrap_or(0))?;
    c.mtu = r.mtu.unwrap_or(c.mtu);

    if given(&r.balancer_prog_path).is_some() {
        return Err(disabled(
            "balancer_prog_path",
            "weir's balancer program is built into weir-agent; it cannot load another BPF object (omit the field)",
        ));
    }
    let hc = "weir has no healthcheck program yet";
    if given(&r.healthchecking_prog_path).is_some() {
        return Err(disabled("healthchecking_prog_path", hc));
    }
    if r.enable_hc == Some(true) {
        return Err(disabled("enable_hc", hc));
    }
    for (field, value) in [
        ("hc_interface", &r.hc_interface),
        ("v4_tun_interface", &r.v4_tun_interface),
        ("v6_tun_interface", &r.v6_tun_interface),
    ] {
        if given(value).is_some() {
            return Err(disabled(field, &format!("{hc} (this field only configures it)")));
        }
    }
    if r.hc_interface_index.is_some_and(|i| i != 0) {
        return Err(disabled("hc_interface_index", &format!("{hc} (this field only configures it)")));
    }
    if r.use_root_map == Some(true) {
        return Err(disabled(
            "use_root_map",
            "weir attaches its program to the interface itself, not through a root-array program chain",
        ));
    }
    if r.numa_nodes.as_ref().is_some_and(|n| !n.is_empty()) {
        return Err(disabled(
            "numa_nodes",
            "weir's connection table is one map with per-CPU LRU lists; it cannot be placed per NUMA node",
        ));
    }
    if r.flow_debug == Some(true) {
        return Err(disabled("flow_debug", "weir has no flow-debug maps (feature FlowDebug)"));
    }
    if r.enable_cid_v3 == Some(true) {
        return Err(disabled("enable_cid_v3", "weir's datapath has no QUIC support yet"));
    }
    for (field, value, v6) in [("katran_src_v4", &r.katran_src_v4, false), ("katran_src_v6", &r.katran_src_v6, true)] {
        if let Some(text) = given(value) {
            let addr: IpAddr = state.ip(field, text)?;
            if addr.is_ipv6() != v6 {
                return Err(ApiError::invalid(format!(
                    "{field}: {addr} is not an IPv{} address",
                    if v6 { 6 } else { 4 }
                )));
            }
        }
    }
    Ok(c)
}

/// Katran's raw `xdp_attach_flags` as a weir attach mode.
fn attach_mode(flags: u32) -> Result<AttachMode, ApiError> {
    let known = XDP_FLAGS_UPDATE_IF_NOEXIST | XDP_FLAGS_SKB_MODE | XDP_FLAGS_DRV_MODE | XDP_FLAGS_HW_MODE;
    if flags & !known != 0 {
        return Err(ApiError::invalid(format!("xdp_attach_flags: {flags:#x} has bits that are not XDP attach flags")));
    }
    if flags & XDP_FLAGS_HW_MODE != 0 {
        return Err(disabled("xdp_attach_flags", "XDP_FLAGS_HW_MODE (8): weir does not offload to NIC hardware"));
    }
    match (flags & XDP_FLAGS_SKB_MODE != 0, flags & XDP_FLAGS_DRV_MODE != 0) {
        (true, true) => {
            Err(ApiError::invalid("xdp_attach_flags: XDP_FLAGS_SKB_MODE (2) and XDP_FLAGS_DRV_MODE (4) are exclusive"))
        }
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

    fn config(json: &str) -> Result<BalancerConfig, ApiError> {
        config_of(&ApiState::default(), &parse_json(json.as_bytes()).unwrap())
    }

    fn code_and_message(json: &str) -> (&'static str, String) {
        let e = config(json).unwrap_err();
        (e.code, e.message)
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
            (r#"{"testing":true,"balancer_prog_path":"/x.o"}"#, "FEATURE_DISABLED", "balancer_prog_path"),
            (r#"{"testing":true,"healthchecking_prog_path":"/h.o"}"#, "FEATURE_DISABLED", "healthchecking_prog_path"),
            (r#"{"testing":true,"enable_hc":true}"#, "FEATURE_DISABLED", "enable_hc"),
            (r#"{"testing":true,"hc_interface":"eth0"}"#, "FEATURE_DISABLED", "hc_interface"),
            (r#"{"testing":true,"hc_interface_index":2}"#, "FEATURE_DISABLED", "hc_interface_index"),
            (r#"{"testing":true,"v4_tun_interface":"ipip0"}"#, "FEATURE_DISABLED", "v4_tun_interface"),
            (r#"{"testing":true,"v6_tun_interface":"ipip6"}"#, "FEATURE_DISABLED", "v6_tun_interface"),
            (r#"{"testing":true,"use_root_map":true}"#, "FEATURE_DISABLED", "use_root_map"),
            (r#"{"testing":true,"numa_nodes":[0]}"#, "FEATURE_DISABLED", "numa_nodes"),
            (r#"{"testing":true,"flow_debug":true}"#, "FEATURE_DISABLED", "flow_debug"),
            (r#"{"testing":true,"enable_cid_v3":true}"#, "FEATURE_DISABLED", "enable_cid_v3"),
            (r#"{"testing":true,"xdp_attach_flags":8}"#, "FEATURE_DISABLED", "xdp_attach_flags"),
            (r#"{"testing":true,"xdp_attach_flags":6}"#, "INVALID_REQUEST", "xdp_attach_flags"),
            (r#"{"testing":true,"xdp_attach_flags":16}"#, "INVALID_REQUEST", "xdp_attach_flags"),
            (r#"{"testing":true,"hash_func":2}"#, "INVALID_REQUEST", "hash_func"),
            (r#"{"testing":true,"default_mac":"aa:bb"}"#, "INVALID_REQUEST", "default_mac"),
            (r#"{"testing":true,"local_mac":"zz:bb:cc:dd:ee:ff"}"#, "INVALID_REQUEST", "local_mac"),
            (r#"{"testing":true,"katran_src_v4":"fc00::1"}"#, "INVALID_REQUEST", "katran_src_v4"),
            (r#"{"testing":true,"katran_src_v6":"nope"}"#, "INVALID_REQUEST", "katran_src_v6"),
            (r#"{"main_interface":"eth0"}"#, "INVALID_REQUEST", "default_mac"),
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
