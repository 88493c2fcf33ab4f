//! What the API, the cluster sync and the metrics share, in a module below
//! all three so that none of them names another: the balancer handle, the
//! API's userspace counters, and what cluster mode owns.
//!
//! Layering (each names only those after it): `server` → `api`, `cluster`,
//! `metrics` → `probing` → `handles`, `prober` → `dataplane` → `error`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use crate::dataplane::{Balancer, VipId};
use crate::Error;

/// The balancer, once created (`POST /api/v1/lb/create`, `--config` or
/// cluster mode). A std lock, taken only off the async runtime: nobody holds
/// it across an await.
pub type SharedBalancer = Arc<RwLock<Option<Balancer>>>;

/// katran's `lb_stats` (`/stats/userspace`), counted by the API for real:
/// Balancer calls that failed with BPF_FAILED, and addresses that failed
/// validation (unparsable, or not a unicast address the Balancer accepts).
/// They live as long as the process (not the balancer), like the metrics.
#[derive(Debug, Default)]
pub struct UserspaceCounters {
    bpf_failed_calls: AtomicU64,
    addr_validation_failed: AtomicU64,
}

/// A reading of [`UserspaceCounters`]; the `/stats/userspace` data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct UserspaceStats {
    /// Balancer operations that failed in a BPF syscall (BPF_FAILED).
    pub bpf_failed_calls: u64,
    /// Addresses in requests that were not valid IP addresses, or not
    /// addresses the Balancer accepts (e.g. multicast VIPs).
    pub addr_validation_failed: u64,
}

impl UserspaceCounters {
    pub fn snapshot(&self) -> UserspaceStats {
        UserspaceStats {
            bpf_failed_calls: self.bpf_failed_calls.load(Ordering::Relaxed),
            addr_validation_failed: self.addr_validation_failed.load(Ordering::Relaxed),
        }
    }

    /// Counts a failed Balancer call by what failed.
    pub(crate) fn count(&self, err: &Error) {
        match err {
            Error::Bpf { .. } => {
                self.bpf_failed_calls.fetch_add(1, Ordering::Relaxed);
            }
            Error::InvalidAddress { .. } => self.count_bad_address(),
            _ => {}
        }
    }

    pub(crate) fn count_bad_address(&self) {
        self.addr_validation_failed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The balancer and the userspace counters: what the metrics read.
#[derive(Debug, Clone, Default)]
pub struct Datapath {
    pub balancer: SharedBalancer,
    pub counters: Arc<UserspaceCounters>,
}

/// Who owns what in cluster mode, as the API asks it: REST changes to what a
/// VirtualService owns are refused, naming the owner. The reconciler
/// implements it (`cluster`); the API sees only this.
pub trait Ownership: Send + Sync {
    /// The VirtualService (`namespace/name`) owning VIP `vip`.
    fn vip_owner(&self, vip: &VipId) -> Option<String>;
    /// The VirtualService whose plan decides the flags of real `addr`.
    fn real_owner(&self, addr: &IpAddr) -> Option<String>;
    /// Whether the datapath holds the cluster's state (readiness); `None`
    /// when finding out would wait (a sync pass holds the answer).
    fn try_synced(&self) -> Option<bool>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_by_kind() {
        let counters = UserspaceCounters::default();
        counters.count(&Error::bpf("write map weir_vips", std::io::Error::other("EPERM")));
        counters.count(&Error::bad_address("address", "224.0.0.1 is not a unicast address"));
        counters.count(&Error::bad_address("real address", "ff02::1 is not a unicast address"));
        counters.count(&Error::invalid("flags", "0x400"));
        counters.count(&Error::NotFound { what: "VIP".into() });
        assert_eq!(counters.snapshot(), UserspaceStats { bpf_failed_calls: 1, addr_validation_failed: 2 });
    }
}
