//! TCP probes as half-open connections: a SYN from a raw socket; the real's
//! SYN-ACK (its port accepts) or reset (it refuses) read back on the same
//! socket; then a reset, so that the real forgets the connection at once.
//!
//! Why not `connect()`: a connect probe costs the agent a socket, a
//! three-way handshake, an epoll registration, a wake-up and a close —
//! about 35 µs of CPU a probe, a third of a core at 10,000 probes a second
//! (prober_scale). A half-open probe is one packet sent and one read, with no
//! socket of its own. What it proves is what a connect probe proves: the
//! real's kernel has a listener on the port (for TCP checks nothing more is
//! exchanged either way); HTTP(S) checks still connect.
//!
//! How:
//! - One raw socket per family, the IP header built here (`IP_HDRINCL`) so
//!   that the source address in the TCP checksum is the one sent. The
//!   source is the one routing picks for the destination and mark (asked
//!   with a connected UDP socket), kept until a probe to there goes
//!   unanswered: a changed route or address costs one failed probe.
//! - Every SYN leaves from one source port per family, reserved by a bound
//!   TCP socket so that no connection of the host takes it. The sequence
//!   number names the probe: a SYN-ACK acknowledges it + 1, and so does the
//!   reset of a closed port. It is drawn from a keyed hash, so that no one
//!   off the path can forge an answer by guessing it.
//! - A classic BPF filter on the socket passes only SYN-ACKs and resets to
//!   that port: a raw TCP socket gets a copy of every TCP segment the host
//!   receives, and the filter drops the rest in the kernel.
//! - The real's mark (what the healthcheck program tunnels by) is set on
//!   each packet with an `SO_MARK` control message.
//! - The kernel answers a SYN-ACK that no socket of its own expects with a
//!   reset. An unmarked probe's reset is routed as its SYN was and ends the
//!   real's half-open connection; a marked probe's would miss the tunnel, so
//!   the prober sends one itself, marked. (The kernel's unmarked reset goes
//!   towards the VIP as routing says; whoever gets it has no such
//!   connection and drops it.)

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::io::{self, IoSlice};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use etherparse::{PacketBuilder, TcpHeaderSlice, TcpOptionElement};
use socket2::{Domain, MsgHdr, Protocol, SockAddr, SockFilter, Socket, Type};
use tokio::sync::oneshot;

use super::check::{ProbeError, Target};

/// A source address no probe used for this long is forgotten (its target
/// is no longer probed).
const SOURCE_IDLE: Duration = Duration::from_secs(60);

/// The MSS the SYN offers: a SYN without one is unusual enough that some
/// middleboxes drop it.
const MSS_V4: u16 = 1460;
const MSS_V6: u16 = 1440;

/// The receive window the SYN offers.
const WINDOW: u16 = 64240;

const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;

/// What a real answered a SYN with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// SYN-ACK: a listener accepts.
    Accepted,
    /// Reset: nothing listens.
    Refused,
}

/// The half-open TCP prober: its sockets and the probes waiting for an
/// answer. Dropping it stops its receive tasks.
pub struct HalfOpen {
    shared: Arc<Shared>,
    receivers: Vec<tokio::task::JoinHandle<()>>,
}

struct Shared {
    v4: Result<Family, String>,
    v6: Result<Family, String>,
    /// Probes waiting for an answer, by the sequence number of their SYN.
    waiting: Mutex<HashMap<u32, Waiter>>,
    /// Draws sequence numbers: a keyed hash of a counter.
    isn_key: RandomState,
    isn_counter: AtomicU64,
    /// The source address routing picks, by (destination, mark). Asking
    /// routing costs a socket's making and closing: prober_scale spent a
    /// third of its CPU on it when each was asked again every 10 s.
    sources: Mutex<Sources>,
}

struct Family {
    /// The raw socket, in tokio's datagram socket: its reads and sends are
    /// the syscalls of any datagram socket (`recvfrom`, `sendmsg`), and a
    /// raw socket is one; the wrapper adds the runtime's readiness.
    socket: tokio::net::UdpSocket,
    /// The source port of every probe; `_reserved` holds it.
    port: u16,
    _reserved: Socket,
}

struct Waiter {
    target: Target,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Sources {
    /// The source, and when a probe last used it.
    known: HashMap<(IpAddr, u32), (IpAddr, Instant)>,
    pruned: Option<Instant>,
}

impl HalfOpen {
    /// Opens the raw sockets (on the current tokio runtime). A family whose
    /// socket cannot be opened (no `CAP_NET_RAW`, no IPv6) fails its probes
    /// with the reason.
    pub fn open() -> Self {
        let shared = Arc::new(Shared {
            v4: Family::open(Domain::IPV4).map_err(|e| format!("the IPv4 raw socket of TCP probes: {e}")),
            v6: Family::open(Domain::IPV6).map_err(|e| format!("the IPv6 raw socket of TCP probes: {e}")),
            waiting: Mutex::new(HashMap::new()),
            isn_key: RandomState::new(),
            isn_counter: AtomicU64::new(0),
            sources: Mutex::new(Sources::default()),
        });
        for (family, reason) in [(&shared.v4, "IPv4"), (&shared.v6, "IPv6")] {
            if let Err(e) = family {
                tracing::warn!("{reason} TCP probes will fail: {e}");
            }
        }
        let receivers = [false, true]
            .into_iter()
            .filter(|&v6| shared.family(v6).is_ok())
            .map(|v6| tokio::spawn(receive(shared.clone(), v6)))
            .collect();
        Self { shared, receivers }
    }

    /// Probes `target` once: Ok when it answers the SYN with a SYN-ACK.
    /// Waits for as long as the caller does (its timeout bounds it).
    pub async fn probe(&self, target: Target) -> Result<(), ProbeError> {
        let shared = &self.shared;
        let family = shared
            .family(target.addr.is_ipv6())
            .as_ref()
            .map_err(|e| ProbeError::Socket(io::Error::other(e.clone())))?;
        let source = shared.source(target.addr.ip(), target.mark).map_err(ProbeError::Socket)?;
        let (tx, rx) = oneshot::channel();
        let isn = shared.wait(Waiter { target, answer: tx });
        let _waiting = Unwait { shared, isn };
        let syn = segment(source, family.port, target.addr, isn, 0, TCP_SYN);
        family.send(&syn, target).map_err(ProbeError::Socket)?;
        match rx.await {
            Ok(Answer::Accepted) => Ok(()),
            Ok(Answer::Refused) => Err(ProbeError::Connect(io::ErrorKind::ConnectionRefused.into())),
            Err(_) => Err(ProbeError::Socket(io::Error::other("the TCP probes' receive task stopped"))),
        }
    }
}

impl Drop for HalfOpen {
    fn drop(&mut self) {
        for task in &self.receivers {
            task.abort();
        }
    }
}

/// Takes a probe off the waiting list however its wait ends (answer,
/// timeout, abort).
struct Unwait<'a> {
    shared: &'a Shared,
    isn: u32,
}

impl Drop for Unwait<'_> {
    fn drop(&mut self) {
        let unanswered = self.shared.lock_waiting().remove(&self.isn);
        // Perhaps from a source routing no longer picks: ask again next time.
        if let Some(Waiter { target, .. }) = unanswered {
            self.shared.lock_sources().known.remove(&(target.addr.ip(), target.mark));
        }
    }
}

impl Shared {
    fn family(&self, v6: bool) -> &Result<Family, String> {
        if v6 {
            &self.v6
        } else {
            &self.v4
        }
    }

    fn lock_waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Waiter>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a waiter under a fresh sequence number.
    fn wait(&self, waiter: Waiter) -> u32 {
        let mut waiting = self.lock_waiting();
        loop {
            let n = self.isn_counter.fetch_add(1, Ordering::Relaxed);
            let isn = self.isn_key.hash_one(n) as u32;
            if let std::collections::hash_map::Entry::Vacant(slot) = waiting.entry(isn) {
                slot.insert(waiter);
                return isn;
            }
        }
    }

    fn lock_sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The source address of packets to `dst` with `mark`, as routing picks it.
    fn source(&self, dst: IpAddr, mark: u32) -> io::Result<IpAddr> {
        let now = Instant::now();
        let mut sources = self.lock_sources();
        if let Some((source, used)) = sources.known.get_mut(&(dst, mark)) {
            *used = now;
            return Ok(*source);
        }
        if sources.pruned.is_none_or(|p| now.duration_since(p) >= SOURCE_IDLE) {
            sources.known.retain(|_, (_, used)| now.duration_since(*used) < SOURCE_IDLE);
            sources.pruned = Some(now);
        }
        let source = routed_source(dst, mark)?;
        sources.known.insert((dst, mark), (source, now));
        Ok(source)
    }
}

/// Asks routing which source address it gives packets to `dst` with `mark`:
/// a UDP socket connected there is bound to it (connecting sends nothing).
fn routed_source(dst: IpAddr, mark: u32) -> io::Result<IpAddr> {
    let socket = Socket::new(Domain::for_address(SocketAddr::new(dst, 0)), Type::DGRAM, None)?;
    if mark != 0 {
        socket.set_mark(mark)?;
    }
    socket.connect(&SocketAddr::new(dst, 9).into())?;
    socket
        .local_addr()?
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| io::Error::other("the routed source is not an IP address"))
}

impl Family {
    fn open(domain: Domain) -> io::Result<Self> {
        let v6 = domain == Domain::IPV6;
        let reserved = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
        let any: SocketAddr = if v6 { (Ipv6Addr::UNSPECIFIED, 0).into() } else { (Ipv4Addr::UNSPECIFIED, 0).into() };
        if v6 {
            reserved.set_only_v6(true)?;
        }
        reserved.bind(&any.into())?;
        let port = reserved
            .local_addr()?
            .as_socket()
            .map(|a| a.port())
            .ok_or_else(|| io::Error::other("the reserved port's socket has no IP address"))?;
        let socket = Socket::new(domain, Type::RAW, Some(Protocol::TCP))?;
        if v6 {
            socket.set_header_included_v6(true)?;
        } else {
            socket.set_header_included_v4(true)?;
        }
        socket.attach_filter(&answers_to(port, v6))?;
        socket.set_nonblocking(true)?;
        let socket = tokio::net::UdpSocket::from_std(std::net::UdpSocket::from(socket))?;
        Ok(Self { socket, port, _reserved: reserved })
    }

    /// Sends a whole IP packet to `target`, with its mark.
    fn send(&self, packet: &[u8], target: Target) -> io::Result<()> {
        // A raw socket's destination port is 0 (for IPv6, one other than
        // the protocol's number is refused).
        let dst = SockAddr::from(SocketAddr::new(target.addr.ip(), 0));
        let buffers = [IoSlice::new(packet)];
        let control = mark_control(target.mark);
        let mut message = MsgHdr::new().with_addr(&dst).with_buffers(&buffers);
        if target.mark != 0 {
            message = message.with_control(&control);
        }
        socket2::SockRef::from(&self.socket).sendmsg(&message, 0).map(drop)
    }
}

/// An `SO_MARK` control message: the packet's mark, whatever the socket's.
fn mark_control(mark: u32) -> [u8; 24] {
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; },
    // then the data, the whole padded to a multiple of size_t.
    const HEADER: usize = std::mem::size_of::<libc::cmsghdr>();
    const _: () = assert!(HEADER == 16, "a 64-bit cmsghdr");
    let mut control = [0u8; 24];
    control[..8].copy_from_slice(&(HEADER + 4).to_ne_bytes());
    control[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
    control[12..16].copy_from_slice(&libc::SO_MARK.to_ne_bytes());
    control[16..20].copy_from_slice(&mark.to_ne_bytes());
    control
}

/// The socket filter: TCP segments to `port` with SYN and ACK set, or RST.
/// An IPv4 raw socket sees the IP header first; an IPv6 one the TCP header.
fn answers_to(port: u16, v6: bool) -> Vec<SockFilter> {
    use libc::{BPF_ALU, BPF_AND, BPF_B, BPF_H, BPF_IMM, BPF_IND, BPF_JEQ, BPF_JMP, BPF_JSET, BPF_K, BPF_LD};
    use libc::{BPF_LDX, BPF_MSH, BPF_RET};
    let op = |code: u32, jt: u8, jf: u8, k: u32| SockFilter::new(code as u16, jt, jf, k);
    let flags = u32::from(TCP_SYN | TCP_ACK);
    // X = offset of the TCP header: the IPv4 header's length, or 0.
    let tcp_offset = if v6 { op(BPF_LDX | BPF_IMM, 0, 0, 0) } else { op(BPF_LDX | BPF_B | BPF_MSH, 0, 0, 0) };
    vec![
        tcp_offset,
        op(BPF_LD | BPF_H | BPF_IND, 0, 0, 2),                // destination port
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 5, u32::from(port)), // else drop
        op(BPF_LD | BPF_B | BPF_IND, 0, 0, 13),               // flags
        op(BPF_JMP | BPF_JSET | BPF_K, 2, 0, u32::from(TCP_RST)), // accept
        op(BPF_ALU | BPF_AND | BPF_K, 0, 0, flags),
        op(BPF_JMP | BPF_JEQ | BPF_K, 0, 1, flags), // else drop
        op(BPF_RET | BPF_K, 0, 0, u32::MAX),
        op(BPF_RET | BPF_K, 0, 0, 0),
    ]
}

/// A TCP segment without payload, in its IP packet: `flags` (SYN offers an
/// MSS), sequence `seq`, acknowledging `ack` when non-zero.
fn segment(source: IpAddr, sport: u16, dst: SocketAddr, seq: u32, ack: u32, flags: u8) -> Vec<u8> {
    let builder = match (source, dst.ip()) {
        (IpAddr::V4(s), IpAddr::V4(d)) => PacketBuilder::ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => PacketBuilder::ipv6(s.octets(), d.octets(), 64),
        // Routing answers a destination with a source of its family.
        _ => unreachable!("source {source} and destination {dst} of different families"),
    };
    let mut tcp = builder.tcp(sport, dst.port(), seq, WINDOW);
    if flags & TCP_SYN != 0 {
        let mss = if dst.is_ipv6() { MSS_V6 } else { MSS_V4 };
        tcp = tcp.syn().options(&[TcpOptionElement::MaximumSegmentSize(mss)]).expect("one MSS option fits");
    }
    if flags & TCP_RST != 0 {
        tcp = tcp.rst();
    }
    if flags & TCP_ACK != 0 {
        tcp = tcp.ack(ack);
    }
    let mut packet = Vec::with_capacity(tcp.size(0));
    tcp.write(&mut packet, &[]).expect("a Vec takes any write");
    packet
}

/// An answer as read: who sent it, what it acknowledges, what it says.
#[derive(Debug, PartialEq, Eq)]
struct Reply {
    from: SocketAddr,
    ack: u32,
    answer: Answer,
}

/// Reads an answer from what the raw socket received from `from`: an IPv4
/// packet, or (IPv6) its TCP segment.
fn parse_reply(data: &[u8], from: IpAddr) -> Option<Reply> {
    let tcp = match from {
        IpAddr::V4(_) => {
            let ip = etherparse::Ipv4HeaderSlice::from_slice(data).ok()?;
            data.get(ip.slice().len()..)?
        }
        IpAddr::V6(_) => data,
    };
    let tcp = TcpHeaderSlice::from_slice(tcp).ok()?;
    let answer = if tcp.rst() {
        Answer::Refused
    } else if tcp.syn() && tcp.ack() {
        Answer::Accepted
    } else {
        return None;
    };
    Some(Reply { from: SocketAddr::new(from, tcp.source_port()), ack: tcp.acknowledgment_number(), answer })
}

/// While probes wait for answers, the receiver reads every millisecond
/// rather than when each answer comes: at thousands of probes a second the
/// prober then wakes on the runtime's timer tick it wakes on anyway to send
/// probes, not once more per answer. A probe's measured duration is rounded
/// up by as much; with nothing in flight, the receiver waits for the socket.
const READ_TICK: Duration = Duration::from_millis(1);

/// Reads answers as they come and hands each to its probe.
async fn receive(shared: Arc<Shared>, v6: bool) {
    let Ok(family) = shared.family(v6) else { return };
    let mut buf = [0u8; 256];
    loop {
        if shared.lock_waiting().is_empty() {
            if family.socket.readable().await.is_err() {
                return;
            }
        } else {
            tokio::time::sleep(READ_TICK).await;
        }
        loop {
            let (n, from) = match family.socket.try_recv_from(&mut buf) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!("TCP probes' raw socket: {e}");
                    break;
                }
            };
            if let Some(reply) = parse_reply(&buf[..n], from.ip()) {
                answer(&shared, family, reply);
            }
        }
    }
}

/// Hands `reply` to the probe it answers, if it answers one: the sequence
/// number it acknowledges and the address it comes from must both match.
fn answer(shared: &Shared, family: &Family, reply: Reply) {
    let isn = reply.ack.wrapping_sub(1);
    let waiter = {
        let mut waiting = shared.lock_waiting();
        match waiting.get(&isn) {
            Some(w) if w.target.addr == reply.from => waiting.remove(&isn),
            _ => None,
        }
    };
    let Some(Waiter { target, answer }) = waiter else { return };
    if reply.answer == Answer::Accepted && target.mark != 0 {
        // The reset that ends the real's half-open connection, tunnelled as
        // the SYN was (see the module documentation).
        if let Ok(source) = shared.source(target.addr.ip(), target.mark) {
            let rst = segment(source, family.port, target.addr, reply.ack, 0, TCP_RST);
            if let Err(e) = family.send(&rst, target) {
                tracing::debug!("reset to {}: {e}", target.addr);
            }
        }
    }
    let _ = answer.send(reply.answer);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syn_offers_an_mss_and_names_the_probe_in_its_sequence_number() {
        let dst: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let syn = segment("10.0.0.1".parse().unwrap(), 40000, dst, 0xdead_beef, 0, TCP_SYN);
        let (ip, rest) = etherparse::Ipv4Header::from_slice(&syn).unwrap();
        assert_eq!((ip.source, ip.destination, ip.time_to_live), ([10, 0, 0, 1], [10, 0, 0, 2], 64));
        let tcp = TcpHeaderSlice::from_slice(rest).unwrap();
        assert_eq!((tcp.source_port(), tcp.destination_port(), tcp.sequence_number()), (40000, 80, 0xdead_beef));
        assert!(tcp.syn() && !tcp.ack() && !tcp.rst());
        assert_eq!(tcp.options(), &[2, 4, 0x05, 0xb4]);
        let header = tcp.to_header();
        assert_eq!(header.checksum, header.calc_checksum_ipv4(&ip, &[]).unwrap());
    }

    #[test]
    fn answers_are_read_from_v4_packets_and_v6_segments() {
        let real: SocketAddr = "10.0.0.2:80".parse().unwrap();
        let mut syn_ack = segment(real.ip(), 80, "10.0.0.1:40000".parse().unwrap(), 7, 0x1234, TCP_SYN | TCP_ACK);
        assert_eq!(parse_reply(&syn_ack, real.ip()), Some(Reply { from: real, ack: 0x1234, answer: Answer::Accepted }));
        let six: SocketAddr = "[fd00::2]:443".parse().unwrap();
        let rst = segment(six.ip(), 443, "[fd00::1]:40000".parse().unwrap(), 0, 9, TCP_RST | TCP_ACK);
        assert_eq!(parse_reply(&rst[40..], six.ip()), Some(Reply { from: six, ack: 9, answer: Answer::Refused }));
        // A bare ACK answers nothing; a truncated packet is no answer.
        let ack = segment(real.ip(), 80, "10.0.0.1:40000".parse().unwrap(), 7, 1, TCP_ACK);
        assert_eq!(parse_reply(&ack, real.ip()), None);
        syn_ack.truncate(30);
        assert_eq!(parse_reply(&syn_ack, real.ip()), None);
    }

    #[test]
    fn the_mark_control_message_is_a_cmsghdr_and_a_u32() {
        let control = mark_control(0x5745_0001);
        assert_eq!(usize::from_ne_bytes(control[..8].try_into().unwrap()), 20);
        assert_eq!(i32::from_ne_bytes(control[8..12].try_into().unwrap()), libc::SOL_SOCKET);
        assert_eq!(i32::from_ne_bytes(control[12..16].try_into().unwrap()), libc::SO_MARK);
        assert_eq!(u32::from_ne_bytes(control[16..20].try_into().unwrap()), 0x5745_0001);
    }
}
