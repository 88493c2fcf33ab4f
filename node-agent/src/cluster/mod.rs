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
//! - [`health`]: each VIP's health check as the Balancer stores it (`dummy`
//!   without `spec.healthCheck`), and the health read back for the status;
//! - [`status`]: the node's BalancerNode status (what is programmed, capacity,
//!   `Ready`), written after every pass; a restarted agent reads it back to
//!   adopt its VIPs ([`Reconciler::adopt`]).
//!
//! `weir-agent --cluster` (`server::serve`) creates the balancer and
//! runs [`watch::run`]; the REST API refuses changes to the VIPs the
//! [`Reconciler`] owns ([`Reconciler::owner`]).

pub mod health;
pub mod reconcile;
pub mod status;
pub mod watch;

pub use reconcile::{apply, diff, observe, Conflict, Diff, ObservedVip, Op, OpError, Reconciler, Report};
