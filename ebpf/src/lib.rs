//! weir's BPF programs and their ABI.
//!
//! The programs are C (`bpf/`), compiled by clang-19 in `build.rs` and embedded
//! here as bytes, so the agent binary carries its datapath with it:
//! - [`BALANCER`]: the XDP load balancer (`balancer.bpf.c`), Katran's semantics;
//! - [`DECAP`]: the real-side XDP decapsulation program (`decap.bpf.c`);
//! - [`HEALTHCHECK`]: the TC egress program that tunnels health probes to
//!   reals as the balancer tunnels VIP traffic (`healthcheck.bpf.c`).
//!
//! [`abi`] is the Rust side of `bpf/weir_abi.h`: the weir-abi crate (with its
//! `aya` feature), re-exported, and the tests that compare it against the C
//! compiler's own layout, constants and map names.

pub mod abi;

/// The balancer's XDP object file. Its programs are [`BALANCER_PROGRAM`] and
/// [`BALANCER_DRY_PROGRAM`], which share its maps.
pub static BALANCER: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/balancer.bpf.o"));

/// The decapsulation program's XDP object file. Its program is [`DECAP_PROGRAM`].
pub static DECAP: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/decap.bpf.o"));

/// Name of the live XDP program in [`BALANCER`], the one attached.
pub const BALANCER_PROGRAM: &str = "weir_balancer";

/// Name of the query program in [`BALANCER`]: the same pipeline as
/// [`BALANCER_PROGRAM`], but dry — it counts nothing and never touches the
/// connection table. Never attached; run with BPF_PROG_TEST_RUN to ask where
/// a packet would go (real-for-flow).
pub const BALANCER_DRY_PROGRAM: &str = "weir_balancer_dry";

/// Name of the XDP program in [`DECAP`].
pub const DECAP_PROGRAM: &str = "weir_decap";

/// The healthcheck program's TC object file. Its program is [`HEALTHCHECK_PROGRAM`].
pub static HEALTHCHECK: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/healthcheck.bpf.o"));

/// Name of the TC classifier in [`HEALTHCHECK`].
pub const HEALTHCHECK_PROGRAM: &str = "weir_healthcheck";

/// A program that passes every packet: attached to a veth peer so that XDP_TX
/// frames on the other end are delivered (veth needs XDP on the receiving side).
pub static XDP_PASS: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/xdp_pass.bpf.o"));

/// Name of the program in [`XDP_PASS`].
pub const XDP_PASS_PROGRAM: &str = "weir_pass";
