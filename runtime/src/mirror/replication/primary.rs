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

use super::dirty::DirtyTracker;
use super::frame::{AckStatus, Frame, Hello, MAX_DATA};
use super::ranges::RangeLocks;
use super::resync::{ResyncPhase, ResyncProgress};
use super::{
    ReplicationError, check_meta_size, decide_link, exchange_hello, exchange_meta, meta_info, our_hello, read_frame,
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
        }
    }
}

/// What must be true before the first operation is acknowledged after the peer was lost: the peer is marked
/// Outdated durably (a later piece writes it to the lease record), so it cannot be promoted with stale data.
#[async_trait]
pub trait PeerLossGate: Send + Sync {
    /// Mark the peer outdated. An `Err` holds the writes; the call is retried until it succeeds.
    async fn mark_peer_outdated(&self) -> Result<(), String>;
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
    _slot: OwnedSemaphorePermit,
}

struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    next_seq: u64,
    next_token: u64,
    pending: HashMap<u64, Pending>,
    last_rx: Instant,
    tasks: Vec<AbortHandle>,
}

enum Link {
    Connected(Conn),
    Degraded { since: SystemTime, code: &'static str, reason: String },
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
    gate_passed: tokio::sync::Mutex<bool>,
    degraded: watch::Sender<bool>,
    shutdown: watch::Sender<bool>,
    bytes_behind: AtomicU64,
    meta: Option<SharedMeta>,
    /// Whether the new generation of the degraded period was started; held while a resync completes.
    bumped: tokio::sync::Mutex<bool>,
    resync: watch::Sender<ResyncProgress>,
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
            // A source is UpToDate by the rules (a fresh primary's first full sync makes its data the reference);
            // in sync with an UpToDate peer means the same data, so UpToDate too. Otherwise the state is kept.
            let up_to_date = decision.is_source()
                || (decision == Decision::InSync && DiskState::from_byte(theirs.disk) == Some(DiskState::UpToDate));
            meta.with(move |m| {
                if decision == Decision::SourceFull {
                    m.mark_dirty(0, size)?;
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
    pub fn shutdown(&self) {
        self.shared.close();
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
        Shared {
            meta,
            bumped: tokio::sync::Mutex::new(false),
            resync: watch::Sender::new(ResyncProgress::default()),
            dirty,
            slots: Arc::new(Semaphore::new(cfg.max_in_flight.max(1))),
            local,
            cfg,
            gate,
            peer,
            locks: RangeLocks::new(),
            link: Mutex::new(link),
            gate_passed: tokio::sync::Mutex::new(false),
            degraded: watch::Sender::new(false),
            shutdown: watch::Sender::new(false),
            bytes_behind: AtomicU64::new(0),
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
        if c.tx.send(make(seq)).is_err() {
            return Ok(None);
        }
        c.next_seq += 1;
        let bytes = range.map_or(0, |r| r.1);
        let (done, rx) = oneshot::channel();
        c.pending.insert(seq, Pending { range, bytes, since: Instant::now(), done, _slot: slot });
        self.bytes_behind.fetch_add(bytes, Ordering::SeqCst);
        Ok(Some(rx))
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
        let _ = self.bytes_behind.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |b| Some(b.saturating_sub(p.bytes)));
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

    /// Before acknowledging anything after the peer was lost: pass the gate once, retrying while it fails.
    async fn pass_gate(&self, op: &'static str) -> Result<(), StoreError> {
        let shut = || StoreError::Task { op, reason: ReplicationError::ShutDown.to_string() };
        let mut passed = self.gate_passed.lock().await;
        let mut shutdown = self.shutdown.subscribe();
        loop {
            if *passed {
                return Ok(());
            }
            if *shutdown.borrow() {
                return Err(shut());
            }
            let outcome = tokio::select! {
                r = self.gate.mark_peer_outdated() => r,
                _ = shutdown.wait_for(|s| *s) => return Err(shut()),
            };
            match outcome {
                Ok(()) => {
                    *passed = true;
                    tracing::warn!("mirror primary: the peer is marked outdated; writes continue on this node only");
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

    /// Before acknowledging an operation that did not reach the peer: pass the gate; with metadata, start the
    /// degraded period's new generation (once) and persist the operation's chunks.
    async fn degraded_ack(&self, op: &'static str, range: Option<(u64, u64)>) -> Result<(), StoreError> {
        self.pass_gate(op).await?;
        let Some(meta) = &self.meta else { return Ok(()) };
        let fail = |e: MetaError| {
            tracing::error!(code = e.code(), "mirror primary: persisting the degraded state failed: {e}");
            StoreError::Task { op, reason: e.to_string() }
        };
        {
            let mut bumped = self.bumped.lock().await;
            if !*bumped {
                let g = random_generation().map_err(fail)?;
                meta.update(move |sb| {
                    if sb.bitmap_uuid == 0 {
                        sb.bitmap_uuid = sb.current;
                    }
                    sb.history.rotate_right(1);
                    sb.history[0] = sb.current;
                    sb.current = g;
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
        let _guard = self.locks.acquire(offset, len).await;
        let ack = self.send(name, Some((offset, len)), |seq| op.to_out(seq)).await?;
        if ack.is_none() {
            self.dirty.mark(offset, len);
        }
        let (local, confirmed) = match self.cfg.mode {
            Mode::Sync => tokio::join!(self.apply_local(op), acked(ack)),
            Mode::Async => {
                let local = self.apply_local(op).await;
                (local, !self.is_degraded())
            }
        };
        if let Err(e) = local {
            // The peer may have the new bytes and this node not: the range differs.
            self.dirty.mark(offset, len);
            if let Some(meta) = &self.meta
                && let Err(me) = meta.mark_dirty(offset, len).await
            {
                tracing::error!(code = me.code(), "mirror primary: persisting a failed range as dirty: {me}");
            }
            return Err(e);
        }
        if !confirmed {
            self.dirty.mark(offset, len);
            self.degraded_ack(name, Some((offset, len))).await?;
        }
        Ok(())
    }
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
        p.phase = match &outcome {
            Ok(()) => ResyncPhase::Done,
            Err(reason) => ResyncPhase::Aborted(reason.clone()),
        };
    });
    match outcome {
        Ok(()) => tracing::info!(elapsed = ?started.elapsed(), "mirror primary: resync done, the peer is UpToDate"),
        Err(reason) => tracing::warn!("mirror primary: resync aborted (the bitmap keeps the rest): {reason}"),
    }
}

async fn resync_pieces(shared: &Arc<Shared>, started: Instant) -> Result<(), String> {
    let mut pieces: JoinSet<bool> = JoinSet::new();
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
            let data = shared.local.read_at(offset, n as u32).await.map_err(|e| e.to_string())?;
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
            Ok(Some(Frame::Pong { .. })) => shared.on_frame(None),
            Ok(Some(Frame::Ping { token })) => shared.on_frame(Some(token)),
            Ok(Some(other)) => {
                let detail = "the secondary sends only ACK, PING and PONG".to_string();
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
    }

    #[async_trait]
    impl PeerLossGate for Gate {
        async fn mark_peer_outdated(&self) -> Result<(), String> {
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
}
