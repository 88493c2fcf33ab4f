//! What the Balancer accepts: configurations, VIPs, reals and their flags.
//! Every check runs before anything changes.

use std::net::IpAddr;

use weir_abi::{Protocol, RealFlags, VipFlags};
use weir_ebpf::abi;

use super::{RealSpec, VipId};
use crate::dataplane::config::{self, BalancerConfig};
use crate::dataplane::pin;
use crate::{Error, Result};

/// The connection table's size in the kernel for `lru_size` entries: a hash
/// with per-CPU LRU lists holds a multiple of the possible CPUs (the kernel
/// rounds up), and adopted pins are checked against that.
pub(super) fn conn_entries(lru_size: u32) -> Result<u32> {
    let cpus = aya::util::nr_cpus().map_err(|(op, e)| Error::system(op, e))? as u32;
    Ok(lru_size.div_ceil(cpus) * cpus)
}

pub(super) fn validate_config(c: &BalancerConfig) -> Result<()> {
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
    if !c.testing && c.default_mac == [0; 6] {
        return Err(Error::invalid("default_mac", "required (the default router's MAC) unless testing"));
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

pub(super) fn validate_vip_id(id: &VipId) -> Result<()> {
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
pub(super) fn validate_vip_flags(flags: u32) -> Result<()> {
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

pub(super) fn validate_real(vip: &VipId, real: &RealSpec) -> Result<()> {
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

pub(super) fn validate_real_flags(addr: IpAddr, flags: u8) -> Result<()> {
    if flags & !RealFlags::all().bits() != 0 {
        return Err(Error::invalid("real flags", format!("{flags:#x} has bits no real flag uses")));
    }
    if flags & abi::REAL_F_IPV6 != 0 && addr.is_ipv4() {
        return Err(Error::invalid("real flags", format!("IPV6 (1) set for the IPv4 address {addr}")));
    }
    Ok(())
}
