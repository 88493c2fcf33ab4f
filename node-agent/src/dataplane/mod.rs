//! The datapath of one node: the [`Balancer`] API and its parts.
//!
//! - `balancer`: the Balancer — lifecycle, VIPs, reals, connections, counters, validation (a module each);
//! - `config`: its create-time configuration (mirrors katran-server's /lb/create);
//! - `katran`: Katran's configuration (`/lb/create`'s body) onto it, field by field;
//! - `state`: the control-plane model (VIPs, reals, weights, allocation), saved beside the pins;
//! - `flow`: flows, connection-table keys, BPF_PROG_TEST_RUN runs;
//! - `maps`: typed access to the balancer's BPF maps (nothing else opens them; `decap`
//!   reads the one counter map of its own program);
//! - `maglev`: Maglev ring computation, pure Rust;
//! - `stats`: counter reads, summed over CPUs;
//! - `pin`: bpffs mounting and the pinned-datapath layout;
//! - `decap`: the real-side decapsulation program;
//! - `healthcheck`: the healthcheck program, which tunnels probes to reals.

mod balancer;
mod config;
pub mod decap;
mod flow;
pub mod gateway;
pub mod healthcheck;
mod katran;
pub mod maglev;
mod maps;
pub mod pin;
mod state;
mod stats;

pub use balancer::{Balancer, ConnPurge, RealAction, RealHealth, RealSpec, VipInfo, VipSpec};
pub use config::{AttachMode, BalancerConfig, KatranSettings, Pins};
pub use flow::{flow_frame, outer_destination, Flow, Simulated, Verdict};
pub use katran::{KatranConfig, KatranError, BALANCER_PROGRAM};
pub use maglev::HashFunction;
pub use state::{CheckKind, HealthCheck, HttpCheck, UdpCheck, VipId};
pub use stats::Counter;

use std::net::IpAddr;

use weir_abi::Protocol;

/// `10.0.0.1:80/tcp`, `[2001:db8::1]:80/udp`, for messages and logs.
pub fn fmt_vip(addr: IpAddr, port: u16, proto: u8) -> String {
    let proto = Protocol::from_number(proto).map_or_else(|| format!("proto{proto}"), |p| p.label().to_owned());
    match addr {
        IpAddr::V4(a) => format!("{a}:{port}/{proto}"),
        IpAddr::V6(a) => format!("[{a}]:{port}/{proto}"),
    }
}
