//! Reals: a VIP's reals (get, add, delete, batch), a real's index and flags.
//! Reals are shared across VIPs by address (one index each); weight 0
//! drains a real (its connections stay, new flows avoid it). Each real of
//! `GET /vips/reals` says whether it is `healthy`; a `healthy` in add and
//! batch bodies is ignored (katran-cli always sends false): health changes
//! only through `/vips/reals/health` (`vip_health`) and the prober. In cluster
//! mode, changing the reals of a VIP a VirtualService owns, or the flags of
//! one of its reals, is 409 CLUSTER_OWNED.

use axum::extract::State;

use super::error::ApiError;
use super::extract::{Body, Params};
use super::reply::{Acknowledged, Created, Data, Done, Success};
use super::types::{ModifyRealFlags, RealAddress, RealIndex, RealState, RealsBatch, VipKey, VipReal, VipRealDelete};
use super::ApiState;
use crate::dataplane::{RealAction, RealSpec};

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new()
        .routes(routes!(get_reals))
        .routes(routes!(add_real))
        .routes(routes!(del_real))
        .routes(routes!(batch_reals))
        .routes(routes!(real_index))
        .routes(routes!(modify_real_flags))
}

/// A VIP's reals.
#[utoipa::path(get, path = "/api/v1/vips/reals", tag = "reals", params(VipKey),
    request_body(content = Option<VipKey>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "The VIP's reals", body = Success<Vec<RealState>>)))]
async fn get_reals(
    State(state): State<ApiState>,
    Params(key): Params<VipKey>,
) -> Result<Data<Vec<RealState>>, ApiError> {
    let id = state.vip_id("", &key)?;
    let reals = state.read(move |lb| lb.reals_with_health(&id)).await?;
    Ok(Data(reals.into_iter().map(RealState::from).collect()))
}

/// Adds a real to a VIP, or updates its weight and flags (a known real
/// keeps its health; a new one starts healthy unless the prober is enabled).
#[utoipa::path(post, path = "/api/v1/vips/reals", tag = "reals", request_body = VipReal,
    responses((status = 201, description = "Added", body = Acknowledged)))]
async fn add_real(State(state): State<ApiState>, Body(req): Body<VipReal>) -> Result<Created, ApiError> {
    let id = state.vip_id("vip.", &req.vip)?;
    let addr = state.ip("real.address", &req.real.address)?;
    let real = RealSpec { addr, weight: req.real.weight, flags: req.real.flags };
    state.write_vip(id, move |lb| lb.add_real(&id, real)).await?;
    Ok(Created)
}

/// Removes a real from a VIP. A real the VIP does not have is already
/// removed: success, as katran-server answers (and as batches do).
#[utoipa::path(delete, path = "/api/v1/vips/reals", tag = "reals", request_body = VipRealDelete,
    responses((status = 200, description = "Removed (or was not there)", body = Acknowledged)))]
async fn del_real(State(state): State<ApiState>, Body(req): Body<VipRealDelete>) -> Result<Done, ApiError> {
    let id = state.vip_id("vip.", &req.vip)?;
    let addr = state.ip("real.address", &req.real.address)?;
    let real = RealSpec { addr, weight: 0, flags: 0 };
    state.write_vip(id, move |lb| lb.modify_reals(&id, RealAction::Delete, &[real])).await?;
    Ok(Done)
}

/// Adds (action 0) or deletes (action 1) many reals with one ring
/// computation, all or nothing. Deleting a real the VIP lacks is not an error.
#[utoipa::path(put, path = "/api/v1/vips/reals/batch", tag = "reals", request_body = RealsBatch,
    responses((status = 200, description = "Applied", body = Acknowledged)))]
async fn batch_reals(State(state): State<ApiState>, Body(req): Body<RealsBatch>) -> Result<Done, ApiError> {
    let action = match req.action {
        0 => RealAction::Add,
        1 => RealAction::Delete,
        other => return Err(ApiError::invalid(format!("action: {other} is not 0 (add) or 1 (delete)"))),
    };
    let id = state.vip_id("vip.", &req.vip)?;
    let mut reals = Vec::with_capacity(req.reals.len());
    for (i, real) in req.reals.iter().enumerate() {
        let addr = state.ip(&format!("reals[{i}].address"), &real.address)?;
        let weight = match (action, real.weight) {
            (RealAction::Add, None) => {
                return Err(ApiError::invalid(format!("reals[{i}].weight: required to add a real")));
            }
            (_, weight) => weight.unwrap_or(0),
        };
        reals.push(RealSpec { addr, weight, flags: real.flags });
    }
    state.write_vip(id, move |lb| lb.modify_reals(&id, action, &reals)).await?;
    Ok(Done)
}

/// A real's datapath index; -1 when no VIP uses the address.
#[utoipa::path(get, path = "/api/v1/reals/index", tag = "reals", params(RealAddress),
    request_body(content = Option<RealAddress>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "The real's index, or -1", body = Success<RealIndex>)))]
async fn real_index(
    State(state): State<ApiState>,
    Params(req): Params<RealAddress>,
) -> Result<Data<RealIndex>, ApiError> {
    let addr = state.ip("address", &req.address)?;
    let index = state.read(move |lb| Ok(lb.real_index(addr))).await?;
    Ok(Data(RealIndex { index: index.map_or(-1, i64::from) }))
}

/// Sets (`set: true`) or clears real flag bits (LOCAL_REAL 2).
#[utoipa::path(put, path = "/api/v1/reals/flags", tag = "reals", request_body = ModifyRealFlags,
    responses((status = 200, description = "Changed", body = Acknowledged)))]
async fn modify_real_flags(State(state): State<ApiState>, Body(req): Body<ModifyRealFlags>) -> Result<Done, ApiError> {
    let addr = state.ip("address", &req.address)?;
    let (flags, set) = (req.flags, req.set);
    state.write_real(addr, move |lb| lb.modify_real_flags(addr, flags, set)).await?;
    Ok(Done)
}
