//! weir-operator: connects to the cluster (in-cluster service account or KUBECONFIG) and
//! runs the controllers until SIGTERM or SIGINT.
//!
//! TODO(#4): leader election, the DaemonSet manager, `/metrics` and health endpoints.

use anyhow::Context as _;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
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
    weir_operator::run(client, shutdown).await.context("running the controllers")?;
    tracing::info!("stopped");
    Ok(())
}
