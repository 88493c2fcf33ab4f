//! The current katran-server API's real health and VIP health checks:
//! `PUT /vips/reals/health` (and `/batch`), `PUT|GET|DELETE
//! /vips/healthcheck`, `GET /vips/healthcheck/status` (contract:
//! shared/specs/katran-rest-api-current.md, "Real health" and "VIP
//! healthcheck configuration"). Every one answers 200 on success, 503
//! LB_NOT_INITIALIZED before `/lb/create` (before looking at the body), and
//! 400 for a bad body or query. A check other than `dummy` needs weir's
//! prober (501 FEATURE_DISABLED without it); 502 HC_SERVICE_UNAVAILABLE is
//! never needed, the prober running in the agent. A stored check is probed
//! from the next sync on ([`crate::probing`]); the status comes from the
//! prober's state. A health set by hand on a probed real holds until its
//! next probe result.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::State;
use serde::de::DeserializeOwned;

use super::error::ApiError;
use super::extract::{parse_json, Params, RawBody};
use super::reply::{Acknowledged, Data, Done, Success};
use super::types::{
    HealthCheckConfig, HealthStatus, HttpCheckConfig, RealHealthStatus, RealHealthUpdate, RealsHealthBatch,
    UdpCheckConfig, VipHealthCheck, VipKey,
};
use super::ApiState;
use crate::dataplane::{CheckKind, HealthCheck, HttpCheck, UdpCheck};
use crate::prober::RealStatus;
use crate::Error;

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new()
        .routes(routes!(set_real_health))
        .routes(routes!(set_reals_health))
        .routes(routes!(put_health_check))
        .routes(routes!(get_health_check))
        .routes(routes!(del_health_check))
        .routes(routes!(health_status))
}

/// The body, parsed only once a balancer exists (503 comes before 400).
async fn body_of<T: DeserializeOwned>(state: &ApiState, body: &[u8]) -> Result<T, ApiError> {
    state.read(|_| Ok(())).await?;
    parse_json(body)
}

/// Marks a real of a VIP healthy (back into the ring with its weight and
/// flags) or unhealthy (out of it; its connections stay). 404 when the VIP
/// or the real is unknown.
#[utoipa::path(put, path = "/api/v1/vips/reals/health", tag = "health", request_body = RealHealthUpdate,
    responses((status = 200, description = "Applied (or unchanged)", body = Acknowledged)))]
async fn set_real_health(State(state): State<ApiState>, RawBody(body): RawBody) -> Result<Done, ApiError> {
    let req: RealHealthUpdate = body_of(&state, &body).await?;
    let id = state.vip_id("vip.", &req.vip)?;
    let addr = state.ip("address", &req.address)?;
    let healthy = req.healthy;
    state.write_vip(id, move |lb| lb.set_real_health(&id, addr, healthy)).await?;
    if let Some(probing) = &state.probing {
        probing.applied(&id, addr, healthy);
    }
    Ok(Done)
}

/// Sets the health of many reals of a VIP at once, all or nothing; reals
/// the VIP lacks are skipped.
#[utoipa::path(put, path = "/api/v1/vips/reals/health/batch", tag = "health", request_body = RealsHealthBatch,
    responses((status = 200, description = "Applied", body = Acknowledged)))]
async fn set_reals_health(State(state): State<ApiState>, RawBody(body): RawBody) -> Result<Done, ApiError> {
    let req: RealsHealthBatch = body_of(&state, &body).await?;
    let id = state.vip_id("vip.", &req.vip)?;
    let mut reals = Vec::with_capacity(req.reals.len());
    for (i, real) in req.reals.iter().enumerate() {
        reals.push((state.ip(&format!("reals[{i}].address"), &real.address)?, real.healthy));
    }
    let applied = reals.clone();
    state.write_vip(id, move |lb| lb.set_reals_health(&id, &reals)).await?;
    if let Some(probing) = &state.probing {
        for (addr, healthy) in applied {
            probing.applied(&id, addr, healthy);
        }
    }
    Ok(Done)
}

/// Creates or replaces a VIP's health check. Errors in the document's
/// order: 503, 400 body, 404 VIP, 400 check, 501 (a probing check without
/// the prober).
#[utoipa::path(put, path = "/api/v1/vips/healthcheck", tag = "health", request_body = VipHealthCheck,
    responses((status = 200, description = "Stored", body = Acknowledged)))]
async fn put_health_check(State(state): State<ApiState>, RawBody(body): RawBody) -> Result<Done, ApiError> {
    let req: VipHealthCheck = body_of(&state, &body).await?;
    let id = state.vip_id("vip.", &req.vip)?;
    state
        .write_vip(id, move |lb| {
            lb.vip_info(&id)?;
            lb.set_health_check(&id, from_wire(&req.healthcheck)?)
        })
        .await?;
    Ok(Done)
}

/// A VIP's health check, defaults included; no `data` when it has none.
#[utoipa::path(get, path = "/api/v1/vips/healthcheck", tag = "health", params(VipKey),
    request_body(content = Option<VipKey>, description = "The parameters as a JSON body, instead of the query string"),
    responses(
        (status = 200, description = "The check (no `data` without one)", body = super::reply::MaybeSuccess<HealthCheckConfig>),
        (status = 404, description = "NOT_FOUND: no such VIP", body = super::reply::Failure),
    ))]
async fn get_health_check(
    State(state): State<ApiState>,
    Params(key): Params<VipKey>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    let id = state.vip_id("", &key)?;
    let check = state.read(move |lb| lb.health_check(&id)).await?;
    Ok(match check {
        Some(check) => Data(to_wire(&check)).into_response(),
        None => Done.into_response(),
    })
}

/// Removes a VIP's health check; its reals keep their last health. 404 for
/// an unknown VIP or one without a check.
#[utoipa::path(delete, path = "/api/v1/vips/healthcheck", tag = "health", params(VipKey),
    request_body(content = Option<VipKey>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "Removed", body = Acknowledged)))]
async fn del_health_check(State(state): State<ApiState>, Params(key): Params<VipKey>) -> Result<Done, ApiError> {
    let id = state.vip_id("", &key)?;
    state.write_vip(id, move |lb| lb.del_health_check(&id)).await?;
    Ok(Done)
}

/// The health of each real of a checked VIP and what its last probe found
/// (times omitted until a probe ran). 404 when the VIP has no check.
#[utoipa::path(get, path = "/api/v1/vips/healthcheck/status", tag = "health", params(VipKey),
    request_body(content = Option<VipKey>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "The reals' health", body = Success<HealthStatus>)))]
async fn health_status(
    State(state): State<ApiState>,
    Params(key): Params<VipKey>,
) -> Result<Data<HealthStatus>, ApiError> {
    let id = state.vip_id("", &key)?;
    let (reals, fail_open) = state
        .read(move |lb| {
            if lb.health_check(&id)?.is_none() {
                return Err(Error::NotFound { what: format!("health check of VIP {id}") });
            }
            Ok((lb.health_status(&id)?, lb.vip_info(&id)?.fail_open))
        })
        .await?;
    let probed: BTreeMap<IpAddr, RealStatus> = state
        .probing
        .as_ref()
        .and_then(|p| p.status(&id))
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.real, s))
        .collect();
    let reals = reals
        .into_iter()
        .map(|r| {
            let probe = probed.get(&r.addr).map(|s| &s.health);
            RealHealthStatus {
                address: r.addr.to_string(),
                healthy: r.healthy,
                last_check_time: probe.and_then(|p| p.last_check).map(rfc3339),
                last_status_change: probe.and_then(|p| p.last_change).map(rfc3339),
                consecutive_failures: probe.map_or(0, |p| p.consecutive_failures),
            }
        })
        .collect();
    Ok(Data(HealthStatus { vip: VipKey::from(id), reals, fail_open }))
}

// katran-server's defaults, shared with the CRD's `healthCheck`.
use weir_crds::v1alpha1::{DEFAULT_EXPECTED_STATUS, DEFAULT_INTERVAL_MS, DEFAULT_THRESHOLD, DEFAULT_TIMEOUT_MS};

/// The stored check of a wire object: its type checked, its defaults
/// applied (a number ≤ 0 counts as omitted). Port 0 stands for the VIP's
/// port; what depends on the VIP is checked by the Balancer.
pub(super) fn from_wire(wire: &HealthCheckConfig) -> crate::Result<HealthCheck> {
    let field = "healthcheck";
    let kind = CheckKind::from_name(&wire.kind).ok_or_else(|| {
        Error::invalid(
            field,
            format!("type: {:?} is not \"http\", \"https\", \"tcp\", \"udp\" or \"dummy\"", wire.kind),
        )
    })?;
    let number = |name: &str, value: Option<i64>, default: u32| -> crate::Result<u32> {
        match value.filter(|&v| v > 0) {
            None => Ok(default),
            Some(v) => u32::try_from(v).map_err(|_| Error::invalid(field, format!("{name}: {v} is too large"))),
        }
    };
    let port = match wire.port.filter(|&p| p > 0) {
        None => 0,
        Some(p) => u16::try_from(p).map_err(|_| Error::invalid(field, format!("port: {p} is not 0-65535")))?,
    };
    let http = |name: &str, h: &Option<HttpCheckConfig>| -> crate::Result<Option<HttpCheck>> {
        let Some(h) = h else { return Ok(None) };
        let expected_status = match h.expected_status.filter(|&s| s > 0) {
            None => DEFAULT_EXPECTED_STATUS,
            Some(s) => u16::try_from(s)
                .map_err(|_| Error::invalid(field, format!("{name}.expected_status: {s} is not an HTTP status")))?,
        };
        Ok(Some(HttpCheck {
            path: h.path.clone(),
            expected_status,
            host: h.host.clone().filter(|h| !h.is_empty()),
            skip_tls_verify: h.skip_tls_verify.unwrap_or(false),
        }))
    };
    Ok(HealthCheck {
        kind,
        port,
        http: http("http", &wire.http)?,
        https: http("https", &wire.https)?,
        udp: wire.udp.as_ref().map(|u| UdpCheck { payload: u.payload.clone(), expect: u.expect.clone() }),
        interval_ms: number("interval_ms", wire.interval_ms, DEFAULT_INTERVAL_MS)?,
        timeout_ms: number("timeout_ms", wire.timeout_ms, DEFAULT_TIMEOUT_MS)?,
        healthy_threshold: number("healthy_threshold", wire.healthy_threshold, DEFAULT_THRESHOLD)?,
        unhealthy_threshold: number("unhealthy_threshold", wire.unhealthy_threshold, DEFAULT_THRESHOLD)?,
    })
}

/// The wire object of a stored check (every default shown).
pub(super) fn to_wire(check: &HealthCheck) -> HealthCheckConfig {
    let http = |h: &Option<HttpCheck>, tls: bool| {
        h.as_ref().map(|h| HttpCheckConfig {
            path: h.path.clone(),
            expected_status: Some(i64::from(h.expected_status)),
            host: h.host.clone(),
            skip_tls_verify: tls.then_some(h.skip_tls_verify),
        })
    };
    HealthCheckConfig {
        kind: check.kind.name().to_owned(),
        port: Some(i64::from(check.port)).filter(|&p| p != 0),
        http: http(&check.http, false),
        https: http(&check.https, true),
        udp: check.udp.as_ref().map(|u| UdpCheckConfig { payload: u.payload.clone(), expect: u.expect.clone() }),
        interval_ms: Some(i64::from(check.interval_ms)),
        timeout_ms: Some(i64::from(check.timeout_ms)),
        healthy_threshold: Some(i64::from(check.healthy_threshold)),
        unhealthy_threshold: Some(i64::from(check.unhealthy_threshold)),
    }
}

/// `2025-01-15T10:30:00Z`: RFC 3339, UTC, whole seconds.
fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn times_are_rfc3339_utc_seconds() {
        let at = |secs| rfc3339(UNIX_EPOCH + Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_736_937_000), "2025-01-15T10:30:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(4_107_542_399), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn defaults_apply_and_numbers_at_most_zero_are_omitted() {
        let wire = HealthCheckConfig {
            kind: "http".into(),
            port: Some(-1),
            http: Some(HttpCheckConfig { path: "/h".into(), ..Default::default() }),
            interval_ms: Some(0),
            timeout_ms: Some(-5),
            ..Default::default()
        };
        let check = from_wire(&wire).unwrap();
        assert_eq!(
            check,
            HealthCheck {
                kind: CheckKind::Http,
                port: 0,
                http: Some(HttpCheck { path: "/h".into(), expected_status: 200, host: None, skip_tls_verify: false }),
                https: None,
                udp: None,
                interval_ms: 5000,
                timeout_ms: 2000,
                healthy_threshold: 3,
                unhealthy_threshold: 3,
            }
        );
        let bad = HealthCheckConfig { kind: "icmp".into(), ..Default::default() };
        assert_eq!(
            from_wire(&bad).unwrap_err().to_string(),
            "invalid healthcheck: type: \"icmp\" is not \"http\", \"https\", \"tcp\", \"udp\" or \"dummy\""
        );
    }
}
