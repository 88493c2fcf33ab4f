//! Tests of the generated CRDs: names, printer columns, CEL rules and enums are what the
//! types intend, and the committed YAML has not drifted from the types.

use kube::CustomResourceExt;
use serde_json::Value;

use crate::v1alpha1::{BalancerNode, RealServer, VirtualService};

fn json<T: CustomResourceExt>() -> Value {
    serde_json::to_value(T::crd()).unwrap()
}

fn columns(crd: &Value) -> Vec<String> {
    crd["spec"]["versions"][0]["additionalPrinterColumns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

fn spec_props(crd: &Value) -> &Value {
    &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
}

fn rules(prop: &Value) -> Vec<&str> {
    prop["x-kubernetes-validations"].as_array().unwrap().iter().map(|r| r["rule"].as_str().unwrap()).collect()
}

fn strings(v: &Value) -> Vec<&str> {
    v.as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect()
}

#[test]
fn virtual_service_crd() {
    let crd = json::<VirtualService>();
    assert_eq!(crd["metadata"]["name"], "virtualservices.lb.weir.dev");
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(strings(&crd["spec"]["names"]["shortNames"]), ["wvs"]);
    assert_eq!(strings(&crd["spec"]["names"]["categories"]), ["weir"]);
    assert_eq!(columns(&crd), ["Address", "Port", "Protocol", "Reals", "Healthy", "Programmed", "Accepted", "Age"]);
    assert_eq!(crd["spec"]["versions"][0]["subresources"]["status"], serde_json::json!({}));
    let p = spec_props(&crd);
    assert!(rules(&p["address"]).contains(&"isIP(self)"));
    assert_eq!(p["address"]["maxLength"], 45);
    assert_eq!(strings(&p["protocol"]["enum"]), ["TCP", "UDP"]);
    assert_eq!(strings(&p["hashFunction"]["enum"]), ["Maglev", "MaglevV2"]);
    assert_eq!(p["hashFunction"]["default"], "Maglev");
    assert_eq!(
        strings(&p["flags"]["items"]["enum"]),
        ["NO_SPORT", "NO_LRU", "DPORT_HASH", "LOCAL_VIP", "HASH_SRC_DST_PORT"]
    );
    assert_eq!(p["flags"]["x-kubernetes-list-type"], "set");
    assert_eq!(p["port"]["maximum"].as_f64(), Some(65535.0));
    assert_eq!(p["port"]["minimum"].as_f64(), Some(0.0));
    assert!(p["nodeSelector"]["properties"]["matchExpressions"].is_object(), "a real LabelSelector");
}

/// The health check's bounds and CEL rules: what the apiserver refuses at admission (the
/// same checks, repeated in Rust, are tested in `validation/tests.rs`).
#[test]
fn virtual_service_health_check_schema() {
    let crd = json::<VirtualService>();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    assert_eq!(
        rules(spec),
        ["self.port != 0 || !has(self.healthCheck) || has(self.healthCheck.port)"],
        "a port-less VIP's check names its port"
    );
    let hc = &spec_props(&crd)["healthCheck"];
    assert_eq!(strings(&hc["required"]), ["type"]);
    let p = &hc["properties"];
    assert_eq!(strings(&p["type"]["enum"]), ["tcp", "http", "https", "udp"]);
    let range = |name: &str| (p[name]["minimum"].as_f64(), p[name]["maximum"].as_f64(), p[name]["default"].as_u64());
    assert_eq!(range("port"), (Some(1.0), Some(65535.0), None));
    assert_eq!(range("expectedStatus"), (Some(100.0), Some(599.0), None));
    assert_eq!(range("intervalMilliseconds"), (Some(1000.0), Some(300_000.0), Some(5000)));
    assert_eq!(range("timeoutMilliseconds"), (Some(1.0), Some(299_999.0), Some(2000)));
    assert_eq!(range("healthyThreshold"), (Some(1.0), Some(10.0), Some(3)));
    assert_eq!(range("unhealthyThreshold"), (Some(1.0), Some(10.0), Some(3)));
    for (name, max) in [("path", 1024), ("host", 253), ("payload", 1024), ("expectedReply", 1024)] {
        assert_eq!(p[name]["maxLength"], max, "{name}: bounded, for the CEL cost estimate");
    }
    assert_eq!(
        rules(hc),
        [
            "self.timeoutMilliseconds < self.intervalMilliseconds",
            "!(self.type in ['http', 'https']) || (has(self.path) && self.path.startsWith('/'))",
            "self.type in ['http', 'https'] || (!has(self.path) && !has(self.expectedStatus) && !has(self.host))",
            "self.type == 'https' || !has(self.skipTlsVerify)",
            "self.type == 'udp' || (!has(self.payload) && !has(self.expectedReply))",
            "self.type != 'udp' || has(self.payload)",
        ]
    );
    let messages: Vec<&str> =
        hc["x-kubernetes-validations"].as_array().unwrap().iter().map(|r| r["message"].as_str().unwrap()).collect();
    assert!(messages.iter().all(|m| !m.is_empty()), "every rule says what is wrong");
    // The rollup has a column.
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert_eq!(status["healthyReals"]["type"], "integer");
}

#[test]
fn real_server_crd() {
    let crd = json::<RealServer>();
    assert_eq!(crd["spec"]["scope"], "Namespaced");
    assert_eq!(strings(&crd["spec"]["names"]["shortNames"]), ["wrs"]);
    assert_eq!(columns(&crd), ["VirtualService", "Address", "Weight", "Accepted", "Reason", "Healthy", "Age"]);
    assert_eq!(crd["spec"]["versions"][0]["selectableFields"][0]["jsonPath"], ".spec.virtualServiceName");
    let p = spec_props(&crd);
    assert!(rules(&p["address"]).contains(&"isIP(self)"));
    assert_eq!(p["weight"]["maximum"].as_f64(), Some(65535.0));
    assert_eq!(p["weight"]["default"], 1);
    assert_eq!(strings(&p["flags"]["items"]["enum"]), ["LOCAL_REAL"]);
}

#[test]
fn balancer_node_crd() {
    let crd = json::<BalancerNode>();
    assert_eq!(crd["spec"]["scope"], "Cluster");
    assert_eq!(strings(&crd["spec"]["names"]["shortNames"]), ["wbn"]);
    assert_eq!(columns(&crd), ["Interface", "Mode", "VIPs", "Reals", "Ready", "Age"]);
    let status = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]["properties"];
    assert_eq!(strings(&status["virtualServices"]["x-kubernetes-list-map-keys"]), ["namespace", "name"]);
    assert_eq!(strings(&status["attachMode"]["enum"]), ["Native", "Generic", "Auto", "Offload", "Testing"]);
    let entry = &status["virtualServices"]["items"]["properties"];
    assert_eq!(entry["unhealthyReals"]["maxItems"], crate::v1alpha1::MAX_UNHEALTHY_LISTED);
    assert_eq!(
        (entry["healthyReals"]["type"].as_str(), entry["failOpen"]["type"].as_str()),
        (Some("integer"), Some("boolean"))
    );
}

#[test]
fn committed_yaml_matches_the_types() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("yaml/weir-crds.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = crate::crds_yaml().unwrap();
    assert!(
        committed == generated,
        "{} is out of date with the Rust types; run `cargo run -p weir-crds --bin crdgen > {}`",
        path.display(),
        crate::CRDS_YAML_PATH
    );
}

#[test]
fn yaml_is_three_parseable_documents() {
    let yaml = crate::crds_yaml().unwrap();
    let docs: Vec<Value> =
        serde_yaml::Deserializer::from_str(&yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    let names: Vec<&str> = docs.iter().map(|d| d["metadata"]["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["virtualservices.lb.weir.dev", "realservers.lb.weir.dev", "balancernodes.lb.weir.dev"]);
}
