//! Katran's optional datapath features (`/api/v1/features/...`), answered
//! for weir's datapath. Only LocalDeliveryOpt is built in (a LOCAL_REAL of a
//! LOCAL_VIP gets its packets through XDP_PASS to the local stack); the rest
//! are not implemented yet. weir never loads another program (`prog_path`):
//! installing a built-in feature succeeds with nothing to do, installing or
//! removing a missing one answers 501, and removing a built-in one 400.

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
    available: bool,
}

const FEATURES: &[Feature] = &[
    Feature { value: 1, name: "SrcRouting", what: "source routing", available: false },
    Feature { value: 2, name: "InlineDecap", what: "inline decapsulation", available: false },
    Feature { value: 4, name: "Introspection", what: "the packet monitor", available: false },
    Feature { value: 8, name: "GUEEncap", what: "GUE encapsulation", available: false },
    Feature { value: 16, name: "DirectHC", what: "direct healthcheck encapsulation", available: false },
    Feature { value: 32, name: "LocalDeliveryOpt", what: "local delivery", available: true },
    Feature { value: 64, name: "FlowDebug", what: "flow-debug maps", available: false },
];

fn feature(value: u32) -> Result<&'static Feature, ApiError> {
    FEATURES.iter().find(|f| f.value == value).ok_or_else(|| {
        let known: Vec<String> = FEATURES.iter().map(|f| format!("{} {}", f.value, f.name)).collect();
        ApiError::invalid(format!("feature: {value} is not a Katran feature ({})", known.join(", ")))
    })
}

fn missing(f: &Feature) -> ApiError {
    ApiError::feature_disabled(format!(
        "feature {} ({}): weir's datapath does not implement {} yet, and weir does not load other programs",
        f.name, f.value, f.what
    ))
}

/// Whether the datapath has a feature.
#[utoipa::path(get, path = "/api/v1/features/check", tag = "features", params(FeatureQuery),
    request_body(content = Option<FeatureQuery>, description = "The parameters as a JSON body, instead of the query string"),
    responses((status = 200, description = "Whether the feature is available", body = Success<FeatureAvailable>)))]
async fn check_feature(Params(req): Params<FeatureQuery>) -> Result<Data<FeatureAvailable>, ApiError> {
    Ok(Data(FeatureAvailable { available: feature(req.feature)?.available }))
}

/// Installs a feature: 200 when built in (nothing to do), 501 otherwise.
#[utoipa::path(post, path = "/api/v1/features/install", tag = "features", request_body = FeatureChange,
    responses((status = 200, description = "The feature is available", body = Acknowledged)))]
async fn install_feature(State(state): State<ApiState>, Body(req): Body<FeatureChange>) -> Result<Done, ApiError> {
    let f = feature(req.feature)?;
    if !f.available {
        return Err(missing(f));
    }
    state.read(|_| Ok(())).await?;
    Ok(Done)
}

/// Removes a feature: 400 for a built-in one, 501 for a missing one.
#[utoipa::path(post, path = "/api/v1/features/remove", tag = "features", request_body = FeatureChange,
    responses((status = 400, description = "A built-in feature cannot be removed", body = super::reply::Failure)))]
async fn remove_feature(Body(req): Body<FeatureChange>) -> Result<Done, ApiError> {
    let f = feature(req.feature)?;
    if !f.available {
        return Err(missing(f));
    }
    Err(ApiError::invalid(format!("feature {} ({}) is part of weir's datapath and cannot be removed", f.name, f.value)))
}
