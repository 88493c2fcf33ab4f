//! Katran's optional datapath features (`/api/v1/features/...`), answered
//! for weir's datapath. LocalDeliveryOpt (a LOCAL_REAL of a LOCAL_VIP gets its
//! packets through XDP_PASS to the local stack) is built in; DirectHC (the
//! healthcheck program) is available when the balancer runs it (`enable_hc`
//! in `/lb/create`), as in Katran, where it comes with the loaded healthcheck
//! program; the rest are not implemented yet. weir never loads another
//! program (`prog_path`): installing an available feature succeeds with
//! nothing to do, installing or removing a missing one answers 501, and
//! removing an available one 400.

use axum::extract::State;

use super::error::ApiError;
use super::extract::{Body, Params};
use super::reply::{Acknowledged, Data, Done, Success};
use super::types::{FeatureAvailable, FeatureChange, FeatureQuery};
use super::ApiState;

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new().routes(routes!(check_feature)).routes(routes!(install_feature)).routes(routes!(remove_feature))
}

/// A Katran feature.
struct Feature {
    value: u32,
    name: &'static str,
    what: &'static str,
    /// Whether weir's datapath has it.
    available: Availability,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Availability {
    Builtin,
    /// With the healthcheck program (`enable_hc`).
    WithHc,
    Missing,
}
use Availability::{Builtin, Missing, WithHc};

const FEATURES: &[Feature] = &[
    Feature { value: 1, name: "SrcRouting", what: "source routing", available: Missing },
    Feature { value: 2, name: "InlineDecap", what: "inline decapsulation", available: Missing },
    Feature { value: 4, name: "Introspection", what: "the packet monitor", available: Missing },
    Feature { value: 8, name: "GUEEncap", what: "GUE encapsulation", available: Missing },
    Feature { value: 16, name: "DirectHC", what: "direct healthcheck encapsulation", available: WithHc },
    Feature { value: 32, name: "LocalDeliveryOpt", what: "local delivery", available: Builtin },
    Feature { value: 64, name: "FlowDebug", what: "flow-debug maps", available: Missing },
];

fn feature(value: u32) -> Result<&'static Feature, ApiError> {
    FEATURES.iter().find(|f| f.value == value).ok_or_else(|| {
        let known: Vec<String> = FEATURES.iter().map(|f| format!("{} {}", f.value, f.name)).collect();
        ApiError::invalid(format!("feature: {value} is not a Katran feature ({})", known.join(", ")))
    })
}

/// Whether the running datapath has `f` (DirectHC: whether the balancer,
/// if any, runs its healthcheck program).
async fn available(state: &ApiState, f: &Feature) -> Result<bool, ApiError> {
    match f.available {
        Builtin => Ok(true),
        Missing => Ok(false),
        WithHc => match state.read(|lb| Ok(lb.healthchecker().is_ok())).await {
            Err(e) if e.code == crate::error::Code::LbNotInitialized => Ok(false),
            other => other,
        },
    }
}

fn missing(f: &Feature) -> ApiError {
    if f.available == WithHc {
        return ApiError::feature_disabled(format!(
            "feature {} ({}): the balancer runs no healthcheck program; create it with enable_hc: true",
            f.name, f.value
        ));
    }
    ApiError::feature_disabled(format!(
        "feature {} ({}): weir's datapath does not implement {} yet, and weir does not load other programs",
        f.name, f.value, f.what
    ))
}

/// Whether the datapath has a feature.
#[utoipa::path(get, path = "/api/v1/features/check", tag = "features", params(FeatureQuery),
    request_body(content = Option<FeatureQuery>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "Whether the feature is available", body = Success<FeatureAvailable>)))]
async fn check_feature(
    State(state): State<ApiState>,
    Params(req): Params<FeatureQuery>,
) -> Result<Data<FeatureAvailable>, ApiError> {
    let f = feature(req.feature)?;
    Ok(Data(FeatureAvailable { available: available(&state, f).await? }))
}

/// Installs a feature: 200 when built in (nothing to do), 501 otherwise.
#[utoipa::path(post, path = "/api/v1/features/install", tag = "features", request_body = FeatureChange,
    responses((status = 200, description = "The feature is available", body = Acknowledged)))]
async fn install_feature(State(state): State<ApiState>, Body(req): Body<FeatureChange>) -> Result<Done, ApiError> {
    let f = feature(req.feature)?;
    if f.available == Missing {
        return Err(missing(f));
    }
    state.read(|_| Ok(())).await?;
    if !available(&state, f).await? {
        return Err(missing(f));
    }
    Ok(Done)
}

/// Removes a feature: 400 for a built-in one, 501 for a missing one.
#[utoipa::path(post, path = "/api/v1/features/remove", tag = "features", request_body = FeatureChange,
    responses((status = 400, description = "A built-in feature cannot be removed", body = super::reply::Failure)))]
async fn remove_feature(State(state): State<ApiState>, Body(req): Body<FeatureChange>) -> Result<Done, ApiError> {
    let f = feature(req.feature)?;
    if !available(&state, f).await? {
        return Err(missing(f));
    }
    Err(ApiError::invalid(format!("feature {} ({}) is part of weir's datapath and cannot be removed", f.name, f.value)))
}
