//! weir-operator: arbitrates weir's CRDs and rolls per-node status up into them.
//!
//! Layout:
//! - [`controllers::arbitration`]: the one controller of this slice. It watches
//!   VirtualServices, RealServers, BalancerNodes and Nodes (kube-runtime reflectors), and on
//!   any change runs [`weir_crds::validation::arbitrate`] over the whole snapshot, then
//!   server-side applies the status of every object whose status changed;
//! - [`desired`]: the pure part — snapshot in, the statuses to write (and the rejections to
//!   announce as Events) out; no client, unit-tested;
//! - `fixtures` (tests only): builders for test objects.
//!
//! Not in this slice — TODO(#4): leader election (Lease), the node-agent DaemonSet manager
//! (and removal of BalancerNodes of gone nodes), `/metrics` and health endpoints.

use std::future::Future;
use std::sync::Arc;

pub mod controllers;
pub mod desired;
#[cfg(test)]
mod fixtures;

pub use controllers::arbitration::Context;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "weir-operator";

/// The crate's one error type. Library errors are boxed: `kube::Error` is large, and this
/// type travels through every watch stream item.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Server-side apply of an object's status failed.
    #[error("applying status of {kind} {key}: {source}")]
    StatusApply {
        kind: &'static str,
        key: weir_crds::validation::ObjectKey,
        #[source]
        source: Box<kube::Error>,
    },
    /// Publishing a Kubernetes Event failed.
    #[error("publishing event for {kind} {key}: {source}")]
    Event {
        kind: &'static str,
        key: weir_crds::validation::ObjectKey,
        #[source]
        source: Box<kube::Error>,
    },
    /// A watch failed (the watcher backs off and retries by itself).
    #[error("watching {kind}: {source}")]
    Watch {
        kind: &'static str,
        #[source]
        source: Box<kube::runtime::watcher::Error>,
    },
    /// A reflector's writer went away before its store became ready.
    #[error("the {kind} store was dropped before it became ready")]
    StoreDropped { kind: &'static str },
    /// A status could not be serialized.
    #[error("serializing status: {0}")]
    Serialize(#[source] serde_json::Error),
}

impl Error {
    /// A short, stable label for failure metrics (TODO(#4): the metrics themselves).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::StatusApply { .. } => "status_apply",
            Error::Event { .. } => "event",
            Error::Watch { .. } => "watch",
            Error::StoreDropped { .. } => "store_dropped",
            Error::Serialize(_) => "serialize",
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Runs every controller of the operator until `shutdown` resolves.
pub async fn run(client: kube::Client, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let ctx = Arc::new(Context::new(client));
    controllers::arbitration::run(ctx, shutdown).await
}
