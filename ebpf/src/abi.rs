//! The Rust mirror of `bpf/weir_abi.h`: map names, key and value structs, flag
//! bits and counter indices. Field meanings are documented in the header; the
//! tests at the bottom compare every size, offset and constant with what the C
//! compiler produced from that header (see `bpf/abi_layout.c`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Map names, exactly as declared in `bpf/maps.h`.
pub mod map {
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
    /// Every map of the healthcheck program.
    pub const HEALTHCHECK: &[&str] = &[HC_REALS, HC_CTL, HC_KEYS, HC_KEY_PKTS, HC_STATS];

    /// Every map of the balancer program.
    pub const BALANCER: &[&str] = &[VIPS, VIP_FILTER, REALS, CH_RINGS, CONNS, CTL, VIP_STATS, REAL_STATS, STATS];
}

/// The layout of the pinned maps: their names, keys, values and what they
/// mean. Bumped whenever one of them changes, so that an agent never runs its
/// program against maps laid out for another one: a datapath pinned with
/// another layout gets fresh maps (see the agent's `pin::SetAside`).
/// 0: not recorded (every release before 2); 2: VIP keys carry their family,
/// rings hold two slots an element, `bad_len` counter.
pub const PIN_LAYOUT: u32 = 2;

/// Load-time constants (`const volatile` globals in `balancer.bpf.c`).
pub mod global {
    /// Maglev ring slots per VIP.
    pub const RING_SIZE: &str = "weir_ring_size";
    /// L3 MTU of the egress link: larger packets, once encapsulated, are dropped.
    pub const MTU: &str = "weir_mtu";
}

pub const VIP_F_NO_SPORT: u32 = 1 << 0;
pub const VIP_F_NO_LRU: u32 = 1 << 1;
pub const VIP_F_QUIC_VIP: u32 = 1 << 2;
pub const VIP_F_DPORT_HASH: u32 = 1 << 3;
pub const VIP_F_SRC_ROUTING: u32 = 1 << 4;
pub const VIP_F_LOCAL_VIP: u32 = 1 << 5;
pub const VIP_F_GLOBAL_LRU: u32 = 1 << 6;
pub const VIP_F_HASH_SRC_DST_PORT: u32 = 1 << 7;
pub const VIP_F_UDP_STABLE_ROUTING: u32 = 1 << 8;
pub const VIP_F_UDP_FLOW_MIGRATION: u32 = 1 << 9;
/// The VIP flags the datapath honours.
pub const VIP_F_SUPPORTED: u32 =
    VIP_F_NO_SPORT | VIP_F_NO_LRU | VIP_F_DPORT_HASH | VIP_F_LOCAL_VIP | VIP_F_HASH_SRC_DST_PORT;

pub const REAL_F_IPV6: u8 = 1 << 0;
pub const REAL_F_LOCAL_REAL: u8 = 1 << 1;

/// [`VipKey::family`] of an IPv4 VIP.
pub const FAMILY_V4: u8 = 0;
/// [`VipKey::family`] of an IPv6 VIP.
pub const FAMILY_V6: u8 = 1;

pub const DEFAULT_RING_SIZE: u32 = 65537;
pub const DEFAULT_MAX_VIPS: u32 = 512;
pub const DEFAULT_MAX_REALS: u32 = 4096;
pub const DEFAULT_CONNS: u32 = 8_000_000;
pub const DEFAULT_MTU: u32 = 1500;
pub const UDP_CONN_TIMEOUT_NS: u64 = 30_000_000_000;
pub const MAX_CONN_RATE: u64 = 125_000;
/// Real index 0 is never allocated: a ring slot holding it is empty.
pub const REAL_NONE: u32 = 0;
/// Ring slots per element of [`map::CH_RINGS`] (see [`RingSlots`]).
pub const RING_SLOTS_PER_ELEM: u32 = 2;
pub const VIP_FILTER_BITS: u32 = 12;
pub const VIP_FILTER_SIZE: u32 = 1 << VIP_FILTER_BITS;
pub const FILTER_MULT: u32 = 0x9E37_79B1;

/// The [`map::VIP_FILTER`] bucket of an address: the Rust twin of
/// `vip_filter_bucket` in weir_abi.h (XOR of the address's 32-bit words as
/// stored, Fibonacci-hashed to [`VIP_FILTER_BITS`] bits).
pub fn vip_filter_bucket(addr: IpAddr) -> u32 {
    let bytes = addr_bytes(addr);
    let word = bytes.chunks_exact(4).fold(0u32, |acc, w| acc ^ u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    word.wrapping_mul(FILTER_MULT) >> (32 - VIP_FILTER_BITS)
}

/// The counters of [`GlobalStats`] (the one entry of [`map::STATS`]).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stat {
    Lru = 0,
    LruMiss,
    LruFallback,
    ChDrop,
    EncapFail,
    IcmpTooBig,
    IcmpFwd,
    NotBalanced,
    NewConnRate,
    XdpTotal,
    XdpTx,
    XdpDrop,
    XdpPass,
    /// v1: IPv4 VIP packets dropped because the frame is shorter than the
    /// header's tot_len, or tot_len shorter than the header; v2: IPv6,
    /// shorter than 40 + payload_len (`lengths_agree` in balancer.bpf.c).
    BadLen,
}

impl Stat {
    /// Number of counters in [`GlobalStats`].
    pub const COUNT: u32 = 14;

    /// Every counter, in index order.
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::Lru,
        Stat::LruMiss,
        Stat::LruFallback,
        Stat::ChDrop,
        Stat::EncapFail,
        Stat::IcmpTooBig,
        Stat::IcmpFwd,
        Stat::NotBalanced,
        Stat::NewConnRate,
        Stat::XdpTotal,
        Stat::XdpTx,
        Stat::XdpDrop,
        Stat::XdpPass,
        Stat::BadLen,
    ];
}

/// Indices of the per-CPU decap counter map [`map::DECAP_STATS`].
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecapStat {
    V4 = 0,
    V6,
    Pass,
}

impl DecapStat {
    /// Number of entries in [`map::DECAP_STATS`].
    pub const COUNT: u32 = 3;
}

/// `struct vip_key`: a VIP is (family, address, port, protocol); port 0
/// covers every port. The family keeps an IPv4 address apart from the IPv6
/// address whose first four bytes are the same and the rest zero.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct VipKey {
    pub addr: [u8; 16],
    pub port: [u8; 2],
    pub proto: u8,
    /// [`FAMILY_V4`] or [`FAMILY_V6`].
    pub family: u8,
}

/// `struct vip_meta`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VipMeta {
    pub flags: u32,
    pub vip_num: u32,
    /// Names the VIP in [`ConnKey`]s; never reused.
    pub conn_tag: u32,
}

/// `struct real_def`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RealDef {
    pub addr: [u8; 16],
    pub flags: u8,
    pub pad: [u8; 3],
}

/// `struct conn_key`: a flow of one VIP (named by its conn_tag), as the
/// VIP's flags shaped it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct ConnKey {
    pub src: [u8; 16],
    pub conn_tag: u32,
    pub sport: [u8; 2],
    pub dport: [u8; 2],
}

/// `struct conn_entry`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnEntry {
    pub real_index: u32,
    pub pad: u32,
    pub atime_ns: u64,
}

/// `struct lb_ctl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LbCtl {
    pub default_mac: [u8; 6],
    pub pad: [u8; 2],
}

/// `struct lb_counter`: two numbers whose meaning depends on the counter.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LbCounter {
    pub v1: u64,
    pub v2: u64,
}

/// `struct vip_filter`: VIPs (and port-less VIPs) whose address is in a bucket.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VipFilter {
    pub vips: u32,
    pub portless: u32,
}

/// `struct ring_slots`: an element of [`map::CH_RINGS`], consecutive ring
/// slots stored densely (the kernel would round a lone u32 up to 8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingSlots {
    pub real: [u32; RING_SLOTS_PER_ELEM as usize],
}

impl RingSlots {
    /// Elements of [`map::CH_RINGS`] that hold `slots` ring slots.
    pub fn elements(slots: u32) -> u32 {
        slots.div_ceil(RING_SLOTS_PER_ELEM)
    }
}

/// `struct hc_ctl`: the one entry of [`map::HC_CTL`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HcCtl {
    /// The main interface's index; 0 drops every probe.
    pub ifindex: u32,
    /// Its L3 MTU.
    pub mtu: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    /// Outer source toward IPv4 reals; 0 derives it as the balancer does.
    pub src_v4: [u8; 4],
    /// Outer source toward IPv6 reals; all zero derives it.
    pub src_v6: [u8; 16],
}

/// `struct hc_stats`: the one (per-CPU) entry of [`map::HC_STATS`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HcStats {
    pub processed: u64,
    pub dropped: u64,
    pub skipped: u64,
    pub too_big: u64,
}

/// `struct global_stats`: the one entry of [`map::STATS`], indexed by [`Stat`].
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GlobalStats {
    pub stat: [LbCounter; Stat::COUNT as usize],
}

impl GlobalStats {
    pub fn get(&self, stat: Stat) -> LbCounter {
        self.stat[stat as usize]
    }
}

// SAFETY: each type is #[repr(C)], made only of integers and byte arrays, with
// explicit padding fields, so every bit pattern is valid and there are no holes.
unsafe impl aya::Pod for VipKey {}
unsafe impl aya::Pod for VipMeta {}
unsafe impl aya::Pod for RealDef {}
unsafe impl aya::Pod for ConnKey {}
unsafe impl aya::Pod for ConnEntry {}
unsafe impl aya::Pod for LbCtl {}
unsafe impl aya::Pod for LbCounter {}
unsafe impl aya::Pod for GlobalStats {}
unsafe impl aya::Pod for VipFilter {}
unsafe impl aya::Pod for RingSlots {}
unsafe impl aya::Pod for HcCtl {}
unsafe impl aya::Pod for HcStats {}

/// An address in the ABI's 16-byte form: IPv4 in the first 4 bytes, rest zero.
pub fn addr_bytes(addr: IpAddr) -> [u8; 16] {
    match addr {
        IpAddr::V4(v4) => {
            let mut out = [0; 16];
            out[..4].copy_from_slice(&v4.octets());
            out
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

/// The inverse of [`addr_bytes`]; `v6` says which family the bytes hold.
pub fn addr_from_bytes(bytes: [u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

impl VipKey {
    pub fn new(addr: IpAddr, port: u16, proto: u8) -> Self {
        let family = if addr.is_ipv6() { FAMILY_V6 } else { FAMILY_V4 };
        Self { addr: addr_bytes(addr), port: port.to_be_bytes(), proto, family }
    }
}

impl RealDef {
    pub fn new(addr: IpAddr, flags: u8) -> Self {
        let family = if addr.is_ipv6() { REAL_F_IPV6 } else { 0 };
        Self { addr: addr_bytes(addr), flags: (flags & !REAL_F_IPV6) | family, pad: [0; 3] }
    }

    pub fn ip(&self) -> IpAddr {
        addr_from_bytes(self.addr, self.flags & REAL_F_IPV6 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    include!(concat!(env!("OUT_DIR"), "/abi_layout.rs"));

    fn c_layout(name: &str) -> usize {
        C_LAYOUT.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} missing from abi_layout.c")).1
    }

    fn c_const(name: &str) -> u64 {
        C_CONSTANTS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} missing from abi_layout.c")).1
    }

    #[test]
    fn struct_layouts_match_c() {
        let rust: &[(&str, usize)] = &[
            ("vip_key", size_of::<VipKey>()),
            ("vip_key.addr", offset_of!(VipKey, addr)),
            ("vip_key.port", offset_of!(VipKey, port)),
            ("vip_key.proto", offset_of!(VipKey, proto)),
            ("vip_key.family", offset_of!(VipKey, family)),
            ("vip_meta", size_of::<VipMeta>()),
            ("vip_meta.flags", offset_of!(VipMeta, flags)),
            ("vip_meta.vip_num", offset_of!(VipMeta, vip_num)),
            ("vip_meta.conn_tag", offset_of!(VipMeta, conn_tag)),
            ("real_def", size_of::<RealDef>()),
            ("real_def.addr", offset_of!(RealDef, addr)),
            ("real_def.flags", offset_of!(RealDef, flags)),
            ("conn_key", size_of::<ConnKey>()),
            ("conn_key.src", offset_of!(ConnKey, src)),
            ("conn_key.conn_tag", offset_of!(ConnKey, conn_tag)),
            ("conn_key.sport", offset_of!(ConnKey, sport)),
            ("conn_key.dport", offset_of!(ConnKey, dport)),
            ("conn_entry", size_of::<ConnEntry>()),
            ("conn_entry.real_index", offset_of!(ConnEntry, real_index)),
            ("conn_entry.atime_ns", offset_of!(ConnEntry, atime_ns)),
            ("lb_ctl", size_of::<LbCtl>()),
            ("lb_ctl.default_mac", offset_of!(LbCtl, default_mac)),
            ("lb_counter", size_of::<LbCounter>()),
            ("lb_counter.v1", offset_of!(LbCounter, v1)),
            ("lb_counter.v2", offset_of!(LbCounter, v2)),
            ("global_stats", size_of::<GlobalStats>()),
            ("global_stats.stat", offset_of!(GlobalStats, stat)),
            ("vip_filter", size_of::<VipFilter>()),
            ("vip_filter.vips", offset_of!(VipFilter, vips)),
            ("vip_filter.portless", offset_of!(VipFilter, portless)),
            ("ring_slots", size_of::<RingSlots>()),
            ("ring_slots.real", offset_of!(RingSlots, real)),
            ("hc_ctl", size_of::<HcCtl>()),
            ("hc_ctl.ifindex", offset_of!(HcCtl, ifindex)),
            ("hc_ctl.mtu", offset_of!(HcCtl, mtu)),
            ("hc_ctl.src_mac", offset_of!(HcCtl, src_mac)),
            ("hc_ctl.dst_mac", offset_of!(HcCtl, dst_mac)),
            ("hc_ctl.src_v4", offset_of!(HcCtl, src_v4)),
            ("hc_ctl.src_v6", offset_of!(HcCtl, src_v6)),
            ("hc_stats", size_of::<HcStats>()),
            ("hc_stats.processed", offset_of!(HcStats, processed)),
            ("hc_stats.dropped", offset_of!(HcStats, dropped)),
            ("hc_stats.skipped", offset_of!(HcStats, skipped)),
            ("hc_stats.too_big", offset_of!(HcStats, too_big)),
        ];
        for (name, value) in rust {
            assert_eq!(*value, c_layout(name), "{name}: Rust and C disagree");
        }
        assert_eq!(rust.len(), C_LAYOUT.len(), "a C struct or field has no Rust check");
    }

    #[test]
    fn constants_match_c() {
        let rust: &[(&str, u64)] = &[
            ("VIP_F_NO_SPORT", VIP_F_NO_SPORT.into()),
            ("VIP_F_NO_LRU", VIP_F_NO_LRU.into()),
            ("VIP_F_QUIC_VIP", VIP_F_QUIC_VIP.into()),
            ("VIP_F_DPORT_HASH", VIP_F_DPORT_HASH.into()),
            ("VIP_F_SRC_ROUTING", VIP_F_SRC_ROUTING.into()),
            ("VIP_F_LOCAL_VIP", VIP_F_LOCAL_VIP.into()),
            ("VIP_F_GLOBAL_LRU", VIP_F_GLOBAL_LRU.into()),
            ("VIP_F_HASH_SRC_DST_PORT", VIP_F_HASH_SRC_DST_PORT.into()),
            ("VIP_F_UDP_STABLE_ROUTING", VIP_F_UDP_STABLE_ROUTING.into()),
            ("VIP_F_UDP_FLOW_MIGRATION", VIP_F_UDP_FLOW_MIGRATION.into()),
            ("VIP_F_SUPPORTED", VIP_F_SUPPORTED.into()),
            ("REAL_F_IPV6", REAL_F_IPV6.into()),
            ("REAL_F_LOCAL_REAL", REAL_F_LOCAL_REAL.into()),
            ("WEIR_FAMILY_V4", FAMILY_V4.into()),
            ("WEIR_FAMILY_V6", FAMILY_V6.into()),
            ("WEIR_RING_SLOTS_PER_ELEM", RING_SLOTS_PER_ELEM.into()),
            ("WEIR_DEFAULT_RING_SIZE", DEFAULT_RING_SIZE.into()),
            ("WEIR_DEFAULT_MAX_VIPS", DEFAULT_MAX_VIPS.into()),
            ("WEIR_DEFAULT_MAX_REALS", DEFAULT_MAX_REALS.into()),
            ("WEIR_DEFAULT_CONNS", DEFAULT_CONNS.into()),
            ("WEIR_DEFAULT_MTU", DEFAULT_MTU.into()),
            ("WEIR_UDP_CONN_TIMEOUT_NS", UDP_CONN_TIMEOUT_NS),
            ("WEIR_MAX_CONN_RATE", MAX_CONN_RATE),
            ("WEIR_REAL_NONE", REAL_NONE.into()),
            ("WEIR_VIP_FILTER_BITS", VIP_FILTER_BITS.into()),
            ("WEIR_VIP_FILTER_SIZE", VIP_FILTER_SIZE.into()),
            ("WEIR_FILTER_MULT", FILTER_MULT.into()),
            ("WEIR_STAT_LRU", Stat::Lru as u64),
            ("WEIR_STAT_LRU_MISS", Stat::LruMiss as u64),
            ("WEIR_STAT_LRU_FALLBACK", Stat::LruFallback as u64),
            ("WEIR_STAT_CH_DROP", Stat::ChDrop as u64),
            ("WEIR_STAT_ENCAP_FAIL", Stat::EncapFail as u64),
            ("WEIR_STAT_ICMP_TOOBIG", Stat::IcmpTooBig as u64),
            ("WEIR_STAT_ICMP_FWD", Stat::IcmpFwd as u64),
            ("WEIR_STAT_NOT_BALANCED", Stat::NotBalanced as u64),
            ("WEIR_STAT_NEW_CONN_RATE", Stat::NewConnRate as u64),
            ("WEIR_STAT_XDP_TOTAL", Stat::XdpTotal as u64),
            ("WEIR_STAT_XDP_TX", Stat::XdpTx as u64),
            ("WEIR_STAT_XDP_DROP", Stat::XdpDrop as u64),
            ("WEIR_STAT_XDP_PASS", Stat::XdpPass as u64),
            ("WEIR_STAT_BAD_LEN", Stat::BadLen as u64),
            ("WEIR_STAT_MAX", Stat::COUNT.into()),
            ("WEIR_DECAP_STAT_V4", DecapStat::V4 as u64),
            ("WEIR_DECAP_STAT_V6", DecapStat::V6 as u64),
            ("WEIR_DECAP_STAT_PASS", DecapStat::Pass as u64),
            ("WEIR_DECAP_STAT_MAX", DecapStat::COUNT.into()),
        ];
        for (name, value) in rust {
            assert_eq!(*value, c_const(name), "{name}: Rust and C disagree");
        }
        assert_eq!(rust.len(), C_CONSTANTS.len(), "a C constant has no Rust check");
    }

    #[test]
    fn stat_all_lists_every_index_once() {
        for (index, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, index, "{stat:?}");
        }
    }

    #[test]
    fn vip_filter_bucket_matches_c() {
        for (words, bucket) in C_FILTER_BUCKETS {
            let mut bytes = [0u8; 16];
            for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            let v4 = bytes[4..].iter().all(|b| *b == 0);
            let addr = addr_from_bytes(bytes, !v4);
            assert_eq!(vip_filter_bucket(addr), *bucket, "{addr}");
        }
    }

    #[test]
    fn programs_are_embedded_elf_objects() {
        for object in [crate::BALANCER, crate::DECAP, crate::HEALTHCHECK] {
            assert_eq!(&object[..4], b"\x7fELF");
        }
    }

    #[test]
    fn vip_keys_of_the_two_families_never_collide() {
        // 32.1.13.184 is the first word of 2001:db8:: (0x20010db8).
        let v4 = VipKey::new("32.1.13.184".parse().unwrap(), 80, 6);
        let v6 = VipKey::new("2001:db8::".parse().unwrap(), 80, 6);
        assert_eq!(v4.addr, v6.addr, "the same 16 bytes");
        assert_eq!((v4.family, v6.family), (FAMILY_V4, FAMILY_V6));
        assert_ne!(v4, v6);
    }

    #[test]
    fn real_def_takes_its_family_from_the_address() {
        let v6 = RealDef::new("2001:db8::1".parse().unwrap(), REAL_F_LOCAL_REAL);
        assert_eq!(v6.flags, REAL_F_IPV6 | REAL_F_LOCAL_REAL);
        assert_eq!(v6.ip(), "2001:db8::1".parse::<IpAddr>().unwrap());
        // A caller cannot claim IPv6 for an IPv4 address.
        let v4 = RealDef::new("10.0.0.1".parse().unwrap(), REAL_F_IPV6);
        assert_eq!(v4.flags, 0);
        assert_eq!(v4.ip(), "10.0.0.1".parse::<IpAddr>().unwrap());
    }
}
