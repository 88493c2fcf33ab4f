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

/// The balancer's maps, each behind the verbs the Balancer needs. Map
/// errors become [`Error`]s here, named after the map and the operation.
pub(crate) struct Maps {
    vips: HashMap<MapData, VipKey, VipMeta>,
    vip_filter: Array<MapData, VipFilter>,
    reals: Array<MapData, RealDef>,
    conns: HashMap<MapData, ConnKey, ConnEntry>,
    ctl: Array<MapData, LbCtl>,
    vip_stats: PerCpuArray<MapData, LbCounter>,
    real_stats: PerCpuArray<MapData, LbCounter>,
    stats: PerCpuArray<MapData, GlobalStats>,
    rings: Rings,
    /// The VIP table's size: what a full table reports as its limit.
    max_vips: u32,
}

impl Maps {
    /// Takes the maps out of a loaded object and checks that their sizes are
    /// `sizes` (name, max_entries): maps adopted from pins keep the sizes they
    /// were created with, and the Balancer indexes them by the configured ones.
    /// `ring_size` is the slots per VIP.
    pub fn take(ebpf: &mut Ebpf, ring_size: u32, sizes: &[(&str, u32)]) -> Result<Self> {
        let maps = Self::take_unchecked(ebpf, ring_size)?;
        let mut max_vips = 0;
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
            if name == abi::map::VIPS {
                max_vips = have;
            }
        }
        Ok(Self { max_vips, ..maps })
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
            max_vips: 0,
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

    // ---- VIPs ----

    /// The keys of every VIP in the map.
    pub fn vip_keys(&self) -> Vec<VipKey> {
        self.vips.keys().filter_map(|k| k.ok()).collect()
    }

    /// Adds or replaces a VIP; a full table is [`Error::SpaceExhausted`].
    pub fn put_vip(&mut self, key: VipKey, meta: VipMeta) -> Result<()> {
        self.vips.insert(key, meta, 0).map_err(|e| {
            if is_full(&e) {
                Error::SpaceExhausted { what: "VIPs", limit: self.max_vips }
            } else {
                map_err(abi::map::VIPS, "write", e)
            }
        })
    }

    pub fn del_vip(&mut self, key: &VipKey) -> Result<()> {
        self.vips.remove(key).map_err(|e| map_err(abi::map::VIPS, "delete from", e))
    }

    /// Writes one bucket of the VIP address filter.
    pub fn put_filter(&mut self, bucket: u32, filter: VipFilter) -> Result<()> {
        self.vip_filter.set(bucket, filter, 0).map_err(|e| map_err(abi::map::VIP_FILTER, "write", e))
    }

    /// Makes the ring of `vip_num` equal to `ring` (see [`Rings::write`]).
    pub fn put_ring(&self, vip_num: u32, ring: &[u32]) -> Result<usize> {
        self.rings.write(vip_num, ring)
    }

    /// Packets and bytes of VIP `vip_num`, one value per possible CPU.
    pub fn vip_counter(&self, vip_num: u32) -> Result<Vec<LbCounter>> {
        per_cpu(&self.vip_stats, vip_num, abi::map::VIP_STATS)
    }

    /// Zeroes VIP `vip_num`'s counter (a reused index starts from nothing).
    pub fn clear_vip_counter(&mut self, vip_num: u32) -> Result<()> {
        zero_counter(&mut self.vip_stats, vip_num, abi::map::VIP_STATS)
    }

    // ---- Reals ----

    pub fn put_real(&mut self, index: u32, real: RealDef) -> Result<()> {
        self.reals.set(index, real, 0).map_err(|e| map_err(abi::map::REALS, "write", e))
    }

    pub fn real(&self, index: u32) -> Result<RealDef> {
        self.reals.get(&index, 0).map_err(|e| map_err(abi::map::REALS, "read", e))
    }

    /// Packets and bytes of the real at `index`, one value per possible CPU.
    pub fn real_counter(&self, index: u32) -> Result<Vec<LbCounter>> {
        per_cpu(&self.real_stats, index, abi::map::REAL_STATS)
    }

    /// Zeroes the real `index`'s counter (a reused index starts from nothing).
    pub fn clear_real_counter(&mut self, index: u32) -> Result<()> {
        zero_counter(&mut self.real_stats, index, abi::map::REAL_STATS)
    }

    // ---- Control, counters ----

    pub fn put_ctl(&mut self, ctl: LbCtl) -> Result<()> {
        self.ctl.set(0, ctl, 0).map_err(|e| map_err(abi::map::CTL, "write", e))
    }

    /// A global counter, one value per possible CPU.
    pub fn stat_per_cpu(&self, stat: Stat) -> Result<Vec<LbCounter>> {
        let values = self.stats.get(&0, 0).map_err(|e| map_err(abi::map::STATS, "read", e))?;
        Ok(values.iter().map(|all| all.get(stat)).collect())
    }

    // ---- Connection table ----

    /// The entry of `key`, if the table has one.
    pub fn conn(&self, key: &ConnKey) -> Result<Option<ConnEntry>> {
        match self.conns.get(key, 0) {
            Ok(entry) => Ok(Some(entry)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(map_err(abi::map::CONNS, "read", e)),
        }
    }

    /// Deletes the entry of `key`; returns whether there was one.
    pub fn del_conn(&mut self, key: &ConnKey) -> Result<bool> {
        match self.conns.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if is_missing(&e) => Ok(false),
            Err(e) => Err(map_err(abi::map::CONNS, "delete from", e)),
        }
    }

    /// Entries in the table now (a walk of it: one syscall per entry).
    pub fn conn_count(&self) -> usize {
        self.conns.keys().count()
    }

    /// Empties the table (entries evicted meanwhile are simply gone).
    pub fn clear_conns(&mut self) {
        let keys: Vec<_> = self.conns.keys().filter_map(|k| k.ok()).collect();
        for key in keys {
            let _ = self.conns.remove(&key);
        }
    }

    /// A handle on the table of its own, for walks that need neither `self`
    /// nor its caller's lock.
    pub fn conn_table(&self) -> Result<ConnTable> {
        let fd = self.fd(abi::map::CONNS).ok_or_else(|| Error::NotFound { what: "map weir_conns".into() })?;
        // SAFETY: `fd` is the table's, open while `self` lives; it is only borrowed to be duplicated.
        let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| Error::bpf("duplicate the fd of weir_conns", e))?;
        let open = |e| map_err(abi::map::CONNS, "open", e);
        let data = MapData::from_fd(owned).map_err(open)?;
        let table = Map::from_map_data(data).map_err(open)?;
        Ok(ConnTable(table.try_into().map_err(open)?))
    }
}

/// The connection table through a handle of its own ([`Maps::conn_table`]).
pub(crate) struct ConnTable(HashMap<MapData, ConnKey, ConnEntry>);

impl ConnTable {
    /// The keys of the entries of the VIP with `conn_tag`: a walk of the whole
    /// table. An entry the datapath evicts during the walk may make the
    /// kernel restart it, so a key may be listed twice.
    pub fn keys_tagged(&self, conn_tag: u32) -> Vec<ConnKey> {
        self.0.keys().filter_map(|k| k.ok()).filter(|k| k.conn_tag == conn_tag).collect()
    }
}

/// A counter of a per-CPU array, one value per possible CPU.
fn per_cpu(map: &PerCpuArray<MapData, LbCounter>, index: u32, name: &str) -> Result<Vec<LbCounter>> {
    let values = map.get(&index, 0).map_err(|e| map_err(name, "read", e))?;
    Ok(values.iter().copied().collect())
}

/// Sets a per-CPU counter to zero on every CPU.
fn zero_counter(map: &mut PerCpuArray<MapData, LbCounter>, index: u32, name: &str) -> Result<()> {
    let cpus = aya::util::nr_cpus().map_err(|(op, e)| Error::system(op, e))?;
    let zeros =
        PerCpuValues::try_from(vec![LbCounter::default(); cpus]).map_err(|e| Error::system("per-CPU values", e))?;
    map.set(index, zeros, 0).map_err(|e| map_err(name, "reset", e))
}

/// Whether a map operation failed because the key was not there.
fn is_missing(err: &MapError) -> bool {
    match err {
        MapError::KeyNotFound => true,
        MapError::SyscallError(e) => e.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

/// Whether a map insert failed because the map is full.
fn is_full(err: &MapError) -> bool {
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

fn map_err(name: &str, op: &str, err: MapError) -> Error {
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
    fn write(&self, vip_num: u32, ring: &[u32]) -> Result<usize> {
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
