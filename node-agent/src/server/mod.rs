//! The HTTP server around the API: what makes `weir-agent` a drop-in
//! katran-server, and a safe admin surface.
//!
//! - `flags`: katran-server's flags and weir's, as `-flag` and `--flag`;
//!   `duration`: their Go durations;
//! - [`app`]: the layer stack over [`api::router`](crate::api::router) (below);
//! - `security`: source allowlist, bearer token, read-only mode;
//!   `limits`: body size, read and write deadlines; `observe`: access log,
//!   API metrics, panic answer;
//! - `listener`: [`run`], the accept loop (plain or TLS), HTTP/1.1 and HTTP/2,
//!   graceful shutdown; `conn`: per-connection timeouts; `tls`: rustls, mTLS;
//! - `exposition`: the metrics listener's `GET /metrics`;
//! - `standalone`: [`serve`], the standalone program from its flags;
//!   `signal`: SIGTERM and SIGINT.
//!
//! Trailing slashes are trimmed before routing (the admin conventions). The
//! layers run after routing (`Router::layer`), so the metrics see the matched
//! route, and unknown paths and methods still get the router's envelope.
//! Outermost first:
//!
//! 1. access log (unless `-no-logging`);
//! 2. API metrics (when a metrics listener exists);
//! 3. panic → 500 INTERNAL_ERROR (unless `-no-recovery`);
//! 4. source allowlist → 403 FORBIDDEN (the listener already refuses such
//!    peers at accept; this layer fails closed for requests without a peer);
//! 5. CORS (with `-cors`): preflights are answered here, before the token
//!    (browsers send none with them), and every answer carries the headers;
//! 6. bearer token (with `--token-file`) → 401 UNAUTHORIZED;
//! 7. read-only (with `--read-only`) → 403 READ_ONLY;
//! 8. body: size → 413 (after a bounded drain), read deadline → 408.
//!
//! The write timeout bounds writing each response (`conn`), not the handler.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::extract::Request;
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE};
use axum::http::Method;
use axum::http::Uri;
use axum::middleware::{from_fn, from_fn_with_state, map_request};
use axum::Router;
use ipnet::IpNet;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::api::system::{millis, EffectiveLimits};
use crate::metrics::ApiMetrics;

mod conn;
pub mod duration;
pub mod exposition;
pub mod flags;
mod limits;
mod listener;
mod observe;
pub mod security;
pub mod signal;
mod standalone;
pub mod tls;

pub use conn::Timeouts;
pub use flags::{ClusterFlags, CorsOrigins, ServeFlags, XdpMode};
pub use listener::{run, Accept, MAX_HEADERS, MAX_HEAD_BYTES};
pub use security::{Allowlist, Token};
pub use standalone::{serve, serve_with_client, StartError};

/// `Access-Control-Max-Age` of preflight answers: one day, a number of seconds
/// as the header requires (katran-server sends a garbage character there).
/// Browsers cap it lower (Chromium: 2 hours), which is fine.
pub const CORS_MAX_AGE: Duration = Duration::from_secs(86_400);

/// How the API is wrapped; [`Default`] is weir's defaults.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// Source networks allowed (the TCP peer's address).
    pub allow: Vec<IpNet>,
    pub token: Option<Token>,
    pub body_limit: usize,
    pub read_only: bool,
    /// CORS origins, when CORS is on.
    pub cors: Option<CorsOrigins>,
    pub request_logging: bool,
    pub panic_recovery: bool,
    /// The read timeout bounds each request's body here; the listener applies all three per connection.
    pub timeouts: Timeouts,
    /// Connections served at once (`--max-connections`).
    pub max_connections: usize,
}

impl Default for AppOptions {
    fn default() -> Self {
        Self {
            allow: vec!["127.0.0.0/8".parse().expect("CIDR"), "::1/128".parse().expect("CIDR")],
            token: None,
            body_limit: flags::MAX_BODY_LIMIT as usize,
            read_only: false,
            cors: None,
            request_logging: true,
            panic_recovery: true,
            timeouts: Timeouts {
                read: Some(Duration::from_secs(30)),
                write: Some(Duration::from_secs(30)),
                idle: Some(Duration::from_secs(120)),
            },
            max_connections: listener::DEFAULT_MAX_CONNECTIONS,
        }
    }
}

impl AppOptions {
    /// The options the flags ask for; the token is read by the caller.
    pub fn from_flags(flags: &ServeFlags, token: Option<Token>) -> Self {
        Self {
            allow: flags.allow_cidr.clone(),
            token,
            body_limit: usize::try_from(flags.body_limit).unwrap_or(usize::MAX),
            read_only: flags.read_only,
            cors: flags.cors.then(|| flags.cors_origins.clone()),
            request_logging: !flags.no_logging,
            panic_recovery: !flags.no_recovery,
            timeouts: Timeouts::from_flags(flags.read_timeout, flags.write_timeout, flags.effective_idle_timeout()),
            max_connections: flags.max_connections as usize,
        }
    }

    /// What the API listener enforces at accept: these options' allowlist,
    /// connection cap and timeouts; refusals counted in `metrics`.
    pub fn accept(&self, metrics: Option<Arc<ApiMetrics>>) -> Accept {
        Accept {
            timeouts: self.timeouts,
            allow: Some(Allowlist::new(self.allow.iter().copied())),
            max_connections: self.max_connections,
            metrics,
        }
    }
}

impl AppOptions {
    /// What these options enforce, as `GET /api/v1/limits/effective` reports
    /// it; `tls` and `mtls`: whether the listener serves TLS, and requires
    /// client certificates.
    pub fn effective_limits(&self, tls: bool, mtls: bool) -> EffectiveLimits {
        EffectiveLimits {
            body_limit_bytes: self.body_limit as u64,
            body_drain_max_bytes: limits::DRAIN_MAX_BYTES,
            body_drain_max_ms: millis(Some(limits::DRAIN_MAX_TIME)),
            read_timeout_ms: millis(self.timeouts.read),
            write_timeout_ms: millis(self.timeouts.write),
            idle_timeout_ms: millis(self.timeouts.idle),
            max_connections: self.max_connections as u64,
            max_head_bytes: listener::MAX_HEAD_BYTES as u64,
            max_headers: listener::MAX_HEADERS as u64,
            max_http2_streams: u64::from(listener::MAX_STREAMS),
            allow_cidrs: self.allow.iter().map(ToString::to_string).collect(),
            read_only: self.read_only,
            tls_enabled: tls,
            mtls_enabled: tls && mtls,
            token_auth_enabled: self.token.is_some(),
            cors_enabled: self.cors.is_some(),
        }
    }
}

/// Wraps the API router (or any router: tests add routes) in the layer stack
/// described in the module documentation. `metrics`: where API requests are
/// recorded, if anywhere.
pub fn app(router: Router, options: &AppOptions, metrics: Option<Arc<ApiMetrics>>) -> Router {
    let request_limits = limits::Limits { body: options.body_limit, read: options.timeouts.read };
    // Innermost first: each `layer` wraps everything before it.
    let mut router = router
        // Extractors must agree with --body-limit (axum's default is 2 MB).
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(from_fn_with_state(request_limits, limits::body));
    if options.read_only {
        router = router.layer(from_fn(security::read_only));
    }
    if let Some(token) = &options.token {
        router = router.layer(from_fn_with_state(token.clone(), security::bearer));
    }
    if let Some(origins) = &options.cors {
        router = router.layer(cors(origins));
    }
    router = router.layer(from_fn_with_state(Allowlist::new(options.allow.iter().copied()), security::allowlist));
    if options.panic_recovery {
        router = router.layer(CatchPanicLayer::custom(observe::panic_response));
    }
    if let Some(metrics) = metrics {
        router = router.layer(from_fn_with_state(metrics, observe::record));
    }
    if options.request_logging {
        router = router.layer(from_fn(observe::log_request));
    }
    // Before routing, so outside the router: its layers run after routing.
    Router::new().fallback_service(router).layer(map_request(trim_trailing_slash))
}

/// The admin conventions' path normalization: trailing slashes are trimmed
/// from paths longer than `/` before routing (`/api/v1/vips/` is
/// `/api/v1/vips`, and 404/405 answers name the trimmed path). The query
/// string is kept.
async fn trim_trailing_slash(mut req: Request) -> Request {
    let path = req.uri().path();
    if path.len() <= 1 || !path.ends_with('/') {
        return req;
    }
    let trimmed = match path.trim_end_matches('/') {
        "" => "/",
        trimmed => trimmed,
    };
    let path_and_query = match req.uri().query() {
        Some(query) => format!("{trimmed}?{query}"),
        None => trimmed.to_owned(),
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// CORS as katran-server offers it (its methods; JSON bodies and the token
/// header allowed), with a numeric Max-Age.
fn cors(origins: &CorsOrigins) -> CorsLayer {
    let allow_origin = match origins {
        CorsOrigins::Any => AllowOrigin::any(),
        CorsOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    CorsLayer::new()
        .allow_origin(allow_origin)
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
        .allow_headers([CONTENT_TYPE, AUTHORIZATION])
        .max_age(CORS_MAX_AGE)
}
