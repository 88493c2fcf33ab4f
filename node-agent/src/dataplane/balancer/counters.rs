//! Counters and map usage, as the stats endpoints and metrics read them.

use weir_ebpf::abi::{self, Stat};

use super::{monotonic_ns, Balancer};
use crate::dataplane::maps;
use crate::dataplane::state::VipId;
use crate::dataplane::stats::Counter;
use crate::{Error, Result};

impl Balancer {
    /// Packets (v1) and L3 bytes (v2) sent to VIP `id`.
    pub fn vip_stats(&self, id: &VipId) -> Result<Counter> {
        let vip_num = self.vip(id)?.vip_num;
        Ok(maps::sum(&self.maps.vip_counter(vip_num)?).into())
    }

    /// Packets (v1) and L3 bytes (v2) sent to the real with `index`.
    pub fn real_stats(&self, index: u32) -> Result<Counter> {
        if index == abi::REAL_NONE || index > self.config.max_reals {
            return Err(Error::invalid(
                "index",
                format!("{index} is not a real index (1..={})", self.config.max_reals),
            ));
        }
        Ok(maps::sum(&self.maps.real_counter(index)?).into())
    }

    /// A global counter, summed over CPUs.
    pub fn stat(&self, stat: Stat) -> Result<Counter> {
        Ok(maps::sum(&self.maps.stat_per_cpu(stat)?).into())
    }

    /// A global counter, one value per possible CPU.
    pub fn stat_per_cpu(&self, stat: Stat) -> Result<Vec<Counter>> {
        Ok(self.maps.stat_per_cpu(stat)?.into_iter().map(Counter::from).collect())
    }

    /// Packets each CPU processed (all verdicts). With `forwarding_cores`
    /// configured, only those CPUs, in that order.
    pub fn per_core_packets(&self) -> Result<Vec<u64>> {
        let per_cpu = self.stat_per_cpu(Stat::XdpTotal)?;
        if self.config.forwarding_cores.is_empty() {
            return Ok(per_cpu.iter().map(|c| c.v1).collect());
        }
        Ok(self.config.forwarding_cores.iter().map(|&cpu| per_cpu.get(cpu as usize).map_or(0, |c| c.v1)).collect())
    }

    /// True when some CPU saw more new connections in its current second
    /// than the flood threshold (new flows then bypass the connection table).
    pub fn under_flood(&self) -> Result<bool> {
        let now = monotonic_ns();
        Ok(self
            .stat_per_cpu(Stat::NewConnRate)?
            .iter()
            .any(|c| c.v1 > abi::MAX_CONN_RATE && now.saturating_sub(c.v2) <= 1_000_000_000))
    }

    /// (max_entries, current entries) of a map by name, for `/stats/bpf-map`.
    pub fn map_usage(&self, name: &str) -> Result<(u32, u32)> {
        let used = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
        match name {
            abi::map::VIPS => Ok((self.config.max_vips, used(self.state.vips.len()))),
            abi::map::REALS => Ok((self.config.max_reals, used(self.state.reals.len()))),
            abi::map::CONNS => Ok((self.config.lru_size, used(self.maps.conn_count()))),
            _ => Err(Error::NotFound { what: format!("map {name}") }),
        }
    }

    /// Kernel memory of each of the balancer's maps, in bytes (the kernel's
    /// `memlock` accounting), by map name.
    pub fn map_memory(&self) -> Result<Vec<(&'static str, u64)>> {
        self.maps.memory()
    }
}
