//! Test fixtures as builders (tests only).

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::ObjectMeta;
use weir_crds::v1alpha1::{
    BalancerNode, BalancerNodeSpec, BalancerNodeStatus, ProgrammedVirtualService, Protocol, RealServer, RealServerSpec,
    VirtualService, VirtualServiceSpec,
};

fn meta(namespace: Option<&str>, name: &str) -> ObjectMeta {
    ObjectMeta {
        namespace: namespace.map(str::to_owned),
        name: Some(name.to_owned()),
        generation: Some(1),
        ..ObjectMeta::default()
    }
}

/// Builds a VirtualService in `default` on TCP port 80.
pub struct VirtualServiceBuilder(VirtualService);

pub fn virtual_service(name: &str, address: &str) -> VirtualServiceBuilder {
    let spec = VirtualServiceSpec {
        address: address.to_owned(),
        port: 80,
        protocol: Protocol::Tcp,
        flags: Vec::new(),
        hash_function: Default::default(),
        node_selector: None,
        health_check: None,
    };
    VirtualServiceBuilder(VirtualService { metadata: meta(Some("default"), name), spec, status: None })
}

impl VirtualServiceBuilder {
    pub fn generation(mut self, generation: i64) -> Self {
        self.0.metadata.generation = Some(generation);
        self
    }

    pub fn selector(mut self, key: &str, value: &str) -> Self {
        let labels = BTreeMap::from([(key.to_owned(), value.to_owned())]);
        self.0.spec.node_selector = Some(LabelSelector { match_labels: Some(labels), ..LabelSelector::default() });
        self
    }

    pub fn build(self) -> VirtualService {
        self.0
    }
}

/// Builds a RealServer in `default` with weight 1.
pub struct RealServerBuilder(RealServer);

pub fn real_server(name: &str, virtual_service: &str, address: &str) -> RealServerBuilder {
    let spec = RealServerSpec {
        virtual_service_name: virtual_service.to_owned(),
        address: address.to_owned(),
        weight: 1,
        flags: Vec::new(),
    };
    RealServerBuilder(RealServer { metadata: meta(Some("default"), name), spec, status: None })
}

impl RealServerBuilder {
    pub fn build(self) -> RealServer {
        self.0
    }
}

/// Builds a BalancerNode with an empty status.
pub struct BalancerNodeBuilder(BalancerNode);

pub fn balancer_node(name: &str) -> BalancerNodeBuilder {
    BalancerNodeBuilder(BalancerNode {
        metadata: meta(None, name),
        spec: BalancerNodeSpec {},
        status: Some(BalancerNodeStatus::default()),
    })
}

impl BalancerNodeBuilder {
    /// Reports `namespace/name` programmed at `generation` with `reals` reals.
    pub fn programmed(mut self, namespace: &str, name: &str, generation: i64, reals: u32) -> Self {
        let status = self.0.status.get_or_insert_with(Default::default);
        status.virtual_services.push(ProgrammedVirtualService {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            generation,
            reals,
            reals_digest: None,
            vip: None,
            healthy_reals: None,
            unhealthy_reals: Vec::new(),
            fail_open: false,
        });
        self
    }

    /// The health of the last VirtualService [`Self::programmed`] added: `healthy` reals
    /// healthy, `unhealthy` listed (fail-open when none is healthy).
    pub fn health(mut self, healthy: u32, unhealthy: &[&str]) -> Self {
        let status = self.0.status.get_or_insert_with(Default::default);
        let entry = status.virtual_services.last_mut().expect("programmed() first");
        entry.healthy_reals = Some(healthy);
        entry.unhealthy_reals = unhealthy.iter().map(|s| (*s).to_owned()).collect();
        entry.fail_open = healthy == 0 && entry.reals > 0;
        self
    }

    pub fn build(self) -> BalancerNode {
        self.0
    }
}
