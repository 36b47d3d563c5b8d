//! What the peer acknowledged but may not have made durable: the ranges of the operations it acknowledged since
//! its last acknowledged FLUSH (a FUA write is durable on its own and is not listed). The secondary acknowledges a
//! non-FUA write once its store took it (the page cache); if its next fdatasync fails, or it loses power or the link
//! before a FLUSH was acknowledged, those writes may be gone there. When the primary's store degrades, these ranges
//! join the dirty set (and the persistent bitmap before the first degraded acknowledgement), so a later resync
//! copies them again.
//!
//! The list is bounded: an operation that touches or overlaps the last entry is merged into it, and beyond
//! [`MAX_UNFLUSHED`] entries everything collapses into one entry covering the hull (more to resync, never less).

/// Most separate entries kept before they collapse into their hull.
pub const MAX_UNFLUSHED: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    /// The highest seq merged into this entry: a FLUSH acknowledged with a higher seq covers all of it.
    seq: u64,
    start: u64,
    end: u64,
}

/// The acknowledged, not yet flushed ranges of one link.
#[derive(Debug, Default)]
pub struct Unflushed {
    entries: Vec<Entry>,
}

impl Unflushed {
    /// The peer acknowledged the non-FUA operation `seq` on `offset..offset+len`.
    pub fn acked(&mut self, seq: u64, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let (start, end) = (offset, offset.saturating_add(len));
        if let Some(last) = self.entries.last_mut()
            && start <= last.end
            && last.start <= end
        {
            *last = Entry { seq: last.seq.max(seq), start: last.start.min(start), end: last.end.max(end) };
            return;
        }
        self.entries.push(Entry { seq, start, end });
        if self.entries.len() > MAX_UNFLUSHED {
            let hull = self.entries.iter().fold(Entry { seq: 0, start: u64::MAX, end: 0 }, |h, e| Entry {
                seq: h.seq.max(e.seq),
                start: h.start.min(e.start),
                end: h.end.max(e.end),
            });
            self.entries = vec![hull];
        }
    }

    /// The peer acknowledged the FLUSH (or SYNC_DONE) `seq`: every operation before it is durable there.
    pub fn flushed(&mut self, seq: u64) {
        self.entries.retain(|e| e.seq > seq);
    }

    /// The ranges as `(offset, length)`.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        self.entries.iter().map(|e| (e.start, e.end - e.start)).collect()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_drops_only_the_operations_before_it() {
        let mut u = Unflushed::default();
        u.acked(1, 0, 100);
        u.acked(2, 1000, 10);
        u.acked(4, 5000, 10);
        u.flushed(3);
        assert_eq!(u.ranges(), vec![(5000, 10)]);
        u.flushed(4);
        assert!(u.is_empty());
    }

    #[test]
    fn touching_writes_merge_and_keep_the_highest_seq() {
        let mut u = Unflushed::default();
        u.acked(1, 0, 4096);
        u.acked(2, 4096, 4096);
        u.acked(3, 100, 0);
        assert_eq!(u.ranges(), vec![(0, 8192)]);
        u.flushed(1);
        assert_eq!(u.ranges(), vec![(0, 8192)], "the merged entry holds seq 2");
    }

    #[test]
    fn too_many_entries_collapse_into_their_hull() {
        let mut u = Unflushed::default();
        for i in 0..=MAX_UNFLUSHED as u64 {
            u.acked(i + 1, i * 10_000, 10);
        }
        assert_eq!(u.ranges(), vec![(0, MAX_UNFLUSHED as u64 * 10_000 + 10)]);
        u.flushed(MAX_UNFLUSHED as u64);
        assert_eq!(u.ranges().len(), 1, "the hull holds the last seq");
        u.flushed(MAX_UNFLUSHED as u64 + 1);
        assert!(u.is_empty());
    }
}
