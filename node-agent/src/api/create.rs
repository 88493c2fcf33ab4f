//! `POST /api/v1/lb/create`, and [`create_from_json`] (also `--config FILE`):
//! a Katran configuration made a Balancer. How each field maps onto weir is
//! [`BalancerConfig::from_katran`]'s (`dataplane::katran`); this module
//! answers its refusals in the error envelope.
//!
//! Checks happen in that order, so the first offending field is named; then
//! an existing balancer answers 409 ALREADY_EXISTS; then the Balancer
//! validates the sizes (and the default MAC) and loads (and unless testing,
//! attaches) the program.

use axum::extract::State;

use super::error::ApiError;
use super::extract::{parse_json, RawBody};
use super::reply::{Acknowledged, Created};
use super::types::CreateLb;
use super::ApiState;
use crate::dataplane::{Balancer, BalancerConfig, KatranError};

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new().routes(routes!(lb_create))
}

/// Creates the balancer from `/lb/create`'s JSON body — exactly what
/// `POST /api/v1/lb/create` does, for `--config FILE`: 400 INVALID_REQUEST
/// for a malformed body or field, 501 FEATURE_DISABLED for a field asking
/// for a feature weir lacks, 409 ALREADY_EXISTS when a balancer exists, and
/// the Balancer's own errors (400 for sizes, BPF_FAILED...). Blocking: it
/// loads and verifies the BPF program (call it from a blocking context).
pub fn create_from_json(state: &ApiState, body: &[u8]) -> Result<(), ApiError> {
    create(state, &parse_json(body)?)
}

/// [`create_from_json`] for a parsed request (also the `lb` section of an
/// imported configuration document).
pub(super) fn create(state: &ApiState, request: &CreateLb) -> Result<(), ApiError> {
    let config = BalancerConfig::from_katran(request, state.pins.as_ref()).map_err(|e| refused(state, e))?;
    create_with(state, config)
}

/// Creates the balancer from a configuration made already (cluster mode's,
/// [`BalancerConfig::from_katran`]'s with the cluster flags set): 409
/// ALREADY_EXISTS when a balancer exists, else the Balancer's own errors.
/// Blocking, as [`create_from_json`].
pub fn create_with(state: &ApiState, mut config: BalancerConfig) -> Result<(), ApiError> {
    config.prober |= state.probing.is_some();
    // The write lock is held while loading, so two creates cannot race.
    let mut guard = state.write_lock();
    if guard.is_some() {
        return Err(ApiError::already_exists("the load balancer already exists: POST /api/v1/lb/close first"));
    }
    *guard = Some(Balancer::new(config).map_err(|e| state.failed(e))?);
    Ok(())
}

/// Creates the load balancer (loads the program and, unless `testing`,
/// attaches it). See the module documentation for each field.
#[utoipa::path(post, path = "/api/v1/lb/create", tag = "lb", request_body = CreateLb,
    responses(
        (status = 201, description = "Created", body = Acknowledged),
        (status = 409, description = "ALREADY_EXISTS: a balancer exists", body = super::reply::Failure),
        (status = 501, description = "FEATURE_DISABLED: a field asks for a feature weir lacks", body = super::reply::Failure),
    ))]
async fn lb_create(State(state): State<ApiState>, RawBody(body): RawBody) -> Result<Created, ApiError> {
    // Loading runs the verifier: off the async workers.
    tokio::task::spawn_blocking(move || create_from_json(&state, &body))
        .await
        .map_err(|e| ApiError::internal(format!("create: {e}")))??;
    Ok(Created)
}

/// A refused Katran configuration in the error envelope, counted as
/// `/stats/userspace` counts bad addresses.
fn refused(state: &ApiState, e: KatranError) -> ApiError {
    if matches!(e, KatranError::BadAddress(_)) {
        state.counters.count_bad_address();
    }
    ApiError::new(e.code(), e.to_string())
}
