//! What the `server_*` tests share: a server on a real loopback socket (port
//! 0) running in a task, raw HTTP/1.1 exchanges for what reqwest cannot send
//! (chunked bodies, half-sent heads), temporary files, the root check.

#![allow(dead_code)] // a helper module: not every test file uses every helper

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use weir_agent::api::system::System;
use weir_agent::api::{self, ApiState};
use weir_agent::metrics::ApiMetrics;
use weir_agent::server::{self, AppOptions};

/// A running server; [`Server::stop`] shuts it down gracefully.
pub struct Server {
    pub addr: SocketAddr,
    pub state: ApiState,
    stop: oneshot::Sender<()>,
    task: JoinHandle<std::io::Result<()>>,
}

/// How to start a [`Server`].
#[derive(Default)]
pub struct Setup {
    pub options: AppOptions,
    /// Routes merged into the API's (test-only handlers).
    pub extra: Option<Router>,
    pub tls: Option<TlsAcceptor>,
    pub metrics: Option<Arc<ApiMetrics>>,
    pub state: Option<ApiState>,
}

impl Server {
    /// The API with `options`, on 127.0.0.1:0.
    pub async fn start(options: AppOptions) -> Self {
        Self::start_with(Setup { options, ..Setup::default() }).await
    }

    pub async fn start_with(setup: Setup) -> Self {
        // The state reports what these options enforce (/health, /api/v1/limits/effective).
        let state = setup.state.unwrap_or_else(|| ApiState {
            system: Arc::new(System::new(setup.options.effective_limits(setup.tls.is_some(), false), String::new())),
            ..ApiState::default()
        });
        let mut router = api::router(state.clone());
        if let Some(extra) = setup.extra {
            router = router.merge(extra);
        }
        let app = server::app(router, &setup.options, setup.metrics.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let accept = setup.options.accept(setup.metrics.clone());
        let task = tokio::spawn(server::run(listener, setup.tls, accept, app, async {
            let _ = stopped.await;
        }));
        Self { addr, state, stop, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(40), self.task)
            .await
            .expect("the server stops")
            .expect("the server task")
            .expect("the server");
    }
}

/// A plain HTTP client that ignores proxies from the environment.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// The JSON body of a response, with its status.
pub async fn json(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"));
    (status, body)
}

/// Asserts katran's error envelope with `code`; returns the message.
pub fn assert_error(body: &serde_json::Value, code: &str) -> String {
    assert_eq!(body["success"], false, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    body["error"]["message"].as_str().expect("a message").to_owned()
}

/// Sends raw bytes on a fresh connection and reads until the server closes
/// it or `wait` passes; returns what was read.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8], wait: Duration) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    read_until_closed(&mut stream, wait).await.0
}

/// Reads until EOF or `wait`; returns the text and whether the peer closed.
pub async fn read_until_closed(stream: &mut TcpStream, wait: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// A directory for a test's files, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("weir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn file(&self, name: &str, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// True as root; otherwise prints the skip line the repository's tests use.
pub fn root_or_skip(test: &str) -> bool {
    !weir_test_support::skip_unless_root(test)
}
