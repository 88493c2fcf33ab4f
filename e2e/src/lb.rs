//! Running weir's balancer on a [`Topology`]: the Balancer attached in driver
//! mode to the lb host's veth, its pins under the topology's pin root, its
//! saved state in a directory of the topology's own.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use weir_agent::dataplane::{AttachMode, Balancer, BalancerConfig, RealSpec, VipId, VipSpec};

use crate::Topology;

/// The port the tests' VIPs listen on.
pub const VIP_PORT: u16 = 80;
const TCP: u8 = 6;

/// The Balancer's configuration for `topo`. `cleanup_on_shutdown` false keeps
/// the datapath forwarding after the Balancer is dropped (restart tests).
pub fn config(topo: &Topology, cleanup_on_shutdown: bool) -> BalancerConfig {
    BalancerConfig {
        main_interface: topo.lb_iface().to_owned(),
        default_mac: topo.default_mac(),
        max_vips: 8,
        max_reals: 64,
        lru_size: 65_536,
        mtu: topo.fabric_mtu,
        attach_mode: AttachMode::Driver,
        cleanup_on_shutdown,
        pin_root: Some(topo.pin_root.clone()),
        state_dir: state_dir(topo),
        ..BalancerConfig::default()
    }
}

/// Where the Balancer of `topo` saves its state (beside nothing else).
pub fn state_dir(topo: &Topology) -> PathBuf {
    std::env::temp_dir().join(format!("weir-e2e-state-{}-{}", std::process::id(), topo.id))
}

/// Creates (or adopts) the Balancer of `topo`, attaching it from inside the
/// lb namespace, where its interface is.
pub fn start(topo: &Topology, cleanup_on_shutdown: bool) -> Result<Balancer> {
    let config = config(topo, cleanup_on_shutdown);
    topo.lb.ns.run(|| Balancer::new(config)).context("start the balancer in the lb namespace")
}

/// The TCP VIP of the given family.
pub fn vip(topo: &Topology, ipv6: bool) -> Result<VipId> {
    let addr = topo.vip(ipv6).context("the topology has no VIP of that family")?;
    Ok(VipId { addr, port: VIP_PORT, proto: TCP })
}

/// Adds `vip` with the reals `reals` (indices into `topo.reals`), weight 1,
/// each real's address of the family `real_v6`.
pub fn add_vip(balancer: &mut Balancer, topo: &Topology, vip: VipId, reals: &[usize], real_v6: bool) -> Result<()> {
    balancer.add_vip(VipSpec { id: vip, flags: 0 })?;
    for &i in reals {
        balancer.add_real(&vip, RealSpec { addr: real_addr(topo, i, real_v6)?, weight: 1, flags: 0 })?;
    }
    Ok(())
}

/// Real `i`'s address of a family.
pub fn real_addr(topo: &Topology, i: usize, ipv6: bool) -> Result<IpAddr> {
    topo.reals[i].addr(ipv6).context("the real has no address of that family")
}

/// The socket address of `vip`.
pub fn vip_socket(vip: VipId) -> SocketAddr {
    SocketAddr::new(vip.addr, vip.port)
}
