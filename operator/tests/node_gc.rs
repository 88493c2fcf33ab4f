//! BalancerNode garbage collection against the API server double.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use weir_apiserver_double::{ApiServer, Fault};
use weir_crds::v1alpha1::BalancerNode;
use weir_operator::controllers::node_gc;
use weir_operator::health::Health;
use weir_operator::metrics::Metrics;

const LIMIT: Duration = Duration::from_secs(20);
const GROUP_VERSION: &str = "lb.weir.dev/v1alpha1";

struct Harness {
    server: ApiServer,
    client: kube::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

fn server() -> ApiServer {
    let server = ApiServer::start();
    for crd in weir_crds::crds() {
        server.register_crd(&crd);
    }
    server
}

impl Harness {
    fn new(server: ApiServer) -> Self {
        let client = server.client();
        Harness { server, client, stop: None }
    }

    /// Starts the collector; it stops with the harness.
    fn start(&mut self) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let client = self.client.clone();
        tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            node_gc::run(client, Metrics::new(), Health::new(), shutdown).await.expect("node GC failed");
        });
        self.stop = Some(stop);
    }

    async fn create_node(&self, name: &str) {
        let node: Node =
            serde_json::from_value(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name}})).unwrap();
        Api::<Node>::all(self.client.clone()).create(&PostParams::default(), &node).await.unwrap();
    }

    async fn create_balancer_node(&self, name: &str) {
        let bn: BalancerNode = serde_json::from_value(json!({
            "apiVersion": GROUP_VERSION, "kind": "BalancerNode", "metadata": {"name": name}, "spec": {},
        }))
        .unwrap();
        Api::<BalancerNode>::all(self.client.clone()).create(&PostParams::default(), &bn).await.unwrap();
    }

    fn balancer_node_exists(&self, name: &str) -> bool {
        self.server.get(GROUP_VERSION, "balancernodes", None, name).is_some()
    }

    async fn wait_deleted(&self, name: &str) {
        while self.balancer_node_exists(name) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn deletes(&self) -> usize {
        self.server.requests().into_iter().filter(|r| r.method == "DELETE").count()
    }
}

async fn timed<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f).await.expect("test timed out");
}

#[tokio::test]
async fn balancer_node_without_node_is_deleted_and_one_with_a_node_stays() {
    timed(async {
        let mut h = Harness::new(server());
        h.create_node("n1").await;
        h.create_balancer_node("n1").await;
        h.create_balancer_node("gone").await;
        h.start();
        h.wait_deleted("gone").await;
        // Another pass or two have had their chance.
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(h.balancer_node_exists("n1"));
        assert_eq!(h.deletes(), 1, "one delete: {:?}", h.server.requests());
    })
    .await
}

#[tokio::test]
async fn deleting_a_node_deletes_its_balancer_node() {
    timed(async {
        let mut h = Harness::new(server());
        for name in ["n1", "n2"] {
            h.create_node(name).await;
            h.create_balancer_node(name).await;
        }
        h.start();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert!(h.balancer_node_exists("n1") && h.balancer_node_exists("n2"));
        assert_eq!(h.deletes(), 0);

        Api::<Node>::all(h.client.clone()).delete("n2", &DeleteParams::default()).await.unwrap();
        h.wait_deleted("n2").await;
        assert!(h.balancer_node_exists("n1"));

        // Steady state: no writes.
        tokio::time::sleep(Duration::from_millis(600)).await;
        h.server.clear_requests();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let writes: Vec<_> = h.server.requests().into_iter().filter(|r| r.is_write()).collect();
        assert!(writes.is_empty(), "writes in steady state: {writes:?}");
    })
    .await
}

#[tokio::test]
async fn nothing_is_deleted_before_the_node_list_is_ready() {
    timed(async {
        let mut h = Harness::new(server());
        h.create_node("n1").await;
        h.create_balancer_node("n1").await;
        h.create_balancer_node("gone").await;
        // The Node list fails three times; the watcher retries after >= 0.8 s, 1.6 s, 3.2 s.
        h.server.inject_fault(Fault {
            method: Some("GET".into()),
            path_contains: "/api/v1/nodes".into(),
            code: 500,
            reason: "InternalError",
            times: 3,
        });
        h.start();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let balancer_node_lists =
            h.server.requests().into_iter().filter(|r| r.path.ends_with("/balancernodes")).count();
        assert!(balancer_node_lists >= 1, "the BalancerNode side is ready");
        assert!(h.balancer_node_exists("n1") && h.balancer_node_exists("gone"));
        assert_eq!(h.deletes(), 0);

        // Once the Node list succeeds, the orphan goes, and only it.
        h.wait_deleted("gone").await;
        assert!(h.balancer_node_exists("n1"));
    })
    .await
}

#[tokio::test]
async fn a_failed_delete_is_retried() {
    timed(async {
        let mut h = Harness::new(server());
        h.create_balancer_node("gone").await;
        h.server.inject_fault(Fault {
            method: Some("DELETE".into()),
            path_contains: "/balancernodes/gone".into(),
            code: 500,
            reason: "InternalError",
            times: 1,
        });
        h.start();
        h.wait_deleted("gone").await;
        assert_eq!(h.deletes(), 2);
    })
    .await
}

#[tokio::test]
async fn run_returns_on_shutdown() {
    timed(async {
        let server = server();
        let shutdown = tokio::time::sleep(Duration::from_millis(300));
        node_gc::run(server.client(), Metrics::new(), Health::new(), shutdown).await.expect("clean shutdown");
    })
    .await
}
