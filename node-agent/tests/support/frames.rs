//! The addresses and counter changes the balancer's packet tables share
//! (`balancer_prog.rs`, `balancer_too_big.rs`).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use weir_ebpf::abi::Stat;

pub const TCP: u8 = 6;
pub const UDP: u8 = 17;

pub const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
pub const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0xc0de, 0x1f07);
pub const VIP4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
pub const VIP4B: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 2);
pub const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
pub const ROUTER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xff, 0, 0, 0, 0, 1);

/// IPv4 real `10.0.0.i`.
pub fn r4(i: u8) -> IpAddr {
    Ipv4Addr::new(10, 0, 0, i).into()
}

/// IPv6 real `fd00::i`.
pub fn r6(i: u16) -> IpAddr {
    Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, i).into()
}

// Counter changes of the usual connection-table outcomes (besides XdpTotal
// and the verdict's counter, which the harness adds).

/// A TCP non-SYN with no entry: the ring, counted as a non-SYN miss.
pub const ACK_MISS: &[(Stat, u64, u64)] = &[(Stat::Lru, 1, 1), (Stat::LruMiss, 0, 1)];
/// A UDP datagram (or ICMP error) with no entry: the ring, no LruMiss.
pub const RING: &[(Stat, u64, u64)] = &[(Stat::Lru, 1, 1)];
