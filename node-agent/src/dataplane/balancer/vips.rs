//! VIPs: adding and deleting them, their flags, hash function and ring.

use std::collections::BTreeMap;

use weir_ebpf::abi::{self, VipFilter, VipMeta};

use super::validation::{validate_vip_flags, validate_vip_id};
use super::{vip_info, vip_key, Balancer, VipInfo, VipSpec};
use crate::dataplane::maglev::{self, Endpoint, HashFunction};
use crate::dataplane::state::{State, Vip, VipId};
use crate::{Error, Result};

impl Balancer {
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
            unhealthy: Default::default(),
            health_check: None,
        };
        // A reused vip_num starts with an empty ring and zeroed counters.
        self.maps.put_ring(vip_num, &vec![abi::REAL_NONE; self.config.ch_ring_size as usize])?;
        self.maps.clear_vip_counter(vip_num)?;
        self.write_vip_meta(&vip)?;
        self.state.vips.insert(spec.id, vip);
        self.write_filter(abi::vip_filter_bucket(spec.id.addr))?;
        self.save()
    }

    pub fn del_vip(&mut self, id: &VipId) -> Result<()> {
        let vip = self.vip(id)?.clone();
        self.state.vips.remove(id);
        self.write_filter(abi::vip_filter_bucket(id.addr))?;
        self.maps.del_vip(&vip_key(id))?;
        self.maps.put_ring(vip.vip_num, &vec![abi::REAL_NONE; self.config.ch_ring_size as usize])?;
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

    pub(super) fn rebuild_ring(&mut self, id: &VipId) -> Result<()> {
        let vip = &self.state.vips[id];
        self.maps.put_ring(vip.vip_num, &ring_of(vip, &self.state, self.config.ch_ring_size))?;
        Ok(())
    }

    pub(super) fn write_vip_meta(&mut self, vip: &Vip) -> Result<()> {
        let meta = VipMeta { flags: vip.flags, vip_num: vip.vip_num, conn_tag: vip.conn_tag };
        self.maps.put_vip(vip_key(&vip.id), meta)
    }

    /// Rewrites one bucket of the VIP address filter from the VIPs that exist.
    pub(super) fn write_filter(&mut self, bucket: u32) -> Result<()> {
        let mut filter = VipFilter::default();
        for id in self.state.vips.keys().filter(|id| abi::vip_filter_bucket(id.addr) == bucket) {
            filter.vips += 1;
            filter.portless += u32::from(id.port == 0);
        }
        self.maps.put_filter(bucket, filter)
    }
}

/// The Maglev ring of a VIP from its healthy reals' addresses and weights
/// (from all of them when none is healthy: fail open).
pub(super) fn ring_of(vip: &Vip, state: &State, ring_size: u32) -> Vec<u32> {
    let fail_open = vip.fail_open();
    let endpoints: Vec<Endpoint> = vip
        .reals
        .iter()
        .filter(|(addr, _)| fail_open || vip.is_healthy(addr))
        .map(|(addr, weight)| Endpoint {
            index: state.reals[addr].index,
            weight: *weight,
            key: maglev::endpoint_key(*addr),
        })
        .collect();
    maglev::build_ring(&endpoints, ring_size, vip.hash)
}
