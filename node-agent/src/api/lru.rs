//! The connection table ("LRU" in Katran): delete one flow's entry, or
//! purge a VIP's. weir has one connection table, `weir_conns` (Katran has
//! per-CPU tables plus a fallback, hence a list of maps in the answer).
//! A purge lists the VIP's entries without the balancer's lock and deletes
//! them in chunks of [`PURGE_CHUNK`], taking the lock per chunk.

use axum::extract::State;
use weir_ebpf::abi;

use super::error::ApiError;
use super::extract::Body;
use super::reply::{Data, Success};
use super::types::{DeletedCount, LruEntry, LruMaps, VipKey};
use super::ApiState;

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new().routes(routes!(delete_lru)).routes(routes!(purge_vip_lru))
}

/// Entries a purge deletes per hold of the write lock: about 4 ms of
/// syscalls, after which waiting requests get the lock. The table is listed
/// without the lock first, so a purge of millions of entries never holds it
/// for long; the count stays exact for the entries there when it began.
const PURGE_CHUNK: usize = 4096;

/// Deletes the entry of the flow from `src_ip:src_port` to `dst_vip`; the
/// maps it was in (`["weir_conns"]`, or `[]` when there was none).
#[utoipa::path(delete, path = "/api/v1/lru", tag = "lru", request_body = LruEntry,
    responses((status = 200, description = "The maps the entry was deleted from", body = Success<LruMaps>)))]
async fn delete_lru(State(state): State<ApiState>, Body(req): Body<LruEntry>) -> Result<Data<LruMaps>, ApiError> {
    let id = state.vip_id("dst_vip.", &req.dst_vip)?;
    let src = state.ip("src_ip", &req.src_ip)?;
    let sport = req.src_port;
    let deleted = state.write(move |lb| lb.delete_conn(&id, src, sport)).await?;
    let maps = if deleted { vec![abi::map::CONNS.to_owned()] } else { Vec::new() };
    Ok(Data(LruMaps { maps }))
}

/// Deletes every connection-table entry of a VIP.
#[utoipa::path(delete, path = "/api/v1/lru/vip", tag = "lru", request_body = VipKey,
    responses((status = 200, description = "How many entries were deleted", body = Success<DeletedCount>)))]
async fn purge_vip_lru(State(state): State<ApiState>, Body(key): Body<VipKey>) -> Result<Data<DeletedCount>, ApiError> {
    let id = state.vip_id("", &key)?;
    let deleted_count = state
        .blocking(move |state| {
            let purge = state.blocking_read(|lb| lb.conn_purge(&id))?;
            let keys = purge.keys();
            let mut deleted = 0;
            for chunk in keys.chunks(PURGE_CHUNK) {
                deleted += state.blocking_write(|lb| lb.purge_conns(&purge, chunk))?;
            }
            Ok(deleted)
        })
        .await?;
    Ok(Data(DeletedCount { deleted_count }))
}
