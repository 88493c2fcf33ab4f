//! The node agent's DaemonSet manager against the API server double: creation as
//! rendered, repair of edits and deletion, quiet steady state, roll-out of a new config.

use std::time::Duration;

use k8s_openapi::api::apps::v1::DaemonSet;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use weir_apiserver_double::{ApiServer, Fault};
use weir_operator::controllers::daemonset::{self, drift, render, AgentConfig};
use weir_operator::health::Health;
use weir_operator::metrics::Metrics;

const LIMIT: Duration = Duration::from_secs(20);
const NS: &str = "weir-system";
const NAME: &str = "weir-agent";

fn config(extra: &str) -> AgentConfig {
    AgentConfig::from_yaml(&format!(
        "image: ghcr.io/weir-lb/weir-agent:0.1.0\ninterface: eth0\ndefaultMac: \"02:00:00:00:00:01\"\n\
         tolerations: [{{key: lb, operator: Exists, effect: NoSchedule}}, {{key: edge, operator: Exists}}]\n{extra}"
    ))
    .unwrap()
}

/// A running manager; it stops when the guard is dropped.
struct Manager {
    _stop: tokio::sync::oneshot::Sender<()>,
    done: tokio::task::JoinHandle<()>,
}

fn manage(server: &ApiServer, config: AgentConfig) -> Manager {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let client = server.client();
    let done = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        daemonset::run(client, config, NS.to_owned(), Metrics::new(), Health::new(), shutdown)
            .await
            .expect("manager failed");
    });
    Manager { _stop: stop, done }
}

impl Manager {
    async fn stop(self) {
        drop(self._stop);
        self.done.await.unwrap();
    }
}

async fn timed<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f).await.expect("test timed out");
}

fn live(server: &ApiServer) -> Option<Value> {
    server.get("apps/v1", "daemonsets", Some(NS), NAME)
}

/// Polls until the live DaemonSet satisfies `ok`; returns it.
async fn wait_for(server: &ApiServer, ok: impl Fn(&Value) -> bool) -> Value {
    loop {
        if let Some(ds) = live(server).filter(|ds| ok(ds)) {
            return ds;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls until the live DaemonSet contains the rendered one.
async fn wait_converged(server: &ApiServer, config: &AgentConfig) -> Value {
    let desired = serde_json::to_value(render(config, NS)).unwrap();
    wait_for(server, |ds| drift::contains(ds, &desired)).await
}

/// Steady state: a quiet second brings no write at all.
async fn assert_quiet(server: &ApiServer) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.clear_requests();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let writes: Vec<_> = server.requests().into_iter().filter(|r| r.is_write()).collect();
    assert!(writes.is_empty(), "writes in steady state: {writes:?}");
}

fn container(ds: &Value) -> &Value {
    &ds["spec"]["template"]["spec"]["containers"][0]
}

#[tokio::test]
async fn creates_the_daemonset_as_rendered_then_stays_quiet() {
    timed(async {
        let server = ApiServer::start();
        // The agents' ServiceAccount (the install creates it) owns the DaemonSet.
        let sa = server
            .put(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "weir-agent", "namespace": NS}}))
            .unwrap();
        let config = config("api: {tokenSecret: {name: weir-agent-token, key: token}}\n");
        let _m = manage(&server, config.clone());
        let ds = wait_converged(&server, &config).await;

        assert_eq!(ds["metadata"]["labels"]["app.kubernetes.io/managed-by"], "weir-operator");
        assert_eq!(
            ds["metadata"]["ownerReferences"],
            json!([{"apiVersion": "v1", "kind": "ServiceAccount", "name": "weir-agent", "uid": sa["metadata"]["uid"]}])
        );
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["hostNetwork"], true);
        // The double's defaulting ran: containment, not equality, is what the manager checks.
        assert_eq!(pod["restartPolicy"], "Always");
        let c = container(&ds);
        assert_eq!(c["image"], "ghcr.io/weir-lb/weir-agent:0.1.0");
        let args: Vec<&str> = c["args"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
        assert_eq!(args[..3], ["--cluster", "--interface", "eth0"]);
        assert!(args.windows(2).any(|w| w == ["--token-file", "/etc/weir/token/token"]), "{args:?}");
        assert!(args.windows(2).any(|w| w == ["--pin-root", "/sys/fs/bpf/weir"]), "{args:?}");
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName");
        assert_eq!(c["env"][1], json!({"name": "RUST_LOG", "value": "info"}));
        assert_eq!(c["securityContext"]["capabilities"]["add"], json!(["BPF", "NET_ADMIN", "NET_RAW", "PERFMON"]));
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/health");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/health/ready");
        let volumes: Vec<&str> = pod["volumes"].as_array().unwrap().iter().filter_map(|v| v["name"].as_str()).collect();
        assert_eq!(volumes, ["bpffs", "state", "token"]);
        assert_eq!(pod["volumes"][0]["hostPath"], json!({"path": "/sys/fs/bpf", "type": "Directory"}));
        assert_eq!(pod["volumes"][2]["secret"]["secretName"], "weir-agent-token");

        assert_quiet(&server).await;
    })
    .await
}

#[tokio::test]
async fn user_edits_and_deletion_are_repaired() {
    timed(async {
        let server = ApiServer::start();
        let config = config("");
        let _m = manage(&server, config.clone());
        wait_converged(&server, &config).await;
        let api = Api::<DaemonSet>::namespaced(server.client(), NS);

        // A changed image.
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent", "image": "evil:1"}]}}}});
        api.patch(NAME, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
        wait_converged(&server, &config).await;

        // A removed toleration (a merge patch replaces the whole list).
        let one = json!({"spec": {"template": {"spec": {"tolerations": [
            {"key": "lb", "operator": "Exists", "effect": "NoSchedule"}]}}}});
        api.patch(NAME, &PatchParams::default(), &Patch::Merge(one)).await.unwrap();
        let ds = wait_converged(&server, &config).await;
        assert_eq!(ds["spec"]["template"]["spec"]["tolerations"].as_array().map(Vec::len), Some(2));

        // A changed capability list (a "privilege escalation" by hand).
        let patch = json!({"spec": {"template": {"spec": {"containers": [{"name": "agent",
            "securityContext": {"privileged": true}}]}}}});
        api.patch(NAME, &PatchParams::default(), &Patch::Merge(patch)).await.unwrap();
        let ds = wait_converged(&server, &config).await;
        assert_eq!(container(&ds)["securityContext"]["privileged"], false);

        // The whole object deleted.
        let uid = ds["metadata"]["uid"].clone();
        assert!(server.delete("apps/v1", "daemonsets", Some(NS), NAME));
        let ds = wait_for(&server, |ds| ds["metadata"]["uid"] != uid).await;
        assert_eq!(container(&ds)["image"], "ghcr.io/weir-lb/weir-agent:0.1.0");

        assert_quiet(&server).await;
    })
    .await
}

#[tokio::test]
async fn a_new_config_rolls_out() {
    timed(async {
        let server = ApiServer::start();
        let old = config("");
        let m = manage(&server, old.clone());
        let ds = wait_converged(&server, &old).await;
        let hash = |ds: &Value| ds["spec"]["template"]["metadata"]["annotations"]["lb.weir.dev/config-hash"].clone();
        let old_hash = hash(&ds);
        m.stop().await;

        // The new one drops the tolerations and logs more.
        let new = AgentConfig::from_yaml(
            "image: ghcr.io/weir-lb/weir-agent:0.2.0\ninterface: eth0\ndefaultMac: \"02:00:00:00:00:01\"\n\
             logLevel: debug\n",
        )
        .unwrap();
        let _m = manage(&server, new.clone());
        let ds = wait_converged(&server, &new).await;
        assert_ne!(hash(&ds), old_hash);
        assert_eq!(container(&ds)["image"], "ghcr.io/weir-lb/weir-agent:0.2.0");
        assert_eq!(container(&ds)["env"][1]["value"], "debug");
        // Server-side apply removed what the manager no longer applies.
        assert!(ds["spec"]["template"]["spec"].get("tolerations").is_none(), "{ds}");
        assert_quiet(&server).await;
    })
    .await
}

#[tokio::test]
async fn a_failed_apply_is_retried() {
    timed(async {
        let server = ApiServer::start();
        server.inject_fault(Fault {
            method: Some("PATCH".into()),
            path_contains: "/daemonsets/weir-agent".into(),
            code: 500,
            reason: "InternalError",
            times: 2,
        });
        let config = config("");
        let _m = manage(&server, config.clone());
        wait_converged(&server, &config).await;
        let patches = server.requests().into_iter().filter(|r| r.method == "PATCH").count();
        assert_eq!(patches, 3, "two failures, then the apply");
    })
    .await
}

#[tokio::test]
async fn run_returns_on_shutdown() {
    timed(async {
        let server = ApiServer::start();
        let shutdown = tokio::time::sleep(Duration::from_millis(300));
        daemonset::run(server.client(), config(""), NS.to_owned(), Metrics::new(), Health::new(), shutdown)
            .await
            .expect("clean shutdown");
        assert!(live(&server).is_some());
    })
    .await
}
