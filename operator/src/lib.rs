//! weir-operator: arbitrates weir's CRDs, rolls per-node status up into them, and runs the
//! node agents' DaemonSet.
//!
//! Layout:
//! - [`controllers::arbitration`]: watches VirtualServices, RealServers, BalancerNodes and
//!   Nodes (kube-runtime reflectors), and on any change runs
//!   [`weir_crds::validation::arbitrate`] over the whole snapshot, then server-side applies
//!   the status of every object whose status changed;
//! - [`controllers::daemonset`] (with `--agent-config`): the node agent's DaemonSet, rendered
//!   from its configuration, applied and kept free of drift; [`controllers::node_gc`]:
//!   removes the BalancerNodes of Nodes that are gone;
//! - [`desired`]: the pure part of the arbitration — snapshot in, the statuses to write (and
//!   the rejections to announce as Events) out; no client, unit-tested;
//! - [`rollup`]: the nodes' health reports rolled up (RealServer `Healthy`, VirtualService
//!   `healthyReals` and `FailOpen`), pure as well;
//! - [`leader`]: leader election over a Lease; only the leader runs the controllers;
//! - [`metrics`], [`health`] and [`http`]: `/metrics`, `/healthz` and `/readyz`;
//! - [`flags`]: the command line, turned into the [`Options`] of [`run`];
//! - `fixtures` (tests only): builders for test objects.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

pub mod controllers;
pub mod desired;
#[cfg(test)]
mod fixtures;
pub mod flags;
pub mod health;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod rollup;

use controllers::daemonset::AgentConfig;
use futures::FutureExt;
use health::{Health, Role};
use leader::LeaderElection;
use metrics::Metrics;

pub use controllers::arbitration::Context;

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = "weir-operator";

/// The crate's one error type. Library errors are boxed: `kube::Error` is large, and this
/// type travels through every watch stream item.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Taking part in the leader election failed (creating or reading the Lease).
    #[error("leader election with Lease {namespace}/{name}: {source}")]
    Lease {
        namespace: String,
        name: String,
        #[source]
        source: Box<kube_lease_manager::LeaseManagerError>,
    },
    /// This replica was the leader and no longer is; the process exits (see [`leader`]).
    #[error("lost leadership: {reason}")]
    LeadershipLost { reason: String },
    /// `--lease-duration` too short for a renewal margin.
    #[error("the lease duration must be at least 2 seconds, not {0}")]
    InvalidLeaseDuration(u64),
    /// `--agent-config` without a namespace for the DaemonSet (in the file or `--namespace`).
    #[error("the node agent's DaemonSet needs a namespace: set `namespace` in the agent configuration, --namespace or POD_NAMESPACE")]
    DaemonSetNamespaceMissing,
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
    /// The node agent's configuration (`--agent-config`) is unreadable or invalid.
    #[error(transparent)]
    AgentConfig(#[from] controllers::daemonset::ConfigError),
    /// Server-side apply of the node agent's DaemonSet failed.
    #[error("applying DaemonSet {key}: {source}")]
    DaemonSetApply {
        key: weir_crds::validation::ObjectKey,
        #[source]
        source: Box<kube::Error>,
    },
    /// Deleting the BalancerNode of a gone Node (or checking that the Node is gone) failed.
    #[error("garbage-collecting BalancerNode {name}: {source}")]
    BalancerNodeDelete {
        name: String,
        #[source]
        source: Box<kube::Error>,
    },
}

impl Error {
    /// A short, stable label for failure metrics (`weir_operator_reconcile_errors_total{error}`).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Lease { .. } => "lease",
            Error::LeadershipLost { .. } => "leadership_lost",
            Error::InvalidLeaseDuration(_) => "invalid_lease_duration",
            Error::DaemonSetNamespaceMissing => "daemonset_namespace_missing",
            Error::StatusApply { .. } => "status_apply",
            Error::Event { .. } => "event",
            Error::Watch { .. } => "watch",
            Error::StoreDropped { .. } => "store_dropped",
            Error::Serialize(_) => "serialize",
            Error::AgentConfig(_) => "agent_config",
            Error::DaemonSetApply { .. } => "daemonset_apply",
            Error::BalancerNodeDelete { .. } => "balancer_node_delete",
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How [`run`] runs: usually from [`flags::Flags::options`]; tests start from
/// `Options::default()` (no leader election: the controllers run at once).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `None`: run the controllers without leader election (tests, single replica).
    pub leader_election: Option<LeaderElection>,
    /// The node-agent configuration file; `None`: the DaemonSet is not managed.
    pub agent_config: Option<PathBuf>,
    /// Namespace of the node-agent DaemonSet (required with `agent_config`).
    pub namespace: Option<String>,
    /// Where the controllers record their metrics (also served on `/metrics`).
    pub metrics: Metrics,
    /// What `/readyz` reports (see [`health`]).
    pub health: Health,
}

/// Runs the operator until `shutdown` resolves: with leader election, takes part in it and
/// runs the controllers only while leading (see [`leader`]); without, runs them at once.
/// The agent configuration is read first, so that a bad file fails at start (with its path
/// in the error), not when this replica becomes the leader.
pub async fn run(
    client: kube::Client,
    options: Options,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let agent = match load_agent_config(&options) {
        Ok(agent) => agent,
        Err(e) => {
            options.health.set_role(Role::Failed);
            return Err(e);
        }
    };
    match options.leader_election.clone() {
        None => {
            options.health.set_role(Role::Leading);
            options.metrics.set_leader(true);
            let result = run_controllers(client, &options, agent, shutdown).await;
            if result.is_err() {
                options.health.set_role(Role::Failed);
            }
            result
        }
        Some(election) => {
            let lead = |stop| run_controllers(client.clone(), &options, agent, stop);
            leader::run(client.clone(), &election, &options.metrics, &options.health, shutdown, lead).await
        }
    }
}

/// The node agent's configuration and the DaemonSet's namespace (the file's, else
/// `options.namespace`); `None` without `--agent-config`.
fn load_agent_config(options: &Options) -> Result<Option<(AgentConfig, String)>> {
    let Some(path) = &options.agent_config else { return Ok(None) };
    let config = AgentConfig::from_file(path)?;
    let namespace =
        config.namespace.clone().or_else(|| options.namespace.clone()).ok_or(Error::DaemonSetNamespaceMissing)?;
    Ok(Some((config, namespace)))
}

/// Runs every controller until `shutdown` resolves, or until one fails (the others are
/// then dropped, and the error ends [`run`]). Readiness waits for every controller's stores.
async fn run_controllers(
    client: kube::Client,
    options: &Options,
    agent: Option<(AgentConfig, String)>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let shutdown = shutdown.boxed().shared();
    let (metrics, health) = (options.metrics.clone(), options.health.clone());
    health.expect_synced(controllers::arbitration::NAME);
    health.expect_synced(controllers::node_gc::NAME);
    if agent.is_some() {
        health.expect_synced(controllers::daemonset::NAME);
    }
    let ctx = Arc::new(Context::new(client.clone(), metrics.clone(), health.clone()));
    let arbitration = controllers::arbitration::run(ctx, shutdown.clone());
    let node_gc = controllers::node_gc::run(client.clone(), metrics.clone(), health.clone(), shutdown.clone());
    let daemonset = async {
        match agent {
            Some((config, namespace)) => {
                controllers::daemonset::run(client, config, namespace, metrics, health, shutdown).await
            }
            None => Ok(()),
        }
    };
    tokio::try_join!(arbitration, node_gc, daemonset).map(drop)
}
