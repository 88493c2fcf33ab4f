//! Real health: which reals of a VIP new flows may pick, the VIP's health
//! check, and what the prober found.
//!
//! Only healthy reals sit in a VIP's ring. An unhealthy real keeps its
//! weight, flags and index, is listed and exported, and keeps its
//! connection-table entries (a transition purges nothing, as in Katran; `DELETE
//! /lru/vip` drains): only new flows avoid it. When every real of a VIP is
//! unhealthy they all stay in the ring (fail open: sending to all beats
//! sending to none); `VipInfo::fail_open` says so. A change of health
//! rebuilds that VIP's ring only.
//!
//! New reals start healthy unless the prober is enabled
//! ([`Balancer::set_prober_enabled`]): then they start unhealthy until
//! promoted, except on a VIP whose check is `dummy` (always healthy).

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::{Balancer, RealSpec};
use crate::dataplane::state::{CheckKind, HealthCheck, VipId};
use crate::{Error, Result};

/// A real of a VIP with its health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RealHealth {
    pub addr: IpAddr,
    pub healthy: bool,
}

impl Balancer {
    /// Whether a prober checks reals: it decides the health of new reals
    /// (unhealthy until promoted) and whether non-dummy checks are accepted.
    pub fn prober_enabled(&self) -> bool {
        self.config.prober
    }

    pub fn set_prober_enabled(&mut self, enabled: bool) -> Result<()> {
        self.config.prober = enabled;
        self.save()
    }

    /// Whether probes can go through the healthcheck program (to the VIP,
    /// marked, tunnelled to the real): it is loaded and attached (not in
    /// testing mode). Otherwise a prober probes reals at their own address.
    pub fn probes_tunnelled(&self) -> bool {
        self.hc.is_some() && !self.config.testing
    }

    /// The health a real new to VIP `id` starts with.
    pub(super) fn default_health(&self, id: &VipId) -> bool {
        let dummy = self.state.vips.get(id).and_then(|v| v.health_check.as_ref()).map(|c| c.kind == CheckKind::Dummy);
        !self.config.prober || dummy == Some(true)
    }

    /// The reals of a VIP, by address, each with its health.
    pub fn reals_with_health(&self, id: &VipId) -> Result<Vec<(RealSpec, bool)>> {
        let vip = self.vip(id)?;
        Ok(self.reals(id)?.into_iter().map(|r| (r, vip.is_healthy(&r.addr))).collect())
    }

    /// Marks real `addr` of VIP `id` healthy (back into the ring with its
    /// weight and flags) or unhealthy (out of it). No change is a no-op.
    pub fn set_real_health(&mut self, id: &VipId, addr: IpAddr, healthy: bool) -> Result<()> {
        if !self.vip(id)?.reals.contains_key(&addr) {
            return Err(Error::NotFound { what: format!("real {addr} of VIP {id}") });
        }
        self.set_reals_health(id, &[(addr, healthy)])
    }

    /// Sets the health of many reals of a VIP with one ring computation:
    /// promotions and demotions take effect together, all or nothing (on a
    /// failed ring write the VIP's health is as it was). Addresses the VIP
    /// does not have are skipped; one named twice is refused.
    pub fn set_reals_health(&mut self, id: &VipId, reals: &[(IpAddr, bool)]) -> Result<()> {
        let vip = self.vip(id)?;
        let mut seen = BTreeSet::new();
        for (addr, _) in reals {
            if !seen.insert(*addr) {
                return Err(Error::invalid("reals", format!("{addr} appears twice in one batch")));
            }
        }
        let mut unhealthy = vip.unhealthy.clone();
        for &(addr, healthy) in reals.iter().filter(|(a, _)| vip.reals.contains_key(a)) {
            match healthy {
                true => unhealthy.remove(&addr),
                false => unhealthy.insert(addr),
            };
        }
        self.apply_health(id, unhealthy)
    }

    /// Makes `unhealthy` VIP `id`'s unhealthy set, rebuilding its ring if
    /// that changes it; restores the old set when the ring cannot be written.
    fn apply_health(&mut self, id: &VipId, unhealthy: BTreeSet<IpAddr>) -> Result<()> {
        let vip = self.state.vips.get_mut(id).expect("checked by the caller");
        if vip.unhealthy == unhealthy {
            return Ok(());
        }
        let old = std::mem::replace(&mut vip.unhealthy, unhealthy);
        if let Err(e) = self.rebuild_ring(id) {
            self.state.vips.get_mut(id).expect("checked by the caller").unhealthy = old;
            // Best effort: the ring the old health stands for (a failed
            // write may have left part of the new one).
            let _ = self.rebuild_ring(id);
            return Err(e);
        }
        self.save()
    }

    /// VIP `id`'s health check, if it has one.
    pub fn health_check(&self, id: &VipId) -> Result<Option<HealthCheck>> {
        Ok(self.vip(id)?.health_check.clone())
    }

    /// Gives VIP `id` a health check (or replaces its check). The check's
    /// port 0 means the VIP's port; a port-less VIP needs one, unless the
    /// check is `dummy`. A check that
    /// probes (all but `dummy`) needs the prober (501 otherwise). `dummy`
    /// makes every real of the VIP healthy, now and when added.
    pub fn set_health_check(&mut self, id: &VipId, mut check: HealthCheck) -> Result<()> {
        self.vip(id)?;
        if check.port == 0 {
            check.port = id.port;
        }
        validate_health_check(id, &check)?;
        if check.kind != CheckKind::Dummy && !self.config.prober {
            return Err(Error::FeatureDisabled {
                feature: format!(
                    "a {} health check without the prober (only dummy checks run without it)",
                    check.kind.name()
                ),
            });
        }
        let vip = self.state.vips.get_mut(id).expect("checked above");
        let previous = vip.health_check.replace(check.clone());
        if check.kind == CheckKind::Dummy {
            if let Err(e) = self.apply_health(id, BTreeSet::new()) {
                self.state.vips.get_mut(id).expect("checked above").health_check = previous;
                return Err(e);
            }
        }
        self.save()
    }

    /// Removes VIP `id`'s health check; its reals keep their last health.
    pub fn del_health_check(&mut self, id: &VipId) -> Result<()> {
        let vip = self.state.vips.get_mut(id).ok_or_else(|| Error::NotFound { what: format!("VIP {id}") })?;
        if vip.health_check.take().is_none() {
            return Err(Error::NotFound { what: format!("health check of VIP {id}") });
        }
        self.save()
    }

    /// Every real of VIP `id` with its health.
    pub fn health_status(&self, id: &VipId) -> Result<Vec<RealHealth>> {
        let vip = self.vip(id)?;
        Ok(vip.reals.keys().map(|&addr| RealHealth { addr, healthy: vip.is_healthy(&addr) }).collect())
    }

    /// Forgets the health of reals VIP `id` no longer has.
    pub(super) fn forget_health(&mut self, id: &VipId, gone: &[IpAddr]) {
        let vip = self.state.vips.get_mut(id).expect("checked by the caller");
        for addr in gone {
            vip.unhealthy.remove(addr);
        }
    }

    /// Sets the health of reals just added to VIP `id` (before its ring is built).
    pub(super) fn start_health(&mut self, id: &VipId, added: &[IpAddr]) {
        if self.default_health(id) {
            return;
        }
        let vip = self.state.vips.get_mut(id).expect("checked by the caller");
        vip.unhealthy.extend(added.iter().copied());
    }
}

/// What a stored check must satisfy (its defaults already applied).
fn validate_health_check(id: &VipId, check: &HealthCheck) -> Result<()> {
    let field = "healthcheck";
    // A dummy check probes nothing: it needs no port.
    if check.port == 0 && check.kind != CheckKind::Dummy {
        return Err(Error::invalid(field, format!("port: required for the port-less VIP {id}")));
    }
    if check.timeout_ms >= check.interval_ms {
        return Err(Error::invalid(
            field,
            format!("timeout_ms: {} must be below interval_ms ({})", check.timeout_ms, check.interval_ms),
        ));
    }
    for (name, value) in [
        ("interval_ms", check.interval_ms),
        ("timeout_ms", check.timeout_ms),
        ("healthy_threshold", check.healthy_threshold),
        ("unhealthy_threshold", check.unhealthy_threshold),
    ] {
        if value == 0 {
            return Err(Error::invalid(field, format!("{name}: must be at least 1")));
        }
    }
    let http = match check.kind {
        CheckKind::Http => Some(("http", &check.http)),
        CheckKind::Https => Some(("https", &check.https)),
        CheckKind::Tcp | CheckKind::Udp | CheckKind::Dummy => None,
    };
    if check.kind == CheckKind::Udp {
        let udp = check.udp.as_ref().ok_or_else(|| Error::invalid(field, "udp: required for type udp"))?;
        if udp.payload.is_empty() {
            return Err(Error::invalid(field, "udp.payload: required (non-empty) for type udp"));
        }
    }
    if let Some((name, http)) = http {
        let http = http.as_ref().ok_or_else(|| Error::invalid(field, format!("{name}: required for type {name}")))?;
        if http.path.is_empty() {
            return Err(Error::invalid(field, format!("{name}.path: required (non-empty) for type {name}")));
        }
        if !(100..=599).contains(&http.expected_status) {
            return Err(Error::invalid(
                field,
                format!("{name}.expected_status: {} is not an HTTP status (100-599)", http.expected_status),
            ));
        }
    }
    Ok(())
}
