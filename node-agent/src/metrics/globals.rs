//! The datapath's global counters as metrics: Katran's counters are
//! `{v1, v2}` pairs whose meaning depends on the counter
//! (ebpf/bpf/weir_abi.h); each half is its own metric, named for what it
//! counts, its HELP giving Katran's name (`lru v1`, ...) so operators who
//! know Katran's stats find theirs.

use weir_ebpf::abi::Stat;

/// Which half of a Katran counter pair.
#[derive(Debug, Clone, Copy)]
pub(super) enum Half {
    V1,
    V2,
}

/// One global counter half, as a metric.
pub(super) struct Global {
    pub name: &'static str,
    pub stat: Stat,
    pub half: Half,
    pub help: &'static str,
}

/// Every global counter but the XDP verdicts (labelled, below) and
/// NEW_CONN_RATE (a rate window, reported as `under_flood`).
pub(super) const GLOBALS: &[Global] = &[
    Global {
        name: "vip_matched_packets",
        stat: Stat::Lru,
        half: Half::V1,
        help: "Packets whose destination matched a VIP, before a real is chosen (Katran: lru v1)",
    },
    Global {
        name: "conn_table_misses",
        stat: Stat::Lru,
        half: Half::V2,
        help: "VIP packets whose real came from the consistent-hash ring rather than the connection table: \
               connection-table misses, TCP SYNs and NO_LRU VIPs included (Katran: lru v2)",
    },
    Global {
        name: "conn_table_tcp_syn_misses",
        stat: Stat::LruMiss,
        half: Half::V1,
        help: "TCP SYNs to a VIP, which always take the ring and refresh the connection table (Katran: lru_miss v1)",
    },
    Global {
        name: "conn_table_tcp_non_syn_misses",
        stat: Stat::LruMiss,
        half: Half::V2,
        help: "TCP packets other than SYNs not found in the connection table: flows this node did not see start, \
               or whose entry was evicted (Katran: lru_miss v2)",
    },
    Global {
        name: "conn_table_fallback_hits",
        stat: Stat::LruFallback,
        half: Half::V1,
        help: "Hits in a fallback connection table; always 0, weir's table is never missing (Katran: lru_fallback v1)",
    },
    Global {
        name: "ring_empty_slot_drops",
        stat: Stat::ChDrop,
        half: Half::V1,
        help: "VIP packets dropped because the ring slot held no real: a VIP without reals (Katran: ch_drop v1)",
    },
    Global {
        name: "ring_unknown_real_drops",
        stat: Stat::ChDrop,
        half: Half::V2,
        help: "VIP packets dropped because the chosen real index had no real definition (Katran: ch_drop v2)",
    },
    Global {
        name: "encap_failures",
        stat: Stat::EncapFail,
        half: Half::V1,
        help: "Packets dropped because encapsulation failed (no headroom, bounds) (Katran: encap_fail v1)",
    },
    Global {
        name: "encap_unsupported_family_drops",
        stat: Stat::EncapFail,
        half: Half::V2,
        help:
            "IPv6 packets dropped because their real is IPv4 (IPv6-in-IPv4 is not encapsulated) (weir: encap_fail v2)",
    },
    Global {
        name: "too_big_ipv4_drops",
        stat: Stat::IcmpTooBig,
        half: Half::V1,
        help: "IPv4 packets dropped as larger than the MTU once encapsulated; weir does not answer them with ICMP \
               yet (Katran: icmp_toobig v1)",
    },
    Global {
        name: "too_big_ipv6_drops",
        stat: Stat::IcmpTooBig,
        half: Half::V2,
        help: "IPv6 packets dropped as larger than the MTU once encapsulated; weir does not answer them with ICMPv6 \
               yet (Katran: icmp_toobig v2)",
    },
    Global {
        name: "icmp_ipv4_forwarded",
        stat: Stat::IcmpFwd,
        half: Half::V1,
        help: "ICMP errors about a VIP flow sent on to the flow's real (Katran: icmp_fwd v1)",
    },
    Global {
        name: "icmp_ipv6_forwarded",
        stat: Stat::IcmpFwd,
        half: Half::V2,
        help: "ICMPv6 errors about a VIP flow sent on to the flow's real (Katran: icmp_fwd v2)",
    },
    Global {
        name: "ipv4_options_passed",
        stat: Stat::NotBalanced,
        half: Half::V1,
        help: "IPv4 packets with options, passed to the kernel without balancing (weir: not_balanced v1)",
    },
    Global {
        name: "fragments_passed",
        stat: Stat::NotBalanced,
        half: Half::V2,
        help: "IP fragments (IPv4 and IPv6), passed to the kernel without balancing (weir: not_balanced v2)",
    },
    Global {
        name: "bad_length_ipv4_drops",
        stat: Stat::BadLen,
        half: Half::V1,
        help: "IPv4 packets to a VIP dropped because the frame is shorter than their header's total length, or \
               that length is shorter than the header (weir: bad_len v1)",
    },
    Global {
        name: "bad_length_ipv6_drops",
        stat: Stat::BadLen,
        half: Half::V2,
        help: "IPv6 packets to a VIP dropped because the frame is shorter than 40 bytes plus their header's payload \
               length (weir: bad_len v2)",
    },
];

/// XDP verdicts and their counters (XDP_TOTAL is their sum, and per CPU below).
pub(super) const VERDICTS: [(&str, Stat); 3] = [("tx", Stat::XdpTx), ("drop", Stat::XdpDrop), ("pass", Stat::XdpPass)];
