//! The mirror_disk group resource end to end: two resources in one process are two "nodes", each with its own
//! data and metadata files under a tempdir and a loopback mirror-connect port; real `qemu-io` talks to the
//! active node's NBD export socket. After each client run the data files are compared byte for byte.

#[path = "support/ocf.rs"]
mod ocf;
#[path = "support/qemu.rs"]
mod qemu;

use ocf::conformance;
use qemu::{assert_range, have_qemu, qemu_io_ok};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tandem_runtime::config::MirrorDisk;
use tandem_runtime::mirror::generations::{Decision, GenState};
use tandem_runtime::mirror::meta::{DEFAULT_GRANULARITY, DiskState, Meta, Role};
use tandem_runtime::mirror::outdated::promotion_check;
use tandem_runtime::mirror::replication::{PeerLossGate, ReplicationState};
use tandem_runtime::resources::mirror_disk::{MirrorDiskResource, MirrorEnv, PromotionGuard};
use tandem_runtime::resources::{ErrorClass, GroupResource, Invocation, Probe, ResourceContext, ResourceError};
use tokio::sync::watch;

const NAME: &str = "disk0";
const MIB: usize = 1024 * 1024;
const SIZE: usize = 4 * MIB;
const LIMIT: Duration = Duration::from_secs(60);
const INV: Invocation = Invocation { lease_token: Some(7) };

/// The peer-loss gate: counts its calls, always succeeds.
struct Gate {
    calls: watch::Sender<usize>,
}

impl Gate {
    fn new() -> Arc<Gate> {
        Arc::new(Gate { calls: watch::Sender::new(0) })
    }

    fn calls(&self) -> usize {
        *self.calls.borrow()
    }
}

#[async_trait::async_trait]
impl PeerLossGate for Gate {
    async fn mark_peer_outdated(&self, _generation: u64) -> Result<(), String> {
        self.calls.send_modify(|n| *n += 1);
        Ok(())
    }
}

fn allow_all() -> Arc<dyn PromotionGuard> {
    Arc::new(|_: &GenState| Ok(()))
}

/// The daemon's rule without a lease record: Inconsistent or Outdated replicas are refused.
fn up_to_date_only(node: &'static str) -> Arc<dyn PromotionGuard> {
    Arc::new(move |local: &GenState| {
        promotion_check(None, NAME, node, local)
            .map_err(|e| ResourceError::new(ErrorClass::Hard, e.code(), e.to_string()))
    })
}

/// A free loopback port (bound and released: the resource binds it again).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr")
}

struct Pair {
    dir: tempfile::TempDir,
    addr_a: SocketAddr,
    addr_b: SocketAddr,
    gate_a: Arc<Gate>,
    gate_b: Arc<Gate>,
}

impl Pair {
    fn new() -> Pair {
        let dir = tempfile::tempdir().expect("tempdir");
        for n in ["a", "b"] {
            std::fs::write(dir.path().join(format!("{n}.img")), vec![0u8; SIZE]).expect("create data file");
        }
        Pair { dir, addr_a: free_addr(), addr_b: free_addr(), gate_a: Gate::new(), gate_b: Gate::new() }
    }

    fn data(&self, n: &str) -> PathBuf {
        self.dir.path().join(format!("{n}.img"))
    }

    fn read(&self, n: &str) -> Vec<u8> {
        std::fs::read(self.data(n)).expect("read data file")
    }

    fn node(&self, n: &str, guard: Arc<dyn PromotionGuard>, attach: bool) -> MirrorDiskResource {
        let (me, peer, peer_name, gate) = match n {
            "a" => (self.addr_a, self.addr_b, "node-b", &self.gate_a),
            _ => (self.addr_b, self.addr_a, "node-a", &self.gate_b),
        };
        let dir = self.dir.path();
        let config = MirrorDisk::new(
            &self.data(n).display().to_string(),
            &dir.join(format!("{n}.meta")).display().to_string(),
            "/mnt/data",
        );
        let cx = ResourceContext {
            cluster: "c".into(),
            group: "g".into(),
            node: format!("node-{n}"),
            state_dir: dir.join(format!("state-{n}")),
        };
        let mut env = MirrorEnv::new(me, peer, peer_name, None, guard, Arc::clone(gate) as Arc<dyn PeerLossGate>);
        env.attach = attach;
        env.reconnect_interval = Duration::from_millis(50);
        env.fresh_wait = Duration::from_secs(1);
        MirrorDiskResource::new(NAME, &config, &cx, env)
    }

    /// Node n's metadata as after an earlier completed sync: UpToDate, with a history (not fresh).
    fn synced_before(&self, n: &str) {
        let path = self.dir.path().join(format!("{n}.meta"));
        let mut meta = Meta::create(&path, SIZE as u64, &format!("node-{n}"), DEFAULT_GRANULARITY).expect("create");
        meta.update(|sb| {
            sb.disk = DiskState::UpToDate;
            sb.history[0] = 0x5eed;
        })
        .expect("update");
    }

    fn assert_identical(&self, when: &str) {
        let (a, b) = (self.read("a"), self.read("b"));
        assert_eq!(a.len(), b.len());
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
            panic!("{when}: A and B differ first at byte {i}: {:#04x} vs {:#04x}", a[i], b[i]);
        }
    }
}

fn url(r: &MirrorDiskResource) -> String {
    format!("nbd+unix:///{NAME}?socket={}", r.socket_path().display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_the_peer_takes_over_with_the_same_bytes() {
    if !have_qemu() {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let pair = Pair::new();
        let a = pair.node("a", allow_all(), false);
        let b = pair.node("b", up_to_date_only("node-b"), false);
        a.prepare().await.expect("prepare A");
        b.prepare().await.expect("prepare B");
        let fresh = a.mirror_status().await.expect("A status");
        assert_eq!((fresh.disk, fresh.role, fresh.serving), (DiskState::Inconsistent, Role::Secondary, false));

        a.start(&INV).await.expect("start A");
        a.wait_connected().await;
        let first = a.wait_resync().await.expect("A is the primary");
        assert_eq!(first.decision, Some(Decision::SourceFull), "a fresh pair's first link is a full sync");
        qemu_io_ok(&url(&a), &["write -P 0xab 0 1M", "write -P 0xcd 2M 512k", "flush"]).await;
        pair.assert_identical("after writes through A");
        assert_range(&pair.read("b"), 0, MIB, 0xab);
        assert_range(&pair.read("b"), 2 * MIB, MIB / 2, 0xcd);
        let st = a.mirror_status().await.expect("A status");
        assert_eq!((st.role, st.disk, st.serving), (Role::Primary, DiskState::UpToDate, true));
        assert_eq!(st.replication, Some(ReplicationState::Connected));
        assert_eq!(b.mirror_status().await.expect("B status").disk, DiskState::UpToDate);

        a.stop(&INV).await.expect("stop A");
        assert_eq!(a.probe(&INV).await, Ok(Probe::Stopped));
        assert!(!a.socket_path().exists(), "A's export socket is gone");
        assert_eq!(a.mirror_status().await.expect("A status").role, Role::Secondary);

        b.start(&INV).await.expect("promote B");
        assert_eq!(b.probe(&INV).await, Ok(Probe::Running));
        b.wait_connected().await;
        let back = b.wait_resync().await.expect("B is the primary");
        assert_eq!(back.decision, Some(Decision::InSync));
        qemu_io_ok(&url(&b), &["read -P 0xab 0 1M", "read -P 0xcd 2M 512k", "read -P 0 1M 1M"]).await;
        qemu_io_ok(&url(&b), &["write -P 0x5e 3M 64k", "flush"]).await;
        pair.assert_identical("after writes through B");
        assert_range(&pair.read("a"), 3 * MIB, 64 * 1024, 0x5e);
        assert_eq!((pair.gate_a.calls(), pair.gate_b.calls()), (0, 0), "the peer was never lost");
        b.stop(&INV).await.expect("stop B");
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_secondary_is_resynced_from_the_bitmap_when_it_returns() {
    if !have_qemu() {
        return;
    }
    tokio::time::timeout(LIMIT, async {
        let pair = Pair::new();
        let a = pair.node("a", allow_all(), false);
        let b = pair.node("b", allow_all(), false);
        a.prepare().await.expect("prepare A");
        b.prepare().await.expect("prepare B");
        a.start(&INV).await.expect("start A");
        a.wait_connected().await;
        a.wait_resync().await.expect("A is the primary");
        qemu_io_ok(&url(&a), &["write -P 0x11 0 512k"]).await;
        pair.assert_identical("while connected");

        drop(b);
        a.wait_degraded().await;
        qemu_io_ok(&url(&a), &["write -P 0x77 1M 256k", "write -P 0x78 3M 64k", "flush"]).await;
        assert_eq!(pair.gate_a.calls(), 1, "the gate runs once, before the first degraded write");
        assert_range(&pair.read("a"), MIB, 256 * 1024, 0x77);
        assert_range(&pair.read("b"), MIB, 256 * 1024, 0);
        let st = a.mirror_status().await.expect("A status");
        assert!(matches!(st.replication, Some(ReplicationState::Degraded { .. })), "{st:?}");
        assert!(st.dirty_bytes > 0 && st.dirty_bytes < SIZE as u64, "{st:?}");
        assert_eq!(a.probe(&INV).await, Ok(Probe::Running), "degraded is still running");

        let b = pair.node("b", allow_all(), false);
        b.prepare().await.expect("prepare B again");
        a.wait_connected().await;
        let resync = a.wait_resync().await.expect("A is the primary");
        assert_eq!(resync.decision, Some(Decision::SourceBitmap));
        assert!(resync.total_bytes < SIZE as u64, "a bitmap resync, not a full one: {resync:?}");
        pair.assert_identical("after the bitmap resync");
        qemu_io_ok(&url(&a), &["write -P 0x99 2M 64k"]).await;
        pair.assert_identical("connected again");
        assert_eq!(pair.gate_a.calls(), 1);
        a.stop(&INV).await.expect("stop A");
        drop(b);
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_promotion_fails_the_start_with_its_code_and_serves_nothing() {
    tokio::time::timeout(LIMIT, async {
        let pair = Pair::new();
        // A fresh replica is Inconsistent: the daemon's rule refuses it.
        let a = pair.node("a", up_to_date_only("node-a"), false);
        a.prepare().await.expect("prepare A");
        let Err(e) = a.start(&INV).await else { panic!("an Inconsistent replica must not be promoted") };
        assert_eq!((e.class(), e.code()), (ErrorClass::Hard, "TDM-MIR-061"), "{e}");
        assert_eq!(a.probe(&INV).await, Ok(Probe::Stopped));
        assert!(!a.socket_path().exists(), "no export socket");
        let st = a.mirror_status().await.expect("A status");
        assert_eq!((st.serving, st.role), (false, Role::Secondary));
        // Still a usable secondary: its service accepts the peer's link.
        tokio::net::TcpStream::connect(pair.addr_a).await.expect("the secondary service listens again");
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn it_follows_the_ocf_sequence_without_its_peer() {
    tokio::time::timeout(LIMIT, async {
        let pair = Pair::new();
        pair.synced_before("a");
        let a = pair.node("a", allow_all(), false);
        // No prepare: start opens what it needs; no peer: the primary (synced before) starts degraded.
        conformance(&a, &INV).await;
        assert_eq!(a.probe(&INV).await, Ok(Probe::Stopped), "probe after the second stop");
        assert_eq!(a.start(&INV).await, Ok(()), "start again");
        assert_eq!(a.probe(&INV).await, Ok(Probe::Running));
        assert!(a.socket_path().exists());
        let st = a.mirror_status().await.expect("A status");
        assert!(matches!(st.replication, Some(ReplicationState::Degraded { .. })), "{st:?}");
        assert_eq!(a.stop(&INV).await, Ok(()));
        assert_eq!((a.name(), a.kind()), (NAME, "mirror_disk"));
    })
    .await
    .expect("within the time limit");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_replica_is_never_promoted_alone() {
    let pair = Pair::new();
    let a = pair.node("a", allow_all(), false);
    let Err(e) = a.start(&INV).await else { panic!("a fresh replica started without its peer") };
    assert_eq!((e.class(), e.code()), (ErrorClass::Soft, "TDM-MDK-006"), "{e}");
    assert!(!a.socket_path().exists(), "nothing is served");
    let st = a.mirror_status().await.expect("A status");
    assert_eq!((st.disk, st.role), (DiskState::Inconsistent, Role::Secondary), "{st:?}");
    // With its fresh peer up, the same start makes it the full-sync source.
    let b = pair.node("b", allow_all(), false);
    b.prepare().await.expect("B's secondary service");
    a.start(&INV).await.expect("promoted through the link");
    let progress = a.wait_resync().await.expect("A is the primary");
    assert_eq!((progress.decision, progress.total_bytes), (Some(Decision::SourceFull), SIZE as u64));
    a.stop(&INV).await.expect("stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_attach_fails_the_start_and_serves_nothing() {
    if tandem_runtime::mirror::attach::kernel_nbd_available().is_ok() {
        eprintln!("SKIP: this machine has kernel NBD; runtime/tests/nbd_attach.rs attaches for real");
        return;
    }
    let pair = Pair::new();
    let b = pair.node("b", allow_all(), false);
    b.prepare().await.expect("B's secondary service");
    let a = pair.node("a", allow_all(), true);
    let Err(e) = a.start(&INV).await else { panic!("there is no kernel NBD to attach to here") };
    assert_eq!((e.class(), e.code()), (ErrorClass::Hard, "TDM-MDK-002"), "{e}");
    assert!(e.message.contains("TDM-ATT-001"), "the reason names the missing nbd family: {e}");
    assert_eq!(a.probe(&INV).await, Ok(Probe::Stopped));
    assert!(!a.socket_path().exists(), "the export is not served after a failed attach");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_not_created_over_a_data_device_that_holds_data() {
    let pair = Pair::new();
    std::fs::write(pair.data("a"), vec![0x42u8; SIZE]).expect("fill A");
    let a = pair.node("a", allow_all(), false);
    let Err(e) = a.prepare().await else { panic!("a non-fresh data device must not get new metadata") };
    assert_eq!(e.code(), "TDM-MDK-001", "{e}");
    assert!(!Path::new(&pair.dir.path().join("a.meta")).exists(), "no metadata written");
    // A fresh one gets metadata, once: a second resource on the same files opens it.
    let b = pair.node("b", allow_all(), false);
    b.prepare().await.expect("prepare B");
    let generation = b.mirror_status().await.expect("B status").generation;
    drop(b);
    let b = pair.node("b", allow_all(), false);
    tokio::time::timeout(LIMIT, async {
        loop {
            match b.prepare().await {
                Ok(()) => break,
                // The dropped resource's listener may still be closing.
                Err(e) if e.code() == "TDM-MDK-003" => tokio::task::yield_now().await,
                Err(e) => panic!("prepare B again: {e}"),
            }
        }
    })
    .await
    .expect("within the time limit");
    assert_eq!(b.mirror_status().await.expect("B status").generation, generation, "the metadata was reopened");
}
