//! weir-bench: what the datapath costs per packet, and what the control plane
//! costs per change.
//!
//! Datapath cases run the real balancer program on 64-byte frames (1514
//! bytes for `icmp_too_big`) with BPF_PROG_TEST_RUN, one packet per run (the
//! program rewrites its packet, so `repeat > 1` would re-run an already
//! encapsulated frame), and take the kernel-reported duration of each run.
//! Each case prints one JSON line:
//! `{"case": ..., "median_ns": ..., "method": ...}`.
//!
//! Run as root: `cargo run --release -p weir-agent --bin weir-bench`.

use std::net::IpAddr;
use std::time::Instant;

use anyhow::{bail, Context};
use aya::programs::{TestRun, TestRunOptions, Xdp};
use clap::Parser;
use weir_agent::dataplane::{Balancer, BalancerConfig, Flow, RealAction, RealSpec, VipId, VipSpec};
use weir_ebpf::abi::Stat;

#[derive(Parser)]
#[command(about = "Measures weir's datapath (ns/packet) and control plane")]
struct Args {
    /// Runs per datapath case (the median is reported).
    #[arg(long, default_value_t = 200_000)]
    runs: usize,
    /// Distinct flows in the many_flows case.
    #[arg(long, default_value_t = 1_000_000)]
    flows: u32,
    /// The CPU to run on (default: CPU 0).
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Only the cases whose name contains this.
    #[arg(long)]
    only: Option<String>,
}

const FRAME_LEN: usize = 64;
const XDP_TX: u32 = 3;
/// Rounds over which the single-frame cases are interleaved.
const ROUNDS: usize = 20;
const VIP: &str = "10.0.0.1";
const METHOD: &str =
    "BPF_PROG_TEST_RUN, one 64-byte frame per run, kernel-reported duration, median; pinned to one CPU";

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !nix::unistd::geteuid().is_root() {
        bail!("weir-bench loads BPF programs: run it as root");
    }
    pin_to_cpu(args.cpu)?;
    let mut balancer = Balancer::new(BalancerConfig {
        max_vips: 4,
        max_reals: 2048,
        lru_size: args.flows.max(1024) * 2,
        ..BalancerConfig::testing()
    })?;
    let tcp = VipId { addr: VIP.parse()?, port: 80, proto: 6 };
    let udp = VipId { addr: VIP.parse()?, port: 53, proto: 17 };
    for vip in [tcp, udp] {
        balancer.add_vip(VipSpec { id: vip, flags: 0 })?;
        let reals: Vec<RealSpec> =
            (1..=10u8).map(|i| RealSpec { addr: IpAddr::from([10, 1, 0, i]), weight: 1, flags: 0 }).collect();
        balancer.modify_reals(&vip, RealAction::Add, &reals)?;
    }
    let want = |case: &str| args.only.as_deref().is_none_or(|only| case.contains(only));

    let client: IpAddr = "192.168.1.1".parse()?;
    let syn = frame(client, tcp, 40_000, true)?;
    let ack = frame(client, tcp, 40_001, false)?;
    let dgram = frame(client, udp, 40_002, false)?;
    let other = frame(client, VipId { addr: "10.0.0.2".parse()?, port: 80, proto: 6 }, 40_003, false)?;
    balancer.simulate(&ack)?; // the established flow's connection-table entry
    balancer.simulate(&dgram)?;

    let program = program(&balancer)?;
    let mut pass = aya::Ebpf::load(weir_ebpf::XDP_PASS)?;
    let pass_program: &mut Xdp = pass.program_mut(weir_ebpf::XDP_PASS_PROGRAM).context("pass program")?.try_into()?;
    pass_program.load()?;
    let pass_program: &Xdp = pass_program;

    // The single-frame cases run interleaved, round after round, so that a
    // burst of noise from the host lands on every case alike. tcp_syn repeats
    // one SYN, as Katran's figure was measured: after the first run the flow's
    // entry exists and is refreshed in place. "floor" is a program that only
    // returns XDP_PASS: the part of every figure that is the measuring itself.
    let cases: Vec<(&str, &Xdp, &[u8], u32)> = [
        ("tcp_syn", program, syn.as_slice(), 3),
        ("established", program, ack.as_slice(), 3),
        ("udp", program, dgram.as_slice(), 3),
        ("non_vip", program, other.as_slice(), 2),
        ("floor", pass_program, other.as_slice(), 2),
    ]
    .into_iter()
    .filter(|(case, ..)| want(case))
    .collect();
    let mut samples: Vec<Vec<u64>> = vec![Vec::with_capacity(args.runs); cases.len()];
    for _ in 0..ROUNDS {
        for ((_, prog, input, verdict), times) in cases.iter().zip(&mut samples) {
            times.extend(durations(prog, std::iter::repeat_n(*input, args.runs / ROUNDS), *verdict)?);
        }
    }
    for ((case, ..), mut times) in cases.iter().zip(samples) {
        let method = if *case == "floor" {
            format!("{METHOD}; a program that only returns XDP_PASS")
        } else {
            METHOD.to_owned()
        };
        report(case, median(&mut times), &method);
    }

    if want("tcp_syn_new_flow") {
        // SYNs of flows never seen: each one inserts into the connection table.
        let frames: Vec<Vec<u8>> = (0..args.runs.min(args.flows as usize) as u32)
            .map(|i| {
                let [_, a, b, c] = i.to_be_bytes();
                frame(IpAddr::from([101, a, b, c]), tcp, 1024 + (i % 60_000) as u16, true)
            })
            .collect::<Result<_, _>>()?;
        let median = median_ns(program, frames.iter().map(Vec::as_slice), 3)?;
        report("tcp_syn_new_flow", median, &format!("{METHOD}; every SYN a new flow (connection-table insert)"));
    }

    if want("many_flows") {
        // Distinct clients, each seen once before (so the table holds them all)
        // and then measured: connection-table hits spread over `flows` entries.
        let frames: Vec<Vec<u8>> = (0..args.flows)
            .map(|i| {
                let [_, a, b, c] = i.to_be_bytes();
                frame(IpAddr::from([100, a, b, c]), tcp, 1024 + (i % 60_000) as u16, false)
            })
            .collect::<Result<_, _>>()?;
        median_ns(program, frames.iter().map(Vec::as_slice), 3)?;
        let median = median_ns(program, frames.iter().map(Vec::as_slice), 3)?;
        report(
            "many_flows",
            median,
            &format!("{METHOD}; {} distinct established flows, each run a different one", args.flows),
        );
    }

    if want("icmp_too_big") {
        // A full-size packet of an established flow (1500 bytes of IP, 1520
        // once encapsulated, over the 1500 MTU): answered with an ICMP
        // "fragmentation needed". Counted only once the verdict (XDP_TX), the
        // reply (type 3 code 4, MTU 1480) and the counter are as they should be.
        let big = too_big_frame(client, tcp, 40_001)?;
        let before = balancer.stat(Stat::IcmpTooBig)?;
        let mut times = Vec::with_capacity(args.runs);
        let mut out = vec![0u8; big.len() + 128];
        for _ in 0..args.runs {
            let run = program.test_run(TestRunOptions {
                data_in: Some(&big),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })?;
            if run.return_value != XDP_TX {
                bail!("icmp_too_big: verdict {} where XDP_TX was expected", run.return_value);
            }
            let reply = &out[..run.data_size_out as usize];
            if reply.len() != 14 + 28 + 84 || reply[34..36] != [3, 4] || reply[40..42] != 1480u16.to_be_bytes() {
                bail!("icmp_too_big: the reply is not a fragmentation-needed reporting MTU 1480: {reply:02x?}");
            }
            times.push(run.duration.as_nanos() as u64);
        }
        let counted = balancer.stat(Stat::IcmpTooBig)?.v1 - before.v1;
        if counted != args.runs as u64 {
            bail!("icmp_too_big: {counted} packets counted too big in {} runs", args.runs);
        }
        report(
            "icmp_too_big",
            median(&mut times),
            "BPF_PROG_TEST_RUN, one 1514-byte frame (1500 bytes of IPv4, MTU 1500) per run, answered with ICMP \
             fragmentation-needed; kernel-reported duration, median; pinned to one CPU",
        );
    }

    if want("batch_1000_reals") {
        // The control plane: 1,000 reals added to a VIP in one batch (ring
        // recomputed and the changed slots written), then removed.
        let vip = VipId { addr: "10.0.0.3".parse()?, port: 443, proto: 6 };
        balancer.add_vip(VipSpec { id: vip, flags: 0 })?;
        let reals: Vec<RealSpec> = (0..1000u32)
            .map(|i| {
                let [_, _, a, b] = (i + 1).to_be_bytes();
                RealSpec { addr: IpAddr::from([10, 2, a, b]), weight: 1 + i % 7, flags: 0 }
            })
            .collect();
        let mut times = Vec::new();
        for _ in 0..21 {
            let start = Instant::now();
            balancer.modify_reals(&vip, RealAction::Add, &reals)?;
            times.push(start.elapsed().as_nanos() as u64);
            balancer.modify_reals(&vip, RealAction::Delete, &reals)?;
        }
        report(
            "batch_1000_reals",
            median(&mut times),
            "Balancer::modify_reals adding 1,000 weighted reals to a VIP (ring 65537, Maglev, mmap writes), wall clock, median of 21",
        );
    }
    Ok(())
}

fn program(balancer: &Balancer) -> anyhow::Result<&Xdp> {
    balancer.program().context("balancer program")
}

/// Runs each frame once and returns the median kernel-reported duration.
fn median_ns<'a>(program: &Xdp, frames: impl Iterator<Item = &'a [u8]>, verdict: u32) -> anyhow::Result<u64> {
    Ok(median(&mut durations(program, frames, verdict)?))
}

/// Runs each frame once and returns the kernel-reported durations, checking
/// every verdict (a benchmark of the wrong path measures nothing).
fn durations<'a>(program: &Xdp, frames: impl Iterator<Item = &'a [u8]>, verdict: u32) -> anyhow::Result<Vec<u64>> {
    let mut out = vec![0u8; FRAME_LEN + 128];
    let mut times = Vec::new();
    for input in frames {
        let run = program.test_run(TestRunOptions {
            data_in: Some(input),
            data_out: Some(&mut out),
            ..TestRunOptions::default()
        })?;
        if run.return_value != verdict {
            bail!("verdict {} where {verdict} was expected", run.return_value);
        }
        times.push(run.duration.as_nanos() as u64);
    }
    Ok(times)
}

/// Runs the benchmark on one CPU: test runs execute on the calling CPU, and
/// a migration in the middle of a case would measure cold caches.
fn pin_to_cpu(cpu: usize) -> anyhow::Result<()> {
    let cpus = aya::util::online_cpus().map_err(|(op, e)| anyhow::anyhow!("{op}: {e}"))?;
    if !cpus.contains(&(cpu as u32)) {
        bail!("--cpu {cpu}: not an online CPU (online: {cpus:?})");
    }
    // SAFETY: a zeroed cpu_set_t is a valid empty set; CPU_SET and
    // sched_setaffinity only read and write the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("sched_setaffinity to CPU {cpu}: {}", std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn median(times: &mut [u64]) -> u64 {
    times.sort_unstable();
    if std::env::var_os("WEIR_BENCH_SPREAD").is_some() {
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
        eprintln!("p5 {} p25 {} p50 {} p75 {} p95 {}", at(0.05), at(0.25), at(0.5), at(0.75), at(0.95));
    }
    times[times.len() / 2]
}

fn report(case: &str, median_ns: u64, method: &str) {
    println!("{}", serde_json::json!({ "case": case, "median_ns": median_ns, "method": method }));
}

/// A 1514-byte frame (1500 bytes of IPv4, valid header checksum) of an
/// established TCP flow to `vip`: too big for a 1500 MTU once encapsulated.
fn too_big_frame(src: IpAddr, vip: VipId, src_port: u16) -> anyhow::Result<Vec<u8>> {
    let mut frame = frame(src, vip, src_port, false)?;
    frame.resize(14 + 1500, 0);
    let ip = &mut frame[14..34];
    ip[2..4].copy_from_slice(&1500u16.to_be_bytes());
    ip[10..12].copy_from_slice(&[0, 0]);
    let sum = ip.chunks(2).map(|w| u32::from(u16::from_be_bytes([w[0], w[1]]))).sum::<u32>();
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
    ip[10..12].copy_from_slice(&sum.to_be_bytes());
    Ok(frame)
}

/// A 64-byte frame of a flow to `vip` (zero padding after the L4 header):
/// a UDP datagram, or a TCP ACK (ack 1) that `syn` turns into a SYN.
fn frame(src: IpAddr, vip: VipId, src_port: u16, syn: bool) -> anyhow::Result<Vec<u8>> {
    let flow = Flow { src, dst: vip.addr, src_port, dst_port: vip.port, proto: vip.proto };
    // flow_frame builds a new connection's packet (a SYN for TCP).
    let mut frame = weir_agent::dataplane::flow_frame(&flow)?;
    if vip.proto == 6 {
        // TCP, after eth 14 + IPv4 20: ack number at 8, flags at 13.
        let tcp = 14 + 20;
        frame[tcp + 8..tcp + 12].copy_from_slice(&1u32.to_be_bytes());
        frame[tcp + 13] = if syn { 0x02 } else { 0x10 };
    }
    frame.resize(FRAME_LEN, 0);
    Ok(frame)
}
