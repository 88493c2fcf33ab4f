//! The node agent's DaemonSet manager: renders the DaemonSet from the [`AgentConfig`]
//! ([`render`]), server-side applies it (field manager [`FIELD_MANAGER`], forced) at start,
//! then watches that one object and re-applies it whenever the live object no longer
//! [`contains`](drift::contains) the rendered one — an edit, a removed field, a deletion.
//!
//! Write loops: nothing is written while the live object contains the desired one, and the
//! object our own apply returns does (defaults aside), so a repair is one write. The one
//! apply at start is unconditional: it also removes fields an older operator applied and
//! this one no longer renders (server-side apply prunes what the manager stops applying).
//!
//! Known limit: on a real server, lists merged by key (`env`, `ports`, `volumes`…) keep an
//! item another manager added; the live list is then longer than ours, and every later
//! watch event of the object brings one more (no-op) apply. It cannot loop by itself: a
//! no-op apply changes nothing and emits no event.

pub mod config;
pub mod drift;
pub mod render;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::Value;
use tokio::sync::Notify;
use weir_crds::validation::ObjectKey;

pub use config::{AgentConfig, ConfigError};
pub use render::render;

use crate::health::Health;
use crate::metrics::Metrics;
use crate::{Error, Result, FIELD_MANAGER};

/// How long a burst of watch events may last before the manager looks once for all.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Exponential backoff of failed applies: 100 ms, doubling, at most 30 s.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(30);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt; each call doubles the following one.
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        delay
    }

    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// The rendered DaemonSet and where it goes.
struct Desired {
    metrics: Metrics,
    api: Api<DaemonSet>,
    key: ObjectKey,
    object: DaemonSet,
    /// `object` as JSON, for the drift check.
    json: Value,
}

impl Desired {
    async fn apply(&self) -> Result<()> {
        let timer = self.metrics.start_reconcile(NAME);
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let result = match self.api.patch(&self.key.name, &params, &Patch::Apply(&self.object)).await {
            Ok(_) => {
                tracing::info!(daemonset = %self.key, "applied the node agent DaemonSet");
                Ok(())
            }
            Err(source) => Err(Error::DaemonSetApply { key: self.key.clone(), source: Box::new(source) }),
        };
        timer.finish(&result);
        result
    }

    /// Whether the store's object has drifted from the desired one (absent: drifted).
    fn drifted(&self, store: &Store<DaemonSet>) -> bool {
        let at = ObjectRef::new(&self.key.name).within(&self.key.namespace);
        let Some(live) = store.get(&at) else {
            return true;
        };
        serde_json::to_value(live.as_ref()).map_or(true, |live| !drift::contains(&live, &self.json))
    }
}

/// The controller's name in metrics and readiness.
pub const NAME: &str = "daemonset";

/// The DaemonSet's owner: the agents' ServiceAccount, which the install creates beside the
/// operator and removes with it, so that uninstalling removes the DaemonSet too (through
/// Kubernetes' garbage collector). None (with a warning) when it cannot be read: the
/// DaemonSet is still managed, it only outlives an uninstall.
async fn owner(client: &Client, namespace: &str, name: &str) -> Option<Vec<OwnerReference>> {
    match Api::<ServiceAccount>::namespaced(client.clone(), namespace).get_opt(name).await {
        Ok(Some(sa)) => Some(vec![OwnerReference {
            api_version: "v1".to_owned(),
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            uid: sa.metadata.uid?,
            ..OwnerReference::default()
        }]),
        Ok(None) => {
            tracing::warn!(%namespace, name, "the agents' ServiceAccount does not exist; the DaemonSet gets no owner");
            None
        }
        Err(e) => {
            tracing::warn!(error = %e, %namespace, name, "cannot read the agents' ServiceAccount; the DaemonSet gets no owner");
            None
        }
    }
}

/// Manages the node agent's DaemonSet `config.name` in `namespace` until `shutdown` resolves.
/// Every apply is a reconcile in `metrics`; `health` learns when the watch has synced.
pub async fn run(
    client: Client,
    config: AgentConfig,
    namespace: String,
    metrics: Metrics,
    health: Health,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<()> {
    let mut object = render(&config, &namespace);
    object.metadata.owner_references = owner(&client, &namespace, &config.service_account_name).await;
    let desired = Desired {
        metrics,
        api: Api::namespaced(client, &namespace),
        key: ObjectKey::new(namespace, config.name.clone()),
        json: serde_json::to_value(&object).map_err(Error::Serialize)?,
        object,
    };
    let mut shutdown = pin!(shutdown);
    let mut backoff = Backoff::new();

    // The apply at start, retried until it succeeds.
    loop {
        let failed = match desired.apply().await {
            Ok(()) => break,
            Err(e) => e,
        };
        let delay = backoff.next_delay();
        tracing::warn!(error = %failed, label = failed.metric_label(), retry_in = ?delay, "apply failed");
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
    backoff.reset();

    // Then watch the one object and repair drift.
    let (store, writer) = reflector::store();
    let selector = format!("metadata.name={}", desired.key.name);
    let watch = watcher(desired.api.clone(), watcher::Config::default().fields(&selector)).default_backoff();
    let wake = Arc::new(Notify::new());
    let watches = tokio::spawn(drive(reflector::reflector(writer, watch).boxed(), wake.clone()));
    let result = tokio::select! {
        () = &mut shutdown => Ok(()),
        r = store.wait_until_ready() => match r {
            Ok(()) => {
                health.synced(NAME);
                repair_loop(&desired, &store, &wake, &mut backoff, shutdown).await;
                Ok(())
            }
            Err(_) => Err(Error::StoreDropped { kind: "DaemonSet" }),
        },
    };
    watches.abort();
    result
}

async fn drive<S>(mut events: S, wake: Arc<Notify>)
where
    S: futures::Stream<Item = Result<watcher::Event<DaemonSet>, watcher::Error>> + Unpin + Send,
{
    while let Some(event) = events.next().await {
        if let Err(source) = event {
            // The watcher backs off and resumes by itself; the error is still reported.
            let e = Error::Watch { kind: "DaemonSet", source: Box::new(source) };
            tracing::warn!(error = %e, label = e.metric_label(), "watch failed");
        }
        wake.notify_one();
    }
}

async fn repair_loop(
    desired: &Desired,
    store: &Store<DaemonSet>,
    wake: &Notify,
    backoff: &mut Backoff,
    mut shutdown: std::pin::Pin<&mut (impl Future<Output = ()> + Send)>,
) {
    let mut retry: Option<Duration> = Some(Duration::ZERO); // a first look once the store is ready
    while super::next_pass(wake, retry, DEBOUNCE, shutdown.as_mut()).await {
        retry = None;
        if !desired.drifted(store) {
            continue;
        }
        tracing::info!(daemonset = %desired.key, "the node agent DaemonSet drifted; re-applying");
        match desired.apply().await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                let delay = backoff.next_delay();
                tracing::warn!(error = %e, label = e.metric_label(), retry_in = ?delay, "apply failed");
                retry = Some(delay);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_thirty_seconds_and_resets() {
        let mut b = Backoff::new();
        let delays: Vec<_> = (0..11).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
