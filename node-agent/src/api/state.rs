//! How handlers reach the balancer (and count katran's userspace counters).
//!
//! Every Balancer call of a handler goes through [`ApiState::read`],
//! [`ApiState::write`], [`ApiState::write_vip`] or [`ApiState::write_real`]:
//! they run the call on tokio's blocking pool ([`ApiState::blocking`]), take
//! the lock only for the call, answer 503 LB_NOT_INITIALIZED before
//! `/lb/create`, and count failures for `/stats/userspace`. The async
//! runtime has as many workers as cores (two on a small node): a handler that
//! waited for the lock on one of them (behind a create that runs the
//! verifier, or a purge of a large table) would stall every other request,
//! `/health` included. The `blocking_*` forms are the same calls for code
//! that already runs off the runtime (creating from a document, a purge's
//! chunks).
use std::net::IpAddr;
use std::sync::{PoisonError, RwLockReadGuard, RwLockWriteGuard};

use super::error::ApiError;
use super::types::VipKey;
use super::ApiState;
use crate::dataplane::{Balancer, VipId};
use crate::Error;

impl ApiState {
    /// Runs `f` on tokio's blocking pool, where waiting for the balancer's
    /// lock or a BPF syscall stalls no other request. A panic in `f` is
    /// resumed here, so the server answers it as any handler's panic (500).
    pub(crate) async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&ApiState) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let state = self.clone();
        match tokio::task::spawn_blocking(move || f(&state)).await {
            Ok(result) => result,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(ApiError::internal(format!("the balancer call did not run: {e}"))),
        }
    }

    /// Runs `f` on the balancer under the read lock, off the runtime.
    pub(crate) async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Balancer) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.blocking(move |state| state.blocking_read(f)).await
    }

    /// Runs `f` on the balancer under the write lock, off the runtime.
    pub(crate) async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Balancer) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.blocking(move |state| state.blocking_write(f)).await
    }

    /// [`Self::write`] for a change to VIP `vip`: refused (409 CLUSTER_OWNED,
    /// naming the VirtualService) when cluster mode owns it.
    pub(crate) async fn write_vip<T: Send + 'static>(
        &self,
        vip: VipId,
        f: impl FnOnce(&mut Balancer) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.blocking(move |state| state.blocking_write_vip(&vip, f)).await
    }

    /// [`Self::write`] for a change to real address `addr`'s flags: refused
    /// when a VirtualService's plan decides them.
    pub(crate) async fn write_real<T: Send + 'static>(
        &self,
        addr: IpAddr,
        f: impl FnOnce(&mut Balancer) -> crate::Result<T> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.blocking(move |state| {
            let mut guard = state.write_lock();
            let lb = guard.as_mut().ok_or_else(ApiError::not_initialized)?;
            if let Some(owner) = state.cluster.as_ref().and_then(|c| c.real_owner(&addr)) {
                return Err(ApiError::cluster_owned(format!(
                    "real {addr} serves VirtualService {owner}: its flags come from the cluster, change its RealServer"
                )));
            }
            f(lb).map_err(|e| state.failed(e))
        })
        .await
    }

    /// [`Self::read`] for code already off the runtime.
    pub(crate) fn blocking_read<T>(&self, f: impl FnOnce(&Balancer) -> crate::Result<T>) -> Result<T, ApiError> {
        let guard = self.read_lock();
        let lb = guard.as_ref().ok_or_else(ApiError::not_initialized)?;
        f(lb).map_err(|e| self.failed(e))
    }

    /// [`Self::write`] for code already off the runtime.
    pub(crate) fn blocking_write<T>(&self, f: impl FnOnce(&mut Balancer) -> crate::Result<T>) -> Result<T, ApiError> {
        let mut guard = self.write_lock();
        let lb = guard.as_mut().ok_or_else(ApiError::not_initialized)?;
        f(lb).map_err(|e| self.failed(e))
    }

    /// [`Self::write_vip`] for code already off the runtime.
    pub(crate) fn blocking_write_vip<T>(
        &self,
        vip: &VipId,
        f: impl FnOnce(&mut Balancer) -> crate::Result<T>,
    ) -> Result<T, ApiError> {
        let mut guard = self.write_lock();
        let lb = guard.as_mut().ok_or_else(ApiError::not_initialized)?;
        // The balancer's lock, then the reconciler's: the cluster sync's order.
        if let Some(owner) = self.cluster.as_ref().and_then(|c| c.vip_owner(vip)) {
            return Err(ApiError::cluster_owned(format!(
                "VIP {vip} is owned by VirtualService {owner}: change the VirtualService, not the node"
            )));
        }
        f(lb).map_err(|e| self.failed(e))
    }

    /// The read guard, for code off the runtime (it waits for writers). A
    /// handler that panicked while holding the lock (the server turns that
    /// into a 500) poisons it; the Balancer checks requests
    /// before changing anything, so carrying on beats refusing every request
    /// until a restart.
    pub(crate) fn read_lock(&self) -> RwLockReadGuard<'_, Option<Balancer>> {
        self.balancer.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// The write guard (see [`Self::read_lock`] about poisoning).
    pub(crate) fn write_lock(&self) -> RwLockWriteGuard<'_, Option<Balancer>> {
        self.balancer.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// A Balancer error as the API answers it, counted.
    pub(crate) fn failed(&self, err: Error) -> ApiError {
        self.counters.count(&err);
        err.into()
    }

    /// Parses the IP address in request field `field`.
    pub(crate) fn ip(&self, field: &str, text: &str) -> Result<IpAddr, ApiError> {
        text.parse().map_err(|_| {
            self.counters.count_bad_address();
            ApiError::invalid(format!("{field}: {text:?} is not an IP address"))
        })
    }

    /// The VIP a request names; `prefix` is where the key sits in the
    /// request (`""` at the top, `"vip."` nested), for error messages.
    pub(crate) fn vip_id(&self, prefix: &str, key: &VipKey) -> Result<VipId, ApiError> {
        self.vip_of(prefix, &key.address, key.port, key.proto)
    }

    /// [`Self::vip_id`] for requests that carry the key's fields inline.
    pub(crate) fn vip_of(&self, prefix: &str, address: &str, port: u16, proto: u8) -> Result<VipId, ApiError> {
        Ok(VipId { addr: self.ip(&format!("{prefix}address"), address)?, port, proto })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_are_counted() {
        let state = ApiState::default();
        assert!(state.ip("src_ip", "10.0.0.1").is_ok());
        assert_eq!(state.ip("src_ip", "10.0.0").unwrap_err().message, "src_ip: \"10.0.0\" is not an IP address");
        assert_eq!(state.counters.snapshot().addr_validation_failed, 1);
    }
}
