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
//! - No task, timer or channel per probe: the prober's scheduler starts the
//!   probes due, sends them in one `sendmmsg` per family, and on each wake
//!   drains the answers with `recvmmsg` and expires the probes whose
//!   deadline passed ([`HalfOpen::collect`]). A probe is an entry in a map
//!   and one in a heap of deadlines.
//! - The kernel answers a SYN-ACK that no socket of its own expects with a
//!   reset. An unmarked probe's reset is routed as its SYN was and ends the
//!   real's half-open connection; a marked probe's would miss the tunnel, so
//!   the prober sends one itself, marked. (The kernel's unmarked reset goes
//!   towards the VIP as routing says; whoever gets it has no such
//!   connection and drops it.)

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use etherparse::{PacketBuilder, TcpHeaderSlice, TcpOptionElement};
use socket2::{Domain, Protocol, SockAddr, SockFilter, Socket, Type};

use super::check::{ProbeError, Target};
use super::mmsg::{self, Inbox, Outgoing};

/// A source address no probe used for this long is forgotten (its target
/// is no longer probed).
const SOURCE_IDLE: Duration = Duration::from_secs(60);

/// The MSS the SYN offers: a SYN without one is unusual enough that some
/// middleboxes drop it.
const MSS_V4: u16 = 1460;
const MSS_V6: u16 = 1440;

/// The receive window the SYN offers.
const WINDOW: u16 = 64240;

/// Answers read per `recvmmsg`: a wake's worth at 10,000 probes a second
/// on a 1 ms tick is about ten.
const INBOX: usize = 64;

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

/// A finished probe: the token it was started with, and its result.
pub type Done<T> = (T, Result<(), ProbeError>);

/// The half-open TCP prober: its sockets and the probes waiting for an
/// answer, each known by a token of the caller's (`T`).
pub struct HalfOpen<T> {
    /// The IPv4 family's socket, then the IPv6 one's (index: `is_ipv6`).
    families: [Result<Family, String>; 2],
    /// Probes waiting for an answer, by the sequence number of their SYN.
    waiting: HashMap<u32, Waiting<T>>,
    /// The deadlines of waiting probes, earliest first. An answered probe's
    /// entry stays until its deadline, and is skipped then.
    deadlines: BinaryHeap<Reverse<(Instant, u32)>>,
    /// Draws sequence numbers: a keyed hash of a counter.
    isn_key: RandomState,
    isn_counter: u64,
    sources: Sources,
    inbox: Inbox,
}

struct Family {
    /// The raw socket (non-blocking).
    socket: Socket,
    /// The source port of every probe; `_reserved` holds it.
    port: u16,
    _reserved: Socket,
    /// What the next flush sends.
    outbox: Vec<Queued>,
}

/// A packet waiting for the next flush.
struct Queued {
    packet: Vec<u8>,
    dst: SockAddr,
    mark: u32,
    /// The probe a SYN starts (a send failure fails it); `None` for a reset.
    probe: Option<u32>,
}

struct Waiting<T> {
    token: T,
    target: Target,
    deadline: Instant,
    timeout: Duration,
}

/// The source address routing picks, by (destination, mark). Asking
/// routing costs a socket's making and closing: prober_scale spent a third
/// of its CPU on it when each was asked again every 10 s.
#[derive(Default)]
struct Sources {
    /// The source, and when a probe last used it.
    known: HashMap<(IpAddr, u32), (IpAddr, Instant)>,
    pruned: Option<Instant>,
}

impl<T> HalfOpen<T> {
    /// Opens the raw sockets. A family whose socket cannot be opened (no
    /// `CAP_NET_RAW`, no IPv6) fails its probes with the reason.
    pub fn open() -> Self {
        let v4 = Family::open(Domain::IPV4).map_err(|e| format!("the IPv4 raw socket of TCP probes: {e}"));
        let v6 = Family::open(Domain::IPV6).map_err(|e| format!("the IPv6 raw socket of TCP probes: {e}"));
        for (family, reason) in [(&v4, "IPv4"), (&v6, "IPv6")] {
            if let Err(e) = family {
                tracing::warn!("{reason} TCP probes will fail: {e}");
            }
        }
        Self {
            families: [v4, v6],
            waiting: HashMap::new(),
            deadlines: BinaryHeap::new(),
            isn_key: RandomState::new(),
            isn_counter: 0,
            sources: Sources::default(),
            inbox: Inbox::new(INBOX),
        }
    }

    /// Starts a probe of `target`, to finish within `timeout` of `now`: its
    /// SYN goes at the next [`flush`](Self::flush). Fails at once, handing
    /// the token back, when the family has no socket or routing no source.
    pub fn start(&mut self, token: T, target: Target, timeout: Duration, now: Instant) -> Result<(), Done<T>> {
        let family = match &mut self.families[usize::from(target.addr.is_ipv6())] {
            Ok(family) => family,
            Err(e) => return Err((token, Err(ProbeError::Socket(io::Error::other(e.clone()))))),
        };
        let source = match self.sources.get(target.addr.ip(), target.mark, now) {
            Ok(source) => source,
            Err(e) => return Err((token, Err(ProbeError::Socket(e)))),
        };
        let isn = fresh_isn(&self.isn_key, &mut self.isn_counter, &self.waiting);
        let deadline = now + timeout;
        let packet = segment(source, family.port, target.addr, isn, 0, TCP_SYN);
        family.outbox.push(Queued { packet, dst: raw_destination(target), mark: target.mark, probe: Some(isn) });
        self.waiting.insert(isn, Waiting { token, target, deadline, timeout });
        self.deadlines.push(Reverse((deadline, isn)));
        Ok(())
    }

    /// Sends what is queued, one `sendmmsg` per family; a probe whose SYN
    /// could not be sent is done, with the reason.
    pub fn flush(&mut self, done: &mut Vec<Done<T>>) {
        for family in self.families.iter_mut().filter_map(|f| f.as_mut().ok()) {
            if family.outbox.is_empty() {
                continue;
            }
            let batch: Vec<Outgoing> =
                family.outbox.iter().map(|q| Outgoing { packet: &q.packet, dst: &q.dst, mark: q.mark }).collect();
            let failed = mmsg::send_batch(family.socket.as_fd(), &batch);
            drop(batch);
            for (index, e) in failed {
                match family.outbox[index].probe.and_then(|isn| self.waiting.remove(&isn)) {
                    Some(w) => done.push((w.token, Err(ProbeError::Socket(e)))),
                    None => tracing::debug!("reset to {:?}: {e}", family.outbox[index].dst.as_socket()),
                }
            }
            family.outbox.clear();
        }
    }

    /// Reads every answer received, then ends the probes whose deadline is
    /// past `now`: each finished probe lands in `done`. Sends the resets
    /// that answers call for.
    pub fn collect(&mut self, now: Instant, done: &mut Vec<Done<T>>) {
        let mut replies = Vec::new();
        for family in self.families.iter().filter_map(|f| f.as_ref().ok()) {
            loop {
                let got = match self.inbox.receive(family.socket.as_fd()) {
                    Ok(got) => got,
                    Err(e) => {
                        tracing::debug!("TCP probes' raw socket: {e}");
                        break;
                    }
                };
                let answers = self.inbox.datagrams().filter_map(|(data, from)| parse_reply(data, from?));
                replies.extend(answers);
                if got < self.inbox.capacity() {
                    break;
                }
            }
        }
        for reply in &replies {
            self.answer(reply, now, done);
        }
        while let Some(&Reverse((deadline, isn))) = self.deadlines.peek() {
            if deadline > now {
                break;
            }
            self.deadlines.pop();
            // A sequence number answered and drawn again has another deadline.
            if self.waiting.get(&isn).is_none_or(|w| w.deadline != deadline) {
                continue;
            }
            let Some(waiting) = self.waiting.remove(&isn) else { continue };
            // Perhaps from a source routing no longer picks: ask again next time.
            self.sources.known.remove(&(waiting.target.addr.ip(), waiting.target.mark));
            done.push((waiting.token, Err(ProbeError::Timeout(waiting.timeout))));
        }
        self.flush(done);
    }

    /// Probes waiting for an answer.
    pub fn in_flight(&self) -> usize {
        self.waiting.len()
    }

    /// The earliest deadline of a waiting probe.
    pub fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(&Reverse((deadline, isn))) = self.deadlines.peek() {
            if self.waiting.get(&isn).is_some_and(|w| w.deadline == deadline) {
                return Some(deadline);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Ends the probe `reply` answers, if it answers one: the sequence
    /// number it acknowledges and the address it comes from must both match.
    fn answer(&mut self, reply: &Reply, now: Instant, done: &mut Vec<Done<T>>) {
        let isn = reply.ack.wrapping_sub(1);
        if self.waiting.get(&isn).is_none_or(|w| w.target.addr != reply.from) {
            return;
        }
        let Some(Waiting { token, target, .. }) = self.waiting.remove(&isn) else { return };
        if reply.answer == Answer::Accepted && target.mark != 0 {
            // The reset that ends the real's half-open connection, tunnelled as
            // the SYN was (see the module documentation).
            if let (Ok(source), Ok(family)) = (
                self.sources.get(target.addr.ip(), target.mark, now),
                &mut self.families[usize::from(target.addr.is_ipv6())],
            ) {
                let packet = segment(source, family.port, target.addr, reply.ack, 0, TCP_RST);
                family.outbox.push(Queued { packet, dst: raw_destination(target), mark: target.mark, probe: None });
            }
        }
        let result = match reply.answer {
            Answer::Accepted => Ok(()),
            Answer::Refused => Err(ProbeError::Connect(io::ErrorKind::ConnectionRefused.into())),
        };
        done.push((token, result));
    }
}

/// A sequence number no waiting probe has: a keyed hash of a counter.
fn fresh_isn<T>(key: &RandomState, counter: &mut u64, waiting: &HashMap<u32, Waiting<T>>) -> u32 {
    loop {
        *counter += 1;
        let isn = key.hash_one(*counter) as u32;
        if !waiting.contains_key(&isn) {
            return isn;
        }
    }
}

/// A raw socket's destination: the target's address, port 0 (for IPv6,
/// a port other than the protocol's number is refused).
fn raw_destination(target: Target) -> SockAddr {
    SockAddr::from(SocketAddr::new(target.addr.ip(), 0))
}

/// One probe's result: starts a prober of its own, probes, and polls it on
/// the read tick until the probe is done. For a probe now and then (tests,
/// a check run by hand); the scheduler drives one [`HalfOpen`] for all.
pub async fn probe_once(target: Target, timeout: Duration) -> Result<(), ProbeError> {
    let mut prober = HalfOpen::open();
    let mut done = Vec::new();
    if let Err(((), result)) = prober.start((), target, timeout, Instant::now()) {
        return result;
    }
    prober.flush(&mut done);
    loop {
        if let Some(((), result)) = done.pop() {
            return result;
        }
        tokio::time::sleep(READ_TICK).await;
        prober.collect(Instant::now(), &mut done);
    }
}

/// How often answers are read while probes wait for them: at thousands of
/// probes a second the scheduler wakes on this tick anyway to send probes,
/// so reading costs no wake of its own. A probe's measured duration is
/// rounded up by as much.
pub const READ_TICK: Duration = Duration::from_millis(1);

impl Sources {
    /// The source address of packets to `dst` with `mark`, as routing picks it.
    fn get(&mut self, dst: IpAddr, mark: u32, now: Instant) -> io::Result<IpAddr> {
        if let Some((source, used)) = self.known.get_mut(&(dst, mark)) {
            *used = now;
            return Ok(*source);
        }
        if self.pruned.is_none_or(|p| now.duration_since(p) >= SOURCE_IDLE) {
            self.known.retain(|_, (_, used)| now.duration_since(*used) < SOURCE_IDLE);
            self.pruned = Some(now);
        }
        let source = routed_source(dst, mark)?;
        self.known.insert((dst, mark), (source, now));
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
        Ok(Self { socket, port, _reserved: reserved, outbox: Vec::new() })
    }
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
}
