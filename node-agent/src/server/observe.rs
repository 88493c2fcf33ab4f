//! What the server records about requests: an access log line per request
//! through tracing (off with `-no-logging`), the API metrics (route, code,
//! latency), and the 500 INTERNAL_ERROR answer of a handler that panicked
//! (off with `-no-recovery`).

use std::any::Any;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::api::error::ApiError;
use crate::metrics::ApiMetrics;

/// One `INFO` line per request on target `weir_agent::access`: method, path
/// and query, status, latency, peer. Logged when the response is ready, so
/// refusals by the security layers are logged too.
pub async fn log_request(req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let uri = req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), ToString::to_string);
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| *addr);
    let response = next.run(req).await;
    tracing::info!(
        target: "weir_agent::access",
        %method,
        %uri,
        status = response.status().as_u16(),
        micros = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX),
        peer = peer.map(|p| p.to_string()),
        "request"
    );
    response
}

/// Counts the request by method, route and status, and times it. The route is
/// axum's `MatchedPath` (these layers run after routing), so its values are
/// the route patterns plus one `unmatched`.
pub async fn record(State(metrics): State<Arc<ApiMetrics>>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<MatchedPath>().cloned();
    let response = next.run(req).await;
    metrics.observe(&method, route.as_ref().map(MatchedPath::as_str), response.status(), start.elapsed());
    response
}

/// tower-http's CatchPanic answer: the envelope, without the panic's text
/// (which may hold internals); the text goes to the log.
pub fn panic_response(panic: Box<dyn Any + Send + 'static>) -> Response {
    let detail = match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(s), _) => s.to_string(),
        (_, Some(s)) => s.clone(),
        _ => "(no message)".to_owned(),
    };
    tracing::error!(panic = %detail, "a request handler panicked");
    ApiError::internal("internal error: the request handler panicked").into_response()
}
