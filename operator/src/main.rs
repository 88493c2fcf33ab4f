//! weir-operator: parses the command line ([`weir_operator::flags::Flags`]), connects to the
//! cluster (in-cluster service account or KUBECONFIG), serves `/metrics`, `/healthz` and
//! `/readyz`, and runs the controllers — as the elected leader unless
//! `--leader-election=false` — until SIGTERM or SIGINT.
//!
//! Exits non-zero when leadership is lost: Kubernetes restarts the pod as a standby (see
//! `weir_operator::leader`).

use anyhow::Context as _;
use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use weir_operator::flags::Flags;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let flags = Flags::parse();
    let options = flags.options()?;
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;

    let listener = tokio::net::TcpListener::bind(flags.metrics_addr)
        .await
        .with_context(|| format!("binding the metrics address {}", flags.metrics_addr))?;
    tracing::info!(addr = %flags.metrics_addr, "serving /metrics, /healthz and /readyz");
    let (http_stop, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(weir_operator::http::serve(
        listener,
        options.metrics.clone(),
        options.health.clone(),
        async move {
            let _ = http_stopped.await;
        },
    ));

    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let shutdown = async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            r = tokio::signal::ctrl_c() => match r {
                Ok(()) => tracing::info!("SIGINT: shutting down"),
                Err(e) => tracing::error!(error = %e, "waiting for SIGINT failed; shutting down"),
            },
        }
    };
    let result = weir_operator::run(client, options, shutdown).await;
    // The HTTP server outlives the controllers so that probes answer until the end.
    let _ = http_stop.send(());
    match http.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "the HTTP server failed"),
        Err(e) => tracing::warn!(error = %e, "the HTTP server task failed"),
    }
    result.context("running the operator")?;
    tracing::info!("stopped");
    Ok(())
}
