//! The storage under a mirror export: the [`BlockStore`] trait and [`FileStore`], a regular file or a block device.
//!
//! The NBD server calls only this trait, so the replication layer wraps the write path by implementing it around
//! a local store (a `ReplicatedStore { local: FileStore, peer }` whose `write_at` completes when both the local
//! write and the peer's acknowledgement are done). Writes take a shared [`WriteBuf`] so a wrapper can hand the
//! same bytes to the local disk and to the peer link without copying.
//!
//! Semantics every implementation keeps:
//! - ranges are checked: `offset + len <= size()`, else [`StoreError::OutOfRange`];
//! - a write, zero or trim that returned `Ok` is visible to every later read through any handle of the store;
//! - `fua == true`: the bytes are on stable storage when the call returns;
//! - `flush()`: every write that returned `Ok` before the call is on stable storage when it returns;
//! - `trim` is advisory: the contents of the range afterwards are unspecified (here: unchanged).

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;

use super::nbd::proto::{NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM};

/// The bytes of one write, shared so that a replicating wrapper can send them to the peer and the local disk.
pub type WriteBuf = Arc<Vec<u8>>;

/// Largest buffer of zeroes written at once by [`FileStore::write_zeroes`].
const ZERO_CHUNK: usize = 1024 * 1024;

/// Why a block store operation failed. Codes (`TDM-MIR-NNN`) are stable: never renumber, only append.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("TDM-MIR-001: opening the mirror backing store {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("TDM-MIR-002: the mirror backing store {path} is a {kind}, not a regular file or block device")]
    Unsupported { path: PathBuf, kind: &'static str },
    #[error("TDM-MIR-003: the mirror backing store {path} is empty (size 0)")]
    Empty { path: PathBuf },
    #[error("TDM-MIR-004: mirror {op} at offset {offset} length {len} is beyond the store size {size}")]
    OutOfRange { op: &'static str, offset: u64, len: u64, size: u64 },
    #[error("TDM-MIR-005: mirror {op} refused: the store is read-only")]
    ReadOnly { op: &'static str },
    #[error("TDM-MIR-006: mirror {op} at offset {offset} failed: {source}")]
    Io { op: &'static str, offset: u64, source: io::Error },
    #[error("TDM-MIR-007: mirror {op} at offset {offset}: no space left on the backing store: {source}")]
    NoSpace { op: &'static str, offset: u64, source: io::Error },
    #[error("TDM-MIR-008: mirror {op} at offset {offset}: permission denied by the backing store: {source}")]
    Permission { op: &'static str, offset: u64, source: io::Error },
    #[error("TDM-MIR-009: mirror flush (fdatasync) failed; data written since the last flush may be lost: {source}")]
    Sync { source: io::Error },
    #[error("TDM-MIR-010: mirror {op}: the I/O task ended abnormally: {reason}")]
    Task { op: &'static str, reason: String },
}

impl StoreError {
    /// The stable operator-facing code.
    pub fn code(&self) -> &'static str {
        match self {
            StoreError::Open { .. } => "TDM-MIR-001",
            StoreError::Unsupported { .. } => "TDM-MIR-002",
            StoreError::Empty { .. } => "TDM-MIR-003",
            StoreError::OutOfRange { .. } => "TDM-MIR-004",
            StoreError::ReadOnly { .. } => "TDM-MIR-005",
            StoreError::Io { .. } => "TDM-MIR-006",
            StoreError::NoSpace { .. } => "TDM-MIR-007",
            StoreError::Permission { .. } => "TDM-MIR-008",
            StoreError::Sync { .. } => "TDM-MIR-009",
            StoreError::Task { .. } => "TDM-MIR-010",
        }
    }

    /// The NBD error value a client receives for this failure.
    pub fn nbd_errno(&self) -> u32 {
        match self {
            StoreError::OutOfRange { op, .. } if *op == "write" || *op == "write_zeroes" => NBD_ENOSPC,
            StoreError::OutOfRange { .. } => NBD_EINVAL,
            StoreError::ReadOnly { .. } | StoreError::Permission { .. } => NBD_EPERM,
            StoreError::NoSpace { .. } => NBD_ENOSPC,
            _ => NBD_EIO,
        }
    }

    /// Classify an I/O error of a read, write or zeroing at `offset`: no space (`ENOSPC`, `EDQUOT`, `EFBIG`) is
    /// [`StoreError::NoSpace`] (NBD `ENOSPC`: the client may retry once space is freed), permission (`EPERM`,
    /// `EACCES`, `EROFS`) is [`StoreError::Permission`] (NBD `EPERM`), anything else [`StoreError::Io`] (NBD `EIO`).
    /// A failed `fdatasync` is always [`StoreError::Sync`] (NBD `EIO`), whatever its errno: after a failed sync the
    /// kernel may have dropped the unwritten pages, so a retry could report success over lost data.
    pub fn from_io(op: &'static str, offset: u64, source: io::Error) -> Self {
        match source.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge => {
                StoreError::NoSpace { op, offset, source }
            }
            io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => {
                StoreError::Permission { op, offset, source }
            }
            _ => StoreError::Io { op, offset, source },
        }
    }
}

/// A fixed-size, byte-addressed block store shared by every connection of an export.
#[async_trait]
pub trait BlockStore: Send + Sync {
    /// Size in bytes; constant for the life of the store.
    fn size(&self) -> u64;

    /// True when the store refuses writes.
    fn read_only(&self) -> bool {
        false
    }

    /// True when `flush` (and FUA) through any one handle covers writes completed through all handles, so clients
    /// may spread I/O over several connections (`NBD_FLAG_CAN_MULTI_CONN`).
    fn can_multi_conn(&self) -> bool {
        false
    }

    /// Read `len` bytes at `offset`.
    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError>;

    /// Write `data` at `offset`; with `fua`, persist it before returning.
    async fn write_at(&self, offset: u64, data: WriteBuf, fua: bool) -> Result<(), StoreError>;

    /// Persist every write that completed before this call.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Advisory discard of a range: afterwards its contents are unspecified.
    async fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError>;

    /// Make the range read as zeroes; with `fua`, persist before returning.
    async fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), StoreError>;
}

/// Check `offset + len <= size` without overflow.
pub fn check_range(op: &'static str, offset: u64, len: u64, size: u64) -> Result<(), StoreError> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(StoreError::OutOfRange { op, offset, len, size }),
    }
}

/// A regular file or a block device, opened read-write (or read-only), with positional I/O on the blocking pool.
///
/// Flush is `fdatasync`; FUA is `fdatasync` after the write. `fdatasync` covers the whole file, so one flush covers
/// writes from every connection: [`BlockStore::can_multi_conn`] is true. Trim is a no-op after the range check (no
/// `unsafe` for `fallocate`; both mirror sides keep the same old bytes, so they stay identical).
#[derive(Debug, Clone)]
pub struct FileStore {
    file: Arc<File>,
    path: PathBuf,
    size: u64,
    read_only: bool,
}

impl FileStore {
    /// Open `path` read-write.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, false)
    }

    /// Open `path` read-only: every write fails with [`StoreError::ReadOnly`].
    pub fn open_read_only(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, true)
    }

    fn open_with(path: &Path, read_only: bool) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open { path: path.to_path_buf(), source };
        let mut file = OpenOptions::new().read(true).write(!read_only).open(path).map_err(open_err)?;
        let meta = file.metadata().map_err(open_err)?;
        let ft = meta.file_type();
        let size = if ft.is_file() {
            meta.len()
        } else if ft.is_block_device() {
            file.seek(SeekFrom::End(0)).map_err(open_err)?
        } else {
            let kind = if ft.is_dir() {
                "directory"
            } else if ft.is_char_device() {
                "character device"
            } else {
                "special file"
            };
            return Err(StoreError::Unsupported { path: path.to_path_buf(), kind });
        };
        if size == 0 {
            return Err(StoreError::Empty { path: path.to_path_buf() });
        }
        Ok(FileStore { file: Arc::new(file), path: path.to_path_buf(), size, read_only })
    }

    /// The path it was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_write(&self, op: &'static str, offset: u64, len: u64) -> Result<(), StoreError> {
        if self.read_only {
            return Err(StoreError::ReadOnly { op });
        }
        check_range(op, offset, len, self.size)
    }

    async fn blocking<T, F>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&File) -> Result<T, StoreError> + Send + 'static,
    {
        let file = Arc::clone(&self.file);
        tokio::task::spawn_blocking(move || f(&file))
            .await
            .map_err(|e| StoreError::Task { op, reason: e.to_string() })?
    }
}

fn sync(file: &File) -> Result<(), StoreError> {
    file.sync_data().map_err(|source| StoreError::Sync { source })
}

#[async_trait]
impl BlockStore for FileStore {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn can_multi_conn(&self) -> bool {
        true
    }

    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        check_range("read", offset, u64::from(len), self.size)?;
        self.blocking("read", move |f| {
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, offset).map_err(|e| StoreError::from_io("read", offset, e))?;
            Ok(buf)
        })
        .await
    }

    async fn write_at(&self, offset: u64, data: WriteBuf, fua: bool) -> Result<(), StoreError> {
        self.check_write("write", offset, data.len() as u64)?;
        self.blocking("write", move |f| {
            f.write_all_at(&data, offset).map_err(|e| StoreError::from_io("write", offset, e))?;
            if fua { sync(f) } else { Ok(()) }
        })
        .await
    }

    async fn flush(&self) -> Result<(), StoreError> {
        if self.read_only {
            return Ok(());
        }
        self.blocking("flush", sync).await
    }

    async fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        self.check_write("trim", offset, len)
    }

    async fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), StoreError> {
        self.check_write("write_zeroes", offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.blocking("write_zeroes", move |f| {
            let zeroes = vec![0u8; ZERO_CHUNK.min(len as usize)];
            let mut at = offset;
            let end = offset + len;
            while at < end {
                let n = (end - at).min(zeroes.len() as u64) as usize;
                f.write_all_at(&zeroes[..n], at).map_err(|e| StoreError::from_io("write_zeroes", at, e))?;
                at += n as u64;
            }
            if fua { sync(f) } else { Ok(()) }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store_of(len: usize) -> (tempfile::TempDir, PathBuf, FileStore) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("disk.img");
        std::fs::write(&path, vec![0x11u8; len]).expect("write backing file");
        let store = FileStore::open(&path).expect("open");
        (dir, path, store)
    }

    #[tokio::test]
    async fn write_then_read_returns_the_bytes_and_reaches_the_file() {
        let (_d, path, s) = store_of(8192);
        assert_eq!(s.size(), 8192);
        s.write_at(100, Arc::new(vec![0xab; 300]), true).await.expect("write");
        assert_eq!(s.read_at(100, 300).await.expect("read"), vec![0xab; 300]);
        assert_eq!(s.read_at(99, 1).await.expect("read"), vec![0x11]);
        s.flush().await.expect("flush");
        let on_disk = std::fs::read(&path).expect("read file");
        assert_eq!(&on_disk[100..400], &[0xab; 300][..]);
        assert_eq!(on_disk.len(), 8192, "writes never grow the file");
    }

    #[tokio::test]
    async fn write_zeroes_zeroes_only_the_range() {
        let (_d, path, s) = store_of(3 * ZERO_CHUNK);
        s.write_zeroes(10, 2 * ZERO_CHUNK as u64 + 5, false).await.expect("zeroes");
        let on_disk = std::fs::read(&path).expect("read file");
        assert_eq!(on_disk[9], 0x11);
        assert!(on_disk[10..10 + 2 * ZERO_CHUNK + 5].iter().all(|b| *b == 0));
        assert_eq!(on_disk[10 + 2 * ZERO_CHUNK + 5], 0x11);
    }

    #[tokio::test]
    async fn ranges_beyond_the_end_are_refused() {
        let (_d, _p, s) = store_of(4096);
        let e = s.read_at(4000, 97).await.expect_err("past end");
        assert_eq!((e.code(), e.nbd_errno()), ("TDM-MIR-004", NBD_EINVAL));
        let e = s.write_at(4096, Arc::new(vec![1]), false).await.expect_err("past end");
        assert_eq!(e.nbd_errno(), NBD_ENOSPC);
        assert!(s.trim(u64::MAX, 2).await.is_err(), "overflow");
        assert!(s.write_zeroes(1, 4096, false).await.is_err());
        assert!(s.trim(0, 4096).await.is_ok());
    }

    #[tokio::test]
    async fn read_only_store_refuses_writes_with_eperm() {
        let (_d, path, _s) = store_of(4096);
        let ro = FileStore::open_read_only(&path).expect("open ro");
        assert!(ro.read_only());
        let e = ro.write_at(0, Arc::new(vec![1]), false).await.expect_err("ro");
        assert_eq!((e.code(), e.nbd_errno()), ("TDM-MIR-005", NBD_EPERM));
        assert!(ro.write_zeroes(0, 1, false).await.is_err());
        assert!(ro.trim(0, 1).await.is_err());
        assert_eq!(ro.read_at(0, 2).await.expect("read"), vec![0x11, 0x11]);
        ro.flush().await.expect("flush of a read-only store is a no-op");
    }

    #[test]
    fn open_refuses_missing_empty_and_directory_backing_stores() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = FileStore::open(&dir.path().join("nope")).expect_err("missing");
        assert_eq!(missing.code(), "TDM-MIR-001");
        let empty = dir.path().join("empty");
        std::fs::write(&empty, b"").expect("create");
        assert_eq!(FileStore::open(&empty).expect_err("empty").code(), "TDM-MIR-003");
        assert_eq!(FileStore::open_read_only(dir.path()).expect_err("dir").code(), "TDM-MIR-002");
    }

    #[test]
    fn raw_errnos_of_the_kernel_map_to_the_nbd_errno_a_client_can_act_on() {
        // Linux errno values: ENOSPC 28, EDQUOT 122, EFBIG 27, EPERM 1, EACCES 13, EROFS 30, EIO 5, ENXIO 6,
        // ENOMEM 12, EINVAL 22.
        let cases = [
            (28, "TDM-MIR-007", NBD_ENOSPC),
            (122, "TDM-MIR-007", NBD_ENOSPC),
            (27, "TDM-MIR-007", NBD_ENOSPC),
            (1, "TDM-MIR-008", NBD_EPERM),
            (13, "TDM-MIR-008", NBD_EPERM),
            (30, "TDM-MIR-008", NBD_EPERM),
            (5, "TDM-MIR-006", NBD_EIO),
            (6, "TDM-MIR-006", NBD_EIO),
            (12, "TDM-MIR-006", NBD_EIO),
            (22, "TDM-MIR-006", NBD_EIO),
        ];
        for (errno, code, nbd) in cases {
            let e = StoreError::from_io("write", 4096, io::Error::from_raw_os_error(errno));
            assert_eq!((e.code(), e.nbd_errno()), (code, nbd), "errno {errno}: {e}");
            assert!(e.to_string().starts_with(code), "the message starts with its code: {e}");
        }
        for errno in [5, 28, 122] {
            let e = StoreError::Sync { source: io::Error::from_raw_os_error(errno) };
            assert_eq!((e.code(), e.nbd_errno()), ("TDM-MIR-009", NBD_EIO), "a failed fdatasync is never retryable");
        }
    }

    #[test]
    fn io_errors_map_to_nbd_errno() {
        let full = StoreError::from_io("write", 0, io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!((full.code(), full.nbd_errno()), ("TDM-MIR-007", NBD_ENOSPC));
        let perm = StoreError::from_io("write", 0, io::Error::from(io::ErrorKind::PermissionDenied));
        assert_eq!((perm.code(), perm.nbd_errno()), ("TDM-MIR-008", NBD_EPERM));
        let other = StoreError::from_io("read", 0, io::Error::other("boom"));
        assert_eq!((other.code(), other.nbd_errno()), ("TDM-MIR-006", NBD_EIO));
        let sync = StoreError::Sync { source: io::Error::other("boom") };
        assert_eq!((sync.code(), sync.nbd_errno()), ("TDM-MIR-009", NBD_EIO));
    }
}
