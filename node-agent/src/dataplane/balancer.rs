//! The Balancer: the one API through which anything changes the datapath.
//! REST handlers and the cluster sync both call it; nothing else writes the
//! BPF maps.
//!
//! It loads the balancer XDP program (attached, or in testing mode only
//! loaded), keeps the control-plane model ([`State`]), and applies every
//! change to the maps in an order that never exposes a half-made change to
//! packets: a real is written before any ring slot points at it, a VIP's ring
//! before the VIP is visible, and the reverse on removal.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};
use weir_abi::{Protocol, RealFlags, VipFlags};
use weir_ebpf::abi::{self, LbCtl, RealDef, Stat, VipFilter, VipKey, VipMeta};

use super::config::{self, BalancerConfig};
use super::maglev::{self, Endpoint, HashFunction};
use super::maps::{self, map_err, Maps};
use super::pin;
pub use super::state::VipId;
use super::state::{Real, State, Vip};
use super::stats::Counter;
use crate::{Error, Result};

/// A VIP to add.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VipSpec {
    pub id: VipId,
    pub flags: u32,
}

/// A VIP as the Balancer reports it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VipInfo {
    pub id: VipId,
    pub flags: u32,
    pub hash_function: HashFunction,
    /// Index of the VIP's ring and counters.
    pub vip_num: u32,
    pub reals: usize,
}

/// A real of a VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RealSpec {
    pub addr: IpAddr,
    /// Relative weight; 0 drains the real (existing flows stay, new ones avoid it).
    pub weight: u32,
    /// Katran real flags: REAL_F_LOCAL_REAL; REAL_F_IPV6 is implied by the address.
    pub flags: u8,
}

/// What a batch does with its reals (katran-server's `action`: 0 add, 1 delete).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RealAction {
    /// Add the reals, or update the weight and flags of those already there.
    Add,
    Delete,
}

/// A VIP's connection-table entries, listed for [`Balancer::purge_conns`].
pub struct ConnPurge {
    id: VipId,
    tag: u32,
    table: aya::maps::HashMap<aya::maps::MapData, abi::ConnKey, abi::ConnEntry>,
}

impl ConnPurge {
    /// The VIP's entries now: a walk of the whole table (no lock needed). An
    /// entry the datapath evicts during the walk may make the kernel restart
    /// it; a key listed twice is deleted (and counted) once.
    pub fn keys(&self) -> Vec<abi::ConnKey> {
        self.table.keys().filter_map(|k| k.ok()).filter(|k| k.conn_tag == self.tag).collect()
    }
}

pub struct Balancer {
    config: BalancerConfig,
    /// Owns the program (and, when adopted, its link).
    ebpf: Ebpf,
    maps: Maps,
    state: State,
    /// The pinned attachment; dropping it leaves the program attached.
    link: Option<PinnedLink>,
    pin_dir: Option<PathBuf>,
    state_file: Option<PathBuf>,
    /// The main interface's index in the namespace the Balancer was created
    /// in (0 in testing mode): what its link must stay attached to.
    ifindex: u32,
}

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Balancer {
    /// Loads the datapath and, unless testing, attaches it to the main
    /// interface. When a pinned datapath of the same interface exists (an
    /// earlier agent stopped without cleanup), adopts it: its maps are reused
    /// as they are, the new program replaces the old one atomically on the same
    /// link, and the saved state is re-applied, so forwarding never stops.
    ///
    /// "The same interface" is this network namespace's interface of that
    /// name (the thread's namespace): pins and state are keyed by the
    /// namespace's cookie (see [`pin`]), and a pinned link is adopted only
    /// while it is attached to that interface; a defunct or foreign one is
    /// unpinned and the program attached anew.
    pub fn new(config: BalancerConfig) -> Result<Self> {
        validate_config(&config)?;
        // Testing mode never pins: its maps are private to this Balancer, so
        // tests (and REST "testing" balancers) cannot see each other's state.
        let pins = match &config.pin_root {
            Some(root) if !config.testing => {
                pin::ensure_bpffs(root)?;
                let netns = pin::netns_cookie()?;
                let iface = &config.main_interface;
                Some((pin::balancer_dir(root, netns, iface), pin::state_file(&config.state_dir, netns, iface)))
            }
            _ => None,
        };
        let (pin_dir, state_file) = pins.unzip();
        let link_path = pin_dir.as_ref().map(|dir| dir.join(pin::LINK));
        let adopting = match &link_path {
            Some(path) => adoptable(path, &config.main_interface)?,
            None => false,
        };
        let saved = match (&state_file, &pin_dir, adopting) {
            (Some(path), Some(dir), true) => State::load(&config, path, dir)?,
            _ => None,
        };
        // Maps of another layout (or of an unknown one: no state file) are
        // never adopted: fresh ones take their place, and the program is
        // still swapped on the same link. The configuration is kept.
        let set_aside = match (&pin_dir, adopting, &saved) {
            (Some(_), true, Some((_, layout))) if *layout == abi::PIN_LAYOUT => None,
            (Some(dir), true, _) => {
                tracing::warn!(
                    iface = %config.main_interface,
                    pinned = ?saved.as_ref().map(|(_, layout)| layout),
                    layout = abi::PIN_LAYOUT,
                    "the pinned datapath's maps are of another layout: replacing them (connections and counters \
                     start afresh, VIPs and reals are kept, the program is swapped on the same link)"
                );
                Some(pin::SetAside::maps(dir, state_file.as_deref())?)
            }
            _ => None,
        };
        let saved = saved.map(|(state, _)| state);

        // The sized maps; adopted pins are checked against the same sizes.
        let sizes = [
            (abi::map::VIPS, config.max_vips),
            (abi::map::REALS, config.max_reals + 1),
            (abi::map::CH_RINGS, abi::RingSlots::elements(config.max_vips * config.ch_ring_size)),
            (abi::map::CONNS, conn_entries(config.lru_size)?),
            (abi::map::VIP_STATS, config.max_vips),
            (abi::map::REAL_STATS, config.max_reals + 1),
        ];
        let mut loader = EbpfLoader::new();
        loader.override_global(abi::global::RING_SIZE, &config.ch_ring_size, true).override_global(
            abi::global::MTU,
            &config.mtu,
            true,
        );
        for (name, entries) in sizes {
            loader.map_max_entries(name, entries);
        }
        // Without a pin directory the maps must still be private to this
        // Balancer (see EphemeralPins); it lives until the maps are loaded.
        let ephemeral = match &pin_dir {
            Some(_) => None,
            None => Some(pin::EphemeralPins::new()?),
        };
        let dir = pin_dir.as_deref().or(ephemeral.as_ref().map(|e| e.path())).expect("one of the two");
        std::fs::create_dir_all(dir).map_err(|e| Error::system(format!("create {}", dir.display()), e))?;
        loader.default_map_pin_directory(dir);
        let mut ebpf = loader.load(weir_ebpf::BALANCER).map_err(|e| Error::bpf("load the balancer object", e))?;
        drop(ephemeral);
        program_mut(&mut ebpf)?.load().map_err(|e| Error::bpf("load the balancer program (verifier)", e))?;
        // The query program shares the object's maps; it is never attached.
        program_named_mut(&mut ebpf, weir_ebpf::BALANCER_DRY_PROGRAM)?
            .load()
            .map_err(|e| Error::bpf("load the balancer's query program (verifier)", e))?;
        let maps = Maps::take(&mut ebpf, config.ch_ring_size, &sizes)?;

        let mut balancer = Self {
            state: State { mac: config.default_mac, ..State::default() },
            config,
            ebpf,
            maps,
            link: None,
            pin_dir,
            state_file,
            ifindex: 0,
        };
        if let Err(e) = balancer.come_up(saved, adopting, link_path) {
            // A pinned datapath this Balancer adopted is still another's (the
            // running one's, on `/lb/reload`): dropping the half-built
            // Balancer must leave it, pins and state file, as it was.
            if adopting {
                balancer.config.cleanup_on_shutdown = false;
            }
            return Err(e);
        }
        if let Some(set_aside) = set_aside {
            set_aside.commit();
        }
        Ok(balancer)
    }

    /// The part of [`Self::new`] after loading: the maps' contents, then the
    /// attachment.
    fn come_up(&mut self, saved: Option<State>, adopting: bool, link_path: Option<PathBuf>) -> Result<()> {
        self.restore(saved)?;
        if !self.config.testing {
            self.ifindex = pin::if_index(&self.config.main_interface);
            self.attach(adopting, link_path.expect("pinning is required to attach"))?;
        }
        Ok(())
    }

    /// Makes the maps match `saved` (an adopted datapath) or an empty
    /// configuration (a fresh start, or pinned maps without a saved state).
    /// The default MAC is the configured one either way: the configuration
    /// (e.g. a corrected `--default-mac`) is what this Balancer was asked for.
    fn restore(&mut self, saved: Option<State>) -> Result<()> {
        let target = match saved {
            Some(saved) => {
                if saved.mac != self.config.default_mac {
                    tracing::info!(
                        saved = ?saved.mac,
                        configured = ?self.config.default_mac,
                        "adopting with the configured default MAC"
                    );
                }
                State { mac: self.config.default_mac, ..saved }
            }
            None => {
                // Without the saved tags, pinned entries could alias new VIPs.
                self.clear_conns();
                State { mac: self.config.default_mac, ..State::default() }
            }
        };
        // VIPs in the maps but not in the target go first (stale pins).
        let stale: Vec<VipKey> = self
            .maps
            .vips
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| !target.vips.values().any(|v| vip_key(&v.id) == *k))
            .collect();
        for key in stale {
            self.maps.vips.remove(&key).map_err(|e| map_err(abi::map::VIPS, "delete from", e))?;
        }
        for real in target.reals.values() {
            self.write_real(real)?;
        }
        for vip in target.vips.values() {
            self.maps.rings.write(vip.vip_num, &ring_of(vip, &target, self.config.ch_ring_size))?;
            self.write_vip_meta(vip)?;
        }
        self.state = target;
        for bucket in 0..abi::VIP_FILTER_SIZE {
            self.write_filter(bucket)?;
        }
        self.write_mac(self.state.mac)?;
        self.save()
    }

    fn attach(&mut self, adopting: bool, link_path: PathBuf) -> Result<()> {
        let iface = self.config.main_interface.clone();
        let mode = self.config.attach_mode;
        let program = program_mut(&mut self.ebpf)?;
        if adopting {
            let pinned =
                PinnedLink::from_pin(&link_path).map_err(|e| Error::bpf(format!("open {}", link_path.display()), e))?;
            let link =
                XdpLink::try_from(FdLink::from(pinned)).map_err(|e| Error::bpf("adopt the pinned XDP link", e))?;
            program.attach_to_link(link).map_err(|e| Error::bpf(format!("replace the program on {iface}"), e))?;
            tracing::info!(%iface, "adopted the pinned datapath");
            return Ok(());
        }
        let id = program.attach(&iface, mode.xdp_mode()).map_err(|e| match e {
            aya::programs::ProgramError::UnknownInterface { .. } => {
                Error::invalid("main_interface", format!("no interface named {iface:?}"))
            }
            aya::programs::ProgramError::SyscallError(ref sys) if sys.io_error.raw_os_error() == Some(libc::EBUSY) => {
                Error::bpf(
                    format!(
                        "attach XDP to {iface} in {mode:?} mode: another XDP program is attached there (one \
                         pinned by an agent of the layout before per-namespace pins? see docs/upgrading.md)"
                    ),
                    e,
                )
            }
            e => Error::bpf(format!("attach XDP to {iface} in {mode:?} mode"), e),
        })?;
        let link = program.take_link(id).map_err(|e| Error::bpf("take the XDP link", e))?;
        let fd_link = FdLink::try_from(link).map_err(|e| Error::bpf("pin the XDP link (needs bpf_link support)", e))?;
        self.link = Some(fd_link.pin(&link_path).map_err(|e| Error::bpf(format!("pin {}", link_path.display()), e))?);
        tracing::info!(%iface, ?mode, "attached the balancer");
        Ok(())
    }

    pub fn config(&self) -> &BalancerConfig {
        &self.config
    }

    /// Whether the program is attached to its interface now, as the kernel
    /// says: its pinned link is still bound to the interface it was attached
    /// to, in the Balancer's namespace, whatever the caller's (false once the
    /// interface went away or the link was detached; always false in testing
    /// mode).
    pub fn is_attached(&self) -> bool {
        let Some(dir) = self.pin_dir.as_ref().filter(|_| !self.config.testing) else {
            return false;
        };
        match pin::xdp_link_ifindex(&dir.join(pin::LINK)) {
            Ok(ifindex) => ifindex != 0 && ifindex == self.ifindex,
            Err(e) => {
                tracing::debug!(error = %e, "cannot read the XDP link");
                false
            }
        }
    }

    // ---- VIPs ----

    pub fn add_vip(&mut self, spec: VipSpec) -> Result<()> {
        validate_vip_id(&spec.id)?;
        validate_vip_flags(spec.flags)?;
        if self.state.vips.contains_key(&spec.id) {
            return Err(Error::AlreadyExists { what: format!("VIP {}", spec.id) });
        }
        let vip_num = self
            .state
            .free_vip_num(self.config.max_vips)
            .ok_or(Error::SpaceExhausted { what: "VIPs", limit: self.config.max_vips })?;
        let conn_tag = self.state.take_conn_tag();
        let vip = Vip {
            id: spec.id,
            vip_num,
            conn_tag,
            flags: spec.flags,
            hash: self.config.hash_function,
            reals: BTreeMap::new(),
        };
        // A reused vip_num starts with an empty ring and zeroed counters.
        self.maps.rings.write(vip_num, &vec![abi::REAL_NONE; self.config.ch_ring_size as usize])?;
        maps::zero_counter(&mut self.maps.vip_stats, vip_num, abi::map::VIP_STATS)?;
        self.write_vip_meta(&vip)?;
        self.state.vips.insert(spec.id, vip);
        self.write_filter(abi::vip_filter_bucket(spec.id.addr))?;
        self.save()
    }

    pub fn del_vip(&mut self, id: &VipId) -> Result<()> {
        let vip = self.vip(id)?.clone();
        self.state.vips.remove(id);
        self.write_filter(abi::vip_filter_bucket(id.addr))?;
        self.maps.vips.remove(&vip_key(id)).map_err(|e| map_err(abi::map::VIPS, "delete from", e))?;
        self.maps.rings.write(vip.vip_num, &vec![abi::REAL_NONE; self.config.ch_ring_size as usize])?;
        self.release_reals(vip.reals.keys().copied());
        self.save()
    }

    pub fn vips(&self) -> Vec<VipInfo> {
        self.state.vips.values().map(vip_info).collect()
    }

    pub fn vip_info(&self, id: &VipId) -> Result<VipInfo> {
        self.vip(id).map(vip_info)
    }

    /// Sets (`set`) or clears the VIP flag bits in `flags`.
    pub fn modify_vip_flags(&mut self, id: &VipId, flags: u32, set: bool) -> Result<()> {
        let current = self.vip(id)?.flags;
        let next = if set { current | flags } else { current & !flags };
        validate_vip_flags(next)?;
        let vip = self.state.vips.get_mut(id).expect("checked above");
        vip.flags = next;
        let vip = vip.clone();
        self.write_vip_meta(&vip)?;
        self.save()
    }

    pub fn change_hash_function(&mut self, id: &VipId, hash: HashFunction) -> Result<()> {
        self.vip(id)?;
        self.state.vips.get_mut(id).expect("checked above").hash = hash;
        self.rebuild_ring(id)?;
        self.save()
    }

    // ---- Reals ----

    pub fn add_real(&mut self, id: &VipId, real: RealSpec) -> Result<()> {
        self.modify_reals(id, RealAction::Add, &[real])
    }

    pub fn del_real(&mut self, id: &VipId, addr: IpAddr) -> Result<()> {
        if !self.vip(id)?.reals.contains_key(&addr) {
            return Err(Error::NotFound { what: format!("real {addr} of VIP {id}") });
        }
        self.modify_reals(id, RealAction::Delete, &[RealSpec { addr, weight: 0, flags: 0 }])
    }

    /// Adds, updates or deletes many reals of a VIP with one ring computation.
    /// All or nothing: the batch is checked whole before anything changes.
    /// Deleting a real the VIP does not have is not an error (as in Katran).
    pub fn modify_reals(&mut self, id: &VipId, action: RealAction, reals: &[RealSpec]) -> Result<()> {
        let vip = self.vip(id)?;
        let mut seen = BTreeSet::new();
        for real in reals {
            if !seen.insert(real.addr) {
                return Err(Error::invalid("reals", format!("{} appears twice in one batch", real.addr)));
            }
            if action == RealAction::Add {
                validate_real(id, real)?;
            }
        }
        match action {
            RealAction::Add => {
                let new: Vec<&RealSpec> = reals.iter().filter(|r| !self.state.reals.contains_key(&r.addr)).collect();
                let indices = self
                    .state
                    .free_real_indices(self.config.max_reals, new.len())
                    .ok_or(Error::SpaceExhausted { what: "reals", limit: self.config.max_reals })?;
                let allocated: Vec<Real> = new
                    .iter()
                    .zip(indices)
                    .map(|(real, index)| Real { addr: real.addr, index, flags: real.flags })
                    .collect();
                // Reals first: no ring slot may point at an index before it holds its real.
                for real in &allocated {
                    self.write_real(real)?;
                    maps::zero_counter(&mut self.maps.real_stats, real.index, abi::map::REAL_STATS)?;
                    self.state.reals.insert(real.addr, real.clone());
                }
                for spec in reals {
                    let known = self.state.reals.get_mut(&spec.addr).expect("allocated above");
                    if known.flags != spec.flags {
                        known.flags = spec.flags;
                        let known = known.clone();
                        self.write_real(&known)?;
                    }
                }
                let vip = self.state.vips.get_mut(id).expect("checked above");
                vip.reals.extend(reals.iter().map(|r| (r.addr, r.weight)));
                self.rebuild_ring(id)?;
            }
            RealAction::Delete => {
                let gone: Vec<IpAddr> = reals.iter().map(|r| r.addr).filter(|a| vip.reals.contains_key(a)).collect();
                let vip = self.state.vips.get_mut(id).expect("checked above");
                for addr in &gone {
                    vip.reals.remove(addr);
                }
                // The ring stops pointing at them before their indices are freed.
                self.rebuild_ring(id)?;
                self.release_reals(gone.into_iter());
            }
        }
        self.save()
    }

    /// The reals of a VIP, by address.
    pub fn reals(&self, id: &VipId) -> Result<Vec<RealSpec>> {
        let vip = self.vip(id)?;
        Ok(vip
            .reals
            .iter()
            .map(|(addr, weight)| RealSpec { addr: *addr, weight: *weight, flags: self.state.reals[addr].flags })
            .collect())
    }

    /// The datapath index of the real at `addr`, if any VIP uses it.
    pub fn real_index(&self, addr: IpAddr) -> Option<u32> {
        self.state.reals.get(&addr).map(|r| r.index)
    }

    /// Sets (`set`) or clears real flag bits. Only REAL_F_LOCAL_REAL can be
    /// changed; REAL_F_IPV6 follows the address.
    pub fn modify_real_flags(&mut self, addr: IpAddr, flags: u8, set: bool) -> Result<()> {
        validate_real_flags(addr, flags)?;
        let real = self.state.reals.get_mut(&addr).ok_or_else(|| Error::NotFound { what: format!("real {addr}") })?;
        real.flags = if set { real.flags | flags } else { real.flags & !flags } & !abi::REAL_F_IPV6;
        let real = real.clone();
        self.write_real(&real)?;
        self.save()
    }

    // ---- MAC, connection table ----

    pub fn default_mac(&self) -> [u8; 6] {
        self.state.mac
    }

    pub fn set_default_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        self.write_mac(mac)?;
        self.state.mac = mac;
        self.save()
    }

    /// Deletes the connection-table entry of the flow from `src:src_port` to
    /// VIP `id`. Returns whether there was one.
    pub fn delete_conn(&mut self, id: &VipId, src: IpAddr, src_port: u16) -> Result<bool> {
        let vip = self.vip(id)?;
        if src.is_ipv6() != id.addr.is_ipv6() {
            return Err(Error::bad_address("src_ip", format!("{src} is not of the VIP's address family")));
        }
        let port_hash = VipFlags::from_bits_retain(vip.flags) & VipFlags::PORT_HASH;
        if id.port == 0 && !port_hash.is_empty() {
            // Such entries are keyed by the packet's destination port, which
            // (VIP, source address, source port) does not name.
            return Err(Error::invalid(
                "dst_vip",
                format!(
                    "VIP {id} is port-less with {}: its flows are keyed by destination port, which this request \
                     does not name; purge the VIP's entries instead",
                    port_hash
                ),
            ));
        }
        let key = super::flow::conn_key(vip, src, src_port, id.port);
        match self.maps.conns.remove(&key) {
            Ok(()) => Ok(true),
            Err(e) if maps::is_missing(&e) => Ok(false),
            Err(e) => Err(map_err(abi::map::CONNS, "delete from", e)),
        }
    }

    /// Lists the connection-table entries of VIP `id` for a purge, through a
    /// handle on the table of its own: the listing (one syscall per entry of
    /// the whole table, seconds for millions) needs neither `self` nor the
    /// caller's lock. [`Self::purge_conns`] then deletes them in chunks, so a
    /// caller that takes its lock per chunk lets other calls interleave.
    pub fn conn_purge(&self, id: &VipId) -> Result<ConnPurge> {
        let tag = self.vip(id)?.conn_tag;
        let fd = self.maps.fd(abi::map::CONNS).ok_or_else(|| Error::NotFound { what: "map weir_conns".into() })?;
        // SAFETY: `fd` is the table's, open while `self` lives; it is only borrowed to be duplicated.
        let owned = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|e| Error::bpf("duplicate the fd of weir_conns", e))?;
        let open = |e| map_err(abi::map::CONNS, "open", e);
        let data = aya::maps::MapData::from_fd(owned).map_err(open)?;
        let table = aya::maps::Map::from_map_data(data).map_err(open)?;
        let table: aya::maps::HashMap<_, abi::ConnKey, abi::ConnEntry> = table.try_into().map_err(open)?;
        Ok(ConnPurge { id: *id, tag, table })
    }

    /// Deletes every connection-table entry of VIP `id` in one go; returns
    /// how many. (The API purges in chunks instead: [`Self::conn_purge`].)
    pub fn purge_vip_conns(&mut self, id: &VipId) -> Result<u64> {
        let purge = self.conn_purge(id)?;
        let keys = purge.keys();
        self.purge_conns(&purge, &keys)
    }

    /// Deletes `keys` (of `purge`'s listing) from the connection table;
    /// returns how many were there. 404 when the VIP was deleted since the
    /// listing (its entries went with it, or belong to a new VIP now).
    pub fn purge_conns(&mut self, purge: &ConnPurge, keys: &[abi::ConnKey]) -> Result<u64> {
        if self.vip(&purge.id)?.conn_tag != purge.tag {
            return Err(Error::NotFound { what: format!("VIP {} (deleted during the purge)", purge.id) });
        }
        let mut deleted = 0;
        for key in keys {
            // An entry may be evicted between listing and deleting: not an error.
            if self.maps.conns.remove(key).is_ok() {
                deleted += 1;
            }
        }
        Ok(deleted)
    }

    // ---- Counters ----

    /// Packets (v1) and L3 bytes (v2) sent to VIP `id`.
    pub fn vip_stats(&self, id: &VipId) -> Result<Counter> {
        let vip_num = self.vip(id)?.vip_num;
        Maps::sum(&self.maps.vip_stats, vip_num, abi::map::VIP_STATS).map(Counter::from)
    }

    /// Packets (v1) and L3 bytes (v2) sent to the real with `index`.
    pub fn real_stats(&self, index: u32) -> Result<Counter> {
        if index == abi::REAL_NONE || index > self.config.max_reals {
            return Err(Error::invalid(
                "index",
                format!("{index} is not a real index (1..={})", self.config.max_reals),
            ));
        }
        Maps::sum(&self.maps.real_stats, index, abi::map::REAL_STATS).map(Counter::from)
    }

    /// A global counter, summed over CPUs.
    pub fn stat(&self, stat: Stat) -> Result<Counter> {
        Ok(super::maps::sum(&self.maps.stat_per_cpu(stat)?).into())
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
            abi::map::CONNS => Ok((self.config.lru_size, used(self.maps.conns.keys().count()))),
            _ => Err(Error::NotFound { what: format!("map {name}") }),
        }
    }

    /// Kernel memory of each of the balancer's maps, in bytes (the kernel's
    /// `memlock` accounting), by map name.
    pub fn map_memory(&self) -> Result<Vec<(&'static str, u64)>> {
        self.maps.memory()
    }

    // ---- Test runs ----

    /// Runs one frame through the balancer program (BPF_PROG_TEST_RUN).
    /// This is the real program on the real maps: counters count it and a
    /// miss inserts into the connection table, as a live packet would.
    pub fn simulate(&self, frame: &[u8]) -> Result<super::flow::Simulated> {
        super::flow::simulate(program(&self.ebpf)?, frame)
    }

    /// The real a new connection of `flow` goes to (katran's
    /// `getRealForFlow`, whose simulator builds a SYN): a TCP SYN or a UDP
    /// datagram of the flow run through the query program, the live
    /// pipeline made dry. Changes nothing: no counter counts it and the
    /// connection table is neither read nor written. `None` when the flow is
    /// not for a VIP or the VIP has no real for it.
    pub fn real_for_flow(&self, flow: &super::flow::Flow) -> Result<Option<IpAddr>> {
        super::flow::real_for_flow(program_named(&self.ebpf, weir_ebpf::BALANCER_DRY_PROGRAM)?, flow)
    }

    /// The real an existing connection of `flow` goes to: the real its
    /// connection-table entry names, or `None` when it has none the datapath
    /// would honour (no entry, an expired UDP entry, a NO_LRU VIP, not a VIP;
    /// its next packet would then take [`Self::real_for_flow`]'s real).
    ///
    /// A read from user space, on purpose: a lookup by a BPF program marks an
    /// LRU entry as used (it then survives eviction longer), while the
    /// syscall's lookup does not, so this changes nothing. The key is shaped
    /// by [`super::flow::conn_key`], the Rust mirror of the program's.
    pub fn existing_real_for_flow(&self, flow: &super::flow::Flow) -> Result<Option<IpAddr>> {
        if flow.src.is_ipv6() != flow.dst.is_ipv6() {
            return Err(Error::bad_address("src", format!("{} and {} are of different families", flow.src, flow.dst)));
        }
        // lookup_vip: the VIP of the port first, then the port-less one.
        let id = |port| VipId { addr: flow.dst, port, proto: flow.proto };
        let Some(vip) = self.state.vips.get(&id(flow.dst_port)).or_else(|| self.state.vips.get(&id(0))) else {
            return Ok(None);
        };
        if vip.flags & abi::VIP_F_NO_LRU != 0 {
            return Ok(None);
        }
        let key = super::flow::conn_key(vip, flow.src, flow.src_port, flow.dst_port);
        let entry = match self.maps.conns.get(&key, 0) {
            Ok(entry) => entry,
            Err(e) if maps::is_missing(&e) => return Ok(None),
            Err(e) => return Err(map_err(abi::map::CONNS, "read", e)),
        };
        // conn_fresh: the program ignores a UDP entry older than the timeout.
        if flow.proto == Protocol::Udp.number()
            && monotonic_coarse_ns().saturating_sub(entry.atime_ns) > abi::UDP_CONN_TIMEOUT_NS
        {
            return Ok(None);
        }
        let real = self.maps.reals.get(&entry.real_index, 0).map_err(|e| map_err(abi::map::REALS, "read", e))?;
        Ok(Some(real.ip()))
    }

    /// The loaded XDP program, for benchmarks and the prog-fd endpoint.
    pub fn program(&self) -> Result<&Xdp> {
        program(&self.ebpf)
    }

    // ---- internals ----

    fn vip(&self, id: &VipId) -> Result<&Vip> {
        self.state.vips.get(id).ok_or_else(|| Error::vip_not_found(id.addr, id.port, id.proto))
    }

    fn rebuild_ring(&mut self, id: &VipId) -> Result<()> {
        let vip = &self.state.vips[id];
        self.maps.rings.write(vip.vip_num, &ring_of(vip, &self.state, self.config.ch_ring_size))?;
        Ok(())
    }

    /// Forgets reals no VIP uses any more. Their map entries stay as they were
    /// until the index is reused, so connections still in the table reach them.
    fn release_reals(&mut self, addrs: impl Iterator<Item = IpAddr>) {
        for addr in addrs {
            if self.state.real_refs(addr) == 0 {
                self.state.reals.remove(&addr);
            }
        }
    }

    fn write_vip_meta(&mut self, vip: &Vip) -> Result<()> {
        let meta = VipMeta { flags: vip.flags, vip_num: vip.vip_num, conn_tag: vip.conn_tag };
        self.maps.vips.insert(vip_key(&vip.id), meta, 0).map_err(|e| {
            if maps::is_full(&e) {
                Error::SpaceExhausted { what: "VIPs", limit: self.config.max_vips }
            } else {
                map_err(abi::map::VIPS, "write", e)
            }
        })
    }

    /// Empties the connection table.
    fn clear_conns(&mut self) {
        let keys: Vec<_> = self.maps.conns.keys().filter_map(|k| k.ok()).collect();
        for key in keys {
            let _ = self.maps.conns.remove(&key);
        }
    }

    /// Rewrites one bucket of the VIP address filter from the VIPs that exist.
    fn write_filter(&mut self, bucket: u32) -> Result<()> {
        let mut filter = VipFilter::default();
        for id in self.state.vips.keys().filter(|id| abi::vip_filter_bucket(id.addr) == bucket) {
            filter.vips += 1;
            filter.portless += u32::from(id.port == 0);
        }
        self.maps.vip_filter.set(bucket, filter, 0).map_err(|e| map_err(abi::map::VIP_FILTER, "write", e))
    }

    fn write_real(&mut self, real: &Real) -> Result<()> {
        self.maps
            .reals
            .set(real.index, RealDef::new(real.addr, real.flags), 0)
            .map_err(|e| map_err(abi::map::REALS, "write", e))
    }

    fn write_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        self.maps.ctl.set(0, LbCtl { default_mac: mac, pad: [0; 2] }, 0).map_err(|e| map_err(abi::map::CTL, "write", e))
    }

    fn save(&self) -> Result<()> {
        match &self.state_file {
            Some(path) => self.state.save(&self.config, path),
            None => Ok(()),
        }
    }

    // ---- For the REST API (reload, fds) ----

    /// Replaces the running program with a freshly loaded and verified copy
    /// (katran's `/lb/reload`): a new Balancer with the same configuration
    /// adopts the pinned datapath — maps, connection table, counters and
    /// state stay, and the new program replaces this one atomically on the
    /// same XDP link — then this one is let go without cleanup. On error
    /// nothing has changed. A testing-mode Balancer has no pinned datapath to
    /// adopt, so it cannot be reloaded.
    pub fn reload(&mut self) -> Result<()> {
        if self.config.testing || self.pin_dir.is_none() {
            return Err(Error::FeatureDisabled {
                feature: "reloading a testing-mode balancer (nothing is pinned for a new program to adopt; \
                          close and create it instead)"
                    .to_owned(),
            });
        }
        // The replacement adopts what the state file says: make it say what
        // runs (a deleted file would otherwise read as "no state" and clear
        // the live connection table).
        self.save()?;
        let next = Balancer::new(self.config.clone())?;
        let mut previous = std::mem::replace(self, next);
        // The new Balancer owns the pinned datapath now: dropping the previous
        // one must not detach or unpin it.
        previous.config.cleanup_on_shutdown = false;
        Ok(())
    }

    /// The file descriptor (in this process) of the balancer program, valid
    /// while this Balancer lives (katran's `getKatranProgFd`).
    pub fn prog_fd(&self) -> Result<RawFd> {
        let fd = program(&self.ebpf)?.fd().map_err(|e| Error::bpf("get the balancer program's fd", e))?;
        Ok(fd.as_fd().as_raw_fd())
    }

    /// The file descriptor (in this process) of the balancer's map `name`
    /// (one of weir's `abi::map` names), valid while this Balancer lives
    /// (katran's `getBpfMapFdByName`).
    pub fn map_fd(&self, name: &str) -> Result<RawFd> {
        self.maps.fd(name).ok_or_else(|| Error::NotFound { what: format!("map {name}") })
    }
}

impl Drop for Balancer {
    /// With `cleanup_on_shutdown`, detaches and unpins everything; otherwise
    /// leaves the datapath forwarding for the next agent to adopt.
    fn drop(&mut self) {
        if !self.config.cleanup_on_shutdown {
            return;
        }
        if let Some(link) = self.link.take() {
            if let Err(e) = link.unpin() {
                tracing::warn!(error = %e, "could not unpin the XDP link");
            }
        } else if let Some(dir) = &self.pin_dir {
            // An adopted link: its pin is the one in our directory.
            let _ = std::fs::remove_file(dir.join(pin::LINK));
        }
        if let Some(dir) = &self.pin_dir {
            for name in abi::map::BALANCER {
                let _ = std::fs::remove_file(dir.join(name));
            }
            let _ = std::fs::remove_dir(dir);
            // The namespace's directory, once nothing else of it is pinned.
            if let Some(netns_dir) = dir.parent() {
                let _ = std::fs::remove_dir(netns_dir);
            }
        }
        if let Some(file) = &self.state_file {
            let _ = std::fs::remove_file(file);
            if let Some(netns_dir) = file.parent() {
                let _ = std::fs::remove_dir(netns_dir);
            }
        }
    }
}

/// Whether the link pinned at `path` is this namespace's `iface`'s, to be
/// adopted. A link pinned there but defunct or attached elsewhere can never
/// carry this interface's traffic: its pin is removed (so that a new link
/// can be pinned in its place) and the datapath starts afresh.
fn adoptable(path: &std::path::Path, iface: &str) -> Result<bool> {
    match pin::link_attached_to(path, iface)? {
        Some(true) => Ok(true),
        Some(false) => {
            tracing::warn!(%iface, link = %path.display(), "pinned XDP link is not attached to {iface}; attaching anew");
            std::fs::remove_file(path).map_err(|e| Error::system(format!("remove {}", path.display()), e))?;
            Ok(false)
        }
        None => Ok(false),
    }
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut Xdp> {
    program_named_mut(ebpf, weir_ebpf::BALANCER_PROGRAM)
}

fn program(ebpf: &Ebpf) -> Result<&Xdp> {
    program_named(ebpf, weir_ebpf::BALANCER_PROGRAM)
}

fn program_named_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::bpf(format!("find program {name}"), std::io::Error::other("missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(format!("open program {name}"), e))
}

fn program_named<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    ebpf.program(name)
        .ok_or_else(|| Error::bpf(format!("find program {name}"), std::io::Error::other("missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(format!("open program {name}"), e))
}

fn vip_key(id: &VipId) -> VipKey {
    VipKey::new(id.addr, id.port, id.proto)
}

fn vip_info(vip: &Vip) -> VipInfo {
    VipInfo { id: vip.id, flags: vip.flags, hash_function: vip.hash, vip_num: vip.vip_num, reals: vip.reals.len() }
}

/// The Maglev ring of a VIP from its reals' addresses and weights.
fn ring_of(vip: &Vip, state: &State, ring_size: u32) -> Vec<u32> {
    let endpoints: Vec<Endpoint> = vip
        .reals
        .iter()
        .map(|(addr, weight)| Endpoint {
            index: state.reals[addr].index,
            weight: *weight,
            key: maglev::endpoint_key(*addr),
        })
        .collect();
    maglev::build_ring(&endpoints, ring_size, vip.hash)
}

fn monotonic_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_MONOTONIC)
}

/// The clock the datapath stamps connections with (bpf_ktime_get_coarse_ns).
fn monotonic_coarse_ns() -> u64 {
    clock_ns(nix::time::ClockId::CLOCK_MONOTONIC_COARSE)
}

fn clock_ns(clock: nix::time::ClockId) -> u64 {
    // Both clocks exist on every Linux this runs on: they cannot fail.
    let ts = nix::time::clock_gettime(clock).unwrap_or(nix::sys::time::TimeSpec::new(0, 0));
    ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64
}

// ---- validation ----

/// The connection table's size in the kernel for `lru_size` entries: a hash
/// with per-CPU LRU lists holds a multiple of the possible CPUs (the kernel
/// rounds up), and adopted pins are checked against that.
fn conn_entries(lru_size: u32) -> Result<u32> {
    let cpus = aya::util::nr_cpus().map_err(|(op, e)| Error::system(op, e))? as u32;
    Ok(lru_size.div_ceil(cpus) * cpus)
}

fn validate_config(c: &BalancerConfig) -> Result<()> {
    let within = |field, v: u32, range: &std::ops::RangeInclusive<u32>| {
        if range.contains(&v) {
            Ok(())
        } else {
            Err(Error::invalid(field, format!("{v} is outside {}..={}", range.start(), range.end())))
        }
    };
    within("max_vips", c.max_vips, &config::MAX_VIPS)?;
    within("max_reals", c.max_reals, &config::MAX_REALS)?;
    within("ch_ring_size", c.ch_ring_size, &config::CH_RING_SIZE)?;
    within("lru_size", c.lru_size, &config::LRU_SIZE)?;
    let slots = u64::from(c.max_vips) * u64::from(c.ch_ring_size);
    if slots > config::MAX_RING_SLOTS {
        return Err(Error::invalid(
            "ch_ring_size",
            format!(
                "max_vips × ch_ring_size ({} × {} = {slots}) is above {} ring slots (1 GiB of rings)",
                c.max_vips,
                c.ch_ring_size,
                config::MAX_RING_SLOTS
            ),
        ));
    }
    if !config::MTU.contains(&c.mtu) {
        return Err(Error::invalid(
            "mtu",
            format!(
                "{} is outside {}..={}: IPv6 (and so an IPv6 real's outer header) needs links of at least 1280 \
                 bytes, and no Ethernet link carries more than 9216",
                c.mtu,
                config::MTU.start(),
                config::MTU.end()
            ),
        ));
    }
    if !c.testing && c.main_interface.is_empty() {
        return Err(Error::invalid("main_interface", "required unless testing"));
    }
    if !c.testing {
        // Before anything is pinned: the name becomes a path.
        pin::check_interface("main_interface", &c.main_interface)?;
    }
    if !c.testing && c.pin_root.is_none() {
        return Err(Error::invalid("pin_root", "required unless testing: the attachment is pinned"));
    }
    // forwarding_cores may name CPUs this host lacks (a fleet-wide Katran
    // configuration): they report 0, and /lb/create says so in its notices.
    Ok(())
}

fn validate_vip_id(id: &VipId) -> Result<()> {
    if Protocol::from_number(id.proto).is_none() {
        return Err(Error::invalid("proto", format!("{} is not {}", id.proto, Protocol::choices())));
    }
    validate_unicast("address", id.addr)
}

/// The address rule the CRD validation applies too (one function decides).
fn validate_unicast(field: &'static str, addr: IpAddr) -> Result<()> {
    weir_crds::address::check_unicast(addr).map_err(|e| Error::bad_address(field, format!("{addr} {e}")))
}

/// Bits no Katran VIP flag uses are invalid; flags Katran defines but this
/// datapath does not honour (outside [`VipFlags::SUPPORTED`]) are a feature it lacks.
fn validate_vip_flags(flags: u32) -> Result<()> {
    let unknown = flags & !VipFlags::all().bits();
    if unknown != 0 {
        return Err(Error::invalid("flags", format!("{flags:#x} has bits no VIP flag uses ({unknown:#x})")));
    }
    let unsupported = VipFlags::from_bits_retain(flags).difference(VipFlags::SUPPORTED);
    if !unsupported.is_empty() {
        return Err(Error::FeatureDisabled { feature: format!("VIP flag {unsupported} ({:#x})", unsupported.bits()) });
    }
    Ok(())
}

fn validate_real(vip: &VipId, real: &RealSpec) -> Result<()> {
    validate_unicast("real address", real.addr)?;
    validate_real_flags(real.addr, real.flags)?;
    if vip.addr.is_ipv6() && real.addr.is_ipv4() {
        return Err(Error::invalid(
            "real address",
            format!("{} is IPv4 but VIP {vip} is IPv6: IPv6-in-IPv4 encapsulation is not supported", real.addr),
        ));
    }
    Ok(())
}

fn validate_real_flags(addr: IpAddr, flags: u8) -> Result<()> {
    if flags & !RealFlags::all().bits() != 0 {
        return Err(Error::invalid("real flags", format!("{flags:#x} has bits no real flag uses")));
    }
    if flags & abi::REAL_F_IPV6 != 0 && addr.is_ipv4() {
        return Err(Error::invalid("real flags", format!("IPV6 (1) set for the IPv4 address {addr}")));
    }
    Ok(())
}

// The HTTP API shares one Balancer between handler threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Balancer>();
};
