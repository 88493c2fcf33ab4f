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
//! 3. **Leading**: the controllers run; the manager renews the Lease every third of its
//!    duration (client-go renews every 2 s of a 15 s Lease; here every 5 s).
//!    - On shutdown the controllers are stopped first, then the Lease is released, so that a
//!      standby takes over within [`RETRY_PERIOD`] instead of after the lease duration.
//!    - A failed renewal is retried every [`RENEW_RETRY`] until the *renew deadline*, as
//!      client-go's `renewDeadline`: the last successful renewal plus two thirds of the
//!      duration (10 s of 15 s), which leaves a third of the duration before the Lease
//!      expires for clock skew and a slow failing request. A short API outage (a few
//!      seconds) therefore keeps the leader. The last renewal is read from the Lease itself
//!      (its `renewTime`, twice per interval): kube-lease-manager does not report renewals,
//!      and a renewal can hang rather than fail (kube's client retries a 503 for minutes).
//!    - When leadership is lost (another replica holds the Lease, or the renew deadline
//!      passed) the controllers are dropped at once and [`run`] returns
//!      [`Error::LeadershipLost`]: the process exits and Kubernetes restarts it as a fresh
//!      standby. That is the simplest behaviour that is plainly safe — no controller state
//!      (stores, recent-write memory) outlives a leadership, and nothing has to be restarted
//!      in place; and stepping down before the Lease expires means no two replicas run the
//!      controllers at once.

use std::future::Future;
use std::pin::{pin, Pin};
use std::time::{Duration, SystemTime};

use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};

use crate::health::{Health, Role};
use crate::metrics::Metrics;
use crate::{Error, Result};

/// How often a standby re-reads the Lease to notice that it was released, and how long it
/// waits after an error before trying again.
pub const RETRY_PERIOD: Duration = Duration::from_secs(1);

/// How long the leader waits between attempts to renew the Lease after a renewal failed.
pub const RENEW_RETRY: Duration = Duration::from_millis(250);

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
    /// How often the leader renews: a third of the duration (at least 1 s).
    fn renew_interval_seconds(&self) -> u64 {
        (self.lease_duration_seconds / 3).max(1)
    }

    /// The renewal margin: the leader renews this long before its lease expires (what
    /// kube-lease-manager calls grace; 0 < grace < duration for every duration ≥ 2).
    fn grace_seconds(&self) -> u64 {
        self.lease_duration_seconds - self.renew_interval_seconds()
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
        let result = lead_until_done(&client, election, &manager, shutdown.as_mut(), lead).await;
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

/// What the Lease says about this replica's renewals.
enum Renewal {
    /// Held by this replica, last renewed at this time.
    Held(SystemTime),
    /// Not known (the Lease cannot be read, or has no renewTime).
    Unknown,
    /// Held by someone else.
    Lost(String),
}

async fn renewal(leases: &Api<Lease>, name: &str, identity: &str) -> Renewal {
    // kube's client retries 503s for minutes: a read that hangs is as good as a failed one.
    let lease = match tokio::time::timeout(RENEW_RETRY, leases.get_opt(name)).await {
        Ok(Ok(lease)) => lease,
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "reading the leader lease failed");
            return Renewal::Unknown;
        }
        Err(_) => return Renewal::Unknown,
    };
    let spec = lease.and_then(|l| l.spec).unwrap_or_default();
    match (spec.holder_identity.filter(|h| !h.is_empty()), spec.renew_time) {
        (Some(holder), _) if holder != identity => Renewal::Lost(holder),
        (Some(_), Some(t)) => Renewal::Held(SystemTime::from(t.0)),
        _ => Renewal::Unknown,
    }
}

/// Runs the controllers while the Lease is held and renewed.
///
/// The manager renews (and retries failed renewals every [`RENEW_RETRY`]); this loop
/// enforces the renew deadline. It cannot learn of renewals from the manager (which reports
/// only changes of leadership), nor rely on failures being reported (kube's client retries
/// a 503 for minutes before `changed()` returns), so it reads the Lease's `renewTime` twice
/// per renewal interval (every [`RENEW_RETRY`] while renewals fail) and steps down when the last renewal is older than the deadline.
async fn lead_until_done<F, Fut>(
    client: &kube::Client,
    election: &LeaderElection,
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
    let leases: Api<Lease> = Api::namespaced(client.clone(), &election.lease_namespace);
    let lost = |reason: String| Err(Error::LeadershipLost { reason });
    let interval = Duration::from_secs(election.renew_interval_seconds());
    let renew_deadline = Duration::from_secs(election.lease_duration_seconds) - interval;
    // Just acquired: the Lease was renewed a moment ago.
    let mut renewed = SystemTime::now();
    let mut last_error: Option<String> = None;
    let mut pause: Option<tokio::time::Instant> = None;
    let mut next_check = tokio::time::Instant::now() + interval / 2;
    loop {
        let left = (renewed + renew_deadline).duration_since(SystemTime::now()).unwrap_or_default();
        tokio::select! {
            () = &mut shutdown => {
                let _ = stop_tx.send(());
                return controllers.await;
            }
            result = &mut controllers => return result,
            // Keeps renewing the Lease; resolves when this replica stops holding it, or when
            // a renewal fails.
            changed = async {
                if let Some(at) = pause {
                    tokio::time::sleep_until(at).await;
                }
                manager.changed().await
            } => match changed {
                Ok(true) => pause = None,
                Ok(false) => {
                    tracing::error!("lost the leader lease to another replica; stopping");
                    return lost("another replica holds the Lease".to_owned());
                }
                Err(e) => {
                    tracing::warn!(error = %e, ?left, "renewing the leader lease failed; retrying until the renew deadline");
                    last_error = Some(e.to_string());
                    pause = Some(tokio::time::Instant::now() + RENEW_RETRY);
                }
            },
            () = tokio::time::sleep(left) => {
                // A last look: a retry may have got through since the last check.
                if let Renewal::Held(at) = renewal(&leases, &election.lease_name, &election.identity).await {
                    if at > renewed {
                        renewed = at;
                        continue;
                    }
                }
                let error = last_error.map_or_else(String::new, |e| format!(": {e}"));
                tracing::error!(%error, "the leader lease was not renewed before the renew deadline; stopping");
                return lost(format!("the Lease was not renewed before the renew deadline ({}s){error}", renew_deadline.as_secs()));
            }
            state = async {
                tokio::time::sleep_until(next_check).await;
                renewal(&leases, &election.lease_name, &election.identity).await
            } => {
                // While renewals fail, look every retry: the deadline is near.
                next_check = tokio::time::Instant::now() + if last_error.is_some() { RENEW_RETRY } else { interval / 2 };
                match state {
                    Renewal::Held(at) if at > renewed => {
                        if last_error.take().is_some() {
                            tracing::info!("renewed the leader lease again");
                        }
                        renewed = at;
                    }
                    Renewal::Held(_) | Renewal::Unknown => {}
                    Renewal::Lost(holder) => {
                        tracing::error!(%holder, "lost the leader lease to another replica; stopping");
                        return lost(format!("{holder} holds the Lease"));
                    }
                }
            }
        }
    }
}
