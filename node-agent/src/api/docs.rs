//! The OpenAPI 3 description, built from every handler's `#[utoipa::path]`
//! (the same attributes the routes come from), served at
//! `GET /api/v1/openapi.json`.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, ResponseBuilder};

use super::reply::{Acknowledged, Failure};

endpoints!(openapi_json);

/// What every description starts from: the API's identity and the envelopes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "weir-agent",
        description = "katran-server's REST API (shared/specs/katran-rest-api.md), served by weir's node agent \
                       over its XDP datapath. Every answer is an envelope: {\"success\": true, \"data\": ...}, \
                       {\"success\": true}, or {\"success\": false, \"error\": {\"code\", \"message\"}}. GET \
                       endpoints with parameters take them as a JSON body or as query parameters."
    ),
    components(schemas(Acknowledged, Failure))
)]
struct Base;

/// Merges the modules' descriptions and gives every operation the error
/// answers every endpoint can give (bad input, not initialized, BPF failure...).
pub(super) fn describe(docs: impl Iterator<Item = OpenApi>) -> OpenApi {
    let mut api = <Base as utoipa::OpenApi>::openapi();
    for doc in docs {
        api.merge(doc);
    }
    for item in api.paths.paths.values_mut() {
        for op in operations_mut(item) {
            for (status, what) in [
                (
                    "4XX",
                    "Bad request (INVALID_REQUEST), NOT_FOUND, ALREADY_EXISTS, METHOD_NOT_ALLOWED (405, with Allow)",
                ),
                ("5XX", "LB_NOT_INITIALIZED, BPF_FAILED, FEATURE_DISABLED, SPACE_EXHAUSTED, INTERNAL_ERROR"),
            ] {
                op.responses.responses.entry(status.to_owned()).or_insert_with(|| {
                    ResponseBuilder::new()
                        .description(what)
                        .content(
                            "application/json",
                            ContentBuilder::new().schema(Some(Ref::from_schema_name("Failure"))).build(),
                        )
                        .build()
                        .into()
                });
            }
        }
    }
    api
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        &mut item.get,
        &mut item.put,
        &mut item.post,
        &mut item.delete,
        &mut item.options,
        &mut item.head,
        &mut item.patch,
        &mut item.trace,
    ]
    .into_iter()
    .filter_map(Option::as_mut)
}

/// This API's OpenAPI 3 description (not in the envelope: OpenAPI tools read it as is).
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "docs",
    responses((status = 200, description = "The OpenAPI 3 description of this API", content_type = "application/json")))]
async fn openapi_json() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let json = JSON.get_or_init(|| super::openapi().to_pretty_json().expect("the description serializes"));
    ([(header::CONTENT_TYPE, "application/json")], json.as_str())
}
