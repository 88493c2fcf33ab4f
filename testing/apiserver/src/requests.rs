//! What happens to a request before it is served: it is recorded in the
//! request log ([`crate::ApiServer::requests`]), and it fails if an injected
//! [`Fault`] matches it ([`crate::ApiServer::inject_fault`]).

use axum::http::{HeaderMap, Method, Uri};

use crate::error::ApiError;
use crate::store::Shared;
use crate::REQUEST_LOG_LIMIT;

/// One request the server received (see [`ApiServer::requests`](crate::ApiServer::requests)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestRecord {
    /// HTTP method, e.g. `PATCH`.
    pub method: String,
    /// Path, e.g. `/apis/lb.weir.dev/v1alpha1/namespaces/default/virtualservices/a/status`.
    pub path: String,
    /// Raw query string (may be empty).
    pub query: String,
    /// Content type of the body (may be empty).
    pub content_type: String,
    /// Who sent it: the `Impersonate-User` header, which [`ApiServer::client_as`](crate::ApiServer::client_as)
    /// sets (None for [`ApiServer::client`](crate::ApiServer::client)). Lets a test attribute calls to a
    /// component, e.g. to check its RBAC.
    pub user: Option<String>,
}

impl RequestRecord {
    /// Whether this request changes state (POST, PUT, PATCH, DELETE).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }
}

/// An injected failure (see [`ApiServer::inject_fault`](crate::ApiServer::inject_fault)): the next `times`
/// requests whose method matches (`None` = any) and whose path contains
/// `path_contains` fail with `code`/`reason` instead of being served.
#[derive(Clone, Debug)]
pub struct Fault {
    /// Method to match, e.g. `"PATCH"`; `None` matches any.
    pub method: Option<String>,
    /// Substring of the request path to match.
    pub path_contains: String,
    /// HTTP status code to answer, e.g. 500.
    pub code: u16,
    /// Status reason, e.g. `InternalError`.
    pub reason: &'static str,
    /// How many matching requests fail.
    pub times: usize,
}

/// Appends the request to the log, keeping the last [`REQUEST_LOG_LIMIT`].
pub(crate) fn record(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap) {
    let content_type = headers.get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let mut log = shared.requests.lock().unwrap_or_else(|e| e.into_inner());
    log.push_back(RequestRecord {
        method: method.to_string(),
        path: uri.path().to_string(),
        query: uri.query().unwrap_or("").to_string(),
        content_type,
        user: headers.get("impersonate-user").and_then(|v| v.to_str().ok()).map(str::to_owned),
    });
    while log.len() > REQUEST_LOG_LIMIT {
        log.pop_front();
    }
}

/// The error of the first injected fault matching the request, if any (and
/// counts it down; spent faults are removed).
pub(crate) fn take_fault(shared: &Shared, method: &Method, uri: &Uri) -> Option<ApiError> {
    let mut faults = shared.faults.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(f) = faults.iter_mut().find(|f| {
        f.times > 0
            && f.method.as_deref().is_none_or(|m| m.eq_ignore_ascii_case(method.as_str()))
            && uri.path().contains(&f.path_contains)
    }) {
        f.times -= 1;
        let err = ApiError::new(f.code, f.reason, format!("injected fault ({} {})", f.code, f.reason));
        faults.retain(|f| f.times > 0);
        return Some(err);
    }
    None
}
