//! The control plane end to end: the real `weir-operator` (its `run`) and the
//! real `weir-agent` in cluster mode (its `serve_with_client`: flags, REST API,
//! cluster sync, BalancerNode writer) against the Kubernetes API server
//! double, with the agent's datapath in testing mode (packets through
//! BPF_PROG_TEST_RUN via the REST API's simulate-packet).
//!
//! One scenario, in order: `e2e/manifests/web.yaml` applied → Accepted →
//! programmed → a SYN to the VIP lands on a RealServer → Programmed 1/1; the
//! REST API refuses changes to the owned VIP; weight 0 drains; an agent
//! restart converges again; a conflicting VirtualService is rejected; a node
//! selector change unprograms and reprograms; deletion hands the address to
//! the conflicting VirtualService, then removes it. e2e/cluster/run.sh runs
//! the same scenario on a real cluster.
//!
//! Needs root (BPF); without it the test prints `SKIPPED (needs root)`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use weir_agent::dataplane::{flow_frame, outer_destination, Flow};
use weir_agent::server::{serve_with_client, StartError};
use weir_apiserver_double::ApiServer;
use weir_crds::v1alpha1::{BalancerNode, RealServer, VirtualService};

mod common {
    pub mod control_plane;
}
use common::control_plane::{agent_flags, apply, free_port, testing_config, until, LIMIT, MANIFEST};

const NODE: &str = "node-a";
const NS: &str = "weir-e2e";
const VIP: &str = "10.100.0.1";
const REAL_A: &str = "10.0.0.1";
const REAL_B: &str = "10.0.0.2";

/// A weir-agent in cluster mode, served in this process.
struct Agent {
    api: String,
    metrics: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), StartError>>,
}

impl Agent {
    async fn start(server: &ApiServer, config: &std::path::Path) -> Agent {
        let (api_port, metrics_port) = (free_port(), free_port());
        let metrics_addr = format!("127.0.0.1:{metrics_port}");
        let flags = agent_flags(NODE, config, api_port, &["--metrics-addr", &metrics_addr]);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_with_client(flags, Some(server.client()), async move {
            let _ = stopped.await;
        }));
        let agent = Agent {
            api: format!("http://127.0.0.1:{api_port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}"),
            stop: Some(stop),
            task,
        };
        // Ready: the balancer exists and the first sync pass ran (probed where kubelet would).
        until("the agent is ready", || async {
            reqwest::get(format!("{}/health/ready", agent.metrics)).await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        agent
    }

    async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        (&mut self.task).await.unwrap().expect("the agent failed");
    }

    async fn get(&self, path: &str) -> Value {
        let r = reqwest::get(format!("{}{path}", self.api)).await.unwrap();
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    async fn send(&self, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new().request(method, format!("{}{path}", self.api)).json(&body).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap())
    }

    /// The VIPs, as "address:port/proto".
    async fn vips(&self) -> Vec<String> {
        let body = self.get("/api/v1/vips").await;
        let mut vips: Vec<String> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| format!("{}:{}/{}", v["address"].as_str().unwrap(), v["port"], v["proto"]))
            .collect();
        vips.sort();
        vips
    }

    /// The VIP's reals as (address, weight), or None when it does not exist.
    async fn reals(&self) -> Option<Vec<(String, u64)>> {
        let r = reqwest::get(format!("{}/api/v1/vips/reals?address={VIP}&port=80&proto=6", self.api)).await.unwrap();
        if r.status() == 404 {
            return None;
        }
        let body: Value = r.json().await.unwrap();
        let mut reals: Vec<(String, u64)> = body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["address"].as_str().unwrap().to_owned(), r["weight"].as_u64().unwrap()))
            .collect();
        reals.sort();
        Some(reals)
    }

    /// Where the datapath sends a SYN from 198.51.100.7:`src_port` to the VIP
    /// (simulate-packet over REST), if it sends it anywhere.
    async fn syn_lands_on(&self, src_port: u16) -> Option<IpAddr> {
        let flow = Flow {
            src: Ipv4Addr::new(198, 51, 100, 7).into(),
            dst: VIP.parse().unwrap(),
            src_port,
            dst_port: 80,
            proto: 6,
        };
        let mut frame = flow_frame(&flow).unwrap();
        frame[14 + 20 + 13] = 0x02; // TCP flags: SYN only
        let b64 = base64::engine::general_purpose::STANDARD;
        let (code, body) = self
            .send(reqwest::Method::POST, "/api/v1/utils/simulate-packet", json!({"packet": b64.encode(&frame)}))
            .await;
        assert_eq!(code, 200, "{body}");
        let out = b64.decode(body["data"]["packet"].as_str()?).ok()?;
        // Not sent: the output is the input frame.
        (out != frame).then(|| outer_destination(&out)).flatten()
    }
}

/// A condition of a VirtualService as (status, reason, message).
async fn condition(vss: &Api<VirtualService>, name: &str, type_: &str) -> Option<(String, String, String)> {
    let vs = vss.get_opt(name).await.unwrap()?;
    let c = vs.status?.conditions.into_iter().find(|c| c.type_ == type_)?;
    Some((c.status, c.reason, c.message))
}

fn cond(status: &str, reason: &str, message: &str) -> Option<(String, String, String)> {
    Some((status.to_owned(), reason.to_owned(), message.to_owned()))
}

async fn until_condition(vss: &Api<VirtualService>, name: &str, type_: &str, want: Option<(String, String, String)>) {
    let start = Instant::now();
    loop {
        let got = condition(vss, name, type_).await;
        if got == want {
            return;
        }
        assert!(start.elapsed() < LIMIT, "{name} {type_}: want {want:?}, have {got:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The 16 SYNs' destinations, as a sorted set.
async fn destinations(agent: &Agent) -> Vec<String> {
    let mut out = std::collections::BTreeSet::new();
    for port in 40_000..40_016 {
        out.insert(agent.syn_lands_on(port).await.map_or("not sent".to_owned(), |a| a.to_string()));
    }
    out.into_iter().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_end_to_end() {
    if weir_e2e::skip_unless_root("control_plane_end_to_end") {
        return;
    }
    let server = ApiServer::start();
    for crd in weir_crds::crds() {
        server.register_crd(&crd);
    }
    let client = server.client();
    let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE, "labels": {"role": "lb"}}})).unwrap();
    Api::<Node>::all(client.clone()).create(&PostParams::default(), &node).await.unwrap();

    let (stop_operator, operator_stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(weir_operator::run(client.clone(), weir_operator::Options::default(), async move {
        let _ = operator_stopped.await;
    }));

    let dir = std::env::temp_dir().join(format!("weir-control-plane-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = testing_config(&dir);
    let agent = Agent::start(&server, &config).await;

    // A VIP created over REST is the node's own, before and after the cluster's arrive.
    let rest_vip = json!({"address": "10.200.0.1", "port": 443, "proto": 6, "flags": 0});
    assert_eq!(agent.send(reqwest::Method::POST, "/api/v1/vips", rest_vip).await.0, 201);

    // Apply → Accepted → programmed → Programmed 1/1.
    apply(&client, MANIFEST).await;
    let vss: Api<VirtualService> = Api::namespaced(client.clone(), NS);
    until_condition(&vss, "web", "Accepted", cond("True", "Accepted", "accepted")).await;
    until_condition(&vss, "web", "Programmed", cond("True", "Programmed", "1/1 nodes")).await;
    let rss: Api<RealServer> = Api::namespaced(client.clone(), NS);
    for name in ["web-a", "web-b"] {
        let status = rss.get(name).await.unwrap().status.unwrap();
        let accepted = status.conditions.iter().find(|c| c.type_ == "Accepted").unwrap();
        assert_eq!((accepted.status.as_str(), accepted.reason.as_str()), ("True", "Accepted"), "{name}");
    }
    assert_eq!(agent.reals().await.unwrap(), [(REAL_A.to_owned(), 5), (REAL_B.to_owned(), 5)]);
    assert_eq!(destinations(&agent).await, [REAL_A, REAL_B], "SYNs spread over both RealServers");
    assert_eq!(agent.vips().await, ["10.100.0.1:80/6", "10.200.0.1:443/6"]);

    // The REST API refuses to change what a VirtualService owns, and names it.
    let add_real =
        json!({"vip": {"address": VIP, "port": 80, "proto": 6}, "real": {"address": "10.0.0.9", "weight": 1}});
    assert_eq!(
        agent.send(reqwest::Method::POST, "/api/v1/vips/reals", add_real).await,
        (
            409,
            json!({"success": false, "error": {"code": "CLUSTER_OWNED", "message":
                "VIP 10.100.0.1:80/tcp is owned by VirtualService weir-e2e/web: change the VirtualService, not the node"}})
        )
    );
    let del_vip = json!({"address": VIP, "port": 80, "proto": 6});
    assert_eq!(agent.send(reqwest::Method::DELETE, "/api/v1/vips", del_vip).await.0, 409);
    assert_eq!(agent.send(reqwest::Method::POST, "/api/v1/lb/close", json!({})).await.0, 409);

    // Weight 0 drains: every new flow goes to the other real.
    rss.patch("web-a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"weight": 0}}))).await.unwrap();
    until("web-a drained", || async { agent.reals().await.is_some_and(|r| r[0] == (REAL_A.to_owned(), 0)) }).await;
    assert_eq!(destinations(&agent).await, [REAL_B]);

    // An agent restart converges again (testing mode pins nothing: it starts
    // empty and programs everything), and the REST VIP of the old process is gone with it.
    agent.stop().await;
    let agent = Agent::start(&server, &config).await;
    assert_eq!(agent.vips().await, ["10.100.0.1:80/6"]);
    assert_eq!(agent.reals().await.unwrap(), [(REAL_A.to_owned(), 0), (REAL_B.to_owned(), 5)]);
    until_condition(&vss, "web", "Programmed", cond("True", "Programmed", "1/1 nodes")).await;

    // A second VirtualService on the same address, port and protocol loses to the older one.
    let mut copy: VirtualService =
        serde_json::from_value(serde_yaml::from_str(MANIFEST.split("\n---\n").next().unwrap()).unwrap()).unwrap();
    copy.metadata.name = Some("web-copy".into());
    vss.create(&PostParams::default(), &copy).await.unwrap();
    until_condition(
        &vss,
        "web-copy",
        "Accepted",
        cond(
            "False",
            "AddressConflict",
            "10.100.0.1 port 80 TCP is already served by VirtualService weir-e2e/web, which is older",
        ),
    )
    .await;
    assert_eq!(agent.reals().await.unwrap().len(), 2, "the datapath keeps the winner");

    // Node selector: not selected → removed from this node; selected again → back.
    let select = |role: &str| Patch::Merge(json!({"spec": {"nodeSelector": {"matchLabels": {"role": role}}}}));
    vss.patch("web", &PatchParams::default(), &select("edge")).await.unwrap();
    until_condition(&vss, "web", "Programmed", cond("False", "NoTargetNodes", "0/0 nodes")).await;
    until("VIP removed from the unselected node", || async { agent.reals().await.is_none() }).await;
    vss.patch("web", &PatchParams::default(), &select("lb")).await.unwrap();
    until_condition(&vss, "web", "Programmed", cond("True", "Programmed", "1/1 nodes")).await;
    assert_eq!(agent.reals().await.unwrap().len(), 2);

    // Deleting the winner hands the address to the other VirtualService (which has no reals).
    vss.delete("web", &DeleteParams::default()).await.unwrap();
    until_condition(&vss, "web-copy", "Programmed", cond("True", "Programmed", "1/1 nodes")).await;
    assert_eq!(agent.reals().await.unwrap(), []);
    let (code, body) =
        agent.send(reqwest::Method::DELETE, "/api/v1/vips", json!({"address": VIP, "port": 80, "proto": 6})).await;
    assert_eq!((code, body["error"]["message"].as_str().unwrap()), (409, "VIP 10.100.0.1:80/tcp is owned by VirtualService weir-e2e/web-copy: change the VirtualService, not the node"));
    vss.delete("web-copy", &DeleteParams::default()).await.unwrap();
    until("VIP removed", || async { agent.reals().await.is_none() }).await;
    let nodes: Api<BalancerNode> = Api::all(client.clone());
    until("BalancerNode lists nothing", || async {
        nodes.get(NODE).await.unwrap().status.is_some_and(|s| s.virtual_services.is_empty())
    })
    .await;

    agent.stop().await;
    let _ = stop_operator.send(());
    operator.await.unwrap().expect("the operator failed");
    let _ = std::fs::remove_dir_all(&dir);
}
