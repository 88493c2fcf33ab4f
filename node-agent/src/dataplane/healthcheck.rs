//! The healthcheck program (`healthcheck.bpf.c`, Katran's healthchecking_kern):
//! loading it and its maps — probe marks to reals (`/healthcheck/dsts`),
//! healthcheck keys (`/healthcheck/keys`), where probes leave, its counters
//! (`/stats/hc-prog`) — and running frames through it.
//!
//! A prober marks each probe socket (SO_MARK) with the mark of one real and
//! sends to the VIP; the program, on the main interface's TC egress hook,
//! tunnels the probe to that real as the balancer tunnels VIP traffic. Like
//! `decap`, this module reads and writes its own program's maps.

use std::net::IpAddr;

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader};
use weir_ebpf::abi::{self, HcCtl, HcStats, RealDef, VipKey};
use weir_ebpf::{HEALTHCHECK, HEALTHCHECK_PROGRAM};

use super::pin;
use super::state::VipId;
use crate::{Error, Result};

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
        Ok(Self {
            reals: typed(&mut ebpf, abi::map::HC_REALS)?,
            ctl: typed(&mut ebpf, abi::map::HC_CTL)?,
            keys: typed(&mut ebpf, abi::map::HC_KEYS)?,
            key_packets: typed(&mut ebpf, abi::map::HC_KEY_PKTS)?,
            stats: typed(&mut ebpf, abi::map::HC_STATS)?,
            ebpf,
        })
    }

    /// Probes marked `somark` go to the real at `addr` (Katran's
    /// `addHealthcheckerDst`); replaces the mark's earlier real.
    pub fn add_dst(&mut self, somark: u32, addr: IpAddr) -> Result<()> {
        if somark == 0 {
            return Err(Error::invalid("somark", "0 marks no socket: probes need a mark of 1 or more"));
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
        self.ctl.set(0, ctl, 0).map_err(|e| map_err(abi::map::HC_CTL, "write", e))
    }

    /// Counts probes to `vip` under key `index` (Katran's `addHcKey`).
    pub fn add_key(&mut self, vip: &VipId, index: u32) -> Result<()> {
        let key = VipKey::new(vip.addr, vip.port, vip.proto);
        self.keys.insert(key, index, 0).map_err(|e| map_err(abi::map::HC_KEYS, "write", e))
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
