//! The one error shape of the HTTP API: katran-server's envelope
//! `{"success": false, "error": {"code", "message"}}` with the code's status.
//! Handler errors, extractor rejections, unknown paths, wrong methods and the
//! security layers (401, 403, 413) all answer with it.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::reply::{ErrorDetail, Failure};
use crate::error::Code;
use crate::Error;

impl Code {
    /// The HTTP status each code answers with, unless a layer says
    /// otherwise (a body too large is INVALID_REQUEST with 413).
    pub fn status(self) -> StatusCode {
        match self {
            Code::InvalidRequest => StatusCode::BAD_REQUEST,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::Forbidden | Code::ReadOnly => StatusCode::FORBIDDEN,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            // A change cluster mode owns (a VIP of a VirtualService, the
            // balancer's lifecycle): katran has no code for it; 409 as the
            // request conflicts with the node's state.
            Code::AlreadyExists | Code::ClusterOwned => StatusCode::CONFLICT,
            Code::SpaceExhausted => StatusCode::INSUFFICIENT_STORAGE,
            Code::FeatureDisabled => StatusCode::NOT_IMPLEMENTED,
            Code::LbNotInitialized | Code::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            Code::BpfFailed | Code::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
            Code::HcServiceUnavailable => StatusCode::BAD_GATEWAY,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// katran-server's code: INVALID_REQUEST, NOT_FOUND, ...
    pub code: Code,
    pub message: String,
}

impl ApiError {
    /// An error with its code's status.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { status: code.status(), code, message: message.into() }
    }

    /// An error whose status is not its code's (413 and 408 are INVALID_REQUEST).
    pub fn with_status(status: StatusCode, code: Code, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidRequest, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    pub fn already_exists(message: impl Into<String>) -> Self {
        Self::new(Code::AlreadyExists, message)
    }

    pub fn not_initialized() -> Self {
        Self::new(Code::LbNotInitialized, "the load balancer is not initialized: POST /api/v1/lb/create first")
    }

    pub fn feature_disabled(message: impl Into<String>) -> Self {
        Self::new(Code::FeatureDisabled, message)
    }

    pub fn cluster_owned(message: impl Into<String>) -> Self {
        Self::new(Code::ClusterOwned, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(Code::Unauthorized, message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(Code::InternalError, message)
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
        Self { status: code.status(), code, message }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Failure {
            success: false,
            error: ErrorDetail { code: self.code.as_str().to_owned(), message: self.message },
        };
        (self.status, Json(body)).into_response()
    }
}
