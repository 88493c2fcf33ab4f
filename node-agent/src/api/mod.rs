//! The agent's HTTP API: katran-server's REST API (`/api/v1/...`, the
//! contract in shared/specs/katran-rest-api.md) over the [`Balancer`].
//!
//! Placeholder: being written. The contract other modules rely on:
//! - [`ApiState`], cloned into every handler;
//! - [`router`]`(state) -> axum::Router` with every route, `/health`,
//!   `/health/ready` and `/api/v1/openapi.json`;
//! - [`error::ApiError`], the one error shape.

use std::sync::{Arc, RwLock};

use crate::dataplane::Balancer;

pub mod error;

/// The balancer, once created (`POST /api/v1/lb/create` or `--config`).
/// A std lock: no handler holds it across an await, and map operations are
/// short syscalls.
pub type SharedBalancer = Arc<RwLock<Option<Balancer>>>;

/// What every handler gets.
#[derive(Clone, Default)]
pub struct ApiState {
    pub balancer: SharedBalancer,
}

/// Every route of the API.
pub fn router(state: ApiState) -> axum::Router {
    axum::Router::new().with_state(state)
}
