//! Map names, exactly as `bpf/maps.h` declares them (`WEIR_MAP_*` in
//! weir_abi.h). The datapath pins its maps by these names under the agent's
//! bpffs directory; kernel object names hold at most 15 characters.

pub const VIPS: &str = "weir_vips";
pub const REALS: &str = "weir_reals";
pub const CH_RINGS: &str = "weir_ch_rings";
pub const CONNS: &str = "weir_conns";
pub const CTL: &str = "weir_ctl";
pub const VIP_STATS: &str = "weir_vip_stats";
pub const REAL_STATS: &str = "weir_real_stats";
pub const STATS: &str = "weir_stats";
pub const DECAP_STATS: &str = "weir_decaps";
pub const VIP_FILTER: &str = "weir_vip_filter";
pub const HC_REALS: &str = "weir_hc_reals";
pub const HC_CTL: &str = "weir_hc_ctl";
pub const HC_KEYS: &str = "weir_hc_keys";
pub const HC_KEY_PKTS: &str = "weir_hc_key_pkt";
pub const HC_STATS: &str = "weir_hc_stats";

/// Every map of the balancer program.
pub const BALANCER: &[&str] = &[VIPS, VIP_FILTER, REALS, CH_RINGS, CONNS, CTL, VIP_STATS, REAL_STATS, STATS];

/// Every map of the healthcheck program (`healthcheck.bpf.c`).
pub const HEALTHCHECK: &[&str] = &[HC_REALS, HC_CTL, HC_KEYS, HC_KEY_PKTS, HC_STATS];
