//! Limits on one request: its body size (`--body-limit`) and the time to
//! receive it (`-read-timeout`, from its first byte, as Go's net/http measures
//! it). Refusals are the API's envelope.
//!
//! No limit here bounds the handler: `-write-timeout` bounds writing the
//! response (Go's meaning, applied per connection by `conn`), so a change
//! that took long is still answered with what happened — never a failure for
//! a change that was applied, nor a change applied behind a failure.
//!
//! The body is read here, in full, before any handler runs: the limit then
//! holds whatever extractor a handler uses, a slow body meets the read
//! deadline here, and the API's bodies are small JSON documents anyway.
//!
//! A body over the limit is answered 413 after a bounded drain (a lingering
//! close: [`DRAIN_MAX_BYTES`], [`DRAIN_MAX_TIME`]), so that a client still
//! sending it reads the answer rather than a connection reset.

use crate::error::Code;
use std::pin::Pin;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{CONNECTION, CONTENT_LENGTH, EXPECT};
use axum::http::{HeaderValue, StatusCode, Version};
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
}

/// The lingering close of a body over the limit: read and discard at most
/// this many bytes of it (counted from its first byte)...
pub const DRAIN_MAX_BYTES: u64 = 4 << 20;
/// ... for at most this long, before the 413 is sent and the connection
/// closed. A client that writes its whole body before reading (Python's
/// urllib, most scripts) then reads the 413 instead of a reset: closing a
/// socket with unread input makes the kernel answer RST, which destroys the
/// response on its way. Beyond either bound the agent stops reading and
/// closes anyway: a 4 MiB, 2 s budget is what one refused request may cost.
pub const DRAIN_MAX_TIME: Duration = Duration::from_secs(2);

/// Reads the whole body within the read deadline and the size limit, then
/// hands the request on with the buffered body.
pub async fn body(State(limits): State<Limits>, req: Request, next: Next) -> Response {
    if req.body().is_end_stream() {
        return next.run(req).await;
    }
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    let lingering = lingers(&req, declared);
    let (parts, mut body) = req.into_parts();
    if declared.is_some_and(|len| len > limits.body as u64) {
        if lingering {
            drain(&mut body, 0).await;
        }
        return too_large(limits.body);
    }
    let collected = collect(&mut body, limits.body);
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
        Err(Collect::TooLarge(read)) => {
            if lingering {
                drain(&mut body, read).await;
            }
            too_large(limits.body)
        }
        Err(Collect::Failed(err)) => ApiError::invalid(format!("cannot read the request body: {err}")).into_response(),
    }
}

/// Whether a refused body is worth draining: HTTP/1 only (HTTP/2 resets just
/// the stream, the connection and the response survive), not when the client
/// waits for `100 Continue` (it has sent nothing; reading would invite the
/// body), and not when the declared length is beyond the drain's budget anyway.
fn lingers(req: &Request, declared: Option<u64>) -> bool {
    let http1 = matches!(req.version(), Version::HTTP_10 | Version::HTTP_11);
    let expects = req.headers().get(EXPECT).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    http1 && !expects && declared.is_none_or(|len| len <= DRAIN_MAX_BYTES)
}

/// Reads and discards the rest of `body` (of which `read` bytes were already
/// read) within [`DRAIN_MAX_BYTES`] and [`DRAIN_MAX_TIME`].
async fn drain(body: &mut Body, mut read: u64) {
    let discard = async {
        while let Some(Ok(frame)) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
            read += frame.data_ref().map_or(0, |d| d.len() as u64);
            if read > DRAIN_MAX_BYTES {
                return false;
            }
        }
        true
    };
    match tokio::time::timeout(DRAIN_MAX_TIME, discard).await {
        Ok(true) => {}
        Ok(false) => tracing::debug!("refused body longer than the drain budget ({DRAIN_MAX_BYTES} bytes): closing"),
        Err(_) => tracing::debug!("refused body still arriving after {DRAIN_MAX_TIME:?}: closing"),
    }
}

enum Collect {
    /// Over the limit after reading this many bytes.
    TooLarge(u64),
    Failed(axum::Error),
}

async fn collect(body: &mut Body, limit: usize) -> Result<Bytes, Collect> {
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0;
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        let Ok(data) = frame.map_err(Collect::Failed)?.into_data() else { continue }; // trailers
        len += data.len();
        if len > limit {
            return Err(Collect::TooLarge(len as u64));
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
    let mut response =
        ApiError::with_status(StatusCode::PAYLOAD_TOO_LARGE, Code::InvalidRequest, message).into_response();
    // Whatever the drain left unread must not be taken for a next request.
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

/// 408 with the envelope, and the connection closed (the client is too slow to keep).
fn slow_body(limit: Duration) -> Response {
    let message = format!("the request body did not arrive within the read timeout ({})", duration::display(limit));
    let mut response =
        ApiError::with_status(StatusCode::REQUEST_TIMEOUT, Code::InvalidRequest, message).into_response();
    response.headers_mut().insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
