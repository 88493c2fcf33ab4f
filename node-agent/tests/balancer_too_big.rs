//! ICMP too-big generation (`ebpf/bpf/icmp.h`): a VIP packet that would not
//! fit the egress link once encapsulated is answered, with XDP_TX, by an
//! ICMP "fragmentation needed" (IPv4, type 3 code 4) or ICMPv6 "packet too
//! big" (type 2) carrying the largest IP packet that fits, in Katran's wire
//! format.
//!
//! Each row is {description, input frame, expected verdict, expected output
//! frame}, run through BPF_PROG_TEST_RUN; the expected reply is written here
//! byte by byte from RFC 792 / RFC 4443 and Katran's sizes (never from the
//! program's output), and its checksums are checked on their own too. After
//! every row every global counter (but NewConnRate, whose v2 is a timestamp)
//! and the VIP's and reals' counters must be what the rows predict.
//!
//! Every test loads the program (BPF_PROG_TEST_RUN needs root): without root
//! it prints `SKIPPED (needs root): <test>` and returns.

mod support {
    pub mod frames;
}

use std::collections::BTreeMap;
use std::net::IpAddr;

use support::frames::*;
use weir_agent::dataplane::{Balancer, BalancerConfig, Counter, RealAction, RealSpec, Verdict, VipId, VipSpec};
use weir_ebpf::abi::{self, Stat};
use weir_test_support::packet::*;
use weir_test_support::skip_unless_root;

/// Counter changes of a TCP non-SYN with no table entry (ring, non-SYN miss)
/// and of a UDP datagram with none.
const TOO_BIG_V4: (Stat, u64, u64) = (Stat::IcmpTooBig, 1, 0);
const TOO_BIG_V6: (Stat, u64, u64) = (Stat::IcmpTooBig, 0, 1);

// ---- The replies, from the protocols' rules ----

/// The L2 header of a reply to `frame`: its addresses swapped, the rest
/// (ethertype, VLAN tag) as it was.
fn swapped_l2(frame: &[u8]) -> Vec<u8> {
    let l2 = l2_len(frame);
    [&frame[6..12], &frame[0..6], &frame[12..l2]].concat()
}

/// The "fragmentation needed" the balancer owes `frame` (an IPv4 packet),
/// reporting `mtu`: the VIP answers the client, quoting the first 84 bytes
/// of the packet (Katran's ICMP_TOOBIG_SIZE, 98, less the Ethernet header).
fn frag_needed(frame: &[u8], mtu: u16) -> Vec<u8> {
    let quote = &frame[l2_len(frame)..][..abi::ICMP_QUOTE_V4 as usize];
    let mut icmp = vec![3, 4, 0, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let sum = inet_checksum(&icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let tot_len = (20 + icmp.len()) as u16;
    let mut ip = vec![0x45, 0]; // version 4, ihl 5, TOS 0
    ip.extend_from_slice(&tot_len.to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0, 0]); // id 0, no DF, offset 0
    ip.extend_from_slice(&[abi::ICMP_TTL, IPPROTO_ICMP, 0, 0]);
    ip.extend_from_slice(&quote[16..20]); // from the VIP
    ip.extend_from_slice(&quote[12..16]); // to the client
    fix_ipv4_checksum(&mut ip);
    [swapped_l2(frame), ip, icmp].concat()
}

/// The "packet too big" the balancer owes `frame` (an IPv6 packet),
/// reporting `mtu`, quoting the first 248 bytes (Katran's
/// ICMP6_TOOBIG_SIZE, 262, less the Ethernet header).
fn packet_too_big(frame: &[u8], mtu: u32) -> Vec<u8> {
    let quote = &frame[l2_len(frame)..][..abi::ICMP_QUOTE_V6 as usize];
    let (src, dst) = (&quote[24..40], &quote[8..24]);
    let mut icmp = vec![2, 0, 0, 0];
    icmp.extend_from_slice(&mtu.to_be_bytes());
    icmp.extend_from_slice(quote);
    let len = icmp.len() as u32;
    let pseudo = [src, dst, &len.to_be_bytes(), &[0, 0, 0, IPPROTO_ICMPV6]].concat();
    let sum = inet_checksum(&[pseudo, icmp.clone()].concat());
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0]; // traffic class 0, flow label 0
    ip.extend_from_slice(&(len as u16).to_be_bytes());
    ip.extend_from_slice(&[IPPROTO_ICMPV6, abi::ICMP_TTL]);
    ip.extend_from_slice(src);
    ip.extend_from_slice(dst);
    [swapped_l2(frame), ip, icmp].concat()
}

/// Checks a reply's checksums on their own: they must sum to zero with the
/// fields they cover (the IPv4 header; the ICMP message, with the IPv6
/// pseudo-header for ICMPv6).
fn assert_checksums(what: &str, reply: &[u8]) {
    let ip = &reply[l2_len(reply)..];
    match ip[0] >> 4 {
        4 => {
            assert_eq!(inet_checksum(&ip[..20]), 0, "{what}: IPv4 header checksum");
            assert_eq!(inet_checksum(&ip[20..]), 0, "{what}: ICMP checksum");
        }
        6 => {
            let icmp = &ip[40..];
            let pseudo = [&ip[8..40], &(icmp.len() as u32).to_be_bytes(), &[0, 0, 0, IPPROTO_ICMPV6]].concat();
            assert_eq!(inet_checksum(&[pseudo.as_slice(), icmp].concat()), 0, "{what}: ICMPv6 checksum");
        }
        v => panic!("{what}: IP version {v}"),
    }
}

// ---- The harness ----

/// What a row should do with its frame.
enum Out {
    /// XDP_TX with this reply in the frame.
    Reply(Vec<u8>),
    /// XDP_TX, encapsulated toward this real (counted by the VIP and real).
    Encap(VipId, IpAddr),
    /// XDP_DROP, the frame unchanged.
    Drop,
}

/// A Balancer in testing mode and the global counters it should report.
struct Lb {
    b: Balancer,
    want: BTreeMap<u32, Counter>,
    want_vips: BTreeMap<VipId, Counter>,
    want_reals: BTreeMap<IpAddr, Counter>,
}

fn config(icmp_too_big: bool) -> BalancerConfig {
    let cpus = aya::util::nr_cpus().expect("number of possible CPUs") as u32;
    BalancerConfig { lru_size: (1024 * cpus).max(4096), icmp_too_big, ..BalancerConfig::testing() }
}

fn add(c: &mut Counter, v1: u64, v2: u64) {
    c.v1 += v1;
    c.v2 += v2;
}

impl Lb {
    fn new(config: BalancerConfig) -> Self {
        let b = Balancer::new(config).expect("load the balancer in testing mode");
        Lb { b, want: BTreeMap::new(), want_vips: BTreeMap::new(), want_reals: BTreeMap::new() }
    }

    fn vip(&mut self, addr: impl Into<IpAddr>, port: u16, proto: u8, real: IpAddr) -> VipId {
        let id = VipId { addr: addr.into(), port, proto };
        self.b.add_vip(VipSpec { id, flags: 0 }).unwrap_or_else(|e| panic!("add VIP {id}: {e}"));
        let spec = RealSpec { addr: real, weight: 1, flags: 0 };
        self.b.modify_reals(&id, RealAction::Add, &[spec]).unwrap_or_else(|e| panic!("add {real} to {id}: {e}"));
        self.want_vips.insert(id, Counter::default());
        self.want_reals.insert(real, Counter::default());
        id
    }

    /// Runs one row: verdict, exact output frame, exact counters.
    fn run(&mut self, what: &str, frame: &[u8], out: Out, counts: &[(Stat, u64, u64)]) {
        let sim = self.b.simulate(frame).unwrap_or_else(|e| panic!("{what}: simulate: {e}"));
        let (verdict, want) = match &out {
            Out::Reply(reply) => (Verdict::Tx, reply.clone()),
            Out::Encap(_, real) => (Verdict::Tx, encapsulated(frame, TESTING_MAC, *real)),
            Out::Drop => (Verdict::Drop, frame.to_vec()),
        };
        assert_eq!(sim.verdict, verdict, "{what}: verdict");
        assert!(sim.packet == want, "{what}: output frame: {}", first_difference(&sim.packet, &want));
        if let Out::Reply(_) = out {
            assert_checksums(what, &sim.packet);
        }

        let bytes = frame.len() as u64;
        let verdict_stat = if verdict == Verdict::Tx { Stat::XdpTx } else { Stat::XdpDrop };
        for &(stat, v1, v2) in [(Stat::XdpTotal, 1, bytes), (verdict_stat, 1, bytes)].iter().chain(counts) {
            add(self.want.entry(stat as u32).or_default(), v1, v2);
        }
        // Only what goes on to a real is counted by the VIP and the real.
        if let Out::Encap(vip, real) = out {
            add(self.want_vips.get_mut(&vip).expect("a known VIP"), 1, l3_len(frame));
            add(self.want_reals.get_mut(&real).expect("a known real"), 1, l3_len(frame));
        }
        self.check_counters(what);
    }

    fn check_counters(&self, what: &str) {
        for stat in Stat::ALL.into_iter().filter(|s| *s != Stat::NewConnRate) {
            let got = self.b.stat(stat).expect("read a counter");
            let want = self.want.get(&(stat as u32)).copied().unwrap_or_default();
            assert_eq!(got, want, "{what}: counter {stat:?}");
        }
        for (vip, want) in &self.want_vips {
            assert_eq!(self.b.vip_stats(vip).expect("VIP counters"), *want, "{what}: counters of VIP {vip}");
        }
        for (real, want) in &self.want_reals {
            let index = self.b.real_index(*real).expect("index of a real");
            assert_eq!(self.b.real_stats(index).expect("real counters"), *want, "{what}: counters of {real}");
        }
    }
}

// ---- Tests ----

#[test]
fn too_big_ipv4_is_answered_with_fragmentation_needed() {
    if skip_unless_root("too_big_ipv4_is_answered_with_fragmentation_needed") {
        return;
    }
    let mut lb = Lb::new(config(true));
    let tcp = lb.vip(VIP4, 80, TCP, r4(1));
    lb.vip(VIP4, 53, UDP, r4(2));
    let v4_in_v6 = lb.vip(VIP4B, 80, TCP, r6(3));
    let c = |port| sock(CLIENT4, port);
    let (to_tcp, to_udp, to_46) = (sock(VIP4, 80), sock(VIP4, 53), sock(VIP4B, 80));

    let fits = ack_of_l3_len(c(41000), to_tcp, 1480);
    lb.run(
        "IPv4 packet of 1480 bytes -> IPv4 real: 1500 once encapsulated, sent on",
        &fits,
        Out::Encap(tcp, r4(1)),
        ACK_MISS,
    );

    let big = ack_of_l3_len(c(41001), to_tcp, 1481);
    lb.run(
        "IPv4 packet of 1481 bytes -> IPv4 real: answered, next-hop MTU 1480",
        &big,
        Out::Reply(frag_needed(&big, 1480)),
        &[ACK_MISS, &[TOO_BIG_V4]].concat(),
    );
    // The reply, spelled out once: 14 + 20 + 8 + 84 bytes, from the VIP to
    // the client, type 3 code 4, MTU in bytes 6..8 of the ICMP header.
    let reply = lb.b.simulate(&big).unwrap().packet;
    assert_eq!(reply.len(), 126);
    assert_eq!(reply[0..12], [&MAC_UPSTREAM[..], &MAC_LB[..]].concat()[..], "Ethernet addresses swapped");
    assert_eq!(reply[26..34], [VIP4.octets(), CLIENT4.octets()].concat()[..], "VIP -> client");
    assert_eq!(reply[34..36], [3, 4], "fragmentation needed");
    assert_eq!(reply[38..42], [0, 0, 0x05, 0xc8], "next-hop MTU 1480");
    assert_eq!(reply[42..126], big[14..98], "the quote: the offending packet's first 84 bytes");
    add(lb.want.entry(Stat::XdpTotal as u32).or_default(), 1, big.len() as u64);
    add(lb.want.entry(Stat::XdpTx as u32).or_default(), 1, big.len() as u64);
    add(lb.want.entry(Stat::Lru as u32).or_default(), 1, 0); // the flow's entry now exists: a hit
    add(lb.want.entry(Stat::IcmpTooBig as u32).or_default(), 1, 0);
    lb.check_counters("the same packet again");

    let big_udp = frame(Seg::Udp, c(5353), to_udp, 1600 - 28);
    lb.run(
        "IPv4 UDP datagram of 1600 bytes: answered like TCP",
        &big_udp,
        Out::Reply(frag_needed(&big_udp, 1480)),
        &[RING, &[TOO_BIG_V4]].concat(),
    );

    let fits46 = ack_of_l3_len(c(41002), to_46, 1460);
    lb.run(
        "IPv4 packet of 1460 bytes -> IPv6 real: 1500 once encapsulated",
        &fits46,
        Out::Encap(v4_in_v6, r6(3)),
        ACK_MISS,
    );
    let big46 = ack_of_l3_len(c(41003), to_46, 1461);
    lb.run(
        "IPv4 packet of 1461 bytes -> IPv6 real: MTU 1460 (a 40-byte outer header)",
        &big46,
        Out::Reply(frag_needed(&big46, 1460)),
        &[ACK_MISS, &[TOO_BIG_V4]].concat(),
    );

    let tagged_big = tagged(&ack_of_l3_len(c(41004), to_tcp, 1500), ETH_P_8021Q, 0x0064);
    lb.run(
        "802.1Q IPv4 packet of 1500 bytes: the reply keeps the tag",
        &tagged_big,
        Out::Reply(frag_needed(&tagged_big, 1480)),
        &[ACK_MISS, &[TOO_BIG_V4]].concat(),
    );

    let padded_small = with_ip_len(&ack_of_l3_len(c(41005), to_tcp, 1481), 88);
    lb.run(
        "IPv4 frame of 1481 bytes whose tot_len says 88: the frame is what goes on, too big",
        &padded_small,
        Out::Reply(frag_needed(&padded_small, 1480)),
        &[ACK_MISS, &[TOO_BIG_V4]].concat(),
    );
}

#[test]
fn too_big_ipv6_is_answered_with_packet_too_big() {
    if skip_unless_root("too_big_ipv6_is_answered_with_packet_too_big") {
        return;
    }
    let mut lb = Lb::new(config(true));
    let tcp = lb.vip(VIP6, 443, TCP, r6(1));
    lb.vip(VIP6, 53, UDP, r6(2));
    let c = |port| sock(CLIENT6, port);
    let (to_tcp, to_udp) = (sock(VIP6, 443), sock(VIP6, 53));

    let fits = ack_of_l3_len(c(41000), to_tcp, 1460);
    lb.run("IPv6 packet of 1460 bytes: 1500 once encapsulated, sent on", &fits, Out::Encap(tcp, r6(1)), ACK_MISS);

    let big = ack_of_l3_len(c(41001), to_tcp, 1461);
    lb.run(
        "IPv6 packet of 1461 bytes: answered, MTU 1460",
        &big,
        Out::Reply(packet_too_big(&big, 1460)),
        &[ACK_MISS, &[TOO_BIG_V6]].concat(),
    );
    // Spelled out once: 14 + 40 + 8 + 248 bytes, type 2 code 0, 32-bit MTU.
    let reply = lb.b.simulate(&big).unwrap().packet;
    assert_eq!(reply.len(), 310);
    assert_eq!(reply[14..22], [0x60, 0, 0, 0, 0x01, 0x00, IPPROTO_ICMPV6, 64], "payload length 256, hop limit 64");
    assert_eq!(reply[22..54], [VIP6.octets(), CLIENT6.octets()].concat()[..], "VIP -> client");
    assert_eq!(reply[54..56], [2, 0], "packet too big");
    assert_eq!(reply[58..62], 1460u32.to_be_bytes(), "MTU 1460");
    assert_eq!(reply[62..310], big[14..262], "the quote: the offending packet's first 248 bytes");
    for (stat, v1, v2) in
        [(Stat::XdpTotal, 1, big.len() as u64), (Stat::XdpTx, 1, big.len() as u64), (Stat::Lru, 1, 0), TOO_BIG_V6]
    {
        add(lb.want.entry(stat as u32).or_default(), v1, v2);
    }
    lb.check_counters("the same packet again");

    let big_udp = frame(Seg::Udp, c(5353), to_udp, 2000 - 48);
    lb.run(
        "IPv6 UDP datagram of 2000 bytes",
        &big_udp,
        Out::Reply(packet_too_big(&big_udp, 1460)),
        &[RING, &[TOO_BIG_V6]].concat(),
    );
    let tagged_big = tagged(&ack_of_l3_len(c(41002), to_tcp, 1500), ETH_P_8021AD, 0x0123);
    lb.run(
        "802.1ad IPv6 packet of 1500 bytes: the reply keeps the tag",
        &tagged_big,
        Out::Reply(packet_too_big(&tagged_big, 1460)),
        &[ACK_MISS, &[TOO_BIG_V6]].concat(),
    );
}

#[test]
fn the_mtu_setting_is_the_reported_mtu() {
    if skip_unless_root("the_mtu_setting_is_the_reported_mtu") {
        return;
    }
    let mut lb = Lb::new(BalancerConfig { mtu: 9000, ..config(true) });
    let v4 = lb.vip(VIP4, 80, TCP, r4(1));
    lb.vip(VIP6, 80, TCP, r6(1));
    // One buffer holds at most 3520 bytes in a test run; 3506 + 20 > 3000.
    let mut lb3000 = Lb::new(BalancerConfig { mtu: 3000, ..config(true) });
    lb3000.vip(VIP4, 80, TCP, r4(1));
    lb3000.vip(VIP6, 80, TCP, r6(1));
    let fits = ack_of_l3_len(sock(CLIENT4, 1), sock(VIP4, 80), 3000);
    lb.run("IPv4 packet of 3000 bytes at MTU 9000: sent on", &fits, Out::Encap(v4, r4(1)), ACK_MISS);
    let big4 = ack_of_l3_len(sock(CLIENT4, 2), sock(VIP4, 80), 2981);
    lb3000.run(
        "IPv4 packet of 2981 bytes at MTU 3000: MTU 2980",
        &big4,
        Out::Reply(frag_needed(&big4, 2980)),
        &[ACK_MISS, &[TOO_BIG_V4]].concat(),
    );
    let big6 = ack_of_l3_len(sock(CLIENT6, 2), sock(VIP6, 80), 2961);
    lb3000.run(
        "IPv6 packet of 2961 bytes at MTU 3000: MTU 2960",
        &big6,
        Out::Reply(packet_too_big(&big6, 2960)),
        &[ACK_MISS, &[TOO_BIG_V6]].concat(),
    );
}

#[test]
fn switched_off_too_big_packets_are_dropped() {
    if skip_unless_root("switched_off_too_big_packets_are_dropped") {
        return;
    }
    let mut lb = Lb::new(config(false));
    let tcp4 = lb.vip(VIP4, 80, TCP, r4(1));
    lb.vip(VIP6, 80, TCP, r6(1));
    let fits = ack_of_l3_len(sock(CLIENT4, 1), sock(VIP4, 80), 1480);
    lb.run("IPv4 packet that fits: sent on", &fits, Out::Encap(tcp4, r4(1)), ACK_MISS);
    let big4 = ack_of_l3_len(sock(CLIENT4, 2), sock(VIP4, 80), 1481);
    lb.run("IPv4 packet too big: dropped, counted", &big4, Out::Drop, &[ACK_MISS, &[TOO_BIG_V4]].concat());
    let big6 = ack_of_l3_len(sock(CLIENT6, 2), sock(VIP6, 80), 1461);
    lb.run("IPv6 packet too big: dropped, counted", &big6, Out::Drop, &[ACK_MISS, &[TOO_BIG_V6]].concat());
}

#[test]
fn an_icmp_error_too_big_is_never_answered() {
    if skip_unless_root("an_icmp_error_too_big_is_never_answered") {
        return;
    }
    let mut lb = Lb::new(BalancerConfig { mtu: 1280, ..config(true) });
    lb.vip(VIP6, 80, TCP, r6(1));
    // A packet too big from a router about the VIP's reply, quoting 1260
    // bytes of it: 40 + 8 + 1260 = 1308 bytes, more than 1280 - 40.
    let reply = frame(Seg::Ack, sock(VIP6, 80), sock(CLIENT6, 40000), 1260 - 60);
    let error = icmp_error(ROUTER6.into(), VIP6.into(), 2, 0, 1280u32.to_be_bytes(), &reply[14..]);
    assert_eq!(l3_len(&error), 1308);
    // An ICMP error takes the ring (no LruMiss) and is counted too big, but
    // an error is never answered with an error: dropped.
    lb.run("ICMPv6 packet too big of 1308 bytes about a VIP flow", &error, Out::Drop, &[RING, &[TOO_BIG_V6]].concat());
}
