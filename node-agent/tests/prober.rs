//! The built-in health checker (`weir_agent::prober`): each kind of probe
//! against real servers on the loopback interface, and the prober's
//! transitions as a server goes down and comes back, with their timing.
//!
//! TCP probes are half-open handshakes from a raw socket: their tests need
//! root (CAP_NET_RAW) and skip loudly without it.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use weir_agent::dataplane::VipId;
use weir_agent::prober::{
    probe, Check, HttpCheck, ProbeError, ProbeMetrics, ProbedReal, Prober, Target, Thresholds, Transition, UdpCheck,
    VipCheck,
};

const TIMEOUT: Duration = Duration::from_millis(500);

/// A real the prober starts from unhealthy.
fn unhealthy(addr: IpAddr, target: Target) -> ProbedReal {
    ProbedReal { addr, target, healthy: false }
}

fn target(addr: SocketAddr) -> Target {
    Target { addr, mark: 0 }
}

/// An address nothing listens on (a port just released).
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An HTTP/1.1 server answering `status` for `path`, 404 otherwise, and
/// recording the Host header it was sent.
async fn http_server(path: &'static str, status: u16) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            tokio::spawn(async move { answer(&mut stream, path, status, &tx).await });
        }
    });
    (addr, rx)
}

async fn answer<S>(stream: &mut S, path: &str, status: u16, hosts: &tokio::sync::mpsc::UnboundedSender<String>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request = Vec::new();
    let mut buf = [0u8; 1024];
    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await.unwrap();
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&request).into_owned();
    let host = text.lines().find_map(|l| l.strip_prefix("host: ").or(l.strip_prefix("Host: "))).unwrap_or("");
    let _ = hosts.send(host.to_owned());
    let got = if text.starts_with(&format!("GET {path} HTTP/1.1")) { status } else { 404 };
    let reply = format!("HTTP/1.1 {got} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    let _ = stream.write_all(reply.as_bytes()).await;
}

#[tokio::test]
async fn tcp_passes_on_a_syn_ack_and_leaves_no_connection() {
    if weir_test_support::skip_unless_root("tcp_passes_on_a_syn_ack_and_leaves_no_connection") {
        return;
    }
    for any in ["127.0.0.1:0", "[::1]:0"] {
        let listener = TcpListener::bind(any).await.unwrap();
        let up = listener.local_addr().unwrap();
        probe(&Check::Tcp, target(up), TIMEOUT).await.unwrap();
        probe(&Check::Tcp, target(up), TIMEOUT).await.unwrap();
        // Half-open: the handshake never completed, so nothing is accepted.
        let accepted = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(accepted.is_err(), "a probe completed a connection: {accepted:?}");
        drop(listener);
        let down = TcpListener::bind(any).await.unwrap().local_addr().unwrap();
        let err = probe(&Check::Tcp, target(down), TIMEOUT).await.unwrap_err();
        assert!(matches!(&err, ProbeError::Connect(e) if e.kind() == std::io::ErrorKind::ConnectionRefused), "{err}");
    }
}

#[tokio::test]
async fn tcp_probes_without_an_answer_time_out() {
    if weir_test_support::skip_unless_root("tcp_probes_without_an_answer_time_out") {
        return;
    }
    // A listener whose backlog is full drops further SYNs: no answer at all.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(0).unwrap();
    let addr = full.local_addr().unwrap();
    let mut held = Vec::new();
    while let Ok(Ok(stream)) =
        tokio::time::timeout(Duration::from_millis(100), tokio::net::TcpStream::connect(addr)).await
    {
        held.push(stream);
    }
    let err = probe(&Check::Tcp, target(addr), Duration::from_millis(200)).await.unwrap_err();
    assert_eq!(err.to_string(), "timed out after 200ms");
    drop((held, full));
}

#[tokio::test]
async fn http_passes_on_the_expected_status_only() {
    let (addr, mut hosts) = http_server("/healthz", 200).await;
    let check = |path: &str, expected_status, host: Option<&str>| {
        Check::Http(HttpCheck { path: path.into(), expected_status, host: host.map(str::to_owned) })
    };
    probe(&check("/healthz", 200, None), target(addr), TIMEOUT).await.unwrap();
    assert_eq!(hosts.recv().await.unwrap(), addr.to_string(), "Host defaults to the address");
    probe(&check("/healthz", 200, Some("app.example")), target(addr), TIMEOUT).await.unwrap();
    assert_eq!(hosts.recv().await.unwrap(), "app.example");
    let err = probe(&check("/other", 200, None), target(addr), TIMEOUT).await.unwrap_err();
    assert_eq!(err.to_string(), "status 404, expected 200");
    // A redirect is not followed: it is the status it is.
    let (moved, _) = http_server("/healthz", 301).await;
    let err = probe(&check("/healthz", 200, None), target(moved), TIMEOUT).await.unwrap_err();
    assert_eq!(err.to_string(), "status 301, expected 200");
}

#[tokio::test]
async fn https_checks_the_certificate_unless_told_not_to() {
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["app.example".to_owned()]).unwrap().self_signed(&key).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()))
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, mut hosts) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, tx) = (acceptor.clone(), tx.clone());
            tokio::spawn(async move {
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    answer(&mut tls, "/healthz", 200, &tx).await;
                }
            });
        }
    });
    let http = HttpCheck { path: "/healthz".into(), expected_status: 200, host: Some("app.example".into()) };
    let skip = Check::Https { http: http.clone(), skip_tls_verify: true };
    probe(&skip, target(addr), TIMEOUT).await.unwrap();
    assert_eq!(hosts.recv().await.unwrap(), "app.example");
    let verify = Check::Https { http, skip_tls_verify: false };
    let err = probe(&verify, target(addr), TIMEOUT).await.unwrap_err();
    assert!(err.to_string().starts_with("TLS: invalid peer certificate"), "{err}");
}

#[tokio::test]
async fn udp_passes_on_a_reply() {
    let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = server.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            let reply = if &buf[..n] == b"ping" { &b"pong"[..] } else { &b"what"[..] };
            server.send_to(reply, from).await.unwrap();
        }
    });
    let check = |payload: &[u8], expect: Option<&[u8]>| {
        Check::Udp(UdpCheck { payload: payload.to_vec(), expect: expect.map(<[u8]>::to_vec) })
    };
    probe(&check(b"ping", Some(b"pong")), target(addr), TIMEOUT).await.unwrap();
    probe(&check(b"hello", None), target(addr), TIMEOUT).await.unwrap();
    let err = probe(&check(b"hello", Some(b"pong")), target(addr), TIMEOUT).await.unwrap_err();
    assert_eq!(err.to_string(), "UDP reply 4 bytes, not the expected reply");
    // Nobody there: the kernel's port unreachable ends the probe at once.
    let gone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let gone_addr = gone.local_addr().unwrap();
    drop(gone);
    let err = probe(&check(b"ping", None), target(gone_addr), TIMEOUT).await.unwrap_err();
    assert!(matches!(&err, ProbeError::Udp(e) if e.kind() == std::io::ErrorKind::ConnectionRefused), "{err}");
}

#[tokio::test]
async fn a_probe_that_hangs_times_out() {
    // Accepts, never answers.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let check = Check::Http(HttpCheck { path: "/".into(), expected_status: 200, host: None });
    let started = Instant::now();
    let err = probe(&check, target(addr), Duration::from_millis(200)).await.unwrap_err();
    assert_eq!(err.to_string(), "timed out after 200ms");
    assert!(started.elapsed() < Duration::from_millis(400));
    drop(listener);
}

/// Waits for the next transition, at most `within`.
async fn next(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Transition>, within: Duration) -> Option<Transition> {
    tokio::time::timeout(within, rx.recv()).await.ok().flatten()
}

#[tokio::test]
async fn reals_turn_healthy_and_unhealthy_within_their_thresholds() {
    if weir_test_support::skip_unless_root("reals_turn_healthy_and_unhealthy_within_their_thresholds") {
        return;
    }
    let interval = Duration::from_millis(100);
    let thresholds = Thresholds { healthy: 2, unhealthy: 3 };
    let check = VipCheck { check: Check::Tcp, interval, timeout: Duration::from_millis(50), thresholds };
    let vip = VipId { addr: IpAddr::V4(Ipv4Addr::new(10, 100, 0, 1)), port: 80, proto: 6 };

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let down = closed_port().await;
    let (prober, mut rx) = Prober::start(16, ProbeMetrics::default());
    let (real_up, real_down) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    let started = Instant::now();
    prober.set_vip(vip, check.clone(), [unhealthy(real_up, target(up)), unhealthy(real_down, target(down))]);

    // Only the real that answers turns healthy: within 2 probes (+ its phase, < 1 interval).
    let t = next(&mut rx, interval * 4).await.expect("the up real turns healthy");
    assert_eq!(t, Transition { vip, real: real_up, healthy: true });
    assert!(started.elapsed() <= interval * 3 + Duration::from_millis(50), "{:?}", started.elapsed());
    let status = prober.status(&vip).unwrap();
    assert_eq!(
        status.iter().map(|s| (s.real, s.health.healthy)).collect::<Vec<_>>(),
        [(real_up, true), (real_down, false)]
    );
    let down_status = &status[1].health;
    assert!(
        down_status.consecutive_failures >= 1 && down_status.last_error.as_deref().unwrap().starts_with("connect:")
    );

    // Its server goes away: unhealthy after 3 failed probes (≤ 3 intervals + one in flight).
    drop(listener);
    let gone = Instant::now();
    let t = next(&mut rx, interval * 6).await.expect("the real turns unhealthy");
    assert_eq!(t, Transition { vip, real: real_up, healthy: false });
    assert!(gone.elapsed() <= interval * 4 + Duration::from_millis(50), "{:?}", gone.elapsed());

    // Reconfigured without the real: it is no longer probed.
    prober.set_vip(vip, check, [unhealthy(real_down, target(down))]);
    assert_eq!(prober.targets(), 1);
    assert!(prober.remove_vip(&vip));
    assert_eq!((prober.status(&vip), prober.targets()), (None, 0));
    assert_eq!(next(&mut rx, interval * 3).await, None, "no transition after removal");
}

#[tokio::test]
async fn concurrency_is_bounded() {
    // 50 targets whose server accepts and never answers: every probe lasts
    // its whole timeout. At most 5 at once.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let check = VipCheck {
        check: Check::Http(HttpCheck { path: "/".into(), expected_status: 200, host: None }),
        interval: Duration::from_millis(50),
        timeout: Duration::from_millis(40),
        thresholds: Thresholds::default(),
    };
    let accepted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut open = Vec::new();
        loop {
            let (s, _) = listener.accept().await.unwrap();
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            open.push(s);
        }
    });
    let (prober, _rx) = Prober::start(5, ProbeMetrics::default());
    let vip = VipId { addr: IpAddr::V4(Ipv4Addr::new(10, 100, 0, 1)), port: 80, proto: 6 };
    let reals = (0..50u8).map(|i| unhealthy(IpAddr::V4(Ipv4Addr::new(10, 0, 1, i)), target(addr)));
    prober.set_vip(vip, check, reals);
    // Unbounded, every target would probe every 50 ms: 250 probes in 250 ms.
    // With 5 permits, each held for the 40 ms a probe takes to time out, at
    // most 5 × ⌈250 / 40⌉ = 35 start.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let n = accepted.load(std::sync::atomic::Ordering::SeqCst);
    assert!((10..=35).contains(&n), "{n} probes started");
}

#[tokio::test]
async fn probes_start_from_the_health_given_and_a_health_set_by_hand_holds_until_the_next_result() {
    if weir_test_support::skip_unless_root(
        "probes_start_from_the_health_given_and_a_health_set_by_hand_holds_until_the_next_result",
    ) {
        return;
    }
    let interval = Duration::from_millis(100);
    let check = VipCheck {
        check: Check::Tcp,
        interval,
        timeout: Duration::from_millis(50),
        thresholds: Thresholds { healthy: 2, unhealthy: 2 },
    };
    let vip = VipId { addr: IpAddr::V4(Ipv4Addr::new(10, 100, 0, 1)), port: 80, proto: 6 };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let down = closed_port().await;
    let (real_up, real_down) = (IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)));
    let metrics = ProbeMetrics::default();
    let (prober, mut rx) = Prober::start(16, metrics.clone());
    // Both start healthy (as a restarted agent's saved health): the up real
    // stays so with no transition; the down one needs 2 failures.
    let healthy = |addr, t| ProbedReal { addr, target: target(t), healthy: true };
    prober.set_vip(vip, check, [healthy(real_up, up), healthy(real_down, down)]);
    let t = next(&mut rx, interval * 4).await.expect("the down real turns unhealthy");
    assert_eq!(t, Transition { vip, real: real_down, healthy: false });
    let down_status = prober.status(&vip).unwrap().into_iter().find(|s| s.real == real_down).unwrap();
    assert_eq!(down_status.health.consecutive_failures, 2, "exactly the threshold");

    // Set unhealthy by hand: the next successful probe puts it back.
    assert!(prober.applied(&vip, real_up, false));
    let t = next(&mut rx, interval * 2).await.expect("the next probe result reverts the hand-set health");
    assert_eq!(t, Transition { vip, real: real_up, healthy: true });
    assert!(!prober.applied(&vip, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 9)), true), "not a probed real");
    assert_eq!(next(&mut rx, interval * 2).await, None, "nothing else turns");

    // What the metrics saw: two transitions, probes of both results.
    let mut text = String::new();
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register("health_transitions", "t", metrics.transitions.clone());
    registry.register("probe_duration_seconds", "d", metrics.duration.clone());
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    let line = |real: &str, to: &str| {
        format!(
            "health_transitions_total{{address=\"10.100.0.1\",port=\"80\",proto=\"tcp\",real=\"{real}\",to=\"{to}\"}} 1"
        )
    };
    assert!(text.contains(&line("10.0.0.2", "unhealthy")) && text.contains(&line("10.0.0.1", "healthy")), "{text}");
    assert!(text.contains("probe_duration_seconds_count{type=\"tcp\",result=\"success\"}"), "{text}");
    assert!(text.contains("probe_duration_seconds_count{type=\"tcp\",result=\"failure\"}"), "{text}");
    drop(listener);
}
