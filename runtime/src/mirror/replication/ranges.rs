//! Ordering of overlapping in-flight operations: a small range-conflict table.
//!
//! An operation registers its byte range, synchronously and in issue order, and gets the list of earlier
//! operations still in flight whose ranges overlap it; it waits for those, runs, then drops its guard, which wakes
//! the later ones. Non-overlapping operations never wait for each other. A barrier registers the whole address
//! space (`0..u64::MAX`), so it waits for everything before it and everything after it waits for it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::watch;

/// The table. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct RangeLocks {
    inner: Arc<Mutex<Table>>,
}

#[derive(Default)]
struct Table {
    next: u64,
    active: HashMap<u64, Entry>,
}

struct Entry {
    start: u64,
    end: u64,
    done: watch::Receiver<()>,
}

/// Held while an operation runs; dropping it lets the later overlapping operations go.
pub struct RangeGuard {
    table: Arc<Mutex<Table>>,
    id: u64,
    _done: watch::Sender<()>,
}

impl Drop for RangeGuard {
    fn drop(&mut self) {
        self.table.lock().unwrap_or_else(PoisonError::into_inner).active.remove(&self.id);
    }
}

/// What a registered operation must wait for before it runs.
pub struct Conflicts(Vec<watch::Receiver<()>>);

impl Conflicts {
    /// Wait until every earlier overlapping operation has dropped its guard.
    pub async fn wait(self) {
        for mut rx in self.0 {
            // The sender never sends: `changed` returns an error exactly when the guard is dropped.
            while rx.changed().await.is_ok() {}
        }
    }

    /// Number of earlier operations this one waits for.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl RangeLocks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Register `offset..offset+len` (saturating at the end of the address space). An empty range conflicts with
    /// nothing.
    pub fn register(&self, offset: u64, len: u64) -> (RangeGuard, Conflicts) {
        let start = offset;
        let end = offset.saturating_add(len);
        let (tx, rx) = watch::channel(());
        let mut t = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let waits = t
            .active
            .values()
            .filter(|e| start < end && e.start < e.end && e.start < end && start < e.end)
            .map(|e| e.done.clone())
            .collect();
        let id = t.next;
        t.next += 1;
        t.active.insert(id, Entry { start, end, done: rx });
        (RangeGuard { table: Arc::clone(&self.inner), id, _done: tx }, Conflicts(waits))
    }

    /// Register and wait for the conflicts.
    pub async fn acquire(&self, offset: u64, len: u64) -> RangeGuard {
        let (guard, conflicts) = self.register(offset, len);
        conflicts.wait().await;
        guard
    }

    /// Register a barrier over the whole address space.
    pub fn register_barrier(&self) -> (RangeGuard, Conflicts) {
        self.register(0, u64::MAX)
    }

    /// Operations in flight (registered, guard not dropped).
    pub fn in_flight(&self) -> usize {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner).active.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn is_pending(h: &tokio::task::JoinHandle<()>) -> bool {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        !h.is_finished()
    }

    #[tokio::test]
    async fn overlapping_ranges_wait_and_disjoint_ones_do_not() {
        let l = RangeLocks::new();
        let (a, none) = l.register(0, 100);
        assert!(none.is_empty());
        let (_b, disjoint) = l.register(100, 50);
        assert!(disjoint.is_empty(), "adjacent ranges do not overlap");
        let (c, waits) = l.register(99, 2);
        assert_eq!(waits.len(), 2, "overlaps both");
        let h = tokio::spawn(waits.wait());
        assert!(is_pending(&h).await);
        drop(a);
        assert!(is_pending(&h).await, "still waits for the second");
        drop(_b);
        h.await.expect("join");
        drop(c);
        assert_eq!(l.in_flight(), 0);
    }

    #[tokio::test]
    async fn barrier_waits_for_everything_before_and_blocks_everything_after() {
        let l = RangeLocks::new();
        let (w, _) = l.register(5, 1);
        let (barrier, before) = l.register_barrier();
        assert_eq!(before.len(), 1);
        let (_after, waits) = l.register(1 << 40, 1);
        assert_eq!(waits.len(), 1, "waits for the barrier");
        drop(w);
        before.wait().await;
        drop(barrier);
        waits.wait().await;
    }

    #[test]
    fn empty_and_saturating_ranges() {
        let l = RangeLocks::new();
        let (_a, _) = l.register(u64::MAX - 1, 10);
        let (_e, w) = l.register(u64::MAX - 1, 0);
        assert!(w.is_empty(), "an empty range conflicts with nothing");
        let (_b, w) = l.register(u64::MAX - 2, 2);
        assert_eq!(w.len(), 1);
    }
}
