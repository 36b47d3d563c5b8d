//! Synchronous replication of a mirror disk to its peer (issue 7, piece 2): DRBD-like protocol C.
//!
//! The primary wraps its local store in a [`ReplicatedStore`] (a [`BlockStore`](crate::mirror::store::BlockStore),
//! so the NBD export serves it unchanged) over a peer link: any `AsyncRead + AsyncWrite` stream (TCP, TLS with the
//! cluster certificates via [`connect_tls`]/[`accept_tls`], or an in-memory duplex in tests). The secondary runs
//! [`serve_secondary`] on its end of the link with its own local store. The wire format is in [`frame`].
//!
//! # Protocol
//! Both sides send HELLO (node name, store size, placeholders for the generation identifiers of a later piece)
//! and check the other's; a size mismatch refuses the link (`TDM-MIR-031`). Then the primary sends data frames
//! (WRITE, WRITE_ZEROES, TRIM, FLUSH) numbered 1, 2, 3… (seq) and PINGs; the secondary answers every data frame
//! with one ACK carrying its seq and a status, and every PING with a PONG. Many frames are in flight at once (at
//! most [`ReplicationConfig::max_in_flight`] unacknowledged); one writer task sends, one reader task dispatches
//! ACKs by seq.
//!
//! # Ordering and barriers
//! - Primary: overlapping writes are serialised by a range-conflict table ([`ranges`]): a write waits for every
//!   earlier in-flight write that overlaps it (in protocol C until that write is acknowledged by both sides);
//!   non-overlapping writes proceed concurrently. A seq is assigned and the frame queued under one lock, so the
//!   wire order is the seq order, and two overlapping writes are applied locally and sent in the same order.
//! - Secondary: frames are registered in the same table in seq order as they arrive (a gap or repeat in the seq
//!   is a protocol error), so overlapping frames are applied in seq order and non-overlapping ones concurrently
//!   (at most 256 frames and 128 MiB of data at once). This also keeps the replica ordered in asynchronous mode,
//!   where the primary does not wait for the peer before the next overlapping write.
//! - FLUSH is a barrier on both sides. The primary queues it after every write submitted before it (a write
//!   whose call returned before `flush()` was called was submitted — in protocol C even acknowledged). The
//!   secondary registers it over the whole address space: it runs after every lower-seq frame completed, then
//!   flushes its store and acknowledges; later frames wait for it.
//! - FUA: the secondary writes with FUA, so its ACK means durable there too.
//!
//! # Protocol C and asynchronous mode
//! [`Mode::Sync`] (default): `write_at`, `write_zeroes`, `trim` and `flush` return `Ok` only when the local store
//! completed the operation and the peer acknowledged it (the peer acknowledges after its own store completed it;
//! with FUA or for FLUSH, after it is durable). [`Mode::Async`]: they return after the local completion; the
//! peer's ACKs only lower [`ReplicatedStore::bytes_behind`]. Risk: writes acknowledged to the client but not yet
//! on the peer are lost if the primary's node dies and the peer takes over.
//!
//! # Peer failure: degraded mode and the gate
//! A link error, the peer closing the link, an unexpected or malformed frame, an ACK with an error status, no
//! frame for [`ReplicationConfig::ack_timeout`] or an ACK older than it turns the store `Degraded` (once; there is
//! no reconnection in this piece — resync is a later piece): the link tasks stop, every unacknowledged operation's
//! range is marked in the [`DirtyTracker`] (64 KiB chunks) and its waiter is released; from then on operations
//! complete locally only and mark their range dirty before they start. Before the first operation completed after
//! the loss is acknowledged, the primary awaits [`PeerLossGate::mark_peer_outdated`] (a later piece writes the
//! peer's Outdated mark to the lease record); while the gate fails, operations are held, not acknowledged, and
//! the gate is retried every [`ReplicationConfig::gate_retry`] until it succeeds or the store is shut down
//! ([`ReplicatedStore::shutdown`]: held operations then fail with `TDM-MIR-037`). The gate succeeds at most once.
//! A local failure on the primary returns the error and marks the range dirty (the peer may have the new bytes).
//!
//! # Metadata, generations and resync (piece 3)
//! With metadata ([`ReplicatedStore::connect_with_meta`], [`ReplicatedStore::standalone_with_meta`],
//! [`serve_secondary_meta`]), both HELLOs carry [`frame::HELLO_META`] and a META frame follows with the generation
//! state; each side runs [`decide`]. Split brain (`TDM-MIR-050`) or unrelated
//! data (`TDM-MIR-051`) refuses the link before anything is written; a primary that would have to be the sync
//! target, or a secondary the source, refuses too (`TDM-MIR-052`). Otherwise the primary (the SyncSource) loads
//! its persistent bitmap (or, for a full sync, the whole disk) into the dirty set and a resync task streams the
//! dirty chunks as ordinary WRITE frames (1 MiB at most, 8 in flight, each under the range table, so a resync chunk and an
//! application write to the same range never reorder), then a SYNC_DONE data frame. The secondary (SyncTarget) is
//! Inconsistent from the handshake until SYNC_DONE, then adopts the primary's generations, turns UpToDate and saves
//! its metadata; on its ACK the primary clears its bitmap. Progress: [`ReplicatedStore::resync_progress`].
//! Degraded: before the first degraded acknowledgement (after the gate) the primary starts a new generation
//! (bitmap generation = old current), and every degraded operation persists its chunks
//! ([`Meta::mark_dirty`](crate::mirror::meta::Meta::mark_dirty)) before it is acknowledged.

//!
//! # Gate generation, online verify, activity log (piece 4)
//! - The degraded period's new generation is picked *before* the gate, passed to
//!   [`PeerLossGate::mark_peer_outdated`] (the lease mark names it), reused by every retry, and adopted in the
//!   metadata after the gate passed: the mark names exactly the generation the degraded writes carry.
//! - [`ReplicatedStore::verify`] compares the whole device with the peer chunk by chunk ([`verify`]) and marks what
//!   differs out of sync; the next link resyncs it.
//! - The [`activity`] log records, before a write touches a 4 MiB extent, that the extent may differ from the peer;
//!   a node that stopped as primary without [`ReplicatedStore::stop`] has those extents resynced at its next link,
//!   as source (its own bitmap) or as target (sent to the primary in OUT_OF_SYNC frames after META).

pub mod activity;
pub mod dirty;
pub mod frame;
#[cfg(test)]
mod mem;
pub mod primary;
pub mod ranges;
pub mod resync;
pub mod secondary;
mod tls;
pub mod unflushed;
pub mod verify;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use dirty::DirtyTracker;
pub use frame::{AckStatus, Frame, FrameError, Hello, MetaInfo};
pub use primary::{Mode, PeerLossGate, ReplicatedStore, ReplicationConfig, ReplicationState};
pub use resync::{ResyncPhase, ResyncProgress};
pub use secondary::{SecondaryConfig, Stats, serve_secondary, serve_secondary_meta, serve_secondary_with};
pub use tls::{accept_tls, connect_tls};
pub use verify::{VerifyPhase, VerifyProgress, VerifyReport};

use crate::mirror::generations::{Decision, GenState, decide};
use crate::mirror::meta::{DiskState, MetaError, Role, Superblock};
use crate::mirror::store::StoreError;

/// Why the replication link failed or was refused. Codes (`TDM-MIR-NNN`) are stable; frame errors keep their own.
#[derive(Debug, thiserror::Error)]
pub enum ReplicationError {
    #[error("TDM-MIR-030: mirror peer link I/O failed while {during}: {source}")]
    Io { during: &'static str, source: std::io::Error },
    #[error("TDM-MIR-031: mirror peer {node} has a store of {peer} bytes, this node {local} bytes; link refused")]
    SizeMismatch { node: String, local: u64, peer: u64 },
    #[error("TDM-MIR-032: mirror peer handshake failed: {0}")]
    Handshake(String),
    #[error("TDM-MIR-033: mirror peer sent an unexpected {kind} frame (seq {seq}): {detail}")]
    Unexpected { kind: &'static str, seq: u64, detail: String },
    #[error("TDM-MIR-034: mirror peer did not answer within {0:?}")]
    Timeout(Duration),
    #[error("TDM-MIR-035: mirror peer failed to apply seq {seq} (errno {errno}, {code})")]
    PeerFailed { seq: u64, errno: u32, code: String },
    #[error("TDM-MIR-036: marking the mirror peer outdated failed; writes are held until it succeeds: {0}")]
    GateFailed(String),
    #[error("TDM-MIR-037: the replicated mirror store was shut down")]
    ShutDown,
    #[error("TDM-MIR-038: mirror peer closed the link")]
    PeerClosed,
    #[error("TDM-MIR-039: setting up TLS on the mirror peer link: {0}")]
    Tls(String),
    #[error(
        "TDM-MIR-050: mirror split brain with peer {peer}: both nodes wrote independently (this node's generation \
         {local:#018x}, the peer's {theirs:#018x}); link refused, nothing written. Keep one node's data and run \
         `tandemctl mirror resolve --discard NODE` for the other"
    )]
    SplitBrain { peer: String, local: u64, theirs: u64 },
    #[error(
        "TDM-MIR-051: mirror peer {peer} holds unrelated data (this node's generation {local:#018x}, the peer's \
         {theirs:#018x}, no common history, neither is a fresh sync target); link refused, nothing written"
    )]
    Unrelated { peer: String, local: u64, theirs: u64 },
    #[error("TDM-MIR-052: mirror link with peer {peer} refused: {detail}")]
    WrongDirection { peer: String, detail: String },
    #[error("TDM-MIR-053: a verify of this mirror is already running; wait for it (`verify_progress`)")]
    VerifyBusy,
    #[error("TDM-MIR-054: mirror verify is not possible now: {0}")]
    VerifyUnavailable(String),
    #[error(
        "TDM-MIR-055: mirror verify aborted after {checked} bytes: {reason}; the differing chunks found so far are \
         marked out of sync"
    )]
    VerifyAborted { checked: u64, reason: String },
    #[error(transparent)]
    Meta(#[from] MetaError),
    #[error(transparent)]
    Frame(#[from] FrameError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReplicationError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            ReplicationError::Io { .. } => "TDM-MIR-030",
            ReplicationError::SizeMismatch { .. } => "TDM-MIR-031",
            ReplicationError::Handshake(_) => "TDM-MIR-032",
            ReplicationError::Unexpected { .. } => "TDM-MIR-033",
            ReplicationError::Timeout(_) => "TDM-MIR-034",
            ReplicationError::PeerFailed { .. } => "TDM-MIR-035",
            ReplicationError::GateFailed(_) => "TDM-MIR-036",
            ReplicationError::ShutDown => "TDM-MIR-037",
            ReplicationError::PeerClosed => "TDM-MIR-038",
            ReplicationError::Tls(_) => "TDM-MIR-039",
            ReplicationError::SplitBrain { .. } => "TDM-MIR-050",
            ReplicationError::Unrelated { .. } => "TDM-MIR-051",
            ReplicationError::WrongDirection { .. } => "TDM-MIR-052",
            ReplicationError::VerifyBusy => "TDM-MIR-053",
            ReplicationError::VerifyUnavailable(_) => "TDM-MIR-054",
            ReplicationError::VerifyAborted { .. } => "TDM-MIR-055",
            ReplicationError::Meta(e) => e.code(),
            ReplicationError::Frame(e) => e.code(),
            ReplicationError::Store(e) => e.code(),
        }
    }

    fn io(during: &'static str) -> impl FnOnce(std::io::Error) -> ReplicationError {
        move |source| ReplicationError::Io { during, source }
    }
}

/// Read one frame; `Ok(None)` when the stream ends cleanly between frames.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(rd: &mut R) -> Result<Option<Frame>, ReplicationError> {
    let mut head = [0u8; frame::HEADER_LEN];
    let mut got = 0;
    while got < head.len() {
        let n = rd.read(&mut head[got..]).await.map_err(ReplicationError::io("reading a frame"))?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated { need: head.len(), got }.into());
        }
        got += n;
    }
    let head = frame::Header::decode(&head)?;
    let fixed = frame::WRITE_FIXED as usize;
    if head.kind == frame::T_WRITE && head.len as usize >= fixed {
        // The data goes straight into the buffer the store writes from (no zeroing, no second copy).
        let mut part = [0u8; frame::WRITE_FIXED as usize];
        rd.read_exact(&mut part).await.map_err(ReplicationError::io("reading a frame's payload"))?;
        let len = head.len as usize - fixed;
        let mut data = Vec::with_capacity(len);
        let got = (&mut *rd).take(len as u64).read_to_end(&mut data).await;
        got.map_err(ReplicationError::io("reading a frame's payload"))?;
        if data.len() != len {
            return Err(FrameError::Truncated { need: head.len as usize, got: fixed + data.len() }.into());
        }
        return Ok(Some(frame::decode_write(&head, &part, data)?));
    }
    let mut payload = vec![0u8; head.len as usize];
    rd.read_exact(&mut payload).await.map_err(ReplicationError::io("reading a frame's payload"))?;
    Ok(Some(frame::decode_payload(&head, &payload)?))
}

/// Our HELLO: node name and store size, plus (with metadata) the generations and [`frame::HELLO_META`]. The
/// metadata must describe this store (TDM-MIR-047 otherwise).
pub(crate) fn our_hello(node: &str, size: u64, sb: Option<&Superblock>) -> Result<Hello, ReplicationError> {
    let mut ours = Hello { node: node.to_string(), size, uuid: 0, generation: 0, flags: frame::HELLO_V2 };
    if let Some(sb) = sb {
        check_meta_size(sb.size, size)?;
        (ours.uuid, ours.generation) = (sb.bitmap_uuid, sb.current);
        ours.flags |= frame::HELLO_META;
    }
    Ok(ours)
}

/// Most out-of-sync ranges a peer may report in one handshake.
const MAX_OOS_TOTAL: usize = 1 << 20;

/// The secondary's side: send `ranges` as OUT_OF_SYNC frames (at least one, the last flagged).
pub(crate) async fn send_out_of_sync<S>(io: &mut S, ranges: &[(u64, u64)]) -> Result<(), ReplicationError>
where
    S: AsyncWrite + Unpin,
{
    let mut parts: Vec<&[(u64, u64)]> = ranges.chunks(frame::MAX_OOS_RANGES as usize).collect();
    if parts.is_empty() {
        parts.push(&[]);
    }
    let n = parts.len();
    for (i, part) in parts.into_iter().enumerate() {
        let f = Frame::OutOfSync { last: i + 1 == n, ranges: part.to_vec() };
        io.write_all(&f.encode()).await.map_err(ReplicationError::io("sending OUT_OF_SYNC"))?;
    }
    io.flush().await.map_err(ReplicationError::io("sending OUT_OF_SYNC"))
}

/// The primary's side: read the secondary's OUT_OF_SYNC frames up to the last one; every range must lie within
/// the store.
pub(crate) async fn read_out_of_sync<S>(
    io: &mut S,
    size: u64,
    timeout: Duration,
) -> Result<Vec<(u64, u64)>, ReplicationError>
where
    S: AsyncRead + Unpin,
{
    let mut out = Vec::new();
    loop {
        let (last, ranges) = match tokio::time::timeout(timeout, read_frame(io)).await {
            Err(_) => return Err(ReplicationError::Handshake(format!("no OUT_OF_SYNC within {timeout:?}"))),
            Ok(Ok(Some(Frame::OutOfSync { last, ranges }))) => (last, ranges),
            Ok(Ok(Some(other))) => {
                return Err(ReplicationError::Handshake(format!("expected OUT_OF_SYNC, got {}", other.kind_name())));
            }
            Ok(Ok(None)) => {
                return Err(ReplicationError::Handshake("the peer closed the link before OUT_OF_SYNC".into()));
            }
            Ok(Err(e)) => return Err(e),
        };
        for (offset, len) in &ranges {
            if offset.saturating_add(*len) > size {
                let (offset, len) = (*offset, *len);
                return Err(FrameError::OutOfRange { kind: "OUT_OF_SYNC", offset, len, size }.into());
            }
        }
        out.extend(ranges);
        if out.len() > MAX_OOS_TOTAL {
            return Err(ReplicationError::Handshake(format!("over {MAX_OOS_TOTAL} OUT_OF_SYNC ranges")));
        }
        if last {
            return Ok(out);
        }
    }
}

/// The metadata describes an export of the store's size.
pub(crate) fn check_meta_size(meta: u64, store: u64) -> Result<(), ReplicationError> {
    if meta != store {
        let detail = format!("it describes an export of {meta} bytes, the store has {store} bytes");
        return Err(MetaError::Layout { what: "superblock".into(), detail }.into());
    }
    Ok(())
}

/// Send our HELLO, read the peer's (within `timeout`) and check the sizes match.
pub(crate) async fn exchange_hello<S>(io: &mut S, ours: &Hello, timeout: Duration) -> Result<Hello, ReplicationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    io.write_all(&Frame::Hello(ours.clone()).encode()).await.map_err(ReplicationError::io("sending HELLO"))?;
    io.flush().await.map_err(ReplicationError::io("sending HELLO"))?;
    let theirs = match tokio::time::timeout(timeout, read_frame(io)).await {
        Err(_) => return Err(ReplicationError::Handshake(format!("no HELLO within {timeout:?}"))),
        Ok(Ok(Some(Frame::Hello(h)))) => h,
        Ok(Ok(Some(other))) => {
            return Err(ReplicationError::Handshake(format!("expected HELLO, got {}", other.kind_name())));
        }
        Ok(Ok(None)) => return Err(ReplicationError::Handshake("the peer closed the link before HELLO".into())),
        Ok(Err(e)) => return Err(e),
    };
    if theirs.size != ours.size {
        return Err(ReplicationError::SizeMismatch { node: theirs.node, local: ours.size, peer: theirs.size });
    }
    Ok(theirs)
}

/// The META frame of a superblock, for a node taking `role` on this link.
pub(crate) fn meta_info(sb: &Superblock, role: Role) -> MetaInfo {
    MetaInfo {
        current: sb.current,
        bitmap_uuid: sb.bitmap_uuid,
        history: sb.history,
        disk: sb.disk.to_byte(),
        role: role.to_byte(),
    }
}

/// The generation state a META frame carries (its bytes were validated by the decoder).
pub(crate) fn gen_state(m: &MetaInfo) -> GenState {
    GenState {
        current: m.current,
        history: m.history,
        bitmap_uuid: m.bitmap_uuid,
        disk: DiskState::from_byte(m.disk).unwrap_or(DiskState::Inconsistent),
        role: Role::from_byte(m.role).unwrap_or(Role::Secondary),
    }
}

/// After HELLO: when both sides have metadata, send ours and read the peer's META. One side with metadata and the
/// other without is refused (`TDM-MIR-032`).
pub(crate) async fn exchange_meta<S>(
    io: &mut S,
    ours: Option<MetaInfo>,
    peer: &Hello,
    timeout: Duration,
) -> Result<Option<MetaInfo>, ReplicationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let theirs_has = peer.flags & frame::HELLO_META != 0;
    let ours = match (ours, theirs_has) {
        (None, false) => return Ok(None),
        (Some(m), true) => m,
        (mine, _) => {
            let (a, b) = if mine.is_some() { ("this node", "the peer") } else { ("the peer", "this node") };
            return Err(ReplicationError::Handshake(format!("{a} has mirror metadata and {b} has none")));
        }
    };
    io.write_all(&Frame::Meta(ours).encode()).await.map_err(ReplicationError::io("sending META"))?;
    io.flush().await.map_err(ReplicationError::io("sending META"))?;
    match tokio::time::timeout(timeout, read_frame(io)).await {
        Err(_) => Err(ReplicationError::Handshake(format!("no META within {timeout:?}"))),
        Ok(Ok(Some(Frame::Meta(m)))) => Ok(Some(m)),
        Ok(Ok(Some(other))) => Err(ReplicationError::Handshake(format!("expected META, got {}", other.kind_name()))),
        Ok(Ok(None)) => Err(ReplicationError::Handshake("the peer closed the link before META".into())),
        Ok(Err(e)) => Err(e),
    }
}

/// Decide the resync direction as `role`; refuse split brain, unrelated data and a direction `role` cannot take.
pub(crate) fn decide_link(
    mine: &Superblock,
    role: Role,
    peer_node: &str,
    theirs: &MetaInfo,
) -> Result<Decision, ReplicationError> {
    let me = GenState { role, ..GenState::of(mine) };
    let decision = decide(&me, &gen_state(theirs));
    let peer = peer_node.to_string();
    let (local, theirs_gen) = (mine.current, theirs.current);
    let refused = match decision {
        Decision::SplitBrain => Some(ReplicationError::SplitBrain { peer, local, theirs: theirs_gen }),
        Decision::Unrelated => Some(ReplicationError::Unrelated { peer, local, theirs: theirs_gen }),
        d if d.is_target() && role == Role::Primary => Some(ReplicationError::WrongDirection {
            peer,
            detail: "the peer has newer data; this node must not be primary (promote the peer instead)".into(),
        }),
        d if d.is_source() && role == Role::Secondary => Some(ReplicationError::WrongDirection {
            peer,
            detail: "this node has newer data than the primary; promote this node instead".into(),
        }),
        _ => None,
    };
    if let Some(e) = refused {
        tracing::error!(code = e.code(), "{e}");
        return Err(e);
    }
    tracing::info!(peer = peer_node, ?decision, "mirror: generation handshake");
    Ok(decision)
}
