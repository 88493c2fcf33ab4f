//! The standalone server's flags: katran-server's single-dash spellings and
//! weir's double-dash ones give the same configuration, timeouts take bare
//! seconds and Go durations, bad values fail with a message naming the flag.
//! Parsing is tested through the library ([`flags::parse`]), the program
//! through the `weir-agent` binary itself: help, exit status on bad flags,
//! and a real start (port 0), requests, and a graceful stop on SIGTERM.

mod support {
    pub mod server;
}

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use support::server::*;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use weir_agent::server::flags::{self, ServeFlags};
use weir_agent::server::{CorsOrigins, Token};

const BIN: &str = env!("CARGO_BIN_EXE_weir-agent");

fn parse(args: &[&str]) -> ServeFlags {
    flags::parse(std::iter::once("weir-agent").chain(args.iter().copied())).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

fn parse_err(args: &[&str]) -> String {
    flags::parse(std::iter::once("weir-agent").chain(args.iter().copied())).expect_err("an error").to_string()
}

#[test]
fn defaults_are_weirs() {
    let f = parse(&[]);
    assert_eq!((f.host.as_str(), f.port), ("127.0.0.1", 8080));
    assert_eq!((f.read_timeout, f.write_timeout, f.idle_timeout), (secs(30), secs(30), secs(120)));
    assert_eq!(f.allow_cidr, vec!["127.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()]);
    assert_eq!(f.body_limit, 1 << 20, "1 MiB: a batch of 4,096 IPv6 reals fits");
    assert_eq!(f.max_connections, 512);
    assert_eq!(parse(&["--max-connections", "3"]).max_connections, 3);
    assert_eq!(f.cors_origins, CorsOrigins::Any);
    assert!(!f.cors && !f.no_logging && !f.no_recovery && !f.read_only && !f.metrics_conn_table_usage);
    assert_eq!((f.tls_cert, f.token_file, f.config, f.metrics_addr), (None, None, None, None));
}

#[test]
fn single_and_double_dash_spellings_agree() {
    // katran-server's "Full options" example, verbatim.
    let katran = parse(&[
        "-host",
        "0.0.0.0",
        "-port",
        "8080",
        "-tls-cert",
        "/path/to/cert.pem",
        "-tls-key",
        "/path/to/key.pem",
        "-tls-client-ca",
        "/path/to/ca.pem",
        "-cors",
        "-cors-origins",
        "http://localhost:3000,https://example.com",
        "-read-timeout",
        "30",
        "-write-timeout",
        "30",
        "-idle-timeout",
        "120",
        "-no-logging",
        "-no-recovery",
    ]);
    let weir = parse(&[
        "--host=0.0.0.0",
        "--port=8080",
        "--tls-cert=/path/to/cert.pem",
        "--tls-key",
        "/path/to/key.pem",
        "--tls-client-ca=/path/to/ca.pem",
        "--cors=true",
        "--cors-origins=http://localhost:3000,https://example.com",
        "--read-timeout=30s",
        "--write-timeout",
        "0.5m",
        "--idle-timeout=2m",
        "--no-logging",
        "--no-recovery=1",
    ]);
    assert_eq!(katran, weir);
    assert!(katran.cors && katran.no_logging && katran.no_recovery);
    assert_eq!(
        katran.cors_origins,
        CorsOrigins::List(vec!["http://localhost:3000".parse().unwrap(), "https://example.com".parse().unwrap()])
    );
    // Mixed, with Go's -flag=value form and weir's own flags.
    let mixed = parse(&[
        "-port=9000",
        "-allow-cidr",
        "10.0.0.0/8",
        "--allow-cidr=192.168.1.7,fd00::/8",
        "-read-only",
        "-token-file",
        "/etc/weir/token",
        "-body-limit=1024",
        "-metrics-addr",
        "127.0.0.1:9478",
        "-config",
        "/etc/weir/lb.json",
    ]);
    assert_eq!(mixed.port, 9000);
    assert_eq!(mixed.allow_cidr, ["10.0.0.0/8", "192.168.1.7/32", "fd00::/8"].map(|c| c.parse().unwrap()).to_vec());
    assert!(mixed.read_only);
    assert_eq!(mixed.body_limit, 1024);
    assert_eq!(mixed.metrics_addr, Some("127.0.0.1:9478".parse().unwrap()));
    assert_eq!(mixed.token_file.as_deref(), Some(std::path::Path::new("/etc/weir/token")));
}

#[test]
fn booleans_take_gos_forms() {
    assert!(!parse(&["-cors=false"]).cors);
    assert!(parse(&["-cors=T"]).cors);
    assert!(!parse(&["--read-only=0"]).read_only);
    // Go stops at `-cors false`: "false" is not a flag value there. Neither is it here.
    assert!(parse_err(&["-cors", "false"]).contains("'false'"));
}

#[test]
fn timeouts_are_seconds_or_go_durations() {
    let f = parse(&["-read-timeout", "1m30s", "-write-timeout=500ms", "-idle-timeout", "0"]);
    assert_eq!((f.read_timeout, f.write_timeout), (secs(90), Duration::from_millis(500)));
    assert_eq!(f.effective_idle_timeout(), secs(90), "idle 0 means the read timeout, as in Go");
    assert_eq!(parse(&["-read-timeout", "45"]).read_timeout, secs(45));
}

#[test]
fn bad_values_say_which_flag_and_why() {
    for (args, wants) in [
        (&["-port", "70000"][..], &["--port", "70000"][..]),
        (&["-port", "http"], &["--port", "http"]),
        (&["-read-timeout", "10x"], &["--read-timeout", "unknown unit \"x\""]),
        (&["-write-timeout=-5s"], &["--write-timeout", "negative"]),
        (&["-idle-timeout", "1.5"], &["--idle-timeout", "missing unit"]),
        (&["-allow-cidr", "10.0.0.0/33"], &["--allow-cidr", "neither a CIDR"]),
        (&["-cors-origins", "example.com"], &["--cors-origins", "not an origin"]),
        (&["-body-limit", "0"], &["--body-limit"]),
        (&["-body-limit", "1048577"], &["--body-limit", "1048577"]),
        (&["--max-connections", "0"], &["--max-connections", "0"]),
        (&["--max-connections", "65537"], &["--max-connections", "65537"]),
        (&["-metrics-addr", "localhost"], &["--metrics-addr"]),
        (&["-tls-key", "key.pem"], &["--tls-cert"]),
        (&["-tls-cert", "cert.pem"], &["--tls-key"]),
        (&["-tls-client-ca", "ca.pem"], &["--tls-cert"]),
        (&["-tls-cert", "", "-tls-key", "k"], &["--tls-cert", "empty path"]),
        (&["-no-such-flag"], &["-no-such-flag"]),
    ] {
        let err = parse_err(args);
        for want in wants {
            assert!(err.contains(want), "{args:?}: {want:?} not in {err}");
        }
    }
}

#[test]
fn token_files_are_trimmed_and_checked() {
    let dir = TempDir::new("token");
    assert!(Token::from_file(&dir.file("ok", "s3cret\n")).is_ok());
    assert!(Token::from_file(&dir.file("empty", "\n")).unwrap_err().contains("empty"));
    assert!(Token::from_file(&dir.0.join("missing")).is_err());
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

// ---- the binary ----

#[tokio::test]
async fn help_lists_both_spellings_and_decap_still_exists() {
    for help in ["-h", "--help", "-help"] {
        let out = Command::new(BIN).arg(help).output().await.unwrap();
        assert!(out.status.success(), "{help}");
        let text = String::from_utf8_lossy(&out.stdout);
        for flag in ["--tls-client-ca", "--read-timeout", "--allow-cidr", "--token-file", "--metrics-addr", "decap"] {
            assert!(text.contains(flag), "{help}: {flag} missing from:\n{text}");
        }
    }
    let out = Command::new(BIN).args(["decap", "--help"]).output().await.unwrap();
    assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("--iface"));
}

#[tokio::test]
async fn bad_flags_exit_2_with_the_reason() {
    let out = Command::new(BIN).args(["-port", "http"]).output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid value 'http' for '--port <PORT>'"), "{err}");

    let out = Command::new(BIN).args(["-port", "0", "-token-file", "/nonexistent/token"]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token-file /nonexistent/token"));
}

/// A `weir-agent` process and what it logged at start-up.
struct Agent {
    child: Child,
    api: SocketAddr,
    metrics: Option<SocketAddr>,
    log: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
}

impl Agent {
    /// Starts the binary and waits for its "serving ..." lines.
    async fn start(args: &[&str], metrics: bool) -> Agent {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
        let (mut api, mut metrics_addr) = (None, None);
        while api.is_none() || (metrics && metrics_addr.is_none()) {
            let line = tokio::time::timeout(Duration::from_secs(30), log.next_line())
                .await
                .expect("start-up logged in time")
                .unwrap()
                .unwrap_or_else(|| panic!("weir-agent exited before serving"));
            api = api.or_else(|| address_after(&line, "serving the API on http://"));
            metrics_addr = metrics_addr.or_else(|| address_after(&line, "serving metrics on http://"));
        }
        Agent { child, api: api.unwrap(), metrics: metrics_addr, log }
    }

    /// SIGTERM, then the exit status and the rest of the log.
    async fn terminate(mut self) -> (std::process::ExitStatus, String) {
        let pid = self.child.id().expect("running") as libc::pid_t;
        assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
        let status = tokio::time::timeout(Duration::from_secs(10), self.child.wait()).await.expect("exits").unwrap();
        let mut rest = String::new();
        while let Ok(Some(line)) = self.log.next_line().await {
            rest.push_str(&line);
            rest.push('\n');
        }
        (status, rest)
    }
}

fn address_after(line: &str, marker: &str) -> Option<SocketAddr> {
    let start = line.find(marker)? + marker.len();
    line[start..].split(|c: char| c.is_whitespace() || c == '/').next()?.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_until_sigterm() {
    let dir = TempDir::new("agent");
    let token = dir.file("token", "agent-token\n");
    let agent = Agent::start(
        &["-port", "0", "-token-file", token.to_str().unwrap(), "--metrics-addr=127.0.0.1:0", "-read-timeout=10s"],
        true,
    )
    .await;
    assert!(agent.api.ip().is_loopback(), "loopback by default: {}", agent.api);
    let http = client();
    let api = |path: &str| format!("http://{}{path}", agent.api);
    let (status, _) = json(http.get(api("/health")).send().await.unwrap()).await;
    assert_eq!(status, 200);
    let (status, body) = json(http.get(api("/api/v1/vips")).send().await.unwrap()).await;
    assert_eq!(status, 401);
    assert_error(&body, "UNAUTHORIZED");
    let (status, body) = json(http.get(api("/api/v1/vips")).bearer_auth("agent-token").send().await.unwrap()).await;
    assert_eq!(status, 503);
    assert_error(&body, "LB_NOT_INITIALIZED");

    let metrics = http.get(format!("http://{}/metrics", agent.metrics.unwrap())).send().await.unwrap();
    assert!(metrics.headers()["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = metrics.text().await.unwrap();
    assert!(text.contains("weir_agent_balancer_initialized 0\n"), "{text}");
    assert!(text.contains("weir_agent_api_requests_total{method=\"GET\",route=\"/api/v1/vips\",code=\"401\"} 1\n"));

    let (status, log) = agent.terminate().await;
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_creates_the_balancer_at_start_up() {
    if !root_or_skip("config_creates_the_balancer_at_start_up") {
        return;
    }
    let dir = TempDir::new("agent-config");
    let config = dir.file("lb.json", r#"{"testing": true, "max_vips": 8, "max_reals": 16, "lru_size": 1024}"#);
    let agent = Agent::start(&["-port", "0", "-no-logging", "--config", config.to_str().unwrap()], false).await;
    let (status, body) = json(client().get(format!("http://{}/health/ready", agent.api)).send().await.unwrap()).await;
    assert_eq!(status, 200, "{body}");
    let (status, log) = agent.terminate().await;
    assert!(status.success(), "{status}: {log}");
    assert!(log.contains("closed the balancer"), "{log}");

    let bad = dir.file("bad.json", r#"{"testing": true, "max_vips": 0}"#);
    let out = Command::new(BIN).args(["-port", "0", "--config", bad.to_str().unwrap()]).output().await.unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--config") && err.contains("INVALID_REQUEST"), "{err}");
}
