//! The Rust side of `bpf/weir_abi.h`: the weir-abi crate (map names, key and
//! value structs, flags, counters), with `aya::Pod` for the map structs. The
//! tests below compare every size, offset, constant and map name of that crate
//! with what the C compiler produced from the header (see `bpf/abi_layout.c`),
//! so the two cannot drift.

pub use weir_abi::*;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    include!(concat!(env!("OUT_DIR"), "/abi_layout.rs"));

    fn c_layout(name: &str) -> usize {
        C_LAYOUT.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} missing from abi_layout.c")).1
    }

    fn c_const(name: &str) -> u64 {
        C_CONSTANTS.iter().find(|(n, _)| *n == name).unwrap_or_else(|| panic!("{name} missing from abi_layout.c")).1
    }

    #[test]
    fn struct_layouts_match_c() {
        let rust: &[(&str, usize)] = &[
            ("vip_key", size_of::<VipKey>()),
            ("vip_key.addr", offset_of!(VipKey, addr)),
            ("vip_key.port", offset_of!(VipKey, port)),
            ("vip_key.proto", offset_of!(VipKey, proto)),
            ("vip_key.family", offset_of!(VipKey, family)),
            ("vip_meta", size_of::<VipMeta>()),
            ("vip_meta.flags", offset_of!(VipMeta, flags)),
            ("vip_meta.vip_num", offset_of!(VipMeta, vip_num)),
            ("vip_meta.conn_tag", offset_of!(VipMeta, conn_tag)),
            ("real_def", size_of::<RealDef>()),
            ("real_def.addr", offset_of!(RealDef, addr)),
            ("real_def.flags", offset_of!(RealDef, flags)),
            ("conn_key", size_of::<ConnKey>()),
            ("conn_key.src", offset_of!(ConnKey, src)),
            ("conn_key.conn_tag", offset_of!(ConnKey, conn_tag)),
            ("conn_key.sport", offset_of!(ConnKey, sport)),
            ("conn_key.dport", offset_of!(ConnKey, dport)),
            ("conn_entry", size_of::<ConnEntry>()),
            ("conn_entry.real_index", offset_of!(ConnEntry, real_index)),
            ("conn_entry.atime_ns", offset_of!(ConnEntry, atime_ns)),
            ("lb_ctl", size_of::<LbCtl>()),
            ("lb_ctl.default_mac", offset_of!(LbCtl, default_mac)),
            ("lb_counter", size_of::<LbCounter>()),
            ("lb_counter.v1", offset_of!(LbCounter, v1)),
            ("lb_counter.v2", offset_of!(LbCounter, v2)),
            ("global_stats", size_of::<GlobalStats>()),
            ("global_stats.stat", offset_of!(GlobalStats, stat)),
            ("vip_filter", size_of::<VipFilter>()),
            ("vip_filter.vips", offset_of!(VipFilter, vips)),
            ("vip_filter.portless", offset_of!(VipFilter, portless)),
            ("ring_slots", size_of::<RingSlots>()),
            ("ring_slots.real", offset_of!(RingSlots, real)),
            ("hc_ctl", size_of::<HcCtl>()),
            ("hc_ctl.ifindex", offset_of!(HcCtl, ifindex)),
            ("hc_ctl.mtu", offset_of!(HcCtl, mtu)),
            ("hc_ctl.src_mac", offset_of!(HcCtl, src_mac)),
            ("hc_ctl.dst_mac", offset_of!(HcCtl, dst_mac)),
            ("hc_ctl.src_v4", offset_of!(HcCtl, src_v4)),
            ("hc_ctl.src_v6", offset_of!(HcCtl, src_v6)),
            ("hc_stats", size_of::<HcStats>()),
            ("hc_stats.processed", offset_of!(HcStats, processed)),
            ("hc_stats.dropped", offset_of!(HcStats, dropped)),
            ("hc_stats.skipped", offset_of!(HcStats, skipped)),
            ("hc_stats.too_big", offset_of!(HcStats, too_big)),
        ];
        for (name, value) in rust {
            assert_eq!(*value, c_layout(name), "{name}: Rust and C disagree");
        }
        assert_eq!(rust.len(), C_LAYOUT.len(), "a C struct or field has no Rust check");
    }

    #[test]
    fn constants_match_c() {
        let rust: &[(&str, u64)] = &[
            ("VIP_F_NO_SPORT", VIP_F_NO_SPORT.into()),
            ("VIP_F_NO_LRU", VIP_F_NO_LRU.into()),
            ("VIP_F_QUIC_VIP", VIP_F_QUIC_VIP.into()),
            ("VIP_F_DPORT_HASH", VIP_F_DPORT_HASH.into()),
            ("VIP_F_SRC_ROUTING", VIP_F_SRC_ROUTING.into()),
            ("VIP_F_LOCAL_VIP", VIP_F_LOCAL_VIP.into()),
            ("VIP_F_GLOBAL_LRU", VIP_F_GLOBAL_LRU.into()),
            ("VIP_F_HASH_SRC_DST_PORT", VIP_F_HASH_SRC_DST_PORT.into()),
            ("VIP_F_UDP_STABLE_ROUTING", VIP_F_UDP_STABLE_ROUTING.into()),
            ("VIP_F_UDP_FLOW_MIGRATION", VIP_F_UDP_FLOW_MIGRATION.into()),
            ("VIP_F_SUPPORTED", VIP_F_SUPPORTED.into()),
            ("REAL_F_IPV6", REAL_F_IPV6.into()),
            ("REAL_F_LOCAL_REAL", REAL_F_LOCAL_REAL.into()),
            ("WEIR_FAMILY_V4", FAMILY_V4.into()),
            ("WEIR_FAMILY_V6", FAMILY_V6.into()),
            ("WEIR_RING_SLOTS_PER_ELEM", RING_SLOTS_PER_ELEM.into()),
            ("WEIR_DEFAULT_RING_SIZE", DEFAULT_RING_SIZE.into()),
            ("WEIR_DEFAULT_MAX_VIPS", DEFAULT_MAX_VIPS.into()),
            ("WEIR_DEFAULT_MAX_REALS", DEFAULT_MAX_REALS.into()),
            ("WEIR_DEFAULT_CONNS", DEFAULT_CONNS.into()),
            ("WEIR_DEFAULT_MTU", DEFAULT_MTU.into()),
            ("WEIR_UDP_CONN_TIMEOUT_NS", UDP_CONN_TIMEOUT_NS),
            ("WEIR_MAX_CONN_RATE", MAX_CONN_RATE),
            ("WEIR_REAL_NONE", REAL_NONE.into()),
            ("WEIR_ICMP_TTL", ICMP_TTL.into()),
            ("WEIR_ICMP_QUOTE_V4", ICMP_QUOTE_V4.into()),
            ("WEIR_ICMP_QUOTE_V6", ICMP_QUOTE_V6.into()),
            ("WEIR_VIP_FILTER_BITS", VIP_FILTER_BITS.into()),
            ("WEIR_VIP_FILTER_SIZE", VIP_FILTER_SIZE.into()),
            ("WEIR_FILTER_MULT", FILTER_MULT.into()),
            ("WEIR_STAT_LRU", Stat::Lru as u64),
            ("WEIR_STAT_LRU_MISS", Stat::LruMiss as u64),
            ("WEIR_STAT_LRU_FALLBACK", Stat::LruFallback as u64),
            ("WEIR_STAT_CH_DROP", Stat::ChDrop as u64),
            ("WEIR_STAT_ENCAP_FAIL", Stat::EncapFail as u64),
            ("WEIR_STAT_ICMP_TOOBIG", Stat::IcmpTooBig as u64),
            ("WEIR_STAT_ICMP_FWD", Stat::IcmpFwd as u64),
            ("WEIR_STAT_NOT_BALANCED", Stat::NotBalanced as u64),
            ("WEIR_STAT_NEW_CONN_RATE", Stat::NewConnRate as u64),
            ("WEIR_STAT_XDP_TOTAL", Stat::XdpTotal as u64),
            ("WEIR_STAT_XDP_TX", Stat::XdpTx as u64),
            ("WEIR_STAT_XDP_DROP", Stat::XdpDrop as u64),
            ("WEIR_STAT_XDP_PASS", Stat::XdpPass as u64),
            ("WEIR_STAT_BAD_LEN", Stat::BadLen as u64),
            ("WEIR_STAT_MAX", Stat::COUNT.into()),
            ("WEIR_DECAP_STAT_V4", DecapStat::V4 as u64),
            ("WEIR_DECAP_STAT_V6", DecapStat::V6 as u64),
            ("WEIR_DECAP_STAT_PASS", DecapStat::Pass as u64),
            ("WEIR_DECAP_STAT_MAX", DecapStat::COUNT.into()),
            ("IPPROTO_TCP", Protocol::Tcp.number().into()),
            ("IPPROTO_UDP", Protocol::Udp.number().into()),
        ];
        for (name, value) in rust {
            assert_eq!(*value, c_const(name), "{name}: Rust and C disagree");
        }
        assert_eq!(rust.len(), C_CONSTANTS.len(), "a C constant has no Rust check");
    }

    #[test]
    fn stat_all_lists_every_index_once() {
        for (index, stat) in Stat::ALL.iter().enumerate() {
            assert_eq!(*stat as usize, index, "{stat:?}");
        }
    }

    /// The flag tables' names are the C names without their prefix.
    #[test]
    fn flag_tables_match_c() {
        for (name, flag) in VipFlags::all().iter_names() {
            assert_eq!(u64::from(flag.bits()), c_const(&format!("VIP_F_{name}")), "{name}");
        }
        for (name, flag) in RealFlags::all().iter_names() {
            assert_eq!(u64::from(flag.bits()), c_const(&format!("REAL_F_{name}")), "{name}");
        }
        assert_eq!(u64::from(VipFlags::SUPPORTED.bits()), c_const("VIP_F_SUPPORTED"));
    }

    /// The counters' Katran names are the C enum's names without their prefix.
    #[test]
    fn counter_names_match_c() {
        for stat in Stat::ALL {
            let name = format!("WEIR_STAT_{}", stat.info().name.to_uppercase());
            assert_eq!(stat as u64, c_const(&name), "{name}");
        }
    }

    #[test]
    fn map_names_match_c() {
        let rust: &[(&str, &str)] = &[
            ("WEIR_MAP_VIPS", map::VIPS),
            ("WEIR_MAP_REALS", map::REALS),
            ("WEIR_MAP_CH_RINGS", map::CH_RINGS),
            ("WEIR_MAP_CONNS", map::CONNS),
            ("WEIR_MAP_CTL", map::CTL),
            ("WEIR_MAP_VIP_STATS", map::VIP_STATS),
            ("WEIR_MAP_REAL_STATS", map::REAL_STATS),
            ("WEIR_MAP_STATS", map::STATS),
            ("WEIR_MAP_VIP_FILTER", map::VIP_FILTER),
            ("WEIR_MAP_DECAP_STATS", map::DECAP_STATS),
            ("WEIR_MAP_HC_REALS", map::HC_REALS),
            ("WEIR_MAP_HC_CTL", map::HC_CTL),
            ("WEIR_MAP_HC_KEYS", map::HC_KEYS),
            ("WEIR_MAP_HC_KEY_PKTS", map::HC_KEY_PKTS),
            ("WEIR_MAP_HC_STATS", map::HC_STATS),
        ];
        for (macro_name, name) in rust {
            let c = C_MAP_NAMES.iter().find(|(m, _)| m == macro_name).unwrap_or_else(|| panic!("{macro_name} missing"));
            assert_eq!(*name, c.1, "{macro_name}: Rust and C disagree");
            assert!(name.len() <= 15, "{name}: kernel object names hold at most 15 characters");
        }
        assert_eq!(rust.len(), C_MAP_NAMES.len(), "a C map name has no Rust check");
        for name in map::BALANCER.iter().chain(map::HEALTHCHECK) {
            assert!(rust.iter().any(|(_, n)| n == name), "{name}");
        }
    }

    #[test]
    fn vip_filter_bucket_matches_c() {
        for (words, bucket) in C_FILTER_BUCKETS {
            let mut bytes = [0u8; 16];
            for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
                chunk.copy_from_slice(&word.to_ne_bytes());
            }
            let v4 = bytes[4..].iter().all(|b| *b == 0);
            let addr = addr_from_bytes(bytes, !v4);
            assert_eq!(vip_filter_bucket(addr), *bucket, "{addr}");
        }
    }

    #[test]
    fn programs_are_embedded_elf_objects() {
        for object in [crate::BALANCER, crate::DECAP, crate::HEALTHCHECK] {
            assert_eq!(&object[..4], b"\x7fELF");
        }
    }
}
