//! Flows and test runs: running frames through the balancer's programs with
//! BPF_PROG_TEST_RUN (simulate-packet through the live one, real-for-flow
//! through the dry one), and computing the connection-table key of a flow the
//! way the program does.

use std::net::IpAddr;

use aya::programs::{TestRun, TestRunOptions, Xdp};
use etherparse::PacketBuilder;
use weir_abi::{Protocol, VipFlags};
use weir_ebpf::abi::{self, ConnKey};

use super::state::Vip;
use crate::{Error, Result};

/// A flow as katran-server's real-for-flow names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flow {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
}

/// An XDP verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Verdict {
    Aborted,
    Drop,
    Pass,
    Tx,
    Redirect,
    Other(u32),
}

impl Verdict {
    pub fn from_code(code: u32) -> Self {
        match code {
            0 => Verdict::Aborted,
            1 => Verdict::Drop,
            2 => Verdict::Pass,
            3 => Verdict::Tx,
            4 => Verdict::Redirect,
            other => Verdict::Other(other),
        }
    }

    /// The kernel's name: `XDP_TX`, `XDP_PASS`, ...
    pub fn name(self) -> String {
        match self {
            Verdict::Aborted => "XDP_ABORTED".into(),
            Verdict::Drop => "XDP_DROP".into(),
            Verdict::Pass => "XDP_PASS".into(),
            Verdict::Tx => "XDP_TX".into(),
            Verdict::Redirect => "XDP_REDIRECT".into(),
            Verdict::Other(code) => format!("XDP_{code}"),
        }
    }
}

/// The outcome of one test run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Simulated {
    pub verdict: Verdict,
    /// The frame as the program left it.
    pub packet: Vec<u8>,
}

/// The largest frame a test run hands the program in one buffer (a page
/// less XDP headroom and skb_shared_info). Larger frames become multi-buffer,
/// which the balancer (not a frags program) never sees on a live link.
pub const MAX_SIMULATED_FRAME: usize = 3520;
/// Room for the largest frame plus the outer header the program may add.
const MAX_FRAME: usize = MAX_SIMULATED_FRAME + 64;

pub(crate) fn simulate(program: &Xdp, frame: &[u8]) -> Result<Simulated> {
    if frame.len() < 14 {
        return Err(Error::invalid("packet", format!("{} bytes is shorter than an Ethernet header", frame.len())));
    }
    if frame.len() > MAX_SIMULATED_FRAME {
        return Err(Error::invalid(
            "packet",
            format!("{} bytes is longer than the {MAX_SIMULATED_FRAME} a single-buffer XDP frame holds", frame.len()),
        ));
    }
    let mut out = vec![0u8; MAX_FRAME];
    let result = program
        .test_run(TestRunOptions { data_in: Some(frame), data_out: Some(&mut out), ..TestRunOptions::default() })
        .map_err(|e| Error::bpf("BPF_PROG_TEST_RUN", e))?;
    out.truncate(result.data_size_out as usize);
    Ok(Simulated { verdict: Verdict::from_code(result.return_value), packet: out })
}

/// The real a new connection of `flow` goes to: a TCP SYN (or a UDP
/// datagram) of the flow run through `dry`, the balancer's query program,
/// which takes the ring's choice without counting or touching the
/// connection table. A SYN, as in Katran's simulator: a new connection always
/// rehashes, so the answer follows the ring (a drained real is never named).
pub(crate) fn real_for_flow(dry: &Xdp, flow: &Flow) -> Result<Option<IpAddr>> {
    let frame = flow_frame(flow)?;
    let run = simulate(dry, &frame)?;
    Ok(match run.verdict {
        Verdict::Tx => outer_destination(&run.packet),
        _ => None,
    })
}

/// A frame of a new connection of `flow`: a TCP SYN or a UDP datagram.
pub fn flow_frame(flow: &Flow) -> Result<Vec<u8>> {
    const MACS: ([u8; 6], [u8; 6]) = ([0x02, 0, 0, 0, 0, 0xaa], [0x02, 0, 0, 0, 0, 0xbb]);
    let eth = PacketBuilder::ethernet2(MACS.0, MACS.1);
    let ip = match (flow.src, flow.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => eth.ipv4(s.octets(), d.octets(), 64),
        (IpAddr::V6(s), IpAddr::V6(d)) => eth.ipv6(s.octets(), d.octets(), 64),
        _ => return Err(Error::bad_address("src", format!("{} and {} are of different families", flow.src, flow.dst))),
    };
    let mut frame = Vec::new();
    let written = match Protocol::from_number(flow.proto) {
        Some(Protocol::Tcp) => {
            let builder = ip.tcp(flow.src_port, flow.dst_port, 1, 64_000).syn();
            frame.reserve(builder.size(0));
            builder.write(&mut frame, &[])
        }
        Some(Protocol::Udp) => {
            let builder = ip.udp(flow.src_port, flow.dst_port);
            frame.reserve(builder.size(0));
            builder.write(&mut frame, &[])
        }
        None => return Err(Error::invalid("proto", format!("{} is not {}", flow.proto, Protocol::choices()))),
    };
    written.map_err(|e| Error::invalid("flow", e.to_string()))?;
    Ok(frame)
}

/// The outer destination address of an encapsulated frame.
pub fn outer_destination(frame: &[u8]) -> Option<IpAddr> {
    let mut off = 12;
    let mut ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    if ethertype == 0x8100 || ethertype == 0x88a8 {
        off += 4;
        ethertype = u16::from_be_bytes([*frame.get(off)?, *frame.get(off + 1)?]);
    }
    let l3 = off + 2;
    match ethertype {
        0x0800 => {
            let b: [u8; 4] = frame.get(l3 + 16..l3 + 20)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        0x86dd => {
            let b: [u8; 16] = frame.get(l3 + 24..l3 + 40)?.try_into().ok()?;
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// The connection-table key of the flow from `src:src_port` to port
/// `dst_port` of `vip`, shaped as `lookup_vip` and `shape_flow` in
/// balancer.bpf.c shape it: a port-less VIP keys its flows by port 0 unless
/// DPORT_HASH or HASH_SRC_DST_PORT keeps the destination port.
pub(crate) fn conn_key(vip: &Vip, src: IpAddr, src_port: u16, dst_port: u16) -> ConnKey {
    let flags = VipFlags::from_bits_retain(vip.flags);
    let keeps_dport = flags.intersects(VipFlags::PORT_HASH);
    let dport = if vip.id.port == 0 && !keeps_dport { 0 } else { dst_port };
    let mut key = ConnKey {
        src: abi::addr_bytes(src),
        conn_tag: vip.conn_tag,
        sport: src_port.to_be_bytes(),
        dport: dport.to_be_bytes(),
    };
    if flags.contains(VipFlags::DPORT_HASH) {
        key.sport = key.dport;
        key.src = [0; 16];
    }
    if flags.contains(VipFlags::NO_SPORT) {
        key.sport = [0; 2];
    }
    key
}
