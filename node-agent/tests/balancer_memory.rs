//! Issue #11, item 8: what a Balancer at the default ring sizes (512 VIPs ×
//! 65537 slots) costs. The rings live in kernel memory, stored densely (two
//! 4-byte slots per 8-byte array element: max_vips × ring_size × 4 bytes,
//! half of what a u32 array such as Katran's ch_rings takes), and the agent
//! maps a ring only while it writes it, so they are not in its resident
//! memory. One test in its own binary, so nothing else runs in the process
//! whose memory it reads. Needs root (it loads the BPF program): without it,
//! prints `SKIPPED (needs root)`.

use std::net::IpAddr;

use weir_agent::dataplane::{Balancer, BalancerConfig, RealAction, RealSpec, VipId, VipSpec};
use weir_ebpf::abi;

/// A field of `/proc/self/status`, in kB.
fn status_kb(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find_map(|l| l.strip_prefix(field)).unwrap_or_else(|| panic!("no {field}"));
    line.trim().trim_end_matches("kB").trim().parse().unwrap()
}

#[test]
fn default_rings_are_dense_and_not_resident() {
    if weir_test_support::skip_unless_root("default_rings_are_dense_and_not_resident") {
        return;
    }
    let config = BalancerConfig { lru_size: 4096, ..BalancerConfig::testing() };
    let config = BalancerConfig {
        max_vips: abi::DEFAULT_MAX_VIPS,
        ch_ring_size: abi::DEFAULT_RING_SIZE,
        max_reals: abi::DEFAULT_MAX_REALS,
        ..config
    };
    let before_kb = status_kb("VmRSS:");
    let mut lb = Balancer::new(config).expect("load the balancer");
    // Every ring written once (the fresh VIPs), and one with reals.
    for i in 0..abi::DEFAULT_MAX_VIPS {
        let [_, _, a, b] = i.to_be_bytes();
        let id = VipId { addr: IpAddr::from([10, 100, a, b]), port: 80, proto: 6 };
        lb.add_vip(VipSpec { id, flags: 0 }).unwrap();
    }
    let id = VipId { addr: "10.100.0.0".parse().unwrap(), port: 80, proto: 6 };
    let reals: Vec<RealSpec> =
        (1..=100u8).map(|i| RealSpec { addr: IpAddr::from([10, 1, 0, i]), weight: 1, flags: 0 }).collect();
    lb.modify_reals(&id, RealAction::Add, &reals).unwrap();

    // Kernel memory: the slots and nothing more, to the page, plus the
    // array's header page.
    let page = 4096;
    let slots = u64::from(abi::DEFAULT_MAX_VIPS) * u64::from(abi::DEFAULT_RING_SIZE);
    let rings = lb.map_memory().unwrap().into_iter().find(|(name, _)| *name == abi::map::CH_RINGS).unwrap().1;
    assert_eq!(rings, (slots * 4).div_ceil(page) * page + page, "ring memory");
    assert!(rings < slots * 8, "less than a u32 array's {} bytes", slots * 8);

    // Resident memory: the 128 MiB of rings are not in it (a mapping of the
    // whole ring map would count all of them).
    let grown_kb = status_kb("VmRSS:").saturating_sub(before_kb);
    let mapped_kb = status_kb("RssShmem:") + status_kb("RssFile:");
    eprintln!("ring map: {rings} bytes; RSS grew by {grown_kb} kB; file and shared RSS {mapped_kb} kB");
    assert!(grown_kb < 16 * 1024, "RSS grew by {grown_kb} kB with the rings written");
    assert!(mapped_kb < 64 * 1024, "file and shared RSS: {mapped_kb} kB");
}
