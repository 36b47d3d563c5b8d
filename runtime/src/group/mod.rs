//! Failover groups on one node: the role state machine, lease-guarded start/stop/move/failover, recovery on
//! resource failure, and what the node tells its peers about its groups (heartbeat state, [`wire`]).
//!
//! ```text
//!            acquire lease                    all resources started
//!  standby ───────────────► starting ─────────────────────────────► active
//!     ▲                        │ a resource failed after retries      │ lease/vouch ending, move, stop,
//!     │                        ▼                                      │ isolation, NotHolder
//!     │                     failed (until `group start`)              ▼
//!     └─────────────────────────────────────────────────────────── stopping
//! ```
//! docs/operations.md describes every state; docs/architecture.md why the transitions are safe.

pub mod runner;
pub mod wire;

use std::fmt;

/// This node's role for one group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// Not taking part (the node is leaving, or the daemon is not ready yet).
    Offline,
    /// Eligible: runs nothing, may take the group over under the lease rules.
    Standby,
    /// Holds the lease, starting the resources.
    Starting,
    /// Holds the lease (or a vouch), every resource started.
    Active,
    /// Stopping the resources (then releasing the lease).
    Stopping,
    /// A resource failed here; this node does not take the group until an operator runs `group start`.
    Failed,
}

impl Role {
    pub fn code(self) -> u8 {
        match self {
            Role::Offline => 0,
            Role::Standby => 1,
            Role::Starting => 2,
            Role::Active => 3,
            Role::Stopping => 4,
            Role::Failed => 5,
        }
    }

    pub fn from_code(code: u8) -> Option<Role> {
        Some(match code {
            0 => Role::Offline,
            1 => Role::Standby,
            2 => Role::Starting,
            3 => Role::Active,
            4 => Role::Stopping,
            5 => Role::Failed,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Role::Offline => "offline",
            Role::Standby => "standby",
            Role::Starting => "starting",
            Role::Active => "active",
            Role::Stopping => "stopping",
            Role::Failed => "failed",
        }
    }

    /// Runs (some of) the group's resources: starting, active or stopping.
    pub fn is_running(self) -> bool {
        matches!(self, Role::Starting | Role::Active | Role::Stopping)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A peer that can take group `index` now, as its heartbeats say: up, standby for the group, not leaving.
pub fn eligible_peer(snap: &crate::membership::heartbeat::Snapshot, index: usize, node: &str) -> bool {
    snap.peer(node).is_some_and(|p| {
        p.liveness == crate::membership::heartbeat::peer::Liveness::Up
            && wire::NodeWire::decode(&p.state)
                .is_some_and(|w| !w.leaving() && w.group(index).is_some_and(|g| g.role == Role::Standby))
    })
}

/// A peer not known to be down whose heartbeats say it runs group `index` (starting, active or stopping). While
/// one exists, a free lease is not taken: the lease item may read free (deleted, released by a stale incarnation,
/// restored from a backup) while that peer's resources still run.
pub fn peer_running<'a>(
    snap: &crate::membership::heartbeat::Snapshot,
    index: usize,
    others: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    others.into_iter().find(|node| {
        snap.peer(node).is_some_and(|p| {
            p.liveness != crate::membership::heartbeat::peer::Liveness::Down
                && wire::NodeWire::decode(&p.state).and_then(|w| w.group(index)).is_some_and(|g| g.role.is_running())
        })
    })
}

/// Why `node` will not take group `index` unless something changes (None: it will, or may soon), as this node
/// sees it: `me` is this node, `my_role` its role; a peer's state comes from its heartbeats. A server that is
/// still starting (offline) or busy is not refused: it takes a move request once it is standby.
pub fn wont_take(
    snap: &crate::membership::heartbeat::Snapshot,
    index: usize,
    node: &str,
    me: &str,
    my_role: Role,
) -> Option<String> {
    use crate::membership::heartbeat::peer::Liveness;
    if node == me {
        return (my_role == Role::Failed).then(|| my_role.name().to_string());
    }
    let Some(p) = snap.peer(node) else { return Some("not a node of this cluster".into()) };
    if p.liveness == Liveness::Down {
        return Some("down (no heartbeats)".into());
    }
    let w = wire::NodeWire::decode(&p.state)?;
    if w.leaving() {
        return Some("leaving the cluster".into());
    }
    w.group(index).map(|g| g.role).filter(|r| *r == Role::Failed).map(|r| r.name().to_string())
}

/// Errors of the group runner; `code()` is stable (docs/troubleshooting.md).
#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("group {group}: resource {resource} failed to start after {attempts} attempt(s): {detail}")]
    ActivationFailed { group: String, resource: String, attempts: u32, detail: String },
    #[error("group {group}: resource {resource} failed to stop after {attempts} attempt(s): {detail}")]
    DeactivationFailed { group: String, resource: String, attempts: u32, detail: String },
    #[error("group {group}: the lease (and every vouch) ran out before the resources stopped; watchdog action taken")]
    StopMissedDeadline { group: String },
    #[error("group {group}: lease no longer held ({cause}); stopping the group")]
    LeaseLost { group: String, cause: String },
    #[error("group {group}: this node is isolated (no witness answers); {action}")]
    Isolated { group: String, action: String },
    #[error("group {group}: unknown group; known: {known}")]
    UnknownGroup { group: String, known: String },
    #[error("group {group}: node {node} is not a server of this group (servers: {servers})")]
    NotAServer { group: String, node: String, servers: String },
    #[error("group {group}: no live server to move to")]
    NoTarget { group: String },
    #[error("group {group}: lease store: {detail}")]
    Store { group: String, detail: String },
    #[error("group {group}: {node} cannot take the group now: it is {state}{hint}")]
    TargetNotReady { group: String, node: String, state: String, hint: String },
    #[error("group {group}: the lease reads free, but {peer} says it runs the group; not taking it until {peer} stops")]
    PeerStillRunning { group: String, peer: String },
}

impl GroupError {
    pub fn code(&self) -> &'static str {
        match self {
            GroupError::ActivationFailed { .. } => "TDM-GRP-001",
            GroupError::DeactivationFailed { .. } => "TDM-GRP-002",
            GroupError::StopMissedDeadline { .. } => "TDM-GRP-003",
            GroupError::LeaseLost { .. } => "TDM-GRP-004",
            GroupError::Isolated { .. } => "TDM-GRP-005",
            GroupError::UnknownGroup { .. } => "TDM-GRP-006",
            GroupError::NotAServer { .. } => "TDM-GRP-007",
            GroupError::NoTarget { .. } => "TDM-GRP-008",
            GroupError::Store { .. } => "TDM-GRP-009",
            // 010 was used by a removed variant: codes are never reused.
            GroupError::TargetNotReady { .. } => "TDM-GRP-011",
            GroupError::PeerStillRunning { .. } => "TDM-GRP-012",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(
        node: &str,
        liveness: crate::membership::heartbeat::peer::Liveness,
        wire: Option<wire::NodeWire>,
    ) -> crate::membership::heartbeat::PeerStatus {
        crate::membership::heartbeat::PeerStatus {
            node: node.into(),
            liveness,
            links: Vec::new(),
            state: wire.map(|w| w.encode()).unwrap_or_default(),
            echo_sent: None,
            last_heard: None,
        }
    }

    fn node_wire(role: Role, flags: u8) -> Option<wire::NodeWire> {
        Some(wire::NodeWire { flags, groups: vec![wire::GroupWire { role, vouch: false }] })
    }

    #[test]
    fn a_move_target_is_refused_only_when_it_will_not_take_the_group() {
        use crate::membership::heartbeat::peer::Liveness;
        let snap = crate::membership::heartbeat::Snapshot {
            peers: vec![
                peer("standby", Liveness::Up, node_wire(Role::Standby, 0)),
                peer("starting", Liveness::Up, node_wire(Role::Offline, 0)),
                peer("quiet", Liveness::Up, None),
                peer("failed", Liveness::Up, node_wire(Role::Failed, 0)),
                peer("leaving", Liveness::Up, node_wire(Role::Standby, wire::NODE_LEAVING)),
                peer("down", Liveness::Down, node_wire(Role::Standby, 0)),
            ],
            unattributed: Vec::new(),
            send_errors: 0,
        };
        let says = |node: &str| wont_take(&snap, 0, node, "me", Role::Standby);
        assert_eq!(says("standby"), None);
        assert_eq!(says("starting"), None, "a server still starting takes the request once standby");
        assert_eq!(says("quiet"), None);
        assert_eq!(says("failed").as_deref(), Some("failed"));
        assert_eq!(says("leaving").as_deref(), Some("leaving the cluster"));
        assert_eq!(says("down").as_deref(), Some("down (no heartbeats)"));
        assert_eq!(says("stranger").as_deref(), Some("not a node of this cluster"));
        assert_eq!(says("me"), None);
        assert_eq!(wont_take(&snap, 0, "me", "me", Role::Failed).as_deref(), Some("failed"));
    }

    #[test]
    fn a_free_lease_is_not_taken_while_a_live_peer_runs_the_group() {
        use crate::membership::heartbeat::peer::Liveness;
        let snap = crate::membership::heartbeat::Snapshot {
            peers: vec![
                peer("active", Liveness::Up, node_wire(Role::Active, 0)),
                peer("stopping-suspect", Liveness::Suspect, node_wire(Role::Stopping, 0)),
                peer("starting-down", Liveness::Down, node_wire(Role::Starting, 0)),
                peer("standby", Liveness::Up, node_wire(Role::Standby, 0)),
            ],
            unattributed: Vec::new(),
            send_errors: 0,
        };
        assert_eq!(peer_running(&snap, 0, ["standby", "active"]), Some("active"));
        assert_eq!(peer_running(&snap, 0, ["stopping-suspect"]), Some("stopping-suspect"), "suspect is not down");
        assert_eq!(peer_running(&snap, 0, ["starting-down", "standby"]), None, "a down peer's last word is stale");
        assert_eq!(peer_running(&snap, 1, ["active"]), None, "another group");
        assert_eq!(peer_running(&snap, 0, ["unknown"]), None);
    }

    #[test]
    fn role_codes_round_trip() {
        for code in 0..=5 {
            let role = Role::from_code(code).expect("known code");
            assert_eq!(role.code(), code);
        }
        assert_eq!(Role::from_code(6), None);
        assert!(Role::Stopping.is_running() && !Role::Standby.is_running() && !Role::Failed.is_running());
    }
}
