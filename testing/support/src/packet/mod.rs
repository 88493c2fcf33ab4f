//! Packets for the datapath's tests and benchmarks, built from the protocols'
//! rules (never from program output), and the readers their assertions need.
//!
//! - [`build`]: input frames and IP packets (etherparse's `PacketBuilder`
//!   where it can: valid IP, TCP, UDP and ICMP checksums), Ethernet headers,
//!   VLAN tags, ARP, and the outer IPv4/IPv6 headers of IP-in-IP;
//! - [`reshape`]: what the builder cannot do, done by hand to a built frame
//!   (TOS, IPv4 options and fragment bits, IPv6 extension headers, lying
//!   lengths, padding, truncation); every reshaping keeps the IPv4 header
//!   checksum valid;
//! - [`read`]: checksums, and reading back what a test put in a frame;
//! - [`expect`]: the frame the balancer should transmit, written byte by byte
//!   from the rules of `encap.h`, and a diff for assertion messages.
//!
//! Everything is re-exported here: `use weir_test_support::packet::*`.

pub mod build;
pub mod expect;
pub mod read;
pub mod reshape;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

pub use build::*;
pub use expect::*;
pub use read::*;
pub use reshape::*;

/// The balancer's NIC: the Ethernet destination of the packet tables' frames.
pub const MAC_LB: [u8; 6] = [0x02, 0x4c, 0x42, 0x00, 0x00, 0x01];
/// The router that hands frames to the balancer: their Ethernet source.
pub const MAC_UPSTREAM: [u8; 6] = [0x02, 0x55, 0x50, 0x00, 0x00, 0x02];
/// `BalancerConfig::testing()`'s default MAC: the destination of encapsulated frames.
pub const TESTING_MAC: [u8; 6] = [0x02, 0x00, 0x00, 0x00, 0x00, 0x01];

pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_LLDP: u16 = 0x88cc;

pub const IPPROTO_HOPOPTS: u8 = 0;
pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_IPIP: u8 = 4;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_IPV6: u8 = 41;
pub const IPPROTO_FRAGMENT: u8 = 44;
pub const IPPROTO_GRE: u8 = 47;
pub const IPPROTO_ICMPV6: u8 = 58;

pub fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

pub fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("an IPv6 address")
}

pub fn sock(addr: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}
