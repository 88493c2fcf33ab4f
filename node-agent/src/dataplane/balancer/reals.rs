//! Reals: batches of reals of a VIP, their flags, and their indices.

use std::collections::BTreeSet;
use std::net::IpAddr;

use weir_ebpf::abi::{self, RealDef};

use super::validation::{validate_real, validate_real_flags};
use super::{Balancer, RealAction, RealSpec};
use crate::dataplane::state::{Real, VipId};
use crate::{Error, Result};

impl Balancer {
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
                    self.maps.clear_real_counter(real.index)?;
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
                // A real new to the VIP starts with the default health; a
                // known one keeps its health and takes the new weight and flags.
                let vip = self.state.vips.get_mut(id).expect("checked above");
                let added: Vec<IpAddr> = reals.iter().map(|r| r.addr).filter(|a| !vip.reals.contains_key(a)).collect();
                vip.reals.extend(reals.iter().map(|r| (r.addr, r.weight)));
                self.start_health(id, &added);
                self.rebuild_ring(id)?;
            }
            RealAction::Delete => {
                let gone: Vec<IpAddr> = reals.iter().map(|r| r.addr).filter(|a| vip.reals.contains_key(a)).collect();
                let vip = self.state.vips.get_mut(id).expect("checked above");
                for addr in &gone {
                    vip.reals.remove(addr);
                }
                self.forget_health(id, &gone);
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

    /// Forgets reals no VIP uses any more. Their map entries stay as they were
    /// until the index is reused, so connections still in the table reach them.
    pub(super) fn release_reals(&mut self, addrs: impl Iterator<Item = IpAddr>) {
        for addr in addrs {
            if self.state.real_refs(addr) == 0 {
                self.state.reals.remove(&addr);
            }
        }
    }

    pub(super) fn write_real(&mut self, real: &Real) -> Result<()> {
        self.maps.put_real(real.index, RealDef::new(real.addr, real.flags))
    }
}
