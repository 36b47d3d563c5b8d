//! Attaching the mirror's NBD export to the kernel (`mirror::attach`).
//!
//! - The handshake client against our real export server on a Unix socket: the socket it returns is in the
//!   transmission phase (what the kernel gets).
//! - Generic netlink family resolution on this kernel: `nlctrl` resolves; an absent family is a clear error within
//!   bounded time, not a hang.
//! - The file-system layer (probe, mkfs, mount, busy unmount, remount) on a loop device, where loop devices and
//!   root exist.
//! - The whole path (attach → mkfs → mount → write → unmount → detach → re-attach → the file is there) where the
//!   kernel has NBD; elsewhere it prints why and returns.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_runtime::mirror::attach::{
    self, AttachError, FsType, MountSpec, client, fs,
    genl::NETLINK_TIMEOUT,
    netlink::{GENL_ID_CTRL, NBD_GENL_FAMILY_NAME},
};
use tandem_runtime::mirror::nbd::proto::{
    CMD_READ, CMD_WRITE, RequestHeader, SIMPLE_REPLY_MAGIC, TFLAG_HAS_FLAGS, TFLAG_READ_ONLY,
};
use tandem_runtime::mirror::nbd::{Export, bind_unix, serve_unix};
use tandem_runtime::mirror::store::FileStore;
use tokio::task::JoinHandle;

const NAME: &str = "data";

struct Served {
    dir: tempfile::TempDir,
    backing: PathBuf,
    sock: PathBuf,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn serve(size: usize, fill: u8, read_only: bool) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = dir.path().join("backing.img");
    std::fs::write(&backing, vec![fill; size]).expect("backing file");
    let store = Arc::new(FileStore::open(&backing).expect("store"));
    let export = Arc::new(Export::new(NAME, store).read_only(read_only));
    let sock = dir.path().join("nbd.sock");
    let listener = bind_unix(&sock).expect("bind");
    let task = tokio::spawn(serve_unix(listener, export));
    Served { dir, backing, sock, task }
}

/// One simple-reply request on a blocking stream: returns the reply's error and the READ data.
fn request(stream: &mut std::os::unix::net::UnixStream, h: RequestHeader, payload: &[u8]) -> (u32, Vec<u8>) {
    stream.write_all(&h.encode()).expect("send request");
    stream.write_all(payload).expect("send payload");
    let mut reply = [0u8; 16];
    stream.read_exact(&mut reply).expect("reply");
    assert_eq!(u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]), SIMPLE_REPLY_MAGIC);
    assert_eq!(&reply[8..16], &h.cookie.to_be_bytes());
    let error = u32::from_be_bytes([reply[4], reply[5], reply[6], reply[7]]);
    let mut data = vec![0u8; if h.kind == CMD_READ && error == 0 { h.length as usize } else { 0 }];
    stream.read_exact(&mut data).expect("read data");
    (error, data)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_client_leaves_a_blocking_socket_in_transmission() {
    let served = serve(256 * 1024, 0x5a, false);
    let (mut stream, info) = client::connect_export(&served.sock, NAME).await.expect("handshake");
    assert_eq!(info.size, 256 * 1024);
    assert_ne!(info.flags & TFLAG_HAS_FLAGS, 0);
    assert_eq!(info.flags & TFLAG_READ_ONLY, 0);
    let backing = served.backing.clone();
    tokio::task::spawn_blocking(move || {
        // The kernel gets a blocking socket: a read with nothing to read would block, not fail with EAGAIN.
        // (A non-blocking one would fail at once.)
        stream.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
        let started = Instant::now();
        let e = stream.read(&mut [0u8; 1]).expect_err("nothing to read yet");
        assert!(matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{e}");
        assert!(started.elapsed() >= Duration::from_millis(150), "the socket is non-blocking");
        stream.set_read_timeout(None).expect("no timeout");

        let read = RequestHeader { flags: 0, kind: CMD_READ, cookie: 1, offset: 4096, length: 512 };
        let (error, data) = request(&mut stream, read, &[]);
        assert_eq!(error, 0);
        assert!(data.iter().all(|b| *b == 0x5a));
        let write = RequestHeader { flags: 0, kind: CMD_WRITE, cookie: 2, offset: 0, length: 4 };
        assert_eq!(request(&mut stream, write, b"tdm!").0, 0);
        assert_eq!(&std::fs::read(&backing).expect("backing")[..4], b"tdm!");
    })
    .await
    .expect("blocking client");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshake_client_reads_read_only_and_refuses_unknown_names() {
    let served = serve(64 * 1024, 0, true);
    let (_s, info) = client::connect_export(&served.sock, "").await.expect("default export");
    assert_ne!(info.flags & TFLAG_READ_ONLY, 0);
    let e = client::connect_export(&served.sock, "other").await.expect_err("unknown export");
    assert_eq!(e.code(), "TDM-ATT-009", "{e}");
    let e = client::connect_export(&served.dir.path().join("missing.sock"), NAME).await.expect_err("no socket");
    assert_eq!(e.code(), "TDM-ATT-007", "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_refuses_an_export_smaller_than_a_block_before_touching_the_kernel() {
    let served = serve(1024, 0, false);
    let spec = MountSpec::new(served.dir.path().join("mnt"), FsType::Ext4);
    let e = attach::attach(&served.sock, NAME, &spec).await.expect_err("too small");
    assert_eq!(e.code(), "TDM-ATT-020", "{e}");
}

#[test]
fn generic_netlink_family_resolution_answers_and_an_absent_family_is_a_clear_error() {
    let ctrl = match attach::resolve_family("nlctrl") {
        Ok(id) => id,
        Err(e @ AttachError::NetlinkIo { .. }) => {
            eprintln!("SKIP: no generic netlink socket here: {e}");
            return;
        }
        Err(e) => panic!("resolving nlctrl: {e}"),
    };
    assert_eq!(ctrl, GENL_ID_CTRL);

    let started = Instant::now();
    let e = attach::resolve_family("tandem-no-such").expect_err("absent family");
    assert_eq!(e.code(), "TDM-ATT-001", "{e}");
    assert!(started.elapsed() < NETLINK_TIMEOUT, "answered, not timed out");

    let started = Instant::now();
    match attach::resolve_family(NBD_GENL_FAMILY_NAME) {
        Ok(id) => {
            eprintln!("this kernel has the nbd family (id {id})");
            assert!(id > GENL_ID_CTRL);
            assert!(attach::kernel_nbd_available().is_ok());
        }
        Err(e) => {
            assert_eq!(e.code(), "TDM-ATT-001", "{e}");
            let why = attach::kernel_nbd_available().expect_err("no nbd");
            assert!(why.contains("\"nbd\""), "{why}");
            eprintln!("kernel NBD unavailable: {why}");
        }
    }
    assert!(started.elapsed() < NETLINK_TIMEOUT + Duration::from_secs(5), "nbd resolution hung");
}

/// A loop device over an image file; detached (and unmounted) on drop.
struct Loop {
    device: PathBuf,
    mount_point: PathBuf,
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = lazy_unmount(&self.mount_point);
        let _ = std::process::Command::new("losetup").arg("-d").arg(&self.device).status();
    }
}

fn lazy_unmount(mp: &Path) -> std::io::Result<()> {
    std::process::Command::new("umount").arg("-l").arg(mp).output().map(|_| ())
}

fn loop_device(image: &Path, mount_point: &Path) -> Option<Loop> {
    let out = std::process::Command::new("losetup").args(["-f", "--show"]).arg(image).output().ok()?;
    if !out.status.success() {
        eprintln!("SKIP: losetup failed: {}", String::from_utf8_lossy(&out.stderr).trim());
        return None;
    }
    let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Some(Loop { device, mount_point: mount_point.to_path_buf() })
}

fn have(tool: &str) -> bool {
    std::process::Command::new(tool).arg("-V").output().is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_system_layer_formats_once_mounts_and_refuses_a_busy_unmount() {
    if !have("mkfs.ext4") || !have("losetup") {
        eprintln!("SKIP: mkfs.ext4 or losetup missing (apt-get install e2fsprogs mount)");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("disk.img");
    std::fs::File::create(&image).and_then(|f| f.set_len(32 << 20)).expect("image");
    let mnt = dir.path().join("mnt");
    let Some(lo) = loop_device(&image, &mnt) else { return };
    let spec = MountSpec::new(&mnt, FsType::Ext4);

    assert_eq!(fs::probe_device(&lo.device).expect("probe"), fs::Probe::Empty);
    assert!(fs::prepare_and_mount(&lo.device, &spec).await.expect("format and mount"), "formatted");
    std::fs::write(mnt.join("hello.txt"), b"kept").expect("write");

    let busy = std::fs::File::open(mnt.join("hello.txt")).expect("hold a file");
    let e = fs::unmount(&mnt).expect_err("busy");
    assert_eq!(e.code(), "TDM-ATT-016");
    assert!(e.to_string().contains(&format!("fuser -vm {}", mnt.display())), "{e}");
    assert!(mnt.join("hello.txt").exists(), "still mounted");
    drop(busy);
    assert!(fs::unmount(&mnt).expect("unmount"));
    assert!(!fs::unmount(&mnt).expect("second unmount is a no-op"));
    assert!(!mnt.join("hello.txt").exists());

    assert_eq!(fs::probe_device(&lo.device).expect("probe"), fs::Probe::Ext);
    let e = fs::prepare_and_mount(&lo.device, &MountSpec::new(&mnt, FsType::Xfs)).await.expect_err("not xfs");
    assert_eq!(e.code(), "TDM-ATT-012");

    assert!(!fs::prepare_and_mount(&lo.device, &spec).await.expect("mount again"), "not formatted twice");
    assert_eq!(std::fs::read(mnt.join("hello.txt")).expect("file survived"), b"kept");
    assert!(fs::unmount(&mnt).expect("unmount"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attach_mount_write_detach_reattach_keeps_the_file() {
    if let Err(why) = attach::kernel_nbd_available() {
        eprintln!("SKIP: kernel NBD unavailable: {why}");
        return;
    }
    if !have("mkfs.ext4") {
        eprintln!("SKIP: mkfs.ext4 missing (apt-get install e2fsprogs)");
        return;
    }
    let served = serve(64 << 20, 0, false);
    let spec = MountSpec::new(served.dir.path().join("mnt"), FsType::Ext4);

    let mut first = attach::attach_and_mount(&served.sock, NAME, &spec).await.expect("attach and mount");
    assert!(first.formatted(), "the empty export was formatted");
    let status = attach::nbd_status(Some(first.index())).await.expect("status");
    assert!(status.iter().any(|d| d.index == first.index() && d.connected), "{status:?}");
    std::fs::write(spec.mount_point.join("hello.txt"), b"over nbd").expect("write");

    let busy = std::fs::File::open(spec.mount_point.join("hello.txt")).expect("hold");
    let e = first.unmount_and_detach().await.expect_err("busy");
    assert_eq!(e.code(), "TDM-ATT-016");
    drop(busy);
    first.unmount_and_detach().await.expect("unmount and detach");
    first.unmount_and_detach().await.expect("idempotent");

    let mut second = attach::attach_and_mount(&served.sock, NAME, &spec).await.expect("re-attach");
    assert!(!second.formatted(), "an existing file system is not formatted again");
    assert_eq!(std::fs::read(spec.mount_point.join("hello.txt")).expect("file"), b"over nbd");
    second.unmount_and_detach().await.expect("stop");
}
