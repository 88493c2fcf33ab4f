//! Garbage collection of BalancerNodes: a BalancerNode is named after its Node, and once
//! that Node is gone nobody else removes it (the agent that reported into it went with the
//! node), so the arbitration would keep counting it as a target of every VirtualService.
//!
//! Safety: nothing is deleted from a partial view. The loop starts only once both
//! reflectors (Nodes as metadata, BalancerNodes) have listed, and kube-runtime's stores
//! swap in a relist only when it completes. A candidate is confirmed with a GET of its
//! Node first (the Node watch may lag a BalancerNode an agent has just created), and
//! deleted with a precondition on its uid, so a BalancerNode recreated meanwhile stays.

use std::collections::HashSet;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::Notify;
use weir_crds::v1alpha1::BalancerNode;

use super::reflect;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::{Error, Result};

/// How long a burst of watch events (a node pool scaling down) may last before one pass.
const DEBOUNCE: Duration = Duration::from_millis(500);
/// How long to wait before retrying a pass whose deletion failed.
const RETRY: Duration = Duration::from_secs(5);

/// A BalancerNode to delete: its name and uid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Orphan {
    pub name: String,
    pub uid: String,
}

/// The BalancerNodes whose Node is not in `nodes` (pure: the decision, without a client).
/// Objects without a uid are skipped: without one the delete could not be made conditional.
pub fn orphans<'a>(
    nodes: impl IntoIterator<Item = &'a str>,
    balancer_nodes: impl IntoIterator<Item = &'a BalancerNode>,
) -> Vec<Orphan> {
    let nodes: HashSet<&str> = nodes.into_iter().collect();
    let mut out: Vec<Orphan> = balancer_nodes
        .into_iter()
        .filter(|bn| bn.meta().deletion_timestamp.is_none())
        .filter_map(|bn| {
            let name = bn.meta().name.as_deref()?;
            (!nodes.contains(name)).then(|| Some(Orphan { name: name.to_owned(), uid: bn.uid()? }))?
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// The controller's name in metrics and readiness.
pub const NAME: &str = "node_gc";

/// Deletes the BalancerNodes of gone Nodes until `shutdown` resolves. Every pass is a
/// reconcile in `metrics`; `health` learns when both stores have synced.
pub async fn run(
    client: Client,
    metrics: Metrics,
    health: Health,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let node_api = Api::<Node>::all(client.clone());
    let bn_api = Api::<BalancerNode>::all(client.clone());
    // Nodes as metadata only: their names are all the collection needs.
    let (nodes, node_events) = reflect(Api::<PartialObjectMeta<Node>>::all(client), "Node");
    let (balancer_nodes, bn_events) = reflect(bn_api.clone(), "BalancerNode");

    let wake = Arc::new(Notify::new());
    let watches = tokio::spawn(drive(stream::select_all([node_events, bn_events]), wake.clone()));
    let ready = async {
        nodes.wait_until_ready().await.map_err(|_| Error::StoreDropped { kind: "Node" })?;
        balancer_nodes.wait_until_ready().await.map_err(|_| Error::StoreDropped { kind: "BalancerNode" })
    };
    let mut shutdown = pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        r = ready => match r {
            Ok(()) => {
                health.synced(NAME);
                let gc = Collector { nodes, balancer_nodes, node_api, bn_api, metrics };
                gc.run(&wake, shutdown).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    watches.abort();
    result
}

async fn drive(mut events: impl futures::Stream<Item = Result<()>> + Unpin, wake: Arc<Notify>) {
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            // The watcher backs off and resumes by itself; the error is still reported.
            tracing::warn!(error = %e, label = e.metric_label(), "watch failed");
        }
        wake.notify_one();
    }
}

struct Collector {
    nodes: Store<PartialObjectMeta<Node>>,
    balancer_nodes: Store<BalancerNode>,
    node_api: Api<Node>,
    bn_api: Api<BalancerNode>,
    metrics: Metrics,
}

impl Collector {
    async fn run(&self, wake: &Notify, mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>) {
        let mut retry: Option<Duration> = Some(Duration::ZERO); // a first pass once the stores are ready
        while super::next_pass(wake, retry, DEBOUNCE, shutdown.as_mut()).await {
            let timer = self.metrics.start_reconcile(NAME);
            let result = self.collect().await;
            timer.finish(&result);
            retry = match result {
                Ok(()) => None,
                Err(e) => {
                    tracing::warn!(error = %e, label = e.metric_label(), "BalancerNode garbage collection failed");
                    Some(RETRY)
                }
            };
        }
    }

    /// One pass: every orphan is confirmed and deleted; the last failure is returned.
    async fn collect(&self) -> Result<()> {
        let nodes = self.nodes.state();
        let balancer_nodes = self.balancer_nodes.state();
        let candidates = orphans(
            nodes.iter().map(|n| n.meta().name.as_deref().unwrap_or_default()),
            balancer_nodes.iter().map(|bn| bn.as_ref()),
        );
        let mut failure = None;
        for orphan in candidates {
            if let Err(e) = self.delete(&orphan).await {
                tracing::warn!(error = %e, label = e.metric_label(), "deleting a BalancerNode failed");
                failure = Some(e);
            }
        }
        failure.map_or(Ok(()), Err)
    }

    async fn delete(&self, orphan: &Orphan) -> Result<()> {
        let failed = |source| Error::BalancerNodeDelete { name: orphan.name.clone(), source: Box::new(source) };
        // The store may lag: ask the server whether the Node is really gone.
        if self.node_api.get_metadata_opt(&orphan.name).await.map_err(failed)?.is_some() {
            return Ok(());
        }
        let preconditions = Preconditions { uid: Some(orphan.uid.clone()), resource_version: None };
        let params = DeleteParams { preconditions: Some(preconditions), ..DeleteParams::default() };
        match self.bn_api.delete(&orphan.name, &params).await {
            Ok(_) => {
                tracing::info!(balancer_node = %orphan.name, "deleted the BalancerNode of a gone Node");
                Ok(())
            }
            // Gone already, or replaced by a new object (uid precondition): nothing to do.
            Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
            Err(source) => Err(failed(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bn(name: &str, uid: Option<&str>, deleting: bool) -> BalancerNode {
        let mut meta = json!({"name": name});
        if let Some(uid) = uid {
            meta["uid"] = json!(uid);
        }
        if deleting {
            meta["deletionTimestamp"] = json!("2025-01-01T00:00:00Z");
        }
        serde_json::from_value(json!({
            "apiVersion": "lb.weir.dev/v1alpha1", "kind": "BalancerNode", "metadata": meta, "spec": {},
        }))
        .unwrap()
    }

    #[test]
    fn balancer_nodes_without_a_node_are_orphans() {
        let bns = [bn("n2", Some("u2"), false), bn("n1", Some("u1"), false), bn("gone", Some("u3"), false)];
        let found = orphans(["n1", "n2"], &bns);
        assert_eq!(found, [Orphan { name: "gone".into(), uid: "u3".into() }]);
        let found = orphans([], &bns);
        assert_eq!(found.iter().map(|o| o.name.as_str()).collect::<Vec<_>>(), ["gone", "n1", "n2"]);
    }

    #[test]
    fn deleting_or_uidless_objects_are_left_alone() {
        let bns = [bn("a", None, false), bn("b", Some("u"), true)];
        assert!(orphans([], &bns).is_empty());
    }
}
