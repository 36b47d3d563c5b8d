//! The primary's side: [`ReplicatedStore`], a [`BlockStore`] that applies every write-like operation to the local
//! store and sends it to the peer, completing it as the [`Mode`] says. See the module doc of
//! [`replication`](super) for the ordering, barrier and failure rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tokio::task::{AbortHandle, JoinSet};

use super::activity::{AL_EXTENTS, ActivityLog, AlGuard};
use super::dirty::DirtyTracker;
use super::frame::{AckStatus, DIGEST_LEN, Frame, HELLO_V2, Hello, MAX_DATA};
use super::ranges::RangeLocks;
use super::resync::{ResyncPhase, ResyncProgress};
use super::secondary::sha256;
use super::unflushed::Unflushed;
use super::verify::{Tally, VERIFY_WINDOW, VerifyPhase, VerifyProgress, VerifyReport};
use super::{
    ReplicationError, check_meta_size, decide_link, exchange_hello, exchange_meta, meta_info, our_hello, read_frame,
    read_out_of_sync,
};
use crate::mirror::generations::Decision;
use crate::mirror::meta::{
    DiskState, FLAG_DISCARDED, FLAG_PEER_OUTDATED, MetaError, Role, SharedMeta, random_generation,
};
use crate::mirror::store::{BlockStore, StoreError, WriteBuf, check_range};

/// Largest piece of a resync: one WRITE frame, sent and acknowledged under the range table.
pub const RESYNC_PIECE: u64 = 1024 * 1024;
/// Resync pieces sent and not yet acknowledged at once.
pub const RESYNC_WINDOW: usize = 8;

/// When a write-like operation completes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Protocol C: when the local store and the peer both completed it.
    #[default]
    Sync,
    /// When the local store completed it; the peer catches up. Acknowledged writes not yet on the peer are lost
    /// if this node dies and the peer takes over.
    Async,
}

/// Settings of a [`ReplicatedStore`].
#[derive(Debug, Clone)]
pub struct ReplicationConfig {
    /// This node's name, sent in HELLO.
    pub node: String,
    pub mode: Mode,
    /// The peer is lost when an operation stays unacknowledged, or no frame arrives, for this long.
    pub ack_timeout: Duration,
    /// A PING is sent this often (the secondary answers PONG, which keeps an idle link alive).
    pub ping_interval: Duration,
    /// Longest wait for the peer's HELLO.
    pub hello_timeout: Duration,
    /// Pause between two attempts of a failing [`PeerLossGate`].
    pub gate_retry: Duration,
    /// Most operations sent and not yet acknowledged; beyond that, new ones wait.
    pub max_in_flight: usize,
    /// Extents (4 MiB) the activity log keeps active at most (with metadata; clamped to 16..=1008). What a crash
    /// as primary can add to the next resync.
    pub activity_extents: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            node: String::new(),
            mode: Mode::Sync,
            ack_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(1),
            hello_timeout: Duration::from_secs(10),
            gate_retry: Duration::from_secs(1),
            max_in_flight: 256,
            activity_extents: AL_EXTENTS,
        }
    }
}

/// What must be true before the first operation is acknowledged after the peer was lost: the peer is marked
/// Outdated durably (in the lease record: [`LeaseOutdatedGate`](crate::mirror::outdated::LeaseOutdatedGate)), so it
/// cannot be promoted with stale data.
#[async_trait]
pub trait PeerLossGate: Send + Sync {
    /// Mark the peer outdated as of `generation`: the new current generation the primary writes in while degraded.
    /// The primary picks it once, before the first attempt, passes the same value to every retry, and adopts exactly
    /// it in its metadata after the gate succeeded. An `Err` holds the writes; the call is retried until it succeeds.
    async fn mark_peer_outdated(&self, generation: u64) -> Result<(), String>;

    /// The peer completed a resync and now holds `generation` (this node's current one): a mark naming it at that
    /// generation is obsolete and may go. Best effort: a failure is only logged (the mark is harmless then).
    async fn peer_caught_up(&self, _generation: u64) -> Result<(), String> {
        Ok(())
    }
}

/// The replication state of a [`ReplicatedStore`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplicationState {
    Connected,
    /// The peer was lost: operations complete locally only and their ranges are dirty. `code` is the code of the
    /// failure that degraded the store (empty for a store started [`ReplicatedStore::standalone`]).
    Degraded {
        since: SystemTime,
        dirty_bytes: u64,
        code: &'static str,
        reason: String,
    },
}

/// A write-like operation.
enum Op {
    Write { offset: u64, data: WriteBuf, fua: bool },
    Zeroes { offset: u64, len: u64, fua: bool },
    Trim { offset: u64, len: u64 },
}

impl Op {
    fn describe(&self) -> (&'static str, u64, u64) {
        match self {
            Op::Write { offset, data, .. } => ("write", *offset, data.len() as u64),
            Op::Zeroes { offset, len, .. } => ("write_zeroes", *offset, *len),
            Op::Trim { offset, len } => ("trim", *offset, *len),
        }
    }

    fn to_out(&self, seq: u64) -> Out {
        match self {
            Op::Write { offset, data, fua } => Out::Write { seq, offset: *offset, data: Arc::clone(data), fua: *fua },
            Op::Zeroes { offset, len, fua } => {
                Out::Frame(Frame::WriteZeroes { seq, offset: *offset, len: *len, fua: *fua })
            }
            Op::Trim { offset, len } => Out::Frame(Frame::Trim { seq, offset: *offset, len: *len }),
        }
    }
}

/// A frame for the writer task; WRITE data is shared, not copied.
enum Out {
    Write { seq: u64, offset: u64, data: WriteBuf, fua: bool },
    Frame(Frame),
}

/// An operation sent and not yet acknowledged.
struct Pending {
    range: Option<(u64, u64)>,
    bytes: u64,
    since: Instant,
    done: oneshot::Sender<bool>,
    /// A non-FUA data operation: once acknowledged, its range is on the peer but maybe not durable there.
    unflushed: Option<(u64, u64)>,
    /// A FLUSH or SYNC_DONE: once acknowledged, everything before it is durable on the peer.
    barrier: bool,
    /// A VERIFY_REQ: answered by VERIFY_REP (the peer's digest, or its read errno), never by ACK.
    verify: Option<oneshot::Sender<Result<[u8; DIGEST_LEN], u32>>>,
    _slot: OwnedSemaphorePermit,
}

struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    next_seq: u64,
    next_token: u64,
    pending: HashMap<u64, Pending>,
    /// Acknowledged by the peer since its last acknowledged FLUSH (may be lost there).
    unflushed: Unflushed,
    last_rx: Instant,
    tasks: Vec<AbortHandle>,
}

enum Link {
    Connected(Conn),
    Degraded { since: SystemTime, code: &'static str, reason: String },
}

/// The peer-loss gate's progress: the degraded period's generation (picked once, before the first attempt) and
/// whether the gate passed.
#[derive(Default)]
struct GateState {
    generation: Option<u64>,
    passed: bool,
}

struct Shared {
    local: Arc<dyn BlockStore>,
    cfg: ReplicationConfig,
    gate: Arc<dyn PeerLossGate>,
    peer: Option<Hello>,
    locks: RangeLocks,
    dirty: Arc<DirtyTracker>,
    link: Mutex<Link>,
    slots: Arc<Semaphore>,
    gate_passed: tokio::sync::Mutex<GateState>,
    degraded: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    bytes_behind: AtomicU64,
    /// The peer's unflushed ranges when the link was lost: persisted in the bitmap before the first degraded
    /// acknowledgement.
    lost_unflushed: Mutex<Vec<(u64, u64)>>,
    meta: Option<SharedMeta>,
    /// Whether the new generation of the degraded period was started; held while a resync completes.
    bumped: tokio::sync::Mutex<bool>,
    resync: watch::Sender<ResyncProgress>,
    /// With metadata: the activity log (extents with writes the peer may not have).
    activity: Option<Arc<ActivityLog>>,
    /// Held while a verify runs (one at a time).
    verifying: tokio::sync::Mutex<()>,
    verify: watch::Sender<VerifyProgress>,
}

/// A [`BlockStore`] replicated to a peer. Reads are local. Dropping it (or [`ReplicatedStore::shutdown`]) closes
/// the link.
pub struct ReplicatedStore {
    shared: Arc<Shared>,
}

impl Drop for ReplicatedStore {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl ReplicatedStore {
    /// Exchange HELLOs over `stream` (refusing a peer whose store size differs, `TDM-MIR-031`), then replicate
    /// `local` over it.
    pub async fn connect<S>(
        local: Arc<dyn BlockStore>,
        stream: S,
        cfg: ReplicationConfig,
        gate: Arc<dyn PeerLossGate>,
    ) -> Result<ReplicatedStore, ReplicationError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::connect_inner(local, stream, cfg, gate, None).await
    }

    /// [`Self::connect`] with metadata: after HELLO the generation handshake decides (see
    /// [`generations`](crate::mirror::generations)); split brain (`TDM-MIR-050`), unrelated data (`TDM-MIR-051`)
    /// or a peer with newer data (`TDM-MIR-052`) refuse the link with nothing written. When this node is the sync
    /// source, a resync of its dirty bitmap (or the whole disk) starts in the background:
    /// [`Self::resync_progress`]. Degraded operations persist their chunks in `meta` before they are acknowledged.
    pub async fn connect_with_meta<S>(
        local: Arc<dyn BlockStore>,
        stream: S,
        cfg: ReplicationConfig,
        gate: Arc<dyn PeerLossGate>,
        meta: SharedMeta,
    ) -> Result<ReplicatedStore, ReplicationError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        Self::connect_inner(local, stream, cfg, gate, Some(meta)).await
    }

    async fn connect_inner<S>(
        local: Arc<dyn BlockStore>,
        mut stream: S,
        cfg: ReplicationConfig,
        gate: Arc<dyn PeerLossGate>,
        meta: Option<SharedMeta>,
    ) -> Result<ReplicatedStore, ReplicationError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let sb = meta.as_ref().map(SharedMeta::superblock);
        let ours = our_hello(&cfg.node, local.size(), sb.as_ref())?;
        let peer = exchange_hello(&mut stream, &ours, cfg.hello_timeout).await?;
        let theirs =
            exchange_meta(&mut stream, sb.as_ref().map(|sb| meta_info(sb, Role::Primary)), &peer, cfg.hello_timeout)
                .await?;
        let mut resync = ResyncProgress::default();
        if let (Some(meta), Some(sb), Some(theirs)) = (&meta, &sb, &theirs) {
            let decision = decide_link(sb, Role::Primary, &peer.node, theirs)?;
            let size = local.size();
            // The secondary's own out-of-sync ranges (e.g. its activity log after it crashed as primary).
            let oos = if peer.flags & HELLO_V2 != 0 {
                read_out_of_sync(&mut stream, size, cfg.hello_timeout).await?
            } else {
                Vec::new()
            };
            if !oos.is_empty() {
                let bytes: u64 = oos.iter().map(|r| r.1).sum();
                tracing::warn!(
                    ranges = oos.len(),
                    bytes,
                    "mirror primary: the peer reports out-of-sync ranges; resyncing them"
                );
            }
            // A source is UpToDate by the rules (a fresh primary's first full sync makes its data the reference);
            // in sync with an UpToDate peer means the same data, so UpToDate too. Otherwise the state is kept.
            let up_to_date = decision.is_source()
                || (decision == Decision::InSync && DiskState::from_byte(theirs.disk) == Some(DiskState::UpToDate));
            meta.with(move |m| {
                // This node stopped as primary without a clean stop: its activity log joins the resync.
                m.recover_activity()?;
                if decision == Decision::SourceFull {
                    m.mark_dirty(0, size)?;
                }
                for (offset, len) in oos {
                    m.mark_dirty(offset, len)?;
                }
                m.update(|sb| {
                    sb.role = Role::Primary;
                    if up_to_date {
                        sb.disk = DiskState::UpToDate;
                    }
                    sb.flags &= !FLAG_DISCARDED;
                })
            })
            .await?;
            resync.decision = Some(decision);
        }
        tracing::info!(peer = %peer.node, size = peer.size, mode = ?cfg.mode, "mirror primary: link up");
        let (rd, wr) = tokio::io::split(stream);
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = Conn {
            tx,
            next_seq: 1,
            next_token: 0,
            pending: HashMap::new(),
            unflushed: Unflushed::default(),
            last_rx: Instant::now(),
            tasks: Vec::new(),
        };
        let shared = Arc::new(Shared::new(local, cfg, gate, Some(peer), Link::Connected(conn), meta));
        // What the resync sends: the bitmap loaded into the dirty set (64 KiB chunks, so a finer bitmap rounds up).
        resync.total_bytes = shared.dirty.dirty_bytes();
        // A sync source always finishes with SYNC_DONE, even with nothing to send: the target waits for it.
        if resync.total_bytes > 0 || resync.decision.is_some_and(Decision::is_source) {
            resync.phase = ResyncPhase::Running;
        }
        shared.resync.send_replace(resync.clone());
        tokio::spawn(write_loop(Arc::clone(&shared), wr, rx));
        let tasks = vec![
            tokio::spawn(read_loop(Arc::clone(&shared), rd)).abort_handle(),
            tokio::spawn(ping_loop(Arc::clone(&shared))).abort_handle(),
        ];
        match &mut *shared.lock_link() {
            Link::Connected(c) => c.tasks = tasks,
            Link::Degraded { .. } => tasks.iter().for_each(AbortHandle::abort),
        }
        if resync.phase == ResyncPhase::Running {
            tokio::spawn(resync_loop(Arc::clone(&shared)));
        }
        Ok(ReplicatedStore { shared })
    }

    /// A store that starts without a peer (degraded): every operation is local, dirty, and gated.
    pub fn standalone(local: Arc<dyn BlockStore>, cfg: ReplicationConfig, gate: Arc<dyn PeerLossGate>) -> Self {
        let link = Link::Degraded { since: SystemTime::now(), code: "", reason: "started without a peer".into() };
        let shared = Arc::new(Shared::new(local, cfg, gate, None, link, None));
        shared.degraded.send_replace(true);
        ReplicatedStore { shared }
    }

    /// [`Self::standalone`] with metadata: the first operation starts a new generation (after the gate), every
    /// operation persists its chunks in `meta` before it is acknowledged.
    pub fn standalone_with_meta(
        local: Arc<dyn BlockStore>,
        cfg: ReplicationConfig,
        gate: Arc<dyn PeerLossGate>,
        meta: SharedMeta,
    ) -> Result<Self, ReplicationError> {
        check_meta_size(meta.superblock().size, local.size())?;
        let link = Link::Degraded { since: SystemTime::now(), code: "", reason: "started without a peer".into() };
        let shared = Arc::new(Shared::new(local, cfg, gate, None, link, Some(meta)));
        shared.degraded.send_replace(true);
        Ok(ReplicatedStore { shared })
    }

    /// The resync of this link: decision, phase, bytes done of total, rate.
    pub fn resync_progress(&self) -> ResyncProgress {
        self.shared.resync.borrow().clone()
    }

    /// Wait until no resync is running and return the final snapshot.
    pub async fn wait_resync(&self) -> ResyncProgress {
        let mut rx = self.shared.resync.subscribe();
        let r = rx.wait_for(|p| p.phase != ResyncPhase::Running).await.map(|p| p.clone());
        r.unwrap_or_else(|_| self.resync_progress())
    }

    /// Compare the whole device with the peer's copy, chunk by chunk (the bitmap granularity; 64 KiB without
    /// metadata), and mark every differing chunk out of sync — in the dirty set and, with metadata, durably in the
    /// bitmap — so that the next resync (the next link) repairs it. Needs a connected peer that understands verify
    /// and no resync running (`TDM-MIR-054`); one verify at a time (`TDM-MIR-053`). Writes keep flowing: each chunk
    /// holds the range table only while it is read locally and its request is queued. The link lost midway:
    /// `TDM-MIR-055` (what was found so far stays marked). Progress: [`Self::verify_progress`].
    pub async fn verify(&self) -> Result<VerifyReport, ReplicationError> {
        let s = &self.shared;
        let _one = s.verifying.try_lock().map_err(|_| ReplicationError::VerifyBusy)?;
        let unavailable = |why: &str| Err(ReplicationError::VerifyUnavailable(why.into()));
        match &s.peer {
            None => return unavailable("the store runs without a peer"),
            Some(h) if h.flags & HELLO_V2 == 0 => {
                return unavailable("the peer runs an older tandem without verify; upgrade it");
            }
            Some(_) => {}
        }
        if s.is_degraded() {
            return unavailable("the peer is not connected (degraded)");
        }
        if self.resync_progress().phase == ResyncPhase::Running {
            return unavailable("a resync is running; verify after it completed");
        }
        let chunk = s.meta.as_ref().map_or(DirtyTracker::CHUNK, |m| u64::from(m.superblock().granularity));
        let size = s.local.size();
        let started = Instant::now();
        s.verify.send_replace(VerifyProgress {
            phase: VerifyPhase::Running,
            chunk_bytes: chunk,
            total_bytes: size,
            ..VerifyProgress::default()
        });
        tracing::info!(size, chunk, "mirror primary: verify started");
        let mut tally = Tally::default();
        tally.report.chunk_bytes = chunk;
        let outcome = verify_chunks(s, chunk, &mut tally, started).await;
        let checked = tally.report.bytes_checked;
        let report = tally.finish(started);
        s.verify.send_modify(|p| {
            p.elapsed = started.elapsed();
            p.phase = VerifyPhase::ended(&outcome);
        });
        match outcome {
            Ok(()) => {
                tracing::info!(
                    differing = report.differing_chunks,
                    first = ?report.first_differing,
                    elapsed = ?report.duration,
                    "mirror primary: verify done"
                );
                Ok(report)
            }
            Err(reason) => {
                let e = ReplicationError::VerifyAborted { checked, reason };
                tracing::warn!(code = e.code(), "{e}");
                Err(e)
            }
        }
    }

    /// The running (or last) verify: phase, bytes checked of total, differing chunks so far.
    pub fn verify_progress(&self) -> VerifyProgress {
        self.shared.verify.borrow().clone()
    }

    /// Connected or degraded (since when, why, how many bytes are dirty).
    pub fn state(&self) -> ReplicationState {
        match &*self.shared.lock_link() {
            Link::Connected(_) => ReplicationState::Connected,
            Link::Degraded { since, code, reason } => ReplicationState::Degraded {
                since: *since,
                dirty_bytes: self.shared.dirty.dirty_bytes(),
                code,
                reason: reason.clone(),
            },
        }
    }

    /// The ranges that may differ from the peer's copy.
    pub fn dirty(&self) -> Arc<DirtyTracker> {
        Arc::clone(&self.shared.dirty)
    }

    /// Bytes of operations sent to the peer and not yet acknowledged (0 once degraded: see [`Self::dirty`]).
    pub fn bytes_behind(&self) -> u64 {
        self.shared.bytes_behind.load(Ordering::SeqCst)
    }

    /// The peer's HELLO (None for a standalone store).
    pub fn peer(&self) -> Option<&Hello> {
        self.shared.peer.as_ref()
    }

    /// Wait until the store is degraded.
    pub async fn wait_degraded(&self) {
        let mut rx = self.shared.degraded.subscribe();
        let _ = rx.wait_for(|d| *d).await;
    }

    /// Close the link (the store turns degraded) and fail every operation held by the gate (`TDM-MIR-037`).
    /// Leaves the activity log as it is (like a crash): use [`Self::stop`] for a clean stop or demotion.
    pub fn shutdown(&self) {
        self.shared.close();
    }

    /// A clean stop (demotion): [`Self::shutdown`], wait for the operations in flight to end, persist the
    /// in-memory dirty set in the bitmap and empty the activity log, so that the next start does not resync the
    /// log's extents. Without metadata it is [`Self::shutdown`].
    pub async fn stop(&self) -> Result<(), ReplicationError> {
        let s = &self.shared;
        // A last FLUSH to a connected peer, so the writes it acknowledged are durable there and need no resync.
        if let Ok(Some(rx)) = s.send("flush", None, |seq| Out::Frame(Frame::Flush { seq })).await {
            let _ = tokio::time::timeout(STOP_WAIT, rx).await;
        }
        s.close();
        let (Some(al), Some(meta)) = (&s.activity, &s.meta) else { return Ok(()) };
        // Operations still holding extents keep them in the log (the clear retains them); this only lets the
        // operations failed by the shutdown finish first.
        let _ = tokio::time::timeout(STOP_WAIT, al.wait_idle()).await;
        let ranges = s.dirty.ranges();
        meta.with(move |m| {
            for (offset, len) in ranges {
                m.mark_dirty(offset, len)?;
            }
            Ok(())
        })
        .await?;
        al.clear().await?;
        tracing::info!("mirror primary: stopped cleanly; the activity log is empty");
        Ok(())
    }

    /// The active extents of the activity log (4 MiB each; empty without metadata).
    pub fn activity(&self) -> Vec<u32> {
        self.shared.activity.as_ref().map(|a| a.active()).unwrap_or_default()
    }

    /// Activity log writes of this store so far (its metadata cost per write pattern).
    pub fn activity_writes(&self) -> u64 {
        self.shared.activity.as_ref().map_or(0, |a| a.metadata_writes())
    }
}

impl Shared {
    fn new(
        local: Arc<dyn BlockStore>,
        cfg: ReplicationConfig,
        gate: Arc<dyn PeerLossGate>,
        peer: Option<Hello>,
        link: Link,
        meta: Option<SharedMeta>,
    ) -> Self {
        let dirty = Arc::new(DirtyTracker::new(local.size()));
        for (offset, len) in meta.as_ref().map(SharedMeta::dirty_ranges).unwrap_or_default() {
            dirty.mark(offset, len);
        }
        // One log per opened metadata: a reconnection's new store shares the running one's.
        let activity = meta.as_ref().map(|m| m.activity_log(local.size(), cfg.activity_extents));
        Shared {
            activity,
            meta,
            bumped: tokio::sync::Mutex::new(false),
            resync: watch::Sender::new(ResyncProgress::default()),
            verifying: tokio::sync::Mutex::new(()),
            verify: watch::Sender::new(VerifyProgress::default()),
            dirty,
            slots: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            local,
            cfg,
            gate,
            peer,
            locks: RangeLocks::new(),
            link: Mutex::new(link),
            gate_passed: tokio::sync::Mutex::new(GateState::default()),
            degraded: watch::Sender::new(false),
            shutdown: watch::Sender::new(false),
            bytes_behind: AtomicU64::new(0),
            lost_unflushed: Mutex::new(Vec::new()),
        }
    }

    fn lock_link(&self) -> MutexGuard<'_, Link> {
        self.link.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn is_degraded(&self) -> bool {
        matches!(*self.lock_link(), Link::Degraded { .. })
    }

    fn close(&self) {
        self.shutdown.send_replace(true);
        self.degrade(ReplicationError::ShutDown);
    }

    /// Turn degraded (once): stop the link tasks, mark every unacknowledged range dirty, release its waiter.
    fn degrade(&self, err: ReplicationError) {
        let conn = {
            let mut link = self.lock_link();
            if !matches!(*link, Link::Connected(_)) {
                return;
            }
            let gone = Link::Degraded { since: SystemTime::now(), code: err.code(), reason: err.to_string() };
            self.bytes_behind.store(0, Ordering::SeqCst);
            match std::mem::replace(&mut *link, gone) {
                Link::Connected(c) => c,
                Link::Degraded { .. } => return,
            }
        };
        if matches!(err, ReplicationError::ShutDown) {
            tracing::info!("mirror primary: link closed (shut down)");
        } else {
            tracing::warn!(code = err.code(), "mirror primary: peer lost, continuing degraded: {err}");
        }
        conn.tasks.iter().for_each(AbortHandle::abort);
        // Acknowledged but not flushed by the peer: maybe lost there (its fdatasync failed, or it lost power).
        let unflushed = conn.unflushed.ranges();
        for (offset, len) in &unflushed {
            self.dirty.mark(*offset, *len);
        }
        if !unflushed.is_empty() {
            tracing::warn!(
                ranges = unflushed.len(),
                "mirror primary: writes the peer had not flushed are marked dirty"
            );
            self.lost_unflushed.lock().unwrap_or_else(PoisonError::into_inner).extend(unflushed);
        }
        for p in conn.pending.into_values() {
            if let Some((offset, len)) = p.range {
                self.dirty.mark(offset, len);
            }
            let _ = p.done.send(false);
        }
        self.degraded.send_replace(true);
    }

    /// Queue a data frame for the peer. `None` when degraded.
    async fn send(
        &self,
        op: &'static str,
        range: Option<(u64, u64)>,
        make: impl FnOnce(u64) -> Out,
    ) -> Result<Option<oneshot::Receiver<bool>>, StoreError> {
        if self.is_degraded() {
            return Ok(None);
        }
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Task { op, reason: e.to_string() })?;
        let mut link = self.lock_link();
        let Link::Connected(c) = &mut *link else { return Ok(None) };
        let seq = c.next_seq;
        let out = make(seq);
        let (durable, barrier) = match &out {
            Out::Write { fua, .. } | Out::Frame(Frame::WriteZeroes { fua, .. }) => (*fua, false),
            Out::Frame(Frame::Flush { .. } | Frame::SyncDone { .. }) => (false, true),
            Out::Frame(_) => (false, false),
        };
        if c.tx.send(out).is_err() {
            return Ok(None);
        }
        c.next_seq += 1;
        let bytes = range.map_or(0, |r| r.1);
        let (done, rx) = oneshot::channel();
        let unflushed = if durable { None } else { range };
        let since = Instant::now();
        let p = Pending { range, bytes, since, done, unflushed, barrier, verify: None, _slot: slot };
        c.pending.insert(seq, p);
        self.bytes_behind.fetch_add(bytes, Ordering::SeqCst);
        Ok(Some(rx))
    }

    /// Queue a VERIFY_REQ for `offset..offset+len`; `None` when degraded. The receiver gets the peer's answer, or
    /// is dropped when the link is lost.
    async fn send_verify(
        &self,
        offset: u64,
        len: u64,
    ) -> Result<Option<oneshot::Receiver<Result<[u8; DIGEST_LEN], u32>>>, StoreError> {
        if self.is_degraded() {
            return Ok(None);
        }
        let slot = Arc::clone(&self.slots)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Task { op: "verify", reason: e.to_string() })?;
        let mut link = self.lock_link();
        let Link::Connected(c) = &mut *link else { return Ok(None) };
        let seq = c.next_seq;
        if c.tx.send(Out::Frame(Frame::VerifyReq { seq, offset, len })).is_err() {
            return Ok(None);
        }
        c.next_seq += 1;
        let (done, _) = oneshot::channel();
        let (verify, rx) = oneshot::channel();
        let since = Instant::now();
        let verify = Some(verify);
        let p = Pending { range: None, bytes: 0, since, done, unflushed: None, barrier: false, verify, _slot: slot };
        c.pending.insert(seq, p);
        Ok(Some(rx))
    }

    fn on_verify_rep(&self, seq: u64, errno: u32, digest: [u8; DIGEST_LEN]) -> Result<(), ReplicationError> {
        let mut link = self.lock_link();
        let Link::Connected(c) = &mut *link else { return Ok(()) };
        c.last_rx = Instant::now();
        let unexpected = |detail: &str| ReplicationError::Unexpected { kind: "VERIFY_REP", seq, detail: detail.into() };
        let Some(p) = c.pending.remove(&seq) else { return Err(unexpected("no verify with this seq is waiting")) };
        let Some(verify) = p.verify else { return Err(unexpected("this seq is not a VERIFY_REQ")) };
        drop(link);
        let _ = verify.send(if errno == 0 { Ok(digest) } else { Err(errno) });
        let _ = p.done.send(true);
        Ok(())
    }

    fn on_ack(&self, seq: u64, status: AckStatus) -> Result<(), ReplicationError> {
        let mut link = self.lock_link();
        let Link::Connected(c) = &mut *link else { return Ok(()) };
        c.last_rx = Instant::now();
        if let AckStatus::Failed { errno, code } = status {
            // Left pending: the degrade that follows marks its range dirty.
            return Err(ReplicationError::PeerFailed { seq, errno, code });
        }
        let Some(p) = c.pending.remove(&seq) else {
            let detail = "no operation with this seq is waiting".to_string();
            return Err(ReplicationError::Unexpected { kind: "ACK", seq, detail });
        };
        if p.verify.is_some() {
            let detail = "a VERIFY_REQ is answered by VERIFY_REP".to_string();
            return Err(ReplicationError::Unexpected { kind: "ACK", seq, detail });
        }
        let _ = self.bytes_behind.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| Some(b.saturating_sub(p.bytes)));
        if p.barrier {
            c.unflushed.flushed(seq);
        } else if let Some((offset, len)) = p.unflushed {
            c.unflushed.acked(seq, offset, len);
        }
        drop(link);
        let _ = p.done.send(true);
        Ok(())
    }

    fn on_frame(&self, pong: Option<u64>) {
        let mut link = self.lock_link();
        if let Link::Connected(c) = &mut *link {
            c.last_rx = Instant::now();
            if let Some(token) = pong {
                let _ = c.tx.send(Out::Frame(Frame::Pong { token }));
            }
        }
    }

    /// Check the peer answers in time, then send a PING.
    fn keepalive(&self) -> Result<(), ReplicationError> {
        let mut link = self.lock_link();
        let Link::Connected(c) = &mut *link else { return Ok(()) };
        let limit = self.cfg.ack_timeout;
        let now = Instant::now();
        let silent = now.duration_since(c.last_rx) > limit.max(self.cfg.ping_interval * 2);
        if silent || c.pending.values().any(|p| now.duration_since(p.since) > limit) {
            return Err(ReplicationError::Timeout(limit));
        }
        c.next_token += 1;
        let _ = c.tx.send(Out::Frame(Frame::Ping { token: c.next_token }));
        Ok(())
    }

    /// Before acknowledging anything after the peer was lost: pick the degraded period's new generation (once),
    /// pass the gate with it (once, retrying while it fails) and return that generation.
    async fn pass_gate(&self, op: &'static str) -> Result<u64, StoreError> {
        let shut = || StoreError::Task { op, reason: ReplicationError::ShutDown.to_string() };
        let mut gate = self.gate_passed.lock().await;
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if let (true, Some(g)) = (gate.passed, gate.generation) {
                return Ok(g);
            }
            if *shutdown.borrow() {
                return Err(shut());
            }
            let generation = match gate.generation {
                Some(g) => g,
                None => match random_generation() {
                    Ok(g) => *gate.generation.insert(g),
                    Err(e) => {
                        tracing::error!(code = e.code(), "mirror primary: picking the degraded generation: {e}");
                        return Err(StoreError::Task { op, reason: e.to_string() });
                    }
                },
            };
            let outcome = tokio::select! {
                r = self.gate.mark_peer_outdated(generation) => r,
                _ = shutdown.wait_for(|s| *s) => return Err(shut()),
            };
            match outcome {
                Ok(()) => {
                    gate.passed = true;
                    tracing::warn!(
                        generation = format_args!("{generation:#018x}"),
                        "mirror primary: the peer is marked outdated; writes continue on this node only"
                    );
                }
                Err(reason) => {
                    let e = ReplicationError::GateFailed(reason);
                    tracing::error!(code = e.code(), "{e}");
                    tokio::select! {
                        _ = tokio::time::sleep(self.cfg.gate_retry) => {}
                        _ = shutdown.wait_for(|s| *s) => return Err(shut()),
                    }
                }
            }
        }
    }

    /// Before acknowledging an operation that did not reach the peer: pass the gate; with metadata, adopt the
    /// generation the gate named as the new current one (once) and persist the operation's chunks.
    async fn degraded_ack(&self, op: &'static str, range: Option<(u64, u64)>) -> Result<(), StoreError> {
        let g = self.pass_gate(op).await?;
        let Some(meta) = &self.meta else { return Ok(()) };
        let fail = |e: MetaError| {
            tracing::error!(code = e.code(), "mirror primary: persisting the degraded state failed: {e}");
            StoreError::Task { op, reason: e.to_string() }
        };
        {
            let mut bumped = self.bumped.lock().await;
            // The peer's unflushed writes when it was lost: in the bitmap before anything is acknowledged degraded.
            let lost = self.lost_unflushed.lock().unwrap_or_else(PoisonError::into_inner).clone();
            if !lost.is_empty() {
                let n = lost.len();
                meta.with(move |m| {
                    for (offset, len) in lost {
                        m.mark_dirty(offset, len)?;
                    }
                    Ok(())
                })
                .await
                .map_err(fail)?;
                self.lost_unflushed.lock().unwrap_or_else(PoisonError::into_inner).drain(..n);
            }
            if !*bumped {
                meta.update(move |sb| {
                    if sb.current != g {
                        if sb.bitmap_uuid == 0 {
                            sb.bitmap_uuid = sb.current;
                        }
                        sb.history.rotate_right(1);
                        sb.history[0] = sb.current;
                        sb.current = g;
                    }
                    sb.role = Role::Primary;
                    sb.flags |= FLAG_PEER_OUTDATED;
                })
                .await
                .map_err(fail)?;
                tracing::warn!(generation = format_args!("{g:#018x}"), "mirror primary: new generation (degraded)");
                *bumped = true;
            }
        }
        if let Some((offset, len)) = range {
            meta.mark_dirty(offset, len).await.map_err(fail)?;
        }
        Ok(())
    }

    async fn apply_local(&self, op: Op) -> Result<(), StoreError> {
        match op {
            Op::Write { offset, data, fua } => self.local.write_at(offset, data, fua).await,
            Op::Zeroes { offset, len, fua } => self.local.write_zeroes(offset, len, fua).await,
            Op::Trim { offset, len } => self.local.trim(offset, len).await,
        }
    }

    async fn replicate(&self, op: Op) -> Result<(), StoreError> {
        let (name, offset, len) = op.describe();
        if self.local.read_only() {
            return Err(StoreError::ReadOnly { op: name });
        }
        check_range(name, offset, len, self.local.size())?;
        if len == 0 {
            return self.apply_local(op).await;
        }
        if let Op::Write { data, .. } = &op
            && data.len() > MAX_DATA as usize
        {
            let source = std::io::Error::new(std::io::ErrorKind::InvalidInput, "a replicated write is at most 32 MiB");
            return Err(StoreError::Io { op: name, offset, source });
        }
        // The extent is durably in the activity log before the local store is touched.
        let mut al = match &self.activity {
            Some(a) => a.acquire(offset, len).await.map_err(|e| {
                tracing::error!(code = e.code(), "mirror primary: recording the activity log failed: {e}");
                StoreError::Task { op: name, reason: e.to_string() }
            })?,
            None => None,
        };
        let _guard = self.locks.acquire(offset, len).await;
        let ack = self.send(name, Some((offset, len)), |seq| op.to_out(seq)).await?;
        if ack.is_none() {
            self.dirty.mark(offset, len);
        }
        let (local, confirmed) = match self.cfg.mode {
            Mode::Sync => tokio::join!(self.apply_local(op), acked(ack)),
            Mode::Async => {
                let local = self.apply_local(op).await;
                // The extent stays active until the peer acknowledged (or the range is in the bitmap).
                if let (Some(rx), Some(g)) = (ack, al.take()) {
                    tokio::spawn(settle_when_acked(self.meta.clone(), rx, g, offset, len));
                }
                (local, !self.is_degraded())
            }
        };
        if let Err(e) = local {
            // The peer may have the new bytes and this node not: the range differs.
            self.dirty.mark(offset, len);
            if let Some(meta) = &self.meta {
                match meta.mark_dirty(offset, len).await {
                    Ok(_) => settle(al),
                    Err(me) => {
                        tracing::error!(code = me.code(), "mirror primary: persisting a failed range as dirty: {me}")
                    }
                }
            }
            return Err(e);
        }
        if !confirmed {
            self.dirty.mark(offset, len);
            if let Err(e) = self.degraded_ack(name, Some((offset, len))).await {
                // Not acknowledged (shut down, or the metadata failed): still record the range as dirty, so the
                // extent can leave the activity log.
                if let Some(meta) = &self.meta
                    && meta.mark_dirty(offset, len).await.is_ok()
                {
                    settle(al);
                }
                return Err(e);
            }
        }
        settle(al);
        Ok(())
    }
}

fn settle(al: Option<AlGuard>) {
    if let Some(g) = al {
        g.settle();
    }
}

/// Asynchronous mode: keep the extent active until the peer acknowledged the operation; if the link was lost
/// first, persist the range in the bitmap, then let the extent go.
async fn settle_when_acked(meta: Option<SharedMeta>, ack: oneshot::Receiver<bool>, al: AlGuard, offset: u64, len: u64) {
    if ack.await.unwrap_or(false) {
        al.settle();
        return;
    }
    if let Some(meta) = meta {
        match meta.mark_dirty(offset, len).await {
            Ok(_) => al.settle(),
            Err(e) => tracing::error!(code = e.code(), "mirror primary: persisting an unacknowledged range: {e}"),
        }
    }
}

type Answer = (u64, u64, [u8; DIGEST_LEN], Result<Result<[u8; DIGEST_LEN], u32>, oneshot::error::RecvError>);

/// The verify loop: read each chunk under the range table, queue its VERIFY_REQ, hash it locally; compare the
/// answers as they come (at most [`VERIFY_WINDOW`] outstanding) and mark what differs.
async fn verify_chunks(shared: &Arc<Shared>, chunk: u64, tally: &mut Tally, started: Instant) -> Result<(), String> {
    let size = shared.local.size();
    let mut answers: JoinSet<Answer> = JoinSet::new();
    let mut offset = 0;
    while offset < size {
        let n = chunk.min(size - offset);
        while answers.len() >= VERIFY_WINDOW {
            settle_answer(shared, &mut answers, tally, started).await?;
        }
        let rx = {
            let _guard = shared.locks.acquire(offset, n).await;
            let data = shared.local.read_at(offset, n as u32).await.map_err(|e| e.to_string())?;
            let rx = shared.send_verify(offset, n).await.map_err(|e| e.to_string())?;
            rx.map(|rx| (rx, data))
        };
        let Some((rx, data)) = rx else { return Err(LINK_LOST.into()) };
        answers.spawn(async move {
            let mine = if data.len() <= 1 << 20 {
                sha256(&data)
            } else {
                tokio::task::spawn_blocking(move || sha256(&data)).await.unwrap_or([0; DIGEST_LEN])
            };
            (offset, n, mine, rx.await)
        });
        offset += n;
    }
    while !answers.is_empty() {
        settle_answer(shared, &mut answers, tally, started).await?;
    }
    Ok(())
}

async fn settle_answer(
    shared: &Arc<Shared>,
    answers: &mut JoinSet<Answer>,
    tally: &mut Tally,
    started: Instant,
) -> Result<(), String> {
    let (offset, n, mine, theirs) = match answers.join_next().await {
        None => return Ok(()),
        Some(Ok(a)) => a,
        Some(Err(e)) => return Err(format!("a verify task failed: {e}")),
    };
    let peer_error = match theirs {
        Err(_) => return Err(LINK_LOST.into()),
        Ok(Ok(digest)) if digest == mine => None,
        Ok(Ok(_)) => Some(false),
        Ok(Err(errno)) => {
            tracing::warn!(offset, errno, "mirror primary: the peer could not read a chunk to verify");
            Some(true)
        }
    };
    tally.checked(n);
    if let Some(peer_error) = peer_error {
        tally.differs(offset, peer_error);
        tracing::warn!(offset, len = n, "mirror primary: verify found a differing chunk; marked out of sync");
        shared.dirty.mark(offset, n);
        if let Some(meta) = &shared.meta {
            meta.mark_dirty(offset, n).await.map_err(|e| e.to_string())?;
        }
    }
    let differing = tally.report.differing_chunks;
    shared.verify.send_modify(|p| {
        p.checked_bytes += n;
        p.differing_chunks = differing;
        p.elapsed = started.elapsed();
    });
    Ok(())
}

/// Stream every dirty chunk to the peer (the SyncSource side), then SYNC_DONE; on its ACK clear the bitmap.
async fn resync_loop(shared: Arc<Shared>) {
    let started = Instant::now();
    let outcome = resync_pieces(&shared, started).await;
    let outcome = match outcome {
        Ok(()) => finish_resync(&shared).await,
        Err(e) => Err(e),
    };
    shared.resync.send_modify(|p| {
        p.elapsed = started.elapsed();
        p.phase = ResyncPhase::ended(&outcome);
    });
    match outcome {
        Ok(()) => tracing::info!(elapsed = ?started.elapsed(), "mirror primary: resync done, the peer is UpToDate"),
        Err(reason) => tracing::warn!("mirror primary: resync aborted (the bitmap keeps the rest): {reason}"),
    }
}

async fn resync_pieces(shared: &Arc<Shared>, started: Instant) -> Result<(), String> {
    let mut pieces: JoinSet<bool> = JoinSet::new();
    // Pieces this node could not read: skipped (they stay dirty); the first error names the cause.
    let mut failed = 0u64;
    let mut first_error = None;
    for (start, len) in shared.dirty.ranges() {
        let mut offset = start;
        while offset < start + len {
            let n = RESYNC_PIECE.min(start + len - offset);
            while pieces.len() >= RESYNC_WINDOW {
                join_piece(&mut pieces).await?;
            }
            // Read and send under the range table; the guard is held until the peer acknowledged the piece, so an
            // application write to the same range goes strictly before or after it, on both nodes.
            let guard = shared.locks.acquire(offset, n).await;
            let data = match shared.local.read_at(offset, n as u32).await {
                Ok(data) => data,
                Err(e) => {
                    tracing::warn!(
                        offset,
                        len = n,
                        code = e.code(),
                        "mirror primary: resync piece unreadable, skipped: {e}"
                    );
                    failed += 1;
                    first_error.get_or_insert_with(|| e.to_string());
                    shared.resync.send_modify(|p| p.failed_pieces = failed);
                    drop(guard);
                    offset += n;
                    continue;
                }
            };
            let data: WriteBuf = Arc::new(data);
            let sent = shared.send("resync", Some((offset, n)), |seq| Out::Write { seq, offset, data, fua: false });
            let Some(ack) = sent.await.map_err(|e| e.to_string())? else { return Err(LINK_LOST.into()) };
            let progress = Arc::clone(shared);
            pieces.spawn(async move {
                let ok = ack.await.unwrap_or(false);
                drop(guard);
                if ok {
                    progress.resync.send_modify(|p| p.advance(n, started));
                }
                ok
            });
            offset += n;
        }
    }
    while !pieces.is_empty() {
        join_piece(&mut pieces).await?;
    }
    if let Some(first) = first_error {
        // No SYNC_DONE: the target stays Inconsistent (or behind); the bitmap keeps every chunk for the next link.
        return Err(format!(
            "{failed} resync piece(s) could not be read on this node and were skipped (first: {first}); the rest was \
             sent, the peer is not complete"
        ));
    }
    let done = shared.send("resync", None, |seq| Out::Frame(Frame::SyncDone { seq })).await;
    let ack = done.map_err(|e| e.to_string())?;
    if ack.is_none() || !acked(ack).await {
        return Err(LINK_LOST.into());
    }
    Ok(())
}

const LINK_LOST: &str = "the peer link was lost";

async fn join_piece(pieces: &mut JoinSet<bool>) -> Result<(), String> {
    match pieces.join_next().await {
        None | Some(Ok(true)) => Ok(()),
        Some(Ok(false)) => Err(LINK_LOST.into()),
        Some(Err(e)) => Err(format!("a resync task failed: {e}")),
    }
}

/// The peer acknowledged SYNC_DONE: clear the in-memory and persistent bitmaps, unless the link was lost (then the
/// degraded operations own the bitmap). Holding `bumped` orders this before any degraded acknowledgement.
async fn finish_resync(shared: &Arc<Shared>) -> Result<(), String> {
    let bumped = shared.bumped.lock().await;
    if *bumped {
        return Err("the link was lost after the resync".into());
    }
    {
        let link = shared.lock_link();
        if !matches!(*link, Link::Connected(_)) {
            return Err("the link was lost after the resync".into());
        }
        shared.dirty.clear();
    }
    if let Some(meta) = &shared.meta {
        meta.with(|m| {
            m.clear_all()?;
            m.update(|sb| {
                sb.bitmap_uuid = 0;
                sb.flags &= !FLAG_PEER_OUTDATED;
            })
        })
        .await
        .map_err(|e| e.to_string())?;
    }
    drop(bumped);
    Ok(())
}

async fn acked(ack: Option<oneshot::Receiver<bool>>) -> bool {
    match ack {
        Some(rx) => rx.await.unwrap_or(false),
        None => false,
    }
}

/// Longest wait of a clean stop for the operations in flight.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Longest wait for the link's orderly close (TLS close_notify, TCP FIN) once the store is degraded or shut down.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(1);

async fn write_loop<W: AsyncWrite + Unpin>(shared: Arc<Shared>, wr: W, mut rx: mpsc::UnboundedReceiver<Out>) {
    let mut w = BufWriter::with_capacity(256 * 1024, wr);
    let mut degraded = shared.degraded.subscribe();
    let sent = tokio::select! {
        r = send_all(&mut w, &mut rx) => r,
        _ = degraded.wait_for(|d| *d) => Ok(()),
    };
    if let Err(source) = sent {
        shared.degrade(ReplicationError::Io { during: "sending to the peer", source });
    }
    // The writer is not aborted on degrade: it closes the stream in order, bounded (the peer may not be reading).
    let _ = tokio::time::timeout(CLOSE_TIMEOUT, w.shutdown()).await;
}

async fn send_all<W: AsyncWrite + Unpin>(w: &mut W, rx: &mut mpsc::UnboundedReceiver<Out>) -> std::io::Result<()> {
    while let Some(out) = rx.recv().await {
        match out {
            Out::Write { seq, offset, data, fua } => {
                let prefix = Frame::write_prefix(seq, offset, data.len(), fua)
                    .ok_or_else(|| std::io::Error::other("a WRITE over the maximum reached the link"))?;
                w.write_all(&prefix).await?;
                w.write_all(&data).await?;
            }
            Out::Frame(f) => w.write_all(&f.encode()).await?,
        }
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    Ok(())
}

async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Shared>, mut rd: R) {
    let err = loop {
        match read_frame(&mut rd).await {
            Ok(None) => break ReplicationError::PeerClosed,
            Err(e) => break e,
            Ok(Some(Frame::Ack { seq, status })) => {
                if let Err(e) = shared.on_ack(seq, status) {
                    break e;
                }
            }
            Ok(Some(Frame::VerifyRep { seq, errno, digest })) => {
                if let Err(e) = shared.on_verify_rep(seq, errno, digest) {
                    break e;
                }
            }
            Ok(Some(Frame::Pong { .. })) => shared.on_frame(None),
            Ok(Some(Frame::Ping { token })) => shared.on_frame(Some(token)),
            Ok(Some(other)) => {
                let detail = "the secondary sends only ACK, VERIFY_REP, PING and PONG".to_string();
                break ReplicationError::Unexpected {
                    kind: other.kind_name(),
                    seq: other.data_seq().unwrap_or(0),
                    detail,
                };
            }
        }
    };
    shared.degrade(err);
}

async fn ping_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(shared.cfg.ping_interval.max(Duration::from_millis(10)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        if let Err(e) = shared.keepalive() {
            shared.degrade(e);
            return;
        }
    }
}

#[async_trait]
impl BlockStore for ReplicatedStore {
    fn size(&self) -> u64 {
        self.shared.local.size()
    }

    fn read_only(&self) -> bool {
        self.shared.local.read_only()
    }

    /// A FLUSH through any handle is a barrier on the peer after every operation sent before it, and every
    /// completed operation was sent: multi-connection is safe when the local store allows it.
    fn can_multi_conn(&self) -> bool {
        self.shared.local.can_multi_conn()
    }

    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        self.shared.local.read_at(offset, len).await
    }

    async fn write_at(&self, offset: u64, data: WriteBuf, fua: bool) -> Result<(), StoreError> {
        self.shared.replicate(Op::Write { offset, data, fua }).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        let s = &self.shared;
        if s.local.read_only() {
            return s.local.flush().await;
        }
        let ack = s.send("flush", None, |seq| Out::Frame(Frame::Flush { seq })).await?;
        let (local, confirmed) = match s.cfg.mode {
            Mode::Sync => tokio::join!(s.local.flush(), acked(ack)),
            Mode::Async => {
                let local = s.local.flush().await;
                (local, !s.is_degraded())
            }
        };
        local?;
        if !confirmed {
            s.degraded_ack("flush", None).await?;
        }
        Ok(())
    }

    async fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        self.shared.replicate(Op::Trim { offset, len }).await
    }

    async fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), StoreError> {
        self.shared.replicate(Op::Zeroes { offset, len, fua }).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::replication::mem::MemStore;
    use crate::mirror::replication::secondary::{Stats, serve_secondary};
    use std::sync::atomic::AtomicUsize;
    use tokio::task::JoinHandle;

    #[derive(Default)]
    struct Gate {
        calls: AtomicUsize,
        fail_first: usize,
        generations: Mutex<Vec<u64>>,
    }

    #[async_trait]
    impl PeerLossGate for Gate {
        async fn mark_peer_outdated(&self, generation: u64) -> Result<(), String> {
            self.generations.lock().expect("lock").push(generation);
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first { Err(format!("lease store unreachable ({n})")) } else { Ok(()) }
        }
    }

    struct Pair {
        primary: Arc<ReplicatedStore>,
        local: Arc<MemStore>,
        remote: Arc<MemStore>,
        gate: Arc<Gate>,
        served: JoinHandle<Result<Stats, ReplicationError>>,
    }

    async fn pair(remote: MemStore, cfg: ReplicationConfig, gate: Gate) -> Pair {
        // Local writes at offset 0 are slow: without the primary's ordering, a later overlapping write would land
        // locally first.
        let slow = Some(Duration::from_millis(20));
        let local = Arc::new(MemStore { slow_at_zero: slow, ..MemStore::new(remote.bytes().len()) });
        let remote = Arc::new(remote);
        let (a, b) = tokio::io::duplex(1 << 20);
        let served = tokio::spawn(serve_secondary(b, Arc::clone(&remote) as Arc<dyn BlockStore>));
        let gate = Arc::new(gate);
        let primary = ReplicatedStore::connect(Arc::clone(&local) as Arc<dyn BlockStore>, a, cfg, gate.clone())
            .await
            .expect("connect");
        Pair { primary: Arc::new(primary), local, remote, gate, served }
    }

    fn buf(byte: u8, len: usize) -> WriteBuf {
        Arc::new(vec![byte; len])
    }

    #[tokio::test]
    async fn a_sync_write_completes_only_after_the_peer_applied_it() {
        let hold = Arc::new(Semaphore::new(0));
        let remote = MemStore { hold: Some(Arc::clone(&hold)), ..MemStore::new(1 << 20) };
        let p = pair(remote, ReplicationConfig::default(), Gate::default()).await;
        let store = Arc::clone(&p.primary);
        let mut write = tokio::spawn(async move { store.write_at(100, buf(5, 10), true).await });
        assert!(tokio::time::timeout(Duration::from_millis(200), &mut write).await.is_err(), "completed early");
        assert_eq!(p.local.bytes()[100], 5, "the local write is done");
        assert_eq!(p.primary.bytes_behind(), 10);
        hold.add_permits(1);
        write.await.expect("join").expect("write");
        assert_eq!((p.remote.bytes()[100], p.primary.state()), (5, ReplicationState::Connected));
        assert_eq!(p.primary.bytes_behind(), 0);
        p.primary.flush().await.expect("flush");
        assert_eq!(p.remote.flushes.lock().expect("lock").len(), 1, "the flush reached the peer");
        assert_eq!(p.gate.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn concurrent_overlapping_writes_leave_both_copies_identical() {
        let p = pair(MemStore::new(1 << 16), ReplicationConfig::default(), Gate::default()).await;
        let mut tasks = Vec::new();
        for i in 0..40u64 {
            let s = Arc::clone(&p.primary);
            let offset = (i % 5) * 100;
            tasks.push(tokio::spawn(async move { s.write_at(offset, buf(i as u8 + 1, 300), false).await }));
            if i % 7 == 0 {
                let s = Arc::clone(&p.primary);
                tasks.push(tokio::spawn(async move { s.write_zeroes(150, 50, false).await }));
            }
        }
        for t in tasks {
            t.await.expect("join").expect("write");
        }
        p.primary.flush().await.expect("flush");
        assert!(p.local.bytes() == p.remote.bytes(), "the two copies differ");
    }

    #[tokio::test]
    async fn peer_loss_degrades_passes_the_gate_once_and_tracks_dirty_ranges() {
        let hold = Arc::new(Semaphore::new(1));
        let remote = MemStore { hold: Some(Arc::clone(&hold)), ..MemStore::new(1 << 20) };
        let p = pair(remote, ReplicationConfig::default(), Gate::default()).await;
        p.primary.write_at(0, buf(1, 10), false).await.expect("replicated write");
        let s = Arc::clone(&p.primary);
        let in_flight = tokio::spawn(async move { s.write_at(128 * 1024, buf(2, 10), false).await });
        while p.primary.bytes_behind() == 0 {
            tokio::task::yield_now().await;
        }
        p.served.abort();
        in_flight.await.expect("join").expect("completes locally");
        p.primary.wait_degraded().await;
        p.primary.write_at(512 * 1024, buf(3, 70 * 1024), false).await.expect("degraded write");
        p.primary.trim(0, 1).await.expect("degraded trim");
        p.primary.flush().await.expect("degraded flush");
        assert_eq!(p.gate.calls.load(Ordering::SeqCst), 1);
        let k = DirtyTracker::CHUNK;
        assert_eq!(p.primary.dirty().ranges(), vec![(0, k), (2 * k, k), (8 * k, 2 * k)]);
        let ReplicationState::Degraded { dirty_bytes, code, .. } = p.primary.state() else { panic!("not degraded") };
        assert_eq!(dirty_bytes, 4 * k);
        assert!(code == "TDM-MIR-038" || code == "TDM-MIR-030", "{code}");
        assert_eq!(p.local.bytes()[512 * 1024], 3);
    }

    #[tokio::test]
    async fn a_failing_gate_holds_writes_until_it_succeeds() {
        let cfg = ReplicationConfig { gate_retry: Duration::from_millis(10), ..ReplicationConfig::default() };
        let gate = Gate { fail_first: 3, ..Gate::default() };
        let p = pair(MemStore::new(4096), cfg, gate).await;
        p.served.abort();
        p.primary.wait_degraded().await;
        p.primary.write_at(0, buf(1, 1), false).await.expect("held, then completed");
        assert_eq!(p.gate.calls.load(Ordering::SeqCst), 4, "three failures, then one success");
        p.primary.write_at(1, buf(1, 1), false).await.expect("no more gate");
        assert_eq!(p.gate.calls.load(Ordering::SeqCst), 4);
        let gens = p.gate.generations.lock().expect("lock").clone();
        assert!(gens[0] != 0 && gens.iter().all(|g| *g == gens[0]), "one generation for every attempt: {gens:?}");
    }

    #[tokio::test]
    async fn shutdown_fails_writes_held_by_the_gate() {
        let cfg = ReplicationConfig { gate_retry: Duration::from_millis(10), ..ReplicationConfig::default() };
        let gate = Gate { fail_first: usize::MAX, ..Gate::default() };
        let p = pair(MemStore::new(4096), cfg, gate).await;
        p.served.abort();
        p.primary.wait_degraded().await;
        let s = Arc::clone(&p.primary);
        let held = tokio::spawn(async move { s.write_at(0, buf(1, 1), false).await });
        while p.gate.calls.load(Ordering::SeqCst) < 2 {
            tokio::task::yield_now().await;
        }
        assert!(!held.is_finished());
        p.primary.shutdown();
        let e = held.await.expect("join").expect_err("shut down");
        assert!(e.to_string().contains("TDM-MIR-037"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_write_times_out_and_completes_degraded() {
        let (mut peer, a) = tokio::io::duplex(1 << 20);
        let local = Arc::new(MemStore::new(4096));
        let hello = Hello { node: "b".into(), size: 4096, uuid: 0, generation: 0, flags: 0 };
        let peer_side = async {
            exchange_hello(&mut peer, &hello, Duration::from_secs(5)).await.expect("hello");
            peer
        };
        let cfg = ReplicationConfig { ack_timeout: Duration::from_secs(2), ..ReplicationConfig::default() };
        let gate = Arc::new(Gate::default());
        let connect = ReplicatedStore::connect(Arc::clone(&local) as Arc<dyn BlockStore>, a, cfg, gate.clone());
        let (primary, _peer) = tokio::join!(connect, peer_side);
        let primary = primary.expect("connect");
        primary.write_at(10, buf(9, 4), false).await.expect("completes after the timeout");
        let ReplicationState::Degraded { code, .. } = primary.state() else { panic!("not degraded") };
        assert_eq!(code, "TDM-MIR-034");
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
        assert!(primary.dirty().is_dirty(10));
    }

    #[tokio::test]
    async fn a_peer_store_failure_degrades_and_marks_the_range() {
        let p = pair(
            MemStore { fail_at: Some(2048), ..MemStore::new(1 << 20) },
            ReplicationConfig::default(),
            Gate::default(),
        )
        .await;
        p.primary.write_at(2048, buf(4, 8), false).await.expect("completes locally");
        let ReplicationState::Degraded { code, .. } = p.primary.state() else { panic!("not degraded") };
        assert_eq!(code, "TDM-MIR-035");
        assert_eq!(p.primary.dirty().ranges(), vec![(0, DirtyTracker::CHUNK)]);
    }

    #[tokio::test]
    async fn async_mode_acks_before_the_peer_and_catches_up() {
        let hold = Arc::new(Semaphore::new(0));
        let remote = MemStore { hold: Some(Arc::clone(&hold)), ..MemStore::new(4096) };
        let cfg = ReplicationConfig { mode: Mode::Async, ..ReplicationConfig::default() };
        let p = pair(remote, cfg, Gate::default()).await;
        p.primary.write_at(0, buf(1, 100), false).await.expect("async write");
        p.primary.write_at(50, buf(2, 100), false).await.expect("overlapping async write");
        assert_eq!((p.primary.bytes_behind(), p.remote.bytes()[0]), (200, 0));
        hold.add_permits(2);
        let deadline = Instant::now() + Duration::from_secs(10);
        while p.primary.bytes_behind() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(p.primary.bytes_behind(), 0);
        assert_eq!(p.local.bytes(), p.remote.bytes(), "applied in the same order");
        assert_eq!(p.gate.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn standalone_and_checked_operations() {
        let gate = Arc::new(Gate::default());
        let local = Arc::new(MemStore::new(4096));
        let s = ReplicatedStore::standalone(local, ReplicationConfig::default(), gate.clone());
        assert!(s.peer().is_none());
        let e = s.write_at(4090, buf(1, 10), false).await.expect_err("past the end");
        assert_eq!(e.code(), "TDM-MIR-004");
        s.write_at(0, buf(1, 0), false).await.expect("empty write");
        assert_eq!(gate.calls.load(Ordering::SeqCst), 0, "nothing written, nothing gated");
        s.write_zeroes(0, 10, true).await.expect("zeroes");
        assert_eq!((gate.calls.load(Ordering::SeqCst), s.dirty().dirty_chunks()), (1, 1));
        assert_eq!(s.read_at(0, 2).await.expect("read"), vec![0, 0]);
    }

    #[tokio::test]
    async fn verify_reports_and_marks_exactly_the_chunks_that_differ_while_writes_continue() {
        const SIZE: usize = 40 * 64 * 1024 + 1000;
        let p = pair(MemStore::new(SIZE), ReplicationConfig::default(), Gate::default()).await;
        p.primary.write_at(5000, buf(3, 200_000), false).await.expect("write");
        let clean = p.primary.verify().await.expect("verify");
        assert_eq!((clean.bytes_checked, clean.differing_chunks), (SIZE as u64, 0));
        assert_eq!(p.primary.verify_progress().phase, VerifyPhase::Done);
        let k = DirtyTracker::CHUNK as usize;
        {
            let mut remote = p.remote.data.lock().expect("lock");
            remote[3 * k + 17] ^= 1;
            remote[39 * k] ^= 1;
            remote[SIZE - 1] ^= 1;
        }
        let s = Arc::clone(&p.primary);
        let writer = tokio::spawn(async move {
            for i in 0..50u64 {
                s.write_at(10 * DirtyTracker::CHUNK + i * 100, buf(9, 100), false).await.expect("write during verify");
            }
        });
        let r = p.primary.verify().await.expect("verify");
        writer.await.expect("join");
        assert_eq!(r.differing_chunks, 3, "{r:?}");
        assert_eq!(r.first_differing, vec![3 * k as u64, 39 * k as u64, 40 * k as u64]);
        assert_eq!(r.chunk_bytes, DirtyTracker::CHUNK);
        assert_eq!(p.primary.dirty().ranges(), vec![(3 * k as u64, k as u64), (39 * k as u64, (k + 1000) as u64)]);
        let progress = p.primary.verify_progress();
        assert_eq!((progress.checked_bytes, progress.differing_chunks, progress.percent()), (SIZE as u64, 3, 100));
        assert_eq!(p.primary.state(), ReplicationState::Connected);
    }

    #[tokio::test]
    async fn verify_needs_a_connected_peer_and_runs_once_at_a_time() {
        let p = pair(MemStore::new(1 << 20), ReplicationConfig::default(), Gate::default()).await;
        // The first holds the verify from its first poll to its end; the second is polled meanwhile.
        let (first, second) = tokio::join!(p.primary.verify(), p.primary.verify());
        assert_eq!(first.expect("first verify").bytes_checked, 1 << 20);
        assert_eq!(second.expect_err("second verify").code(), "TDM-MIR-053");
        p.served.abort();
        p.primary.wait_degraded().await;
        assert_eq!(p.primary.verify().await.expect_err("degraded").code(), "TDM-MIR-054");
        let alone = ReplicatedStore::standalone(Arc::new(MemStore::new(4096)), ReplicationConfig::default(), p.gate);
        assert_eq!(alone.verify().await.expect_err("no peer").code(), "TDM-MIR-054");
    }

    // ---- metadata and resync ----

    use crate::mirror::meta::{DEFAULT_GRANULARITY, MemDevice, Meta};
    use crate::mirror::replication::secondary::{SecondaryConfig, serve_secondary_meta};

    fn mem_meta(size: u64, node: &str) -> (MemDevice, SharedMeta) {
        let dev = MemDevice::default();
        let m = Meta::create_on(Box::new(dev.clone()), size, node, DEFAULT_GRANULARITY).expect("meta");
        (dev, SharedMeta::new(m))
    }

    async fn meta_pair(
        local: Arc<MemStore>,
        remote: Arc<MemStore>,
        ma: SharedMeta,
        mb: SharedMeta,
    ) -> (ReplicatedStore, JoinHandle<Result<Stats, ReplicationError>>) {
        let (a, b) = tokio::io::duplex(1 << 20);
        let cfg = SecondaryConfig { node: "b".into(), ..SecondaryConfig::default() };
        let served = tokio::spawn(serve_secondary_meta(b, Arc::clone(&remote) as Arc<dyn BlockStore>, cfg, mb));
        let cfg = ReplicationConfig { node: "a".into(), ..ReplicationConfig::default() };
        let local = Arc::clone(&local) as Arc<dyn BlockStore>;
        let primary = ReplicatedStore::connect_with_meta(local, a, cfg, Arc::new(Gate::default()), ma).await;
        (primary.expect("connect"), served)
    }

    fn patterned(size: usize) -> MemStore {
        let s = MemStore::new(size);
        s.data.lock().expect("lock").iter_mut().enumerate().for_each(|(i, b)| *b = (i % 251) as u8);
        s
    }

    #[tokio::test]
    async fn resync_pieces_and_application_writes_to_the_same_range_do_not_reorder() {
        const SIZE: usize = 4 << 20;
        let local = Arc::new(MemStore { slow_at_zero: Some(Duration::from_millis(5)), ..patterned(SIZE) });
        let remote = Arc::new(MemStore::new(SIZE));
        let ((_, ma), (_, mb)) = (mem_meta(SIZE as u64, "a"), mem_meta(SIZE as u64, "b"));
        let (p, served) = meta_pair(Arc::clone(&local), Arc::clone(&remote), ma.clone(), mb.clone()).await;
        assert_eq!(p.resync_progress().decision, Some(Decision::SourceFull));
        for i in 0..20u8 {
            p.write_at(0, buf(i, 4096), false).await.expect("write during the resync");
            p.write_at(RESYNC_PIECE * 2 + 10, buf(i, 100), false).await.expect("write during the resync");
        }
        let done = p.wait_resync().await;
        assert_eq!((done.phase, done.done_bytes), (ResyncPhase::Done, SIZE as u64));
        assert_eq!(local.bytes(), remote.bytes(), "no resync piece overtook an application write");
        assert_eq!(ma.dirty_bytes(), 0);
        assert_eq!(mb.superblock().disk, DiskState::UpToDate);
        assert_eq!(mb.superblock().current, ma.superblock().current);
        drop(p);
        let stats = served.await.expect("join").expect("secondary");
        assert!(stats.resync_completed);
    }

    #[tokio::test]
    async fn a_link_lost_during_resync_keeps_the_bitmap_and_the_next_link_resumes() {
        const SIZE: usize = 2 << 20;
        let local = Arc::new(patterned(SIZE));
        let hold = Arc::new(Semaphore::new(0));
        let remote = Arc::new(MemStore { hold: Some(Arc::clone(&hold)), ..MemStore::new(SIZE) });
        let ((_, ma), (db, mb)) = (mem_meta(SIZE as u64, "a"), mem_meta(SIZE as u64, "b"));
        let gen_b = mb.superblock().current;
        let (p, served) = meta_pair(Arc::clone(&local), Arc::clone(&remote), ma.clone(), mb).await;
        while remote.done.load(Ordering::SeqCst) == 0 && p.bytes_behind() == 0 {
            tokio::task::yield_now().await;
        }
        served.abort();
        let done = p.wait_resync().await;
        assert!(matches!(done.phase, ResyncPhase::Aborted(_)), "{done:?}");
        assert_eq!(ma.dirty_bytes(), SIZE as u64, "nothing confirmed, nothing cleared");
        let sb = Meta::open_on(Box::new(db.clone())).expect("open").superblock().clone();
        assert_eq!((sb.disk, sb.current), (DiskState::Inconsistent, gen_b), "the target is not usable yet");
        drop(p);

        let remote = Arc::new(MemStore::new(SIZE));
        let mb = SharedMeta::new(Meta::open_on(Box::new(db)).expect("open"));
        let (p, _served) = meta_pair(Arc::clone(&local), Arc::clone(&remote), ma.clone(), mb.clone()).await;
        let done = p.wait_resync().await;
        assert_eq!((done.decision, done.phase), (Some(Decision::SourceFull), ResyncPhase::Done));
        assert_eq!(local.bytes(), remote.bytes());
        assert_eq!((ma.dirty_bytes(), mb.superblock().disk), (0, DiskState::UpToDate));
    }

    #[tokio::test]
    async fn split_brain_refuses_both_sides_before_anything_is_written() {
        let ((_, ma), (_, mb)) = (mem_meta(8192, "a"), mem_meta(8192, "b"));
        for m in [&ma, &mb] {
            m.update(|sb| {
                sb.disk = DiskState::UpToDate;
                sb.history = [7, 0, 0, 0];
            })
            .await
            .expect("diverged");
        }
        let remote = Arc::new(MemStore::new(8192));
        let (a, b) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(serve_secondary_meta(b, remote.clone(), SecondaryConfig::default(), mb));
        let local = Arc::new(patterned(8192)) as Arc<dyn BlockStore>;
        let cfg = ReplicationConfig::default();
        let Err(e) = ReplicatedStore::connect_with_meta(local, a, cfg, Arc::new(Gate::default()), ma).await else {
            panic!("split brain accepted");
        };
        assert_eq!(e.code(), "TDM-MIR-050");
        assert_eq!(served.await.expect("join").expect_err("refused").code(), "TDM-MIR-050");
        assert!(remote.bytes().iter().all(|b| *b == 0));
    }

    #[tokio::test]
    async fn degraded_writes_start_one_generation_and_persist_their_chunks() {
        let (dev, ma) = mem_meta(1 << 20, "a");
        let g0 = ma.superblock().current;
        let gate = Arc::new(Gate::default());
        let s = ReplicatedStore::standalone_with_meta(
            Arc::new(MemStore::new(1 << 20)),
            ReplicationConfig::default(),
            gate.clone(),
            ma,
        )
        .expect("standalone");
        s.write_at(70_000, buf(1, 10), false).await.expect("write");
        s.write_at(200_000, buf(1, 10), false).await.expect("write");
        s.flush().await.expect("flush");
        let m = Meta::open_on(Box::new(dev)).expect("open");
        let sb = m.superblock();
        assert_eq!((sb.history[0], sb.bitmap_uuid, sb.history[1]), (g0, g0, 0), "one new generation");
        assert_ne!(sb.current, g0);
        assert_eq!(m.dirty_ranges(), vec![(65536, 65536), (196_608, 65536)]);
        assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
        assert_eq!(*gate.generations.lock().expect("lock"), vec![sb.current], "the gate named the adopted generation");
        let big = Meta::create_on(Box::new(MemDevice::default()), 4096 * 3, "x", 4096).expect("meta");
        let e = ReplicatedStore::standalone_with_meta(
            Arc::new(MemStore::new(4096)),
            ReplicationConfig::default(),
            gate,
            SharedMeta::new(big),
        )
        .err()
        .expect("size mismatch");
        assert_eq!(e.code(), "TDM-MIR-047");
    }

    #[tokio::test]
    async fn metadata_on_one_side_only_is_refused_at_the_handshake() {
        let (_, ma) = mem_meta(8192, "a");
        let remote = Arc::new(MemStore::new(8192));
        let (a, b) = tokio::io::duplex(1 << 16);
        let served = tokio::spawn(serve_secondary(b, remote.clone() as Arc<dyn BlockStore>));
        let local = Arc::new(MemStore::new(8192)) as Arc<dyn BlockStore>;
        let cfg = ReplicationConfig::default();
        let Err(e) = ReplicatedStore::connect_with_meta(local, a, cfg, Arc::new(Gate::default()), ma.clone()).await
        else {
            panic!("accepted a peer without metadata");
        };
        assert_eq!(e.code(), "TDM-MIR-032");
        assert!(e.to_string().contains("this node has mirror metadata"), "{e}");
        assert_eq!(served.await.expect("join").expect_err("refused").code(), "TDM-MIR-032");
        assert_eq!(ma.superblock().disk, DiskState::Inconsistent, "nothing saved");
    }

    // ---- activity log ----

    /// Both nodes UpToDate at the same generation with identical (zero) stores: the next link is InSync.
    async fn in_sync_metas(size: u64) -> ((MemDevice, SharedMeta), (MemDevice, SharedMeta)) {
        let (a, b) = (mem_meta(size, "a"), mem_meta(size, "b"));
        let g = a.1.superblock().current;
        for m in [&a.1, &b.1] {
            m.update(move |sb| {
                sb.disk = DiskState::UpToDate;
                sb.current = g;
                sb.history = [0x77, 0, 0, 0];
            })
            .await
            .expect("in sync");
        }
        (a, b)
    }

    fn reopen(dev: &MemDevice) -> SharedMeta {
        SharedMeta::new(Meta::open_on(Box::new(dev.clone())).expect("open"))
    }

    /// The primary writes at `at`; its local store completes, the peer never applies it; then the primary dies
    /// (the write's task and the store are dropped: no degraded acknowledgement persists anything).
    async fn crash_with_a_write_the_peer_never_got(size: usize, at: u64) -> (Arc<MemStore>, MemDevice, MemDevice) {
        let ((da, ma), (db, mb)) = in_sync_metas(size as u64).await;
        let local = Arc::new(MemStore::new(size));
        let hold = Arc::new(Semaphore::new(0));
        let remote = Arc::new(MemStore { hold: Some(hold), ..MemStore::new(size) });
        let (p, served) = meta_pair(Arc::clone(&local), remote, ma, mb).await;
        assert_eq!(p.resync_progress().decision, Some(Decision::InSync));
        let p = Arc::new(p);
        let s = Arc::clone(&p);
        let write = tokio::spawn(async move { s.write_at(at, buf(0xc3, 4096), false).await });
        while local.bytes()[at as usize] != 0xc3 {
            tokio::task::yield_now().await;
        }
        write.abort();
        let _ = write.await;
        served.abort();
        drop(p);
        let m = Meta::open_on(Box::new(da.clone())).expect("open");
        assert!(m.dirty_ranges().is_empty(), "the bitmap does not know the write");
        assert_eq!(m.activity(), vec![(at / AL_EXTENT_BYTES * AL_EXTENT_BYTES, AL_EXTENT_BYTES)], "the log does");
        (local, da, db)
    }

    use super::super::activity::AL_EXTENT_BYTES;

    #[tokio::test]
    async fn a_write_lost_in_a_primary_crash_is_resynced_when_it_returns_as_primary() {
        const SIZE: usize = 16 << 20;
        let at = 9 * (1 << 20) + 512;
        let (local, da, db) = crash_with_a_write_the_peer_never_got(SIZE, at).await;
        let remote = Arc::new(MemStore::new(SIZE));
        let (p, _served) = meta_pair(Arc::clone(&local), Arc::clone(&remote), reopen(&da), reopen(&db)).await;
        let done = p.wait_resync().await;
        assert_eq!((done.decision, done.phase), (Some(Decision::InSync), ResyncPhase::Done));
        assert_eq!(done.total_bytes, AL_EXTENT_BYTES, "the log's extent, not the disk");
        assert_eq!(remote.bytes()[at as usize], 0xc3);
        assert!(local.bytes() == remote.bytes(), "the returning primary repaired the peer");
    }

    #[tokio::test]
    async fn a_write_lost_in_a_primary_crash_is_resynced_when_it_returns_as_secondary() {
        const SIZE: usize = 16 << 20;
        let at = 5 * (1 << 20);
        let (crashed, da, db) = crash_with_a_write_the_peer_never_got(SIZE, at).await;
        // b was promoted and has not written yet: same generation, so the link is InSync with roles swapped.
        let b_store = Arc::new(patterned(SIZE));
        let (x, y) = tokio::io::duplex(1 << 20);
        let cfg = SecondaryConfig { node: "a".into(), ..SecondaryConfig::default() };
        let ma = reopen(&da);
        let served =
            tokio::spawn(serve_secondary_meta(y, Arc::clone(&crashed) as Arc<dyn BlockStore>, cfg, ma.clone()));
        let cfg = ReplicationConfig { node: "b".into(), ..ReplicationConfig::default() };
        let b = Arc::clone(&b_store) as Arc<dyn BlockStore>;
        let p = ReplicatedStore::connect_with_meta(b, x, cfg, Arc::new(Gate::default()), reopen(&db)).await;
        let p = p.expect("connect");
        let done = p.wait_resync().await;
        assert_eq!((done.decision, done.phase), (Some(Decision::InSync), ResyncPhase::Done));
        assert_eq!(done.total_bytes, AL_EXTENT_BYTES, "the extent a reported out of sync");
        let (mine, theirs) = (crashed.bytes(), b_store.bytes());
        let e = (at / AL_EXTENT_BYTES * AL_EXTENT_BYTES) as usize;
        assert!(mine[e..e + AL_EXTENT_BYTES as usize] == theirs[e..e + AL_EXTENT_BYTES as usize], "repaired");
        assert_eq!((ma.dirty_bytes(), ma.activity()), (0, vec![]), "a's bitmap and log are clear after the sync");
        drop(p);
        assert!(served.await.expect("join").expect("secondary").resync_completed);
    }

    #[tokio::test]
    async fn sequential_writes_cost_one_log_write_per_extent_and_a_clean_stop_empties_the_log() {
        const SIZE: usize = 64 << 20;
        let ((da, ma), (db, mb)) = in_sync_metas(SIZE as u64).await;
        let local = Arc::new(MemStore::new(SIZE));
        let remote = Arc::new(MemStore::new(SIZE));
        let (p, _served) = meta_pair(Arc::clone(&local), Arc::clone(&remote), ma.clone(), mb.clone()).await;
        let before = ma.syncs();
        for i in 0..32u64 {
            p.write_at(i << 20, buf(i as u8, 1 << 20), false).await.expect("write");
        }
        let (writes, syncs) = (p.activity_writes(), ma.syncs() - before);
        assert_eq!((writes, syncs), (8, 8), "32 sequential 1 MiB writes: one metadata write per 4 MiB");
        assert_eq!(p.activity().len(), 8);
        p.stop().await.expect("clean stop");
        let m = Meta::open_on(Box::new(da.clone())).expect("open");
        assert!(m.activity().is_empty() && m.dirty_ranges().is_empty(), "nothing to resync after a clean stop");
        let (p, _served) = meta_pair(local, remote, reopen(&da), reopen(&db)).await;
        assert_eq!(p.resync_progress().phase, ResyncPhase::Idle);
    }
}
