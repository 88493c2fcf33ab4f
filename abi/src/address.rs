//! The one rule for VIP and real addresses, used by the CRD validation (so an
//! object the datapath would refuse is `Accepted=False`, never Accepted then
//! failing on every node) and by the agent's Balancer (REST and cluster mode
//! alike): an address is usable when a packet on the wire can carry it as a
//! unicast destination and it has exactly one spelling.

use std::fmt;
use std::net::IpAddr;

/// Why an address cannot be a VIP or a real.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddressError {
    /// `0.0.0.0`, `::`.
    Unspecified,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// `127.0.0.0/8`, `::1`: never arrives from the wire.
    Loopback,
    /// `::ffff:a.b.c.d`: the same host as `a.b.c.d`, so one real would have two
    /// spellings, and as a VIP it would never match an IPv4 packet.
    Ipv4Mapped,
    /// `::a.b.c.d` (deprecated IPv4-compatible): the same reasons.
    Ipv4Compatible,
}

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressError::Unspecified => "must not be the unspecified address",
            AddressError::Multicast => "must not be a multicast address",
            AddressError::Broadcast => "must not be the broadcast address",
            AddressError::Loopback => "must not be a loopback address",
            AddressError::Ipv4Mapped => "must not be an IPv4-mapped IPv6 address; write the IPv4 address",
            AddressError::Ipv4Compatible => "must not be an IPv4-compatible IPv6 address; write the IPv4 address",
        })
    }
}

impl std::error::Error for AddressError {}

/// Whether `addr` can be a VIP or a real: a unicast address with one spelling.
pub fn check_unicast(addr: IpAddr) -> Result<(), AddressError> {
    if addr.is_unspecified() {
        return Err(AddressError::Unspecified);
    }
    if addr.is_multicast() {
        return Err(AddressError::Multicast);
    }
    if addr.is_loopback() {
        return Err(AddressError::Loopback);
    }
    match addr {
        IpAddr::V4(v4) if v4.is_broadcast() => Err(AddressError::Broadcast),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => Err(AddressError::Ipv4Mapped),
        // The first 96 bits zero; `::` and `::1` were caught above.
        IpAddr::V6(v6) if v6.segments()[..6].iter().all(|&s| s == 0) => Err(AddressError::Ipv4Compatible),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_rule_for_every_address() {
        let cases: &[(&str, Result<(), AddressError>)] = &[
            ("10.0.0.1", Ok(())),
            ("192.0.2.255", Ok(())),
            ("2001:db8::1", Ok(())),
            ("fe80::1", Ok(())),
            ("::ffff:0:0:1", Ok(())),
            ("0.0.0.0", Err(AddressError::Unspecified)),
            ("::", Err(AddressError::Unspecified)),
            ("224.0.0.1", Err(AddressError::Multicast)),
            ("ff02::1", Err(AddressError::Multicast)),
            ("255.255.255.255", Err(AddressError::Broadcast)),
            ("127.0.0.1", Err(AddressError::Loopback)),
            ("127.255.0.9", Err(AddressError::Loopback)),
            ("::1", Err(AddressError::Loopback)),
            ("::ffff:10.1.8.1", Err(AddressError::Ipv4Mapped)),
            ("::10.0.0.1", Err(AddressError::Ipv4Compatible)),
        ];
        for (text, want) in cases {
            assert_eq!(check_unicast(text.parse().unwrap()), *want, "{text}");
        }
    }
}
