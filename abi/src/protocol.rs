//! The transport protocols a VIP can carry: their IANA numbers (what the
//! datapath keys VIPs by) and their names (`TCP` in CRDs and messages, `tcp`
//! in metric labels, VIP strings and configuration documents).

use std::fmt;

/// Transport protocol of a VIP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[cfg_attr(feature = "serde", serde(rename_all = "UPPERCASE"))]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

/// (protocol, IANA number, name, label): the one table.
const TABLE: [(Protocol, u8, &str, &str); 2] = [(Protocol::Tcp, 6, "TCP", "tcp"), (Protocol::Udp, 17, "UDP", "udp")];

impl Protocol {
    /// Every protocol, in table order.
    pub const ALL: [Protocol; 2] = [Protocol::Tcp, Protocol::Udp];

    fn row(self) -> (Protocol, u8, &'static str, &'static str) {
        TABLE[self as usize]
    }

    /// IANA protocol number, as the datapath keys VIPs.
    pub fn number(self) -> u8 {
        self.row().1
    }

    /// The protocol with IANA number `number`, if a VIP can carry it.
    pub fn from_number(number: u8) -> Option<Self> {
        TABLE.iter().find(|row| row.1 == number).map(|row| row.0)
    }

    /// `TCP`, `UDP`: the CRDs' spelling.
    pub fn name(self) -> &'static str {
        self.row().2
    }

    /// The protocol named `name`, in any case (`tcp`, `UDP`).
    pub fn from_name(name: &str) -> Option<Self> {
        TABLE.iter().find(|row| row.2.eq_ignore_ascii_case(name)).map(|row| row.0)
    }

    /// `tcp`, `udp`: how VIP strings (`10.0.0.1:80/tcp`), metric labels and
    /// configuration documents spell a protocol.
    pub fn label(self) -> &'static str {
        self.row().3
    }

    /// `TCP (6) or UDP (17)`: what a VIP's protocol may be, for messages.
    pub fn choices() -> String {
        let names: Vec<String> = Self::ALL.iter().map(|p| format!("{} ({})", p.name(), p.number())).collect();
        names.join(" or ")
    }

    /// The [`label`](Self::label) of the protocol numbered `number`, or the
    /// number itself when no VIP can carry it.
    pub fn label_or_number(number: u8) -> String {
        Self::from_number(number).map_or_else(|| number.to_string(), |proto| proto.label().to_owned())
    }
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_names() {
        for proto in Protocol::ALL {
            assert_eq!(Protocol::from_number(proto.number()), Some(proto));
            assert_eq!(Protocol::from_name(proto.label()), Some(proto));
            assert_eq!(proto.label(), proto.name().to_lowercase());
        }
        assert_eq!((Protocol::Tcp.number(), Protocol::Udp.number()), (6, 17));
        assert_eq!((Protocol::Tcp.to_string(), Protocol::Udp.name()), ("TCP".to_owned(), "UDP"));
        assert_eq!(Protocol::Udp.label(), "udp");
        assert_eq!(Protocol::choices(), "TCP (6) or UDP (17)");
        assert_eq!(
            (Protocol::label_or_number(6), Protocol::label_or_number(132)),
            ("tcp".to_owned(), "132".to_owned())
        );
        assert_eq!((Protocol::from_number(1), Protocol::from_name("sctp")), (None, None));
    }
}
