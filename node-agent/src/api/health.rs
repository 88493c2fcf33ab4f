//! Liveness and readiness: `GET /health` answers as long as the process
//! serves requests; `GET /health/ready` only once a balancer exists and is
//! attached (or exists in testing mode, where it is never attached) and, in
//! cluster mode, once the cluster sync has programmed the cluster's state (a
//! new agent of a rolling update is Ready only when it forwards what the old
//! one did). Both are also served on the metrics listener, for kubelet probes
//! that the API's allowlist would refuse.

use axum::extract::State;
use axum::http::StatusCode;

use super::error::ApiError;
use super::reply::{Data, Failure, Success};
use super::types::HealthStatus;
use super::ApiState;
use crate::dataplane::Balancer;

endpoints!(health, health_ready);

/// Whether `lb` is doing its job: attached, or loaded for testing.
pub(super) fn is_ready(lb: &Balancer) -> bool {
    lb.is_attached() || lb.config().testing
}

/// Liveness: the agent is running.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, description = "The agent is running", body = Success<HealthStatus>)))]
async fn health() -> Data<HealthStatus> {
    Data(HealthStatus { status: "ok".to_owned() })
}

/// Readiness: a balancer exists and is attached (or exists in testing mode).
#[utoipa::path(get, path = "/health/ready", tag = "health",
    responses(
        (status = 200, description = "Ready", body = Success<HealthStatus>),
        (status = 503, description = "Not ready (LB_NOT_INITIALIZED), with the reason", body = Failure),
    ))]
async fn health_ready(State(state): State<ApiState>) -> Result<Data<HealthStatus>, ApiError> {
    let guard = state.read_lock();
    match guard.as_ref() {
        None => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "LB_NOT_INITIALIZED",
            "not ready: no balancer yet (POST /api/v1/lb/create, or start with --config)",
        )),
        Some(_) if state.cluster.as_ref().is_some_and(|r| !r.lock().unwrap_or_else(|e| e.into_inner()).synced()) => {
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "LB_NOT_INITIALIZED",
                "not ready: cluster mode has not programmed the cluster's VirtualServices yet",
            ))
        }
        Some(lb) if is_ready(lb) => Ok(Data(HealthStatus { status: "ready".to_owned() })),
        Some(lb) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "LB_NOT_INITIALIZED",
            format!("not ready: the balancer is not attached to {}", lb.config().main_interface),
        )),
    }
}
