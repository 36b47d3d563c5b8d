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

pub mod dirty;
pub mod frame;
#[cfg(test)]
mod mem;
pub mod primary;
pub mod ranges;
pub mod secondary;
mod tls;

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

pub use dirty::DirtyTracker;
pub use frame::{AckStatus, Frame, FrameError, Hello};
pub use primary::{Mode, PeerLossGate, ReplicatedStore, ReplicationConfig, ReplicationState};
pub use secondary::{SecondaryConfig, Stats, serve_secondary, serve_secondary_with};
pub use tls::{accept_tls, connect_tls};

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
    let mut payload = vec![0u8; head.len as usize];
    rd.read_exact(&mut payload).await.map_err(ReplicationError::io("reading a frame's payload"))?;
    Ok(Some(frame::decode_payload(&head, &payload)?))
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
