//! Katran's healthcheck program (`/api/v1/healthcheck/...`, DirectHC):
//! which real a probe socket's mark (SO_MARK) tunnels to (`dsts`), and the
//! VIPs whose probes are counted (`keys`). Its counters are `/stats/hc-prog`
//! and its program's fd `/utils/hc-prog-fd` (in `stats` and `utils`).
//!
//! A balancer created without `enable_hc` has no healthcheck program: every
//! call answers 501 FEATURE_DISABLED naming `enable_hc` (katran refuses
//! healthcheck calls on a non-healthchecking instance). Creates answer 201.
//! weir's choices where katran-server's document is silent:
//! - a mark of weir's own prober ([`PROBER_MARKS`]) is refused (400) and not
//!   listed: operator entries and the prober's stay apart;
//! - deleting a mark, or a key, that is not there answers 404 NOT_FOUND
//!   (katran's `delHealthcheckerDst` / `delHcKey` return false);
//! - adding a key twice answers 409 ALREADY_EXISTS;
//! - a destination is any unicast address, IPv4 or IPv6 (probes to an IPv6
//!   real leave in IPv6, as the balancer's packets do).

use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::error::ApiError;
use super::extract::Body;
use super::reply::{Created, Data, Done, Success};
use super::types::VipKey;
use super::ApiState;
use crate::dataplane::healthcheck::PROBER_MARKS;

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new()
        .routes(routes!(get_dsts))
        .routes(routes!(add_dst))
        .routes(routes!(del_dst))
        .routes(routes!(add_key))
        .routes(routes!(del_key))
}

/// A probe mark and the real its probes are tunnelled to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HcDst {
    #[schema(example = 100, minimum = 1)]
    pub somark: u32,
    #[schema(example = "192.168.1.1")]
    pub dst: String,
}

/// `DELETE /healthcheck/dsts`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
pub struct HcMark {
    #[schema(example = 100, minimum = 1)]
    pub somark: u32,
}

/// A mark `/healthcheck/dsts` may name: not 0, not one of the prober's.
fn operator_mark(somark: u32) -> Result<u32, ApiError> {
    if somark == 0 {
        return Err(ApiError::invalid("somark: 0 marks no socket: probes need a mark of 1 or more"));
    }
    if PROBER_MARKS.contains(&somark) {
        return Err(ApiError::invalid(format!(
            "somark: {somark} is reserved for weir's own prober ({:#x}..={:#x}); choose another mark",
            PROBER_MARKS.start(),
            PROBER_MARKS.end()
        )));
    }
    Ok(somark)
}

/// Every operator mark and its real, by mark.
#[utoipa::path(get, path = "/api/v1/healthcheck/dsts", tag = "healthcheck",
    responses((status = 200, description = "Marks and their reals (weir's prober's own are not listed)",
        body = Success<Vec<HcDst>>)))]
async fn get_dsts(State(state): State<ApiState>) -> Result<Data<Vec<HcDst>>, ApiError> {
    let dsts = state.read(|lb| Ok(lb.healthchecker()?.dsts())).await?;
    Ok(Data(
        dsts.into_iter()
            .filter(|(mark, _)| !PROBER_MARKS.contains(mark))
            .map(|(somark, dst)| HcDst { somark, dst: dst.to_string() })
            .collect(),
    ))
}

/// Probes marked `somark` are tunnelled to `dst` (replaces the mark's real).
#[utoipa::path(post, path = "/api/v1/healthcheck/dsts", tag = "healthcheck", request_body = HcDst,
    responses((status = 201, description = "Added", body = super::reply::Acknowledged),
        (status = 400, description = "Mark 0, a prober mark, or not a unicast address", body = super::reply::Failure),
        (status = 501, description = "The balancer was created without enable_hc", body = super::reply::Failure)))]
async fn add_dst(State(state): State<ApiState>, Body(req): Body<HcDst>) -> Result<Created, ApiError> {
    let somark = operator_mark(req.somark)?;
    let dst = state.ip("dst", &req.dst)?;
    state.write(move |lb| lb.healthchecker_mut()?.add_dst(somark, dst)).await?;
    Ok(Created)
}

/// Forgets mark `somark`; 404 when it has no real.
#[utoipa::path(delete, path = "/api/v1/healthcheck/dsts", tag = "healthcheck", request_body = HcMark,
    responses((status = 200, description = "Deleted", body = super::reply::Acknowledged),
        (status = 404, description = "The mark has no real", body = super::reply::Failure)))]
async fn del_dst(State(state): State<ApiState>, Body(req): Body<HcMark>) -> Result<Done, ApiError> {
    let somark = operator_mark(req.somark)?;
    let found = state.write(move |lb| lb.healthchecker_mut()?.del_dst(somark)).await?;
    if !found {
        return Err(ApiError::not_found(format!("somark: no healthcheck destination has mark {somark}")));
    }
    Ok(Done)
}

/// Counts the probes sent to a VIP (a healthcheck key).
#[utoipa::path(post, path = "/api/v1/healthcheck/keys", tag = "healthcheck", request_body = VipKey,
    responses((status = 201, description = "Added", body = super::reply::Acknowledged),
        (status = 409, description = "The VIP has a key already", body = super::reply::Failure)))]
async fn add_key(State(state): State<ApiState>, Body(key): Body<VipKey>) -> Result<Created, ApiError> {
    let vip = state.vip_id("", &key)?;
    state.write(move |lb| lb.healthchecker_mut()?.add_key_next(&vip)).await?;
    Ok(Created)
}

/// Stops counting a VIP's probes; 404 when it has no key.
#[utoipa::path(delete, path = "/api/v1/healthcheck/keys", tag = "healthcheck", request_body = VipKey,
    responses((status = 200, description = "Deleted", body = super::reply::Acknowledged),
        (status = 404, description = "The VIP has no key", body = super::reply::Failure)))]
async fn del_key(State(state): State<ApiState>, Body(key): Body<VipKey>) -> Result<Done, ApiError> {
    let vip = state.vip_id("", &key)?;
    state.write(move |lb| lb.healthchecker_mut()?.del_key(&vip)).await?;
    Ok(Done)
}

/// `GET /stats/hc-prog`: the healthcheck program's counters, summed over CPUs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HcProgStats {
    /// Probes encapsulated to their real.
    pub packets_processed: u64,
    /// Probes that could not leave as the balancer would send them.
    pub packets_dropped: u64,
    /// Packets that are not probes (no mark, or a mark without a real).
    pub packets_skipped: u64,
    /// Probes too big for the MTU once encapsulated (also counted as dropped).
    pub packets_too_big: u64,
}

pub(super) fn prog_stats(s: weir_ebpf::abi::HcStats) -> HcProgStats {
    HcProgStats {
        packets_processed: s.processed,
        packets_dropped: s.dropped,
        packets_skipped: s.skipped,
        packets_too_big: s.too_big,
    }
}
