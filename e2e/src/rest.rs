//! weir-agent's HTTP API running in a topology's lb namespace, and reqwest's
//! blocking client for it: the datapath driven the way katran-server users
//! drive it. The server is the agent's own stack (the API router inside the
//! server's layers, on its listener), on a runtime whose threads live in the
//! lb namespace, so `/lb/create` attaches XDP to the lb host's interface.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use weir_agent::api::{self, ApiState, Pins};
use weir_agent::prober::ProbeMetrics;
use weir_agent::probing::Probing;
use weir_agent::server::{self, AppOptions};

use crate::Topology;

/// A running agent API; stops (closing its balancer) on drop.
pub struct RestAgent<'t> {
    topo: &'t Topology,
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<'t> RestAgent<'t> {
    /// Starts the API on 127.0.0.1 (port chosen by the kernel) in `topo`'s lb
    /// namespace, pinning under the topology's own pin root.
    pub fn start(topo: &'t Topology) -> Result<Self> {
        Self::start_with(topo, false)
    }

    /// [`Self::start`] with weir's prober running (as `weir-agent --prober`):
    /// its probes leave from the lb namespace.
    pub fn start_with_prober(topo: &'t Topology) -> Result<Self> {
        Self::start_with(topo, true)
    }

    fn start_with(topo: &'t Topology, prober: bool) -> Result<Self> {
        let mut state = ApiState {
            pins: Some(Pins { pin_root: topo.pin_root.clone(), state_dir: crate::lb::state_dir(topo) }),
            ..ApiState::default()
        };
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = topo.lb.ns.spawn(move || {
            // Built on this thread (inside the namespace): its workers inherit it.
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
            let runtime = match runtime {
                Ok(runtime) => runtime,
                Err(e) => return drop(addr_tx.send(Err(anyhow::Error::from(e)))),
            };
            runtime.block_on(async move {
                if prober {
                    state.probing = Some(Probing::start(state.balancer.clone(), ProbeMetrics::default()));
                }
                let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
                    Ok(listener) => listener,
                    Err(e) => return drop(addr_tx.send(Err(e.into()))),
                };
                let _ = addr_tx.send(listener.local_addr().map_err(Into::into));
                let options = AppOptions { request_logging: false, ..AppOptions::default() };
                let app = server::app(api::router(state.clone()), &options, None);
                let shutdown = async {
                    let _ = stop_rx.await;
                };
                if let Err(e) = server::run(listener, None, options.accept(None), app, shutdown).await {
                    eprintln!("weir-agent API server failed: {e}");
                }
                // As the standalone agent does on shutdown: close the balancer.
                let balancer = state.balancer.write().map(|mut b| b.take());
                drop(balancer);
            });
        })?;
        let addr = addr_rx.recv().context("the API thread ended before listening")??;
        Ok(Self { topo, addr, stop: Some(stop_tx), thread: Some(thread) })
    }

    /// One request from inside the lb namespace; the status and the JSON body
    /// (null when empty). Every request says `Content-Type: application/json`,
    /// with a body or without, as katran-server clients do.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let verb = reqwest::Method::from_bytes(method.as_bytes()).with_context(|| format!("method {method:?}"))?;
        let url = format!("http://{}{path}", self.addr);
        let body = body.map(Value::to_string).unwrap_or_default();
        let (status, text) = self
            .topo
            .lb
            .ns
            .run(move || -> reqwest::Result<(u16, String)> {
                // Built on this thread, inside the namespace: the thread the
                // blocking client runs its connections on inherits it.
                let client = reqwest::blocking::Client::builder()
                    .no_proxy()
                    .connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(30))
                    .build()?;
                let response = client
                    .request(verb, url)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(body)
                    .send()?;
                Ok((response.status().as_u16(), response.text()?))
            })
            .with_context(|| format!("{method} {path}"))?;
        let json = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).with_context(|| format!("{method} {path}: the body is not JSON: {text:?}"))?
        };
        Ok((status, json))
    }

    /// A request that must succeed with `status`; its `data` (or null).
    pub fn expect(&self, method: &str, path: &str, body: Option<Value>, status: u16) -> Result<Value> {
        let (got, json) = self.call(method, path, body.as_ref())?;
        if got != status || json["success"] != Value::Bool(true) {
            bail!("{method} {path}: expected {status} with success, got {got}: {json}");
        }
        Ok(json.get("data").cloned().unwrap_or(Value::Null))
    }
}

impl Drop for RestAgent<'_> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
