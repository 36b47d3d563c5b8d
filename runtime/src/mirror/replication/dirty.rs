//! The dirty set: which parts of the store may differ from the peer's copy, in fixed chunks of
//! [`DirtyTracker::CHUNK`] bytes, as an in-memory bitset (one bit per chunk: 2 KiB of memory per GiB of store).
//! A later piece persists it (the on-disk bitmap) and resyncs exactly the dirty chunks.

use std::sync::{Mutex, PoisonError};

/// Chunked dirty bitset of a store of fixed size.
#[derive(Debug)]
pub struct DirtyTracker {
    size: u64,
    bits: Mutex<Vec<u64>>,
}

impl DirtyTracker {
    /// Tracking granularity: 64 KiB. A write of any size dirties every chunk it touches.
    pub const CHUNK: u64 = 64 * 1024;

    /// An all-clean tracker for a store of `size` bytes.
    pub fn new(size: u64) -> Self {
        let chunks = size.div_ceil(Self::CHUNK);
        DirtyTracker { size, bits: Mutex::new(vec![0; chunks.div_ceil(64) as usize]) }
    }

    /// Size of the store tracked.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Mark `offset..offset+len` dirty (clipped to the store; an empty range marks nothing).
    pub fn mark(&self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return;
        }
        let mut bits = self.bits.lock().unwrap_or_else(PoisonError::into_inner);
        for c in offset / Self::CHUNK..=(end - 1) / Self::CHUNK {
            bits[(c / 64) as usize] |= 1 << (c % 64);
        }
    }

    /// Forget everything (after a completed resync).
    pub fn clear(&self) {
        self.bits.lock().unwrap_or_else(PoisonError::into_inner).iter_mut().for_each(|w| *w = 0);
    }

    /// Number of dirty chunks.
    pub fn dirty_chunks(&self) -> u64 {
        self.bits.lock().unwrap_or_else(PoisonError::into_inner).iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// Bytes covered by dirty chunks (the last chunk counts only up to the store's end).
    pub fn dirty_bytes(&self) -> u64 {
        self.ranges().iter().map(|(_, len)| len).sum()
    }

    /// True when `offset` lies in a dirty chunk.
    pub fn is_dirty(&self, offset: u64) -> bool {
        if offset >= self.size {
            return false;
        }
        let c = offset / Self::CHUNK;
        let bits = self.bits.lock().unwrap_or_else(PoisonError::into_inner);
        bits[(c / 64) as usize] & (1 << (c % 64)) != 0
    }

    /// The dirty chunks as coalesced `(offset, length)` ranges, in order, clipped to the store's end.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let bits = self.bits.lock().unwrap_or_else(PoisonError::into_inner);
        let chunks = self.size.div_ceil(Self::CHUNK);
        let mut out: Vec<(u64, u64)> = Vec::new();
        for c in 0..chunks {
            if bits[(c / 64) as usize] & (1 << (c % 64)) == 0 {
                continue;
            }
            let start = c * Self::CHUNK;
            let len = Self::CHUNK.min(self.size - start);
            match out.last_mut() {
                Some((s, l)) if *s + *l == start => *l += len,
                _ => out.push((start, len)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: u64 = DirtyTracker::CHUNK;

    #[test]
    fn marks_every_chunk_a_range_touches_and_coalesces() {
        let d = DirtyTracker::new(10 * K);
        d.mark(K - 1, 2);
        d.mark(5 * K, K);
        assert_eq!(d.ranges(), vec![(0, 2 * K), (5 * K, K)]);
        assert_eq!((d.dirty_chunks(), d.dirty_bytes()), (3, 3 * K));
        assert!(d.is_dirty(0) && d.is_dirty(2 * K - 1) && !d.is_dirty(2 * K) && !d.is_dirty(10 * K));
        d.mark(2 * K, 3 * K);
        assert_eq!(d.ranges(), vec![(0, 6 * K)]);
        d.clear();
        assert!(d.ranges().is_empty());
    }

    #[test]
    fn clips_to_the_store_and_ignores_empty_ranges() {
        let d = DirtyTracker::new(K + 100);
        d.mark(0, 0);
        d.mark(K + 200, 5);
        assert_eq!(d.dirty_chunks(), 0);
        d.mark(K + 50, u64::MAX);
        assert_eq!(d.ranges(), vec![(K, 100)]);
        assert_eq!(d.dirty_bytes(), 100);
        let big = DirtyTracker::new(200 * K);
        big.mark(63 * K, 3 * K);
        assert_eq!(big.ranges(), vec![(63 * K, 3 * K)], "across bitset words");
    }
}
