//! The OpenAPI 3 description, built from every handler's `#[utoipa::path]`
//! (collected by the same utoipa-axum routers that serve them), served at
//! `GET /api/v1/openapi.json`.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, Required, ResponseBuilder};

use super::reply::{Acknowledged, Failure};

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<super::ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new().routes(routes!(openapi_json))
}

/// What every description starts from: the API's identity and the envelopes.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "weir-agent",
        description = "katran-server's REST API (shared/specs/katran-rest-api.md), served by weir's node agent \
                       over its XDP datapath. Every answer is an envelope: {\"success\": true, \"data\": ...}, \
                       {\"success\": true}, or {\"success\": false, \"error\": {\"code\", \"message\"}}. GET \
                       endpoints with parameters take them as a JSON body or as query parameters. Each operation lists the \
                       statuses it answers; besides them, the server answers any request 401 UNAUTHORIZED (a token \
                       is required), 403 FORBIDDEN or READ_ONLY, 408 (a slow body) or 413 (a body over --body-limit), \
                       and an unknown path 404 NOT_FOUND, a wrong method 405 METHOD_NOT_ALLOWED (with Allow)."
    ),
    components(schemas(Acknowledged, Failure))
)]
struct Base;

/// The error answers of each operation besides the ones its attribute names:
/// exactly the statuses its handler (and its extractor) can give. Every
/// body-reading extractor answers 400 (bad JSON, a field of the wrong type)
/// and 413 (a body over the limit); the server's layers (401, 403, 408, 413,
/// before routing) and unknown paths / wrong methods (404, 405) are not any
/// operation's and are described in `info`.
const ERRORS: &[(&str, &[u16])] = &[
    ("health", &[]),
    ("health_ready", &[503]),
    ("openapi_json", &[]),
    ("system_info", &[]),
    ("limits_effective", &[]),
    ("lb_status", &[]),
    ("lb_create", &[400, 409, 413, 500, 501]),
    ("lb_close", &[409, 503]),
    ("lb_load_bpf_progs", &[503]),
    ("lb_attach_bpf_progs", &[400, 500, 503]),
    ("lb_reload", &[400, 413, 500, 501, 503]),
    ("config_export", &[500, 503]),
    ("config_export_json", &[503]),
    ("list_vips", &[503]),
    ("add_vip", &[400, 409, 413, 500, 501, 503, 507]),
    ("del_vip", &[400, 404, 409, 413, 500, 503]),
    ("get_vip_flags", &[400, 404, 413, 503]),
    ("modify_vip_flags", &[400, 404, 409, 413, 500, 501, 503]),
    ("change_hash_function", &[400, 404, 409, 413, 500, 503]),
    ("get_reals", &[400, 404, 413, 503]),
    ("add_real", &[400, 404, 409, 413, 500, 503, 507]),
    ("del_real", &[400, 404, 409, 413, 500, 503]),
    ("batch_reals", &[400, 404, 409, 413, 500, 503, 507]),
    ("real_index", &[400, 413, 503]),
    ("modify_real_flags", &[400, 404, 409, 413, 500, 503]),
    ("set_real_health", &[400, 404, 409, 413, 500, 503]),
    ("set_reals_health", &[400, 404, 409, 413, 500, 503]),
    ("put_health_check", &[400, 404, 409, 413, 500, 501, 503]),
    ("get_health_check", &[400, 404, 413, 503]),
    ("del_health_check", &[400, 404, 409, 413, 500, 503]),
    ("health_status", &[400, 404, 413, 503]),
    ("delete_lru", &[400, 404, 413, 500, 503]),
    ("purge_vip_lru", &[400, 404, 413, 500, 503]),
    ("get_mac", &[503]),
    ("set_mac", &[400, 413, 500, 503]),
    ("real_for_flow", &[400, 404, 413, 500, 503]),
    ("simulate_packet", &[400, 413, 500, 503]),
    ("prog_fd", &[503]),
    ("hc_prog_fd", &[501, 503]),
    ("hc_prog_stats", &[500, 501, 503]),
    ("get_dsts", &[501, 503]),
    ("add_dst", &[400, 413, 500, 501, 503, 507]),
    ("del_dst", &[400, 404, 413, 500, 501, 503]),
    ("add_key", &[400, 409, 413, 500, 501, 503, 507]),
    ("del_key", &[400, 404, 413, 500, 501, 503]),
    ("map_fd", &[400, 404, 413, 503]),
    ("check_feature", &[400, 413]),
    ("install_feature", &[400, 413, 501, 503]),
    ("remove_feature", &[400, 413, 501]),
];

/// Stats endpoints: counters read from the maps.
const STATS_ERRORS: &[u16] = &[500, 503];

/// What each error status means in this API (its katran-server codes).
fn meaning(status: u16) -> &'static str {
    match status {
        400 => {
            "INVALID_REQUEST: a malformed body or query, a field of the wrong type or out of range, an address \
                that is not a unicast one"
        }
        404 => "NOT_FOUND: no such VIP, real, map or flow",
        409 => "ALREADY_EXISTS, or CLUSTER_OWNED (cluster mode owns what the request changes)",
        413 => "INVALID_REQUEST: the body is larger than the limit",
        500 => "BPF_FAILED or INTERNAL_ERROR: a map or program operation failed",
        501 => "FEATURE_DISABLED: weir's datapath lacks the feature the request asks for",
        503 => "LB_NOT_INITIALIZED: POST /api/v1/lb/create first",
        507 => "SPACE_EXHAUSTED: a table is full",
        _ => "an error",
    }
}

/// The error statuses `id` can answer (see [`ERRORS`]); stats endpoints
/// without parameters share [`STATS_ERRORS`], disabled ones answer 501 only.
fn errors_of(id: &str, op: &Operation) -> &'static [u16] {
    if let Some((_, errors)) = ERRORS.iter().find(|(name, _)| *name == id) {
        return errors;
    }
    let takes_input = op.request_body.is_some() || op.parameters.as_ref().is_some_and(|p| !p.is_empty());
    match op.tags.as_deref() {
        Some([tag]) if tag == "disabled" => &[501],
        Some([tag]) if tag == "stats" && !takes_input => STATS_ERRORS,
        Some([tag]) if tag == "stats" => &[400, 404, 413, 500, 503],
        _ => panic!("operation {id} has no entry in docs::ERRORS"),
    }
}

/// [`Base`] with the handlers' operations (`paths`: the routers' description),
/// every operation given the error answers it can give, each with the error
/// envelope.
pub(super) fn describe(paths: OpenApi) -> OpenApi {
    let mut api = <Base as utoipa::OpenApi>::openapi();
    api.merge(paths);
    for item in api.paths.paths.values_mut() {
        for op in operations_mut(item) {
            let id = op.operation_id.clone().unwrap_or_default();
            // utoipa drops `required` from a parameter whose schema comes from
            // `schema_with` (types::schemas); no parameter type has an optional
            // field, so every query parameter is required.
            for param in op.parameters.iter_mut().flatten() {
                param.required = Required::True;
            }
            for status in errors_of(&id, op) {
                op.responses.responses.entry(status.to_string()).or_insert_with(|| {
                    ResponseBuilder::new()
                        .description(meaning(*status))
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
