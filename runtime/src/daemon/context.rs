//! What every group runner of a node shares: the config, who we are, the lease store, the heartbeat view, the
//! witness verdict, the event log, and the node's published heartbeat state.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::watch;

use super::events::EventLog;
use crate::config::Config;
use crate::group::Role;
use crate::group::wire::{GroupWire, NODE_LEAVING, NodeWire};
use crate::membership::heartbeat::{Heartbeats, Snapshot};
use crate::membership::lease::{LeaseStore, LeaseTiming};
use crate::membership::witness::Verdict;

/// The latest network-partition verdict and when the check that produced it started.
#[derive(Debug, Clone, Default)]
pub struct WitnessState {
    pub verdict: Option<Verdict>,
    pub checked_at: Option<Instant>,
}

/// Publishes this node's state into its heartbeats. `set` returns only after the heartbeat service sees the new
/// state: a runner that stops vouching records the time *after* this call (the vouch rule relies on it).
pub struct StatePublisher {
    wire: Mutex<NodeWire>,
    heartbeats: Arc<Heartbeats>,
}

impl StatePublisher {
    pub fn new(groups: usize, heartbeats: Arc<Heartbeats>) -> StatePublisher {
        let wire = NodeWire { flags: 0, groups: vec![GroupWire { role: Role::Offline, vouch: false }; groups] };
        heartbeats.set_state(wire.encode());
        StatePublisher { wire: Mutex::new(wire), heartbeats }
    }

    pub fn set(&self, index: usize, group: GroupWire) {
        let mut wire = match self.wire.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(g) = wire.groups.get_mut(index) {
            *g = group;
        }
        self.heartbeats.set_state(wire.encode());
    }

    pub fn set_leaving(&self) {
        let mut wire = match self.wire.lock() {
            Ok(w) => w,
            Err(poisoned) => poisoned.into_inner(),
        };
        wire.flags |= NODE_LEAVING;
        self.heartbeats.set_state(wire.encode());
    }
}

pub struct NodeContext {
    pub config: Arc<Config>,
    pub node: String,
    pub incarnation: u64,
    pub store: Arc<LeaseStore>,
    pub timing: LeaseTiming,
    pub heartbeat: watch::Receiver<Snapshot>,
    pub witness: watch::Receiver<WitnessState>,
    pub witness_configured: bool,
    pub events: Arc<EventLog>,
    pub publisher: StatePublisher,
    pub state_dir: PathBuf,
    /// Run for the final action `shutdown` (and by the watchdog): e.g. `systemctl poweroff --force --force`.
    pub shutdown_command: String,
    pub started: Instant,
    /// The fencer (None: tandemd runs without one; no exec resource names a cgroup then).
    pub fencer: Option<Arc<crate::fence::client::FenceClient>>,
    /// AWS clients and this node's ENI for the AWS group resources (one lookup shared by every group).
    pub aws: Option<crate::aws::AwsEnv>,
    /// The lease and certificates for the mirror_disk resources (None: the certificates did not load).
    pub mirror: Option<crate::resources::mirror_env::MirrorDeps>,
    leaving: AtomicBool,
}

impl NodeContext {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        node: String,
        incarnation: u64,
        store: Arc<LeaseStore>,
        timing: LeaseTiming,
        heartbeat: watch::Receiver<Snapshot>,
        witness: watch::Receiver<WitnessState>,
        witness_configured: bool,
        events: Arc<EventLog>,
        publisher: StatePublisher,
        state_dir: PathBuf,
        shutdown_command: String,
        tls: Option<Arc<crate::daemon::peer::PeerTls>>,
        fencer: Option<Arc<crate::fence::client::FenceClient>>,
    ) -> NodeContext {
        let aws = crate::aws::AwsEnv::for_node(&config, &node);
        let mirror = tls.map(|tls| crate::resources::mirror_env::MirrorDeps {
            config: Arc::clone(&config),
            lease: Arc::clone(&store),
            tls,
        });
        NodeContext {
            aws,
            mirror,
            config,
            node,
            incarnation,
            store,
            timing,
            heartbeat,
            witness,
            witness_configured,
            events,
            publisher,
            state_dir,
            shutdown_command,
            fencer,
            started: Instant::now(),
            leaving: AtomicBool::new(false),
        }
    }

    pub fn leaving(&self) -> bool {
        self.leaving.load(Ordering::SeqCst)
    }

    pub fn set_leaving(&self) {
        self.leaving.store(true, Ordering::SeqCst);
        self.publisher.set_leaving();
    }

    /// Runs the shutdown command (final action `shutdown`, watchdog). Never returns an error: it logs.
    pub async fn shutdown_node(&self, why: &str) {
        self.events.record("", "daemon", "TDM-NODE-010", format!("shutting the node down: {why}"));
        let status = tokio::process::Command::new("/bin/sh").arg("-c").arg(&self.shutdown_command).status().await;
        if let Err(e) = status {
            tracing::error!("shutdown command {:?} could not run: {e}", self.shutdown_command);
        }
    }
}
