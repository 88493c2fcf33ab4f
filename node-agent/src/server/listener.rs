//! The accept loop: plain HTTP or TLS on a listener the caller bound (tests
//! bind port 0), HTTP/1.1 and HTTP/2 through hyper-util's auto builder, the
//! per-connection timeouts of [`conn`](super::conn), and graceful shutdown.
//!
//! Each request carries the peer address as axum's `ConnectInfo<SocketAddr>`
//! (the allowlist reads it) and a [`RequestClock`] (the deadline middleware
//! reads it).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use super::conn::{watchdog, ConnClock, Expiry, TimedIo, Timeouts, Tracked};

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
    timeouts: Timeouts,
    app: Router,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timeout would also cut idle keep-alive connections;
    // ConnClock applies the read timeout instead (it needs the timer set to be
    // turned off explicitly).
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    let builder = Arc::new(builder);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, peer)) => {
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
