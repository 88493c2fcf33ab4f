//! Leader election end to end: operator replicas with leader election against one API
//! server double.

use std::time::Duration;

use kube::api::{Api, PostParams};
use serde_json::{json, Value};
use weir_apiserver_double::{ApiServer, Fault};
use weir_crds::v1alpha1::VirtualService;
use weir_operator::health::Role;
use weir_operator::leader::LeaderElection;
use weir_operator::{Error, Options};

const LIMIT: Duration = Duration::from_secs(30);
const GROUP_VERSION: &str = "lb.weir.dev/v1alpha1";
const LEASE: &str = "weir-operator";
const NAMESPACE: &str = "default";
/// Short leases keep the tests short (renewal every 2 s).
const LEASE_SECONDS: u64 = 3;

async fn timed<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(LIMIT, f).await.expect("test timed out");
}

fn double() -> ApiServer {
    let server = ApiServer::start();
    for crd in weir_crds::crds() {
        server.register_crd(&crd);
    }
    server
}

/// A running replica; `stop` shuts it down gracefully.
struct Replica {
    identity: &'static str,
    options: Options,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<weir_operator::Result<()>>,
}

impl Replica {
    fn start(server: &ApiServer, identity: &'static str) -> Self {
        Self::start_with(server, identity, LEASE_SECONDS)
    }

    fn start_with(server: &ApiServer, identity: &'static str, lease_duration_seconds: u64) -> Self {
        let options = Options {
            leader_election: Some(LeaderElection {
                lease_name: LEASE.to_owned(),
                lease_namespace: NAMESPACE.to_owned(),
                identity: identity.to_owned(),
                lease_duration_seconds,
            }),
            ..Options::default()
        };
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(weir_operator::run(server.client(), options.clone(), async move {
            let _ = stopped.await;
        }));
        Replica { identity, options, stop: Some(stop), task }
    }

    fn role(&self) -> Role {
        self.options.health.role()
    }

    /// Whether this replica ever ran a reconcile pass.
    fn reconciled(&self) -> bool {
        self.options.metrics.encode().contains("weir_operator_reconciles_total{controller=\"arbitration\"}")
    }

    async fn shut_down(mut self) -> weir_operator::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap()
    }
}

fn holder(server: &ApiServer) -> Option<String> {
    let lease = server.get("coordination.k8s.io/v1", "leases", Some(NAMESPACE), LEASE)?;
    lease["spec"]["holderIdentity"].as_str().map(str::to_owned)
}

async fn wait_for_holder(server: &ApiServer) -> String {
    loop {
        if let Some(h) = holder(server) {
            return h;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_role(replica: &Replica, role: Role) {
    while replica.role() != role {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn create_vs(server: &ApiServer, name: &str, address: &str) {
    let vs: VirtualService = serde_json::from_value(json!({
        "apiVersion": GROUP_VERSION, "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"address": address, "port": 80, "protocol": "TCP"},
    }))
    .unwrap();
    Api::<VirtualService>::namespaced(server.client(), "default").create(&PostParams::default(), &vs).await.unwrap();
}

async fn wait_accepted(server: &ApiServer, name: &str) {
    loop {
        let accepted = server.get(GROUP_VERSION, "virtualservices", Some("default"), name).is_some_and(|vs: Value| {
            vs["status"]["conditions"]
                .as_array()
                .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Accepted" && c["status"] == "True"))
        });
        if accepted {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn one_leads_and_a_standby_takes_over_after_a_graceful_shutdown() {
    timed(async {
        let server = double();
        let a = Replica::start(&server, "a");
        let b = Replica::start(&server, "b");

        let first = wait_for_holder(&server).await;
        let (leader, standby) = if first == a.identity { (a, b) } else { (b, a) };
        wait_for_role(&leader, Role::Leading).await;
        wait_for_role(&standby, Role::Standby).await;
        create_vs(&server, "web", "10.0.0.1").await;
        wait_accepted(&server, "web").await;

        // Exactly one replica runs the controllers, and it keeps the lease through renewals.
        tokio::time::sleep(Duration::from_secs(LEASE_SECONDS + 1)).await;
        assert!(leader.reconciled());
        assert!(!standby.reconciled(), "the standby ran a reconcile pass");
        assert_eq!(holder(&server).as_deref(), Some(leader.identity));
        assert_eq!(standby.role(), Role::Standby);
        assert!(standby.options.metrics.encode().contains("weir_operator_leader 0\n"));
        assert!(standby.options.health.readiness().is_ok(), "a standby is Ready");

        // A graceful shutdown releases the lease; the standby takes over within seconds
        // (well before the lease would have expired plus a renewal period).
        leader.shut_down().await.expect("clean shutdown");
        let released = tokio::time::Instant::now();
        tokio::time::timeout(Duration::from_secs(3), wait_for_role(&standby, Role::Leading))
            .await
            .expect("the standby did not take over within 3 s");
        assert!(released.elapsed() < Duration::from_secs(3));
        assert_eq!(holder(&server).as_deref(), Some(standby.identity));

        // The new leader reconciles a new VirtualService.
        create_vs(&server, "db", "10.0.0.2").await;
        wait_accepted(&server, "db").await;
        // The pass that wrote the status is counted when it ends, a moment after the write.
        while !standby.reconciled() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(standby.options.metrics.encode().contains("weir_operator_leader 1\n"));

        standby.shut_down().await.expect("clean shutdown");
        assert_eq!(holder(&server), None, "the last leader released the lease");
    })
    .await
}

#[tokio::test]
async fn losing_the_lease_stops_the_leader() {
    timed(async {
        let server = double();
        let a = Replica::start(&server, "a");
        wait_for_role(&a, Role::Leading).await;

        // Someone else takes the lease (as after a long partition of this replica).
        let mut lease = server.get("coordination.k8s.io/v1", "leases", Some(NAMESPACE), LEASE).unwrap();
        lease["spec"]["holderIdentity"] = json!("intruder");
        server.put(lease).unwrap();

        // At its next renewal the leader notices, and `run` fails so that the process exits.
        let result = tokio::time::timeout(Duration::from_secs(2 * LEASE_SECONDS), a.task)
            .await
            .expect("the leader did not notice the loss")
            .unwrap();
        assert!(matches!(result, Err(Error::LeadershipLost { .. })), "{result:?}");
        assert_eq!(a.options.health.role(), Role::Failed);
        assert!(a.options.metrics.encode().contains("weir_operator_leader 0\n"));
        assert_eq!(holder(&server).as_deref(), Some("intruder"), "the lease is left alone");
    })
    .await
}

#[tokio::test]
async fn a_bad_agent_config_fails_before_the_election() {
    timed(async {
        let server = double();
        let options = Options {
            agent_config: Some("/nonexistent/agent.yaml".into()),
            namespace: Some("weir-system".to_owned()),
            leader_election: Some(LeaderElection {
                lease_name: LEASE.to_owned(),
                lease_namespace: NAMESPACE.to_owned(),
                identity: "a".to_owned(),
                lease_duration_seconds: LEASE_SECONDS,
            }),
            ..Options::default()
        };
        let health = options.health.clone();
        let result = weir_operator::run(server.client(), options, std::future::pending()).await;
        let message = result.unwrap_err().to_string();
        assert!(message.contains("/nonexistent/agent.yaml"), "{message}");
        assert_eq!(health.role(), Role::Failed);
        assert_eq!(holder(&server), None, "it never took part in the election");
    })
    .await
}

/// A 6 s Lease: renewed every 2 s; after a failed renewal the leader retries for 2 s more
/// (the renew deadline, 4 s after the last renewal), 2 s before the Lease would expire.
const OUTAGE_LEASE_SECONDS: u64 = 6;

/// Renewals of the Lease fail with `code`. (kube's client retries a 503 itself for minutes:
/// the renewal hangs rather than fails.)
fn lease_outage(code: u16, times: usize) -> Fault {
    Fault {
        method: Some("PATCH".to_owned()),
        path_contains: format!("/leases/{LEASE}"),
        code,
        reason: if code == 503 { "ServiceUnavailable" } else { "InternalError" },
        times,
    }
}

fn renew_time(server: &ApiServer) -> k8s_openapi::jiff::Timestamp {
    let lease = server.get("coordination.k8s.io/v1", "leases", Some(NAMESPACE), LEASE).unwrap();
    lease["spec"]["renewTime"].as_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_renewal_failure_shorter_than_the_lease_keeps_the_leader() {
    timed(async {
        let server = double();
        let a = Replica::start_with(&server, "a", OUTAGE_LEASE_SECONDS);
        wait_for_role(&a, Role::Leading).await;

        // Four failed renewals: about 0.75 s of retries (every 250 ms), then one gets through.
        server.inject_fault(lease_outage(500, 4));
        while server.pending_faults() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let after_outage = k8s_openapi::jiff::Timestamp::now();
        // Past the renew deadline of the failed renewal: still leading, and renewing again.
        tokio::time::sleep(Duration::from_secs(3)).await;
        if a.task.is_finished() {
            panic!("the leader stopped: {:?}", a.task.await.unwrap());
        }
        assert_eq!(a.role(), Role::Leading);
        assert_eq!(holder(&server).as_deref(), Some("a"));
        assert!(renew_time(&server) > after_outage, "renewed after the outage");
        assert!(a.options.metrics.encode().contains("weir_operator_leader 1\n"));
        a.shut_down().await.expect("clean shutdown");
    })
    .await
}

#[tokio::test]
async fn renewals_failing_until_the_renew_deadline_step_the_leader_down() {
    renewals_fail_until_the_renew_deadline(500).await;
}

#[tokio::test]
async fn renewals_hanging_until_the_renew_deadline_step_the_leader_down() {
    renewals_fail_until_the_renew_deadline(503).await;
}

async fn renewals_fail_until_the_renew_deadline(code: u16) {
    timed(async {
        let server = double();
        let a = Replica::start_with(&server, "a", OUTAGE_LEASE_SECONDS);
        wait_for_role(&a, Role::Leading).await;

        server.inject_fault(lease_outage(code, usize::MAX));
        let outage = tokio::time::Instant::now();
        let result = a.task.await.unwrap();
        let stepped_down = k8s_openapi::jiff::Timestamp::now();
        let elapsed = outage.elapsed();
        match &result {
            Err(Error::LeadershipLost { reason }) => {
                assert!(reason.starts_with("the Lease was not renewed before the renew deadline (4s)"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // The last renewal came at most one interval (2 s) before the outage; the leader
        // stepped down at its renew deadline (4 s after it), before the Lease expired (6 s).
        assert!(elapsed >= Duration::from_secs(2), "stepped down after {elapsed:?}");
        assert!(elapsed < Duration::from_millis(4500), "stepped down after {elapsed:?}");
        let expiry = renew_time(&server) + k8s_openapi::jiff::SignedDuration::from_secs(OUTAGE_LEASE_SECONDS as i64);
        assert!(stepped_down < expiry, "stepped down at {stepped_down}, the Lease expired at {expiry}");
        assert_eq!(a.options.health.role(), Role::Failed);
        server.clear_faults();
    })
    .await
}

#[tokio::test]
async fn a_new_leader_arbitrates_past_a_virtual_service_the_types_reject() {
    timed(async {
        let server = double();
        let a = Replica::start(&server, "a");
        wait_for_role(&a, Role::Leading).await;
        let b = Replica::start(&server, "b");
        wait_for_role(&b, Role::Standby).await;
        a.shut_down().await.expect("clean shutdown");
        // Stored while no replica leads (after a CRD change narrowed the protocol enum).
        server
            .put(json!({
                "apiVersion": GROUP_VERSION, "kind": "VirtualService",
                "metadata": {"name": "sctp", "namespace": "default"},
                "spec": {"address": "10.0.0.7", "port": 80, "protocol": "SCTP"},
            }))
            .unwrap();
        create_vs(&server, "web", "10.0.0.1").await;

        // The new leader lists everything afresh: it arbitrates and marks the bad object.
        wait_for_role(&b, Role::Leading).await;
        wait_accepted(&server, "web").await;
        loop {
            let vs = server.get(GROUP_VERSION, "virtualservices", Some("default"), "sctp").unwrap();
            let marked = vs["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter().any(|c| c["type"] == "Accepted" && c["status"] == "False" && c["reason"] == "InvalidSpec")
            });
            if marked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        b.shut_down().await.expect("clean shutdown");
    })
    .await
}
