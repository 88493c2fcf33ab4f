//! The cluster sync loop: kube-runtime reflectors for VirtualService,
//! RealServer (all namespaces) and the agent's own Node; on every change (bursts
//! coalesced) `weir_crds::validation::resolve` recomputes the node's plan and
//! the [`Reconciler`] applies the diff to the shared Balancer.
//!
//! Nothing is applied until all three reflectors have listed once, so a
//! partial view never deletes VIPs. VirtualServices and RealServers are listed
//! as [`Lenient`]: a stored object the current types reject (e.g. a protocol
//! the enum no longer has) is left out of the plan instead of failing every
//! list, so the node still becomes ready and programs the others. A missing Node object means no labels
//! (VirtualServices without a node selector are still programmed). Capacity
//! comes from the Balancer's configuration. Failed ops, and a Balancer not
//! created yet, are retried with exponential backoff ([`RETRY_MIN`] to
//! [`RETRY_MAX`]); watch errors are retried by kube-runtime's default backoff.
//!
//! After every pass the node's BalancerNode status is written (only when it
//! changed; see [`status`](super::status)); a failed write is retried like a
//! failed op. Health changes with no watch event (the prober demotes and
//! promotes reals in the Balancer): every [`HEALTH_TICK`] the loop looks at
//! [`Balancer::generation`](crate::dataplane::Balancer::generation) (and
//! `instance`, which tells a re-created Balancer), and a Balancer that
//! changed since the last pass gets a pass of its own (its diff
//! is empty unless something else moved; its status carries the new health).
//!
//! Restart: before the first pass the loop reads the node's BalancerNode
//! status (the agent's own record) and adopts the VIPs of the VirtualServices
//! it lists as programmed ([`Reconciler::adopt`]), so an adopted datapath is
//! reconciled, not treated as REST-created; and it restores the status's
//! conditions ([`status::Writer::restore`]), so a `Ready` that did not change
//! across the restart keeps its `lastTransitionTime`.
//!
//! Lock order: the Balancer's lock, then the Reconciler's.

use std::collections::{BTreeMap, BTreeSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{FutureExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use weir_crds::lenient::Lenient;
use weir_crds::v1alpha1::{BalancerNode, BalancerNodeStatus, ProgrammedVirtualService, RealServer, VirtualService};
use weir_crds::validation::{resolve, Capacity, NodeInfo, ObjectKey};

use super::{status, Reconciler};
use crate::handles::SharedBalancer;

/// First retry delay after a failed pass.
pub const RETRY_MIN: Duration = Duration::from_millis(100);
/// Longest retry delay.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// How often the loop looks for Balancer changes it did not make (health).
pub const HEALTH_TICK: Duration = Duration::from_secs(1);

type Triggers = Pin<Box<dyn Stream<Item = ()> + Send>>;

fn trigger<K>(api: Api<K>, config: watcher::Config, what: &'static str) -> (Store<K>, Triggers)
where
    K: kube::Resource<DynamicType = ()> + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let stream = watcher(api, config).default_backoff().reflect(writer).map(move |event| {
        if let Err(e) = event {
            tracing::warn!(what, error = %e, "cluster watch error");
        }
    });
    (store, stream.boxed())
}

fn ready<K: kube::Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> bool {
    matches!(store.wait_until_ready().now_or_never(), Some(Ok(())))
}

/// Runs until the watch streams end (in practice: until the task is dropped).
pub async fn run(client: Client, node_name: String, balancer: SharedBalancer, reconciler: Arc<Mutex<Reconciler>>) {
    // Lenient: one stored object the types reject must not fail the whole list.
    let (vss, vs_events) =
        trigger(Api::<Lenient<VirtualService>>::all(client.clone()), watcher::Config::default(), "vs");
    let (rss, rs_events) = trigger(Api::<Lenient<RealServer>>::all(client.clone()), watcher::Config::default(), "rs");
    let node_config = watcher::Config::default().fields(&format!("metadata.name={node_name}"));
    let before = status_before(&client, &node_name).await;
    let mut programmed = Some(before.as_ref().map(|s| s.virtual_services.clone()).unwrap_or_default());
    let (nodes, node_events) = trigger(Api::<Node>::all(client.clone()), node_config, "node");
    let mut writer = status::Writer::new(client, node_name);
    if let Some(before) = before {
        writer.restore(before);
    }
    let mut triggers = futures::stream::select_all([vs_events, rs_events, node_events]);
    let mut retry: Option<Duration> = None;
    let mut tick = tokio::time::interval(HEALTH_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The Balancer's (instance, generation) after the last pass.
    let mut seen: Option<(u64, u64)> = None;
    loop {
        let delay = retry.unwrap_or(RETRY_MAX);
        tokio::select! {
            event = triggers.next() => {
                if event.is_none() {
                    return;
                }
                // Coalesce what is already queued into one pass.
                while let Some(Some(())) = triggers.next().now_or_never() {}
            }
            () = tokio::time::sleep(delay), if retry.is_some() => {}
            _ = tick.tick() => {
                if !moved(&balancer, seen) {
                    continue;
                }
            }
        }
        if !(ready(&vss) && ready(&rss) && ready(&nodes)) {
            continue;
        }
        let node = nodes.state().first().cloned();
        let labels = node.as_ref().and_then(|n| n.metadata.labels.clone()).unwrap_or_default();
        let conditions = writer.conditions().to_vec();
        let reported = writer.programmed().to_vec();
        let frozen = unreadable(&vss.state());
        // Balancer calls block (the lock, BPF syscalls): off the runtime's workers.
        let (vs, rs) = (decoded(&vss.state()), decoded(&rss.state()));
        let (lb, rec, mut adopt) = (balancer.clone(), reconciler.clone(), programmed);
        let (outcome, left) = tokio::task::spawn_blocking(move || {
            let before = Before { programmed: &mut adopt, conditions: &conditions, reported: &reported, frozen };
            (pass(&lb, &rec, &vs, &rs, labels, before), adopt)
        })
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        programmed = left;
        let mut ok = outcome.as_ref().is_some_and(|(ok, _, _)| *ok);
        if let Some((_, status, generation)) = outcome {
            seen = Some(generation);
            if let Err(e) = writer.write(&status, node.as_deref()).await {
                tracing::warn!(error = %e, "cannot write the BalancerNode status");
                ok = false;
            }
        }
        retry = if ok { None } else { Some(retry.map_or(RETRY_MIN, |d| (d * 2).min(RETRY_MAX))) };
    }
}

/// What tells one state of the Balancer from another.
fn version(lb: &crate::dataplane::Balancer) -> (u64, u64) {
    (lb.instance(), lb.generation())
}

/// Whether the Balancer changed since `seen` (see [`version`]) (a Balancer busy now
/// is looked at on the next tick: this runs on the async runtime and must not
/// wait for its lock).
fn moved(balancer: &SharedBalancer, seen: Option<(u64, u64)>) -> bool {
    let differs = |lb: &Option<crate::dataplane::Balancer>| lb.as_ref().is_some_and(|lb| Some(version(lb)) != seen);
    match balancer.try_read() {
        Ok(guard) => differs(&guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => differs(&poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => false,
    }
}

/// The objects that decode; the others are left out of the plan, as rejected objects are
/// (the operator marks them `Accepted=False InvalidSpec`).
fn decoded<K: Clone>(objects: &[Arc<Lenient<K>>]) -> Vec<Arc<K>> {
    objects.iter().filter_map(|o| o.valid().cloned().map(Arc::new)).collect()
}

/// The VirtualServices that exist but do not decode: their VIPs are kept as
/// they are ([`Reconciler::freeze`]).
fn unreadable(objects: &[Arc<Lenient<VirtualService>>]) -> BTreeSet<ObjectKey> {
    objects
        .iter()
        .filter_map(|o| o.invalid())
        .map(|i| {
            ObjectKey::new(
                i.metadata.namespace.clone().unwrap_or_default(),
                i.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect()
}

/// What a pass starts from besides the objects: the VirtualServices to adopt
/// (the first pass after a start, then `None`), the conditions and the
/// VirtualServices last reported, and those that cannot be read.
struct Before<'a> {
    programmed: &'a mut Option<Vec<ProgrammedVirtualService>>,
    conditions: &'a [Condition],
    reported: &'a [ProgrammedVirtualService],
    frozen: BTreeSet<ObjectKey>,
}

/// The node's BalancerNode status as the previous agent left it (`None` when
/// there is none, or it cannot be read).
async fn status_before(client: &Client, node_name: &str) -> Option<BalancerNodeStatus> {
    match Api::<BalancerNode>::all(client.clone()).get_opt(node_name).await {
        Ok(node) => node.and_then(|n| n.status),
        Err(e) => {
            tracing::warn!(error = %e, "cannot read BalancerNode {node_name}: adopting nothing");
            None
        }
    }
}

/// One resolve + reconcile: whether nothing is left to retry, the node's
/// status after it and the Balancer's [`version`] then; `None` without a
/// Balancer. The first pass with a Balancer
/// adopts `programmed` (then cleared).
fn pass(
    balancer: &SharedBalancer,
    reconciler: &Mutex<Reconciler>,
    vss: &[Arc<VirtualService>],
    rss: &[Arc<RealServer>],
    labels: BTreeMap<String, String>,
    before: Before<'_>,
) -> Option<(bool, BalancerNodeStatus, (u64, u64))> {
    let mut guard = balancer.write().unwrap_or_else(|e| e.into_inner());
    let Some(lb) = guard.as_mut() else {
        tracing::debug!("cluster sync: no balancer yet");
        return None;
    };
    let capacity = Capacity { max_vips: lb.config().max_vips, max_reals: lb.config().max_reals };
    let plan = resolve(vss.iter().map(|v| &**v), rss.iter().map(|r| &**r), &NodeInfo { labels, capacity }).plan;
    let mut reconciler = reconciler.lock().unwrap_or_else(|e| e.into_inner());
    reconciler.freeze(before.frozen);
    if let Some(programmed) = before.programmed.take() {
        reconciler.adopt(&plan, &programmed, lb);
    }
    let report = reconciler.reconcile(&plan, lb);
    if !report.ops.is_empty() {
        tracing::info!(ops = report.ops.len(), errors = report.errors.len(), "cluster sync applied");
    }
    for e in &report.errors {
        tracing::warn!(vip = %e.op.vip(), error = %e.error, "cluster sync op failed");
    }
    for c in &report.conflicts {
        tracing::warn!(vip = %c.vip, owner = %c.owner, "VIP exists outside cluster mode; VirtualService not programmed");
    }
    let ok = report.errors.is_empty();
    reconciler.mark_synced();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let status = status::node_status(lb, &plan, &report, &reconciler, before.conditions, before.reported, now);
    Some((ok, status, version(lb)))
}
