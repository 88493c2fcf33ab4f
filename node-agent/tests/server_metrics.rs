//! The metrics listener over real sockets: after a balancer is created in
//! testing mode through the API and packets are simulated through the real
//! program, `GET /metrics` carries the exact per-VIP, per-real, verdict and
//! global counter values, the table sizes, and the API request counters for
//! the routes used. Creating a balancer needs root: without it the test prints
//! `SKIPPED (needs root): <test>` and returns.

mod support {
    pub mod server;
}

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine;
use serde_json::json;
use support::server::*;
use tokio::net::TcpListener;
use weir_agent::api::ApiState;
use weir_agent::metrics::{datapath, Metrics};
use weir_agent::server::{exposition, AppOptions, Timeouts};
use weir_test_support::packet::{l3_len, sock, syn, v4};

/// The value of the sample `series` (name and labels, exactly) in `text`.
fn sample(text: &str, series: &str) -> Option<u64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn assert_sample(text: &str, series: &str, want: u64) {
    assert_eq!(sample(text, series), Some(want), "{series} in:\n{text}");
}

async fn scrape(addr: SocketAddr) -> String {
    let response = client().get(format!("http://{addr}/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], weir_agent::metrics::CONTENT_TYPE);
    response.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_the_datapath_and_the_api() {
    if !root_or_skip("metrics_report_the_datapath_and_the_api") {
        return;
    }
    let state = ApiState::default();
    let metrics = Arc::new(Metrics::new(&state.datapath(), datapath::Options::default()));
    let options = AppOptions { request_logging: false, ..AppOptions::default() };
    let server = Server::start_with(Setup {
        options,
        metrics: Some(metrics.api()),
        state: Some(state.clone()),
        ..Setup::default()
    })
    .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let exposition =
        tokio::spawn(exposition::serve(listener, metrics.clone(), state.clone(), Timeouts::default(), 64, async {
            let _ = stopped.await;
        }));

    let text = scrape(metrics_addr).await;
    // The probes are on the metrics listener too (kubelet's source is not in the API's allowlist).
    let probe = |path: &'static str| async move {
        let r = reqwest::get(format!("http://{metrics_addr}{path}")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    assert_eq!(
        probe("/health").await,
        (200, r#"{"success":true,"data":{"status":"ok","read_only":false}}"#.to_owned())
    );
    assert_eq!(probe("/health/ready").await.0, 503);
    assert_sample(&text, "weir_agent_balancer_initialized", 0);
    assert!(!text.contains("weir_agent_vip_packets_total{"), "no datapath series before /lb/create");

    let http = client();
    let post = |path: &str, body: serde_json::Value| http.post(server.url(path)).json(&body).send();
    let create = json!({"testing": true, "max_vips": 16, "max_reals": 64, "lru_size": 4096});
    assert_eq!(post("/api/v1/lb/create", create).await.unwrap().status(), 201);
    assert_eq!(probe("/health/ready").await.0, 200);
    let vip = json!({"address": "10.0.0.1", "port": 80, "proto": 6});
    assert_eq!(post("/api/v1/vips", vip.clone()).await.unwrap().status(), 201);
    let real = json!({"vip": vip, "real": {"address": "10.1.0.1", "weight": 1}});
    assert_eq!(post("/api/v1/vips/reals", real).await.unwrap().status(), 201);

    // Five SYNs from five clients to the VIP, and one packet to no VIP.
    let mut vip_bytes = 0;
    let frames = (1..=5).map(|i| syn(sock(v4(198, 51, 100, i), 40_000 + u16::from(i)), sock(v4(10, 0, 0, 1), 80)));
    let stray = syn(sock(v4(198, 51, 100, 9), 40_009), sock(v4(10, 9, 9, 9), 80));
    for (n, frame) in frames.chain([stray]).enumerate() {
        let packet = base64::engine::general_purpose::STANDARD.encode(&frame);
        let (status, body) =
            json(post("/api/v1/utils/simulate-packet", json!({"packet": packet})).await.unwrap()).await;
        assert_eq!(status, 200, "{body}");
        let verdict = if n < 5 { "XDP_TX" } else { "XDP_PASS" };
        assert_eq!(body["data"]["verdict"], verdict, "{body}");
        if n < 5 {
            vip_bytes += l3_len(&frame);
        }
    }
    let (status, _) = json(http.get(server.url("/no/such/path")).send().await.unwrap()).await;
    assert_eq!(status, 404);

    let text = scrape(metrics_addr).await;
    let vip_series = "{address=\"10.0.0.1\",port=\"80\",proto=\"tcp\"}";
    assert_sample(&text, &format!("weir_agent_vip_packets_total{vip_series}"), 5);
    assert_sample(&text, &format!("weir_agent_vip_bytes_total{vip_series}"), vip_bytes);
    assert_sample(&text, "weir_agent_real_packets_total{address=\"10.1.0.1\"}", 5);
    assert_sample(&text, "weir_agent_real_bytes_total{address=\"10.1.0.1\"}", vip_bytes);
    assert_sample(&text, "weir_agent_xdp_packets_total{verdict=\"tx\"}", 5);
    assert_sample(&text, "weir_agent_xdp_packets_total{verdict=\"pass\"}", 1);
    assert_sample(&text, "weir_agent_xdp_packets_total{verdict=\"drop\"}", 0);
    assert_sample(&text, "weir_agent_vip_matched_packets_total", 5);
    assert_sample(&text, "weir_agent_conn_table_misses_total", 5);
    assert_sample(&text, "weir_agent_conn_table_tcp_syn_misses_total", 5);
    assert_sample(&text, "weir_agent_conn_table_tcp_non_syn_misses_total", 0);
    assert_sample(&text, "weir_agent_ring_empty_slot_drops_total", 0);
    let per_cpu: u64 = text
        .lines()
        .filter(|l| l.starts_with("weir_agent_cpu_packets_total{cpu="))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
        .sum();
    assert_eq!(per_cpu, 6, "every simulated packet counted on some CPU");
    assert_sample(&text, "weir_agent_balancer_initialized", 1);
    assert_sample(&text, "weir_agent_balancer_attached", 0);
    assert_sample(&text, "weir_agent_under_flood", 0);
    assert_sample(&text, "weir_agent_table_capacity{table=\"vips\"}", 16);
    assert_sample(&text, "weir_agent_table_capacity{table=\"reals\"}", 64);
    assert_sample(&text, "weir_agent_table_capacity{table=\"conn_table\"}", 4096);
    assert_sample(&text, "weir_agent_table_entries{table=\"vips\"}", 1);
    assert_sample(&text, "weir_agent_table_entries{table=\"reals\"}", 1);
    assert!(!text.contains("weir_agent_table_entries{table=\"conn_table\"}"), "opt-in only");

    let api = |method: &str, route: &str, code: u16| {
        format!("weir_agent_api_requests_total{{method=\"{method}\",route=\"{route}\",code=\"{code}\"}}")
    };
    assert_sample(&text, &api("POST", "/api/v1/utils/simulate-packet", 200), 6);
    assert_sample(&text, &api("POST", "/api/v1/lb/create", 201), 1);
    assert_sample(&text, &api("POST", "/api/v1/vips", 201), 1);
    assert_sample(&text, &api("GET", "unmatched", 404), 1);
    assert_sample(
        &text,
        "weir_agent_api_request_duration_seconds_count{method=\"POST\",route=\"/api/v1/utils/simulate-packet\"}",
        6,
    );
    assert_sample(&text, &format!("weir_agent_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION")), 1);
    // The prober's families (written once they hold a series), in seconds.
    let probes = metrics.probes();
    let labels = weir_agent::prober::DurationLabels { r#type: "tcp", result: "success" };
    probes.duration.get_or_create(&labels).observe(0.0003);
    let labels = weir_agent::prober::TransitionLabels {
        address: "10.0.0.1".into(),
        port: 80,
        proto: "tcp".into(),
        real: "10.1.0.1".into(),
        to: "unhealthy",
    };
    probes.transitions.get_or_create(&labels).inc();
    let text = scrape(metrics_addr).await;
    assert!(
        text.contains(
            "# TYPE weir_agent_probe_duration_seconds histogram\n# UNIT weir_agent_probe_duration_seconds seconds"
        ),
        "{text}"
    );
    assert_sample(
        &text,
        "weir_agent_health_transitions_total{address=\"10.0.0.1\",port=\"80\",proto=\"tcp\",real=\"10.1.0.1\",to=\"unhealthy\"}",
        1,
    );
    assert_sample(&text, "weir_agent_probe_duration_seconds_bucket{le=\"0.0005\",type=\"tcp\",result=\"success\"}", 1);

    // Counting the connection table is opt-in: one entry per simulated SYN to the VIP.
    let counting = Metrics::new(&state.datapath(), datapath::Options { conn_table_usage: true });
    let text = tokio::task::spawn_blocking(move || counting.encode()).await.unwrap();
    assert_sample(&text, "weir_agent_table_entries{table=\"conn_table\"}", 5);

    let _ = stop.send(());
    exposition.await.unwrap().unwrap();
    server.stop().await;
}
