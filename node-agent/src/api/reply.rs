//! The success envelope: `{"success": true, "data": ...}`, or exactly
//! `{"success": true}` when there is no data — 201 for creates, 200 for the
//! rest. The error envelope's shape ([`Failure`]) is here too, so that what
//! `ApiError` sends and what the OpenAPI description says are one type.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

/// 200 with `data`.
#[derive(Debug)]
pub(crate) struct Data<T>(pub T);

/// 200 without data.
#[derive(Debug)]
pub(crate) struct Done;

/// 201 without data: katran-server's answer to a create.
#[derive(Debug)]
pub(crate) struct Created;

/// `{"success": true, "data": ...}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Success<T> {
    pub success: bool,
    pub data: T,
}

/// `{"success": true, "data": ...}` with `data` only when there is some
/// (the current API's `GET /vips/healthcheck` of a VIP without a check).
#[derive(Debug, Serialize, ToSchema)]
pub struct MaybeSuccess<T> {
    pub success: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<T>,
}

/// `{"success": true}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Acknowledged {
    pub success: bool,
}

/// `{"success": false, "error": {"code", "message"}}`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Failure {
    pub success: bool,
    pub error: ErrorDetail,
}

/// An error's katran-server code and a message that names the offending
/// field or value.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorDetail {
    #[schema(example = "INVALID_REQUEST")]
    pub code: String,
    pub message: String,
}

impl<T: Serialize> IntoResponse for Data<T> {
    fn into_response(self) -> Response {
        Json(Success { success: true, data: self.0 }).into_response()
    }
}

impl IntoResponse for Done {
    fn into_response(self) -> Response {
        Json(Acknowledged { success: true }).into_response()
    }
}

impl IntoResponse for Created {
    fn into_response(self) -> Response {
        (StatusCode::CREATED, Json(Acknowledged { success: true })).into_response()
    }
}
