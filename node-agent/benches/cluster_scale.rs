//! cluster_scale: how fast cluster mode converges at scale, and how fast a
//! single RealServer change reaches the datapath.
//!
//! The targets (issue: "1,000 VirtualServices with 10 RealServers each"): an
//! agent converges within 5 s from start, and a single RealServer change
//! reaches the datapath within 200 ms at the 99th percentile.
//!
//! What runs: the in-process API server double, pre-loaded with `--vs`
//! VirtualServices (10.100.x.y:80/TCP, namespace `bench`) and `--rs-per-vs`
//! RealServers each (distinct addresses, weights 1..), plus the agent's Node;
//! a testing-mode Balancer (loaded, not attached) sized for it; and the real
//! sync loop, [`weir_agent::cluster::watch::run`], with its kube-runtime
//! watchers talking HTTP to the double.
//!
//! - converge: from `watch::run` being spawned until the Balancer holds every
//!   VIP with all its reals (polled under the read lock every 5 ms). The
//!   Balancer's load (BPF program and maps) is timed apart and also added in
//!   "agent start to converged".
//! - single change: `--changes` times, one at a time, one RealServer's weight
//!   is PATCHed through the kube client (what a real API server would then
//!   deliver by watch), timed from just before the PATCH until the Balancer
//!   shows the new weight (polled every 0.5 ms). The changed RealServer moves
//!   over the VIPs and over the reals of a VIP.
//! - breakdown: after the sync loop is stopped, the parts of one sync pass
//!   timed in isolation on the same snapshot: `resolve`, `observe`, `diff`, a
//!   no-op `Reconciler::reconcile`, and one weight change through
//!   `Balancer::modify_reals` (one VIP's Maglev ring recomputed and written).
//!
//! Each target prints PASS or MISS; the exit status is non-zero only when the
//! bench itself fails (needs root, an object is refused, a change never lands).
//! The last lines are JSON, one per measurement, like weir-bench's.
//!
//! Run as root: `cargo bench -p weir-agent --bench cluster_scale [-- --vs 1000
//! --rs-per-vs 10 --changes 200]`, or `scripts/cluster-bench.sh`.
//! `RUST_LOG=weir_agent=info` shows each sync pass on stderr.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use k8s_openapi::api::core::v1::Node;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, CustomResourceExt};
use serde_json::json;
use weir_agent::api::SharedBalancer;
use weir_agent::cluster::{diff, observe, watch, Reconciler};
use weir_agent::dataplane::{Balancer, BalancerConfig, RealAction, RealSpec, VipId};
use weir_apiserver_double::ApiServer;
use weir_crds::v1alpha1::{
    BalancerNode, HashFunction, Protocol, RealServer, RealServerSpec, VirtualService, VirtualServiceSpec,
};
use weir_crds::validation::{resolve, Capacity, NodeInfo};
use weir_test_support::bench::{median_of, millis, ms, secs, verdict, Quantiles};

#[derive(Parser)]
#[command(about = "Cluster mode at scale: convergence and single-change latency")]
struct Args {
    /// VirtualServices.
    #[arg(long, default_value_t = 1000)]
    vs: u32,
    /// RealServers per VirtualService.
    #[arg(long, default_value_t = 10)]
    rs_per_vs: u32,
    /// Single RealServer changes to time, one at a time.
    #[arg(long, default_value_t = 200)]
    changes: u32,
    /// Maglev ring slots per VIP (a prime; the agent's default is 65537).
    #[arg(long, default_value_t = 65537)]
    ring_size: u32,
    /// Runs of each step in the breakdown (the median is reported).
    #[arg(long, default_value_t = 11)]
    breakdown_runs: usize,
    /// Skip the breakdown.
    #[arg(long)]
    no_breakdown: bool,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const NAMESPACE: &str = "bench";
const NODE: &str = "bench-node";
const CONVERGE_TARGET: Duration = Duration::from_secs(5);
const CHANGE_TARGET_P99: Duration = Duration::from_millis(200);
/// A change or convergence that takes longer than this is a failure of the bench.
const GIVE_UP: Duration = Duration::from_secs(60);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !weir_test_support::is_root() {
        eprintln!("cluster_scale: NEEDS ROOT (it loads the BPF balancer); run it as root");
        std::process::exit(1);
    }
    if args.vs == 0 || args.vs > 60_000 || args.rs_per_vs == 0 || args.vs * args.rs_per_vs > 3_000_000 {
        bail!("--vs must be 1..=60000 and --vs x --rs-per-vs at most 3,000,000");
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _entered = runtime.enter();
    let fleet = Fleet { vs: args.vs, rs_per_vs: args.rs_per_vs };

    println!(
        "cluster_scale: {} VirtualServices x {} RealServers, ring size {}{}, {} CPUs",
        fleet.vs,
        fleet.rs_per_vs,
        args.ring_size,
        if args.ring_size == 65537 { " (the default)" } else { " (NOT the default 65537)" },
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    // The cluster, pre-loaded without HTTP.
    let start = Instant::now();
    let server = ApiServer::start();
    server.register_crd(&VirtualService::crd());
    server.register_crd(&RealServer::crd());
    server.register_crd(&BalancerNode::crd());
    server.put(json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": NODE}})).context("put Node")?;
    for i in 0..fleet.vs {
        server.put(serde_json::to_value(fleet.virtual_service(i))?).context("put VirtualService")?;
        for k in 0..fleet.rs_per_vs {
            server.put(serde_json::to_value(fleet.real_server(i, k))?).context("put RealServer")?;
        }
    }
    println!("  loaded the API server double in {}", secs(start.elapsed()));

    // The agent: its Balancer, then the sync loop.
    let start = Instant::now();
    let balancer = Balancer::new(BalancerConfig {
        max_vips: fleet.vs.max(1024),
        max_reals: (fleet.vs * fleet.rs_per_vs).max(10240),
        ch_ring_size: args.ring_size,
        ..BalancerConfig::testing()
    })
    .context("create the Balancer")?;
    let load = start.elapsed();
    let balancer: SharedBalancer = Arc::new(RwLock::new(Some(balancer)));
    let reconciler = Arc::new(Mutex::new(Reconciler::new()));
    let start = Instant::now();
    let task = runtime.spawn(watch::run(server.client(), NODE.into(), balancer.clone(), reconciler.clone()));
    let vips: Vec<VipId> = (0..fleet.vs).map(|i| fleet.vip_id(i)).collect();
    let mut first_vip = None;
    loop {
        let (any, all) = converged(&balancer, &vips, fleet.rs_per_vs as usize);
        if any && first_vip.is_none() {
            first_vip = Some(start.elapsed());
        }
        if all {
            break;
        }
        if start.elapsed() > GIVE_UP {
            bail!("not converged after {}", secs(GIVE_UP));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let converge = start.elapsed();
    let first_vip = first_vip.unwrap_or(converge);
    let total = load + converge;
    println!("  Balancer load (BPF program and maps): {}", secs(load));
    println!("  sync loop start to first VIP visible: {}", secs(first_vip));
    println!(
        "converge: {} VS x {} RS in {} from sync start, {} from agent start (incl. Balancer load) (target {}): {}",
        fleet.vs,
        fleet.rs_per_vs,
        secs(converge),
        secs(total),
        secs(CONVERGE_TARGET),
        verdict(total <= CONVERGE_TARGET),
    );

    // Single changes, one at a time.
    let api: Api<RealServer> = Api::namespaced(server.client(), NAMESPACE);
    let mut weights: Vec<u32> = (0..fleet.vs * fleet.rs_per_vs).map(|j| j % fleet.rs_per_vs + 1).collect();
    let mut latencies = Vec::with_capacity(args.changes as usize);
    let mut patch_rtts = Vec::with_capacity(args.changes as usize);
    for c in 0..args.changes {
        // 7919 is prime, so the VIPs are visited in a scattered order.
        let i = (c as u64 * 7919 % u64::from(fleet.vs)) as u32;
        let k = c % fleet.rs_per_vs;
        let j = (i * fleet.rs_per_vs + k) as usize;
        let weight = if weights[j] >= 60_000 { 1 } else { weights[j] + 1 };
        weights[j] = weight;
        let (vip, addr) = (fleet.vip_id(i), fleet.real_addr(i, k));
        let patch = Patch::Merge(json!({"spec": {"weight": weight}}));
        let start = Instant::now();
        runtime.block_on(api.patch(&fleet.rs_name(i, k), &PatchParams::default(), &patch)).context("PATCH")?;
        patch_rtts.push(start.elapsed());
        loop {
            if weight_of(&balancer, &vip, addr) == Some(weight) {
                break;
            }
            if start.elapsed() > GIVE_UP {
                bail!("change {c} ({}) not in the datapath after {}", fleet.rs_name(i, k), secs(GIVE_UP));
            }
            std::thread::sleep(Duration::from_micros(500));
        }
        latencies.push(start.elapsed());
    }
    let changes = Quantiles::of(&mut latencies);
    let rtt = Quantiles::of(&mut patch_rtts);
    if let Some(q) = &changes {
        if let Some(rtt) = &rtt {
            println!("  PATCH round trip: p50 {} p99 {} max {}", ms(rtt.p50), ms(rtt.p99), ms(rtt.max));
        }
        println!(
            "single change: p50 {} p90 {} p99 {} max {} over {} (target p99 {}): {}",
            ms(q.p50),
            ms(q.p90),
            ms(q.p99),
            ms(q.max),
            latencies.len(),
            ms(CHANGE_TARGET_P99),
            verdict(q.p99 <= CHANGE_TARGET_P99),
        );
    }

    // The parts of a sync pass, in isolation, on the same snapshot.
    task.abort();
    let breakdown = if args.no_breakdown {
        None
    } else {
        let mut delivery = runtime.block_on(watch_delivery(&api, &fleet, &mut weights, args.changes.clamp(1, 50)))?;
        let delivery = Quantiles::of(&mut delivery).context("no delivery samples")?;
        println!(
            "  watch delivery alone (PATCH to the event at a kube watcher, sync loop stopped): p50 {} p99 {}",
            ms(delivery.p50),
            ms(delivery.p99)
        );
        let mut b = breakdown(&runtime, &server, &balancer, &reconciler, &fleet, args.breakdown_runs)?;
        b["watch_delivery_p50_ms"] = json!(millis(delivery.p50));
        b["watch_delivery_p99_ms"] = json!(millis(delivery.p99));
        Some(b)
    };

    println!(
        "{}",
        json!({
            "case": "cluster_converge", "vs": fleet.vs, "rs_per_vs": fleet.rs_per_vs, "ring_size": args.ring_size,
            "balancer_load_ms": millis(load), "first_vip_ms": millis(first_vip),
            "converge_ms": millis(converge), "agent_start_to_converged_ms": millis(total),
            "target_ms": millis(CONVERGE_TARGET), "pass": total <= CONVERGE_TARGET,
        })
    );
    if let (Some(q), Some(rtt)) = (&changes, &rtt) {
        println!(
            "{}",
            json!({
                "case": "cluster_single_change", "changes": latencies.len(),
                "p50_ms": millis(q.p50), "p90_ms": millis(q.p90), "p99_ms": millis(q.p99), "max_ms": millis(q.max),
                "patch_rtt_p50_ms": millis(rtt.p50), "target_p99_ms": millis(CHANGE_TARGET_P99),
                "pass": q.p99 <= CHANGE_TARGET_P99,
            })
        );
    }
    if let Some(b) = breakdown {
        println!("{b}");
    }
    Ok(())
}

/// The generated objects: VirtualService `i`, its RealServer `k`.
struct Fleet {
    vs: u32,
    rs_per_vs: u32,
}

impl Fleet {
    fn vip(&self, i: u32) -> Ipv4Addr {
        let [_, _, a, b] = (i + 1).to_be_bytes();
        Ipv4Addr::new(10, 100, a, b)
    }

    fn vip_id(&self, i: u32) -> VipId {
        VipId { addr: self.vip(i).into(), port: 80, proto: 6 }
    }

    /// Distinct for every (i, k): 10.200.0.1 onwards.
    fn real_addr(&self, i: u32, k: u32) -> IpAddr {
        let [_, a, b, c] = (i * self.rs_per_vs + k + 1).to_be_bytes();
        Ipv4Addr::new(10, 200 + a, b, c).into()
    }

    fn vs_name(&self, i: u32) -> String {
        format!("vs-{i:05}")
    }

    fn rs_name(&self, i: u32, k: u32) -> String {
        format!("rs-{i:05}-{k:03}")
    }

    /// The double sets creationTimestamp itself (to the second); arbitration
    /// then breaks ties by namespace and name, so it stays deterministic (and
    /// nothing here conflicts: VIPs and real addresses are all distinct).
    fn virtual_service(&self, i: u32) -> VirtualService {
        let mut vs = VirtualService::new(
            &self.vs_name(i),
            VirtualServiceSpec {
                address: self.vip(i).to_string(),
                port: 80,
                protocol: Protocol::Tcp,
                flags: Vec::new(),
                hash_function: HashFunction::Maglev,
                node_selector: None,
                health_check: None,
            },
        );
        vs.metadata.namespace = Some(NAMESPACE.into());
        vs
    }

    /// Weight k + 1.
    fn real_server(&self, i: u32, k: u32) -> RealServer {
        let mut rs = RealServer::new(
            &self.rs_name(i, k),
            RealServerSpec {
                virtual_service_name: self.vs_name(i),
                address: self.real_addr(i, k).to_string(),
                weight: k + 1,
                flags: Vec::new(),
            },
        );
        rs.metadata.namespace = Some(NAMESPACE.into());
        rs
    }
}

/// (some VIP is programmed, every VIP is programmed with all its reals).
fn converged(balancer: &SharedBalancer, vips: &[VipId], reals: usize) -> (bool, bool) {
    let guard = balancer.read().unwrap_or_else(|e| e.into_inner());
    let Some(lb) = guard.as_ref() else { return (false, false) };
    let any = !lb.vips().is_empty();
    (any, any && vips.iter().all(|v| lb.reals(v).is_ok_and(|r| r.len() == reals)))
}

fn weight_of(balancer: &SharedBalancer, vip: &VipId, addr: IpAddr) -> Option<u32> {
    let guard = balancer.read().unwrap_or_else(|e| e.into_inner());
    guard.as_ref()?.reals(vip).ok()?.into_iter().find(|r| r.addr == addr).map(|r| r.weight)
}

/// PATCH to delivery at a plain kube watcher of all RealServers (what the
/// sync loop's reflector receives), `runs` times, with the sync loop stopped.
async fn watch_delivery(
    api: &Api<RealServer>,
    fleet: &Fleet,
    weights: &mut [u32],
    runs: u32,
) -> anyhow::Result<Vec<Duration>> {
    use futures::StreamExt;
    use kube::runtime::watcher::{watcher, Config, Event};

    let all: Api<RealServer> = Api::all(api.clone().into_client());
    let mut events = watcher(all, Config::default()).boxed();
    loop {
        match events.next().await.context("watch ended")? {
            Ok(Event::InitDone) => break,
            Ok(_) => {}
            Err(e) => bail!("watch: {e}"),
        }
    }
    let mut times = Vec::new();
    for c in 0..runs {
        let i = (c as u64 * 7907 % u64::from(fleet.vs)) as u32;
        let k = (c + 1) % fleet.rs_per_vs;
        let j = (i * fleet.rs_per_vs + k) as usize;
        weights[j] = if weights[j] >= 60_000 { 1 } else { weights[j] + 1 };
        let (name, weight) = (fleet.rs_name(i, k), weights[j]);
        let start = Instant::now();
        api.patch(&name, &PatchParams::default(), &Patch::Merge(json!({"spec": {"weight": weight}}))).await?;
        loop {
            match tokio::time::timeout(GIVE_UP, events.next()).await.context("no watch event")? {
                Some(Ok(Event::Apply(rs)))
                    if rs.metadata.name.as_deref() == Some(&name) && rs.spec.weight == weight =>
                {
                    break
                }
                Some(Err(e)) => bail!("watch: {e}"),
                None => bail!("watch ended"),
                Some(Ok(_)) => {}
            }
        }
        times.push(start.elapsed());
    }
    Ok(times)
}

/// Times the parts of a sync pass on the converged snapshot (the sync loop is
/// stopped) and prints them; returns the JSON line.
fn breakdown(
    runtime: &tokio::runtime::Runtime,
    server: &ApiServer,
    balancer: &SharedBalancer,
    reconciler: &Mutex<Reconciler>,
    fleet: &Fleet,
    runs: usize,
) -> anyhow::Result<serde_json::Value> {
    let runs = runs.max(1);
    let client = server.client();
    let (vss, rss) = runtime.block_on(async {
        let vss = Api::<VirtualService>::all(client.clone()).list(&ListParams::default()).await?;
        let rss = Api::<RealServer>::all(client.clone()).list(&ListParams::default()).await?;
        anyhow::Ok((vss.items, rss.items))
    })?;
    let _node = runtime.block_on(Api::<Node>::all(client).get(NODE))?;
    let mut guard = balancer.write().unwrap_or_else(|e| e.into_inner());
    let lb = guard.as_mut().context("no Balancer")?;
    let node = NodeInfo {
        labels: Default::default(),
        capacity: Capacity { max_vips: lb.config().max_vips, max_reals: lb.config().max_reals },
    };
    let mut reconciler = reconciler.lock().unwrap_or_else(|e| e.into_inner());
    let owned: BTreeSet<VipId> = reconciler.owned().keys().copied().collect();

    let resolve_t = median_of(runs, || {
        std::hint::black_box(resolve(&vss, &rss, &node));
    });
    let plan = resolve(&vss, &rss, &node).plan;
    let observe_t = median_of(runs, || {
        std::hint::black_box(observe(lb));
    });
    let current = observe(lb);
    let diff_t = median_of(runs, || {
        std::hint::black_box(diff(&plan, &current, &owned));
    });
    // Catch up with the changes made while the sync loop was stopped; then a
    // pass has nothing to do.
    reconciler.reconcile(&plan, lb);
    let noop_ops = reconciler.reconcile(&plan, lb).ops.len();
    let reconcile_t = median_of(runs, || {
        std::hint::black_box(reconciler.reconcile(&plan, lb));
    });
    // One real's weight, back and forth: one VIP's ring recomputed and written.
    let vip = fleet.vip_id(0);
    let spec = lb.reals(&vip)?.into_iter().next().context("VIP 0 has no reals")?;
    let mut flip = false;
    let modify_t = median_of(runs, || {
        flip = !flip;
        let weight = if flip { spec.weight + 1 } else { spec.weight };
        lb.modify_reals(&vip, RealAction::Add, &[RealSpec { weight, ..spec }]).expect("modify_reals");
    });
    lb.modify_reals(&vip, RealAction::Add, &[spec])?;
    // The initial sync's apply, into a fresh Balancer (the old one dropped
    // first: each holds the ring map).
    let config = lb.config().clone();
    *guard = None;
    let fresh = Balancer::new(config).context("create a fresh Balancer")?;
    let lb = guard.insert(fresh);
    let mut initial = Reconciler::new();
    let start = Instant::now();
    let report = initial.reconcile(&plan, lb);
    let initial_t = start.elapsed();
    if !report.errors.is_empty() {
        bail!("initial reconcile: {} ops failed, first: {}", report.errors.len(), report.errors[0].error);
    }

    println!("breakdown (median of {runs}; {} VS, {} RS objects):", vss.len(), rss.len());
    println!("  resolve (arbitrate + plan the node)      {}", ms(resolve_t));
    println!("  observe (read every VIP's reals)          {}", ms(observe_t));
    println!("  diff                                       {}", ms(diff_t));
    println!("  no-op Reconciler::reconcile ({noop_ops} ops)       {}", ms(reconcile_t));
    println!("  modify_reals, one weight (ring recompute)  {}", ms(modify_t));
    println!("  initial reconcile into an empty Balancer   {} ({} ops)", ms(initial_t), report.ops.len());
    println!(
        "  => a single-change pass costs about {} (resolve + reconcile + modify_reals) plus watch delivery",
        ms(resolve_t + reconcile_t + modify_t),
    );
    Ok(json!({
        "case": "cluster_pass_breakdown", "runs": runs,
        "resolve_ms": millis(resolve_t), "observe_ms": millis(observe_t), "diff_ms": millis(diff_t),
        "noop_reconcile_ms": millis(reconcile_t), "modify_reals_one_weight_ms": millis(modify_t),
        "initial_reconcile_ms": millis(initial_t), "initial_ops": report.ops.len(),
    }))
}
