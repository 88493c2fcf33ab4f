//! The agent's HTTP API: katran-server's REST API (`/api/v1/...`, the
//! contract in shared/specs/katran-rest-api.md plus the facts in
//! shared/specs/README.md) over the [`Balancer`].
//!
//! Layout — one module per katran-server resource, each declaring its
//! endpoints once with `endpoints!`:
//! - `config`: `/config/export` (and `/json`), the whole configuration as one
//!   document, and its import (`--config FILE`);
//! - `lb` (`/lb/*` lifecycle) and `create` (`/lb/create`: how Katran's
//!   configuration maps onto [`BalancerConfig`](crate::dataplane::BalancerConfig),
//!   field by field);
//! - `vips`, `reals`, `stats`, `lru`, `utils`, `features`: the endpoints the
//!   datapath serves;
//! - `disabled`: the endpoints of features the datapath does not have yet
//!   (QUIC, source routing, inline decap, healthchecks, monitor, ...): 501;
//! - `health`: `/health` (liveness), `/health/ready` (readiness);
//! - `system`: `/system/info` and `/limits/effective` (what the agent is and enforces);
//! - `docs`: `/api/v1/openapi.json`;
//! - `types` (wire DTOs), `reply` (the success envelope), `error` (the error
//!   envelope), `extract` (body and query extractors), `state` (balancer
//!   access and userspace counters), `routes` (routing from the OpenAPI
//!   description, JSON 404/405).
//!
//! Routes are generated from the handlers' `#[utoipa::path]` attributes: a
//! handler is served at exactly the path and method its documentation names,
//! and `/api/v1/openapi.json` is built from the same attributes, so the two
//! cannot drift.
//!
//! Handlers take the balancer lock (a std `RwLock`: read for reads, write
//! for changes) only around the Balancer call, and only on tokio's blocking
//! pool (`state`): never on the runtime's workers, never across an await.

use std::sync::Arc;

use crate::handles::{Datapath, Ownership};
pub use crate::handles::{SharedBalancer, UserspaceCounters, UserspaceStats};

/// Declares a resource module's endpoints once: `Doc` (its part of the
/// OpenAPI description) lists the handlers, and `routes` serves each at the
/// path and method its `#[utoipa::path]` names.
macro_rules! endpoints {
    ($($handler:ident),+ $(,)?) => {
        /// This module's endpoints in the OpenAPI description.
        #[derive(utoipa::OpenApi)]
        #[openapi(paths($($handler),+))]
        pub(super) struct Doc;

        /// [`Doc`]'s OpenAPI description.
        pub(super) fn doc() -> utoipa::openapi::OpenApi {
            <Doc as utoipa::OpenApi>::openapi()
        }

        /// Serves every handler of [`Doc`] at its documented path and method.
        pub(super) fn routes(routes: $crate::api::routes::Routes) -> $crate::api::routes::Routes {
            let doc = doc();
            routes$(.add(&doc, stringify!($handler), $handler))+
        }
    };
}

mod config;
mod create;
mod disabled;
mod docs;
pub mod error;
mod extract;
mod features;
mod health;
mod lb;
mod lru;
mod query;
mod reals;
mod reply;
mod routes;
mod state;
mod stats;
pub mod system;
pub mod types;
mod utils;
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
    RESOURCES.iter().fold(routes::Routes::default(), |routes, r| (r.routes)(routes)).into_router().with_state(state)
}

/// Only `/health` and `/health/ready`, for the metrics listener (kubelet's
/// probes come from the node's address, which the API's allowlist refuses).
pub fn health_router(state: ApiState) -> axum::Router {
    health::routes(routes::Routes::default()).into_router().with_state(state)
}

/// The OpenAPI 3 description of every endpoint, from the handlers' attributes
/// (served at `/api/v1/openapi.json`).
pub fn openapi() -> utoipa::openapi::OpenApi {
    docs::describe(RESOURCES.iter().map(|r| (r.doc)()))
}

/// A resource module: its routes and its part of the OpenAPI description.
struct Resource {
    routes: fn(routes::Routes) -> routes::Routes,
    doc: fn() -> utoipa::openapi::OpenApi,
}

/// Every resource module, in one place.
const RESOURCES: &[Resource] = &[
    Resource { routes: health::routes, doc: health::doc },
    Resource { routes: docs::routes, doc: docs::doc },
    Resource { routes: lb::routes, doc: lb::doc },
    Resource { routes: create::routes, doc: create::doc },
    Resource { routes: config::routes, doc: config::doc },
    Resource { routes: vips::routes, doc: vips::doc },
    Resource { routes: reals::routes, doc: reals::doc },
    Resource { routes: stats::routes, doc: stats::doc },
    Resource { routes: lru::routes, doc: lru::doc },
    Resource { routes: utils::routes, doc: utils::doc },
    Resource { routes: features::routes, doc: features::doc },
    Resource { routes: system::routes, doc: system::doc },
    Resource { routes: disabled::routes, doc: disabled::doc },
];
