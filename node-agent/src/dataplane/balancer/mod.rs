//! The Balancer: the one API through which anything changes the datapath.
//! REST handlers and the cluster sync both call it; nothing else writes the
//! BPF maps.
//!
//! It loads the balancer XDP program (attached, or in testing mode only
//! loaded), keeps the control-plane model ([`State`]), and applies every
//! change to the maps in an order that never exposes a half-made change to
//! packets: a real is written before any ring slot points at it, a VIP's ring
//! before the VIP is visible, and the reverse on removal.
//!
//! One module per concern, each an `impl Balancer` block:
//! - `lifecycle`: loading, adopting a pinned datapath, attaching, reloading, dropping;
//! - `vips` and `reals`: the VIPs and their reals (rings follow them);
//! - `health`: real health (only healthy reals sit in a ring), health checks;
//! - `conns`: the connection table and flow questions (test runs, real-for-flow);
//! - `counters`: counters and map usage;
//! - `validation`: what the Balancer accepts, checked before anything changes.
//!
//! The maps are reached only through [`Maps`]' verbs.

mod conns;
mod counters;
mod health;
mod lifecycle;
mod reals;
mod validation;
mod vips;

use std::net::IpAddr;
use std::path::PathBuf;

use aya::programs::links::PinnedLink;
use aya::Ebpf;
use weir_ebpf::abi::{LbCtl, VipKey};

pub use self::conns::ConnPurge;
pub use self::health::RealHealth;
use super::config::BalancerConfig;
use super::healthcheck::Healthchecker;
use super::maglev::HashFunction;
use super::maps::Maps;
pub use super::state::VipId;
use super::state::{State, Vip};
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
    /// Reals new flows may pick (see `fail_open`).
    pub healthy_reals: usize,
    /// Every real is unhealthy, so all of them stay in the ring.
    pub fail_open: bool,
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
    /// The healthcheck program, with `enable_hc` (see `lifecycle`).
    hc: Option<Healthchecker>,
    /// Bumped by every saved change ([`Self::generation`]).
    generation: std::sync::atomic::AtomicU64,
    /// Which Balancer of this process this is ([`Self::instance`]).
    instance: u64,
}

/// Balancers created by this process so far.
static INSTANCES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl std::fmt::Debug for Balancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Balancer").field("config", &self.config).finish_non_exhaustive()
    }
}

impl Balancer {
    pub fn config(&self) -> &BalancerConfig {
        &self.config
    }

    fn vip(&self, id: &VipId) -> Result<&Vip> {
        self.state.vips.get(id).ok_or_else(|| Error::NotFound { what: format!("VIP {id}") })
    }

    pub fn default_mac(&self) -> [u8; 6] {
        self.state.mac
    }

    pub fn set_default_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        self.write_mac(mac)?;
        // Probes go where VIP traffic goes.
        if let Some(hc) = &mut self.hc {
            hc.set_dst_mac(mac)?;
        }
        self.state.mac = mac;
        self.save()
    }

    /// The healthcheck program; 501 when the balancer was created without
    /// `enable_hc` (katran's healthcheck calls on a non-healthchecking instance).
    pub fn healthchecker(&self) -> Result<&Healthchecker> {
        self.hc.as_ref().ok_or_else(no_healthchecker)
    }

    /// [`Self::healthchecker`], to change its maps.
    pub fn healthchecker_mut(&mut self) -> Result<&mut Healthchecker> {
        self.hc.as_mut().ok_or_else(no_healthchecker)
    }

    fn write_mac(&mut self, mac: [u8; 6]) -> Result<()> {
        self.maps.put_ctl(LbCtl { default_mac: mac, pad: [0; 2] })
    }

    /// A number that changes whenever the Balancer's state does (VIPs,
    /// reals, weights, health, checks): what the prober and the cluster
    /// status watch to notice changes made by anyone, without a diff.
    pub fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A number no other Balancer of this process had: a watcher of
    /// [`Self::generation`] tells a closed and re-created balancer by it.
    pub fn instance(&self) -> u64 {
        self.instance
    }

    /// Every change of the state ends here: it is saved (when the Balancer
    /// has a state file) and [`Self::generation`] moves.
    fn save(&self) -> Result<()> {
        self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        match &self.state_file {
            Some(path) => self.state.save(&self.config, path),
            None => Ok(()),
        }
    }
}

fn no_healthchecker() -> Error {
    Error::FeatureDisabled {
        feature: "a healthcheck call on a balancer created without enable_hc: true (its healthcheck program, \
                  DirectHC, is not loaded)"
            .to_owned(),
    }
}

fn vip_key(id: &VipId) -> VipKey {
    VipKey::new(id.addr, id.port, id.proto)
}

fn vip_info(vip: &Vip) -> VipInfo {
    VipInfo {
        id: vip.id,
        flags: vip.flags,
        hash_function: vip.hash,
        vip_num: vip.vip_num,
        reals: vip.reals.len(),
        healthy_reals: vip.reals.keys().filter(|a| vip.is_healthy(a)).count(),
        fail_open: vip.fail_open(),
    }
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

// The HTTP API shares one Balancer between handler threads.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<Balancer>();
};
