//! The Balancer's create-time configuration. Field names and defaults mirror
//! katran-server's `POST /api/v1/lb/create`, so the REST layer maps onto it 1:1.

use std::path::PathBuf;

use weir_ebpf::abi;

use super::maglev::HashFunction;

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
    /// L3 MTU of the egress link: packets larger once encapsulated are dropped.
    pub mtu: u32,
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
            hash_function: HashFunction::Maglev,
            testing: false,
            attach_mode: AttachMode::Driver,
            cleanup_on_shutdown: true,
            pin_root: Some(PathBuf::from(super::pin::DEFAULT_PIN_ROOT)),
            state_dir: PathBuf::from("/run/weir"),
            forwarding_cores: Vec::new(),
        }
    }
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
