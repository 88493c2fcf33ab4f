//! The metrics listener: `GET /metrics` answers the OpenMetrics text of
//! [`Metrics`]; `/health` and `/health/ready` answer as on the API listener
//! (kubelet's probes, which the API's allowlist would refuse); nothing else.
//!
//! It is a separate listener (`--metrics-addr`) without the API's allowlist or
//! token, so a Prometheus server can scrape it without being able to change
//! the datapath; its bind address is the operator's access control. It runs
//! on the same accept loop as the API ([`run`]), with the same timeouts.

use std::future::Future;
use std::sync::Arc;

use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::net::TcpListener;

use super::{run, Accept, Timeouts};
use crate::api::{self, ApiState};
use crate::metrics::{self, Metrics};

/// The metrics listener's routes.
pub fn router(metrics: Arc<Metrics>, state: ApiState) -> Router {
    Router::new().route("/metrics", get(move || scrape(metrics.clone()))).merge(api::health_router(state))
}

async fn scrape(metrics: Arc<Metrics>) -> Response {
    // Reading the datapath is a series of BPF syscalls under the balancer lock: off the async threads.
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(text) => ([(CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(err) => {
            tracing::error!(%err, "metrics: encoding failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "encoding the metrics failed\n").into_response()
        }
    }
}

/// Serves the metrics listener's routes on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    state: ApiState,
    timeouts: Timeouts,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    // No allowlist: kubelet probes come from the node's address.
    let accept = Accept { timeouts, allow: None, max_connections, metrics: None };
    run(listener, None, accept, router(metrics, state), shutdown).await
}
