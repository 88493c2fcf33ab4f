//! arbitration_scale: how fast the operator's arbitration converges at scale,
//! and how fast a single RealServer change shows in its status (TODO(#4) of
//! `controllers::arbitration`).
//!
//! The targets (issue: "1,000 VirtualServices with 10 RealServers each"): the
//! operator converges within 30 s from start, and a single RealServer change
//! shows in its status within 1 s at the 99th percentile. Converging means
//! about 11,000 status writes, each a server-side apply over HTTP to the
//! double, one after the other, on whatever CPUs the machine has.
//!
//! What runs: the in-process API server double, pre-loaded without HTTP
//! (`ApiServer::put`) with `--vs` VirtualServices (10.100.x.y:80/TCP,
//! namespace `bench`), `--rs-per-vs` RealServers each, `--nodes` Nodes and
//! their BalancerNodes, each reporting every VirtualService programmed at
//! generation 1 with all its reals; then the real `weir_operator::run`
//! (`Options::default()`: no leader election) with a client of the double.
//!
//! - converge: from `run` being spawned until every VirtualService and
//!   RealServer shows `Accepted=True` and every VirtualService
//!   `Programmed=True` "n/n nodes", read from the double's store
//!   (`ApiServer::list`, raw JSON, no HTTP) every 20 ms. Status writes (PATCHes
//!   of `/status`) are counted from the double's request log.
//! - steady state: the status writes in `--steady-secs` after convergence
//!   (there must be none).
//! - single change: `--changes` times, one at a time, one RealServer's
//!   `spec.virtualServiceName` is PATCHed through the kube client to a missing
//!   VirtualService, timed until its status shows `Accepted=False`
//!   `VirtualServiceNotFound`; then back, timed until `Accepted=True` (polled
//!   every 0.5 ms with `ApiServer::get`). Both directions go into one set of
//!   quantiles. Before the next change its VirtualService is let settle back
//!   to "n/n nodes" (untimed).
//! - breakdown: `desired::plan` (and `arbitrate` alone) on the converged
//!   snapshot (nothing to write) and on the initial one (everything to
//!   write), the cost of one store poll, and the operator's own pass counts
//!   and times (its metrics).
//!
//! Each target prints PASS or MISS; the exit status is non-zero only when the
//! bench itself fails (an object is refused, convergence or a change never
//! lands). The last lines are JSON, one per measurement, like cluster_scale's.
//!
//! Run: `cargo bench -p weir-operator --bench arbitration_scale [-- --vs 1000
//! --rs-per-vs 10 --changes 100]`, or `scripts/cluster-bench.sh --operator`.
//! `RUST_LOG=weir_operator=debug` shows the operator's logs on stderr.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use weir_apiserver_double::ApiServer;
use weir_crds::v1alpha1::{BalancerNode, RealServer, VirtualService};
use weir_operator::desired::{plan, Snapshot};
use weir_operator::metrics::Metrics;
use weir_test_support::bench::{median_of, millis, ms, secs, verdict, Quantiles};

#[derive(Parser)]
#[command(about = "The operator's arbitration at scale: convergence and single-change latency")]
struct Args {
    /// VirtualServices.
    #[arg(long, default_value_t = 1000)]
    vs: u32,
    /// RealServers per VirtualService.
    #[arg(long, default_value_t = 10)]
    rs_per_vs: u32,
    /// Nodes (each with its BalancerNode reporting every VirtualService programmed).
    #[arg(long, default_value_t = 3)]
    nodes: u32,
    /// Single RealServer changes to time (each away and back: two samples).
    #[arg(long, default_value_t = 100)]
    changes: u32,
    /// How long to watch for writes once converged.
    #[arg(long, default_value_t = 2)]
    steady_secs: u64,
    /// Runs of each step in the breakdown (the median is reported).
    #[arg(long, default_value_t = 11)]
    breakdown_runs: usize,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

const NAMESPACE: &str = "bench";
const GROUP_VERSION: &str = "lb.weir.dev/v1alpha1";
/// The VirtualService a changed RealServer is pointed at; never created.
const MISSING_VS: &str = "vs-missing";
const CONVERGE_TARGET: Duration = Duration::from_secs(30);
const CHANGE_TARGET_P99: Duration = Duration::from_secs(1);
/// A convergence or change that takes longer than this is a failure of the bench.
const GIVE_UP: Duration = Duration::from_secs(180);
const CONVERGE_POLL: Duration = Duration::from_millis(20);
const CHANGE_POLL: Duration = Duration::from_micros(500);

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.vs == 0 || args.vs > 60_000 || args.rs_per_vs == 0 || args.vs * args.rs_per_vs > 1_000_000 {
        bail!("--vs must be 1..=60000 and --vs x --rs-per-vs at most 1,000,000");
    }
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::from_default_env()).init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let _entered = runtime.enter();
    let fleet = Fleet { vs: args.vs, rs_per_vs: args.rs_per_vs, nodes: args.nodes };
    let objects = u64::from(fleet.vs) * (1 + u64::from(fleet.rs_per_vs));

    println!(
        "arbitration_scale: {} VirtualServices x {} RealServers, {} Nodes, {} CPUs",
        fleet.vs,
        fleet.rs_per_vs,
        fleet.nodes,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );

    // The cluster, pre-loaded without HTTP.
    let start = Instant::now();
    let server = ApiServer::start();
    for crd in weir_crds::crds() {
        server.register_crd(&crd);
    }
    for n in 0..fleet.nodes {
        server.put(fleet.node(n)).context("put Node")?;
        server.put(fleet.balancer_node(n)).context("put BalancerNode")?;
    }
    for i in 0..fleet.vs {
        server.put(fleet.virtual_service(i)).context("put VirtualService")?;
        for k in 0..fleet.rs_per_vs {
            server.put(fleet.real_server(i, k)).context("put RealServer")?;
        }
    }
    println!("  loaded the API server double in {}", secs(start.elapsed()));
    let initial = snapshot(&server)?;

    // The operator.
    let metrics = Metrics::new();
    let options = weir_operator::Options { metrics: metrics.clone(), ..weir_operator::Options::default() };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    server.clear_requests();
    let start = Instant::now();
    let operator = runtime.spawn(weir_operator::run(server.client(), options, async move {
        let _ = stopped.await;
    }));
    let (mut first_status, mut all_accepted) = (None, None);
    let mut poll_times = Vec::new();
    loop {
        let poll = Instant::now();
        let c = Convergence::read(&server, fleet.nodes);
        poll_times.push(poll.elapsed());
        if c.any_status && first_status.is_none() {
            first_status = Some(start.elapsed());
        }
        if c.all_accepted() && all_accepted.is_none() {
            all_accepted = Some(start.elapsed());
        }
        if c.done() {
            break;
        }
        if operator.is_finished() {
            bail!("the operator stopped before converging: {:?}", runtime.block_on(operator));
        }
        if start.elapsed() > GIVE_UP {
            bail!("not converged after {}: {c:?}", secs(GIVE_UP));
        }
        std::thread::sleep(CONVERGE_POLL);
    }
    let converge = start.elapsed();
    let converge_writes = status_writes(&server);
    let converge_other_writes = other_writes(&server);
    let converge_passes = Passes::read(&metrics);
    let first_status = first_status.unwrap_or(converge);
    let all_accepted = all_accepted.unwrap_or(converge);
    let poll = Quantiles::of(&mut poll_times).context("no polls")?;
    println!("  operator start to first status written: {}", secs(first_status));
    println!("  operator start to every object Accepted=True: {}", secs(all_accepted));
    println!(
        "  status writes: {converge_writes} (other writes: {converge_other_writes}); {} passes taking {} in all, \
         longest <= {} (histogram bucket); {} per status write",
        converge_passes.count,
        secs(converge_passes.sum),
        secs(converge_passes.max_bucket),
        ms(converge_passes.sum / converge_writes.max(1) as u32),
    );
    println!(
        "  the bench's store poll (two lists, under the double's lock): p50 {} max {}",
        ms(poll.p50),
        ms(poll.max)
    );
    println!(
        "converge: {} VS x {} RS ({objects} objects, {converge_writes} status writes over HTTP, {} CPUs) in {} \
         (target {}): {}",
        fleet.vs,
        fleet.rs_per_vs,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        secs(converge),
        secs(CONVERGE_TARGET),
        verdict(converge <= CONVERGE_TARGET),
    );

    // Steady state: nothing to write.
    server.clear_requests();
    std::thread::sleep(Duration::from_secs(args.steady_secs));
    let steady_writes = status_writes(&server);
    let steady_other_writes = other_writes(&server);
    let steady_passes = Passes::read(&metrics).count - converge_passes.count;
    println!(
        "steady state: {steady_writes} status writes ({steady_other_writes} other writes, {steady_passes} passes) \
         in {} s after convergence (must be 0): {}",
        args.steady_secs,
        verdict(steady_writes == 0),
    );

    // Single changes, one at a time, away and back.
    let api: Api<RealServer> = Api::namespaced(server.client(), NAMESPACE);
    let mut latencies = Vec::with_capacity(2 * args.changes as usize);
    let (mut away, mut back) = (Vec::new(), Vec::new());
    let mut patch_rtts = Vec::with_capacity(2 * args.changes as usize);
    server.clear_requests();
    let changes_passes = Passes::read(&metrics);
    for c in 0..args.changes {
        // 7919 is prime, so the VirtualServices are visited in a scattered order.
        let i = (u64::from(c) * 7919 % u64::from(fleet.vs)) as u32;
        let k = c % fleet.rs_per_vs;
        let name = fleet.rs_name(i, k);
        for (target, want) in [(MISSING_VS.to_owned(), Want::NotFound), (fleet.vs_name(i), Want::Accepted)] {
            let patch = Patch::Merge(json!({"spec": {"virtualServiceName": target}}));
            let start = Instant::now();
            runtime.block_on(api.patch(&name, &PatchParams::default(), &patch)).context("PATCH")?;
            patch_rtts.push(start.elapsed());
            while !want.shown(&server, &name) {
                if start.elapsed() > GIVE_UP {
                    bail!("change {c} ({name} to {target}) not in its status after {}", secs(GIVE_UP));
                }
                std::thread::sleep(CHANGE_POLL);
            }
            let took = start.elapsed();
            latencies.push(took);
            if want == Want::NotFound { &mut away } else { &mut back }.push(took);
        }
        // Let its VirtualService settle back (reals and Programmed) before the next change.
        let start = Instant::now();
        while !vs_programmed(&server, &fleet.vs_name(i), fleet.nodes, fleet.rs_per_vs) {
            if start.elapsed() > GIVE_UP {
                bail!("{} not back to {n}/{n} nodes after {}", fleet.vs_name(i), secs(GIVE_UP), n = fleet.nodes);
            }
            std::thread::sleep(CHANGE_POLL);
        }
    }
    let change_writes = status_writes(&server);
    let change_passes = Passes::read(&metrics).count - changes_passes.count;
    let changes = Quantiles::of(&mut latencies);
    if let (Some(q), Some(a), Some(b), Some(rtt)) =
        (&changes, Quantiles::of(&mut away), Quantiles::of(&mut back), Quantiles::of(&mut patch_rtts))
    {
        println!("  PATCH round trip: p50 {} p99 {} max {}", ms(rtt.p50), ms(rtt.p99), ms(rtt.max));
        println!("  to VirtualServiceNotFound (Event + status): p50 {} p99 {} max {}", ms(a.p50), ms(a.p99), ms(a.max));
        println!("  back to Accepted: p50 {} p99 {} max {}", ms(b.p50), ms(b.p99), ms(b.max));
        println!(
            "  {change_writes} status writes and {change_passes} passes for {} changes (each away and back)",
            args.changes
        );
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

    // The pure part of a pass, in isolation: the operator is stopped first.
    let _ = stop.send(());
    runtime.block_on(operator).context("operator task")?.context("operator")?;
    let converged = snapshot(&server)?;
    let runs = args.breakdown_runs.max(1);
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let arbitrate_t = median_of(runs, || {
        std::hint::black_box(weir_crds::validation::arbitrate(
            converged.virtual_services.iter().map(|vs| vs.as_ref()),
            converged.real_servers.iter().map(|rs| rs.as_ref()),
        ));
    });
    let plan_t = median_of(runs, || {
        std::hint::black_box(plan(&converged, &now));
    });
    let p = plan(&converged, &now);
    let steady_updates = p.virtual_services.len() + p.real_servers.len();
    let initial_plan_t = median_of(runs, || {
        std::hint::black_box(plan(&initial, &now));
    });
    let p = plan(&initial, &now);
    let initial_updates = p.virtual_services.len() + p.real_servers.len();
    let snapshot_t = median_of(runs, || {
        std::hint::black_box(snapshot(&server).expect("snapshot"));
    });

    println!(
        "breakdown (median of {runs}; {} VS, {} RS, {} BalancerNodes):",
        converged.virtual_services.len(),
        converged.real_servers.len(),
        converged.balancer_nodes.len()
    );
    println!("  arbitrate alone                                   {}", ms(arbitrate_t));
    println!("  desired::plan, converged snapshot ({steady_updates} updates)       {}", ms(plan_t));
    println!("  desired::plan, initial snapshot ({initial_updates} updates)    {}", ms(initial_plan_t));
    println!("  the bench's store poll (list + deserialize)       {} (not the operator's cost)", ms(snapshot_t));
    println!(
        "  => convergence: {} passes; {} in passes, of which plan is about {} each; the rest is {} status writes \
         awaited one at a time ({} each)",
        converge_passes.count,
        secs(converge_passes.sum),
        ms(initial_plan_t),
        converge_writes,
        ms(converge_passes.sum.saturating_sub(initial_plan_t * converge_passes.count as u32)
            / converge_writes.max(1) as u32),
    );

    println!(
        "{}",
        json!({
            "case": "arbitration_converge", "vs": fleet.vs, "rs_per_vs": fleet.rs_per_vs, "nodes": fleet.nodes,
            "first_status_ms": millis(first_status), "all_accepted_ms": millis(all_accepted),
            "converge_ms": millis(converge), "status_writes": converge_writes,
            "passes": converge_passes.count, "pass_time_ms": millis(converge_passes.sum),
            "steady_status_writes": steady_writes, "steady_secs": args.steady_secs,
            "target_ms": millis(CONVERGE_TARGET), "pass": converge <= CONVERGE_TARGET && steady_writes == 0,
        })
    );
    if let Some(q) = &changes {
        println!(
            "{}",
            json!({
                "case": "arbitration_single_change", "samples": latencies.len(),
                "p50_ms": millis(q.p50), "p90_ms": millis(q.p90), "p99_ms": millis(q.p99), "max_ms": millis(q.max),
                "target_p99_ms": millis(CHANGE_TARGET_P99), "pass": q.p99 <= CHANGE_TARGET_P99,
            })
        );
    }
    println!(
        "{}",
        json!({
            "case": "arbitration_pass_breakdown", "runs": runs,
            "arbitrate_ms": millis(arbitrate_t), "plan_converged_ms": millis(plan_t),
            "plan_initial_ms": millis(initial_plan_t), "plan_initial_updates": initial_updates,
        })
    );
    Ok(())
}

/// The generated objects: VirtualService `i`, its RealServer `k`, Node `n`.
struct Fleet {
    vs: u32,
    rs_per_vs: u32,
    nodes: u32,
}

impl Fleet {
    fn vip(&self, i: u32) -> Ipv4Addr {
        let [_, _, a, b] = (i + 1).to_be_bytes();
        Ipv4Addr::new(10, 100, a, b)
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

    fn node_name(&self, n: u32) -> String {
        format!("bench-node-{n}")
    }

    /// The double sets creationTimestamp (to the second) and generation 1;
    /// nothing conflicts (VIPs and real addresses are all distinct).
    fn virtual_service(&self, i: u32) -> Value {
        json!({
            "apiVersion": GROUP_VERSION, "kind": "VirtualService",
            "metadata": {"name": self.vs_name(i), "namespace": NAMESPACE},
            "spec": {"address": self.vip(i).to_string(), "port": 80, "protocol": "TCP"},
        })
    }

    fn real_server(&self, i: u32, k: u32) -> Value {
        json!({
            "apiVersion": GROUP_VERSION, "kind": "RealServer",
            "metadata": {"name": self.rs_name(i, k), "namespace": NAMESPACE},
            "spec": {"virtualServiceName": self.vs_name(i), "address": self.real_addr(i, k).to_string(), "weight": 1},
        })
    }

    fn node(&self, n: u32) -> Value {
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": self.node_name(n)}})
    }

    /// Reports every VirtualService programmed at generation 1 with all its
    /// reals, sorted by namespace/name as an agent writes it.
    fn balancer_node(&self, n: u32) -> Value {
        let programmed: Vec<Value> = (0..self.vs)
            .map(|i| json!({"namespace": NAMESPACE, "name": self.vs_name(i), "generation": 1, "reals": self.rs_per_vs}))
            .collect();
        json!({
            "apiVersion": GROUP_VERSION, "kind": "BalancerNode",
            "metadata": {"name": self.node_name(n)}, "spec": {},
            "status": {"virtualServices": programmed},
        })
    }
}

/// What the store shows, from one poll.
#[derive(Debug)]
struct Convergence {
    any_status: bool,
    vs_accepted: usize,
    vs_programmed: usize,
    vs_total: usize,
    rs_accepted: usize,
    rs_total: usize,
}

impl Convergence {
    fn read(server: &ApiServer, nodes: u32) -> Self {
        let vss = server.list(GROUP_VERSION, "virtualservices", Some(NAMESPACE));
        let rss = server.list(GROUP_VERSION, "realservers", Some(NAMESPACE));
        let programmed = format!("{nodes}/{nodes} nodes");
        Convergence {
            any_status: vss.iter().chain(&rss).any(|o| o.get("status").is_some_and(|s| !s.is_null())),
            vs_accepted: vss.iter().filter(|o| condition(o, "Accepted", "True", None)).count(),
            vs_programmed: vss.iter().filter(|o| condition(o, "Programmed", "True", Some(&programmed))).count(),
            vs_total: vss.len(),
            rs_accepted: rss.iter().filter(|o| condition(o, "Accepted", "True", None)).count(),
            rs_total: rss.len(),
        }
    }

    fn all_accepted(&self) -> bool {
        self.vs_accepted == self.vs_total && self.rs_accepted == self.rs_total
    }

    fn done(&self) -> bool {
        self.all_accepted() && self.vs_programmed == self.vs_total
    }
}

/// Whether `obj` has condition `type_` with `status` (and `message`, if given).
fn condition(obj: &Value, type_: &str, status: &str, message: Option<&str>) -> bool {
    obj["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter().any(|c| c["type"] == type_ && c["status"] == status && message.is_none_or(|m| c["message"] == m))
    })
}

/// Whether VirtualService `name` shows all its `reals` and "n/n nodes".
fn vs_programmed(server: &ApiServer, name: &str, nodes: u32, reals: u32) -> bool {
    let message = format!("{nodes}/{nodes} nodes");
    server
        .get(GROUP_VERSION, "virtualservices", Some(NAMESPACE), name)
        .is_some_and(|o| condition(&o, "Programmed", "True", Some(&message)) && o["status"]["reals"] == json!(reals))
}

/// What a changed RealServer's status is waited for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Want {
    NotFound,
    Accepted,
}

impl Want {
    fn shown(self, server: &ApiServer, name: &str) -> bool {
        let Some(rs) = server.get(GROUP_VERSION, "realservers", Some(NAMESPACE), name) else { return false };
        let conditions = rs["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let accepted = conditions.iter().find(|c| c["type"] == "Accepted");
        match self {
            Want::NotFound => {
                accepted.is_some_and(|c| c["status"] == "False" && c["reason"] == "VirtualServiceNotFound")
            }
            Want::Accepted => accepted.is_some_and(|c| c["status"] == "True"),
        }
    }
}

/// The store as the operator's reflectors would hold it.
fn snapshot(server: &ApiServer) -> anyhow::Result<Snapshot> {
    fn objects<K: DeserializeOwned>(server: &ApiServer, plural: &str) -> anyhow::Result<Vec<Arc<K>>> {
        let list = server.list(GROUP_VERSION, plural, None);
        list.into_iter().map(|o| Ok(Arc::new(serde_json::from_value(o).context(plural.to_owned())?))).collect()
    }
    let node_labels = server
        .list("v1", "nodes", None)
        .into_iter()
        .map(|n| {
            let name = n["metadata"]["name"].as_str().unwrap_or_default().to_owned();
            let labels: BTreeMap<String, String> =
                serde_json::from_value(n["metadata"]["labels"].clone()).unwrap_or_default();
            (name, labels)
        })
        .collect();
    Ok(Snapshot {
        virtual_services: objects::<VirtualService>(server, "virtualservices")?,
        real_servers: objects::<RealServer>(server, "realservers")?,
        balancer_nodes: objects::<BalancerNode>(server, "balancernodes")?,
        node_labels,
        ..Snapshot::default()
    })
}

/// PATCHes of a `/status` in the double's request log since it was last cleared.
fn status_writes(server: &ApiServer) -> usize {
    server.requests().iter().filter(|r| r.method == "PATCH" && r.path.ends_with("/status")).count()
}

/// Every other write (Events, for one) since the log was last cleared.
fn other_writes(server: &ApiServer) -> usize {
    server.requests().iter().filter(|r| r.is_write() && !(r.method == "PATCH" && r.path.ends_with("/status"))).count()
}

/// The arbitration controller's passes so far, from the operator's metrics.
struct Passes {
    count: u64,
    sum: Duration,
    /// The upper bound of the highest non-empty histogram bucket.
    max_bucket: Duration,
}

impl Passes {
    fn read(metrics: &Metrics) -> Self {
        let text = metrics.encode();
        let controller = "controller=\"arbitration\"";
        let value = |line: &str| line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok());
        let mut passes = Passes { count: 0, sum: Duration::ZERO, max_bucket: Duration::ZERO };
        let mut last_count = 0.0;
        for line in text.lines().filter(|l| l.contains(controller)) {
            let Some(v) = value(line) else { continue };
            if line.starts_with("weir_operator_reconcile_duration_seconds_count") {
                passes.count = v as u64;
            } else if line.starts_with("weir_operator_reconcile_duration_seconds_sum") {
                passes.sum = Duration::from_secs_f64(v);
            } else if line.starts_with("weir_operator_reconcile_duration_seconds_bucket") {
                // Cumulative buckets: the first bound reaching the final count.
                if v > last_count {
                    last_count = v;
                    let le = line.split("le=\"").nth(1).and_then(|s| s.split('"').next()).unwrap_or("+Inf");
                    passes.max_bucket = le.parse::<f64>().map_or(Duration::MAX, Duration::from_secs_f64);
                }
            }
        }
        passes
    }
}
