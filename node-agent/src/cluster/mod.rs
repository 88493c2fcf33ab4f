//! Cluster mode: the agent programs its datapath from the VirtualService and
//! RealServer objects, through the same [`Balancer`](crate::dataplane::Balancer)
//! API the REST handlers use.
//!
//! - [`reconcile`]: the pure diff between a node's
//!   [`NodePlan`](weir_crds::validation::NodePlan) and what the Balancer holds
//!   ([`diff`]), applying it ([`apply`]), and the [`Reconciler`] that remembers
//!   which VIPs cluster mode owns;
//! - [`watch`]: the sync loop ([`watch::run`]): reflectors for VirtualService,
//!   RealServer and the node's own Node, `resolve` on every change, the diff
//!   applied with backoff on errors.
//!
//! TODO(#4): the `--cluster` flags and wiring in `server`; the BalancerNode
//! status writer (restart adoption reads it: [`Reconciler::adopt`]); the REST
//! refusal of changes to VIPs a VirtualService owns ([`Reconciler::owner`] is
//! the lookup for it); a VIP whose VirtualService changed address while the
//! agent was down is not adopted and stays behind as unowned.

pub mod reconcile;
pub mod status;
pub mod watch;

pub use reconcile::{apply, diff, observe, Conflict, Diff, ObservedVip, Op, OpError, Reconciler, Report};
