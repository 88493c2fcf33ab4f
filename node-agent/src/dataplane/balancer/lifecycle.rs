//! Coming up and going away: loading the program, adopting a pinned
//! datapath, attaching, reloading, and the cleanup on drop.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::PathBuf;

use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::xdp::XdpLink;
use aya::programs::Xdp;
use aya::{Ebpf, EbpfLoader};
use weir_ebpf::abi::{self, VipKey};

use super::validation::{conn_entries, validate_config};
use super::vips::ring_of;
use super::{vip_key, Balancer};
use crate::dataplane::config::BalancerConfig;
use crate::dataplane::healthcheck::{self, Healthchecker};
use crate::dataplane::maps::Maps;
use crate::dataplane::pin;
use crate::dataplane::state::State;
use crate::{Error, Result};

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
        let icmp_too_big = u32::from(config.icmp_too_big);
        loader
            .override_global(abi::global::RING_SIZE, &config.ch_ring_size, true)
            .override_global(abi::global::MTU, &config.mtu, true)
            .override_global(abi::global::ICMP_TOO_BIG, &icmp_too_big, true);
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
            hc: None,
            generation: Default::default(),
            instance: super::INSTANCES.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
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

    /// The part of [`Self::new`] after loading: the maps' contents, the
    /// attachment, then the healthcheck program (`enable_hc`; without it, a
    /// pinned one an earlier agent left is detached).
    fn come_up(&mut self, saved: Option<State>, adopting: bool, link_path: Option<PathBuf>) -> Result<()> {
        self.restore(saved)?;
        if !self.config.testing {
            self.ifindex = pin::if_index(&self.config.main_interface);
            self.attach(adopting, link_path.expect("pinning is required to attach"))?;
        }
        if self.config.katran.enable_hc {
            self.hc = Some(Healthchecker::for_balancer(&self.config, self.pin_dir.as_deref(), self.state.mac)?);
        } else if let Some(dir) = &self.pin_dir {
            healthcheck::remove_pins(dir);
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
        let stale: Vec<VipKey> =
            self.maps.vip_keys().into_iter().filter(|k| !target.vips.values().any(|v| vip_key(&v.id) == *k)).collect();
        for key in stale {
            self.maps.del_vip(&key)?;
        }
        for real in target.reals.values() {
            self.write_real(real)?;
        }
        for vip in target.vips.values() {
            self.maps.put_ring(vip.vip_num, &ring_of(vip, &target, self.config.ch_ring_size))?;
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

    /// The loaded XDP program, for benchmarks and the prog-fd endpoint.
    pub fn program(&self) -> Result<&Xdp> {
        program(&self.ebpf)
    }
}

impl Drop for Balancer {
    /// With `cleanup_on_shutdown`, detaches and unpins everything; otherwise
    /// leaves the datapath forwarding for the next agent to adopt.
    fn drop(&mut self) {
        if !self.config.cleanup_on_shutdown {
            return;
        }
        match (self.hc.take(), &self.pin_dir) {
            (Some(hc), Some(dir)) => hc.remove(dir),
            (_, Some(dir)) => healthcheck::remove_pins(dir),
            _ => {}
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

pub(super) fn program(ebpf: &Ebpf) -> Result<&Xdp> {
    program_named(ebpf, weir_ebpf::BALANCER_PROGRAM)
}

fn program_named_mut<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    ebpf.program_mut(name)
        .ok_or_else(|| Error::bpf(format!("find program {name}"), std::io::Error::other("missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(format!("open program {name}"), e))
}

pub(super) fn program_named<'a>(ebpf: &'a Ebpf, name: &str) -> Result<&'a Xdp> {
    ebpf.program(name)
        .ok_or_else(|| Error::bpf(format!("find program {name}"), std::io::Error::other("missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf(format!("open program {name}"), e))
}
