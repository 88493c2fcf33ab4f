//! What the control-plane tests (control_plane.rs, rbac.rs) share: polling,
//! `kubectl apply` of the scenario's manifest, and the agent's flags.

use std::path::Path;
use std::time::{Duration, Instant};

use kube::api::{Api, PostParams};
use serde_json::Value;
use weir_crds::v1alpha1::{RealServer, VirtualService};

/// The scenario's objects: a VirtualService and two RealServers (namespace weir-e2e).
pub const MANIFEST: &str = include_str!("../../manifests/web.yaml");

/// How long any wait may take.
pub const LIMIT: Duration = Duration::from_secs(30);

/// Polls `check` until it holds; fails the test after [`LIMIT`].
pub async fn until<F, Fut>(what: &str, check: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < LIMIT, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `kubectl apply -f` of a multi-document manifest of VirtualServices and RealServers.
pub async fn apply(client: &kube::Client, manifest: &str) {
    for doc in manifest.split("\n---\n") {
        let obj: Value = serde_yaml::from_str(doc).unwrap();
        let ns = obj["metadata"]["namespace"].as_str().unwrap().to_owned();
        let pp = PostParams::default();
        match obj["kind"].as_str().unwrap() {
            "VirtualService" => {
                let vs: VirtualService = serde_json::from_value(obj).unwrap();
                Api::<VirtualService>::namespaced(client.clone(), &ns).create(&pp, &vs).await.unwrap();
            }
            "RealServer" => {
                let rs: RealServer = serde_json::from_value(obj).unwrap();
                Api::<RealServer>::namespaced(client.clone(), &ns).create(&pp, &rs).await.unwrap();
            }
            other => panic!("unexpected kind {other}"),
        }
    }
}

/// A free TCP port on loopback (closed again: whoever binds it next may race, rarely).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// weir-agent's flags in cluster mode for `node`, with a testing-mode datapath from
/// `config` (a `/lb/create` JSON file), the API on `api_port`, and `extra` flags.
pub fn agent_flags(node: &str, config: &Path, api_port: u16, extra: &[&str]) -> weir_agent::server::ServeFlags {
    let port = api_port.to_string();
    let mut args = vec!["weir-agent", "--cluster", "--node-name", node, "--config"];
    args.push(config.to_str().unwrap());
    args.extend(["--port", &port, "--no-logging"]);
    args.extend(extra);
    weir_agent::server::flags::parse(args).expect("flags")
}

/// A testing-mode `/lb/create` body, written to `dir/lb.json`.
pub fn testing_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("lb.json");
    std::fs::write(&path, r#"{"testing": true, "max_vips": 16, "max_reals": 64, "lru_size": 4096}"#).unwrap();
    path
}
