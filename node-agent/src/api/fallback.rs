//! Routing from the OpenAPI description: a handler is served at the path and
//! method(s) its `#[utoipa::path]` attribute names (found in its module's
//! `Doc` by operation id, which utoipa sets to the function's name), so the
//! routes and `/api/v1/openapi.json` cannot disagree. A handler missing from
//! its module's `Doc` panics when the router is built — in every test.
//!
//! Also the two answers no handler gives: unknown paths (404 NOT_FOUND) and
//! wrong methods (405) in the JSON error envelope, never axum's defaults.

use crate::error::Code;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::handler::Handler;
use axum::http::{header, HeaderValue, Method, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter};
use axum::Router;
use utoipa::openapi::path::{Operation, PathItem};
use utoipa::openapi::OpenApi;

use super::error::ApiError;
use super::ApiState;

/// Routes under construction, and the methods served at each path.
#[derive(Default)]
pub(crate) struct Routes {
    router: Router<ApiState>,
    /// Path -> methods, for the `Allow` header of 405 answers.
    allowed: BTreeMap<String, BTreeSet<&'static str>>,
}

impl Routes {
    /// Serves `handler` at every (path, method) of the operation of `doc`
    /// whose id is `operation_id`.
    pub fn add<H, T>(mut self, doc: &OpenApi, operation_id: &str, handler: H) -> Self
    where
        H: Handler<T, ApiState>,
        T: 'static,
    {
        let found: Vec<(String, &'static str)> = doc
            .paths
            .paths
            .iter()
            .flat_map(|(path, item)| {
                operations(item)
                    .filter(|(_, op)| op.operation_id.as_deref() == Some(operation_id))
                    .map(move |(method, _)| (path.clone(), method))
            })
            .collect();
        assert!(!found.is_empty(), "handler {operation_id} is not in its module's Doc (endpoints! list)");
        for (path, method) in found {
            self.router = self.router.route(&path, on(filter(method), handler.clone()));
            let allowed = self.allowed.entry(path).or_default();
            allowed.insert(method);
            if method == "GET" {
                // axum answers HEAD with the GET handler.
                allowed.insert("HEAD");
            }
        }
        self
    }

    /// The router, with the JSON 404 and 405 answers.
    pub fn into_router(self) -> Router<ApiState> {
        let allowed = Arc::new(self.allowed);
        self.router.fallback(not_found).method_not_allowed_fallback(move |method: Method, uri: Uri| {
            let allowed = Arc::clone(&allowed);
            async move { method_not_allowed(&allowed, &method, &uri) }
        })
    }
}

/// The operations of a path item with their method names.
fn operations(item: &PathItem) -> impl Iterator<Item = (&'static str, &Operation)> {
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
    .filter_map(|(method, op)| op.as_ref().map(|op| (method, op)))
}

fn filter(method: &str) -> MethodFilter {
    match method {
        "GET" => MethodFilter::GET,
        "PUT" => MethodFilter::PUT,
        "POST" => MethodFilter::POST,
        "DELETE" => MethodFilter::DELETE,
        "OPTIONS" => MethodFilter::OPTIONS,
        "HEAD" => MethodFilter::HEAD,
        "PATCH" => MethodFilter::PATCH,
        "TRACE" => MethodFilter::TRACE,
        other => unreachable!("operations() yields no method {other}"),
    }
}

async fn not_found(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found(format!("no endpoint {method} {}", uri.path()))
}

/// katran-server has no code for a wrong method: 405 with the admin
/// conventions' METHOD_NOT_ALLOWED, and the `Allow` header HTTP asks for.
fn method_not_allowed(allowed: &BTreeMap<String, BTreeSet<&'static str>>, method: &Method, uri: &Uri) -> Response {
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
