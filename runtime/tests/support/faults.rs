//! Storage faults for the mirror's integration tests: [`FaultStore`] wraps a block store and fails chosen
//! operations with a chosen errno (switchable while the store is in use); [`Tmpfs`] mounts a small tmpfs so that a
//! sparse backing file really runs out of space (`ENOSPC` from the kernel). Included by the test crates that need it.
#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, PoisonError};

use tandem_runtime::mirror::store::{BlockStore, StoreError, WriteBuf};
use tokio::sync::watch;

/// Linux errno values used by the tests.
pub const EIO: i32 = 5;
pub const ENOSPC: i32 = 28;

/// The operations a [`Fault`] can hit. `Write` covers WRITE, WRITE_ZEROES and TRIM; `Flush` covers `flush()` only
/// (not the sync of a FUA write).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Write,
    Flush,
}

/// The error a fault raises.
#[derive(Debug, Clone, Copy)]
pub enum Raise {
    /// A raw OS errno (`io::Error::from_raw_os_error`), classified like a real one.
    Errno(i32),
    /// An `io::ErrorKind` without an errno.
    Kind(io::ErrorKind),
}

impl Raise {
    fn io_error(self) -> io::Error {
        match self {
            Raise::Errno(n) => io::Error::from_raw_os_error(n),
            Raise::Kind(k) => io::Error::new(k, "injected fault"),
        }
    }
}

/// One fault rule: which operations, which byte range (overlap), after how many matching operations, how often.
#[derive(Debug, Clone)]
pub struct Fault {
    ops: Vec<OpKind>,
    range: Option<(u64, u64)>,
    after: u64,
    times: Option<u64>,
    raise: Raise,
}

impl Fault {
    /// Fail every operation with the raw `errno`.
    pub fn errno(errno: i32) -> Fault {
        Fault {
            ops: vec![OpKind::Read, OpKind::Write, OpKind::Flush],
            range: None,
            after: 0,
            times: None,
            raise: Raise::Errno(errno),
        }
    }

    /// Fail every operation with an `io::ErrorKind`.
    pub fn kind(kind: io::ErrorKind) -> Fault {
        Fault { raise: Raise::Kind(kind), ..Fault::errno(EIO) }
    }

    /// Only these operations.
    pub fn on(mut self, ops: &[OpKind]) -> Fault {
        self.ops = ops.to_vec();
        self
    }

    /// Only operations overlapping `[offset, offset + len)` (a flush has no range: a ranged rule never hits it).
    pub fn range(mut self, offset: u64, len: u64) -> Fault {
        self.range = Some((offset, len));
        self
    }

    /// Let the first `n` matching operations pass.
    pub fn after(mut self, n: u64) -> Fault {
        self.after = n;
        self
    }

    /// Fail at most `n` operations, then let them pass again.
    pub fn times(mut self, n: u64) -> Fault {
        self.times = Some(n);
        self
    }

    fn matches(&self, kind: OpKind, range: Option<(u64, u64)>) -> bool {
        if !self.ops.contains(&kind) {
            return false;
        }
        match (self.range, range) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some((fo, fl)), Some((o, l))) => o < fo.saturating_add(fl) && fo < o.saturating_add(l.max(1)),
        }
    }
}

struct Rule {
    fault: Fault,
    seen: u64,
    failed: u64,
}

/// A [`BlockStore`] that passes every operation to `inner` unless a [`Fault`] hits it; then the operation fails
/// before it reaches `inner` (nothing written, nothing read). Faults are added and cleared at run time.
pub struct FaultStore {
    inner: Arc<dyn BlockStore>,
    rules: Mutex<Vec<Rule>>,
    injected: watch::Sender<u64>,
}

impl FaultStore {
    pub fn new(inner: Arc<dyn BlockStore>) -> Arc<FaultStore> {
        Arc::new(FaultStore { inner, rules: Mutex::new(Vec::new()), injected: watch::Sender::new(0) })
    }

    /// Add a fault rule (rules are checked in order; the first that fails an operation wins).
    pub fn inject(&self, fault: Fault) {
        self.lock().push(Rule { fault, seen: 0, failed: 0 });
    }

    /// Remove every rule: the store is healthy again.
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Operations failed so far.
    pub fn injected(&self) -> u64 {
        *self.injected.borrow()
    }

    /// Wait until at least `n` operations were failed.
    pub async fn wait_injected(&self, n: u64) {
        let mut rx = self.injected.subscribe();
        let _ = rx.wait_for(|v| *v >= n).await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Rule>> {
        self.rules.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn check(&self, kind: OpKind, op: &'static str, range: Option<(u64, u64)>) -> Result<(), StoreError> {
        let raise = {
            let mut rules = self.lock();
            let mut raise = None;
            for r in rules.iter_mut() {
                if !r.fault.matches(kind, range) {
                    continue;
                }
                r.seen += 1;
                let exhausted = r.fault.times.is_some_and(|t| r.failed >= t);
                if r.seen > r.fault.after && !exhausted {
                    r.failed += 1;
                    raise = Some(r.fault.raise);
                    break;
                }
            }
            raise
        };
        let Some(raise) = raise else { return Ok(()) };
        self.injected.send_modify(|n| *n += 1);
        let offset = range.map_or(0, |r| r.0);
        Err(match kind {
            OpKind::Flush => StoreError::Sync { source: raise.io_error() },
            _ => StoreError::from_io(op, offset, raise.io_error()),
        })
    }
}

#[async_trait::async_trait]
impl BlockStore for FaultStore {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_only(&self) -> bool {
        self.inner.read_only()
    }

    fn can_multi_conn(&self) -> bool {
        self.inner.can_multi_conn()
    }

    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        self.check(OpKind::Read, "read", Some((offset, u64::from(len))))?;
        self.inner.read_at(offset, len).await
    }

    async fn write_at(&self, offset: u64, data: WriteBuf, fua: bool) -> Result<(), StoreError> {
        self.check(OpKind::Write, "write", Some((offset, data.len() as u64)))?;
        self.inner.write_at(offset, data, fua).await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.check(OpKind::Flush, "flush", None)?;
        self.inner.flush().await
    }

    async fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        self.check(OpKind::Write, "trim", Some((offset, len)))?;
        self.inner.trim(offset, len).await
    }

    async fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), StoreError> {
        self.check(OpKind::Write, "write_zeroes", Some((offset, len)))?;
        self.inner.write_zeroes(offset, len, fua).await
    }
}

/// A tmpfs of a fixed size mounted on a fresh temporary directory; unmounted (lazily if still busy) on drop.
pub struct Tmpfs {
    dir: Option<tempfile::TempDir>,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` bytes. `Err` says why not (not root, no `mount`, a container without the
    /// capability): the caller skips its test with that reason.
    pub fn mount(size: u64) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| format!("creating a mount point: {e}"))?;
        let options = format!("size={size},mode=0700");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &options, "tandem-test"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", String::from_utf8_lossy(&out.stderr).trim()));
        }
        Ok(Tmpfs { dir: Some(dir) })
    }

    pub fn path(&self) -> &Path {
        self.dir.as_ref().map_or(Path::new("/nonexistent"), |d| d.path())
    }

    /// A sparse file of `size` bytes (no block allocated: it reads as zeroes).
    pub fn sparse_file(&self, name: &str, size: u64) -> PathBuf {
        let path = self.path().join(name);
        let f = std::fs::File::create(&path).expect("create sparse file");
        f.set_len(size).expect("size sparse file");
        path
    }

    /// A file of `size` real bytes that takes up space until it is removed.
    pub fn ballast(&self, name: &str, size: usize) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, vec![0xbb; size]).expect("write ballast");
        path
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        let path = dir.path().to_path_buf();
        let plain = Command::new("umount").arg(&path).output().is_ok_and(|o| o.status.success());
        if !plain {
            // A store still open in a task that is being torn down: detach now, freed when the last fd closes.
            let lazy = Command::new("umount").arg("-l").arg(&path).output().is_ok_and(|o| o.status.success());
            if !lazy {
                eprintln!("WARNING: could not unmount the test tmpfs at {}", path.display());
            }
        }
        drop(dir);
    }
}
