//! The agent's Prometheus metrics, registered under `weir_agent_`
//! (`Registry::with_prefix`, as in kube-rs/controller-rs) and exposed as
//! OpenMetrics text on the metrics listener's `GET /metrics`.
//!
//! - [`ApiMetrics`]: API requests by method, route (axum's `MatchedPath`; one
//!   `unmatched` value for every unknown path, so the label stays bounded) and
//!   status code, and a latency histogram in seconds;
//! - `build_info{version}`;
//! - the prober's probe durations and health transitions ([`ProbeMetrics`]);
//! - the datapath ([`datapath::DatapathCollector`]): read from the Balancer at
//!   scrape time, so it costs nothing between scrapes (while a writer holds
//!   the balancer's lock, the previous reading: a scrape never waits for a
//!   create or a purge); its labels are bounded
//!   by the configured max_vips, max_reals and CPU count.

use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::registry::{Registry, Unit};

use crate::handles::Datapath;
use crate::prober::ProbeMetrics;

pub mod datapath;
mod globals;

/// What `GET /metrics` answers with (prometheus-client writes OpenMetrics text).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The route label of requests no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Latency buckets, in seconds: the API answers from memory and BPF maps in
/// well under a millisecond; a batch of reals recomputes rings (tens of ms).
const LATENCY_BUCKETS: [f64; 14] =
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0];

/// Every metric of the agent.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    api: Arc<ApiMetrics>,
    probes: ProbeMetrics,
}

impl Metrics {
    /// Registers the API metrics, build info and the datapath collector over
    /// the state's balancer (which may not exist yet: its metrics appear once
    /// it does) and userspace counters.
    pub fn new(datapath: &Datapath, options: datapath::Options) -> Self {
        let mut registry = Registry::with_prefix("weir_agent");
        let api = Arc::new(ApiMetrics::default());
        api.register(&mut registry);
        registry.register(
            "build",
            "weir-agent's build: 1, labelled with the version",
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        registry.register_collector(Box::new(datapath::DatapathCollector::new(datapath, options)));
        let probes = ProbeMetrics::default();
        registry.register_with_unit(
            "probe_duration",
            "Health probes of reals by the built-in prober: time from its start to its result, by check type and \
             result (success or failure; a timeout counts at the timeout)",
            Unit::Seconds,
            probes.duration.clone(),
        );
        registry.register(
            "health_transitions",
            "Times a real turned healthy or unhealthy for a VIP by the prober's findings, by VIP, real and the \
             health it turned to",
            probes.transitions.clone(),
        );
        Self { registry, api, probes }
    }

    /// What the prober records into.
    pub fn probes(&self) -> ProbeMetrics {
        self.probes.clone()
    }

    /// The recorder the API middleware feeds.
    pub fn api(&self) -> Arc<ApiMetrics> {
        self.api.clone()
    }

    /// The exposition, OpenMetrics text. Reads the datapath's counters (BPF
    /// map lookups under the balancer's read lock): call it off the async
    /// threads.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail; the collectors never return errors of their own.
        prometheus_client::encoding::text::encode(&mut text, &self.registry).expect("encode metrics into a String");
        text
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    code: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: &'static str,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RefusedLabels {
    reason: &'static str,
}

/// API request counters and latencies, and connections refused at accept.
#[derive(Debug)]
pub struct ApiMetrics {
    requests: Family<RequestLabels, Counter>,
    duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    refused: Family<RefusedLabels, Counter>,
}

impl Default for ApiMetrics {
    fn default() -> Self {
        Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(LATENCY_BUCKETS)),
            refused: Family::default(),
        }
    }
}

impl ApiMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "api_requests",
            "API requests answered, by method, route (the path pattern; \"unmatched\" when no route matched) and \
             HTTP status code",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "api_request_duration",
            "Time from a request's arrival at the API layers to its response, by method and route",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register(
            "api_connections_refused",
            "Connections the API listener refused at accept, before reading them: \"allowlist\" (peer outside \
             --allow-cidr) or \"max_connections\" (over --max-connections)",
            self.refused.clone(),
        );
    }

    /// Counts a connection refused at accept, by `reason`.
    pub fn connection_refused(&self, reason: &'static str) {
        self.refused.get_or_create(&RefusedLabels { reason }).inc();
    }

    /// Records one answered request. `route` is the matched path pattern
    /// (`/api/v1/vips`), `None` when no route matched.
    pub fn observe(&self, method: &Method, route: Option<&str>, status: StatusCode, elapsed: Duration) {
        let method = method_label(method);
        let route = route.unwrap_or(UNMATCHED_ROUTE).to_owned();
        self.duration.get_or_create(&RouteLabels { method, route: route.clone() }).observe(elapsed.as_secs_f64());
        self.requests.get_or_create(&RequestLabels { method, route, code: status.as_u16() }).inc();
    }
}

/// Method names as labels, bounded: any method outside HTTP's standard set is "other".
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_requests_are_labelled_by_route_and_code() {
        let metrics = Metrics::new(&Datapath::default(), datapath::Options::default());
        let api = metrics.api();
        api.observe(&Method::GET, Some("/api/v1/vips"), StatusCode::OK, Duration::from_micros(300));
        api.observe(&Method::GET, Some("/api/v1/vips"), StatusCode::OK, Duration::from_micros(300));
        api.observe(&Method::from_bytes(b"BREW").unwrap(), None, StatusCode::NOT_FOUND, Duration::ZERO);
        let text = metrics.encode();
        assert!(text.contains("weir_agent_api_requests_total{method=\"GET\",route=\"/api/v1/vips\",code=\"200\"} 2\n"));
        assert!(text.contains("weir_agent_api_requests_total{method=\"other\",route=\"unmatched\",code=\"404\"} 1\n"));
        assert!(text.contains(
            "weir_agent_api_request_duration_seconds_bucket{le=\"0.0005\",method=\"GET\",route=\"/api/v1/vips\"} 2\n"
        ));
        assert!(text.contains("# TYPE weir_agent_api_request_duration_seconds histogram\n"));
        assert!(text.contains(&format!("weir_agent_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))));
        assert!(text.contains("weir_agent_balancer_initialized 0\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
