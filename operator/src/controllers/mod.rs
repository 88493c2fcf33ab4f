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

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::Notify;

/// The wait of every controller loop here: until a watch event (then `debounce` more, so
/// that a burst of events makes one pass), until `retry` elapses when one is set, or until
/// `shutdown` (then false: the loop ends).
pub(crate) async fn next_pass(
    wake: &Notify,
    retry: Option<Duration>,
    debounce: Duration,
    shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
) -> bool {
    tokio::select! {
        () = shutdown => false,
        () = wake.notified() => {
            tokio::time::sleep(debounce).await;
            true
        }
        () = tokio::time::sleep(retry.unwrap_or_default()), if retry.is_some() => true,
    }
}
