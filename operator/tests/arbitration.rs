//! The arbitration controller end to end against the API server double: the real
//! `weir_operator::run` with a client of the double.

mod support {
    pub mod harness;
}

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use support::harness::*;
use weir_apiserver_double::{ApiServer, Fault};
use weir_crds::v1alpha1::{BalancerNode, RealServer, VirtualService};

/// What these tests ask of the harness beyond its own.
trait Waits {
    async fn wait_condition(&self, plural: &str, name: &str, type_: &str, status: &str, reason: Option<&str>) -> Value;
    async fn wait_programmed(&self, name: &str, message: &str) -> Value;
}

impl Waits for Harness {
    /// Polls until `name`'s condition `type_` has `status` (and `reason`, if given); returns it.
    async fn wait_condition(&self, plural: &str, name: &str, type_: &str, status: &str, reason: Option<&str>) -> Value {
        loop {
            if let Some(obj) = self.server.get(GROUP_VERSION, plural, Some("default"), name) {
                let found = obj["status"]["conditions"].as_array().and_then(|cs| {
                    cs.iter().find(|c| {
                        c["type"] == type_ && c["status"] == status && reason.is_none_or(|r| c["reason"] == r)
                    })
                });
                if let Some(c) = found {
                    return c.clone();
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_programmed(&self, name: &str, message: &str) -> Value {
        loop {
            let obj = self.server.get(GROUP_VERSION, "virtualservices", Some("default"), name).unwrap();
            let hit = obj["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Programmed" && c["message"] == message));
            if hit {
                return obj;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn accepts_virtual_service_and_reals_then_stays_quiet() {
    timed(async {
        let h = start();
        h.create_vs("web", "10.0.0.1", 80).await;
        h.create_rs("r1", "web", "10.1.0.1").await;
        h.create_rs("r2", "web", "10.1.0.2").await;
        let c = h.wait_condition("virtualservices", "web", "Accepted", "True", Some("Accepted")).await;
        assert_eq!(c["observedGeneration"], 1);
        for rs in ["r1", "r2"] {
            let c = h.wait_condition("realservers", rs, "Accepted", "True", None).await;
            assert_eq!(c["observedGeneration"], 1);
        }
        loop {
            let vs = h.server.get(GROUP_VERSION, "virtualservices", Some("default"), "web").unwrap();
            if vs["status"]["reals"] == 2 {
                assert_eq!(vs["status"]["observedGeneration"], 1);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        h.assert_quiet().await;
    })
    .await
}

#[tokio::test]
async fn newer_conflicting_virtual_service_is_rejected_until_the_older_goes() {
    timed(async {
        let h = start();
        // The older one is "zeta": age decides before the name tie-break. The double's
        // creationTimestamp has one-second resolution, hence the pause.
        h.create_vs("zeta", "10.0.0.9", 443).await;
        tokio::time::sleep(Duration::from_millis(1100)).await;
        h.create_vs("alpha", "10.0.0.9", 443).await;
        h.wait_condition("virtualservices", "zeta", "Accepted", "True", None).await;
        let c = h.wait_condition("virtualservices", "alpha", "Accepted", "False", Some("AddressConflict")).await;
        assert!(c["message"].as_str().unwrap().contains("default/zeta"), "{c}");
        loop {
            let events = h.server.list("events.k8s.io/v1", "events", Some("default"));
            if events.iter().any(|e| e["reason"] == "AddressConflict" && e["regarding"]["name"] == "alpha") {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }

        let api = Api::<VirtualService>::namespaced(h.client.clone(), "default");
        api.delete("zeta", &DeleteParams::default()).await.unwrap();
        h.wait_condition("virtualservices", "alpha", "Accepted", "True", Some("Accepted")).await;
        h.assert_quiet().await;
    })
    .await
}

#[tokio::test]
async fn real_server_waits_for_its_virtual_service() {
    timed(async {
        let h = start();
        h.create_rs("r1", "later", "10.1.0.1").await;
        h.wait_condition("realservers", "r1", "Accepted", "False", Some("VirtualServiceNotFound")).await;
        h.create_vs("later", "10.0.0.2", 80).await;
        h.wait_condition("realservers", "r1", "Accepted", "True", None).await;
    })
    .await
}

#[tokio::test]
async fn ipv4_real_behind_ipv6_virtual_service_is_rejected() {
    timed(async {
        let h = start();
        h.create_vs("v6", "2001:db8::1", 80).await;
        h.create_rs("r4", "v6", "10.1.0.1").await;
        h.create_rs("r6", "v6", "2001:db8::10").await;
        h.wait_condition("realservers", "r4", "Accepted", "False", Some("AddressFamilyMismatch")).await;
        h.wait_condition("realservers", "r6", "Accepted", "True", None).await;
    })
    .await
}

#[tokio::test]
async fn programmed_counts_nodes_at_the_current_generation() {
    timed(async {
        let h = start();
        let node: Node = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"lb": "yes"}},
        }))
        .unwrap();
        Api::<Node>::all(h.client.clone()).create(&PostParams::default(), &node).await.unwrap();
        let nodes = Api::<BalancerNode>::all(h.client.clone());
        let bn: BalancerNode = serde_json::from_value(json!({
            "apiVersion": GROUP_VERSION, "kind": "BalancerNode", "metadata": {"name": "n1"}, "spec": {},
        }))
        .unwrap();
        nodes.create(&PostParams::default(), &bn).await.unwrap();
        h.create_vs("web", "10.0.0.1", 80).await;
        h.wait_programmed("web", "0/1 nodes").await;

        let report = |generation: i64| {
            json!({"status": {"virtualServices": [
                {"namespace": "default", "name": "web", "generation": generation, "reals": 0}
            ]}})
        };
        nodes.patch_status("n1", &PatchParams::default(), &Patch::Merge(report(1))).await.unwrap();
        let vs = h.wait_programmed("web", "1/1 nodes").await;
        assert_eq!(
            (vs["status"]["targetNodes"].clone(), vs["status"]["programmedNodes"].clone()),
            (json!(1), json!(1))
        );

        // A spec change moves the generation on; the node's report is now stale.
        let api = Api::<VirtualService>::namespaced(h.client.clone(), "default");
        api.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"port": 8080}}))).await.unwrap();
        let vs = h.wait_programmed("web", "0/1 nodes").await;
        assert_eq!(vs["metadata"]["generation"], 2);
        h.assert_quiet().await;
    })
    .await
}

#[tokio::test]
async fn failed_status_write_is_retried() {
    timed(async {
        let h = start();
        h.server.inject_fault(Fault {
            method: Some("PATCH".into()),
            path_contains: "/virtualservices/web/status".into(),
            code: 500,
            reason: "InternalError",
            times: 1,
        });
        h.create_vs("web", "10.0.0.1", 80).await;
        h.wait_condition("virtualservices", "web", "Accepted", "True", None).await;
        let patches =
            h.server.requests().into_iter().filter(|r| r.method == "PATCH" && r.path.ends_with("/web/status"));
        assert!(patches.count() >= 2, "the failed apply was retried");
    })
    .await
}

#[tokio::test]
async fn run_returns_on_shutdown() {
    timed(async {
        let server = ApiServer::start();
        for crd in weir_crds::crds() {
            server.register_crd(&crd);
        }
        let shutdown = tokio::time::sleep(Duration::from_millis(300));
        weir_operator::run(server.client(), weir_operator::Options::default(), shutdown).await.expect("clean shutdown");
    })
    .await
}

/// Stored before a CRD change narrowed the protocol enum: the double keeps it as written.
fn put_sctp_virtual_service(server: &ApiServer, name: &str) {
    server
        .put(json!({
            "apiVersion": GROUP_VERSION, "kind": "VirtualService",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"address": "10.0.0.7", "port": 80, "protocol": "SCTP"},
        }))
        .unwrap();
}

#[tokio::test]
async fn a_virtual_service_the_types_reject_is_marked_and_the_rest_goes_on() {
    timed(async {
        let h = start_with(|server| put_sctp_virtual_service(server, "sctp"));
        h.create_vs("web", "10.0.0.1", 80).await;
        h.wait_condition("virtualservices", "web", "Accepted", "True", None).await;
        let c = h.wait_condition("virtualservices", "sctp", "Accepted", "False", Some("InvalidSpec")).await;
        assert_eq!(c["message"], "cannot be read: spec.protocol: unknown variant `SCTP`, expected `TCP` or `UDP`");
        let c = h.wait_condition("virtualservices", "sctp", "Programmed", "False", Some("NotAccepted")).await;
        assert_eq!(c["message"], "not accepted (0/0 nodes)");
        let vs = h.server.get(GROUP_VERSION, "virtualservices", Some("default"), "sctp").unwrap();
        assert_eq!(vs["spec"]["protocol"], "SCTP", "the spec is left as it is");
        assert_eq!(vs["status"]["observedGeneration"], 1);
        let events = h.server.list("events.k8s.io/v1", "events", Some("default"));
        let event = events.iter().find(|e| e["regarding"]["name"] == "sctp").expect("an Event for sctp");
        assert_eq!((&event["reason"], &event["type"]), (&json!("InvalidSpec"), &json!("Warning")));
        assert_eq!(event["note"], c_message_of(&vs, "Accepted"));
        h.assert_quiet().await;
    })
    .await
}

fn c_message_of(obj: &Value, type_: &str) -> Value {
    obj["status"]["conditions"].as_array().unwrap().iter().find(|c| c["type"] == type_).unwrap()["message"].clone()
}

#[tokio::test]
async fn a_rejected_virtual_service_is_not_pending() {
    timed(async {
        let h = start();
        h.create_balancer_node("n1").await;
        h.create_vs("alpha", "10.0.0.1", 80).await;
        h.wait_condition("virtualservices", "alpha", "Accepted", "True", None).await;
        h.create_vs("beta", "10.0.0.1", 80).await;
        h.wait_condition("virtualservices", "beta", "Accepted", "False", Some("AddressConflict")).await;
        let c = h.wait_condition("virtualservices", "beta", "Programmed", "False", None).await;
        assert_eq!((&c["reason"], &c["message"]), (&json!("NotAccepted"), &json!("not accepted (0/1 nodes)")));
        let c = h.wait_condition("virtualservices", "alpha", "Programmed", "False", None).await;
        assert_eq!((&c["reason"], &c["message"]), (&json!("Pending"), &json!("0/1 nodes")));
    })
    .await
}

#[tokio::test]
async fn programmed_follows_weight_changes() {
    timed(async {
        let h = start();
        h.create_balancer_node("n1").await;
        let nodes = Api::<BalancerNode>::all(h.client.clone());
        h.create_vs("web", "10.0.0.1", 80).await;
        h.create_rs("r1", "web", "10.1.0.1").await;
        h.wait_condition("realservers", "r1", "Accepted", "True", None).await;

        let digest = |weight| {
            weir_crds::status::reals_digest(&[weir_crds::validation::RealPlan {
                owner: weir_crds::validation::ObjectKey::new("default", "r1"),
                address: "10.1.0.1".parse().unwrap(),
                weight,
                flags: 0,
            }])
        };
        let report = |weight| {
            json!({"status": {"virtualServices": [
                {"namespace": "default", "name": "web", "generation": 1, "reals": 1, "realsDigest": digest(weight)}
            ]}})
        };
        nodes.patch_status("n1", &PatchParams::default(), &Patch::Merge(report(1))).await.unwrap();
        h.wait_programmed("web", "1/1 nodes").await;

        // A drain: the VirtualService's generation stays 1, but the node has not applied it.
        let rss = Api::<RealServer>::namespaced(h.client.clone(), "default");
        rss.patch("r1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"weight": 0}}))).await.unwrap();
        let vs = h.wait_programmed("web", "0/1 nodes").await;
        assert_eq!(vs["metadata"]["generation"], 1);
        let c = h.wait_condition("virtualservices", "web", "Programmed", "False", None).await;
        assert_eq!(c["reason"], "Pending");
        // Once the node reports the new weight, it counts again.
        nodes.patch_status("n1", &PatchParams::default(), &Patch::Merge(report(0))).await.unwrap();
        h.wait_programmed("web", "1/1 nodes").await;
        h.assert_quiet().await;
    })
    .await
}
