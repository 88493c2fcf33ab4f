//! The datapath of one node: the [`Balancer`] API and its parts.
//!
//! - `balancer`: the Balancer — VIPs, reals, flags, rings, MAC, counters, test runs;
//! - `config`: its create-time configuration (mirrors katran-server's /lb/create);
//! - `maps`: typed access to the BPF maps (the only user of `aya::maps`);
//! - `maglev`: Maglev ring computation, pure Rust;
//! - `stats`: counter reads, summed over CPUs;
//! - `pin`: bpffs mounting and the pinned-datapath layout;
//! - `decap`: the real-side decapsulation program.

mod balancer;
mod config;
pub mod decap;
pub mod maglev;
mod maps;
pub mod pin;
mod stats;

pub use balancer::{Balancer, FlowVerdict, RealSpec, SimulatedPacket, VipInfo, VipSpec};
pub use config::{AttachMode, BalancerConfig};
pub use maglev::HashFunction;
pub use stats::{Counter, Stats};

use std::net::IpAddr;

/// `10.0.0.1:80/tcp`, `[2001:db8::1]:80/udp`, for messages and logs.
pub fn fmt_vip(addr: IpAddr, port: u16, proto: u8) -> String {
    let proto = match proto {
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        other => format!("proto{other}"),
    };
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}/{proto}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{proto}"),
    }
}
