//! weir-agent's HTTP API running in a topology's lb namespace, and a plain
//! HTTP/1.1 client for it: the datapath driven the way katran-server users
//! drive it. The server is the agent's own stack (the API router inside the
//! server's layers, on its listener), on a runtime whose threads live in the
//! lb namespace, so `/lb/create` attaches XDP to the lb host's interface.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;
use weir_agent::api::{self, ApiState, Pins};
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
        let state = ApiState {
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

    /// One request from inside the lb namespace; the status and the JSON body.
    pub fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.addr,
            body.len()
        );
        let addr = self.addr;
        let raw = self.topo.lb.ns.run(move || -> Result<Vec<u8>> {
            let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            stream.set_read_timeout(Some(Duration::from_secs(30)))?;
            stream.write_all(request.as_bytes())?;
            let mut raw = Vec::new();
            stream.read_to_end(&mut raw)?;
            Ok(raw)
        })?;
        parse_response(&raw).with_context(|| format!("{method} {path}"))
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

/// Status code and JSON body of an HTTP/1.1 response with a Content-Length.
fn parse_response(raw: &[u8]) -> Result<(u16, Value)> {
    let text = std::str::from_utf8(raw).context("response is not UTF-8")?;
    let (head, body) = text.split_once("\r\n\r\n").context("no end of headers")?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("bad status line: {head:?}"))?;
    let json = if body.is_empty() { Value::Null } else { serde_json::from_str(body).context("body is not JSON")? };
    Ok((status, json))
}
