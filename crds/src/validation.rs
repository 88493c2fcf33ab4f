//! The rules, as pure deterministic functions (no I/O, no client) that the operator and
//! every agent call on the same input to reach the same verdict.
//!
//! - Per object: [`validate_virtual_service`], [`validate_real_server`] → [`FieldError`]s
//!   naming the field and the value. They repeat the schema's CEL checks on purpose: an
//!   object stored before a rule existed, or created where CEL is off, still gets a clear
//!   `Accepted=False` instead of a datapath error.
//! - Per label selector: [`selector_matches`] (Kubernetes semantics).
//! - Per snapshot: [`arbitrate`] (conflicts, missing VirtualServices, families, duplicate
//!   reals — node-independent) and [`Arbitration::plan_node`] (node selector, capacity) →
//!   a [`NodePlan`] in plain Rust types the agent turns into Balancer calls; [`resolve`]
//!   does both.

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use crate::v1alpha1::{
    HealthCheckSpec, RealServerSpec, VirtualServiceSpec, INTERVAL_MS, MAX_HOST, MAX_TEXT, MAX_WEIGHT, THRESHOLD,
};

mod resolve;
#[cfg(test)]
mod tests;

pub use resolve::{
    arbitrate, resolve, Arbitration, Capacity, NodeInfo, NodePlan, RealPlan, Reason, Resolution, Verdict, VipPlan,
};

/// Namespace and name of an object; orders by namespace, then name (the tie-break).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectKey { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// One invalid field: its path (`spec.address`), the offending value, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub value: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, value: impl fmt::Display, message: impl Into<String>) -> Self {
        FieldError { field: field.into(), value: value.to_string(), message: message.into() }
    }
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {:?}: {}", self.field, self.value, self.message)
    }
}

/// Parses a VIP or real address: an IP the datapath can forward to or for
/// ([`crate::address::check_unicast`], the rule the Balancer applies too).
pub fn parse_address(field: &str, text: &str) -> Result<IpAddr, FieldError> {
    // std's parser refuses zones ("fe80::1%eth0") and surrounding spaces, as CEL's isIP does.
    let addr: IpAddr = text.parse().map_err(|_| FieldError::new(field, text, "must be an IPv4 or IPv6 address"))?;
    crate::address::check_unicast(addr).map_err(|e| FieldError::new(field, text, e.to_string()))?;
    Ok(addr)
}

/// Checks one VirtualService spec; empty means valid.
pub fn validate_virtual_service(spec: &VirtualServiceSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if let Err(e) = parse_address("spec.address", &spec.address) {
        errors.push(e);
    }
    if let Some(selector) = &spec.node_selector {
        errors.extend(validate_selector("spec.nodeSelector", selector));
    }
    if let Some(check) = &spec.health_check {
        errors.extend(validate_health_check("spec.healthCheck", check, spec.port));
    }
    errors
}

/// Checks a VirtualService's health check (`vip_port`: its port; 0 is port-less); the
/// schema's CEL rules and bounds, repeated.
pub fn validate_health_check(field: &str, check: &HealthCheckSpec, vip_port: u16) -> Vec<FieldError> {
    let mut errors = Vec::new();
    let mut error = |name: &str, value: &dyn fmt::Display, message: String| {
        errors.push(FieldError::new(format!("{field}.{name}"), value, message))
    };
    let kind = check.kind.name();
    match check.port {
        Some(0) => error("port", &0, "must be 1 to 65535".into()),
        None if vip_port == 0 => error("port", &"", "required for a port-less VirtualService (port 0)".into()),
        _ => {}
    }
    let (min, max) = INTERVAL_MS;
    if !(min..=max).contains(&check.interval_milliseconds) {
        error("intervalMilliseconds", &check.interval_milliseconds, format!("must be {min} to {max}"));
    }
    if check.timeout_milliseconds == 0 || check.timeout_milliseconds >= check.interval_milliseconds {
        let message = format!("must be at least 1 and below intervalMilliseconds ({})", check.interval_milliseconds);
        error("timeoutMilliseconds", &check.timeout_milliseconds, message);
    }
    let (min, max) = THRESHOLD;
    for (name, value) in
        [("healthyThreshold", check.healthy_threshold), ("unhealthyThreshold", check.unhealthy_threshold)]
    {
        if !(min..=max).contains(&value) {
            error(name, &value, format!("must be {min} to {max}"));
        }
    }
    let http_only = [
        ("path", check.path.is_some()),
        ("expectedStatus", check.expected_status.is_some()),
        ("host", check.host.is_some()),
    ];
    if check.kind.is_http() {
        match check.path.as_deref() {
            None => error("path", &"", format!("required for type {kind}")),
            Some(path) if !path.starts_with('/') => error("path", &path, "must start with /".into()),
            Some(_) => {}
        }
        if !(100..=599).contains(&check.expected_status()) {
            error("expectedStatus", &check.expected_status(), "must be an HTTP status (100 to 599)".into());
        }
    } else {
        for (name, _) in http_only.iter().filter(|(_, set)| *set) {
            error(name, &kind, "applies to type http and https only".into());
        }
    }
    if check.skip_tls_verify.is_some() && check.kind != crate::v1alpha1::HealthCheckType::Https {
        error("skipTlsVerify", &kind, "applies to type https only".into());
    }
    if check.kind == crate::v1alpha1::HealthCheckType::Udp && check.payload.as_deref().is_none_or(str::is_empty) {
        error("payload", &"", "required (non-empty) for type udp".into());
    }
    if check.kind != crate::v1alpha1::HealthCheckType::Udp {
        for (name, set) in [("payload", check.payload.is_some()), ("expectedReply", check.expected_reply.is_some())] {
            if set {
                error(name, &kind, "applies to type udp only".into());
            }
        }
    }
    let texts = [
        ("path", &check.path, MAX_TEXT),
        ("host", &check.host, MAX_HOST),
        ("payload", &check.payload, MAX_TEXT),
        ("expectedReply", &check.expected_reply, MAX_TEXT),
    ];
    for (name, text, max) in texts {
        if let Some(len) = text.as_deref().map(str::len).filter(|&len| len > max as usize) {
            error(name, &format!("{len} bytes"), format!("must be at most {max} bytes"));
        }
    }
    errors
}

/// Checks one RealServer spec; empty means valid. The family rule (no IPv4 real behind an
/// IPv6 VIP) needs the VirtualService too, so it lives in [`arbitrate`].
pub fn validate_real_server(spec: &RealServerSpec) -> Vec<FieldError> {
    let mut errors = Vec::new();
    if spec.virtual_service_name.is_empty() {
        errors.push(FieldError::new("spec.virtualServiceName", "", "must name a VirtualService"));
    }
    if let Err(e) = parse_address("spec.address", &spec.address) {
        errors.push(e);
    }
    if spec.weight > MAX_WEIGHT {
        errors.push(FieldError::new("spec.weight", spec.weight, format!("must be at most {MAX_WEIGHT}")));
    }
    errors
}

/// Checks a label selector's expressions (operators, values) as the apiserver does for
/// built-in kinds.
pub fn validate_selector(field: &str, selector: &LabelSelector) -> Vec<FieldError> {
    let mut errors = Vec::new();
    for (i, expr) in selector.match_expressions.iter().flatten().enumerate() {
        let values = expr.values.as_deref().unwrap_or_default();
        let path = format!("{field}.matchExpressions[{i}]");
        match expr.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                errors.push(FieldError::new(format!("{path}.values"), "[]", "In and NotIn need at least one value"))
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => errors.push(FieldError::new(
                format!("{path}.values"),
                values.join(","),
                "Exists and DoesNotExist take no values",
            )),
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => errors.push(FieldError::new(
                format!("{path}.operator"),
                other,
                "must be In, NotIn, Exists or DoesNotExist",
            )),
        }
    }
    errors
}

/// Whether `selector` selects an object with `labels`. Absent and empty selectors select
/// everything; an invalid expression selects nothing (validation reports it).
pub fn selector_matches(selector: Option<&LabelSelector>, labels: &BTreeMap<String, String>) -> bool {
    let Some(selector) = selector else { return true };
    let labels_ok = selector.match_labels.iter().flatten().all(|(k, v)| labels.get(k).is_some_and(|have| have == v));
    labels_ok
        && selector.match_expressions.iter().flatten().all(|expr| {
            let values = expr.values.as_deref().unwrap_or_default();
            let have = labels.get(&expr.key);
            match expr.operator.as_str() {
                "In" => have.is_some_and(|v| values.contains(v)),
                // As in Kubernetes: NotIn matches objects without the key.
                "NotIn" => have.is_none_or(|v| !values.contains(v)),
                "Exists" => have.is_some(),
                "DoesNotExist" => have.is_none(),
                _ => false,
            }
        })
}
