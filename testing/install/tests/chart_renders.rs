//! The Helm chart renders, with every values set of `charts/weir/ci/`, into objects that
//! Kubernetes' types hold without losing a field, and that agree with the binaries: the
//! operator parses its arguments and the agent configuration, the agent parses the arguments
//! the operator renders for it, and the monitoring objects select what exists and query
//! metrics the binaries export. values.schema.json rejects bad values.
//!
//! Needs helm (`scripts/helm.sh`); without it each test prints SKIPPED and passes.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use clap::Parser;
use k8s_openapi::api::admissionregistration::v1::{ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;
use weir_install_tests::{
    ci_values, documents, first_difference, helm_or_skip, named, normalize_numbers, of_kind, repo_root, template,
    NAMESPACE,
};
use weir_operator::controllers::daemonset::{render, AgentConfig};

/// Parses `doc` as `T` and serializes it back: the two must be equal, so that a field the
/// type does not know (a typo in a template) fails instead of vanishing.
fn round_trip<T: DeserializeOwned + Serialize>(doc: &Value) -> Result<(), String> {
    let typed: T = serde_json::from_value(doc.clone()).map_err(|e| format!("does not parse: {e}"))?;
    let back = serde_json::to_value(&typed).expect("serialize");
    match first_difference(&normalize_numbers(doc), &normalize_numbers(&back), "") {
        None => Ok(()),
        Some(d) => Err(format!("changes in a round trip through its type (unknown or misplaced field?): {d}")),
    }
}

/// Checks one rendered document against its type; prometheus-operator's kinds have no type
/// here and get a shape check.
fn check_type(doc: &Value) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    match (api_version, kind) {
        ("apps/v1", "Deployment") => round_trip::<Deployment>(doc),
        ("v1", "ServiceAccount") => round_trip::<ServiceAccount>(doc),
        ("v1", "ConfigMap") => round_trip::<ConfigMap>(doc),
        ("v1", "Service") => round_trip::<Service>(doc),
        ("policy/v1", "PodDisruptionBudget") => round_trip::<PodDisruptionBudget>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRole") => round_trip::<ClusterRole>(doc),
        ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding") => round_trip::<ClusterRoleBinding>(doc),
        ("rbac.authorization.k8s.io/v1", "Role") => round_trip::<Role>(doc),
        ("rbac.authorization.k8s.io/v1", "RoleBinding") => round_trip::<RoleBinding>(doc),
        ("apiextensions.k8s.io/v1", "CustomResourceDefinition") => round_trip::<CustomResourceDefinition>(doc),
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicy") => {
            round_trip::<ValidatingAdmissionPolicy>(doc)
        }
        ("admissionregistration.k8s.io/v1", "ValidatingAdmissionPolicyBinding") => {
            round_trip::<ValidatingAdmissionPolicyBinding>(doc)
        }
        ("monitoring.coreos.com/v1", "ServiceMonitor") => shape(doc, &["selector", "endpoints"]),
        ("monitoring.coreos.com/v1", "PodMonitor") => shape(doc, &["selector", "podMetricsEndpoints"]),
        ("monitoring.coreos.com/v1", "PrometheusRule") => shape(doc, &["groups"]),
        _ => Err(format!("unexpected {api_version} {kind}: add it to this test")),
    }
}

/// A custom resource's spec has exactly the expected keys.
fn shape(doc: &Value, spec_keys: &[&str]) -> Result<(), String> {
    let spec = doc["spec"].as_object().ok_or("no spec")?;
    let allowed: BTreeSet<&str> = spec_keys.iter().copied().chain(["namespaceSelector"]).collect();
    for key in spec_keys {
        if !spec.contains_key(*key) {
            return Err(format!("spec.{key} is missing"));
        }
    }
    match spec.keys().find(|k| !allowed.contains(k.as_str())) {
        Some(k) => Err(format!("unexpected spec.{k}")),
        None => Ok(()),
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().map(|s| s.as_str().expect("a string").to_owned()).collect()
}

/// `labels` holds every pair of `selector`.
fn selects(selector: &Value, labels: &Value) -> bool {
    let wanted = selector.as_object().expect("matchLabels is a map");
    !wanted.is_empty() && wanted.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// The operator's Deployment: its arguments parse as the operator's flags, and what they point
/// at (the agent configuration, the metrics port) exists in the render.
fn check_operator(docs: &[Value]) -> AgentConfig {
    let deployments = of_kind(docs, "Deployment");
    assert_eq!(deployments.len(), 1, "one Deployment: the operator");
    let pod = &deployments[0]["spec"]["template"]["spec"];
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    let args = strings(&c["args"]);
    let mut flags =
        weir_operator::flags::Flags::try_parse_from(std::iter::once("weir-operator".to_owned()).chain(args))
            .unwrap_or_else(|e| panic!("the operator refuses the chart's arguments: {e}"));
    // POD_NAME and POD_NAMESPACE come from the downward API.
    let env: BTreeMap<String, String> = c["env"]
        .as_array()
        .expect("env")
        .iter()
        .filter_map(|e| {
            Some((e["name"].as_str()?.to_owned(), e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?.to_owned()))
        })
        .collect();
    assert_eq!(env.get("POD_NAME").map(String::as_str), Some("metadata.name"));
    assert_eq!(env.get("POD_NAMESPACE").map(String::as_str), Some("metadata.namespace"));
    flags.lease_namespace = Some(NAMESPACE.to_owned());
    flags.namespace = Some(NAMESPACE.to_owned());
    flags.identity = Some("weir-operator-0".to_owned());
    flags.options().unwrap_or_else(|e| panic!("the operator's flags do not fit together: {e}"));

    // The metrics port and the probes.
    let ports = c["ports"].as_array().expect("ports");
    let metrics = ports.iter().find(|p| p["name"] == "metrics").expect("a port named metrics");
    assert_eq!(metrics["containerPort"].as_u64(), Some(u64::from(flags.metrics_addr.port())));
    assert_eq!(c["livenessProbe"]["httpGet"], serde_json::json!({"path": "/healthz", "port": "metrics"}));
    assert_eq!(c["readinessProbe"]["httpGet"], serde_json::json!({"path": "/readyz", "port": "metrics"}));

    // Hardened: non-root, read-only, nothing to escalate to.
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");

    // --agent-config is the ConfigMap's key, mounted.
    let path = flags.agent_config.clone().expect("the chart passes --agent-config");
    let (dir, key) = (path.parent().expect("a directory"), path.file_name().expect("a file").to_str().expect("UTF-8"));
    let mount = c["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|m| Path::new(m["mountPath"].as_str().unwrap_or_default()) == dir)
        .unwrap_or_else(|| panic!("nothing is mounted at {}", dir.display()));
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let cm_name = volume["configMap"]["name"].as_str().expect("a ConfigMap volume");
    let cm = named(docs, "ConfigMap", cm_name);
    let text = cm["data"][key].as_str().unwrap_or_else(|| panic!("ConfigMap {cm_name} has no {key}"));
    let config = AgentConfig::from_yaml(text).unwrap_or_else(|e| panic!("the operator refuses the chart's {key}: {e}"));
    assert_eq!(config.namespace.as_deref(), Some(NAMESPACE), "the DaemonSet goes to the release namespace");

    let sa = pod["serviceAccountName"].as_str().expect("serviceAccountName");
    named(docs, "ServiceAccount", sa);
    config
}

/// The ClusterRoles bound to ServiceAccount `sa` of the release namespace.
fn cluster_roles_of<'a>(docs: &'a [Value], sa: &str) -> Vec<&'a Value> {
    of_kind(docs, "ClusterRoleBinding")
        .into_iter()
        .filter(|b| {
            b["subjects"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|s| s["kind"] == "ServiceAccount" && s["name"] == sa && s["namespace"] == NAMESPACE)
        })
        .map(|b| named(docs, "ClusterRole", b["roleRef"]["name"].as_str().expect("roleRef.name")))
        .collect()
}

/// The DaemonSet the operator renders from the chart's configuration: the agent accepts its
/// arguments, and its ServiceAccount exists with RBAC.
fn check_agent(docs: &[Value], config: &AgentConfig) -> Value {
    let ds = serde_json::to_value(render(config, NAMESPACE)).expect("serialize");
    let pod = &ds["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let args = strings(&c["args"]);
    weir_agent::server::flags::parse(std::iter::once("weir-agent".to_owned()).chain(args.iter().cloned()))
        .unwrap_or_else(|e| {
            panic!("the agent refuses the arguments the operator renders from the chart {args:?}: {e}")
        });

    let sa = pod["serviceAccountName"].as_str().expect("serviceAccountName");
    named(docs, "ServiceAccount", sa);
    let roles = cluster_roles_of(docs, sa);
    assert!(!roles.is_empty(), "no ClusterRole is bound to the agent's ServiceAccount {sa}");
    ds
}

/// RBAC in a form that tests can compare with API calls: explicit verbs, no wildcards, no
/// resourceNames.
fn check_rbac(docs: &[Value]) {
    for role in of_kind(docs, "ClusterRole").into_iter().chain(of_kind(docs, "Role")) {
        let name = &role["metadata"]["name"];
        for rule in role["rules"].as_array().expect("rules") {
            for field in ["apiGroups", "resources", "verbs"] {
                let values = strings(&rule[field]);
                assert!(!values.is_empty(), "{name}: a rule without {field}");
                assert!(!values.iter().any(|v| v.contains('*')), "{name}: wildcard in {field}");
            }
            assert!(rule.get("resourceNames").is_none() && rule.get("nonResourceURLs").is_none(), "{name}: {rule}");
        }
    }
}

/// Every `weir_*` metric in `text` is one a binary registers: its base name (without the
/// prefix and the OpenMetrics suffixes) is a quoted string in the binary's metrics sources.
fn check_metric_names(text: &str, what: &str) {
    let root = repo_root();
    let read =
        |paths: &[&str]| paths.iter().map(|p| std::fs::read_to_string(root.join(p)).expect(p)).collect::<String>();
    let agent =
        read(&["node-agent/src/metrics.rs", "node-agent/src/metrics/datapath.rs", "node-agent/src/metrics/globals.rs"]);
    let operator = read(&["operator/src/metrics.rs"]);
    let mut seen = 0;
    for (i, _) in text.match_indices("weir_") {
        let name: String =
            text[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        let (rest, source) = if let Some(rest) = name.strip_prefix("weir_agent_") {
            (rest, &agent)
        } else if let Some(rest) = name.strip_prefix("weir_operator_") {
            (rest, &operator)
        } else {
            continue;
        };
        // `vip_bytes_total` is registered as "vip" with the unit bytes; `build_info` as
        // "build" (an Info) or "build_info" (a gauge): any stripped form may be the name.
        let mut candidates = vec![rest];
        for suffix in ["_total", "_bucket", "_count", "_sum", "_seconds", "_bytes", "_info"] {
            let last = candidates[candidates.len() - 1];
            if let Some(base) = last.strip_suffix(suffix) {
                candidates.push(base);
            }
        }
        assert!(
            candidates.iter().any(|c| source.contains(&format!("\"{c}\""))),
            "{what}: {name} is not a metric the binaries export"
        );
        seen += 1;
    }
    assert!(seen > 0, "{what}: no weir metric found");
}

/// The monitoring objects select what exists and query what is exported.
fn check_monitoring(docs: &[Value], daemonset: &Value) {
    for sm in of_kind(docs, "ServiceMonitor") {
        let selector = &sm["spec"]["selector"]["matchLabels"];
        let services: Vec<_> =
            of_kind(docs, "Service").into_iter().filter(|s| selects(selector, &s["metadata"]["labels"])).collect();
        assert_eq!(services.len(), 1, "the ServiceMonitor selects one Service");
        let ports: Vec<_> =
            services[0]["spec"]["ports"].as_array().expect("ports").iter().map(|p| &p["name"]).collect();
        for e in sm["spec"]["endpoints"].as_array().expect("endpoints") {
            assert!(ports.contains(&&e["port"]), "ServiceMonitor port {} is not a port of the Service", e["port"]);
        }
    }
    for pm in of_kind(docs, "PodMonitor") {
        let pod = &daemonset["spec"]["template"];
        assert!(
            selects(&pm["spec"]["selector"]["matchLabels"], &pod["metadata"]["labels"]),
            "the PodMonitor does not select the agent pods the operator renders"
        );
        let ports: Vec<_> =
            pod["spec"]["containers"][0]["ports"].as_array().expect("ports").iter().map(|p| &p["name"]).collect();
        for e in pm["spec"]["podMetricsEndpoints"].as_array().expect("podMetricsEndpoints") {
            assert!(ports.contains(&&e["port"]), "PodMonitor port {} is not a port of the agent", e["port"]);
        }
    }
    for rule in of_kind(docs, "PrometheusRule") {
        check_metric_names(&rule["spec"].to_string(), "PrometheusRule");
    }
    for cm in of_kind(docs, "ConfigMap").into_iter().filter(|c| c["metadata"]["labels"]["grafana_dashboard"] == "1") {
        let text = cm["data"]["weir.json"].as_str().expect("weir.json");
        let dashboard: Value = serde_json::from_str(text).expect("the dashboard is JSON");
        assert!(dashboard["panels"].as_array().is_some_and(|p| !p.is_empty()));
        check_metric_names(text, "dashboard");
    }
}

#[test]
fn every_values_set_renders_into_valid_objects() {
    let Some(helm) = helm_or_skip("every_values_set_renders_into_valid_objects") else { return };
    for values in ci_values() {
        let file = values.to_str().expect("UTF-8 path");
        let rendered = template(&helm, &["-f", file]).unwrap_or_else(|e| panic!("{file}: helm template failed: {e}"));
        let docs = documents(&rendered);
        let mut failures = Vec::new();
        let mut seen = BTreeSet::new();
        for doc in &docs {
            let id = format!("{} {}/{}", doc["kind"], doc["metadata"]["namespace"], doc["metadata"]["name"]);
            if !seen.insert(id.clone()) {
                failures.push(format!("{id}: rendered twice"));
            }
            if let Err(e) = check_type(doc) {
                failures.push(format!("{id}: {e}"));
            }
        }
        assert!(failures.is_empty(), "{file}:\n{}", failures.join("\n"));

        let config = check_operator(&docs);
        let daemonset = check_agent(&docs, &config);
        check_rbac(&docs);
        check_monitoring(&docs, &daemonset);
    }
}

#[test]
fn the_chart_sets_every_field_of_the_agent_configuration() {
    let Some(helm) = helm_or_skip("the_chart_sets_every_field_of_the_agent_configuration") else { return };
    // The values set that sets everything: a field the operator adds to AgentConfig without a
    // chart value fails here.
    let file = repo_root().join("charts/weir/ci/monitoring-tls-values.yaml");
    let rendered = template(&helm, &["-f", file.to_str().expect("UTF-8")]).expect("renders");
    let docs = documents(&rendered);
    let cm = of_kind(&docs, "ConfigMap").into_iter().find(|c| c["data"]["agent.yaml"].is_string()).expect("agent.yaml");
    let text = cm["data"]["agent.yaml"].as_str().expect("text");
    let rendered: Value = serde_yaml::from_str(text).expect("YAML");
    let parsed = serde_json::to_value(AgentConfig::from_yaml(text).expect("valid")).expect("serialize");
    let keys = |v: &Value| v.as_object().expect("a map").keys().cloned().collect::<BTreeSet<_>>();
    assert_eq!(keys(&rendered), keys(&parsed), "AgentConfig's fields vs. the chart's agent.yaml");
    assert_eq!(keys(&rendered["api"]), keys(&parsed["api"]), "AgentConfig.api's fields vs. the chart's");
    assert_eq!(keys(&rendered["metrics"]), keys(&parsed["metrics"]));
}

#[test]
fn the_schema_and_the_templates_reject_bad_values() {
    let Some(helm) = helm_or_skip("the_schema_and_the_templates_reject_bad_values") else { return };
    let defaults = repo_root().join("charts/weir/ci/default-values.yaml");
    let defaults = defaults.to_str().expect("UTF-8");
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "agent.xdpMode=fast"], "agent.xdpMode must be one of the following"),
        (&["--set", "agent.tolerationz=x"], "Additional property tolerationz is not allowed"),
        (&["--set", "operatr.replicas=1"], "Additional property operatr is not allowed"),
        (&["--set", "agent.image.pullPolicy=Sometimes"], "agent.image.pullPolicy must be one of the following"),
        (&["--set", "agent.defaultMac=ff:ff:ff:ff:ff:ff"], "agent.defaultMac"),
        (&["--set", "agent.defaultMac=00:00:00:00:00:00"], "agent.defaultMac"),
        (&["--set", "agent.defaultMac=02:00:00:00:00"], "agent.defaultMac"),
        (&["--set", "agent.interface=this-name-is-too-long"], "agent.interface"),
        (&["--set", "agent.api.port=0"], "agent.api.port"),
        (&["--set", "agent.metrics.port=8080"], "agent.metrics.port equals agent.api.port"),
        (&["--set", "agent.api.clientCaSecret.name=ca"], "agent.api.clientCaSecret needs agent.api.tlsSecret"),
        (&["--set", "agent.bpffsPath=sys/fs/bpf"], "agent.bpffsPath"),
    ];
    for (args, expected) in cases {
        let all: Vec<&str> = ["-f", defaults].iter().chain(args.iter()).copied().collect();
        match template(&helm, &all) {
            Ok(_) => panic!("{args:?} rendered; it must fail"),
            Err(e) => assert!(e.contains(expected), "{args:?}: expected {expected:?} in:\n{e}"),
        }
    }
    // No defaultMac at all: the one value without a default.
    let e = template(&helm, &[]).expect_err("renders without agent.defaultMac");
    assert!(e.contains("agent.defaultMac is required"), "{e}");
}
