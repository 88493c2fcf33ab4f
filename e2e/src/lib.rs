//! weir's end-to-end test library: real packets through Linux network
//! namespaces, for the integration tests (`e2e/tests/`) and the demo.
//!
//! # Layout
//!
//! - [`netns`]: [`Netns`], one named network namespace (`ip netns add`), deleted
//!   on drop. Rust code runs inside it on a thread switched in with `setns(2)`
//!   ([`Netns::run`], [`Netns::spawn`]); commands run through `ip -n` /
//!   `ip netns exec` ([`Netns::ip`], [`Netns::sh`]).
//! - [`topology`]: [`Topology`], the test network. A router namespace is the
//!   hub; the client, the balancer host (`lb`) and the reals (`real0`..) each hang
//!   off it on their own veth pair:
//!
//!   ```text
//!                 client (link 1)
//!                    |
//!   lb (link 2) -- router -- real0 (link 10), real1 (link 11), ...
//!   ```
//!
//!   Link `L` uses `10.200.L.0/24` and `fd00:200:L::/64` (L written in decimal in
//!   both), the router is `.1`/`::1` and the host `.2`/`::2`. The VIPs
//!   ([`VIP_V4`], [`VIP_V6`]) sit on every real's `lo`; the router routes them
//!   (and the encapsulation source ranges) to the lb, whose XDP balancer
//!   encapsulates them towards a real; the real's XDP decapsulates and its TCP
//!   stack answers the client directly through the router.
//! - [`lb`]: weir's Balancer attached to a topology's lb host.
//! - [`rest`]: weir-agent's HTTP API in the lb namespace, and a client for it.
//! - [`tcp`]: small TCP servers and clients with timeouts, so a broken datapath
//!   fails a test in seconds instead of hanging it.
//!
//! Everything needs root; tests call [`skip_unless_root`] first.

pub mod lb;
pub mod netns;
pub mod rest;
pub mod tcp;
pub mod topology;

pub use netns::Netns;
pub use tcp::{connect_once, serve, serve_long_lived, Conn, Server, DEFAULT_TIMEOUT};
pub use topology::{Host, Topology, TopologyConfig, ENCAP_SRC_V4, ENCAP_SRC_V6, VIP_V4, VIP_V6};

pub use weir_test_support::skip_unless_root;
