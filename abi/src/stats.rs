//! The datapath's counters and what they mean. Every counter is a pair
//! `{v1, v2}` (`struct lb_counter`) whose meaning depends on the counter; the
//! meanings follow Katran's, so katran-server's `/stats` endpoints are served
//! faithfully, and where weir adds a counter or a half, [`Origin::Weir`] says so.
//! [`Stat::info`] is the one table; the comments of `enum weir_stat` in
//! weir_abi.h say the same for the C side.

use std::fmt;

/// The counters of `struct global_stats` (the one entry of [`map::STATS`](crate::map::STATS)).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Stat {
    Lru = 0,
    LruMiss,
    LruFallback,
    ChDrop,
    EncapFail,
    IcmpTooBig,
    IcmpFwd,
    NotBalanced,
    NewConnRate,
    XdpTotal,
    XdpTx,
    XdpDrop,
    XdpPass,
    /// v1: IPv4 VIP packets dropped because the frame is shorter than the
    /// header's tot_len, or tot_len shorter than the header; v2: IPv6,
    /// shorter than 40 + payload_len (`lengths_agree` in balancer.bpf.c).
    BadLen,
}

/// Which half of a counter pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Half {
    V1,
    V2,
}

impl fmt::Display for Half {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Half::V1 => "v1",
            Half::V2 => "v2",
        })
    }
}

/// Whose meaning a counter half has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// Katran's counter of the same name counts the same.
    Katran,
    /// weir's own: Katran has no such counter, or counts something else there.
    Weir,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Katran => "Katran",
            Origin::Weir => "weir",
        })
    }
}

/// What one half of a counter counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HalfInfo {
    pub counts: &'static str,
    pub origin: Origin,
}

/// A counter's metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterInfo {
    /// Katran's name of the counter (`lru`, `ch_drop`, ...).
    pub name: &'static str,
    /// Its katran-server endpoint under `/api/v1/stats/`, if it has one.
    pub endpoint: Option<&'static str>,
    pub v1: HalfInfo,
    pub v2: HalfInfo,
}

impl CounterInfo {
    pub fn half(&self, half: Half) -> HalfInfo {
        match half {
            Half::V1 => self.v1,
            Half::V2 => self.v2,
        }
    }
}

const fn katran(counts: &'static str) -> HalfInfo {
    HalfInfo { counts, origin: Origin::Katran }
}

const fn weir(counts: &'static str) -> HalfInfo {
    HalfInfo { counts, origin: Origin::Weir }
}

const fn info(name: &'static str, endpoint: Option<&'static str>, v1: HalfInfo, v2: HalfInfo) -> CounterInfo {
    CounterInfo { name, endpoint, v1, v2 }
}

impl Stat {
    /// Number of counters in `struct global_stats`.
    pub const COUNT: u32 = 14;

    /// Every counter, in index order.
    pub const ALL: [Stat; Self::COUNT as usize] = [
        Stat::Lru,
        Stat::LruMiss,
        Stat::LruFallback,
        Stat::ChDrop,
        Stat::EncapFail,
        Stat::IcmpTooBig,
        Stat::IcmpFwd,
        Stat::NotBalanced,
        Stat::NewConnRate,
        Stat::XdpTotal,
        Stat::XdpTx,
        Stat::XdpDrop,
        Stat::XdpPass,
        Stat::BadLen,
    ];

    /// What the counter is called and what its halves count.
    pub const fn info(self) -> CounterInfo {
        match self {
            Stat::Lru => info("lru", Some("lru"), katran("packets to VIPs"), katran("connection-table misses")),
            Stat::LruMiss => info("lru_miss", Some("lru/miss"), katran("TCP SYN misses"), katran("TCP non-SYN misses")),
            Stat::LruFallback => info(
                "lru_fallback",
                Some("lru/fallback"),
                katran("always 0: weir's table is never missing (Katran: fallback LRU hits)"),
                katran("always 0"),
            ),
            Stat::ChDrop => {
                info("ch_drop", Some("ch-drop"), katran("ring slot empty"), katran("real index had no real"))
            }
            Stat::EncapFail => {
                info("encap_fail", None, katran("headroom or bounds failure"), weir("family pair not encapsulable"))
            }
            Stat::IcmpTooBig => info(
                "icmp_toobig",
                Some("icmp-too-big"),
                katran("IPv4 packets too big once encapsulated"),
                katran("IPv6 packets too big once encapsulated"),
            ),
            Stat::IcmpFwd => info(
                "icmp_fwd",
                None,
                katran("ICMPv4 errors about VIP flows sent to the flow's real"),
                katran("ICMPv6 errors about VIP flows sent to the flow's real"),
            ),
            Stat::NotBalanced => {
                info("not_balanced", None, weir("IPv4 packets with options"), weir("fragments (IPv4 and IPv6)"))
            }
            Stat::NewConnRate => {
                info("new_conn_rate", None, katran("new connections this second"), katran("when the second began (ns)"))
            }
            Stat::XdpTotal => info("xdp_total", Some("xdp/total"), katran("packets"), katran("bytes (whole frame)")),
            Stat::XdpTx => {
                info("xdp_tx", Some("xdp/tx"), katran("packets"), katran("bytes (whole frame, as received)"))
            }
            Stat::XdpDrop => info("xdp_drop", Some("xdp/drop"), katran("packets"), katran("bytes")),
            Stat::XdpPass => info("xdp_pass", Some("xdp/pass"), katran("packets"), katran("bytes")),
            Stat::BadLen => info(
                "bad_len",
                None,
                weir("IPv4 VIP packets whose frame is shorter than tot_len, or tot_len than the header"),
                weir("IPv6 VIP packets whose frame is shorter than 40 + payload_len"),
            ),
        }
    }

    /// `Katran: lru v1`, `weir: bad_len v2`: where a half's meaning comes from,
    /// for help texts, so that operators who know Katran's counters find theirs.
    pub fn reference(self, half: Half) -> String {
        let info = self.info();
        format!("{}: {} {half}", info.half(half).origin, info.name)
    }
}

/// Indices of the per-CPU decap counter map [`map::DECAP_STATS`](crate::map::DECAP_STATS),
/// kept by the real-side decap program (weir's own counters).
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DecapStat {
    /// v1: packets decapsulated from an IPv4 outer header; v2: bytes.
    V4 = 0,
    /// v1: packets decapsulated from an IPv6 outer header; v2: bytes.
    V6,
    /// v1: packets passed untouched (not encapsulated); v2: bytes.
    Pass,
}

impl DecapStat {
    /// Number of entries in [`map::DECAP_STATS`](crate::map::DECAP_STATS).
    pub const COUNT: u32 = 3;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_lists_every_index_once_with_a_distinct_name() {
        for (index, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, index, "{stat:?}");
            let name = stat.info().name;
            assert_eq!(Stat::ALL.iter().filter(|s| s.info().name == name).count(), 1, "{name}");
        }
    }

    #[test]
    fn references_name_the_origin_of_each_half() {
        assert_eq!(Stat::Lru.reference(Half::V1), "Katran: lru v1");
        assert_eq!(Stat::EncapFail.reference(Half::V1), "Katran: encap_fail v1");
        assert_eq!(Stat::EncapFail.reference(Half::V2), "weir: encap_fail v2");
        assert_eq!(Stat::BadLen.reference(Half::V2), "weir: bad_len v2");
    }
}
