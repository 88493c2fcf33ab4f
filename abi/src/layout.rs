//! The `#[repr(C)]` mirror of weir_abi.h's map keys and values, the
//! datapath's constants and limits, and the address encoding they share.
//! Field meanings are documented in the header; weir-ebpf's tests compare
//! every size, offset and constant here with what the C compiler made of it.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::flags::{RealFlags, VipFlags};
use crate::stats::Stat;

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
    /// Non-zero: a VIP packet too big once encapsulated is answered with an
    /// ICMP "fragmentation needed" / ICMPv6 "packet too big" (sent back with
    /// XDP_TX) instead of being dropped.
    pub const ICMP_TOO_BIG: &str = "weir_icmp_too_big";
}

// The flags under their C names, as numbers (the Balancer API, REST and the
// packet tests take numbers); their one definition is [`VipFlags`] / [`RealFlags`].
pub const VIP_F_NO_SPORT: u32 = VipFlags::NO_SPORT.bits();
pub const VIP_F_NO_LRU: u32 = VipFlags::NO_LRU.bits();
pub const VIP_F_QUIC_VIP: u32 = VipFlags::QUIC_VIP.bits();
pub const VIP_F_DPORT_HASH: u32 = VipFlags::DPORT_HASH.bits();
pub const VIP_F_SRC_ROUTING: u32 = VipFlags::SRC_ROUTING.bits();
pub const VIP_F_LOCAL_VIP: u32 = VipFlags::LOCAL_VIP.bits();
pub const VIP_F_GLOBAL_LRU: u32 = VipFlags::GLOBAL_LRU.bits();
pub const VIP_F_HASH_SRC_DST_PORT: u32 = VipFlags::HASH_SRC_DST_PORT.bits();
pub const VIP_F_UDP_STABLE_ROUTING: u32 = VipFlags::UDP_STABLE_ROUTING.bits();
pub const VIP_F_UDP_FLOW_MIGRATION: u32 = VipFlags::UDP_FLOW_MIGRATION.bits();
/// The VIP flags the datapath honours.
pub const VIP_F_SUPPORTED: u32 = VipFlags::SUPPORTED.bits();

pub const REAL_F_IPV6: u8 = RealFlags::IPV6.bits();
pub const REAL_F_LOCAL_REAL: u8 = RealFlags::LOCAL_REAL.bits();

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
/// TTL / hop limit of the ICMP too-big replies (Katran's `DEFAULT_TTL`).
pub const ICMP_TTL: u8 = 64;
/// Bytes of the offending IPv4 packet a "fragmentation needed" reply quotes
/// (Katran's: its IP header and 64 bytes more).
pub const ICMP_QUOTE_V4: u32 = 84;
/// Bytes of the offending IPv6 packet a "packet too big" reply quotes
/// (Katran's: its IPv6 header and 208 bytes more).
pub const ICMP_QUOTE_V6: u32 = 248;
/// Ring slots per element of [`crate::map::CH_RINGS`] (see [`RingSlots`]).
pub const RING_SLOTS_PER_ELEM: u32 = 2;
pub const VIP_FILTER_BITS: u32 = 12;
pub const VIP_FILTER_SIZE: u32 = 1 << VIP_FILTER_BITS;
pub const FILTER_MULT: u32 = 0x9E37_79B1;

/// The [`crate::map::VIP_FILTER`] bucket of an address: the Rust twin of
/// `vip_filter_bucket` in weir_abi.h (XOR of the address's 32-bit words as
/// stored, Fibonacci-hashed to [`VIP_FILTER_BITS`] bits).
pub fn vip_filter_bucket(addr: IpAddr) -> u32 {
    let bytes = addr_bytes(addr);
    let word = bytes.chunks_exact(4).fold(0u32, |acc, w| acc ^ u32::from_ne_bytes([w[0], w[1], w[2], w[3]]));
    word.wrapping_mul(FILTER_MULT) >> (32 - VIP_FILTER_BITS)
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

/// `struct ring_slots`: an element of [`crate::map::CH_RINGS`], consecutive ring
/// slots stored densely (the kernel would round a lone u32 up to 8 bytes).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RingSlots {
    pub real: [u32; RING_SLOTS_PER_ELEM as usize],
}

/// `struct hc_ctl`: the one entry of [`map::HC_CTL`](crate::map::HC_CTL).
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

/// `struct hc_stats`: the one (per-CPU) entry of [`map::HC_STATS`](crate::map::HC_STATS).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HcStats {
    pub processed: u64,
    pub dropped: u64,
    pub skipped: u64,
    pub too_big: u64,
}

impl RingSlots {
    /// Elements of [`crate::map::CH_RINGS`] that hold `slots` ring slots.
    pub fn elements(slots: u32) -> u32 {
        slots.div_ceil(RING_SLOTS_PER_ELEM)
    }
}

/// `struct global_stats`: the one entry of [`crate::map::STATS`], indexed by [`Stat`].
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
