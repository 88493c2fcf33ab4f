//! Health checking end to end: weir's prober in the lb namespace probes a
//! VIP's three reals through the healthcheck program (marked probes to the
//! VIP, tunnelled to each real, decapsulated there, answered by the real's
//! own server on the VIP), driven over the REST API as katran-server's
//! clients drive it; clients connect from their own namespace.
//!
//! One real's server stops listening (its established connections stay, as
//! in a graceful shutdown): within interval × unhealthy_threshold it is
//! unhealthy and no new connection reaches it, while an established one
//! keeps being served; it listens again: it is healthy within interval ×
//! healthy_threshold and receives new connections again. All three stop:
//! the VIP fails open and its status says so.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use weir_e2e::rest::RestAgent;
use weir_e2e::topology::fmt_mac;
use weir_e2e::{connect_once, serve_long_lived, skip_unless_root, Conn, Server, Topology, TopologyConfig, VIP_V4};

const INTERVAL_MS: u64 = 300;
const HEALTHY_THRESHOLD: u64 = 2;
const UNHEALTHY_THRESHOLD: u64 = 3;
/// What a transition may take beyond its probes: the prober's sync (200 ms)
/// and a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(700);
const STATUS: &str = "/api/v1/vips/healthcheck/status?address=10.200.255.1&port=80&proto=6";

/// `/lb/create` on the lb host's NIC in driver mode, with the healthcheck
/// program; its probes leave with the lb host's own address as outer source.
fn create_body(topo: &Topology, cleanup_on_shutdown: bool) -> Value {
    json!({
        "main_interface": topo.lb_iface(), "default_mac": fmt_mac(topo.default_mac()),
        "max_vips": 8, "max_reals": 64, "lru_size": 65536, "mtu": topo.fabric_mtu,
        "xdp_attach_flags": 4, // XDP_FLAGS_DRV_MODE
        "enable_hc": true, "katran_src_v4": topo.lb.v4.to_string(), "cleanup_on_shutdown": cleanup_on_shutdown,
    })
}

fn vip() -> Value {
    json!({"address": VIP_V4.to_string(), "port": 80, "proto": 6})
}

/// Each real's health, by address, and whether the VIP fails open.
fn health(agent: &RestAgent) -> (BTreeMap<String, bool>, bool) {
    let status = agent.expect("GET", STATUS, None, 200).unwrap();
    let reals = status["reals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["address"].as_str().unwrap().to_owned(), r["healthy"].as_bool().unwrap()))
        .collect();
    (reals, status["fail_open"].as_bool().unwrap())
}

/// Polls until `done` holds for the VIP's health; how long that took.
fn wait_for(
    agent: &RestAgent,
    within: Duration,
    what: &str,
    done: impl Fn(&BTreeMap<String, bool>, bool) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        let (reals, fail_open) = health(agent);
        if done(&reals, fail_open) {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "{what}: not within {within:?}: {reals:?}, fail_open {fail_open}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Which real serves each of `n` new connections from the client.
fn new_connections(topo: &Topology, n: usize) -> BTreeMap<String, usize> {
    let socket = SocketAddr::new(VIP_V4.into(), 80);
    let mut served = BTreeMap::new();
    for _ in 0..n {
        let mut conn = Conn::open(&topo.client.ns, socket, Duration::from_secs(3)).expect("connect to the VIP");
        *served.entry(conn.ask().expect("an answer")).or_insert(0) += 1;
    }
    served
}

#[test]
fn probes_through_the_tunnel_take_a_dead_real_out_bring_it_back_and_fail_open() {
    if skip_unless_root("probes_through_the_tunnel_take_a_dead_real_out_bring_it_back_and_fail_open") {
        return;
    }
    let topo = Topology::build(TopologyConfig { reals: 3, ..TopologyConfig::default() }).unwrap();
    topo.attach_decap().unwrap();
    let agent = RestAgent::start_with_prober(&topo).unwrap();
    agent.expect("POST", "/api/v1/lb/create", Some(create_body(&topo, true)), 201).unwrap();
    agent
        .expect("POST", "/api/v1/vips", Some(json!({"address": VIP_V4.to_string(), "port": 80, "proto": 6})), 201)
        .unwrap();
    let reals: Vec<_> =
        topo.reals.iter().map(|r| json!({"address": r.v4.to_string(), "weight": 1, "flags": 0})).collect();
    agent
        .expect("PUT", "/api/v1/vips/reals/batch", Some(json!({"vip": vip(), "action": 0, "reals": reals})), 200)
        .unwrap();
    let addrs: Vec<String> = topo.reals.iter().map(|r| r.v4.to_string()).collect();
    let listed = agent.expect("GET", "/api/v1/vips/reals?address=10.200.255.1&port=80&proto=6", None, 200).unwrap();
    assert!(
        listed.as_array().unwrap().iter().all(|r| r["healthy"] == json!(false)),
        "with the prober, new reals start unhealthy: {listed}"
    );

    let socket = SocketAddr::new(VIP_V4.into(), 80);
    let serve =
        |i: usize| -> Server { serve_long_lived(&topo.reals[i].ns, vec![socket], topo.reals[i].role.clone()).unwrap() };
    let mut servers: Vec<Server> = (0..3).map(serve).collect();
    let hc = agent.expect("GET", "/api/v1/stats/hc-prog", None, 200).unwrap();
    assert_eq!(hc["packets_processed"], json!(0), "no probe before a check: {hc}");
    assert!(servers.iter().all(|s| s.accepted() == 0));

    let check = json!({"vip": vip(), "healthcheck": {"type": "tcp", "interval_ms": INTERVAL_MS, "timeout_ms": 200,
        "healthy_threshold": HEALTHY_THRESHOLD, "unhealthy_threshold": UNHEALTHY_THRESHOLD}});
    agent.expect("PUT", "/api/v1/vips/healthcheck", Some(check), 200).unwrap();
    let interval = Duration::from_millis(INTERVAL_MS);
    // Healthy after `healthy_threshold` probes, the first within an interval.
    let took = wait_for(&agent, interval * (HEALTHY_THRESHOLD as u32 + 1) + SLACK, "all three healthy", |r, _| {
        r.values().all(|&h| h)
    });
    eprintln!("all reals healthy {took:?} after the check was stored");
    // The marked probes reached each real's listener on the VIP, through the
    // program: only a real's namespace answers for the VIP (that each mark
    // reaches its own real shows below: only the stopped real turns
    // unhealthy). Half-open: a SYN and a reset each, no connection accepted.
    for s in &servers {
        assert_eq!(s.accepted(), 0, "{} accepted a probe's connection", s.name());
    }
    let hc = agent.expect("GET", "/api/v1/stats/hc-prog", None, 200).unwrap();
    assert!(hc["packets_processed"].as_u64().unwrap() >= 3 * 2 * HEALTHY_THRESHOLD, "{hc}");
    assert_eq!(hc["packets_dropped"], json!(0), "{hc}");
    assert_eq!(
        agent.expect("GET", "/api/v1/healthcheck/dsts", None, 200).unwrap(),
        json!([]),
        "the prober's marks are its own"
    );
    let status = agent.expect("GET", STATUS, None, 200).unwrap();
    let first = &status["reals"][0];
    let time = first["last_check_time"].as_str().unwrap();
    assert!(time.len() == 20 && time.ends_with('Z') && time.as_bytes()[10] == b'T', "RFC 3339 seconds: {time}");
    assert_eq!(first["consecutive_failures"], json!(0));
    assert!(first["last_status_change"].is_string(), "{first}");

    let served = new_connections(&topo, 60);
    assert_eq!(served.len(), 3, "every real serves new connections: {served:?}");

    // An established connection to real0, then real0 stops listening.
    let mut established = loop {
        let mut conn = Conn::open(&topo.client.ns, socket, Duration::from_secs(3)).unwrap();
        if conn.ask().unwrap() == "real0" {
            break conn;
        }
    };
    servers[0].close_listeners(true);
    let took = wait_for(&agent, interval * UNHEALTHY_THRESHOLD as u32 + SLACK, "real0 unhealthy", |r, _| {
        !r[&addrs[0]] && r[&addrs[1]] && r[&addrs[2]]
    });
    eprintln!(
        "real0 unhealthy {took:?} after its server stopped listening (interval x threshold = {:?})",
        interval * UNHEALTHY_THRESHOLD as u32
    );
    let status = agent.expect("GET", STATUS, None, 200).unwrap();
    assert!(status["reals"][0]["consecutive_failures"].as_u64().unwrap() >= UNHEALTHY_THRESHOLD, "{status}");
    assert_eq!(status["fail_open"], json!(false));
    let served = new_connections(&topo, 60);
    assert_eq!(served.get("real0"), None, "no new connection reaches the unhealthy real: {served:?}");
    assert_eq!(served.values().sum::<usize>(), 60);
    assert_eq!(established.ask().unwrap(), "real0", "the established connection is not cut");

    // real0 listens again: healthy within the healthy threshold, served again.
    let old = std::mem::replace(&mut servers[0], serve(0));
    let took = wait_for(&agent, interval * (HEALTHY_THRESHOLD as u32 + 1) + SLACK, "real0 healthy again", |r, _| {
        r.values().all(|&h| h)
    });
    eprintln!("real0 healthy again {took:?} after its server listened again");
    let served = new_connections(&topo, 60);
    assert!(served.get("real0").is_some_and(|&n| n > 0), "real0 receives new connections again: {served:?}");
    assert_eq!(established.ask().unwrap(), "real0");
    drop(established);
    drop(old);

    // Every server stops listening: every real unhealthy, the VIP fails open.
    for s in &servers {
        s.close_listeners(false);
    }
    wait_for(&agent, interval * UNHEALTHY_THRESHOLD as u32 + SLACK * 2, "fail open", |r, fail_open| {
        r.values().all(|&h| !h) && fail_open
    });
    let listed = agent.expect("GET", "/api/v1/vips/reals?address=10.200.255.1&port=80&proto=6", None, 200).unwrap();
    assert!(listed.as_array().unwrap().iter().all(|r| r["healthy"] == json!(false)), "{listed}");
    // Fail open keeps every real in the ring: a connection is tried (and
    // refused by a real) rather than dropped by the balancer.
    let refused = connect_once(&topo.client.ns, socket, Duration::from_secs(1)).unwrap_err();
    assert!(format!("{refused:#}").contains("refused"), "{refused:#}");
}

/// Serves, in `ns` until `stop`, HTTP on `http` (every GET answered with
/// `status`) and UDP on `udp` (every datagram answered with `reply`).
fn serve_checks(
    ns: &weir_e2e::Netns,
    http: SocketAddr,
    status: u16,
    udp: SocketAddr,
    reply: &'static str,
    stop: &std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> Vec<std::thread::JoinHandle<()>> {
    use std::io::{Read, Write};
    use std::sync::atomic::Ordering;
    let stopped = stop.clone();
    let web = ns
        .spawn(move || {
            let listener = std::net::TcpListener::bind(http).unwrap();
            listener.set_nonblocking(true).unwrap();
            while !stopped.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
                        let mut request = Vec::new();
                        let mut buf = [0u8; 1024];
                        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                            match stream.read(&mut buf) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => request.extend_from_slice(&buf[..n]),
                            }
                        }
                        let ok = request.starts_with(b"GET /healthz HTTP/1.1\r\n");
                        let code = if ok { status } else { 404 };
                        let _ = write!(stream, "HTTP/1.1 {code} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        })
        .unwrap();
    let stopped = stop.clone();
    let echo = ns
        .spawn(move || {
            let socket = std::net::UdpSocket::bind(udp).unwrap();
            socket.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
            let mut buf = [0u8; 64];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    if &buf[..n] == b"ping" {
                        let _ = socket.send_to(reply.as_bytes(), from);
                    }
                }
            }
        })
        .unwrap();
    vec![web, echo]
}

#[test]
fn http_and_udp_checks_go_through_the_tunnel_and_reals_share_marks_across_vips() {
    if skip_unless_root("http_and_udp_checks_go_through_the_tunnel_and_reals_share_marks_across_vips") {
        return;
    }
    let topo = Topology::build(TopologyConfig { reals: 3, ..TopologyConfig::default() }).unwrap();
    topo.attach_decap().unwrap();
    let agent = RestAgent::start_with_prober(&topo).unwrap();
    agent.expect("POST", "/api/v1/lb/create", Some(create_body(&topo, true)), 201).unwrap();
    let tcp = json!({"address": VIP_V4.to_string(), "port": 80, "proto": 6});
    let udp = json!({"address": VIP_V4.to_string(), "port": 53, "proto": 17});
    let reals: Vec<_> = topo.reals.iter().map(|r| json!({"address": r.v4.to_string(), "weight": 1})).collect();
    for vip in [&tcp, &udp] {
        agent.expect("POST", "/api/v1/vips", Some(vip.clone()), 201).unwrap();
        agent
            .expect("PUT", "/api/v1/vips/reals/batch", Some(json!({"vip": vip, "action": 0, "reals": reals})), 200)
            .unwrap();
    }
    // real0 answers its health URL with 503; real2 answers UDP wrongly.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let http_at = SocketAddr::new(VIP_V4.into(), 8080);
    let udp_at = SocketAddr::new(VIP_V4.into(), 53);
    let answers = [(503, "pong"), (200, "pong"), (200, "nope")];
    let servers: Vec<_> = topo
        .reals
        .iter()
        .zip(answers)
        .flat_map(|(r, (status, reply))| serve_checks(&r.ns, http_at, status, udp_at, reply, &stop))
        .collect();
    let checks = [
        (&tcp, json!({"type": "http", "port": 8080, "http": {"path": "/healthz", "expected_status": 200}})),
        (&udp, json!({"type": "udp", "udp": {"payload": "ping", "expect": "pong"}})),
    ];
    for (vip, check) in &checks {
        let mut check = check.clone();
        check.as_object_mut().unwrap().extend(
            json!({"interval_ms": 200, "timeout_ms": 150, "healthy_threshold": 2, "unhealthy_threshold": 2})
                .as_object()
                .unwrap()
                .clone(),
        );
        agent.expect("PUT", "/api/v1/vips/healthcheck", Some(json!({"vip": vip, "healthcheck": check})), 200).unwrap();
    }
    let status = |vip: &Value| {
        let path = format!(
            "/api/v1/vips/healthcheck/status?address={}&port={}&proto={}",
            vip["address"].as_str().unwrap(),
            vip["port"],
            vip["proto"]
        );
        agent.expect("GET", &path, None, 200).unwrap()
    };
    let healthy = |s: &Value| -> Vec<bool> {
        s["reals"].as_array().unwrap().iter().map(|r| r["healthy"].as_bool().unwrap()).collect()
    };
    let start = Instant::now();
    while healthy(&status(&tcp)) != [false, true, true] || healthy(&status(&udp)) != [true, true, false] {
        assert!(start.elapsed() < Duration::from_secs(5), "tcp {} udp {}", status(&tcp), status(&udp));
        std::thread::sleep(Duration::from_millis(20));
    }
    // The failing ones keep failing, for the reason their probes give.
    std::thread::sleep(Duration::from_millis(400));
    let (t, u) = (status(&tcp), status(&udp));
    assert_eq!((healthy(&t), healthy(&u)), (vec![false, true, true], vec![true, true, false]));
    assert!(t["reals"][0]["consecutive_failures"].as_u64().unwrap() >= 2, "{t}");
    assert!(u["reals"][2]["consecutive_failures"].as_u64().unwrap() >= 2, "{u}");
    // Three reals, two VIPs: the prober wrote one mark per real address, and
    // lists none of them among the operator's destinations.
    assert_eq!(agent.expect("GET", "/api/v1/healthcheck/dsts", None, 200).unwrap(), json!([]));
    let hc = agent.expect("GET", "/api/v1/stats/hc-prog", None, 200).unwrap();
    assert!(hc["packets_processed"].as_u64().unwrap() > 0 && hc["packets_dropped"] == json!(0), "{hc}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    servers.into_iter().for_each(|s| s.join().unwrap());
}

/// The prober's marks in the pinned healthcheck program of `topo`'s balancer.
fn pinned_marks(topo: &Topology) -> usize {
    let netns = topo.lb.ns.run(|| weir_agent::dataplane::pin::netns_cookie().unwrap());
    let map = weir_agent::dataplane::pin::balancer_dir(&topo.pin_root, netns, topo.lb_iface()).join("weir_hc_reals");
    let out = std::process::Command::new("bpftool").args(["-j", "map", "dump", "pinned"]).arg(&map).output().unwrap();
    assert!(out.status.success(), "bpftool: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().len()
}

#[test]
fn a_restarted_agent_keeps_health_and_marks_and_a_removed_check_stops_probing() {
    if skip_unless_root("a_restarted_agent_keeps_health_and_marks_and_a_removed_check_stops_probing") {
        return;
    }
    let topo = Topology::build(TopologyConfig { reals: 3, ..TopologyConfig::default() }).unwrap();
    topo.attach_decap().unwrap();
    let create = create_body(&topo, false);
    let socket = SocketAddr::new(VIP_V4.into(), 80);
    // The listeners the probes find (kept for the whole test).
    let _servers: Vec<Server> =
        topo.reals.iter().map(|r| serve_long_lived(&r.ns, vec![socket], r.role.clone()).unwrap()).collect();
    let check = json!({"vip": vip(), "healthcheck": {"type": "tcp", "interval_ms": 200, "timeout_ms": 150,
        "healthy_threshold": 2, "unhealthy_threshold": 2}});
    {
        let agent = RestAgent::start_with_prober(&topo).unwrap();
        agent.expect("POST", "/api/v1/lb/create", Some(create.clone()), 201).unwrap();
        agent.expect("POST", "/api/v1/vips", Some(vip()), 201).unwrap();
        let reals: Vec<_> = topo.reals.iter().map(|r| json!({"address": r.v4.to_string(), "weight": 1})).collect();
        agent
            .expect("PUT", "/api/v1/vips/reals/batch", Some(json!({"vip": vip(), "action": 0, "reals": reals})), 200)
            .unwrap();
        agent.expect("PUT", "/api/v1/vips/healthcheck", Some(check.clone()), 200).unwrap();
        wait_for(&agent, Duration::from_secs(3), "all healthy", |r, _| r.values().all(|&h| h));
        assert_eq!(pinned_marks(&topo), 3, "one mark per real");
    }
    // A new agent adopts the datapath: the saved health holds from the first
    // answer (no real is pulled out while probes start over), the marks are
    // reused rather than doubled.
    let agent = RestAgent::start_with_prober(&topo).unwrap();
    agent.expect("POST", "/api/v1/lb/create", Some(create), 201).unwrap();
    let (reals, fail_open) = health(&agent);
    assert!(reals.values().all(|&h| h) && !fail_open, "{reals:?}");
    std::thread::sleep(Duration::from_millis(600));
    let (reals, _) = health(&agent);
    assert!(reals.values().all(|&h| h), "still healthy after probes resumed: {reals:?}");
    assert_eq!(pinned_marks(&topo), 3, "the adopted marks were reused");
    let tunnelled = || -> u64 {
        agent.expect("GET", "/api/v1/stats/hc-prog", None, 200).unwrap()["packets_processed"].as_u64().unwrap()
    };
    assert!(tunnelled() > 0);

    // The check removed: probes stop (within a sync), the marks go, health stays.
    agent.expect("DELETE", "/api/v1/vips/healthcheck?address=10.200.255.1&port=80&proto=6", None, 200).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let before = tunnelled();
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(tunnelled(), before, "no probe after the check went");
    assert_eq!(pinned_marks(&topo), 0);
    let listed = agent.expect("GET", "/api/v1/vips/reals?address=10.200.255.1&port=80&proto=6", None, 200).unwrap();
    assert!(listed.as_array().unwrap().iter().all(|r| r["healthy"] == json!(true)), "{listed}");
    agent.expect("POST", "/api/v1/lb/close", None, 200).unwrap();
}
