//! The prober task: every target on its schedule, with bounded concurrency,
//! off the request path; transitions reported on a channel as they happen.
//!
//! The prober runs on a thread of its own, in a single-threaded runtime: its
//! work is thousands of tiny wake-ups a second (a due probe, an answer), and
//! in the agent's multi-threaded runtime each would also wake an idle worker
//! to steal it — a context switch per probe, most of what probing cost
//! (prober_scale: the process's 17.6% of a core → 10.4%).
//!
//! One loop keeps the schedule, a queue of (due instant, target): it sleeps
//! until the earliest is due (or the queue gains an earlier one), then starts
//! the due probes. TCP probes are half-open ([`super::half_open`]): the loop
//! sends their SYNs in one batch, reads their answers on each wake and ends
//! them at their deadlines itself, with no task, timer or channel per probe
//! (prober_scale: the process's 10.3% of a core → 6.7%). HTTP(S) and UDP probes are
//! each a task of its own once it holds one of `max_in_flight` permits. A
//! target is in the queue only while no probe of it runs, so it is never
//! probed twice at once; its result puts it back, due at its next instant.
//! Each wake costs O(log n) per due target, whatever the number of targets.
//!
//! Each real carries the health its owner last applied besides the health
//! its probes say: a result that leaves the two apart reports a transition.
//! So a health set by hand ([`Prober::applied`]) holds until the next probe
//! result, as katran-server's poll of its health checker does.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::check::{self, Check, ProbeError, Target};
use super::half_open::{Done, HalfOpen, READ_TICK};
use super::schedule;
use super::tracker::{RealHealth, Thresholds};
use crate::dataplane::VipId;

/// How one VIP's reals are probed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipCheck {
    pub check: Check,
    pub interval: Duration,
    /// Less than `interval`.
    pub timeout: Duration,
    pub thresholds: Thresholds,
}

/// A real the prober is to probe, and the health its owner applies now
/// (where its probes start from).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbedReal {
    pub addr: IpAddr,
    pub target: Target,
    pub healthy: bool,
}

/// What the prober counts: probe durations by check type and result, and
/// transitions by VIP, real and direction. The metrics module registers them.
#[derive(Debug, Clone)]
pub struct ProbeMetrics {
    pub duration: Family<DurationLabels, Histogram>,
    pub transitions: Family<TransitionLabels, Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct DurationLabels {
    /// The check's type.
    pub r#type: &'static str,
    /// `success` or `failure`.
    pub result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct TransitionLabels {
    pub address: String,
    pub port: u16,
    pub proto: String,
    pub real: String,
    /// `healthy` or `unhealthy`.
    pub to: &'static str,
}

/// Probe duration buckets, in seconds: a probe on a LAN answers in well
/// under a millisecond; timeouts are seconds.
const DURATION_BUCKETS: [f64; 12] = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.1, 0.5, 1.0, 5.0];

impl Default for ProbeMetrics {
    fn default() -> Self {
        Self {
            duration: Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS)),
            transitions: Family::default(),
        }
    }
}

/// A real's health turned (by its probes, or back from a health set by hand).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub vip: VipId,
    pub real: IpAddr,
    pub healthy: bool,
}

/// A real as the prober sees it (`/vips/healthcheck/status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RealStatus {
    pub real: IpAddr,
    pub target: Target,
    pub health: RealHealth,
}

/// The built-in health checker. Dropping it stops every probe.
pub struct Prober {
    shared: Arc<Shared>,
    /// Dropped, it ends the prober's thread (and its runtime, every probe).
    _stop: tokio::sync::oneshot::Sender<()>,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the scheduler after a configuration change.
    changed: Notify,
    /// Bounds the probes that run as tasks (HTTP(S), UDP).
    permits: Arc<Semaphore>,
    transitions: mpsc::UnboundedSender<Transition>,
    metrics: ProbeMetrics,
    /// The schedule's origin: every target's grid is measured from it.
    origin: Instant,
    /// Probes finished since the start.
    probes: AtomicU64,
}

struct State {
    vips: BTreeMap<VipId, Probed>,
    /// Targets waiting for their next probe, by due instant.
    queue: BTreeSet<(Instant, VipId, IpAddr)>,
    /// When the scheduler wakes next (it is woken earlier when the queue
    /// gains an earlier entry).
    wake_at: Instant,
}

struct Probed {
    check: Arc<VipCheck>,
    reals: BTreeMap<IpAddr, Real>,
}

struct Real {
    target: Target,
    health: RealHealth,
    /// The health the owner applies (see the module documentation).
    applied: bool,
    phase: Duration,
    due: Instant,
    in_flight: bool,
}

impl Prober {
    /// Starts the prober on a thread of its own with at most
    /// `max_in_flight` probes at once, counting into `metrics`; transitions
    /// arrive on the receiver.
    ///
    /// # Panics
    /// When the thread or its runtime cannot be made (no memory, no file
    /// descriptors left): the agent cannot run without them either.
    pub fn start(max_in_flight: usize, metrics: ProbeMetrics) -> (Self, mpsc::UnboundedReceiver<Transition>) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .thread_name("weir-prober")
            .build()
            .expect("the prober's runtime");
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(Shared {
            state: Mutex::new(State { vips: BTreeMap::new(), queue: BTreeSet::new(), wake_at: Instant::now() }),
            changed: Notify::new(),
            permits: Arc::new(Semaphore::new(max_in_flight.max(1))),
            transitions: tx,
            metrics,
            origin: Instant::now(),
            probes: AtomicU64::new(0),
        });
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let looping = shared.clone();
        std::thread::Builder::new()
            .name("weir-prober".into())
            .spawn(move || {
                runtime.block_on(async move {
                    tokio::select! {
                        () = schedule_loop(looping) => {}
                        _ = stopped => {}
                    }
                });
            })
            .expect("the prober's thread");
        (Self { shared, _stop: stop }, rx)
    }

    /// Probes `reals` of `vip` with `check`. Reals already probed with the
    /// same check and target keep their state and schedule; new ones start
    /// from the health given and are probed within an interval; reals left
    /// out are no longer probed.
    pub fn set_vip(&self, vip: VipId, check: VipCheck, reals_in: impl IntoIterator<Item = ProbedReal>) {
        let now = Instant::now();
        let interval = check.interval;
        let check = Arc::new(check);
        let mut state = self.shared.lock();
        let old = state.vips.remove(&vip);
        let same_check = old.as_ref().is_some_and(|o| *o.check == *check);
        let mut old_reals = old.map(|o| o.reals).unwrap_or_default();
        let mut reals = BTreeMap::new();
        for ProbedReal { addr, target, healthy } in reals_in {
            let kept = old_reals.remove(&addr).filter(|r| r.target == target && same_check);
            let real = match kept {
                Some(real) => real,
                None => {
                    if let Some(old) = old_reals.remove(&addr) {
                        state.queue.remove(&(old.due, vip, addr));
                    }
                    let phase = schedule::phase(&(vip, addr), interval);
                    let due = self.shared.at(schedule::next_after(self.shared.since(now), phase, interval));
                    state.queue.insert((due, vip, addr));
                    Real {
                        target,
                        health: RealHealth::starting(healthy),
                        applied: healthy,
                        phase,
                        due,
                        in_flight: false,
                    }
                }
            };
            reals.insert(addr, real);
        }
        for (addr, gone) in old_reals {
            state.queue.remove(&(gone.due, vip, addr));
        }
        state.vips.insert(vip, Probed { check, reals });
        let earlier = state.queue.first().is_some_and(|(due, ..)| *due < state.wake_at);
        drop(state);
        if earlier {
            self.shared.changed.notify_one();
        }
    }

    /// The owner applied `healthy` to real `addr` of `vip` by hand: it holds
    /// until the next probe result. Whether the prober probes that real.
    pub fn applied(&self, vip: &VipId, addr: IpAddr, healthy: bool) -> bool {
        let mut state = self.shared.lock();
        match state.vips.get_mut(vip).and_then(|p| p.reals.get_mut(&addr)) {
            Some(real) => {
                real.applied = healthy;
                true
            }
            None => false,
        }
    }

    /// Stops probing `vip`'s reals; whether it was probed.
    pub fn remove_vip(&self, vip: &VipId) -> bool {
        let mut state = self.shared.lock();
        let Some(probed) = state.vips.remove(vip) else { return false };
        for (addr, real) in probed.reals {
            state.queue.remove(&(real.due, *vip, addr));
        }
        true
    }

    /// What the prober knows of `vip`'s reals, by address; `None` when it
    /// does not probe `vip`.
    pub fn status(&self, vip: &VipId) -> Option<Vec<RealStatus>> {
        let state = self.shared.lock();
        let probed = state.vips.get(vip)?;
        Some(
            probed
                .reals
                .iter()
                .map(|(addr, r)| RealStatus { real: *addr, target: r.target, health: r.health.clone() })
                .collect(),
        )
    }

    /// Probes finished since the prober started.
    pub fn probes_done(&self) -> u64 {
        self.shared.probes.load(Ordering::Relaxed)
    }

    /// Targets probed, over all VIPs.
    pub fn targets(&self) -> usize {
        self.shared.lock().vips.values().map(|p| p.reals.len()).sum()
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn since(&self, t: Instant) -> Duration {
        t.saturating_duration_since(self.origin)
    }

    fn at(&self, offset: Duration) -> Instant {
        self.origin + offset
    }
}

/// A target may wait this long for room (a permit, or a place among the
/// half-open probes) when it finds none, before it tries again.
const NO_ROOM_RETRY: Duration = Duration::from_millis(1);

/// Half-open probes waiting for answers, at most. Each is a map entry and a
/// heap entry, so this is far above `max_in_flight` (which bounds tasks,
/// sockets and connections): 10,000 targets with a 1 s timeout whose reals
/// are all dead need 10,000.
const MAX_HALF_OPEN: usize = 65_536;

/// A probe under way: what its result is recorded into.
struct Started {
    vip: VipId,
    addr: IpAddr,
    target: Target,
    check: Arc<VipCheck>,
    at: Instant,
}

/// The prober's loop. Each wake reads the answers of half-open probes and
/// records every result, starts the probes due (TCP as half-open SYNs, sent
/// in one batch; the others as tasks), then sleeps until the next is due,
/// a probe's deadline, the read tick while answers are awaited, or a
/// configuration change. One lock of the state per wake.
async fn schedule_loop(shared: Arc<Shared>) {
    let mut half_open = HalfOpen::<Started>::open();
    let mut done = Vec::new();
    let mut connected = Vec::new();
    let mut turned = Vec::new();
    loop {
        let now = Instant::now();
        half_open.collect(now.into_std(), &mut done);
        let wake_at = {
            let mut state = shared.lock();
            record_all(&shared, &mut state, &mut done, now, &mut turned);
            start_due(&shared, &mut state, &mut half_open, now, &mut done, &mut connected);
            half_open.flush(&mut done);
            record_all(&shared, &mut state, &mut done, now, &mut turned);
            let mut wake_at = state.queue.first().map_or(now + Duration::from_secs(3600), |(at, ..)| *at);
            if let Some(deadline) = half_open.next_deadline() {
                wake_at = wake_at.min(Instant::from_std(deadline)).min(now + READ_TICK);
            }
            state.wake_at = wake_at;
            wake_at
        };
        for transition in turned.drain(..) {
            shared.report(transition);
        }
        for (permit, started) in connected.drain(..) {
            tokio::spawn(probe_one(shared.clone(), permit, started));
        }
        tokio::select! {
            () = tokio::time::sleep_until(wake_at) => {}
            () = shared.changed.notified() => {}
        }
    }
}

/// Takes the due targets off the queue and starts their probes: TCP ones
/// in `half_open`, the others (with a permit each) into `connected`, for
/// tasks. A target that finds no room goes back on the queue a little later.
fn start_due(
    shared: &Shared,
    state: &mut State,
    half_open: &mut HalfOpen<Started>,
    now: Instant,
    done: &mut Vec<Done<Started>>,
    connected: &mut Vec<(OwnedSemaphorePermit, Started)>,
) {
    let mut no_room = Vec::new();
    while let Some(&(at, vip, addr)) = state.queue.first().filter(|(at, ..)| *at <= now) {
        state.queue.pop_first();
        let Some(probed) = state.vips.get_mut(&vip) else { continue };
        let Some(real) = probed.reals.get_mut(&addr).filter(|r| r.due == at && !r.in_flight) else { continue };
        let started = Started { vip, addr, target: real.target, check: probed.check.clone(), at: now };
        if probed.check.check == Check::Tcp {
            if half_open.in_flight() >= MAX_HALF_OPEN {
                no_room.push((vip, addr));
                continue;
            }
            real.in_flight = true;
            if let Err(failed) = half_open.start(started, real.target, probed.check.timeout, now.into_std()) {
                done.push(failed);
            }
        } else {
            let Ok(permit) = shared.permits.clone().try_acquire_owned() else {
                no_room.push((vip, addr));
                continue;
            };
            real.in_flight = true;
            connected.push((permit, started));
        }
    }
    for (vip, addr) in no_room {
        if let Some(real) = state.vips.get_mut(&vip).and_then(|p| p.reals.get_mut(&addr)) {
            real.due = now + NO_ROOM_RETRY;
            state.queue.insert((real.due, vip, addr));
        }
    }
}

/// A probe run as a task of its own (HTTP(S), UDP): it holds its permit
/// until its result is recorded.
async fn probe_one(shared: Arc<Shared>, _permit: OwnedSemaphorePermit, started: Started) {
    let result = check::probe(&started.check.check, started.target, started.check.timeout).await;
    let finished = Instant::now();
    let (turned, earlier) = {
        let mut state = shared.lock();
        let turned = shared.record(&mut state, started, result, finished);
        let earlier = state.queue.first().is_some_and(|(due, ..)| *due < state.wake_at);
        (turned, earlier)
    };
    if let Some(transition) = turned {
        shared.report(transition);
    }
    if earlier {
        shared.changed.notify_one();
    }
}

/// Records the half-open probes `done` (finished by `finished`), keeping
/// the transitions in `turned`.
fn record_all(
    shared: &Shared,
    state: &mut State,
    done: &mut Vec<Done<Started>>,
    finished: Instant,
    turned: &mut Vec<Transition>,
) {
    for (started, result) in done.drain(..) {
        turned.extend(shared.record(state, started, result, finished));
    }
}

impl Shared {
    /// Records one probe's result into its real, and puts the real back on
    /// the queue at its next instant; the transition, if it turned. The VIP
    /// may have been reconfigured or removed meanwhile: a result is recorded
    /// only into the same real of the same check.
    fn record(
        &self,
        state: &mut State,
        started: Started,
        result: Result<(), ProbeError>,
        finished: Instant,
    ) -> Option<Transition> {
        let Started { vip, addr, target, check, at } = started;
        self.probes.fetch_add(1, Ordering::Relaxed);
        let labels =
            DurationLabels { r#type: check.check.kind(), result: if result.is_ok() { "success" } else { "failure" } };
        self.metrics.duration.get_or_create(&labels).observe(finished.saturating_duration_since(at).as_secs_f64());
        let probed = state.vips.get_mut(&vip).filter(|p| Arc::ptr_eq(&p.check, &check) || *p.check == *check)?;
        let real = probed.reals.get_mut(&addr).filter(|r| r.target == target)?;
        real.in_flight = false;
        real.health.record(result.map_err(|e| e.to_string()), SystemTime::now(), check.thresholds);
        let turned = (real.health.healthy != real.applied).then_some(real.health.healthy);
        real.applied = real.health.healthy;
        real.due = self.at(schedule::next_after(self.since(finished), real.phase, check.interval));
        state.queue.insert((real.due, vip, addr));
        turned.map(|healthy| Transition { vip, real: addr, healthy })
    }

    /// Counts a transition and hands it to the prober's owner.
    fn report(&self, transition: Transition) {
        let Transition { vip, real, healthy } = transition;
        let labels = TransitionLabels {
            address: vip.addr.to_string(),
            port: vip.port,
            proto: weir_abi::Protocol::label_or_number(vip.proto),
            real: real.to_string(),
            to: if healthy { "healthy" } else { "unhealthy" },
        };
        self.metrics.transitions.get_or_create(&labels).inc();
        let _ = self.transitions.send(transition);
    }
}
