//! `sendmmsg(2)` and `recvmmsg(2)` for the half-open prober's raw sockets:
//! a batch of packets in one system call each way.
//!
//! Written against libc rather than nix's wrappers because nix's `sendmmsg`
//! gives every message of a batch the same control messages, and each probe
//! carries its own mark (an `SO_MARK` control message of its own).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, BorrowedFd};

use socket2::SockAddr;

/// The most messages one call takes (the kernel's `UIO_MAXIOV`).
const MAX_BATCH: usize = 1024;

/// The size of a control message carrying a mark: a 64-bit `cmsghdr` and a
/// `u32`, padded to a multiple of 8.
const MARK_CONTROL: usize = 24;

/// One datagram to send: its bytes, where to, and its mark (0: none).
pub struct Outgoing<'a> {
    pub packet: &'a [u8],
    pub dst: &'a SockAddr,
    pub mark: u32,
}

/// Sends `batch` in as few calls as the kernel allows. Returns the messages
/// that were not sent: their index in `batch`, and why.
pub fn send_batch(fd: BorrowedFd<'_>, batch: &[Outgoing<'_>]) -> Vec<(usize, io::Error)> {
    let controls: Vec<[u8; MARK_CONTROL]> = batch.iter().map(|o| mark_control(o.mark)).collect();
    let mut iovecs: Vec<libc::iovec> = batch
        .iter()
        .map(|o| libc::iovec { iov_base: o.packet.as_ptr().cast_mut().cast(), iov_len: o.packet.len() })
        .collect();
    let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(batch.len());
    for ((out, iovec), control) in batch.iter().zip(iovecs.iter_mut()).zip(&controls) {
        // SAFETY: msghdr and mmsghdr are plain C structs; all-zero is their
        // empty value (no name, no buffers, no control messages).
        let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
        header.msg_hdr.msg_name = out.dst.as_ptr().cast_mut().cast();
        header.msg_hdr.msg_namelen = out.dst.len();
        header.msg_hdr.msg_iov = iovec;
        header.msg_hdr.msg_iovlen = 1;
        if out.mark != 0 {
            header.msg_hdr.msg_control = control.as_ptr().cast_mut().cast();
            header.msg_hdr.msg_controllen = MARK_CONTROL;
        }
        headers.push(header);
    }
    let mut failed = Vec::new();
    let mut next = 0;
    while next < headers.len() {
        let chunk = &mut headers[next..];
        let count = chunk.len().min(MAX_BATCH) as libc::c_uint;
        // SAFETY: every header points into `batch`, `iovecs` and `controls`,
        // which outlive the call and are not moved; the kernel only reads them.
        let sent = unsafe { libc::sendmmsg(fd.as_raw_fd(), chunk.as_mut_ptr(), count, 0) };
        if sent < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            // The first message of the chunk failed: report it, go on after it.
            failed.push((next, e));
            next += 1;
        } else {
            next += sent as usize;
        }
    }
    failed
}

/// An `SO_MARK` control message: the packet's mark, whatever the socket's.
pub fn mark_control(mark: u32) -> [u8; MARK_CONTROL] {
    // struct cmsghdr { size_t cmsg_len; int cmsg_level; int cmsg_type; },
    // then the data, the whole padded to a multiple of size_t.
    const HEADER: usize = std::mem::size_of::<libc::cmsghdr>();
    const _: () = assert!(HEADER == 16, "a 64-bit cmsghdr");
    let mut control = [0u8; MARK_CONTROL];
    control[..8].copy_from_slice(&(HEADER + 4).to_ne_bytes());
    control[8..12].copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
    control[12..16].copy_from_slice(&libc::SO_MARK.to_ne_bytes());
    control[16..20].copy_from_slice(&mark.to_ne_bytes());
    control
}

/// The largest datagram kept whole: answers are bare TCP headers (an IPv4
/// raw socket adds the IP header); a longer one is truncated, which its
/// parse tolerates.
const DATAGRAM: usize = 256;

/// Buffers for up to `capacity` datagrams received in one call.
pub struct Inbox {
    buffers: Vec<[u8; DATAGRAM]>,
    names: Vec<libc::sockaddr_storage>,
    /// Of each datagram received by the last call: its length and sender.
    received: Vec<(usize, Option<IpAddr>)>,
}

impl Inbox {
    pub fn new(capacity: usize) -> Self {
        // SAFETY: sockaddr_storage is a plain C struct; all-zero is valid.
        let name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        Self { buffers: vec![[0; DATAGRAM]; capacity], names: vec![name; capacity], received: Vec::new() }
    }

    pub fn capacity(&self) -> usize {
        self.buffers.len()
    }

    /// Receives what `fd` has queued, up to the capacity, without waiting;
    /// how many datagrams (0 when none was queued).
    pub fn receive(&mut self, fd: BorrowedFd<'_>) -> io::Result<usize> {
        let mut iovecs: Vec<libc::iovec> = self
            .buffers
            .iter_mut()
            .map(|b| libc::iovec { iov_base: b.as_mut_ptr().cast(), iov_len: DATAGRAM })
            .collect();
        let mut headers: Vec<libc::mmsghdr> = Vec::with_capacity(iovecs.len());
        for (iovec, name) in iovecs.iter_mut().zip(self.names.iter_mut()) {
            // SAFETY: as in `send_batch`.
            let mut header: libc::mmsghdr = unsafe { std::mem::zeroed() };
            header.msg_hdr.msg_name = (name as *mut libc::sockaddr_storage).cast();
            header.msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            header.msg_hdr.msg_iov = iovec;
            header.msg_hdr.msg_iovlen = 1;
            headers.push(header);
        }
        self.received.clear();
        let count = headers.len() as libc::c_uint;
        // SAFETY: every header points into `self.buffers`, `self.names` and
        // `iovecs`, which outlive the call and are not moved; each buffer is
        // as long as its iovec says.
        let got = unsafe {
            libc::recvmmsg(fd.as_raw_fd(), headers.as_mut_ptr(), count, libc::MSG_DONTWAIT, std::ptr::null_mut())
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            return match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(0),
                _ => Err(e),
            };
        }
        for (header, name) in headers.iter().zip(&self.names).take(got as usize) {
            let len = (header.msg_len as usize).min(DATAGRAM);
            self.received.push((len, sender(name)));
        }
        Ok(got as usize)
    }

    /// The datagrams of the last `receive`, with their senders.
    pub fn datagrams(&self) -> impl Iterator<Item = (&[u8], Option<IpAddr>)> {
        self.received.iter().zip(&self.buffers).map(|(&(len, from), buffer)| (&buffer[..len], from))
    }
}

/// The IP address of a received datagram's sender.
fn sender(name: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(name.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is aligned and large enough for any address.
            let v4 = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe { &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            Some(IpAddr::V6(Ipv6Addr::from(v6.sin6_addr.s6_addr)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{SocketAddr, UdpSocket};

    #[test]
    fn the_mark_control_message_is_a_cmsghdr_and_a_u32() {
        let control = mark_control(0x5745_0001);
        assert_eq!(usize::from_ne_bytes(control[..8].try_into().unwrap()), 20);
        assert_eq!(i32::from_ne_bytes(control[8..12].try_into().unwrap()), libc::SOL_SOCKET);
        assert_eq!(i32::from_ne_bytes(control[12..16].try_into().unwrap()), libc::SO_MARK);
        assert_eq!(u32::from_ne_bytes(control[16..20].try_into().unwrap()), 0x5745_0001);
    }

    /// A batch out of one UDP socket arrives whole, each datagram with its
    /// sender, at another (no privilege needed: marks of 0 set nothing).
    #[test]
    fn a_batch_sent_is_a_batch_received() {
        use std::os::fd::AsFd;
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sender_socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let dst = SockAddr::from(receiver.local_addr().unwrap());
        let payloads: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i; usize::from(i) + 1]).collect();
        let batch: Vec<Outgoing> = payloads.iter().map(|p| Outgoing { packet: p, dst: &dst, mark: 0 }).collect();
        assert!(send_batch(sender_socket.as_fd(), &batch).is_empty());
        let mut inbox = Inbox::new(8);
        assert_eq!(inbox.receive(receiver.as_fd()).unwrap(), 5);
        let from = sender_socket.local_addr().map(|a: SocketAddr| a.ip()).unwrap();
        let got: Vec<(Vec<u8>, Option<IpAddr>)> = inbox.datagrams().map(|(d, f)| (d.to_vec(), f)).collect();
        let want: Vec<(Vec<u8>, Option<IpAddr>)> = payloads.into_iter().map(|p| (p, Some(from))).collect();
        assert_eq!(got, want);
        assert_eq!(inbox.receive(receiver.as_fd()).unwrap(), 0, "nothing more queued");
    }

    #[test]
    fn a_message_that_fails_is_reported_and_the_rest_still_go() {
        use std::os::fd::AsFd;
        let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let good = SockAddr::from(receiver.local_addr().unwrap());
        // An IPv6 destination for an IPv4 socket: EAFNOSUPPORT or EINVAL.
        let bad = SockAddr::from("[::1]:9".parse::<SocketAddr>().unwrap());
        let batch = [(b"a", &good), (b"b", &bad), (b"c", &good)].map(|(p, dst)| Outgoing { packet: p, dst, mark: 0 });
        let failed = send_batch(socket.as_fd(), &batch);
        assert_eq!(failed.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1]);
        let mut inbox = Inbox::new(4);
        assert_eq!(inbox.receive(receiver.as_fd()).unwrap(), 2);
        assert_eq!(inbox.datagrams().map(|(d, _)| d.to_vec()).collect::<Vec<_>>(), [b"a".to_vec(), b"c".to_vec()]);
    }
}
