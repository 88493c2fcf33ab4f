//! The README's VirtualService/RealServer example is real: it parses into the
//! CRD types and passes validation, and the RealServer is accepted.

use weir_crds::v1alpha1::{RealServer, VirtualService};
use weir_crds::validation::{arbitrate, validate_real_server, validate_virtual_service, ObjectKey};

/// The first ```yaml block after the "## Kubernetes" heading of README.md.
fn readme_yaml() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).expect("README.md");
    let section = readme.split("## Kubernetes").nth(1).expect("a Kubernetes section in README.md");
    let block = section.split("```yaml\n").nth(1).expect("a yaml block in it");
    block.split("```").next().expect("its end").to_owned()
}

#[test]
fn readme_example_is_valid() {
    let yaml = readme_yaml();
    let docs: Vec<serde_yaml::Value> =
        serde_yaml::Deserializer::from_str(&yaml).map(|d| serde::Deserialize::deserialize(d).unwrap()).collect();
    assert_eq!(docs.len(), 2);
    let vs: VirtualService = serde_yaml::from_value(docs[0].clone()).expect("the VirtualService parses");
    let rs: RealServer = serde_yaml::from_value(docs[1].clone()).expect("the RealServer parses");
    assert!(validate_virtual_service(&vs.spec).is_empty());
    assert!(validate_real_server(&rs.spec).is_empty());
    let verdicts = arbitrate([&vs], [&rs]);
    assert!(verdicts.virtual_services[&ObjectKey::new("shop", "web")].accepted());
    assert!(verdicts.real_servers[&ObjectKey::new("shop", "web-a")].accepted(), "{:?}", verdicts.real_servers);
}
