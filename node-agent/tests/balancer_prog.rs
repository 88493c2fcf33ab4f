//! The balancer XDP program (`ebpf/bpf/balancer.bpf.c`) driven through the
//! `Balancer` API, Katran-style.
//!
//! Each case is a row {description, input frame, expected verdict, expected
//! output frame}: the output must equal, byte for byte, a frame the test builds
//! itself from the datapath's rules (`weir_test_support::packet::encapsulated`),
//! or the input unchanged for XDP_PASS and XDP_DROP. After every packet the harness
//! ([`Lb`]) compares every global counter (but NewConnRate, whose v2 is a
//! timestamp), every VIP's and every real's counters with the values the rows
//! predict, so counters are exact throughout.
//!
//! Where the ring decides (several reals), a row accepts any of a set of reals
//! and the output must be exactly the encapsulation toward the one it names;
//! the tests then assert relations between packets (same real, different real).
//!
//! Not tested: UDP connection-table expiry (30 s, `WEIR_UDP_CONN_TIMEOUT_NS`)
//! — BPF_PROG_TEST_RUN cannot move `bpf_ktime_get_ns` and waiting 30 s is not
//! practical here; nor the new-connection flood guard (125000 per second).
//!
//! Every test loads the program (BPF_PROG_TEST_RUN needs root): without root
//! it prints `SKIPPED (needs root): <test>` and returns.

mod support {
    pub mod frames;
}

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use support::frames::*;
use weir_agent::dataplane::{Balancer, BalancerConfig, Counter, Flow, RealAction, RealSpec, Verdict, VipId, VipSpec};
use weir_agent::Error;
use weir_ebpf::abi::{self, Stat};
use weir_test_support::packet::*;
use weir_test_support::skip_unless_root;

const OTHER4: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 99);
const OTHER6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x100, 0, 0, 0, 0, 0x99);
const ROUTER4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Bytes 5..8 of an ICMP too-big / frag-needed message: the MTU.
fn mtu(mtu: u16) -> [u8; 4] {
    let m = mtu.to_be_bytes();
    [0, 0, m[0], m[1]]
}

// ---- Counter changes of the usual connection-table outcomes ----
// (besides XdpTotal and the verdict's counter, which the harness adds)

/// A TCP SYN: always the ring (Lru v1, v2), counted as a SYN miss.
const SYN_MISS: &[(Stat, u64, u64)] = &[(Stat::Lru, 1, 1), (Stat::LruMiss, 1, 0)];
/// A connection-table hit.
const HIT: &[(Stat, u64, u64)] = &[(Stat::Lru, 1, 0)];

/// The counters checked after every packet: all but NewConnRate (whose v2
/// is a timestamp).
fn checked_stats() -> impl Iterator<Item = Stat> {
    Stat::ALL.into_iter().filter(|s| *s != Stat::NewConnRate)
}

/// `BalancerConfig::testing()` with a connection table of at least 1024
/// entries per CPU: the table keeps per-CPU LRU lists (BPF_F_NO_COMMON_LRU)
/// that split max_entries between the possible CPUs, and no test may lose an
/// entry to eviction. ICMP too-big generation is off: the rows here check
/// where the MTU limit lies (and the drop it leaves when switched off); the
/// replies themselves are balancer_too_big.rs's.
fn config() -> BalancerConfig {
    let cpus = aya::util::nr_cpus().expect("number of possible CPUs") as u32;
    BalancerConfig { lru_size: (1024 * cpus).max(4096), icmp_too_big: false, ..BalancerConfig::testing() }
}

// ---- Rows ----

/// What the program should do with a frame.
#[derive(Debug, Clone)]
enum Out {
    /// XDP_PASS, the frame unchanged.
    Pass,
    /// XDP_DROP, the frame unchanged.
    Drop,
    /// XDP_TX, encapsulated toward this real.
    Tx(IpAddr),
    /// XDP_TX toward one of these reals (the ring decides), encapsulated
    /// exactly as for the real the output names.
    TxAny(Vec<IpAddr>),
}

#[derive(Debug, Clone)]
struct Row {
    what: String,
    frame: Vec<u8>,
    out: Out,
    /// Global counter changes besides XdpTotal and the verdict's counter.
    counts: Vec<(Stat, u64, u64)>,
    /// The VIP (and, with `real` or a TX, the real) that counts the packet.
    vip: Option<VipId>,
    real: Option<IpAddr>,
}

/// A row whose frame should pass unchanged and count nowhere (until changed).
fn row(what: impl Into<String>, frame: Vec<u8>) -> Row {
    Row { what: what.into(), frame, out: Out::Pass, counts: Vec::new(), vip: None, real: None }
}

impl Row {
    fn drop(self) -> Self {
        Row { out: Out::Drop, ..self }
    }

    fn tx(self, vip: VipId, real: IpAddr) -> Self {
        Row { out: Out::Tx(real), vip: Some(vip), real: Some(real), ..self }
    }

    fn tx_any(self, vip: VipId, reals: &[IpAddr]) -> Self {
        Row { out: Out::TxAny(reals.to_vec()), vip: Some(vip), ..self }
    }

    /// Counted by `vip` and `real` though not transmitted (a local real, a
    /// packet too big).
    fn counted(self, vip: VipId, real: IpAddr) -> Self {
        Row { vip: Some(vip), real: Some(real), ..self }
    }

    fn counts(mut self, counts: &[(Stat, u64, u64)]) -> Self {
        self.counts.extend_from_slice(counts);
        self
    }
}

/// `frame` with byte `at` replaced.
fn with_byte(frame: &[u8], at: usize, value: u8) -> Vec<u8> {
    let mut frame = frame.to_vec();
    frame[at] = value;
    frame
}

// ---- The harness ----

/// A Balancer in testing mode and the counter values it should report.
struct Lb {
    b: Balancer,
    mac: [u8; 6],
    want: BTreeMap<u32, Counter>,
    want_vips: BTreeMap<VipId, Counter>,
    /// By real index: a deleted real keeps its counters until its index is reused.
    want_reals: BTreeMap<u32, Counter>,
    index_of: BTreeMap<IpAddr, u32>,
    /// Reals some VIP had at the last `track`.
    live: BTreeSet<IpAddr>,
}

fn add(c: &mut Counter, v1: u64, v2: u64) {
    c.v1 += v1;
    c.v2 += v2;
}

impl Lb {
    fn new(config: BalancerConfig) -> Self {
        let mac = config.default_mac;
        let b = Balancer::new(config).expect("load the balancer in testing mode");
        let lb = Lb {
            b,
            mac,
            want: BTreeMap::new(),
            want_vips: BTreeMap::new(),
            want_reals: BTreeMap::new(),
            index_of: BTreeMap::new(),
            live: BTreeSet::new(),
        };
        lb.check_counters("a new Balancer");
        lb
    }

    fn testing() -> Self {
        Self::new(config())
    }

    /// Adds a VIP and its reals (weight 1, no flags).
    fn vip(&mut self, addr: impl Into<IpAddr>, port: u16, proto: u8, flags: u32, reals: &[IpAddr]) -> VipId {
        let id = VipId { addr: addr.into(), port, proto };
        self.b.add_vip(VipSpec { id, flags }).unwrap_or_else(|e| panic!("add VIP {id}: {e}"));
        self.set_reals(&id, reals, 1);
        id
    }

    /// Adds reals to a VIP, or sets the weight of those it has.
    fn set_reals(&mut self, id: &VipId, reals: &[IpAddr], weight: u32) {
        let specs: Vec<RealSpec> = reals.iter().map(|&addr| RealSpec { addr, weight, flags: 0 }).collect();
        self.b.modify_reals(id, RealAction::Add, &specs).unwrap_or_else(|e| panic!("add reals to {id}: {e}"));
    }

    fn set_mac(&mut self, mac: [u8; 6]) {
        self.b.set_default_mac(mac).expect("set the default MAC");
        self.mac = mac;
    }

    /// Follows the Balancer's VIPs and reals: new ones start at zero (the
    /// Balancer zeroes the counters of a VIP or real it allocates).
    fn track(&mut self) {
        let vips: Vec<VipId> = self.b.vips().iter().map(|v| v.id).collect();
        self.want_vips.retain(|id, _| vips.contains(id));
        let mut live = BTreeSet::new();
        for id in &vips {
            self.want_vips.entry(*id).or_default();
            for real in self.b.reals(id).expect("reals of a VIP") {
                live.insert(real.addr);
            }
        }
        for &addr in live.difference(&self.live) {
            let index = self.b.real_index(addr).expect("index of a real");
            self.index_of.retain(|_, i| *i != index);
            self.index_of.insert(addr, index);
            self.want_reals.insert(index, Counter::default());
        }
        self.live = live;
    }

    fn bump(&mut self, stat: Stat, v1: u64, v2: u64) {
        add(self.want.entry(stat as u32).or_default(), v1, v2);
    }

    /// Runs one row: verdict, exact output frame, exact counters.
    /// Returns the real the frame was sent to (XDP_TX only).
    fn run(&mut self, row: &Row) -> Option<IpAddr> {
        self.track();
        let what = &row.what;
        let sim = self.b.simulate(&row.frame).unwrap_or_else(|e| panic!("{what}: simulate: {e}"));
        let (verdict, want, sent_to) = match &row.out {
            Out::Pass => (Verdict::Pass, row.frame.clone(), None),
            Out::Drop => (Verdict::Drop, row.frame.clone(), None),
            Out::Tx(real) => (Verdict::Tx, encapsulated(&row.frame, self.mac, *real), Some(*real)),
            Out::TxAny(reals) => {
                assert_eq!(sim.verdict, Verdict::Tx, "{what}: verdict");
                let real = outer_dst(&sim.packet);
                assert!(reals.contains(&real), "{what}: sent to {real}, not one of {reals:?}");
                (Verdict::Tx, encapsulated(&row.frame, self.mac, real), Some(real))
            }
        };
        assert_eq!(sim.verdict, verdict, "{what}: verdict");
        assert!(sim.packet == want, "{what}: output frame: {}", first_difference(&sim.packet, &want));

        let bytes = row.frame.len() as u64;
        self.bump(Stat::XdpTotal, 1, bytes);
        let verdict_stat = match verdict {
            Verdict::Tx => Stat::XdpTx,
            Verdict::Drop => Stat::XdpDrop,
            _ => Stat::XdpPass,
        };
        self.bump(verdict_stat, 1, bytes);
        for &(stat, v1, v2) in &row.counts {
            self.bump(stat, v1, v2);
        }
        if let Some(vip) = row.vip {
            let l3 = l3_len(&row.frame);
            add(self.want_vips.get_mut(&vip).expect("a known VIP"), 1, l3);
            let real = sent_to.or(row.real).expect("the real that counts it");
            let index = self.index_of[&real];
            add(self.want_reals.entry(index).or_default(), 1, l3);
        }
        self.check_counters(what);
        sent_to
    }

    fn run_table(&mut self, rows: &[Row]) {
        for row in rows {
            self.run(row);
        }
    }

    /// Asks where a flow goes: (`real_for_flow`, the real of a new
    /// connection; `existing_real_for_flow`, the real of the existing one).
    /// A question changes nothing: every counter and the whole connection
    /// table (keys, reals and timestamps) must be as they were.
    fn real_for_flow(&mut self, flow: &Flow) -> (Option<IpAddr>, Option<IpAddr>) {
        self.track();
        let table = self.table();
        let new = self.b.real_for_flow(flow).expect("real_for_flow");
        let existing = self.b.existing_real_for_flow(flow).expect("existing_real_for_flow");
        let what = format!("real_for_flow {flow:?}");
        self.check_counters(&what);
        assert!(self.table() == table, "{what}: the connection table changed");
        (new, existing)
    }

    /// The connection table, every entry: (key, real index, atime).
    fn table(&self) -> Vec<(Vec<u8>, u32, u64)> {
        use std::os::fd::BorrowedFd;
        let fd = self.b.map_fd(abi::map::CONNS).expect("the table's fd");
        // SAFETY: the Balancer keeps `fd` open while `self` lives; it is only borrowed to be duplicated.
        let owned = unsafe { BorrowedFd::borrow_raw(fd) }.try_clone_to_owned().expect("dup");
        let data = aya::maps::MapData::from_fd(owned).expect("open the table");
        let map = aya::maps::Map::from_map_data(data).expect("the table as a map");
        let conns: aya::maps::HashMap<_, abi::ConnKey, abi::ConnEntry> = map.try_into().expect("a hash map");
        let mut entries: Vec<_> = conns
            .iter()
            .map(|e| e.expect("an entry"))
            .map(|(k, v)| {
                let key = [&k.src[..], &k.conn_tag.to_ne_bytes(), &k.sport, &k.dport].concat();
                (key, v.real_index, v.atime_ns)
            })
            .collect();
        entries.sort();
        entries
    }

    fn check_counters(&self, what: &str) {
        for stat in checked_stats() {
            let got = self.b.stat(stat).expect("read a counter");
            let want = self.want.get(&(stat as u32)).copied().unwrap_or_default();
            assert_eq!(got, want, "{what}: counter {stat:?}");
        }
        for (vip, want) in &self.want_vips {
            let got = self.b.vip_stats(vip).expect("read VIP counters");
            assert_eq!(got, *want, "{what}: counters of VIP {vip}");
        }
        for (index, want) in &self.want_reals {
            let got = self.b.real_stats(*index).expect("read real counters");
            assert_eq!(got, *want, "{what}: counters of real #{index}");
        }
    }

    fn conns(&self) -> u32 {
        self.b.map_usage(abi::map::CONNS).expect("map usage").1
    }
}

/// Sends a SYN for each (client, VIP address) pair to `vip`, any of `reals`
/// accepted; returns the reals reached.
fn syns_reach(
    lb: &mut Lb,
    what: &str,
    vip: VipId,
    reals: &[IpAddr],
    flows: impl IntoIterator<Item = (SocketAddr, SocketAddr)>,
) -> BTreeSet<IpAddr> {
    flows
        .into_iter()
        .map(|(c, v)| {
            let r = row(format!("{what}: SYN {c} -> {v}"), syn(c, v)).tx_any(vip, reals).counts(SYN_MISS);
            lb.run(&r).expect("sent to a real")
        })
        .collect()
}

// ---- Tests ----

#[test]
fn frames_not_balanced_pass_unchanged() {
    if skip_unless_root("frames_not_balanced_pass_unchanged") {
        return;
    }
    let mut lb = Lb::testing();
    lb.vip(VIP4, 80, TCP, 0, &[r4(1)]);
    lb.vip(VIP6, 80, TCP, 0, &[r6(1)]);
    let c = sock(CLIENT4, 40000);
    let c6 = sock(CLIENT6, 40000);
    let to_vip = sock(VIP4, 80);
    let to_vip6 = sock(VIP6, 80);
    let reply = quote(Seg::Ack, to_vip, c); // what the VIP sent the client
    let reply6 = quote(Seg::Ack, to_vip6, c6);
    let not_balanced_options = &[(Stat::NotBalanced, 1, 0)];
    let not_balanced_fragment = &[(Stat::NotBalanced, 0, 1)];

    lb.run_table(&[
        // Not for a VIP.
        row("ARP request for the VIP's address", arp(CLIENT4, VIP4)),
        row("LLDP frame", raw(ETH_P_LLDP, &[0x02; 46])),
        row("TCP SYN to an address that is no VIP", syn(c, sock(OTHER4, 80))),
        row("TCP SYN to the VIP's address, another port (no port-less VIP)", syn(c, sock(VIP4, 81))),
        row("UDP to the address and port of a TCP VIP", udp(c, to_vip)),
        row("GRE to the VIP's address", with_ipv4_proto(&syn(c, to_vip), IPPROTO_GRE)),
        row("IPv6 TCP SYN to an address that is no VIP", syn(c6, sock(OTHER6, 80))),
        row("IPv6 UDP to the address and port of a TCP VIP", udp(c6, to_vip6)),
        row("ICMP echo request to the VIP", echo(CLIENT4.into(), VIP4.into())),
        row("ICMPv6 echo request to the VIP", echo(CLIENT6.into(), VIP6.into())),
        row(
            "ICMP time exceeded (type 11) quoting a VIP flow",
            icmp_error(ROUTER4.into(), VIP4.into(), 11, 0, [0; 4], &reply),
        ),
        row(
            "ICMP unreachable quoting a flow of no VIP",
            icmp_error(ROUTER4.into(), OTHER4.into(), 3, 4, mtu(1400), &quote(Seg::Ack, sock(OTHER4, 80), c)),
        ),
        row(
            "ICMP unreachable quoting a UDP reply from the TCP VIP's address and port",
            icmp_error(ROUTER4.into(), VIP4.into(), 3, 3, [0; 4], &quote(Seg::Udp, to_vip, c)),
        ),
        row(
            "ICMP unreachable cut inside the quoted ports",
            truncated(&icmp_error(ROUTER4.into(), VIP4.into(), 3, 4, mtu(1400), &reply), 14 + 20 + 8 + 20 + 3),
        ),
        row(
            "ICMPv6 time exceeded (type 3) quoting a VIP flow",
            icmp_error(ROUTER6.into(), VIP6.into(), 3, 0, [0; 4], &reply6),
        ),
        row(
            "ICMPv6 packet too big quoting a flow of no VIP",
            icmp_error(ROUTER6.into(), OTHER6.into(), 2, 0, mtu(1280), &quote(Seg::Ack, sock(OTHER6, 80), c6)),
        ),
        row(
            "ICMPv6 packet too big cut inside the quoted IPv6 header",
            truncated(&icmp_error(ROUTER6.into(), VIP6.into(), 2, 0, mtu(1280), &reply6), 14 + 40 + 8 + 39),
        ),
        // Truncated frames.
        row("Ethernet header only, IPv4 ethertype", truncated(&syn(c, to_vip), 14)),
        row("IPv4 header cut at 19 bytes", truncated(&syn(c, to_vip), 14 + 19)),
        row("TCP header cut at 19 bytes", truncated(&syn(c, to_vip), 14 + 20 + 19)),
        row("UDP header cut at 7 bytes", truncated(&udp(c, to_vip), 14 + 20 + 7)),
        row("IPv6 header cut at 39 bytes", truncated(&syn(c6, to_vip6), 14 + 39)),
        row("IPv6 TCP header cut at 19 bytes", truncated(&syn(c6, to_vip6), 14 + 40 + 19)),
        row("VLAN tag cut after 3 bytes", truncated(&tagged(&syn(c, to_vip), ETH_P_8021Q, 7), 17)),
        // Malformed IP headers: the kernel's to judge, not counted as options.
        row("IPv4 ethertype carrying version 6 to the VIP", with_byte(&syn(c, to_vip), 14, 0x65)),
        row("IPv4 header length 4 (below the minimum) to the VIP", with_byte(&syn(c, to_vip), 14, 0x44)),
        row("IPv6 ethertype carrying version 4 to the VIP", with_byte(&syn(c6, to_vip6), 14, 0x40)),
        // Headers the program does not walk.
        row(
            "two VLAN tags (802.1ad outside 802.1Q): only one tag is parsed",
            tagged(&tagged(&syn(c, to_vip), ETH_P_8021Q, 7), ETH_P_8021AD, 100),
        ),
        row(
            "IPv6 SYN to the VIP behind a hop-by-hop options header",
            with_ipv6_ext(&syn(c6, to_vip6), IPPROTO_HOPOPTS, &[0, 1, 4, 0, 0, 0, 0]),
        ),
        // Not balanced, and counted.
        row("IPv4 SYN to the VIP with options (ihl 6)", with_ipv4_options(&syn(c, to_vip), &[1, 1, 1, 0]))
            .counts(not_balanced_options),
        row(
            "IPv4 with options to an address that is no VIP",
            with_ipv4_options(&syn(c, sock(OTHER4, 80)), &[1, 1, 1, 0]),
        )
        .counts(not_balanced_options),
        row(
            "IPv4 with options and MF: counted as options",
            with_ipv4_options(&with_ipv4_frag(&ack(c, to_vip), 7, 0x2000), &[1, 1, 1, 0]),
        )
        .counts(not_balanced_options),
        row("IPv4 first fragment (MF) to the VIP", with_ipv4_frag(&ack(c, to_vip), 0x1234, 0x2000))
            .counts(not_balanced_fragment),
        row("IPv4 last fragment (offset 185 x 8, no MF) to the VIP", with_ipv4_frag(&ack(c, to_vip), 0x1234, 185))
            .counts(not_balanced_fragment),
        row(
            "IPv4 middle fragment (MF and offset 1) to no VIP",
            with_ipv4_frag(&ack(c, sock(OTHER4, 80)), 0x1235, 0x2001),
        )
        .counts(not_balanced_fragment),
        row(
            "IPv6 fragment header (first fragment, M set) to the VIP",
            with_ipv6_ext(&ack(c6, to_vip6), IPPROTO_FRAGMENT, &[0, 0x00, 0x01, 0x00, 0x00, 0x12, 0x34]),
        )
        .counts(not_balanced_fragment),
    ]);
    assert_eq!(lb.conns(), 0, "nothing entered the connection table");
}

#[test]
fn encapsulation_table() {
    if skip_unless_root("encapsulation_table") {
        return;
    }
    let mut lb = Lb::testing();
    let tcp4 = lb.vip(VIP4, 80, TCP, 0, &[r4(1)]);
    let udp4 = lb.vip(VIP4, 53, UDP, 0, &[r4(2)]);
    let any4 = lb.vip(VIP4, 0, TCP, 0, &[r4(3)]);
    let tcp6 = lb.vip(VIP6, 443, TCP, 0, &[r6(1)]);
    let udp6 = lb.vip(VIP6, 53, UDP, 0, &[r6(2)]);
    let v4_in_v6 = lb.vip(VIP4B, 80, TCP, 0, &[r6(3)]);
    let c = |port| sock(CLIENT4, port);
    let c6 = |port| sock(CLIENT6, port);
    let (to_tcp4, to_udp4, to_tcp6, to_udp6, to_46) =
        (sock(VIP4, 80), sock(VIP4, 53), sock(VIP6, 443), sock(VIP6, 53), sock(VIP4B, 80));
    let too_big_v4 = &[(Stat::IcmpTooBig, 1, 0)];
    let too_big_v6 = &[(Stat::IcmpTooBig, 0, 1)];

    lb.run_table(&[
        // IPv4 in IPv4.
        row("IPv4 SYN -> IPv4 real", syn(c(40000), to_tcp4)).tx(tcp4, r4(1)).counts(SYN_MISS),
        row("IPv4 ACK of that flow: table hit", ack(c(40000), to_tcp4)).tx(tcp4, r4(1)).counts(HIT),
        row("IPv4 ACK of an unseen flow: non-SYN miss", ack(c(40001), to_tcp4)).tx(tcp4, r4(1)).counts(ACK_MISS),
        row("IPv4 SYN with TOS 0xb9: outer TOS copied", with_tos(&syn(c(40002), to_tcp4), 0xb9))
            .tx(tcp4, r4(1))
            .counts(SYN_MISS),
        row("IPv4 SYN without DF, id 0x4321: not a fragment", with_ipv4_frag(&syn(c(40003), to_tcp4), 0x4321, 0))
            .tx(tcp4, r4(1))
            .counts(SYN_MISS),
        row(
            "IPv4 SYN from 203.0.113.77:4660 (source bits XOR the port)",
            syn(sock(v4(203, 0, 113, 77), 0x1234), to_tcp4),
        )
        .tx(tcp4, r4(1))
        .counts(SYN_MISS),
        row(
            "IPv4 ACK padded to 60 bytes: the padding follows the inner packet",
            padded(&frame(Seg::Ack, c(40004), to_tcp4, 0), 60),
        )
        .tx(tcp4, r4(1))
        .counts(ACK_MISS),
        row("IPv4 UDP -> IPv4 real: miss", udp(c(5353), to_udp4)).tx(udp4, r4(2)).counts(RING),
        row("IPv4 UDP again: table hit", udp(c(5353), to_udp4)).tx(udp4, r4(2)).counts(HIT),
        row("IPv4 SYN to another port of the address: the port-less VIP", syn(c(40005), sock(VIP4, 8080)))
            .tx(any4, r4(3))
            .counts(SYN_MISS),
        // IPv6 in IPv6.
        row("IPv6 SYN -> IPv6 real", syn(c6(40000), to_tcp6)).tx(tcp6, r6(1)).counts(SYN_MISS),
        row("IPv6 ACK of that flow: table hit", ack(c6(40000), to_tcp6)).tx(tcp6, r6(1)).counts(HIT),
        row("IPv6 SYN with traffic class 0x2e: copied", with_tos(&syn(c6(40001), to_tcp6), 0x2e))
            .tx(tcp6, r6(1))
            .counts(SYN_MISS),
        row(
            "IPv6 SYN with traffic class 0x2e and flow label 0xabcde: outer label 0",
            with_flow_label(&with_tos(&syn(c6(40003), to_tcp6), 0x2e), 0xabcde),
        )
        .tx(tcp6, r6(1))
        .counts(SYN_MISS),
        row("IPv6 UDP -> IPv6 real", udp(c6(5353), to_udp6)).tx(udp6, r6(2)).counts(RING),
        // IPv4 in IPv6.
        row("IPv4 SYN -> IPv6 real", syn(c(40006), to_46)).tx(v4_in_v6, r6(3)).counts(SYN_MISS),
        row("IPv4 ACK with TOS 0xb9 -> IPv6 real: traffic class copied", with_tos(&ack(c(40006), to_46), 0xb9))
            .tx(v4_in_v6, r6(3))
            .counts(HIT),
        // VLAN.
        row("802.1Q (TCI 0x0064) IPv4 SYN: the tag stays", tagged(&syn(c(40007), to_tcp4), ETH_P_8021Q, 0x0064))
            .tx(tcp4, r4(1))
            .counts(SYN_MISS),
        row("802.1Q (TCI 0xa07b, PCP 5) IPv6 SYN", tagged(&syn(c6(40002), to_tcp6), ETH_P_8021Q, 0xa07b))
            .tx(tcp6, r6(1))
            .counts(SYN_MISS),
        row(
            "802.1Q IPv4 SYN -> IPv6 real: the tag's ethertype becomes 0x86dd",
            tagged(&syn(c(40008), to_46), ETH_P_8021Q, 0x0fff),
        )
        .tx(v4_in_v6, r6(3))
        .counts(SYN_MISS),
        row("802.1ad (TCI 0x0123) IPv4 SYN", tagged(&syn(c(40009), to_tcp4), ETH_P_8021AD, 0x0123))
            .tx(tcp4, r4(1))
            .counts(SYN_MISS),
        // MTU 1500: the encapsulated IP packet must fit.
        row("IPv4 packet of 1480 bytes -> IPv4 real: 1500 once encapsulated", ack_of_l3_len(c(41000), to_tcp4, 1480))
            .tx(tcp4, r4(1))
            .counts(ACK_MISS),
        // A packet dropped as too big is not counted by its VIP or real
        // (only what is sent is), though its flow took the ring as usual.
        row("IPv4 packet of 1481 bytes -> IPv4 real: too big, dropped", ack_of_l3_len(c(41001), to_tcp4, 1481))
            .drop()
            .counts(ACK_MISS)
            .counts(too_big_v4),
        row(
            "802.1Q IPv4 packet of 1480 bytes: the tag does not count",
            tagged(&ack_of_l3_len(c(41002), to_tcp4, 1480), ETH_P_8021Q, 9),
        )
        .tx(tcp4, r4(1))
        .counts(ACK_MISS),
        row("IPv6 packet of 1460 bytes -> IPv6 real: 1500 once encapsulated", ack_of_l3_len(c6(41000), to_tcp6, 1460))
            .tx(tcp6, r6(1))
            .counts(ACK_MISS),
        row("IPv6 packet of 1461 bytes -> IPv6 real: too big, dropped", ack_of_l3_len(c6(41001), to_tcp6, 1461))
            .drop()
            .counts(ACK_MISS)
            .counts(too_big_v6),
        row("IPv4 packet of 1460 bytes -> IPv6 real: 1500 once encapsulated", ack_of_l3_len(c(41003), to_46, 1460))
            .tx(v4_in_v6, r6(3))
            .counts(ACK_MISS),
        row("IPv4 packet of 1461 bytes -> IPv6 real: too big (IPv4 counter)", ack_of_l3_len(c(41004), to_46, 1461))
            .drop()
            .counts(ACK_MISS)
            .counts(too_big_v4),
    ]);

    // The outer source rule, spelled out once: 172.16.(113^0x12).(77^0x34).
    let out = lb.b.simulate(&syn(sock(v4(203, 0, 113, 77), 0x1234), to_tcp4)).unwrap().packet;
    assert_eq!(out[26..30], [172, 16, 113 ^ 0x12, 77 ^ 0x34]);
}

#[test]
fn mtu_setting_moves_the_too_big_limit() {
    if skip_unless_root("mtu_setting_moves_the_too_big_limit") {
        return;
    }
    let mut lb = Lb::new(BalancerConfig { mtu: 1280, ..config() });
    let vip = lb.vip(VIP4, 80, TCP, 0, &[r4(1)]);
    let to = sock(VIP4, 80);
    lb.run_table(&[
        row("IPv4 packet of 1260 bytes: 1280 once encapsulated", ack_of_l3_len(sock(CLIENT4, 1), to, 1260))
            .tx(vip, r4(1))
            .counts(ACK_MISS),
        row("IPv4 packet of 1261 bytes: too big", ack_of_l3_len(sock(CLIENT4, 2), to, 1261))
            .drop()
            .counts(ACK_MISS)
            .counts(&[(Stat::IcmpTooBig, 1, 0)]),
    ]);
}

#[test]
fn icmp_errors_reach_the_real_of_the_flow_they_quote() {
    if skip_unless_root("icmp_errors_reach_the_real_of_the_flow_they_quote") {
        return;
    }
    let mut lb = Lb::testing();
    let reals4 = [r4(1), r4(2), r4(3), r4(4)];
    let reals6 = [r6(1), r6(2), r6(3), r6(4)];
    let vip = lb.vip(VIP4, 80, TCP, 0, &reals4);
    let vip_udp = lb.vip(VIP4, 53, UDP, 0, &reals4);
    let vip6 = lb.vip(VIP6, 80, TCP, 0, &reals6);
    let fwd4 = &[(Stat::IcmpFwd, 1, 0)];
    let fwd6 = &[(Stat::IcmpFwd, 0, 1)];
    let (to4, to_udp, to6) = (sock(VIP4, 80), sock(VIP4, 53), sock(VIP6, 80));
    let mut reached = BTreeSet::new();

    for port in 50000..50008 {
        // IPv4 TCP: the error about a flow goes where the flow goes.
        let c = sock(CLIENT4, port);
        let real = lb.run(&row(format!("SYN {c}"), syn(c, to4)).tx_any(vip, &reals4).counts(SYN_MISS)).unwrap();
        reached.insert(real);
        let frag_needed = icmp_error(ROUTER4.into(), VIP4.into(), 3, 4, mtu(1400), &quote(Seg::Ack, to4, c));
        lb.run(
            &row(format!("ICMP frag-needed quoting the reply to {c}: table hit"), frag_needed.clone())
                .tx(vip, real)
                .counts(HIT)
                .counts(fwd4),
        );
        assert!(lb.b.delete_conn(&vip, c.ip(), port).unwrap());
        lb.run(
            &row(format!("ICMP frag-needed about {c}, no table entry: the ring (no LruMiss)"), frag_needed)
                .tx(vip, real)
                .counts(RING)
                .counts(fwd4),
        );
        lb.run(
            &row(format!("ACK {c}: still a miss, the ICMP error left no entry"), ack(c, to4))
                .tx(vip, real)
                .counts(ACK_MISS),
        );

        // IPv4 UDP: port unreachable (type 3 code 3) quoting the reply.
        let real = lb.run(&row(format!("UDP {c}"), udp(c, to_udp)).tx_any(vip_udp, &reals4).counts(RING)).unwrap();
        lb.run(
            &row(
                format!("ICMP port unreachable quoting the UDP reply to {c}"),
                icmp_error(ROUTER4.into(), VIP4.into(), 3, 3, [0; 4], &quote(Seg::Udp, to_udp, c)),
            )
            .tx(vip_udp, real)
            .counts(HIT)
            .counts(fwd4),
        );

        // IPv6: packet too big (type 2) and destination unreachable (type 1).
        let c6 = sock(CLIENT6, port);
        let real = lb.run(&row(format!("SYN {c6}"), syn(c6, to6)).tx_any(vip6, &reals6).counts(SYN_MISS)).unwrap();
        let reply6 = quote(Seg::Ack, to6, c6);
        lb.run_table(&[
            row(
                format!("ICMPv6 packet too big quoting the reply to {c6}"),
                icmp_error(ROUTER6.into(), VIP6.into(), 2, 0, mtu(1280), &reply6),
            )
            .tx(vip6, real)
            .counts(HIT)
            .counts(fwd6),
            row(
                format!("ICMPv6 unreachable quoting the reply to {c6}"),
                icmp_error(ROUTER6.into(), VIP6.into(), 1, 4, [0; 4], &reply6),
            )
            .tx(vip6, real)
            .counts(HIT)
            .counts(fwd6),
        ]);
    }
    assert!(reached.len() > 1, "the flows all went to {reached:?}: the test proves nothing");
}

#[test]
fn connection_table_pins_flows_while_the_ring_changes() {
    if skip_unless_root("connection_table_pins_flows_while_the_ring_changes") {
        return;
    }
    let mut lb = Lb::testing();
    let (a, b, c, d) = (r4(1), r4(2), r4(3), r4(4));
    let vip = lb.vip(VIP4, 80, TCP, 0, &[a, b]);
    let to = sock(VIP4, 80);
    let flows: Vec<SocketAddr> = (30000..30032).map(|p| sock(CLIENT4, p)).collect();

    let before: Vec<IpAddr> = flows
        .iter()
        .map(|&f| lb.run(&row(format!("SYN {f}"), syn(f, to)).tx_any(vip, &[a, b]).counts(SYN_MISS)).unwrap())
        .collect();
    // A flow first seen mid-connection is remembered too.
    let late = sock(CLIENT4, 31000);
    let late_real =
        lb.run(&row("ACK with no SYN seen: a miss", ack(late, to)).tx_any(vip, &[a, b]).counts(ACK_MISS)).unwrap();
    lb.run(&row("its next ACK: a hit", ack(late, to)).tx(vip, late_real).counts(HIT));
    assert_eq!(lb.conns(), 33);

    lb.set_reals(&vip, &[c, d], 1);
    for (&f, &real) in flows.iter().zip(&before) {
        lb.run(
            &row(format!("ACK {f} after the ring changed: the remembered real"), ack(f, to)).tx(vip, real).counts(HIT),
        );
    }
    lb.run(&row("late flow, after the ring changed", ack(late, to)).tx(vip, late_real).counts(HIT));
    // Asked now, the flow's existing connection stays on its real; a new
    // one takes the ring (the real the SYN below reaches).
    let flow = Flow { src: flows[0].ip(), dst: VIP4.into(), src_port: flows[0].port(), dst_port: 80, proto: TCP };
    let (new, existing) = lb.real_for_flow(&flow);
    assert_eq!(existing, Some(before[0]));

    // A SYN always takes the ring, and its entry replaces the old one.
    let after: Vec<IpAddr> = flows
        .iter()
        .map(|&f| {
            lb.run(
                &row(format!("SYN {f} after the ring changed: the ring"), syn(f, to))
                    .tx_any(vip, &[a, b, c, d])
                    .counts(SYN_MISS),
            )
            .unwrap()
        })
        .collect();
    assert_eq!(new, Some(after[0]), "real_for_flow names the real a new connection reaches");
    let moved = before.iter().zip(&after).filter(|(x, y)| x != y).count();
    assert!(moved > 0, "no flow changed real: the test proves nothing");
    for (&f, &real) in flows.iter().zip(&after) {
        lb.run(&row(format!("ACK {f} after its new SYN: the refreshed entry"), ack(f, to)).tx(vip, real).counts(HIT));
    }

    // A deleted real keeps its table entries (and its map slot until the index
    // is reused): flows pinned to it still reach it.
    let (i, &gone) = after.iter().enumerate().find(|&(_, &r)| r == c || r == d).expect("some flow moved to a new real");
    lb.b.del_real(&vip, gone).unwrap();
    assert_eq!(lb.b.real_index(gone), None);
    lb.run(
        &row(format!("ACK {} pinned to the deleted real {gone}", flows[i]), ack(flows[i], to))
            .tx(vip, gone)
            .counts(HIT),
    );
    let rest: Vec<IpAddr> = [a, b, c, d].into_iter().filter(|&r| r != gone).collect();
    lb.run(
        &row(format!("SYN {} after the delete: the ring, without it", flows[i]), syn(flows[i], to))
            .tx_any(vip, &rest)
            .counts(SYN_MISS),
    );
}

#[test]
fn no_lru_vip_follows_the_ring_on_every_packet() {
    if skip_unless_root("no_lru_vip_follows_the_ring_on_every_packet") {
        return;
    }
    let mut lb = Lb::testing();
    let (a, b, c, d) = (r4(1), r4(2), r4(3), r4(4));
    let vip = lb.vip(VIP4, 80, TCP, abi::VIP_F_NO_LRU, &[a, b]);
    let vip_udp = lb.vip(VIP4, 53, UDP, abi::VIP_F_NO_LRU, &[a, b]);
    let to = sock(VIP4, 80);
    let flows: Vec<SocketAddr> = (30000..30032).map(|p| sock(CLIENT4, p)).collect();

    let mut before = Vec::new();
    for &f in &flows {
        let real = lb.run(&row(format!("SYN {f}"), syn(f, to)).tx_any(vip, &[a, b]).counts(SYN_MISS)).unwrap();
        lb.run(&row(format!("ACK {f}: a miss, every time"), ack(f, to)).tx(vip, real).counts(ACK_MISS));
        before.push(real);
    }
    let udp_real =
        lb.run(&row("UDP datagram", udp(flows[0], sock(VIP4, 53))).tx_any(vip_udp, &[a, b]).counts(RING)).unwrap();
    lb.run(
        &row("the same UDP flow again: the ring again", udp(flows[0], sock(VIP4, 53)))
            .tx(vip_udp, udp_real)
            .counts(RING),
    );
    assert_eq!(lb.conns(), 0, "a NO_LRU VIP never writes the table");

    lb.set_reals(&vip, &[c, d], 1);
    let mut moved = 0;
    for (&f, &old) in flows.iter().zip(&before) {
        let now = lb
            .run(
                &row(format!("ACK {f} after the ring changed"), ack(f, to)).tx_any(vip, &[a, b, c, d]).counts(ACK_MISS),
            )
            .unwrap();
        lb.run(&row(format!("SYN {f}: the ring agrees with the ACK"), syn(f, to)).tx(vip, now).counts(SYN_MISS));
        moved += usize::from(now != old);
    }
    assert!(moved > 0, "no flow changed real: the test proves nothing");
    assert_eq!(lb.conns(), 0);
    assert_eq!(lb.b.purge_vip_conns(&vip).unwrap(), 0);
}

#[test]
fn vip_flags_shape_the_hash() {
    if skip_unless_root("vip_flags_shape_the_hash") {
        return;
    }
    let mut lb = Lb::testing();
    let reals: Vec<IpAddr> = (1..=8).map(r4).collect();
    let addr = |i| v4(10, 100, 1, i);
    let plain = lb.vip(addr(1), 80, TCP, 0, &reals);
    let no_sport = lb.vip(addr(2), 80, TCP, abi::VIP_F_NO_SPORT, &reals);
    let dport_hash = lb.vip(addr(3), 80, TCP, abi::VIP_F_DPORT_HASH, &reals);
    let portless = lb.vip(addr(4), 0, TCP, 0, &reals);
    let portless_src_dst = lb.vip(addr(5), 0, TCP, abi::VIP_F_HASH_SRC_DST_PORT, &reals);
    let portless_dport = lb.vip(addr(6), 0, TCP, abi::VIP_F_DPORT_HASH, &reals);
    let reals6: Vec<IpAddr> = (1..=8).map(r6).collect();
    let no_sport6 = lb.vip(VIP6, 80, TCP, abi::VIP_F_NO_SPORT, &reals6);
    let me = |port| sock(CLIENT4, port);
    let clients = || (1..=32u8).map(|i| sock(v4(198, 51, 100, i), 1000 + u16::from(i)));
    let sports = || (2000..2032).map(me);

    // Control: without flags, one client's source ports spread.
    let spread = syns_reach(&mut lb, "no flags", plain, &reals, sports().map(|c| (c, sock(addr(1), 80))));
    assert!(spread.len() > 1, "no flags, source ports: {spread:?}");

    // NO_SPORT: a client's source ports all go to one real (the outer source
    // still uses each packet's own port: the exact-output check sees to it).
    let one = syns_reach(&mut lb, "NO_SPORT", no_sport, &reals, sports().map(|c| (c, sock(addr(2), 80))));
    assert_eq!(one.len(), 1, "NO_SPORT, source ports: {one:?}");
    let many = syns_reach(&mut lb, "NO_SPORT", no_sport, &reals, clients().map(|c| (c, sock(addr(2), 80))));
    assert!(many.len() > 1, "NO_SPORT, clients: {many:?}");
    let shared = *one.first().unwrap();
    lb.run(
        &row("NO_SPORT: an ACK from an unseen source port shares the client's entry", ack(me(9999), sock(addr(2), 80)))
            .tx(no_sport, shared)
            .counts(HIT),
    );

    let one = syns_reach(
        &mut lb,
        "IPv6 NO_SPORT",
        no_sport6,
        &reals6,
        (2000..2032).map(|p| (sock(CLIENT6, p), sock(VIP6, 80))),
    );
    assert_eq!(one.len(), 1, "IPv6 NO_SPORT, source ports: {one:?}");
    let many = syns_reach(
        &mut lb,
        "IPv6 NO_SPORT",
        no_sport6,
        &reals6,
        (1..=32u16).map(|i| {
            let client = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, i, 7);
            (sock(client, 2000), sock(VIP6, 80))
        }),
    );
    assert!(many.len() > 1, "IPv6 NO_SPORT, clients: {many:?}");

    // DPORT_HASH: every client of the port goes to one real.
    let one = syns_reach(&mut lb, "DPORT_HASH", dport_hash, &reals, clients().map(|c| (c, sock(addr(3), 80))));
    assert_eq!(one.len(), 1, "DPORT_HASH, clients: {one:?}");

    // Port-less VIP: a client's destination ports go to one real...
    let dports = |i| (7000..7032).map(move |p| (me(5000), sock(addr(i), p)));
    let one = syns_reach(&mut lb, "port-less", portless, &reals, dports(4));
    assert_eq!(one.len(), 1, "port-less, destination ports: {one:?}");
    let many = syns_reach(&mut lb, "port-less", portless, &reals, sports().map(|c| (c, sock(addr(4), 7000))));
    assert!(many.len() > 1, "port-less, source ports: {many:?}");
    // ... unless HASH_SRC_DST_PORT keeps the destination port in the hash ...
    let many = syns_reach(&mut lb, "port-less HASH_SRC_DST_PORT", portless_src_dst, &reals, dports(5));
    assert!(many.len() > 1, "port-less HASH_SRC_DST_PORT, destination ports: {many:?}");
    // ... or DPORT_HASH hashes on it alone.
    let many = syns_reach(&mut lb, "port-less DPORT_HASH", portless_dport, &reals, dports(6));
    assert!(many.len() > 1, "port-less DPORT_HASH, destination ports: {many:?}");
    let one = syns_reach(
        &mut lb,
        "port-less DPORT_HASH",
        portless_dport,
        &reals,
        clients().map(|c| (c, sock(addr(6), 7000))),
    );
    assert_eq!(one.len(), 1, "port-less DPORT_HASH, clients: {one:?}");
}

#[test]
fn local_vip_passes_traffic_for_a_local_real() {
    if skip_unless_root("local_vip_passes_traffic_for_a_local_real") {
        return;
    }
    let mut lb = Lb::testing();
    let (here, there) = (r4(9), r4(10));
    let local_real = |addr| RealSpec { addr, weight: 1, flags: abi::REAL_F_LOCAL_REAL };
    let local_vip = lb.vip(v4(10, 100, 2, 1), 80, TCP, abi::VIP_F_LOCAL_VIP, &[]);
    lb.b.add_real(&local_vip, local_real(here)).unwrap();
    let local_vip_remote_real = lb.vip(v4(10, 100, 2, 2), 80, TCP, abi::VIP_F_LOCAL_VIP, &[there]);
    let plain_vip = lb.vip(v4(10, 100, 2, 3), 80, TCP, 0, &[]);
    lb.b.add_real(&plain_vip, local_real(here)).unwrap();
    let c = sock(CLIENT4, 40000);
    let to = |i| sock(v4(10, 100, 2, i), 80);

    lb.run_table(&[
        row("LOCAL_VIP, LOCAL_REAL: SYN passes, counted", syn(c, to(1))).counted(local_vip, here).counts(SYN_MISS),
        row("LOCAL_VIP, LOCAL_REAL: ACK passes, counted", ack(c, to(1))).counted(local_vip, here).counts(HIT),
        row("LOCAL_VIP, remote real: encapsulated", syn(c, to(2))).tx(local_vip_remote_real, there).counts(SYN_MISS),
        row("LOCAL_REAL of a VIP without LOCAL_VIP: encapsulated", syn(c, to(3))).tx(plain_vip, here).counts(SYN_MISS),
    ]);

    lb.b.modify_real_flags(here, abi::REAL_F_LOCAL_REAL, false).unwrap();
    lb.run(
        &row("LOCAL_VIP, the real no longer local: encapsulated", syn(c, to(1))).tx(local_vip, here).counts(SYN_MISS),
    );
    lb.b.modify_real_flags(here, abi::REAL_F_LOCAL_REAL, true).unwrap();
    lb.b.modify_vip_flags(&plain_vip, abi::VIP_F_LOCAL_VIP, true).unwrap();
    lb.run(&row("LOCAL_VIP set on the other VIP: passes", syn(c, to(3))).counted(plain_vip, here).counts(SYN_MISS));
}

#[test]
fn drained_real_keeps_its_flows_and_empty_rings_drop() {
    if skip_unless_root("drained_real_keeps_its_flows_and_empty_rings_drop") {
        return;
    }
    let mut lb = Lb::testing();
    let (a, b, c) = (r4(1), r4(2), r4(3));
    let vip = lb.vip(VIP4, 80, TCP, 0, &[a, b, c]);
    lb.vip(VIP4B, 80, TCP, 0, &[]);
    let to = sock(VIP4, 80);
    let flows: Vec<SocketAddr> = (30000..30064).map(|p| sock(CLIENT4, p)).collect();
    let before: Vec<IpAddr> = flows
        .iter()
        .map(|&f| lb.run(&row(format!("SYN {f}"), syn(f, to)).tx_any(vip, &[a, b, c]).counts(SYN_MISS)).unwrap())
        .collect();
    let on_a: Vec<SocketAddr> = flows.iter().zip(&before).filter(|&(_, &r)| r == a).map(|(&f, _)| f).collect();
    assert!(!on_a.is_empty(), "no flow on {a}: the test proves nothing");

    lb.set_reals(&vip, &[a], 0);
    for port in 20000..20200 {
        let f = sock(CLIENT4, port);
        lb.run(&row(format!("SYN {f} with {a} drained"), syn(f, to)).tx_any(vip, &[b, c]).counts(SYN_MISS));
    }
    for &f in &on_a {
        lb.run(&row(format!("ACK {f}, established on the drained real"), ack(f, to)).tx(vip, a).counts(HIT));
    }
    // A new SYN of such a flow rehashes it away from the drained real.
    let moved_to = lb
        .run(&row(format!("SYN {} again: the ring", on_a[0]), syn(on_a[0], to)).tx_any(vip, &[b, c]).counts(SYN_MISS))
        .unwrap();

    // Every real drained: new flows are dropped, established ones still flow.
    lb.set_reals(&vip, &[b, c], 0);
    let ch_drop = &[(Stat::ChDrop, 1, 0)];
    lb.run_table(&[
        row("SYN to a VIP whose reals are all drained", syn(sock(CLIENT4, 1), to))
            .drop()
            .counts(SYN_MISS)
            .counts(ch_drop),
        row("ACK of an unseen flow, all drained", ack(sock(CLIENT4, 2), to)).drop().counts(ACK_MISS).counts(ch_drop),
        row("ACK of an established flow, all drained", ack(on_a[0], to)).tx(vip, moved_to).counts(HIT),
        row("SYN to a VIP with no reals", syn(sock(CLIENT4, 3), sock(VIP4B, 80)))
            .drop()
            .counts(SYN_MISS)
            .counts(ch_drop),
    ]);
}

/// Issue #10: real_for_flow answers where a new connection of the flow goes
/// (a drained real is never named, whatever was asked before), and asking
/// changes nothing (the harness checks every counter and the whole table
/// after each question). `existing_real_for_flow` answers for the open
/// connection, and the live program agrees with it.
#[test]
fn real_for_flow_names_the_real_of_a_new_connection_and_changes_nothing() {
    if skip_unless_root("real_for_flow_names_the_real_of_a_new_connection_and_changes_nothing") {
        return;
    }
    let mut lb = Lb::testing();
    let (a, b) = (r4(1), r4(2));
    let tcp = lb.vip(VIP4, 80, TCP, 0, &[a, b]);
    let udp = lb.vip(VIP4, 53, UDP, 0, &[a, b]);
    let flow = |port, dst_port, proto| Flow { src: CLIENT4.into(), dst: VIP4.into(), src_port: port, dst_port, proto };
    let ports = 40000..40100u16;

    // Asked before anything was sent: the ring's answer, and no connection.
    let asked: Vec<IpAddr> = ports
        .clone()
        .map(|p| {
            let (new, existing) = lb.real_for_flow(&flow(p, 80, TCP));
            assert_eq!(existing, None, "port {p}: no connection yet");
            new.expect("a real for a new connection")
        })
        .collect();
    assert!(asked.contains(&a) && asked.contains(&b), "one real got every flow: the test proves nothing");
    assert_eq!(lb.conns(), 0, "questions inserted connection-table entries");

    // Connections opened: they reach the real that was named, and are known.
    for (p, &real) in ports.clone().zip(&asked) {
        lb.run(
            &row(format!("SYN from port {p}"), syn(sock(CLIENT4, p), sock(VIP4, 80))).tx(tcp, real).counts(SYN_MISS),
        );
        lb.run(&row(format!("datagram from port {p}"), udp_dgram(p)).tx_any(udp, &[a, b]).counts(RING));
    }
    assert_eq!(lb.conns(), 200);

    // Drain a: every new connection goes to b, including the flows asked
    // about (and opened) before; open connections stay where they are.
    lb.set_reals(&tcp, &[a], 0);
    lb.set_reals(&udp, &[a], 0);
    for (p, &real) in ports.clone().zip(&asked) {
        assert_eq!(lb.real_for_flow(&flow(p, 80, TCP)), (Some(b), Some(real)), "TCP port {p}");
        let (new, existing) = lb.real_for_flow(&flow(p, 53, UDP));
        assert_eq!(new, Some(b), "UDP port {p}");
        assert!(existing.is_some(), "UDP port {p}: its datagram's entry");
    }
    for p in 50000..50100u16 {
        assert_eq!(lb.real_for_flow(&flow(p, 80, TCP)), (Some(b), None), "unseen TCP port {p}");
    }
    assert_eq!(lb.conns(), 200, "questions inserted connection-table entries");

    // The live program agrees with both answers.
    let p = ports.clone().zip(&asked).find(|&(_, &r)| r == a).expect("a flow on the drained real").0;
    lb.run(
        &row("ACK of a connection on the drained real", ack(sock(CLIENT4, p), sock(VIP4, 80))).tx(tcp, a).counts(HIT),
    );
    lb.run(&row("a new SYN of that flow", syn(sock(CLIENT4, p), sock(VIP4, 80))).tx(tcp, b).counts(SYN_MISS));
    assert_eq!(lb.real_for_flow(&flow(p, 80, TCP)), (Some(b), Some(b)), "the SYN moved the connection");

    // Not for a VIP: no real either way.
    let other = Flow { dst: OTHER4.into(), ..flow(1, 80, TCP) };
    assert_eq!(lb.real_for_flow(&other), (None, None));
}

/// A UDP datagram from `CLIENT4:port` to `VIP4:53`.
fn udp_dgram(port: u16) -> Vec<u8> {
    udp(sock(CLIENT4, port), sock(VIP4, 53))
}

#[test]
fn maglev_spreads_syns_over_equal_reals() {
    if skip_unless_root("maglev_spreads_syns_over_equal_reals") {
        return;
    }
    let mut lb = Lb::testing();
    let (a, b) = (r4(1), r4(2));
    let vip = lb.vip(VIP4, 80, TCP, 0, &[a, b]);
    let reached = syns_reach(
        &mut lb,
        "two equal reals",
        vip,
        &[a, b],
        (10000..10200).map(|p| (sock(CLIENT4, p), sock(VIP4, 80))),
    );
    assert_eq!(reached, BTreeSet::from([a, b]));
    let per_real: Vec<u64> = [a, b].iter().map(|&r| lb.b.real_stats(lb.b.real_index(r).unwrap()).unwrap().v1).collect();
    assert_eq!(per_real.iter().sum::<u64>(), 200, "{per_real:?}");
    // Equal weights, equal shares: each real within 25% of half.
    assert!(per_real.iter().all(|&n| (75..=125).contains(&n)), "{per_real:?}");
    let per_core: u64 = lb.b.per_core_packets().unwrap().iter().sum();
    assert_eq!(per_core, 200, "per-core packets add up to XdpTotal");
    assert_eq!(lb.b.vip_stats(&vip).unwrap().v1, 200);
}

#[test]
fn small_rings_keep_each_vip_to_its_reals() {
    if skip_unless_root("small_rings_keep_each_vip_to_its_reals") {
        return;
    }
    // A 13-slot ring per VIP: every VIP's slots sit at vip_num * 13.
    let mut lb = Lb::new(BalancerConfig { ch_ring_size: 13, ..config() });
    let addr = |i| v4(10, 100, 4, i);
    let reals_of = |i: u8| [r4(2 * i - 1), r4(2 * i)];
    let vips: Vec<VipId> = (1..=3).map(|i| lb.vip(addr(i), 80, TCP, 0, &reals_of(i))).collect();
    let flows = |i| (1000..1040).map(move |p| (sock(CLIENT4, p), sock(addr(i), 80)));
    for i in 1..=3u8 {
        let vip = vips[usize::from(i) - 1];
        let reached = syns_reach(&mut lb, "ring of 13", vip, &reals_of(i), flows(i));
        assert_eq!(reached, BTreeSet::from(reals_of(i)), "VIP {vip}");
    }
    // vip_num 0 freed and reused: the new VIP starts from an empty ring.
    lb.b.del_vip(&vips[0]).unwrap();
    lb.run(&row("SYN to the deleted VIP", syn(sock(CLIENT4, 1), sock(addr(1), 80))));
    let reused = lb.vip(addr(4), 80, TCP, 0, &[]);
    assert_eq!(lb.b.vip_info(&reused).unwrap().vip_num, 0);
    lb.run(
        &row("SYN to the new VIP, no reals yet", syn(sock(CLIENT4, 2), sock(addr(4), 80)))
            .drop()
            .counts(SYN_MISS)
            .counts(&[(Stat::ChDrop, 1, 0)]),
    );
    lb.set_reals(&reused, &[r4(7), r4(8)], 1);
    let reached = syns_reach(&mut lb, "reused vip_num", reused, &[r4(7), r4(8)], flows(4));
    assert_eq!(reached, BTreeSet::from([r4(7), r4(8)]));
}

#[test]
fn default_mac_is_the_ethernet_destination() {
    if skip_unless_root("default_mac_is_the_ethernet_destination") {
        return;
    }
    let mut lb = Lb::testing();
    assert_eq!(lb.b.default_mac(), TESTING_MAC);
    let vip = lb.vip(VIP4, 80, TCP, 0, &[r4(1)]);
    let (c, to) = (sock(CLIENT4, 40000), sock(VIP4, 80));
    lb.run(&row("SYN with the testing MAC", syn(c, to)).tx(vip, r4(1)).counts(SYN_MISS));
    let mac = [0x02, 0xde, 0xad, 0xbe, 0xef, 0x01];
    lb.set_mac(mac);
    assert_eq!(lb.b.default_mac(), mac);
    lb.run_table(&[
        row("ACK after set_default_mac", ack(c, to)).tx(vip, r4(1)).counts(HIT),
        row("802.1Q ACK after set_default_mac", tagged(&ack(c, to), ETH_P_8021Q, 42)).tx(vip, r4(1)).counts(HIT),
    ]);
    // Spelled out: destination = the new MAC, source = the input's destination.
    let out = lb.b.simulate(&ack(c, to)).unwrap().packet;
    assert_eq!(out[..12], [mac, MAC_LB].concat()[..]);
}

#[test]
fn balancer_api_errors() {
    if skip_unless_root("balancer_api_errors") {
        return;
    }
    let mut b = Balancer::new(BalancerConfig { max_vips: 4, ..config() }).unwrap();
    let id = |addr: IpAddr, port, proto| VipId { addr, port, proto };
    let vip = id(VIP4.into(), 80, TCP);
    let vip6 = id(VIP6.into(), 80, TCP);
    let real = |addr| RealSpec { addr, weight: 1, flags: 0 };
    b.add_vip(VipSpec { id: vip, flags: 0 }).unwrap();
    b.add_vip(VipSpec { id: vip6, flags: 0 }).unwrap();
    b.add_real(&vip6, real(r6(1))).unwrap();
    let code = |r: Result<(), Error>| r.expect_err("an error").code().as_str();

    // VIPs.
    let dup = b.add_vip(VipSpec { id: vip, flags: 0 }).unwrap_err();
    assert!(matches!(dup, Error::AlreadyExists { .. }), "{dup:?}");
    assert_eq!(dup.code().as_str(), "ALREADY_EXISTS");
    let unknown = id(OTHER4.into(), 80, TCP);
    assert_eq!(code(b.del_vip(&unknown)), "NOT_FOUND");
    assert!(matches!(b.vip_info(&unknown), Err(Error::NotFound { .. })));
    assert_eq!(code(b.add_real(&unknown, real(r4(1)))), "NOT_FOUND");
    assert_eq!(code(b.modify_vip_flags(&unknown, 0, true)), "NOT_FOUND");
    assert_eq!(code(b.vip_stats(&unknown).map(|_| ())), "NOT_FOUND");
    assert_eq!(code(b.del_real(&vip, r4(77))), "NOT_FOUND");
    let icmp = b.add_vip(VipSpec { id: id(OTHER4.into(), 0, 1), flags: 0 }).unwrap_err();
    assert!(matches!(icmp, Error::InvalidRequest { .. }), "{icmp:?}");

    // Flags: reserved Katran flags are a missing feature, unknown bits invalid.
    for flag in [
        abi::VIP_F_QUIC_VIP,
        abi::VIP_F_SRC_ROUTING,
        abi::VIP_F_GLOBAL_LRU,
        abi::VIP_F_UDP_STABLE_ROUTING,
        abi::VIP_F_UDP_FLOW_MIGRATION,
    ] {
        let e = b.add_vip(VipSpec { id: id(OTHER4.into(), 80, TCP), flags: flag }).unwrap_err();
        assert!(matches!(e, Error::FeatureDisabled { .. }), "add_vip {flag:#x}: {e:?}");
        assert_eq!(e.code().as_str(), "FEATURE_DISABLED");
        let e = b.modify_vip_flags(&vip, flag, true).unwrap_err();
        assert!(matches!(e, Error::FeatureDisabled { .. }), "modify {flag:#x}: {e:?}");
    }
    for flag in [1 << 10, 1 << 16, 1 << 31] {
        let e = b.add_vip(VipSpec { id: id(OTHER4.into(), 80, TCP), flags: flag }).unwrap_err();
        assert!(matches!(e, Error::InvalidRequest { .. }), "add_vip {flag:#x}: {e:?}");
        let e = b.modify_vip_flags(&vip, flag, true).unwrap_err();
        assert!(matches!(e, Error::InvalidRequest { .. }), "modify {flag:#x}: {e:?}");
    }
    assert_eq!(b.vips().len(), 2, "no refused VIP was added");
    assert_eq!(b.vip_info(&vip).unwrap().flags, 0, "no refused flag was set");

    // Reals.
    let before = b.reals(&vip6).unwrap();
    let e = b.add_real(&vip6, real(r4(1))).unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "IPv4 real of an IPv6 VIP: {e:?}");
    assert_eq!(b.reals(&vip6).unwrap(), before);
    assert_eq!(b.real_index(r4(1)), None);
    let batch = [real(r6(2)), real(r4(1)), real(r6(3))];
    let e = b.modify_reals(&vip6, RealAction::Add, &batch).unwrap_err();
    assert!(matches!(e, Error::InvalidRequest { .. }), "batch: {e:?}");
    assert_eq!(b.reals(&vip6).unwrap(), before, "a refused batch changes nothing");
    assert_eq!(b.real_index(r6(2)), None);
    let batch = [real(r4(1)), real("224.0.0.1".parse().unwrap())];
    assert_eq!(code(b.modify_reals(&vip, RealAction::Add, &batch)), "INVALID_REQUEST");
    assert!(b.reals(&vip).unwrap().is_empty(), "a refused batch changes nothing");
    assert_eq!(b.real_index(r4(1)), None);

    // Frames simulate refuses.
    for len in [13, 3521] {
        let e = b.simulate(&vec![0; len]).unwrap_err();
        assert!(matches!(e, Error::InvalidRequest { .. }), "{len} bytes: {e:?}");
    }

    // Capacity: max_vips = 4.
    for i in 1..=2 {
        b.add_vip(VipSpec { id: id(v4(10, 100, 9, i).into(), 80, TCP), flags: 0 }).unwrap();
    }
    let e = b.add_vip(VipSpec { id: id(v4(10, 100, 9, 3).into(), 80, TCP), flags: 0 }).unwrap_err();
    assert!(matches!(e, Error::SpaceExhausted { .. }), "{e:?}");
    assert_eq!(e.code().as_str(), "SPACE_EXHAUSTED");
    assert_eq!(b.vips().len(), 4);
}

#[test]
fn a_shared_real_has_one_index_freed_with_its_last_vip() {
    if skip_unless_root("a_shared_real_has_one_index_freed_with_its_last_vip") {
        return;
    }
    let mut b = Balancer::new(BalancerConfig { max_reals: 2, ..config() }).unwrap();
    let one = VipId { addr: VIP4.into(), port: 80, proto: TCP };
    let two = VipId { addr: VIP4B.into(), port: 80, proto: TCP };
    let real = |addr| RealSpec { addr, weight: 1, flags: 0 };
    for id in [one, two] {
        b.add_vip(VipSpec { id, flags: 0 }).unwrap();
        b.add_real(&id, real(r4(1))).unwrap();
    }
    let shared = b.real_index(r4(1)).expect("an index");
    b.add_real(&one, real(r4(2))).unwrap();
    assert_ne!(b.real_index(r4(2)), Some(shared));
    // Both indices are taken: a third real does not fit.
    let full = b.add_real(&two, real(r4(3))).unwrap_err();
    assert!(matches!(full, Error::SpaceExhausted { .. }), "{full:?}");

    b.del_real(&one, r4(1)).unwrap();
    assert_eq!(b.real_index(r4(1)), Some(shared), "VIP two still uses it");
    let full = b.add_real(&two, real(r4(3))).unwrap_err();
    assert!(matches!(full, Error::SpaceExhausted { .. }), "{full:?}");

    // A batch that needs more indices than are free changes nothing.
    let batch = [real(r4(2)), real(r4(4))];
    let full = b.modify_reals(&two, RealAction::Add, &batch).unwrap_err();
    assert!(matches!(full, Error::SpaceExhausted { .. }), "{full:?}");
    assert_eq!(b.reals(&two).unwrap(), vec![real(r4(1))]);

    b.del_real(&two, r4(1)).unwrap();
    assert_eq!(b.real_index(r4(1)), None);
    b.add_real(&two, real(r4(3))).unwrap();
    assert_eq!(b.real_index(r4(3)), Some(shared), "the freed index is reused");
}

#[test]
fn delete_conn_and_purge_vip_conns() {
    if skip_unless_root("delete_conn_and_purge_vip_conns") {
        return;
    }
    let mut lb = Lb::testing();
    let reals = [r4(1), r4(2), r4(3)];
    let vip = lb.vip(VIP4, 80, TCP, 0, &reals);
    let portless = lb.vip(VIP4, 0, TCP, 0, &[r4(4)]);
    let to = sock(VIP4, 80);
    let flows: Vec<SocketAddr> = (30000..30010).map(|p| sock(CLIENT4, p)).collect();
    let reals_of: Vec<IpAddr> = flows
        .iter()
        .map(|&f| lb.run(&row(format!("SYN {f}"), syn(f, to)).tx_any(vip, &reals).counts(SYN_MISS)).unwrap())
        .collect();
    for port in [8080, 8081, 8082] {
        let f = sock(CLIENT4, port);
        lb.run(
            &row(format!("ACK {f} to the port-less VIP"), ack(f, sock(VIP4, port)))
                .tx(portless, r4(4))
                .counts(ACK_MISS),
        );
    }
    assert_eq!(lb.conns(), 13);

    // delete_conn: one flow.
    let f = flows[0];
    assert!(lb.b.delete_conn(&vip, f.ip(), f.port()).unwrap());
    assert!(!lb.b.delete_conn(&vip, f.ip(), f.port()).unwrap(), "already gone");
    assert_eq!(lb.conns(), 12);
    lb.run(&row("ACK of the deleted flow: a miss, then back in", ack(f, to)).tx(vip, reals_of[0]).counts(ACK_MISS));
    let e = lb.b.delete_conn(&vip, CLIENT6.into(), 1).unwrap_err();
    assert!(matches!(e, Error::InvalidAddress { .. }), "{e:?}");
    let unknown = VipId { addr: OTHER4.into(), port: 80, proto: TCP };
    assert!(matches!(lb.b.delete_conn(&unknown, CLIENT4.into(), 1), Err(Error::NotFound { .. })));
    assert!(matches!(lb.b.purge_vip_conns(&unknown), Err(Error::NotFound { .. })));

    // purge_vip_conns: every flow of the VIP, none of the port-less VIP's.
    assert_eq!(lb.b.purge_vip_conns(&vip).unwrap(), 10);
    assert_eq!(lb.conns(), 3);
    for (&f, &real) in flows.iter().zip(&reals_of) {
        lb.run(&row(format!("ACK {f} after the purge: a miss"), ack(f, to)).tx(vip, real).counts(ACK_MISS));
    }
    lb.run(
        &row("the port-less VIP's flow survived", ack(sock(CLIENT4, 8080), sock(VIP4, 8080)))
            .tx(portless, r4(4))
            .counts(HIT),
    );
    assert_eq!(lb.b.purge_vip_conns(&portless).unwrap(), 3);
    assert_eq!(lb.b.purge_vip_conns(&vip).unwrap(), 10);
    assert_eq!(lb.conns(), 0);
}

#[test]
fn vip_lookup_follows_vips_as_they_come_and_go() {
    if skip_unless_root("vip_lookup_follows_vips_as_they_come_and_go") {
        return;
    }
    let mut lb = Lb::testing();
    // An address whose VIP-filter bucket is VIP4's.
    let bucket = abi::vip_filter_bucket(VIP4.into());
    let twin = (0..=u16::MAX)
        .map(|i| v4(10, 101, (i >> 8) as u8, i as u8))
        .find(|&a| abi::vip_filter_bucket(a.into()) == bucket)
        .expect("an address in VIP4's filter bucket");
    let port80 = lb.vip(VIP4, 80, TCP, 0, &[r4(1)]);
    let portless = lb.vip(VIP4, 0, TCP, 0, &[r4(2)]);
    let c = sock(CLIENT4, 40000);
    let c6 = sock(CLIENT6, 40000);
    let to = |port| sock(VIP4, port);
    lb.run_table(&[
        row("port 80: the port VIP", syn(c, to(80))).tx(port80, r4(1)).counts(SYN_MISS),
        row("port 8080: the port-less VIP", syn(c, to(8080))).tx(portless, r4(2)).counts(SYN_MISS),
    ]);

    lb.b.del_vip(&portless).unwrap();
    lb.run_table(&[
        row("port 8080 once the port-less VIP is deleted: no VIP", syn(c, to(8080))),
        row("ACK of the established port-8080 flow: no VIP either", ack(c, to(8080))),
        row("port 80: still the port VIP", ack(c, to(80))).tx(port80, r4(1)).counts(HIT),
    ]);
    assert!(matches!(lb.b.vip_stats(&portless), Err(Error::NotFound { .. })));

    let portless = lb.vip(VIP4, 0, TCP, 0, &[r4(3)]);
    lb.b.del_vip(&port80).unwrap();
    lb.run_table(&[
        row("port 8080: the port-less VIP again (counters from zero)", syn(c, to(8080)))
            .tx(portless, r4(3))
            .counts(SYN_MISS),
        row("port 80 once the port VIP is deleted: the port-less VIP", syn(c, to(80)))
            .tx(portless, r4(3))
            .counts(SYN_MISS),
    ]);

    let twin_vip = lb.vip(twin, 80, TCP, 0, &[r4(4)]);
    lb.run_table(&[
        row(format!("{twin}:80, in VIP4's filter bucket"), syn(c, sock(twin, 80))).tx(twin_vip, r4(4)).counts(SYN_MISS),
        row(format!("{twin}:81: its bucket has a port-less VIP, but not for {twin}"), syn(c, sock(twin, 81))),
    ]);
    lb.b.del_vip(&portless).unwrap();
    lb.run_table(&[
        row("VIP4:80 with no VIP left on the address", syn(c, to(80))),
        row(format!("{twin}:80 still balanced"), ack(c, sock(twin, 80))).tx(twin_vip, r4(4)).counts(HIT),
    ]);

    let any6 = lb.vip(VIP6, 0, UDP, 0, &[r6(1)]);
    lb.run_table(&[
        row("IPv6 UDP to any port of a port-less VIP", udp(c6, sock(VIP6, 4789))).tx(any6, r6(1)).counts(RING),
        row("IPv6 UDP from the same client port to another port: hit", udp(c6, sock(VIP6, 53)))
            .tx(any6, r6(1))
            .counts(HIT),
        row("IPv6 TCP to the UDP port-less VIP: another protocol", syn(c6, sock(VIP6, 4789))),
    ]);
}

/// BPF_PROG_TEST_RUN hands a frame longer than 3520 bytes (a page less XDP
/// headroom and tailroom) to the program as a multi-buffer xdp_buff, which
/// the balancer (not a frags program) never gets from a live link: simulate
/// refuses such frames rather than report a run no real packet would have.
#[test]
fn frames_beyond_one_buffer_are_refused_by_simulate() {
    if skip_unless_root("frames_beyond_one_buffer_are_refused_by_simulate") {
        return;
    }
    let mut lb = Lb::new(BalancerConfig { mtu: 9000, ..config() });
    let vip = lb.vip(VIP4, 80, TCP, 0, &[r4(1)]);
    let to = sock(VIP4, 80);
    // 14 + 3506 = 3520 bytes: the largest single-buffer frame, counted whole.
    lb.run_table(&[row("IPv4 packet of 3506 bytes (one buffer)", ack_of_l3_len(sock(CLIENT4, 1), to, 3506))
        .tx(vip, r4(1))
        .counts(ACK_MISS)]);
    // Larger frames would reach the program as several buffers, which a live
    // link never gives it: refused, and nothing ran.
    let err = lb.b.simulate(&ack_of_l3_len(sock(CLIENT4, 2), to, 3507)).unwrap_err();
    assert_eq!(err.code().as_str(), "INVALID_REQUEST", "{err}");
    assert!(err.to_string().contains("3521 bytes"), "{err}");
    assert_eq!(lb.b.stat(Stat::XdpTotal).unwrap().v1, 1);
}

/// Runs a flow's first and second packets, deletes its entry with
/// `delete_conn`, and checks the third packet misses the table.
fn delete_conn_forgets(lb: &mut Lb, vip: VipId, dport: u16, reals: &[IpAddr]) {
    let client: IpAddr = if vip.addr.is_ipv4() { CLIENT4.into() } else { CLIENT6.into() };
    let (f, to) = (sock(client, 33333), sock(vip.addr, dport));
    let tcp = vip.proto == TCP;
    let (first, later) = if tcp { (syn(f, to), ack(f, to)) } else { (udp(f, to), udp(f, to)) };
    let real = lb
        .run(&row(format!("{vip}: first packet of {f} -> {to}"), first).tx_any(vip, reals).counts(if tcp {
            SYN_MISS
        } else {
            RING
        }))
        .unwrap();
    lb.run(&row(format!("{vip}: next packet, a hit"), later.clone()).tx(vip, real).counts(HIT));
    assert!(
        lb.b.delete_conn(&vip, client, f.port()).unwrap(),
        "{vip}: delete_conn({client}, {}) found no entry",
        f.port()
    );
    lb.run(&row(format!("{vip}: next packet after delete_conn, a miss"), later).tx(vip, real).counts(if tcp {
        ACK_MISS
    } else {
        RING
    }));
}

#[test]
fn delete_conn_shapes_its_key_like_the_datapath() {
    if skip_unless_root("delete_conn_shapes_its_key_like_the_datapath") {
        return;
    }
    let mut lb = Lb::testing();
    let reals4 = [r4(1), r4(2), r4(3)];
    let reals6 = [r6(1), r6(2), r6(3)];
    let at = |i| v4(10, 100, 5, i);
    // (VIP, destination port of the flow, reals)
    let cases = [
        (lb.vip(at(1), 80, TCP, 0, &reals4), 80, &reals4),
        (lb.vip(at(2), 80, TCP, abi::VIP_F_NO_SPORT, &reals4), 80, &reals4),
        (lb.vip(at(3), 80, TCP, abi::VIP_F_DPORT_HASH, &reals4), 80, &reals4),
        (lb.vip(at(4), 0, TCP, 0, &reals4), 8443, &reals4),
        (lb.vip(at(5), 53, UDP, 0, &reals4), 53, &reals4),
        (lb.vip(VIP6, 80, TCP, abi::VIP_F_NO_SPORT, &reals6), 80, &reals6),
        (lb.vip(VIP6, 0, UDP, 0, &reals6), 4789, &reals6),
    ];
    for (vip, dport, reals) in cases {
        delete_conn_forgets(&mut lb, vip, dport, reals);
    }
}

/// Port-less VIPs with DPORT_HASH or HASH_SRC_DST_PORT key their flows by
/// the packet's destination port, which `delete_conn`'s (VIP, source) does
/// not name: it refuses them, naming the flag, and changes nothing; purging
/// the VIP still forgets the flow.
#[test]
fn delete_conn_refuses_portless_vips_that_hash_the_port() {
    if skip_unless_root("delete_conn_refuses_portless_vips_that_hash_the_port") {
        return;
    }
    let mut lb = Lb::testing();
    let reals = [r4(1), r4(2), r4(3)];
    let src_dst = lb.vip(VIP4, 0, TCP, abi::VIP_F_HASH_SRC_DST_PORT, &reals);
    let dport = lb.vip(VIP4B, 0, TCP, abi::VIP_F_DPORT_HASH, &reals);
    for (vip, flag) in [(src_dst, "HASH_SRC_DST_PORT"), (dport, "DPORT_HASH")] {
        let (f, to) = (sock(CLIENT4, 33333), sock(vip.addr, 8443));
        let real = lb.run(&row(format!("{vip}: SYN"), syn(f, to)).tx_any(vip, &reals).counts(SYN_MISS)).unwrap();
        let err = lb.b.delete_conn(&vip, CLIENT4.into(), f.port()).unwrap_err();
        assert_eq!(err.code().as_str(), "INVALID_REQUEST", "{err}");
        assert!(err.to_string().contains(flag), "{err}");
        lb.run(&row(format!("{vip}: ACK still hits"), ack(f, to)).tx(vip, real).counts(HIT));
        assert_eq!(lb.b.purge_vip_conns(&vip).unwrap(), 1);
        lb.run(&row(format!("{vip}: ACK after purge misses"), ack(f, to)).tx(vip, real).counts(ACK_MISS));
    }
}

/// Issue #11, item 1: 32.1.13.184 is 0x20010db8, the first word of
/// 2001:db8::. The two VIPs (same port and protocol) are two datapath
/// entries: each takes its own traffic to its own reals, and deleting one
/// leaves the other forwarding, with its counters.
#[test]
fn an_ipv4_vip_and_the_ipv6_vip_of_the_same_bytes_are_two_vips() {
    if skip_unless_root("an_ipv4_vip_and_the_ipv6_vip_of_the_same_bytes_are_two_vips") {
        return;
    }
    let mut lb = Lb::testing();
    let (addr4, addr6) = (v4(32, 1, 13, 184), v6("2001:db8::"));
    assert_eq!(addr4.octets(), addr6.octets()[..4], "the colliding pair");
    let c4 = |port| sock(CLIENT4, port);
    let c6 = |port| sock(CLIENT6, port);
    let (to4, to6) = (sock(addr4, 80), sock(addr6, 80));

    let vip4 = lb.vip(addr4, 80, TCP, 0, &[r4(1)]);
    let vip6 = lb.vip(addr6, 80, TCP, 0, &[r6(1)]);
    lb.run_table(&[
        row("SYN to the IPv4 VIP: its IPv4 real", syn(c4(40000), to4)).tx(vip4, r4(1)).counts(SYN_MISS),
        row("SYN to the IPv6 VIP: its IPv6 real", syn(c6(40000), to6)).tx(vip6, r6(1)).counts(SYN_MISS),
        row("ACK to the IPv4 VIP: table hit", ack(c4(40000), to4)).tx(vip4, r4(1)).counts(HIT),
        row("ACK to the IPv6 VIP: table hit", ack(c6(40000), to6)).tx(vip6, r6(1)).counts(HIT),
    ]);

    // The dry program and the connection-table read name each VIP's own real.
    let flow = |src: SocketAddr, dst: SocketAddr| Flow {
        src: src.ip(),
        dst: dst.ip(),
        src_port: src.port(),
        dst_port: dst.port(),
        proto: TCP,
    };
    assert_eq!(lb.real_for_flow(&flow(c4(40000), to4)), (Some(r4(1)), Some(r4(1))));
    assert_eq!(lb.real_for_flow(&flow(c6(40000), to6)), (Some(r6(1)), Some(r6(1))));

    lb.b.del_vip(&vip6).unwrap();
    lb.run_table(&[
        row("the IPv4 VIP once the IPv6 one is gone: still its real", ack(c4(40000), to4)).tx(vip4, r4(1)).counts(HIT),
        row("SYN to the IPv4 VIP: still balanced", syn(c4(40001), to4)).tx(vip4, r4(1)).counts(SYN_MISS),
        row("SYN to the deleted IPv6 VIP: not a VIP", syn(c6(40001), to6)),
    ]);
    // (The harness checks every counter after each row; spelled out once.)
    let (syn_l3, ack_l3) = (l3_len(&syn(c4(1), to4)), l3_len(&ack(c4(1), to4)));
    assert_eq!(lb.b.vip_stats(&vip4).unwrap(), Counter { v1: 4, v2: 2 * syn_l3 + 2 * ack_l3 });

    // And the other way round: the IPv6 VIP outlives the IPv4 one.
    let vip6 = lb.vip(addr6, 80, TCP, 0, &[r6(2)]);
    lb.b.del_vip(&vip4).unwrap();
    lb.run_table(&[
        row("SYN to the IPv6 VIP once the IPv4 one is gone", syn(c6(40002), to6)).tx(vip6, r6(2)).counts(SYN_MISS),
        row("SYN to the deleted IPv4 VIP: not a VIP", syn(c4(40002), to4)),
    ]);
    lb.b.del_vip(&vip6).unwrap();
    assert!(lb.b.vips().is_empty());
}

/// Issue #11, item 5: the frame, not the IP header's length field, is what
/// is sent. A VIP packet whose frame is shorter than its header says (or an
/// IPv4 tot_len below the header's 20 bytes) is dropped and counted (BadLen:
/// v1 IPv4, v2 IPv6) before it touches the connection table. A longer frame
/// (Ethernet padding, an FCS left by rx-fcs, a trailer) is balanced with the
/// excess carried behind the inner packet, whose outer header covers the
/// inner packet only; and the MTU is judged on the frame, so a 1514-byte frame
/// whose tot_len says 40 is too big. Frames for no VIP pass unchanged.
#[test]
fn frames_whose_ip_length_lies_are_dropped_and_counted() {
    if skip_unless_root("frames_whose_ip_length_lies_are_dropped_and_counted") {
        return;
    }
    let mut lb = Lb::testing();
    let tcp4 = lb.vip(VIP4, 80, TCP, 0, &[r4(1)]);
    let tcp6 = lb.vip(VIP6, 443, TCP, 0, &[r6(1)]);
    let v4_in_v6 = lb.vip(VIP4B, 80, TCP, 0, &[r6(2)]);
    let c = |port| sock(CLIENT4, port);
    let c6 = |port| sock(CLIENT6, port);
    let (to4, to6, to46) = (sock(VIP4, 80), sock(VIP6, 443), sock(VIP4B, 80));
    let bad_v4 = &[(Stat::BadLen, 1, 0)];
    let bad_v6 = &[(Stat::BadLen, 0, 1)];
    let too_big_v4 = &[(Stat::IcmpTooBig, 1, 0)];
    let too_big_v6 = &[(Stat::IcmpTooBig, 0, 1)];
    let frame_1514 = ack_of_l3_len(c(42000), to4, 1500);
    assert_eq!(frame_1514.len(), 1514);

    lb.run_table(&[
        // Shorter than the header says, or a header length below 20: dropped
        // before the connection table (each flow's next ACK is a miss, below).
        row("IPv4 ACK cut 1 byte short of its tot_len", truncated(&ack(c(42001), to4), 14 + 88 - 1))
            .drop()
            .counts(bad_v4),
        row("IPv4 ACK whose tot_len says 1500", with_ip_len(&ack(c(42002), to4), 1500)).drop().counts(bad_v4),
        row("IPv4 SYN whose tot_len says 65535", with_ip_len(&syn(c(42003), to4), 65535)).drop().counts(bad_v4),
        row("IPv4 SYN whose tot_len says 19", with_ip_len(&syn(c(42004), to4), 19)).drop().counts(bad_v4),
        row("IPv4 SYN whose tot_len says 0", with_ip_len(&syn(c(42005), to4), 0)).drop().counts(bad_v4),
        row("IPv4 ACK -> IPv6 real, tot_len 1500", with_ip_len(&ack(c(42006), to46), 1500)).drop().counts(bad_v4),
        // IPv6: a payload_len of 65535 once wrapped the outer length.
        row("IPv6 ACK whose payload_len says 65535", with_ip_len(&ack(c6(42001), to6), 65535)).drop().counts(bad_v6),
        row("IPv6 ACK whose payload_len says 65495 (40 + it = 65535)", with_ip_len(&ack(c6(42002), to6), 65495))
            .drop()
            .counts(bad_v6),
        row("IPv6 ACK cut 1 byte short", truncated(&ack(c6(42003), to6), 14 + 108 - 1)).drop().counts(bad_v6),
        row("IPv4 ACK of a flow dropped above: a miss", ack(c(42002), to4)).tx(tcp4, r4(1)).counts(ACK_MISS),
        row("IPv6 ACK of a flow dropped above: a miss", ack(c6(42001), to6)).tx(tcp6, r6(1)).counts(ACK_MISS),
        // Longer than the header says: the MTU is judged on the frame.
        row("IPv4 1514-byte frame whose tot_len says 40: too big", with_ip_len(&frame_1514, 40))
            .drop()
            .counts(ACK_MISS)
            .counts(too_big_v4),
        row("IPv4 1514-byte frame, honest: too big", frame_1514.clone()).drop().counts(HIT).counts(too_big_v4),
        row(
            "IPv4 frame of 1461 bytes of IP -> IPv6 real, tot_len 40: too big",
            with_ip_len(&ack_of_l3_len(c(42007), to46, 1461), 40),
        )
        .drop()
        .counts(ACK_MISS)
        .counts(too_big_v4),
        row(
            "IPv6 1514-byte frame whose payload_len says 20: too big",
            with_ip_len(&ack_of_l3_len(c6(42004), to6, 1500), 20),
        )
        .drop()
        .counts(ACK_MISS)
        .counts(too_big_v6),
        row(
            "IPv4 frame of 1494 bytes (1480 of IP) with tot_len 40: fits",
            with_ip_len(&ack_of_l3_len(c(42008), to4, 1480), 40),
        )
        .tx(tcp4, r4(1))
        .counts(ACK_MISS),
        // Padding, an FCS, a trailer: carried behind the inner packet.
        row("IPv4 SYN padded to 60 bytes", padded(&syn(c(42010), to4), 60)).tx(tcp4, r4(1)).counts(SYN_MISS),
        row("IPv4 SYN padded to 60 bytes, then tagged", tagged(&padded(&syn(c(42011), to4), 60), ETH_P_8021Q, 7))
            .tx(tcp4, r4(1))
            .counts(SYN_MISS),
        row("IPv4 SYN padded to 64 bytes (an FCS left on)", padded(&syn(c(42012), to4), 64))
            .tx(tcp4, r4(1))
            .counts(SYN_MISS),
        row("IPv4 SYN padded to 60 bytes -> IPv6 real", padded(&syn(c(42013), to46), 60))
            .tx(v4_in_v6, r6(2))
            .counts(SYN_MISS),
        row("IPv4 ACK with a 100-byte trailer", padded(&ack(c(42014), to4), 14 + 88 + 100))
            .tx(tcp4, r4(1))
            .counts(ACK_MISS),
        row("IPv6 SYN whose payload_len says 0 (its TCP header a trailer)", with_ip_len(&syn(c6(42005), to6), 0))
            .tx(tcp6, r6(1))
            .counts(SYN_MISS),
        // Not for a VIP: the kernel's to judge.
        row("IPv4 lying frame to no VIP", with_ip_len(&ack(c(42020), sock(OTHER4, 80)), 1500)),
        row("IPv6 lying frame to no VIP", with_ip_len(&ack(c6(42020), sock(OTHER6, 443)), 65535)),
    ]);
    assert_eq!(lb.b.stat(Stat::BadLen).unwrap(), Counter { v1: 6, v2: 3 });
    // An entry for each flow that reached the ring (the too-big ones too:
    // the MTU is checked after the real is chosen), none for the 9 dropped
    // as malformed: 2 misses, 3 flows too big, 1 that fits, 6 carried.
    assert_eq!(lb.conns(), 2 + 3 + 1 + 6);
}
