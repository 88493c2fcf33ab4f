//! The healthcheck program (`healthcheck.bpf.c`, Katran's healthchecking_kern):
//! loading it and its maps — probe marks to reals (`/healthcheck/dsts`),
//! healthcheck keys (`/healthcheck/keys`), where probes leave, its counters
//! (`/stats/hc-prog`) — and running frames through it.
//!
//! A prober marks each probe socket (SO_MARK) with the mark of one real and
//! sends to the VIP; the program, on the main interface's TC egress hook,
//! tunnels the probe to that real as the balancer tunnels VIP traffic. Like
//! `decap`, this module reads and writes its own program's maps.
//!
//! With `enable_hc` the Balancer runs it ([`Healthchecker::for_balancer`]):
//! its maps pinned by name beside the balancer's, its program on the TC
//! egress hook of `hc_interface` (else the main interface) through a TCX link
//! pinned as [`HC_LINK`], adopted across restarts and `/lb/reload` like the
//! balancer (maps kept, program swapped in the same link). In testing mode it
//! is loaded with private maps and never attached.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use aya::maps::{Array, HashMap, MapData, PerCpuArray, PerCpuValues};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::SchedClassifierLink;
use aya::programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader};
use weir_ebpf::abi::{self, HcCtl, HcStats, RealDef, VipKey};
use weir_ebpf::{HEALTHCHECK, HEALTHCHECK_PROGRAM};

use super::config::BalancerConfig;
use super::pin;
use super::state::VipId;
use crate::{Error, Result};

/// Socket marks reserved for weir's own prober: `/healthcheck/dsts` refuses
/// them (400), so operator entries and the prober's never overwrite each
/// other. 16384 marks from 0x57450000 ("WE"): bits 0x4000 and 0x8000, which
/// kube-proxy uses to mark packets for masquerading and for dropping, are
/// clear in all of them.
pub const PROBER_MARKS: RangeInclusive<u32> = 0x5745_0000..=0x5745_3fff;

/// What `/lb/status` calls the healthcheck program.
pub const HC_PROGRAM_NAME: &str = concat!("weir_healthcheck, built into weir-agent ", env!("CARGO_PKG_VERSION"));

/// The pin of the healthcheck program's TCX link, in the balancer's pin
/// directory.
pub const HC_LINK: &str = "hc_link";

/// How many healthcheck keys there can be (`weir_hc_keys`' size).
pub const MAX_HC_KEYS: u32 = abi::DEFAULT_MAX_VIPS;

/// How many marks `/healthcheck/dsts` can hold (`weir_hc_reals`' size).
pub const MAX_HC_DSTS: u32 = abi::DEFAULT_MAX_REALS;

/// TC verdicts the program returns (linux/pkt_cls.h).
pub const TC_ACT_UNSPEC: i32 = -1;
pub const TC_ACT_OK: i32 = 0;
pub const TC_ACT_SHOT: i32 = 2;
pub const TC_ACT_REDIRECT: i32 = 7;

/// The healthcheck program and its maps.
pub struct Healthchecker {
    ebpf: Ebpf,
    reals: HashMap<MapData, u32, RealDef>,
    ctl: Array<MapData, HcCtl>,
    keys: HashMap<MapData, VipKey, u32>,
    key_packets: PerCpuArray<MapData, u64>,
    stats: PerCpuArray<MapData, HcStats>,
    /// What is written to `weir_hc_ctl` (kept to change one field).
    ctl_value: HcCtl,
    /// The pinned TCX link this Healthchecker attached (None when adopted,
    /// or not attached: testing mode). Dropping it leaves the program attached.
    link: Option<PinnedLink>,
}

/// One frame's run through the program (BPF_PROG_TEST_RUN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HcRun {
    /// The TC verdict ([`TC_ACT_OK`], [`TC_ACT_REDIRECT`], ...).
    pub verdict: i32,
    /// The frame as the program left it.
    pub packet: Vec<u8>,
    /// The socket mark the packet leaves with (the program clears a probe's).
    pub mark: u32,
}

impl Healthchecker {
    /// Loads the program with maps private to this Healthchecker (nothing
    /// pinned where another agent could find it), without attaching it.
    pub fn load_private() -> Result<Self> {
        let pins = pin::EphemeralPins::new()?;
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pins.path())
            .load(HEALTHCHECK)
            .map_err(|e| Error::bpf("load the healthcheck object", e))?;
        drop(pins);
        program_mut(&mut ebpf)?.load().map_err(|e| Error::bpf("load the healthcheck program (verifier)", e))?;
        Self::take(ebpf)
    }

    /// The healthcheck program of a Balancer configured with `enable_hc`,
    /// its control entry addressed from `config` and `default_mac`. In
    /// testing mode (no `pin_dir`): [`Self::load_private`], not attached.
    /// Otherwise its maps are pinned by name in `pin_dir` and its program
    /// attached to the TC egress of `hc_interface` (else the main interface)
    /// through a TCX link pinned as [`HC_LINK`]. When that link is pinned and
    /// attached there (an earlier agent, or `/lb/reload`), it is adopted: its
    /// maps — marks, keys, counters — are kept and the new program replaces
    /// the old one in the same link. Pins of another interface or of a
    /// defunct link are removed and the program starts afresh.
    pub fn for_balancer(config: &BalancerConfig, pin_dir: Option<&Path>, default_mac: [u8; 6]) -> Result<Self> {
        let hc_iface = hc_interface(config);
        let Some(dir) = pin_dir.filter(|_| !config.testing) else {
            let mut hc = Self::load_private()?;
            let ifindex = pin::if_index(&config.main_interface);
            hc.set_ctl(ctl_for(config, ifindex, interface_mac(&config.main_interface).unwrap_or([0; 6]), default_mac))?;
            return Ok(hc);
        };
        pin::check_interface("hc_interface", hc_iface)?;
        let ifindex = pin::if_index(&config.main_interface);
        let src_mac = interface_mac(&config.main_interface)?;
        let link_path = dir.join(HC_LINK);
        let adopting = match pin::tcx_link_ifindex(&link_path) {
            Ok(index) => index != 0 && index == pin::if_index(hc_iface),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => return Err(Error::system(format!("read the TCX link {}", link_path.display()), e)),
        };
        if !adopting {
            // Marks and counters of a program no longer attached here are not
            // this one's: start afresh.
            remove_pins(dir);
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .load(HEALTHCHECK)
            .map_err(|e| Error::bpf("load the healthcheck object", e))?;
        program_mut(&mut ebpf)?.load().map_err(|e| Error::bpf("load the healthcheck program (verifier)", e))?;
        let mut hc = Self::take(ebpf)?;
        hc.set_ctl(ctl_for(config, ifindex, src_mac, default_mac))?;
        let program = program_mut(&mut hc.ebpf)?;
        if adopting {
            let pinned =
                PinnedLink::from_pin(&link_path).map_err(|e| Error::bpf(format!("open {}", link_path.display()), e))?;
            let link = SchedClassifierLink::try_from(FdLink::from(pinned))
                .map_err(|e| Error::bpf("adopt the pinned TCX link", e))?;
            program
                .attach_to_link(link)
                .map_err(|e| Error::bpf(format!("replace the healthcheck program on {hc_iface}"), e))?;
            tracing::info!(iface = %hc_iface, "adopted the pinned healthcheck program");
            return Ok(hc);
        }
        let id = program
            .attach(hc_iface, TcAttachType::Egress)
            .map_err(|e| Error::bpf(format!("attach the healthcheck program to {hc_iface}'s TC egress"), e))?;
        let link = program.take_link(id).map_err(|e| Error::bpf("take the TCX link", e))?;
        let fd_link = FdLink::try_from(link).map_err(|e| Error::bpf("pin the TCX link (needs Linux 6.6's TCX)", e))?;
        hc.link = Some(fd_link.pin(&link_path).map_err(|e| Error::bpf(format!("pin {}", link_path.display()), e))?);
        tracing::info!(iface = %hc_iface, "attached the healthcheck program (TC egress)");
        Ok(hc)
    }

    /// Detaches the program (when this one pinned or adopted its link) and
    /// removes its pins from `pin_dir`: the Balancer's cleanup.
    pub fn remove(self, pin_dir: &Path) {
        drop(self);
        // With the pin gone and this process's fds closed, the link goes and
        // the program is detached.
        remove_pins(pin_dir);
    }

    fn take(mut ebpf: Ebpf) -> Result<Self> {
        Ok(Self {
            reals: typed(&mut ebpf, abi::map::HC_REALS)?,
            ctl: typed(&mut ebpf, abi::map::HC_CTL)?,
            keys: typed(&mut ebpf, abi::map::HC_KEYS)?,
            key_packets: typed(&mut ebpf, abi::map::HC_KEY_PKTS)?,
            stats: typed(&mut ebpf, abi::map::HC_STATS)?,
            ctl_value: HcCtl::default(),
            link: None,
            ebpf,
        })
    }

    /// Probes marked `somark` go to the real at `addr` (Katran's
    /// `addHealthcheckerDst`); replaces the mark's earlier real. 507 when
    /// [`MAX_HC_DSTS`] marks are in use and `somark` is a new one.
    pub fn add_dst(&mut self, somark: u32, addr: IpAddr) -> Result<()> {
        if somark == 0 {
            return Err(Error::invalid("somark", "0 marks no socket: probes need a mark of 1 or more"));
        }
        weir_crds::address::check_unicast(addr).map_err(|e| Error::bad_address("dst", format!("{addr} {e}")))?;
        if self.reals.get(&somark, 0).is_err() && self.reals.keys().count() >= MAX_HC_DSTS as usize {
            return Err(Error::SpaceExhausted { what: "healthcheck destinations", limit: MAX_HC_DSTS });
        }
        self.reals.insert(somark, RealDef::new(addr, 0), 0).map_err(|e| map_err(abi::map::HC_REALS, "write", e))
    }

    /// Forgets mark `somark`; whether it was there.
    pub fn del_dst(&mut self, somark: u32) -> Result<bool> {
        match self.reals.remove(&somark) {
            Ok(()) => Ok(true),
            Err(aya::maps::MapError::KeyNotFound) => Ok(false),
            Err(aya::maps::MapError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => Ok(false),
            Err(e) => Err(map_err(abi::map::HC_REALS, "delete from", e)),
        }
    }

    /// Every mark and its real, by mark.
    pub fn dsts(&self) -> Vec<(u32, IpAddr)> {
        let mut dsts: Vec<(u32, IpAddr)> =
            self.reals.iter().filter_map(|entry| entry.ok()).map(|(mark, real)| (mark, real.ip())).collect();
        dsts.sort();
        dsts
    }

    /// Where probes leave and how they are addressed.
    pub fn set_ctl(&mut self, ctl: HcCtl) -> Result<()> {
        self.ctl.set(0, ctl, 0).map_err(|e| map_err(abi::map::HC_CTL, "write", e))?;
        self.ctl_value = ctl;
        Ok(())
    }

    /// What probes leave with now.
    pub fn ctl(&self) -> HcCtl {
        self.ctl_value
    }

    /// The Ethernet destination of probes: the balancer's default MAC
    /// (`/lb/change-mac`, `PUT /utils/mac` change both).
    pub fn set_dst_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        self.set_ctl(HcCtl { dst_mac: mac, ..self.ctl_value })
    }

    /// Counts probes to `vip` under key `index` (the index Katran's
    /// `addHcKey` allocates; see [`Self::add_key_next`]).
    pub fn add_key(&mut self, vip: &VipId, index: u32) -> Result<()> {
        let key = VipKey::new(vip.addr, vip.port, vip.proto);
        self.keys.insert(key, index, 0).map_err(|e| map_err(abi::map::HC_KEYS, "write", e))
    }

    /// Counts probes to `vip` under the lowest free key index, its counter
    /// at 0 (Katran's `addHcKey`); the index. 409 when `vip` has a key
    /// already, 507 when all [`MAX_HC_KEYS`] are in use.
    pub fn add_key_next(&mut self, vip: &VipId) -> Result<u32> {
        let key = VipKey::new(vip.addr, vip.port, vip.proto);
        if self.keys.get(&key, 0).is_ok() {
            return Err(Error::AlreadyExists { what: format!("healthcheck key {vip}") });
        }
        let used: BTreeSet<u32> = self.keys.iter().filter_map(|entry| entry.ok()).map(|(_, index)| index).collect();
        let index = (0..MAX_HC_KEYS)
            .find(|i| !used.contains(i))
            .ok_or(Error::SpaceExhausted { what: "healthcheck keys", limit: MAX_HC_KEYS })?;
        self.zero_key_packets(index)?;
        self.add_key(vip, index)?;
        Ok(index)
    }

    /// Stops counting probes to `vip` (Katran's `delHcKey`); 404 when it has no key.
    pub fn del_key(&mut self, vip: &VipId) -> Result<()> {
        let key = VipKey::new(vip.addr, vip.port, vip.proto);
        let index = self.keys.get(&key, 0).map_err(|_| Error::NotFound { what: format!("healthcheck key {vip}") })?;
        self.keys.remove(&key).map_err(|e| map_err(abi::map::HC_KEYS, "delete from", e))?;
        self.zero_key_packets(index)
    }

    fn zero_key_packets(&mut self, index: u32) -> Result<()> {
        let cpus = aya::util::nr_cpus().map_err(|(op, e)| Error::system(op, e))?;
        let zeros = PerCpuValues::try_from(vec![0u64; cpus]).map_err(|e| Error::system("per-CPU zeros", e))?;
        self.key_packets.set(index, zeros, 0).map_err(|e| map_err(abi::map::HC_KEY_PKTS, "write", e))
    }

    /// Probes sent for key `index`, summed over CPUs.
    pub fn key_packets(&self, index: u32) -> Result<u64> {
        let values = self.key_packets.get(&index, 0).map_err(|e| map_err(abi::map::HC_KEY_PKTS, "read", e))?;
        Ok(values.iter().sum())
    }

    /// The program's counters, summed over CPUs (`/stats/hc-prog`).
    pub fn stats(&self) -> Result<HcStats> {
        let values = self.stats.get(&0, 0).map_err(|e| map_err(abi::map::HC_STATS, "read", e))?;
        Ok(values.iter().fold(HcStats::default(), |sum, c| HcStats {
            processed: sum.processed + c.processed,
            dropped: sum.dropped + c.dropped,
            skipped: sum.skipped + c.skipped,
            too_big: sum.too_big + c.too_big,
        }))
    }

    /// The program's file descriptor in this process, valid while this
    /// Healthchecker lives (Katran's `getHealthcheckerProgFd`).
    pub fn prog_fd(&self) -> Result<RawFd> {
        let fd = program(&self.ebpf)?.fd().map_err(|e| Error::bpf("get the healthcheck program's fd", e))?;
        Ok(fd.as_fd().as_raw_fd())
    }

    /// Runs `frame` through the program as a packet with socket mark `mark`
    /// leaving by the interface with index `ifindex` (BPF_PROG_TEST_RUN).
    pub fn simulate(&self, frame: &[u8], mark: u32, ifindex: u32) -> Result<HcRun> {
        let ctx = SkBuffCtx { mark, ifindex, ..SkBuffCtx::default() };
        // The kernel writes the whole `struct __sk_buff` back (192 bytes today).
        let mut ctx_out = [0u8; 256];
        let mut out = vec![0u8; frame.len() + 128];
        let result = program(&self.ebpf)?
            .test_run(TestRunOptions {
                data_in: Some(frame),
                data_out: Some(&mut out),
                ctx_in: Some(ctx.bytes()),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::default()
            })
            .map_err(|e| Error::bpf("BPF_PROG_TEST_RUN", e))?;
        out.truncate(result.data_size_out as usize);
        let at = std::mem::offset_of!(SkBuffCtx, mark);
        let mark = u32::from_ne_bytes(ctx_out[at..at + 4].try_into().expect("4 bytes"));
        Ok(HcRun { verdict: result.return_value as i32, packet: out, mark })
    }
}

/// The interface the program is attached to: `hc_interface`, else the main one.
pub fn hc_interface(config: &BalancerConfig) -> &str {
    match config.katran.hc_interface.as_str() {
        "" => &config.main_interface,
        iface => iface,
    }
}

/// The control entry of a balancer's configuration: probes leave by the main
/// interface (`ifindex`, its MAC `src_mac` as source) toward the default
/// router (`default_mac`), within the balancer's MTU, with `katran_src_v4/v6`
/// (when set) as outer sources.
fn ctl_for(config: &BalancerConfig, ifindex: u32, src_mac: [u8; 6], default_mac: [u8; 6]) -> HcCtl {
    HcCtl {
        ifindex,
        mtu: config.mtu,
        src_mac,
        dst_mac: default_mac,
        src_v4: config.katran.katran_src_v4.map_or([0; 4], |a| a.octets()),
        src_v6: config.katran.katran_src_v6.map_or([0; 16], |a| a.octets()),
    }
}

/// Removes the healthcheck program's pins (its link and maps) from `dir`.
pub fn remove_pins(dir: &Path) {
    for name in abi::map::HEALTHCHECK.iter().chain([&HC_LINK]) {
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// The MAC of `iface` in the calling thread's network namespace
/// (SIOCGIFHWADDR: sysfs would show the namespace sysfs was mounted in).
fn interface_mac(iface: &str) -> Result<[u8; 6]> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let op = || format!("read the MAC of {iface} (SIOCGIFHWADDR)");
    if iface.is_empty() || iface.len() >= libc::IFNAMSIZ {
        return Err(Error::invalid("main_interface", format!("{iface:?} is not an interface name")));
    }
    // SAFETY: socket() has no memory preconditions.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(Error::system(op(), std::io::Error::last_os_error()));
    }
    // SAFETY: socket() returned a new descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: ifreq is plain old data; all zeros is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(iface.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq that outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
        return Err(Error::system(op(), std::io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    Ok(std::array::from_fn(|i| data[i] as u8))
}

/// The start of `struct __sk_buff` as BPF_PROG_TEST_RUN takes it for TC
/// programs: the fields the kernel lets a test set (`mark`, `ifindex`, ...)
/// sit at their uapi offsets; everything else must be zero.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
struct SkBuffCtx {
    len: u32,
    pkt_type: u32,
    mark: u32,
    queue_mapping: u32,
    protocol: u32,
    vlan_present: u32,
    vlan_tci: u32,
    vlan_proto: u32,
    priority: u32,
    ingress_ifindex: u32,
    ifindex: u32,
}

impl SkBuffCtx {
    fn bytes(&self) -> &[u8] {
        // SAFETY: repr(C), u32 fields only: no padding, every byte initialised.
        unsafe { std::slice::from_raw_parts((self as *const Self).cast(), std::mem::size_of::<Self>()) }
    }
}

fn program(ebpf: &Ebpf) -> Result<&SchedClassifier> {
    ebpf.program(HEALTHCHECK_PROGRAM)
        .ok_or_else(|| Error::bpf("find the healthcheck program", std::io::Error::other("missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf("open the healthcheck program", e))
}

fn program_mut(ebpf: &mut Ebpf) -> Result<&mut SchedClassifier> {
    ebpf.program_mut(HEALTHCHECK_PROGRAM)
        .ok_or_else(|| Error::bpf("find the healthcheck program", std::io::Error::other("missing from the object")))?
        .try_into()
        .map_err(|e| Error::bpf("open the healthcheck program", e))
}

fn typed<T>(ebpf: &mut Ebpf, name: &str) -> Result<T>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| Error::Bpf {
        op: format!("find map {name}"),
        source: "the healthcheck object has no such map".into(),
    })?;
    T::try_from(map).map_err(|e| map_err(name, "open", e))
}

fn map_err(name: &str, op: &str, err: aya::maps::MapError) -> Error {
    Error::bpf(format!("{op} map {name}"), err)
}
