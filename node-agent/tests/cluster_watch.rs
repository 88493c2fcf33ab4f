//! The cluster sync loop end to end against the API server double: the real
//! kube-runtime watchers, `resolve`, and a Balancer in testing mode. Objects
//! are written through the Kubernetes API; the datapath is checked through the
//! Balancer's reads and by simulating SYNs to the VIP.
//!
//! The Balancer needs root: without it each test prints
//! `SKIPPED (needs root): <test>` and returns.

mod support {
    pub mod cluster;
}

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::{Api, CustomResourceExt};
use serde_json::json;
use weir_agent::api::SharedBalancer;
use weir_agent::cluster::{watch, Reconciler};
use weir_agent::dataplane::{Balancer, BalancerConfig, RealSpec, VipId, VipSpec};
use weir_apiserver_double::ApiServer;

use support::cluster::*;
use weir_crds::status::reals_digest;
use weir_crds::v1alpha1::{BalancerNode, RealServer, VirtualService};

const NODE: &str = "node-a";
const LIMIT: Duration = Duration::from_secs(10);

fn vs(name: &str, selector: Option<LabelSelector>) -> VirtualService {
    virtual_service(name, VIP, selector)
}

fn rs(name: &str, addr: IpAddr, weight: u32) -> RealServer {
    real_server(name, "web", addr, weight)
}

struct Env {
    server: ApiServer,
    balancer: SharedBalancer,
    reconciler: Arc<Mutex<Reconciler>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The API double with weir's CRDs.
fn api_server() -> ApiServer {
    let server = ApiServer::start();
    server.register_crd(&VirtualService::crd());
    server.register_crd(&RealServer::crd());
    server.register_crd(&BalancerNode::crd());
    server
}

/// The sync loop of this node running against `server`, programming `lb`.
fn start_agent(server: ApiServer, lb: Balancer) -> Env {
    let balancer: SharedBalancer = Arc::new(RwLock::new(Some(lb)));
    let reconciler = Arc::new(Mutex::new(Reconciler::new()));
    let task = tokio::spawn(watch::run(server.client(), NODE.into(), balancer.clone(), reconciler.clone()));
    Env { server, balancer, reconciler, task }
}

/// The double with the CRDs and this node, a testing Balancer, the sync loop running.
async fn env(labels: &[(&str, &str)]) -> Env {
    let server = api_server();
    let node: Node = serde_json::from_value(json!({
        "metadata": {"name": NODE, "labels": labels.iter().cloned().collect::<BTreeMap<_, _>>()}
    }))
    .unwrap();
    Api::<Node>::all(server.client()).create(&PostParams::default(), &node).await.unwrap();
    start_agent(server, Balancer::new(BalancerConfig::testing()).unwrap())
}

impl Env {
    fn vss(&self) -> Api<VirtualService> {
        Api::namespaced(self.server.client(), "default")
    }

    fn rss(&self) -> Api<RealServer> {
        Api::namespaced(self.server.client(), "default")
    }

    /// Waits until `check` holds on the Balancer.
    async fn until(&self, what: &str, check: impl Fn(&Balancer) -> bool) {
        let start = Instant::now();
        loop {
            if check(self.balancer.read().unwrap().as_ref().unwrap()) {
                return;
            }
            assert!(start.elapsed() < LIMIT, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// A real as the plan holds it: RealServer `name` at `real(i)` with weight 5 (what the
/// BalancerNode's reals digest is computed from).
fn plan_real(name: &str, i: u8) -> weir_crds::validation::RealPlan {
    weir_crds::validation::RealPlan {
        owner: weir_crds::validation::ObjectKey::new("default", name),
        address: real(i),
        weight: 5,
        flags: 0,
    }
}

fn reals(lb: &Balancer) -> Option<Vec<RealSpec>> {
    lb.reals(&vip_id()).ok()
}

#[tokio::test]
async fn apply_change_weight_delete() {
    if skip_unless_root("apply_change_weight_delete") {
        return;
    }
    let env = env(&[]).await;
    let rest = VipId { addr: Ipv4Addr::new(10, 100, 0, 9).into(), port: 443, proto: 6 };
    env.balancer.write().unwrap().as_mut().unwrap().add_vip(VipSpec { id: rest, flags: 0 }).unwrap();
    let pp = PostParams::default();
    env.vss().create(&pp, &vs("web", None)).await.unwrap();
    env.rss().create(&pp, &rs("a", real(1), 5)).await.unwrap();
    env.rss().create(&pp, &rs("b", real(2), 5)).await.unwrap();
    env.until("VIP with both reals", |lb| reals(lb).is_some_and(|r| r.len() == 2)).await;
    {
        let guard = env.balancer.read().unwrap();
        let got = syn_lands_on(guard.as_ref().unwrap(), 40000).expect("forwarded");
        assert!(got == real(1) || got == real(2), "{got}");
    }
    assert_eq!(env.reconciler.lock().unwrap().owner(&vip_id()).unwrap().to_string(), "default/web");

    // Drain a: every new connection goes to b.
    let patch = Patch::Merge(json!({"spec": {"weight": 0}}));
    env.rss().patch("a", &PatchParams::default(), &patch).await.unwrap();
    env.until("a drained", |lb| reals(lb).is_some_and(|r| r.iter().any(|r| r.addr == real(1) && r.weight == 0))).await;
    {
        let guard = env.balancer.read().unwrap();
        for port in 40000..40008 {
            assert_eq!(syn_lands_on(guard.as_ref().unwrap(), port), Some(real(2)));
        }
    }

    // Deleting the RealServer removes the real; deleting the VirtualService, the VIP.
    env.rss().delete("b", &DeleteParams::default()).await.unwrap();
    env.until("b gone", |lb| reals(lb).is_some_and(|r| r.len() == 1)).await;
    env.vss().delete("web", &DeleteParams::default()).await.unwrap();
    env.until("VIP gone", |lb| lb.vip_info(&vip_id()).is_err()).await;
    // The REST VIP was never touched.
    let guard = env.balancer.read().unwrap();
    assert_eq!(guard.as_ref().unwrap().vips().iter().map(|v| v.id).collect::<Vec<_>>(), vec![rest]);
}

#[tokio::test]
async fn node_selector_follows_the_node_labels() {
    if skip_unless_root("node_selector_follows_the_node_labels") {
        return;
    }
    let env = env(&[("role", "edge")]).await;
    let selector = LabelSelector { match_labels: Some([("role".into(), "lb".into())].into()), ..Default::default() };
    let pp = PostParams::default();
    env.vss().create(&pp, &vs("web", Some(selector))).await.unwrap();
    env.rss().create(&pp, &rs("a", real(1), 1)).await.unwrap();
    // Not selected: give the loop time to (not) act, then check.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(env.balancer.read().unwrap().as_ref().unwrap().vips().is_empty());
    let nodes: Api<Node> = Api::all(env.server.client());
    let patch = Patch::Merge(json!({"metadata": {"labels": {"role": "lb"}}}));
    nodes.patch(NODE, &PatchParams::default(), &patch).await.unwrap();
    env.until("VIP programmed once selected", |lb| reals(lb).is_some_and(|r| r.len() == 1)).await;
    let patch = Patch::Merge(json!({"metadata": {"labels": {"role": "edge"}}}));
    nodes.patch(NODE, &PatchParams::default(), &patch).await.unwrap();
    env.until("VIP removed once unselected", |lb| lb.vips().is_empty()).await;
}

#[tokio::test]
async fn restart_adopts_the_vips_its_status_lists() {
    if skip_unless_root("restart_adopts_the_vips_its_status_lists") {
        return;
    }
    let server = api_server();
    // What the agent had programmed and reported before it stopped.
    let mut lb = Balancer::new(BalancerConfig::testing()).unwrap();
    lb.add_vip(VipSpec { id: vip_id(), flags: 0 }).unwrap();
    lb.add_real(&vip_id(), RealSpec { addr: real(1), weight: 5, flags: 0 }).unwrap();
    // And the VIP of a VirtualService deleted while the agent was down.
    let stale = VipId { addr: Ipv4Addr::new(10, 100, 0, 5).into(), port: 80, proto: 6 };
    lb.add_vip(VipSpec { id: stale, flags: 0 }).unwrap();
    server
        .put(json!({
            "apiVersion": "lb.weir.dev/v1alpha1", "kind": "BalancerNode",
            "metadata": {"name": NODE}, "spec": {},
            "status": {"virtualServices": [
                {"namespace": "default", "name": "gone", "generation": 1, "reals": 0,
                 "vip": {"address": "10.100.0.5", "port": 80, "protocol": "TCP"}},
                {"namespace": "default", "name": "web", "generation": 1, "reals": 1},
            ]}
        }))
        .unwrap();
    let vss: Api<VirtualService> = Api::namespaced(server.client(), "default");
    let rss: Api<RealServer> = Api::namespaced(server.client(), "default");
    vss.create(&PostParams::default(), &vs("web", None)).await.unwrap();
    rss.create(&PostParams::default(), &rs("a", real(1), 9)).await.unwrap();

    let env = start_agent(server, lb);
    env.until("weight 9 applied to the adopted VIP", |lb| {
        reals(lb) == Some(vec![RealSpec { addr: real(1), weight: 9, flags: 0 }])
    })
    .await;
    env.until("the stale VIP removed", |lb| lb.vip_info(&stale).is_err()).await;
    assert!(env.reconciler.lock().unwrap().owner(&vip_id()).is_some());
    // Owned again: deleting the VirtualService removes it.
    env.vss().delete("web", &DeleteParams::default()).await.unwrap();
    env.until("VIP gone", |lb| lb.vips().is_empty()).await;
}

#[tokio::test]
async fn balancer_node_status_reports_what_is_programmed() {
    if skip_unless_root("balancer_node_status_reports_what_is_programmed") {
        return;
    }
    let env = env(&[]).await;
    let pp = PostParams::default();
    env.vss().create(&pp, &vs("web", None)).await.unwrap();
    env.rss().create(&pp, &rs("a", real(1), 5)).await.unwrap();
    env.rss().create(&pp, &rs("b", real(2), 5)).await.unwrap();
    let nodes: Api<BalancerNode> = Api::all(env.server.client());
    let status = env
        .status_until(&nodes, "web programmed with 2 reals", |s| {
            s.virtual_services.first().is_some_and(|v| v.reals == 2)
        })
        .await;
    let expected = json!({
        "attachMode": "Testing",
        "capacity": {"vipsUsed": 1, "vipsMax": 16, "realsUsed": 2, "realsMax": 256},
        "virtualServices": [{"namespace": "default", "name": "web", "generation": 1, "reals": 2, "healthyReals": 2,
                             "realsDigest": reals_digest(&[plan_real("a", 1), plan_real("b", 2)]),
                             "vip": {"address": "10.100.0.1", "port": 80, "protocol": "TCP"}}],
    });
    let mut got = serde_json::to_value(&status).unwrap();
    let conditions = got.as_object_mut().unwrap().remove("conditions").unwrap();
    assert_eq!(got, expected);
    assert_eq!(
        (&conditions[0]["type"], &conditions[0]["status"], &conditions[0]["reason"], &conditions[0]["message"]),
        (&json!("Ready"), &json!("True"), &json!("InSync"), &json!("1 VirtualServices programmed"))
    );
    // The object goes with its Node.
    let node_uid = Api::<Node>::all(env.server.client()).get(NODE).await.unwrap().metadata.uid.unwrap();
    let owners = nodes.get(NODE).await.unwrap().metadata.owner_references.unwrap();
    assert_eq!((owners[0].kind.as_str(), owners[0].name.as_str(), owners[0].uid.as_str()), ("Node", NODE, &*node_uid));

    // Steady state: no writes.
    env.server.clear_requests();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(env.server.requests().iter().all(|r| !r.is_write()), "{:?}", env.server.requests());

    // A VIP a REST client created first: the VirtualService is not programmed, and Ready says why.
    let taken = VipId { addr: Ipv4Addr::new(10, 100, 0, 2).into(), port: 80, proto: 6 };
    env.balancer.write().unwrap().as_mut().unwrap().add_vip(VipSpec { id: taken, flags: 0 }).unwrap();
    env.vss().create(&pp, &virtual_service("api", Ipv4Addr::new(10, 100, 0, 2), None)).await.unwrap();
    let status = env.status_until(&nodes, "Ready False", |s| s.conditions[0].status == "False").await;
    assert_eq!(status.conditions[0].reason, "VipConflict");
    assert_eq!(status.conditions[0].message, "VIPs already created over the REST API: default/api (10.100.0.2:80/tcp)");
    assert_eq!(status.virtual_services.iter().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["web"]);
}

impl Env {
    /// Waits until the node's BalancerNode status satisfies `check`.
    async fn status_until(
        &self,
        nodes: &Api<BalancerNode>,
        what: &str,
        check: impl Fn(&weir_crds::v1alpha1::BalancerNodeStatus) -> bool,
    ) -> weir_crds::v1alpha1::BalancerNodeStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = nodes.get_opt(NODE).await.unwrap().and_then(|n| n.status) {
                if check(&status) {
                    return status;
                }
            }
            assert!(start.elapsed() < LIMIT, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn capacity_left_out_shows_in_ready() {
    if skip_unless_root("capacity_left_out_shows_in_ready") {
        return;
    }
    let env = env(&[]).await;
    let pp = PostParams::default();
    // The testing balancer holds 16 VIPs: the 17th VirtualService (the newest) is left out.
    for i in 1..=17u8 {
        env.vss()
            .create(&pp, &virtual_service(&format!("vs-{i:02}"), Ipv4Addr::new(10, 100, 1, i), None))
            .await
            .unwrap();
    }
    let nodes: Api<BalancerNode> = Api::all(env.server.client());
    let status = env.status_until(&nodes, "16 programmed", |s| s.virtual_services.len() == 16).await;
    let status = if status.conditions[0].status == "False" {
        status
    } else {
        env.status_until(&nodes, "Ready False", |s| s.conditions[0].status == "False").await
    };
    assert_eq!(status.conditions[0].reason, "CapacityExceeded");
    assert_eq!(
        status.conditions[0].message,
        "VirtualService default/vs-17: node is at max_vips (16); older VirtualServices come first"
    );
    assert!(status.virtual_services.iter().all(|v| v.name != "vs-17"));
    assert_eq!(status.capacity.vips_used, 16);
}

#[tokio::test]
async fn restart_keeps_ready_transition_time() {
    if skip_unless_root("restart_keeps_ready_transition_time") {
        return;
    }
    let server = api_server();
    // What the previous agent reported: Ready since 2020, nothing programmed yet.
    server
        .put(json!({
            "apiVersion": "lb.weir.dev/v1alpha1", "kind": "BalancerNode",
            "metadata": {"name": NODE}, "spec": {},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "InSync",
                "message": "0 VirtualServices programmed", "lastTransitionTime": "2020-01-01T00:00:00Z"}]}
        }))
        .unwrap();
    let vss: Api<VirtualService> = Api::namespaced(server.client(), "default");
    vss.create(&PostParams::default(), &vs("web", None)).await.unwrap();
    let env = start_agent(server, Balancer::new(BalancerConfig::testing()).unwrap());
    let nodes: Api<BalancerNode> = Api::all(env.server.client());
    let status = env.status_until(&nodes, "web programmed", |s| s.virtual_services.len() == 1).await;
    let ready = &status.conditions[0];
    assert_eq!(
        (ready.type_.as_str(), ready.status.as_str(), ready.message.as_str()),
        ("Ready", "True", "1 VirtualServices programmed")
    );
    assert_eq!(ready.last_transition_time.0.to_string(), "2020-01-01T00:00:00Z", "Ready never changed");
}

#[tokio::test]
async fn a_virtual_service_the_types_reject_does_not_stop_the_others() {
    if skip_unless_root("a_virtual_service_the_types_reject_does_not_stop_the_others") {
        return;
    }
    let server = api_server();
    // Stored before a CRD change narrowed the protocol enum (the double, like an API server
    // whose schema changed, keeps it as it is).
    server
        .put(json!({
            "apiVersion": "lb.weir.dev/v1alpha1", "kind": "VirtualService",
            "metadata": {"name": "sctp", "namespace": "default"},
            "spec": {"address": "10.100.0.7", "port": 80, "protocol": "SCTP"},
        }))
        .unwrap();
    let vss: Api<VirtualService> = Api::namespaced(server.client(), "default");
    let rss: Api<RealServer> = Api::namespaced(server.client(), "default");
    vss.create(&PostParams::default(), &vs("web", None)).await.unwrap();
    rss.create(&PostParams::default(), &rs("a", real(1), 5)).await.unwrap();

    // A (re)starting agent lists everything afresh: it becomes ready and programs `web`.
    let env = start_agent(server, Balancer::new(BalancerConfig::testing()).unwrap());
    env.until("web programmed", |lb| reals(lb) == Some(vec![RealSpec { addr: real(1), weight: 5, flags: 0 }])).await;
    assert!(env.reconciler.lock().unwrap().synced(), "ready");
    assert_eq!(env.balancer.read().unwrap().as_ref().unwrap().vips().len(), 1, "the SCTP object is not programmed");
    let nodes: Api<BalancerNode> = Api::all(env.server.client());
    let status = env.status_until(&nodes, "web reported", |s| s.virtual_services.len() == 1).await;
    assert_eq!((status.conditions[0].status.as_str(), status.conditions[0].reason.as_str()), ("True", "InSync"));

    // And it keeps following changes.
    env.rss().patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"weight": 7}}))).await.unwrap();
    env.until("weight 7", |lb| reals(lb) == Some(vec![RealSpec { addr: real(1), weight: 7, flags: 0 }])).await;
}

/// A programmed VirtualService whose stored object stops decoding (a CRD change
/// narrowed an enum) is not read as deleted: its VIP stays as last programmed, reals
/// and all, and the BalancerNode keeps reporting it, until it can be read again
/// (then it is followed as before) or is deleted (then its VIP goes).
#[tokio::test]
async fn a_programmed_virtual_service_that_stops_decoding_keeps_its_vip() {
    if skip_unless_root("a_programmed_virtual_service_that_stops_decoding_keeps_its_vip") {
        return;
    }
    let env = env(&[]).await;
    env.vss().create(&PostParams::default(), &vs("web", None)).await.unwrap();
    env.rss().create(&PostParams::default(), &rs("a", real(1), 5)).await.unwrap();
    env.until("web programmed", |lb| reals(lb) == Some(vec![RealSpec { addr: real(1), weight: 5, flags: 0 }])).await;
    let nodes: Api<BalancerNode> = Api::all(env.server.client());
    let reported = env.status_until(&nodes, "web reported", |s| s.virtual_services.len() == 1).await;

    let good = serde_json::to_value(env.vss().get("web").await.unwrap()).unwrap();
    let mut bad = good.clone();
    bad["spec"]["protocol"] = json!("SCTP");
    env.server.put(bad.clone()).unwrap();
    // A change the agent must see meanwhile: it proves the pass after the bad object ran.
    env.vss()
        .create(&PostParams::default(), &virtual_service("other", Ipv4Addr::new(10, 100, 0, 9), None))
        .await
        .unwrap();
    env.until("other programmed", |lb| lb.vips().len() == 2).await;
    let lb_reals = reals(env.balancer.read().unwrap().as_ref().unwrap());
    assert_eq!(lb_reals, Some(vec![RealSpec { addr: real(1), weight: 5, flags: 0 }]), "web's VIP is kept as it was");
    let status = env.status_until(&nodes, "other reported", |s| s.virtual_services.len() == 2).await;
    assert_eq!(status.virtual_services.iter().find(|v| v.name == "web"), reported.virtual_services.first());
    assert!(env.reconciler.lock().unwrap().owner(&vip_id()).is_some(), "still cluster-owned");

    // Readable again: followed as before.
    env.server.put(good).unwrap();
    env.rss().patch("a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"weight": 7}}))).await.unwrap();
    env.until("weight 7", |lb| reals(lb) == Some(vec![RealSpec { addr: real(1), weight: 7, flags: 0 }])).await;

    // Unreadable and then deleted: its VIP goes.
    env.server.put(bad).unwrap();
    // (Untyped: the typed client cannot read the deleted object it gets back.)
    let resource = kube::api::ApiResource::erase::<VirtualService>(&());
    let untyped: Api<kube::api::DynamicObject> = Api::namespaced_with(env.server.client(), "default", &resource);
    untyped.delete("web", &DeleteParams::default()).await.unwrap();
    env.until("web's VIP removed", |lb| lb.vips().len() == 1 && reals(lb).is_none()).await;
}

/// The health the prober finds (here: set on the Balancer, as the prober does) reaches the
/// BalancerNode with no watch event: counts, the unhealthy addresses, fail-open.
#[tokio::test]
async fn balancer_node_status_follows_real_health() {
    if skip_unless_root("balancer_node_status_follows_real_health") {
        return;
    }
    let server = api_server();
    let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap();
    Api::<Node>::all(server.client()).create(&PostParams::default(), &node).await.unwrap();
    let mut config = BalancerConfig::testing();
    config.prober = true;
    let env = start_agent(server, Balancer::new(config).unwrap());
    let mut web = vs("web", None);
    web.spec.health_check = Some(weir_crds::v1alpha1::HealthCheckSpec {
        path: Some("/healthz".into()),
        ..weir_crds::v1alpha1::HealthCheckSpec::new(weir_crds::v1alpha1::HealthCheckType::Http)
    });
    let pp = PostParams::default();
    env.vss().create(&pp, &web).await.unwrap();
    for (name, i) in [("a", 1), ("b", 2), ("c", 3)] {
        env.rss().create(&pp, &rs(name, real(i), 5)).await.unwrap();
    }
    let nodes: Api<BalancerNode> = Api::all(env.server.client());
    let health = |s: &weir_crds::v1alpha1::BalancerNodeStatus| {
        let v = s.virtual_services.first()?;
        Some((v.reals, v.healthy_reals?, v.unhealthy_reals.clone(), v.fail_open))
    };
    let all = |addrs: &[u8]| addrs.iter().map(|&i| real(i).to_string()).collect::<Vec<_>>();
    // Not probed yet: every real unhealthy, so the VIP fails open.
    env.status_until(&nodes, "3 reals, none healthy, fail open", |s| health(s) == Some((3, 0, all(&[1, 2, 3]), true)))
        .await;
    {
        let guard = env.balancer.read().unwrap();
        let check = guard.as_ref().unwrap().health_check(&vip_id()).unwrap().unwrap();
        assert_eq!((check.kind, check.port), (weir_agent::dataplane::CheckKind::Http, 80));
    }
    let set = |reals: &[(u8, bool)]| {
        let batch: Vec<(IpAddr, bool)> = reals.iter().map(|&(i, h)| (real(i), h)).collect();
        env.balancer.write().unwrap().as_mut().unwrap().set_reals_health(&vip_id(), &batch).unwrap();
    };
    set(&[(1, true), (2, true), (3, true)]);
    let status = env.status_until(&nodes, "all healthy", |s| health(s) == Some((3, 3, vec![], false))).await;
    let entry = serde_json::to_value(&status.virtual_services[0]).unwrap();
    assert!(entry.get("unhealthyReals").is_none() && entry.get("failOpen").is_none(), "{entry}");

    // One real down, then up again.
    set(&[(2, false)]);
    env.status_until(&nodes, "b unhealthy", |s| health(s) == Some((3, 2, all(&[2]), false))).await;
    set(&[(2, true)]);
    env.status_until(&nodes, "b healthy again", |s| health(s) == Some((3, 3, vec![], false))).await;

    // Health settled: no writes.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    env.server.clear_requests();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(env.server.requests().iter().all(|r| !r.is_write()), "{:?}", env.server.requests());
}
