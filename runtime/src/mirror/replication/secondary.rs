//! The secondary's end of the peer link: applies the primary's frames to its local store and acknowledges them.
//!
//! One reader loop decodes frames in arrival (= seq) order, registers each in a range-conflict table and runs it
//! in its own task once every earlier overlapping frame is done (FLUSH overlaps everything: a barrier). One
//! writer task sends the ACKs and PONGs. A malformed frame, a gap in the seq or a range beyond the store ends the
//! link with its code before the frame touches the store; frames already running finish first.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;

use super::frame::{AckStatus, DIGEST_LEN, Frame, Hello, MetaInfo};
use super::ranges::RangeLocks;
use super::{
    ReplicationError, decide_link, exchange_hello, exchange_meta, frame, meta_info, our_hello, read_frame,
    send_out_of_sync,
};
use crate::mirror::generations::Decision;
use crate::mirror::meta::{DiskState, FLAG_DISCARDED, Role, SharedMeta};
use crate::mirror::store::{BlockStore, StoreError};

/// Most frames the secondary runs at once; beyond that it stops reading (TCP pushes back on the primary).
pub const MAX_APPLYING: usize = 256;
/// Most WRITE data bytes the secondary holds at once (plus the one frame just read).
pub const MAX_APPLYING_BYTES: usize = 128 * 1024 * 1024;

/// Settings of the secondary's end.
#[derive(Debug, Clone)]
pub struct SecondaryConfig {
    /// This node's name, sent in HELLO.
    pub node: String,
    /// Longest wait for the primary's HELLO.
    pub hello_timeout: Duration,
    /// The link is considered dead when no frame arrives for this long (the primary pings every second).
    pub idle_timeout: Duration,
}

impl Default for SecondaryConfig {
    fn default() -> Self {
        SecondaryConfig {
            node: String::new(),
            hello_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// What one link applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    /// The primary's HELLO.
    pub peer: Option<Hello>,
    pub writes: u64,
    pub bytes_written: u64,
    pub zeroes: u64,
    pub trims: u64,
    pub flushes: u64,
    pub pings: u64,
    /// Frames whose store operation failed (acknowledged with an error). A failure ends the link with the store's
    /// error, so a [`Stats`] returned `Ok` has 0 here.
    pub failed: u64,
    /// The highest seq acknowledged.
    pub last_seq: u64,
    /// The generation handshake's decision (None without metadata).
    pub decision: Option<Decision>,
    /// A SYNC_DONE was applied: this node adopted the primary's generations and is UpToDate.
    pub resync_completed: bool,
    /// Bytes hashed for the primary's online verify (VERIFY_REQ).
    pub verified_bytes: u64,
}

/// [`serve_secondary_with`] with the default settings.
pub async fn serve_secondary<S>(stream: S, store: Arc<dyn BlockStore>) -> Result<Stats, ReplicationError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    serve_secondary_with(stream, store, SecondaryConfig::default()).await
}

/// Serve one link from a primary until it closes it (`Ok` with what was applied) or a fatal error. A failure of
/// the local store is fatal: its frame is acknowledged with the error, no later frame is applied, and the link
/// ends with the store's error (its code, e.g. `TDM-MIR-006`); with metadata the disk is first saved Outdated.
pub async fn serve_secondary_with<S>(
    stream: S,
    store: Arc<dyn BlockStore>,
    config: SecondaryConfig,
) -> Result<Stats, ReplicationError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    serve_inner(stream, store, config, None).await
}

/// [`serve_secondary_with`] with metadata: the generation handshake decides first. Split brain (`TDM-MIR-050`),
/// unrelated data (`TDM-MIR-051`) or data newer than the primary's (`TDM-MIR-052`) refuse the link before
/// anything is written. As a sync target this node is Inconsistent (saved) until the primary's SYNC_DONE, then it
/// adopts the primary's generations and turns UpToDate (saved) before acknowledging it.
pub async fn serve_secondary_meta<S>(
    stream: S,
    store: Arc<dyn BlockStore>,
    config: SecondaryConfig,
    meta: SharedMeta,
) -> Result<Stats, ReplicationError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    serve_inner(stream, store, config, Some(meta)).await
}

/// What a SYNC_DONE applies: the metadata and the primary's generation state.
#[derive(Clone)]
struct Target {
    meta: SharedMeta,
    primary: MetaInfo,
}

async fn serve_inner<S>(
    mut stream: S,
    store: Arc<dyn BlockStore>,
    config: SecondaryConfig,
    meta: Option<SharedMeta>,
) -> Result<Stats, ReplicationError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let sb = meta.as_ref().map(SharedMeta::superblock);
    let ours = our_hello(&config.node, store.size(), sb.as_ref())?;
    let peer = exchange_hello(&mut stream, &ours, config.hello_timeout).await?;
    let theirs =
        exchange_meta(&mut stream, sb.as_ref().map(|sb| meta_info(sb, Role::Secondary)), &peer, config.hello_timeout)
            .await?;
    let mut decision = None;
    let mut target = None;
    if let (Some(meta), Some(sb), Some(theirs)) = (meta, &sb, theirs) {
        let d = decide_link(sb, Role::Secondary, &peer.node, &theirs)?;
        let resyncing = d.is_target();
        // In sync with an UpToDate primary: the same data, so UpToDate too.
        let up_to_date = d == Decision::InSync && DiskState::from_byte(theirs.disk) == Some(DiskState::UpToDate);
        meta.update(move |sb| {
            sb.role = Role::Secondary;
            if resyncing {
                sb.disk = DiskState::Inconsistent;
            } else if up_to_date {
                sb.disk = DiskState::UpToDate;
            }
        })
        .await?;
        // This node stopped as primary without a clean stop: its activity log joins its bitmap, and the primary
        // resyncs every range the bitmap holds (the ranges this node may have and the primary not).
        meta.with(|m| m.recover_activity()).await?;
        if peer.flags & frame::HELLO_V2 != 0 {
            let ranges = meta.dirty_ranges();
            if !ranges.is_empty() {
                tracing::warn!(ranges = ranges.len(), "mirror secondary: reporting this node's out-of-sync ranges");
            }
            send_out_of_sync(&mut stream, &ranges).await?;
        }
        decision = Some(d);
        target = Some(Target { meta, primary: theirs });
    }
    tracing::info!(peer = %peer.node, size = peer.size, ?decision, "mirror secondary: link up");
    let stats = Arc::new(Mutex::new(Stats { peer: Some(peer), decision, ..Stats::default() }));
    let (mut rd, wr) = tokio::io::split(stream);
    let (tx, rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(write_frames(wr, rx));
    let result = apply_frames(&mut rd, &store, &config, tx, &stats, target).await;
    let written = writer
        .await
        .map_err(|e| ReplicationError::Io { during: "sending ACKs", source: std::io::Error::other(e.to_string()) })?;
    result?;
    if let Err(e) = written
        && e.kind() != std::io::ErrorKind::BrokenPipe
    {
        return Err(ReplicationError::Io { during: "sending ACKs", source: e });
    }
    let stats = stats.lock().unwrap_or_else(PoisonError::into_inner).clone();
    tracing::info!(last_seq = stats.last_seq, "mirror secondary: link closed by the primary");
    Ok(stats)
}

async fn write_frames<W: AsyncWrite + Unpin>(wr: W, mut rx: mpsc::UnboundedReceiver<Frame>) -> std::io::Result<()> {
    let mut w = BufWriter::with_capacity(16 * 1024, wr);
    while let Some(f) = rx.recv().await {
        w.write_all(&f.encode()).await?;
        if rx.is_empty() {
            w.flush().await?;
        }
    }
    w.flush().await?;
    w.shutdown().await
}

/// The first local store failure of a link. Held (async) while the disk is saved Outdated, so no error reply
/// leaves before that is durable.
#[derive(Clone)]
struct Failure {
    first: Arc<tokio::sync::Mutex<Option<StoreError>>>,
    /// Set once the first failure is recorded: the reader stops, queued frames are not applied.
    broken: Arc<watch::Sender<bool>>,
    meta: Option<SharedMeta>,
}

impl Failure {
    fn is_broken(&self) -> bool {
        *self.broken.borrow()
    }

    /// Record a failed frame and return its error reply. The first one saves the disk Outdated (with metadata;
    /// an Inconsistent disk stays Inconsistent) before it returns.
    async fn record(&self, seq: u64, e: StoreError) -> AckStatus {
        let status = AckStatus::Failed { errno: e.nbd_errno(), code: e.code().to_string() };
        let mut first = self.first.lock().await;
        if first.is_none() {
            tracing::error!(seq, code = e.code(), "mirror secondary: the local store failed; detaching: {e}");
            if let Some(meta) = &self.meta {
                let saved = meta
                    .update(|sb| {
                        if sb.disk == DiskState::UpToDate {
                            sb.disk = DiskState::Outdated;
                        }
                    })
                    .await;
                if let Err(me) = saved {
                    tracing::error!(code = me.code(), "mirror secondary: saving the disk Outdated failed: {me}");
                }
            }
            *first = Some(e);
            self.broken.send_replace(true);
        } else {
            tracing::warn!(seq, code = e.code(), "mirror secondary: applying a frame failed: {e}");
        }
        status
    }
}

async fn apply_frames<R: AsyncRead + Unpin>(
    rd: &mut R,
    store: &Arc<dyn BlockStore>,
    config: &SecondaryConfig,
    acks: mpsc::UnboundedSender<Frame>,
    stats: &Arc<Mutex<Stats>>,
    target: Option<Target>,
) -> Result<(), ReplicationError> {
    let failure = Failure {
        first: Arc::new(tokio::sync::Mutex::new(None)),
        broken: Arc::new(watch::Sender::new(false)),
        meta: target.as_ref().map(|t| t.meta.clone()),
    };
    let mut broken = failure.broken.subscribe();
    let locks = RangeLocks::new();
    let slots = Arc::new(Semaphore::new(MAX_APPLYING));
    let bytes = Arc::new(Semaphore::new(MAX_APPLYING_BYTES));
    let mut tasks = JoinSet::new();
    let mut last_seq = 0u64;
    let size = store.size();
    let result = loop {
        while tasks.try_join_next().is_some() {}
        let read = tokio::select! {
            biased;
            _ = broken.wait_for(|b| *b) => break Ok(()),
            r = tokio::time::timeout(config.idle_timeout, read_frame(rd)) => r,
        };
        let frame = match read {
            Err(_) => break Err(ReplicationError::Timeout(config.idle_timeout)),
            Ok(Ok(Some(f))) => f,
            Ok(Ok(None)) => break Ok(()),
            Ok(Err(e)) => break Err(e),
        };
        let seq = match (&frame, frame.data_seq()) {
            (Frame::Ping { token }, _) => {
                stats.lock().unwrap_or_else(PoisonError::into_inner).pings += 1;
                let _ = acks.send(Frame::Pong { token: *token });
                continue;
            }
            (Frame::Pong { .. }, _) => continue,
            (_, Some(seq)) => seq,
            (other, None) => {
                let detail = "only WRITE, WRITE_ZEROES, TRIM, FLUSH and PING are expected from the primary".into();
                break Err(ReplicationError::Unexpected { kind: other.kind_name(), seq: 0, detail });
            }
        };
        if matches!(frame, Frame::SyncDone { .. }) && target.is_none() {
            let detail = "SYNC_DONE on a link without metadata".into();
            break Err(ReplicationError::Unexpected { kind: frame.kind_name(), seq, detail });
        }
        if seq != last_seq.wrapping_add(1) {
            let detail = format!("expected seq {}", last_seq.wrapping_add(1));
            break Err(ReplicationError::Unexpected { kind: frame.kind_name(), seq, detail });
        }
        if let Err(e) = frame.check_range(size) {
            break Err(e.into());
        }
        last_seq = seq;
        let held = match &frame {
            Frame::Write { data, .. } => data.len().min(MAX_APPLYING_BYTES) as u32,
            _ => 0,
        };
        let (Ok(slot), Ok(held)) =
            (Arc::clone(&slots).acquire_owned().await, Arc::clone(&bytes).acquire_many_owned(held).await)
        else {
            break Err(ReplicationError::ShutDown);
        };
        let (guard, conflicts) = match frame.range() {
            Some((offset, len)) => locks.register(offset, len),
            None => locks.register_barrier(),
        };
        let store = Arc::clone(store);
        let acks = acks.clone();
        let stats = Arc::clone(stats);
        let target = target.clone();
        let failure = failure.clone();
        tasks.spawn(async move {
            conflicts.wait().await;
            if failure.is_broken() {
                // The store failed on an earlier frame: this link applies nothing more.
                drop((guard, slot, held));
                return;
            }
            if let Frame::VerifyReq { offset, len, .. } = frame {
                let reply = match digest_of(store.as_ref(), offset, len).await {
                    Ok(digest) => Frame::VerifyRep { seq, errno: 0, digest },
                    Err(e) => {
                        tracing::warn!(seq, code = e.code(), "mirror secondary: reading a chunk to verify failed: {e}");
                        Frame::VerifyRep { seq, errno: e.nbd_errno().max(1), digest: [0; DIGEST_LEN] }
                    }
                };
                {
                    let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
                    s.last_seq = s.last_seq.max(seq);
                    s.verified_bytes += len;
                }
                let _ = acks.send(reply);
                drop((guard, slot, held));
                return;
            }
            let counted = Counted::of(&frame);
            let result = match (&frame, target) {
                (Frame::SyncDone { .. }, Some(t)) => complete_sync(store.as_ref(), t).await,
                _ => apply(store.as_ref(), frame).await,
            };
            {
                let mut s = stats.lock().unwrap_or_else(PoisonError::into_inner);
                s.last_seq = s.last_seq.max(seq);
                match &result {
                    Ok(()) => counted.add_to(&mut s),
                    Err(_) => s.failed += 1,
                }
            }
            let status = match result {
                Ok(()) => AckStatus::Ok,
                Err(e) => failure.record(seq, e).await,
            };
            let _ = acks.send(Frame::Ack { seq, status });
            drop((guard, slot, held));
        });
    };
    while tasks.join_next().await.is_some() {}
    // A store failure is the cause, whatever ended the reading (the primary closes the link on the error reply).
    let result = match failure.first.lock().await.take() {
        Some(e) => Err(ReplicationError::Store(e)),
        None => result,
    };
    if let Err(e) = &result {
        tracing::warn!(code = e.code(), "mirror secondary: closing the link: {e}");
    }
    result
}

/// What an applied frame adds to the [`Stats`].
#[derive(Clone, Copy)]
enum Counted {
    Write(u64),
    Zeroes,
    Trim,
    Flush,
    SyncDone,
    Nothing,
}

impl Counted {
    fn of(frame: &Frame) -> Self {
        match frame {
            Frame::Write { data, .. } => Counted::Write(data.len() as u64),
            Frame::WriteZeroes { .. } => Counted::Zeroes,
            Frame::Trim { .. } => Counted::Trim,
            Frame::Flush { .. } => Counted::Flush,
            Frame::SyncDone { .. } => Counted::SyncDone,
            _ => Counted::Nothing,
        }
    }

    fn add_to(self, s: &mut Stats) {
        match self {
            Counted::Write(n) => {
                s.writes += 1;
                s.bytes_written += n;
            }
            Counted::Zeroes => s.zeroes += 1,
            Counted::Trim => s.trims += 1,
            Counted::Flush => s.flushes += 1,
            Counted::SyncDone => s.resync_completed = true,
            Counted::Nothing => {}
        }
    }
}

/// SYNC_DONE (a barrier: every resync write before it is applied): make the data durable, then adopt the
/// primary's generations and turn UpToDate, durably, before the ACK.
async fn complete_sync(store: &dyn BlockStore, t: Target) -> Result<(), StoreError> {
    store.flush().await?;
    let p = t.primary;
    t.meta
        .with(move |m| {
            m.update(|sb| {
                sb.current = p.current;
                sb.history = p.history;
                sb.bitmap_uuid = 0;
                sb.disk = DiskState::UpToDate;
                sb.flags &= !FLAG_DISCARDED;
            })?;
            // The ranges this node reported out of sync were part of the resync.
            m.clear_all()
        })
        .await
        .map_err(|e| StoreError::Task { op: "sync_done", reason: e.to_string() })?;
    tracing::info!("mirror secondary: resync complete, UpToDate");
    Ok(())
}

/// The SHA-256 of `offset..offset+len` of the store (hashed off the async threads when large).
pub(crate) async fn digest_of(store: &dyn BlockStore, offset: u64, len: u64) -> Result<[u8; DIGEST_LEN], StoreError> {
    let n = u32::try_from(len).map_err(|_| StoreError::Task { op: "verify", reason: format!("{len} bytes") })?;
    let data = store.read_at(offset, n).await?;
    if data.len() <= 1 << 20 {
        return Ok(sha256(&data));
    }
    tokio::task::spawn_blocking(move || sha256(&data))
        .await
        .map_err(|e| StoreError::Task { op: "verify", reason: e.to_string() })
}

pub(crate) fn sha256(data: &[u8]) -> [u8; DIGEST_LEN] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    let mut out = [0u8; DIGEST_LEN];
    out.copy_from_slice(d.as_ref());
    out
}

async fn apply(store: &dyn BlockStore, frame: Frame) -> Result<(), StoreError> {
    match frame {
        Frame::Write { data, .. } if data.is_empty() => Ok(()),
        Frame::Write { offset, data, fua, .. } => store.write_at(offset, Arc::new(data), fua).await,
        Frame::WriteZeroes { offset, len, fua, .. } => store.write_zeroes(offset, len, fua).await,
        Frame::Trim { offset, len, .. } => store.trim(offset, len).await,
        Frame::Flush { .. } => store.flush().await,
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::replication::mem::MemStore;
    use tokio::io::{DuplexStream, ReadHalf, WriteHalf};
    use tokio::task::JoinHandle;

    type Served = JoinHandle<Result<Stats, ReplicationError>>;

    /// A raw primary talking to `serve_secondary` over a duplex.
    struct Raw {
        rd: ReadHalf<DuplexStream>,
        wr: WriteHalf<DuplexStream>,
    }

    impl Raw {
        async fn send(&mut self, f: Frame) {
            self.wr.write_all(&f.encode()).await.expect("send");
        }

        async fn recv(&mut self) -> Frame {
            read_frame(&mut self.rd).await.expect("frame").expect("not closed")
        }
    }

    async fn start(store: Arc<MemStore>) -> (Raw, Served) {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let served = tokio::spawn(serve_secondary(theirs, store as Arc<dyn BlockStore>));
        let mut ours = ours;
        let hello = Hello { node: "p".into(), size: 4096, uuid: 0, generation: 0, flags: 0 };
        exchange_hello(&mut ours, &hello, Duration::from_secs(5)).await.expect("hello");
        let (rd, wr) = tokio::io::split(ours);
        (Raw { rd, wr }, served)
    }

    fn write(seq: u64, offset: u64, byte: u8, len: usize) -> Frame {
        Frame::Write { seq, offset, data: vec![byte; len], fua: false }
    }

    #[tokio::test]
    async fn writes_are_acked_and_flush_waits_for_earlier_writes() {
        let store = Arc::new(MemStore { slow_at_zero: Some(Duration::from_millis(50)), ..MemStore::new(4096) });
        let (mut raw, served) = start(Arc::clone(&store)).await;
        raw.send(write(1, 0, 7, 100)).await;
        raw.send(write(2, 1000, 8, 10)).await;
        raw.send(Frame::Flush { seq: 3 }).await;
        raw.send(Frame::Ping { token: 42 }).await;
        let mut got = Vec::new();
        for _ in 0..4 {
            got.push(raw.recv().await);
        }
        let flush_at = got.iter().position(|f| matches!(f, Frame::Ack { seq: 3, .. })).expect("flush ack");
        let slow_at = got.iter().position(|f| matches!(f, Frame::Ack { seq: 1, .. })).expect("write ack");
        assert!(slow_at < flush_at, "the flush is acked after the slow write: {got:?}");
        assert!(got.contains(&Frame::Pong { token: 42 }));
        assert_eq!(*store.flushes.lock().expect("lock"), vec![2], "the flush ran after both writes");
        drop(raw);
        let stats = served.await.expect("join").expect("clean close");
        assert_eq!((stats.writes, stats.bytes_written, stats.flushes, stats.pings, stats.last_seq), (2, 110, 1, 1, 3));
        let b = store.bytes();
        assert_eq!((b[0], b[99], b[100], b[1000]), (7, 7, 0, 8));
    }

    #[tokio::test]
    async fn overlapping_writes_apply_in_seq_order_even_when_the_first_is_slow() {
        let store = Arc::new(MemStore { slow_at_zero: Some(Duration::from_millis(100)), ..MemStore::new(4096) });
        let (mut raw, served) = start(Arc::clone(&store)).await;
        raw.send(write(1, 0, 1, 64)).await;
        raw.send(write(2, 32, 2, 64)).await;
        raw.send(write(3, 200, 3, 1)).await;
        let acks: Vec<Frame> = vec![raw.recv().await, raw.recv().await, raw.recv().await];
        assert_eq!(acks[0], Frame::Ack { seq: 3, status: AckStatus::Ok }, "the disjoint write did not wait");
        drop(raw);
        served.await.expect("join").expect("clean");
        let b = store.bytes();
        assert_eq!((b[31], b[32], b[95], b[96], b[200]), (1, 2, 2, 0, 3));
    }

    #[tokio::test]
    async fn a_failing_store_acks_with_the_code_then_applies_nothing_more_and_ends_with_the_error() {
        let store = Arc::new(MemStore { fail_at: Some(512), ..MemStore::new(4096) });
        let (mut raw, served) = start(Arc::clone(&store)).await;
        raw.send(write(1, 512, 1, 4)).await;
        let ack = raw.recv().await;
        let Frame::Ack { seq: 1, status: AckStatus::Failed { errno, code } } = ack else { panic!("{ack:?}") };
        assert_eq!((errno, code.as_str()), (5, "TDM-MIR-006"));
        // The link is detached: a later frame is not applied (the send may fail once the secondary hung up).
        let _ = raw.wr.write_all(&write(2, 0, 7, 4).encode()).await;
        let _ = raw.wr.write_all(&write(3, 8, 9, 4).encode()).await;
        let e = served.await.expect("join").expect_err("the store's failure ends the link");
        assert_eq!(e.code(), "TDM-MIR-006", "{e}");
        assert!(store.bytes().iter().all(|b| *b == 0), "nothing applied after the failure");
        assert!(read_frame(&mut raw.rd).await.expect("eof").is_none(), "no ACK for the later frames");
    }

    #[tokio::test]
    async fn seq_gaps_wrong_direction_frames_and_ranges_past_the_end_close_the_link() {
        let cases: Vec<(Frame, &str)> = vec![
            (write(2, 0, 9, 4), "TDM-MIR-033"),
            (Frame::Ack { seq: 1, status: AckStatus::Ok }, "TDM-MIR-033"),
            (Frame::Hello(Hello { node: String::new(), size: 1, uuid: 0, generation: 0, flags: 0 }), "TDM-MIR-033"),
            (write(1, 4090, 9, 7), "TDM-MIR-027"),
            (Frame::Trim { seq: 1, offset: 4097, len: 0 }, "TDM-MIR-027"),
        ];
        for (frame, code) in cases {
            let store = Arc::new(MemStore::new(4096));
            let (mut raw, served) = start(Arc::clone(&store)).await;
            raw.send(frame.clone()).await;
            let e = served.await.expect("join").expect_err("refused");
            assert_eq!(e.code(), code, "{frame:?}: {e}");
            assert!(store.bytes().iter().all(|b| *b == 0), "{frame:?} touched the store");
            assert!(read_frame(&mut raw.rd).await.expect("eof").is_none(), "link closed");
        }
    }

    #[tokio::test]
    async fn a_size_mismatch_is_refused_at_hello() {
        let (mut ours, theirs) = tokio::io::duplex(4096);
        let served = tokio::spawn(serve_secondary(theirs, Arc::new(MemStore::new(100)) as Arc<dyn BlockStore>));
        let hello = Hello { node: "p".into(), size: 200, uuid: 0, generation: 0, flags: 0 };
        let e = exchange_hello(&mut ours, &hello, Duration::from_secs(5)).await.expect_err("mismatch");
        assert_eq!(e.code(), "TDM-MIR-031");
        assert_eq!(served.await.expect("join").expect_err("mismatch").code(), "TDM-MIR-031");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_primaries_time_out() {
        let (mut ours, theirs) = tokio::io::duplex(4096);
        let cfg = SecondaryConfig { idle_timeout: Duration::from_secs(3), ..SecondaryConfig::default() };
        let store = Arc::new(MemStore::new(100)) as Arc<dyn BlockStore>;
        let served = tokio::spawn(serve_secondary_with(theirs, Arc::clone(&store), cfg));
        let e = served.await.expect("join").expect_err("no hello");
        assert_eq!(e.code(), "TDM-MIR-032");
        let (a, theirs) = tokio::io::duplex(4096);
        drop(ours);
        ours = a;
        let cfg = SecondaryConfig { idle_timeout: Duration::from_secs(3), ..SecondaryConfig::default() };
        let served = tokio::spawn(serve_secondary_with(theirs, store, cfg));
        let hello = Hello { node: "p".into(), size: 100, uuid: 0, generation: 0, flags: 0 };
        exchange_hello(&mut ours, &hello, Duration::from_secs(5)).await.expect("hello");
        assert_eq!(served.await.expect("join").expect_err("idle").code(), "TDM-MIR-034");
    }
}
