//! The healthcheck program (`healthcheck.bpf.c`) through BPF_PROG_TEST_RUN:
//! each case is a frame with a socket mark in, the TC verdict, the exact frame
//! and mark out, and the exact change of the program's counters.
//!
//! Tests that need root print `SKIPPED (needs root): <test>` and return.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header, PacketBuilder};
use weir_agent::dataplane::healthcheck::{
    HcRun, Healthchecker, TC_ACT_OK, TC_ACT_REDIRECT, TC_ACT_SHOT, TC_ACT_UNSPEC,
};
use weir_agent::dataplane::VipId;
use weir_ebpf::abi::{HcCtl, HcStats};
use weir_test_support::skip_unless_root;

const NODE_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0a];
const ROUTER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0b];
/// What the kernel put in front of the probe (the neighbour of the VIP's route).
const NEXT_HOP_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x0c];
/// The loopback device: a test run's packet leaves by it unless told otherwise.
const LO: u32 = 1;

const VIP4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 1);
const NODE4: Ipv4Addr = Ipv4Addr::new(192, 168, 0, 7);
const NODE6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0x1234, 0x5678);
const REAL4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const REAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 1, 0, 0, 0, 2);
const SPORT: u16 = 0x4321;

fn ctl(ifindex: u32) -> HcCtl {
    HcCtl { ifindex, mtu: 1500, src_mac: NODE_MAC, dst_mac: ROUTER_MAC, ..HcCtl::default() }
}

fn checker(ctl: HcCtl) -> Healthchecker {
    let mut hc = Healthchecker::load_private().expect("load the healthcheck program");
    hc.set_ctl(ctl).unwrap();
    hc.add_dst(100, IpAddr::V4(REAL4)).unwrap();
    hc.add_dst(101, IpAddr::V6(REAL6)).unwrap();
    hc
}

/// A TCP SYN from the node to the VIP, as the kernel hands it to TC egress.
fn syn4(payload: usize) -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(NODE_MAC, NEXT_HOP_MAC)
        .ipv4(NODE4.octets(), VIP4.octets(), 64)
        .tcp(SPORT, 80, 1, 1024)
        .syn()
        .write(&mut frame, &vec![0xab; payload])
        .unwrap();
    frame
}

fn syn6() -> Vec<u8> {
    let mut frame = Vec::new();
    PacketBuilder::ethernet2(NODE_MAC, NEXT_HOP_MAC)
        .ipv6(NODE6.octets(), VIP6.octets(), 64)
        .tcp(SPORT, 443, 1, 1024)
        .syn()
        .write(&mut frame, &[])
        .unwrap();
    frame
}

/// `inner` (a frame) tunnelled as the balancer tunnels it: router MAC, node
/// MAC, then `outer` and the inner packet untouched.
fn tunnelled(outer: &[u8], ethertype: u16, inner: &[u8]) -> Vec<u8> {
    let mut frame = [ROUTER_MAC, NODE_MAC].concat();
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(outer);
    frame.extend_from_slice(&inner[14..]);
    frame
}

fn outer4(src: Ipv4Addr, inner_l3: usize, proto: IpNumber) -> Vec<u8> {
    let mut ip = Ipv4Header::new(inner_l3 as u16, 64, proto, src.octets(), REAL4.octets()).unwrap();
    ip.dont_fragment = false;
    ip.header_checksum = ip.calc_header_checksum();
    ip.to_bytes().to_vec()
}

fn outer6(src: Ipv6Addr, inner_l3: usize, next: IpNumber) -> Vec<u8> {
    let ip = Ipv6Header {
        traffic_class: 0,
        flow_label: Ipv6FlowLabel::ZERO,
        payload_length: inner_l3 as u16,
        next_header: next,
        hop_limit: 64,
        source: src.octets(),
        destination: REAL6.octets(),
    };
    ip.to_bytes().to_vec()
}

/// The outer source the balancer derives from a client (172.16.x.y: the
/// address's last two bytes XOR the port).
fn derived4(client: [u8; 4], port: u16) -> Ipv4Addr {
    let p = port.to_be_bytes();
    Ipv4Addr::new(172, 16, client[2] ^ p[0], client[3] ^ p[1])
}

/// 100::/64 with the client's last four bytes, the first two XOR the port.
fn derived6(tail: [u8; 4], port: u16) -> Ipv6Addr {
    let p = port.to_be_bytes();
    let mut a = [0u8; 16];
    a[0] = 1;
    a[12..].copy_from_slice(&[tail[0] ^ p[0], tail[1] ^ p[1], tail[2], tail[3]]);
    Ipv6Addr::from(a)
}

fn run(hc: &Healthchecker, frame: &[u8], mark: u32) -> HcRun {
    hc.simulate(frame, mark, LO).expect("test run")
}

fn stats(processed: u64, dropped: u64, skipped: u64, too_big: u64) -> HcStats {
    HcStats { processed, dropped, skipped, too_big }
}

#[test]
fn marked_probes_leave_tunnelled_to_their_real() {
    if skip_unless_root("marked_probes_leave_tunnelled_to_their_real") {
        return;
    }
    let hc = checker(ctl(LO));
    let v4 = syn4(0);
    let tail6 = {
        let o = NODE6.octets();
        [o[12], o[13], o[14], o[15]]
    };

    // IPv4 probe, IPv4 real: IPIP, outer source derived from the prober.
    let out = run(&hc, &v4, 100);
    let want = tunnelled(&outer4(derived4(NODE4.octets(), SPORT), v4.len() - 14, IpNumber::IPV4), 0x0800, &v4);
    assert_eq!((out.verdict, out.mark), (TC_ACT_OK, 0), "leaves by the interface it was on, unmarked");
    assert_eq!(out.packet, want);

    // IPv4 probe, IPv6 real: IPv4-in-IPv6.
    let out = run(&hc, &v4, 101);
    let want = tunnelled(&outer6(derived6(NODE4.octets(), SPORT), v4.len() - 14, IpNumber::IPV4), 0x86dd, &v4);
    assert_eq!((out.verdict, out.mark, out.packet), (TC_ACT_OK, 0, want));

    // IPv6 probe, IPv6 real: IP6IP6.
    let v6 = syn6();
    let out = run(&hc, &v6, 101);
    let want = tunnelled(&outer6(derived6(tail6, SPORT), v6.len() - 14, IpNumber::IPV6), 0x86dd, &v6);
    assert_eq!((out.verdict, out.mark, out.packet), (TC_ACT_OK, 0, want));

    assert_eq!(hc.stats().unwrap(), stats(3, 0, 0, 0));
}

#[test]
fn what_is_not_a_probe_leaves_untouched() {
    if skip_unless_root("what_is_not_a_probe_leaves_untouched") {
        return;
    }
    let hc = checker(ctl(LO));
    let frame = syn4(0);
    for mark in [0, 7] {
        let out = run(&hc, &frame, mark);
        assert_eq!((out.verdict, out.mark, &out.packet), (TC_ACT_UNSPEC, mark, &frame), "mark {mark}");
    }
    assert_eq!(hc.stats().unwrap(), stats(0, 0, 2, 0));
}

#[test]
fn probes_that_cannot_leave_as_the_balancer_sends_are_dropped() {
    if skip_unless_root("probes_that_cannot_leave_as_the_balancer_sends_are_dropped") {
        return;
    }
    // No control entry yet: nowhere to send probes.
    let hc = checker(HcCtl::default());
    assert_eq!(run(&hc, &syn4(0), 100).verdict, TC_ACT_SHOT);
    assert_eq!(hc.stats().unwrap(), stats(0, 1, 0, 0));

    let hc = checker(HcCtl { mtu: 1400, ..ctl(LO) });
    // An IPv6 probe to an IPv4 real: the balancer never tunnels IPv6 in IPv4.
    assert_eq!(run(&hc, &syn6(), 100).verdict, TC_ACT_SHOT);
    // 1380 bytes of IP + 20 of outer header fit a 1400 MTU; one more does not.
    let fits = syn4(1380 - 40);
    assert_eq!(run(&hc, &fits, 100).verdict, TC_ACT_OK);
    let out = run(&hc, &syn4(1381 - 40), 100);
    assert_eq!((out.verdict, out.mark), (TC_ACT_SHOT, 100));
    assert_eq!(hc.stats().unwrap(), stats(1, 2, 0, 1));
}

#[test]
fn the_configured_outer_source_and_interface_are_used() {
    if skip_unless_root("the_configured_outer_source_and_interface_are_used") {
        return;
    }
    let src6 = Ipv6Addr::new(0xfc00, 0, 0, 0, 0, 0, 0, 1);
    let hc = checker(HcCtl { src_v4: [10, 0, 0, 1], src_v6: src6.octets(), ..ctl(42) });
    let frame = syn4(0);
    let out = run(&hc, &frame, 100);
    assert_eq!(out.verdict, TC_ACT_REDIRECT, "moved to the main interface");
    assert_eq!(
        out.packet,
        tunnelled(&outer4(Ipv4Addr::new(10, 0, 0, 1), frame.len() - 14, IpNumber::IPV4), 0x0800, &frame)
    );
    let out = run(&hc, &frame, 101);
    assert_eq!(out.packet, tunnelled(&outer6(src6, frame.len() - 14, IpNumber::IPV4), 0x86dd, &frame));
}

#[test]
fn probes_are_counted_per_healthcheck_key() {
    if skip_unless_root("probes_are_counted_per_healthcheck_key") {
        return;
    }
    let mut hc = checker(ctl(LO));
    hc.add_key(&VipId { addr: IpAddr::V4(VIP4), port: 80, proto: 6 }, 3).unwrap();
    hc.add_key(&VipId { addr: IpAddr::V4(VIP4), port: 81, proto: 6 }, 4).unwrap();
    run(&hc, &syn4(0), 100);
    run(&hc, &syn4(0), 101);
    run(&hc, &syn4(0), 0);
    assert_eq!((hc.key_packets(3).unwrap(), hc.key_packets(4).unwrap()), (2, 0));
}

#[test]
fn marks_map_to_reals() {
    if skip_unless_root("marks_map_to_reals") {
        return;
    }
    let mut hc = checker(ctl(LO));
    assert_eq!(hc.dsts(), vec![(100, IpAddr::V4(REAL4)), (101, IpAddr::V6(REAL6))]);
    assert_eq!(
        hc.add_dst(0, IpAddr::V4(REAL4)).unwrap_err().to_string(),
        "invalid somark: 0 marks no socket: probes need a mark of 1 or more"
    );
    assert!(hc.del_dst(100).unwrap());
    assert!(!hc.del_dst(100).unwrap());
    assert_eq!(hc.dsts(), vec![(101, IpAddr::V6(REAL6))]);
    // A deleted mark is no probe any more.
    assert_eq!(run(&hc, &syn4(0), 100).verdict, TC_ACT_UNSPEC);
}
