//! The operator's integration-test harness: the API server double with weir's
//! CRDs and the real `weir_operator::run` on a client of it, and the objects
//! the tests create. Included by each test file as `mod support { pub mod harness; }`.
#![allow(dead_code)]

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use weir_apiserver_double::ApiServer;
use weir_crds::v1alpha1::{BalancerNode, RealServer, VirtualService};

pub const LIMIT: Duration = Duration::from_secs(20);
pub const GROUP_VERSION: &str = "lb.weir.dev/v1alpha1";

/// The double with weir's CRDs and a running operator; the operator stops with the guard.
pub struct Harness {
    pub server: ApiServer,
    pub client: kube::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub fn start() -> Harness {
    start_with(|_| {})
}

/// [`start`] with objects stored (by `seed`) before the operator runs.
pub fn start_with(seed: impl FnOnce(&ApiServer)) -> Harness {
    let server = ApiServer::start();
    for crd in weir_crds::crds() {
        server.register_crd(&crd);
    }
    seed(&server);
    let client = server.client();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let operator_client = client.clone();
    tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        weir_operator::run(operator_client, weir_operator::Options::default(), shutdown)
            .await
            .expect("operator failed");
    });
    Harness { server, client, _stop: stop }
}

pub async fn timed<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f).await.expect("test timed out");
}

impl Harness {
    /// A Node named `name` and its (empty) BalancerNode, as a starting agent makes it.
    pub async fn create_balancer_node(&self, name: &str) {
        let node: Node =
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})).unwrap();
        Api::<Node>::all(self.client.clone()).create(&PostParams::default(), &node).await.unwrap();
        let bn: BalancerNode = serde_json::from_value(json!({
            "apiVersion": GROUP_VERSION, "kind": "BalancerNode", "metadata": {"name": name}, "spec": {},
        }))
        .unwrap();
        Api::<BalancerNode>::all(self.client.clone()).create(&PostParams::default(), &bn).await.unwrap();
    }

    pub async fn create_vs(&self, name: &str, address: &str, port: u16) {
        self.create_vs_with(name, json!({"address": address, "port": port, "protocol": "TCP"})).await;
    }

    /// A VirtualService in `default` with `spec`.
    pub async fn create_vs_with(&self, name: &str, spec: Value) {
        let vs: VirtualService = serde_json::from_value(json!({
            "apiVersion": GROUP_VERSION, "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": spec,
        }))
        .unwrap();
        Api::<VirtualService>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &vs)
            .await
            .unwrap();
    }

    pub async fn create_rs(&self, name: &str, virtual_service: &str, address: &str) {
        let rs: RealServer = serde_json::from_value(json!({
            "apiVersion": GROUP_VERSION, "kind": "RealServer",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"virtualServiceName": virtual_service, "address": address, "weight": 1},
        }))
        .unwrap();
        Api::<RealServer>::namespaced(self.client.clone(), "default")
            .create(&PostParams::default(), &rs)
            .await
            .unwrap();
    }

    /// Steady state: after convergence, a quiet second brings no write at all.
    pub async fn assert_quiet(&self) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        self.server.clear_requests();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let writes: Vec<_> = self.server.requests().into_iter().filter(|r| r.is_write()).collect();
        assert!(writes.is_empty(), "writes in steady state: {writes:?}");
    }
}
