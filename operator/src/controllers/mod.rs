//! The operator's controllers.
//!
//! One arbitration controller rather than one per kind: `arbitrate` is a function of the
//! whole snapshot, and one object's change moves others' verdicts (deleting the older of two
//! conflicting VirtualServices accepts the newer one and its RealServers). Per-kind
//! controllers would have to map every event to every affected object and re-run the
//! arbitration once per object; one loop runs it once per burst of changes and writes only
//! the statuses that differ.
//!
//! TODO(#4): `daemonset.rs` (node-agent DaemonSet manager) and `leader.rs`.

pub mod arbitration;
