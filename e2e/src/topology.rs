//! The test network: a router namespace as hub, and client, lb and reals each on
//! their own veth pair to it.
//!
//! Address plan (link `L`: client 1, lb 2, real `i` is `10 + i`):
//!
//! | what                     | IPv4               | IPv6                   | MAC                 |
//! |--------------------------|--------------------|------------------------|---------------------|
//! | router side of link L    | `10.200.L.1/24`    | `fd00:200:L::1/64`     | `02:00:0a:c8:LL:01` |
//! | host side of link L      | `10.200.L.2/24`    | `fd00:200:L::2/64`     | `02:00:0a:c8:LL:02` |
//! | VIPs (every real's `lo`) | `10.200.255.1/32`  | `fd00:200:ff::1/128`   |                     |
//! | VIP prefixes, router->lb | `10.200.255.0/24`  | `fd00:200:ff::/64`     |                     |
//! | encap sources, router->lb| `172.16.0.0/12`    | `100::/64`             |                     |
//!
//! `L` is written in decimal in both families (`10.200.11.2` and
//! `fd00:200:11::2`); `LL` is its hex byte. Interfaces: `r<role>` on the router
//! (`rlb`, `rreal0`), `v<role>` on the host (`vlb`, `vreal0`). Every namespace
//! is dual-stack when [`TopologyConfig::ipv6`] is set.
//!
//! The lb and real links get [`TopologyConfig::fabric_mtu`] (1600 by default),
//! the client link 1500: a full-size client packet still fits once the balancer
//! adds its 20 or 40 byte outer header, as in a real datacenter fabric.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use anyhow::{ensure, Context, Result};
use aya::programs::{Xdp, XdpMode};
use aya::Ebpf;

use crate::netns::{self, Netns};

/// The IPv4 VIP, on every real's `lo`.
pub const VIP_V4: Ipv4Addr = Ipv4Addr::new(10, 200, 255, 1);
/// The IPv6 VIP, on every real's `lo` (dual-stack topologies only).
pub const VIP_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x200, 0xff, 0, 0, 0, 0, 1);
/// The router sends this whole prefix to the lb: tests may use other VIPs in it
/// (they must add them to the reals' `lo` themselves).
pub const VIP_NET_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 200, 255, 0), 24);
/// IPv6 counterpart of [`VIP_NET_V4`].
pub const VIP_NET_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd00, 0x200, 0xff, 0, 0, 0, 0, 0), 64);
/// Outer source addresses of IPv4-in-IPv4 packets made by the balancer.
pub const ENCAP_SRC_V4: (Ipv4Addr, u8) = (Ipv4Addr::new(172, 16, 0, 0), 12);
/// Outer source addresses of IPv6 encapsulation made by the balancer.
pub const ENCAP_SRC_V6: (Ipv6Addr, u8) = (Ipv6Addr::new(0x100, 0, 0, 0, 0, 0, 0, 0), 64);

/// Link numbers (the third octet of the link's IPv4 prefix).
pub const LINK_CLIENT: u8 = 1;
pub const LINK_LB: u8 = 2;
pub const LINK_REAL0: u8 = 10;
/// Reals per topology: link numbers stay below 255 (the VIP prefix).
pub const MAX_REALS: usize = 200;

/// MTU of the client's link.
pub const CLIENT_MTU: u32 = 1500;
/// Default MTU of the lb and real links: room for the encapsulation header.
pub const FABRIC_MTU: u32 = 1600;

/// Per-topology pin roots are `<PIN_ROOT_PREFIX><pid>-<n>`.
pub const PIN_ROOT_PREFIX: &str = "/sys/fs/bpf/weir-e2e-";

static NEXT_TOPOLOGY: AtomicU32 = AtomicU32::new(0);

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyConfig {
    /// Number of real servers, at most [`MAX_REALS`].
    pub reals: usize,
    /// Give every link (and the reals' `lo`) IPv6 addresses as well as IPv4.
    pub ipv6: bool,
    /// MTU of the lb and real links (the client link is [`CLIENT_MTU`]).
    pub fabric_mtu: u32,
    /// One interface name for every real's link (e.g. `eth0`, as pods have),
    /// instead of `vreal<i>`: each real is its own namespace, so they can share it.
    pub real_iface: Option<String>,
}

impl Default for TopologyConfig {
    fn default() -> Self {
        Self { reals: 2, ipv6: true, fabric_mtu: FABRIC_MTU, real_iface: None }
    }
}

/// One host namespace and its link to the router.
#[derive(Debug)]
pub struct Host {
    /// `client`, `lb`, `real0`, ...
    pub role: String,
    pub ns: Netns,
    /// The link number `L` (see the module doc).
    pub link: u8,
    /// The host's end of the veth pair (`vlb`, `vreal0`).
    pub iface: String,
    pub mac: [u8; 6],
    pub v4: Ipv4Addr,
    pub v6: Option<Ipv6Addr>,
    /// The router's end of the veth pair (`rlb`, `rreal0`), in [`Topology::router`].
    pub router_iface: String,
    /// The router's MAC on this link: the next hop of everything the host sends.
    pub router_mac: [u8; 6],
    pub router_v4: Ipv4Addr,
    pub router_v6: Option<Ipv6Addr>,
    pub mtu: u32,
}

impl Host {
    /// The host's addresses on its link: IPv4, then IPv6 if configured.
    pub fn addrs(&self) -> Vec<IpAddr> {
        let mut addrs = vec![IpAddr::V4(self.v4)];
        addrs.extend(self.v6.map(IpAddr::V6));
        addrs
    }

    /// The host's IPv6 address if `ipv6`, else its IPv4 address.
    pub fn addr(&self, ipv6: bool) -> Option<IpAddr> {
        if ipv6 {
            self.v6.map(IpAddr::V6)
        } else {
            Some(IpAddr::V4(self.v4))
        }
    }
}

/// The whole network; torn down on drop (decap detached, pins removed,
/// namespaces deleted), also when a test panics.
#[derive(Debug)]
pub struct Topology {
    /// Unique per process; part of [`Topology::pin_root`].
    pub id: u32,
    pub ipv6: bool,
    pub router: Netns,
    pub client: Host,
    pub lb: Host,
    pub reals: Vec<Host>,
    /// MTU of the lb and real links: give it to the balancer as its `mtu`.
    pub fabric_mtu: u32,
    /// A bpffs directory for this topology's pins (decap; the balancer may use
    /// it too). Created on demand, removed on drop.
    pub pin_root: PathBuf,
    /// XDP_PASS on the router's `rlb`; dropping it detaches the program.
    router_xdp: Option<Ebpf>,
    /// Indexes of the reals whose decap program is attached.
    decap_attached: Mutex<Vec<usize>>,
}

impl Topology {
    /// Builds the namespaces, links, addresses, routes and sysctls, and attaches
    /// XDP_PASS to the router's lb-facing veth. On error, whatever was built is
    /// torn down again.
    pub fn build(config: TopologyConfig) -> Result<Topology> {
        ensure!(config.reals <= MAX_REALS, "at most {MAX_REALS} reals, not {}", config.reals);
        let id = NEXT_TOPOLOGY.fetch_add(1, Ordering::Relaxed);
        let ipv6 = config.ipv6;

        let router = Netns::new("router")?;
        configure_netns(&router, Role::Router)?;
        let client = Host::create("client", LINK_CLIENT, CLIENT_MTU, &router, ipv6, None)?;
        let lb = Host::create("lb", LINK_LB, config.fabric_mtu, &router, ipv6, None)?;
        let reals = (0..config.reals)
            .map(|i| {
                let link = LINK_REAL0 + i as u8;
                Host::create(&format!("real{i}"), link, config.fabric_mtu, &router, ipv6, config.real_iface.as_deref())
            })
            .collect::<Result<Vec<_>>>()?;

        // Direct server return: each real owns the VIPs on `lo` and answers from
        // them. /32 and /128 so lo does not claim the whole VIP prefix.
        for real in &reals {
            let mut cmds = vec![format!("addr add {VIP_V4}/32 dev lo")];
            if ipv6 {
                cmds.push(format!("addr add {VIP_V6}/128 dev lo nodad"));
            }
            real.ns.ip_batch(&cmds)?;
        }

        // VIP traffic goes to the balancer. The encapsulation sources are the
        // lb's too: routing them back to it keeps any ICMP error about an
        // encapsulated packet (TTL, too big) on a sensible path.
        let mut routes = vec![
            format!("route add {}/{} via {}", VIP_NET_V4.0, VIP_NET_V4.1, lb.v4),
            format!("route add {}/{} via {}", ENCAP_SRC_V4.0, ENCAP_SRC_V4.1, lb.v4),
        ];
        if let Some(lb_v6) = lb.v6 {
            routes.push(format!("route add {}/{} via {lb_v6}", VIP_NET_V6.0, VIP_NET_V6.1));
            routes.push(format!("route add {}/{} via {lb_v6}", ENCAP_SRC_V6.0, ENCAP_SRC_V6.1));
        }
        router.ip_batch(&routes)?;

        // The balancer sends with XDP_TX out of `vlb`. A veth hands an XDP_TX
        // frame to its peer only when the peer runs XDP itself (the frame goes
        // to the peer's XDP/NAPI receive path, which exists only then); without
        // a program on `rlb` every encapsulated packet is silently dropped.
        let rlb = lb.router_iface.clone();
        let router_xdp = router
            .run(move || attach_xdp_pass(&rlb))
            .with_context(|| format!("attach XDP_PASS to {} in netns {}", lb.router_iface, router.name()))?;

        let pin_root = PathBuf::from(format!("{PIN_ROOT_PREFIX}{}-{id}", std::process::id()));
        if pin_root.exists() {
            // Our pid and our counter: left by a crashed process with this pid.
            std::fs::remove_dir_all(&pin_root).with_context(|| format!("remove stale {}", pin_root.display()))?;
        }
        Ok(Topology {
            id,
            ipv6,
            router,
            client,
            lb,
            reals,
            fabric_mtu: config.fabric_mtu,
            pin_root,
            router_xdp: Some(router_xdp),
            decap_attached: Mutex::new(Vec::new()),
        })
    }

    /// client, lb, then the reals.
    pub fn hosts(&self) -> impl Iterator<Item = &Host> {
        [&self.client, &self.lb].into_iter().chain(self.reals.iter())
    }

    /// Every namespace of this topology, router first.
    pub fn netns_names(&self) -> Vec<String> {
        std::iter::once(self.router.name()).chain(self.hosts().map(|h| h.ns.name())).map(str::to_owned).collect()
    }

    /// The VIPs on the reals: [`VIP_V4`], and [`VIP_V6`] when dual-stack.
    pub fn vips(&self) -> Vec<IpAddr> {
        let mut vips = vec![IpAddr::V4(VIP_V4)];
        if self.ipv6 {
            vips.push(IpAddr::V6(VIP_V6));
        }
        vips
    }

    /// The VIP of one family (`None` for IPv6 in an IPv4-only topology).
    pub fn vip(&self, ipv6: bool) -> Option<IpAddr> {
        match ipv6 {
            false => Some(IpAddr::V4(VIP_V4)),
            true => self.ipv6.then_some(IpAddr::V6(VIP_V6)),
        }
    }

    /// The balancer's interface (`vlb`, in `lb.ns`).
    pub fn lb_iface(&self) -> &str {
        &self.lb.iface
    }

    /// The MAC of the balancer's interface.
    pub fn lb_mac(&self) -> [u8; 6] {
        self.lb.mac
    }

    /// The router's MAC on the lb link: the balancer's "default MAC", the
    /// Ethernet destination of every encapsulated packet.
    pub fn default_mac(&self) -> [u8; 6] {
        self.lb.router_mac
    }

    /// Attaches weir's decapsulation program to every real's interface, in
    /// driver mode, pinned under [`Topology::pin_root`]. Detached on drop.
    pub fn attach_decap(&self) -> Result<()> {
        weir_agent::dataplane::pin::ensure_bpffs(&self.pin_root)
            .with_context(|| format!("prepare pin root {}", self.pin_root.display()))?;
        let mut attached = self.decap_attached.lock().unwrap_or_else(|e| e.into_inner());
        for (i, real) in self.reals.iter().enumerate() {
            if attached.contains(&i) {
                continue;
            }
            let root = self.pin_root.as_path();
            real.ns
                .run(|| decap_attach(&real.iface, root))
                .with_context(|| format!("attach decap to {} in netns {}", real.iface, real.ns.name()))?;
            attached.push(i);
        }
        Ok(())
    }

    /// Detaches the decapsulation programs [`Topology::attach_decap`] attached.
    pub fn detach_decap(&self) -> Result<()> {
        let mut attached = self.decap_attached.lock().unwrap_or_else(|e| e.into_inner());
        let mut first_error = None;
        for i in std::mem::take(&mut *attached) {
            let real = &self.reals[i];
            let root = self.pin_root.as_path();
            if let Err(e) = real.ns.run(|| decap_detach(&real.iface, root)) {
                let e = e.context(format!("detach decap from {} in netns {}", real.iface, real.ns.name()));
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Deletes what crashed runs left behind: namespaces named `weir-<pid>-...`
    /// and pin roots `/sys/fs/bpf/weir-e2e-<pid>-...` whose pid is dead. Live
    /// processes' (including parallel tests') resources are never touched.
    /// Returns what it deleted.
    pub fn cleanup_stale() -> Result<Vec<String>> {
        let mut removed = Vec::new();
        // Pins first: unpinning a link detaches its program.
        if let Ok(entries) = std::fs::read_dir("/sys/fs/bpf") {
            for entry in entries.flatten() {
                let path = entry.path();
                let Some(pid) = pin_root_pid(&path) else {
                    continue;
                };
                if netns::pid_alive(pid) {
                    continue;
                }
                std::fs::remove_dir_all(&path).with_context(|| format!("remove {}", path.display()))?;
                removed.push(path.display().to_string());
            }
        }
        for name in netns::stale()? {
            netns::delete(&name)?;
            removed.push(name);
        }
        Ok(removed)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        if let Err(e) = self.detach_decap() {
            eprintln!("weir-e2e: topology {}: {e:#}", self.id);
        }
        drop(self.router_xdp.take());
        if self.pin_root.exists() {
            if let Err(e) = std::fs::remove_dir_all(&self.pin_root) {
                eprintln!("weir-e2e: remove {}: {e}", self.pin_root.display());
            }
        }
        // The Netns fields are dropped after this, deleting the namespaces (and
        // with them the veths and anything still attached to them).
    }
}

/// The pid in a pin root made by [`Topology`], e.g. `/sys/fs/bpf/weir-e2e-123-0`.
fn pin_root_pid(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix(PIN_ROOT_PREFIX.rsplit('/').next()?)?;
    let (pid, n) = rest.split_once('-')?;
    n.parse::<u32>().ok()?;
    pid.parse().ok()
}

/// The real-side decapsulation program, owned by the node agent.
fn decap_attach(iface: &str, pin_root: &Path) -> Result<()> {
    weir_agent::dataplane::decap::attach(iface, weir_agent::dataplane::AttachMode::Driver, pin_root)?;
    Ok(())
}

fn decap_detach(iface: &str, pin_root: &Path) -> Result<()> {
    weir_agent::dataplane::decap::detach(iface, pin_root)?;
    Ok(())
}

fn attach_xdp_pass(iface: &str) -> Result<Ebpf> {
    let mut ebpf = Ebpf::load(weir_ebpf::XDP_PASS).context("load the XDP_PASS object")?;
    let program: &mut Xdp = ebpf
        .program_mut(weir_ebpf::XDP_PASS_PROGRAM)
        .with_context(|| format!("no program {} in the XDP_PASS object", weir_ebpf::XDP_PASS_PROGRAM))?
        .try_into()?;
    program.load().context("load XDP_PASS")?;
    program.attach(iface, XdpMode::Driver).context("attach XDP_PASS in driver mode")?;
    Ok(ebpf)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Router,
    Host,
    Real,
}

/// Namespace-wide sysctls, set before any veth exists so the `default` values
/// are what the new interfaces inherit.
fn configure_netns(ns: &Netns, role: Role) -> Result<()> {
    let forwarding = if role == Role::Router { "1" } else { "0" };
    let mut settings = vec![
        // Reverse-path filtering would drop legitimate packets here: the router
        // sees replies from the VIP arrive on a real's link while its route to
        // the VIP points at the lb, and encapsulated packets come from
        // 172.16/12. The effective value is max(all, interface), so all,
        // default and every interface are set to 0. (A new namespace inherits
        // the host's IPv4 `all`/`default`, which may well be 1 or 2.)
        ("net.ipv4.conf.all.rp_filter", "0"),
        ("net.ipv4.conf.default.rp_filter", "0"),
        ("net.ipv4.conf.lo.rp_filter", "0"),
        // Only the router forwards. Hosts inherit the host's ip_forward, and an
        // lb that forwarded VIP traffic back to the router would loop it.
        ("net.ipv4.ip_forward", forwarding),
        ("net.ipv6.conf.all.forwarding", forwarding),
        ("net.ipv6.conf.default.forwarding", forwarding),
        // No duplicate address detection: addresses are usable at once, not
        // "tentative" (unbindable, unroutable) for a second or more.
        ("net.ipv6.conf.all.accept_dad", "0"),
        ("net.ipv6.conf.default.accept_dad", "0"),
    ];
    if role == Role::Real {
        // The classic direct-server-return setup: never answer ARP for the VIP
        // (on lo) on the real link, never use it as an ARP source.
        settings.push(("net.ipv4.conf.all.arp_ignore", "1"));
        settings.push(("net.ipv4.conf.all.arp_announce", "2"));
    }
    ns.sysctl(&owned(&settings))
}

/// Per-interface settings for one veth end.
fn configure_iface(ns: &Netns, iface: &str) -> Result<()> {
    ns.sysctl(&owned(&[
        (&format!("net.ipv4.conf.{iface}.rp_filter"), "0"),
        (&format!("net.ipv6.conf.{iface}.accept_dad"), "0"),
    ]))?;
    // veth offloads checksums by handing CHECKSUM_PARTIAL skbs to its peer. A
    // frame rewritten by XDP (encapsulated on the lb, decapsulated on a real)
    // becomes a fresh buffer without that flag but with the checksum still
    // unfinished, so the receiver drops it as corrupt. Computing checksums in
    // software on every veth end keeps all packets complete on the wire.
    ns.exec("ethtool", ["-K", iface, "tx", "off"])
        .with_context(|| format!("disable tx checksum offload on {iface}"))?;
    Ok(())
}

fn owned<K: AsRef<str>>(settings: &[(K, &str)]) -> Vec<(String, String)> {
    settings.iter().map(|(k, v)| (k.as_ref().to_owned(), (*v).to_owned())).collect()
}

impl Host {
    /// Makes the namespace `role` and links it to the router on link `link`,
    /// through its interface `iface` (default `v<role>`).
    fn create(role: &str, link: u8, mtu: u32, router: &Netns, ipv6: bool, iface: Option<&str>) -> Result<Host> {
        let ns = Netns::new(role)?;
        configure_netns(&ns, if role.starts_with("real") { Role::Real } else { Role::Host })?;
        let host = Host {
            role: role.to_owned(),
            link,
            iface: iface.map_or_else(|| format!("v{role}"), str::to_owned),
            mac: mac(link, 2),
            v4: v4(link, 2),
            v6: ipv6.then(|| v6(link, 2)),
            router_iface: format!("r{role}"),
            router_mac: mac(link, 1),
            router_v4: v4(link, 1),
            router_v6: ipv6.then(|| v6(link, 1)),
            mtu,
            ns,
        };

        // Created from the router straight into both namespaces, so the names
        // only need to be unique per namespace (no clash with parallel tests
        // in the root namespace).
        let (r, h) = (&host.router_iface, &host.iface);
        let mut cmds = vec![
            format!(
                "link add name {r} address {} mtu {mtu} type veth peer name {h} address {} mtu {mtu} netns {}",
                fmt_mac(host.router_mac),
                fmt_mac(host.mac),
                host.ns.name()
            ),
            format!("link set {r} up"),
            format!("addr add {}/24 dev {r}", host.router_v4),
        ];
        if let Some(a) = host.router_v6 {
            cmds.push(format!("addr add {a}/64 dev {r} nodad"));
        }
        router.ip_batch(&cmds)?;
        configure_iface(router, r)?;

        let mut cmds = vec![
            "link set lo up".to_owned(),
            format!("link set {h} up"),
            format!("addr add {}/24 dev {h}", host.v4),
            format!("route add default via {}", host.router_v4),
        ];
        if let (Some(a), Some(gw)) = (host.v6, host.router_v6) {
            cmds.push(format!("addr add {a}/64 dev {h} nodad"));
            // `::/0` rather than `default`, which ip reads as IPv4 in batch mode.
            cmds.push(format!("route add ::/0 via {gw}"));
        }
        host.ns.ip_batch(&cmds)?;
        configure_iface(&host.ns, h)?;
        Ok(host)
    }
}

/// `10.200.<link>.<host>`.
pub fn v4(link: u8, host: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 200, link, host)
}

/// `fd00:200:<link>::<host>`, with `link` written in decimal digits (so link 11
/// is `fd00:200:11::`, matching `10.200.11.0`).
pub fn v6(link: u8, host: u16) -> Ipv6Addr {
    let segment = u16::from_str_radix(&link.to_string(), 16).expect("decimal digits are hex digits");
    Ipv6Addr::new(0xfd00, 0x200, segment, 0, 0, 0, 0, host)
}

/// `02:00:0a:c8:<link>:<host>` (locally administered; 0a:c8 is 10.200).
pub fn mac(link: u8, host: u8) -> [u8; 6] {
    [0x02, 0x00, 0x0a, 0xc8, link, host]
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn fmt_mac(mac: [u8; 6]) -> String {
    mac.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan() {
        assert_eq!(v4(11, 2).to_string(), "10.200.11.2");
        assert_eq!(v6(11, 2).to_string(), "fd00:200:11::2");
        assert_eq!(v6(LINK_REAL0 + MAX_REALS as u8 - 1, 1).to_string(), "fd00:200:209::1");
        assert_eq!(VIP_V6.to_string(), "fd00:200:ff::1");
        assert_eq!(ENCAP_SRC_V6.0.to_string(), "100::");
        assert_eq!(fmt_mac(mac(LINK_LB, 1)), "02:00:0a:c8:02:01");
    }

    #[test]
    fn topology_can_be_shared_between_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<Topology>();
    }

    #[test]
    fn pin_root_names() {
        assert_eq!(pin_root_pid(Path::new("/sys/fs/bpf/weir-e2e-123-4")), Some(123));
        assert_eq!(pin_root_pid(Path::new("/sys/fs/bpf/weir")), None);
        assert_eq!(pin_root_pid(Path::new("/sys/fs/bpf/weir-e2e-x-4")), None);
    }
}
