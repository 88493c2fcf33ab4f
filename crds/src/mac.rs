//! One MAC address type, with the one parser every component uses (the
//! operator's `defaultMac`, the agent's `--default-mac`, katran-server's
//! `default_mac`/`mac` fields, the kernel's ARP table): six pairs of hex
//! digits separated by `:` or `-`, as katran-server takes them.

use std::fmt;
use std::str::FromStr;

/// An Ethernet address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Mac(pub [u8; 6]);

/// A text that is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a MAC address (aa:bb:cc:dd:ee:ff)")]
pub struct NotAMac(pub String);

impl Mac {
    /// A group (multicast or broadcast) address: the I/G bit of its first octet.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 == 1
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl FromStr for Mac {
    type Err = NotAMac;

    fn from_str(text: &str) -> Result<Self, NotAMac> {
        let bad = || NotAMac(text.to_owned());
        let octets: Vec<&str> = text.split([':', '-']).collect();
        if octets.len() != 6 {
            return Err(bad());
        }
        let mut mac = [0u8; 6];
        for (byte, octet) in mac.iter_mut().zip(octets) {
            // from_str_radix alone would take "+a".
            if octet.len() != 2 || !octet.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(bad());
            }
            *byte = u8::from_str_radix(octet, 16).map_err(|_| bad())?;
        }
        Ok(Mac(mac))
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:02x}:{b:02x}:{c:02x}:{d:02x}:{e:02x}:{g:02x}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_prints_lowercase_colons() {
        assert_eq!("AA:bb:cc:dd:ee:0F".parse(), Ok(Mac([0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0x0f])));
        assert_eq!("02-00-00-00-00-01".parse::<Mac>().unwrap().to_string(), "02:00:00:00:00:01");
        for bad in ["", "aa:bb", "aa:bb:cc:dd:ee:ff:00", "+a:bb:cc:dd:ee:ff", "aaa:b:cc:dd:ee:ff", "zz:bb:cc:dd:ee:ff"]
        {
            assert_eq!(bad.parse::<Mac>(), Err(NotAMac(bad.to_owned())), "{bad}");
        }
        assert!(Mac([0xff; 6]).is_multicast() && !Mac([2, 0, 0, 0, 0, 1]).is_multicast());
        assert!(Mac::default().is_zero());
    }
}
