//! weir-agent: the node agent that owns weir's XDP datapath on one node.
//!
//! Layout:
//! - [`dataplane`]: the [`Balancer`](dataplane::Balancer) API — the only way
//!   anything changes the datapath — and what it is built from: BPF map access
//!   (`maps`), Maglev rings (`maglev`), counters (`stats`), the real-side
//!   decapsulation program (`decap`), bpffs pinning (`pin`);
//! - [`error`]: the one error type, whose variants are the REST error codes;
//! - [`api`]: katran-server's REST API over the Balancer.

pub mod api;
pub mod dataplane;
pub mod error;

pub use error::{Error, Result};
