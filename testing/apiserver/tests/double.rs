//! kube-rs against the API server double.

use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{watcher, Controller};
use kube::{Api, CustomResource, CustomResourceExt, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;
use weir_apiserver_double::{ApiServer, ResourceKind};

const LIMIT: Duration = Duration::from_secs(20);

#[derive(CustomResource, Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq)]
#[kube(group = "test.weir.dev", version = "v1", kind = "Widget", namespaced, status = "WidgetStatus")]
struct WidgetSpec {
    size: i32,
}

#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema, PartialEq, Default)]
struct WidgetStatus {
    ready: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

fn server() -> ApiServer {
    let s = ApiServer::start();
    s.register_crd(&Widget::crd());
    s
}

#[tokio::test]
async fn register_crd_and_manual_kinds() {
    timed(async {
        let s = ApiServer::start();
        assert_eq!(
            ResourceKind::from_crd(&Widget::crd()),
            [ResourceKind::new("test.weir.dev", "v1", "widgets", "Widget", true, true)]
        );
        s.register(ResourceKind::new("test.weir.dev", "v1", "widgets", "Widget", true, true));
        let api: Api<Widget> = Api::namespaced(s.client(), "default");
        api.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
        s.register_crd(&Widget::crd());
        let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
            Api::all(s.client());
        assert!(crds.get("widgets.test.weir.dev").await.is_ok());
        assert_eq!(api.list(&ListParams::default()).await.unwrap().items.len(), 1);
    })
    .await
}
fn widget(name: &str, size: i32) -> Widget {
    let mut w = Widget::new(name, WidgetSpec { size });
    w.metadata.namespace = Some("default".into());
    w
}

fn cm(name: &str, labels: &[(&str, &str)]) -> ConfigMap {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()},
        "data": {"k": "v"}
    }))
    .unwrap()
}

fn api_code(e: kube::Error) -> (u16, String) {
    match e {
        kube::Error::Api(s) => (s.code, s.reason.clone()),
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn timed<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f).await.expect("test timed out");
}

#[tokio::test]
async fn configmap_crud_and_conflicts() {
    timed(async {
        let s = server();
        let api: Api<ConfigMap> = Api::namespaced(s.client(), "default");
        let created = api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
        assert!(created.uid().is_some());
        assert!(created.creation_timestamp().is_some());
        let rv1 = created.resource_version().unwrap();

        let err = api.create(&PostParams::default(), &cm("a", &[])).await.unwrap_err();
        assert_eq!(api_code(err), (409, "AlreadyExists".into()));

        let mut got = api.get("a").await.unwrap();
        got.data.as_mut().unwrap().insert("k".into(), "w".into());
        let replaced = api.replace("a", &PostParams::default(), &got).await.unwrap();
        assert!(replaced.resource_version().unwrap().parse::<u64>().unwrap() > rv1.parse().unwrap());

        // Stale resourceVersion.
        let err = api.replace("a", &PostParams::default(), &got).await.unwrap_err();
        assert_eq!(api_code(err), (409, "Conflict".into()));

        // generateName.
        let mut g = cm("", &[]);
        g.metadata.name = None;
        g.metadata.generate_name = Some("gen-".into());
        let g = api.create(&PostParams::default(), &g).await.unwrap();
        assert!(g.name_any().starts_with("gen-") && g.name_any().len() == 9);

        // Direct access for assertions.
        let raw = s.get("v1", "configmaps", Some("default"), "a").unwrap();
        assert_eq!(raw["data"]["k"], "w");

        // JSON patch.
        let p: json_patch::Patch =
            serde_json::from_value(json!([{"op": "replace", "path": "/data/k", "value": "x"}])).unwrap();
        let patched = api.patch("a", &PatchParams::default(), &Patch::<()>::Json(p)).await.unwrap();
        assert_eq!(patched.data.unwrap()["k"], "x");

        // dryRun=All: validated and returned, not stored.
        let rv_before = s.resource_version();
        let dry = PostParams { dry_run: true, ..PostParams::default() };
        let would = api.create(&dry, &cm("dry", &[])).await.unwrap();
        assert_eq!(would.name_any(), "dry");
        assert_eq!(api_code(api.get("dry").await.unwrap_err()).0, 404);
        api.delete("a", &DeleteParams { dry_run: true, ..DeleteParams::default() }).await.unwrap();
        assert!(api.get("a").await.is_ok());
        assert_eq!(s.resource_version(), rv_before);

        api.delete("a", &DeleteParams::default()).await.unwrap();
        let err = api.get("a").await.unwrap_err();
        assert_eq!(api_code(err), (404, "NotFound".into()));

        assert!(s.client().apiserver_version().await.unwrap().minor == "33");
    })
    .await
}

#[tokio::test]
async fn generation_semantics_with_status_subresource() {
    timed(async {
        let s = server();
        let api: Api<Widget> = Api::namespaced(s.client(), "default");
        let mut w = widget("w", 1);
        w.status = Some(WidgetStatus { ready: true, note: None });
        let w = api.create(&PostParams::default(), &w).await.unwrap();
        assert_eq!(w.metadata.generation, Some(1));
        assert_eq!(w.status, None, "create drops status when /status is a subresource");

        // Status write: no generation bump.
        let w = api
            .patch_status("w", &PatchParams::default(), &Patch::Merge(json!({"status": {"ready": true}})))
            .await
            .unwrap();
        assert_eq!(w.metadata.generation, Some(1));
        assert!(w.status.as_ref().unwrap().ready);

        // Metadata-only write: no bump.
        let w = api
            .patch("w", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
            .await
            .unwrap();
        assert_eq!(w.metadata.generation, Some(1));

        // No-op write: same resourceVersion.
        let again = api
            .patch("w", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})))
            .await
            .unwrap();
        assert_eq!(again.resource_version(), w.resource_version());

        // Spec change: bump; status in a main-resource write is ignored.
        let w = api
            .patch(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"size": 2}, "status": {"ready": false}})),
            )
            .await
            .unwrap();
        assert_eq!(w.metadata.generation, Some(2));
        assert!(w.status.as_ref().unwrap().ready);

        // Replace (PUT) of the main resource also keeps status.
        let mut w2 = w.clone();
        w2.spec.size = 3;
        w2.status = None;
        let w2 = api.replace("w", &PostParams::default(), &w2).await.unwrap();
        assert_eq!(w2.metadata.generation, Some(3));
        assert!(w2.status.is_some());
    })
    .await
}

#[tokio::test]
async fn status_via_ssa_and_merge_patch_leaves_spec_alone() {
    timed(async {
        let s = server();
        let api: Api<Widget> = Api::namespaced(s.client(), "default");
        api.create(&PostParams::default(), &widget("w", 7)).await.unwrap();

        let apply = json!({
            "apiVersion": "test.weir.dev/v1",
            "kind": "Widget",
            "metadata": {"name": "w"},
            "spec": {"size": 100},
            "status": {"ready": true, "note": "ssa"},
        });
        let w =
            api.patch_status("w", &PatchParams::apply("weir-operator").force(), &Patch::Apply(&apply)).await.unwrap();
        assert_eq!(w.spec.size, 7);
        assert_eq!(w.status.as_ref().unwrap().note.as_deref(), Some("ssa"));
        assert_eq!(w.metadata.generation, Some(1));
        let mf = w.metadata.managed_fields.as_ref().unwrap();
        assert!(mf
            .iter()
            .any(|m| m.manager.as_deref() == Some("weir-operator") && m.subresource.as_deref() == Some("status")));

        let w = api
            .patch_status(
                "w",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"size": 5}, "status": {"note": "merge"}})),
            )
            .await
            .unwrap();
        assert_eq!(w.spec.size, 7);
        assert_eq!(w.status.as_ref().unwrap().note.as_deref(), Some("merge"));
        assert!(w.status.as_ref().unwrap().ready);

        // SSA without fieldManager is refused; SSA creates absent objects.
        let err = api
            .patch(
                "other",
                &PatchParams::default(),
                &Patch::Apply(json!({
                "apiVersion": "test.weir.dev/v1", "kind": "Widget", "metadata": {"name": "other"},
                "spec": {"size": 1}})),
            )
            .await
            .unwrap_err();
        assert_eq!(api_code(err).0, 400);
        let created = api
            .patch(
                "other",
                &PatchParams::apply("me"),
                &Patch::Apply(json!({
                "apiVersion": "test.weir.dev/v1", "kind": "Widget", "metadata": {"name": "other"},
                "spec": {"size": 1}})),
            )
            .await
            .unwrap();
        assert_eq!(created.metadata.generation, Some(1));
        let updated = api
            .patch(
                "other",
                &PatchParams::apply("me"),
                &Patch::Apply(json!({
                "apiVersion": "test.weir.dev/v1", "kind": "Widget", "metadata": {"name": "other"},
                "spec": {"size": 2}})),
            )
            .await
            .unwrap();
        assert_eq!(updated.metadata.generation, Some(2));
        assert_eq!(updated.spec.size, 2);
    })
    .await
}

#[tokio::test]
async fn finalizers_delay_deletion() {
    timed(async {
        let s = server();
        let api: Api<Widget> = Api::namespaced(s.client(), "default");
        let mut w = widget("f", 1);
        w.metadata.finalizers = Some(vec!["lb.weir.dev/cleanup".into()]);
        api.create(&PostParams::default(), &w).await.unwrap();

        let mut watch = api.watch(&WatchParams::default(), "0").await.unwrap().boxed();
        assert!(matches!(watch.try_next().await.unwrap(), Some(WatchEvent::Added(_))));

        let res = api.delete("f", &DeleteParams::default()).await.unwrap();
        let kept = res.left().expect("object kept while finalizers remain");
        assert!(kept.metadata.deletion_timestamp.is_some());
        assert!(api.get("f").await.unwrap().metadata.deletion_timestamp.is_some());
        match watch.try_next().await.unwrap() {
            Some(WatchEvent::Modified(o)) => assert!(o.metadata.deletion_timestamp.is_some()),
            other => panic!("expected MODIFIED, got {other:?}"),
        }

        api.patch("f", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": null}})))
            .await
            .unwrap();
        match watch.try_next().await.unwrap() {
            Some(WatchEvent::Deleted(o)) => assert_eq!(o.name_any(), "f"),
            other => panic!("expected DELETED, got {other:?}"),
        }
        assert_eq!(api_code(api.get("f").await.unwrap_err()).0, 404);

        // Without finalizers: deleted at once.
        api.create(&PostParams::default(), &widget("g", 1)).await.unwrap();
        assert!(api.delete("g", &DeleteParams::default()).await.unwrap().is_right());
        assert!(s.get("test.weir.dev/v1", "widgets", Some("default"), "g").is_none());
    })
    .await
}

#[tokio::test]
async fn list_with_label_and_field_selectors() {
    timed(async {
        let s = server();
        let client = s.client();
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        api.create(&PostParams::default(), &cm("a", &[("app", "a"), ("tier", "x")])).await.unwrap();
        api.create(&PostParams::default(), &cm("b", &[("app", "b")])).await.unwrap();
        api.create(&PostParams::default(), &cm("c", &[])).await.unwrap();
        Api::<ConfigMap>::namespaced(client.clone(), "other")
            .create(&PostParams::default(), &cm("d", &[("app", "a")]))
            .await
            .unwrap();

        let names = |l: kube::core::ObjectList<ConfigMap>| l.items.iter().map(|o| o.name_any()).collect::<Vec<_>>();
        let sel = |q: &str| ListParams::default().labels(q);
        assert_eq!(names(api.list(&sel("app=a")).await.unwrap()), ["a"]);
        assert_eq!(names(api.list(&sel("app in (a,b)")).await.unwrap()), ["a", "b"]);
        assert_eq!(names(api.list(&sel("app notin (a)")).await.unwrap()), ["b", "c"]);
        assert_eq!(names(api.list(&sel("!app")).await.unwrap()), ["c"]);
        assert_eq!(names(api.list(&sel("app,tier=x")).await.unwrap()), ["a"]);
        assert_eq!(names(api.list(&sel("app!=a")).await.unwrap()), ["b", "c"]);
        let by_name = ListParams::default().fields("metadata.name=b");
        assert_eq!(names(api.list(&by_name).await.unwrap()), ["b"]);

        let all: Api<ConfigMap> = Api::all(client);
        let l = all.list(&sel("app=a")).await.unwrap();
        assert_eq!(names(l.clone()), ["a", "d"]);
        assert_eq!(l.metadata.resource_version, Some(s.resource_version().to_string()));
        let ns = ListParams::default().fields("metadata.namespace=other");
        assert_eq!(names(all.list(&ns).await.unwrap()), ["d"]);
        let bad = ListParams::default().fields("spec.x=1");
        assert_eq!(api_code(all.list(&bad).await.unwrap_err()).0, 400);
    })
    .await
}

#[tokio::test]
async fn watcher_sees_events_in_order_and_relists_after_410() {
    timed(async {
        let s = server();
        s.set_bookmark_interval(Duration::from_millis(200));
        let api: Api<ConfigMap> = Api::namespaced(s.client(), "default");
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        // Initial (empty) list.
        loop {
            if let watcher::Event::InitDone = events.try_next().await.unwrap().unwrap() {
                break;
            }
        }
        api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
        api.patch("a", &PatchParams::default(), &Patch::Merge(json!({"data": {"k": "2"}}))).await.unwrap();
        api.delete("a", &DeleteParams::default()).await.unwrap();
        let mut seen = Vec::new();
        while seen.len() < 3 {
            match events.try_next().await.unwrap().unwrap() {
                watcher::Event::Apply(o) => seen.push(format!("apply:{}", o.data.unwrap()["k"])),
                watcher::Event::Delete(o) => seen.push(format!("delete:{}", o.name_any())),
                _ => {}
            }
        }
        assert_eq!(seen, ["apply:v", "apply:2", "delete:a"]);

        // Compact the history: the open watch gets 410 and the watcher relists.
        api.create(&PostParams::default(), &cm("b", &[])).await.unwrap();
        loop {
            if let watcher::Event::Apply(o) = events.try_next().await.unwrap().unwrap() {
                assert_eq!(o.name_any(), "b");
                break;
            }
        }
        s.compact();
        let mut relisted = Vec::new();
        loop {
            match events.try_next().await {
                Ok(Some(watcher::Event::InitApply(o))) => relisted.push(o.name_any()),
                Ok(Some(watcher::Event::InitDone)) => break,
                Ok(_) => {}
                Err(e) => assert!(format!("{e:?}").contains("410"), "{e:?}"),
            }
        }
        assert_eq!(relisted, ["b"]);
        // And it keeps watching after the relist.
        api.create(&PostParams::default(), &cm("c", &[])).await.unwrap();
        loop {
            if let Ok(Some(watcher::Event::Apply(o))) = events.try_next().await {
                assert_eq!(o.name_any(), "c");
                break;
            }
        }
    })
    .await
}

#[tokio::test]
async fn watch_from_compacted_resource_version_is_410() {
    timed(async {
        let s = server();
        s.set_history_limit(2);
        let api: Api<ConfigMap> = Api::namespaced(s.client(), "default");
        let first = api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
        for n in ["b", "c", "d"] {
            api.create(&PostParams::default(), &cm(n, &[])).await.unwrap();
        }
        let mut w = api.watch(&WatchParams::default(), &first.resource_version().unwrap()).await.unwrap().boxed();
        match w.try_next().await.unwrap() {
            Some(WatchEvent::Error(e)) => assert_eq!(e.code, 410),
            other => panic!("expected 410, got {other:?}"),
        }
        // A recent resourceVersion replays what followed it.
        let rv = s.resource_version() - 1;
        let mut w = api.watch(&WatchParams::default(), &rv.to_string()).await.unwrap().boxed();
        match w.try_next().await.unwrap() {
            Some(WatchEvent::Added(o)) => assert_eq!(o.name_any(), "d"),
            other => panic!("expected ADDED d, got {other:?}"),
        }
    })
    .await
}

#[tokio::test]
async fn controller_reconciles_on_create_and_change() {
    timed(async {
        let s = server();
        let api: Api<Widget> = Api::namespaced(s.client(), "default");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(String, i64)>();
        let ctx = Arc::new(tx);
        let ctrl = Controller::new(api.clone(), watcher::Config::default())
            .run(
                |w: Arc<Widget>, ctx: Arc<tokio::sync::mpsc::UnboundedSender<(String, i64)>>| async move {
                    let _ = ctx.send((w.name_any(), w.meta().generation.unwrap_or(0)));
                    Ok::<_, kube::Error>(Action::await_change())
                },
                |_, _, _| Action::requeue(Duration::from_secs(1)),
                ctx,
            )
            .for_each(|_| async {});
        let handle = tokio::spawn(ctrl);

        api.create(&PostParams::default(), &widget("w", 1)).await.unwrap();
        assert_eq!(rx.recv().await.unwrap(), ("w".to_string(), 1));
        api.patch("w", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": 2}}))).await.unwrap();
        loop {
            let (name, generation) = rx.recv().await.unwrap();
            assert_eq!(name, "w");
            if generation == 2 {
                break;
            }
        }
        handle.abort();
    })
    .await
}

#[tokio::test]
async fn lease_create_update_and_lease_manager() {
    timed(async {
        let s = server();
        let client = s.client();
        let api: Api<Lease> = Api::namespaced(client.clone(), "default");
        let lease: Lease = serde_json::from_value(json!({
            "metadata": {"name": "plain"},
            "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
        }))
        .unwrap();
        let mut l = api.create(&PostParams::default(), &lease).await.unwrap();
        l.spec.as_mut().unwrap().holder_identity = Some("b".into());
        let l = api.replace("plain", &PostParams::default(), &l).await.unwrap();
        assert_eq!(l.spec.unwrap().holder_identity.as_deref(), Some("b"));

        let m = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "weir-operator")
            .with_identity("replica-0")
            .with_duration(5)
            .with_grace(2)
            .build()
            .await
            .unwrap();
        assert!(m.changed().await.unwrap(), "sole candidate becomes leader");
        let held = api.get("weir-operator").await.unwrap();
        assert_eq!(held.spec.unwrap().holder_identity.as_deref(), Some("replica-0"));

        // A second candidate does not become leader while the lease is held...
        let m1 = kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "weir-operator")
            .with_identity("replica-1")
            .with_duration(5)
            .with_grace(2)
            .build()
            .await
            .unwrap();
        assert!(tokio::time::timeout(Duration::from_secs(2), m1.changed()).await.is_err());
        // ...and takes over once it is released.
        m.release().await.unwrap();
        assert!(m1.changed().await.unwrap());
        let held = api.get("weir-operator").await.unwrap();
        assert_eq!(held.spec.unwrap().holder_identity.as_deref(), Some("replica-1"));
    })
    .await
}

#[tokio::test]
async fn raw_put_and_cluster_scoped_nodes_with_selectors() {
    timed(async {
        let s = server();
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(s.client());
        s.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"lb": "yes"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "10.0.0.1"}]}}))
            .unwrap();
        let n = nodes.get("n1").await.unwrap();
        assert_eq!(n.labels()["lb"], "yes");
        assert!(n.status.is_some());
        let l = nodes.list(&ListParams::default().labels("lb=yes")).await.unwrap();
        assert_eq!(l.items.len(), 1);
        assert_eq!(s.list("v1", "nodes", None).len(), 1);
    })
    .await
}

#[tokio::test]
async fn server_side_apply_field_ownership() {
    timed(async {
        let s = server();
        let api: Api<ConfigMap> = Api::namespaced(s.client(), "default");
        let cfg = |data: serde_json::Value| {
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "o"}, "data": data})
        };
        api.patch("o", &PatchParams::apply("a"), &Patch::Apply(cfg(json!({"x": "1", "y": "1"}))))
            .await
            .unwrap();
        // Another manager changing a field owned by "a" conflicts...
        let err = api
            .patch("o", &PatchParams::apply("b"), &Patch::Apply(cfg(json!({"x": "2"}))))
            .await
            .unwrap_err();
        assert_eq!(api_code(err), (409, "Conflict".into()));
        // ...applying the same value shares ownership, a new field is fine.
        api.patch("o", &PatchParams::apply("b"), &Patch::Apply(cfg(json!({"x": "1", "z": "1"}))))
            .await
            .unwrap();
        // force takes the field over.
        let o = api
            .patch("o", &PatchParams::apply("b").force(), &Patch::Apply(cfg(json!({"x": "3", "z": "1"}))))
            .await
            .unwrap();
        assert_eq!(o.data.as_ref().unwrap()["x"], "3");
        // A field "a" stops applying (and nobody else owns) is removed; "x" is now b's.
        let o = api
            .patch("o", &PatchParams::apply("a"), &Patch::Apply(cfg(json!({}))))
            .await
            .unwrap();
        let data = o.data.unwrap();
        assert!(!data.contains_key("y"), "{data:?}");
        assert_eq!(data["x"], "3");
        assert_eq!(data["z"], "1");
        // Update operations own what they change: b's apply now conflicts on z.
        api.patch("o", &PatchParams::default(), &Patch::Merge(json!({"data": {"z": "9"}})))
            .await
            .unwrap();
        let err = api
            .patch("o", &PatchParams::apply("b"), &Patch::Apply(cfg(json!({"x": "3", "z": "1"}))))
            .await
            .unwrap_err();
        assert_eq!(api_code(err).0, 409);
        // Re-applying the same configuration is a no-op (no new resourceVersion).
        let before = api.get("o").await.unwrap();
        let again = api
            .patch("o", &PatchParams::apply("b"), &Patch::Apply(cfg(json!({"x": "3"}))))
            .await
            .unwrap();
        let again2 = api
            .patch("o", &PatchParams::apply("b"), &Patch::Apply(cfg(json!({"x": "3"}))))
            .await
            .unwrap();
        assert_eq!(again.resource_version(), again2.resource_version());
        let rv = |o: &ConfigMap| o.resource_version().unwrap().parse::<u64>().unwrap();
        assert!(rv(&before) <= rv(&again));
    })
    .await
}

#[tokio::test]
async fn pagination_metadata_only_and_delete_collection() {
    timed(async {
        let s = server();
        let api: Api<ConfigMap> = Api::namespaced(s.client(), "default");
        for n in ["a", "b", "c", "d", "e"] {
            api.create(&PostParams::default(), &cm(n, &[("app", "x")])).await.unwrap();
        }
        // Pages of two, all with the first page's resourceVersion.
        let mut names = Vec::new();
        let mut lp = ListParams::default().limit(2);
        let mut rvs = Vec::new();
        loop {
            let page = api.list(&lp).await.unwrap();
            names.extend(page.items.iter().map(|o| o.name_any()));
            rvs.push(page.metadata.resource_version.clone());
            match page.metadata.continue_ {
                Some(c) if !c.is_empty() => lp = ListParams::default().limit(2).continue_token(&c),
                _ => break,
            }
        }
        assert_eq!(names, ["a", "b", "c", "d", "e"]);
        assert_eq!(rvs.len(), 3);
        assert!(rvs.iter().all(|rv| *rv == rvs[0]));

        // Metadata-only requests.
        let meta = api.get_metadata("a").await.unwrap();
        assert_eq!(meta.name_any(), "a");
        let metas = api.list_metadata(&ListParams::default()).await.unwrap();
        assert_eq!(metas.items.len(), 5);
        let metas_api: Api<kube::core::PartialObjectMeta<ConfigMap>> = Api::namespaced(s.client(), "default");
        let mut mw = watcher(metas_api, watcher::Config::default()).boxed();
        let mut seen = 0;
        loop {
            match mw.try_next().await.unwrap().unwrap() {
                watcher::Event::InitApply(_) => seen += 1,
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
        assert_eq!(seen, 5);

        // Delete preconditions.
        let stale = DeleteParams {
            preconditions: Some(kube::api::Preconditions { resource_version: Some("1".into()), uid: None }),
            ..DeleteParams::default()
        };
        assert_eq!(api_code(api.delete("a", &stale).await.unwrap_err()), (409, "Conflict".into()));

        // No new finalizers on an object being deleted.
        let mut f = cm("f", &[]);
        f.metadata.finalizers = Some(vec!["x/y".into()]);
        api.create(&PostParams::default(), &f).await.unwrap();
        api.delete("f", &DeleteParams::default()).await.unwrap();
        let err = api
            .patch("f", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"finalizers": ["x/y", "x/z"]}})))
            .await
            .unwrap_err();
        assert_eq!(api_code(err).0, 422);

        // deleteCollection with a selector.
        api.delete_collection(&DeleteParams::default(), &ListParams::default().labels("app=x")).await.unwrap();
        let left: Vec<String> =
            api.list(&ListParams::default()).await.unwrap().items.iter().map(|o| o.name_any()).collect();
        assert_eq!(left, ["f"]);
    })
    .await
}

#[tokio::test]
async fn events_recorder_request_log_and_faults() {
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    timed(async {
        let s = server();
        let client = s.client();
        let api: Api<Widget> = Api::namespaced(client.clone(), "default");
        let w = api.create(&PostParams::default(), &widget("w", 1)).await.unwrap();

        // kube-runtime's event recorder (events.k8s.io/v1), including its series patch.
        let recorder = Recorder::new(client.clone(), Reporter::from("weir-operator"));
        let ev = Event {
            type_: EventType::Warning,
            reason: "Conflict".into(),
            note: Some("address already claimed".into()),
            action: "Accept".into(),
            secondary: None,
        };
        recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
        recorder.publish(&ev, &w.object_ref(&())).await.unwrap();
        let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), "default");
        let list = events.list(&ListParams::default()).await.unwrap();
        assert_eq!(list.items.len(), 1);
        assert_eq!(list.items[0].reason.as_deref(), Some("Conflict"));
        assert_eq!(list.items[0].series.as_ref().map(|s| s.count), Some(2));

        // Request log.
        let writes: Vec<_> = s.requests().into_iter().filter(|r| r.is_write()).collect();
        assert_eq!(writes.len(), 3, "{writes:?}");
        assert!(writes[2].method == "PATCH" && writes[2].content_type == "application/merge-patch+json");
        s.clear_requests();
        assert!(s.requests().is_empty());

        // Fault injection.
        s.inject_fault(weir_apiserver_double::Fault {
            method: Some("GET".into()),
            path_contains: "/widgets/w".into(),
            code: 500,
            reason: "InternalError",
            times: 1,
        });
        assert_eq!(api_code(api.get("w").await.unwrap_err()), (500, "InternalError".into()));
        assert!(api.get("w").await.is_ok());

        // Direct delete helper.
        assert!(s.delete("test.weir.dev/v1", "widgets", Some("default"), "w"));
        assert!(!s.delete("test.weir.dev/v1", "widgets", Some("default"), "w"));

        // Discovery.
        let discovery = kube::Discovery::new(client.clone()).run().await;
        if let Ok(d) = discovery {
            assert!(d.has_group("test.weir.dev"));
        } else {
            panic!("discovery failed: {discovery:?}", discovery = discovery.err());
        }
    })
    .await
}

#[tokio::test]
async fn watcher_resumes_without_relist_after_disconnect() {
    timed(async {
        let s = server();
        let api: Api<ConfigMap> = Api::namespaced(s.client(), "default");
        api.create(&PostParams::default(), &cm("a", &[])).await.unwrap();
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        loop {
            if let watcher::Event::InitDone = events.try_next().await.unwrap().unwrap() {
                break;
            }
        }
        api.create(&PostParams::default(), &cm("b", &[])).await.unwrap();
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::Apply(o) => assert_eq!(o.name_any(), "b"),
            other => panic!("expected Apply(b), got {other:?}"),
        }
        s.disconnect_watches();
        api.create(&PostParams::default(), &cm("c", &[])).await.unwrap();
        match events.try_next().await.unwrap().unwrap() {
            watcher::Event::Apply(o) => assert_eq!(o.name_any(), "c"),
            other => panic!("expected Apply(c) without a relist, got {other:?}"),
        }
        let watches = s.requests().iter().filter(|r| r.method == "GET" && r.query.contains("watch=true")).count();
        assert!(watches >= 2, "the watcher re-watched: {:?}", s.requests());
    })
    .await
}

#[tokio::test]
async fn daemonset_defaults_and_idempotent_apply() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    timed(async {
        let s = server();
        let api: Api<DaemonSet> = Api::namespaced(s.client(), "weir-system");
        let desired = json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {"name": "weir-agent", "namespace": "weir-system", "labels": {"app": "weir-agent"}},
            "spec": {
                "selector": {"matchLabels": {"app": "weir-agent"}},
                "template": {
                    "metadata": {"labels": {"app": "weir-agent"}},
                    "spec": {"containers": [{"name": "agent", "image": "ghcr.io/weir-lb/weir-agent:0.1.0"}]}
                }
            }
        });
        let pp = PatchParams::apply("weir-operator").force();
        let ds = api.patch("weir-agent", &pp, &Patch::Apply(&desired)).await.unwrap();
        let spec = ds.spec.as_ref().unwrap();
        assert_eq!(spec.revision_history_limit, Some(10));
        assert_eq!(spec.update_strategy.as_ref().unwrap().type_.as_deref(), Some("RollingUpdate"));
        let pod = spec.template.spec.as_ref().unwrap();
        assert_eq!(pod.restart_policy.as_deref(), Some("Always"));
        assert_eq!(pod.containers[0].image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(ds.metadata.generation, Some(1));

        // Re-applying the same desired state changes nothing.
        let again = api.patch("weir-agent", &pp, &Patch::Apply(&desired)).await.unwrap();
        assert_eq!(again.resource_version(), ds.resource_version());

        // Drift (someone edits the image) is repaired by the next apply.
        api.patch(
            "weir-agent",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(json!([
                    {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "evil:latest"}
                ]))
                .unwrap(),
            ),
        )
        .await
        .unwrap();
        let repaired = api.patch("weir-agent", &pp, &Patch::Apply(&desired)).await.unwrap();
        let pod = repaired.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.containers[0].image.as_deref(), Some("ghcr.io/weir-lb/weir-agent:0.1.0"));
        assert_eq!(repaired.metadata.generation, Some(3));
    })
    .await
}

#[tokio::test]
async fn scale_smoke_ten_thousand_objects() {
    timed(async {
        let s = server();
        let start = std::time::Instant::now();
        for i in 0..10_000 {
            s.put(json!({"apiVersion": "test.weir.dev/v1", "kind": "Widget",
                "metadata": {"name": format!("w{i:05}"), "namespace": format!("ns{}", i % 10)},
                "spec": {"size": i}}))
                .unwrap();
        }
        let api: Api<Widget> = Api::all(s.client());
        let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
        let mut n = 0;
        loop {
            match events.try_next().await.unwrap().unwrap() {
                watcher::Event::InitApply(_) => n += 1,
                watcher::Event::InitDone => break,
                _ => {}
            }
        }
        assert_eq!(n, 10_000);
        let ns: Api<Widget> = Api::namespaced(s.client(), "ns3");
        ns.patch("w00003", &PatchParams::default(), &Patch::Merge(json!({"spec": {"size": -1}}))).await.unwrap();
        loop {
            if let watcher::Event::Apply(w) = events.try_next().await.unwrap().unwrap() {
                assert_eq!(w.spec.size, -1);
                break;
            }
        }
        eprintln!("10k objects stored, listed, watched in {:?}", start.elapsed());
    })
    .await
}
