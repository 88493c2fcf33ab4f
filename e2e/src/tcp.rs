//! Tiny TCP servers and clients that say who answered, with timeouts
//! everywhere: a broken datapath must fail a test in seconds, never hang it.
//!
//! Protocol: a [`serve`] server writes one line, its name (`real1\n`), on each
//! connection and closes it; a [`serve_long_lived`] server keeps the
//! connection and answers every line it receives with its name. Sockets are
//! created inside the namespace (a socket belongs to the namespace it was made
//! in), then used from ordinary threads.

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::Netns;

/// Timeout for connects and reads unless a test picks its own.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);

/// How often server threads look at their stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Once,
    LongLived,
}

/// A running server; stops (and joins all its threads) on drop.
#[derive(Debug)]
pub struct Server {
    name: String,
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    /// Set by [`Server::close_listeners`].
    closing: Arc<AtomicBool>,
    accepted: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

/// Starts a server in `ns`, listening on every address of `addrs` (port 0 picks
/// a port per address: see [`Server::addrs`]), that writes `name` and a newline
/// on each connection, then closes it.
pub fn serve(ns: &Netns, addrs: Vec<SocketAddr>, name: String) -> Result<Server> {
    start(ns, addrs, name, Mode::Once)
}

/// Like [`serve`], but connections stay open: every line received is answered
/// with `name` and a newline, until the client closes. Pair with [`Conn`].
pub fn serve_long_lived(ns: &Netns, addrs: Vec<SocketAddr>, name: String) -> Result<Server> {
    start(ns, addrs, name, Mode::LongLived)
}

fn start(ns: &Netns, addrs: Vec<SocketAddr>, name: String, mode: Mode) -> Result<Server> {
    let listeners = ns.run(|| {
        addrs
            .iter()
            .map(|addr| {
                let listener =
                    TcpListener::bind(addr).with_context(|| format!("bind {addr} in netns {}", ns.name()))?;
                // Non-blocking so the accept loop can notice the stop flag.
                listener.set_nonblocking(true).context("set_nonblocking")?;
                Ok(listener)
            })
            .collect::<Result<Vec<_>>>()
    })?;
    let bound = listeners.iter().map(|l| l.local_addr().context("local_addr")).collect::<Result<Vec<_>>>()?;
    let stop = Arc::new(AtomicBool::new(false));
    let closing = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicU64::new(0));
    let thread = {
        let (name, stop, closing, accepted) = (name.clone(), stop.clone(), closing.clone(), accepted.clone());
        std::thread::Builder::new()
            .name(format!("srv-{name}"))
            .spawn(move || accept_loop(listeners, &name, mode, [&stop, &closing], &accepted))
            .context("spawn the server thread")?
    };
    Ok(Server { name, addrs: bound, stop, closing, accepted, thread: Some(thread) })
}

impl Server {
    /// The name it answers with.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The addresses it listens on, with the actual ports.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Stops listening (new connections are refused) while the connections
    /// accepted stay served, as a server shutting down gracefully does. The
    /// listeners are closed within [`POLL_INTERVAL`]; `wait` waits for that.
    pub fn close_listeners(&self, wait: bool) {
        self.closing.store(true, Ordering::Relaxed);
        if wait {
            std::thread::sleep(POLL_INTERVAL * 2);
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn accept_loop(
    mut listeners: Vec<TcpListener>,
    name: &str,
    mode: Mode,
    [stop, closing]: [&Arc<AtomicBool>; 2],
    accepted: &AtomicU64,
) {
    let mut conns: Vec<JoinHandle<()>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        if closing.load(Ordering::Relaxed) {
            listeners.clear();
        }
        let mut fds: Vec<libc::pollfd> =
            listeners.iter().map(|l| libc::pollfd { fd: l.as_raw_fd(), events: libc::POLLIN, revents: 0 }).collect();
        // SAFETY: `fds` is a valid array of `fds.len()` pollfds that outlives the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, POLL_INTERVAL.as_millis() as i32) };
        for listener in &listeners {
            loop {
                match listener.accept() {
                    Ok((stream, _peer)) => {
                        accepted.fetch_add(1, Ordering::Relaxed);
                        let (conn_name, stop) = (name.to_owned(), stop.clone());
                        let handler = std::thread::Builder::new().name(format!("conn-{name}")).spawn(move || {
                            let _ = handle(stream, &conn_name, mode, &stop);
                        });
                        match handler {
                            Ok(handler) => conns.push(handler),
                            Err(e) => {
                                eprintln!("weir-e2e: server {name}: spawn a connection thread: {e}")
                            }
                        }
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == ErrorKind::Interrupted || e.kind() == ErrorKind::ConnectionAborted => {}
                    Err(e) => {
                        eprintln!("weir-e2e: server {name}: accept: {e}");
                        break;
                    }
                }
            }
        }
        // Reap finished connection threads so a busy server does not pile them up.
        let (done, running): (Vec<_>, Vec<_>) = conns.into_iter().partition(|c| c.is_finished());
        done.into_iter().for_each(|c| drop(c.join()));
        conns = running;
    }
    // Handlers watch `stop` too, so these joins return within POLL_INTERVAL.
    conns.into_iter().for_each(|c| drop(c.join()));
}

fn handle(stream: TcpStream, name: &str, mode: Mode, stop: &AtomicBool) -> std::io::Result<()> {
    // Accepted sockets do not inherit O_NONBLOCK on Linux; make sure anyway.
    stream.set_nonblocking(false)?;
    stream.set_write_timeout(Some(DEFAULT_TIMEOUT))?;
    let reply = format!("{name}\n");
    match mode {
        Mode::Once => {
            (&stream).write_all(reply.as_bytes())?;
            stream.shutdown(Shutdown::Write)
        }
        Mode::LongLived => {
            // A short read timeout lets the handler notice `stop` between lines.
            stream.set_read_timeout(Some(POLL_INTERVAL * 2))?;
            let mut reader = BufReader::new(&stream);
            let mut line = String::new();
            while !stop.load(Ordering::Relaxed) {
                match reader.read_line(&mut line) {
                    Ok(0) => return Ok(()),
                    // A line cut by a timeout stays in `line` until its newline comes.
                    Ok(_) if line.ends_with('\n') => {
                        (&stream).write_all(reply.as_bytes())?;
                        line.clear();
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted) => {
                    }
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        }
    }
}

/// Connects from `ns` to `addr` (a [`serve`] server) and returns the name it
/// sent, without the newline. Fails after about `timeout` (connect) plus
/// `timeout` (read) when nothing answers.
pub fn connect_once(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<String> {
    let stream = connect_in(ns, addr, timeout)?;
    let mut line = String::new();
    BufReader::new(&stream)
        .read_line(&mut line)
        .with_context(|| format!("read the name from {addr} (netns {})", ns.name()))?;
    if !line.ends_with('\n') {
        bail!("{addr} (from netns {}) closed before sending a whole line: {line:?}", ns.name());
    }
    Ok(line.trim_end().to_owned())
}

fn connect_in(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<TcpStream> {
    let stream = ns
        .run(|| TcpStream::connect_timeout(&addr, timeout))
        .with_context(|| format!("connect to {addr} from netns {}", ns.name()))?;
    stream.set_read_timeout(Some(timeout)).context("set_read_timeout")?;
    stream.set_write_timeout(Some(timeout)).context("set_write_timeout")?;
    stream.set_nodelay(true).context("set_nodelay")?;
    Ok(stream)
}

/// A long-lived connection to a [`serve_long_lived`] server.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
    local: SocketAddr,
    peer: SocketAddr,
}

impl Conn {
    /// Connects from `ns` to `addr`; every later read and write times out after
    /// `timeout`.
    pub fn open(ns: &Netns, addr: SocketAddr, timeout: Duration) -> Result<Conn> {
        let stream = connect_in(ns, addr, timeout)?;
        let local = stream.local_addr().context("local_addr")?;
        let reader = BufReader::new(stream.try_clone().context("clone the stream")?);
        Ok(Conn { stream, reader, local, peer: addr })
    }

    /// Sends one line and returns the server's answer: its name.
    pub fn ask(&mut self) -> Result<String> {
        self.stream.write_all(b"?\n").with_context(|| format!("send on {} -> {}", self.local, self.peer))?;
        let mut line = String::new();
        self.reader.read_line(&mut line).with_context(|| format!("read on {} -> {}", self.local, self.peer))?;
        if !line.ends_with('\n') {
            bail!("{} -> {}: connection closed (got {line:?})", self.local, self.peer);
        }
        Ok(line.trim_end().to_owned())
    }

    /// The client side of the connection (its source port identifies the flow).
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The address connected to.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer
    }
}
