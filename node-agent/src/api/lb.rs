//! The balancer's lifecycle after `/lb/create` (in `create`): status, close,
//! reload, and Katran's two-phase load/attach, answered truthfully for weir,
//! whose create loads and (unless testing) attaches in one step:
//!
//! - `GET /lb/status`: `{initialized, ready}`, 200 even before create; once
//!   created also the programs that run, the create body's `notices`
//!   (what it asked for that weir does not do) and `map_memory_bytes`, the
//!   kernel memory of its maps;
//! - `POST /lb/close`: drops the balancer — with `cleanup_on_shutdown` it
//!   detaches and unpins everything, otherwise the datapath keeps forwarding
//!   for the next create to adopt;
//! - `POST /lb/load-bpf-progs`: the program is loaded by create, so 200 once
//!   a balancer exists (nothing left to do), 503 before;
//! - `POST /lb/attach-bpf-progs`: 200 when attached (create attached it);
//!   for a testing balancer 400 — it is never attached, by its configuration;
//! - `POST /lb/reload`: loads and verifies a fresh copy of weir's program,
//!   which adopts the pinned datapath (maps, connections, counters stay) and
//!   replaces the running program atomically on the same XDP link. `path`
//!   (another object file) and `config` (another configuration) are 501: weir
//!   runs its own built-in program, and a new configuration is close + create.
//!   A testing balancer has nothing pinned to adopt: 501.

use crate::error::Code;
use axum::extract::State;

use super::error::ApiError;
use super::extract::OptionalBody;
use super::health::is_ready;
use super::reply::{Acknowledged, Data, Done, Success};
use super::types::{LbPrograms, LbStatus, Reload};
use super::ApiState;
use crate::dataplane::healthcheck::HC_PROGRAM_NAME;
use crate::dataplane::BALANCER_PROGRAM;

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new()
        .routes(routes!(lb_status))
        .routes(routes!(lb_close))
        .routes(routes!(lb_load_bpf_progs))
        .routes(routes!(lb_attach_bpf_progs))
        .routes(routes!(lb_reload))
}

/// Whether a balancer exists, and whether it is attached (or testing).
#[utoipa::path(get, path = "/api/v1/lb/status", tag = "lb",
    responses((status = 200, description = "The balancer's state", body = Success<LbStatus>)))]
async fn lb_status(State(state): State<ApiState>) -> Result<Data<LbStatus>, ApiError> {
    let status = state
        .blocking(|state| {
            let guard = state.read_lock();
            let lb = guard.as_ref();
            Ok(LbStatus {
                initialized: lb.is_some(),
                ready: lb.is_some_and(is_ready),
                programs: lb.map(|lb| LbPrograms {
                    balancer: BALANCER_PROGRAM.to_owned(),
                    healthcheck: lb.healthchecker().is_ok().then(|| HC_PROGRAM_NAME.to_owned()),
                }),
                notices: lb.map(|lb| lb.config().katran.notices.clone()).unwrap_or_default(),
                map_memory_bytes: lb
                    .and_then(|lb| lb.map_memory().ok())
                    .map(|maps| maps.iter().map(|(_, bytes)| bytes).sum()),
            })
        })
        .await?;
    Ok(Data(status))
}

/// Closes the balancer (detaching and unpinning it with `cleanup_on_shutdown`).
#[utoipa::path(post, path = "/api/v1/lb/close", tag = "lb",
    responses((status = 200, description = "Closed", body = Acknowledged)))]
async fn lb_close(State(state): State<ApiState>) -> Result<Done, ApiError> {
    if state.cluster.is_some() {
        return Err(ApiError::cluster_owned(
            "the balancer belongs to cluster mode (--cluster): it lives as long as the agent; stop the agent instead",
        ));
    }
    state
        .blocking(|state| {
            let mut guard = state.write_lock();
            let lb = guard.take().ok_or_else(ApiError::not_initialized)?;
            // Dropped under the lock: a create must not adopt pins this drop removes.
            drop(lb);
            Ok(())
        })
        .await?;
    Ok(Done)
}

/// The program is loaded by `/lb/create`: nothing left to do.
#[utoipa::path(post, path = "/api/v1/lb/load-bpf-progs", tag = "lb",
    responses((status = 200, description = "Loaded (by /lb/create)", body = Acknowledged)))]
async fn lb_load_bpf_progs(State(state): State<ApiState>) -> Result<Done, ApiError> {
    state.read(|_| Ok(())).await?;
    Ok(Done)
}

/// The program is attached by `/lb/create` unless testing.
#[utoipa::path(post, path = "/api/v1/lb/attach-bpf-progs", tag = "lb",
    responses((status = 200, description = "Attached (by /lb/create)", body = Acknowledged)))]
async fn lb_attach_bpf_progs(State(state): State<ApiState>) -> Result<Done, ApiError> {
    let (attached, config) = state.read(|lb| Ok((lb.is_attached(), lb.config().clone()))).await?;
    if attached {
        return Ok(Done);
    }
    if !config.testing {
        return Err(ApiError::internal(format!(
            "the balancer's XDP link is no longer bound to {} (the interface went away?): POST /api/v1/lb/close, then \
             /api/v1/lb/create again",
            config.main_interface
        )));
    }
    Err(ApiError::new(
        Code::InvalidRequest,
        "the balancer was created with testing: true, which loads the program for BPF_PROG_TEST_RUN and never \
         attaches it; create it with testing: false to attach",
    ))
}

/// Reloads weir's program, keeping the datapath's maps and state.
#[utoipa::path(post, path = "/api/v1/lb/reload", tag = "lb", request_body = Reload,
    responses((status = 200, description = "Reloaded", body = Acknowledged)))]
async fn lb_reload(
    State(state): State<ApiState>,
    OptionalBody(request): OptionalBody<Reload>,
) -> Result<Done, ApiError> {
    if let Some(path) = request.path.as_deref().filter(|p| !p.is_empty()) {
        return Err(ApiError::feature_disabled(format!(
            "path: weir's balancer program is built into weir-agent; it cannot load {path} (omit path to reload \
             weir's own program)"
        )));
    }
    if request.config.is_some() {
        return Err(ApiError::feature_disabled(
            "config: reloading with another configuration is not supported; POST /lb/close, then /lb/create",
        ));
    }
    let system = state.system.clone();
    // Loading runs the verifier: off the async workers, as every Balancer call.
    state.write(|lb| lb.reload()).await?;
    system.count_reload();
    Ok(Done)
}
