//! `lb.weir.dev/v1alpha1`: one kind per file, plus the small value types they share
//! (protocol, hash function, the flag names and their Katran bit values).
//!
//! The flag enums are the only place that maps a flag *name* (what users write) to the
//! Katran *bit* (what the datapath stores), so that operator and agents cannot disagree.

// Each `printcolumn(...)` repeats `type_ = "string"`; clippy reads that as a duplicated
// attribute, but they are separate columns of kube's derive, not duplicates.
#![allow(clippy::duplicated_attributes)]

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod balancer_node;
mod real_server;
mod virtual_service;

pub use balancer_node::{
    AttachMode, BalancerNode, BalancerNodeSpec, BalancerNodeStatus, CapacityUsage, ProgrammedVip,
    ProgrammedVirtualService,
};
pub use real_server::{RealServer, RealServerSpec, RealServerStatus, MAX_WEIGHT};
pub use virtual_service::{VirtualService, VirtualServiceSpec, VirtualServiceStatus};

/// The API group of every weir kind.
pub const GROUP: &str = "lb.weir.dev";
/// The version of this module's kinds.
pub const VERSION: &str = "v1alpha1";

/// Condition types and the reasons weir writes, shared so the operator, the agents and
/// `kubectl wait --for=condition=…` users spell them the same way.
pub mod condition {
    /// VirtualService / RealServer: the shared rules admit the object.
    pub const ACCEPTED: &str = "Accepted";
    /// VirtualService: how many target nodes program it ("n/m nodes" in the message).
    pub const PROGRAMMED: &str = "Programmed";
    /// BalancerNode: the agent's datapath is attached and in sync.
    pub const READY: &str = "Ready";
}

/// Transport protocol of a VIP.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[serde(rename_all = "UPPERCASE")]
pub enum Protocol {
    #[default]
    Tcp,
    Udp,
}

impl Protocol {
    /// IANA protocol number, as the datapath keys VIPs.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

/// Consistent-hashing algorithm of a VIP's ring.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum HashFunction {
    /// Katran's original Maglev (`hash_func` 0).
    #[default]
    Maglev,
    /// Maglev V2 (`hash_func` 1): slots proportional to weight.
    MaglevV2,
}

impl HashFunction {
    /// katran-server's numeric `hash_func`.
    pub fn katran_id(self) -> u32 {
        match self {
            HashFunction::Maglev => 0,
            HashFunction::MaglevV2 => 1,
        }
    }
}

/// The VIP flags this datapath implements (README "VIPs"). Katran's other flags
/// (`QUIC_VIP`, `SRC_ROUTING`, …) are deliberately absent: the schema enum refuses them at
/// admission instead of the agent ignoring them.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VipFlag {
    /// Hash without the source port.
    NoSport,
    /// Do not use the connection table.
    NoLru,
    /// Hash on the destination port only.
    DportHash,
    /// Pass to the local stack when a real is LOCAL_REAL.
    LocalVip,
    /// Hash on source and destination ports.
    HashSrcDstPort,
}

impl VipFlag {
    /// Katran's bit value (`F_*` in `balancer_consts.h`).
    pub fn bit(self) -> u32 {
        match self {
            VipFlag::NoSport => 1,
            VipFlag::NoLru => 2,
            VipFlag::DportHash => 8,
            VipFlag::LocalVip => 32,
            VipFlag::HashSrcDstPort => 128,
        }
    }

    /// The OR of `flags`' bits (duplicates are harmless).
    pub fn bits(flags: &[VipFlag]) -> u32 {
        flags.iter().fold(0, |acc, f| acc | f.bit())
    }
}

/// The real flags this datapath implements.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RealFlag {
    /// With a LOCAL_VIP: hand the packet to this node's stack (`XDP_PASS`).
    LocalReal,
}

impl RealFlag {
    /// Katran's bit value (`REAL_F_LOCAL_REAL`).
    pub fn bit(self) -> u8 {
        match self {
            RealFlag::LocalReal => 2,
        }
    }

    /// The OR of `flags`' bits.
    pub fn bits(flags: &[RealFlag]) -> u8 {
        flags.iter().fold(0, |acc, f| acc | f.bit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_names_and_bits_match_katran() {
        let names: Vec<String> =
            [VipFlag::NoSport, VipFlag::NoLru, VipFlag::DportHash, VipFlag::LocalVip, VipFlag::HashSrcDstPort]
                .iter()
                .map(|f| serde_json::to_value(f).unwrap().as_str().unwrap().to_owned())
                .collect();
        assert_eq!(names, ["NO_SPORT", "NO_LRU", "DPORT_HASH", "LOCAL_VIP", "HASH_SRC_DST_PORT"]);
        assert_eq!(VipFlag::bits(&[VipFlag::NoSport, VipFlag::LocalVip, VipFlag::HashSrcDstPort]), 1 | 32 | 128);
        assert_eq!(VipFlag::bits(&[VipFlag::NoLru, VipFlag::DportHash]), 2 | 8);
        assert_eq!(serde_json::to_value(RealFlag::LocalReal).unwrap(), "LOCAL_REAL");
        assert_eq!(RealFlag::bits(&[RealFlag::LocalReal]), 2);
        assert_eq!(serde_json::to_value(Protocol::Udp).unwrap(), "UDP");
        assert_eq!(Protocol::Udp.number(), 17);
        assert_eq!(HashFunction::MaglevV2.katran_id(), 1);
    }
}
