//! VIPs: list, add, delete, flags, hash function (`/api/v1/vips...`).
//! A duplicate VIP is 409 ALREADY_EXISTS, an unknown one 404, a full table
//! 507, a VIP flag the datapath lacks 501 (the Balancer's errors). In
//! cluster mode, changing a VIP a VirtualService owns is 409 CLUSTER_OWNED.

use axum::extract::State;

use super::error::ApiError;
use super::extract::{Body, Params};
use super::reply::{Acknowledged, Created, Data, Done, Success};
use super::types::{HashFunctionChange, ModifyVipFlags, NewVip, VipFlags, VipKey, VipListed};
use super::ApiState;
use crate::dataplane::{HashFunction, VipSpec};

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new()
        .routes(routes!(list_vips))
        .routes(routes!(add_vip))
        .routes(routes!(del_vip))
        .routes(routes!(get_vip_flags))
        .routes(routes!(modify_vip_flags))
        .routes(routes!(change_hash_function))
}

/// Every VIP; `fail_open: true` (weir) on one whose reals are all unhealthy.
#[utoipa::path(get, path = "/api/v1/vips", tag = "vips",
    responses((status = 200, description = "The VIPs", body = Success<Vec<VipListed>>)))]
async fn list_vips(State(state): State<ApiState>) -> Result<Data<Vec<VipListed>>, ApiError> {
    let vips = state.read(|lb| Ok(lb.vips())).await?;
    Ok(Data(vips.into_iter().map(|vip| VipListed { key: VipKey::from(vip.id), fail_open: vip.fail_open }).collect()))
}

/// Adds a VIP (with no reals: it drops nothing and forwards nothing until it has some).
#[utoipa::path(post, path = "/api/v1/vips", tag = "vips", request_body = NewVip,
    responses((status = 201, description = "Added", body = Acknowledged)))]
async fn add_vip(State(state): State<ApiState>, Body(vip): Body<NewVip>) -> Result<Created, ApiError> {
    let id = state.vip_of("", &vip.address, vip.port, vip.proto)?;
    let flags = vip.flags;
    state.write_vip(id, move |lb| lb.add_vip(VipSpec { id, flags })).await?;
    Ok(Created)
}

/// Deletes a VIP (its reals are released when no other VIP uses them).
#[utoipa::path(delete, path = "/api/v1/vips", tag = "vips", params(VipKey),
    request_body(content = Option<VipKey>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "Deleted", body = Acknowledged)))]
async fn del_vip(State(state): State<ApiState>, Params(key): Params<VipKey>) -> Result<Done, ApiError> {
    let id = state.vip_id("", &key)?;
    state.write_vip(id, move |lb| lb.del_vip(&id)).await?;
    Ok(Done)
}

/// A VIP's flags.
#[utoipa::path(get, path = "/api/v1/vips/flags", tag = "vips", params(VipKey),
    request_body(content = Option<VipKey>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "The VIP's flags", body = Success<VipFlags>)))]
async fn get_vip_flags(State(state): State<ApiState>, Params(key): Params<VipKey>) -> Result<Data<VipFlags>, ApiError> {
    let id = state.vip_id("", &key)?;
    let info = state.read(move |lb| lb.vip_info(&id)).await?;
    Ok(Data(VipFlags { flags: info.flags }))
}

/// Sets (`set: true`) or clears the VIP flag bits in `flag`.
#[utoipa::path(put, path = "/api/v1/vips/flags", tag = "vips", request_body = ModifyVipFlags,
    responses((status = 200, description = "Changed", body = Acknowledged)))]
async fn modify_vip_flags(State(state): State<ApiState>, Body(req): Body<ModifyVipFlags>) -> Result<Done, ApiError> {
    let id = state.vip_of("", &req.address, req.port, req.proto)?;
    let (flag, set) = (req.flag, req.set);
    state.write_vip(id, move |lb| lb.modify_vip_flags(&id, flag, set)).await?;
    Ok(Done)
}

/// Changes a VIP's hash function (0 Maglev, 1 Maglev V2) and recomputes its ring.
#[utoipa::path(put, path = "/api/v1/vips/hash-function", tag = "vips", request_body = HashFunctionChange,
    responses((status = 200, description = "Changed", body = Acknowledged)))]
async fn change_hash_function(
    State(state): State<ApiState>,
    Body(req): Body<HashFunctionChange>,
) -> Result<Done, ApiError> {
    let id = state.vip_of("", &req.address, req.port, req.proto)?;
    let hash = HashFunction::from_katran(req.hash_function).ok_or_else(|| {
        ApiError::invalid(format!("hash_function: {} is not 0 (Maglev) or 1 (Maglev V2)", req.hash_function))
    })?;
    state.write_vip(id, move |lb| lb.change_hash_function(&id, hash)).await?;
    Ok(Done)
}
