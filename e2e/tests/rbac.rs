//! The install's RBAC, derived from what the binaries do: the real operator
//! (leader election on, managing the agent DaemonSet from the agent
//! configuration the install ships) and the real cluster-mode agent run a
//! scenario against the API server double, each with its own identity (the
//! ServiceAccount user the install binds). Every API call each one made must be
//! allowed by the roles `deploy/weir.yaml` binds to it, and every rule of
//! those roles must have been needed by some call: nothing missing, nothing
//! more. (`deploy/weir.yaml` is rendered from `charts/weir`; a test keeps them
//! in sync.)
//!
//! Needs root (the agent's BPF datapath); without it: `SKIPPED (needs root)`.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{json, Value};
use weir_agent::server::serve_with_client;
use weir_apiserver_double::{ApiServer, RequestRecord};
use weir_crds::v1alpha1::{BalancerNode, RealServer, VirtualService};

mod common {
    pub mod control_plane;
}
use common::control_plane::{agent_flags, apply, free_port, testing_config, until, MANIFEST};

const NAMESPACE: &str = "weir-system";
const OPERATOR: &str = "system:serviceaccount:weir-system:weir-operator";
const AGENT: &str = "system:serviceaccount:weir-system:weir-agent";
const NODE: &str = "node-a";
const INSTALL: &str = include_str!("../../deploy/weir.yaml");

/// One permission a request needs: (verb, API group, resource[/subresource], namespace).
type Need = (String, String, String, Option<String>);

/// The permissions a request needs, as the apiserver's authorizer sees it;
/// discovery (`/api`, `/apis/...` without a resource) needs none.
fn needs(r: &RequestRecord) -> Vec<Need> {
    let parts: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let rest = match parts.as_slice() {
        ["api", "v1", rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return Vec::new(),
    };
    let (group, rest) = rest;
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some(ns.to_string()), rest),
        _ => (None, rest),
    };
    let (resource, name) = match rest {
        [] => return Vec::new(),
        [resource] => (resource.to_string(), None),
        [resource, name] => (resource.to_string(), Some(*name)),
        [resource, name, sub] => (format!("{resource}/{sub}"), Some(*name)),
        _ => panic!("unexpected path {}", r.path),
    };
    let watch = r.query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verbs: &[&str] = match (r.method.as_str(), name) {
        ("GET", None) if watch => &["watch"],
        ("GET", None) => &["list"],
        ("GET", Some(_)) => &["get"],
        ("POST", _) => &["create"],
        ("PUT", _) => &["update"],
        // A server-side apply of an object creates it when it does not exist,
        // which the apiserver authorizes as create as well.
        ("PATCH", _) if r.content_type.starts_with("application/apply-patch") && !resource.contains('/') => {
            &["patch", "create"]
        }
        ("PATCH", _) => &["patch"],
        ("DELETE", Some(_)) => &["delete"],
        ("DELETE", None) => &["deletecollection"],
        _ => panic!("unexpected method {}", r.method),
    };
    verbs.iter().map(|v| (v.to_string(), group.to_owned(), resource.clone(), namespace.clone())).collect()
}

/// A rule of a role, where it applies (None: every namespace).
#[derive(Debug, Clone)]
struct Grant {
    role: String,
    namespace: Option<String>,
    groups: Vec<String>,
    resources: Vec<String>,
    verbs: Vec<String>,
}

impl Grant {
    fn allows(&self, (verb, group, resource, namespace): &Need) -> bool {
        let scope_ok = match (&self.namespace, namespace) {
            (None, _) => true,
            (Some(granted), Some(ns)) => granted == ns,
            (Some(_), None) => false,
        };
        scope_ok && self.groups.contains(group) && self.resources.contains(resource) && self.verbs.contains(verb)
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect()).unwrap_or_default()
}

/// The grants the install gives to `user` (a ServiceAccount user name).
fn grants(install: &[Value], user: &str) -> Vec<Grant> {
    let find = |kind: &str, name: &str, ns: Option<&str>| {
        install
            .iter()
            .find(|o| {
                o["kind"] == kind
                    && o["metadata"]["name"] == name
                    && ns.is_none_or(|ns| o["metadata"]["namespace"].as_str() == Some(ns))
            })
            .unwrap_or_else(|| panic!("{kind} {name} is bound but not in the install"))
            .clone()
    };
    let mut out = Vec::new();
    for binding in install.iter().filter(|o| o["kind"] == "ClusterRoleBinding" || o["kind"] == "RoleBinding") {
        let bound = binding["subjects"].as_array().into_iter().flatten().any(|s| {
            s["kind"] == "ServiceAccount"
                && format!(
                    "system:serviceaccount:{}:{}",
                    s["namespace"].as_str().unwrap_or(NAMESPACE),
                    s["name"].as_str().unwrap()
                ) == user
        });
        if !bound {
            continue;
        }
        let binding_ns = binding["metadata"]["namespace"].as_str();
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap();
        let role_name = binding["roleRef"]["name"].as_str().unwrap();
        let role = find(role_kind, role_name, if role_kind == "Role" { binding_ns } else { None });
        // A RoleBinding grants in its namespace only, whatever the role's kind.
        let namespace = (binding["kind"] == "RoleBinding").then(|| binding_ns.unwrap_or(NAMESPACE).to_owned());
        for rule in role["rules"].as_array().into_iter().flatten() {
            assert!(rule.get("resourceNames").is_none(), "{role_name}: resourceNames are not modelled here");
            assert!(!strings(&rule["verbs"]).contains(&"*".to_owned()), "{role_name}: no wildcard verbs");
            out.push(Grant {
                role: format!("{role_kind}/{role_name}"),
                namespace: namespace.clone(),
                groups: strings(&rule["apiGroups"]),
                resources: strings(&rule["resources"]),
                verbs: strings(&rule["verbs"]),
            });
        }
    }
    out
}

fn install() -> Vec<Value> {
    INSTALL.split("\n---").filter_map(|doc| serde_yaml::from_str::<Value>(doc).ok()).filter(|v| v.is_object()).collect()
}

/// The agent configuration the install gives the operator (its ConfigMap).
fn agent_config(install: &[Value]) -> String {
    let cm = install
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["data"].as_object().is_some_and(|d| d.contains_key("agent.yaml")))
        .expect("the install has a ConfigMap with agent.yaml");
    cm["data"]["agent.yaml"].as_str().unwrap().to_owned()
}

async fn programmed(vss: &Api<VirtualService>, name: &str) -> bool {
    vss.get_opt(name).await.unwrap().and_then(|v| v.status).is_some_and(|s| {
        s.conditions.iter().any(|c| c.type_ == "Programmed" && c.status == "True" && c.message == "1/1 nodes")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_allows_exactly_what_the_binaries_do() {
    if weir_e2e::skip_unless_root("rbac_allows_exactly_what_the_binaries_do") {
        return;
    }
    let install = install();
    let server = ApiServer::start();
    for crd in weir_crds::crds() {
        server.register_crd(&crd);
    }
    let admin = server.client();
    let node: Node = serde_json::from_value(json!({"metadata": {"name": NODE}})).unwrap();
    Api::<Node>::all(admin.clone()).create(&PostParams::default(), &node).await.unwrap();

    let dir = std::env::temp_dir().join(format!("weir-rbac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let agent_yaml = dir.join("agent.yaml");
    std::fs::write(&agent_yaml, agent_config(&install)).unwrap();
    let lb_json = testing_config(&dir);

    // The operator as the install runs it: leader election, the DaemonSet from the ConfigMap.
    let options = weir_operator::Options {
        leader_election: Some(weir_operator::leader::LeaderElection {
            lease_name: "weir-operator".into(),
            lease_namespace: NAMESPACE.into(),
            identity: "weir-operator-0".into(),
            lease_duration_seconds: 3,
        }),
        agent_config: Some(agent_yaml.clone()),
        namespace: Some(NAMESPACE.into()),
        ..weir_operator::Options::default()
    };
    let (stop_operator, operator_stopped) = tokio::sync::oneshot::channel::<()>();
    let operator = tokio::spawn(weir_operator::run(server.client_as(OPERATOR), options, async move {
        let _ = operator_stopped.await;
    }));
    let flags = agent_flags(NODE, &lb_json, free_port(), &[]);
    let (stop_agent, agent_stopped) = tokio::sync::oneshot::channel::<()>();
    let agent = tokio::spawn(serve_with_client(flags, Some(server.client_as(AGENT)), async move {
        let _ = agent_stopped.await;
    }));

    // The scenario: objects applied, programmed, changed, conflicting, deleted.
    apply(&admin, MANIFEST).await;
    let vss: Api<VirtualService> = Api::namespaced(admin.clone(), "weir-e2e");
    until("web Programmed 1/1", || programmed(&vss, "web")).await;
    let mut copy = vss.get("web").await.unwrap();
    copy.metadata = kube::api::ObjectMeta { name: Some("web-copy".into()), ..Default::default() };
    copy.status = None;
    vss.create(&PostParams::default(), &copy).await.unwrap();
    let rss: Api<RealServer> = Api::namespaced(admin.clone(), "weir-e2e");
    rss.patch("web-a", &PatchParams::default(), &Patch::Merge(json!({"spec": {"weight": 0}}))).await.unwrap();

    // A rejection that repeats (a RealServer whose VirtualService comes and goes) is one
    // Event whose series the recorder patches.
    let mut orphan = rss.get("web-b").await.unwrap();
    orphan.metadata = kube::api::ObjectMeta { name: Some("orphan".into()), ..Default::default() };
    orphan.spec.virtual_service_name = "ghost".into();
    orphan.status = None;
    rss.create(&PostParams::default(), &orphan).await.unwrap();
    let accepted = |want: &'static str| {
        let rss = rss.clone();
        move || {
            let rss = rss.clone();
            async move {
                rss.get("orphan")
                    .await
                    .unwrap()
                    .status
                    .is_some_and(|s| s.conditions.iter().any(|c| c.type_ == "Accepted" && c.status == want))
            }
        }
    };
    until("orphan rejected", accepted("False")).await;
    let mut ghost = vss.get("web").await.unwrap();
    ghost.metadata = kube::api::ObjectMeta { name: Some("ghost".into()), ..Default::default() };
    ghost.spec.address = "10.100.0.3".into();
    ghost.status = None;
    vss.create(&PostParams::default(), &ghost).await.unwrap();
    until("orphan accepted", accepted("True")).await;
    vss.delete("ghost", &DeleteParams::default()).await.unwrap();
    until("orphan rejected again", accepted("False")).await;

    // The DaemonSet exists; an edit is repaired.
    let daemonsets: Api<DaemonSet> = Api::namespaced(admin.clone(), NAMESPACE);
    until("agent DaemonSet", || async { daemonsets.get_opt("weir-agent").await.unwrap().is_some() }).await;
    let edit: Patch<Value> = Patch::Json(
        serde_json::from_value(
            json!([{"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "edited"}]),
        )
        .unwrap(),
    );
    daemonsets.patch("weir-agent", &PatchParams::default(), &edit).await.unwrap();
    until("DaemonSet repaired", || async {
        let ds = daemonsets.get("weir-agent").await.unwrap();
        ds.spec.unwrap().template.spec.unwrap().containers[0].image.as_deref() != Some("edited")
    })
    .await;

    vss.delete("web-copy", &DeleteParams::default()).await.unwrap();
    vss.delete("web", &DeleteParams::default()).await.unwrap();
    let nodes: Api<BalancerNode> = Api::all(admin.clone());
    until("the agent reports nothing programmed", || async {
        nodes.get_opt(NODE).await.unwrap().and_then(|n| n.status).is_some_and(|s| s.virtual_services.is_empty())
    })
    .await;
    let _ = stop_agent.send(());
    agent.await.unwrap().unwrap();
    // A gone Node's BalancerNode is removed by the operator.
    Api::<Node>::all(admin.clone()).delete(NODE, &DeleteParams::default()).await.unwrap();
    until("BalancerNode removed", || async { nodes.get_opt(NODE).await.unwrap().is_none() }).await;
    let _ = stop_operator.send(());
    operator.await.unwrap().unwrap();
    let _ = std::fs::remove_dir_all(&dir);

    // Every call allowed; every rule needed.
    let requests = server.requests();
    let mut failures = Vec::new();
    for user in [OPERATOR, AGENT] {
        let grants = grants(&install, user);
        assert!(!grants.is_empty(), "the install binds no role to {user}");
        let mut used: BTreeMap<(usize, String, String, String), bool> = BTreeMap::new();
        for (i, g) in grants.iter().enumerate() {
            for group in &g.groups {
                for resource in &g.resources {
                    for verb in &g.verbs {
                        used.insert((i, group.clone(), resource.clone(), verb.clone()), false);
                    }
                }
            }
        }
        let mut denied = BTreeSet::new();
        for r in requests.iter().filter(|r| r.user.as_deref() == Some(user)) {
            for need in needs(r) {
                match grants.iter().position(|g| g.allows(&need)) {
                    Some(i) => {
                        used.insert((i, need.1.clone(), need.2.clone(), need.0.clone()), true);
                    }
                    None => {
                        denied.insert(format!(
                            "{} {}/{} in {:?} ({} {})",
                            need.0, need.1, need.2, need.3, r.method, r.path
                        ));
                    }
                }
            }
        }
        for d in denied {
            failures.push(format!("{user}: not allowed: {d}"));
        }
        for ((i, group, resource, verb), was_used) in used {
            if !was_used {
                failures.push(format!("{user}: {} grants {verb} on {group}/{resource}, never needed", grants[i].role));
            }
        }
    }
    assert!(failures.is_empty(), "RBAC does not match the binaries:\n{}", failures.join("\n"));
}
