//! Counters (`/api/v1/stats/...`), summed over CPUs. What each `{v1, v2}`
//! counts is Katran's meaning; weir-abi's `Stat::info` is the table (each
//! global counter's Katran name, its endpoint here, and what v1 and v2
//! count). `vip` and `real` are the per-VIP / per-real counters: packets
//! (v1) and L3 bytes (v2).
//!
//! `bpf-map` takes weir's map names (`weir_vips`, ...) or Katran's, mapped to
//! the weir map with the same role ([`weir_map`]); the layouts are weir's.
//! `userspace` counts API-side failures (see `state`).

use std::collections::BTreeSet;

use axum::extract::State;
use weir_ebpf::abi::{self, Stat};

use super::error::ApiError;
use super::extract::Params;
use super::reply::{Data, Success};
use super::types::{Counter, FloodStatus, MapName, MapUsage, PerCorePackets, RealStatsQuery, VipKey};
use super::ApiState;
use crate::dataplane::Balancer;
use crate::handles::UserspaceStats;

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new()
        .routes(routes!(vip_stats))
        .routes(routes!(real_stats))
        .routes(routes!(lru_stats))
        .routes(routes!(lru_miss_stats))
        .routes(routes!(lru_fallback_stats))
        .routes(routes!(icmp_too_big_stats))
        .routes(routes!(ch_drop_stats))
        .routes(routes!(xdp_total_stats))
        .routes(routes!(xdp_tx_stats))
        .routes(routes!(xdp_drop_stats))
        .routes(routes!(xdp_pass_stats))
        .routes(routes!(bpf_map_stats))
        .routes(routes!(userspace_stats))
        .routes(routes!(per_core_packets))
        .routes(routes!(flood_status))
        .routes(routes!(hc_prog_stats))
}

/// Katran's map names and the weir map with the same role.
const KATRAN_MAPS: &[(&str, &str)] = &[
    ("vip_map", abi::map::VIPS),
    ("reals", abi::map::REALS),
    ("ch_rings", abi::map::CH_RINGS),
    ("lru", abi::map::CONNS),
    ("lru_mapping", abi::map::CONNS),
    ("fallback_cache", abi::map::CONNS),
    ("reals_stats", abi::map::REAL_STATS),
    ("ctl_array", abi::map::CTL),
    // Katran's per-CPU global counters; weir keeps them in one per-CPU struct.
    ("stats", abi::map::STATS),
];

/// The weir map a request's `map_name` names (a weir name, or a Katran
/// name with a weir twin); 404 naming the accepted names otherwise.
pub(super) fn weir_map(name: &str) -> Result<&'static str, ApiError> {
    if let Some(weir) = abi::map::BALANCER.iter().find(|m| **m == name) {
        return Ok(weir);
    }
    KATRAN_MAPS.iter().find(|(katran, _)| *katran == name).map(|(_, weir)| *weir).ok_or_else(|| {
        let katran: Vec<&str> = KATRAN_MAPS.iter().map(|(k, _)| *k).collect();
        ApiError::not_found(format!(
            "map_name: no map {name:?}; weir's maps are {}, and Katran's names {} are accepted",
            abi::map::BALANCER.join(", "),
            katran.join(", ")
        ))
    })
}

fn counter(c: crate::dataplane::Counter) -> Counter {
    Counter { v1: c.v1, v2: c.v2 }
}

async fn global(state: &ApiState, stat: Stat) -> Result<Data<Counter>, ApiError> {
    state.read(move |lb| lb.stat(stat)).await.map(|c| Data(counter(c)))
}

/// Packets (v1) and L3 bytes (v2) sent to a VIP.
#[utoipa::path(get, path = "/api/v1/stats/vip", tag = "stats", params(VipKey),
    request_body(content = Option<VipKey>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "v1 packets, v2 bytes", body = Success<Counter>)))]
async fn vip_stats(State(state): State<ApiState>, Params(key): Params<VipKey>) -> Result<Data<Counter>, ApiError> {
    let id = state.vip_id("", &key)?;
    state.read(move |lb| lb.vip_stats(&id)).await.map(|c| Data(counter(c)))
}

/// Packets (v1) and L3 bytes (v2) sent to the real with `index`.
#[utoipa::path(get, path = "/api/v1/stats/real", tag = "stats", params(RealStatsQuery),
    request_body(content = Option<RealStatsQuery>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "v1 packets, v2 bytes", body = Success<Counter>)))]
async fn real_stats(
    State(state): State<ApiState>,
    Params(query): Params<RealStatsQuery>,
) -> Result<Data<Counter>, ApiError> {
    state.read(move |lb| lb.real_stats(query.index)).await.map(|c| Data(counter(c)))
}

/// v1: packets to VIPs; v2: connection-table misses.
#[utoipa::path(get, path = "/api/v1/stats/lru", tag = "stats",
    responses((status = 200, description = "v1 packets to VIPs, v2 connection-table misses", body = Success<Counter>)))]
async fn lru_stats(State(state): State<ApiState>) -> Result<Data<Counter>, ApiError> {
    global(&state, Stat::Lru).await
}

/// v1: TCP SYN misses; v2: TCP non-SYN misses.
#[utoipa::path(get, path = "/api/v1/stats/lru/miss", tag = "stats",
    responses((status = 200, description = "v1 TCP SYN misses, v2 TCP non-SYN misses", body = Success<Counter>)))]
async fn lru_miss_stats(State(state): State<ApiState>) -> Result<Data<Counter>, ApiError> {
    global(&state, Stat::LruMiss).await
}

/// Always 0: weir's connection table is never missing (Katran: fallback LRU hits).
#[utoipa::path(get, path = "/api/v1/stats/lru/fallback", tag = "stats",
    responses((status = 200, description = "Always 0 for weir", body = Success<Counter>)))]
async fn lru_fallback_stats(State(state): State<ApiState>) -> Result<Data<Counter>, ApiError> {
    global(&state, Stat::LruFallback).await
}

/// Packets dropped as too big once encapsulated: v1 IPv4, v2 IPv6.
#[utoipa::path(get, path = "/api/v1/stats/icmp-too-big", tag = "stats",
    responses((status = 200, description = "v1 IPv4, v2 IPv6", body = Success<Counter>)))]
async fn icmp_too_big_stats(State(state): State<ApiState>) -> Result<Data<Counter>, ApiError> {
    global(&state, Stat::IcmpTooBig).await
}

/// Consistent-hash drops: v1 empty ring slot, v2 the slot's real missing.
#[utoipa::path(get, path = "/api/v1/stats/ch-drop", tag = "stats",
    responses((status = 200, description = "v1 empty slot, v2 missing real", body = Success<Counter>)))]
async fn ch_drop_stats(State(state): State<ApiState>) -> Result<Data<Counter>, ApiError> {
    global(&state, Stat::ChDrop).await
}

/// Every packet the program saw: v1 packets, v2 bytes.
#[utoipa::path(get, path = "/api/v1/stats/xdp/total", tag = "stats",
    responses((status = 200, description = "v1 packets, v2 bytes", body = Success<Counter>)))]
async fn xdp_total_stats(State(state): State<ApiState>) -> Result<Data<Counter>, ApiError> {
    global(&state, Stat::XdpTotal).await
}

/// XDP_TX verdicts: v1 packets, v2 bytes (as received).
#[utoipa::path(get, path = "/api/v1/stats/xdp/tx", tag = "stats",
    responses((status = 200, description = "v1 packets, v2 bytes", body = Success<Counter>)))]
async fn xdp_tx_stats(State(state): State<ApiState>) -> Result<Data<Counter>, ApiError> {
    global(&state, Stat::XdpTx).await
}

/// XDP_DROP verdicts: v1 packets, v2 bytes.
#[utoipa::path(get, path = "/api/v1/stats/xdp/drop", tag = "stats",
    responses((status = 200, description = "v1 packets, v2 bytes", body = Success<Counter>)))]
async fn xdp_drop_stats(State(state): State<ApiState>) -> Result<Data<Counter>, ApiError> {
    global(&state, Stat::XdpDrop).await
}

/// XDP_PASS verdicts: v1 packets, v2 bytes.
#[utoipa::path(get, path = "/api/v1/stats/xdp/pass", tag = "stats",
    responses((status = 200, description = "v1 packets, v2 bytes", body = Success<Counter>)))]
async fn xdp_pass_stats(State(state): State<ApiState>) -> Result<Data<Counter>, ApiError> {
    global(&state, Stat::XdpPass).await
}

/// A map's capacity and the entries in use.
#[utoipa::path(get, path = "/api/v1/stats/bpf-map", tag = "stats", params(MapName),
    request_body(content = Option<MapName>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "Capacity and entries in use", body = Success<MapUsage>)))]
async fn bpf_map_stats(
    State(state): State<ApiState>,
    Params(req): Params<MapName>,
) -> Result<Data<MapUsage>, ApiError> {
    let map = weir_map(&req.map_name)?;
    let (max_entries, current_entries) = state.read(move |lb| map_usage(lb, map)).await?;
    Ok(Data(MapUsage { max_entries, current_entries }))
}

/// (capacity, entries in use) of a weir map. For arrays, "in use" is what
/// the control plane uses (the kernel counts every index of an array).
fn map_usage(lb: &Balancer, map: &str) -> crate::Result<(u32, u32)> {
    let c = lb.config();
    let vips = lb.vips();
    let count = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
    Ok(match map {
        abi::map::CH_RINGS => (c.max_vips * c.ch_ring_size, count(vips.len()).saturating_mul(c.ch_ring_size)),
        abi::map::VIP_STATS => (c.max_vips, count(vips.len())),
        // One counter slot per real.
        abi::map::REAL_STATS => lb.map_usage(abi::map::REALS)?,
        abi::map::VIP_FILTER => {
            let buckets: BTreeSet<u32> = vips.iter().map(|v| abi::vip_filter_bucket(v.id.addr)).collect();
            (abi::VIP_FILTER_SIZE, count(buckets.len()))
        }
        // One entry holding every global counter / the control values.
        abi::map::STATS | abi::map::CTL => (1, 1),
        other => lb.map_usage(other)?,
    })
}

/// API-side failures: Balancer calls that failed in BPF, addresses that
/// failed validation.
#[utoipa::path(get, path = "/api/v1/stats/userspace", tag = "stats",
    responses((status = 200, description = "Userspace counters", body = Success<UserspaceStats>)))]
async fn userspace_stats(State(state): State<ApiState>) -> Result<Data<UserspaceStats>, ApiError> {
    state.read(|_| Ok(())).await?;
    Ok(Data(state.counters.snapshot()))
}

/// Packets each CPU processed: every possible CPU, or the configured
/// `forwarding_cores` in their order.
#[utoipa::path(get, path = "/api/v1/stats/per-core-packets", tag = "stats",
    responses((status = 200, description = "Packets per CPU", body = Success<PerCorePackets>)))]
async fn per_core_packets(State(state): State<ApiState>) -> Result<Data<PerCorePackets>, ApiError> {
    let counts = state.read(|lb| lb.per_core_packets()).await?;
    Ok(Data(PerCorePackets { counts }))
}

/// Whether a CPU is above the new-connection rate at which new flows skip
/// the connection table.
#[utoipa::path(get, path = "/api/v1/stats/flood-status", tag = "stats",
    responses((status = 200, description = "Flood status", body = Success<FloodStatus>)))]
async fn flood_status(State(state): State<ApiState>) -> Result<Data<FloodStatus>, ApiError> {
    let under_flood = state.read(|lb| lb.under_flood()).await?;
    Ok(Data(FloodStatus { under_flood }))
}

/// The healthcheck program's counters, summed over CPUs; 501 without `enable_hc`.
#[utoipa::path(get, path = "/api/v1/stats/hc-prog", tag = "stats",
    responses((status = 200, description = "Probes processed, dropped, skipped (not probes) and too big",
        body = Success<super::healthcheck::HcProgStats>),
        (status = 501, description = "The balancer was created without enable_hc", body = super::reply::Failure)))]
async fn hc_prog_stats(State(state): State<ApiState>) -> Result<Data<super::healthcheck::HcProgStats>, ApiError> {
    let stats = state.read(|lb| lb.healthchecker()?.stats()).await?;
    Ok(Data(super::healthcheck::prog_stats(stats)))
}

#[cfg(test)]
mod tests {
    use weir_ebpf::abi::Stat;

    /// Every counter that weir-abi's table gives an endpoint is served there.
    #[test]
    fn counter_endpoints_are_served() {
        let api = crate::api::openapi();
        for stat in Stat::ALL {
            if let Some(endpoint) = stat.info().endpoint {
                let path = format!("/api/v1/stats/{endpoint}");
                assert!(api.paths.paths.contains_key(&path), "{stat:?}: no {path}");
            }
        }
    }
}
