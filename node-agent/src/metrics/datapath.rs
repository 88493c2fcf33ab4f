//! Datapath metrics, read from the [`Balancer`] at scrape time by a custom
//! [`Collector`]: nothing is copied between scrapes, and a scrape takes the
//! balancer's read lock only while it reads the counters (one BPF map lookup
//! per VIP, per real, and for the global counters), never while encoding.
//!
//! Each half of a global counter pair is its own metric (`globals`); labels
//! are kept for dimensions: VIP, real, CPU, XDP verdict, table.

use std::fmt;
use std::net::IpAddr;
use std::sync::{Arc, PoisonError};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;
use weir_abi::Protocol;
use weir_ebpf::abi::{self, Stat};

use super::globals::{Half, GLOBALS, VERDICTS};
use crate::dataplane::{Balancer, Counter, VipId};
use crate::handles::{Datapath, SharedBalancer, UserspaceCounters, UserspaceStats};

/// Scrape-time choices.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Count the connection table's used entries. This walks the whole table
    /// (one syscall per entry, millions at the default size) under the
    /// balancer's read lock, so it is opt-in (`--metrics-conn-table-usage`).
    pub conn_table_usage: bool,
}

/// Each real of a VIP with its health.
pub(crate) type RealsHealth = Vec<(IpAddr, bool)>;

/// Everything one scrape reports, read under the lock, encoded after it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Snapshot {
    pub initialized: bool,
    pub attached: bool,
    pub vips: Vec<(VipId, Counter)>,
    pub reals: Vec<(IpAddr, Counter)>,
    /// Per VIP: whether it fails open, and each real's health.
    pub health: Vec<(VipId, bool, RealsHealth)>,
    pub stats: Vec<(Stat, Counter)>,
    /// (CPU, packets processed).
    pub cpus: Vec<(u32, u64)>,
    pub under_flood: Option<bool>,
    /// (table, capacity, used entries when known).
    pub tables: Vec<(&'static str, u32, Option<u32>)>,
    /// (map, kernel memory in bytes).
    pub map_memory: Vec<(&'static str, u64)>,
    /// The API's failure counters (kept with or without a balancer).
    pub userspace: UserspaceStats,
}

impl Snapshot {
    /// Reads what the Balancer reports. A failed read leaves its metric out of
    /// this scrape (and is logged) rather than failing the whole exposition.
    pub fn read(lb: &Balancer, options: Options) -> Self {
        fn ok<T>(what: &str, result: crate::Result<T>) -> Option<T> {
            result.map_err(|err| tracing::debug!(%err, "metrics: cannot read {what}")).ok()
        }
        let mut snap = Snapshot { initialized: true, attached: lb.is_attached(), ..Self::default() };
        let mut reals = std::collections::BTreeSet::new();
        for vip in lb.vips() {
            if let Some(counter) = ok("VIP counters", lb.vip_stats(&vip.id)) {
                snap.vips.push((vip.id, counter));
            }
            let with_health = ok("VIP reals", lb.reals_with_health(&vip.id)).unwrap_or_default();
            reals.extend(with_health.iter().map(|(r, _)| r.addr));
            snap.health.push((vip.id, vip.fail_open, with_health.into_iter().map(|(r, h)| (r.addr, h)).collect()));
        }
        for addr in reals {
            let counter = lb.real_index(addr).and_then(|index| ok("real counters", lb.real_stats(index)));
            snap.reals.extend(counter.map(|c| (addr, c)));
        }
        let stats = GLOBALS.iter().map(|g| g.stat).chain(VERDICTS.iter().map(|&(_, stat)| stat));
        for stat in stats {
            if !snap.stats.iter().any(|(s, _)| *s == stat) {
                snap.stats.extend(ok("global counters", lb.stat(stat)).map(|c| (stat, c)));
            }
        }
        if let Some(packets) = ok("per-CPU counters", lb.per_core_packets()) {
            let cores = &lb.config().forwarding_cores;
            snap.cpus = packets
                .into_iter()
                .enumerate()
                .map(|(i, n)| (cores.get(i).copied().unwrap_or(u32::try_from(i).unwrap_or(u32::MAX)), n))
                .collect();
        }
        snap.under_flood = ok("the flood state", lb.under_flood());
        for (table, map) in [("vips", abi::map::VIPS), ("reals", abi::map::REALS)] {
            snap.tables.extend(ok("table usage", lb.map_usage(map)).map(|(max, used)| (table, max, Some(used))));
        }
        let conns = match options.conn_table_usage {
            true => ok("connection-table usage", lb.map_usage(abi::map::CONNS)).map(|(_, used)| used),
            false => None,
        };
        snap.tables.push(("conn_table", lb.config().lru_size, conns));
        snap.map_memory = ok("map memory", lb.map_memory()).unwrap_or_default();
        snap
    }

    fn stat(&self, stat: Stat) -> Option<Counter> {
        self.stats.iter().find(|(s, _)| *s == stat).map(|&(_, c)| c)
    }

    /// Writes the exposition of this snapshot.
    pub fn encode(&self, mut enc: DescriptorEncoder) -> fmt::Result {
        scalar_gauge(
            &mut enc,
            "balancer_initialized",
            "1 once the balancer exists (POST /api/v1/lb/create or --config), else 0",
            i64::from(self.initialized),
        )?;
        scalar_gauge(
            &mut enc,
            "balancer_attached",
            "1 while the balancer's XDP link is bound to its interface, as the kernel reports it (0 in testing mode, before creation, or once the interface went away)",
            i64::from(self.attached),
        )?;
        scalar_counter(
            &mut enc,
            "bpf_failed_calls",
            "API operations on the balancer that failed in a BPF syscall (BPF_FAILED) (Katran: lb_stats \
             bpf_failed_calls)",
            self.userspace.bpf_failed_calls,
        )?;
        scalar_counter(
            &mut enc,
            "address_validation_failures",
            "Addresses in API requests that were not valid, or not accepted by the balancer (Katran: lb_stats \
             addr_validation_failed)",
            self.userspace.addr_validation_failed,
        )?;
        if !self.initialized {
            return Ok(());
        }
        let vip_labels = |id: &VipId| {
            [
                ("address", id.addr.to_string()),
                ("port", id.port.to_string()),
                ("proto", Protocol::label_or_number(id.proto)),
            ]
        };
        counter(
            &mut enc,
            "vip_packets",
            None,
            "Packets sent on toward a real of the VIP (Katran: per-VIP stats v1)",
            self.vips.iter().map(|(id, c)| (vip_labels(id), c.v1)),
        )?;
        counter(
            &mut enc,
            "vip",
            Some(Unit::Bytes),
            "L3 bytes (without Ethernet) sent on toward a real of the VIP (Katran: per-VIP stats v2)",
            self.vips.iter().map(|(id, c)| (vip_labels(id), c.v2)),
        )?;
        counter(
            &mut enc,
            "real_packets",
            None,
            "Packets sent to the real, over all its VIPs (Katran: per-real stats v1)",
            self.reals.iter().map(|(addr, c)| ([("address", addr.to_string())], c.v1)),
        )?;
        counter(
            &mut enc,
            "real",
            Some(Unit::Bytes),
            "L3 bytes (without Ethernet) sent to the real, over all its VIPs (Katran: per-real stats v2)",
            self.reals.iter().map(|(addr, c)| ([("address", addr.to_string())], c.v2)),
        )?;
        gauge(
            &mut enc,
            "vip_fail_open",
            "1 while every real of the VIP is unhealthy, so that all of them stay in its ring (fail open), else 0",
            self.health.iter().map(|(id, fail_open, _)| (vip_labels(id), i64::from(*fail_open))),
        )?;
        gauge(
            &mut enc,
            "real_healthy",
            "1 while the real is healthy for the VIP (new flows may pick it), else 0",
            self.health.iter().flat_map(|(id, _, reals)| {
                reals.iter().map(move |(addr, healthy)| {
                    let [a, p, q] = vip_labels(id);
                    ([a, p, q, ("real", addr.to_string())], i64::from(*healthy))
                })
            }),
        )?;
        for g in GLOBALS {
            if let Some(c) = self.stat(g.stat) {
                let value = match g.half {
                    Half::V1 => c.v1,
                    Half::V2 => c.v2,
                };
                scalar_counter(&mut enc, g.name, &g.help(), value)?;
            }
        }
        let verdicts: Vec<_> =
            VERDICTS.iter().filter_map(|&(v, stat)| Some(([("verdict", v)], self.stat(stat)?))).collect();
        counter(
            &mut enc,
            "xdp_packets",
            None,
            "Packets the balancer program processed, by XDP verdict (tx: encapsulated toward a real; drop; pass: \
             to the kernel)",
            verdicts.iter().map(|(l, c)| (*l, c.v1)),
        )?;
        counter(
            &mut enc,
            "xdp",
            Some(Unit::Bytes),
            "Bytes (whole frames, as received) the balancer program processed, by XDP verdict",
            verdicts.iter().map(|(l, c)| (*l, c.v2)),
        )?;
        counter(
            &mut enc,
            "cpu_packets",
            None,
            "Packets the balancer program processed on each CPU, all verdicts (Katran: per-core packets)",
            self.cpus.iter().map(|(cpu, n)| ([("cpu", cpu.to_string())], *n)),
        )?;
        if let Some(flood) = self.under_flood {
            scalar_gauge(
                &mut enc,
                "under_flood",
                "1 while some CPU sees more new connections per second than the flood threshold (new flows then \
                 skip the connection table), else 0",
                i64::from(flood),
            )?;
        }
        gauge(
            &mut enc,
            "table_capacity",
            "Entries a table can hold (the balancer's max_vips, max_reals, lru_size)",
            self.tables.iter().map(|&(t, max, _)| ([("table", t)], i64::from(max))),
        )?;
        gauge(
            &mut enc,
            "table_entries",
            "Entries in use in a table (conn_table only with --metrics-conn-table-usage)",
            self.tables.iter().filter_map(|&(t, _, used)| Some(([("table", t)], i64::from(used?)))),
        )?;
        gauge_with_unit(
            &mut enc,
            "bpf_map_memory",
            Some(Unit::Bytes),
            "Kernel memory a BPF map of the balancer holds, as the kernel accounts it (memlock); not part of the \
             agent's resident memory",
            self.map_memory.iter().map(|&(map, bytes)| ([("map", map)], i64::try_from(bytes).unwrap_or(i64::MAX))),
        )
    }
}

fn scalar_counter(enc: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> fmt::Result {
    ConstCounter::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn scalar_gauge(enc: &mut DescriptorEncoder, name: &str, help: &str, value: i64) -> fmt::Result {
    ConstGauge::new(value).encode(enc.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

fn counter<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    unit: Option<Unit>,
    help: &str,
    samples: impl IntoIterator<Item = (L, u64)>,
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Counter)?;
    for (labels, value) in samples {
        ConstCounter::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    gauge_with_unit(enc, name, None, help, samples)
}

fn gauge_with_unit<L: EncodeLabelSet>(
    enc: &mut DescriptorEncoder,
    name: &str,
    unit: Option<Unit>,
    help: &str,
    samples: impl IntoIterator<Item = (L, i64)>,
) -> fmt::Result {
    let mut metric = enc.encode_descriptor(name, help, unit.as_ref(), MetricType::Gauge)?;
    for (labels, value) in samples {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The scrape-time collector over the shared balancer and the API's userspace counters.
#[derive(Debug)]
pub struct DatapathCollector {
    balancer: SharedBalancer,
    counters: Arc<UserspaceCounters>,
    options: Options,
    /// The last datapath reading, served when a writer holds the balancer's
    /// lock: a scrape never waits for a create or a purge.
    last: std::sync::Mutex<Snapshot>,
}

impl DatapathCollector {
    pub fn new(datapath: &Datapath, options: Options) -> Self {
        Self {
            balancer: datapath.balancer.clone(),
            counters: datapath.counters.clone(),
            options,
            last: Default::default(),
        }
    }
}

impl Collector for DatapathCollector {
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        // A handler that panicked under the lock poisons it; the balancer
        // itself is still consistent (map writes are single syscalls).
        let fresh = match self.balancer.try_read() {
            Ok(guard) => Some(guard.as_ref().map(|lb| Snapshot::read(lb, self.options)).unwrap_or_default()),
            Err(std::sync::TryLockError::Poisoned(p)) => {
                Some(p.into_inner().as_ref().map(|lb| Snapshot::read(lb, self.options)).unwrap_or_default())
            }
            Err(std::sync::TryLockError::WouldBlock) => None,
        };
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(fresh) = fresh {
            *last = fresh;
        }
        let mut snapshot = last.clone();
        drop(last);
        snapshot.userspace = self.counters.snapshot();
        snapshot.encode(encoder)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exposition of a snapshot, through a prefixed registry as in production.
    fn exposition(snap: &Snapshot) -> String {
        #[derive(Debug)]
        struct Fixed(Snapshot);
        impl Collector for Fixed {
            fn encode(&self, enc: DescriptorEncoder) -> fmt::Result {
                self.0.encode(enc)
            }
        }
        let mut registry = prometheus_client::registry::Registry::with_prefix("weir_agent");
        registry.register_collector(Box::new(Fixed(snap.clone())));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        text
    }

    #[test]
    fn without_a_balancer_only_its_state_is_reported() {
        let text = exposition(&Snapshot::default());
        assert!(text.contains("weir_agent_balancer_initialized 0\n"));
        assert!(text.contains("weir_agent_balancer_attached 0\n"));
        assert!(!text.contains("vip_packets"));
    }

    #[test]
    fn every_counter_half_has_its_own_name() {
        let vip = VipId { addr: "10.0.0.1".parse().unwrap(), port: 80, proto: 6 };
        let all = [
            Stat::Lru,
            Stat::LruMiss,
            Stat::LruFallback,
            Stat::ChDrop,
            Stat::EncapFail,
            Stat::IcmpTooBig,
            Stat::IcmpFwd,
            Stat::NotBalanced,
            Stat::XdpTx,
            Stat::XdpDrop,
            Stat::XdpPass,
            Stat::BadLen,
        ];
        let snap = Snapshot {
            initialized: true,
            attached: false,
            vips: vec![(vip, Counter { v1: 3, v2: 180 })],
            reals: vec![("10.1.0.1".parse().unwrap(), Counter { v1: 2, v2: 120 })],
            health: vec![(vip, true, vec![("10.1.0.1".parse().unwrap(), false)])],
            stats: all
                .iter()
                .enumerate()
                .map(|(i, &s)| (s, Counter { v1: 10 + i as u64, v2: 100 + i as u64 }))
                .collect(),
            cpus: vec![(0, 7), (1, 9)],
            under_flood: Some(false),
            tables: vec![("vips", 16, Some(1)), ("conn_table", 4096, None)],
            map_memory: vec![("weir_ch_rings", 1_052_672)],
            userspace: UserspaceStats { bpf_failed_calls: 4, addr_validation_failed: 5 },
        };
        let text = exposition(&snap);
        for line in [
            "weir_agent_vip_packets_total{address=\"10.0.0.1\",port=\"80\",proto=\"tcp\"} 3",
            "weir_agent_vip_bytes_total{address=\"10.0.0.1\",port=\"80\",proto=\"tcp\"} 180",
            "# UNIT weir_agent_vip_bytes bytes",
            "weir_agent_real_packets_total{address=\"10.1.0.1\"} 2",
            "weir_agent_real_bytes_total{address=\"10.1.0.1\"} 120",
            "weir_agent_vip_fail_open{address=\"10.0.0.1\",port=\"80\",proto=\"tcp\"} 1",
            "weir_agent_real_healthy{address=\"10.0.0.1\",port=\"80\",proto=\"tcp\",real=\"10.1.0.1\"} 0",
            "weir_agent_vip_matched_packets_total 10",
            "weir_agent_conn_table_misses_total 100",
            "weir_agent_conn_table_tcp_syn_misses_total 11",
            "weir_agent_conn_table_tcp_non_syn_misses_total 101",
            "weir_agent_conn_table_fallback_hits_total 12",
            "weir_agent_ring_empty_slot_drops_total 13",
            "weir_agent_ring_unknown_real_drops_total 103",
            "weir_agent_encap_failures_total 14",
            "weir_agent_encap_unsupported_family_drops_total 104",
            "weir_agent_too_big_ipv4_total 15",
            "weir_agent_too_big_ipv6_total 105",
            "weir_agent_icmp_ipv4_forwarded_total 16",
            "weir_agent_icmp_ipv6_forwarded_total 106",
            "weir_agent_ipv4_options_passed_total 17",
            "weir_agent_fragments_passed_total 107",
            "weir_agent_bad_length_ipv4_drops_total 21",
            "weir_agent_bad_length_ipv6_drops_total 111",
            "weir_agent_xdp_packets_total{verdict=\"tx\"} 18",
            "weir_agent_xdp_packets_total{verdict=\"drop\"} 19",
            "weir_agent_xdp_packets_total{verdict=\"pass\"} 20",
            "weir_agent_xdp_bytes_total{verdict=\"tx\"} 108",
            "weir_agent_cpu_packets_total{cpu=\"1\"} 9",
            "weir_agent_under_flood 0",
            "weir_agent_table_capacity{table=\"conn_table\"} 4096",
            "weir_agent_table_entries{table=\"vips\"} 1",
            "# TYPE weir_agent_conn_table_misses counter",
            "weir_agent_bpf_failed_calls_total 4",
            "weir_agent_address_validation_failures_total 5",
            "weir_agent_bpf_map_memory_bytes{map=\"weir_ch_rings\"} 1052672",
            "# UNIT weir_agent_bpf_map_memory_bytes bytes",
        ] {
            assert!(text.contains(&format!("{line}\n")), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("table_entries{table=\"conn_table\"}"), "unknown usage is left out");
    }
}
