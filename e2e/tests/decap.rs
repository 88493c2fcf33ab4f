//! The real side on its own, without a balancer: weir's decap program on the
//! reals, fed hand-made encapsulated packets from the lb host.
//!
//! The lb sends an ICMP echo request to the VIP inside an outer header addressed
//! to one real (the kernel's raw sockets add the outer header: protocol 4 or 41
//! as the socket's protocol). The real's XDP strips it, its kernel answers the
//! echo from the VIP on `lo`, straight to the lb through the router (direct
//! server return), where a raw ICMP socket sees the reply. This kernel has no
//! ipip/ip6tnl devices, so without decap nothing answers.

use std::io;
use std::mem::size_of;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use weir_agent::dataplane::{decap, pin};
use weir_e2e::netns::Netns;
use weir_e2e::{connect_once, serve, skip_unless_root, Topology, TopologyConfig, DEFAULT_TIMEOUT, VIP_V4, VIP_V6};
use weir_ebpf::abi::DecapStat;
use weir_test_support::packet::ip_echo;

/// The encapsulations weir's balancer produces.
#[derive(Debug, Clone, Copy)]
enum Encap {
    /// IPv4 in IPv4 (outer protocol 4).
    V4InV4,
    /// IPv6 in IPv6 (outer next header 41).
    V6InV6,
    /// IPv4 in IPv6 (outer next header 4): an IPv4 VIP on IPv6 reals.
    V4InV6,
}

/// Sends one encapsulated echo request from `from` (inner source) to the VIP,
/// outer destination `real`, and waits up to `wait` for the VIP's echo reply.
fn tunnelled_ping(ns: &Netns, encap: Encap, from: IpAddr, real: IpAddr, seq: u16, wait: Duration) -> io::Result<bool> {
    let id = (std::process::id() as u16) ^ 0x5eed;
    ns.run(|| {
        let (outer_family, outer_proto) = match encap {
            Encap::V4InV4 => (libc::AF_INET, libc::IPPROTO_IPIP),
            Encap::V6InV6 => (libc::AF_INET6, libc::IPPROTO_IPV6),
            Encap::V4InV6 => (libc::AF_INET6, libc::IPPROTO_IPIP),
        };
        let inner_v6 = matches!(encap, Encap::V6InV6);
        // Listen before sending, so the reply cannot be missed.
        let rx = if inner_v6 {
            raw_socket(libc::AF_INET6, libc::IPPROTO_ICMPV6)?
        } else {
            raw_socket(libc::AF_INET, libc::IPPROTO_ICMP)?
        };
        let inner = match (from, inner_v6) {
            (IpAddr::V4(_), false) => ip_echo(from, VIP_V4.into(), id, seq, PAYLOAD),
            (IpAddr::V6(_), true) => ip_echo(from, VIP_V6.into(), id, seq, PAYLOAD),
            _ => panic!("{encap:?} needs an inner source of the other family, not {from}"),
        };
        let tx = raw_socket(outer_family, outer_proto)?;
        send_to(&tx, &inner, real)?;

        let deadline = Instant::now() + wait;
        let mut buf = [0u8; 2048];
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            set_rcvtimeo(&rx, left.max(Duration::from_millis(1)))?;
            let (n, src) = match recv_from(&rx, &mut buf) {
                Ok(got) => got,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            // Raw IPv4 sockets see the IP header, raw IPv6 sockets do not.
            let icmp = if inner_v6 { &buf[..n] } else { &buf[((buf[0] & 0xf) as usize * 4).min(n)..n] };
            let reply_type = if inner_v6 { 129 } else { 0 };
            let vip: IpAddr = if inner_v6 { VIP_V6.into() } else { VIP_V4.into() };
            if icmp.len() >= 8
                && icmp[0] == reply_type
                && icmp[4..6] == id.to_be_bytes()
                && icmp[6..8] == seq.to_be_bytes()
                && src == vip
            {
                return Ok(true);
            }
        }
        Ok(false)
    })
}

fn raw_socket(family: libc::c_int, proto: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(family, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn sockaddr(addr: IpAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match addr {
        IpAddr::V4(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.octets());
            size_of::<libc::sockaddr_in>()
        }
        IpAddr::V6(a) => {
            // SAFETY: sockaddr_storage is larger than and aligned for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_addr.s6_addr = a.octets();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn send_to(fd: &OwnedFd, payload: &[u8], dst: IpAddr) -> io::Result<()> {
    let (addr, len) = sockaddr(dst);
    // SAFETY: the buffer and the address are valid for the given lengths.
    let sent = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            payload.as_ptr().cast(),
            payload.len(),
            0,
            &addr as *const _ as *const libc::sockaddr,
            len,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn recv_from(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<(usize, IpAddr)> {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut addr: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: the buffer and the address are valid for the given lengths.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            &mut addr as *mut _ as *mut libc::sockaddr,
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let src = match addr.ss_family as libc::c_int {
        // SAFETY: the kernel filled in a sockaddr of the family it reports.
        libc::AF_INET => IpAddr::V4(Ipv4Addr::from(
            unsafe { *(&addr as *const _ as *const libc::sockaddr_in) }.sin_addr.s_addr.to_ne_bytes(),
        )),
        // SAFETY: as above.
        _ => IpAddr::V6(Ipv6Addr::from(unsafe { *(&addr as *const _ as *const libc::sockaddr_in6) }.sin6_addr.s6_addr)),
    };
    Ok((n as usize, src))
}

fn set_rcvtimeo(fd: &OwnedFd, timeout: Duration) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_usec: timeout.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: `tv` is a valid timeval for the given length.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const _ as *const libc::c_void,
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

const PAYLOAD: &[u8] = b"weir-e2e decap probe....";

fn xdp_attached(ns: &Netns, iface: &str) -> bool {
    ns.ip(["link", "show", "dev", iface]).expect("ip link show").contains(" prog/xdp ")
}

#[test]
fn decap_delivers_tunnelled_packets_to_the_vip() {
    if skip_unless_root("decap_delivers_tunnelled_packets_to_the_vip") {
        return;
    }
    let topo = Topology::build(TopologyConfig { reals: 2, ipv6: true, ..TopologyConfig::default() }).expect("build");
    let lb = &topo.lb;
    let lb_v6 = lb.v6.expect("dual-stack");
    let short = Duration::from_millis(500);

    // Control: without decap the reals cannot make sense of the packets.
    let answered =
        tunnelled_ping(&lb.ns, Encap::V4InV4, lb.v4.into(), topo.reals[0].v4.into(), 1, short).expect("probe");
    assert!(!answered, "a real answered an encapsulated ping without decap: the test proves nothing");

    topo.attach_decap().expect("attach decap");
    for real in &topo.reals {
        assert!(xdp_attached(&real.ns, &real.iface), "no XDP program on {}", real.iface);
        let real_v6: IpAddr = real.v6.expect("dual-stack").into();
        let probes = [
            (Encap::V4InV4, IpAddr::from(lb.v4), IpAddr::from(real.v4)),
            (Encap::V6InV6, IpAddr::from(lb_v6), real_v6),
            (Encap::V4InV6, IpAddr::from(lb.v4), real_v6),
        ];
        for (seq, (encap, from, to)) in probes.into_iter().enumerate() {
            let answered = tunnelled_ping(&lb.ns, encap, from, to, 100 + seq as u16, DEFAULT_TIMEOUT).expect("probe");
            assert!(answered, "{encap:?} via {} ({to}): no echo reply from the VIP", real.role);
        }
        // Counted by the outer header's family: one IPv4 outer, two IPv6 outer.
        let counters = real.ns.run(|| decap::counters(&real.iface, &topo.pin_root)).expect("decap counters");
        assert_eq!(counters[DecapStat::V4 as usize].v1, 1, "{}: {counters:?}", real.role);
        assert_eq!(counters[DecapStat::V6 as usize].v1, 2, "{}: {counters:?}", real.role);
    }
}

#[test]
fn decap_passes_plain_traffic_and_detaches_cleanly() {
    if skip_unless_root("decap_passes_plain_traffic_and_detaches_cleanly") {
        return;
    }
    let topo = Topology::build(TopologyConfig { reals: 2, ipv6: true, ..TopologyConfig::default() }).expect("build");
    topo.attach_decap().expect("attach decap");
    // Attaching twice is harmless (the second call has nothing left to do).
    topo.attach_decap().expect("attach decap again");
    for real in &topo.reals {
        let addrs: Vec<SocketAddr> = real.addrs().into_iter().map(|ip| SocketAddr::new(ip, 8080)).collect();
        let _server = serve(&real.ns, addrs.clone(), real.role.clone()).expect("serve");
        for addr in addrs {
            let name = connect_once(&topo.client.ns, addr, DEFAULT_TIMEOUT)
                .unwrap_or_else(|e| panic!("client -> {addr} with decap attached: {e:#}"));
            assert_eq!(name, real.role);
        }
        let counters = real.ns.run(|| decap::counters(&real.iface, &topo.pin_root)).expect("decap counters");
        assert!(counters[DecapStat::Pass as usize].v1 > 0, "{}: {counters:?}", real.role);
    }
    topo.detach_decap().expect("detach decap");
    for real in &topo.reals {
        assert!(!xdp_attached(&real.ns, &real.iface), "XDP still on {} after detach", real.iface);
    }
    let pin_root = topo.pin_root.clone();
    assert!(pin_root.exists());
    drop(topo);
    assert!(!pin_root.exists(), "{} survived the topology", pin_root.display());
}

#[test]
fn dropping_the_topology_detaches_decap() {
    if skip_unless_root("dropping_the_topology_detaches_decap") {
        return;
    }
    let topo = Topology::build(TopologyConfig { reals: 1, ipv6: false, ..TopologyConfig::default() }).expect("build");
    topo.attach_decap().expect("attach decap");
    let pin_root = topo.pin_root.clone();
    let netns = topo.reals[0].ns.run(pin::netns_cookie).expect("the namespace's cookie");
    assert!(pin::decap_dir(&pin_root, netns, &topo.reals[0].iface).join("link").exists());
    drop(topo);
    assert!(!pin_root.exists(), "{} survived the topology", pin_root.display());
}

/// Issue #10: three reals, each its own network namespace with an `eth0`
/// (as pods, or hostNetwork agents next to namespaced reals, on one machine
/// sharing one bpffs). Each gets its own decap program — none replaces
/// another's — and decapsulates its own traffic, counted in its own map.
#[test]
fn decap_in_three_namespaces_each_with_eth0() {
    if skip_unless_root("decap_in_three_namespaces_each_with_eth0") {
        return;
    }
    let config = TopologyConfig { reals: 3, ipv6: false, real_iface: Some("eth0".into()), ..TopologyConfig::default() };
    let topo = Topology::build(config).expect("build");
    let lb = &topo.lb;
    topo.attach_decap().expect("attach decap in every real");

    let mut prog_ids = Vec::new();
    for real in &topo.reals {
        assert_eq!(real.iface, "eth0");
        assert!(xdp_attached(&real.ns, "eth0"), "{}: no XDP program on its eth0", real.role);
        let link = real.ns.ip(["-d", "link", "show", "dev", "eth0"]).expect("ip link show");
        let id = link.split("prog/xdp id ").nth(1).and_then(|t| t.split_whitespace().next()).map(str::to_owned);
        prog_ids.push(id.unwrap_or_else(|| panic!("{}: no XDP program id in {link}", real.role)));
    }
    prog_ids.sort();
    prog_ids.dedup();
    assert_eq!(prog_ids.len(), 3, "the reals share a program: {prog_ids:?}");

    // Each real's traffic, in turn: delivered (the VIP answers), and counted
    // by that real's program only.
    let count = |real: &weir_e2e::topology::Host| {
        real.ns.run(|| decap::counters("eth0", &topo.pin_root)).expect("decap counters")[DecapStat::V4 as usize].v1
    };
    for (i, real) in topo.reals.iter().enumerate() {
        let before: Vec<u64> = topo.reals.iter().map(count).collect();
        let answered =
            tunnelled_ping(&lb.ns, Encap::V4InV4, lb.v4.into(), real.v4.into(), 300 + i as u16, DEFAULT_TIMEOUT)
                .expect("probe");
        assert!(answered, "{}: its encapsulated ping was not answered", real.role);
        let after: Vec<u64> = topo.reals.iter().map(count).collect();
        for (j, other) in topo.reals.iter().enumerate() {
            let want = u64::from(i == j);
            assert_eq!(after[j] - before[j], want, "{}'s decap counted {}'s packet", other.role, real.role);
        }
    }

    // Detaching one namespace's leaves the others' in place.
    topo.reals[0].ns.run(|| decap::detach("eth0", &topo.pin_root)).expect("detach in real0");
    for real in &topo.reals[1..] {
        assert!(xdp_attached(&real.ns, "eth0"), "{} lost its program when real0 detached", real.role);
    }
}
