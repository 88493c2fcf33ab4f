//! [`render`]: the node agent's DaemonSet as a pure function of the [`AgentConfig`].
//!
//! Empty lists and maps are left out rather than rendered empty: the API server drops them
//! (Go's `omitempty`), and a desired `nodeSelector: {}` would never be found in the live
//! object, so the drift check would re-apply forever.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetSpec, DaemonSetUpdateStrategy, RollingUpdateDaemonSet};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EnvVar, EnvVarSource, HTTPGetAction, HostPathVolumeSource,
    LocalObjectReference, ObjectFieldSelector, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::config::AgentConfig;

/// The pod template annotation that carries [`config_hash`]: any change of the pod spec
/// changes it, so the DaemonSet controller rolls the pods even for changes (a Secret's name,
/// say) that it would otherwise apply only to new pods.
pub const CONFIG_HASH_ANNOTATION: &str = "lb.weir.dev/config-hash";

/// Where the Secrets are mounted in the agent's container.
const TOKEN_DIR: &str = "/etc/weir/token";
const TLS_DIR: &str = "/etc/weir/tls";
const CLIENT_CA_DIR: &str = "/etc/weir/client-ca";

/// The labels of the DaemonSet and its pods.
pub fn labels() -> BTreeMap<String, String> {
    let mut labels = selector_labels();
    labels.insert("app.kubernetes.io/managed-by".into(), crate::FIELD_MANAGER.into());
    labels
}

/// The labels the DaemonSet selects its pods by (immutable once created: keep them few).
fn selector_labels() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "weir-agent".into()),
        ("app.kubernetes.io/component".into(), "agent".into()),
    ])
}

/// The agent's command line (everything after the program name).
pub fn args(config: &AgentConfig) -> Vec<String> {
    let api = &config.api;
    let pin_root = format!("{}/weir", config.bpffs_path.trim_end_matches('/'));
    let mut args: Vec<String> = [
        "--cluster",
        "--interface",
        &config.interface,
        "--default-mac",
        &config.default_mac,
        "--xdp-mode",
        config.xdp_mode.as_str(),
        "--host",
        &api.host,
        "--port",
        &api.port.to_string(),
        "--metrics-addr",
        &format!("0.0.0.0:{}", config.metrics.port),
        "--pin-root",
        &pin_root,
        "--state-dir",
        &config.state_dir,
    ]
    .map(str::to_owned)
    .into();
    for cidr in &api.allow_cidrs {
        args.extend(["--allow-cidr".to_owned(), cidr.clone()]);
    }
    if api.read_only {
        args.push("--read-only".to_owned());
    }
    if let Some(token) = &api.token_secret {
        args.extend(["--token-file".to_owned(), format!("{TOKEN_DIR}/{}", token.key)]);
    }
    if api.tls_secret.is_some() {
        args.extend(
            ["--tls-cert", &format!("{TLS_DIR}/tls.crt"), "--tls-key", &format!("{TLS_DIR}/tls.key")]
                .map(str::to_owned),
        );
    }
    if let Some(ca) = &api.client_ca_secret {
        args.extend(["--tls-client-ca".to_owned(), format!("{CLIENT_CA_DIR}/{}", ca.key)]);
    }
    args.extend(config.extra_args.iter().cloned());
    args
}

/// The node agent's DaemonSet in `namespace`.
pub fn render(config: &AgentConfig, namespace: &str) -> DaemonSet {
    let pod_spec = pod_spec(config);
    let annotations = BTreeMap::from([(CONFIG_HASH_ANNOTATION.to_owned(), config_hash(&pod_spec))]);
    DaemonSet {
        metadata: ObjectMeta {
            name: Some(config.name.clone()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels()),
            ..ObjectMeta::default()
        },
        spec: Some(DaemonSetSpec {
            selector: LabelSelector { match_labels: Some(selector_labels()), ..LabelSelector::default() },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels()),
                    annotations: Some(annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec),
            },
            // One node at a time: a node whose agent restarts keeps forwarding with the
            // pinned program, but the operator should not take many down at once.
            update_strategy: Some(DaemonSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDaemonSet {
                    max_unavailable: Some(IntOrString::Int(1)),
                    ..RollingUpdateDaemonSet::default()
                }),
            }),
            ..DaemonSetSpec::default()
        }),
        status: None,
    }
}

/// A stable hash of the pod spec: FNV-1a over its JSON (struct fields serialize in
/// declaration order and maps are `BTreeMap`s, so equal specs give equal bytes). Not
/// `DefaultHasher`, whose output may change between Rust releases and would roll every
/// agent on an operator upgrade.
pub fn config_hash(pod_spec: &PodSpec) -> String {
    let bytes = serde_json::to_vec(pod_spec).unwrap_or_default();
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn pod_spec(config: &AgentConfig) -> PodSpec {
    let secrets = secret_volumes(config);
    let mut volumes = vec![
        host_path("bpffs", &config.bpffs_path, "Directory"),
        host_path("state", &config.state_dir, "DirectoryOrCreate"),
    ];
    let mut mounts = vec![mount("bpffs", &config.bpffs_path, false), mount("state", &config.state_dir, false)];
    for (name, secret, dir) in secrets {
        volumes.push(Volume {
            name: name.to_owned(),
            secret: Some(SecretVolumeSource { secret_name: Some(secret), ..SecretVolumeSource::default() }),
            ..Volume::default()
        });
        mounts.push(mount(name, dir, true));
    }
    let pull_secrets = config.image_pull_secrets.iter().map(|name| LocalObjectReference { name: name.clone() });
    PodSpec {
        // The XDP program attaches to the host's NIC, and the API and metrics listen on it.
        host_network: Some(true),
        dns_policy: Some("ClusterFirstWithHostNet".to_owned()),
        service_account_name: Some(config.service_account_name.clone()),
        node_selector: (!config.node_selector.is_empty()).then(|| config.node_selector.clone()),
        tolerations: non_empty(config.tolerations.clone()),
        priority_class_name: config.priority_class_name.clone(),
        image_pull_secrets: non_empty(pull_secrets.collect()),
        termination_grace_period_seconds: Some(30),
        containers: vec![container(config, mounts)],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

/// The Secret volumes: (volume name, Secret name, mount directory).
fn secret_volumes(config: &AgentConfig) -> Vec<(&'static str, String, &'static str)> {
    let api = &config.api;
    let mut out = Vec::new();
    if let Some(s) = &api.token_secret {
        out.push(("token", s.name.clone(), TOKEN_DIR));
    }
    if let Some(s) = &api.tls_secret {
        out.push(("tls", s.clone(), TLS_DIR));
    }
    if let Some(s) = &api.client_ca_secret {
        out.push(("client-ca", s.name.clone(), CLIENT_CA_DIR));
    }
    out
}

fn container(config: &AgentConfig, volume_mounts: Vec<VolumeMount>) -> Container {
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        // With hostNetwork the server sets hostPort = containerPort; say so ourselves.
        host_port: Some(i32::from(port)),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    // The agent serves both health endpoints on its metrics listener, which (unlike the
    // API) is neither loopback-only nor behind the token or mTLS.
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            ..HTTPGetAction::default()
        }),
        ..Probe::default()
    };
    let resources = &config.resources;
    let resources_set = resources.limits.as_ref().is_some_and(|l| !l.is_empty())
        || resources.requests.as_ref().is_some_and(|r| !r.is_empty())
        || resources.claims.as_ref().is_some_and(|c| !c.is_empty());
    Container {
        name: "agent".to_owned(),
        image: Some(config.image.clone()),
        image_pull_policy: Some(config.image_pull_policy.as_str().to_owned()),
        args: Some(args(config)),
        env: Some(vec![
            EnvVar {
                name: "NODE_NAME".to_owned(),
                value_from: Some(EnvVarSource {
                    field_ref: Some(ObjectFieldSelector {
                        field_path: "spec.nodeName".to_owned(),
                        ..ObjectFieldSelector::default()
                    }),
                    ..EnvVarSource::default()
                }),
                ..EnvVar::default()
            },
            EnvVar { name: "RUST_LOG".to_owned(), value: Some(config.log_level.clone()), ..EnvVar::default() },
        ]),
        ports: Some(vec![port("metrics", config.metrics.port), port("api", config.api.port)]),
        liveness_probe: Some(probe("/health")),
        readiness_probe: Some(probe("/health/ready")),
        resources: resources_set.then(|| strip_empty(resources.clone())),
        security_context: Some(security_context()),
        volume_mounts: Some(volume_mounts),
        ..Container::default()
    }
}

fn strip_empty(mut r: ResourceRequirements) -> ResourceRequirements {
    r.limits = r.limits.filter(|l| !l.is_empty());
    r.requests = r.requests.filter(|l| !l.is_empty());
    r.claims = r.claims.filter(|l| !l.is_empty());
    r
}

/// Not privileged: the agent gets the capabilities it uses and nothing else.
fn security_context() -> SecurityContext {
    // Checked on Linux 6.18 by running weir-agent with exactly BPF, NET_ADMIN, PERFMON (setpriv): it
    // loads, attaches in driver and generic mode, pins, adopts the pins after a restart and
    // answers simulate-packet (BPF_PROG_TEST_RUN); without NET_ADMIN or PERFMON the program
    // load fails. CAP_SYS_ADMIN is not needed: weir needs XDP bpf_links (Linux >= 5.9),
    // and every kernel with those has CAP_BPF and CAP_PERFMON (5.8).
    let add = [
        // BPF: bpf() itself — creating maps, loading BTF and programs, pinning and opening
        // pinned objects, BPF_PROG_TEST_RUN.
        "BPF",
        // NET_ADMIN: loading a networking program type (XDP) needs it besides CAP_BPF, and
        // so does attaching the program to the NIC.
        "NET_ADMIN",
        // NET_RAW: the prober's TCP probes are SYNs from a raw socket (prober::half_open).
        "NET_RAW",
        // PERFMON: the verifier accepts the balancer's pointer arithmetic (variable-offset
        // packet and map accesses) only with it; without it the load is refused (EACCES).
        "PERFMON",
    ];
    SecurityContext {
        privileged: Some(false),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        // Root: the runtime makes added capabilities effective only for uid 0 (a non-root
        // process gets them in its bounding set alone). The bpf() checks are made against the
        // initial user namespace, so the pod must not run in a user namespace either.
        run_as_user: Some(0),
        capabilities: Some(Capabilities {
            add: Some(add.map(str::to_owned).into()),
            drop: Some(vec!["ALL".to_owned()]),
        }),
        ..SecurityContext::default()
    }
}

fn host_path(name: &str, path: &str, type_: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        host_path: Some(HostPathVolumeSource { path: path.to_owned(), type_: Some(type_.to_owned()) }),
        ..Volume::default()
    }
}

/// A mount at `path`. Host paths are mounted at the same path with the default propagation
/// (`None`): `Bidirectional` needs a privileged container, and the agent pins into the
/// host's bpffs, which needs no propagation since it is the same mount.
fn mount(name: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: name.to_owned(),
        mount_path: path.to_owned(),
        // Only `true` is rendered: the server drops `readOnly: false` (omitempty).
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    fn config(extra: &str) -> AgentConfig {
        AgentConfig::from_yaml(&format!(
            "image: ghcr.io/weir-lb/weir-agent:0.1.0\ninterface: eth0\ndefaultMac: \"02:00:00:00:00:01\"\n{extra}"
        ))
        .unwrap()
    }

    fn json_of(config: &AgentConfig) -> Value {
        serde_json::to_value(render(config, "weir-system")).unwrap()
    }

    #[test]
    fn default_daemonset() {
        let ds = json_of(&config(""));
        assert_eq!(ds["metadata"]["name"], "weir-agent");
        assert_eq!(ds["metadata"]["namespace"], "weir-system");
        assert_eq!(ds["metadata"]["labels"]["app.kubernetes.io/managed-by"], "weir-operator");
        assert_eq!(
            ds["spec"]["selector"]["matchLabels"],
            json!({"app.kubernetes.io/name": "weir-agent", "app.kubernetes.io/component": "agent"})
        );
        assert_eq!(
            ds["spec"]["updateStrategy"],
            json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}})
        );
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        assert_eq!(pod["dnsPolicy"], "ClusterFirstWithHostNet");
        assert_eq!(pod["serviceAccountName"], "weir-agent");
        assert_eq!(pod["terminationGracePeriodSeconds"], 30);
        for absent in ["nodeSelector", "tolerations", "imagePullSecrets", "priorityClassName"] {
            assert!(pod.get(absent).is_none(), "{absent} rendered empty");
        }
        let c = &pod["containers"][0];
        assert_eq!(c["name"], "agent");
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(
            c["args"],
            json!([
                "--cluster",
                "--interface",
                "eth0",
                "--default-mac",
                "02:00:00:00:00:01",
                "--xdp-mode",
                "auto",
                "--host",
                "127.0.0.1",
                "--port",
                "8080",
                "--metrics-addr",
                "0.0.0.0:9478",
                "--pin-root",
                "/sys/fs/bpf/weir",
                "--state-dir",
                "/run/weir",
            ])
        );
        assert_eq!(
            c["env"][0],
            json!({"name": "NODE_NAME", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}})
        );
        assert_eq!(c["env"][1], json!({"name": "RUST_LOG", "value": "info"}));
        assert_eq!(c["livenessProbe"]["httpGet"], json!({"path": "/health", "port": "metrics"}));
        assert_eq!(c["readinessProbe"]["httpGet"], json!({"path": "/health/ready", "port": "metrics"}));
        assert_eq!(c["ports"][0]["containerPort"], 9478);
        assert_eq!(c["ports"][1]["containerPort"], 8080);
        assert!(c.get("resources").is_none());
        let sc = &c["securityContext"];
        assert_eq!(sc["privileged"], false);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["runAsUser"], 0);
        assert_eq!(sc["capabilities"], json!({"add": ["BPF", "NET_ADMIN", "NET_RAW", "PERFMON"], "drop": ["ALL"]}));
        assert_eq!(
            pod["volumes"],
            json!([
                {"name": "bpffs", "hostPath": {"path": "/sys/fs/bpf", "type": "Directory"}},
                {"name": "state", "hostPath": {"path": "/run/weir", "type": "DirectoryOrCreate"}},
            ])
        );
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "bpffs", "mountPath": "/sys/fs/bpf"}, {"name": "state", "mountPath": "/run/weir"}])
        );
        let hash = &ds["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION];
        assert_eq!(hash.as_str().map(str::len), Some(16), "{hash}");
    }

    #[test]
    fn api_security_options_become_args_and_secret_volumes() {
        let ds = json_of(&config(
            "api:\n  allowCidrs: [10.0.0.0/8, 192.168.0.0/16]\n  readOnly: true\n\
             \x20 tokenSecret: {name: tok, key: token}\n  tlsSecret: tls\n  clientCaSecret: {name: ca, key: ca.pem}\n\
             extraArgs: [--idle-timeout, \"60\"]\nbpffsPath: /sys/fs/bpf/\n",
        ));
        let c = &ds["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = c["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(
            args[17..],
            [
                "--allow-cidr",
                "10.0.0.0/8",
                "--allow-cidr",
                "192.168.0.0/16",
                "--read-only",
                "--token-file",
                "/etc/weir/token/token",
                "--tls-cert",
                "/etc/weir/tls/tls.crt",
                "--tls-key",
                "/etc/weir/tls/tls.key",
                "--tls-client-ca",
                "/etc/weir/client-ca/ca.pem",
                "--idle-timeout",
                "60",
            ]
        );
        assert_eq!(args[13..15], ["--pin-root", "/sys/fs/bpf/weir"]);
        let volumes = &ds["spec"]["template"]["spec"]["volumes"];
        assert_eq!(volumes[2], json!({"name": "token", "secret": {"secretName": "tok"}}));
        assert_eq!(volumes[3], json!({"name": "tls", "secret": {"secretName": "tls"}}));
        assert_eq!(volumes[4], json!({"name": "client-ca", "secret": {"secretName": "ca"}}));
        assert_eq!(
            c["volumeMounts"][4],
            json!({"name": "client-ca", "mountPath": "/etc/weir/client-ca", "readOnly": true})
        );
    }

    #[test]
    fn scheduling_options_are_rendered() {
        let ds = json_of(&config(
            "nodeSelector: {lb: \"yes\"}\ntolerations: [{operator: Exists}]\nimagePullSecrets: [reg]\n\
             priorityClassName: system-node-critical\nresources: {limits: {memory: 256Mi}, requests: {}}\n",
        ));
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["nodeSelector"], json!({"lb": "yes"}));
        assert_eq!(pod["tolerations"], json!([{"operator": "Exists"}]));
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "reg"}]));
        assert_eq!(pod["priorityClassName"], "system-node-critical");
        assert_eq!(pod["containers"][0]["resources"], json!({"limits": {"memory": "256Mi"}}));
    }

    #[test]
    fn config_hash_is_stable_and_follows_the_pod_spec() {
        let hash =
            |c: &AgentConfig| json_of(c)["spec"]["template"]["metadata"]["annotations"][CONFIG_HASH_ANNOTATION].clone();
        assert_eq!(hash(&config("")), hash(&config("")));
        assert_ne!(hash(&config("")), hash(&config("logLevel: debug\n")));
        // The namespace is not part of the pod spec.
        let c = config("");
        let a = serde_json::to_value(render(&c, "a")).unwrap();
        let b = serde_json::to_value(render(&c, "b")).unwrap();
        assert_eq!(a["spec"]["template"], b["spec"]["template"]);
    }
}
