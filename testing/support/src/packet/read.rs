//! Checksums, and reading back what a test put in a frame: header lengths,
//! the client of a flow, the outer destination of an encapsulated frame.

use std::net::IpAddr;

use super::{ETH_P_8021AD, ETH_P_8021Q, IPPROTO_ICMP, IPPROTO_ICMPV6};

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn inet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Recomputes the checksum of an IPv4 `header` (all its bytes, options included).
pub fn fix_ipv4_checksum(header: &mut [u8]) {
    header[10..12].copy_from_slice(&[0, 0]);
    let sum = inet_checksum(header);
    header[10..12].copy_from_slice(&sum.to_be_bytes());
}

// ---- Reading back what a test put in a frame ----

/// Length of the L2 header: 14, or 18 with one VLAN tag.
pub fn l2_len(frame: &[u8]) -> usize {
    match u16::from_be_bytes([frame[12], frame[13]]) {
        ETH_P_8021Q | ETH_P_8021AD => 18,
        _ => 14,
    }
}

/// The IP packet's length as its header states it (IPv4 total length; IPv6
/// 40 + payload length): what the per-VIP and per-real byte counters add.
pub fn l3_len(frame: &[u8]) -> u64 {
    let ip = &frame[l2_len(frame)..];
    match ip[0] >> 4 {
        4 => u64::from(u16::from_be_bytes([ip[2], ip[3]])),
        6 => 40 + u64::from(u16::from_be_bytes([ip[4], ip[5]])),
        v => panic!("IP version {v}"),
    }
}

/// The client of the flow a frame belongs to, as (address, port): the source
/// of a TCP/UDP packet, or the destination of the packet an ICMP error quotes
/// (the quoted packet is the reply VIP -> client).
pub fn client_of(frame: &[u8]) -> (IpAddr, u16) {
    let ip = &frame[l2_len(frame)..];
    let port_at = |b: &[u8], at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    match ip[0] >> 4 {
        4 => {
            let l4 = &ip[usize::from(ip[0] & 0x0f) * 4..];
            if ip[9] == IPPROTO_ICMP {
                let quoted = &l4[8..];
                let ports = &quoted[usize::from(quoted[0] & 0x0f) * 4..];
                (v4_at(quoted, 16), port_at(ports, 2))
            } else {
                (v4_at(ip, 12), port_at(l4, 0))
            }
        }
        6 => {
            let l4 = &ip[40..];
            if ip[6] == IPPROTO_ICMPV6 {
                let quoted = &l4[8..];
                (v6_at(quoted, 24), port_at(quoted, 42))
            } else {
                (v6_at(ip, 8), port_at(l4, 0))
            }
        }
        v => panic!("IP version {v}"),
    }
}

fn v4_at(b: &[u8], at: usize) -> IpAddr {
    IpAddr::from(<[u8; 4]>::try_from(&b[at..at + 4]).unwrap())
}

fn v6_at(b: &[u8], at: usize) -> IpAddr {
    IpAddr::from(<[u8; 16]>::try_from(&b[at..at + 16]).unwrap())
}

/// The outer destination of an encapsulated frame (the real), read by hand.
pub fn outer_dst(frame: &[u8]) -> IpAddr {
    let ip = &frame[l2_len(frame)..];
    match ip[0] >> 4 {
        4 => v4_at(ip, 16),
        6 => v6_at(ip, 24),
        v => panic!("IP version {v}"),
    }
}

/// A frame as one hex string, for assertion messages.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
