//! `VirtualService.spec.healthCheck`: how every balancer node probes the VirtualService's
//! reals (each agent from its own node). A real that fails its check leaves the node's
//! Maglev ring (its established connections stay); when every real fails, they all stay
//! in the ring (fail open).
//!
//! Times are integer milliseconds, the unit the datapath's checks are stored in: a 1 s
//! interval with a 500 ms timeout is writable, which whole seconds would not allow (the
//! timeout must be below the interval). The defaults are the node-local REST API's, so a
//! check means the same whichever way it was set.
//!
//! The CEL rules below are repeated by [`crate::validation::validate_health_check`], so an
//! object stored before a rule existed still gets a clear `Accepted=False`.

use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Default probe interval (ms).
pub const DEFAULT_INTERVAL_MS: u32 = 5000;
/// Default probe timeout (ms).
pub const DEFAULT_TIMEOUT_MS: u32 = 2000;
/// Default consecutive successes / failures that change a real's health.
pub const DEFAULT_THRESHOLD: u32 = 3;
/// Default expected HTTP status.
pub const DEFAULT_EXPECTED_STATUS: u16 = 200;
/// Bounds of the interval (ms): 1 s to 5 min.
pub const INTERVAL_MS: (u32, u32) = (1000, 300_000);
/// Bounds of both thresholds.
pub const THRESHOLD: (u32, u32) = (1, 10);
/// Longest path, UDP payload and expected reply (bounds the CEL cost estimate).
pub const MAX_TEXT: u32 = 1024;
/// Longest Host (a DNS name).
pub const MAX_HOST: u32 = 253;

fn default_interval() -> u32 {
    DEFAULT_INTERVAL_MS
}
fn default_timeout() -> u32 {
    DEFAULT_TIMEOUT_MS
}
fn default_threshold() -> u32 {
    DEFAULT_THRESHOLD
}

/// What a probe does.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckType {
    /// A TCP connect to the port.
    Tcp,
    /// An HTTP GET of `path`, answered with `expectedStatus`.
    Http,
    /// The same over TLS.
    Https,
    /// `payload` sent in one datagram; healthy on a reply (equal to `expectedReply`, when set).
    Udp,
}

impl HealthCheckType {
    /// The name users write (`tcp`, `http`, `https`, `udp`).
    pub fn name(self) -> &'static str {
        match self {
            HealthCheckType::Tcp => "tcp",
            HealthCheckType::Http => "http",
            HealthCheckType::Https => "https",
            HealthCheckType::Udp => "udp",
        }
    }

    /// HTTP or HTTPS: `path`, `expectedStatus` and `host` apply.
    pub fn is_http(self) -> bool {
        matches!(self, HealthCheckType::Http | HealthCheckType::Https)
    }
}

/// How the reals of a VirtualService are probed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(
    validation = Rule::new("self.timeoutMilliseconds < self.intervalMilliseconds").message("timeoutMilliseconds must be below intervalMilliseconds"),
    validation = Rule::new("!(self.type in ['http', 'https']) || (has(self.path) && self.path.startsWith('/'))").message("path is required for type http and https, and must start with /"),
    validation = Rule::new("self.type in ['http', 'https'] || (!has(self.path) && !has(self.expectedStatus) && !has(self.host))").message("path, expectedStatus and host apply to type http and https only"),
    validation = Rule::new("self.type == 'https' || !has(self.skipTlsVerify)").message("skipTlsVerify applies to type https only"),
    validation = Rule::new("self.type == 'udp' || (!has(self.payload) && !has(self.expectedReply))").message("payload and expectedReply apply to type udp only"),
    validation = Rule::new("self.type != 'udp' || has(self.payload)").message("payload is required for type udp")
)]
pub struct HealthCheckSpec {
    /// tcp, http, https or udp.
    #[serde(rename = "type")]
    pub kind: HealthCheckType,

    /// The port probed on each real; default the VirtualService's port. Required for a
    /// port-less VirtualService (`spec.port: 0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,

    /// http/https: the path requested (required for them), e.g. `/healthz`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,

    /// http/https: the status a healthy real answers (default 200).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 100, max = 599))]
    pub expected_status: Option<u16>,

    /// http/https: the Host header (and SNI for https); default the VIP's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub host: Option<String>,

    /// https: accept any certificate (default false).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_tls_verify: Option<bool>,

    /// udp: the datagram sent, as text (required for udp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub payload: Option<String>,

    /// udp: the reply a healthy real sends; absent, any reply is healthy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub expected_reply: Option<String>,

    /// Time between two probes of a real, in milliseconds: 1000 to 300000 (default 5000).
    #[serde(default = "default_interval")]
    #[schemars(range(min = 1000, max = 300000))]
    pub interval_milliseconds: u32,

    /// How long a probe may take, in milliseconds, below the interval (default 2000).
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1, max = 299999))]
    pub timeout_milliseconds: u32,

    /// Consecutive successes that make a real healthy: 1 to 10 (default 3).
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub healthy_threshold: u32,

    /// Consecutive failures that make a real unhealthy: 1 to 10 (default 3).
    #[serde(default = "default_threshold")]
    #[schemars(range(min = 1, max = 10))]
    pub unhealthy_threshold: u32,
}

impl HealthCheckSpec {
    /// A check of `kind` with every default.
    pub fn new(kind: HealthCheckType) -> Self {
        HealthCheckSpec {
            kind,
            port: None,
            path: None,
            expected_status: None,
            host: None,
            skip_tls_verify: None,
            payload: None,
            expected_reply: None,
            interval_milliseconds: DEFAULT_INTERVAL_MS,
            timeout_milliseconds: DEFAULT_TIMEOUT_MS,
            healthy_threshold: DEFAULT_THRESHOLD,
            unhealthy_threshold: DEFAULT_THRESHOLD,
        }
    }

    /// The expected HTTP status, defaulted.
    pub fn expected_status(&self) -> u16 {
        self.expected_status.unwrap_or(DEFAULT_EXPECTED_STATUS)
    }
}
