//! weir-agent: the node agent that owns weir's XDP datapath on one node.
//!
//! Layout:
//! - [`dataplane`]: the [`Balancer`](dataplane::Balancer) API — the only way
//!   anything changes the datapath — and what it is built from: BPF map access
//!   (`maps`), Maglev rings (`maglev`), counters (`stats`), the real-side
//!   decapsulation program (`decap`), bpffs pinning (`pin`);
//! - [`error`]: the one error type, whose variants are the REST error codes;
//! - [`handles`]: what `api`, `cluster` and `metrics` share (the balancer handle,
//!   userspace counters, cluster ownership), so that none of them names another;
//! - [`api`]: katran-server's REST API over the Balancer;
//! - [`server`]: the HTTP server around it (flags, listener, TLS, security
//!   layers, request logging) and the standalone program;
//! - [`metrics`]: Prometheus metrics (API requests, the datapath's counters);
//! - [`cluster`]: cluster mode, the datapath programmed from the CRDs;
//! - [`prober`]: the built-in health checker (active probes of reals);
//! - [`probing`]: the prober driven by the Balancer's checks, its findings
//!   applied to the Balancer's health;
//! - `schemas`: the OpenAPI schemas of wire fields whose rules no Rust type says.

pub mod api;
pub mod cluster;
pub mod dataplane;
pub mod error;
pub mod handles;
pub mod metrics;
pub mod prober;
pub mod probing;
mod schemas;
pub mod server;

pub use error::{Error, Result};
