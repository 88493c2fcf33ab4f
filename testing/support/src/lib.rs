//! What weir's tests and benchmarks share, so that each is written once:
//!
//! - the root check ([`is_root`], [`skip_unless_root`]): tests that load BPF
//!   programs or create network namespaces skip loudly when not root;
//! - [`bench`]: nearest-rank quantiles, medians and the number formats of the
//!   benchmarks' human lines and JSON reports;
//! - [`packet`]: the frames of the datapath's packet tables, benchmarks and
//!   e2e probes, and the readers their assertions need.
//!
//! A dev-dependency (the e2e crate, itself a test crate, depends on it
//! normally); weir's shipped binaries never depend on it.

pub mod bench;
pub mod packet;

/// True when the process runs with effective user id 0.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// True (after printing `SKIPPED (needs root): <test>` to stderr) when the
/// process is not root, so a test can return early without silently passing.
pub fn skip_unless_root(test: &str) -> bool {
    if is_root() {
        return false;
    }
    // Straight to the stderr handle, not `eprintln!`: the test harness
    // captures the macros' output and would hide the skip.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED (needs root): {test}");
    true
}
