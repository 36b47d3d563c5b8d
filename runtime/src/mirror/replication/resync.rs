//! Progress of a resync, as a snapshot ([`ResyncProgress`]) published through a watch channel by the primary's
//! resync task (see [`ReplicatedStore::resync_progress`](super::ReplicatedStore::resync_progress)).

use std::time::{Duration, Instant};

use crate::mirror::generations::Decision;

/// Where a resync is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ResyncPhase {
    /// No resync on this link (no metadata, or in sync with an empty bitmap).
    #[default]
    Idle,
    Running,
    /// Every dirty chunk reached the peer, it is UpToDate and this node's bitmap is clear.
    Done,
    /// The link was lost, or local reads failed (the other pieces were still sent: see
    /// [`ResyncProgress::failed_pieces`]); the bitmap keeps what is left (the next link resumes).
    Aborted(String),
}

impl ResyncPhase {
    /// The phase a job (a resync or a verify) ends in: Done, or Aborted with the reason.
    pub(crate) fn ended(outcome: &Result<(), String>) -> ResyncPhase {
        match outcome {
            Ok(()) => ResyncPhase::Done,
            Err(reason) => ResyncPhase::Aborted(reason.clone()),
        }
    }
}

/// A snapshot of the resync of one link.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResyncProgress {
    /// The handshake's decision (None without metadata).
    pub decision: Option<Decision>,
    pub phase: ResyncPhase,
    /// Bytes to resync (the dirty chunks, or the whole disk for a full sync).
    pub total_bytes: u64,
    /// Bytes sent and acknowledged by the peer.
    pub done_bytes: u64,
    pub elapsed: Duration,
    /// Average rate since the start.
    pub bytes_per_sec: u64,
    /// Pieces this node could not read (skipped: they stay dirty, no SYNC_DONE is sent, the phase ends Aborted).
    pub failed_pieces: u64,
}

/// `done` of `total` in percent, 0..=100 (100 when there is nothing to do); for resync and verify progress.
pub(crate) fn percent(done: u64, total: u64) -> u8 {
    if total == 0 {
        return 100;
    }
    (done.min(total) * 100 / total) as u8
}

impl ResyncProgress {
    /// Percentage done, 0..=100 (100 when there is nothing to do).
    pub fn percent(&self) -> u8 {
        percent(self.done_bytes, self.total_bytes)
    }

    pub(crate) fn advance(&mut self, bytes: u64, started: Instant) {
        self.done_bytes += bytes;
        self.elapsed = started.elapsed();
        let ms = self.elapsed.as_millis().max(1);
        self.bytes_per_sec = (u128::from(self.done_bytes) * 1000 / ms) as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_and_rate_follow_the_bytes_done() {
        let mut p = ResyncProgress { total_bytes: 400, ..ResyncProgress::default() };
        assert_eq!(p.percent(), 0);
        p.advance(100, Instant::now());
        assert_eq!(p.percent(), 25);
        assert!(p.bytes_per_sec > 0);
        p.advance(300, Instant::now());
        assert_eq!(p.percent(), 100);
        assert_eq!(ResyncProgress::default().percent(), 100);
    }
}
