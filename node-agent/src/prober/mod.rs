//! weir's built-in health checker: active probes of each real of a VIP, as
//! katran-server's separate healthchecker service does, but in the agent.
//!
//! - `check`: one probe — a TCP handshake, HTTP(S) GET with an expected
//!   status, UDP with an expected reply — carrying a mark (SO_MARK), so that
//!   the healthcheck program tunnels it to the real as VIP traffic goes;
//! - `half_open`: TCP probes as half-open handshakes from one raw socket (a
//!   SYN out, the SYN-ACK in), with no socket, task or timer per probe;
//! - `mmsg`: the batched sends and receives of those raw sockets;
//! - `tracker`: consecutive results against the thresholds: when a real turns
//!   healthy or unhealthy;
//! - `schedule`: when each target is probed — every interval, each at its own
//!   phase so that thousands of targets never probe in lockstep;
//! - `runner`: the prober's thread, which probes every target on schedule
//!   with bounded concurrency, off the request path, and reports
//!   transitions.
//!
//! New reals start unhealthy and turn healthy after `healthy_threshold`
//! successive successful probes; a healthy real turns unhealthy after
//! `unhealthy_threshold` successive failures. A transition is reported the
//! moment its threshold is met.

pub mod check;
pub mod half_open;
mod mmsg;
pub mod runner;
pub mod schedule;
pub mod tracker;

pub use check::{probe, Check, HttpCheck, ProbeError, Target, UdpCheck};
pub use runner::{
    DurationLabels, ProbeMetrics, ProbedReal, Prober, RealStatus, Transition, TransitionLabels, VipCheck,
};
pub use tracker::{RealHealth, Thresholds};
