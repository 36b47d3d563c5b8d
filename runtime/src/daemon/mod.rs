//! tandemd: one node of the cluster. Loads the config, finds which node it is, and runs the heartbeat service,
//! the witness checks, one runner per failover group (lease-guarded), the control API on a Unix socket and,
//! optionally, the Prometheus endpoint. `bin/tandemd.rs` only parses arguments and sets up logging.

pub mod api;
pub mod client;
pub mod context;
pub mod events;
pub mod metrics;
pub mod mirror_api;
pub mod peer;
pub mod sd_notify;
pub mod status;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch};

use self::context::{NodeContext, StatePublisher, WitnessState};
use self::events::EventLog;
use crate::config::{self, Config};
use crate::group::runner::{Command, GroupHandle, Runner};
use crate::membership::heartbeat::packet::HeartbeatKey;
use crate::membership::heartbeat::peer::Liveness;
use crate::membership::heartbeat::{Heartbeats, Plan, Snapshot};
use crate::membership::lease::{LeaseStore, LeaseTiming};
use crate::membership::witness::Witnesses;

/// How long a clean stop waits for the groups to move away before it exits anyway.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(120);
/// Default final action `shutdown` / watchdog command: an immediate power-off, as a hardware watchdog would.
pub const DEFAULT_SHUTDOWN_COMMAND: &str = "systemctl poweroff --force --force";
pub const DEFAULT_SOCKET: &str = "/run/tandem/tandemd.sock";
pub const DEFAULT_STATE_DIR: &str = "/var/lib/tandem";
/// Where `tandemd fencer` listens by default (and the rendered units put it).
pub const DEFAULT_FENCER_SOCKET: &str = "/run/tandem/fencer.sock";
/// How long tandemd waits at start for the fencer's socket to answer (systemd starts both units together).
pub const FENCER_START_WAIT: Duration = Duration::from_secs(10);

/// How tandemd was started.
#[derive(Debug, Clone)]
pub struct Options {
    pub config: PathBuf,
    pub node: Option<String>,
    pub state_dir: PathBuf,
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
    pub shutdown_command: String,
    /// The fencer's socket (None: no fencer; refused when an exec resource names a cgroup).
    pub fencer: Option<PathBuf>,
}

/// Why tandemd could not start (or stopped); `code()` is stable.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("{0}")]
    Config(String),
    #[error("this machine is none of the cluster's nodes: {0}; pass --node NAME")]
    SelfNotFound(String),
    #[error("heartbeat key: {0}")]
    Key(String),
    #[error("{0}")]
    Heartbeat(String),
    #[error("lease timing: {0}")]
    Timing(String),
    #[error("group {group}: resource cannot be built: {detail}")]
    Resource { group: String, detail: String },
    #[error("control socket {path}: {source}; check the directory exists and is writable, and no other tandemd runs")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("state directory {path}: {source}")]
    StateDir { path: PathBuf, source: std::io::Error },
    #[error("metrics endpoint {addr}: {source}")]
    Metrics { addr: SocketAddr, source: std::io::Error },
    #[error(
        "exec resource {resource} names a cgroup, but tandemd runs without a fencer; start `tandemd fencer` (unit \
         tandem-fencer.service) and pass --fencer SOCKET"
    )]
    FencerRequired { resource: String },
    #[error("fencer: {0}")]
    Fencer(String),
}

impl DaemonError {
    pub fn code(&self) -> &'static str {
        match self {
            DaemonError::Config(_) => "TDM-NODE-001",
            DaemonError::SelfNotFound(_) => "TDM-NODE-002",
            DaemonError::Key(_) => "TDM-NODE-003",
            DaemonError::Heartbeat(_) => "TDM-NODE-004",
            DaemonError::Timing(_) => "TDM-NODE-005",
            DaemonError::Resource { .. } => "TDM-NODE-006",
            DaemonError::Socket { .. } => "TDM-NODE-007",
            DaemonError::StateDir { .. } => "TDM-NODE-008",
            DaemonError::Metrics { .. } => "TDM-NODE-009",
            // TDM-NODE-015 (the event that stop_instance fencing was not carried out) is retired: never reuse it.
            DaemonError::FencerRequired { .. } => "TDM-NODE-016",
            DaemonError::Fencer(_) => "TDM-NODE-017",
        }
    }
}

/// The running node, shared by the API and the signal handler.
pub struct Daemon {
    pub cx: Arc<NodeContext>,
    pub groups: Vec<GroupHandle>,
    pub heartbeats: Arc<Heartbeats>,
    pub socket: PathBuf,
    /// The peer API's TLS (None: off, `peer_api` says why).
    pub peer_tls: Option<peer::PeerTls>,
    pub peer_api: std::sync::Mutex<String>,
    pub peer_tls_rejected: std::sync::atomic::AtomicU64,
    pub monitors: Vec<crate::monitors::runner::MonitorHandle>,
    /// Keeps the "always active" watch of node-wide monitors open.
    _always: watch::Sender<bool>,
    stop: watch::Sender<bool>,
}

impl Daemon {
    /// Asks the daemon to leave the cluster cleanly (groups move away) and exit.
    pub fn request_stop(&self) {
        self.stop.send_replace(true);
    }

    pub fn snapshot(&self) -> Snapshot {
        self.cx.heartbeat.borrow().clone()
    }

    pub fn group(&self, name: &str) -> Option<&GroupHandle> {
        self.groups.iter().find(|g| g.name == name)
    }

    /// A peer that can take group `index` now: up, standby for it, not leaving.
    pub fn eligible_peer(&self, index: usize, node: &str) -> bool {
        crate::group::eligible_peer(&self.snapshot(), index, node)
    }

    /// The highest-priority peer that can take group `index` now.
    pub fn next_server(&self, index: usize) -> Option<String> {
        let group = self.cx.config.groups.get(index)?;
        group.servers.iter().filter(|s| **s != self.cx.node).find(|s| self.eligible_peer(index, s)).cloned()
    }

    /// Clean stop: every group this node runs moves to the next live server (or stops), then the runners go
    /// offline. Bounded by [`LEAVE_TIMEOUT`].
    pub async fn leave(&self) {
        self.cx.events.record("", "daemon", "", "clean stop: moving groups away");
        self.cx.set_leaving();
        let mut waits = Vec::new();
        for g in &self.groups {
            let target = self.next_server(g.index);
            let (done, wait) = oneshot::channel();
            if g.send(Command::Leave { target, done }).await {
                waits.push(wait);
            }
        }
        let all = async {
            for w in waits {
                let _ = w.await;
            }
        };
        if tokio::time::timeout(LEAVE_TIMEOUT, all).await.is_err() {
            self.cx.events.record("", "daemon", "TDM-NODE-011", "clean stop timed out; exiting anyway");
        }
    }
}

/// The fencer client when `--fencer` is given, once its socket answers (waiting up to [`FENCER_START_WAIT`]: systemd
/// starts both units together). A config whose exec resources name cgroups needs one: nothing else would kill them
/// when tandemd is gone.
async fn connect_fencer(
    config: &Config,
    path: Option<&std::path::Path>,
) -> Result<Option<Arc<crate::fence::client::FenceClient>>, DaemonError> {
    let Some(path) = path else {
        let with_cgroup = config.groups.iter().flat_map(|g| &g.resources).find(|r| match &r.kind {
            config::ResourceKind::Exec(e) => e.cgroup.is_some(),
            _ => false,
        });
        return match with_cgroup {
            Some(r) => Err(DaemonError::FencerRequired { resource: r.name.clone() }),
            None => Ok(None),
        };
    };
    let client = crate::fence::client::FenceClient::new(path);
    let until = Instant::now() + FENCER_START_WAIT;
    loop {
        match client.request(&crate::fence::protocol::Request::State).await {
            Ok(_) => return Ok(Some(Arc::new(client))),
            Err(e) if Instant::now() >= until => return Err(DaemonError::Fencer(format!("[{}] {e}", e.code()))),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Which node this machine is: `--node`, else the node whose address can be bound here.
fn find_self(config: &Config, name: Option<&str>) -> Result<String, DaemonError> {
    let mut local: Vec<IpAddr> = Vec::new();
    if name.is_none() {
        for n in &config.nodes {
            for a in config.addresses_of(n) {
                // Binding succeeds only for an address of this machine: no interface listing needed.
                if std::net::UdpSocket::bind((a, 0)).is_ok() {
                    local.push(IpAddr::V4(a));
                }
            }
        }
    }
    config.find_self(name, &local).map(|n| n.name.clone()).map_err(|e| DaemonError::SelfNotFound(e.to_string()))
}

/// Starts every part of the node and returns once it is running.
pub async fn start(opts: &Options) -> Result<Arc<Daemon>, DaemonError> {
    let config = config::load(&opts.config).map_err(|e| DaemonError::Config(e.to_string()))?;
    let config = Arc::new(config);
    let node = find_self(&config, opts.node.as_deref())?;
    std::fs::create_dir_all(&opts.state_dir)
        .map_err(|source| DaemonError::StateDir { path: opts.state_dir.clone(), source })?;
    let key = HeartbeatKey::load(&config.secrets.heartbeat_key_file).map_err(|e| DaemonError::Key(e.to_string()))?;
    let timing = LeaseTiming::new(config.arbitration.ttl, config.arbitration.renew_interval)
        .map_err(|e| DaemonError::Timing(e.to_string()))?;

    let fencer = connect_fencer(&config, opts.fencer.as_deref()).await?;
    let events = Arc::new(
        EventLog::new(&node, Some(&opts.state_dir))
            .map_err(|source| DaemonError::StateDir { path: opts.state_dir.clone(), source })?,
    );
    let plan = Plan::from_config(&config, &node).map_err(|e| DaemonError::Heartbeat(e.to_string()))?;
    let heartbeats =
        Arc::new(Heartbeats::start(plan, key, Vec::new()).await.map_err(|e| DaemonError::Heartbeat(e.to_string()))?);

    let mut aws = aws_config::defaults(aws_config::BehaviorVersion::latest());
    if let Some(region) = config.lease_region() {
        aws = aws.region(aws_config::Region::new(region));
    }
    let aws = aws.load().await;
    let store = Arc::new(LeaseStore::new(aws_sdk_dynamodb::Client::new(&aws), config.lease_table()));

    let peer_tls = match peer::PeerTls::load(&config.secrets) {
        Ok(t) => Some(t),
        Err(e) => {
            events.record("", "daemon", e.code(), format!("peer API and mirror links off: {e}"));
            None
        }
    };
    let witnesses = Witnesses::from_config(&config.np_resolution, &node);
    let (witness_tx, witness_rx) = watch::channel(WitnessState::default());
    let publisher = StatePublisher::new(config.groups.len(), heartbeats.clone());
    let cx = Arc::new(NodeContext::new(
        config.clone(),
        node.clone(),
        heartbeats.incarnation(),
        store,
        timing,
        heartbeats.watch(),
        witness_rx,
        !witnesses.is_empty(),
        events.clone(),
        publisher,
        opts.state_dir.clone(),
        opts.shutdown_command.clone(),
        peer_tls.clone().map(Arc::new),
        fencer,
    ));
    events.record(
        "",
        "daemon",
        "",
        format!(
            "tandemd started as node {node} of cluster {} (incarnation {:016x})",
            config.cluster.name, cx.incarnation
        ),
    );
    tokio::spawn(watch_peers(cx.clone()));
    if !witnesses.is_empty() {
        tokio::spawn(witness_loop(witnesses, cx.heartbeat.clone(), witness_tx, cx.events.clone()));
    }

    let mut groups = Vec::new();
    for (index, g) in config.groups.iter().enumerate() {
        if g.priority_of(&node).is_none() {
            continue;
        }
        let handle = Runner::spawn(cx.clone(), index)
            .map_err(|e| DaemonError::Resource { group: g.name.clone(), detail: e.to_string() })?;
        groups.push(handle);
    }

    let (always_tx, always_rx) = watch::channel(true);
    let (recovery_tx, recovery_rx) = tokio::sync::mpsc::channel(64);
    let node_cfg = config.node_by_name(&node).ok_or_else(|| DaemonError::SelfNotFound(node.clone()))?;
    let ec2_region = node_cfg.region().or_else(|| config.lease_region());
    let ec2 = {
        let mut b = aws_sdk_ec2::config::Builder::from(&aws);
        if let Some(r) = ec2_region {
            b = b.region(aws_config::Region::new(r));
        }
        aws_sdk_ec2::Client::from_conf(b.build())
    };
    let mut monitors = Vec::new();
    for m in &config.monitors {
        let target = m.recovery_target(&config);
        let group = match &target {
            crate::config::RecoveryTarget::Resource { group, .. } | crate::config::RecoveryTarget::Group(group) => {
                Some(group.clone())
            }
            crate::config::RecoveryTarget::LocalGroups => None,
        };
        let handle = group.as_ref().and_then(|g| groups.iter().find(|h| h.name == *g));
        if group.is_some() && handle.is_none() {
            continue; // a monitor of a group this node does not serve
        }
        let resource = m.kind.resource().and_then(|r| handle.and_then(|h| h.resource(r)));
        let check = match crate::monitors::build(m, node_cfg, Some(&ec2), resource) {
            // aws_dns with check_resolution: the record's name must also resolve to our address here.
            Ok(c) => match crate::monitors::resolution::target(&config, m, node_cfg) {
                Some((name, want)) => Box::new(crate::monitors::resolution::ResolutionCheck::new(
                    c,
                    &name,
                    want,
                    m.settings.timeout,
                    crate::monitors::resolution::system_lookup(),
                )),
                None => c,
            },
            Err(e) => {
                cx.events.record(
                    "",
                    "monitor",
                    "TDM-NODE-014",
                    format!("monitor {} not started: [{}] {e}", m.name, e.code()),
                );
                continue;
            }
        };
        let active = handle.map_or_else(|| always_rx.clone(), |h| h.active.clone());
        monitors.push(crate::monitors::runner::spawn(
            &m.name,
            check,
            m.settings.clone(),
            target,
            active,
            recovery_tx.clone(),
        ));
    }
    drop(recovery_tx);

    let (stop, _) = watch::channel(false);
    let peer_api = std::sync::Mutex::new(match &peer_tls {
        Some(_) => String::new(),
        None => "off: certificates not loaded (see the events)".to_string(),
    });
    let daemon = Arc::new(Daemon {
        cx,
        groups,
        heartbeats,
        socket: opts.socket.clone(),
        peer_tls,
        peer_api,
        peer_tls_rejected: std::sync::atomic::AtomicU64::new(0),
        monitors,
        _always: always_tx,
        stop,
    });
    tokio::spawn(recovery_loop(daemon.clone(), recovery_rx));
    api::serve(daemon.clone(), &opts.socket).await?;
    if let Some(tls) = daemon.peer_tls.clone()
        && let Some(me) = config.node_by_name(&node)
    {
        let addr = SocketAddr::from((me.private_ip, config.cluster.api_port));
        let text = match peer::serve(daemon.clone(), addr, tls.server).await {
            Ok(()) => format!("serving on {addr}"),
            Err(e) => {
                daemon.cx.events.record("", "daemon", e.code(), format!("peer API off: {e}"));
                format!("off: [{}] {e}", e.code())
            }
        };
        if let Ok(mut p) = daemon.peer_api.lock() {
            *p = text;
        }
    }
    if let Some(addr) = opts.metrics {
        metrics::serve(daemon.clone(), addr).await?;
    }
    Ok(daemon)
}

/// Runs until SIGTERM/SIGINT or `tandemctl cluster stop`, then leaves cleanly.
pub async fn run(opts: Options) -> Result<(), DaemonError> {
    let daemon = start(&opts).await?;
    // systemd (Type=notify): ready now that the control socket listens and the group runners run. The watchdog
    // pings only while the heartbeat service still publishes (see sd_notify::watchdog_loop), not blindly.
    let systemd = sd_notify::Notifier::from_env();
    tokio::spawn(sd_notify::watchdog_loop(
        systemd.clone(),
        daemon.cx.heartbeat.clone(),
        daemon.cx.config.heartbeat.clone(),
    ));
    let mut stop = daemon.stop.subscribe();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| DaemonError::Heartbeat(format!("cannot install the SIGTERM handler: {e}")))?;
    systemd.ready();
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        _ = stop.wait_for(|s| *s) => {}
    }
    systemd.stopping();
    daemon.leave().await;
    daemon.cx.events.record("", "daemon", "", "tandemd stopped");
    let _ = std::fs::remove_file(&daemon.socket);
    Ok(())
}

/// Carries out the monitors' recovery requests (restart, failover, final action), recording each.
async fn recovery_loop(
    daemon: Arc<Daemon>,
    mut rx: tokio::sync::mpsc::Receiver<crate::monitors::runner::RecoveryRequest>,
) {
    use crate::monitors::runner::Recovery;
    while let Some(req) = rx.recv().await {
        let why = format!("monitor {} ({}): [{}] {}", req.monitor, req.kind, req.code, req.message);
        let group = match &req.recovery {
            Recovery::Restart { group, .. } | Recovery::Failover { group } => group.as_str(),
            _ => "",
        };
        daemon.cx.events.record(group, "recovery", req.code, format!("{}: {why}", req.recovery));
        match req.recovery {
            Recovery::Restart { group, resource } => {
                if let Some(g) = daemon.group(&group) {
                    g.send(Command::Restart { resource, why }).await;
                }
            }
            Recovery::Failover { group } => {
                if let Some(g) = daemon.group(&group) {
                    g.send(Command::Failover { why }).await;
                }
            }
            Recovery::FailoverLocal => {
                for g in &daemon.groups {
                    if g.view().role.is_running() {
                        g.send(Command::Failover { why: why.clone() }).await;
                    }
                }
            }
            Recovery::Final { action } => match action {
                crate::config::FinalAction::None => {}
                crate::config::FinalAction::StopCluster => daemon.request_stop(),
                crate::config::FinalAction::Shutdown => daemon.cx.shutdown_node(&why).await,
            },
        }
    }
}

/// Records peer liveness transitions in the event log.
async fn watch_peers(cx: Arc<NodeContext>) {
    let mut rx = cx.heartbeat.clone();
    let mut last: Vec<(String, Liveness)> = Vec::new();
    loop {
        {
            let snap = rx.borrow_and_update().clone();
            for p in &snap.peers {
                let before = last.iter().find(|(n, _)| *n == p.node).map(|(_, l)| *l);
                let before_name = before.map_or("unknown", liveness_name);
                if before != Some(p.liveness) && !(before.is_none() && p.liveness == Liveness::Down) {
                    let code = if p.liveness == Liveness::Down { "TDM-NODE-012" } else { "" };
                    cx.events.record(
                        "",
                        "peer",
                        code,
                        format!("peer {} {} -> {}", p.node, before_name, liveness_name(p.liveness)),
                    );
                }
            }
            last = snap.peers.iter().map(|p| (p.node.clone(), p.liveness)).collect();
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

pub fn liveness_name(l: Liveness) -> &'static str {
    match l {
        Liveness::Up => "up",
        Liveness::Suspect => "suspect",
        Liveness::Down => "down",
    }
}

/// While any peer is down, asks the witnesses (at once on a new loss, then every second) and publishes the
/// verdict with the instant the check started.
async fn witness_loop(
    witnesses: Witnesses,
    mut hb: watch::Receiver<Snapshot>,
    tx: watch::Sender<WitnessState>,
    events: Arc<EventLog>,
) {
    let mut down_before = 0usize;
    let mut last_check: Option<Instant> = None;
    let mut last_kind = "";
    loop {
        let down = hb.borrow_and_update().peers.iter().filter(|p| p.liveness == Liveness::Down).count();
        let due = down > 0 && (down > down_before || last_check.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)));
        down_before = down;
        if due {
            let started = Instant::now();
            let verdict = witnesses.check().await;
            last_check = Some(started);
            let kind = match &verdict {
                crate::membership::witness::Verdict::NoWitness => "none",
                crate::membership::witness::Verdict::Reachable { .. } => "reachable",
                crate::membership::witness::Verdict::Isolated { .. } => "isolated",
            };
            if kind != last_kind {
                let code = if kind == "isolated" { "TDM-NODE-013" } else { "" };
                events.record("", "witness", code, format!("network partition check: {verdict:?}"));
                last_kind = kind;
            }
            tx.send_replace(WitnessState { verdict: Some(verdict), checked_at: Some(started) });
        } else if down == 0 {
            last_check = None;
        }
        tokio::select! {
            r = hb.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
}
