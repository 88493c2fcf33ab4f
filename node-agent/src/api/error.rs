//! The one error shape of the HTTP API: katran-server's envelope
//! `{"success": false, "error": {"code", "message"}}` with the code's status.
//! Handler errors, extractor rejections, unknown paths, wrong methods and the
//! security layers (401, 403, 413) all answer with it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::reply::{ErrorDetail, Failure};
use crate::Error;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// katran-server's code: INVALID_REQUEST, NOT_FOUND, ...
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "INVALID_REQUEST", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "ALREADY_EXISTS", message)
    }

    pub fn not_initialized() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "LB_NOT_INITIALIZED",
            "the load balancer is not initialized: POST /api/v1/lb/create first",
        )
    }

    pub fn feature_disabled(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, "FEATURE_DISABLED", message)
    }

    /// A change cluster mode owns (a VIP of a VirtualService, the balancer's
    /// lifecycle): katran has no code for it; 409 as the request conflicts
    /// with the node's state, and a code that says whose it is.
    pub fn cluster_owned(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "CLUSTER_OWNED", message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", message)
    }
}

/// The HTTP status of each katran-server error code.
pub fn status_of(code: &str) -> StatusCode {
    match code {
        "INVALID_REQUEST" => StatusCode::BAD_REQUEST,
        "UNAUTHORIZED" => StatusCode::UNAUTHORIZED,
        "NOT_FOUND" => StatusCode::NOT_FOUND,
        "METHOD_NOT_ALLOWED" => StatusCode::METHOD_NOT_ALLOWED,
        "ALREADY_EXISTS" => StatusCode::CONFLICT,
        "SPACE_EXHAUSTED" => StatusCode::INSUFFICIENT_STORAGE,
        "FEATURE_DISABLED" => StatusCode::NOT_IMPLEMENTED,
        "LB_NOT_INITIALIZED" => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl From<Error> for ApiError {
    fn from(err: Error) -> Self {
        let code = err.code();
        // Library errors keep their cause chain in the message: "BPF operation
        // failed: write map weir_vips: ..." says what and why.
        let mut message = err.to_string();
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        Self { status: status_of(code), code, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Failure { success: false, error: ErrorDetail { code: self.code.to_owned(), message: self.message } };
        (self.status, Json(body)).into_response()
    }
}
