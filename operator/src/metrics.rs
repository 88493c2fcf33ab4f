//! The operator's Prometheus metrics: one [`Registry`] under the prefix `weir_operator`,
//! encoded as OpenMetrics text on `/metrics` (see [`crate::http`]).
//!
//! | metric | labels | meaning |
//! |---|---|---|
//! | `weir_operator_reconciles_total` | `controller` | reconcile passes run |
//! | `weir_operator_reconcile_errors_total` | `controller`, `error` | failed passes, by [`Error::metric_label`] |
//! | `weir_operator_reconcile_duration_seconds` | `controller` | histogram of pass durations |
//! | `weir_operator_objects` | `kind`, `condition`, `status` | objects by condition, as of the last arbitration pass |
//! | `weir_operator_leader` | | 1 while this replica holds the Lease (or runs without leader election) |
//! | `weir_operator_build_info` | `version` | always 1 |

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use weir_crds::v1alpha1::condition;

use crate::desired::{Plan, Snapshot};
use crate::Error;

/// The content type of [`Metrics::encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    controller: String,
    error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ObjectLabels {
    /// `VirtualService` or `RealServer`.
    pub kind: String,
    /// `Accepted`, `Programmed`, `FailOpen` (VirtualService) or `Healthy` (RealServer).
    pub condition: String,
    /// The condition's status: `True`, `False` (or `Unknown`).
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: String,
}

type HistogramFamily = Family<ControllerLabels, Histogram, fn() -> Histogram>;

/// The registered metrics. The registry keeps its own handles (the metric types are `Arc`s
/// inside); these fields are the handles the operator updates.
struct Inner {
    registry: Registry,
    reconciles: Family<ControllerLabels, Counter>,
    errors: Family<ErrorLabels, Counter>,
    duration: HistogramFamily,
    objects: Family<ObjectLabels, Gauge>,
    leader: Gauge,
}

/// A cheap, cloneable handle on the operator's metrics; every controller gets one (through
/// its context) and records its passes with [`Metrics::reconciled`].
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn duration_histogram() -> Histogram {
    // 1 ms … ~16 s: a pass is a snapshot, a pure computation and a few status writes.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

impl Metrics {
    /// A fresh registry with every metric registered (and `build_info` set).
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("weir_operator");
        let reconciles = Family::<ControllerLabels, Counter>::default();
        registry.register("reconciles", "Reconcile passes run", reconciles.clone());
        let errors = Family::<ErrorLabels, Counter>::default();
        registry.register("reconcile_errors", "Failed reconcile passes, by error", errors.clone());
        let duration: HistogramFamily = Family::new_with_constructor(duration_histogram);
        registry.register_with_unit(
            "reconcile_duration",
            "Duration of reconcile passes",
            Unit::Seconds,
            duration.clone(),
        );
        let objects = Family::<ObjectLabels, Gauge>::default();
        registry.register(
            "objects",
            "VirtualServices and RealServers by condition, as of the last arbitration pass",
            objects.clone(),
        );
        let leader = Gauge::default();
        registry.register("leader", "1 while this replica is the leader", leader.clone());
        let build_info = Family::<VersionLabels, Gauge>::default();
        registry.register("build_info", "Build information; always 1", build_info.clone());
        build_info.get_or_create(&VersionLabels { version: env!("CARGO_PKG_VERSION").to_owned() }).set(1);
        Metrics { inner: Arc::new(Inner { registry, reconciles, errors, duration, objects, leader }) }
    }

    /// Records one reconcile pass of `controller` that took `duration` and ended in `result`.
    pub fn reconciled<T>(&self, controller: &str, duration: Duration, result: &Result<T, Error>) {
        let labels = ControllerLabels { controller: controller.to_owned() };
        self.inner.reconciles.get_or_create(&labels).inc();
        self.inner.duration.get_or_create(&labels).observe(duration.as_secs_f64());
        if let Err(e) = result {
            self.reconcile_failed(controller, e);
        }
    }

    /// Counts a failure of `controller` outside a timed pass (e.g. a watch error).
    pub fn reconcile_failed(&self, controller: &str, error: &Error) {
        let labels = ErrorLabels { controller: controller.to_owned(), error: error.metric_label().to_owned() };
        self.inner.errors.get_or_create(&labels).inc();
    }

    /// Starts timing a pass of `controller`; finish it with [`ReconcileTimer::finish`].
    pub fn start_reconcile(&self, controller: &'static str) -> ReconcileTimer {
        ReconcileTimer { metrics: self.clone(), controller, started: Instant::now() }
    }

    /// Replaces the object counts (see [`count_objects`]).
    pub fn set_objects(&self, counts: &BTreeMap<ObjectLabels, i64>) {
        self.inner.objects.clear();
        for (labels, n) in counts {
            self.inner.objects.get_or_create(labels).set(*n);
        }
    }

    /// Sets the leader gauge.
    pub fn set_leader(&self, leading: bool) {
        self.inner.leader.set(i64::from(leading));
    }

    /// The OpenMetrics text exposition of every metric (content type [`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.inner.registry);
        out
    }
}

/// Times one reconcile pass (see [`Metrics::start_reconcile`]).
#[must_use = "finish the timer to record the pass"]
pub struct ReconcileTimer {
    metrics: Metrics,
    controller: &'static str,
    started: Instant,
}

impl ReconcileTimer {
    /// Records the pass with its outcome.
    pub fn finish<T>(self, result: &Result<T, Error>) {
        self.metrics.reconciled(self.controller, self.started.elapsed(), result);
    }
}

/// Object counts by (kind, condition, status) once `plan` is written: each object's condition
/// is taken from its planned status, or from its stored status when the plan leaves it alone.
/// `True` and `False` are always present (with 0) so that the series do not vanish.
pub fn count_objects(snapshot: &Snapshot, plan: &Plan) -> BTreeMap<ObjectLabels, i64> {
    let mut counts = BTreeMap::new();
    let series = [
        ("VirtualService", condition::ACCEPTED),
        ("VirtualService", condition::PROGRAMMED),
        ("VirtualService", condition::FAIL_OPEN),
        ("RealServer", condition::ACCEPTED),
        ("RealServer", condition::HEALTHY),
    ];
    for (kind, type_) in series {
        for status in ["True", "False"] {
            counts.insert(labels(kind, type_, status), 0);
        }
    }
    let mut count = |kind: &str, conditions: &[Condition]| {
        for (k, type_) in series {
            if k != kind {
                continue;
            }
            if let Some(c) = conditions.iter().find(|c| c.type_ == type_) {
                *counts.entry(labels(kind, type_, &c.status)).or_insert(0) += 1;
            }
        }
    };
    let planned_vs: BTreeMap<_, _> =
        plan.virtual_services.iter().map(|u| (Arc::as_ptr(&u.object), u.status.conditions.as_slice())).collect();
    for vs in &snapshot.virtual_services {
        let stored = vs.status.as_ref().map_or(&[][..], |s| s.conditions.as_slice());
        count("VirtualService", planned_vs.get(&Arc::as_ptr(vs)).copied().unwrap_or(stored));
    }
    let planned_rs: BTreeMap<_, _> =
        plan.real_servers.iter().map(|u| (Arc::as_ptr(&u.object), u.status.conditions.as_slice())).collect();
    for rs in &snapshot.real_servers {
        let stored = rs.status.as_ref().map_or(&[][..], |s| s.conditions.as_slice());
        count("RealServer", planned_rs.get(&Arc::as_ptr(rs)).copied().unwrap_or(stored));
    }
    counts
}

fn labels(kind: &str, condition: &str, status: &str) -> ObjectLabels {
    ObjectLabels { kind: kind.to_owned(), condition: condition.to_owned(), status: status.to_owned() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_prefixed_names_and_build_info() {
        let m = Metrics::new();
        m.reconciled::<()>("arbitration", Duration::from_millis(3), &Ok(()));
        m.reconciled::<()>("arbitration", Duration::from_millis(3), &Err(Error::StoreDropped { kind: "Node" }));
        m.set_leader(true);
        let text = m.encode();
        assert!(text.contains("weir_operator_reconciles_total{controller=\"arbitration\"} 2\n"), "{text}");
        assert!(
            text.contains(
                "weir_operator_reconcile_errors_total{controller=\"arbitration\",error=\"store_dropped\"} 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("weir_operator_reconcile_duration_seconds_count{controller=\"arbitration\"} 2\n"));
        assert!(text.contains("weir_operator_leader 1\n"), "{text}");
        assert!(text.contains(&format!("weir_operator_build_info{{version=\"{}\"}} 1\n", env!("CARGO_PKG_VERSION"))));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn empty_snapshot_counts_zeroes() {
        let counts = count_objects(&Snapshot::default(), &Plan::default());
        // Five (kind, condition) series, each True and False.
        assert_eq!(counts.len(), 10);
        assert!(counts.values().all(|n| *n == 0));
    }
}
