//! What is committed next to the chart stays what the chart and the CRD generator produce:
//! the chart's copy of the CRDs, the CRDs it renders, and `deploy/weir.yaml` (regenerate it
//! with `scripts/render-deploy.sh`).
//!
//! The tests that render need helm (`scripts/helm.sh`); without it they print SKIPPED.

use std::process::Command;

use serde_json::Value;
use weir_install_tests::{documents, first_difference, helm_or_skip, normalize_numbers, of_kind, repo_root, template};

#[test]
fn the_charts_crds_are_the_committed_crds() {
    let root = repo_root();
    let committed = std::fs::read_to_string(root.join("crds/yaml/weir-crds.yaml")).expect("crds/yaml/weir-crds.yaml");
    let copy = std::fs::read_to_string(root.join("charts/weir/files/crds.yaml")).expect("charts/weir/files/crds.yaml");
    assert!(
        copy == committed,
        "charts/weir/files/crds.yaml differs from crds/yaml/weir-crds.yaml: \
         cp crds/yaml/weir-crds.yaml charts/weir/files/crds.yaml && scripts/render-deploy.sh"
    );
}

#[test]
fn the_chart_renders_the_generated_crds() {
    let Some(helm) = helm_or_skip("the_chart_renders_the_generated_crds") else { return };
    let values = repo_root().join("charts/weir/ci/default-values.yaml");
    let rendered = template(&helm, &["-f", values.to_str().expect("UTF-8")]).expect("renders");
    let docs = documents(&rendered);
    let rendered_crds = of_kind(&docs, "CustomResourceDefinition");
    let generated = weir_crds::crds();
    assert_eq!(rendered_crds.len(), generated.len(), "the chart renders every CRD once");
    for crd in generated {
        let name = crd.metadata.name.clone().expect("a name");
        let mut ours = (*rendered_crds.iter().find(|d| d["metadata"]["name"] == name.as_str()).expect(&name)).clone();
        // Uninstall must keep the CRDs (and so the users' objects).
        assert_eq!(ours["metadata"]["annotations"]["helm.sh/resource-policy"], "keep", "{name}");
        assert_eq!(ours["metadata"]["labels"]["app.kubernetes.io/part-of"], "weir", "{name}");
        let meta = ours["metadata"].as_object_mut().expect("metadata");
        meta.remove("labels");
        meta.remove("annotations");
        let want = serde_json::to_value(&crd).expect("serialize");
        if let Some(d) = first_difference(&normalize_numbers(&ours), &normalize_numbers(&want), "") {
            panic!("the chart's CRD {name} differs from weir_crds::crds(): {d}");
        }
    }
}

#[test]
fn deploy_weir_yaml_is_the_rendered_chart() {
    let Some(helm) = helm_or_skip("deploy_weir_yaml_is_the_rendered_chart") else { return };
    let root = repo_root();
    let out = Command::new(root.join("scripts/render-deploy.sh"))
        .arg("--stdout")
        .env("HELM", &helm)
        .output()
        .expect("run scripts/render-deploy.sh");
    assert!(out.status.success(), "render-deploy.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    let fresh = String::from_utf8(out.stdout).expect("UTF-8");
    let committed = std::fs::read_to_string(root.join("deploy/weir.yaml")).expect("deploy/weir.yaml");
    assert!(fresh == committed, "deploy/weir.yaml is stale: run scripts/render-deploy.sh");

    // The namespace comes first, and every namespaced object is in it.
    let docs = documents(&committed);
    assert_eq!(docs[0]["kind"], "Namespace");
    let ns = docs[0]["metadata"]["name"].as_str().expect("a name");
    for doc in &docs[1..] {
        if let Value::String(other) = &doc["metadata"]["namespace"] {
            assert_eq!(other, ns, "{} {} is in another namespace", doc["kind"], doc["metadata"]["name"]);
        }
    }
}

#[test]
fn the_kustomization_lists_the_manifests() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("deploy/kustomization.yaml")).expect("deploy/kustomization.yaml");
    let k: Value = serde_yaml::from_str(&text).expect("YAML");
    assert_eq!(k["kind"], "Kustomization");
    assert_eq!(k["namespace"], "weir-system");
    let resources: Vec<&str> = k["resources"].as_array().expect("resources").iter().filter_map(Value::as_str).collect();
    for r in &resources {
        assert!(root.join("deploy").join(r).is_file(), "deploy/kustomization.yaml lists {r}, which does not exist");
    }
    assert!(resources.contains(&"weir.yaml"));
}
