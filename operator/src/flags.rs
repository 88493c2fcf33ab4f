//! The operator's command line.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{ArgAction, Parser};

use crate::leader::LeaderElection;
use crate::Options;

/// weir's Kubernetes operator: arbitrates weir's CRDs and rolls per-node status up into them.
#[derive(Clone, Debug, Parser)]
#[command(name = "weir-operator", version)]
pub struct Flags {
    /// Address of the HTTP server of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9479")]
    pub metrics_addr: SocketAddr,

    /// Run the controllers only while holding the leader Lease (Go-style: `--leader-election=false`).
    #[arg(
        long,
        value_name = "BOOL",
        default_value_t = true,
        action = ArgAction::Set,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true"
    )]
    pub leader_election: bool,

    /// Name of the leader Lease (`coordination.k8s.io/v1`).
    #[arg(long, value_name = "NAME", default_value = "weir-operator")]
    pub lease_name: String,

    /// Namespace of the leader Lease; required with leader election.
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub lease_namespace: Option<String>,

    /// Seconds a lease stays valid after its last renewal (at least 2).
    #[arg(long, value_name = "SECONDS", default_value_t = 15)]
    pub lease_duration: u64,

    /// This replica's identity in the election [default: the hostname].
    #[arg(long, value_name = "ID", env = "POD_NAME")]
    pub identity: Option<String>,

    /// The node-agent configuration (YAML); without it the DaemonSet is not managed.
    #[arg(long, value_name = "FILE")]
    pub agent_config: Option<PathBuf>,

    /// Namespace of the node-agent DaemonSet, unless the agent configuration names one.
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
}

/// Flags that parse but do not make sense together.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlagsError {
    #[error("leader election needs the Lease's namespace: set --lease-namespace or POD_NAMESPACE (or --leader-election=false)")]
    LeaseNamespaceMissing,
    #[error("--lease-duration must be at least 2 seconds, not {0}")]
    LeaseDurationTooShort(u64),
    #[error("no --identity, POD_NAME or hostname to identify this replica in the election")]
    IdentityMissing,
}

impl Flags {
    /// The [`Options`] of [`crate::run`], with fresh metrics and health handles.
    pub fn options(&self) -> Result<Options, FlagsError> {
        let leader_election = if self.leader_election {
            let lease_namespace = self.lease_namespace.clone().ok_or(FlagsError::LeaseNamespaceMissing)?;
            if self.lease_duration < 2 {
                return Err(FlagsError::LeaseDurationTooShort(self.lease_duration));
            }
            let identity = self.identity.clone().or_else(hostname).ok_or(FlagsError::IdentityMissing)?;
            Some(LeaderElection {
                lease_name: self.lease_name.clone(),
                lease_namespace,
                identity,
                lease_duration_seconds: self.lease_duration,
            })
        } else {
            None
        };
        Ok(Options {
            leader_election,
            agent_config: self.agent_config.clone(),
            namespace: self.namespace.clone(),
            ..Options::default()
        })
    }
}

/// The kernel's hostname (a pod's hostname is its name), else `$HOSTNAME`.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Flags {
        Flags::try_parse_from(std::iter::once("weir-operator").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn defaults() {
        let f = parse(&["--lease-namespace=weir", "--identity=a"]);
        assert_eq!(f.metrics_addr, "0.0.0.0:9479".parse().unwrap());
        assert!(f.leader_election);
        let election = f.options().unwrap().leader_election.unwrap();
        assert_eq!(
            election,
            LeaderElection {
                lease_name: "weir-operator".into(),
                lease_namespace: "weir".into(),
                identity: "a".into(),
                lease_duration_seconds: 15,
            }
        );
    }

    #[test]
    fn go_style_booleans() {
        assert!(!parse(&["--leader-election=false"]).leader_election);
        assert!(parse(&["--leader-election"]).leader_election);
        assert!(parse(&["--leader-election=true"]).leader_election);
        assert!(Flags::try_parse_from(["weir-operator", "--leader-election=maybe"]).is_err());
    }

    #[test]
    fn leader_election_needs_a_namespace() {
        let mut f = parse(&["--identity=a"]);
        f.lease_namespace = None; // POD_NAMESPACE may be set where the tests run
        assert_eq!(f.options().unwrap_err(), FlagsError::LeaseNamespaceMissing);
        f.leader_election = false;
        assert!(f.options().unwrap().leader_election.is_none());
    }

    #[test]
    fn agent_config_is_passed_through() {
        let f = parse(&["--leader-election=false", "--agent-config", "/etc/weir/agent.yaml", "--namespace=weir"]);
        let options = f.options().unwrap();
        assert_eq!(options.agent_config, Some(PathBuf::from("/etc/weir/agent.yaml")));
        assert_eq!(options.namespace.as_deref(), Some("weir"));
    }
}
