//! One failover group on one node: a task that owns the group's [`Role`] here, takes and keeps the group's lease,
//! starts and stops its resources, and publishes what it does (heartbeat state, status view, event log).
//!
//! The rules (docs/architecture.md explains why they are safe):
//! - run the group only while `now + stop_lead < deadline`, where the deadline is the later of the lease's
//!   validity and the vouch deadline (every other server vouches, echoing a packet of ours sent at `a`:
//!   `a + holder_validity(W)`, W = heartbeat timeout); when that no longer holds, stop (self-fence) — and if the
//!   stop has not finished at the deadline itself, the watchdog shuts the node down;
//! - a standby vouches ("I do not contend") except when the lease's holder is down in its view; it contends for
//!   a held lease only after it has stopped vouching for `contender_wait(W)` and, when witnesses are configured,
//!   a witness answered after the holder was lost; the store then enforces the lease's own version wait;
//! - a free lease (released, or never taken) goes to the move target, else to the highest-priority live
//!   standby; the others take it only after it stayed free for `contender_wait(ttl)`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::wire::{GroupWire, NodeWire};
use super::{GroupError, Role};
use crate::config::{FinalAction, Group, IsolationAction, Resource};
use crate::daemon::context::NodeContext;
use crate::fence::clock::from_boottime;
use crate::membership::heartbeat::Snapshot;
use crate::membership::heartbeat::peer::Liveness;
use crate::membership::lease::{Acquire, Holder, LeaseError, LeaseKeeper, LeaseRecord, LeaseState};
use crate::membership::lease::{contender_wait, holder_validity};
use crate::membership::witness::Verdict;
use crate::resources::{self, ErrorClass, GroupResource, Invocation, Probe, ResourceContext, ResourceError};

/// The AWS API failures a start is retried in place for: endpoint unreachable (TDM-AWS-101), throttled or failing
/// on AWS's side (TDM-AWS-102).
const AWS_TRANSIENT_CODES: [&str; 2] = [crate::aws::CODE_UNREACHABLE, crate::aws::CODE_THROTTLED];
/// The waits before each further start after such a failure (the SDK has already retried each call itself).
const AWS_TRANSIENT_BACKOFF: [Duration; 4] =
    [Duration::from_millis(250), Duration::from_millis(500), Duration::from_secs(1), Duration::from_secs(2)];

/// One resource as the status shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceView {
    pub name: String,
    pub kind: &'static str,
    /// stopped | starting | running | stopping | failed
    pub state: &'static str,
    pub last_error: String,
}

/// The group as this node sees it (for status and metrics).
#[derive(Debug, Clone)]
pub struct GroupView {
    pub name: String,
    pub servers: Vec<String>,
    pub role: Role,
    pub active_on: Option<String>,
    pub token: u64,
    pub valid_until: Option<Instant>,
    pub record: Option<LeaseRecord>,
    pub resources: Vec<ResourceView>,
    /// Takeovers by this node after the previous holder was lost.
    pub failovers: u64,
    pub last_takeover: Option<Duration>,
    pub last_error: String,
}

/// Requests to a runner.
#[derive(Debug)]
pub enum Command {
    /// Clears this node's `failed` mark (operator `group start`).
    ClearFailed,
    /// The node is leaving: hand the group to `target` (or stop it), then stay offline.
    Leave { target: Option<String>, done: oneshot::Sender<()> },
    /// A monitor's recovery: stop and start one resource in place (fails over if it does not come back).
    Restart { resource: String, why: String },
    /// A monitor's recovery: stop the group here, mark this node failed for it; another server takes it.
    Failover { why: String },
}

/// The daemon's handle on a runner.
pub struct GroupHandle {
    pub name: String,
    pub index: usize,
    /// True while the group is active on this node (monitors with `when = "active"` follow it).
    pub active: watch::Receiver<bool>,
    /// The resources as built (resource monitors probe these).
    pub resources: Vec<(String, Arc<dyn GroupResource>)>,
    view: Arc<Mutex<GroupView>>,
    tx: mpsc::Sender<Command>,
    task: JoinHandle<()>,
}

impl GroupHandle {
    pub fn resource(&self, name: &str) -> Option<Arc<dyn GroupResource>> {
        self.resources.iter().find(|(n, _)| n == name).map(|(_, r)| r.clone())
    }

    pub fn view(&self) -> GroupView {
        match self.view.lock() {
            Ok(v) => v.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub async fn send(&self, command: Command) -> bool {
        self.tx.send(command).await.is_ok()
    }
}

impl Drop for GroupHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Slot {
    config: Resource,
    imp: Arc<dyn GroupResource>,
    state: &'static str,
    last_error: String,
}

/// Why the group is being stopped here.
#[derive(Debug, Clone, PartialEq, Eq)]
enum StopReason {
    /// The lease (and vouches) are running out, or another node holds the lease now.
    Fence(String),
    /// The operator stopped the group.
    Admin,
    /// Handing over to another node.
    Move(String),
    /// This node is isolated.
    Isolated,
    /// Activation failed; failing over.
    Failed,
    /// The node is leaving.
    Leave,
}

pub struct Runner {
    cx: Arc<NodeContext>,
    index: usize,
    group: Group,
    slots: Vec<Slot>,
    role: Role,
    vouch: bool,
    vouch_cleared_at: Option<Instant>,
    keeper: Option<LeaseKeeper>,
    token: u64,
    record: Option<LeaseRecord>,
    next_read: Instant,
    free_seen: Option<(u64, Instant)>,
    holder_down_since: Option<Instant>,
    peer_down_since: Option<Instant>,
    failed_here: bool,
    isolation_reported: bool,
    failback_since: Option<(String, Instant)>,
    ready_at: Instant,
    failovers: u64,
    last_takeover: Option<Duration>,
    last_error: String,
    view: Arc<Mutex<GroupView>>,
    active: watch::Sender<bool>,
    /// The cgroups of the group's exec resources, absolute: what the fencer kills.
    cgroups: Vec<String>,
    /// Keeps the fencer armed with the group's deadline while the group runs here.
    arming: Option<JoinHandle<()>>,
    /// The machine's suspended time when the group started here ([`crate::fence::clock::suspended_ns`]).
    suspended_at_start: u64,
}

/// The absolute cgroup paths of the group's exec resources (a relative `cgroup` is under the cgroup2 mount).
fn resolve_cgroups(group: &Group) -> Result<Vec<String>, ResourceError> {
    let mut out = Vec::new();
    for r in &group.resources {
        let crate::config::resources::ResourceKind::Exec(e) = &r.kind else { continue };
        let Some(cg) = &e.cgroup else { continue };
        let path = if cg.starts_with('/') {
            // A path copied from `systemctl show -p ControlGroup` (relative to the cgroup root, with a leading
            // slash) would name a directory that never exists, and the fencer would kill nothing: refuse it.
            let mounts = crate::fence::killer::cgroup2_mounts();
            if !mounts.iter().any(|m| std::path::Path::new(cg).starts_with(m) && std::path::Path::new(cg) != m) {
                return Err(ResourceError::new(
                    ErrorClass::Fatal,
                    resources::CODE_CGROUP,
                    format!(
                        "exec resource {}/{}: cgroup {cg:?} is not inside a cgroup2 mount ({mounts:?}); a path \
                         as `systemctl show -p ControlGroup` prints it is relative: drop the leading slash",
                        group.name, r.name
                    ),
                ));
            }
            cg.clone()
        } else {
            let Some(mount) = crate::fence::killer::cgroup2_mount() else {
                return Err(ResourceError::new(
                    ErrorClass::Fatal,
                    resources::CODE_CGROUP,
                    format!(
                        "exec resource {}/{}: cgroup {cg:?} is relative, and this node has no cgroup2 mount; \
                         give an absolute path or mount the unified hierarchy",
                        group.name, r.name
                    ),
                ));
            };
            mount.join(cg).display().to_string()
        };
        out.push(path);
    }
    Ok(out)
}

/// The end of the extension every other server's vouch gives us (None unless all of them vouch): each vouch
/// echoes a heartbeat of ours sent at `a` and is good until `a + holder_validity(W)`.
fn vouch_deadline(snap: &Snapshot, others: &[String], index: usize, w: Duration) -> Option<Instant> {
    let mut deadline: Option<Instant> = None;
    for s in others {
        let peer = snap.peer(s)?;
        let g = NodeWire::decode(&peer.state)?.group(index)?;
        if !g.vouch || peer.liveness == Liveness::Down {
            return None;
        }
        let until = peer.echo_sent? + holder_validity(w);
        deadline = Some(deadline.map_or(until, |d: Instant| d.min(until)));
    }
    deadline
}

/// The deadline the group may run here until: the later of the lease's validity and the vouch deadline. None
/// when neither holds, or when the lease was lost for another cause than its deadline (that cause is returned).
fn run_deadline(
    lease: Option<&LeaseState>,
    snap: &Snapshot,
    others: &[String],
    index: usize,
    w: Duration,
) -> (Option<Instant>, Option<&'static str>) {
    let lease = match lease {
        Some(LeaseState::Held { valid_until, .. }) => Some(*valid_until),
        Some(LeaseState::Lost { code, .. }) if *code != "deadline" => return (None, Some(code)),
        _ => None,
    };
    (lease.max(vouch_deadline(snap, others, index, w)), None)
}

impl Runner {
    /// Builds the group's resources and starts its task. Errors name the resource that cannot be built.
    pub fn spawn(cx: Arc<NodeContext>, index: usize) -> Result<GroupHandle, resources::ResourceError> {
        let group = cx.config.groups[index].clone();
        let rcx = ResourceContext {
            cluster: cx.config.cluster.name.clone(),
            group: group.name.clone(),
            node: cx.node.clone(),
            state_dir: cx.state_dir.clone(),
        };
        let mut slots = Vec::new();
        for r in group.start_order() {
            let imp: Arc<dyn GroupResource> =
                Arc::from(resources::build_with(r, &rcx, cx.aws.as_ref(), cx.mirror.as_ref())?);
            slots.push(Slot { config: r.clone(), imp, state: "stopped", last_error: String::new() });
        }
        let view = Arc::new(Mutex::new(GroupView {
            name: group.name.clone(),
            servers: group.servers.clone(),
            role: Role::Offline,
            active_on: None,
            token: 0,
            valid_until: None,
            record: None,
            resources: Vec::new(),
            failovers: 0,
            last_takeover: None,
            last_error: String::new(),
        }));
        let now = Instant::now();
        let (active_tx, active_rx) = watch::channel(false);
        let built: Vec<(String, Arc<dyn GroupResource>)> =
            slots.iter().map(|s| (s.config.name.clone(), s.imp.clone())).collect();
        let cgroups = resolve_cgroups(&group)?;
        let runner = Runner {
            cgroups,
            arming: None,
            suspended_at_start: 0,
            ready_at: cx.started + cx.config.heartbeat.timeout,
            cx,
            index,
            group,
            slots,
            role: Role::Offline,
            vouch: true,
            vouch_cleared_at: None,
            keeper: None,
            token: 0,
            record: None,
            next_read: now,
            free_seen: None,
            holder_down_since: None,
            peer_down_since: None,
            failed_here: false,
            isolation_reported: false,
            failback_since: None,
            failovers: 0,
            last_takeover: None,
            last_error: String::new(),
            view: view.clone(),
            active: active_tx,
        };
        let (tx, rx) = mpsc::channel(16);
        let name = runner.group.name.clone();
        let task = tokio::spawn(runner.run(rx));
        Ok(GroupHandle { name, index, active: active_rx, resources: built, view, tx, task })
    }

    fn me(&self) -> Holder {
        Holder { node: self.cx.node.clone(), incarnation: self.cx.incarnation }
    }

    fn w(&self) -> Duration {
        self.cx.config.heartbeat.timeout
    }

    /// How long before its deadline the group starts stopping: a third of the shorter of ttl and W.
    fn stop_lead(&self) -> Duration {
        self.cx.timing.ttl.min(self.w()) / 3
    }

    fn tick(&self) -> Duration {
        (self.cx.config.heartbeat.interval.min(self.cx.timing.renew_interval) / 2)
            .clamp(Duration::from_millis(10), Duration::from_millis(250))
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        self.prepare_resources().await;
        if !self.adopt_at_start().await {
            self.clean_up_at_start().await;
            self.release_stale_lease().await;
        }
        self.publish();
        let mut hb = self.cx.heartbeat.clone();
        let mut ticker = tokio::time::interval(self.tick());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                c = rx.recv() => match c {
                    Some(c) => self.command(c).await,
                    None => {
                        self.leave(None).await;
                        return;
                    }
                },
                _ = ticker.tick() => {}
                r = hb.changed() => if r.is_err() {
                    // Without heartbeats there are no vouches and no view of the peers: stop what runs here.
                    if self.role.is_running() {
                        self.stop_group(StopReason::Fence("the heartbeat service ended".into()), true).await;
                    }
                    return;
                },
            }
            self.step().await;
            self.publish();
        }
    }

    async fn command(&mut self, c: Command) {
        match c {
            Command::ClearFailed => {
                if self.failed_here {
                    self.failed_here = false;
                    self.cx.events.record(&self.group.name, "admin", "", "failed mark cleared by the operator");
                    if self.role == Role::Failed {
                        self.set_role(Role::Standby, "operator cleared the failure");
                    }
                }
            }
            Command::Leave { target, done } => {
                self.leave(target).await;
                let _ = done.send(());
            }
            Command::Restart { resource, why } => {
                if self.role == Role::Active {
                    self.restart_resource(&resource, &why).await;
                }
            }
            Command::Failover { why } => {
                if self.role.is_running() {
                    self.fail_over(&why).await;
                }
            }
        }
    }

    /// Stops the group here and marks this node failed for it, so another server takes it over.
    async fn fail_over(&mut self, why: &str) {
        self.cx.events.record(&self.group.name, "recovery", "", format!("failing over: {why}"));
        self.stop_group(StopReason::Failed, true).await;
        self.failed_here = true;
        self.set_vouch(true);
        self.set_role(Role::Failed, why);
    }

    /// Restarts one resource in place (stop, then start, each with its retries); fails over if it will not
    /// start again.
    async fn restart_resource(&mut self, resource: &str, why: &str) {
        let Some(i) = self.slots.iter().position(|s| s.config.name == resource) else { return };
        self.cx.events.record(&self.group.name, "recovery", "", format!("restarting resource {resource}: {why}"));
        let inv = Invocation { lease_token: Some(self.token) };
        self.slots[i].state = "stopping";
        self.publish();
        if let Err(e) = self.slots[i].imp.stop(&inv).await {
            self.cx.events.record(&self.group.name, "resource", e.code(), format!("restart: stop of {resource}: {e}"));
            self.fail_over(&format!("resource {resource} did not stop for its restart")).await;
            return;
        }
        // The fencer may have fired meanwhile (a stalled re-arm): a fired entry never fires again, so the restarted
        // process must be covered by a fresh arm before it starts (found by the spin model, variant 10).
        let snap = self.cx.heartbeat.borrow().clone();
        if let Some(d) = self.deadline(&snap).0
            && let Err(e) = self.arm_fencer(d).await
        {
            self.cx.events.record(&self.group.name, "fence", e.code(), format!("restart of {resource}: {e}"));
            self.fail_over(&format!("the fencer could not be armed for the restart of {resource}")).await;
            return;
        }
        match self.start_with_retries(i, inv, "restart: start").await {
            Attempts::Started => {
                self.slots[i].state = "running";
                self.slots[i].last_error.clear();
                self.publish();
            }
            Attempts::Failed { detail, .. } => {
                self.slots[i].state = "failed";
                self.slots[i].last_error = detail;
                self.fail_over(&format!("resource {resource} did not start again")).await;
            }
            Attempts::Fenced => self.stop_group(StopReason::Fence("deadline during restart".into()), true).await,
        }
    }

    /// Starts resource i under `inv`, up to 1 + its `activation_retries` times (a fatal error ends the attempts);
    /// each failed attempt is an event `"{what} of NAME failed (attempt k/n)"`.
    async fn start_with_retries(&mut self, i: usize, inv: Invocation, what: &str) -> Attempts {
        self.slots[i].state = "starting";
        self.publish();
        let attempts = 1 + self.slots[i].config.activation_retries;
        let mut detail = String::new();
        for attempt in 1..=attempts {
            match self.guarded(|s: &Self| s.start_resource(i, inv)).await {
                Guarded::Done(Ok(())) => return Attempts::Started,
                Guarded::Done(Err(e)) => {
                    let name = &self.slots[i].config.name;
                    let text = format!("{what} of {name} failed (attempt {attempt}/{attempts}): {e}");
                    self.cx.events.record(&self.group.name, "resource", e.code(), text);
                    detail = e.to_string();
                    if e.class() == ErrorClass::Fatal {
                        break;
                    }
                }
                Guarded::Fenced => return Attempts::Fenced,
            }
        }
        Attempts::Failed { attempts, detail }
    }

    async fn leave(&mut self, target: Option<String>) {
        if self.role.is_running() {
            if let Some(t) = &target {
                match tokio::time::timeout(
                    self.cx.timing.renew_interval,
                    self.cx.store.request_move(&self.group.name, Some(t)),
                )
                .await
                {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => self.cx.events.record(&self.group.name, "admin", e.code(), format!("{e}")),
                    Err(_) => {}
                }
            }
            self.stop_group(StopReason::Leave, true).await;
        }
        self.set_vouch(true);
        self.set_role(Role::Offline, "node leaving");
    }

    /// A tandemd that restarted while this node ran the group takes it back without stopping it, when the fencer
    /// still holds an unexpired deadline for it: the lease is renewed under the same token by this incarnation,
    /// then the resources are started, which for a running resource is a probe (the OCF start is idempotent).
    /// True when the group was adopted.
    async fn adopt_at_start(&mut self) -> bool {
        let Some(fencer) = self.cx.fencer.clone() else { return false };
        let group = self.group.name.clone();
        let held = match fencer.state_of(&group).await {
            Ok(Some(s)) => s,
            Ok(None) => return false,
            Err(e) => {
                self.cx.events.record(&group, "fence", e.code(), format!("cannot ask the fencer at start: {e}"));
                return false;
            }
        };
        if let Some(f) = held.fired {
            let how = if f.ok { "killed" } else { "tried to kill (it FAILED: check the node)" };
            let text = format!(
                "the fencer {how} the group's cgroups {:?} after its deadline passed while tandemd was down \
                 (token {})",
                self.cgroups, held.token
            );
            self.cx.events.record(&group, "fence", if f.ok { "" } else { "TDM-FNC-020" }, text);
            return false;
        }
        let deadline = from_boottime(held.deadline_ns);
        let start = Instant::now();
        let Some(left) = deadline.checked_duration_since(start + self.stop_lead()) else {
            self.cx.events.record(&group, "lease", "", "too close to the fencer's deadline to re-adopt the group");
            return false;
        };
        let me = self.me();
        let call = self.cx.store.adopt(&group, &me, held.token);
        match tokio::time::timeout(left.min(self.cx.timing.renew_interval), call).await {
            Ok(Ok(record)) => {
                self.cx.events.record(
                    &group,
                    "lease",
                    "",
                    format!(
                        "re-adopted the group after a daemon restart (token {}); probing its resources",
                        held.token
                    ),
                );
                self.record = Some(record);
                let lease = crate::membership::lease::Lease {
                    token: held.token,
                    valid_until: start + self.cx.timing.holder_validity(),
                };
                self.start_group(lease, None).await;
                true
            }
            Ok(Err(e)) => {
                self.cx.events.record(&group, "lease", e.code(), format!("cannot re-adopt the group: {e}"));
                false
            }
            Err(_) => {
                self.cx.events.record(&group, "lease", "TDM-LEASE-005", "re-adoption timed out");
                false
            }
        }
    }

    /// After the start-up clean-up, a lease that still names this node (an earlier incarnation that did not
    /// re-adopt) is released, so the group is placed at once instead of after a takeover wait — or never, when
    /// the peers still see this node alive and keep vouching for it. Nothing of the group runs here any more.
    async fn release_stale_lease(&mut self) {
        if self.slots.iter().any(|s| s.state == "failed") {
            return; // a resource did not stop: the lease runs out instead (and the fencer, if armed, fires)
        }
        let group = self.group.name.clone();
        let record = match tokio::time::timeout(self.cx.timing.renew_interval, self.cx.store.read(&group)).await {
            Ok(Ok(r)) => r,
            _ => None,
        };
        if let Some(r) = record
            && let Some(h) = &r.holder
            && h.node == self.cx.node
        {
            match self.cx.store.release(&group, &self.cx.node, r.token).await {
                Ok(()) => self.cx.events.record(
                    &group,
                    "lease",
                    "",
                    format!("released the lease an earlier tandemd of this node held (token {})", r.token),
                ),
                Err(e) => self.cx.events.record(&group, "lease", e.code(), format!("stale lease not released: {e}")),
            }
        }
        self.disarm_fencer().await;
    }

    /// Arms the fencer with `deadline` (no fencer: nothing to do).
    async fn arm_fencer(&self, deadline: Instant) -> Result<(), crate::fence::client::FenceClientError> {
        match &self.cx.fencer {
            Some(f) => f.arm(&self.group.name, self.token, deadline, &self.cgroups).await,
            None => Ok(()),
        }
    }

    async fn disarm_fencer(&self) {
        if let Some(f) = &self.cx.fencer
            && let Err(e) = f.disarm(&self.group.name).await
        {
            self.cx.events.record(&self.group.name, "fence", e.code(), format!("disarm: {e}"));
        }
    }

    /// Re-arms the fencer at every tick with the group's current deadline, independently of what the runner
    /// awaits (a start or a stop may take long while the lease keeper goes on renewing). It never arms past the
    /// deadline the runner itself stops by: both come from [`run_deadline`].
    fn start_arming(&mut self) {
        self.stop_arming();
        let (Some(fencer), Some(keeper)) = (self.cx.fencer.clone(), self.keeper.as_ref()) else { return };
        let lease = keeper.subscribe();
        let hb = self.cx.heartbeat.clone();
        let (group, token, cgroups, index, w) =
            (self.group.name.clone(), self.token, self.cgroups.clone(), self.index, self.w());
        let others = self.other_servers();
        let events = self.cx.events.clone();
        let tick = self.tick();
        let suspended_at_start = self.suspended_at_start;
        self.arming = Some(tokio::spawn(async move {
            let mut last_error = String::new();
            let mut ticker = tokio::time::interval(tick);
            loop {
                ticker.tick().await;
                if crate::fence::clock::suspended_since(suspended_at_start).is_some() {
                    // Deadlines computed on an Instant are late by the time slept: never hand one to the fencer.
                    return;
                }
                let state = lease.borrow().clone();
                let snap = hb.borrow().clone();
                let (deadline, lost) = run_deadline(Some(&state), &snap, &others, index, w);
                let Some(deadline) = deadline.filter(|_| lost.is_none()) else { continue };
                match fencer.arm(&group, token, deadline, &cgroups).await {
                    Ok(()) => last_error.clear(),
                    Err(e) => {
                        let text = e.to_string();
                        if text != last_error {
                            events.record(&group, "fence", e.code(), format!("re-arming the fencer failed: {e}"));
                            last_error = text;
                        }
                    }
                }
            }
        }));
    }

    fn stop_arming(&mut self) {
        if let Some(t) = self.arming.take() {
            t.abort();
        }
    }

    /// After the fencer's forced stop: each resource not stopped is probed (an exec whose stop command hung is
    /// stopped once its cgroup is empty), and only what still answers running gets its (idempotent) stop again.
    async fn confirm_forced_stop(&mut self) -> bool {
        let inv = Invocation { lease_token: Some(self.token) };
        for i in 0..self.slots.len() {
            if self.slots[i].state == "stopped" {
                continue;
            }
            if let Ok(Probe::Stopped) = self.slots[i].imp.probe(&inv).await {
                self.slots[i].state = "stopped";
                self.slots[i].last_error.clear();
            }
        }
        if self.slots.iter().all(|s| s.state == "stopped") {
            return true;
        }
        self.stop_resources().await
    }

    /// After a stop missed its deadline: did the fencer kill everything that may still run? True when it fired
    /// successfully and every resource not stopped is an exec whose processes live in a cgroup it killed.
    async fn fencer_covered_the_stop(&self) -> bool {
        let Some(fencer) = &self.cx.fencer else { return false };
        let covered = self.slots.iter().all(|s| {
            s.state == "stopped"
                || matches!(&s.config.kind, crate::config::resources::ResourceKind::Exec(e) if e.cgroup.is_some())
        });
        if !covered {
            return false;
        }
        // The fencer fires at the same deadline; give its kill the time it may take.
        let until = Instant::now() + crate::fence::server::KILL_WAIT + Duration::from_millis(500);
        loop {
            if let Ok(Some(s)) = fencer.state_of(&self.group.name).await
                && let Some(f) = s.fired
            {
                return f.ok;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Each resource looks up what its starts need (`prepare`), once per daemon start, so that a failover (or a
    /// re-adoption) makes only the calls that move it.
    async fn prepare_resources(&mut self) {
        for i in 0..self.slots.len() {
            if let Err(e) = self.slots[i].imp.prepare().await {
                let name = &self.slots[i].config.name;
                self.cx.events.record(&self.group.name, "resource", e.code(), format!("prepare {name}: {e}"));
            }
        }
    }

    /// A resource found running when the daemon starts is stopped: this node does not hold the lease yet.
    async fn clean_up_at_start(&mut self) {
        let inv = Invocation { lease_token: None };
        for i in (0..self.slots.len()).rev() {
            match self.slots[i].imp.probe(&inv).await {
                Ok(Probe::Stopped) => {}
                Ok(Probe::Running) | Err(_) => {
                    let name = self.slots[i].config.name.clone();
                    self.cx.events.record(
                        &self.group.name,
                        "resource",
                        "",
                        format!("resource {name} found running (or failed) at daemon start; stopping it"),
                    );
                    if let Err(e) = self.slots[i].imp.stop(&inv).await {
                        self.slots[i].state = "failed";
                        self.slots[i].last_error = e.to_string();
                        self.cx.events.record(&self.group.name, "resource", e.code(), format!("{e}"));
                    }
                }
            }
        }
    }

    async fn step(&mut self) {
        let now = Instant::now();
        let snap = self.cx.heartbeat.borrow().clone();
        self.track_peers(&snap, now);
        match self.role {
            Role::Offline => {
                if !self.cx.leaving() && now >= self.ready_at {
                    self.set_role(Role::Standby, "daemon ready");
                }
            }
            Role::Failed => self.set_vouch(true),
            Role::Standby => self.standby_step(&snap, now).await,
            Role::Active => self.active_step(&snap, now).await,
            // Starting and stopping run inside start_group / stop_group.
            Role::Starting | Role::Stopping => {}
        }
    }

    fn track_peers(&mut self, snap: &Snapshot, now: Instant) {
        let down_at = self
            .others()
            .filter(|s| self.liveness(snap, s) == Liveness::Down)
            .map(|s| snap.peer(s).and_then(|p| p.down_at(self.w())).map_or(now, |t| t.min(now)))
            .min();
        if let Some(at) = down_at {
            self.peer_down_since.get_or_insert(at);
        } else {
            self.peer_down_since = None;
            self.isolation_reported = false;
        }
    }

    fn others(&self) -> impl Iterator<Item = &str> + '_ {
        self.group.servers.iter().map(String::as_str).filter(move |s| *s != self.cx.node)
    }

    fn liveness(&self, snap: &Snapshot, node: &str) -> Liveness {
        snap.liveness(node).unwrap_or(Liveness::Down)
    }

    fn peer_wire(&self, snap: &Snapshot, node: &str) -> Option<GroupWire> {
        let peer = snap.peer(node)?;
        NodeWire::decode(&peer.state)?.group(self.index)
    }

    fn peer_leaving(&self, snap: &Snapshot, node: &str) -> bool {
        snap.peer(node).and_then(|p| NodeWire::decode(&p.state)).is_some_and(|w| w.leaving())
    }

    /// A live peer that can take the group: up, standby for it, not leaving.
    fn eligible(&self, snap: &Snapshot, node: &str) -> bool {
        super::eligible_peer(snap, self.index, node)
    }

    fn other_servers(&self) -> Vec<String> {
        self.others().map(str::to_string).collect()
    }

    /// Is there a witness verdict, taken after we lost a peer, that says we are not isolated?
    fn witness_says(&self, since: Option<Instant>) -> WitnessView {
        if !self.cx.witness_configured {
            return WitnessView::NoWitness;
        }
        let w = self.cx.witness.borrow().clone();
        let fresh = match (w.checked_at, since) {
            (Some(at), Some(since)) => at >= since,
            (Some(_), None) => true,
            (None, _) => false,
        };
        match (fresh, w.verdict) {
            (true, Some(Verdict::Reachable { .. })) | (true, Some(Verdict::NoWitness)) => WitnessView::Reachable,
            (true, Some(Verdict::Isolated { .. })) => WitnessView::Isolated,
            _ => WitnessView::Pending,
        }
    }

    fn set_vouch(&mut self, vouch: bool) {
        if self.vouch == vouch {
            return;
        }
        self.vouch = vouch;
        self.publish_wire();
        if !vouch {
            // After publish_wire returned, no heartbeat carries our vouch any more.
            self.vouch_cleared_at = Some(Instant::now());
        }
    }

    fn publish_wire(&self) {
        self.cx.publisher.set(self.index, GroupWire { role: self.role, vouch: self.vouch });
    }

    fn set_role(&mut self, role: Role, why: &str) {
        if self.role == role {
            return;
        }
        self.cx.events.record(&self.group.name, "role", "", format!("{} -> {}: {why}", self.role, role));
        self.role = role;
        self.active.send_replace(role == Role::Active);
        self.publish_wire();
        self.publish();
    }

    async fn read_record(&mut self, now: Instant) {
        if now < self.next_read {
            return;
        }
        self.next_read = now + self.cx.timing.renew_interval;
        match tokio::time::timeout(self.cx.timing.renew_interval, self.cx.store.read(&self.group.name)).await {
            Ok(Ok(r)) => self.record = r,
            Ok(Err(e)) => self.note_error(e.code(), &e.to_string()),
            Err(_) => self.note_error("TDM-LEASE-005", "lease store read timed out"),
        }
    }

    fn note_error(&mut self, code: &str, message: &str) {
        let text = format!("[{code}] {message}");
        if self.last_error != text {
            self.cx.events.record(&self.group.name, "lease", code, message.to_string());
            self.last_error = text;
        }
    }

    async fn standby_step(&mut self, snap: &Snapshot, now: Instant) {
        if self.failed_here {
            self.set_vouch(true);
            self.set_role(Role::Failed, "a resource failed on this node");
            return;
        }
        if self.cx.leaving() {
            self.set_vouch(true);
            self.set_role(Role::Offline, "node leaving");
            return;
        }
        self.read_record(now).await;
        let record = self.record.clone();
        let stopped = record.as_ref().is_some_and(|r| r.stopped);
        match record.as_ref().and_then(|r| r.holder.clone()) {
            Some(h) if h.node != self.cx.node && self.liveness(snap, &h.node) != Liveness::Down => {
                // The holder is alive: we do not contend, and we say so.
                self.holder_down_since = None;
                self.free_seen = None;
                self.set_vouch(true);
            }
            Some(h) => {
                // The holder is down in our view (or is an earlier incarnation of ourselves). It went down at its
                // last heartbeat + timeout (a witness check started after that instant speaks of this partition).
                self.free_seen = None;
                let down_at = snap.peer(&h.node).and_then(|p| p.down_at(self.w())).map_or(now, |t| t.min(now));
                let since = *self.holder_down_since.get_or_insert(down_at);
                if stopped {
                    self.set_vouch(true);
                    return;
                }
                self.set_vouch(false);
                let quiet =
                    self.vouch_cleared_at.is_none_or(|t| now.saturating_duration_since(t) >= contender_wait(self.w()));
                if !quiet {
                    return;
                }
                match self.witness_says(Some(since)) {
                    WitnessView::Isolated => {
                        if !self.isolation_reported {
                            self.isolation_reported = true;
                            let e = GroupError::Isolated {
                                group: self.group.name.clone(),
                                action: format!("not taking over from {}", h.node),
                            };
                            self.cx.events.record(&self.group.name, "witness", e.code(), e.to_string());
                        }
                        return;
                    }
                    WitnessView::Pending => return,
                    WitnessView::Reachable | WitnessView::NoWitness => {}
                }
                // A higher-priority live standby goes first; we follow only if it has not for a whole ttl wait.
                let my_prio = self.group.priority_of(&self.cx.node).unwrap_or(usize::MAX);
                let better_alive = self
                    .group
                    .servers
                    .iter()
                    .take(my_prio)
                    .any(|s| s != &h.node && s != &self.cx.node && self.eligible(snap, s));
                if better_alive && now.saturating_duration_since(since) < 2 * contender_wait(self.cx.timing.ttl) {
                    return;
                }
                self.try_acquire(Some((h.node.clone(), since))).await;
            }
            None => {
                // Free (released, or never taken).
                self.holder_down_since = None;
                if stopped {
                    self.free_seen = None;
                    self.set_vouch(true);
                    return;
                }
                let version = record.as_ref().map_or(0, |r| r.version);
                let since = match self.free_seen {
                    Some((v, t)) if v == version => t,
                    _ => {
                        self.free_seen = Some((version, now));
                        now
                    }
                };
                // A free item says nothing about a live peer that still runs the group (the item was deleted,
                // or released by an earlier incarnation of that peer): its heartbeats do.
                if let Some(p) = super::peer_running(snap, self.index, self.others()) {
                    let e = GroupError::PeerStillRunning { group: self.group.name.clone(), peer: p.to_string() };
                    self.note_error(e.code(), &e.to_string());
                    return;
                }
                // With a peer lost, a free lease is taken only on a witness's word that we are not the isolated one.
                if self.peer_down_since.is_some()
                    && matches!(self.witness_says(self.peer_down_since), WitnessView::Isolated | WitnessView::Pending)
                {
                    return;
                }
                let waited_out = now.saturating_duration_since(since) >= contender_wait(self.cx.timing.ttl);
                if !(self.my_turn_for_free(record.as_ref(), snap, now) || waited_out) {
                    return;
                }
                self.try_acquire(None).await;
            }
        }
    }

    /// Tries to take the lease: over from `lost` (the holder we lost, and when) or, without it, only if free.
    /// Starts the group when it is ours.
    async fn try_acquire(&mut self, lost: Option<(String, Instant)>) {
        let (ttl, me) = (self.cx.timing.ttl, self.me());
        let store = self.cx.store.clone();
        let call = async {
            if lost.is_some() {
                store.acquire(&self.group.name, &me, ttl).await
            } else {
                store.acquire_if_free(&self.group.name, &me, ttl).await
            }
        };
        match tokio::time::timeout(self.cx.timing.renew_interval, call).await {
            Ok(Ok(Acquire::Acquired(lease))) => {
                let how = match &lost {
                    Some((from, _)) => format!("took over the lease from {from} (token {})", lease.token),
                    None => format!("acquired the free lease (token {})", lease.token),
                };
                self.cx.events.record(&self.group.name, "lease", "", how);
                self.start_group(lease, lost.map(|(_, since)| since)).await;
            }
            Ok(Ok(Acquire::Busy { .. })) | Ok(Err(LeaseError::LostRace { .. })) => {
                // Someone else wrote it: read again at once rather than after a renew interval.
                if lost.is_none() {
                    self.next_read = Instant::now();
                }
            }
            Ok(Err(e)) => self.note_error(e.code(), &e.to_string()),
            Err(_) => self.note_error("TDM-LEASE-005", "lease acquisition timed out"),
        }
    }

    /// A free lease is ours to take now: we are the move target, or (no live target) the highest-priority live
    /// standby, once the start-up wait (peers appear) is over.
    fn my_turn_for_free(&self, record: Option<&LeaseRecord>, snap: &Snapshot, now: Instant) -> bool {
        if let Some(t) = record.and_then(|r| r.target.as_deref()) {
            if t == self.cx.node {
                return true;
            }
            if self.eligible(snap, t) {
                return false;
            }
        }
        if now < self.ready_at {
            return false;
        }
        // A higher-priority server that is up goes first, also while it is still starting (offline, not
        // leaving): otherwise the node whose daemon happens to be ready first would win the initial placement.
        let my_prio = self.group.priority_of(&self.cx.node).unwrap_or(usize::MAX);
        !self.group.servers.iter().take(my_prio).any(|s| {
            s != &self.cx.node
                && self.liveness(snap, s) == Liveness::Up
                && !self.peer_leaving(snap, s)
                && self.peer_wire(snap, s).is_some_and(|g| matches!(g.role, Role::Standby | Role::Offline))
        })
    }

    /// The deadline by which the group must be stopped here, and why it may run until then.
    fn deadline(&self, snap: &Snapshot) -> (Option<Instant>, Option<&'static str>) {
        let lease = self.keeper.as_ref().map(LeaseKeeper::state);
        run_deadline(lease.as_ref(), snap, &self.other_servers(), self.index, self.w())
    }

    async fn active_step(&mut self, snap: &Snapshot, now: Instant) {
        if let Some(LeaseState::Held { record: Some(r), .. }) = self.keeper.as_ref().map(LeaseKeeper::state) {
            self.record = Some(r);
        }
        if let Some(slept) = crate::fence::clock::suspended_since(self.suspended_at_start) {
            // Every deadline of ours is an Instant, which stood still while the machine slept: the lease may well
            // be someone else's by now. Stop at once; the fencer (on CLOCK_BOOTTIME) may already have.
            let e = GroupError::LeaseLost {
                group: self.group.name.clone(),
                cause: format!("the machine was suspended for {} ms while running the group", slept.as_millis()),
            };
            self.cx.events.record(&self.group.name, "fence", e.code(), e.to_string());
            self.stop_group(StopReason::Fence("suspended".into()), false).await;
            return;
        }
        let (deadline, lost) = self.deadline(snap);
        if let Some(code) = lost {
            let e = GroupError::LeaseLost { group: self.group.name.clone(), cause: format!("renewal refused: {code}") };
            self.cx.events.record(&self.group.name, "fence", e.code(), e.to_string());
            self.stop_group(StopReason::Fence(code.to_string()), false).await;
            return;
        }
        if deadline.is_none_or(|d| now + self.stop_lead() >= d) {
            let e = GroupError::LeaseLost {
                group: self.group.name.clone(),
                cause: "the lease was not renewed in time and not every peer vouches".into(),
            };
            self.cx.events.record(&self.group.name, "fence", e.code(), e.to_string());
            self.stop_group(StopReason::Fence("deadline".into()), true).await;
            return;
        }
        let record = self.record.clone();
        if record.as_ref().is_some_and(|r| r.stopped) {
            self.stop_group(StopReason::Admin, true).await;
            return;
        }
        if let Some(t) = record.as_ref().and_then(|r| r.target.clone())
            && t != self.cx.node
        {
            self.stop_group(StopReason::Move(t), true).await;
            return;
        }
        if self.witness_says(self.peer_down_since) == WitnessView::Isolated && self.peer_down_since.is_some() {
            let action = self.cx.config.np_resolution.on_isolated;
            let e = GroupError::Isolated { group: self.group.name.clone(), action: format!("action {action:?}") };
            match action {
                IsolationAction::Warn => {
                    if !self.isolation_reported {
                        self.isolation_reported = true;
                        self.cx.events.record(&self.group.name, "witness", e.code(), e.to_string());
                    }
                }
                IsolationAction::StopGroups => {
                    self.cx.events.record(&self.group.name, "witness", e.code(), e.to_string());
                    self.stop_group(StopReason::Isolated, true).await;
                }
                IsolationAction::Shutdown => {
                    self.cx.events.record(&self.group.name, "witness", e.code(), e.to_string());
                    self.stop_group(StopReason::Isolated, true).await;
                    self.cx.shutdown_node("isolated from every witness").await;
                }
            }
            return;
        }
        self.failback_check(snap, now).await;
    }

    /// failback = "auto": a higher-priority server that has been an eligible standby for two heartbeat timeouts
    /// gets the group back (by a move request, so the usual stop-before-start order holds).
    async fn failback_check(&mut self, snap: &Snapshot, now: Instant) {
        if self.group.failback != crate::config::Failback::Auto {
            return;
        }
        let my_prio = self.group.priority_of(&self.cx.node).unwrap_or(usize::MAX);
        let best = self.group.servers.iter().take(my_prio).find(|s| self.eligible(snap, s)).cloned();
        let Some(best) = best else {
            self.failback_since = None;
            return;
        };
        let since = match &self.failback_since {
            Some((n, t)) if *n == best => *t,
            _ => {
                self.failback_since = Some((best.clone(), now));
                now
            }
        };
        if now.saturating_duration_since(since) < 2 * self.w() {
            return;
        }
        self.failback_since = None;
        self.cx.events.record(&self.group.name, "admin", "", format!("failback to {best} (failback = auto)"));
        if let Err(e) = self.cx.store.request_move(&self.group.name, Some(&best)).await {
            self.note_error(e.code(), &e.to_string());
        }
    }

    /// Starts every resource in order under `lease`; on failure stops what started and marks this node failed.
    async fn start_group(&mut self, lease: crate::membership::lease::Lease, lost_peer_at: Option<Instant>) {
        self.token = lease.token;
        self.keeper = Some(LeaseKeeper::start(
            self.cx.store.clone(),
            self.group.name.clone(),
            self.cx.node.clone(),
            lease,
            self.cx.timing,
        ));
        self.free_seen = None;
        self.suspended_at_start = crate::fence::clock::suspended_ns();
        self.set_role(Role::Starting, &format!("lease token {}", lease.token));
        if let Err(e) = self.arm_fencer(lease.valid_until).await {
            // Running the group with nothing to stop it if tandemd dies would break the one-active-node rule.
            let e = GroupError::ActivationFailed {
                group: self.group.name.clone(),
                resource: "(fencer)".into(),
                attempts: 1,
                detail: format!("[{}] {e}", e.code()),
            };
            self.last_error = e.to_string();
            self.cx.events.record(&self.group.name, "fence", e.code(), format!("{e}; not starting here"));
            self.stop_group(StopReason::Failed, true).await;
            self.failed_here = true;
            self.set_vouch(true);
            self.set_role(Role::Failed, "the fencer could not be armed");
            return;
        }
        self.start_arming();
        let inv = Invocation { lease_token: Some(self.token) };
        for i in 0..self.slots.len() {
            match self.start_with_retries(i, inv, "start").await {
                Attempts::Started => {}
                Attempts::Fenced => {
                    self.slots[i].state = "failed";
                    self.stop_group(StopReason::Fence("deadline during start".into()), true).await;
                    return;
                }
                Attempts::Failed { attempts, detail } => {
                    let e = GroupError::ActivationFailed {
                        group: self.group.name.clone(),
                        resource: self.slots[i].config.name.clone(),
                        attempts,
                        detail: detail.clone(),
                    };
                    self.resource_failed(i, &e, detail, "; failing over");
                    let final_action = self.slots[i].config.activation_final_action;
                    self.stop_group(StopReason::Failed, true).await;
                    self.failed_here = true;
                    self.set_vouch(true);
                    self.set_role(Role::Failed, "activation failed");
                    self.final_action(final_action, "activation failed").await;
                    return;
                }
            }
            self.slots[i].state = "running";
            self.slots[i].last_error.clear();
        }
        if let Some(t) = lost_peer_at {
            let took = Instant::now().saturating_duration_since(t);
            self.failovers += 1;
            self.last_takeover = Some(took);
            self.cx.events.record(
                &self.group.name,
                "role",
                "",
                format!("failover complete: running {} ms after the holder was lost", took.as_millis()),
            );
        }
        self.set_role(Role::Active, "every resource started");
    }

    /// Starts resource i. A start that failed only because the AWS API could not be asked (unreachable,
    /// throttled, failing on its side: TDM-AWS-101/102) says nothing about this node: it is tried again in place,
    /// after [`AWS_TRANSIENT_BACKOFF`], before it counts as a failed attempt (which marks the node failed and moves
    /// the group — to a node that would meet the same API).
    async fn start_resource(&self, i: usize, inv: Invocation) -> Result<(), ResourceError> {
        let imp = self.slots[i].imp.clone();
        let mut waits = AWS_TRANSIENT_BACKOFF.iter();
        loop {
            match imp.start(&inv).await {
                Err(e) if AWS_TRANSIENT_CODES.contains(&e.code) => {
                    let Some(wait) = waits.next() else { return Err(e) };
                    let name = &self.slots[i].config.name;
                    let why = format!("start of {name}: {e}; the AWS API failed, trying again in {wait:?}");
                    self.cx.events.record(&self.group.name, "resource", e.code(), why);
                    tokio::time::sleep(*wait).await;
                }
                other => return other,
            }
        }
    }

    /// Runs a resource call while the group may still run here; gives up (dropping the call, which kills its
    /// process group) when the deadline comes within the stop lead.
    async fn guarded<'a, F, Fut, T>(&'a self, call: F) -> Guarded<T>
    where
        F: FnOnce(&'a Self) -> Fut,
        Fut: std::future::Future<Output = T> + 'a,
    {
        let fut = call(self);
        tokio::pin!(fut);
        let mut ticker = tokio::time::interval(self.tick());
        loop {
            tokio::select! {
                r = &mut fut => return Guarded::Done(r),
                _ = ticker.tick() => {
                    let snap = self.cx.heartbeat.borrow().clone();
                    let (deadline, lost) = self.deadline(&snap);
                    if lost.is_some() || deadline.is_none_or(|d| Instant::now() + self.stop_lead() >= d) {
                        return Guarded::Fenced;
                    }
                }
            }
        }
    }

    /// Stops every resource in reverse order, then (if `release`) frees the lease. When the stop is a fence, a
    /// watchdog fires at the deadline: if the resources are not stopped by then, the node is shut down.
    async fn stop_group(&mut self, reason: StopReason, release: bool) {
        let why = match &reason {
            StopReason::Fence(c) => format!("self-fencing ({c})"),
            StopReason::Admin => "stopped by the operator".into(),
            StopReason::Move(t) => format!("moving to {t}"),
            StopReason::Isolated => "isolated".into(),
            StopReason::Failed => "activation failed".into(),
            StopReason::Leave => "node leaving".into(),
        };
        self.set_role(Role::Stopping, &why);
        let snap = self.cx.heartbeat.borrow().clone();
        let watchdog = match reason {
            StopReason::Fence(_) | StopReason::Isolated => self.deadline(&snap).0,
            _ => None,
        };
        let ok = match watchdog {
            Some(d) => match tokio::time::timeout_at(tokio::time::Instant::from_std(d), self.stop_resources()).await {
                Ok(ok) => ok,
                Err(_) => {
                    let e = GroupError::StopMissedDeadline { group: self.group.name.clone() };
                    self.cx.events.record(&self.group.name, "fence", e.code(), e.to_string());
                    if self.fencer_covered_the_stop().await {
                        self.cx.events.record(
                            &self.group.name,
                            "fence",
                            "",
                            "forced stop: the fencer killed the group's cgroups at the deadline",
                        );
                        // What ran is dead: confirm it, so that this node can serve as a standby again.
                        self.confirm_forced_stop().await
                    } else {
                        self.cx.shutdown_node("the group did not stop before its lease ran out").await;
                        false
                    }
                }
            },
            None => self.stop_resources().await,
        };
        self.stop_arming();
        if ok {
            self.disarm_fencer().await;
        }
        if let Some(k) = self.keeper.take() {
            k.stop();
        }
        if release && ok {
            let store = self.cx.store.clone();
            match tokio::time::timeout(
                self.cx.timing.renew_interval,
                store.release(&self.group.name, &self.cx.node, self.token),
            )
            .await
            {
                Ok(Ok(())) => {
                    self.cx.events.record(&self.group.name, "lease", "", format!("released (token {})", self.token))
                }
                Ok(Err(e)) => self.note_error(e.code(), &e.to_string()),
                Err(_) => self.note_error("TDM-LEASE-005", "lease release timed out (it will expire)"),
            }
        }
        self.record = None;
        self.next_read = Instant::now();
        if ok {
            self.set_role(Role::Standby, "every resource stopped");
        } else {
            self.failed_here = true;
            self.set_role(Role::Failed, "a resource did not stop");
        }
    }

    /// Stops each resource in reverse start order with its retries; a resource that will not stop triggers its
    /// deactivation final action. True when every resource stopped.
    async fn stop_resources(&mut self) -> bool {
        let inv = Invocation { lease_token: Some(self.token) };
        let mut all = true;
        for i in (0..self.slots.len()).rev() {
            let attempts = 1 + self.slots[i].config.deactivation_retries;
            self.slots[i].state = "stopping";
            self.publish();
            let mut failure = None;
            for attempt in 1..=attempts {
                match self.slots[i].imp.stop(&inv).await {
                    Ok(()) => {
                        failure = None;
                        break;
                    }
                    Err(e) => {
                        self.cx.events.record(
                            &self.group.name,
                            "resource",
                            e.code(),
                            format!("stop of {} failed (attempt {attempt}/{attempts}): {e}", self.slots[i].config.name),
                        );
                        failure = Some(e.to_string());
                    }
                }
            }
            match failure {
                None => {
                    self.slots[i].state = "stopped";
                    self.slots[i].last_error.clear();
                }
                Some(detail) => {
                    all = false;
                    let e = GroupError::DeactivationFailed {
                        group: self.group.name.clone(),
                        resource: self.slots[i].config.name.clone(),
                        attempts,
                        detail: detail.clone(),
                    };
                    self.resource_failed(i, &e, detail, "");
                    let action = self.slots[i].config.deactivation_final_action;
                    self.final_action(action, "a resource did not stop").await;
                }
            }
        }
        all
    }

    /// Resource i failed for good (`e`: its activation or deactivation failed): marks it, keeps the error for the
    /// status and records the event (`e`, then `suffix`).
    fn resource_failed(&mut self, i: usize, e: &GroupError, detail: String, suffix: &str) {
        self.slots[i].state = "failed";
        self.slots[i].last_error = detail;
        self.last_error = e.to_string();
        self.cx.events.record(&self.group.name, "recovery", e.code(), format!("{e}{suffix}"));
    }

    async fn final_action(&self, action: FinalAction, why: &str) {
        match action {
            FinalAction::None => {}
            FinalAction::StopCluster => {
                self.cx.events.record(&self.group.name, "recovery", "", format!("final action stop_cluster: {why}"));
                self.cx.set_leaving();
            }
            FinalAction::Shutdown => self.cx.shutdown_node(why).await,
        }
    }

    fn publish(&self) {
        let snap = self.cx.heartbeat.borrow().clone();
        let holder = self.record.as_ref().and_then(|r| r.holder.as_ref()).map(|h| h.node.clone());
        let active_on = if self.role.is_running() {
            Some(self.cx.node.clone())
        } else {
            // Who runs it, as far as we can tell: a peer that says so, else the lease's holder.
            self.others()
                .find(|s| self.peer_wire(&snap, s).is_some_and(|g| g.role.is_running()))
                .map(str::to_string)
                .or(holder)
        };
        let valid_until = match self.keeper.as_ref().map(LeaseKeeper::state) {
            Some(LeaseState::Held { valid_until, .. }) => Some(valid_until),
            _ => None,
        };
        let view = GroupView {
            name: self.group.name.clone(),
            servers: self.group.servers.clone(),
            role: self.role,
            active_on,
            token: self.token,
            valid_until,
            record: self.record.clone(),
            resources: self
                .slots
                .iter()
                .map(|s| ResourceView {
                    name: s.config.name.clone(),
                    kind: s.imp.kind(),
                    state: s.state,
                    last_error: s.last_error.clone(),
                })
                .collect(),
            failovers: self.failovers,
            last_takeover: self.last_takeover,
            last_error: self.last_error.clone(),
        };
        match self.view.lock() {
            Ok(mut v) => *v = view,
            Err(poisoned) => *poisoned.into_inner() = view,
        }
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        // A detached arming task would go on extending the fencer's deadline for a runner that is gone.
        self.stop_arming();
    }
}

/// How the start attempts of one resource ended.
enum Attempts {
    Started,
    /// Every attempt failed (or one was fatal); `detail` is the last error.
    Failed {
        attempts: u32,
        detail: String,
    },
    /// The lease deadline came during a start.
    Fenced,
}

enum Guarded<T> {
    Done(T),
    Fenced,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WitnessView {
    NoWitness,
    Reachable,
    Isolated,
    /// No verdict taken since the peer was lost yet.
    Pending,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::wire::{GroupWire, NodeWire};
    use crate::membership::heartbeat::PeerStatus;

    const W: Duration = Duration::from_millis(500);

    fn peer(node: &str, liveness: Liveness, vouch: bool, echo_sent: Option<Instant>) -> PeerStatus {
        PeerStatus {
            node: node.into(),
            liveness,
            links: Vec::new(),
            state: NodeWire { flags: 0, groups: vec![GroupWire { role: Role::Standby, vouch }] }.encode(),
            echo_sent,
            last_heard: None,
        }
    }

    fn snap(peers: Vec<PeerStatus>) -> Snapshot {
        Snapshot { peers, unattributed: Vec::new(), send_errors: 0 }
    }

    fn held(valid_until: Instant) -> LeaseState {
        LeaseState::Held { token: 3, valid_until, record: None }
    }

    fn group_with_cgroup(cg: &str) -> Group {
        use crate::config::resources::{Exec, ResourceKind};
        let mut exec = Exec::new("true");
        exec.cgroup = Some(cg.to_string());
        let mut g = Group::new("g", &["a", "b"]);
        g.resources.push(Resource::new("app", ResourceKind::Exec(exec)));
        g
    }

    #[test]
    fn an_absolute_cgroup_must_be_inside_a_cgroup2_mount() {
        let e = resolve_cgroups(&group_with_cgroup("/system.slice/tandem-app.service")).expect_err("not a mount");
        assert_eq!(e.code, resources::CODE_CGROUP);
        assert!(e.to_string().contains("drop the leading slash"), "{e}");
        if let Some(mount) = crate::fence::killer::cgroup2_mount() {
            let inside = mount.join("system.slice/app.service").display().to_string();
            assert_eq!(resolve_cgroups(&group_with_cgroup(&inside)).expect("inside the mount"), vec![inside.clone()]);
            let relative = resolve_cgroups(&group_with_cgroup("system.slice/app.service")).expect("relative");
            assert_eq!(relative, vec![inside]);
        }
    }

    #[test]
    fn the_deadline_is_the_later_of_lease_and_vouch() {
        let t = Instant::now();
        let others = vec!["b".to_string()];
        let vouching = snap(vec![peer("b", Liveness::Up, true, Some(t))]);
        let vouch_until = t + holder_validity(W);
        let lease = held(t + Duration::from_millis(100));
        assert_eq!(run_deadline(Some(&lease), &vouching, &others, 0, W), (Some(vouch_until), None));
        let long = held(t + Duration::from_secs(5));
        assert_eq!(run_deadline(Some(&long), &vouching, &others, 0, W), (Some(t + Duration::from_secs(5)), None));
    }

    #[test]
    fn no_vouch_without_every_peer_vouching_up_and_echoing() {
        let t = Instant::now();
        let others = vec!["b".to_string(), "c".to_string()];
        let lease = held(t + Duration::from_millis(800));
        let cases = [
            snap(vec![peer("b", Liveness::Up, true, Some(t))]),
            snap(vec![peer("b", Liveness::Up, true, Some(t)), peer("c", Liveness::Up, false, Some(t))]),
            snap(vec![peer("b", Liveness::Up, true, Some(t)), peer("c", Liveness::Down, true, Some(t))]),
            snap(vec![peer("b", Liveness::Up, true, Some(t)), peer("c", Liveness::Up, true, None)]),
        ];
        for s in cases {
            assert_eq!(run_deadline(Some(&lease), &s, &others, 0, W), (Some(t + Duration::from_millis(800)), None));
        }
        assert_eq!(run_deadline(None, &snap(Vec::new()), &others, 0, W), (None, None), "neither: stop now");
    }

    #[test]
    fn a_lease_lost_to_another_holder_ends_the_right_at_once_even_with_a_vouch() {
        let t = Instant::now();
        let others = vec!["b".to_string()];
        let vouching = snap(vec![peer("b", Liveness::Up, true, Some(t))]);
        let lost = LeaseState::Lost { token: 3, code: "TDM-LEASE-002" };
        assert_eq!(run_deadline(Some(&lost), &vouching, &others, 0, W), (None, Some("TDM-LEASE-002")));
        // Run out by the clock: the vouch may still carry the group (the lease store was unreachable).
        let expired = LeaseState::Lost { token: 3, code: "deadline" };
        assert_eq!(run_deadline(Some(&expired), &vouching, &others, 0, W), (Some(t + holder_validity(W)), None));
    }
}
