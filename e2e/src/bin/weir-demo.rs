//! weir-demo: weir's main job on one machine. Builds a network of namespaces
//! (a client, a router, a balancer host, N real servers), attaches the XDP
//! balancer to the balancer's NIC in driver mode and weir's decapsulation
//! program to each real's, programs a VIP, sends real TCP connections through
//! it, prints which real served each one and the datapath's counters, and
//! removes everything. Run as root (scripts/demo.sh sets the machine up first).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;
use weir_agent::dataplane::{Balancer, VipId};
use weir_e2e::lb::{self, vip_socket};
use weir_e2e::{connect_once, serve, Server, Topology, TopologyConfig};
use weir_ebpf::abi::Stat;

#[derive(Parser)]
#[command(about = "Balance real TCP connections through weir's XDP datapath in network namespaces")]
struct Args {
    /// Real servers behind the VIP.
    #[arg(long, default_value_t = 3)]
    reals: usize,
    /// TCP connections per address family.
    #[arg(long, default_value_t = 12)]
    connections: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    if !weir_test_support::is_root() {
        bail!("weir-demo creates network namespaces and loads XDP programs: run it as root");
    }
    if !(1..=20).contains(&args.reals) {
        bail!("--reals must be between 1 and 20, not {}", args.reals);
    }
    Topology::cleanup_stale().context("remove namespaces left by earlier crashed runs")?;

    println!("building the network: client, router, balancer (lb) and {} reals, each a network namespace", args.reals);
    let topo = Topology::build(TopologyConfig { reals: args.reals, ..TopologyConfig::default() })?;
    topo.attach_decap()?;
    println!("  reals decapsulate with weir's XDP program (weir-agent decap)");
    let mut balancer = lb::start(&topo, true)?;
    println!("  the balancer's XDP program is attached to {} in driver mode", topo.lb_iface());

    let all: Vec<usize> = (0..args.reals).collect();
    for ipv6 in [false, true] {
        let vip = lb::vip(&topo, ipv6)?;
        lb::add_vip(&mut balancer, &topo, vip, &all, ipv6)?;
        let _servers = servers(&topo, vip)?;
        println!();
        println!("VIP {vip} -> {} reals (Maglev, weight 1 each)", args.reals);
        let mut served = BTreeMap::new();
        for i in 1..=args.connections {
            let name = connect_once(&topo.client.ns, vip_socket(vip), Duration::from_secs(3))
                .with_context(|| format!("connection {i} to {vip}"))?;
            let real = topo.reals.iter().find(|r| r.role == name).context("an unknown real answered")?;
            let addr = real.addr(ipv6).context("real address")?;
            println!("  connection {i:>3}: served by {name} ({addr})");
            *served.entry(name).or_insert(0usize) += 1;
        }
        let summary: Vec<String> = served.iter().map(|(real, n)| format!("{real} {n}")).collect();
        println!("  connections per real: {}", summary.join(", "));
        print_vip_counters(&balancer, &topo, vip, ipv6)?;
    }

    println!();
    println!("datapath counters (summed over CPUs):");
    for (name, stat) in [
        ("XDP_TX (encapsulated to a real)", Stat::XdpTx),
        ("XDP_PASS (not for a VIP)", Stat::XdpPass),
        ("XDP_DROP", Stat::XdpDrop),
    ] {
        let c = balancer.stat(stat)?;
        println!("  {name:<34} {:>6} packets {:>8} bytes", c.v1, c.v2);
    }
    let lru = balancer.stat(Stat::Lru)?;
    let miss = balancer.stat(Stat::LruMiss)?;
    println!(
        "  connection table                   {:>6} VIP packets, {} took the Maglev ring ({} TCP SYNs)",
        lru.v1, lru.v2, miss.v1
    );
    println!();
    println!("cleaning up: detaching programs, removing namespaces");
    drop(balancer);
    drop(topo);
    println!("done");
    Ok(())
}

fn servers(topo: &Topology, vip: VipId) -> Result<Vec<Server>> {
    topo.reals.iter().map(|real| serve(&real.ns, vec![vip_socket(vip)], real.role.clone())).collect()
}

fn print_vip_counters(balancer: &Balancer, topo: &Topology, vip: VipId, ipv6: bool) -> Result<()> {
    let c = balancer.vip_stats(&vip)?;
    println!("  VIP counters: {} packets, {} bytes", c.v1, c.v2);
    for (i, real) in topo.reals.iter().enumerate() {
        let addr = lb::real_addr(topo, i, ipv6)?;
        let index = balancer.real_index(addr).context("real index")?;
        let r = balancer.real_stats(index)?;
        println!("    {} ({addr}): {} packets, {} bytes", real.role, r.v1, r.v2);
    }
    Ok(())
}
