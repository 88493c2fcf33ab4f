//! The two answers no handler gives, in the JSON error envelope rather than
//! axum's defaults: an unknown path (404 NOT_FOUND) and a wrong method (405
//! METHOD_NOT_ALLOWED, with the `Allow` header HTTP asks for). The methods
//! each path allows are read from the router's own OpenAPI description, so
//! they are the ones its `#[utoipa::path]` attributes name.

use crate::error::Code;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::http::{header, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use utoipa::openapi::path::PathItem;
use utoipa::openapi::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use super::error::ApiError;
use super::ApiState;

/// Path -> the methods served there.
type Allowed = BTreeMap<String, BTreeSet<&'static str>>;

/// `routes`' axum router, answering unknown paths 404 and wrong methods 405.
/// (axum applies the 405 fallback to the routes present when it is set: this
/// is the last step of building a router.)
pub(super) fn with_json_errors(routes: OpenApiRouter<ApiState>) -> Router<ApiState> {
    let (router, api) = routes.split_for_parts();
    let allowed = Arc::new(allowed(&api));
    router.fallback(not_found).method_not_allowed_fallback(move |method: Method, uri: Uri| {
        let allowed = Arc::clone(&allowed);
        async move { method_not_allowed(&allowed, &method, &uri) }
    })
}

/// The methods of each path of `api`, with HEAD wherever GET is (axum
/// answers HEAD with the GET handler).
fn allowed(api: &OpenApi) -> Allowed {
    let mut allowed = Allowed::new();
    for (path, item) in &api.paths.paths {
        let methods = allowed.entry(path.clone()).or_default();
        for method in methods_of(item) {
            methods.insert(method);
            if method == "GET" {
                methods.insert("HEAD");
            }
        }
    }
    allowed
}

/// The methods a path item has an operation for.
fn methods_of(item: &PathItem) -> impl Iterator<Item = &'static str> + '_ {
    [
        ("GET", &item.get),
        ("PUT", &item.put),
        ("POST", &item.post),
        ("DELETE", &item.delete),
        ("OPTIONS", &item.options),
        ("HEAD", &item.head),
        ("PATCH", &item.patch),
        ("TRACE", &item.trace),
    ]
    .into_iter()
    .filter_map(|(method, op)| op.as_ref().map(|_| method))
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint {method} {}", uri.path()))
}

/// katran-server has no code for a wrong method: 405 with the admin
/// conventions' METHOD_NOT_ALLOWED, and the `Allow` header HTTP asks for.
fn method_not_allowed(allowed: &Allowed, method: &Method, uri: &Uri) -> Response {
    let methods = allowed.get(uri.path()).map(|m| m.iter().copied().collect::<Vec<_>>().join(", ")).unwrap_or_default();
    let error = ApiError::new(
        Code::MethodNotAllowed,
        format!("method {method} is not allowed on {} (allowed: {methods})", uri.path()),
    );
    let mut response = error.into_response();
    if let Ok(value) = HeaderValue::from_str(&methods) {
        response.headers_mut().insert(header::ALLOW, value);
    }
    response
}
