//! Health in cluster mode: the check a VirtualService asks for, as the Balancer
//! stores it ([`desired_check`]), and the health the Balancer found, as the
//! BalancerNode reports it ([`report_health`]).
//!
//! Cluster mode never talks to the prober: it stores each VIP's check in the
//! Balancer, the prober probes what the Balancer holds and applies the
//! transitions there, and this module reads them back. A VirtualService without
//! `spec.healthCheck` gets a `dummy` check (every real healthy): with the prober
//! enabled, reals of a VIP without a check would start unhealthy and never be
//! probed.

use weir_crds::v1alpha1::{HealthCheckType, ProgrammedVirtualService, MAX_UNHEALTHY_LISTED};
use weir_crds::v1alpha1::{DEFAULT_INTERVAL_MS, DEFAULT_THRESHOLD, DEFAULT_TIMEOUT_MS};
use weir_crds::validation::VipPlan;

use crate::dataplane::{Balancer, CheckKind, HealthCheck, HttpCheck, UdpCheck, VipId};

/// What VIP `vip`'s check must be in the Balancer: its stored form (the port
/// resolved), so that an unchanged check compares equal to the stored one.
pub fn desired_check(vip: &VipPlan) -> HealthCheck {
    let Some(spec) = &vip.health_check else {
        // The VIP's port; 0 on a port-less VIP (a dummy check probes nothing).
        return dummy_check(vip.port);
    };
    let http = || HttpCheck {
        path: spec.path.clone().unwrap_or_default(),
        expected_status: spec.expected_status(),
        host: spec.host.clone(),
        skip_tls_verify: spec.skip_tls_verify.unwrap_or(false),
    };
    let udp = || UdpCheck { payload: spec.payload.clone().unwrap_or_default(), expect: spec.expected_reply.clone() };
    let (kind, http, https, udp) = match spec.kind {
        HealthCheckType::Tcp => (CheckKind::Tcp, None, None, None),
        HealthCheckType::Http => (CheckKind::Http, Some(http()), None, None),
        HealthCheckType::Https => (CheckKind::Https, None, Some(http()), None),
        HealthCheckType::Udp => (CheckKind::Udp, None, None, Some(udp())),
    };
    HealthCheck {
        kind,
        port: spec.port.unwrap_or(vip.port),
        http,
        https,
        udp,
        interval_ms: spec.interval_milliseconds,
        timeout_ms: spec.timeout_milliseconds,
        healthy_threshold: spec.healthy_threshold,
        unhealthy_threshold: spec.unhealthy_threshold,
    }
}

/// The `dummy` check (always healthy) of a VirtualService without
/// `spec.healthCheck`, in its stored form.
pub fn dummy_check(port: u16) -> HealthCheck {
    HealthCheck {
        kind: CheckKind::Dummy,
        port,
        http: None,
        https: None,
        udp: None,
        interval_ms: DEFAULT_INTERVAL_MS,
        timeout_ms: DEFAULT_TIMEOUT_MS,
        healthy_threshold: DEFAULT_THRESHOLD,
        unhealthy_threshold: DEFAULT_THRESHOLD,
    }
}

/// Fills in `entry`'s health from VIP `id` in the Balancer: the healthy count,
/// the unhealthy addresses (sorted, at most [`MAX_UNHEALTHY_LISTED`]) and
/// fail-open. A VIP the Balancer does not hold leaves the entry as it is.
pub fn report_health(lb: &Balancer, id: &VipId, entry: &mut ProgrammedVirtualService) {
    let (Ok(reals), Ok(info)) = (lb.health_status(id), lb.vip_info(id)) else { return };
    let mut unhealthy: Vec<_> = reals.iter().filter(|r| !r.healthy).map(|r| r.addr).collect();
    unhealthy.sort();
    let healthy = reals.len() - unhealthy.len();
    entry.healthy_reals = Some(u32::try_from(healthy).unwrap_or(u32::MAX));
    entry.unhealthy_reals = unhealthy.iter().take(MAX_UNHEALTHY_LISTED).map(ToString::to_string).collect();
    entry.fail_open = info.fail_open;
}
