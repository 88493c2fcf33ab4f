//! ICMP too-big end to end: a 1 MB TCP upload from the client through a VIP
//! whose path has no room for the encapsulation (lb and real links at MTU
//! 1500, the client's too). The client's full-size segments (1500 bytes of
//! IP) are 1520 or 1540 bytes once encapsulated: the balancer answers the
//! first ones with ICMP "fragmentation needed" / ICMPv6 "packet too big",
//! the client's path MTU discovery lowers its segment size, and the upload
//! completes. Without the reply, it would stall at its first full segment.
//!
//! Proof that the client really got the reply: the balancer counted it, and
//! the client's route to the VIP carries the reported MTU in its cache
//! (`ip route get`).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use weir_agent::dataplane::{Balancer, BalancerConfig};
use weir_e2e::lb::{self, vip_socket};
use weir_e2e::{skip_unless_root, Netns, Topology, TopologyConfig};
use weir_ebpf::abi::Stat;

/// The upload: 1 MiB.
const UPLOAD: usize = 1 << 20;
/// Long enough for a 1 MiB upload over veths, short enough to fail fast.
const TIMEOUT: Duration = Duration::from_secs(20);

/// A sink on `ns` at `addr`: accepts one connection, reads it to its end,
/// answers with the number of bytes read and a newline. Returns that number.
fn sink(ns: &Netns, addr: SocketAddr, timeout: Duration) -> std::thread::JoinHandle<std::io::Result<usize>> {
    let listener = ns.run(|| TcpListener::bind(addr)).expect("bind the sink on the real");
    listener.set_nonblocking(true).expect("a non-blocking listener");
    std::thread::spawn(move || {
        let deadline = Instant::now() + timeout;
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Err(e) => return Err(e),
            }
        };
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut received = 0;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match stream.read(&mut buf)? {
                0 => break,
                n => received += n,
            }
        }
        stream.write_all(format!("{received}\n").as_bytes())?;
        Ok(received)
    })
}

/// Uploads [`UPLOAD`] bytes from the client to `addr` and returns the byte
/// count the server answered with; fails when a write or the answer takes
/// longer than `timeout`.
fn upload(ns: &Netns, addr: SocketAddr, timeout: Duration) -> anyhow::Result<usize> {
    let stream = ns.run(|| TcpStream::connect_timeout(&addr, Duration::from_secs(3)))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.set_read_timeout(Some(timeout))?;
    let data: Vec<u8> = (0..UPLOAD).map(|i| (i % 251) as u8).collect();
    (&stream).write_all(&data)?;
    stream.shutdown(Shutdown::Write)?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    Ok(line.trim_end().parse()?)
}

/// One real behind links of MTU 1500, its decap program attached.
fn topology() -> Topology {
    let topo = Topology::build(TopologyConfig { reals: 1, fabric_mtu: 1500, ..TopologyConfig::default() })
        .expect("build the topology");
    topo.attach_decap().expect("attach decap on the real");
    topo
}

fn upload_completes(vip_v6: bool, real_v6: bool, want_mtu: u32) {
    let topo = topology();
    let mut balancer = lb::start(&topo, true).expect("start the balancer");
    assert!(balancer.config().icmp_too_big, "ICMP too-big generation is on by default");
    let vip = lb::vip(&topo, vip_v6).unwrap();
    lb::add_vip(&mut balancer, &topo, vip, &[0], real_v6).unwrap();

    let server = sink(&topo.reals[0].ns, vip_socket(vip), TIMEOUT);
    let sent = upload(&topo.client.ns, vip_socket(vip), TIMEOUT).unwrap_or_else(|e| panic!("upload to {vip}: {e:#}"));
    let received = server.join().expect("the sink thread").expect("the sink");
    assert_eq!((sent, received), (UPLOAD, UPLOAD), "the whole upload arrived");

    // The balancer answered at least one segment, in the VIP's family.
    let too_big = balancer.stat(Stat::IcmpTooBig).unwrap();
    let answered = if vip_v6 { too_big.v2 } else { too_big.v1 };
    assert!(answered >= 1, "no packet too big was answered: {too_big:?}");
    // The client took the reply: its route to the VIP caches the MTU reported.
    let route = topo.client.ns.ip(["route", "get", &vip.addr.to_string()]).expect("ip route get");
    assert!(route.contains(&format!("mtu {want_mtu}")), "the client's route to {vip}: {route}");
    // And everything after went through: more VIP packets sent on than answered.
    let tx = balancer.stat(Stat::XdpTx).unwrap().v1;
    assert!(balancer.vip_stats(&vip).unwrap().v1 > (UPLOAD / 1500) as u64, "VIP packets sent on (XDP_TX {tx})");
}

#[test]
fn ipv4_upload_at_mtu_1500_completes() {
    if skip_unless_root("ipv4_upload_at_mtu_1500_completes") {
        return;
    }
    upload_completes(false, false, 1480);
}

#[test]
fn ipv6_upload_at_mtu_1500_completes() {
    if skip_unless_root("ipv6_upload_at_mtu_1500_completes") {
        return;
    }
    upload_completes(true, true, 1460);
}

#[test]
fn ipv4_upload_to_ipv6_reals_at_mtu_1500_completes() {
    if skip_unless_root("ipv4_upload_to_ipv6_reals_at_mtu_1500_completes") {
        return;
    }
    upload_completes(false, true, 1460);
}

/// The control: the same upload with generation switched off stalls at its
/// first full-size segment (dropped, counted, never answered).
#[test]
fn without_the_reply_the_upload_stalls() {
    if skip_unless_root("without_the_reply_the_upload_stalls") {
        return;
    }
    let topo = topology();
    let config = BalancerConfig { icmp_too_big: false, ..lb::config(&topo, true) };
    let mut balancer = topo.lb.ns.run(|| Balancer::new(config)).expect("start the balancer");
    let vip = lb::vip(&topo, false).unwrap();
    lb::add_vip(&mut balancer, &topo, vip, &[0], false).unwrap();
    let stall = Duration::from_secs(3);
    let server = sink(&topo.reals[0].ns, vip_socket(vip), stall);
    let sent = upload(&topo.client.ns, vip_socket(vip), stall);
    assert!(sent.is_err(), "the upload completed without ICMP too-big: {sent:?}");
    let received = server.join().expect("the sink thread");
    assert!(!matches!(received, Ok(UPLOAD)), "the sink got the whole upload: {received:?}");
    assert!(balancer.stat(Stat::IcmpTooBig).unwrap().v1 >= 1, "the full-size segments were counted");
    assert!(balancer.stat(Stat::XdpDrop).unwrap().v1 >= 1, "and dropped");
}
