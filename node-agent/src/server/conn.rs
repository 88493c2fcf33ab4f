//! Per-connection timeouts, as close to Go's net/http (what katran-server's
//! `-read-timeout -write-timeout -idle-timeout` mean) as hyper allows.
//!
//! hyper 1 only offers an HTTP/1 header-read timeout whose clock also runs
//! while a keep-alive connection waits for its next request, which would make
//! the read timeout cut idle connections. So the connection keeps its own
//! [`ConnClock`], fed by [`TimedIo`] (bytes read and written) and by the
//! request service ([`ConnClock::request_started`], whose guard lives until the
//! response body is finished), and a [`watchdog`] decides:
//!
//! - read timeout, HTTP/1: a request head must arrive within it, counted from
//!   its first byte (from the accept for the first request); the body deadline
//!   is applied by the `limits` middleware from the same start;
//! - idle timeout: with no request in flight, a connection silent for this long
//!   is closed (HTTP/1 and HTTP/2);
//! - write timeout: a write the peer does not drain for this long fails the
//!   connection ([`TimedIo`]). That is all it bounds: writing the response, as
//!   Go's net/http bounds the handler's output. The handler itself runs to
//!   its end and its answer is sent: a change that took longer than the write
//!   timeout was made, and is never reported as failed (Go would not answer
//!   at all; katran-server's handlers are never cut short either).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes};
use hyper::body::{Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The three timeouts; `None` disables one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    pub read: Option<Duration>,
    pub write: Option<Duration>,
    /// Already resolved: Go's "0 means the read timeout" is applied by the caller.
    pub idle: Option<Duration>,
}

impl Timeouts {
    /// From flag values where 0 means "no timeout" (Go's convention).
    pub fn from_flags(read: Duration, write: Duration, idle: Duration) -> Self {
        let some = |d: Duration| (!d.is_zero()).then_some(d);
        Self { read: some(read), write: some(write), idle: some(idle) }
    }
}

/// The HTTP/2 client preface: a connection that starts with it is HTTP/2,
/// whose idle pings must not count as the head of a request.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What the watchdog needs to know about one connection. Times are
/// nanoseconds since `epoch`, in atomics because HTTP/2 runs request futures
/// on other tasks than the connection's.
#[derive(Debug)]
pub struct ConnClock {
    epoch: Instant,
    /// The last byte read or written, or the end of the last response.
    last_io: AtomicU64,
    /// 1 + when the head of the request being received began; 0 while idle.
    head_since: AtomicU64,
    in_flight: AtomicUsize,
    h2: AtomicBool,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// A request head did not arrive within the read timeout.
    Head,
    /// No request and no traffic for the idle timeout.
    Idle,
}

impl ConnClock {
    pub fn new() -> Arc<Self> {
        // The first request's head is due within the read timeout of the accept.
        Arc::new(Self {
            epoch: Instant::now(),
            last_io: AtomicU64::new(0),
            head_since: AtomicU64::new(1),
            in_flight: AtomicUsize::new(0),
            h2: AtomicBool::new(false),
        })
    }

    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX - 1)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.epoch + Duration::from_nanos(nanos)
    }

    fn on_read(&self) {
        let now = self.now();
        self.last_io.store(now, Ordering::Relaxed);
        if self.in_flight.load(Ordering::Relaxed) == 0 {
            // The first byte of the next request: its head is now due.
            let _ = self.head_since.compare_exchange(0, now + 1, Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    fn on_write(&self) {
        self.last_io.store(self.now(), Ordering::Relaxed);
    }

    /// A request head was parsed. Returns when the request began (its first
    /// byte, as near as known) and a guard to keep until the response is done.
    pub fn request_started(self: &Arc<Self>) -> (Instant, InFlight) {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let since = self.head_since.swap(0, Ordering::Relaxed);
        let began = if since == 0 { Instant::now() } else { self.at(since - 1) };
        (began, InFlight(self.clone()))
    }

    /// The next moment the connection expires if nothing happens, and why;
    /// `None` while a request is in flight or without applicable timeouts.
    fn deadline(&self, timeouts: &Timeouts) -> Option<(Instant, Expiry)> {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return None;
        }
        let since = self.head_since.load(Ordering::Relaxed);
        if since != 0 && !self.h2.load(Ordering::Relaxed) {
            if let Some(read) = timeouts.read {
                return Some((self.at(since - 1) + read, Expiry::Head));
            }
        }
        let idle = timeouts.idle?;
        Some((self.at(self.last_io.load(Ordering::Relaxed)) + idle, Expiry::Idle))
    }
}

/// Held while a request is in flight, dropped when its response body is done.
#[derive(Debug)]
pub struct InFlight(Arc<ConnClock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.on_write();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves when the connection has expired. Sleeps until the next deadline
/// and re-checks it (activity moves deadlines later); while a request is in
/// flight it re-checks every `min(read, idle)`, so a deadline that appears when
/// the request ends is never overslept.
pub async fn watchdog(clock: Arc<ConnClock>, timeouts: Timeouts) -> Expiry {
    let recheck = match (timeouts.read, timeouts.idle) {
        (Some(r), Some(i)) => r.min(i),
        (Some(d), None) | (None, Some(d)) => d,
        (None, None) => return std::future::pending().await,
    };
    loop {
        match clock.deadline(&timeouts) {
            Some((at, why)) if at <= Instant::now() => return why,
            Some((at, _)) => tokio::time::sleep_until(at).await,
            None => tokio::time::sleep(recheck).await,
        }
    }
}

/// A connection's byte stream, feeding its [`ConnClock`] and failing writes
/// the peer leaves undrained for longer than the write timeout.
pub struct TimedIo<T> {
    inner: T,
    clock: Arc<ConnClock>,
    write_timeout: Option<Duration>,
    /// Armed while a write is blocked on the peer.
    stall: Option<Pin<Box<Sleep>>>,
    /// Bytes of the HTTP/2 preface matched so far; `usize::MAX` once decided.
    preface: usize,
}

impl<T> TimedIo<T> {
    pub fn new(inner: T, clock: Arc<ConnClock>, write_timeout: Option<Duration>) -> Self {
        Self { inner, clock, write_timeout, stall: None, preface: 0 }
    }

    fn sniff_preface(&mut self, bytes: &[u8]) {
        if self.preface == usize::MAX {
            return;
        }
        let want = &H2_PREFACE[self.preface..];
        let n = want.len().min(bytes.len());
        if bytes[..n] != want[..n] {
            self.preface = usize::MAX;
            return;
        }
        self.preface += n;
        if self.preface == H2_PREFACE.len() {
            self.clock.h2.store(true, Ordering::Relaxed);
            self.preface = usize::MAX;
        }
    }

    /// Turns a pending write into a timeout error once it has been stuck too long.
    fn stalled(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(limit) = self.write_timeout else { return Poll::Pending };
        let sleep = self.stall.get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "write timeout: the peer is not reading")))
    }

    fn progressed(&mut self) {
        self.stall = None;
        self.clock.on_write();
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.inner).poll_read(cx, buf))?;
        let fresh = &buf.filled()[before..];
        if !fresh.is_empty() {
            this.sniff_preface(fresh);
            this.clock.on_read();
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write(cx, data) {
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => this.stalled(cx).map(|r| r.map(|()| 0)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_write_vectored(cx, bufs) {
            Poll::Ready(result) => {
                this.progressed();
                Poll::Ready(result)
            }
            Poll::Pending => this.stalled(cx).map(|r| r.map(|()| 0)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_flush(cx) {
            Poll::Ready(result) => {
                this.stall = None;
                Poll::Ready(result)
            }
            Poll::Pending => this.stalled(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A response body that keeps its request's [`InFlight`] guard until hyper
/// has taken the last frame, so the idle clock starts after the response.
pub struct Tracked {
    inner: Body,
    _guard: InFlight,
}

impl Tracked {
    pub fn new(inner: Body, guard: InFlight) -> Self {
        Self { inner, _guard: guard }
    }
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timeouts =
        Timeouts { read: Some(Duration::from_secs(30)), write: None, idle: Some(Duration::from_secs(120)) };

    /// `a` and `b` within 100 ms of each other (the clock runs during the test).
    fn near(a: Instant, b: Instant) -> bool {
        a.max(b) - a.min(b) < Duration::from_millis(100)
    }

    #[tokio::test]
    async fn first_head_is_due_within_the_read_timeout_of_the_accept() {
        let clock = ConnClock::new();
        let (at, why) = clock.deadline(&T).unwrap();
        assert_eq!(why, Expiry::Head);
        assert_eq!(at, clock.epoch + Duration::from_secs(30));
    }

    #[tokio::test]
    async fn idle_after_a_response_then_head_from_the_first_byte() {
        let clock = ConnClock::new();
        let (_, guard) = clock.request_started();
        assert_eq!(clock.deadline(&T), None, "no deadline while a request is in flight");
        drop(guard);
        let (at, why) = clock.deadline(&T).unwrap();
        assert_eq!(why, Expiry::Idle);
        assert!(near(at, Instant::now() + Duration::from_secs(120)));
        clock.on_read();
        let (at, why) = clock.deadline(&T).unwrap();
        assert_eq!(why, Expiry::Head);
        assert!(near(at, Instant::now() + Duration::from_secs(30)));
        let (began, _guard) = clock.request_started();
        assert!(near(began, Instant::now()));
        assert_eq!(clock.deadline(&T), None);
    }

    #[tokio::test]
    async fn http2_connections_only_idle_out() {
        let clock = ConnClock::new();
        let mut io = TimedIo::new(tokio::io::empty(), clock.clone(), None);
        io.sniff_preface(&H2_PREFACE[..10]);
        io.sniff_preface(&H2_PREFACE[10..]);
        assert!(clock.h2.load(Ordering::Relaxed));
        assert_eq!(clock.deadline(&T).unwrap().1, Expiry::Idle);
    }

    #[tokio::test]
    async fn http1_is_not_mistaken_for_http2() {
        let clock = ConnClock::new();
        let mut io = TimedIo::new(tokio::io::empty(), clock.clone(), None);
        io.sniff_preface(b"PRI * HTTP/1.1\r\n");
        io.sniff_preface(&H2_PREFACE[14..]);
        assert!(!clock.h2.load(Ordering::Relaxed));
    }

    #[tokio::test]
    async fn watchdog_fires_at_the_deadline() {
        let timeouts = Timeouts { read: Some(Duration::from_millis(50)), ..T };
        let clock = ConnClock::new();
        let start = Instant::now();
        assert_eq!(watchdog(clock, timeouts).await, Expiry::Head);
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(45) && waited < Duration::from_secs(1), "{waited:?}");
    }
}
