//! What the agent enforces and what it is, for operators (the admin
//! conventions' `system/info` and `limits/effective`):
//!
//! - `GET /api/v1/system/info`: version, build (git commit), uptime, a hash
//!   of the effective configuration, and how many `/lb/reload`s succeeded;
//! - `GET /api/v1/limits/effective`: body limit, timeouts, the lingering
//!   close's bounds, allowlist, read-only, TLS/mTLS and token auth on or off
//!   (never the token).
//!
//! Both sit behind the same layers as every endpoint (allowlist, token).
//! Their DTOs live here, not in `types`: they are weir's, not katran's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use serde::Serialize;
use utoipa::ToSchema;

use super::reply::{Data, Success};
use super::ApiState;

/// This module's handlers, each served at the path and method its `#[utoipa::path]` names.
pub(super) fn router() -> utoipa_axum::router::OpenApiRouter<ApiState> {
    use utoipa_axum::{router::OpenApiRouter, routes};
    OpenApiRouter::new().routes(routes!(system_info)).routes(routes!(limits_effective))
}

/// The git commit weir-agent was built from (`build.rs`: `WEIR_BUILD_COMMIT`
/// if set, else `git rev-parse HEAD`), or "unknown" (built outside a checkout).
pub const BUILD: &str = match option_env!("WEIR_BUILD_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// The agent's process-wide facts, shared by the handlers through
/// [`ApiState::system`]. [`Default`] (tests that build a state by hand)
/// reports zero limits and no flags.
#[derive(Debug)]
pub struct System {
    started: Instant,
    started_at_epoch_secs: u64,
    limits: EffectiveLimits,
    /// The effective flags in a canonical text form (no secrets: the token
    /// file's path, never its contents), hashed into `config_hash`.
    flags: String,
    reloads: AtomicU64,
    /// Unix seconds of the last successful reload; 0: none.
    last_reload: AtomicU64,
}

impl Default for System {
    fn default() -> Self {
        Self::new(EffectiveLimits::default(), String::new())
    }
}

impl System {
    /// From the limits the server enforces and the flags' canonical text.
    pub fn new(limits: EffectiveLimits, flags: String) -> Self {
        Self {
            started: Instant::now(),
            started_at_epoch_secs: epoch_secs(),
            limits,
            flags,
            reloads: AtomicU64::new(0),
            last_reload: AtomicU64::new(0),
        }
    }

    pub fn limits(&self) -> &EffectiveLimits {
        &self.limits
    }

    /// A successful `/lb/reload`.
    pub(crate) fn count_reload(&self) {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        self.last_reload.store(epoch_secs(), Ordering::Relaxed);
    }
}

fn epoch_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// `GET /api/v1/limits/effective` data: what the server enforces. Durations
/// in milliseconds, 0 meaning none (the flags' convention).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct EffectiveLimits {
    /// Largest accepted request body (`--body-limit`).
    pub body_limit_bytes: u64,
    /// A refused body is read and discarded up to this many bytes...
    pub body_drain_max_bytes: u64,
    /// ... and for up to this long before the 413 and the close.
    pub body_drain_max_ms: u64,
    /// Time to receive a request, from its first byte (`-read-timeout`).
    pub read_timeout_ms: u64,
    /// Time a response may take to be written (`-write-timeout`); it never
    /// cuts a handler short.
    pub write_timeout_ms: u64,
    /// Time a keep-alive connection may wait for its next request (`-idle-timeout`, resolved).
    pub idle_timeout_ms: u64,
    /// Connections served at once (`--max-connections`); one more gets a 503.
    pub max_connections: u64,
    /// Largest request head (request line and headers); a larger one gets a 431.
    pub max_head_bytes: u64,
    /// Most headers in a request; more get a 431.
    pub max_headers: u64,
    /// Requests one HTTP/2 connection may have in flight.
    pub max_http2_streams: u64,
    /// Source networks allowed (`--allow-cidr`).
    pub allow_cidrs: Vec<String>,
    pub read_only: bool,
    pub tls_enabled: bool,
    /// Clients must present a certificate (`--tls-client-ca`).
    pub mtls_enabled: bool,
    /// A bearer token is required (`--token-file`) on all but /health and /health/ready.
    pub token_auth_enabled: bool,
    pub cors_enabled: bool,
}

/// Milliseconds of an optional duration, 0 for none.
pub fn millis(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `GET /api/v1/system/info` data.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SystemInfo {
    /// weir-agent's version.
    #[schema(example = "0.1.0")]
    pub version: String,
    /// The git commit it was built from, or "unknown".
    pub build: String,
    pub target_arch: String,
    pub target_os: String,
    /// `debug` or `release`.
    pub build_profile: String,
    pub process_started_at_epoch_secs: u64,
    pub uptime_seconds: f64,
    /// A hash (FNV-1a 64, hex; a change detector, not a MAC) of the effective
    /// configuration: the flags, the effective limits, and the current
    /// balancer's configuration (or its absence). Equal hashes, same binary:
    /// same configuration.
    #[schema(example = "9f3c2a1b0d4e5f60")]
    pub config_hash: String,
    /// Successful `POST /api/v1/lb/reload`s since the agent started.
    pub reload_count: u64,
    /// When the last one happened (Unix seconds); absent before the first.
    pub last_reload_epoch_secs: Option<u64>,
    /// Whether a balancer exists.
    pub balancer_initialized: bool,
}

/// The agent's version, build, uptime, configuration hash and reload count.
#[utoipa::path(get, path = "/api/v1/system/info", tag = "system",
    responses((status = 200, description = "What this agent is", body = Success<SystemInfo>)))]
async fn system_info(State(state): State<ApiState>) -> Data<SystemInfo> {
    let system = &state.system;
    // Only a clone of the configuration is taken under the lock, off the runtime.
    let balancer = state.blocking(|state| Ok(state.read_lock().as_ref().map(|lb| lb.config().clone()))).await;
    let balancer = balancer.unwrap_or_default();
    let balancer_json = match &balancer {
        Some(config) => serde_json::to_string(config).unwrap_or_default(),
        None => "null".to_owned(),
    };
    let limits_json = serde_json::to_string(&system.limits).unwrap_or_default();
    let hash = fnv1a64([system.flags.as_str(), &limits_json, &balancer_json]);
    let last = system.last_reload.load(Ordering::Relaxed);
    Data(SystemInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        build: BUILD.to_owned(),
        target_arch: std::env::consts::ARCH.to_owned(),
        target_os: std::env::consts::OS.to_owned(),
        build_profile: if cfg!(debug_assertions) { "debug" } else { "release" }.to_owned(),
        process_started_at_epoch_secs: system.started_at_epoch_secs,
        uptime_seconds: system.started.elapsed().as_secs_f64(),
        config_hash: format!("{hash:016x}"),
        reload_count: system.reloads.load(Ordering::Relaxed),
        last_reload_epoch_secs: (last != 0).then_some(last),
        balancer_initialized: balancer.is_some(),
    })
}

/// The limits and security settings this agent enforces.
#[utoipa::path(get, path = "/api/v1/limits/effective", tag = "system",
    responses((status = 200, description = "What this agent enforces", body = Success<EffectiveLimits>)))]
async fn limits_effective(State(state): State<ApiState>) -> Data<EffectiveLimits> {
    Data(state.system.limits.clone())
}

/// FNV-1a, 64 bits, over `parts` separated by a 0xff byte (which no UTF-8
/// text contains): stable across builds and platforms, unlike std's hasher,
/// and without a dependency; a fingerprint, not a cryptographic hash.
fn fnv1a64<'a>(parts: impl IntoIterator<Item = &'a str>) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0100_0000_01b3;
    let mut hash = OFFSET;
    for part in parts {
        for &byte in part.as_bytes().iter().chain(&[0xff]) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a64_is_the_reference_function() {
        // The reference vectors (empty input, "a"), without the separator.
        let raw = |s: &str| {
            s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
        };
        assert_eq!(raw(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(raw("a"), 0xaf63_dc4c_8601_ec8c);
        // Parts are separated: moving a byte between parts changes the hash.
        assert_ne!(fnv1a64(["ab", "c"]), fnv1a64(["a", "bc"]));
        assert_eq!(fnv1a64(["ab", "c"]), fnv1a64(["ab", "c"]));
    }
}
