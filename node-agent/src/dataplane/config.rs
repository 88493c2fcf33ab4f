//! The Balancer's create-time configuration. Field names and defaults mirror
//! katran-server's `POST /api/v1/lb/create`, so the REST layer maps onto it 1:1.

use std::ops::RangeInclusive;
use std::path::PathBuf;

use weir_ebpf::abi;

use super::maglev::HashFunction;

/// The table sizes a configuration may ask for, each refused (400) outside
/// its range. The upper bounds keep a typo from asking the kernel for more
/// than a node could give (a refusal then would be a 500, or the node's
/// memory gone): 65536 VIPs is more than a ring map of default rings can
/// hold (see [`MAX_RING_SLOTS`]); a million reals is 20 MiB of real
/// definitions; 2^24 slots is 256 times Katran's default ring; 2^27
/// connection entries take about 13 GiB of kernel memory (≈100 bytes each).
pub const MAX_VIPS: RangeInclusive<u32> = 1..=65_536;
pub const MAX_REALS: RangeInclusive<u32> = 1..=1_048_576;
pub const CH_RING_SIZE: RangeInclusive<u32> = 1..=16_777_216;
pub const LRU_SIZE: RangeInclusive<u32> = 1..=134_217_728;

/// Ring slots across all VIPs (`max_vips × ch_ring_size`): 2^28 slots of 4
/// bytes are 1 GiB of rings (4096 VIPs of the default ring size).
pub const MAX_RING_SLOTS: u64 = 1 << 28;

/// The L3 MTUs a configuration may name: from IPv6's minimum link MTU
/// (RFC 8200: every link an IPv6 packet, here an IPv6 real's encapsulated
/// one, may cross carries 1280 bytes) to the largest jumbo frame switches
/// take (9216). Below, an IPv6 real could not be reached at all; above, no
/// link exists, and a typo would let oversized frames through.
pub const MTU: RangeInclusive<u32> = 1280..=9216;

/// How the XDP program is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttachMode {
    /// In the driver (native XDP): the fast path, what production uses.
    #[default]
    Driver,
    /// In the generic (skb) path: works on any interface, slower.
    Generic,
    /// Whatever the kernel picks: the driver when it supports XDP, else
    /// generic (Katran's `xdp_attach_flags: 0`).
    Auto,
}

impl AttachMode {
    pub fn xdp_mode(self) -> aya::programs::XdpMode {
        match self {
            AttachMode::Driver => aya::programs::XdpMode::Driver,
            AttachMode::Generic => aya::programs::XdpMode::Skb,
            AttachMode::Auto => aya::programs::XdpMode::Default,
        }
    }
}

/// Everything fixed when a Balancer is created.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BalancerConfig {
    /// The interface the balancer is attached to (ignored in testing mode).
    pub main_interface: String,
    /// Ethernet destination of encapsulated packets: the default router's MAC.
    pub default_mac: [u8; 6],
    pub max_vips: u32,
    /// Reals that can exist at once (across all VIPs).
    pub max_reals: u32,
    /// Maglev ring slots per VIP; a prime keeps Maglev's permutations complete.
    pub ch_ring_size: u32,
    /// Connection-table entries.
    pub lru_size: u32,
    /// L3 MTU of the egress link: packets larger once encapsulated are
    /// answered with an ICMP too-big (see `icmp_too_big`).
    pub mtu: u32,
    /// Answer a VIP packet too big once encapsulated with ICMP
    /// "fragmentation needed" (IPv4) / "packet too big" (IPv6) reporting
    /// `mtu` less the outer header, sent back to the client with XDP_TX, so
    /// its path MTU discovery shrinks its packets; false drops them (both
    /// counted in `icmp_toobig`). Katran builds this in only with
    /// `ICMP_TOOBIG_GENERATION`; weir's program always has it, so it is on
    /// unless switched off: a full-size upload through a VIP at MTU 1500
    /// must not stall. Set at load time (a `.rodata` global).
    #[serde(default = "yes")]
    pub icmp_too_big: bool,
    /// Hash function given to new VIPs.
    pub hash_function: HashFunction,
    /// Load the program without attaching it (BPF_PROG_TEST_RUN only).
    pub testing: bool,
    pub attach_mode: AttachMode,
    /// Detach and unpin everything when the Balancer is dropped. When false, the
    /// datapath keeps forwarding and a new Balancer adopts it.
    pub cleanup_on_shutdown: bool,
    /// Pin root on bpffs (required unless testing; testing mode never pins).
    pub pin_root: Option<PathBuf>,
    /// Where the control-plane state of a pinned datapath is saved
    /// (`<state_dir>/netns-<cookie>/<main_interface>.json`, see `pin`), so a restarted agent can adopt it.
    pub state_dir: PathBuf,
    /// CPUs that forward traffic; reported by the per-core counters. Empty = all.
    pub forwarding_cores: Vec<u32>,
    /// A prober checks reals (katran's "healthchecker configured"): new reals
    /// start unhealthy until promoted, and checks other than `dummy` are
    /// accepted. Off by default: every real is healthy until told otherwise.
    #[serde(default)]
    pub prober: bool,
    /// What a katran-server `/lb/create` body set that weir's datapath does
    /// not act on, kept so that `/lb/status` can say so and `/config/export`
    /// gives it back.
    #[serde(default)]
    pub katran: KatranSettings,
}

/// Where a Balancer pins its datapath and saves its state (the agent's
/// --pin-root and --state-dir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pins {
    pub pin_root: std::path::PathBuf,
    pub state_dir: std::path::PathBuf,
}

/// The settings of a Katran configuration that weir accepts without acting on
/// them — program paths (weir's programs are built in), the healthcheck
/// program's interfaces, root-map chaining, NUMA placement, table sizes of
/// features weir lacks — so that katran-server deployments' bodies work
/// unchanged. Each one that asks for something weir does not do has a line in
/// `notices` (logged at create, listed by `/lb/status`). Defaults are Katran's.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct KatranSettings {
    pub balancer_prog_path: String,
    pub healthchecking_prog_path: String,
    pub hc_interface: String,
    pub v4_tun_interface: String,
    pub v6_tun_interface: String,
    pub local_mac: Option<[u8; 6]>,
    pub root_map_path: String,
    pub root_map_pos: u32,
    pub use_root_map: bool,
    pub max_lpm_src_size: u32,
    pub max_decap_dst: u32,
    pub global_lru_size: u32,
    pub enable_hc: bool,
    pub tunnel_based_hc_encap: bool,
    pub memlock_unlimited: bool,
    pub priority: u32,
    pub numa_nodes: Vec<u32>,
    pub katran_src_v4: Option<std::net::Ipv4Addr>,
    pub katran_src_v6: Option<std::net::Ipv6Addr>,
    /// One sentence per setting above that asks for what weir does not do.
    pub notices: Vec<String>,
}

impl Default for KatranSettings {
    fn default() -> Self {
        Self {
            balancer_prog_path: String::new(),
            healthchecking_prog_path: String::new(),
            hc_interface: String::new(),
            v4_tun_interface: String::new(),
            v6_tun_interface: String::new(),
            local_mac: None,
            root_map_path: String::new(),
            root_map_pos: 2,
            use_root_map: false,
            max_lpm_src_size: 3_000_000,
            max_decap_dst: 6,
            global_lru_size: 100_000,
            enable_hc: false,
            tunnel_based_hc_encap: false,
            memlock_unlimited: true,
            priority: 2307,
            numa_nodes: Vec::new(),
            katran_src_v4: None,
            katran_src_v6: None,
            notices: Vec::new(),
        }
    }
}

impl Default for BalancerConfig {
    fn default() -> Self {
        Self {
            main_interface: String::new(),
            default_mac: [0; 6],
            max_vips: abi::DEFAULT_MAX_VIPS,
            max_reals: abi::DEFAULT_MAX_REALS,
            ch_ring_size: abi::DEFAULT_RING_SIZE,
            lru_size: abi::DEFAULT_CONNS,
            mtu: abi::DEFAULT_MTU,
            icmp_too_big: true,
            hash_function: HashFunction::Maglev,
            testing: false,
            attach_mode: AttachMode::Driver,
            cleanup_on_shutdown: true,
            pin_root: Some(PathBuf::from(super::pin::DEFAULT_PIN_ROOT)),
            state_dir: PathBuf::from("/run/weir"),
            forwarding_cores: Vec::new(),
            prober: false,
            katran: KatranSettings::default(),
        }
    }
}

fn yes() -> bool {
    true
}

impl BalancerConfig {
    /// A configuration for tests: loaded, not attached, nothing pinned, small tables.
    pub fn testing() -> Self {
        Self {
            main_interface: "lo".to_owned(),
            default_mac: [0x02, 0, 0, 0, 0, 0x01],
            max_vips: 16,
            max_reals: 256,
            lru_size: 4096,
            testing: true,
            pin_root: None,
            ..Self::default()
        }
    }
}
