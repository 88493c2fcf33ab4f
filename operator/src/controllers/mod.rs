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

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource};
use tokio::sync::Notify;

use crate::{Error, Result};

/// A reflector for `api` whose items are reduced to "something changed" (or the error).
pub(crate) fn reflect<K>(api: Api<K>, kind: &'static str) -> (Store<K>, BoxStream<'static, Result<()>>)
where
    K: Resource<DynamicType = ()> + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let events = reflector::reflector(writer, watcher(api, watcher::Config::default()).default_backoff());
    (store, events.map(move |r| r.map(drop).map_err(|source| Error::Watch { kind, source: Box::new(source) })).boxed())
}

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
