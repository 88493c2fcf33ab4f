//! What `/healthz` and `/readyz` answer (served by [`crate::http`]).
//!
//! - `/healthz` (liveness): 200 whenever the HTTP server answers — the process runs. A replica
//!   that lost its leadership exits instead of reporting itself unhealthy (see [`crate::leader`]).
//! - `/readyz` (readiness): 200 when this replica is
//!   - the leader (or runs without leader election) and every controller it runs has synced
//!     its watch stores ([`Health::expect_synced`] / [`Health::synced`]); or
//!   - a healthy standby: its first attempt at the Lease finished and it keeps watching it.
//!     A standby must be Ready: the operator is a Deployment whose rolling update waits for
//!     new pods to become Ready before it stops old ones — and the old pod holds the Lease, so
//!     a new pod that were Ready only as leader would never become Ready, and the update
//!     would stall. (No Service routes traffic to the operator; readiness only gates rollouts.)
//!
//!   503 before the first Lease attempt finished, while a new leader's stores are still
//!   syncing, and after a failure ([`Role::Failed`]); the body says why.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

/// This replica's part in the leader election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The first attempt at the Lease has not finished yet.
    Starting,
    /// Another replica holds the Lease; this one waits for it.
    Standby,
    /// This replica holds the Lease (or runs without leader election) and runs the controllers.
    Leading,
    /// Leader election or a controller failed; the process is about to exit.
    Failed,
}

#[derive(Debug)]
struct State {
    role: Role,
    /// Controllers that must sync their stores before a leader is Ready.
    expected: BTreeSet<&'static str>,
    synced: BTreeSet<&'static str>,
}

/// A cheap, cloneable handle on the replica's health, shared by the leader election, the
/// controllers and the HTTP server. A std Mutex: it is never held across an await.
#[derive(Clone, Debug)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// A replica that has not tried the Lease yet ([`Role::Starting`]).
    pub fn new() -> Self {
        let state = State { role: Role::Starting, expected: BTreeSet::new(), synced: BTreeSet::new() };
        Health { state: Arc::new(Mutex::new(state)) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn role(&self) -> Role {
        self.lock().role
    }

    pub fn set_role(&self, role: Role) {
        self.lock().role = role;
    }

    /// Declares that `controller` runs and must sync before the leader is Ready.
    pub fn expect_synced(&self, controller: &'static str) {
        self.lock().expected.insert(controller);
    }

    /// Reports that `controller`'s stores are synced.
    pub fn synced(&self, controller: &'static str) {
        self.lock().synced.insert(controller);
    }

    /// `Ok(what)` when Ready, `Err(why not)` otherwise (see the module documentation).
    pub fn readiness(&self) -> Result<&'static str, String> {
        let state = self.lock();
        match state.role {
            Role::Starting => Err("the first attempt at the leader Lease has not finished".to_owned()),
            Role::Failed => Err("leader election or a controller failed".to_owned()),
            Role::Standby => Ok("standby"),
            Role::Leading => {
                let waiting: Vec<_> = state.expected.difference(&state.synced).copied().collect();
                if waiting.is_empty() {
                    Ok("leader")
                } else {
                    Err(format!("leader; waiting for the stores of: {}", waiting.join(", ")))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_follows_role_and_sync() {
        let h = Health::new();
        assert!(h.readiness().is_err());
        h.set_role(Role::Standby);
        assert_eq!(h.readiness(), Ok("standby"));
        h.expect_synced("arbitration");
        h.set_role(Role::Leading);
        assert!(h.readiness().unwrap_err().contains("arbitration"));
        h.synced("arbitration");
        assert_eq!(h.readiness(), Ok("leader"));
        h.set_role(Role::Failed);
        assert!(h.readiness().is_err());
    }
}
