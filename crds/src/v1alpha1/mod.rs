//! `lb.weir.dev/v1alpha1`: one kind per file, plus the small value types they share
//! (protocol and hash function, re-exported from weir-abi, and the flag names).
//!
//! The flag enums list the flags a user may write (the schema's enum); each maps to its
//! weir-abi flag, whose table holds the Katran bit and name, so operator, agents and the
//! datapath cannot disagree (the tests check the serde names against that table).

// Each `printcolumn(...)` repeats `type_ = "string"`; clippy reads that as a duplicated
// attribute, but they are separate columns of kube's derive, not duplicates.
#![allow(clippy::duplicated_attributes)]

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use weir_abi::{RealFlags, VipFlags};

mod balancer_node;
mod health_check;
mod real_server;
mod virtual_service;

pub use balancer_node::{
    AttachMode, BalancerNode, BalancerNodeSpec, BalancerNodeStatus, CapacityUsage, ProgrammedVip,
    ProgrammedVirtualService, MAX_UNHEALTHY_LISTED,
};
pub use health_check::{
    HealthCheckSpec, HealthCheckType, DEFAULT_EXPECTED_STATUS, DEFAULT_INTERVAL_MS, DEFAULT_THRESHOLD,
    DEFAULT_TIMEOUT_MS, INTERVAL_MS, MAX_HOST, MAX_TEXT, THRESHOLD,
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
    /// RealServer: its health check passes on the nodes that probe it ("healthy on 3/3
    /// nodes"); Unknown until a node reported.
    pub const HEALTHY: &str = "Healthy";
    /// VirtualService: on some node every real is unhealthy, so all stay in the ring.
    pub const FAIL_OPEN: &str = "FailOpen";
}

/// The VIP's protocol and hash function are weir-abi's (their numbers, names and schemas).
pub use weir_abi::{HashFunction, Protocol};

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
    /// Every flag, in Katran's bit order.
    pub const ALL: [VipFlag; 5] =
        [VipFlag::NoSport, VipFlag::NoLru, VipFlag::DportHash, VipFlag::LocalVip, VipFlag::HashSrcDstPort];

    /// The weir-abi flag this name stands for.
    pub fn flag(self) -> VipFlags {
        match self {
            VipFlag::NoSport => VipFlags::NO_SPORT,
            VipFlag::NoLru => VipFlags::NO_LRU,
            VipFlag::DportHash => VipFlags::DPORT_HASH,
            VipFlag::LocalVip => VipFlags::LOCAL_VIP,
            VipFlag::HashSrcDstPort => VipFlags::HASH_SRC_DST_PORT,
        }
    }

    /// Katran's bit value (`F_*` in `balancer_consts.h`).
    pub fn bit(self) -> u32 {
        self.flag().bits()
    }

    /// The union of `flags` (duplicates are harmless).
    pub fn flags(flags: &[VipFlag]) -> VipFlags {
        flags.iter().fold(VipFlags::empty(), |acc, f| acc | f.flag())
    }

    /// The OR of `flags`' bits (duplicates are harmless).
    pub fn bits(flags: &[VipFlag]) -> u32 {
        Self::flags(flags).bits()
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
    /// The weir-abi flag this name stands for.
    pub fn flag(self) -> RealFlags {
        match self {
            RealFlag::LocalReal => RealFlags::LOCAL_REAL,
        }
    }

    /// Katran's bit value (`REAL_F_LOCAL_REAL`).
    pub fn bit(self) -> u8 {
        self.flag().bits()
    }

    /// The OR of `flags`' bits.
    pub fn bits(flags: &[RealFlag]) -> u8 {
        flags.iter().fold(RealFlags::empty(), |acc, f| acc | f.flag()).bits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde_name<T: Serialize>(value: T) -> String {
        serde_json::to_value(value).unwrap().as_str().unwrap().to_owned()
    }

    #[test]
    fn flag_names_and_bits_match_katran() {
        let names: Vec<String> = VipFlag::ALL.iter().map(serde_name).collect();
        assert_eq!(names, ["NO_SPORT", "NO_LRU", "DPORT_HASH", "LOCAL_VIP", "HASH_SRC_DST_PORT"]);
        assert_eq!(VipFlag::bits(&[VipFlag::NoSport, VipFlag::LocalVip, VipFlag::HashSrcDstPort]), 1 | 32 | 128);
        assert_eq!(VipFlag::bits(&[VipFlag::NoLru, VipFlag::DportHash]), 2 | 8);
        assert_eq!(serde_json::to_value(RealFlag::LocalReal).unwrap(), "LOCAL_REAL");
        assert_eq!(RealFlag::bits(&[RealFlag::LocalReal]), 2);
        assert_eq!(serde_json::to_value(Protocol::Udp).unwrap(), "UDP");
        assert_eq!(Protocol::Udp.number(), 17);
        assert_eq!(HashFunction::MaglevV2.katran_id(), 1);
    }

    /// What users write is the weir-abi table's name of the flag they get.
    #[test]
    fn flag_names_are_the_abi_tables() {
        for flag in VipFlag::ALL {
            assert_eq!(serde_name(flag), flag.flag().to_string());
            assert!(VipFlags::SUPPORTED.contains(flag.flag()), "{flag:?}");
        }
        assert_eq!(VipFlag::flags(&VipFlag::ALL), VipFlags::SUPPORTED, "every supported flag has a name");
        assert_eq!(serde_name(RealFlag::LocalReal), RealFlag::LocalReal.flag().to_string());
    }
}
