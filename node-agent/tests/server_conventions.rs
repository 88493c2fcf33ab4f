//! The admin-API conventions (shared/specs/admin-api-conventions.diff.md) over
//! real sockets: the health bodies, `/api/v1/system/info` and
//! `/api/v1/limits/effective`. No balancer is needed (nor root) except where
//! said.

mod support {
    pub mod server;
}

use std::time::Duration;

use reqwest::header::AUTHORIZATION;
use serde_json::json;
use support::server::*;
use weir_agent::server::{AppOptions, Timeouts, Token};

fn options() -> AppOptions {
    AppOptions { request_logging: false, ..AppOptions::default() }
}

async fn get(server: &Server, path: &str, token: Option<&str>) -> (u16, serde_json::Value) {
    let mut request = client().get(server.url(path));
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, token);
    }
    json(request.send().await.unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_reports_read_only_and_readiness_answers_its_data_in_both_states() {
    let server = Server::start(AppOptions { read_only: true, ..options() }).await;
    let (status, body) = get(&server, "/health", None).await;
    assert_eq!((status, body), (200, json!({"success": true, "data": {"status": "ok", "read_only": true}})));
    let (status, body) = get(&server, "/health/ready", None).await;
    assert_eq!(status, 503);
    assert_eq!(
        body,
        json!({"success": false,
               "error": {"code": "LB_NOT_INITIALIZED",
                         "message": "not ready: no balancer yet (POST /api/v1/lb/create, or start with --config)"},
               "data": {"ready": false, "status": "not_ready", "reason": "no_balancer"}})
    );
    server.stop().await;

    let writable = Server::start(options()).await;
    let (_, body) = get(&writable, "/health", None).await;
    assert_eq!(body["data"]["read_only"], false);
    if root_or_skip("readiness after create") {
        let create = client().post(writable.url("/api/v1/lb/create")).json(&json!({"testing": true}));
        assert_eq!(create.send().await.unwrap().status(), 201);
        let (status, body) = get(&writable, "/health/ready", None).await;
        assert_eq!((status, body), (200, json!({"success": true, "data": {"ready": true, "status": "ready"}})));
    }
    writable.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_effective_says_what_the_agent_enforces_and_never_the_token() {
    let server = Server::start(AppOptions {
        token: Some(Token::new("t0ken-Secret").unwrap()),
        allow: vec!["127.0.0.0/8".parse().unwrap(), "10.1.0.0/16".parse().unwrap()],
        body_limit: 512 * 1024,
        timeouts: Timeouts {
            read: Some(Duration::from_secs(30)),
            write: Some(Duration::from_millis(1500)),
            idle: None,
        },
        ..options()
    })
    .await;
    // Behind the same layers as every endpoint: the token is required.
    let (status, _) = get(&server, "/api/v1/limits/effective", None).await;
    assert_eq!(status, 401);
    let (status, body) = get(&server, "/api/v1/limits/effective", Some("Bearer t0ken-Secret")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["data"],
        json!({
            "body_limit_bytes": 524288,
            "body_drain_max_bytes": 4194304,
            "body_drain_max_ms": 2000,
            "read_timeout_ms": 30000,
            "write_timeout_ms": 1500,
            "idle_timeout_ms": 0,
            "max_connections": 512,
            "max_head_bytes": 32768,
            "max_headers": 100,
            "max_http2_streams": 16,
            "allow_cidrs": ["127.0.0.0/8", "10.1.0.0/16"],
            "read_only": false,
            "tls_enabled": false,
            "mtls_enabled": false,
            "token_auth_enabled": true,
            "cors_enabled": false,
        })
    );
    assert!(!body.to_string().contains("t0ken-Secret"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_info_names_the_build_and_hashes_the_configuration() {
    let server = Server::start(options()).await;
    let (status, body) = get(&server, "/api/v1/system/info", None).await;
    assert_eq!(status, 200, "{body}");
    let info = &body["data"];
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    let build = info["build"].as_str().unwrap();
    assert!(build == "unknown" || (build.len() == 40 && build.bytes().all(|b| b.is_ascii_hexdigit())), "{build}");
    assert_eq!(info["target_os"], std::env::consts::OS);
    assert!(info["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert!(info["process_started_at_epoch_secs"].as_u64().unwrap() > 1_600_000_000);
    assert_eq!((&info["reload_count"], &info["last_reload_epoch_secs"]), (&json!(0), &json!(null)));
    assert_eq!(info["balancer_initialized"], false);
    let hash = info["config_hash"].as_str().unwrap().to_owned();
    assert!(hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()), "{hash}");
    // Stable while nothing changes...
    let (_, again) = get(&server, "/api/v1/system/info", None).await;
    assert_eq!(again["data"]["config_hash"], hash.as_str());
    // ... and it covers the balancer's configuration.
    if root_or_skip("config_hash after create") {
        let create = client().post(server.url("/api/v1/lb/create")).json(&json!({"testing": true}));
        assert_eq!(create.send().await.unwrap().status(), 201);
        let (_, after) = get(&server, "/api/v1/system/info", None).await;
        assert_eq!(after["data"]["balancer_initialized"], true);
        assert_ne!(after["data"]["config_hash"], hash.as_str());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailing_slashes_are_trimmed_before_routing() {
    let server = Server::start(AppOptions { token: Some(Token::new("tok").unwrap()), ..options() }).await;
    // Routed as /api/v1/vips (no balancer yet), and /health/ stays open.
    let (status, body) = get(&server, "/api/v1/vips/", Some("Bearer tok")).await;
    assert_eq!(status, 503, "{body}");
    assert_error(&body, "LB_NOT_INITIALIZED");
    let (status, body) = get(&server, "/health/", None).await;
    assert_eq!((status, &body["data"]["status"]), (200, &json!("ok")), "{body}");
    // 404 and 405 name the trimmed path.
    let (status, body) = get(&server, "/no/such/path/", Some("Bearer tok")).await;
    assert_eq!(status, 404);
    assert_eq!(assert_error(&body, "NOT_FOUND"), "no endpoint GET /no/such/path");
    let response = client().patch(server.url("/api/v1/vips/")).bearer_auth("tok").send().await.unwrap();
    let (status, body) = json(response).await;
    assert_eq!(status, 405);
    assert!(assert_error(&body, "METHOD_NOT_ALLOWED").contains("on /api/v1/vips ("), "{body}");
    // "/" itself is left alone.
    let (status, _) = get(&server, "/", Some("Bearer tok")).await;
    assert_eq!(status, 404);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_accepted_as_bearer_or_bare() {
    let server = Server::start(AppOptions { token: Some(Token::new("t0ken-Secret").unwrap()), ..options() }).await;
    for good in ["Bearer t0ken-Secret", "bearer t0ken-Secret", "t0ken-Secret"] {
        let (status, body) = get(&server, "/api/v1/vips", Some(good)).await;
        assert_eq!(status, 503, "{good}: reaches the handler: {body}");
    }
    for wrong in ["Bearer t0ken-Secre", "t0ken-Secret2", "Basic t0ken-Secret", "Bearert0ken-Secret", ""] {
        let (status, body) = get(&server, "/api/v1/vips", Some(wrong)).await;
        assert_eq!(status, 401, "{wrong:?}");
        assert_error(&body, "UNAUTHORIZED");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_method_is_405_method_not_allowed_with_allow() {
    let server = Server::start(options()).await;
    let response = client().patch(server.url("/api/v1/vips")).send().await.unwrap();
    let allow = response.headers()[reqwest::header::ALLOW].to_str().unwrap().to_owned();
    let (status, body) = json(response).await;
    assert_eq!(status, 405);
    assert_eq!(
        body,
        json!({"success": false, "error": {"code": "METHOD_NOT_ALLOWED",
               "message": format!("method PATCH is not allowed on /api/v1/vips (allowed: {allow})")}})
    );
    assert_eq!(allow, "DELETE, GET, HEAD, POST");
    server.stop().await;
}
