//! `weir-agent` as a program: the API on `-host:-port`, metrics (and probes)
//! on `--metrics-addr`, until a shutdown signal. Standalone, like
//! katran-server, the balancer is created by `POST /api/v1/lb/create` or at
//! start-up from `--config`; in cluster mode (`--cluster`) it is created at
//! start-up from the flags and `--config`, and the cluster sync
//! ([`cluster::watch`]) programs it.

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::TcpListener;
use tokio::sync::watch;

use super::flags::ClusterFlags;
use super::tls::{self, TlsError, TlsFiles};
use super::{app, exposition, listener, AppOptions, ServeFlags, Token};
use crate::api::system::System;
use crate::api::{self, ApiState};
use crate::cluster::{self, Reconciler};
use crate::dataplane::{self, BalancerConfig, KatranConfig, Pins};
use crate::handles::{Datapath, Ownership, SharedBalancer, UserspaceCounters};
use crate::metrics::{datapath, Metrics};
use crate::probing::Probing;
use weir_crds::mac::Mac;

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

    #[error("--cluster: {0}")]
    Cluster(String),

    #[error("--cluster: connecting to the Kubernetes API")]
    Kube(#[source] kube::Error),

    #[error("the {which} server failed")]
    Serve {
        which: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// Runs the agent until `shutdown` resolves, then stops both listeners
/// gracefully and closes the balancer (which detaches it or leaves it
/// forwarding, as its `cleanup_on_shutdown` says). With `--cluster` it
/// connects to the Kubernetes API first (in-cluster or KUBECONFIG).
pub async fn serve(flags: ServeFlags, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), StartError> {
    let client = match flags.cluster.cluster {
        true => Some(kube::Client::try_default().await.map_err(StartError::Kube)?),
        false => None,
    };
    serve_with_client(flags, client, shutdown).await
}

/// [`serve`] with the Kubernetes client given (used only with `--cluster`;
/// tests pass one of the API server double).
pub async fn serve_with_client(
    flags: ServeFlags,
    client: Option<kube::Client>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StartError> {
    // Everything that can fail cheaply (files, addresses) is checked before
    // the balancer is created, so a typo never leaves a datapath behind.
    let cluster = match flags.cluster.cluster {
        true => Some(cluster_start(&flags, client).await?),
        false => None,
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
    let (balancer, counters) = (SharedBalancer::default(), Arc::<UserspaceCounters>::default());
    let limits = options.effective_limits(tls.is_some(), flags.tls_client_ca.is_some());
    let metrics = flags.metrics_addr.map(|_| {
        let options = datapath::Options { conn_table_usage: flags.metrics_conn_table_usage };
        Arc::new(Metrics::new(&Datapath { balancer: balancer.clone(), counters: counters.clone() }, options))
    });
    let probing = (flags.prober || cluster.is_some())
        .then(|| Probing::start(balancer.clone(), metrics.as_ref().map(|m| m.probes()).unwrap_or_default()));
    let state = ApiState {
        balancer,
        counters,
        probing,
        pins: Some(Pins { pin_root: flags.pin_root.clone(), state_dir: flags.state_dir.clone() }),
        cluster: cluster.as_ref().map(|c| c.reconciler.clone() as Arc<dyn Ownership>),
        // The flags' Debug form is canonical enough for a hash, and holds no secret (the token file's path only).
        system: Arc::new(System::new(limits, format!("{flags:?}"))),
        ..ApiState::default()
    };
    let api_metrics = metrics.as_ref().map(|m| m.api());
    let router = app(api::router(state.clone()), &options, api_metrics.clone());

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
    let sync = match cluster {
        Some(cluster) => {
            let created = {
                let state = state.clone();
                tokio::task::spawn_blocking(move || api::create_with(&state, cluster.config)).await
            };
            created
                .map_err(|e| StartError::Cluster(format!("creating the balancer panicked: {e}")))?
                .map_err(|e| StartError::Cluster(format!("creating the balancer: {}: {}", e.code, e.message)))?;
            tracing::info!(node = %cluster.node_name, "cluster mode: programming the datapath from the Kubernetes API");
            Some(tokio::spawn(cluster::watch::run(
                cluster.client,
                cluster.node_name,
                state.balancer.clone(),
                cluster.reconciler,
            )))
        }
        None => {
            if let Some(path) = &flags.config {
                let body = tokio::fs::read(path).await.map_err(|e| config_err(path, e.to_string()))?;
                create(&state, body, |message| config_err(path, message)).await?;
                tracing::info!(config = %path.display(), "created the balancer");
            }
            None
        }
    };

    // One signal stops both listeners.
    let (stop_tx, stop_rx) = watch::channel(false);
    let signal = tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let accept = options.accept(api_metrics);
    let api_server = listener::run(api_listener, tls, accept, router, stopped(stop_rx.clone()));
    let metrics_server = async {
        match metrics_server {
            Some((listener, metrics)) => {
                let (timeouts, cap) = (options.timeouts, options.max_connections);
                exposition::serve(listener, metrics, state.clone(), timeouts, cap, stopped(stop_rx.clone())).await
            }
            None => Ok(()),
        }
    };
    let (api_result, metrics_result) = tokio::join!(api_server, metrics_server);
    signal.abort();
    if let Some(sync) = sync {
        sync.abort();
        let _ = sync.await;
    }
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

fn config_err(path: &Path, message: String) -> StartError {
    StartError::Config { path: path.to_owned(), message }
}

/// Creates the balancer from a `/lb/create` body: exactly what `POST
/// /api/v1/lb/create` does with it. `error` turns a failure's text into the
/// caller's error.
async fn create(state: &ApiState, body: Vec<u8>, error: impl Fn(String) -> StartError) -> Result<(), StartError> {
    let state = state.clone();
    // Loading the BPF program is blocking work.
    // A configuration document (`/config/export`'s) rebuilds VIPs and reals
    // too; anything else is the body of /lb/create.
    let created = tokio::task::spawn_blocking(move || {
        if api::is_document(&body) {
            api::import_document(&state, &body)
        } else {
            api::create_from_json(&state, &body)
        }
    })
    .await
    .map_err(|e| error(format!("creating the balancer panicked: {e}")))?;
    created.map_err(|e| error(format!("{}: {}", e.code, e.message)))
}

/// `--default-mac gateway`: resolve the interface's default gateway.
const GATEWAY: &str = "gateway";

/// What cluster mode starts with.
struct ClusterStart {
    client: kube::Client,
    node_name: String,
    reconciler: Arc<Mutex<Reconciler>>,
    config: BalancerConfig,
}

async fn cluster_start(flags: &ServeFlags, client: Option<kube::Client>) -> Result<ClusterStart, StartError> {
    let err = |m: &str| StartError::Cluster(m.to_owned());
    let node_name = match flags.cluster.node_name.as_deref() {
        Some(name) if !name.is_empty() => name.to_owned(),
        _ => return Err(err("--node-name (or the NODE_NAME environment variable) is required")),
    };
    let client = client.ok_or_else(|| err("no Kubernetes client"))?;
    let config = match &flags.config {
        Some(path) => Some(tokio::fs::read(path).await.map_err(|e| config_err(path, e.to_string()))?),
        None => None,
    };
    let cluster = &flags.cluster;
    let pins = Pins { pin_root: flags.pin_root.clone(), state_dir: flags.state_dir.clone() };
    let mut config = cluster_config(config.as_deref(), cluster, &pins).map_err(StartError::Cluster)?;
    match cluster.default_mac.as_deref() {
        Some(GATEWAY) => {
            let iface = cluster.interface.clone().ok_or_else(|| err("--default-mac gateway needs --interface"))?;
            let mac = tokio::task::spawn_blocking(move || dataplane::gateway::default_gateway_mac(&iface))
                .await
                .map_err(|e| StartError::Cluster(format!("resolving the gateway's MAC panicked: {e}")))?
                .map_err(|e| StartError::Cluster(format!("--default-mac {e}")))?;
            tracing::info!(mac = %Mac(mac), "--default-mac gateway: the default gateway's MAC");
            config.default_mac = mac;
        }
        Some(text) => {
            config.default_mac = text.parse::<Mac>().map_err(|e| StartError::Cluster(format!("--default-mac: {e}")))?.0;
        }
        None => {}
    }
    Ok(ClusterStart { client, node_name, reconciler: Arc::new(Mutex::new(Reconciler::new())), config })
}

/// The Balancer configuration of cluster mode: `--config`'s `/lb/create`
/// body (or Katran's defaults) with `main_interface` and `xdp_attach_flags`
/// from the flags that are given, and `cleanup_on_shutdown` false unless the
/// file says otherwise: an agent that stops (an upgrade, a crash) leaves the
/// datapath forwarding for the next one to adopt. `--default-mac` is the
/// caller's to set (it may need the gateway resolved).
fn cluster_config(config: Option<&[u8]>, flags: &ClusterFlags, pins: &Pins) -> Result<BalancerConfig, String> {
    let mut katran = match config {
        Some(bytes) => match serde_json::from_slice::<serde_json::Value>(bytes) {
            Ok(serde_json::Value::Object(o)) if o.contains_key("lb") => {
                return Err("--config: a configuration document (/config/export) cannot seed cluster mode, whose VIPs \
                            come from VirtualServices; give the body of /lb/create"
                    .to_owned())
            }
            Ok(body @ serde_json::Value::Object(_)) => {
                serde_json::from_value::<KatranConfig>(body).map_err(|e| format!("--config: {e}"))?
            }
            Ok(_) => return Err("--config must hold a JSON object (the body of /lb/create)".to_owned()),
            Err(e) => return Err(format!("--config is not JSON: {e}")),
        },
        None => KatranConfig::default(),
    };
    if let Some(interface) = &flags.interface {
        katran.main_interface = Some(interface.clone());
    }
    if let Some(mode) = flags.xdp_mode {
        katran.xdp_attach_flags = Some(mode.attach_flags());
    }
    katran.cleanup_on_shutdown.get_or_insert(false);
    BalancerConfig::from_katran(&katran, Some(pins)).map_err(|e| format!("--config: {e}"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataplane::AttachMode;
    use crate::server::XdpMode;

    fn flags(interface: Option<&str>, mac: Option<&str>, mode: Option<XdpMode>) -> ClusterFlags {
        ClusterFlags {
            cluster: true,
            node_name: Some("n".into()),
            interface: interface.map(str::to_owned),
            default_mac: mac.map(str::to_owned),
            xdp_mode: mode,
        }
    }

    fn config(config: Option<&str>, flags: &ClusterFlags) -> Result<BalancerConfig, String> {
        let pins = Pins { pin_root: "/sys/fs/bpf/weir".into(), state_dir: "/run/weir".into() };
        cluster_config(config.map(str::as_bytes), flags, &pins)
    }

    #[test]
    fn flags_override_the_config_and_cleanup_defaults_to_false() {
        let file = r#"{"max_vips": 64, "main_interface": "eth9", "xdp_attach_flags": 4}"#;
        let c = config(Some(file), &flags(Some("eth0"), None, Some(XdpMode::Generic))).unwrap();
        assert_eq!((c.max_vips, c.main_interface.as_str()), (64, "eth0"));
        assert_eq!((c.attach_mode, c.cleanup_on_shutdown), (AttachMode::Generic, false));
        assert_eq!(c.pin_root.as_deref(), Some(Path::new("/sys/fs/bpf/weir")));
        // What the flags leave out stays as the file says, including an explicit cleanup.
        let file = r#"{"main_interface": "eth9", "cleanup_on_shutdown": true, "xdp_attach_flags": 4}"#;
        let kept = config(Some(file), &flags(None, None, None)).unwrap();
        assert_eq!(
            (kept.main_interface.as_str(), kept.attach_mode, kept.cleanup_on_shutdown),
            ("eth9", AttachMode::Driver, true)
        );
    }

    #[test]
    fn a_config_that_is_not_an_object_is_refused() {
        let f = flags(None, None, None);
        assert_eq!(config(Some("[1]"), &f).unwrap_err(), "--config must hold a JSON object (the body of /lb/create)");
        assert!(config(Some("{"), &f).unwrap_err().starts_with("--config is not JSON: "));
        assert!(config(Some(r#"{"lb": {}}"#), &f).unwrap_err().starts_with("--config: a configuration document"));
        assert!(config(Some(r#"{"max_vips": "many"}"#), &f).unwrap_err().starts_with("--config: invalid type"));
    }
}
