//! Leader election over a `coordination.k8s.io/v1` Lease, with kube-lease-manager.
//!
//! Only the leader runs the controllers. The life of a replica:
//!
//! 1. **Starting**: it makes sure the Lease exists (creating it if needed). `/readyz` is 503.
//! 2. **Standby**: another replica holds the Lease. kube-lease-manager sleeps until the
//!    holder's lease would expire; so that a *released* Lease (the leader shut down
//!    gracefully) is taken over at once rather than at expiry, the standby also re-reads the
//!    Lease every [`RETRY_PERIOD`] and, on seeing it free, starts over with a fresh manager,
//!    which tries to lock it immediately. `/readyz` is 200 (see [`crate::health`] for why).
//! 3. **Leading**: the controllers run; the manager keeps renewing the Lease.
//!    - On shutdown the controllers are stopped first, then the Lease is released, so that a
//!      standby takes over within [`RETRY_PERIOD`] instead of after the lease duration.
//!    - When leadership is lost (another replica holds the Lease, or renewing it failed) the
//!      controllers are dropped at once and [`run`] returns [`Error::LeadershipLost`]: the
//!      process exits and Kubernetes restarts it as a fresh standby. That is the simplest
//!      behaviour that is plainly safe — no controller state (stores, recent-write memory)
//!      outlives a leadership, and nothing has to be restarted in place. A failed renewal
//!      counts as a loss: retrying it could keep the controllers writing after the Lease
//!      expired and another replica took over.

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};

use crate::health::{Health, Role};
use crate::metrics::Metrics;
use crate::{Error, Result};

/// How often a standby re-reads the Lease to notice that it was released, and how long it
/// waits after an error before trying again.
pub const RETRY_PERIOD: Duration = Duration::from_secs(1);

/// Where and as whom to take part in the election.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderElection {
    /// The Lease's name.
    pub lease_name: String,
    /// The Lease's namespace.
    pub lease_namespace: String,
    /// This replica's holder identity (the pod name in a cluster); unique among replicas.
    pub identity: String,
    /// How long a lease is valid after its last renewal, in seconds (at least 2).
    pub lease_duration_seconds: u64,
}

impl LeaderElection {
    /// The renewal margin: the leader renews this long before its lease expires.
    fn grace_seconds(&self) -> u64 {
        (self.lease_duration_seconds / 3).max(1)
    }

    async fn manager(&self, client: kube::Client) -> Result<LeaseManager> {
        // `LeaseParams::new` panics unless 0 < grace < duration.
        if self.lease_duration_seconds < 2 {
            return Err(Error::InvalidLeaseDuration(self.lease_duration_seconds));
        }
        let params = LeaseParams::new(self.identity.clone(), self.lease_duration_seconds, self.grace_seconds());
        LeaseManager::new(client, &self.lease_name, &self.lease_namespace, params, LeaseCreateMode::AutoCreate)
            .await
            .map_err(|source| self.error(source))
    }

    fn error(&self, source: kube_lease_manager::LeaseManagerError) -> Error {
        Error::Lease {
            namespace: self.lease_namespace.clone(),
            name: self.lease_name.clone(),
            source: Box::new(source),
        }
    }
}

/// A future that resolves when the controllers must stop.
pub type Stop = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Takes part in the election until `shutdown` resolves, running `lead(stop)` while leading
/// (see the module documentation). Returns `Ok` after a graceful shutdown, the controllers'
/// error if they fail, and [`Error::LeadershipLost`] when leadership is lost.
pub async fn run<F, Fut>(
    client: kube::Client,
    election: &LeaderElection,
    metrics: &Metrics,
    health: &Health,
    shutdown: impl Future<Output = ()> + Send,
    lead: F,
) -> Result<()>
where
    F: FnOnce(Stop) -> Fut,
    Fut: Future<Output = Result<()>> + Send,
{
    let mut shutdown = pin!(shutdown);
    metrics.set_leader(false);
    let result = async {
        let manager = tokio::select! {
            () = &mut shutdown => return Ok(None),
            m = election.manager(client.clone()) => m?,
        };
        health.set_role(Role::Standby);
        tracing::info!(identity = %election.identity, lease = %election.lease_name, "waiting for the leader lease");
        let Some(manager) = wait_for_leadership(&client, election, manager, shutdown.as_mut()).await? else {
            return Ok(None);
        };
        tracing::info!(identity = %election.identity, "acquired the leader lease; starting the controllers");
        health.set_role(Role::Leading);
        metrics.set_leader(true);
        let result = lead_until_done(&manager, shutdown.as_mut(), lead).await;
        metrics.set_leader(false);
        Ok(Some((manager, result)))
    }
    .await;
    let (manager, result) = match result {
        Ok(None) => return Ok(()),
        Ok(Some(leading)) => leading,
        Err(e) => {
            health.set_role(Role::Failed);
            return Err(e);
        }
    };
    if !matches!(result, Err(Error::LeadershipLost { .. })) {
        // Shut down, or the controllers failed: hand the Lease over now.
        match manager.release().await {
            Ok(()) => tracing::info!(identity = %election.identity, "released the leader lease"),
            Err(e) => tracing::warn!(error = %e, "releasing the leader lease failed; it will expire"),
        }
    }
    if result.is_err() {
        health.set_role(Role::Failed);
    }
    result
}

/// Waits (as a standby) until this replica holds the Lease. `None`: shut down first.
async fn wait_for_leadership(
    client: &kube::Client,
    election: &LeaderElection,
    mut manager: LeaseManager,
    mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
) -> Result<Option<LeaseManager>> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), &election.lease_namespace);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(None),
            changed = manager.changed() => match changed {
                Ok(true) => return Ok(Some(manager)),
                Ok(false) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "leader election failed; retrying");
                    tokio::time::sleep(RETRY_PERIOD).await;
                }
            },
            () = released(&leases, &election.lease_name) => {
                // The manager's cached copy says "held until expiry": start over from the
                // Lease as it is now.
                tracing::debug!("the leader lease was released; trying to acquire it");
                manager = election.manager(client.clone()).await?;
            }
        }
    }
}

/// Resolves once the Lease is seen without a holder (polling every [`RETRY_PERIOD`]).
async fn released(leases: &Api<Lease>, name: &str) {
    loop {
        tokio::time::sleep(RETRY_PERIOD).await;
        match leases.get_opt(name).await {
            Ok(Some(lease)) => {
                let holder = lease.spec.and_then(|s| s.holder_identity).filter(|h| !h.is_empty());
                if holder.is_none() {
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => tracing::debug!(error = %e, "reading the leader lease failed"),
        }
    }
}

/// Runs the controllers while the Lease is held and renewed.
async fn lead_until_done<F, Fut>(
    manager: &LeaseManager,
    mut shutdown: Pin<&mut (impl Future<Output = ()> + Send)>,
    lead: F,
) -> Result<()>
where
    F: FnOnce(Stop) -> Fut,
    Fut: Future<Output = Result<()>> + Send,
{
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut controllers = pin!(lead(Box::pin(async move {
        let _ = stop_rx.await;
    })));
    loop {
        tokio::select! {
            () = &mut shutdown => {
                let _ = stop_tx.send(());
                return controllers.await;
            }
            result = &mut controllers => return result,
            // Keeps renewing the Lease; resolves when this replica stops holding it.
            changed = manager.changed() => match changed {
                Ok(true) => {}
                Ok(false) => {
                    tracing::error!("lost the leader lease to another replica; stopping");
                    return Err(Error::LeadershipLost { reason: "another replica holds the Lease".to_owned() });
                }
                Err(e) => {
                    tracing::error!(error = %e, "renewing the leader lease failed; stopping");
                    return Err(Error::LeadershipLost { reason: format!("renewing the Lease failed: {e}") });
                }
            },
        }
    }
}
