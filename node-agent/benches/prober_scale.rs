//! prober_scale: what the built-in health checker costs the agent.
//!
//! The target (issue 13): probing 1,000 VIPs × 10 reals at a 1 s interval
//! costs the agent < 5% of one core and < 30 MiB RSS.
//!
//! What runs: in a network namespace of its own (only `lo`, up), a child
//! process accepts TCP connections on port 8080 and closes them; the prober
//! probes `--vips` × `--reals` targets with TCP checks at `--interval`, each
//! target a distinct loopback address (127.a.b.c:8080), with at most
//! `--in-flight` probes at once. After a warm-up of one interval, the
//! agent's CPU time (user + system, getrusage, this process only: the child
//! serving the probes is not counted) and resident memory are measured over
//! `--seconds`.
//!
//! Run as root: `cargo bench -p weir-agent --bench prober_scale`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use serde_json::json;
use weir_agent::dataplane::VipId;
use weir_agent::prober::{Check, ProbeMetrics, ProbedReal, Prober, Target, Thresholds, VipCheck};
use weir_test_support::bench::verdict;

const PORT: u16 = 8080;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1000)]
    vips: u32,
    #[arg(long, default_value_t = 10)]
    reals: u32,
    /// Probe interval, milliseconds.
    #[arg(long, default_value_t = 1000)]
    interval: u64,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    #[arg(long, default_value_t = 256)]
    in_flight: usize,
    /// Internal: serve the probes (the child process).
    #[arg(long, hide = true)]
    serve: bool,
    /// cargo bench passes --bench.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.serve {
        return serve();
    }
    if !nix::unistd::geteuid().is_root() {
        eprintln!("prober_scale: NEEDS ROOT (it makes a network namespace); run it as root");
        std::process::exit(2);
    }
    // A namespace of our own before any thread exists: the whole process moves.
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).context("unshare the network namespace")?;
    let up = std::process::Command::new("ip").args(["link", "set", "lo", "up"]).status()?;
    if !up.success() {
        bail!("ip link set lo up failed");
    }
    let mut server = std::process::Command::new(std::env::current_exe()?).arg("--serve").spawn()?;
    let result = tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(measure(&args));
    let _ = server.kill();
    result
}

/// The child: accept and close, on a few threads.
fn serve() -> anyhow::Result<()> {
    let listener = TcpListener::bind(("0.0.0.0", PORT))?;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let listener = listener.try_clone().expect("clone the listener");
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    drop(conn);
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn target(n: u32) -> Target {
    let [_, a, b, c] = (n + 1).to_be_bytes();
    Target { addr: SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, a, b, c)), PORT), mark: 0 }
}

async fn measure(args: &Args) -> anyhow::Result<()> {
    // The server is up when it accepts.
    let deadline = Instant::now() + Duration::from_secs(5);
    while tokio::net::TcpStream::connect(("127.0.0.1", PORT)).await.is_err() {
        if Instant::now() > deadline {
            bail!("the probe server did not start");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let interval = Duration::from_millis(args.interval);
    let check = VipCheck { check: Check::Tcp, interval, timeout: interval / 2, thresholds: Thresholds::default() };
    let (prober, mut transitions) = Prober::start(args.in_flight, ProbeMetrics::default());
    tokio::spawn(async move { while transitions.recv().await.is_some() {} });
    for v in 0..args.vips {
        let [_, _, a, b] = (v + 1).to_be_bytes();
        let vip = VipId { addr: IpAddr::V4(Ipv4Addr::new(10, 100, a, b)), port: PORT, proto: 6 };
        let reals = (0..args.reals).map(|r| {
            let n = v * args.reals + r;
            ProbedReal { addr: IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n + 1)), target: target(n), healthy: false }
        });
        prober.set_vip(vip, check.clone(), reals);
    }
    let targets = prober.targets();
    println!("prober_scale: {targets} targets, TCP every {} ms, at most {} in flight", args.interval, args.in_flight);
    tokio::time::sleep(interval).await;

    let (cpu0, probes0, t0) = (cpu_time()?, prober.probes_done(), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.seconds)).await;
    let (cpu1, probes1, wall) = (cpu_time()?, prober.probes_done(), t0.elapsed());
    let share = |d: Duration| 100.0 * d.as_secs_f64() / wall.as_secs_f64();
    let (user, system) = (share(cpu1.0 - cpu0.0), share(cpu1.1 - cpu0.1));
    let cpu_percent = user + system;
    let probes_per_s = (probes1 - probes0) as f64 / wall.as_secs_f64();
    let (rss, hwm) = (status_kib("VmRSS:")? as f64 / 1024.0, status_kib("VmHWM:")? as f64 / 1024.0);
    let healthy = (0..args.vips)
        .filter_map(|v| {
            let [_, _, a, b] = (v + 1).to_be_bytes();
            prober.status(&VipId { addr: IpAddr::V4(Ipv4Addr::new(10, 100, a, b)), port: PORT, proto: 6 })
        })
        .flatten()
        .filter(|s| s.health.healthy)
        .count();
    println!(
        "  probes: {probes_per_s:.0}/s (expected {:.0}/s); healthy reals: {healthy}/{targets}",
        targets as f64 * 1000.0 / args.interval as f64
    );
    println!(
        "  CPU: {cpu_percent:.2}% of one core ({user:.2}% user, {system:.2}% system; target < 5%): {}",
        verdict(cpu_percent < 5.0)
    );
    println!("  RSS: {rss:.1} MiB now, {hwm:.1} MiB peak (target < 30 MiB): {}", verdict(hwm < 30.0));
    println!(
        "{}",
        json!({
            "case": format!("prober_{}x{}_{}ms", args.vips, args.reals, args.interval),
            "targets": targets,
            "probes_per_s": probes_per_s.round(),
            "cpu_percent_of_one_core": (cpu_percent * 100.0).round() / 100.0,
            "cpu_user_percent": (user * 100.0).round() / 100.0,
            "cpu_system_percent": (system * 100.0).round() / 100.0,
            "rss_mib": (rss * 10.0).round() / 10.0,
            "rss_peak_mib": (hwm * 10.0).round() / 10.0,
            "healthy_reals": healthy,
        })
    );
    Ok(())
}

/// (user, system) CPU time of this process.
fn cpu_time() -> anyhow::Result<(Duration, Duration)> {
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF)?;
    let d = |t: nix::sys::time::TimeVal| Duration::new(t.tv_sec() as u64, t.tv_usec() as u32 * 1000);
    Ok((d(usage.user_time()), d(usage.system_time())))
}

/// A `kB` line of /proc/self/status.
fn status_kib(key: &str) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let line = status.lines().find(|l| l.starts_with(key)).with_context(|| format!("no {key}"))?;
    Ok(line[key.len()..].trim().trim_end_matches(" kB").trim().parse()?)
}
