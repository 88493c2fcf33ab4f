//! Limits on one request: its body size (`--body-limit`), the time to receive
//! it (`-read-timeout`, from its first byte) and the time to answer it
//! (`-write-timeout`, from the end of its head), measured as Go's net/http
//! measures them. Refusals are the API's envelope.
//!
//! The body is read here, in full, before any handler runs: the limit then
//! holds whatever extractor a handler uses, a slow body meets the read
//! deadline here, and the API's bodies are small JSON documents anyway.

use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper::body::Body as _;
use tokio::time::Instant;

use super::duration;
use super::listener::RequestClock;
use crate::api::error::ApiError;

/// The limits, copied into each request's middleware.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub body: usize,
    pub read: Option<Duration>,
    pub write: Option<Duration>,
}

/// Bounds the time from the end of the request head to the response (Go's
/// write timeout). A handler still running then is abandoned (its future is
/// dropped) and the client gets 500 INTERNAL_ERROR rather than Go's silently
/// closed connection.
pub async fn write_deadline(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    let Some(limit) = limits.write else { return next.run(req).await };
    let start = req.extensions().get::<RequestClock>().map_or_else(Instant::now, |c| c.head_read);
    match tokio::time::timeout_at(start + limit, next.run(req)).await {
        Ok(response) => response,
        Err(_) => {
            let message =
                format!("the request was not answered within the write timeout ({})", duration::display(limit));
            tracing::warn!("{message}");
            ApiError::internal(message).into_response()
        }
    }
}

/// Reads the whole body within the read deadline and the size limit, then
/// hands the request on with the buffered body.
pub async fn body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limits.body as u64) {
        return too_large(limits.body);
    }
    let (parts, body) = req.into_parts();
    let collected = collect(body, limits.body);
    let result = match limits.read {
        Some(limit) => {
            let began = parts.extensions.get::<RequestClock>().map_or_else(Instant::now, |c| c.began);
            match tokio::time::timeout_at(began + limit, collected).await {
                Ok(result) => result,
                Err(_) => return slow_body(limit),
            }
        }
        None => collected.await,
    };
    match result {
        Ok(bytes) => next.run(Request::from_parts(parts, Body::from(bytes))).await,
        Err(Collect::TooLarge) => too_large(limits.body),
        Err(Collect::Failed(err)) => ApiError::invalid(format!("cannot read the request body: {err}")).into_response(),
    }
}

enum Collect {
    TooLarge,
    Failed(axum::Error),
}

async fn collect(mut body: Body, limit: usize) -> Result<Bytes, Collect> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let Ok(data) = frame.map_err(Collect::Failed)?.into_data() else { continue }; // trailers
        len += data.len();
        if len > limit {
            return Err(Collect::TooLarge);
        }
        chunks.push(data);
    }
    // The usual case, one chunk, is not copied.
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().expect("one chunk"),
        _ => chunks.concat().into(),
    })
}

/// 413 with the envelope. katran has no "too large" code; INVALID_REQUEST is
/// its code for a request the server will not take as sent.
fn too_large(limit: usize) -> Response {
    let message = format!("request body larger than {limit} bytes (see --body-limit)");
    let mut response = ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "INVALID_REQUEST", message).into_response();
    // The rest of the body may still be on its way: do not read it, close.
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 408 with the envelope, and the connection closed (the client is too slow to keep).
fn slow_body(limit: Duration) -> Response {
    let message = format!("the request body did not arrive within the read timeout ({})", duration::display(limit));
    let mut response = ApiError::new(StatusCode::REQUEST_TIMEOUT, "INVALID_REQUEST", message).into_response();
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
