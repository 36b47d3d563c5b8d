//! The mirror disk's metadata on its metadata file or device: a double-buffered superblock ([`superblock`](super::superblock)) and a
//! persistent dirty bitmap.
//!
//! # Layout
//! | offset | bytes | content |
//! |---|---|---|
//! | 0 | 4096 | superblock slot 0 (512 bytes used) |
//! | 4096 | 4096 | superblock slot 1 |
//! | 8192 | ⌈chunks / 8⌉ rounded up to 4096 | dirty bitmap: bit `i % 8` of byte `i / 8` = chunk `i` |
//! | after the bitmap | 2 × 4096 | activity log slots 0 and 1 ([`ActivityRecord`]) |
//!
//! A chunk is `granularity` bytes of the export (64 KiB by default, [`DEFAULT_GRANULARITY`]: 2 KiB of bitmap per
//! GiB of export).
//!
//! # Durability
//! - [`Meta::save`] increments the sequence number, writes the superblock to the slot *not* holding the newest
//!   valid copy and fdatasyncs. [`Meta::open`] reads both slots and takes the valid one with the higher sequence
//!   number, so a torn or lost superblock write leaves the previous state readable. Both slots invalid:
//!   `TDM-MIR-046`.
//! - [`Meta::mark_dirty`] writes only when a chunk goes clean → dirty: it writes the 4 KiB bitmap block(s) that
//!   changed and fdatasyncs before returning (a degraded write is acknowledged after it). Marking an already
//!   dirty chunk costs no I/O.
//! - [`Meta::clear`] / [`Meta::clear_all`] write the changed blocks and fdatasync too (a lost clear only causes a
//!   redundant resync).
//! - The activity log (the primary's hot extents, see `replication::activity`) is written like the superblock: to
//!   the slot not holding the newest copy, then fdatasync. A torn write leaves the previous set, a superset of what
//!   had writes in flight. [`Meta::recover_activity`] moves a non-empty log into the bitmap (a node that crashed
//!   as primary); an unreadable log (both slots invalid) marks the whole export (`TDM-MIR-049`, logged).
//!
//! [`SharedMeta`] wraps a [`Meta`] for the async replication code (the blocking I/O runs on tokio's blocking
//! pool). [`MetaDevice`] abstracts the storage so tests can use memory ([`MemDevice`]).

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use super::replication::activity::ActivityLog;
pub use super::superblock::{
    AL_MAX_EXTENTS, AL_SLOT_LEN, ActivityRecord, DiskState, FLAG_DISCARDED, FLAG_PEER_OUTDATED, HISTORY, Role,
    Superblock,
};
use super::superblock::{SUPERBLOCK_LEN, SuperblockError};

/// Default bitmap granularity: 64 KiB, the replication layer's dirty-tracking chunk.
pub const DEFAULT_GRANULARITY: u32 = 64 * 1024;
/// Bytes reserved for each superblock slot.
pub const SLOT_LEN: u64 = 4096;
/// Where the bitmap starts.
pub const BITMAP_AT: u64 = 2 * SLOT_LEN;
const BLOCK: u64 = 4096;

/// Why the metadata could not be read or written. Codes are stable: never renumber, only append.
#[derive(Debug, thiserror::Error)]
pub enum MetaError {
    #[error("TDM-MIR-040: mirror metadata {what}: I/O failed while {during}: {source}")]
    Io { what: String, during: &'static str, source: std::io::Error },
    #[error(transparent)]
    Superblock(#[from] SuperblockError),
    #[error("TDM-MIR-046: mirror metadata {what} has no valid superblock (slot 0: {slot0}; slot 1: {slot1})")]
    NoValidSuperblock { what: String, slot0: String, slot1: String },
    #[error("TDM-MIR-047: mirror metadata {what}: {detail}")]
    Layout { what: String, detail: String },
    #[error("TDM-MIR-048: mirror metadata task failed: {0}")]
    Task(String),
    #[error(
        "TDM-MIR-049: mirror metadata {what}: the activity log is unreadable ({detail}); the whole export is marked \
         out of sync"
    )]
    ActivityLost { what: String, detail: String },
}

impl MetaError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            MetaError::Io { .. } => "TDM-MIR-040",
            MetaError::Superblock(e) => e.code(),
            MetaError::NoValidSuperblock { .. } => "TDM-MIR-046",
            MetaError::Layout { .. } => "TDM-MIR-047",
            MetaError::Task(_) => "TDM-MIR-048",
            MetaError::ActivityLost { .. } => "TDM-MIR-049",
        }
    }
}

/// Where the metadata lives: a file or block device, or memory in tests.
pub trait MetaDevice: Send {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()>;
    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()>;
    /// Make every completed write durable (fdatasync).
    fn sync(&mut self) -> std::io::Result<()>;
    /// Grow to at least `len` bytes if the device can (a block device must already be large enough).
    fn ensure_len(&mut self, len: u64) -> std::io::Result<u64>;
    /// A name for messages.
    fn describe(&self) -> String;
}

/// A metadata file or block device.
pub struct FileDevice {
    file: File,
    path: String,
}

impl FileDevice {
    pub fn open(path: &Path, create: bool) -> std::io::Result<Self> {
        let file = OpenOptions::new().read(true).write(true).create(create).truncate(false).open(path)?;
        Ok(FileDevice { file, path: path.display().to_string() })
    }
}

impl MetaDevice for FileDevice {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.file.write_all_at(data, offset)
    }

    fn sync(&mut self) -> std::io::Result<()> {
        self.file.sync_data()
    }

    fn ensure_len(&mut self, len: u64) -> std::io::Result<u64> {
        let meta = self.file.metadata()?;
        if meta.is_file() && meta.len() < len {
            self.file.set_len(len)?;
            return Ok(len);
        }
        if meta.is_file() {
            return Ok(meta.len());
        }
        // A block device: its size is where a seek to the end lands.
        use std::io::{Seek, SeekFrom};
        (&self.file).seek(SeekFrom::End(0))
    }

    fn describe(&self) -> String {
        self.path.clone()
    }
}

/// Metadata in memory, shared so a test can corrupt or inspect it.
#[derive(Clone, Default)]
pub struct MemDevice(pub Arc<Mutex<Vec<u8>>>);

impl MemDevice {
    fn bytes(&self) -> std::sync::MutexGuard<'_, Vec<u8>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl MetaDevice for MemDevice {
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let b = self.bytes();
        let end = offset as usize + buf.len();
        if end > b.len() {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
        buf.copy_from_slice(&b[offset as usize..end]);
        Ok(())
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        let mut b = self.bytes();
        let end = offset as usize + data.len();
        if b.len() < end {
            b.resize(end, 0);
        }
        b[offset as usize..end].copy_from_slice(data);
        Ok(())
    }

    fn sync(&mut self) -> std::io::Result<()> {
        Ok(())
    }

    fn ensure_len(&mut self, len: u64) -> std::io::Result<u64> {
        let mut b = self.bytes();
        if (b.len() as u64) < len {
            b.resize(len as usize, 0);
        }
        Ok(b.len() as u64)
    }

    fn describe(&self) -> String {
        "(memory)".into()
    }
}

/// A fresh random generation identifier (never 0).
pub fn random_generation() -> Result<u64, MetaError> {
    loop {
        let mut b = [0u8; 8];
        aws_lc_rs::rand::fill(&mut b).map_err(|_| MetaError::Task("the system random generator failed".into()))?;
        let g = u64::from_be_bytes(b);
        if g != 0 {
            return Ok(g);
        }
    }
}

/// The opened metadata: superblock and bitmap in memory, every change written through.
pub struct Meta {
    dev: Box<dyn MetaDevice>,
    what: String,
    sb: Superblock,
    bitmap: Vec<u8>,
    /// The newest valid activity log slot (an empty one with seq 0 when none was ever written).
    al: ActivityRecord,
    /// Both activity log slots were invalid: what was active is unknown.
    al_lost: Option<String>,
    /// fdatasyncs issued since open (superblock, bitmap and activity log writes).
    syncs: u64,
    /// The log found at open was moved into the bitmap (or was empty): the log now belongs to this run.
    al_recovered: bool,
}

/// Default extent size of the activity log: 4 MiB.
pub const AL_EXTENT_BYTES: u64 = 4 * 1024 * 1024;

impl std::fmt::Debug for Meta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Meta").field("what", &self.what).field("sb", &self.sb).finish_non_exhaustive()
    }
}

fn bitmap_len(chunks: u64) -> u64 {
    chunks.div_ceil(8).div_ceil(BLOCK) * BLOCK
}

/// Where the activity log's two slots start.
fn al_at(sb: &Superblock) -> u64 {
    BITMAP_AT + bitmap_len(sb.chunks())
}

fn empty_al() -> ActivityRecord {
    ActivityRecord { seq: 0, extent_bytes: AL_EXTENT_BYTES, extents: Vec::new() }
}

impl Meta {
    /// Initialise metadata at `path` (created if missing) for an export of `size` bytes: disk Inconsistent, role
    /// Secondary, a new random current generation, empty history, clean bitmap.
    pub fn create(path: &Path, size: u64, node: &str, granularity: u32) -> Result<Meta, MetaError> {
        let what = path.display().to_string();
        let dev = FileDevice::open(path, true).map_err(|source| MetaError::Io { what, during: "creating", source })?;
        Meta::create_on(Box::new(dev), size, node, granularity)
    }

    /// [`Meta::create`] on any device.
    pub fn create_on(mut dev: Box<dyn MetaDevice>, size: u64, node: &str, granularity: u32) -> Result<Meta, MetaError> {
        let what = dev.describe();
        let sb = Superblock {
            seq: 0,
            size,
            granularity,
            disk: DiskState::Inconsistent,
            role: Role::Secondary,
            flags: 0,
            current: random_generation()?,
            history: [0; HISTORY],
            bitmap_uuid: 0,
            node: node.to_string(),
        };
        sb.validate()?;
        let len = bitmap_len(sb.chunks());
        let io = |during| {
            let what = what.clone();
            move |source| MetaError::Io { what, during, source }
        };
        let need = BITMAP_AT + len + 2 * AL_SLOT_LEN as u64;
        let have = dev.ensure_len(need).map_err(io("sizing"))?;
        if have < need {
            let detail = format!("{have} bytes, the bitmap and activity log need {need}");
            return Err(MetaError::Layout { what, detail });
        }
        let bitmap = vec![0u8; len as usize];
        dev.write_at(BITMAP_AT, &bitmap).map_err(io("clearing the bitmap"))?;
        dev.write_at(BITMAP_AT + len, &[0u8; 2 * AL_SLOT_LEN]).map_err(io("clearing the activity log"))?;
        let mut meta = Meta { dev, what, sb, bitmap, al: empty_al(), al_lost: None, syncs: 0, al_recovered: true };
        // Both slots get a valid copy.
        meta.save()?;
        meta.save()?;
        Ok(meta)
    }

    /// Open existing metadata at `path`.
    pub fn open(path: &Path) -> Result<Meta, MetaError> {
        let what = path.display().to_string();
        let dev = FileDevice::open(path, false).map_err(|source| MetaError::Io { what, during: "opening", source })?;
        Meta::open_on(Box::new(dev))
    }

    /// [`Meta::open`] on any device: the valid slot with the higher sequence number wins.
    pub fn open_on(mut dev: Box<dyn MetaDevice>) -> Result<Meta, MetaError> {
        let what = dev.describe();
        let mut read_slot = |slot: u64| -> Result<Superblock, String> {
            let mut b = [0u8; SUPERBLOCK_LEN];
            dev.read_at(slot * SLOT_LEN, &mut b).map_err(|e| format!("TDM-MIR-040: read failed: {e}"))?;
            Superblock::decode(&b).map_err(|e| e.to_string())
        };
        let (s0, s1) = (read_slot(0), read_slot(1));
        let sb = match (s0, s1) {
            (Ok(a), Ok(b)) => {
                if a.seq >= b.seq {
                    a
                } else {
                    b
                }
            }
            (Ok(a), Err(e)) | (Err(e), Ok(a)) => {
                tracing::warn!(meta = %what, "mirror metadata: one superblock slot is invalid, using the other: {e}");
                a
            }
            (Err(slot0), Err(slot1)) => return Err(MetaError::NoValidSuperblock { what, slot0, slot1 }),
        };
        let len = bitmap_len(sb.chunks());
        let mut bitmap = vec![0u8; len as usize];
        dev.read_at(BITMAP_AT, &mut bitmap).map_err(|e| MetaError::Layout {
            what: what.clone(),
            detail: format!("reading the {len}-byte bitmap failed: {e}"),
        })?;
        let (al, al_lost) = read_activity(dev.as_mut(), al_at(&sb), &what);
        Ok(Meta { dev, what, sb, bitmap, al, al_lost, syncs: 0, al_recovered: false })
    }

    /// fdatasyncs issued through this handle since it was opened (the cost of the metadata).
    pub fn syncs(&self) -> u64 {
        self.syncs
    }

    fn sync_dev(&mut self, during: &'static str) -> Result<(), MetaError> {
        self.syncs += 1;
        self.dev.sync().map_err(self.io(during))
    }

    /// The activity log's extents as byte ranges of the export (clipped to its end; not coalesced).
    pub fn activity(&self) -> Vec<(u64, u64)> {
        let e = self.al.extent_bytes;
        let mut out: Vec<(u64, u64)> = self
            .al
            .extents
            .iter()
            .map(|x| u64::from(*x) * e)
            .filter(|start| *start < self.sb.size)
            .map(|start| (start, e.min(self.sb.size - start)))
            .collect();
        out.sort_unstable();
        out
    }

    /// Why the activity log could not be read (both slots invalid), if so.
    pub fn activity_lost(&self) -> Option<&str> {
        self.al_lost.as_deref()
    }

    /// Replace the activity log with `extents` (units of `extent_bytes`), durably: the slot not holding the newest
    /// copy, then fdatasync. The log found at open is moved into the bitmap first ([`Self::recover_activity`]).
    pub fn write_activity(&mut self, extent_bytes: u64, extents: &[u32]) -> Result<(), MetaError> {
        self.recover_activity()?;
        self.put_activity(extent_bytes, extents)
    }

    fn put_activity(&mut self, extent_bytes: u64, extents: &[u32]) -> Result<(), MetaError> {
        let next = ActivityRecord { seq: self.al.seq.wrapping_add(1), extent_bytes, extents: extents.to_vec() };
        let bytes = next.encode()?;
        let at = al_at(&self.sb) + (next.seq % 2) * AL_SLOT_LEN as u64;
        let need = al_at(&self.sb) + 2 * AL_SLOT_LEN as u64;
        // Metadata created before the activity log may end right after the bitmap.
        if self.al.seq == 0 && self.dev.ensure_len(need).map_err(self.io("sizing the activity log"))? < need {
            let detail = format!("the activity log needs {need} bytes");
            return Err(MetaError::Layout { what: self.what.clone(), detail });
        }
        self.dev.write_at(at, &bytes).map_err(self.io("writing the activity log"))?;
        self.sync_dev("syncing the activity log")?;
        self.al = next;
        self.al_lost = None;
        Ok(())
    }

    /// After a crash as primary: mark every extent of the activity log found at open dirty in the bitmap (the
    /// whole export when the log is unreadable), then empty the log. Returns the ranges it marked (none after a
    /// clean stop). Runs once per open; later calls return nothing (the log is then this run's own).
    pub fn recover_activity(&mut self) -> Result<Vec<(u64, u64)>, MetaError> {
        if self.al_recovered {
            return Ok(Vec::new());
        }
        let ranges = match &self.al_lost {
            Some(detail) => {
                let e = MetaError::ActivityLost { what: self.what.clone(), detail: detail.clone() };
                tracing::error!(code = e.code(), "{e}");
                vec![(0, self.sb.size)]
            }
            None => self.activity(),
        };
        if ranges.is_empty() {
            self.al_recovered = true;
            return Ok(ranges);
        }
        tracing::warn!(
            meta = %self.what,
            extents = ranges.len(),
            "mirror metadata: the activity log is not empty (this node stopped as primary without a clean stop): \
             its extents are marked out of sync"
        );
        for (offset, len) in &ranges {
            self.mark_dirty(*offset, *len)?;
        }
        let e = self.al.extent_bytes;
        self.put_activity(e, &[])?;
        self.al_recovered = true;
        Ok(ranges)
    }

    /// The current superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// Change superblock fields and [`save`](Self::save). Size, granularity and node cannot change; an invalid
    /// result is refused and nothing changes.
    pub fn update(&mut self, f: impl FnOnce(&mut Superblock)) -> Result<(), MetaError> {
        let mut next = self.sb.clone();
        f(&mut next);
        next.size = self.sb.size;
        next.granularity = self.sb.granularity;
        next.node = self.sb.node.clone();
        next.validate()?;
        let old = std::mem::replace(&mut self.sb, next);
        if let Err(e) = self.save() {
            self.sb = old;
            return Err(e);
        }
        Ok(())
    }

    /// Write the superblock durably to the older slot.
    pub fn save(&mut self) -> Result<(), MetaError> {
        let mut sb = self.sb.clone();
        sb.seq = sb.seq.wrapping_add(1);
        let bytes = sb.encode()?;
        let slot = sb.seq % 2;
        self.dev.write_at(slot * SLOT_LEN, &bytes).map_err(self.io("writing the superblock"))?;
        self.sync_dev("syncing the superblock")?;
        self.sb.seq = sb.seq;
        Ok(())
    }

    fn io(&self, during: &'static str) -> impl FnOnce(std::io::Error) -> MetaError {
        let what = self.what.clone();
        move |source| MetaError::Io { what, during, source }
    }

    /// Move the current generation into the history (most recent first) and pick a new random current; saved.
    pub fn new_generation(&mut self) -> Result<u64, MetaError> {
        let g = random_generation()?;
        self.update(|sb| {
            sb.history.rotate_right(1);
            sb.history[0] = sb.current;
            sb.current = g;
        })?;
        Ok(g)
    }

    fn chunk_span(&self, offset: u64, len: u64) -> Option<(u64, u64)> {
        let end = offset.saturating_add(len).min(self.sb.size);
        if offset >= end {
            return None;
        }
        let g = u64::from(self.sb.granularity);
        Some((offset / g, (end - 1) / g))
    }

    fn bit(&self, c: u64) -> bool {
        self.bitmap[(c / 8) as usize] & (1 << (c % 8)) != 0
    }

    fn write_blocks(&mut self, first_chunk: u64, last_chunk: u64) -> Result<(), MetaError> {
        let (b0, b1) = (first_chunk / 8 / BLOCK, last_chunk / 8 / BLOCK);
        let data = &self.bitmap[(b0 * BLOCK) as usize..((b1 + 1) * BLOCK) as usize];
        let what = self.what.clone();
        self.dev.write_at(BITMAP_AT + b0 * BLOCK, data).map_err(|source| MetaError::Io {
            what,
            during: "writing the bitmap",
            source,
        })?;
        self.sync_dev("syncing the bitmap")
    }

    /// Mark every chunk `offset..offset+len` touches dirty (clipped to the export). Persists (write + fdatasync)
    /// only when a chunk goes clean → dirty; returns whether it did.
    pub fn mark_dirty(&mut self, offset: u64, len: u64) -> Result<bool, MetaError> {
        let Some((c0, c1)) = self.chunk_span(offset, len) else { return Ok(false) };
        let mut changed = false;
        for c in c0..=c1 {
            if !self.bit(c) {
                self.bitmap[(c / 8) as usize] |= 1 << (c % 8);
                changed = true;
            }
        }
        if changed {
            self.write_blocks(c0, c1)?;
        }
        Ok(changed)
    }

    /// Clear every chunk `offset..offset+len` touches; persisted.
    pub fn clear(&mut self, offset: u64, len: u64) -> Result<(), MetaError> {
        let Some((c0, c1)) = self.chunk_span(offset, len) else { return Ok(()) };
        let mut changed = false;
        for c in c0..=c1 {
            if self.bit(c) {
                self.bitmap[(c / 8) as usize] &= !(1 << (c % 8));
                changed = true;
            }
        }
        if changed {
            self.write_blocks(c0, c1)?;
        }
        Ok(())
    }

    /// Clear the whole bitmap; persisted.
    pub fn clear_all(&mut self) -> Result<(), MetaError> {
        let size = self.sb.size;
        self.clear(0, size)
    }

    /// The dirty chunks as coalesced `(offset, length)` ranges, clipped to the export's end.
    pub fn dirty_ranges(&self) -> Vec<(u64, u64)> {
        let g = u64::from(self.sb.granularity);
        let mut out: Vec<(u64, u64)> = Vec::new();
        for c in 0..self.sb.chunks() {
            if !self.bit(c) {
                continue;
            }
            let start = c * g;
            let len = g.min(self.sb.size - start);
            match out.last_mut() {
                Some((s, l)) if *s + *l == start => *l += len,
                _ => out.push((start, len)),
            }
        }
        out
    }

    /// Bytes covered by dirty chunks.
    pub fn dirty_bytes(&self) -> u64 {
        self.dirty_ranges().iter().map(|r| r.1).sum()
    }
}

/// Read both activity log slots; the newer valid one wins. An unreadable region (metadata older than the log) or
/// blank slots are an empty log; two invalid slots are "lost".
fn read_activity(dev: &mut dyn MetaDevice, at: u64, what: &str) -> (ActivityRecord, Option<String>) {
    let mut slots = Vec::new();
    for i in 0..2u64 {
        let mut b = vec![0u8; AL_SLOT_LEN];
        if let Err(e) = dev.read_at(at + i * AL_SLOT_LEN as u64, &mut b) {
            tracing::info!(meta = %what, "mirror metadata: no activity log yet ({e}); it is created on first use");
            return (empty_al(), None);
        }
        slots.push(ActivityRecord::decode(&b).map_err(|e| e.to_string()));
    }
    let (s1, s0) = (slots.pop(), slots.pop());
    match (s0, s1) {
        (Some(Ok(a)), Some(Ok(b))) => {
            let best = match (a, b) {
                (Some(a), Some(b)) => Some(if a.seq >= b.seq { a } else { b }),
                (a, b) => a.or(b),
            };
            (best.unwrap_or_else(empty_al), None)
        }
        (Some(Ok(a)), Some(Err(e))) | (Some(Err(e)), Some(Ok(a))) => {
            tracing::warn!(meta = %what, "mirror metadata: one activity log slot is invalid, using the other: {e}");
            (a.unwrap_or_else(empty_al), None)
        }
        (Some(Err(a)), Some(Err(b))) => (empty_al(), Some(format!("slot 0: {a}; slot 1: {b}"))),
        _ => (empty_al(), None),
    }
}

/// A [`Meta`] shared between tasks; the blocking I/O runs on tokio's blocking pool. Cheap to clone. It also holds
/// the primary's activity log: one per opened metadata, shared by every store built over it.
#[derive(Clone)]
pub struct SharedMeta(Arc<Mutex<Meta>>, Arc<OnceLock<Arc<ActivityLog>>>);

impl SharedMeta {
    pub fn new(meta: Meta) -> Self {
        SharedMeta(Arc::new(Mutex::new(meta)), Arc::new(OnceLock::new()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Meta> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The activity log of this metadata (made on first use with `capacity` extents; later calls share it).
    pub fn activity_log(&self, size: u64, capacity: usize) -> Arc<ActivityLog> {
        Arc::clone(self.1.get_or_init(|| Arc::new(ActivityLog::new(self.clone(), size, capacity))))
    }

    /// A copy of the superblock.
    pub fn superblock(&self) -> Superblock {
        self.lock().sb.clone()
    }

    pub fn dirty_ranges(&self) -> Vec<(u64, u64)> {
        self.lock().dirty_ranges()
    }

    pub fn dirty_bytes(&self) -> u64 {
        self.lock().dirty_bytes()
    }

    /// [`Meta::activity`].
    pub fn activity(&self) -> Vec<(u64, u64)> {
        self.lock().activity()
    }

    /// [`Meta::syncs`].
    pub fn syncs(&self) -> u64 {
        self.lock().syncs()
    }

    /// Run `f` on the metadata on the blocking pool.
    pub async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Meta) -> Result<T, MetaError> + Send + 'static,
    ) -> Result<T, MetaError> {
        let inner = Arc::clone(&self.0);
        tokio::task::spawn_blocking(move || f(&mut inner.lock().unwrap_or_else(PoisonError::into_inner)))
            .await
            .map_err(|e| MetaError::Task(e.to_string()))?
    }

    /// [`Meta::mark_dirty`], durable when it returns.
    pub async fn mark_dirty(&self, offset: u64, len: u64) -> Result<bool, MetaError> {
        self.with(move |m| m.mark_dirty(offset, len)).await
    }

    /// [`Meta::update`].
    pub async fn update(&self, f: impl FnOnce(&mut Superblock) + Send + 'static) -> Result<(), MetaError> {
        self.with(move |m| m.update(f)).await
    }
}

/// `tandemctl mirror resolve --discard NODE` on the discarding node: its data is given up. The metadata becomes
/// Inconsistent with a fresh current generation and no history, flagged discarded, role Secondary, so that the
/// next handshake with the surviving node makes this node a *full* sync target (`SourceFull` on the survivor).
/// Full rather than bitmap: the survivor's bitmap does not cover the chunks this node changed on its own.
pub fn resolve_discard(meta: &mut Meta) -> Result<(), MetaError> {
    let g = random_generation()?;
    meta.update(|sb| {
        sb.disk = DiskState::Inconsistent;
        sb.role = Role::Secondary;
        sb.current = g;
        sb.history = [0; HISTORY];
        sb.bitmap_uuid = 0;
        sb.flags = (sb.flags | FLAG_DISCARDED) & !FLAG_PEER_OUTDATED;
    })?;
    meta.clear_all()?;
    // Its own activity is discarded with its data (the full sync rewrites everything anyway).
    if !meta.activity().is_empty() || meta.activity_lost().is_some() {
        let e = meta.al.extent_bytes;
        meta.put_activity(e, &[])?;
        meta.al_recovered = true;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = DEFAULT_GRANULARITY as u64;

    fn fresh(dev: &MemDevice, size: u64) -> Meta {
        Meta::create_on(Box::new(dev.clone()), size, "node-a", DEFAULT_GRANULARITY).expect("create")
    }

    #[test]
    fn create_then_open_round_trips_and_starts_inconsistent() {
        let dev = MemDevice::default();
        let m = fresh(&dev, 100 * G + 5);
        let sb = m.superblock().clone();
        assert_eq!(
            (sb.disk, sb.role, sb.history, sb.bitmap_uuid),
            (DiskState::Inconsistent, Role::Secondary, [0; 4], 0)
        );
        assert_ne!(sb.current, 0);
        let back = Meta::open_on(Box::new(dev)).expect("open");
        assert_eq!(back.superblock(), &sb);
    }

    #[test]
    fn mark_dirty_persists_only_clean_to_dirty_transitions() {
        let dev = MemDevice::default();
        let mut m = fresh(&dev, 1000 * G);
        assert!(m.mark_dirty(G - 1, 2).expect("mark"));
        assert!(!m.mark_dirty(G, 5).expect("again"), "already dirty: no I/O");
        assert!(m.mark_dirty(999 * G, u64::MAX).expect("clipped"));
        assert!(!m.mark_dirty(1000 * G, 1).expect("beyond"));
        let back = Meta::open_on(Box::new(dev.clone())).expect("open");
        assert_eq!(back.dirty_ranges(), vec![(0, 2 * G), (999 * G, G)]);
        m.clear(0, G).expect("clear");
        assert_eq!(Meta::open_on(Box::new(dev.clone())).expect("open").dirty_ranges(), vec![(G, G), (999 * G, G)]);
        m.clear_all().expect("clear all");
        assert_eq!(Meta::open_on(Box::new(dev)).expect("open").dirty_bytes(), 0);
    }

    #[test]
    fn new_generation_pushes_the_current_into_the_history() {
        let dev = MemDevice::default();
        let mut m = fresh(&dev, G);
        let mut seen = vec![m.superblock().current];
        for _ in 0..5 {
            seen.insert(0, m.new_generation().expect("new gen"));
        }
        let sb = Meta::open_on(Box::new(dev)).expect("open").superblock().clone();
        assert_eq!(sb.current, seen[0]);
        assert_eq!(sb.history.to_vec(), seen[1..5].to_vec());
    }

    #[test]
    fn a_torn_newer_slot_falls_back_to_the_older_one() {
        let dev = MemDevice::default();
        let mut m = fresh(&dev, G);
        m.update(|sb| sb.disk = DiskState::UpToDate).expect("update");
        let older = m.superblock().clone();
        m.update(|sb| sb.disk = DiskState::Outdated).expect("update");
        let newer_slot = (m.superblock().seq % 2) as usize * SLOT_LEN as usize;
        dev.bytes()[newer_slot + 100] ^= 0xff;
        let back = Meta::open_on(Box::new(dev.clone())).expect("open");
        assert_eq!(back.superblock(), &older);
        let older_slot = (older.seq % 2) as usize * SLOT_LEN as usize;
        dev.bytes()[older_slot + 5] ^= 0xff;
        let e = Meta::open_on(Box::new(dev)).expect_err("both bad");
        assert_eq!(e.code(), "TDM-MIR-046");
        assert!(e.to_string().contains("TDM-MIR-043") && e.to_string().contains("TDM-MIR-041"), "{e}");
    }

    #[test]
    fn a_missing_bitmap_is_a_layout_error_and_bad_updates_change_nothing() {
        let dev = MemDevice::default();
        let mut m = fresh(&dev, 10 * G);
        let before = m.superblock().clone();
        assert_eq!(m.update(|sb| sb.current = 0).expect_err("gen 0").code(), "TDM-MIR-044");
        assert_eq!(m.superblock(), &before);
        dev.bytes().truncate(BITMAP_AT as usize + 10);
        assert_eq!(Meta::open_on(Box::new(dev)).expect_err("short").code(), "TDM-MIR-047");
    }

    #[test]
    fn resolve_discard_makes_a_fresh_discarded_inconsistent_copy() {
        let dev = MemDevice::default();
        let mut m = fresh(&dev, 10 * G);
        m.update(|sb| sb.disk = DiskState::UpToDate).expect("update");
        m.new_generation().expect("gen");
        m.mark_dirty(0, 1).expect("mark");
        let old = m.superblock().clone();
        resolve_discard(&mut m).expect("discard");
        let sb = Meta::open_on(Box::new(dev)).expect("open").superblock().clone();
        assert_eq!((sb.disk, sb.history, sb.flags & FLAG_DISCARDED), (DiskState::Inconsistent, [0; 4], FLAG_DISCARDED));
        assert_ne!(sb.current, old.current);
        assert_eq!(m.dirty_bytes(), 0);
    }

    #[test]
    fn files_work_like_memory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("meta");
        let mut m = Meta::create(&path, 3 * G, "n", DEFAULT_GRANULARITY).expect("create");
        m.mark_dirty(G, 1).expect("mark");
        let back = Meta::open(&path).expect("open");
        assert_eq!(back.dirty_ranges(), vec![(G, G)]);
        assert_eq!(Meta::open(&dir.path().join("none")).expect_err("missing").code(), "TDM-MIR-040");
    }

    #[test]
    fn the_activity_log_survives_reopen_and_recovery_moves_it_into_the_bitmap() {
        let dev = MemDevice::default();
        let mut m = fresh(&dev, 100 * G);
        assert!(m.activity().is_empty());
        let e = 4 * G;
        m.write_activity(e, &[3, 0]).expect("write");
        m.write_activity(e, &[3, 0, 24]).expect("write again");
        let mut back = Meta::open_on(Box::new(dev.clone())).expect("open");
        let want = vec![(0, e), (3 * e, e), (24 * e, e)];
        assert_eq!(back.activity(), want);
        assert_eq!(back.recover_activity().expect("recover"), want);
        assert_eq!(back.dirty_ranges(), want);
        let mut again = Meta::open_on(Box::new(dev.clone())).expect("open");
        assert!(again.activity().is_empty(), "recovery empties the log");
        assert!(again.recover_activity().expect("nothing").is_empty());
        assert_eq!(again.dirty_ranges().len(), 3, "the bitmap keeps them");
    }

    #[test]
    fn a_torn_activity_slot_falls_back_and_two_mark_everything() {
        let dev = MemDevice::default();
        let mut m = fresh(&dev, 10 * G);
        m.write_activity(4 * G, &[0]).expect("write");
        m.write_activity(4 * G, &[0, 1]).expect("write");
        let at = al_at(m.superblock()) as usize;
        let newer = at + (m.al.seq % 2) as usize * AL_SLOT_LEN;
        dev.bytes()[newer + 40] ^= 1;
        assert_eq!(Meta::open_on(Box::new(dev.clone())).expect("open").activity(), vec![(0, 4 * G)]);
        let older = at + ((m.al.seq + 1) % 2) as usize * AL_SLOT_LEN;
        dev.bytes()[older + 40] ^= 1;
        let mut lost = Meta::open_on(Box::new(dev.clone())).expect("open");
        assert!(lost.activity_lost().is_some());
        assert_eq!(lost.recover_activity().expect("recover"), vec![(0, 10 * G)]);
        assert_eq!(lost.dirty_bytes(), 10 * G);
        assert!(Meta::open_on(Box::new(dev)).expect("open").activity_lost().is_none(), "rewritten");
    }

    #[test]
    fn metadata_without_room_for_the_log_reads_it_as_empty_and_grows_on_first_use() {
        let dev = MemDevice::default();
        let m = fresh(&dev, 10 * G);
        let at = al_at(m.superblock()) as usize;
        drop(m);
        dev.bytes().truncate(at);
        let mut old = Meta::open_on(Box::new(dev.clone())).expect("open an older layout");
        assert!(old.activity().is_empty() && old.activity_lost().is_none());
        old.write_activity(4 * G, &[1]).expect("grows");
        assert_eq!(Meta::open_on(Box::new(dev)).expect("open").activity(), vec![(4 * G, 4 * G)]);
    }
}
