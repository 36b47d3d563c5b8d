//! Disk full and I/O errors under the mirror's NBD export, with a real NBD client (`qemu-io`):
//! - disk full for real: a sparse backing file on a small tmpfs (`support/faults.rs`, needs root to mount; skipped
//!   with the reason otherwise), under a plain export and under each side of a replicated pair;
//! - injected `EIO` (a `FaultStore` in front of the backing file) on reads, writes and flushes, on the primary's
//!   and on the secondary's store.
//!
//! Every case checks the client's view (the error it gets, or success), that every write acknowledged before is
//! intact (`read -P` through the export and the backing files byte for byte), that the export keeps serving, and
//! what the replication does. The rules (docs/mirror.md, "Disk full and I/O errors"):
//! - a failure of the store the client talks to (the primary's) fails that request with its errno (`ENOSPC`, `EIO`)
//!   and nothing else: the link to the peer stays up, the range is marked dirty;
//! - a failure of the secondary's store detaches the secondary (DRBD's `on-io-error detach`): its ACK carries the
//!   error, the primary turns degraded (`TDM-MIR-035`), passes the peer-loss gate and acknowledges the write, which
//!   is on the primary; the chunks are in the bitmap and a later link resyncs them.

#[path = "support/faults.rs"]
mod faults;
#[path = "support/qemu.rs"]
mod qemu;

use qemu::{assert_range, have_qemu, qemu_io, qemu_io_ok, qemu_io_with};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use faults::{EIO, ENOSPC, Fault, FaultStore, OpKind, Tmpfs};
use tandem_runtime::mirror::generations::Decision;
use tandem_runtime::mirror::meta::{DEFAULT_GRANULARITY, DiskState, Meta, SharedMeta};
use tandem_runtime::mirror::nbd::{Export, bind_unix, serve_unix};
use tandem_runtime::mirror::replication::{
    PeerLossGate, ReplicatedStore, ReplicationConfig, ReplicationError, ReplicationState, ResyncPhase, SecondaryConfig,
    Stats, serve_secondary_meta, serve_secondary_with,
};
use tandem_runtime::mirror::store::{BlockStore, FileStore};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

const NAME: &str = "disk0";
const MIB: usize = 1024 * 1024;
const K64: u64 = 64 * 1024;
const LIMIT: Duration = Duration::from_secs(30);
/// What qemu-io prints for the two errors.
const NO_SPACE: &str = "No space left on device";
const IO_ERROR: &str = "Input/output error";

/// A tmpfs of `size` bytes, or `None` after printing why the test is skipped.
fn tmpfs(size: usize) -> Option<Tmpfs> {
    match Tmpfs::mount(size as u64) {
        Ok(fs) => Some(fs),
        Err(why) => {
            eprintln!("SKIP: cannot mount a tmpfs for the disk-full test ({why}); run the tests as root");
            None
        }
    }
}

/// qemu-io failed, and exactly `failures` commands reported "`what` failed: `error`".
async fn qemu_io_fails(url: &str, cmds: &[&str], what: &str, error: &str, failures: usize) -> String {
    let (ok, text) = qemu_io(url, cmds).await;
    assert!(!ok, "qemu-io must fail for {cmds:?}: {text}");
    let line = format!("{what} failed: {error}");
    assert_eq!(text.matches(&line).count(), failures, "expected {failures} x '{line}' for {cmds:?}: {text}");
    assert_eq!(text.matches("failed").count(), failures, "no other failure for {cmds:?}: {text}");
    text
}

/// qemu-io failed without naming a command: its `flush` command prints nothing when the FLUSH gets an error, only
/// the exit status says so (the errno itself is checked by the server's unit tests).
async fn qemu_io_flush_fails(url: &str, cmds: &[&str]) {
    let (ok, text) = qemu_io(url, cmds).await;
    assert!(!ok && !text.contains("failed"), "only the flush must fail for {cmds:?}: {text}");
}

fn assert_identical(a: &Path, b: &Path, when: &str) {
    let (a, b) = (std::fs::read(a).expect("read A"), std::fs::read(b).expect("read B"));
    assert_eq!(a.len(), b.len(), "{when}: sizes");
    if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
        panic!("{when}: A and B differ first at byte {i}: {:#04x} vs {:#04x}", a[i], b[i]);
    }
}

fn file_of(dir: &Path, name: &str, size: usize, fill: u8) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, vec![fill; size]).expect("create backing file");
    path
}

fn sparse(dir: &Path, name: &str, size: usize) -> PathBuf {
    let path = dir.join(name);
    std::fs::File::create(&path).expect("create").set_len(size as u64).expect("size");
    path
}

fn open(path: &Path) -> Arc<dyn BlockStore> {
    Arc::new(FileStore::open(path).expect("open backing file"))
}

/// The NBD export of a store on a Unix socket; stopped on drop.
struct Exported {
    sock: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Exported {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Exported {
    fn new(dir: &Path, tag: &str, store: Arc<dyn BlockStore>) -> Exported {
        let sock = dir.join(format!("nbd-{tag}.sock"));
        let task = tokio::spawn(serve_unix(bind_unix(&sock).expect("bind unix"), Arc::new(Export::new(NAME, store))));
        Exported { sock, task }
    }

    fn url(&self) -> String {
        format!("nbd+unix:///{NAME}?socket={}", self.sock.display())
    }
}

/// The peer-loss gate: always passes, counts its calls and keeps the last generation it was given. With a probe,
/// it reads the secondary's metadata file when called (what the secondary had saved by then).
struct Gate {
    calls: watch::Sender<usize>,
    generation: AtomicU64,
    probe: Mutex<Option<PathBuf>>,
    probed: Mutex<Option<DiskState>>,
}

impl Gate {
    fn calls(&self) -> usize {
        *self.calls.borrow()
    }

    fn probe(&self, meta: &Path) {
        *self.probe.lock().expect("lock") = Some(meta.to_path_buf());
    }

    fn probed(&self) -> Option<DiskState> {
        *self.probed.lock().expect("lock")
    }
}

#[async_trait::async_trait]
impl PeerLossGate for Gate {
    async fn mark_peer_outdated(&self, generation: u64) -> Result<(), String> {
        let probe = self.probe.lock().expect("lock").clone();
        if let Some(path) = probe {
            let disk = Meta::open(&path).expect("probe the peer's metadata").superblock().disk;
            *self.probed.lock().expect("lock") = Some(disk);
        }
        self.generation.store(generation, Ordering::SeqCst);
        self.calls.send_modify(|n| *n += 1);
        Ok(())
    }
}

/// A primary over store A (exported) linked over loopback TCP to a secondary over store B.
struct Link {
    primary: Arc<ReplicatedStore>,
    secondary: JoinHandle<Result<Stats, ReplicationError>>,
    export: Exported,
    gate: Arc<Gate>,
}

impl Link {
    async fn up(
        dir: &Path,
        tag: &str,
        a: Arc<dyn BlockStore>,
        b: Arc<dyn BlockStore>,
        metas: Option<(SharedMeta, SharedMeta)>,
    ) -> Link {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (ma, mb) = metas.map_or((None, None), |(a, b)| (Some(a), Some(b)));
        let secondary = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            stream.set_nodelay(true).expect("nodelay");
            let cfg = SecondaryConfig { node: "node-b".into(), ..SecondaryConfig::default() };
            match mb {
                Some(mb) => serve_secondary_meta(stream, b, cfg, mb).await,
                None => serve_secondary_with(stream, b, cfg).await,
            }
        });
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).expect("nodelay");
        let cfg = ReplicationConfig { node: "node-a".into(), ..ReplicationConfig::default() };
        let gate = Arc::new(Gate {
            calls: watch::Sender::new(0),
            generation: AtomicU64::new(0),
            probe: Mutex::new(None),
            probed: Mutex::new(None),
        });
        let g = Arc::clone(&gate) as Arc<dyn PeerLossGate>;
        let primary = match ma {
            Some(ma) => ReplicatedStore::connect_with_meta(a, stream, cfg, g, ma).await,
            None => ReplicatedStore::connect(a, stream, cfg, g).await,
        };
        let primary = Arc::new(primary.expect("link up"));
        let export = Exported::new(dir, tag, Arc::clone(&primary) as Arc<dyn BlockStore>);
        Link { primary, secondary, export, gate }
    }

    fn url(&self) -> String {
        self.export.url()
    }

    fn degraded_code(&self) -> (&'static str, String) {
        match self.primary.state() {
            ReplicationState::Degraded { code, reason, .. } => (code, reason),
            ReplicationState::Connected => panic!("the primary is still connected"),
        }
    }

    /// Stop the export, close the link in order and return what the secondary applied.
    async fn close(self) -> Stats {
        self.end().await.expect("the secondary ends without an error")
    }

    /// [`Self::close`] for a link whose secondary's store failed: it ends with the store's error.
    async fn close_failed(self) -> ReplicationError {
        self.end().await.expect_err("the secondary ends with its store's error")
    }

    async fn end(self) -> Result<Stats, ReplicationError> {
        let Link { primary, secondary, export, .. } = self;
        drop(export);
        primary.stop().await.expect("clean stop");
        drop(primary);
        let joined = tokio::time::timeout(LIMIT, secondary).await.expect("the secondary ends");
        joined.expect("join")
    }
}

// ---- disk full (a real ENOSPC from a tmpfs) -------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_under_a_plain_export_answers_enospc_keeps_acknowledged_data_and_recovers() {
    if !have_qemu() {
        return;
    }
    let Some(fs) = tmpfs(2 * MIB) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = fs.sparse_file("disk.img", 8 * MIB as u64);
    let ballast = fs.ballast("ballast", MIB);
    let export = Exported::new(dir.path(), "plain", open(&backing));
    let url = export.url();

    qemu_io_ok(&url, &["write -P 0x21 0 512k", "flush"]).await;
    // 512 KiB left: a 1 MiB write into unallocated space fails, and so does zeroing unallocated space.
    qemu_io_fails(&url, &["write -P 0x22 4M 1M"], "write", NO_SPACE, 1).await;
    qemu_io_fails(&url, &["write -z 6M 1M"], "write", NO_SPACE, 1).await;
    // The export still serves: the acknowledged data reads back, and allocated blocks can be overwritten.
    qemu_io_ok(&url, &["read -P 0x21 0 512k", "write -P 0x23 0 64k", "read -P 0x23 0 64k", "read -P 0 7M 1M"]).await;

    std::fs::remove_file(&ballast).expect("free space");
    qemu_io_ok(&url, &["write -P 0x22 4M 1M", "write -z 6M 256k", "flush"]).await;
    qemu_io_ok(&url, &["read -P 0x23 0 64k", "read -P 0x21 64k 448k", "read -P 0x22 4M 1M", "read -P 0 6M 2M"]).await;
    let b = std::fs::read(&backing).expect("read backing file");
    assert_eq!(b.len(), 8 * MIB, "the export never grows or shrinks the backing file");
    assert_range(&b, 0, 64 * 1024, 0x23);
    assert_range(&b, 64 * 1024, 448 * 1024, 0x21);
    assert_range(&b, 512 * 1024, 3584 * 1024, 0);
    assert_range(&b, 4 * MIB, MIB, 0x22);
    assert_range(&b, 5 * MIB, 3 * MIB, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_the_primary_fails_the_write_with_enospc_and_the_link_stays_up() {
    if !have_qemu() {
        return;
    }
    let Some(fs) = tmpfs(2 * MIB) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let a = fs.sparse_file("a.img", 8 * MIB as u64);
    let ballast = fs.ballast("ballast", MIB);
    let b = sparse(dir.path(), "b.img", 8 * MIB);
    let link = Link::up(dir.path(), "a-full", open(&a), open(&b), None).await;

    qemu_io_ok(&link.url(), &["write -P 0x21 0 512k", "flush"]).await;
    assert_identical(&a, &b, "before the disk filled");
    qemu_io_fails(&link.url(), &["write -P 0x22 4M 1M"], "write", NO_SPACE, 1).await;
    // The peer is healthy: it stays connected and applied the write the primary could not hold. The range is dirty
    // (the copies may differ there) and the client knows the write failed, so its contents are unspecified.
    assert_eq!(link.primary.state(), ReplicationState::Connected);
    assert_eq!(link.gate.calls(), 0, "the peer was not lost: nothing to gate");
    assert_eq!(link.primary.dirty().ranges(), vec![(4 * MIB as u64, MIB as u64)]);
    assert_range(&std::fs::read(&b).expect("read B"), 4 * MIB, MIB, 0x22);
    qemu_io_ok(&link.url(), &["read -P 0x21 0 512k", "write -P 0x23 0 64k", "flush"]).await;

    std::fs::remove_file(&ballast).expect("free space");
    qemu_io_ok(&link.url(), &["write -P 0x22 4M 1M", "flush", "read -P 0x22 4M 1M"]).await;
    assert_eq!(link.primary.state(), ReplicationState::Connected);
    assert_identical(&a, &b, "after the failed range was written again");
    let stats = link.close().await;
    assert_eq!(stats.failed, 0, "nothing failed on the secondary");
    let a = std::fs::read(&a).expect("read A");
    assert_range(&a, 0, 64 * 1024, 0x23);
    assert_range(&a, 64 * 1024, 448 * 1024, 0x21);
}

/// Metadata for A and B that says "in sync" (same generation, both UpToDate), as after an initial sync — without
/// running one, which would allocate the whole sparse file B and leave nothing to fill.
fn in_sync_metas(dir: &Path, size: usize) -> (PathBuf, PathBuf, u64) {
    let (pa, pb) = (dir.join("a.meta"), dir.join("b.meta"));
    let mut ma = Meta::create(&pa, size as u64, "node-a", DEFAULT_GRANULARITY).expect("meta A");
    let mut mb = Meta::create(&pb, size as u64, "node-b", DEFAULT_GRANULARITY).expect("meta B");
    let g = ma.superblock().current;
    ma.update(|sb| sb.disk = DiskState::UpToDate).expect("A UpToDate");
    mb.update(|sb| {
        sb.disk = DiskState::UpToDate;
        sb.current = g;
    })
    .expect("B UpToDate at A's generation");
    (pa, pb, g)
}

fn shared(path: &Path) -> SharedMeta {
    SharedMeta::new(Meta::open(path).expect("open meta"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_on_the_secondary_detaches_it_the_write_succeeds_and_the_next_link_resyncs() {
    if !have_qemu() {
        return;
    }
    let Some(fs) = tmpfs(2 * MIB) else { return };
    let dir = tempfile::tempdir().expect("tempdir");
    let a = sparse(dir.path(), "a.img", 8 * MIB);
    let b = fs.sparse_file("b.img", 8 * MIB as u64);
    let ballast = fs.ballast("ballast", MIB);
    let (pa, pb, g0) = in_sync_metas(dir.path(), 8 * MIB);
    let link = Link::up(dir.path(), "b-full", open(&a), open(&b), Some((shared(&pa), shared(&pb)))).await;
    assert_eq!(link.primary.resync_progress().decision, Some(Decision::InSync));

    qemu_io_ok(&link.url(), &["write -P 0x21 0 512k", "flush"]).await;
    assert_identical(&a, &b, "before the secondary's disk filled");
    // B has 512 KiB left: the secondary fails the write (ENOSPC), the primary detaches it and acknowledges.
    qemu_io_ok(&link.url(), &["write -P 0x22 4M 1M"]).await;
    let (code, reason) = link.degraded_code();
    assert_eq!(code, "TDM-MIR-035", "{reason}");
    assert!(reason.contains("errno 28") && reason.contains("TDM-MIR-007"), "the peer's ENOSPC is named: {reason}");
    assert_eq!(link.gate.calls(), 1, "the peer was marked outdated before the write was acknowledged");
    // Degraded writes go on; everything is on A and in A's persistent bitmap.
    qemu_io_ok(&link.url(), &["write -P 0x23 6M 64k", "flush", "read -P 0x21 0 512k", "read -P 0x22 4M 1M"]).await;
    assert_eq!(link.gate.calls(), 1);
    let mib = MIB as u64;
    assert_eq!(link.primary.dirty().ranges(), vec![(4 * mib, mib), (6 * mib, K64)]);
    let gate_generation = link.gate.generation.load(Ordering::SeqCst);
    let e = link.close_failed().await;
    assert_eq!(e.code(), "TDM-MIR-007", "B's link ends with its ENOSPC: {e}");
    assert_eq!(Meta::open(&pb).expect("meta B").superblock().disk, DiskState::Outdated, "a failed disk is Outdated");
    let sb = Meta::open(&pa).expect("meta A").superblock().clone();
    assert_ne!(sb.current, g0, "A started a new generation when it lost B");
    assert_eq!(sb.current, gate_generation, "B was marked outdated as of A's new generation");
    assert_eq!((sb.history[0], sb.bitmap_uuid), (g0, g0));
    assert_eq!(Meta::open(&pa).expect("meta A").dirty_ranges(), vec![(4 * mib, mib), (6 * mib, K64)]);
    let bytes_b = std::fs::read(&b).expect("read B");
    assert_range(&bytes_b, 0, 512 * 1024, 0x21);
    assert_range(&bytes_b, 6 * MIB, 64 * 1024, 0);

    // Space freed on B; the next link copies exactly the bitmap's chunks and B catches up.
    std::fs::remove_file(&ballast).expect("free space");
    let link = Link::up(dir.path(), "b-back", open(&a), open(&b), Some((shared(&pa), shared(&pb)))).await;
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    assert_eq!((done.decision, done.phase), (Some(Decision::SourceBitmap), ResyncPhase::Done));
    assert_eq!(done.total_bytes, mib + K64, "only the dirty chunks");
    assert_eq!(link.primary.state(), ReplicationState::Connected);
    let stats = link.close().await;
    assert_eq!((stats.failed, stats.resync_completed), (0, true));
    assert_identical(&a, &b, "after the resync");
    let (ma, mb) = (Meta::open(&pa).expect("meta A"), Meta::open(&pb).expect("meta B"));
    assert_eq!((ma.dirty_bytes(), mb.superblock().disk), (0, DiskState::UpToDate));
    assert_eq!(ma.superblock().current, mb.superblock().current);
}

// ---- injected I/O errors --------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_eio_under_a_plain_export_fails_only_the_hit_requests() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = file_of(dir.path(), "disk.img", 8 * MIB, 0x11);
    let store = FaultStore::new(open(&backing));
    let export = Exported::new(dir.path(), "eio", Arc::clone(&store) as Arc<dyn BlockStore>);
    let url = export.url();

    qemu_io_ok(&url, &["write -P 0x21 0 1M", "flush"]).await;
    store.inject(Fault::errno(EIO).on(&[OpKind::Read]).range(MIB as u64, K64));
    store.inject(Fault::errno(EIO).on(&[OpKind::Write]).range(2 * MIB as u64, K64));
    qemu_io_fails(&url, &["read -P 0x11 1M 4k"], "read", IO_ERROR, 1).await;
    qemu_io_fails(&url, &["write -P 0x22 2M 64k"], "write", IO_ERROR, 1).await;
    qemu_io_fails(&url, &["write -z 2032k 32k"], "write", IO_ERROR, 1).await;
    // Other ranges are served; a failed write touched nothing.
    qemu_io_ok(&url, &["read -P 0x21 0 1M", "read -P 0x11 1088k 64k", "write -P 0x24 3M 64k", "flush"]).await;
    assert_eq!(store.injected(), 3);
    let bytes = std::fs::read(&backing).expect("read backing file");
    assert_range(&bytes, 0, MIB, 0x21);
    assert_range(&bytes, 2 * MIB - 16 * 1024, 80 * 1024, 0x11);
    assert_range(&bytes, 3 * MIB, 64 * 1024, 0x24);

    // A failing fdatasync fails the FLUSH with EIO; the next one succeeds.
    store.inject(Fault::errno(EIO).on(&[OpKind::Flush]).times(1));
    qemu_io_flush_fails(&url, &["write -P 0x25 4M 4k", "flush"]).await;
    assert_eq!(store.injected(), 4, "the FLUSH reached the store and failed there");
    qemu_io_ok(&url, &["write -P 0x26 4M 4k", "flush"]).await;
    assert_eq!(store.injected(), 4);

    // After N operations: the fourth write fails, the writes around it land.
    store.clear();
    store.inject(Fault::errno(EIO).on(&[OpKind::Write]).after(3).times(1));
    let writes: Vec<String> = (0..6).map(|i| format!("write -P {:#04x} {}k 4k", 0x31 + i, 5 * 1024 + i * 4)).collect();
    let cmds: Vec<&str> = writes.iter().map(String::as_str).collect();
    let out = qemu_io_fails(&url, &cmds, "write", IO_ERROR, 1).await;
    assert_eq!(out.matches("wrote 4096/4096").count(), 5, "{out}");
    let bytes = std::fs::read(&backing).expect("read backing file");
    for i in 0..6usize {
        let expected = if i == 3 { 0x11 } else { 0x31 + i as u8 };
        assert_range(&bytes, 5 * MIB + i * 4096, 4096, expected);
    }

    store.clear();
    qemu_io_ok(&url, &["read -P 0x11 1M 4k", "write -P 0x22 2M 64k", "read -P 0x22 2M 64k"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_eio_on_the_primary_fails_the_request_and_the_link_stays_up() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let a = file_of(dir.path(), "a.img", 4 * MIB, 0x11);
    let b = file_of(dir.path(), "b.img", 4 * MIB, 0x11);
    let store_a = FaultStore::new(open(&a));
    let link = Link::up(dir.path(), "a-eio", Arc::clone(&store_a) as Arc<dyn BlockStore>, open(&b), None).await;

    qemu_io_ok(&link.url(), &["write -P 0x21 0 1M", "flush"]).await;
    store_a.inject(Fault::errno(EIO).on(&[OpKind::Write]).range(2 * MIB as u64, K64));
    store_a.inject(Fault::errno(EIO).on(&[OpKind::Read]).range(0, K64));
    qemu_io_fails(&link.url(), &["write -P 0x22 2M 64k"], "write", IO_ERROR, 1).await;
    qemu_io_fails(&link.url(), &["read -P 0x21 0 4k"], "read", IO_ERROR, 1).await;
    qemu_io_ok(&link.url(), &["read -P 0x21 64k 960k", "write -P 0x23 3M 64k", "flush"]).await;
    assert_eq!(link.primary.state(), ReplicationState::Connected, "a local failure does not drop the peer");
    assert_eq!(link.gate.calls(), 0);
    assert_eq!(link.primary.dirty().ranges(), vec![(2 * MIB as u64, K64)], "the failed range may differ");
    let (bytes_a, bytes_b) = (std::fs::read(&a).expect("read A"), std::fs::read(&b).expect("read B"));
    assert_range(&bytes_a, 2 * MIB, 64 * 1024, 0x11);
    assert_range(&bytes_b, 2 * MIB, 64 * 1024, 0x22);
    assert!(bytes_a[..2 * MIB] == bytes_b[..2 * MIB] && bytes_a[3 * MIB..] == bytes_b[3 * MIB..]);

    // The local fdatasync fails: the FLUSH fails with EIO even though the peer's flush succeeded.
    store_a.inject(Fault::errno(EIO).on(&[OpKind::Flush]).times(1));
    qemu_io_flush_fails(&link.url(), &["write -P 0x24 3M 4k", "flush"]).await;
    assert_eq!(store_a.injected(), 3, "the FLUSH failed on A's store");
    assert_eq!(link.primary.state(), ReplicationState::Connected);

    store_a.clear();
    qemu_io_ok(&link.url(), &["write -P 0x22 2M 64k", "read -P 0x21 0 4k", "flush"]).await;
    assert_identical(&a, &b, "after the failed range was written again");
    assert_eq!(link.close().await.failed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_eio_on_the_secondary_detaches_it_without_losing_acknowledged_writes() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let a = file_of(dir.path(), "a.img", 4 * MIB, 0x11);
    let b = file_of(dir.path(), "b.img", 4 * MIB, 0x11);
    let store_b = FaultStore::new(open(&b));
    let link = Link::up(dir.path(), "b-eio", open(&a), Arc::clone(&store_b) as Arc<dyn BlockStore>, None).await;

    qemu_io_ok(&link.url(), &["write -P 0x21 0 1M", "flush"]).await;
    store_b.inject(Fault::errno(EIO).on(&[OpKind::Write]).range(2 * MIB as u64, K64));
    qemu_io_ok(&link.url(), &["write -P 0x22 2M 64k"]).await;
    assert_eq!(store_b.injected(), 1);
    let (code, reason) = link.degraded_code();
    assert_eq!(code, "TDM-MIR-035", "{reason}");
    assert!(reason.contains("errno 5") && reason.contains("TDM-MIR-006"), "the peer's EIO is named: {reason}");
    assert_eq!(link.gate.calls(), 1);
    qemu_io_ok(&link.url(), &["read -P 0x21 0 1M", "read -P 0x22 2M 64k", "write -P 0x23 3M 4k", "flush"]).await;
    assert_eq!(link.primary.dirty().ranges(), vec![(2 * MIB as u64, K64), (3 * MIB as u64, K64)]);
    assert_eq!(link.close_failed().await.code(), "TDM-MIR-006", "B's link ends with its EIO");
    let (bytes_a, bytes_b) = (std::fs::read(&a).expect("read A"), std::fs::read(&b).expect("read B"));
    assert!(bytes_a[..2 * MIB] == bytes_b[..2 * MIB], "every write acknowledged while connected is on both");
    assert_range(&bytes_a, 2 * MIB, 64 * 1024, 0x22);
    assert_range(&bytes_b, 2 * MIB, 64 * 1024, 0x11);
    assert_range(&bytes_a, 3 * MIB, 4096, 0x23);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_flush_on_the_secondary_marks_every_write_since_its_last_flush_dirty() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let a = file_of(dir.path(), "a.img", 4 * MIB, 0x11);
    let b = file_of(dir.path(), "b.img", 4 * MIB, 0x11);
    let store_b = FaultStore::new(open(&b));
    let link = Link::up(dir.path(), "b-sync", open(&a), Arc::clone(&store_b) as Arc<dyn BlockStore>, None).await;
    qemu_io_ok(&link.url(), &["write -P 0x21 0 64k", "flush"]).await;
    // Acknowledged by B (in its page cache), then B's fdatasync fails: those bytes may never reach B's disk.
    // (Writeback cache: qemu-io's default, writethrough, sends every write with FUA, durable on B by itself.)
    store_b.inject(Fault::errno(EIO).on(&[OpKind::Flush]));
    let (ok, text) = qemu_io_with(&["-t", "writeback"], &link.url(), &["write -P 0x22 1M 64k", "flush"]).await;
    assert!(ok && !text.contains("failed"), "the flush is acknowledged degraded: {text}");
    assert_eq!(link.degraded_code().0, "TDM-MIR-035");
    let dirty = link.primary.dirty();
    assert!(dirty.is_dirty(MIB as u64), "the write B could not make durable must be resynced: {:?}", dirty.ranges());
    assert!(!dirty.is_dirty(0), "a write B flushed before is not dirty: {:?}", dirty.ranges());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_errno_without_a_kind_and_a_kind_without_an_errno_both_reach_the_client() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = file_of(dir.path(), "disk.img", MIB, 0);
    let store = FaultStore::new(open(&backing));
    let export = Exported::new(dir.path(), "kinds", Arc::clone(&store) as Arc<dyn BlockStore>);
    store.inject(Fault::errno(ENOSPC).on(&[OpKind::Write]).range(0, 4096));
    store.inject(Fault::kind(std::io::ErrorKind::StorageFull).on(&[OpKind::Write]).range(8192, 4096));
    store.inject(Fault::kind(std::io::ErrorKind::TimedOut).on(&[OpKind::Write]).range(16384, 4096));
    qemu_io_fails(&export.url(), &["write 0 4k"], "write", NO_SPACE, 1).await;
    qemu_io_fails(&export.url(), &["write 8k 4k"], "write", NO_SPACE, 1).await;
    qemu_io_fails(&export.url(), &["write 16k 4k"], "write", IO_ERROR, 1).await;
    qemu_io_ok(&export.url(), &["write -P 0x41 4k 4k", "read -P 0x41 4k 4k"]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_chunk_on_the_sync_source_is_skipped_the_rest_is_sent_and_the_target_stays_inconsistent() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let a = file_of(dir.path(), "a.img", 4 * MIB, 0x5a);
    let b = file_of(dir.path(), "b.img", 4 * MIB, 0x11);
    let (pa, pb) = (dir.path().join("a.meta"), dir.path().join("b.meta"));
    Meta::create(&pa, 4 * MIB as u64, "node-a", DEFAULT_GRANULARITY).expect("meta A");
    Meta::create(&pb, 4 * MIB as u64, "node-b", DEFAULT_GRANULARITY).expect("meta B");
    let store_a = FaultStore::new(open(&a));
    store_a.inject(Fault::errno(EIO).on(&[OpKind::Read]).range(2 * MIB as u64, 4096));
    let a_store = Arc::clone(&store_a) as Arc<dyn BlockStore>;
    let link = Link::up(dir.path(), "src-eio", a_store, open(&b), Some((shared(&pa), shared(&pb)))).await;
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    assert_eq!(done.decision, Some(Decision::SourceFull));
    let ResyncPhase::Aborted(reason) = &done.phase else { panic!("the resync must not complete: {done:?}") };
    assert!(reason.contains("TDM-MIR-006"), "the local read error is named: {reason}");
    assert!(reason.starts_with("1 resync piece"), "the count of failed pieces is named: {reason}");
    assert_eq!(done.failed_pieces, 1);
    // Only the unreadable 1 MiB piece was skipped: the pieces after it were sent too.
    assert_eq!((done.total_bytes, done.done_bytes), (4 * MIB as u64, 3 * MIB as u64));
    let bytes_b = std::fs::read(&b).expect("read B");
    assert_range(&bytes_b, 0, 2 * MIB, 0x5a);
    assert_range(&bytes_b, 2 * MIB, MIB, 0x11);
    assert_range(&bytes_b, 3 * MIB, MIB, 0x5a);
    // The link itself is fine: application I/O goes on, replicated; only the bad range fails for the client.
    assert_eq!(link.primary.state(), ReplicationState::Connected);
    qemu_io_fails(&link.url(), &["read -P 0x5a 2M 4k"], "read", IO_ERROR, 1).await;
    qemu_io_ok(&link.url(), &["read -P 0x5a 0 2M", "write -P 0x21 3M 64k", "flush"]).await;
    assert_range(&std::fs::read(&b).expect("read B"), 3 * MIB, 64 * 1024, 0x21);
    let stats = link.close().await;
    assert!(!stats.resync_completed, "no SYNC_DONE was sent");
    assert_eq!(Meta::open(&pb).expect("meta B").superblock().disk, DiskState::Inconsistent, "never promotable");
    assert_eq!(Meta::open(&pa).expect("meta A").dirty_bytes(), 4 * MIB as u64, "nothing confirmed, nothing cleared");

    // The sector is readable again (rewritten or remapped): the next link completes the sync.
    store_a.clear();
    let a_store = Arc::clone(&store_a) as Arc<dyn BlockStore>;
    let link = Link::up(dir.path(), "src-ok", a_store, open(&b), Some((shared(&pa), shared(&pb)))).await;
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    assert_eq!((done.decision, done.phase, done.failed_pieces), (Some(Decision::SourceFull), ResyncPhase::Done, 0));
    assert!(link.close().await.resync_completed);
    assert_identical(&a, &b, "after the second sync");
    assert_eq!(Meta::open(&pb).expect("meta B").superblock().disk, DiskState::UpToDate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_write_on_the_secondary_outdates_it_before_the_error_reply_and_the_next_link_resyncs_it() {
    if !have_qemu() {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let a = file_of(dir.path(), "a.img", 4 * MIB, 0x11);
    let b = file_of(dir.path(), "b.img", 4 * MIB, 0x11);
    let (pa, pb, g0) = in_sync_metas(dir.path(), 4 * MIB);
    let store_b = FaultStore::new(open(&b));
    let b_store = Arc::clone(&store_b) as Arc<dyn BlockStore>;
    let link = Link::up(dir.path(), "b-out", open(&a), b_store, Some((shared(&pa), shared(&pb)))).await;
    assert_eq!(link.primary.resync_progress().decision, Some(Decision::InSync));
    assert_eq!(Meta::open(&pb).expect("meta B").superblock().disk, DiskState::UpToDate);
    link.gate.probe(&pb);
    store_b.inject(Fault::errno(EIO).on(&[OpKind::Write]).range(MIB as u64, K64));
    qemu_io_ok(&link.url(), &["write -P 0x21 0 64k", "write -P 0x22 1M 64k", "write -P 0x23 2M 64k"]).await;
    assert_eq!(link.degraded_code().0, "TDM-MIR-035");
    assert_eq!(link.gate.probed(), Some(DiskState::Outdated), "B was Outdated on disk before its error reply");
    let e = link.close_failed().await;
    assert_eq!(e.code(), "TDM-MIR-006", "the secondary ends with its store's error: {e}");
    assert_eq!(store_b.injected(), 1, "B applied nothing after the failed write");
    let sb = Meta::open(&pb).expect("meta B").superblock().clone();
    assert_eq!((sb.disk, sb.current), (DiskState::Outdated, g0), "B stays at the old generation, Outdated");
    assert_range(&std::fs::read(&b).expect("read B"), 2 * MIB, 64 * 1024, 0x11);

    // B's disk is fixed: the next link resyncs the bitmap's chunks and B turns UpToDate.
    store_b.clear();
    let b_store = Arc::clone(&store_b) as Arc<dyn BlockStore>;
    let link = Link::up(dir.path(), "b-fixed", open(&a), b_store, Some((shared(&pa), shared(&pb)))).await;
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    assert_eq!((done.decision, done.phase), (Some(Decision::SourceBitmap), ResyncPhase::Done));
    let stats = link.close().await;
    assert!(stats.resync_completed);
    assert_identical(&a, &b, "after the resync");
    let (ma, mb) = (Meta::open(&pa).expect("meta A"), Meta::open(&pb).expect("meta B"));
    assert_eq!((ma.dirty_bytes(), mb.superblock().disk), (0, DiskState::UpToDate));
    assert_eq!(ma.superblock().current, mb.superblock().current);
}
