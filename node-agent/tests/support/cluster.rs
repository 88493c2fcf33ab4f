//! Fixtures shared by the cluster-mode tests (cluster_reconcile, cluster_watch):
//! the VIP, reals, VirtualService/RealServer builders and the SYN probe.

use std::net::{IpAddr, Ipv4Addr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use weir_agent::dataplane::{outer_destination, Balancer, Verdict, VipId};
use weir_crds::v1alpha1::{HashFunction, Protocol, RealServer, RealServerSpec, VirtualService, VirtualServiceSpec};
use weir_test_support::packet;

pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 100, 0, 1);
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 7);

/// True (after saying so on stderr) when the test cannot load BPF programs.
pub use weir_test_support::skip_unless_root;

pub fn real(i: u8) -> IpAddr {
    Ipv4Addr::new(10, 0, 0, i).into()
}

pub fn vip_id() -> VipId {
    VipId { addr: VIP.into(), port: 80, proto: 6 }
}

/// A TCP VirtualService on port 80 in namespace "default".
pub fn virtual_service(name: &str, address: Ipv4Addr, node_selector: Option<LabelSelector>) -> VirtualService {
    let mut vs = VirtualService::new(
        name,
        VirtualServiceSpec {
            address: address.to_string(),
            port: 80,
            protocol: Protocol::Tcp,
            flags: Vec::new(),
            hash_function: HashFunction::Maglev,
            node_selector,
            health_check: None,
        },
    );
    vs.metadata.namespace = Some("default".into());
    vs
}

/// A RealServer of `vs` in namespace "default".
pub fn real_server(name: &str, vs: &str, addr: IpAddr, weight: u32) -> RealServer {
    let mut rs = RealServer::new(
        name,
        RealServerSpec { virtual_service_name: vs.into(), address: addr.to_string(), weight, flags: Vec::new() },
    );
    rs.metadata.namespace = Some("default".into());
    rs
}

/// Where a SYN from CLIENT:src_port to VIP:80 is sent, if it is transmitted.
pub fn syn_lands_on(lb: &Balancer, src_port: u16) -> Option<IpAddr> {
    let run = lb.simulate(&packet::syn(packet::sock(CLIENT, src_port), packet::sock(VIP, 80))).unwrap();
    (run.verdict == Verdict::Tx).then(|| outer_destination(&run.packet)).flatten()
}
