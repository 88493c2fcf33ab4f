//! `/metrics`, `/healthz` and `/readyz` over a real socket, with the operator running
//! against the API server double.

use std::time::Duration;

use kube::api::{Api, PostParams};
use serde_json::json;
use weir_apiserver_double::ApiServer;
use weir_crds::v1alpha1::VirtualService;
use weir_operator::health::{Health, Role};
use weir_operator::metrics::{Metrics, CONTENT_TYPE};
use weir_operator::Options;

const LIMIT: Duration = Duration::from_secs(20);
const GROUP_VERSION: &str = "lb.weir.dev/v1alpha1";

async fn timed<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f).await.expect("test timed out");
}

/// Serves the endpoints on 127.0.0.1:0; returns the base URL. The server stops with the guard.
async fn serve(metrics: Metrics, health: Health) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(weir_operator::http::serve(listener, metrics, health, async move {
        let _ = stopped.await;
    }));
    (url, stop)
}

async fn get(url: &str) -> (u16, String, String) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// The value of the sample whose line starts with `series ` (name and labels, exactly).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_after_a_reconcile() {
    timed(async {
        let server = ApiServer::start();
        for crd in weir_crds::crds() {
            server.register_crd(&crd);
        }
        let options = Options::default();
        let (url, _stop_http) = serve(options.metrics.clone(), options.health.clone()).await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let client = server.client();
        let operator = tokio::spawn(weir_operator::run(client.clone(), options, async move {
            let _ = stopped.await;
        }));

        let vs: VirtualService = serde_json::from_value(json!({
            "apiVersion": GROUP_VERSION, "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"address": "10.0.0.1", "port": 80, "protocol": "TCP"},
        }))
        .unwrap();
        Api::<VirtualService>::namespaced(client, "default").create(&PostParams::default(), &vs).await.unwrap();

        // The pass after the one that wrote the status counts it as accepted.
        let accepted = "weir_operator_objects{kind=\"VirtualService\",condition=\"Accepted\",status=\"True\"}";
        let text = loop {
            let (status, content_type, text) = get(&format!("{url}/metrics")).await;
            assert_eq!(status, 200);
            assert_eq!(content_type, CONTENT_TYPE);
            if sample(&text, accepted) == Some(1.0) {
                break text;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let reconciles = sample(&text, "weir_operator_reconciles_total{controller=\"arbitration\"}").unwrap();
        assert!(reconciles > 0.0, "{text}");
        // The BalancerNode GC's passes count too (its first comes once its stores synced).
        let gc = "weir_operator_reconciles_total{controller=\"node_gc\"}";
        while sample(&get(&format!("{url}/metrics")).await.2, gc).is_none_or(|n| n < 1.0) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let rejected = "weir_operator_objects{kind=\"VirtualService\",condition=\"Accepted\",status=\"False\"}";
        assert_eq!(sample(&text, rejected), Some(0.0), "{text}");
        // No BalancerNode targets it: not programmed.
        let programmed = "weir_operator_objects{kind=\"VirtualService\",condition=\"Programmed\",status=\"False\"}";
        assert_eq!(sample(&text, programmed), Some(1.0), "{text}");
        let count = "weir_operator_reconcile_duration_seconds_count{controller=\"arbitration\"}";
        assert_eq!(sample(&text, count), Some(reconciles), "{text}");
        assert_eq!(sample(&text, "weir_operator_leader"), Some(1.0), "{text}");
        let build = format!("weir_operator_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"));
        assert_eq!(sample(&text, &build), Some(1.0), "{text}");
        assert!(!text.contains("weir_operator_reconcile_errors_total{"), "no error: {text}");

        assert_eq!(get(&format!("{url}/healthz")).await.0, 200);
        let (status, _, body) = get(&format!("{url}/readyz")).await;
        assert_eq!((status, body.as_str()), (200, "ok: leader\n"));

        stop.send(()).unwrap();
        operator.await.unwrap().expect("clean shutdown");
    })
    .await
}

#[tokio::test]
async fn readiness_per_role() {
    timed(async {
        let health = Health::new();
        let (url, _stop) = serve(Metrics::new(), health.clone()).await;
        let readyz = format!("{url}/readyz");
        // Before the first attempt at the Lease.
        assert_eq!(get(&readyz).await.0, 503);
        assert_eq!(get(&format!("{url}/healthz")).await.0, 200);
        // A standby is Ready (so that rolling updates proceed).
        health.set_role(Role::Standby);
        assert_eq!(get(&readyz).await, (200, "text/plain; charset=utf-8".to_owned(), "ok: standby\n".to_owned()));
        // A new leader is not Ready until its controllers' stores are synced.
        health.expect_synced("arbitration");
        health.set_role(Role::Leading);
        let (status, _, body) = get(&readyz).await;
        assert_eq!(status, 503);
        assert!(body.contains("arbitration"), "{body}");
        health.synced("arbitration");
        assert_eq!(get(&readyz).await.0, 200);
        health.set_role(Role::Failed);
        assert_eq!(get(&readyz).await.0, 503);
        assert_eq!(get(&format!("{url}/healthz")).await.0, 200);
    })
    .await
}
