//! Input frames and IP packets: TCP, UDP and ICMP from etherparse's
//! `PacketBuilder` (valid checksums), Ethernet headers and ARP by hand, and
//! the outer headers of IP-in-IP (what the balancer puts in front and the
//! decapsulation program takes off).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder};

use super::{ETH_P_ARP, ETH_P_IP, ETH_P_IPV6, MAC_LB, MAC_UPSTREAM};

/// Payload of the TCP ACKs and UDP datagrams built here.
pub const PAYLOAD: &[u8] = b"weir: packet table payload, 48 bytes long ......";

/// What kind of L4 segment a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seg {
    Syn,
    Ack,
    Udp,
}

/// An Ethernet frame (MAC_UPSTREAM -> MAC_LB) from `src` to `dst` carrying
/// `seg` with `payload_len` bytes of payload (IPv4 or IPv6 after the
/// addresses; both must agree).
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

/// An Ethernet header: `dst`, `src`, `ethertype`.
pub fn eth(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(64);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// An Ethernet header (MAC_UPSTREAM -> MAC_LB) followed by `payload` as an
/// opaque `ethertype` payload.
pub fn raw(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = eth(MAC_LB, MAC_UPSTREAM, ethertype);
    f.extend_from_slice(payload);
    f
}

/// A broadcast ARP request from MAC_UPSTREAM (who-has `target`).
pub fn arp(sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    [eth([0xff; 6], MAC_UPSTREAM, ETH_P_ARP), arp_request(MAC_UPSTREAM, sender, target)].concat()
}

/// The body of an ARP request (Ethernet, IPv4): `sender_mac`/`sender` asks
/// who has `target`.
pub fn arp_request(sender_mac: [u8; 6], sender: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut body = vec![0, 1, 8, 0, 6, 4, 0, 1]; // Ethernet, IPv4, request
    body.extend_from_slice(&sender_mac);
    body.extend_from_slice(&sender.octets());
    body.extend_from_slice(&[0; 6]);
    body.extend_from_slice(&target.octets());
    body
}

/// An ICMP echo request (IPv4) or ICMPv6 echo request from `src` to `dst`
/// (MAC_UPSTREAM -> MAC_LB, id 0x77, sequence 1, PAYLOAD).
pub fn echo(src: IpAddr, dst: IpAddr) -> Vec<u8> {
    let ethertype = if dst.is_ipv4() { ETH_P_IP } else { ETH_P_IPV6 };
    [eth(MAC_LB, MAC_UPSTREAM, ethertype), ip_echo(src, dst, 0x77, 1, PAYLOAD)].concat()
}

/// The IP packet of an ICMP (IPv4) or ICMPv6 echo request, TTL 64.
pub fn ip_echo(src: IpAddr, dst: IpAddr, id: u16, seq: u16, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            PacketBuilder::ipv4(s.octets(), d.octets(), 64).icmpv4_echo_request(id, seq).write(&mut out, payload)
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            PacketBuilder::ipv6(s.octets(), d.octets(), 64).icmpv6_echo_request(id, seq).write(&mut out, payload)
        }
        _ => panic!("{src} and {dst} are of different families"),
    }
    .expect("etherparse builds the packet");
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

/// `payload` behind an outer IPv4 header `src` -> `dst` of `protocol`: 20
/// bytes, TTL 64, DF, id 0, valid checksum.
pub fn outer_v4(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let header = Ipv4Header::new(payload.len() as u16, 64, IpNumber(protocol), src.octets(), dst.octets())
        .expect("an IPv4 payload length");
    let mut out = Vec::with_capacity(20 + payload.len());
    header.write(&mut out).expect("a Vec takes the header"); // write() fills in the checksum
    out.extend_from_slice(payload);
    out
}

/// `payload` behind an outer IPv6 header `src` -> `dst` with `next_header`
/// and `flow_label` (traffic class 0, hop limit 64).
pub fn outer_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, flow_label: u32, payload: &[u8]) -> Vec<u8> {
    let header = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::try_new(flow_label).expect("a 20-bit flow label"),
        payload_length: payload.len() as u16,
        next_header: IpNumber(next_header),
        hop_limit: 64,
        source: src.octets(),
        destination: dst.octets(),
    };
    [header.to_bytes().to_vec(), payload.to_vec()].concat()
}
