//! The real-side decapsulation program (`decap.bpf.c`) and its loader
//! (`dataplane::decap`).
//!
//! - A packet table run through BPF_PROG_TEST_RUN: each case is a frame in, the
//!   verdict and the exact frame out, and the exact change of every per-CPU
//!   counter in `weir_decaps` (summed over CPUs).
//! - Attach/detach on a veth pair inside a network namespace the test creates:
//!   the program stays attached once the loader is gone, re-attaching swaps the
//!   program inside the pinned link, traffic is counted, detach detaches.
//!
//! Tests that need root print `SKIPPED (needs root): <test>` and return.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aya::maps::PerCpuArray;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use aya::Ebpf;
use etherparse::PacketBuilder;
use weir_agent::dataplane::{decap, pin, AttachMode};
use weir_agent::Error;
use weir_ebpf::abi::{self, DecapStat, LbCounter};
use weir_test_support::packet::{
    self, hex, tagged, with_ipv4_frag, with_ipv4_options, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IP, ETH_P_IPV6,
    IPPROTO_GRE, IPPROTO_HOPOPTS, IPPROTO_IPIP, IPPROTO_IPV6,
};
use weir_test_support::skip_unless_root;

const XDP_DROP: u32 = 1;
const XDP_PASS: u32 = 2;

/// The real's MAC (veth `wd0` in the namespace test) and the router's (`wd1`).
const MAC_REAL: [u8; 6] = [0x02, 0x77, 0x65, 0x69, 0x72, 0x01];
const MAC_ROUTER: [u8; 6] = [0x02, 0x77, 0x65, 0x69, 0x72, 0x02];

const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);
const VIP4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
const LB4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const REAL4: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xc, 0, 0, 0, 0, 7);
const VIP6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xf, 0, 0, 0, 0, 10);
const LB6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1);
const REAL6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2);

/// `load_unattached` pins its map in a scratch directory for a moment; tests
/// that look at /sys/fs/bpf must not see another test's scratch directory.
static LOAD_LOCK: Mutex<()> = Mutex::new(());

// ---- Frames ----

/// Ethernet from the router to the real.
fn eth(ether_type: u16) -> Vec<u8> {
    packet::eth(MAC_REAL, MAC_ROUTER, ether_type)
}

/// Ethernet with one tag (`tpid` 802.1Q or 802.1ad; PCP 5, VLAN 42) in front of `ether_type`.
fn eth_tagged(tpid: u16, ether_type: u16) -> Vec<u8> {
    tagged(&eth(ether_type), tpid, (5 << 13) | 42)
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// A client's TCP SYN to the IPv4 VIP, as the balancer receives it.
fn tcp_syn_v4() -> Vec<u8> {
    let builder = PacketBuilder::ipv4(CLIENT4.octets(), VIP4.octets(), 61).tcp(40000, 80, 0x1234_5678, 64240).syn();
    let mut packet = Vec::new();
    builder.write(&mut packet, &[]).unwrap();
    packet
}

/// A client's TCP segment with data to the IPv6 VIP.
fn tcp_v6() -> Vec<u8> {
    let builder = PacketBuilder::ipv6(CLIENT6.octets(), VIP6.octets(), 59).tcp(40001, 443, 7, 512).ack(99).psh();
    let mut packet = Vec::new();
    builder.write(&mut packet, b"GET / HTTP/1.1\r\n\r\n").unwrap();
    packet
}

/// A client's UDP datagram to the IPv4 VIP.
fn udp_v4() -> Vec<u8> {
    let builder = PacketBuilder::ipv4(CLIENT4.octets(), VIP4.octets(), 63).udp(5353, 53);
    let mut packet = Vec::new();
    builder.write(&mut packet, b"weir-query").unwrap();
    packet
}

/// `payload` behind the balancer's outer IPv4 header.
fn outer_v4(protocol: u8, payload: &[u8]) -> Vec<u8> {
    packet::outer_v4(LB4, REAL4, protocol, payload)
}

/// `payload` behind the balancer's outer IPv6 header.
fn outer_v6(next_header: u8, payload: &[u8]) -> Vec<u8> {
    packet::outer_v6(LB6, REAL6, next_header, 0x12345, payload)
}

/// An ARP request for the real's address.
fn arp_request() -> Vec<u8> {
    cat(&[&eth(ETH_P_ARP), &packet::arp_request(MAC_ROUTER, LB4, REAL4)])
}

// ---- The packet table ----

struct Case {
    name: &'static str,
    input: Vec<u8>,
    verdict: u32,
    output: Vec<u8>,
    /// Expected change of `[v4, v6, pass]`, summed over CPUs.
    counted: [LbCounter; 3],
}

fn counted(stat: DecapStat, bytes: usize) -> [LbCounter; 3] {
    let mut out = [LbCounter::default(); 3];
    out[stat as usize] = LbCounter { v1: 1, v2: bytes as u64 };
    out
}

/// `l2_in` + `outer` is decapsulated into `l2_out` + `inner`, counted in `stat`.
fn decapsulated(
    name: &'static str,
    l2_in: Vec<u8>,
    outer: Vec<u8>,
    l2_out: Vec<u8>,
    inner: Vec<u8>,
    stat: DecapStat,
) -> Case {
    Case {
        name,
        input: cat(&[&l2_in, &outer]),
        verdict: XDP_PASS,
        output: cat(&[&l2_out, &inner]),
        counted: counted(stat, inner.len()),
    }
}

/// `input` passes untouched and is counted in PASS with its frame length.
fn untouched(name: &'static str, input: Vec<u8>) -> Case {
    Case { name, verdict: XDP_PASS, output: input.clone(), counted: counted(DecapStat::Pass, input.len()), input }
}

fn cases() -> Vec<Case> {
    let syn4 = tcp_syn_v4();
    let tcp6 = tcp_v6();
    let udp4 = udp_v4();

    let encapsulated4 = cat(&[&eth(ETH_P_IP), &outer_v4(IPPROTO_IPIP, &syn4)]);
    let mut hop_by_hop = vec![IPPROTO_IPIP, 0, 1, 4, 0, 0, 0, 0];
    hop_by_hop.extend_from_slice(&syn4);

    vec![
        // Encapsulated by weir's balancer: decapsulated.
        decapsulated(
            "IPv4-in-IPv4 TCP SYN",
            eth(ETH_P_IP),
            outer_v4(IPPROTO_IPIP, &syn4),
            eth(ETH_P_IP),
            syn4.clone(),
            DecapStat::V4,
        ),
        decapsulated(
            "IPv6-in-IPv6 TCP",
            eth(ETH_P_IPV6),
            outer_v6(IPPROTO_IPV6, &tcp6),
            eth(ETH_P_IPV6),
            tcp6.clone(),
            DecapStat::V6,
        ),
        decapsulated(
            "IPv4-in-IPv6 UDP",
            eth(ETH_P_IPV6),
            outer_v6(IPPROTO_IPIP, &udp4),
            eth(ETH_P_IP),
            udp4.clone(),
            DecapStat::V6,
        ),
        decapsulated(
            "IPv6-in-IPv4 TCP",
            eth(ETH_P_IP),
            outer_v4(IPPROTO_IPV6, &tcp6),
            eth(ETH_P_IPV6),
            tcp6.clone(),
            DecapStat::V4,
        ),
        decapsulated(
            "802.1Q-tagged IPv4-in-IPv4 (tag kept)",
            eth_tagged(ETH_P_8021Q, ETH_P_IP),
            outer_v4(IPPROTO_IPIP, &syn4),
            eth_tagged(ETH_P_8021Q, ETH_P_IP),
            syn4.clone(),
            DecapStat::V4,
        ),
        decapsulated(
            "802.1ad-tagged IPv4-in-IPv6 (ethertype rewritten inside the tag)",
            eth_tagged(ETH_P_8021AD, ETH_P_IPV6),
            outer_v6(IPPROTO_IPIP, &udp4),
            eth_tagged(ETH_P_8021AD, ETH_P_IP),
            udp4.clone(),
            DecapStat::V6,
        ),
        // Not encapsulated: passed untouched.
        untouched("plain TCP SYN", cat(&[&eth(ETH_P_IP), &syn4])),
        untouched("plain IPv6 TCP", cat(&[&eth(ETH_P_IPV6), &tcp6])),
        untouched("ARP request", arp_request()),
        untouched("tagged plain TCP", cat(&[&eth_tagged(ETH_P_8021Q, ETH_P_IP), &syn4])),
        untouched(
            "double-tagged IPv4-in-IPv4",
            cat(&[&eth_tagged(ETH_P_8021AD, ETH_P_8021Q), &[0, 42, 0x08, 0], &outer_v4(IPPROTO_IPIP, &syn4)]),
        ),
        untouched("GRE in IPv4", cat(&[&eth(ETH_P_IP), &outer_v4(IPPROTO_GRE, &syn4)])),
        // Not weir's encapsulation, or not consistent: passed untouched.
        untouched("outer IPv4 with options", with_ipv4_options(&encapsulated4, &[1, 1, 1, 0])),
        untouched("outer IPv4 fragment", with_ipv4_frag(&encapsulated4, 0, 0x2000)), // MF, no DF
        untouched(
            "outer IPv6 with a hop-by-hop header",
            cat(&[&eth(ETH_P_IPV6), &outer_v6(IPPROTO_HOPOPTS, &hop_by_hop)]),
        ),
        untouched("protocol 4 carrying IPv6", cat(&[&eth(ETH_P_IP), &outer_v4(IPPROTO_IPIP, &tcp6)])),
        untouched("next header 41 carrying IPv4", cat(&[&eth(ETH_P_IPV6), &outer_v6(IPPROTO_IPV6, &udp4)])),
        untouched("ethertype IPv4, header version 6", {
            let mut frame = cat(&[&eth(ETH_P_IP), &outer_v4(IPPROTO_IPIP, &syn4)]);
            frame[14] = 0x65;
            frame
        }),
        // Truncated: passed untouched.
        untouched("Ethernet only", eth(ETH_P_IP)),
        untouched("cut VLAN tag", cat(&[&eth(ETH_P_8021Q), &[0, 42]])),
        untouched("cut outer IPv4", cat(&[&eth(ETH_P_IP), &outer_v4(IPPROTO_IPIP, &syn4)[..19]])),
        untouched("cut outer IPv6", cat(&[&eth(ETH_P_IPV6), &outer_v6(IPPROTO_IPV6, &tcp6)[..39]])),
        untouched("cut inner IPv4", cat(&[&eth(ETH_P_IP), &outer_v4(IPPROTO_IPIP, &syn4)[..20 + 19]])),
        untouched("cut inner IPv6", cat(&[&eth(ETH_P_IPV6), &outer_v6(IPPROTO_IPV6, &tcp6)[..40 + 39]])),
        untouched(
            "tagged, cut inner IPv4",
            cat(&[&eth_tagged(ETH_P_8021Q, ETH_P_IP), &outer_v4(IPPROTO_IPIP, &syn4)[..30]]),
        ),
    ]
}

/// Runs `frame` through the program; returns the verdict and the frame out.
fn test_run(ebpf: &Ebpf, frame: &[u8]) -> (u32, Vec<u8>) {
    let program: &Xdp = ebpf.program(weir_ebpf::DECAP_PROGRAM).expect("decap program").try_into().unwrap();
    let mut out = vec![0u8; frame.len() + 256];
    let result = program
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })
        .expect("BPF_PROG_TEST_RUN");
    out.truncate(result.data_size_out as usize);
    (result.return_value, out)
}

/// The counters of an unattached program, summed over CPUs.
fn read_counters(ebpf: &Ebpf) -> [LbCounter; 3] {
    let map = ebpf.map(abi::map::DECAP_STATS).expect("weir_decaps map");
    let array: PerCpuArray<_, LbCounter> = PerCpuArray::try_from(map).unwrap();
    let mut out = [LbCounter::default(); 3];
    for (index, total) in (0u32..).zip(out.iter_mut()) {
        for cpu in array.get(&index, 0).unwrap().iter() {
            total.v1 += cpu.v1;
            total.v2 += cpu.v2;
        }
    }
    out
}

fn delta(after: [LbCounter; 3], before: [LbCounter; 3]) -> [LbCounter; 3] {
    std::array::from_fn(|i| LbCounter { v1: after[i].v1 - before[i].v1, v2: after[i].v2 - before[i].v2 })
}

#[test]
fn packet_table() {
    if skip_unless_root("packet_table") {
        return;
    }
    let ebpf = {
        let _lock = LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        decap::load_unattached().expect("load the decap program")
    };
    let mut failures = Vec::new();
    for case in cases() {
        let before = read_counters(&ebpf);
        let (verdict, output) = test_run(&ebpf, &case.input);
        let counted = delta(read_counters(&ebpf), before);
        if verdict != case.verdict {
            failures.push(format!("{}: verdict {verdict}, expected {}", case.name, case.verdict));
        }
        if output != case.output {
            failures.push(format!(
                "{}: frame out\n    got      {}\n    expected {}",
                case.name,
                hex(&output),
                hex(&case.output)
            ));
        }
        if counted != case.counted {
            failures.push(format!(
                "{}: counters [v4, v6, pass] moved by {counted:?}, expected {:?}",
                case.name, case.counted
            ));
        }
    }
    assert!(failures.is_empty(), "{} failure(s):\n{}", failures.len(), failures.join("\n"));
}

#[test]
fn drop_is_never_the_verdict_of_the_table() {
    // The program drops only a frame it broke itself, which parsing rules out.
    assert!(cases().iter().all(|case| case.verdict != XDP_DROP));
}

#[test]
fn load_unattached_leaves_nothing_pinned() {
    if skip_unless_root("load_unattached_leaves_nothing_pinned") {
        return;
    }
    let _lock = LOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let ebpf = decap::load_unattached().expect("load the decap program");
    let prefix = format!("weir-decap-scratch-{}-", std::process::id());
    let leftovers: Vec<_> = std::fs::read_dir("/sys/fs/bpf")
        .unwrap()
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(&prefix) || name == abi::map::DECAP_STATS)
        .collect();
    assert!(leftovers.is_empty(), "pinned by load_unattached: {leftovers:?}");
    // The map is still there for the loaded program.
    assert_eq!(read_counters(&ebpf), [LbCounter::default(); 3]);
}

#[test]
fn attach_refuses_unknown_and_invalid_interfaces() {
    let root = Path::new("/sys/fs/bpf/weir-test-never-created");
    for iface in ["weir-no-such0", "../escape", "", "a-name-far-too-long"] {
        match decap::attach(iface, AttachMode::Driver, root) {
            Err(err @ Error::InvalidRequest { .. }) => {
                assert!(err.to_string().contains(iface), "{err} does not name {iface:?}")
            }
            other => panic!("attach({iface:?}) = {other:?}, expected InvalidRequest"),
        }
    }
    assert!(!root.exists());
}

#[test]
fn detach_without_attachment_is_not_found() {
    let root = Path::new("/sys/fs/bpf/weir-test-never-created");
    match decap::detach("weir-none0", root) {
        Err(err @ Error::NotFound { .. }) => {
            assert!(err.to_string().contains("weir-none0"), "{err}")
        }
        other => panic!("detach = {other:?}, expected NotFound"),
    }
    assert!(matches!(decap::counters("weir-none0", root), Err(Error::NotFound { .. })));
}

// ---- Attach and detach in a network namespace ----

/// A network namespace made for one test (`weir-<pid>-<n>-<label>`, the e2e
/// crate's naming, so its stale-namespace sweep recognises leftovers); deleted on drop.
struct Netns {
    name: String,
}

impl Netns {
    fn new(label: &str) -> Netns {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let name = format!("weir-{}-{n}-{label}", std::process::id());
        if Path::new("/run/netns").join(&name).exists() {
            // Left by a crashed run that had our pid.
            let _ = cmd("ip", &["netns", "del", &name]);
        }
        cmd("ip", &["netns", "add", &name]).unwrap_or_else(|e| panic!("{e}"));
        Netns { name }
    }

    /// `ip -n <ns> <args>`.
    fn ip(&self, args: &[&str]) -> String {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        cmd("ip", &all).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Runs `f` on a new thread switched into the namespace with setns(2)
    /// (not `ip netns exec`, which remounts /sys and hides bpffs). Panics in
    /// `f` are resumed here.
    fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let fd = std::fs::File::open(Path::new("/run/netns").join(&self.name)).expect("open the netns");
        std::thread::scope(|scope| {
            let thread = scope.spawn(|| {
                nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                f()
            });
            thread.join().unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }

    /// The XDP program attached to `iface`: (program id, name, attach mode
    /// as in IFLA_XDP_ATTACHED: 1 driver, 2 generic), or `None`.
    fn xdp_prog(&self, iface: &str) -> Option<(u64, String, u64)> {
        let out = self.ip(&["-j", "-d", "link", "show", "dev", iface]);
        let json: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
        let xdp = json.get(0)?.get("xdp")?;
        let prog = xdp.get("prog")?;
        Some((prog.get("id")?.as_u64()?, prog.get("name")?.as_str()?.to_owned(), xdp.get("mode")?.as_u64()?))
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = cmd("ip", &["netns", "del", &self.name]) {
            eprintln!("deleting netns {}: {e}", self.name);
        }
    }
}

/// A pin root of its own under /sys/fs/bpf, removed on drop.
struct PinRoot(PathBuf);

impl PinRoot {
    fn new(label: &str) -> PinRoot {
        let root = PinRoot(PathBuf::from(format!("/sys/fs/bpf/weir-test-{}-{label}", std::process::id())));
        let _ = std::fs::remove_dir_all(&root.0);
        root
    }
}

impl Drop for PinRoot {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                eprintln!("removing {}: {e}", self.0.display());
            }
        }
    }
}

fn cmd(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program).args(args).output().map_err(|e| format!("spawn {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("{program} {args:?} failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn mac(bytes: [u8; 6]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

/// `wd0` (the real's side, MAC_REAL) and `wd1` (MAC_ROUTER), both up, inside `ns`.
fn veth_pair(ns: &Netns) {
    ns.ip(&[
        "link",
        "add",
        "wd0",
        "address",
        &mac(MAC_REAL),
        "type",
        "veth",
        "peer",
        "name",
        "wd1",
        "address",
        &mac(MAC_ROUTER),
    ]);
    ns.ip(&["link", "set", "wd0", "up"]);
    ns.ip(&["link", "set", "wd1", "up"]);
}

/// Sends `frame` out of `iface` through an AF_PACKET socket. Call it inside
/// the namespace: the socket belongs to the calling thread's namespace.
fn send_frame(iface: &str, frame: &[u8]) {
    let name = std::ffi::CString::new(iface).unwrap();
    // SAFETY: a NUL-terminated name that outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(ifindex, 0, "{iface} not found");
    // SAFETY: socket has no memory-safety preconditions.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(raw >= 0, "socket(AF_PACKET): {}", std::io::Error::last_os_error());
    // SAFETY: `raw` is a fresh descriptor owned by nobody else.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_ifindex = ifindex as i32;
    addr.sll_halen = 6;
    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: the buffer and the address are valid for the lengths given.
    let sent = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(sent, frame.len() as isize, "sendto: {}", std::io::Error::last_os_error());
}

/// Polls `f` until it returns true or `limit` passes.
fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > limit {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn attach_outlives_the_loader_and_detach_detaches() {
    if skip_unless_root("attach_outlives_the_loader_and_detach_detaches") {
        return;
    }
    // Declared first, dropped last: the namespace goes after the pins.
    let ns = Netns::new("decap");
    let pin_root = PinRoot::new("decap-attach");
    veth_pair(&ns);
    // Pins are per network namespace: everything below asks from inside ns.
    let netns = ns.run(pin::netns_cookie).expect("the namespace's cookie");
    let dir = pin::decap_dir(&pin_root.0, netns, "wd0");

    ns.run(|| decap::attach("wd0", AttachMode::Driver, &pin_root.0)).expect("attach");
    assert!(dir.join("link").exists(), "link not pinned in {}", dir.display());
    assert!(dir.join(abi::map::DECAP_STATS).exists(), "map not pinned in {}", dir.display());
    // attach() dropped its Ebpf and the thread that called it has ended.
    let (first_id, name, mode) = ns.xdp_prog("wd0").expect("not attached once the loader is gone");
    assert_eq!(name, weir_ebpf::DECAP_PROGRAM);
    assert_eq!(mode, 1, "not attached in driver mode");

    // Attaching again swaps a new program into the pinned link, which keeps
    // its mode, even when asked for another one.
    ns.run(|| decap::attach("wd0", AttachMode::Generic, &pin_root.0)).expect("attach again");
    let (second_id, name, mode) = ns.xdp_prog("wd0").expect("not attached after re-attach");
    assert_eq!(name, weir_ebpf::DECAP_PROGRAM);
    assert_ne!(second_id, first_id, "the program was not replaced");
    assert_eq!(mode, 1, "the replacement did not keep the link's mode");

    // Traffic through the veth is decapsulated and counted in the pinned map.
    let inner = tcp_syn_v4();
    let frame = cat(&[&eth(ETH_P_IP), &outer_v4(IPPROTO_IPIP, &inner)]);
    let counters = || ns.run(|| decap::counters("wd0", &pin_root.0));
    let before = counters().expect("counters");
    ns.run(|| send_frame("wd1", &frame));
    let arrived = wait_for(Duration::from_secs(3), || {
        counters().expect("counters")[DecapStat::V4 as usize].v1 > before[DecapStat::V4 as usize].v1
    });
    assert!(arrived, "the encapsulated frame was never counted");
    let after = counters().expect("counters");
    assert_eq!(delta(after, before)[DecapStat::V4 as usize], LbCounter { v1: 1, v2: inner.len() as u64 });
    assert_eq!(delta(after, before)[DecapStat::V6 as usize], LbCounter::default());

    // Outside the namespace there is no such attachment: its pins are ns's.
    assert!(matches!(decap::detach("wd0", &pin_root.0), Err(Error::NotFound { .. })));
    assert!(matches!(decap::counters("wd0", &pin_root.0), Err(Error::NotFound { .. })));
    // Detach works on the pins alone.
    ns.run(|| decap::detach("wd0", &pin_root.0)).expect("detach");
    assert!(!dir.exists(), "{} still exists", dir.display());
    // The link goes once its last reference does (the bpffs inode is freed
    // after an RCU grace period), so give it a moment.
    assert!(
        wait_for(Duration::from_secs(5), || ns.xdp_prog("wd0").is_none()),
        "still attached after detach: {:?}",
        ns.xdp_prog("wd0")
    );
    assert!(matches!(ns.run(|| decap::detach("wd0", &pin_root.0)), Err(Error::NotFound { .. })));
    assert!(matches!(counters(), Err(Error::NotFound { .. })));
}

#[test]
fn attach_replaces_a_link_whose_interface_is_gone() {
    if skip_unless_root("attach_replaces_a_link_whose_interface_is_gone") {
        return;
    }
    let ns = Netns::new("decap");
    let pin_root = PinRoot::new("decap-defunct");
    veth_pair(&ns);
    ns.run(|| decap::attach("wd0", AttachMode::Generic, &pin_root.0)).expect("attach");
    assert_eq!(ns.xdp_prog("wd0").map(|p| p.2), Some(2), "not attached in generic mode");

    // The interface goes; its pinned link stays, defunct. A new interface of
    // the same name gets a new link.
    ns.ip(&["link", "del", "wd0"]);
    veth_pair(&ns);
    assert!(ns.xdp_prog("wd0").is_none());
    ns.run(|| decap::attach("wd0", AttachMode::Driver, &pin_root.0)).expect("attach to the new wd0");
    let (_, name, mode) = ns.xdp_prog("wd0").expect("not attached to the new wd0");
    assert_eq!((name.as_str(), mode), (weir_ebpf::DECAP_PROGRAM, 1));

    ns.run(|| decap::detach("wd0", &pin_root.0)).expect("detach");
    assert!(wait_for(Duration::from_secs(5), || ns.xdp_prog("wd0").is_none()), "still attached after detach");
}
