//! Liveness and readiness: `GET /health` answers as long as the process
//! serves requests; `GET /health/ready` only once a balancer exists and is
//! attached (or exists in testing mode, where it is never attached) and, in
//! cluster mode, once the cluster sync has programmed the cluster's state (a
//! new agent of a rolling update is Ready only when it forwards what the old
//! one did). Both are also served on the metrics listener, for kubelet probes
//! that the API's allowlist would refuse.
//!
//! Bodies, as the admin conventions have them: `/health` is
//! `{"status": "ok", "read_only": bool}`; `/health/ready` is
//! `{"ready": true, "status": "ready"}`, or a 503 in katran's error envelope
//! (LB_NOT_INITIALIZED, the human message) that also carries
//! `data: {"ready": false, "status": "not_ready", "reason"}` with a
//! machine-readable reason.
//!
//! Neither waits for the balancer: `/health` never looks at it, and
//! `/health/ready` only tries its lock (and the reconciler's). When a writer
//! holds one (a create running the verifier, a chunk of a purge) or waits
//! for it, readiness answers what it found the last time it could look —
//! the state before that change, which is still the datapath's state until
//! the change ends. A probe therefore never fails because the agent is busy.

use crate::error::Code;
use std::sync::{Mutex, PoisonError, TryLockError};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use super::reply::{Data, ErrorDetail, Success};
use super::ApiState;
use crate::dataplane::Balancer;

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new().routes(routes!(health)).routes(routes!(health_ready))
}

/// Whether `lb` is doing its job: attached, or loaded for testing.
pub(super) fn is_ready(lb: &Balancer) -> bool {
    lb.is_attached() || lb.config().testing
}

/// `/health` data (the admin conventions' `HealthData`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Health {
    /// Always "ok".
    #[schema(example = "ok")]
    pub status: &'static str,
    /// Whether the agent refuses changes (`--read-only`).
    pub read_only: bool,
}

/// `/health/ready` data, in both states (the conventions' `HealthReadyData`).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    /// "ready" or "not_ready".
    #[schema(example = "ready")]
    pub status: &'static str,
    /// Why not ready, machine-readable: `no_balancer`, `cluster_not_synced`
    /// or `not_attached`; absent when ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(example = "no_balancer")]
    pub reason: Option<&'static str>,
}

/// The 503 of `/health/ready`: katran-server's error envelope (code
/// LB_NOT_INITIALIZED, the human message) that also carries the readiness
/// `data`, so probes and operators read the same fields in both states.
#[derive(Debug, Serialize, ToSchema)]
pub struct NotReady {
    /// Always false.
    pub success: bool,
    pub error: ErrorDetail,
    pub data: Readiness,
}

impl IntoResponse for NotReady {
    fn into_response(self) -> Response {
        (StatusCode::SERVICE_UNAVAILABLE, Json(self)).into_response()
    }
}

fn not_ready(reason: &'static str, message: impl Into<String>) -> NotReady {
    NotReady {
        success: false,
        error: ErrorDetail { code: Code::LbNotInitialized.as_str().to_owned(), message: message.into() },
        data: Readiness { ready: false, status: "not_ready", reason: Some(reason) },
    }
}

/// Liveness: the agent is running (and whether it is read-only).
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The agent is running", body = Success<Health>)))]
async fn health(State(state): State<ApiState>) -> Data<Health> {
    Data(Health { status: "ok", read_only: state.system.limits().read_only })
}

/// Readiness: a balancer exists and is attached (or exists in testing mode).
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Success<Readiness>),
        (status = 503, description = "Not ready (LB_NOT_INITIALIZED), with the reason", body = NotReady),
    ))]
async fn health_ready(State(state): State<ApiState>) -> Result<Data<Readiness>, NotReady> {
    let probe = match probe_now(&state) {
        Some(probe) => state.last_probe.set(probe),
        None => state.last_probe.get(),
    };
    match probe {
        Probe::NoBalancer => {
            Err(not_ready("no_balancer", "not ready: no balancer yet (POST /api/v1/lb/create, or start with --config)"))
        }
        Probe::ClusterNotSynced => Err(not_ready(
            "cluster_not_synced",
            "not ready: cluster mode has not programmed the cluster's VirtualServices yet",
        )),
        Probe::Ready => Ok(Data(Readiness { ready: true, status: "ready", reason: None })),
        Probe::NotAttached(interface) => {
            Err(not_ready("not_attached", format!("not ready: the balancer is not attached to {interface}")))
        }
    }
}

/// What readiness depends on, as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Probe {
    #[default]
    NoBalancer,
    ClusterNotSynced,
    /// Not attached to this interface.
    NotAttached(String),
    Ready,
}

/// The last [`Probe`] `/health/ready` could take (a std Mutex: held only to
/// copy a value, never while waiting for anything).
#[derive(Debug, Default)]
pub struct LastProbe(Mutex<Probe>);

impl LastProbe {
    fn set(&self, probe: Probe) -> Probe {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = probe.clone();
        probe
    }

    fn get(&self) -> Probe {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// Readiness now, or `None` when finding out would wait for a lock. (Being
/// attached is one read of the pinned link: a short syscall, no lock.)
fn probe_now(state: &ApiState) -> Option<Probe> {
    let guard = match state.balancer.try_read() {
        Ok(guard) => guard,
        Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
        Err(TryLockError::WouldBlock) => return None,
    };
    let Some(lb) = guard.as_ref() else { return Some(Probe::NoBalancer) };
    if let Some(cluster) = &state.cluster {
        if !cluster.try_synced()? {
            return Some(Probe::ClusterNotSynced);
        }
    }
    Some(if is_ready(lb) { Probe::Ready } else { Probe::NotAttached(lb.config().main_interface.clone()) })
}
