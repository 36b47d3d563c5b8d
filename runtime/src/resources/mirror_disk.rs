//! `resource "mirror_disk"` at run time: the block device replicated between the two servers of a group
//! (docs/mirror.md), served on the active node as an NBD export. Library level: the daemon wiring (lease-backed
//! [`PromotionGuard`] and [`PeerLossGate`], TLS, kernel NBD attach and mount) comes later.
//!
//! Life cycle on every server of the group:
//! - [`prepare`](GroupResource::prepare) (once, at daemon start): opens the data device and the metadata (creating
//!   the metadata only for a fresh pair, see [`MirrorDiskResource`]) and starts the **secondary service**: it
//!   listens on this node's mirror-connect address and applies the primary's link with `serve_secondary_meta`,
//!   one link at a time.
//! - [`start`](GroupResource::start) (promote): stops the secondary service, asks the [`PromotionGuard`], links to
//!   the peer's secondary (or starts degraded when it is unreachable) and serves the NBD export on
//!   `<state_dir>/<group>/<name>.nbd`. While degraded, the peer is reconnected in the background and resynced
//!   from the dirty bitmap.
//! - [`stop`](GroupResource::stop) (demote): stops the export, flushes, shuts the replicated store down, saves the
//!   role Secondary and restarts the secondary service.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{RwLock, watch};
use tokio::task::JoinHandle;

use super::mirror_env::TokenCell;
use super::{CODE_STATE_DIR, ErrorClass, GroupResource, Invocation, Probe, ResourceContext, ResourceError};
use crate::config::{Filesystem, MirrorDisk};
use crate::daemon::peer::PeerTls;
use crate::mirror::attach::{Attached, FsType, MountSpec, attach_and_mount};
use crate::mirror::generations::GenState;
use crate::mirror::meta::{DEFAULT_GRANULARITY, DiskState, Meta, MetaError, Role, SharedMeta};
use crate::mirror::nbd::{Export, bind_unix, serve_unix};
use crate::mirror::replication::{
    PeerLossGate, ReplicatedStore, ReplicationConfig, ReplicationError, ReplicationState, ResyncPhase, ResyncProgress,
    SecondaryConfig, accept_tls, connect_tls, serve_secondary_meta,
};
use crate::mirror::store::{BlockStore, FileStore, StoreError, WriteBuf};

/// How much of each end of the data device must read as zeroes for it to count as fresh.
const FRESH_PROBE: u64 = 1024 * 1024;

/// Why the mirror_disk resource itself failed; failures of the mirror library keep their `TDM-MIR-*` codes.
/// Codes are stable: never renumber, only append.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MirrorDiskError {
    #[error(
        "TDM-MDK-001: mirror_disk {resource}: the metadata {metadata} holds no valid superblock but the data device \
         {data} is not fresh (it holds non-zero bytes); refusing to initialise the metadata over existing data"
    )]
    NotFresh { resource: String, metadata: String, data: String },
    #[error(
        "TDM-MDK-002: mirror_disk {resource}: attaching the export to /dev/nbdX and mounting it on {mount_point} \
         failed: [{code}] {reason}"
    )]
    Attach { resource: String, mount_point: String, code: &'static str, reason: String },
    #[error("TDM-MDK-003: mirror_disk {resource}: listening for the peer's link on {addr} failed: {reason}")]
    Listen { resource: String, addr: SocketAddr, reason: String },
    #[error("TDM-MDK-004: mirror_disk {resource}: the NBD export task ended on its own; the export is not served")]
    ExportEnded { resource: String },
    #[error("TDM-MDK-005: mirror_disk {resource}: {during}: the task failed: {reason}")]
    Task { resource: String, during: &'static str, reason: String },
    #[error(
        "TDM-MDK-006: mirror_disk {resource}: this replica was never synced (fresh) and peer {peer} did not answer \
         within {waited:?} ({reason}); the first promotion needs both nodes, so that the initial full sync has a \
         target. Start tandemd on {peer}, then `tandemctl group start`"
    )]
    FreshAlone { resource: String, peer: String, waited: Duration, reason: String },
    #[error(
        "TDM-MDK-007: mirror_disk {resource}: this node is the primary; its data cannot be discarded while it serves. \
         Discard the other node's data instead, or move the group away first"
    )]
    DiscardPrimary { resource: String },
    #[error(
        "TDM-MDK-008: mirror_disk {resource}: this replica is Inconsistent (a sync never completed): it cannot be \
         accepted as the current data. Discard it (`--discard` this node) and resync from the peer"
    )]
    AcceptInconsistent { resource: String },
    #[error("TDM-MDK-009: mirror_disk {resource}: verify runs on the primary with its peer linked; here: {state}")]
    VerifyNotConnected { resource: String, state: String },
}

impl MirrorDiskError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            MirrorDiskError::NotFresh { .. } => "TDM-MDK-001",
            MirrorDiskError::Attach { .. } => "TDM-MDK-002",
            MirrorDiskError::Listen { .. } => "TDM-MDK-003",
            MirrorDiskError::ExportEnded { .. } => "TDM-MDK-004",
            MirrorDiskError::Task { .. } => "TDM-MDK-005",
            MirrorDiskError::FreshAlone { .. } => "TDM-MDK-006",
            MirrorDiskError::DiscardPrimary { .. } => "TDM-MDK-007",
            MirrorDiskError::AcceptInconsistent { .. } => "TDM-MDK-008",
            MirrorDiskError::VerifyNotConnected { .. } => "TDM-MDK-009",
        }
    }

    fn class(&self, class: ErrorClass) -> ResourceError {
        ResourceError::new(class, self.code(), self.to_string())
    }
}

/// May this node promote its replica? The daemon implements it with the group's lease record and
/// [`promotion_check`](crate::mirror::outdated::promotion_check); a refusal keeps its code (`TDM-MIR-060..062`).
/// Any `Fn(&GenState) -> Result<(), ResourceError>` closure is a guard.
#[async_trait::async_trait]
pub trait PromotionGuard: Send + Sync {
    async fn check(&self, local: &GenState) -> Result<(), ResourceError>;
}

#[async_trait::async_trait]
impl<F> PromotionGuard for F
where
    F: Fn(&GenState) -> Result<(), ResourceError> + Send + Sync,
{
    async fn check(&self, local: &GenState) -> Result<(), ResourceError> {
        self(local)
    }
}

/// What the daemon provides to a mirror_disk resource.
#[derive(Clone)]
pub struct MirrorEnv {
    /// This node's mirror-connect address: the secondary service listens here.
    pub local: SocketAddr,
    /// The peer's mirror-connect address: the primary links to it.
    pub peer: SocketAddr,
    /// The peer's node name (the name its certificate carries).
    pub peer_name: String,
    /// The cluster certificates for the link. **The daemon always passes them**; None (plain TCP) is for tests.
    pub tls: Option<Arc<PeerTls>>,
    /// Asked before every promotion, on this node's generation state.
    pub guard: Arc<dyn PromotionGuard>,
    /// Run before the first write is acknowledged after the peer was lost (marks it outdated).
    pub gate: Arc<dyn PeerLossGate>,
    /// Attach the export to /dev/nbdX and mount it on the config's `mount_point` (the daemon sets it when the
    /// config has one; without a mount point there is nothing to attach).
    pub attach: bool,
    /// Longest wait for the TCP (and TLS) connection to the peer.
    pub connect_timeout: Duration,
    /// Pause between two reconnection attempts of a degraded primary.
    pub reconnect_interval: Duration,
    /// How long the first promotion of a fresh replica waits for the peer: a fresh replica is promoted only
    /// through a link that makes it the full-sync source of a peer that is fresh too, never alone.
    pub fresh_wait: Duration,
    /// The lease token while promoted here (set at start, cleared at stop); the daemon's gate writes under it.
    pub token: Arc<TokenCell>,
    /// At promotion, how long a link still open on the secondary service may take to end before it is cut.
    pub link_drain: Duration,
    /// The replication settings (`node` is overwritten with this node's name).
    pub replication: ReplicationConfig,
    /// The secondary service's settings (`node` is overwritten with this node's name).
    pub secondary: SecondaryConfig,
}

impl MirrorEnv {
    /// The defaults: attach on, 2 s connect timeout, reconnect every 5 s, 5 s link drain.
    pub fn new(
        local: SocketAddr,
        peer: SocketAddr,
        peer_name: impl Into<String>,
        tls: Option<Arc<PeerTls>>,
        guard: Arc<dyn PromotionGuard>,
        gate: Arc<dyn PeerLossGate>,
    ) -> MirrorEnv {
        MirrorEnv {
            local,
            peer,
            peer_name: peer_name.into(),
            tls,
            guard,
            gate,
            attach: true,
            connect_timeout: Duration::from_secs(2),
            reconnect_interval: Duration::from_secs(5),
            fresh_wait: Duration::from_secs(120),
            token: Arc::new(TokenCell::default()),
            link_drain: Duration::from_secs(5),
            replication: ReplicationConfig::default(),
            secondary: SecondaryConfig::default(),
        }
    }
}

/// What `tandemctl mirror status` shows for one resource on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorStatus {
    pub role: Role,
    pub disk: DiskState,
    /// The current generation.
    pub generation: u64,
    /// The export is served here (this node is the primary).
    pub serving: bool,
    /// The primary's link state (None on a secondary).
    pub replication: Option<ReplicationState>,
    /// Bytes that may differ from the peer's copy (the persistent bitmap).
    pub dirty_bytes: u64,
    /// The primary's resync (None on a secondary).
    pub resync: Option<ResyncProgress>,
    /// A primary's link is being applied here (this node is a connected secondary).
    pub secondary_link: bool,
    /// The data device's size in bytes.
    pub size: u64,
}

/// "UpToDate", "Outdated" or "Inconsistent" (DRBD's words, as `tandemctl mirror status` prints them).
pub fn disk_state_name(disk: DiskState) -> &'static str {
    match disk {
        DiskState::UpToDate => "UpToDate",
        DiskState::Outdated => "Outdated",
        DiskState::Inconsistent => "Inconsistent",
    }
}

/// "Primary" or "Secondary".
pub fn role_name(role: Role) -> &'static str {
    match role {
        Role::Primary => "Primary",
        Role::Secondary => "Secondary",
    }
}

/// A peer link: TCP or TLS over TCP.
trait LinkStream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> LinkStream for T {}
type Link = Box<dyn LinkStream>;

/// The opened devices.
#[derive(Clone)]
struct Disk {
    store: Arc<dyn BlockStore>,
    meta: SharedMeta,
}

/// The running secondary service.
struct Secondary {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// The running primary.
struct Primary {
    store: Arc<ActiveStore>,
    export: JoinHandle<()>,
    reconnect: JoinHandle<()>,
    sock: PathBuf,
    /// /dev/nbdX and the mount, when attached.
    attached: Option<Attached>,
}

#[derive(Default)]
struct State {
    disk: Option<Disk>,
    secondary: Option<Secondary>,
    primary: Option<Primary>,
}

/// Facts shared with the background tasks.
struct Shared {
    name: String,
    node: String,
    env: MirrorEnv,
    /// Bumped on every link (re)established by the primary.
    links: watch::Sender<u64>,
    /// Whether the secondary service is applying a link now.
    secondary_link: watch::Sender<bool>,
}

/// The mirror_disk group resource. Metadata rule: when the metadata device holds no valid superblock (or the file
/// does not exist) **and** the data device is fresh (its first and last MiB read as zeroes), the metadata is
/// created: Inconsistent, role Secondary, a new generation. A fresh pair stays Inconsistent until the first full
/// sync from the first primary. No valid superblock on a non-fresh data device is refused (TDM-MDK-001).
pub struct MirrorDiskResource {
    shared: Arc<Shared>,
    data: PathBuf,
    metadata: PathBuf,
    sock: PathBuf,
    /// Where and how the active node mounts the export (attach on and a mount point configured).
    mount: Option<MountSpec>,
    state: tokio::sync::Mutex<State>,
}

impl Drop for MirrorDiskResource {
    fn drop(&mut self) {
        let state = self.state.get_mut();
        if let Some(s) = state.secondary.take() {
            s.task.abort();
        }
        if let Some(p) = state.primary.take() {
            p.export.abort();
            p.reconnect.abort();
            if let Ok(store) = p.store.current.try_read() {
                store.shutdown();
            }
        }
    }
}

impl MirrorDiskResource {
    pub fn new(name: &str, config: &MirrorDisk, cx: &ResourceContext, env: MirrorEnv) -> MirrorDiskResource {
        let env_attach = env.attach;
        let shared = Shared {
            name: name.to_string(),
            node: cx.node.clone(),
            env,
            links: watch::Sender::new(0),
            secondary_link: watch::Sender::new(false),
        };
        MirrorDiskResource {
            shared: Arc::new(shared),
            data: config.data_device_for(&cx.node).to_path_buf(),
            metadata: config.metadata_device_for(&cx.node).to_path_buf(),
            sock: cx.state_dir.join(&cx.group).join(format!("{name}.nbd")),
            mount: config.mount_point.as_ref().filter(|_| env_attach).map(|mp| {
                let fs = match config.filesystem {
                    Filesystem::Ext4 => FsType::Ext4,
                    Filesystem::Xfs => FsType::Xfs,
                };
                let mut spec = MountSpec::new(mp, fs);
                // Writes held by the gate (the lease store unreachable) must hang, never fail: no request
                // timeout (the kernel then only warns about a long-running request).
                spec.io_timeout = Duration::ZERO;
                spec
            }),
            state: tokio::sync::Mutex::new(State::default()),
        }
    }

    /// The Unix socket of the NBD export (served while this node is the primary); the export name is the
    /// resource's name.
    pub fn socket_path(&self) -> &Path {
        &self.sock
    }

    /// Role, disk state, replication, dirty bytes, resync progress; None before the metadata was opened.
    pub async fn mirror_status(&self) -> Option<MirrorStatus> {
        let state = self.state.lock().await;
        let disk = state.disk.as_ref()?;
        let sb = disk.meta.superblock();
        let (replication, resync) = match &state.primary {
            Some(p) => {
                let store = p.store.current.read().await;
                (Some(store.state()), Some(store.resync_progress()))
            }
            None => (None, None),
        };
        Some(MirrorStatus {
            role: sb.role,
            disk: sb.disk,
            generation: sb.current,
            serving: state.primary.as_ref().is_some_and(|p| !p.export.is_finished()),
            replication,
            dirty_bytes: disk.meta.dirty_bytes(),
            resync,
            secondary_link: *self.shared.secondary_link.borrow(),
            size: disk.store.size(),
        })
    }

    /// `tandemctl mirror verify`: online checksum compare of every chunk with the peer's, on a connected primary.
    /// Differing chunks are marked out of sync (the bitmap); the next resync (at the next link) repairs them.
    pub async fn verify(&self) -> Result<String, ResourceError> {
        let not_connected = |state: String| {
            let err = MirrorDiskError::VerifyNotConnected { resource: self.shared.name.clone(), state };
            err.class(ErrorClass::Soft)
        };
        let Some(active) = self.current_store().await else {
            return Err(not_connected("this node is not the primary".into()));
        };
        let store = Arc::clone(&*active.current.read().await);
        if let ReplicationState::Degraded { code, reason, .. } = store.state() {
            return Err(not_connected(format!("degraded ([{code}] {reason})")));
        }
        let r = store.verify().await.map_err(|e| self.error(ErrorClass::Soft, e.code(), "verify", &e))?;
        let mut text = format!(
            "verified {} bytes in {} ms ({} KiB chunks): {} differing",
            r.bytes_checked,
            r.duration.as_millis(),
            r.chunk_bytes / 1024,
            r.differing_chunks
        );
        if r.differing_chunks > 0 {
            let first: Vec<String> = r.first_differing.iter().map(|o| o.to_string()).collect();
            text.push_str(&format!(
                " (first at offsets {}; {} unreadable on the peer); marked out of sync, repaired by the next resync",
                first.join(", "),
                r.peer_read_errors
            ));
        }
        Ok(text)
    }

    /// The peer's node name.
    pub fn peer_name(&self) -> &str {
        &self.shared.env.peer_name
    }

    /// `tandemctl mirror resolve --discard <this node>`: give up this replica's data (split brain, or a replica
    /// known to be worse). Refused on the primary. The metadata becomes fresh-but-discarded, so that the next
    /// link makes this node a full sync target; the secondary service restarts.
    pub async fn discard_local(&self) -> Result<(), ResourceError> {
        let mut state = self.state.lock().await;
        if state.primary.is_some() {
            let err = MirrorDiskError::DiscardPrimary { resource: self.shared.name.clone() };
            return Err(err.class(ErrorClass::Fatal));
        }
        let disk = self.ensure_disk(&mut state).await?;
        self.stop_secondary(&mut state).await;
        let discarded = disk.meta.with(crate::mirror::meta::resolve_discard).await;
        let restarted = self.ensure_secondary(&mut state, &disk).await;
        discarded.map_err(|e| self.error(ErrorClass::Fatal, e.code(), "discarding the local data", &e))?;
        restarted
    }

    /// `tandemctl mirror resolve --discard <the peer>`: accept this replica as the current one (the operator
    /// gives up what only the peer has). An Outdated replica becomes UpToDate; an Inconsistent one is refused
    /// (it holds no consistent copy: a sync never completed).
    pub async fn accept_local(&self) -> Result<(), ResourceError> {
        let mut state = self.state.lock().await;
        let disk = self.ensure_disk(&mut state).await?;
        match disk.meta.superblock().disk {
            DiskState::UpToDate => Ok(()),
            DiskState::Inconsistent => {
                let err = MirrorDiskError::AcceptInconsistent { resource: self.shared.name.clone() };
                Err(err.class(ErrorClass::Fatal))
            }
            DiskState::Outdated => disk
                .meta
                .update(|sb| sb.disk = DiskState::UpToDate)
                .await
                .map_err(|e| self.error(ErrorClass::Fatal, e.code(), "accepting the local replica", &e)),
        }
    }

    /// Wait until this node is a primary whose link to the peer is up.
    pub async fn wait_connected(&self) {
        let mut rx = self.shared.links.subscribe();
        loop {
            if let Some(store) = self.current_store().await
                && store.current.read().await.state() == ReplicationState::Connected
            {
                return;
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Wait until this node's primary store is degraded (returns at once when it is not a primary).
    pub async fn wait_degraded(&self) {
        if let Some(store) = self.current_store().await {
            let current = Arc::clone(&*store.current.read().await);
            current.wait_degraded().await;
        }
    }

    /// Wait until the current link's resync is over; None when this node is not a primary.
    pub async fn wait_resync(&self) -> Option<ResyncProgress> {
        let store = self.current_store().await?;
        let current = Arc::clone(&*store.current.read().await);
        Some(current.wait_resync().await)
    }

    async fn current_store(&self) -> Option<Arc<ActiveStore>> {
        self.state.lock().await.primary.as_ref().map(|p| Arc::clone(&p.store))
    }

    fn error(
        &self,
        class: ErrorClass,
        code: &'static str,
        what: &str,
        detail: impl std::fmt::Display,
    ) -> ResourceError {
        ResourceError::new(class, code, format!("mirror_disk {}: {what}: {detail}", self.shared.name))
    }

    /// Open the data device and the metadata (once).
    async fn ensure_disk(&self, state: &mut State) -> Result<Disk, ResourceError> {
        if let Some(disk) = &state.disk {
            return Ok(disk.clone());
        }
        let store = FileStore::open(&self.data)
            .map_err(|e| self.error(ErrorClass::Hard, e.code(), "opening the data device", &e))?;
        let size = store.size();
        let store: Arc<dyn BlockStore> = Arc::new(store);
        let opened = blocking(&self.shared.name, "opening the metadata", {
            let path = self.metadata.clone();
            move || Meta::open(&path)
        })
        .await?;
        let meta = match opened {
            Ok(meta) => meta,
            Err(e) if uninitialised(&e) => {
                if !self.data_is_fresh(&store).await? {
                    let err = MirrorDiskError::NotFresh {
                        resource: self.shared.name.clone(),
                        metadata: self.metadata.display().to_string(),
                        data: self.data.display().to_string(),
                    };
                    return Err(err.class(ErrorClass::Hard));
                }
                tracing::info!(resource = %self.shared.name, metadata = %self.metadata.display(),
                    "mirror_disk: fresh pair, creating the metadata (Inconsistent until the first full sync)");
                let (path, node) = (self.metadata.clone(), self.shared.node.clone());
                blocking(&self.shared.name, "creating the metadata", move || {
                    Meta::create(&path, size, &node, DEFAULT_GRANULARITY)
                })
                .await?
                .map_err(|e| self.error(ErrorClass::Hard, e.code(), "creating the metadata", &e))?
            }
            Err(e) => return Err(self.error(ErrorClass::Hard, e.code(), "opening the metadata", &e)),
        };
        let disk = Disk { store, meta: SharedMeta::new(meta) };
        state.disk = Some(disk.clone());
        Ok(disk)
    }

    async fn data_is_fresh(&self, store: &Arc<dyn BlockStore>) -> Result<bool, ResourceError> {
        let size = store.size();
        let len = size.min(FRESH_PROBE);
        for offset in [0, size - len] {
            let bytes = store
                .read_at(offset, len as u32)
                .await
                .map_err(|e| self.error(ErrorClass::Hard, e.code(), "reading the data device", &e))?;
            if bytes.iter().any(|b| *b != 0) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Start the secondary service unless it (or the primary) runs.
    async fn ensure_secondary(&self, state: &mut State, disk: &Disk) -> Result<(), ResourceError> {
        if state.primary.is_some() || state.secondary.as_ref().is_some_and(|s| !s.task.is_finished()) {
            return Ok(());
        }
        let listener = TcpListener::bind(self.shared.env.local).await.map_err(|e| {
            let err = MirrorDiskError::Listen {
                resource: self.shared.name.clone(),
                addr: self.shared.env.local,
                reason: e.to_string(),
            };
            err.class(ErrorClass::Soft)
        })?;
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(secondary_loop(Arc::clone(&self.shared), listener, disk.clone(), stop_rx));
        state.secondary = Some(Secondary { stop, task });
        Ok(())
    }

    /// Stop the secondary service; the link being applied gets `link_drain` to end, then it is cut.
    async fn stop_secondary(&self, state: &mut State) {
        if let Some(s) = state.secondary.take() {
            s.stop.send_replace(true);
            if let Err(e) = s.task.await
                && !e.is_cancelled()
            {
                tracing::warn!(resource = %self.shared.name, "mirror_disk: the secondary service failed: {e}");
            }
        }
    }

    /// Link to the peer's secondary, or start degraded when it is unreachable (never for a fresh replica).
    async fn open_store(&self, disk: &Disk) -> Result<ReplicatedStore, ResourceError> {
        let cfg = self.replication_config();
        let env = &self.shared.env;
        if GenState::of(&disk.meta.superblock()).fresh() {
            return self.open_fresh(disk, cfg).await;
        }
        match open_link(env).await {
            Ok(link) => {
                match ReplicatedStore::connect_with_meta(
                    Arc::clone(&disk.store),
                    link,
                    cfg.clone(),
                    Arc::clone(&env.gate),
                    disk.meta.clone(),
                )
                .await
                {
                    Ok(store) => return Ok(store),
                    Err(e) => {
                        if let Some(class) = refusal_class(&e) {
                            return Err(self.error(class, e.code(), "the link with the peer was refused", &e));
                        }
                        tracing::warn!(resource = %self.shared.name, code = e.code(),
                            "mirror_disk: linking to the peer failed, starting degraded: {e}");
                    }
                }
            }
            Err(reason) => {
                tracing::warn!(resource = %self.shared.name, peer = %env.peer,
                    "mirror_disk: the peer is unreachable, starting degraded: {reason}");
            }
        }
        ReplicatedStore::standalone_with_meta(Arc::clone(&disk.store), cfg, Arc::clone(&env.gate), disk.meta.clone())
            .map_err(|e| self.error(ErrorClass::Hard, e.code(), "starting degraded", &e))
    }

    /// The first promotion of a fresh pair: wait (up to `fresh_wait`) for the peer and link; the handshake makes
    /// this node the full-sync source only when the peer is fresh too (else it refuses: WrongDirection, Unrelated).
    async fn open_fresh(&self, disk: &Disk, cfg: ReplicationConfig) -> Result<ReplicatedStore, ResourceError> {
        let env = &self.shared.env;
        let deadline = tokio::time::Instant::now() + env.fresh_wait;
        let mut last = String::new();
        while tokio::time::Instant::now() < deadline {
            match open_link(env).await {
                Ok(link) => {
                    let gate = Arc::clone(&env.gate);
                    return ReplicatedStore::connect_with_meta(
                        Arc::clone(&disk.store),
                        link,
                        cfg,
                        gate,
                        disk.meta.clone(),
                    )
                    .await
                    .map_err(|e| {
                        let class = refusal_class(&e).unwrap_or(ErrorClass::Soft);
                        self.error(class, e.code(), "the first link of a fresh replica was refused", &e)
                    });
                }
                Err(reason) => last = reason,
            }
            tokio::time::sleep(env.reconnect_interval.min(Duration::from_secs(1))).await;
        }
        let err = MirrorDiskError::FreshAlone {
            resource: self.shared.name.clone(),
            peer: env.peer_name.clone(),
            waited: env.fresh_wait,
            reason: last,
        };
        Err(err.class(ErrorClass::Soft))
    }

    fn replication_config(&self) -> ReplicationConfig {
        ReplicationConfig { node: self.shared.node.clone(), ..self.shared.env.replication.clone() }
    }

    /// Promote: everything after the secondary service stopped. On error nothing is served.
    async fn promote(&self, state: &mut State, disk: &Disk) -> Result<(), ResourceError> {
        let local = GenState::of(&disk.meta.superblock());
        if let Err(mut e) = self.shared.env.guard.check(&local).await {
            // This node's replica must not be used; the peer's may be: fail over (a Fatal refusal stays Fatal).
            e.class = e.class.max(ErrorClass::Hard);
            return Err(e);
        }
        let store = self.open_store(disk).await?;
        let active = Arc::new(ActiveStore::new(store));
        let served = self.serve_export(&active).await;
        let export = match served {
            Ok(export) => export,
            Err(e) => {
                active.shut_down().await;
                return Err(e);
            }
        };
        let attached = match &self.mount {
            Some(spec) => match attach_and_mount(&self.sock, &self.shared.name, spec).await {
                Ok(a) => {
                    tracing::info!(resource = %self.shared.name, device = %a.device().display(),
                        mount_point = %a.mount_point().display(), formatted = a.formatted(), "mirror_disk: mounted");
                    Some(a)
                }
                Err(e) => {
                    export.abort();
                    let _ = export.await;
                    active.shut_down().await;
                    let _ = tokio::fs::remove_file(&self.sock).await;
                    let err = MirrorDiskError::Attach {
                        resource: self.shared.name.clone(),
                        mount_point: spec.mount_point.display().to_string(),
                        code: e.code(),
                        reason: e.to_string(),
                    };
                    return Err(err.class(ErrorClass::Hard));
                }
            },
            None => None,
        };
        self.shared.links.send_modify(|n| *n += 1);
        let first = Arc::clone(&*active.current.read().await);
        tokio::spawn(clear_mark_after_resync(Arc::clone(&self.shared), first, disk.meta.clone()));
        let reconnect = tokio::spawn(reconnect_loop(Arc::clone(&self.shared), Arc::clone(&active), disk.clone()));
        state.primary = Some(Primary { store: active, export, reconnect, sock: self.sock.clone(), attached });
        Ok(())
    }

    async fn serve_export(&self, active: &Arc<ActiveStore>) -> Result<JoinHandle<()>, ResourceError> {
        if let Some(dir) = self.sock.parent() {
            tokio::fs::create_dir_all(dir)
                .await
                .map_err(|e| self.error(ErrorClass::Hard, CODE_STATE_DIR, &format!("creating {}", dir.display()), e))?;
        }
        let listener =
            bind_unix(&self.sock).map_err(|e| self.error(ErrorClass::Hard, e.code(), "serving the NBD export", &e))?;
        let export = Arc::new(Export::new(&self.shared.name, Arc::clone(active) as Arc<dyn BlockStore>));
        Ok(tokio::spawn(serve_unix(listener, export)))
    }

    /// Demote: stop serving, flush, shut the replicated store down, save role Secondary. Returns the first error;
    /// every step runs regardless.
    async fn demote(&self, primary: Primary, disk: &Disk) -> Result<(), ResourceError> {
        primary.export.abort();
        primary.reconnect.abort();
        let _ = primary.export.await;
        let _ = primary.reconnect.await;
        let mut result = Ok(());
        if let Err(e) = primary.store.flush().await {
            result = Err(self.error(ErrorClass::Hard, e.code(), "flushing the mirror at stop", &e));
        }
        primary.store.shut_down().await;
        if let Err(e) = tokio::fs::remove_file(&primary.sock).await
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(resource = %self.shared.name, "mirror_disk: removing {}: {e}", primary.sock.display());
        }
        if let Err(e) = disk.meta.update(|sb| sb.role = Role::Secondary).await
            && result.is_ok()
        {
            result = Err(self.error(ErrorClass::Hard, e.code(), "saving the role Secondary", &e));
        }
        result
    }
}

#[async_trait::async_trait]
impl GroupResource for MirrorDiskResource {
    fn name(&self) -> &str {
        &self.shared.name
    }

    fn kind(&self) -> &'static str {
        "mirror_disk"
    }

    async fn start(&self, inv: &Invocation) -> Result<(), ResourceError> {
        let mut state = self.state.lock().await;
        self.shared.env.token.set(inv.lease_token);
        if let Some(p) = &state.primary {
            if !p.export.is_finished() {
                return Ok(());
            }
            // The export died: start over.
            if let (Some(p), Some(disk)) = (state.primary.take(), state.disk.clone()) {
                let _ = self.demote(p, &disk).await;
            }
        }
        let disk = self.ensure_disk(&mut state).await?;
        self.stop_secondary(&mut state).await;
        let promoted = self.promote(&mut state, &disk).await;
        if promoted.is_err() {
            self.shared.env.token.set(None);
            if let Err(e) = self.ensure_secondary(&mut state, &disk).await {
                tracing::warn!(resource = %self.shared.name, code = e.code, "mirror_disk: {e}");
            }
        }
        promoted
    }

    async fn stop(&self, _inv: &Invocation) -> Result<(), ResourceError> {
        let mut state = self.state.lock().await;
        let Some(disk) = state.disk.clone() else {
            return Ok(());
        };
        // Unmount and detach first; a busy file system keeps the primary as it is (the stop is retried).
        if let Some(a) = state.primary.as_mut().and_then(|p| p.attached.as_mut()) {
            a.unmount_and_detach().await.map_err(|e| {
                let err = MirrorDiskError::Attach {
                    resource: self.shared.name.clone(),
                    mount_point: a.mount_point().display().to_string(),
                    code: e.code(),
                    reason: format!("stopping: {e}"),
                };
                err.class(ErrorClass::Soft)
            })?;
        }
        let result = match state.primary.take() {
            Some(primary) => self.demote(primary, &disk).await,
            None => Ok(()),
        };
        self.shared.env.token.set(None);
        // The node stays a usable secondary; a failure here is not a failed stop (prepare or the next stop retry).
        if let Err(e) = self.ensure_secondary(&mut state, &disk).await {
            tracing::warn!(resource = %self.shared.name, code = e.code, "mirror_disk: {e}");
        }
        result
    }

    async fn probe(&self, _inv: &Invocation) -> Result<Probe, ResourceError> {
        let state = self.state.lock().await;
        let Some(p) = &state.primary else {
            return Ok(Probe::Stopped);
        };
        if let Some((code, message)) = p.store.failure() {
            return Err(ResourceError::new(ErrorClass::Hard, code, message));
        }
        if p.export.is_finished() {
            let err = MirrorDiskError::ExportEnded { resource: self.shared.name.clone() };
            return Err(err.class(ErrorClass::Soft));
        }
        Ok(Probe::Running)
    }

    fn mirror(&self) -> Option<&MirrorDiskResource> {
        Some(self)
    }

    async fn prepare(&self) -> Result<(), ResourceError> {
        let mut state = self.state.lock().await;
        let disk = self.ensure_disk(&mut state).await?;
        self.ensure_secondary(&mut state, &disk).await
    }
}

/// Missing metadata file, or no valid superblock in either slot.
fn uninitialised(e: &MetaError) -> bool {
    match e {
        MetaError::NoValidSuperblock { .. } => true,
        MetaError::Io { source, .. } => source.kind() == std::io::ErrorKind::NotFound,
        _ => false,
    }
}

/// The class of a handshake refusal; None for a link failure (the primary starts degraded instead).
fn refusal_class(e: &ReplicationError) -> Option<ErrorClass> {
    match e {
        // Both or neither copy is right: an operator decides (`tandemctl mirror resolve`).
        ReplicationError::SplitBrain { .. } | ReplicationError::Unrelated { .. } => Some(ErrorClass::Fatal),
        ReplicationError::SizeMismatch { .. } => Some(ErrorClass::Fatal),
        // The peer has newer data, or this node's devices fail: let the peer run it.
        ReplicationError::WrongDirection { .. } | ReplicationError::Meta(_) | ReplicationError::Store(_) => {
            Some(ErrorClass::Hard)
        }
        _ => None,
    }
}

async fn blocking<T: Send + 'static>(
    resource: &str,
    during: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ResourceError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        let err = MirrorDiskError::Task { resource: resource.to_string(), during, reason: e.to_string() };
        err.class(ErrorClass::Soft)
    })
}

/// TCP (and TLS) to the peer's secondary service, bounded by `connect_timeout`.
async fn open_link(env: &MirrorEnv) -> Result<Link, String> {
    let connect = async {
        let tcp = TcpStream::connect(env.peer).await.map_err(|e| format!("connecting to {}: {e}", env.peer))?;
        let _ = tcp.set_nodelay(true);
        match &env.tls {
            Some(tls) => connect_tls(tcp, Arc::clone(&tls.client), &env.peer_name)
                .await
                .map(|s| Box::new(s) as Link)
                .map_err(|e| e.to_string()),
            None => Ok(Box::new(tcp) as Link),
        }
    };
    tokio::time::timeout(env.connect_timeout, connect)
        .await
        .map_err(|_| format!("no connection to {} within {:?}", env.peer, env.connect_timeout))?
}

/// The secondary service: accept one primary link at a time and apply it, until told to stop.
async fn secondary_loop(shared: Arc<Shared>, listener: TcpListener, disk: Disk, mut stop: watch::Receiver<bool>) {
    let cfg = SecondaryConfig { node: shared.node.clone(), ..shared.env.secondary.clone() };
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (tcp, from) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(resource = %shared.name, "mirror_disk: accepting the peer's link failed: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        let _ = tcp.set_nodelay(true);
        let (store, meta, tls, cfg) = (Arc::clone(&disk.store), disk.meta.clone(), shared.env.tls.clone(), cfg.clone());
        let peer_name = shared.env.peer_name.clone();
        let link = async move {
            let stream: Link = match tls {
                Some(tls) => Box::new(accept_tls(tcp, Arc::clone(&tls.server), &peer_name).await?),
                None => Box::new(tcp),
            };
            serve_secondary_meta(stream, store, cfg, meta).await
        };
        shared.secondary_link.send_replace(true);
        let mut link = pin!(link);
        let ended = tokio::select! {
            ended = &mut link => Some(ended),
            _ = stop.wait_for(|s| *s) => None,
        };
        let ended = match ended {
            Some(ended) => Some(ended),
            None => tokio::time::timeout(shared.env.link_drain, &mut link).await.ok(),
        };
        shared.secondary_link.send_replace(false);
        match ended {
            Some(Ok(stats)) => {
                tracing::info!(resource = %shared.name, %from, writes = stats.writes, "mirror_disk: the peer's link ended")
            }
            Some(Err(e)) => {
                tracing::warn!(resource = %shared.name, %from, code = e.code(), "mirror_disk: the peer's link failed: {e}")
            }
            None => tracing::warn!(resource = %shared.name, %from, "mirror_disk: promoted: the peer's link was cut"),
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Once the resync of a link that made this node the source is done, the peer holds this node's current generation:
/// its Outdated mark in the lease is obsolete and is cleared (best effort; a mark left behind is harmless).
async fn clear_mark_after_resync(shared: Arc<Shared>, store: Arc<ReplicatedStore>, meta: SharedMeta) {
    let done = store.wait_resync().await;
    if done.phase != ResyncPhase::Done || !done.decision.is_some_and(|d| d.is_source()) {
        return;
    }
    let generation = meta.superblock().current;
    match shared.env.gate.peer_caught_up(generation).await {
        Ok(()) => tracing::info!(resource = %shared.name, peer = %shared.env.peer_name,
            "mirror_disk: the peer caught up; its Outdated mark is cleared"),
        Err(e) => tracing::warn!(resource = %shared.name, "mirror_disk: clearing the peer's Outdated mark: {e}"),
    }
}

/// A degraded primary relinks to the peer: the new link's handshake resyncs the peer from the bitmap.
async fn reconnect_loop(shared: Arc<Shared>, active: Arc<ActiveStore>, disk: Disk) {
    let env = &shared.env;
    loop {
        tokio::time::sleep(env.reconnect_interval).await;
        if active.current.read().await.state() == ReplicationState::Connected {
            continue;
        }
        let Ok(link) = open_link(env).await else { continue };
        // Writes wait while the link is set up (bounded by the hello timeout): the bitmap the handshake loads
        // must not change under it.
        let Ok(mut current) = tokio::time::timeout(env.connect_timeout, active.current.write()).await else {
            continue;
        };
        let cfg = ReplicationConfig { node: shared.node.clone(), ..env.replication.clone() };
        let gate = Arc::clone(&env.gate);
        match ReplicatedStore::connect_with_meta(Arc::clone(&disk.store), link, cfg, gate, disk.meta.clone()).await {
            Ok(store) => {
                current.shutdown();
                let store = Arc::new(store);
                *current = Arc::clone(&store);
                drop(current);
                tokio::spawn(clear_mark_after_resync(Arc::clone(&shared), store, disk.meta.clone()));
                tracing::info!(resource = %shared.name, peer = %env.peer_name, "mirror_disk: the peer is back");
                shared.links.send_modify(|n| *n += 1);
            }
            Err(e) => {
                tracing::warn!(resource = %shared.name, code = e.code(), "mirror_disk: relinking to the peer failed: {e}")
            }
        }
    }
}

/// The export's store: the current [`ReplicatedStore`] (replaced when a degraded primary relinks), and the first
/// local I/O failure seen.
struct ActiveStore {
    size: u64,
    current: RwLock<Arc<ReplicatedStore>>,
    failure: Mutex<Option<(&'static str, String)>>,
}

impl ActiveStore {
    fn new(store: ReplicatedStore) -> ActiveStore {
        ActiveStore { size: store.size(), current: RwLock::new(Arc::new(store)), failure: Mutex::new(None) }
    }

    fn failure(&self) -> Option<(&'static str, String)> {
        self.failure.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn note<T>(&self, r: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(e) = &r
            && matches!(
                e,
                StoreError::Io { .. }
                    | StoreError::NoSpace { .. }
                    | StoreError::Permission { .. }
                    | StoreError::Sync { .. }
            )
        {
            let mut failure = self.failure.lock().unwrap_or_else(PoisonError::into_inner);
            if failure.is_none() {
                *failure = Some((e.code(), e.to_string()));
            }
        }
        r
    }

    /// A clean stop of the current store: the dirty set saved, the activity log emptied (a crash leaves it, and
    /// the next link then resyncs its extents). A failure is logged: the log then stays, which costs only resync.
    async fn shut_down(&self) {
        let current = Arc::clone(&*self.current.write().await);
        if let Err(e) = current.stop().await {
            tracing::warn!(code = e.code(), "mirror_disk: the clean stop of the replicated store failed: {e}");
        }
    }
}

#[async_trait::async_trait]
impl BlockStore for ActiveStore {
    fn size(&self) -> u64 {
        self.size
    }

    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        let store = self.current.read().await;
        self.note(store.read_at(offset, len).await)
    }

    async fn write_at(&self, offset: u64, data: WriteBuf, fua: bool) -> Result<(), StoreError> {
        let store = self.current.read().await;
        self.note(store.write_at(offset, data, fua).await)
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let store = self.current.read().await;
        self.note(store.flush().await)
    }

    async fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        let store = self.current.read().await;
        self.note(store.trim(offset, len).await)
    }

    async fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), StoreError> {
        let store = self.current.read().await;
        self.note(store.write_zeroes(offset, len, fua).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_distinct_and_well_formed() {
        let r = String::from("d");
        let errors = [
            MirrorDiskError::NotFresh { resource: r.clone(), metadata: "m".into(), data: "d".into() },
            MirrorDiskError::Attach {
                resource: r.clone(),
                mount_point: "/srv".into(),
                code: "TDM-ATT-001",
                reason: "x".into(),
            },
            MirrorDiskError::Listen {
                resource: r.clone(),
                addr: SocketAddr::from(([127, 0, 0, 1], 1)),
                reason: "x".into(),
            },
            MirrorDiskError::ExportEnded { resource: r.clone() },
            MirrorDiskError::Task { resource: r.clone(), during: "x", reason: "y".into() },
            MirrorDiskError::FreshAlone {
                resource: r.clone(),
                peer: "b".into(),
                waited: Duration::from_secs(1),
                reason: "x".into(),
            },
            MirrorDiskError::DiscardPrimary { resource: r.clone() },
            MirrorDiskError::AcceptInconsistent { resource: r.clone() },
            MirrorDiskError::VerifyNotConnected { resource: r, state: "x".into() },
        ];
        for (i, e) in errors.iter().enumerate() {
            assert_eq!(e.code(), format!("TDM-MDK-{:03}", i + 1));
            assert!(e.to_string().starts_with(e.code()), "{e}");
        }
    }

    #[test]
    fn a_missing_or_blank_metadata_counts_as_uninitialised_but_a_corrupt_one_does_not() {
        let missing = MetaError::Io {
            what: "m".into(),
            during: "opening",
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        };
        let blank = MetaError::NoValidSuperblock { what: "m".into(), slot0: "a".into(), slot1: "b".into() };
        let layout = MetaError::Layout { what: "m".into(), detail: "short".into() };
        assert!(uninitialised(&missing) && uninitialised(&blank));
        assert!(!uninitialised(&layout));
    }

    #[test]
    fn handshake_refusals_fail_the_start_and_link_failures_degrade() {
        let split = ReplicationError::SplitBrain { peer: "b".into(), local: 1, theirs: 2 };
        let newer = ReplicationError::WrongDirection { peer: "b".into(), detail: "x".into() };
        assert_eq!(refusal_class(&split), Some(ErrorClass::Fatal));
        assert_eq!(refusal_class(&newer), Some(ErrorClass::Hard));
        assert_eq!(refusal_class(&ReplicationError::PeerClosed), None);
        assert_eq!(refusal_class(&ReplicationError::Timeout(Duration::from_secs(1))), None);
    }
}
