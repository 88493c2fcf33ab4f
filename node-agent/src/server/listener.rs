//! The accept loop: plain HTTP or TLS on a listener the caller bound (tests
//! bind port 0), HTTP/1.1 and HTTP/2 through hyper-util's auto builder, the
//! per-connection timeouts of [`conn`](super::conn), and graceful shutdown.
//!
//! Each request carries the peer address as axum's `ConnectInfo<SocketAddr>`
//! (the allowlist reads it) and a [`RequestClock`] (the deadline middleware
//! reads it).
//!
//! What one connection may cost is bounded here, before hyper reads a byte
//! ([`Accept`]):
//! - a peer outside `--allow-cidr` is refused at accept, before hyper (or
//!   TLS) sees it: on a plain listener it gets a fixed 403 `FORBIDDEN`
//!   envelope, after at most 4 KiB of its request are read and discarded
//!   (waiting for them at most 1 s; nothing is parsed), then the socket is
//!   closed; on a TLS listener it is closed at once (an answer would need
//!   the handshake). At most 64 refusals are answered at a time; beyond,
//!   refused connections are closed without an answer;
//! - beyond `--max-connections` connections at once, a new one is refused
//!   the same way with 503 `TOO_MANY_CONNECTIONS` (and `Retry-After: 1`);
//!   accepting and refusing, rather than not accepting, keeps the kernel's
//!   backlog from holding clients in silence;
//! - a request head is at most [`MAX_HEAD_BYTES`] with [`MAX_HEADERS`]
//!   headers (HTTP/1: hyper's read buffer; HTTP/2: the header list). Over
//!   them, hyper answers HTTP/1 with its own `431` (or `400` for a head it
//!   cannot parse), with an empty body, and closes: hyper gives the service
//!   no say in those answers, so they are not the JSON envelope;
//! - an HTTP/2 connection has at most [`MAX_STREAMS`] requests in flight.
//!
//! Both refusals count in `weir_agent_api_connections_refused_total{reason}`.

use crate::error::Code;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::conn::{watchdog, ConnClock, Expiry, TimedIo, Timeouts, Tracked};
use super::security::Allowlist;
use crate::metrics::ApiMetrics;

/// The largest request head (request line and headers), in bytes: an
/// admin API's requests carry a token and a few headers; nginx allows 32 KiB
/// too. With the connection cap it bounds what heads can hold: 512 × 32 KiB.
pub const MAX_HEAD_BYTES: usize = 32 << 10;
/// The most headers in a request (hyper's default, made explicit).
pub const MAX_HEADERS: usize = 100;
/// Requests one HTTP/2 connection may have in flight (hyper's default is
/// 200): with the connection cap, it bounds the requests waiting at once.
pub const MAX_STREAMS: u32 = 16;
/// `--max-connections`' default: far more than an agent's clients (a
/// controller, operators, probes) need, few enough to bound memory.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// What the accept loop enforces on one listener.
#[derive(Debug, Clone)]
pub struct Accept {
    pub timeouts: Timeouts,
    /// Peers outside it are refused at accept; `None` serves every peer (the
    /// metrics listener, where kubelet probes come from the node's address).
    pub allow: Option<Allowlist>,
    /// Connections served at once; more are refused at accept.
    pub max_connections: usize,
    /// Where refusals are counted, if anywhere.
    pub metrics: Option<Arc<ApiMetrics>>,
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The peer is outside the allowlist.
    Peer(IpAddr),
    /// The listener serves this many connections already.
    Full(usize),
}

impl Refusal {
    /// The metric label.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Peer(_) => "allowlist",
            Self::Full(_) => "max_connections",
        }
    }

    /// The whole HTTP/1.1 answer, the API's envelope, with `Connection: close`.
    fn response(self) -> Vec<u8> {
        let (code, message, extra) = match self {
            Self::Peer(ip) => {
                (Code::Forbidden, format!("source address {ip} is not allowed to use the API (see --allow-cidr)"), "")
            }
            Self::Full(n) => (
                Code::TooManyConnections,
                format!("the agent serves at most {n} connections at once (--max-connections); retry later"),
                "retry-after: 1\r\n",
            ),
        };
        let status = code.status();
        let body =
            serde_json::json!({"success": false, "error": {"code": code.as_str(), "message": message}}).to_string();
        format!(
            "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{extra}connection: \
             close\r\n\r\n{body}",
            status.as_str(),
            status.canonical_reason().unwrap_or_default(),
            body.len()
        )
        .into_bytes()
    }
}

impl Accept {
    /// Whether to refuse a connection from `peer` while `open` are served.
    fn refusal(&self, peer: IpAddr, open: usize) -> Option<Refusal> {
        if self.allow.as_ref().is_some_and(|list| !list.allows(peer)) {
            return Some(Refusal::Peer(peer.to_canonical()));
        }
        (open >= self.max_connections).then_some(Refusal::Full(self.max_connections))
    }

    /// Counts a refusal.
    fn count(&self, why: Refusal) {
        tracing::debug!(reason = why.reason(), "connection refused at accept");
        if let Some(metrics) = &self.metrics {
            metrics.connection_refused(why.reason());
        }
    }
}

/// Refusals answered at once, at most; beyond, refused connections are
/// closed without an answer. With [`REFUSAL_PEEK`] and [`REFUSAL_WAIT`], all
/// refusals together hold at most 64 × 4 KiB for 1 s.
const MAX_REFUSALS: usize = 64;
/// What a refusal reads (and discards) before answering: HTTP clients
/// (hyper's among them) take an answer that comes before their request for
/// a protocol error, and a request left unread makes the close a reset that
/// may destroy the answer. A small request head fits; nothing is parsed.
const REFUSAL_PEEK: usize = 4 << 10;
/// How long a refusal waits for the client's first bytes.
const REFUSAL_WAIT: Duration = Duration::from_secs(1);

/// Answers a refused plain connection: waits (briefly) for the request's
/// first bytes, discards up to [`REFUSAL_PEEK`] of them, writes the answer
/// if the socket takes it at once (a fresh socket always does), closes.
async fn refuse(mut tcp: TcpStream, why: Refusal) {
    let mut discard = [0u8; REFUSAL_PEEK];
    let _ = tokio::time::timeout(REFUSAL_WAIT, tcp.read(&mut discard)).await;
    let _ = tcp.try_write(&why.response());
}

/// When a request began (its first byte, as near as the connection knows), for
/// the read timeout measured like Go's: from there.
#[derive(Debug, Clone, Copy)]
pub struct RequestClock {
    pub began: Instant,
}

/// How long shutdown waits for in-flight requests. No timeout bounds a
/// handler (the write timeout bounds writing its answer), so this does;
/// Kubernetes' default termination grace period is as long.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

/// Serves `app` on `listener` until `shutdown` resolves, then stops accepting,
/// lets in-flight requests finish (for up to 30 s) and closes idle
/// connections. With `tls`, every connection must complete a TLS handshake
/// (within the read timeout) first.
pub async fn run(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    accept: Accept,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let timeouts = accept.timeouts;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timeout would also cut idle keep-alive connections;
    // ConnClock applies the read timeout instead (it needs the timer set to be
    // turned off explicitly).
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(MAX_HEAD_BYTES)
        .max_headers(MAX_HEADERS);
    builder.http2().max_header_list_size(MAX_HEAD_BYTES as u32).max_concurrent_streams(MAX_STREAMS);
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    let mut refusals = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
                    // Finished connections must not count against the cap.
                    while conns.try_join_next().is_some() {}
                    while refusals.try_join_next().is_some() {}
                    if let Some(why) = accept.refusal(peer.ip(), conns.len()) {
                        accept.count(why);
                        // TLS: an answer would need the handshake; closed.
                        if tls.is_none() && refusals.len() < MAX_REFUSALS {
                            refusals.spawn(refuse(tcp, why));
                        }
                        continue;
                    }
                    let conn = Conn { peer, timeouts, app: app.clone(), builder: builder.clone(), stop: stop_rx.clone() };
                    conns.spawn(conn.serve(tcp, tls.clone()));
                }
                Err(err) => accept_error(err).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let grace = SHUTDOWN_GRACE;
    let drained = tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(connections = conns.len(), "shutdown: closing connections still busy after {grace:?}");
        conns.shutdown().await;
    }
    Ok(())
}

/// Accept errors are about one connection (reset before accept) or about
/// resources (out of file descriptors): neither stops the server, but the
/// latter must not spin.
async fn accept_error(err: std::io::Error) {
    let transient = matches!(
        err.kind(),
        std::io::ErrorKind::ConnectionAborted | std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::Interrupted
    );
    if transient {
        tracing::debug!(%err, "accept");
    } else {
        tracing::warn!(%err, "accept failed; retrying in 100 ms");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One accepted connection.
struct Conn {
    peer: SocketAddr,
    timeouts: Timeouts,
    app: Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    stop: watch::Receiver<bool>,
}

impl Conn {
    async fn serve(self, tcp: TcpStream, tls: Option<TlsAcceptor>) {
        // Small JSON answers: do not let Nagle hold them back.
        let _ = tcp.set_nodelay(true);
        let clock = ConnClock::new();
        let write_timeout = self.timeouts.write;
        match tls {
            None => self.drive(TimedIo::new(tcp, clock.clone(), write_timeout), clock).await,
            Some(acceptor) => {
                let handshake = acceptor.accept(tcp);
                let stream = match self.timeouts.read {
                    Some(limit) => match tokio::time::timeout(limit, handshake).await {
                        Ok(result) => result,
                        Err(_) => {
                            tracing::debug!(peer = %self.peer, "TLS handshake not done within the read timeout");
                            return;
                        }
                    },
                    None => handshake.await,
                };
                match stream {
                    Ok(stream) => self.drive(TimedIo::new(stream, clock.clone(), write_timeout), clock).await,
                    // Failed client verification lands here too: no certificate, a foreign CA.
                    Err(err) => tracing::debug!(peer = %self.peer, %err, "TLS handshake failed"),
                }
            }
        }
    }

    async fn drive<I>(mut self, io: TimedIo<I>, clock: Arc<ConnClock>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (peer, app, service_clock) = (self.peer, self.app.clone(), clock.clone());
        let service = hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let (began, guard) = service_clock.request_started();
            req.extensions_mut().insert(ConnectInfo(peer));
            req.extensions_mut().insert(RequestClock { began });
            let app = app.clone();
            async move {
                let Ok(response) = app.oneshot(req).await;
                Ok::<_, Infallible>(response.map(|body| Tracked::new(body, guard)))
            }
        });
        let conn = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let expiry = watchdog(clock, self.timeouts);
        tokio::pin!(expiry);
        let mut closing = *self.stop.borrow();
        if closing {
            conn.as_mut().graceful_shutdown();
        }
        loop {
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(err) = result {
                        tracing::debug!(%peer, %err, "connection ended with an error");
                    }
                    return;
                }
                why = &mut expiry, if !closing => match why {
                    // A silent connection: let hyper close it (HTTP/2 sends GOAWAY).
                    Expiry::Idle => {
                        tracing::debug!(%peer, "closing an idle connection");
                        closing = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    // A slow request head: closing gracefully would wait for it.
                    Expiry::Head => {
                        tracing::debug!(%peer, "request head not received within the read timeout; closing");
                        return;
                    }
                },
                // Err: the server is gone, which also means stop.
                _ = self.stop.changed(), if !closing => {
                    closing = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
        }
    }
}
