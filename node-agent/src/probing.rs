//! The prober, driven by the Balancer: what its health checks ask for is
//! probed, and what the probes find is applied to the Balancer.
//!
//! The Balancer is the one record of checks and health, whoever changed it
//! (REST, `--config`, cluster mode). A sync ([`Probing::sync`], on a short
//! tick, a no-op unless [`Balancer::generation`] moved) gives the prober
//! every VIP whose check probes (all but `dummy`, when the prober is
//! enabled) with its reals, and takes away the rest. Transitions the prober
//! reports are applied with [`Balancer::set_reals_health`], a batch per VIP.
//!
//! **Where probes go.** When the healthcheck program is attached
//! ([`Balancer::probes_tunnelled`]), a probe goes to the VIP at the check's
//! port from a socket marked with its real's mark, and the program tunnels it
//! to the real as VIP traffic goes: the probe proves the real serves the VIP
//! (Katran's mark-and-tunnel probe). Each real address has one mark from
//! [`PROBER_MARKS`], shared by the VIPs it serves, written to
//! `weir_hc_reals` beside (never over) the operator's `/healthcheck/dsts`
//! entries; marks left by an earlier agent on an adopted datapath are reused.
//! Without the program (testing mode, `enable_hc: false`) a probe goes to the
//! real's own address at the check's port, unmarked.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use crate::dataplane::healthcheck::PROBER_MARKS;
use crate::dataplane::{Balancer, CheckKind, HealthCheck, VipId};
use crate::handles::SharedBalancer;
use crate::prober::{
    Check, HttpCheck, ProbeMetrics, ProbedReal, Prober, RealStatus, Target, Thresholds, Transition, UdpCheck, VipCheck,
};

/// How often the sync looks at the Balancer's generation.
pub const SYNC_PERIOD: Duration = Duration::from_millis(200);

/// Probes at once, at most: enough for 10,000 targets at a 1 s interval
/// with probes that take tens of milliseconds.
pub const MAX_IN_FLIGHT: usize = 1024;

/// The prober and what it was given.
pub struct Probing {
    prober: Prober,
    balancer: SharedBalancer,
    synced: Mutex<Synced>,
}

#[derive(Default)]
struct Synced {
    /// The (instance, generation) of the Balancer last synced.
    seen: Option<(u64, u64)>,
    /// What the prober probes, per VIP.
    vips: BTreeMap<VipId, Wanted>,
    /// The mark of each real address, as written in the Balancer's
    /// healthcheck program (the instance of `seen`).
    marks: BTreeMap<IpAddr, u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Wanted {
    check: VipCheck,
    targets: Vec<(IpAddr, Target)>,
}

impl Probing {
    /// Starts the prober and the tasks that sync it with `balancer` and
    /// apply its transitions (on the current tokio runtime). Probing stops
    /// when the last holder drops it.
    pub fn start(balancer: SharedBalancer, metrics: ProbeMetrics) -> std::sync::Arc<Self> {
        let (prober, transitions) = Prober::start(MAX_IN_FLIGHT, metrics);
        let probing = std::sync::Arc::new(Self { prober, balancer, synced: Mutex::default() });
        tokio::spawn(apply_transitions(probing.balancer.clone(), transitions));
        let weak = std::sync::Arc::downgrade(&probing);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SYNC_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(probing) = weak.upgrade() else { return };
                let _ = tokio::task::spawn_blocking(move || probing.sync()).await;
            }
        });
        probing
    }

    /// Brings the prober in line with the Balancer, if the Balancer changed
    /// since the last sync. Blocking (it takes the Balancer's lock).
    pub fn sync(&self) {
        let seen = {
            let guard = self.balancer.read().unwrap_or_else(PoisonError::into_inner);
            guard.as_ref().map(|lb| (lb.instance(), lb.generation()))
        };
        let mut synced = self.synced.lock().unwrap_or_else(PoisonError::into_inner);
        // Unchanged, or still no balancer (and nothing probed since there was none).
        if synced.seen == seen {
            return;
        }
        let mut guard = self.balancer.write().unwrap_or_else(PoisonError::into_inner);
        let Some(lb) = guard.as_mut() else {
            for vip in std::mem::take(&mut synced.vips).into_keys() {
                self.prober.remove_vip(&vip);
            }
            *synced = Synced::default();
            return;
        };
        let instance = lb.instance();
        if synced.seen.map(|(i, _)| i) != Some(instance) {
            synced.marks = adopted_marks(lb);
        }
        let checks = checked_vips(lb);
        let tunnelled = lb.probes_tunnelled();
        if tunnelled {
            let reals: BTreeSet<IpAddr> = checks.iter().flat_map(|(_, _, reals)| reals.iter().map(|r| r.0)).collect();
            write_marks(lb, &mut synced.marks, &reals);
        }
        let mut wanted = BTreeMap::new();
        for (vip, check, reals) in checks {
            let port = check.port;
            let mut targets = Vec::with_capacity(reals.len());
            let mut healthy = BTreeMap::new();
            for (addr, is_healthy) in reals {
                let target = match tunnelled {
                    true => match synced.marks.get(&addr) {
                        Some(&mark) => Target { addr: SocketAddr::new(vip.addr, port), mark },
                        // No mark (the map is full): not probed, its health stays.
                        None => continue,
                    },
                    false => Target { addr: SocketAddr::new(addr, port), mark: 0 },
                };
                targets.push((addr, target));
                healthy.insert(addr, is_healthy);
            }
            let want = Wanted { check: vip_check(&check), targets };
            if synced.vips.get(&vip) != Some(&want) {
                let reals =
                    want.targets.iter().map(|&(addr, target)| ProbedReal { addr, target, healthy: healthy[&addr] });
                self.prober.set_vip(vip, want.check.clone(), reals);
            }
            wanted.insert(vip, want);
        }
        for vip in synced.vips.keys().filter(|v| !wanted.contains_key(v)) {
            self.prober.remove_vip(vip);
        }
        synced.vips = wanted;
        synced.seen = Some((instance, lb.generation()));
    }

    /// What the prober knows of `vip`'s reals; `None` when it does not probe it.
    pub fn status(&self, vip: &VipId) -> Option<Vec<RealStatus>> {
        self.prober.status(vip)
    }

    /// Real `addr` of `vip` was given `healthy` by hand: it holds until the
    /// real's next probe result.
    pub fn applied(&self, vip: &VipId, addr: IpAddr, healthy: bool) {
        self.prober.applied(vip, addr, healthy);
    }
}

/// A VIP whose check probes: the check, and each real with its health.
type CheckedVip = (VipId, HealthCheck, Vec<(IpAddr, bool)>);

/// Every VIP whose check probes.
fn checked_vips(lb: &Balancer) -> Vec<CheckedVip> {
    if !lb.prober_enabled() {
        return Vec::new();
    }
    let mut checked = Vec::new();
    for info in lb.vips() {
        let Ok(Some(check)) = lb.health_check(&info.id) else { continue };
        if check.kind == CheckKind::Dummy {
            continue;
        }
        let reals = lb.reals_with_health(&info.id).unwrap_or_default();
        checked.push((info.id, check, reals.into_iter().map(|(r, healthy)| (r.addr, healthy)).collect()));
    }
    checked
}

/// The prober's marks already in the healthcheck program (an adopted
/// datapath's), by real address.
fn adopted_marks(lb: &Balancer) -> BTreeMap<IpAddr, u32> {
    let Ok(hc) = lb.healthchecker() else { return BTreeMap::new() };
    hc.dsts().into_iter().filter(|(mark, _)| PROBER_MARKS.contains(mark)).map(|(mark, addr)| (addr, mark)).collect()
}

/// Gives each of `reals` a mark in the healthcheck program and removes the
/// marks of reals no longer probed. A real that cannot get one (the map is
/// full) is left without: it is not probed.
fn write_marks(lb: &mut Balancer, marks: &mut BTreeMap<IpAddr, u32>, reals: &BTreeSet<IpAddr>) {
    let Ok(hc) = lb.healthchecker_mut() else { return };
    marks.retain(|addr, mark| {
        if reals.contains(addr) {
            return true;
        }
        if let Err(e) = hc.del_dst(*mark) {
            tracing::warn!(%addr, mark, "removing a probe mark: {e}");
        }
        false
    });
    let used: BTreeSet<u32> = marks.values().copied().collect();
    let mut free = PROBER_MARKS.filter(|m| !used.contains(m));
    let new: Vec<IpAddr> = reals.iter().filter(|a| !marks.contains_key(a)).copied().collect();
    for addr in new {
        let Some(mark) = free.next() else {
            tracing::warn!(%addr, "no probe mark left: the real is not probed");
            continue;
        };
        match hc.add_dst(mark, addr) {
            Ok(()) => {
                marks.insert(addr, mark);
            }
            Err(e) => tracing::warn!(%addr, mark, "writing a probe mark: {e}; the real is not probed"),
        }
    }
}

/// The prober's form of a stored check.
fn vip_check(check: &HealthCheck) -> VipCheck {
    let http = |h: &Option<crate::dataplane::HttpCheck>| {
        let h = h.clone().unwrap_or_else(|| crate::dataplane::HttpCheck {
            path: "/".into(),
            expected_status: 200,
            host: None,
            skip_tls_verify: false,
        });
        (HttpCheck { path: h.path, expected_status: h.expected_status, host: h.host }, h.skip_tls_verify)
    };
    let probe = match check.kind {
        CheckKind::Tcp | CheckKind::Dummy => Check::Tcp,
        CheckKind::Http => Check::Http(http(&check.http).0),
        CheckKind::Https => {
            let (http, skip_tls_verify) = http(&check.https);
            Check::Https { http, skip_tls_verify }
        }
        CheckKind::Udp => {
            let udp = check
                .udp
                .clone()
                .unwrap_or_else(|| crate::dataplane::UdpCheck { payload: String::new(), expect: None });
            Check::Udp(UdpCheck { payload: udp.payload.into_bytes(), expect: udp.expect.map(String::into_bytes) })
        }
    };
    VipCheck {
        check: probe,
        interval: Duration::from_millis(u64::from(check.interval_ms)),
        timeout: Duration::from_millis(u64::from(check.timeout_ms)),
        thresholds: Thresholds { healthy: check.healthy_threshold, unhealthy: check.unhealthy_threshold },
    }
}

/// Applies transitions as they come: all those waiting, a batch per VIP.
async fn apply_transitions(balancer: SharedBalancer, mut rx: mpsc::UnboundedReceiver<Transition>) {
    while let Some(first) = rx.recv().await {
        let mut by_vip: BTreeMap<VipId, BTreeMap<IpAddr, bool>> = BTreeMap::new();
        let mut next = Some(first);
        while let Some(t) = next {
            by_vip.entry(t.vip).or_default().insert(t.real, t.healthy);
            next = rx.try_recv().ok();
        }
        let balancer = balancer.clone();
        let _ = tokio::task::spawn_blocking(move || {
            let mut guard = balancer.write().unwrap_or_else(PoisonError::into_inner);
            let Some(lb) = guard.as_mut() else { return };
            for (vip, reals) in by_vip {
                let reals: Vec<(IpAddr, bool)> = reals.into_iter().collect();
                for (addr, healthy) in &reals {
                    tracing::info!(%vip, real = %addr, healthy, "real health changed");
                }
                if let Err(e) = lb.set_reals_health(&vip, &reals) {
                    tracing::warn!(%vip, "applying probe results: {e}");
                }
            }
        })
        .await;
    }
}
