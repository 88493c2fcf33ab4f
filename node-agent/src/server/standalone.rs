//! `weir-agent` standalone, like katran-server: the API on `-host:-port`, the
//! balancer created by `POST /api/v1/lb/create` or at start-up from
//! `--config`, metrics on `--metrics-addr`, until a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::tls::{self, TlsError, TlsFiles};
use super::{app, exposition, listener, AppOptions, ServeFlags, Token};
use crate::api::{self, ApiState};
use crate::metrics::{datapath, Metrics};

/// Why the server could not start (or stopped abnormally). Not an API error:
/// these have no katran code and end the program.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("--config {path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error("--token-file {path}: {reason}")]
    Token { path: PathBuf, reason: String },

    #[error("TLS: {0}")]
    Tls(#[from] TlsError),

    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },

    #[error("the {which} server failed")]
    Serve {
        which: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the standalone server until `shutdown` resolves, then stops both
/// listeners gracefully and closes the balancer (which detaches it or leaves
/// it forwarding, as its `cleanup_on_shutdown` says).
pub async fn serve(flags: ServeFlags, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    // Everything that can fail cheaply (files, addresses) is checked before
    // the balancer is created, so a typo never leaves a datapath behind.
    let state = ApiState {
        pins: Some(api::Pins { pin_root: flags.pin_root.clone(), state_dir: flags.state_dir.clone() }),
        ..ApiState::default()
    };
    let token = match &flags.token_file {
        Some(path) => Some(Token::from_file(path).map_err(|reason| StartError::Token { path: path.clone(), reason })?),
        None => None,
    };
    let tls = match (&flags.tls_cert, &flags.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(&TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: flags.tls_client_ca.clone(),
        })?),
        _ => None,
    };
    let options = AppOptions::from_flags(&flags, token);
    let metrics = flags.metrics_addr.map(|_| {
        let options = datapath::Options { conn_table_usage: flags.metrics_conn_table_usage };
        Arc::new(Metrics::new(&state, options))
    });
    let router = app(api::router(state.clone()), &options, metrics.as_ref().map(|m| m.api()));

    let api_listener = bind_host(&flags.host, flags.port).await?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let local = api_listener.local_addr().map_err(|source| StartError::Bind { addr: flags.host.clone(), source })?;
    tracing::info!(
        mtls = flags.tls_client_ca.is_some(),
        read_only = options.read_only,
        token = options.token.is_some(),
        allow = ?options.allow,
        "serving the API on {scheme}://{local}"
    );
    let metrics_server = match (flags.metrics_addr, metrics) {
        (Some(addr), Some(metrics)) => {
            let listener =
                TcpListener::bind(addr).await.map_err(|source| StartError::Bind { addr: addr.to_string(), source })?;
            tracing::info!("serving metrics on http://{}/metrics", listener.local_addr().unwrap_or(addr));
            Some((listener, metrics))
        }
        _ => None,
    };
    if let Some(path) = &flags.config {
        create_balancer(&state, path).await?;
    }

    // One signal stops both listeners.
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let api_server = listener::run(api_listener, tls, options.timeouts, router, stopped(stop_rx.clone()));
    let metrics_server = async {
        match metrics_server {
            Some((listener, metrics)) => {
                exposition::serve(listener, metrics, options.timeouts, stopped(stop_rx.clone())).await
            }
            None => Ok(()),
        }
    };
    let (api_result, metrics_result) = tokio::join!(api_server, metrics_server);
    signal.abort();
    close_balancer(state).await;
    api_result.map_err(|source| StartError::Serve { which: "API", source })?;
    metrics_result.map_err(|source| StartError::Serve { which: "metrics", source })
}

/// Binds `host:port`. "" is every interface, as in Go: IPv6 and IPv4 when the
/// host has IPv6, IPv4 only otherwise. `[v6]` brackets are accepted.
async fn bind_host(host: &str, port: u16) -> Result<TcpListener, StartError> {
    let bind_err = |source| StartError::Bind { addr: format!("{host}:{port}"), source };
    if host.is_empty() {
        return match TcpListener::bind(SocketAddr::from(([0u16; 8], port))).await {
            Ok(listener) => Ok(listener),
            Err(_) => TcpListener::bind(SocketAddr::from(([0u8; 4], port))).await.map_err(bind_err),
        };
    }
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    TcpListener::bind((host, port)).await.map_err(bind_err)
}

/// `--config`: exactly what `POST /api/v1/lb/create` does with the same body.
async fn create_balancer(state: &ApiState, path: &Path) -> Result<(), StartError> {
    let config_err = |message: String| StartError::Config { path: path.to_owned(), message };
    let body = tokio::fs::read(path).await.map_err(|e| config_err(e.to_string()))?;
    let state = state.clone();
    // Loading the BPF program is blocking work.
    let created = tokio::task::spawn_blocking(move || api::create_from_json(&state, &body))
        .await
        .map_err(|e| config_err(format!("creating the balancer panicked: {e}")))?;
    created.map_err(|e| config_err(format!("{}: {}", e.code, e.message)))?;
    tracing::info!(config = %path.display(), "created the balancer");
    Ok(())
}

/// Drops the balancer now, rather than whenever the last clone of the state
/// goes, so its cleanup happens before the program exits and is logged.
async fn close_balancer(state: ApiState) {
    let closed = tokio::task::spawn_blocking(move || {
        // A handler that panicked under the lock (with -no-recovery) poisoned it; closing is still right.
        state.balancer.write().unwrap_or_else(PoisonError::into_inner).take().is_some()
    })
    .await;
    if matches!(closed, Ok(true)) {
        tracing::info!("closed the balancer");
    }
}
