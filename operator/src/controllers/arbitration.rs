//! The arbitration controller: reflectors over VirtualServices, RealServers, BalancerNodes
//! and Nodes (metadata only) wake one loop; after a short debounce it takes a snapshot,
//! computes [`crate::desired::plan`], server-side applies each changed status (field
//! manager [`FIELD_MANAGER`]) and publishes an Event for each new rejection and each health
//! transition (a RealServer turning unhealthy or healthy again, a VirtualService failing
//! open or no longer).
//!
//! Write loops: an object is written only when its desired status differs from its stored
//! one; and because our own write reaches the store a moment later, a status we applied in
//! the last `RECENT` (5 s) is not applied again while the store still shows the old one.
//!
//! Metrics: every pass is counted and timed under the controller label [`NAME`], its failure
//! labelled by [`crate::Error::metric_label`]; each pass also refreshes the object counts.
//!
//! TODO(#4): a benchmark at 1,000 VirtualServices × 10 RealServers (each pass arbitrates the
//! whole snapshot, O(n log n)); the operator's manifest setting `POD_NAME` (the Event
//! reporter's instance).

use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::stream;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::Store;
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde_json::{json, Value};
use tokio::sync::Notify;
use weir_crds::lenient::Lenient;
use weir_crds::v1alpha1::{BalancerNode, RealServer, VirtualService};
use weir_crds::validation::{ObjectKey, Verdict};

use super::reflect;
use crate::desired::{plan, Snapshot, Update};
use crate::health::Health;
use crate::metrics::{count_objects, Metrics};
use crate::rollup::Transition;
use crate::{Error, Result, FIELD_MANAGER};

/// The controller's name in metrics and readiness.
pub const NAME: &str = "arbitration";

/// How long a burst of watch events may last before the loop reconciles once for all.
const DEBOUNCE: Duration = Duration::from_millis(50);
/// How long an applied status suppresses re-applying it while the store catches up.
const RECENT: Duration = Duration::from_secs(5);

/// Applied statuses by (kind, object): when, and the status without transition times.
type Applied = HashMap<(&'static str, ObjectKey), (Instant, Value)>;

/// What the controller shares with its tasks.
pub struct Context {
    client: Client,
    recorder: Recorder,
    /// Statuses applied recently, by (kind, object), with the time of the write. A std
    /// Mutex: it is never held across an await.
    applied: Mutex<Applied>,
    metrics: Metrics,
    health: Health,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, health: Health) -> Self {
        let reporter = Reporter { controller: FIELD_MANAGER.to_owned(), instance: std::env::var("POD_NAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Context { recorder, client, applied: Mutex::new(HashMap::new()), metrics, health }
    }

    /// When `status` was applied to the object within [`RECENT`], how long until that
    /// expires: the store may not have caught up with the write yet, so re-check then.
    fn recently_applied(&self, kind: &'static str, key: &ObjectKey, status: &Value) -> Option<Duration> {
        let applied = self.applied.lock().unwrap_or_else(|e| e.into_inner());
        let (at, v) = applied.get(&(kind, key.clone()))?;
        let age = at.elapsed();
        (v == status && age < RECENT).then(|| RECENT - age)
    }

    /// Forgets writes older than [`RECENT`] (once per pass, not per write: a first pass
    /// writes every object).
    fn expire_applied(&self) {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).retain(|_, (at, _)| at.elapsed() < RECENT);
    }

    fn record_applied(&self, kind: &'static str, key: ObjectKey, status: Value) {
        self.applied.lock().unwrap_or_else(|e| e.into_inner()).insert((kind, key), (Instant::now(), status));
    }
}

/// The reflector stores the snapshot is read from.
struct Stores {
    // Lenient: one stored object the types reject must not fail the whole list.
    virtual_services: Store<Lenient<VirtualService>>,
    real_servers: Store<Lenient<RealServer>>,
    balancer_nodes: Store<BalancerNode>,
    nodes: Store<PartialObjectMeta<Node>>,
}

impl Stores {
    fn snapshot(&self) -> Snapshot {
        let (virtual_services, invalid_virtual_services) = split(self.virtual_services.state());
        let (real_servers, invalid_real_servers) = split(self.real_servers.state());
        Snapshot {
            virtual_services,
            real_servers,
            invalid_virtual_services,
            invalid_real_servers,
            balancer_nodes: self.balancer_nodes.state(),
            node_labels: self.nodes.state().iter().map(|n| (n.name_any(), n.labels().clone())).collect(),
        }
    }
}

/// The objects that decode, and those that do not.
#[allow(clippy::type_complexity)]
fn split<K: Clone>(objects: Vec<Arc<Lenient<K>>>) -> (Vec<Arc<K>>, Vec<Arc<Lenient<K>>>) {
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for o in objects {
        match o.valid() {
            Some(k) => valid.push(Arc::new(k.clone())),
            None => invalid.push(o),
        }
    }
    (valid, invalid)
}

impl Stores {
    async fn wait_until_ready(&self) -> Result<()> {
        let dropped = |kind| move |_| Error::StoreDropped { kind };
        self.virtual_services.wait_until_ready().await.map_err(dropped("VirtualService"))?;
        self.real_servers.wait_until_ready().await.map_err(dropped("RealServer"))?;
        self.balancer_nodes.wait_until_ready().await.map_err(dropped("BalancerNode"))?;
        self.nodes.wait_until_ready().await.map_err(dropped("Node"))
    }
}

/// Runs the controller until `shutdown` resolves.
pub async fn run(ctx: Arc<Context>, shutdown: impl Future<Output = ()> + Send) -> Result<()> {
    let client = &ctx.client;
    let (virtual_services, vs_events) = reflect(Api::<Lenient<VirtualService>>::all(client.clone()), "VirtualService");
    let (real_servers, rs_events) = reflect(Api::<Lenient<RealServer>>::all(client.clone()), "RealServer");
    let (balancer_nodes, bn_events) = reflect(Api::<BalancerNode>::all(client.clone()), "BalancerNode");
    // Nodes as metadata only: the labels are all the selectors need.
    let (nodes, node_events) = reflect(Api::<PartialObjectMeta<Node>>::all(client.clone()), "Node");
    let stores = Stores { virtual_services, real_servers, balancer_nodes, nodes };

    // One task drives every watch and turns each event into a wake-up of the loop.
    let wake = Arc::new(Notify::new());
    let events = stream::select_all([vs_events, rs_events, bn_events, node_events]);
    let watches = tokio::spawn(drive(events, wake.clone(), ctx.metrics.clone()));

    let mut shutdown = pin!(shutdown);
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        r = stores.wait_until_ready() => match r {
            Ok(()) => {
                ctx.health.synced(NAME);
                reconcile_loop(&ctx, &stores, &wake, shutdown).await;
                Ok(())
            }
            Err(e) => Err(e),
        },
    };
    watches.abort();
    result
}

async fn drive(mut events: impl futures::Stream<Item = Result<()>> + Unpin, wake: Arc<Notify>, metrics: Metrics) {
    while let Some(event) = events.next().await {
        if let Err(e) = event {
            // The watcher backs off and resumes by itself; the error is still reported.
            tracing::warn!(error = %e, label = e.metric_label(), "watch failed");
            metrics.reconcile_failed(NAME, &e);
        }
        wake.notify_one();
    }
}

async fn reconcile_loop(
    ctx: &Context,
    stores: &Stores,
    wake: &Notify,
    mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) {
    let mut again: Option<Duration> = Some(Duration::ZERO); // a first pass once the stores are ready
    while super::next_pass(wake, again, DEBOUNCE, shutdown.as_mut()).await {
        let timer = ctx.metrics.start_reconcile(NAME);
        let result = reconcile(ctx, stores).await;
        timer.finish(&result);
        again = match result {
            Ok(recheck) => recheck,
            Err(e) => Some(error_policy(&e)),
        };
    }
}

/// One pass: snapshot → plan → writes. Every failed write is logged; the last failure is
/// returned so the loop retries the whole pass. `Ok(Some(d))`: a write was skipped as
/// recently applied; look again after `d`.
async fn reconcile(ctx: &Context, stores: &Stores) -> Result<Option<Duration>> {
    ctx.expire_applied();
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let snapshot = stores.snapshot();
    let plan = plan(&snapshot, &now);
    ctx.metrics.set_objects(&count_objects(&snapshot, &plan));
    let (mut failure, mut recheck) = (None, None::<Duration>);
    let mut note = |r: Result<Option<Duration>>| match r {
        Ok(Some(d)) => recheck = Some(recheck.map_or(d, |r| r.min(d))),
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(error = %e, label = e.metric_label(), "reconcile failed");
            failure = Some(e);
        }
    };
    for update in plan.virtual_services {
        note(write(ctx, "VirtualService", update).await);
    }
    for update in plan.real_servers {
        note(write(ctx, "RealServer", update).await);
    }
    for update in plan.invalid_virtual_services {
        note(write(ctx, "VirtualService", update).await);
    }
    for update in plan.invalid_real_servers {
        note(write(ctx, "RealServer", update).await);
    }
    failure.map_or(Ok(recheck), Err)
}

/// How long to wait before retrying after `error`.
pub fn error_policy(error: &Error) -> Duration {
    match error {
        Error::Event { .. } => Duration::from_secs(30),
        _ => Duration::from_secs(5),
    }
}

/// Announces a new rejection, then applies the status — in that order, so that a failed
/// Event is retried with the status (the next pass still sees the old condition) instead of
/// being lost. Skips a status applied within [`RECENT`] (returns when to look again).
async fn write<K, S>(ctx: &Context, kind: &'static str, update: Update<K, S>) -> Result<Option<Duration>>
where
    K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    S: Serialize,
{
    let obj = update.object.as_ref();
    let key = ObjectKey::new(obj.namespace().unwrap_or_default(), obj.name_any());
    let status = serde_json::to_value(&update.status).map_err(Error::Serialize)?;
    // lastTransitionTime is recomputed from a possibly stale store; compare without it.
    let mut comparable = status.clone();
    strip_transition_times(&mut comparable);
    if let Some(recheck) = ctx.recently_applied(kind, &key, &comparable) {
        return Ok(Some(recheck));
    }
    if let Some(verdict) = &update.rejected {
        publish_rejection(ctx, kind, key.clone(), obj, verdict).await?;
    }
    if let Some(transition) = &update.transition {
        publish_transition(ctx, kind, key.clone(), obj, transition).await?;
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let body = json!({ "apiVersion": K::api_version(&()), "kind": K::kind(&()), "status": status });
    let params = PatchParams::apply(FIELD_MANAGER).force();
    match api.patch_status(&key.name, &params, &Patch::Apply(&body)).await {
        Ok(_) => {
            ctx.record_applied(kind, key, comparable);
            Ok(None)
        }
        // Deleted since the snapshot: its DELETED event brings another pass.
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
        Err(source) => Err(Error::StatusApply { kind, key, source: Box::new(source) }),
    }
}

async fn publish_rejection<K>(
    ctx: &Context,
    kind: &'static str,
    key: ObjectKey,
    obj: &K,
    verdict: &Verdict,
) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_: EventType::Warning,
        reason: verdict.reason.as_str().to_owned(),
        note: Some(verdict.message.clone()),
        action: "Arbitrate".to_owned(),
        secondary: None,
    };
    ctx.recorder.publish(&event, &obj.object_ref(&())).await.map_err(|source| Error::Event {
        kind,
        key,
        source: Box::new(source),
    })
}

/// A health transition: a RealServer turned unhealthy (Warning) or healthy again (Normal);
/// a VirtualService began (Warning) or stopped failing open.
async fn publish_transition<K>(
    ctx: &Context,
    kind: &'static str,
    key: ObjectKey,
    obj: &K,
    transition: &Transition,
) -> Result<()>
where
    K: Resource<DynamicType = ()>,
{
    let event = Event {
        type_: if transition.warning { EventType::Warning } else { EventType::Normal },
        reason: transition.reason.clone(),
        note: Some(transition.note.clone()),
        action: "RollUpHealth".to_owned(),
        secondary: None,
    };
    ctx.recorder.publish(&event, &obj.object_ref(&())).await.map_err(|source| Error::Event {
        kind,
        key,
        source: Box::new(source),
    })
}

fn strip_transition_times(status: &mut Value) {
    if let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        for c in conditions {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastTransitionTime");
            }
        }
    }
}
