//! Online verify of a connected mirror (`tandemctl mirror verify`): the primary walks the whole device in chunks of
//! the bitmap granularity, asks the peer for the SHA-256 of each chunk (VERIFY_REQ / VERIFY_REP, several in flight),
//! compares it with its own and marks every differing chunk out of sync (dirty set, and the persistent bitmap when
//! there is metadata), so the next resync (the next link) repairs it. Each chunk is read under the range table like
//! a write, and the request travels in the data sequence, so a write to the chunk lands on both sides strictly
//! before or after the comparison. See [`ReplicatedStore::verify`](super::ReplicatedStore::verify).
//! This file holds the progress and report types.

use std::time::{Duration, Instant};

/// Chunks asked about and not yet answered at once.
pub const VERIFY_WINDOW: usize = 16;
/// Differing chunk offsets kept in the report.
pub const VERIFY_FIRST: usize = 16;

/// Where a verify is: the same phases as a resync (Idle: none ran on this store yet; Aborted: the link was lost or
/// a local read failed, and what was found so far is marked).
pub type VerifyPhase = super::resync::ResyncPhase;

/// A snapshot of the running (or last) verify.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyProgress {
    pub phase: VerifyPhase,
    /// The comparison unit (the bitmap granularity).
    pub chunk_bytes: u64,
    pub total_bytes: u64,
    /// Bytes compared so far (answered by the peer).
    pub checked_bytes: u64,
    pub differing_chunks: u64,
    pub elapsed: Duration,
}

impl VerifyProgress {
    /// Percentage done, 0..=100.
    pub fn percent(&self) -> u8 {
        super::resync::percent(self.checked_bytes, self.total_bytes)
    }
}

/// The outcome of a completed verify.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct VerifyReport {
    pub bytes_checked: u64,
    pub chunk_bytes: u64,
    /// Chunks whose digests differ (or that the peer could not read); all are now marked out of sync.
    pub differing_chunks: u64,
    /// The offsets of the first [`VERIFY_FIRST`] differing chunks, in order.
    pub first_differing: Vec<u64>,
    /// Chunks the peer failed to read (counted in `differing_chunks` too).
    pub peer_read_errors: u64,
    pub duration: Duration,
}

/// What the verify loop accumulates.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    pub(crate) report: VerifyReport,
}

impl Tally {
    pub(crate) fn checked(&mut self, len: u64) {
        self.report.bytes_checked += len;
    }

    pub(crate) fn differs(&mut self, offset: u64, peer_error: bool) {
        self.report.differing_chunks += 1;
        self.report.peer_read_errors += u64::from(peer_error);
        // Answers arrive out of order: keep the lowest offsets.
        let first = &mut self.report.first_differing;
        first.push(offset);
        first.sort_unstable();
        first.truncate(VERIFY_FIRST);
    }

    pub(crate) fn finish(mut self, started: Instant) -> VerifyReport {
        self.report.duration = started.elapsed();
        self.report
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tally_keeps_the_first_offsets_and_counts_every_difference() {
        let mut t = Tally::default();
        for i in (0..40u64).rev() {
            t.checked(10);
            t.differs(i * 10, i == 3);
        }
        let r = t.finish(Instant::now());
        assert_eq!((r.bytes_checked, r.differing_chunks, r.peer_read_errors), (400, 40, 1));
        assert_eq!(r.first_differing.len(), VERIFY_FIRST);
        assert_eq!(r.first_differing, (0..VERIFY_FIRST as u64).map(|i| i * 10).collect::<Vec<_>>());
        let p = VerifyProgress { total_bytes: 200, checked_bytes: 50, ..VerifyProgress::default() };
        assert_eq!((p.percent(), VerifyProgress::default().percent()), (25, 100));
    }
}
