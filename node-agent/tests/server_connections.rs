//! What a connection may cost (issue 11, item 6), over real sockets: a peer
//! outside the allowlist is refused at accept (its unfinished head is never
//! buffered), connections beyond `--max-connections` are refused, and a
//! request head over 32 KiB or 100 headers is refused by hyper (431).

mod support {
    pub mod server;
}

use std::sync::Arc;
use std::time::{Duration, Instant};

use support::server::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weir_agent::api::ApiState;
use weir_agent::metrics::{datapath, Metrics};
use weir_agent::server::{AppOptions, Timeouts, MAX_HEAD_BYTES};

fn options() -> AppOptions {
    AppOptions {
        request_logging: false,
        timeouts: Timeouts { read: Some(Duration::from_secs(5)), write: None, idle: Some(Duration::from_secs(60)) },
        ..AppOptions::default()
    }
}

/// The process's resident memory, in bytes.
fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// The head of a request that never ends: `len` bytes of one header.
fn unfinished_head(len: usize) -> Vec<u8> {
    let mut head = b"GET /api/v1/vips HTTP/1.1\r\nHost: agent\r\nX-Pad: ".to_vec();
    head.resize(len, b'a');
    head
}

/// The whole answer to a peer outside the allowlist.
fn forbidden() -> String {
    let body = r#"{"error":{"code":"FORBIDDEN","message":"source address 127.0.0.1 is not allowed to use the API (see --allow-cidr)"},"success":false}"#;
    format!(
        "HTTP/1.1 403 Forbidden\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_peer_costs_nothing() {
    let state = ApiState::default();
    let metrics = Arc::new(Metrics::new(&state.datapath(), datapath::Options::default()));
    let outside = Server::start_with(Setup {
        options: AppOptions { allow: vec!["10.0.0.0/8".parse().unwrap()], ..options() },
        metrics: Some(metrics.api()),
        state: Some(state),
        ..Setup::default()
    })
    .await;

    // 100 peers outside the allowlist each send 380 KB of a head that never
    // ends (under hyper's default 400 KB buffer, which would hold it all
    // until the read timeout).
    let head = Arc::new(unfinished_head(380_000));
    let before = rss();
    let start = Instant::now();
    let mut peers = Vec::new();
    for _ in 0..100 {
        let head = head.clone();
        let addr = outside.addr;
        peers.push(tokio::spawn(async move {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            // The agent stops reading after 4 KiB and closes: writing may fail.
            let _ = stream.write_all(&head).await;
            let (text, closed) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
            (text, closed, start.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let grown = rss().saturating_sub(before);
    let mut slowest = Duration::ZERO;
    for peer in peers {
        let (text, closed, took) = peer.await.unwrap();
        assert!(closed, "the agent closes a refused connection");
        // The 403, or nothing: closing with the rest of 380 KB unread resets
        // the connection, which may destroy the answer on its way.
        assert!(text.is_empty() || text == forbidden(), "{text:?}");
        slowest = slowest.max(took);
    }
    eprintln!("100 refused peers: RSS grew {} KiB, slowest answer {slowest:?}", grown >> 10);
    assert!(slowest < Duration::from_secs(2), "refused within the refusal's wait, not the read timeout: {slowest:?}");
    assert!(grown < 8 << 20, "100 refused 380 KB heads cost {grown} bytes of memory");
    // A client that sends a plain request reads the whole 403.
    let text = raw_exchange(outside.addr, b"GET /health HTTP/1.1\r\nHost: agent\r\n\r\n", Duration::from_secs(2)).await;
    assert_eq!(text, forbidden());
    let text = metrics.encode();
    assert!(text.contains("weir_agent_api_connections_refused_total{reason=\"allowlist\"} 101\n"), "{text}");
    outside.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_over_the_cap_are_refused_with_503() {
    let server = Server::start(AppOptions { max_connections: 4, ..options() }).await;
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(TcpStream::connect(server.addr).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = raw_exchange(server.addr, b"GET /health HTTP/1.1\r\nHost: agent\r\n\r\n", Duration::from_secs(2)).await;
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole answer");
    assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
    assert!(head.contains("\r\nretry-after: 1"), "{head}");
    assert!(head.contains("\r\nconnection: close"), "{head}");
    let body: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(
        body,
        serde_json::json!({"success": false, "error": {"code": "TOO_MANY_CONNECTIONS",
            "message": "the agent serves at most 4 connections at once (--max-connections); retry later"}})
    );

    // One of the four goes: a new connection is served again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (status, body) = json(client().get(server.url("/health")).send().await.unwrap()).await;
    assert_eq!((status, &body["success"]), (200, &serde_json::json!(true)), "{body}");
    drop(held);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_431() {
    let server = Server::start(options()).await;
    let request = |pad: usize, headers: usize| {
        let mut r = String::from("GET /health HTTP/1.1\r\nHost: agent\r\n");
        for i in 0..headers {
            r.push_str(&format!("X-H{i}: 1\r\n"));
        }
        r.push_str(&format!("X-Pad: {}\r\n\r\n", "a".repeat(pad)));
        r
    };
    let wait = Duration::from_secs(2);

    // Within the limits: served.
    let text = raw_exchange(server.addr, request(MAX_HEAD_BYTES - 1024, 97).as_bytes(), wait).await;
    assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text:?}");

    // Over 32 KiB, or over 100 headers: hyper's own 431, empty, then closed.
    for (what, pad, headers) in [("a 33 KiB head", MAX_HEAD_BYTES + 1024, 0), ("101 headers", 1, 99)] {
        let text = raw_exchange(server.addr, request(pad, headers).as_bytes(), wait).await;
        assert!(text.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"), "{what}: {text:?}");
        assert!(text.contains("\r\ncontent-length: 0\r\n"), "{what}: {text:?}");
        assert!(text.ends_with("\r\n\r\n"), "{what}: nothing after the head: {text:?}");
    }
    server.stop().await;
}
