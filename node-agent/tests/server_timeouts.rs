//! katran-server's `-read-timeout -write-timeout -idle-timeout` over raw
//! loopback connections, with timeouts short enough for a test: a request
//! head must arrive within the read timeout, so must its body (408), an idle
//! keep-alive connection lasts the idle timeout (not the read timeout), and the
//! write timeout bounds writing a response, never the handler that makes it.

mod support {
    pub mod server;
}

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::Router;
use support::server::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use weir_agent::server::{AppOptions, Timeouts};

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

fn options(read_ms: u64, write_ms: u64, idle_ms: u64) -> AppOptions {
    let ms = |n| (n > 0).then(|| Duration::from_millis(n));
    AppOptions {
        request_logging: false,
        timeouts: Timeouts { read: ms(read_ms), write: ms(write_ms), idle: ms(idle_ms) },
        ..AppOptions::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_request_head_is_cut_at_the_read_timeout() {
    let server = Server::start(options(300, 5_000, 5_000)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let start = Instant::now();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap(); // never finished
    let (text, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    let waited = start.elapsed();
    assert!(closed && text.is_empty(), "closed without an answer: {text:?}");
    assert!(waited >= Duration::from_millis(250) && waited < Duration::from_secs(3), "{waited:?}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_body_is_408() {
    let server = Server::start(options(300, 5_000, 5_000)).await;
    let request = b"POST /api/v1/vips HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"address\"";
    let answer = raw_exchange(server.addr, request, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("\"code\":\"INVALID_REQUEST\"") && answer.contains("read timeout"), "{answer}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_last_the_idle_timeout_not_the_read_timeout() {
    let server = Server::start(options(200, 5_000, 900)).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream.write_all(HEALTH).await.unwrap();
    let (first, closed) = read_until_closed(&mut stream, Duration::from_millis(150)).await;
    assert!(!closed && first.starts_with("HTTP/1.1 200"), "{first}");
    // Idle for longer than the read timeout: still open.
    tokio::time::sleep(Duration::from_millis(400)).await;
    stream.write_all(HEALTH).await.unwrap();
    let (second, closed) = read_until_closed(&mut stream, Duration::from_millis(150)).await;
    assert!(!closed && second.starts_with("HTTP/1.1 200"), "kept alive past the read timeout: {second}");
    // Then idle past the idle timeout: closed by the server.
    let start = Instant::now();
    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(5)).await;
    assert!(closed && rest.is_empty(), "{rest}");
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(600) && waited < Duration::from_secs(3), "{waited:?}");
    server.stop().await;
}

/// The write timeout bounds writing the response (Go's meaning), not running
/// the handler: a change slower than it is applied and answered as it went,
/// never reported as failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_slower_than_the_write_timeout_is_answered_with_its_result() {
    let applied = Arc::new(AtomicBool::new(false));
    let flag = applied.clone();
    let slow = Router::new().route(
        "/test/slow-change",
        post(move || async move {
            tokio::time::sleep(Duration::from_millis(800)).await;
            flag.store(true, Ordering::SeqCst);
            "applied"
        }),
    );
    let server =
        Server::start_with(Setup { options: options(5_000, 200, 5_000), extra: Some(slow), ..Setup::default() }).await;
    let response = client().post(server.url("/test/slow-change")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "applied");
    assert!(applied.load(Ordering::SeqCst));
    server.stop().await;
}

/// The case: `/lb/create` (which loads the BPF program: far longer
/// than 1 ms) under a 1 ms write timeout answers 201, and the balancer exists
/// (a second create is 409).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_slower_than_the_write_timeout_answers_201() {
    if !root_or_skip("a_create_slower_than_the_write_timeout_answers_201") {
        return;
    }
    let mut opts = options(5_000, 0, 5_000);
    opts.timeouts.write = Some(Duration::from_millis(1));
    let server = Server::start(opts).await;
    let create = || client().post(server.url("/api/v1/lb/create")).json(&serde_json::json!({"testing": true})).send();
    let (status, body) = json(create().await.unwrap()).await;
    assert_eq!((status, &body), (201, &serde_json::json!({"success": true})));
    let (status, body) = json(create().await.unwrap()).await;
    assert_eq!(status, 409, "{body}");
    assert_error(&body, "ALREADY_EXISTS");
    server.stop().await;
}
