//! The signals that stop the server gracefully: SIGTERM (what Kubernetes and
//! systemd send) and SIGINT (Ctrl-C).

use tokio::signal::unix::{signal, SignalKind};

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown() {
    tokio::select! {
        () = wait_for(SignalKind::terminate(), "SIGTERM") => tracing::info!("SIGTERM: shutting down"),
        () = wait_for(SignalKind::interrupt(), "SIGINT") => tracing::info!("SIGINT: shutting down"),
    }
}

async fn wait_for(kind: SignalKind, name: &str) {
    match signal(kind) {
        Ok(mut stream) => {
            stream.recv().await;
        }
        // Never expected (only when the runtime has no signal driver); the other signal still works.
        Err(err) => {
            tracing::warn!(%err, "cannot watch {name}");
            std::future::pending::<()>().await;
        }
    }
}
