//! weir's ABI: every fact the datapath, the agent and the CRDs must agree on,
//! defined once.
//!
//! - [`flags`]: VIP and real flags ([`VipFlags`], [`RealFlags`]), Katran's bits and names;
//! - [`protocol`]: the VIP protocols ([`Protocol`]), their numbers and names;
//! - [`hash`]: the consistent-hash functions ([`HashFunction`]) and their Katran ids;
//! - [`address`]: which addresses can be a VIP or a real ([`check_unicast`]);
//! - [`stats`]: the counters ([`Stat`], [`DecapStat`]) and what their v1 and v2 count;
//! - [`map`], [`global`]: the names of the maps and load-time globals;
//! - [`layout`]: the `#[repr(C)]` map keys and values, and the datapath's constants.
//!
//! The C header `ebpf/bpf/weir_abi.h` is the datapath's side of the same facts.
//! weir-ebpf's tests compare this crate with what the C compiler makes of that
//! header (sizes, offsets, constants, flag and counter names, map names), so
//! the two cannot drift.
//!
//! No aya dependency: the CRD crate uses the typed values without a BPF loader.
//! The `aya` feature adds `aya::Pod` for the map structs; `serde` and
//! `schemars` add what the CRDs and the agent's saved state need.

pub mod address;
pub mod flags;
pub mod hash;
pub mod layout;
pub mod map;
#[cfg(feature = "aya")]
mod pod;
pub mod protocol;
pub mod stats;

pub use address::{check_unicast, AddressError};
pub use flags::{RealFlags, VipFlags};
pub use hash::HashFunction;
// The structs and constants keep their old paths (`weir_ebpf::abi::VipKey`):
// a glob, as they are many and all belong at the top.
pub use layout::*;
pub use protocol::Protocol;
pub use stats::{CounterInfo, DecapStat, Half, HalfInfo, Origin, Stat};
