//! VIP and real flags: Katran's bit values (`balancer_consts.h`, `F_*` and
//! `F_LOCAL_REAL`), carried in `vip_meta.flags` and `real_def.flags`. The
//! `bitflags!` declarations below are the one table of bits and names: the
//! names are Katran's, and what [`Display`](std::fmt::Display) prints.

use std::fmt;

bitflags::bitflags! {
    /// The flags of a VIP. Every bit Katran defines is named; the datapath
    /// honours only [`VipFlags::SUPPORTED`], the control plane refuses the rest.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct VipFlags: u32 {
        /// The hash ignores the client's source port.
        const NO_SPORT = 1 << 0;
        /// Never read or write the connection table.
        const NO_LRU = 1 << 1;
        /// Reserved: refused by the control plane.
        const QUIC_VIP = 1 << 2;
        /// Hash on the destination port only.
        const DPORT_HASH = 1 << 3;
        /// Reserved: refused by the control plane.
        const SRC_ROUTING = 1 << 4;
        /// A LOCAL_REAL of this VIP gets XDP_PASS.
        const LOCAL_VIP = 1 << 5;
        /// Reserved: refused by the control plane.
        const GLOBAL_LRU = 1 << 6;
        /// A port-less VIP keeps the destination port in the hash.
        const HASH_SRC_DST_PORT = 1 << 7;
        /// Reserved: refused by the control plane.
        const UDP_STABLE_ROUTING = 1 << 8;
        /// Reserved: refused by the control plane.
        const UDP_FLOW_MIGRATION = 1 << 9;
    }
}

impl VipFlags {
    /// The flags the datapath honours; every other bit is refused before it
    /// reaches a map (`VIP_F_SUPPORTED` in weir_abi.h). Not in the table
    /// above, so that it never shows up as a name.
    pub const SUPPORTED: Self = Self::NO_SPORT
        .union(Self::NO_LRU)
        .union(Self::DPORT_HASH)
        .union(Self::LOCAL_VIP)
        .union(Self::HASH_SRC_DST_PORT);

    /// The flags that put the destination port in the hash, which a
    /// port-less VIP's connection-table keys depend on.
    pub const PORT_HASH: Self = Self::DPORT_HASH.union(Self::HASH_SRC_DST_PORT);
}

bitflags::bitflags! {
    /// The flags of a real.
    #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
    pub struct RealFlags: u8 {
        /// The real's address is IPv6; set from the address, never by a caller.
        const IPV6 = 1 << 0;
        /// The real is this host: XDP_PASS for LOCAL_VIPs.
        const LOCAL_REAL = 1 << 1;
    }
}

/// Katran's names of the flags set, joined with `|` (`NO_SPORT|LOCAL_VIP`);
/// bits no flag uses are left out (the callers name those by number).
fn write_names<F: bitflags::Flags>(flags: &F, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    for (i, (name, _)) in flags.iter_names().enumerate() {
        if i > 0 {
            f.write_str("|")?;
        }
        f.write_str(name)?;
    }
    Ok(())
}

impl fmt::Display for VipFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_names(self, f)
    }
}

impl fmt::Display for RealFlags {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_names(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bits_and_names_are_katrans() {
        let names: Vec<(&str, u32)> = VipFlags::all().iter_names().map(|(n, f)| (n, f.bits())).collect();
        assert_eq!(
            names,
            [
                ("NO_SPORT", 1),
                ("NO_LRU", 2),
                ("QUIC_VIP", 4),
                ("DPORT_HASH", 8),
                ("SRC_ROUTING", 16),
                ("LOCAL_VIP", 32),
                ("GLOBAL_LRU", 64),
                ("HASH_SRC_DST_PORT", 128),
                ("UDP_STABLE_ROUTING", 256),
                ("UDP_FLOW_MIGRATION", 512),
            ]
        );
        assert_eq!(VipFlags::all().bits(), (1 << 10) - 1);
        assert_eq!(VipFlags::SUPPORTED.bits(), 1 | 2 | 8 | 32 | 128);
        assert_eq!((RealFlags::IPV6.bits(), RealFlags::LOCAL_REAL.bits()), (1, 2));
    }

    #[test]
    fn display_joins_names_and_skips_unknown_bits() {
        assert_eq!((VipFlags::QUIC_VIP | VipFlags::GLOBAL_LRU).to_string(), "QUIC_VIP|GLOBAL_LRU");
        assert_eq!(VipFlags::from_bits_retain(1 << 12 | 1).to_string(), "NO_SPORT");
        assert_eq!(VipFlags::empty().to_string(), "");
        assert_eq!(RealFlags::all().to_string(), "IPV6|LOCAL_REAL");
    }
}
