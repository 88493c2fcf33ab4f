//! Typed access to the balancer's BPF maps: the only module that touches
//! `aya::maps`. Rings are written through a shared memory mapping of the
//! (BPF_F_MMAPABLE) ring array, so changing a VIP's ring costs plain stores
//! instead of one syscall per slot; the mapping covers one ring and lives
//! only while it is written.

use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::{Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, PerCpuValues};
use aya::Ebpf;
use weir_ebpf::abi::{
    self, ConnEntry, ConnKey, GlobalStats, LbCounter, LbCtl, RealDef, Stat, VipFilter, VipKey, VipMeta,
};

use crate::{Error, Result};

pub(crate) struct Maps {
    pub vips: HashMap<MapData, VipKey, VipMeta>,
    pub vip_filter: Array<MapData, VipFilter>,
    pub reals: Array<MapData, RealDef>,
    pub conns: HashMap<MapData, ConnKey, ConnEntry>,
    pub ctl: Array<MapData, LbCtl>,
    pub vip_stats: PerCpuArray<MapData, LbCounter>,
    pub real_stats: PerCpuArray<MapData, LbCounter>,
    pub stats: PerCpuArray<MapData, GlobalStats>,
    pub rings: Rings,
}

impl Maps {
    /// Takes the maps out of a loaded object and checks that their sizes are
    /// `sizes` (name, max_entries): maps adopted from pins keep the sizes they
    /// were created with, and the Balancer indexes them by the configured ones.
    /// `ring_size` is the slots per VIP.
    pub fn take(ebpf: &mut Ebpf, ring_size: u32, sizes: &[(&str, u32)]) -> Result<Self> {
        let maps = Self::take_unchecked(ebpf, ring_size)?;
        for &(name, want) in sizes {
            let data = maps.data(name).ok_or_else(|| Error::NotFound { what: format!("map {name}") })?;
            let have = data.info().map_err(|e| map_err(name, "inspect", e))?.max_entries();
            if have != want {
                return Err(Error::invalid(
                    "config",
                    format!(
                        "the pinned map {name} has {have} entries and this configuration needs {want}; start with \
                         the configuration it was created with, or remove the pinned datapath"
                    ),
                ));
            }
        }
        Ok(maps)
    }

    fn take_unchecked(ebpf: &mut Ebpf, ring_size: u32) -> Result<Self> {
        Ok(Self {
            vips: typed(ebpf, abi::map::VIPS)?,
            vip_filter: typed(ebpf, abi::map::VIP_FILTER)?,
            reals: typed(ebpf, abi::map::REALS)?,
            conns: typed(ebpf, abi::map::CONNS)?,
            ctl: typed(ebpf, abi::map::CTL)?,
            vip_stats: typed(ebpf, abi::map::VIP_STATS)?,
            real_stats: typed(ebpf, abi::map::REAL_STATS)?,
            stats: typed(ebpf, abi::map::STATS)?,
            rings: Rings::map(take(ebpf, abi::map::CH_RINGS)?, ring_size)?,
        })
    }

    /// The file descriptor (in this process) of the map named `name`.
    pub fn fd(&self, name: &str) -> Option<std::os::fd::RawFd> {
        Some(self.data(name)?.fd().as_fd().as_raw_fd())
    }

    /// The map named `name`.
    fn data(&self, name: &str) -> Option<&MapData> {
        Some(match name {
            abi::map::VIPS => IterableMap::map(&self.vips),
            abi::map::VIP_FILTER => IterableMap::map(&self.vip_filter),
            abi::map::REALS => IterableMap::map(&self.reals),
            abi::map::CONNS => IterableMap::map(&self.conns),
            abi::map::CTL => IterableMap::map(&self.ctl),
            abi::map::VIP_STATS => IterableMap::map(&self.vip_stats),
            abi::map::REAL_STATS => IterableMap::map(&self.real_stats),
            abi::map::STATS => IterableMap::map(&self.stats),
            abi::map::CH_RINGS => &self.rings.map,
            _ => return None,
        })
    }

    /// Kernel memory of each map, as the kernel accounts it (`memlock` in
    /// `/proc/self/fdinfo/<fd>`, the map's own `map_mem_usage`): memory the
    /// maps hold whatever this process maps of them.
    pub fn memory(&self) -> Result<Vec<(&'static str, u64)>> {
        abi::map::BALANCER
            .iter()
            .map(|&name| {
                let fd = self.fd(name).ok_or_else(|| Error::NotFound { what: format!("map {name}") })?;
                let path = format!("/proc/self/fdinfo/{fd}");
                let info = std::fs::read_to_string(&path).map_err(|e| Error::system(format!("read {path}"), e))?;
                let memlock = info
                    .lines()
                    .find_map(|line| line.strip_prefix("memlock:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| Error::system(format!("read {path}"), std::io::Error::other("no memlock line")))?;
                Ok((name, memlock))
            })
            .collect()
    }

    /// A counter of a per-CPU array, summed over CPUs.
    pub fn sum(map: &PerCpuArray<MapData, LbCounter>, index: u32, name: &str) -> Result<LbCounter> {
        Ok(sum(&Self::per_cpu(map, index, name)?))
    }
    /// A global counter, one value per possible CPU.
    pub fn stat_per_cpu(&self, stat: Stat) -> Result<Vec<LbCounter>> {
        let values = self.stats.get(&0, 0).map_err(|e| map_err(abi::map::STATS, "read", e))?;
        Ok(values.iter().map(|all| all.get(stat)).collect())
    }

    /// A counter of a per-CPU array, one value per possible CPU.
    pub fn per_cpu(map: &PerCpuArray<MapData, LbCounter>, index: u32, name: &str) -> Result<Vec<LbCounter>> {
        let values = map.get(&index, 0).map_err(|e| map_err(name, "read", e))?;
        Ok(values.iter().copied().collect())
    }
}

/// Sets a per-CPU counter to zero on every CPU (a reused VIP or real index
/// starts from nothing).
pub(crate) fn zero_counter(map: &mut PerCpuArray<MapData, LbCounter>, index: u32, name: &str) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(op, e)| Error::system(op, e))?;
    let zeros =
        PerCpuValues::try_from(vec![LbCounter::default(); cpus]).map_err(|e| Error::system("per-CPU values", e))?;
    map.set(index, zeros, 0).map_err(|e| map_err(name, "reset", e))
}

/// Whether a map operation failed because the key was not there.
pub(crate) fn is_missing(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Whether a map insert failed because the map is full.
pub(crate) fn is_full(err: &MapError) -> bool {
    matches!(err, MapError::SyscallError(e) if e.io_error.raw_os_error() == Some(libc::E2BIG))
}

/// Counters of all CPUs added up.
pub(crate) fn sum(per_cpu: &[LbCounter]) -> LbCounter {
    per_cpu
        .iter()
        .fold(LbCounter::default(), |acc, c| LbCounter { v1: acc.v1.wrapping_add(c.v1), v2: acc.v2.wrapping_add(c.v2) })
}

fn take(ebpf: &mut Ebpf, name: &str) -> Result<Map> {
    ebpf.take_map(name).ok_or_else(|| Error::Bpf {
        op: format!("find map {name}"),
        source: "the balancer object has no such map".into(),
    })
}

fn typed<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = MapError>,
{
    T::try_from(take(ebpf, name)?).map_err(|e| map_err(name, "open", e))
}

pub(crate) fn map_err(name: &str, op: &str, err: MapError) -> Error {
    Error::bpf(format!("{op} map {name}"), err)
}

/// The Maglev rings of every VIP, written through a memory mapping. Slot `s`
/// of VIP `n` is ring slot `g = n * ring_size + s`, the `g`-th u32 of the
/// map's memory (two slots per 8-byte element, see `struct ring_slots`). The
/// kernel reads the same pages, so a store is live at once; an aligned 32-bit
/// store is atomic, so a packet sees the old or the new real of a slot, never
/// a torn value.
///
/// Only the pages of the ring being written are mapped, and only while it is
/// written: the kernel maps every page of a BPF array mapping at once, so a
/// mapping of the whole map (128 MiB at the default sizes) would count in the
/// agent's resident memory for as long as it lived.
pub(crate) struct Rings {
    /// The ring map; its fd is what each write maps.
    map: MapData,
    ring_size: usize,
}

impl Rings {
    fn map(map: Map, ring_size: u32) -> Result<Self> {
        let Map::Array(data) = map else {
            return Err(Error::Bpf {
                op: format!("open map {}", abi::map::CH_RINGS),
                source: "not an array map".into(),
            });
        };
        Ok(Self { map: data, ring_size: ring_size as usize })
    }

    /// Makes the ring of `vip_num` equal to `ring`, storing only the slots
    /// that differ. Returns how many changed.
    pub fn write(&self, vip_num: u32, ring: &[u32]) -> Result<usize> {
        const SLOT: usize = std::mem::size_of::<u32>();
        let fd = self.map.fd().as_fd().as_raw_fd();
        let offset = vip_num as usize * self.ring_size * SLOT;
        // SAFETY: the fd is a BPF_F_MMAPABLE array of max_entries RingSlots
        // (Maps::take checked max_entries against max_vips * ring_size), kept
        // alive by `map`; the range is the ring of one vip_num < max_vips, so
        // it lies inside the map (memmap2 aligns the offset down to a page).
        // The kernel writes nothing to the ring; every access here is atomic.
        let mmap = unsafe { memmap2::MmapOptions::new().offset(offset as u64).len(self.ring_size * SLOT).map_mut(fd) }
            .map_err(|e| Error::system(format!("mmap map {}", abi::map::CH_RINGS), e))?;
        // SAFETY: the mapping holds ring_size u32s at a 4-byte-aligned address
        // (offset is a multiple of 4 and pages are aligned); AtomicU32 has the
        // layout of u32.
        let slots = unsafe { std::slice::from_raw_parts(mmap.as_ptr().cast::<AtomicU32>(), self.ring_size) };
        let mut changed = 0;
        for (slot, &real) in slots.iter().zip(ring) {
            if slot.load(Ordering::Relaxed) != real {
                slot.store(real, Ordering::Relaxed);
                changed += 1;
            }
        }
        Ok(changed)
    }
}
