//! The health rollup end to end against the API server double: the real
//! `weir_operator::run`, and BalancerNode statuses written as three agents would write
//! them while one real's server goes down and comes back.

mod support {
    pub mod harness;
}

use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use serde_json::{json, Value};
use support::harness::*;
use weir_crds::status::reals_digest;
use weir_crds::v1alpha1::BalancerNode;
use weir_crds::validation::{ObjectKey, RealPlan};

const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];
const REALS: [(&str, &str); 3] = [("r1", "10.1.0.1"), ("r2", "10.1.0.2"), ("r3", "10.1.0.3")];

/// The accepted reals as the agents program them (what their reals digest covers).
fn digest() -> String {
    let reals: Vec<RealPlan> = REALS
        .iter()
        .map(|(name, address)| RealPlan {
            owner: ObjectKey::new("default", *name),
            address: address.parse().unwrap(),
            weight: 1,
            flags: 0,
        })
        .collect();
    reals_digest(&reals)
}

/// What these tests ask of the harness beyond its own.
trait Health {
    async fn setup(&self);
    async fn report(&self, node: &str, unhealthy: &[&str]);
    fn object(&self, plural: &str, name: &str) -> Value;
    async fn wait(&self, plural: &str, name: &str, type_: &str, want: (&str, &str, &str)) -> Value;
    fn events(&self, name: &str) -> Vec<(String, String, String)>;
}

impl Health for Harness {
    /// Three Nodes with their BalancerNodes, a VirtualService with a TCP check and three reals.
    async fn setup(&self) {
        for name in NODES {
            self.create_balancer_node(name).await;
        }
        let spec = json!({"address": "10.0.0.1", "port": 80, "protocol": "TCP", "healthCheck": {"type": "tcp"}});
        self.create_vs_with("web", spec).await;
        for (name, address) in REALS {
            self.create_rs(name, "web", address).await;
        }
    }

    /// Node `node` reports web programmed with the `unhealthy` reals down.
    async fn report(&self, node: &str, unhealthy: &[&str]) {
        let healthy = REALS.len() - unhealthy.len();
        let entry = json!({
            "namespace": "default", "name": "web", "generation": 1, "reals": 3, "realsDigest": digest(),
            "healthyReals": healthy, "unhealthyReals": unhealthy, "failOpen": healthy == 0,
        });
        let patch = Patch::Merge(json!({"status": {"virtualServices": [entry]}}));
        Api::<BalancerNode>::all(self.client.clone())
            .patch_status(node, &PatchParams::default(), &patch)
            .await
            .unwrap();
    }

    fn object(&self, plural: &str, name: &str) -> Value {
        self.server.get(GROUP_VERSION, plural, Some("default"), name).unwrap_or_default()
    }

    /// Polls until `name`'s condition `type_` reads (status, reason, message); returns the object.
    async fn wait(&self, plural: &str, name: &str, type_: &str, want: (&str, &str, &str)) -> Value {
        loop {
            let obj = self.object(plural, name);
            let hit = obj["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| {
                    c["type"] == type_ && c["status"] == want.0 && c["reason"] == want.1 && c["message"] == want.2
                })
            });
            if hit {
                return obj;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Events about RealServer `name`, as (type, reason, note).
    fn events(&self, name: &str) -> Vec<(String, String, String)> {
        let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
        self.server
            .list("events.k8s.io/v1", "events", Some("default"))
            .iter()
            .filter(|e| e["regarding"]["name"] == name)
            .map(|e| (text(&e["type"]), text(&e["reason"]), text(&e["note"])))
            .collect()
    }
}

#[tokio::test]
async fn healthy_condition_and_rollup_follow_a_real_going_down_and_up() {
    tokio::time::timeout(LIMIT, async {
        let h = start();
        h.setup().await;
        // Before any node reported: Unknown, no healthy count.
        let rs = h
            .wait("realservers", "r2", "Healthy", ("Unknown", "NotReported", "no node has reported its health yet"))
            .await;
        assert_eq!(rs["status"]["conditions"].as_array().unwrap().len(), 2, "Accepted and Healthy");
        let vs = h
            .wait("virtualservices", "web", "FailOpen", ("Unknown", "NotReported", "no node has reported health yet"))
            .await;
        assert!(vs["status"].get("healthyReals").is_none(), "{vs}");

        // All three nodes: every real healthy.
        for node in NODES {
            h.report(node, &[]).await;
        }
        h.wait("realservers", "r2", "Healthy", ("True", "Healthy", "healthy on 3/3 nodes")).await;
        let vs = h
            .wait("virtualservices", "web", "FailOpen", ("False", "HealthyRealsAvailable", "fails open on 0/3 nodes"))
            .await;
        assert_eq!((&vs["status"]["reals"], &vs["status"]["healthyReals"]), (&json!(3), &json!(3)));
        h.wait("virtualservices", "web", "Programmed", ("True", "Programmed", "3/3 nodes")).await;

        // r2's server stops: node-a sees it first, then node-b, then node-c.
        h.report("node-a", &["10.1.0.2"]).await;
        h.wait("realservers", "r2", "Healthy", ("False", "Unhealthy", "unhealthy on 1/3 nodes: node-a")).await;
        h.report("node-b", &["10.1.0.2"]).await;
        h.wait("realservers", "r2", "Healthy", ("False", "Unhealthy", "unhealthy on 2/3 nodes: node-a, node-b")).await;
        h.report("node-c", &["10.1.0.2"]).await;
        h.wait(
            "realservers",
            "r2",
            "Healthy",
            ("False", "Unhealthy", "unhealthy on 3/3 nodes: node-a, node-b, node-c"),
        )
        .await;
        let vs = loop {
            let vs = h.object("virtualservices", "web");
            if vs["status"]["healthyReals"] == 2 {
                break vs;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(vs["status"]["reals"], 3);
        for other in ["r1", "r3"] {
            h.wait("realservers", other, "Healthy", ("True", "Healthy", "healthy on 3/3 nodes")).await;
        }

        // It comes back.
        for node in NODES {
            h.report(node, &[]).await;
        }
        h.wait("realservers", "r2", "Healthy", ("True", "Healthy", "healthy on 3/3 nodes")).await;
        loop {
            if h.object("virtualservices", "web")["status"]["healthyReals"] == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // One Event each way (the message change while unhealthy is no transition).
        let events = loop {
            let events = h.events("r2");
            if events.len() >= 2 {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(
            events,
            [
                ("Warning".into(), "Unhealthy".into(), "unhealthy on 1/3 nodes: node-a".into()),
                ("Normal".into(), "Healthy".into(), "healthy on 3/3 nodes".into()),
            ]
        );
        assert!(h.events("r1").is_empty(), "r1 never changed");
        h.assert_quiet().await;
    })
    .await
    .expect("test timed out")
}

#[tokio::test]
async fn every_real_down_fails_open_and_says_where() {
    tokio::time::timeout(LIMIT, async {
        let h = start();
        h.setup().await;
        h.report("node-a", &["10.1.0.1", "10.1.0.2", "10.1.0.3"]).await;
        h.report("node-b", &[]).await;
        let vs = h
            .wait(
                "virtualservices",
                "web",
                "FailOpen",
                (
                    "True",
                    "AllRealsUnhealthy",
                    "fails open on 1/2 nodes: node-a (every real unhealthy; all stay in the ring)",
                ),
            )
            .await;
        assert_eq!(vs["status"]["healthyReals"], 0, "none is healthy on every node that reports it");
        h.wait("realservers", "r1", "Healthy", ("False", "Unhealthy", "unhealthy on 1/2 nodes: node-a")).await;
        let events = loop {
            let events: Vec<Value> = h
                .server
                .list("events.k8s.io/v1", "events", Some("default"))
                .into_iter()
                .filter(|e| e["regarding"]["kind"] == "VirtualService")
                .collect();
            if !events.is_empty() {
                break events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!((&events[0]["type"], &events[0]["reason"]), (&json!("Warning"), &json!("AllRealsUnhealthy")));
    })
    .await
    .expect("test timed out")
}
