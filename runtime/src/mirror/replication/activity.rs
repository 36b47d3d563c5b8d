//! The primary's activity log (DRBD's AL): which extents of the export may hold writes the peer does not have yet.
//!
//! Before a write-like operation touches an extent ([`AL_EXTENT_BYTES`], 4 MiB) that is not *active*, the extent is
//! recorded durably in the metadata's activity log ([`Meta::write_activity`]: one slot write + fdatasync). An
//! operation holds a reference on its extents until it is *settled*: acknowledged by the peer, or its range is in the
//! persistent bitmap. Settled extents stay active (a hot set) until they must make room: when the log is full (at
//! most `capacity` extents) the least recently used extent without a reference is evicted in the same metadata write
//! that adds the new ones. Writers that need new extents at the same time share one metadata write (the committer
//! takes every extent wanted so far), so sequential writes cost about one metadata write per 4 MiB.
//!
//! The in-memory active set is always a subset of the on-disk log: an extent is added to it only after the write
//! that records it is durable, and removed from it before the write that evicts it starts. So a crash at any point
//! leaves an on-disk log that covers every write that was not settled. An operation that ends without being settled
//! (the store shut down while it waited for the gate) pins its extents until [`ActivityLog::clear`].
//!
//! A clean stop ([`ReplicatedStore::stop`](super::ReplicatedStore::stop)) persists the in-memory dirty set and
//! empties the log. A non-empty log at the next start means the node stopped as primary without that: its extents
//! are moved into the bitmap ([`Meta::recover_activity`], once per opened metadata, before the log is first
//! written) and resynced.
//!
//! There is one log per opened metadata ([`SharedMeta::activity_log`]), shared by the successive stores a primary
//! builds over it (a reconnection makes a new store while the old one still runs): a reconnection is not a crash.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::Notify;

use crate::mirror::meta::{AL_MAX_EXTENTS, MetaError, SharedMeta};

pub use crate::mirror::meta::AL_EXTENT_BYTES;

/// Default number of active extents (1 GiB with 4 MiB extents: what a crash can add to the next resync at most).
pub const AL_EXTENTS: usize = 256;
/// Fewest active extents (a 32 MiB write spans at most 9 extents).
pub const AL_MIN_EXTENTS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Entry {
    refs: usize,
    last_use: u64,
    /// An operation ended unsettled: keep the extent until the log is cleared.
    pinned: bool,
}

#[derive(Default)]
struct State {
    /// The active extents: all durably in the on-disk log.
    active: HashMap<u32, Entry>,
    /// Extents operations wait for: the next commit writes them.
    wanted: BTreeSet<u32>,
    tick: u64,
}

/// The activity log of one primary store.
pub struct ActivityLog {
    meta: SharedMeta,
    capacity: usize,
    size: u64,
    state: Mutex<State>,
    commit: tokio::sync::Mutex<()>,
    released: Notify,
    writes: AtomicU64,
}

/// References on the extents of one operation. [`AlGuard::settle`] when the operation is acknowledged by the peer
/// or its range is persisted in the bitmap; dropping it unsettled pins the extents until the log is cleared.
pub struct AlGuard {
    log: Arc<ActivityLog>,
    first: u32,
    last: u32,
    settled: bool,
}

impl AlGuard {
    pub fn settle(mut self) {
        self.settled = true;
    }
}

impl Drop for AlGuard {
    fn drop(&mut self) {
        self.log.release(self.first, self.last, self.settled);
    }
}

impl ActivityLog {
    /// The log of an export of `size` bytes over `meta` (see [`SharedMeta::activity_log`]: one per metadata).
    pub fn new(meta: SharedMeta, size: u64, capacity: usize) -> Self {
        let capacity = capacity.clamp(AL_MIN_EXTENTS, AL_MAX_EXTENTS);
        ActivityLog {
            meta,
            capacity,
            size,
            state: Mutex::new(State::default()),
            commit: tokio::sync::Mutex::new(()),
            released: Notify::new(),
            writes: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Metadata writes this log made (activity log slots; the recovery's bitmap writes not included).
    pub fn metadata_writes(&self) -> u64 {
        self.writes.load(Ordering::SeqCst)
    }

    /// The active extents, sorted.
    pub fn active(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.lock().active.keys().copied().collect();
        v.sort_unstable();
        v
    }

    fn span(&self, offset: u64, len: u64) -> Option<(u32, u32)> {
        let end = offset.saturating_add(len).min(self.size);
        if offset >= end {
            return None;
        }
        let e = |b: u64| u32::try_from(b / AL_EXTENT_BYTES).unwrap_or(u32::MAX);
        Some((e(offset), e(end - 1)))
    }

    /// Take references on the extents `offset..offset+len` touches, recording the missing ones durably first.
    /// `None` for an empty range.
    pub async fn acquire(self: &Arc<Self>, offset: u64, len: u64) -> Result<Option<AlGuard>, MetaError> {
        let Some((first, last)) = self.span(offset, len) else { return Ok(None) };
        loop {
            if self.try_take(first, last) {
                return Ok(Some(AlGuard { log: Arc::clone(self), first, last, settled: false }));
            }
            let released = self.released.notified();
            let commit = self.commit.lock().await;
            if self.try_take(first, last) {
                return Ok(Some(AlGuard { log: Arc::clone(self), first, last, settled: false }));
            }
            let plan = self.plan(first, last);
            match plan {
                Some(next) => {
                    self.write(next).await?;
                    drop(commit);
                }
                None => {
                    // Every active extent is in use: wait until an operation settles.
                    drop(commit);
                    released.await;
                }
            }
        }
    }

    /// Take the references if every extent is active; otherwise record the missing ones as wanted.
    fn try_take(&self, first: u32, last: u32) -> bool {
        let mut st = self.lock();
        if (first..=last).all(|e| st.active.contains_key(&e)) {
            st.tick += 1;
            let tick = st.tick;
            for e in first..=last {
                if let Some(entry) = st.active.get_mut(&e) {
                    entry.refs += 1;
                    entry.last_use = tick;
                }
            }
            return true;
        }
        st.wanted.extend(first..=last);
        false
    }

    /// The next on-disk set: the active extents plus every wanted one (or, when they do not all fit, only this
    /// operation's), evicting idle least recently used extents to stay within the capacity; the evicted ones leave
    /// the active set now. `None` when even this operation's extents do not fit.
    fn plan(&self, first: u32, last: u32) -> Option<Vec<u32>> {
        let mut st = self.lock();
        let active: BTreeSet<u32> = st.active.keys().copied().collect();
        let mut idle: Vec<(u64, u32)> = st
            .active
            .iter()
            .filter(|(e, x)| x.refs == 0 && !x.pinned && !(first..=last).contains(*e))
            .map(|(e, x)| (x.last_use, *e))
            .collect();
        idle.sort_unstable();
        let mut batch = active.clone();
        batch.extend(st.wanted.iter().copied());
        batch.extend(first..=last);
        let mut alone = active;
        alone.extend(first..=last);
        for mut next in [batch, alone] {
            let excess = next.len().saturating_sub(self.capacity);
            let victims: Vec<u32> = idle.iter().map(|(_, e)| *e).filter(|e| next.contains(e)).take(excess).collect();
            if victims.len() < excess {
                continue;
            }
            for e in victims {
                next.remove(&e);
                st.active.remove(&e);
            }
            return Some(next.into_iter().collect());
        }
        None
    }

    /// Write `next` as the log (the metadata moves an earlier run's log into the bitmap first, once), then make
    /// it active.
    async fn write(&self, next: Vec<u32>) -> Result<(), MetaError> {
        let extents = next.clone();
        self.meta.with(move |m| m.write_activity(AL_EXTENT_BYTES, &extents)).await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        let mut st = self.lock();
        let tick = st.tick;
        for e in next {
            st.wanted.remove(&e);
            st.active.entry(e).or_insert(Entry { refs: 0, last_use: tick, pinned: false });
        }
        Ok(())
    }

    fn release(&self, first: u32, last: u32, settled: bool) {
        {
            let mut st = self.lock();
            for e in first..=last {
                if let Some(entry) = st.active.get_mut(&e) {
                    entry.refs = entry.refs.saturating_sub(1);
                    entry.pinned |= !settled;
                }
            }
        }
        self.released.notify_waiters();
    }

    /// Wait until no operation holds a reference.
    pub async fn wait_idle(&self) {
        loop {
            let released = self.released.notified();
            if self.lock().active.values().all(|e| e.refs == 0) {
                return;
            }
            released.await;
        }
    }

    /// Empty the log durably (a clean stop: the caller persisted every dirty range first). Operations that start
    /// afterwards record their extents again.
    pub async fn clear(&self) -> Result<(), MetaError> {
        let _commit = self.commit.lock().await;
        let keep: Vec<u32> = {
            let mut st = self.lock();
            st.active.retain(|_, e| e.refs > 0);
            let mut v: Vec<u32> = st.active.keys().copied().collect();
            v.sort_unstable();
            v
        };
        self.meta.with(move |m| m.write_activity(AL_EXTENT_BYTES, &keep)).await?;
        self.writes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mirror::meta::{DEFAULT_GRANULARITY, MemDevice, Meta};

    const E: u64 = AL_EXTENT_BYTES;

    fn log(size: u64, capacity: usize) -> (MemDevice, Arc<ActivityLog>) {
        let dev = MemDevice::default();
        let m = Meta::create_on(Box::new(dev.clone()), size, "a", DEFAULT_GRANULARITY).expect("meta");
        (dev, Arc::new(ActivityLog::new(SharedMeta::new(m), size, capacity)))
    }

    fn on_disk(dev: &MemDevice) -> Vec<(u64, u64)> {
        Meta::open_on(Box::new(dev.clone())).expect("open").activity()
    }

    #[tokio::test]
    async fn sequential_writes_cost_one_metadata_write_per_extent() {
        let (dev, al) = log(64 * E, AL_EXTENTS);
        for i in 0..64u64 {
            let g = al.acquire(i * (1 << 20), 1 << 20).await.expect("acquire").expect("guard");
            g.settle();
        }
        assert_eq!(al.metadata_writes(), 16, "16 MiB of 1 MiB writes: one write per 4 MiB extent");
        assert_eq!(on_disk(&dev).len(), 16);
        al.acquire(0, 1).await.expect("acquire").expect("guard").settle();
        assert_eq!(al.metadata_writes(), 16, "an active extent costs nothing");
    }

    #[tokio::test]
    async fn concurrent_writers_to_new_extents_share_one_metadata_write() {
        let (dev, al) = log(64 * E, AL_EXTENTS);
        let tasks: Vec<_> = (0..16u64)
            .map(|e| {
                let al = Arc::clone(&al);
                tokio::spawn(async move { al.acquire(e * E, 1).await.map(|g| g.map(AlGuard::settle)) })
            })
            .collect();
        for t in tasks {
            t.await.expect("join").expect("acquire");
        }
        assert_eq!(al.metadata_writes(), 2, "the first writer's extent, then everything wanted meanwhile");
        assert_eq!(on_disk(&dev).len(), 16);
    }

    #[tokio::test]
    async fn a_full_log_evicts_the_least_recently_used_idle_extent_and_never_one_in_use() {
        let (dev, al) = log(64 * E, AL_MIN_EXTENTS);
        let busy = al.acquire(0, 1).await.expect("acquire").expect("guard");
        for e in 1..AL_MIN_EXTENTS as u64 {
            al.acquire(e * E, 1).await.expect("acquire").expect("guard").settle();
        }
        al.acquire(E, 1).await.expect("touch extent 1").expect("guard").settle();
        al.acquire(40 * E, 1).await.expect("acquire").expect("guard").settle();
        let active = al.active();
        assert_eq!(active.len(), AL_MIN_EXTENTS);
        assert!(active.contains(&0) && active.contains(&1) && active.contains(&40), "{active:?}");
        assert!(!active.contains(&2), "extent 2 was the least recently used idle one: {active:?}");
        let disk: Vec<u64> = on_disk(&dev).iter().map(|r| r.0 / E).collect();
        assert_eq!(disk, active.iter().map(|e| u64::from(*e)).collect::<Vec<_>>(), "memory = disk");
        drop(busy);
        // Dropped unsettled: pinned, never evicted.
        for e in 41..41 + AL_MIN_EXTENTS as u64 {
            al.acquire(e * E, 1).await.expect("acquire").expect("guard").settle();
        }
        assert!(al.active().contains(&0), "the unsettled extent stays");
    }

    #[tokio::test]
    async fn a_writer_waits_for_room_when_every_extent_is_in_use() {
        let (_dev, al) = log(64 * E, AL_MIN_EXTENTS);
        let mut held = Vec::new();
        for e in 0..AL_MIN_EXTENTS as u64 {
            held.push(al.acquire(e * E, 1).await.expect("acquire").expect("guard"));
        }
        let a = Arc::clone(&al);
        let waiting = tokio::spawn(async move { a.acquire(50 * E, 1).await.map(|g| g.map(AlGuard::settle)) });
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert!(!waiting.is_finished(), "no room yet");
        held.pop().expect("one").settle();
        waiting.await.expect("join").expect("acquired once one settled");
        assert!(al.active().contains(&50));
    }

    #[tokio::test]
    async fn clear_empties_the_log_and_recovery_runs_before_the_first_commit() {
        let dev = MemDevice::default();
        let mut m = Meta::create_on(Box::new(dev.clone()), 8 * E, "a", DEFAULT_GRANULARITY).expect("meta");
        m.write_activity(E, &[5]).expect("an earlier run's log");
        let m = Meta::open_on(Box::new(dev.clone())).expect("the next run opens it");
        let shared = SharedMeta::new(m);
        let al = shared.activity_log(8 * E, AL_EXTENTS);
        assert!(Arc::ptr_eq(&al, &shared.activity_log(8 * E, 1)), "one log per opened metadata");
        al.acquire(0, 1).await.expect("acquire").expect("guard").settle();
        let m = Meta::open_on(Box::new(dev.clone())).expect("open");
        assert_eq!((m.activity(), m.dirty_ranges()), (vec![(0, E)], vec![(5 * E, E)]));
        al.clear().await.expect("clear");
        assert!(on_disk(&dev).is_empty());
        assert!(al.acquire(0, 0).await.expect("empty").is_none());
    }
}
