//! The agent's HTTP API: katran-server's REST API (`/api/v1/...`, the
//! contract in shared/specs/katran-rest-api.md plus the facts in
//! shared/specs/README.md) over the [`Balancer`].
//!
//! Layout — one module per katran-server resource, each with a `router()`
//! (a utoipa-axum `OpenApiRouter`) of its handlers, merged in [`router`],
//! [`health_router`] and [`openapi`]:
//! - `config`: `/config/export` (and `/json`), the whole configuration as one
//!   document, and its import (`--config FILE`);
//! - `lb` (`/lb/*` lifecycle) and `create` (`/lb/create`: how Katran's
//!   configuration maps onto [`BalancerConfig`](crate::dataplane::BalancerConfig),
//!   field by field);
//! - `vips`, `reals`, `stats`, `lru`, `utils`, `features`, `healthcheck`:
//!   the endpoints the datapath serves;
//! - `vip_health`: real health and VIP health checks (`/vips/reals/health*`,
//!   `/vips/healthcheck*`);
//! - `disabled`: the endpoints of features the datapath does not have yet
//!   (QUIC, source routing, inline decap, monitor, ...): 501;
//! - `health`: `/health` (liveness), `/health/ready` (readiness);
//! - `system`: `/system/info` and `/limits/effective` (what the agent is and enforces);
//! - `docs`: `/api/v1/openapi.json`;
//! - `types` (wire DTOs), `reply` (the success envelope), `error` (the error
//!   envelope), `extract` (body and query extractors), `state` (balancer
//!   access and userspace counters), `fallback` (the JSON 404 and 405).
//!
//! A handler's path and method are written once, in its `#[utoipa::path]`:
//! utoipa-axum's `routes!` serves it there and adds the same operation to
//! the router's OpenAPI description, which `/api/v1/openapi.json` serves
//! (with `docs`' additions), so the two cannot drift. Each `routes!` names
//! one handler: given handlers of several paths, it would serve each of those
//! paths with all of their methods.
//!
//! Handlers take the balancer lock (a std `RwLock`: read for reads, write
//! for changes) only around the Balancer call, and only on tokio's blocking
//! pool (`state`): never on the runtime's workers, never across an await.

use std::sync::Arc;

use utoipa_axum::router::OpenApiRouter;

use crate::handles::{Datapath, Ownership};
pub use crate::handles::{SharedBalancer, UserspaceCounters, UserspaceStats};

mod config;
mod create;
mod disabled;
mod docs;
pub mod error;
mod extract;
mod fallback;
mod features;
mod health;
mod healthcheck;
mod lb;
mod lru;
mod query;
mod reals;
mod reply;
mod state;
mod stats;
pub mod system;
pub mod types;
mod utils;
mod vip_health;
mod vips;

pub use config::{import_document, is_document, ConfigDocument};
pub use create::{create_from_json, create_with};
pub use health::{LastProbe, Probe};

/// What every handler gets.
#[derive(Clone, Default)]
pub struct ApiState {
    pub balancer: SharedBalancer,
    /// katran's userspace counters (`/stats/userspace`), counted by the
    /// handlers; shared so that metrics can read them too.
    pub counters: Arc<UserspaceCounters>,
    /// Where balancers this API creates pin and save their state (the
    /// agent's --pin-root / --state-dir); `None`: BalancerConfig's defaults.
    pub pins: Option<Pins>,
    /// In cluster mode: who owns which VIP. REST changes to VIPs (and real
    /// addresses) that VirtualServices own are refused, naming the owner.
    pub cluster: Option<Arc<dyn Ownership>>,
    /// What the agent is and enforces (`/health`'s read_only,
    /// `/system/info`, `/limits/effective`), and its reload count.
    pub system: Arc<system::System>,
    /// What `/health/ready` last found, answered while the locks are taken.
    pub last_probe: Arc<health::LastProbe>,
    /// weir's prober (`--prober`, cluster mode): every balancer this API
    /// creates has it enabled, and it probes what their checks ask for.
    pub probing: Option<Arc<crate::probing::Probing>>,
}

pub use crate::dataplane::Pins;

impl ApiState {
    /// What the metrics read: the balancer and the userspace counters.
    pub fn datapath(&self) -> Datapath {
        Datapath { balancer: self.balancer.clone(), counters: self.counters.clone() }
    }
}

/// Every route of the API: `/api/v1/...`, `/health`, `/health/ready` and
/// `/api/v1/openapi.json`. Unknown paths answer 404 and wrong methods 405,
/// both in the JSON error envelope.
pub fn router(state: ApiState) -> axum::Router {
    fallback::with_json_errors(endpoints()).with_state(state)
}

/// Only `/health` and `/health/ready`, for the metrics listener (kubelet's
/// probes come from the node's address, which the API's allowlist refuses).
pub fn health_router(state: ApiState) -> axum::Router {
    fallback::with_json_errors(health::router()).with_state(state)
}

/// The OpenAPI 3 description of every endpoint, from the handlers' attributes
/// (served at `/api/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    docs::describe(endpoints().into_openapi())
}

/// Every resource module's endpoints: their routes and, from the same
/// `#[utoipa::path]` attributes, their OpenAPI description.
fn endpoints() -> OpenApiRouter<ApiState> {
    OpenApiRouter::new()
        .merge(health::router())
        .merge(docs::router())
        .merge(lb::router())
        .merge(create::router())
        .merge(config::router())
        .merge(vips::router())
        .merge(reals::router())
        .merge(vip_health::router())
        .merge(stats::router())
        .merge(lru::router())
        .merge(utils::router())
        .merge(features::router())
        .merge(healthcheck::router())
        .merge(system::router())
        .merge(disabled::router())
}
