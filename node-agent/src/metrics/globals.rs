//! The datapath's global counters as metrics: Katran's counters are
//! `{v1, v2}` pairs whose meaning depends on the counter (weir-abi's
//! `Stat::info`); each half is its own metric, named for what it counts, its
//! HELP ending in Katran's name (`Katran: lru v1`, from that table) so
//! operators who know Katran's stats find theirs.

pub(super) use weir_abi::Half;
use weir_ebpf::abi::Stat;

/// One global counter half, as a metric.
pub(super) struct Global {
    pub name: &'static str,
    pub stat: Stat,
    pub half: Half,
    /// What the metric counts; [`Global::help`] adds the counter's name.
    pub what: &'static str,
}

impl Global {
    /// The HELP text: what it counts, and which Katran (or weir) counter half it is.
    pub fn help(&self) -> String {
        format!("{} ({})", self.what, self.stat.reference(self.half))
    }
}

/// Every global counter but the XDP verdicts (labelled, below) and
/// NEW_CONN_RATE (a rate window, reported as `under_flood`).
pub(super) const GLOBALS: &[Global] = &[
    Global {
        name: "vip_matched_packets",
        stat: Stat::Lru,
        half: Half::V1,
        what: "Packets whose destination matched a VIP, before a real is chosen",
    },
    Global {
        name: "conn_table_misses",
        stat: Stat::Lru,
        half: Half::V2,
        what: "VIP packets whose real came from the consistent-hash ring rather than the connection table: \
               connection-table misses, TCP SYNs and NO_LRU VIPs included",
    },
    Global {
        name: "conn_table_tcp_syn_misses",
        stat: Stat::LruMiss,
        half: Half::V1,
        what: "TCP SYNs to a VIP, which always take the ring and refresh the connection table",
    },
    Global {
        name: "conn_table_tcp_non_syn_misses",
        stat: Stat::LruMiss,
        half: Half::V2,
        what: "TCP packets other than SYNs not found in the connection table: flows this node did not see start, \
               or whose entry was evicted",
    },
    Global {
        name: "conn_table_fallback_hits",
        stat: Stat::LruFallback,
        half: Half::V1,
        what: "Hits in a fallback connection table; always 0, weir's table is never missing",
    },
    Global {
        name: "ring_empty_slot_drops",
        stat: Stat::ChDrop,
        half: Half::V1,
        what: "VIP packets dropped because the ring slot held no real: a VIP without reals",
    },
    Global {
        name: "ring_unknown_real_drops",
        stat: Stat::ChDrop,
        half: Half::V2,
        what: "VIP packets dropped because the chosen real index had no real definition",
    },
    Global {
        name: "encap_failures",
        stat: Stat::EncapFail,
        half: Half::V1,
        what: "Packets dropped because encapsulation failed (no headroom, bounds)",
    },
    Global {
        name: "encap_unsupported_family_drops",
        stat: Stat::EncapFail,
        half: Half::V2,
        what: "IPv6 packets dropped because their real is IPv4 (IPv6-in-IPv4 is not encapsulated)",
    },
    Global {
        name: "too_big_ipv4",
        stat: Stat::IcmpTooBig,
        half: Half::V1,
        what: "IPv4 VIP packets larger than the MTU once encapsulated: answered with ICMP fragmentation-needed \
               (dropped when they are ICMP errors themselves, or the reply is switched off)",
    },
    Global {
        name: "too_big_ipv6",
        stat: Stat::IcmpTooBig,
        half: Half::V2,
        what: "IPv6 VIP packets larger than the MTU once encapsulated: answered with ICMPv6 packet-too-big \
               (dropped when they are ICMP errors themselves, or the reply is switched off)",
    },
    Global {
        name: "icmp_ipv4_forwarded",
        stat: Stat::IcmpFwd,
        half: Half::V1,
        what: "ICMP errors about a VIP flow sent on to the flow's real",
    },
    Global {
        name: "icmp_ipv6_forwarded",
        stat: Stat::IcmpFwd,
        half: Half::V2,
        what: "ICMPv6 errors about a VIP flow sent on to the flow's real",
    },
    Global {
        name: "ipv4_options_passed",
        stat: Stat::NotBalanced,
        half: Half::V1,
        what: "IPv4 packets with options, passed to the kernel without balancing",
    },
    Global {
        name: "fragments_passed",
        stat: Stat::NotBalanced,
        half: Half::V2,
        what: "IP fragments (IPv4 and IPv6), passed to the kernel without balancing",
    },
    Global {
        name: "bad_length_ipv4_drops",
        stat: Stat::BadLen,
        half: Half::V1,
        what: "IPv4 packets to a VIP dropped because the frame is shorter than their header's total length, or \
               that length is shorter than the header",
    },
    Global {
        name: "bad_length_ipv6_drops",
        stat: Stat::BadLen,
        half: Half::V2,
        what: "IPv6 packets to a VIP dropped because the frame is shorter than 40 bytes plus their header's payload \
               length",
    },
];

/// XDP verdicts and their counters (XDP_TOTAL is their sum, and per CPU below).
pub(super) const VERDICTS: [(&str, Stat); 3] = [("tx", Stat::XdpTx), ("drop", Stat::XdpDrop), ("pass", Stat::XdpPass)];
