//! The operator's controllers.
//!
//! One arbitration controller rather than one per kind: `arbitrate` is a function of the
//! whole snapshot, and one object's change moves others' verdicts (deleting the older of two
//! conflicting VirtualServices accepts the newer one and its RealServers). Per-kind
//! controllers would have to map every event to every affected object and re-run the
//! arbitration once per object; one loop runs it once per burst of changes and writes only
//! the statuses that differ.
//!
//! Beside it: [`daemonset`], which keeps the node agent's DaemonSet as the operator's
//! configuration renders it (repairing edits and deletions), and [`node_gc`], which deletes
//! the BalancerNodes of Nodes that are gone.

pub mod arbitration;
pub mod daemonset;
pub mod node_gc;
