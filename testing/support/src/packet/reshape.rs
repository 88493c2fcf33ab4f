//! Reshaping built frames where etherparse's builder cannot help (untagged
//! frames unless said otherwise): VLAN tags, TOS / traffic class, IPv4
//! options and fragment bits, IPv6 extension headers, lying lengths, Ethernet
//! padding, truncation. Every reshaping keeps the IPv4 header checksum valid.

use super::read::{fix_ipv4_checksum, l2_len};

/// Inserts one VLAN tag (`tpid` 0x8100 or 0x88a8, `tci`) after the MAC addresses.
pub fn tagged(frame: &[u8], tpid: u16, tci: u16) -> Vec<u8> {
    let mut f = frame[..12].to_vec();
    f.extend_from_slice(&tpid.to_be_bytes());
    f.extend_from_slice(&tci.to_be_bytes());
    f.extend_from_slice(&frame[12..]);
    f
}

/// Sets the IPv4 TOS or the IPv6 traffic class (no L4 checksum covers them).
pub fn with_tos(frame: &[u8], tos: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    match f[14] >> 4 {
        4 => {
            f[15] = tos;
            fix_ipv4_checksum(&mut f[14..34]);
        }
        6 => {
            f[14] = 0x60 | (tos >> 4);
            f[15] = (tos << 4) | (f[15] & 0x0f);
        }
        v => panic!("IP version {v}"),
    }
    f
}

/// Sets the 20-bit IPv6 flow label.
pub fn with_flow_label(frame: &[u8], label: u32) -> Vec<u8> {
    let mut f = frame.to_vec();
    assert_eq!(f[14] >> 4, 6);
    f[15] = (f[15] & 0xf0) | ((label >> 16) as u8 & 0x0f);
    f[16] = (label >> 8) as u8;
    f[17] = label as u8;
    f
}

/// Sets the IPv4 identification and flags/fragment-offset word (`0x2000` = MF,
/// `0x4000` = DF, low 13 bits = offset in 8-byte units).
pub fn with_ipv4_frag(frame: &[u8], id: u16, frag: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[18..20].copy_from_slice(&id.to_be_bytes());
    f[20..22].copy_from_slice(&frag.to_be_bytes());
    fix_ipv4_checksum(&mut f[14..34]);
    f
}

/// Appends `options` (a multiple of 4 bytes) to the IPv4 header.
pub fn with_ipv4_options(frame: &[u8], options: &[u8]) -> Vec<u8> {
    assert_eq!(options.len() % 4, 0);
    let mut f = frame[..34].to_vec();
    f.extend_from_slice(options);
    f.extend_from_slice(&frame[34..]);
    f[14] = 0x40 | ((20 + options.len()) / 4) as u8;
    let total = u16::from_be_bytes([f[16], f[17]]) + options.len() as u16;
    f[16..18].copy_from_slice(&total.to_be_bytes());
    let ihl = 20 + options.len();
    fix_ipv4_checksum(&mut f[14..14 + ihl]);
    f
}

/// Changes the IPv4 protocol number (what followed becomes opaque payload).
pub fn with_ipv4_proto(frame: &[u8], proto: u8) -> Vec<u8> {
    let mut f = frame.to_vec();
    f[23] = proto;
    fix_ipv4_checksum(&mut f[14..34]);
    f
}

/// Inserts an IPv6 extension header of type `next_header` whose body (after
/// its next-header byte) is `body`; the upper-layer checksum stays valid.
pub fn with_ipv6_ext(frame: &[u8], next_header: u8, body: &[u8]) -> Vec<u8> {
    assert_eq!((body.len() + 1) % 8, 0);
    let mut f = frame[..54].to_vec();
    f.push(frame[20]); // the extension header's next header: the old one
    f.extend_from_slice(body);
    f.extend_from_slice(&frame[54..]);
    f[20] = next_header;
    let payload = u16::from_be_bytes([f[18], f[19]]) + 1 + body.len() as u16;
    f[18..20].copy_from_slice(&payload.to_be_bytes());
    f
}

/// Sets the length the IP header states (IPv4 total length, checksum
/// fixed; IPv6 payload length) without changing the frame: a lying header.
pub fn with_ip_len(frame: &[u8], len: u16) -> Vec<u8> {
    let mut f = frame.to_vec();
    let l3 = l2_len(&f);
    match f[l3] >> 4 {
        4 => {
            f[l3 + 2..l3 + 4].copy_from_slice(&len.to_be_bytes());
            fix_ipv4_checksum(&mut f[l3..l3 + 20]);
        }
        6 => f[l3 + 4..l3 + 6].copy_from_slice(&len.to_be_bytes()),
        v => panic!("IP version {v}"),
    }
    f
}

/// Appends zero bytes up to `len` (Ethernet padding after the IP packet).
pub fn padded(frame: &[u8], len: usize) -> Vec<u8> {
    let mut f = frame.to_vec();
    assert!(f.len() <= len);
    f.resize(len, 0);
    f
}

/// The first `len` bytes of a frame.
pub fn truncated(frame: &[u8], len: usize) -> Vec<u8> {
    frame[..len].to_vec()
}
