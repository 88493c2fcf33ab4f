//! Counters as the API reports them: Katran's `{v1, v2}` pairs, summed over
//! CPUs. What v1 and v2 mean for each counter is documented on
//! [`weir_ebpf::abi::Stat`]'s C twin in `weir_abi.h`.

use weir_ebpf::abi::LbCounter;

/// A counter pair summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counter {
    pub v1: u64,
    pub v2: u64,
}

impl From<LbCounter> for Counter {
    fn from(c: LbCounter) -> Self {
        Self { v1: c.v1, v2: c.v2 }
    }
}
