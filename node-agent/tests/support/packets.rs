//! Frames for the balancer program's packet tables, and the frames it should
//! leave behind, built from the datapath's rules (never from program output).
//!
//! Input frames come from etherparse's `PacketBuilder` (valid IP, TCP, UDP and
//! ICMP checksums), then are reshaped by hand where the builder cannot help:
//! VLAN tags, TOS / traffic class, IPv4 options and fragment bits, IPv6
//! extension headers, truncation, Ethernet padding. Every reshaping keeps the
//! IPv4 header checksum valid.
//!
//! Expected encapsulated frames are written byte by byte in [`encapsulated`]
//! from the rules of `encap.h`: the test only reads back what it put in the
//! input (the client, the TOS, the IP length).

#![allow(dead_code)] // a helper module: not every test file uses every helper

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::PacketBuilder;

/// The balancer's NIC: the Ethernet destination of every input frame.
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

/// Payload of the TCP ACKs and UDP datagrams built here.
const PAYLOAD: &[u8] = b"weir: packet table payload, 48 bytes long ......";

// ---- Input frames ----

/// What kind of L4 segment a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    Syn,
    Ack,
    Udp,
}

/// An Ethernet frame from `src` to `dst` carrying `seg` with `payload_len`
/// bytes of payload (IPv4 or IPv6 after the addresses; both must agree).
pub fn frame(seg: Seg, src: SocketAddr, dst: SocketAddr, payload_len: usize) -> Vec<u8> {
    let payload: Vec<u8> = PAYLOAD.iter().copied().cycle().take(payload_len).collect();
    let eth = PacketBuilder::ethernet2(MAC_UPSTREAM, MAC_LB);
    let ip = match (src.ip(), dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => panic!("{src} and {dst} are of different families"),
    };
    let mut out = Vec::new();
    match seg {
        Seg::Syn => ip.tcp(src.port(), dst.port(), 0x1000_0000, 64240).syn().write(&mut out, &payload),
        Seg::Ack => ip.tcp(src.port(), dst.port(), 0x1000_0001, 502).ack(0x2000_0001).write(&mut out, &payload),
        Seg::Udp => ip.udp(src.port(), dst.port()).write(&mut out, &payload),
    }
    .expect("etherparse builds the frame");
    out
}

/// A TCP SYN (no payload).
pub fn syn(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    frame(Seg::Syn, src, dst, 0)
}

/// A TCP ACK with a 48-byte payload.
pub fn ack(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    frame(Seg::Ack, src, dst, PAYLOAD.len())
}

/// A UDP datagram with a 48-byte payload.
pub fn udp(src: SocketAddr, dst: SocketAddr) -> Vec<u8> {
    frame(Seg::Udp, src, dst, PAYLOAD.len())
}

/// A TCP ACK whose IP packet is exactly `l3_len` bytes long.
pub fn ack_of_l3_len(src: SocketAddr, dst: SocketAddr, l3_len: usize) -> Vec<u8> {
    let headers = if src.is_ipv4() { 20 + 20 } else { 40 + 20 };
    let f = frame(Seg::Ack, src, dst, l3_len - headers);
    assert_eq!(f.len(), 14 + l3_len);
    f
}

/// An ARP request (who-has `target`).
pub fn arp(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = eth_header([0xff; 6], MAC_UPSTREAM, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]); // Ethernet, IPv4, request
    f.extend_from_slice(&MAC_UPSTREAM);
    f.extend_from_slice(&sender.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f
}

/// An Ethernet header followed by `payload` as an opaque `ethertype` payload.
pub fn raw(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = eth_header(MAC_LB, MAC_UPSTREAM, ethertype);
    f.extend_from_slice(payload);
    f
}

fn eth_header(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An ICMP echo request (IPv4) or ICMPv6 echo request from `src` to `dst`.
pub fn echo(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_UPSTREAM, MAC_LB);
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            eth.ipv4(s.octets(), d.octets(), 64).icmpv4_echo_request(0x77, 1).write(&mut out, PAYLOAD)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            eth.ipv6(s.octets(), d.octets(), 64).icmpv6_echo_request(0x77, 1).write(&mut out, PAYLOAD)
        }
        _ => panic!("mixed families"),
    }
    .expect("etherparse builds the frame");
    out
}

/// An ICMP error (`icmp_type`/`code`, `rest` = bytes 5..8, e.g. the MTU) sent
/// by `router` to `to`, quoting `quoted`: an IP packet (header and at least
/// the first 8 bytes of its payload) as the router saw it.
pub fn icmp_error(router: IpAddr, to: IpAddr, icmp_type: u8, code: u8, rest: [u8; 4], quoted: &[u8]) -> Vec<u8> {
    let eth = PacketBuilder::ethernet2(MAC_UPSTREAM, MAC_LB);
    let mut out = Vec::new();
    match (router, to) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            eth.ipv4(s.octets(), d.octets(), 64).icmpv4_raw(icmp_type, code, rest).write(&mut out, quoted)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            eth.ipv6(s.octets(), d.octets(), 64).icmpv6_raw(icmp_type, code, rest).write(&mut out, quoted)
        }
        _ => panic!("mixed families"),
    }
    .expect("etherparse builds the frame");
    out
}

/// What an ICMP error quotes: the IP header of a packet from `from` to `to`
/// and the first 8 bytes of its TCP or UDP header (as RFC 792 requires).
pub fn quote(seg: Seg, from: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let f = frame(seg, from, to, 0);
    let ip_header = if from.is_ipv4() { 20 } else { 40 };
    f[14..14 + ip_header + 8].to_vec()
}

// ---- Reshaping input frames (untagged frames unless said otherwise) ----

/// Inserts one VLAN tag (`tpid` 0x8100 or 0x88a8, `tci`) after the MAC addresses.
pub fn tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// Sets the IPv4 TOS or the IPv6 traffic class (no L4 checksum covers them).
pub fn with_tos(frame: &[u8], tos: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    match f[14] >> 4 {
        4 => {
            f[15] = tos;
            fix_ipv4_checksum(&mut f[14..34]);
        }
        6 => {
            f[14] = 0x60 | (tos >> 4);
            f[15] = (tos << 4) | (f[15] & 0x0f);
        }
        v => panic!("IP version {v}"),
    }
    f
}

/// Sets the 20-bit IPv6 flow label.
pub fn with_flow_label(frame: &[u8], label: u32) -> Vec<u8> {
    let mut f = frame.to_vec();
    assert_eq!(f[14] >> 4, 6);
    f[15] = (f[15] & 0xf0) | ((label >> 16) as u8 & 0x0f);
    f[16] = (label >> 8) as u8;
    f[17] = label as u8;
    f
}

/// Sets the IPv4 identification and flags/fragment-offset word (`0x2000` = MF,
/// `0x4000` = DF, low 13 bits = offset in 8-byte units).
pub fn with_ipv4_frag(frame: &[u8], id: u16, frag: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20..22].copy_from_slice(&frag.to_be_bytes());
    fix_ipv4_checksum(&mut f[14..34]);
    f
}

/// Appends `options` (a multiple of 4 bytes) to the IPv4 header.
pub fn with_ipv4_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut f = frame[..34].to_vec();
    f.extend_from_slice(options);
    f.extend_from_slice(&frame[34..]);
    f[14] = 0x40 | ((20 + options.len()) / 4) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) + options.len() as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    let ihl = 20 + options.len();
    fix_ipv4_checksum(&mut f[14..14 + ihl]);
    f
}

/// Changes the IPv4 protocol number (what followed becomes opaque payload).
pub fn with_ipv4_proto(frame: &[u8], proto: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[23] = proto;
    fix_ipv4_checksum(&mut f[14..34]);
    f
}

/// Inserts an IPv6 extension header of type `next_header` whose body (after
/// its next-header byte) is `body`; the upper-layer checksum stays valid.
pub fn with_ipv6_ext(frame: &[u8], next_header: u8, body: &[u8]) -> Vec<u8> {
    assert_eq!((body.len() + 1) % 8, 0);
    let mut f = frame[..54].to_vec();
    f.push(frame[20]); // the extension header's next header: the old one
    f.extend_from_slice(body);
    f.extend_from_slice(&frame[54..]);
    f[20] = next_header;
    let payload = u16::from_be_bytes([f[18], f[19]]) + 1 + body.len() as u16;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    f
}

/// Sets the length the IP header states (IPv4 total length, checksum
/// fixed; IPv6 payload length) without changing the frame: a lying header.
pub fn with_ip_len(frame: &[u8], len: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let l3 = l2_len(&f);
    match f[l3] >> 4 {
        4 => {
            f[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
            fix_ipv4_checksum(&mut f[l3..l3 + 20]);
        }
        6 => f[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes()),
        v => panic!("IP version {v}"),
    }
    f
}

/// Appends zero bytes up to `len` (Ethernet padding after the IP packet).
pub fn padded(frame: &[u8], len: usize) -> Vec<u8> {
    let mut f = frame.to_vec();
    assert!(f.len() <= len);
    f.resize(len, 0);
    f
}

/// The first `len` bytes of a frame.
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len].to_vec()
}

// ---- Checksums ----

/// The Internet checksum (RFC 1071) of `bytes`.
pub fn inet_checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))).sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn fix_ipv4_checksum(header: &mut [u8]) {
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

// ---- Expected output ----

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

pub fn v4(a: u8, b: u8, c: u8, d: u8) -> Ipv4Addr {
    Ipv4Addr::new(a, b, c, d)
}

pub fn v6(s: &str) -> Ipv6Addr {
    s.parse().expect("an IPv6 address")
}

pub fn sock(addr: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(addr.into(), port)
}
