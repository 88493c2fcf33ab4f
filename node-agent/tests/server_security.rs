//! The admin surface over real sockets: source allowlist, bearer token, body
//! limit, read-only mode, CORS preflights, panic recovery, and that unknown
//! paths keep the API's envelope through every layer. A server runs on
//! 127.0.0.1:0 in a task and is shut down at the end of each test; no balancer
//! is needed (nor root): the layers answer before any handler touches one.

mod support {
    pub mod server;
}

use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;
use reqwest::header::{
    ACCESS_CONTROL_ALLOW_METHODS, ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_MAX_AGE, ACCESS_CONTROL_REQUEST_METHOD,
    AUTHORIZATION, ORIGIN, WWW_AUTHENTICATE,
};
use support::server::*;
use weir_agent::server::{AppOptions, CorsOrigins, Token};

fn options() -> AppOptions {
    AppOptions { request_logging: false, ..AppOptions::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowlist_refuses_sources_outside_it() {
    let outside = Server::start(AppOptions { allow: vec!["10.0.0.0/8".parse().unwrap()], ..options() }).await;
    for path in ["/health", "/api/v1/vips", "/no/such/path"] {
        let (status, body) = json(client().get(outside.url(path)).send().await.unwrap()).await;
        assert_eq!(status, 403, "{path}");
        let message = assert_error(&body, "FORBIDDEN");
        assert!(message.contains("127.0.0.1"), "{message}");
    }
    outside.stop().await;

    let inside = Server::start(AppOptions { allow: vec!["127.0.0.0/8".parse().unwrap()], ..options() }).await;
    let (status, body) = json(client().get(inside.url("/health")).send().await.unwrap()).await;
    assert_eq!((status, &body["success"]), (200, &serde_json::json!(true)), "{body}");
    inside.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bearer_token_is_required_except_on_health() {
    let server = Server::start(AppOptions { token: Some(Token::new("t0ken-Secret").unwrap()), ..options() }).await;
    let vips = server.url("/api/v1/vips");

    let response = client().get(&vips).send().await.unwrap();
    assert_eq!(response.headers()[WWW_AUTHENTICATE], "Bearer realm=\"weir-agent\"");
    let (status, body) = json(response).await;
    assert_eq!(status, 401);
    assert!(assert_error(&body, "UNAUTHORIZED").contains("missing"));

    for wrong in ["Bearer t0ken-Secre", "Bearer t0ken-Secret2", "Basic t0ken-Secret", "t0ken-Secre"] {
        let (status, body) = json(client().get(&vips).header(AUTHORIZATION, wrong).send().await.unwrap()).await;
        assert_eq!(status, 401, "{wrong}");
        assert!(assert_error(&body, "UNAUTHORIZED").contains("invalid"), "{wrong}");
    }

    // The right token reaches the handler: no balancer yet.
    let (status, body) = json(client().get(&vips).bearer_auth("t0ken-Secret").send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_error(&body, "LB_NOT_INITIALIZED");

    // Probes need no token.
    let (status, _) = json(client().get(server.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, body) = json(client().get(server.url("/health/ready")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_error(&body, "LB_NOT_INITIALIZED");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_above_the_limit_are_413() {
    let server = Server::start(AppOptions { body_limit: 64 * 1024, ..options() }).await;
    let url = server.url("/api/v1/vips");
    let big = vec![b' '; 65 * 1024];
    let (status, body) = json(client().post(&url).body(big).send().await.unwrap()).await;
    assert_eq!(status, 413);
    assert!(assert_error(&body, "INVALID_REQUEST").contains("larger than 65536 bytes"));

    // Without Content-Length (chunked), the limit holds while the body is read.
    let chunk = format!("{:x}\r\n{}\r\n", 40 * 1024, " ".repeat(40 * 1024));
    let request = format!(
        "POST /api/v1/vips HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/json\r\n\r\n\
         {chunk}{chunk}0\r\n\r\n"
    );
    let answer = raw_exchange(server.addr, request.as_bytes(), Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("\"code\":\"INVALID_REQUEST\""), "{answer}");

    // At the limit, the body reaches the handler (which finds no balancer).
    let (status, body) = json(client().post(&url).body(vec![b' '; 64 * 1024]).send().await.unwrap()).await;
    assert_ne!(status, 413, "{body}");
    server.stop().await;
}

/// The default limit (1 MiB) takes the largest request the API has: a batch
/// of `max_reals` (4,096) IPv6 reals as katran's Go client encodes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limit_takes_a_batch_of_max_reals_ipv6_reals() {
    let server = Server::start(options()).await;
    let reals: Vec<_> = (0..4096u32)
        .map(|i| serde_json::json!({"address": format!("2001:0db8:85a3:0000:0000:8a2e:{:04x}:{:04x}", i >> 16, i & 0xffff), "weight": 1, "flags": 0}))
        .collect();
    let batch =
        serde_json::json!({"vip": {"address": "2001:db8::1", "port": 443, "proto": 6}, "action": 0, "reals": reals});
    let body = serde_json::to_vec(&batch).unwrap();
    assert!(body.len() > 300_000, "{} bytes", body.len());
    let response = client().put(server.url("/api/v1/vips/reals/batch")).body(body).send().await.unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 503, "the body reaches the handler, which has no balancer: {body}");
    assert_error(&body, "LB_NOT_INITIALIZED");
    server.stop().await;
}

/// A client that writes its whole body before reading anything (as Python's
/// urllib does) still reads the 413: the agent drains the refused body (up to
/// 4 MiB and 2 s) before it closes, instead of closing with unread input,
/// which the kernel answers with a reset that destroys the response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_sent_in_full_before_reading_still_gets_its_413() {
    let server = Server::start(AppOptions { body_limit: 1 << 20, ..options() }).await;
    let addr = server.addr;
    let answer = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let body = vec![b' '; 2 << 20];
        let head = format!(
            "POST /api/v1/vips HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(head.as_bytes()).unwrap();
        // As http.client does: the head, then the body (here a moment later,
        // so that the server has seen the head before the body arrives).
        std::thread::sleep(Duration::from_millis(100));
        stream.write_all(&body).expect("the server reads the whole body: no reset while it is being sent");
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).expect("the answer, then a clean close (not a reset)");
        String::from_utf8(answer).unwrap()
    })
    .await
    .unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").expect("a complete response");
    assert!(head.starts_with("HTTP/1.1 413 Payload Too Large\r\n"), "{head}");
    assert!(head.to_ascii_lowercase().contains("connection: close"), "{head}");
    assert_eq!(
        body,
        r#"{"success":false,"error":{"code":"INVALID_REQUEST","message":"request body larger than 1048576 bytes (see --body-limit)"}}"#
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_refuses_mutations_only() {
    let server = Server::start(AppOptions { read_only: true, ..options() }).await;
    let vip = serde_json::json!({"address": "10.0.0.1", "port": 80, "proto": 6});
    for (method, path) in [
        (reqwest::Method::POST, "/api/v1/vips"),
        (reqwest::Method::DELETE, "/api/v1/vips"),
        (reqwest::Method::PUT, "/api/v1/vips/reals/batch"),
        (reqwest::Method::POST, "/api/v1/lb/create"),
        (reqwest::Method::DELETE, "/api/v1/lru"),
    ] {
        let response = client().request(method.clone(), server.url(path)).json(&vip).send().await.unwrap();
        let (status, body) = json(response).await;
        assert_eq!(status, 403, "{method} {path}");
        assert!(assert_error(&body, "READ_ONLY").contains(path));
    }
    // Reads reach their handlers (no balancer yet), and so does simulate-packet.
    let (status, body) = json(client().get(server.url("/api/v1/vips")).send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_error(&body, "LB_NOT_INITIALIZED");
    let simulate = client().post(server.url("/api/v1/utils/simulate-packet")).json(&serde_json::json!({"packet": ""}));
    let (status, body) = json(simulate.send().await.unwrap()).await;
    assert_ne!(body["error"]["code"], "READ_ONLY", "{status} {body}");
    let (status, _) = json(client().get(server.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_names_the_origin_and_a_numeric_max_age() {
    let origins = CorsOrigins::List(vec!["http://localhost:3000".parse().unwrap()]);
    let server = Server::start(AppOptions {
        cors: Some(origins),
        // The preflight must pass without the token (browsers never send one with it).
        token: Some(Token::new("tok").unwrap()),
        ..options()
    })
    .await;
    let preflight = |origin: &'static str| {
        client()
            .request(reqwest::Method::OPTIONS, server.url("/api/v1/vips"))
            .header(ORIGIN, origin)
            .header(ACCESS_CONTROL_REQUEST_METHOD, "POST")
            .send()
    };
    let allowed = preflight("http://localhost:3000").await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    let headers = allowed.headers();
    assert_eq!(headers[ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:3000");
    let max_age: u64 = headers[ACCESS_CONTROL_MAX_AGE].to_str().unwrap().parse().expect("a number of seconds");
    assert_eq!(max_age, 86_400);
    assert!(headers[ACCESS_CONTROL_ALLOW_METHODS].to_str().unwrap().contains("POST"));

    let refused = preflight("http://evil.example").await.unwrap();
    assert!(refused.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none(), "{:?}", refused.headers());

    // Actual requests carry the header too, refusals included, so pages can read the error.
    let response =
        client().get(server.url("/api/v1/vips")).header(ORIGIN, "http://localhost:3000").send().await.unwrap();
    assert_eq!(response.status(), 401);
    assert_eq!(response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "http://localhost:3000");
    server.stop().await;

    // "*" answers any origin with "*".
    let any = Server::start(AppOptions { cors: Some(CorsOrigins::Any), ..options() }).await;
    let response = client()
        .request(reqwest::Method::OPTIONS, any.url("/health"))
        .header(ORIGIN, "https://ui.example")
        .header(ACCESS_CONTROL_REQUEST_METHOD, "GET")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()[ACCESS_CONTROL_ALLOW_ORIGIN], "*");
    any.stop().await;

    // Without -cors there are no CORS headers at all.
    let off = Server::start(options()).await;
    let response = client().get(off.url("/health")).header(ORIGIN, "http://localhost:3000").send().await.unwrap();
    assert!(response.headers().get(ACCESS_CONTROL_ALLOW_ORIGIN).is_none());
    off.stop().await;
}

fn panicking_routes() -> Router {
    async fn boom() -> &'static str {
        panic!("boom: an internal detail")
    }
    Router::new().route("/test/panic", get(boom))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panic_is_500_internal_error() {
    let server =
        Server::start_with(Setup { options: options(), extra: Some(panicking_routes()), ..Setup::default() }).await;
    let http = client();
    let (status, body) = json(http.get(server.url("/test/panic")).send().await.unwrap()).await;
    assert_eq!(status, 500);
    let message = assert_error(&body, "INTERNAL_ERROR");
    assert!(!message.contains("boom"), "the panic's text stays in the log: {message}");
    // The server, and the same client, carry on.
    let (status, _) = json(http.get(server.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_recovery_a_panic_drops_the_connection() {
    let options = AppOptions { panic_recovery: false, ..options() };
    let server = Server::start_with(Setup { options, extra: Some(panicking_routes()), ..Setup::default() }).await;
    let err = client().get(server.url("/test/panic")).send().await.expect_err("no answer");
    assert!(!err.is_status() && !err.is_timeout(), "{err:?}");
    let (status, _) = json(client().get(server.url("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200, "other connections are served");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_and_methods_keep_the_envelope() {
    let server = Server::start(AppOptions { token: Some(Token::new("tok").unwrap()), ..options() }).await;
    let (status, body) = json(client().get(server.url("/no/such/path")).bearer_auth("tok").send().await.unwrap()).await;
    assert_eq!(status, 404);
    assert_error(&body, "NOT_FOUND");
    let (status, body) =
        json(client().patch(server.url("/api/v1/vips")).bearer_auth("tok").send().await.unwrap()).await;
    assert_eq!(status, 405, "{body}");
    assert_eq!(body["success"], false);
    // The token is checked before routing answers: unknown paths do not leak what exists.
    let (status, _) = json(client().get(server.url("/no/such/path")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_requests_in_flight() {
    let slow = Router::new().route(
        "/test/slow",
        post(|| async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "done"
        }),
    );
    let server = Server::start_with(Setup { options: options(), extra: Some(slow), ..Setup::default() }).await;
    let (addr, url) = (server.addr, server.url("/test/slow"));
    let request = tokio::spawn(async move { client().post(url).send().await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    server.stop().await;
    let response = request.await.unwrap().expect("the request in flight is answered");
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer listening");
}
