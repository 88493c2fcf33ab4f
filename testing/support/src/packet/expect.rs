//! The frames the balancer should transmit, written byte by byte from the
//! rules of `encap.h` (the test only reads back what it put in the input: the
//! client, the TOS, the IP length), and where two frames differ.

use std::net::IpAddr;

use super::read::{client_of, inet_checksum, l2_len, l3_len};
use super::{ETH_P_IP, ETH_P_IPV6, IPPROTO_IPIP, IPPROTO_IPV6};

/// The frame the balancer should transmit for `input` toward `real`, with
/// `mac` as the Ethernet destination, written from the rules of encap.h:
///
/// - Ethernet: destination `mac`, source = the input's destination; a VLAN tag
///   stays (same TPID and TCI) and its ethertype becomes the outer family's;
/// - IPv4 outer (IPv4 inner, IPv4 real): 0x45, TOS = inner TOS, total length =
///   inner length + 20, id 0, no flags, TTL 64, protocol 4, valid checksum,
///   source 172.16.(c[2]^p[0]).(c[3]^p[1]), destination = the real;
/// - IPv6 outer (IPv6 real): version 6, traffic class = inner TOS / traffic
///   class, flow label 0, payload length = inner length, next header 41
///   (IPv6 inner) or 4 (IPv4 inner), hop limit 64, source 0100::/64 with bytes
///   12..16 = (t[0]^p[0], t[1]^p[1], t[2], t[3]) where t = the client's last
///   4 bytes, destination = the real;
/// - then the input's IP packet (and any Ethernet padding) untouched.
///
/// `c` is the client's IPv4 address and `p` its port in network order, the
/// port as sent (before any NO_SPORT / DPORT_HASH reshaping).
pub fn encapsulated(input: &[u8], mac: [u8; 6], real: IpAddr) -> Vec<u8> {
    let l2 = l2_len(input);
    let inner = &input[l2..];
    let (client, port) = client_of(input);
    let p = port.to_be_bytes();
    let inner_v6 = inner[0] >> 4 == 6;
    let tos = if inner_v6 { (inner[0] << 4) | (inner[1] >> 4) } else { inner[1] };
    let inner_len = l3_len(input) as u16;

    let mut out = Vec::with_capacity(input.len() + 40);
    out.extend_from_slice(&mac);
    out.extend_from_slice(&input[0..6]);
    if l2 == 18 {
        out.extend_from_slice(&input[12..16]); // TPID and TCI
    }
    match real {
        IpAddr::V4(real) => {
            assert!(!inner_v6, "no IPv6-in-IPv4");
            let c = match client {
                IpAddr::V4(c) => c.octets(),
                IpAddr::V6(_) => unreachable!(),
            };
            let total = (inner_len + 20).to_be_bytes();
            #[rustfmt::skip]
            let mut h = [
                0x45, tos, total[0], total[1],
                0, 0, 0, 0,                 // id, flags and offset
                64, IPPROTO_IPIP, 0, 0,     // TTL, protocol, checksum (below)
                172, 16, c[2] ^ p[0], c[3] ^ p[1],
                0, 0, 0, 0,                 // the real (below)
            ];
            h[16..20].copy_from_slice(&real.octets());
            let sum = inet_checksum(&h);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            out.extend_from_slice(&ETH_P_IP.to_be_bytes());
            out.extend_from_slice(&h);
        }
        IpAddr::V6(real) => {
            let t: [u8; 4] = match client {
                IpAddr::V4(c) => c.octets(),
                IpAddr::V6(c) => c.octets()[12..16].try_into().unwrap(),
            };
            let len = inner_len.to_be_bytes();
            let next = if inner_v6 { IPPROTO_IPV6 } else { IPPROTO_IPIP };
            #[rustfmt::skip]
            let mut h = [
                0x60 | (tos >> 4), tos << 4, 0, 0, // version, traffic class, flow label 0
                len[0], len[1], next, 64,
                0x01, 0, 0, 0, 0, 0, 0, 0,         // source: 0100::/64 ...
                0, 0, 0, 0, t[0] ^ p[0], t[1] ^ p[1], t[2], t[3],
                0, 0, 0, 0, 0, 0, 0, 0,            // the real (below)
                0, 0, 0, 0, 0, 0, 0, 0,
            ];
            h[24..40].copy_from_slice(&real.octets());
            out.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
            out.extend_from_slice(&h);
        }
    }
    out.extend_from_slice(inner);
    out
}

/// A compact dump of where two frames first differ, for assertion messages.
pub fn first_difference(got: &[u8], want: &[u8]) -> String {
    let at = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(got.len().min(want.len()));
    let window = |f: &[u8]| {
        let start = at.saturating_sub(4);
        let end = (at + 12).min(f.len());
        f.get(start..end).map(|b| format!("{b:02x?}")).unwrap_or_default()
    };
    format!(
        "lengths got {} want {}; first difference at byte {at}: got {} want {}",
        got.len(),
        want.len(),
        window(got),
        window(want)
    )
}
