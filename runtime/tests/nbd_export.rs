//! The mirror's NBD export against real NBD clients (`qemu-io`, `qemu-img`) and a raw client for malformed
//! requests. The export runs in-process, on a Unix socket in a tempdir and on 127.0.0.1:0; the backing file's bytes
//! are then checked directly.

#[path = "support/qemu.rs"]
mod qemu;
use qemu::{assert_range, have_qemu, qemu_io, qemu_io_ok, qemu_io_with};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tandem_runtime::mirror::nbd::proto::{
    self, CMD_DISC, CMD_FLUSH, CMD_READ, CMD_WRITE, IHAVEOPT, NBD_EINVAL, NBD_ENOSPC, NBD_EPERM, OPT_GO,
    OPTION_REPLY_MAGIC, REP_ACK, REP_INFO, RequestHeader, SIMPLE_REPLY_MAGIC,
};
use tandem_runtime::mirror::nbd::{Export, bind_tcp, bind_unix, serve_tcp, serve_unix};
use tandem_runtime::mirror::store::{BlockStore, FileStore, StoreError, WriteBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

const NAME: &str = "disk0";
const MIB: usize = 1024 * 1024;

/// An export served on both transports; dropping it stops the servers.
struct Served {
    _dir: tempfile::TempDir,
    backing: PathBuf,
    sock: PathBuf,
    tcp: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Served {
    fn unix_url(&self) -> String {
        format!("nbd+unix:///{NAME}?socket={}", self.sock.display())
    }

    fn tcp_url(&self) -> String {
        format!("nbd://{}/{NAME}", self.tcp)
    }

    fn bytes(&self) -> Vec<u8> {
        std::fs::read(&self.backing).expect("read backing file")
    }
}

async fn serve(size: usize, fill: u8, read_only: bool) -> Served {
    serve_with(size, fill, read_only, |f| Arc::new(f)).await
}

async fn serve_with(
    size: usize,
    fill: u8,
    read_only: bool,
    wrap: impl FnOnce(FileStore) -> Arc<dyn BlockStore>,
) -> Served {
    let dir = tempfile::tempdir().expect("tempdir");
    let backing = dir.path().join("backing.img");
    std::fs::write(&backing, vec![fill; size]).expect("create backing file");
    let store = wrap(FileStore::open(&backing).expect("open store"));
    let export = Arc::new(Export::new(NAME, store).read_only(read_only));
    let sock = dir.path().join("nbd.sock");
    let unix = bind_unix(&sock).expect("bind unix");
    let tcp = bind_tcp("127.0.0.1:0".parse().expect("addr")).await.expect("bind tcp");
    let tcp_addr = tcp.local_addr().expect("local addr");
    let tasks = vec![tokio::spawn(serve_unix(unix, Arc::clone(&export))), tokio::spawn(serve_tcp(tcp, export))];
    Served { _dir: dir, backing, sock, tcp: tcp_addr, tasks }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_img_info_reports_the_export_size() {
    if !have_qemu() {
        return;
    }
    let s = serve(8 * MIB, 0, false).await;
    for url in [s.unix_url(), s.tcp_url()] {
        let out = tokio::process::Command::new("qemu-img")
            .args(["info", "--output=json", &url])
            .output()
            .await
            .expect("run qemu-img");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "qemu-img info failed: {text}{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(&format!("\"virtual-size\": {}", 8 * MIB)), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_writes_reach_the_backing_file_over_unix_socket() {
    if !have_qemu() {
        return;
    }
    let s = serve(8 * MIB, 0x11, false).await;
    qemu_io_ok(
        &s.unix_url(),
        &[
            "write -P 0xab 0 1M",
            "read -P 0xab 0 1M",
            "write -P 0xcd 3000001 12345",
            "read -P 0xcd 3000001 12345",
            "write -f -P 0xef 5M 64k",
            "flush",
            "write -z 2M 100000",
            "read -P 0 2M 100000",
            "discard 6M 1M",
            "write -P 0x77 8388096 512",
            "read -P 0x77 8388096 512",
        ],
    )
    .await;
    let b = s.bytes();
    assert_eq!(b.len(), 8 * MIB, "the export never changes the backing file's size");
    assert_range(&b, 0, MIB, 0xab);
    assert_range(&b, MIB, MIB, 0x11);
    assert_range(&b, 3_000_000, 1, 0x11);
    assert_range(&b, 3_000_001, 12345, 0xcd);
    assert_range(&b, 3_000_001 + 12345, 1, 0x11);
    assert_range(&b, 5 * MIB, 64 * 1024, 0xef);
    assert_range(&b, 2 * MIB, 100_000, 0);
    assert_range(&b, 2 * MIB + 100_000, 1, 0x11);
    assert_range(&b, 8 * MIB - 512, 512, 0x77);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_reads_and_writes_over_loopback_tcp() {
    if !have_qemu() {
        return;
    }
    let s = serve(4 * MIB, 0, false).await;
    qemu_io_ok(&s.tcp_url(), &["write -P 0x5a 1 4194302", "read -P 0x5a 1 4194302", "read -P 0 0 1", "flush"]).await;
    let b = s.bytes();
    assert_eq!((b[0], b[1], b[4 * MIB - 2], b[4 * MIB - 1]), (0, 0x5a, 0x5a, 0));
    let (ok, text) = qemu_io(&s.tcp_url(), &["read -P 0x5b 1 512"]).await;
    assert!(!ok && text.contains("Pattern verification failed"), "a wrong pattern must be detected: {text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_aio_writes_then_flush_all_land() {
    if !have_qemu() {
        return;
    }
    let s = serve(16 * MIB, 0, false).await;
    let mut cmds: Vec<String> = (0..16).map(|i| format!("aio_write -P {} {}M 1M", i + 1, i)).collect();
    cmds.push("aio_flush".into());
    cmds.push("flush".into());
    cmds.extend((0..16).map(|i| format!("aio_read -P {} {}M 1M", i + 1, i)));
    cmds.push("aio_flush".into());
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let out = qemu_io_ok(&s.unix_url(), &refs).await;
    assert_eq!(out.matches("wrote 1048576/1048576").count(), 16, "{out}");
    let b = s.bytes();
    for i in 0..16 {
        assert_range(&b, i * MIB, MIB, i as u8 + 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_export_refuses_writes() {
    if !have_qemu() {
        return;
    }
    let s = serve(MIB, 0x22, true).await;
    let (ok, text) = qemu_io_with(&["-r"], &s.unix_url(), &["read -P 0x22 0 4k"]).await;
    assert!(ok, "{text}");
    let (ok, text) = qemu_io_with(&["-r"], &s.unix_url(), &["write -P 1 0 4k"]).await;
    assert!(!ok, "qemu-io must refuse to write to a read-only open: {text}");
    let (ok, text) = qemu_io(&s.unix_url(), &["write -P 1 0 4k"]).await;
    assert!(!ok, "a write to a read-only export must fail: {text}");
    assert_range(&s.bytes(), 0, MIB, 0x22);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_export_name_is_refused() {
    if !have_qemu() {
        return;
    }
    let s = serve(MIB, 0, false).await;
    let url = format!("nbd+unix:///other?socket={}", s.sock.display());
    let out = tokio::process::Command::new("qemu-img").args(["info", &url]).output().await.expect("qemu-img");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("TDM-NBD-012"), "{:?}", out);
}

// ---- raw client ---------------------------------------------------------------------------------------------

/// Connect over TCP and negotiate with NBD_OPT_GO; returns the stream in transmission phase and the export size.
async fn raw_connect(addr: SocketAddr) -> (TcpStream, u64) {
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let mut greeting = [0u8; proto::GREETING_LEN];
    c.read_exact(&mut greeting).await.expect("greeting");
    assert_eq!(&greeting[..8], b"NBDMAGIC");
    c.write_all(&3u32.to_be_bytes()).await.expect("client flags");
    let mut data = (NAME.len() as u32).to_be_bytes().to_vec();
    data.extend_from_slice(NAME.as_bytes());
    data.extend_from_slice(&0u16.to_be_bytes());
    let mut opt = IHAVEOPT.to_be_bytes().to_vec();
    opt.extend_from_slice(&OPT_GO.to_be_bytes());
    opt.extend_from_slice(&(data.len() as u32).to_be_bytes());
    opt.extend_from_slice(&data);
    c.write_all(&opt).await.expect("send GO");
    let mut size = None;
    loop {
        let mut head = [0u8; 20];
        c.read_exact(&mut head).await.expect("option reply");
        assert_eq!(u64::from_be_bytes(head[..8].try_into().expect("8")), OPTION_REPLY_MAGIC);
        let kind = u32::from_be_bytes(head[12..16].try_into().expect("4"));
        let len = u32::from_be_bytes(head[16..20].try_into().expect("4")) as usize;
        let mut body = vec![0u8; len];
        c.read_exact(&mut body).await.expect("option reply data");
        match kind {
            REP_INFO if body[..2] == [0, 0] => size = Some(u64::from_be_bytes(body[2..10].try_into().expect("8"))),
            REP_INFO => {}
            REP_ACK => break,
            other => panic!("unexpected option reply {other:#x}"),
        }
    }
    (c, size.expect("NBD_INFO_EXPORT"))
}

async fn send_request(c: &mut TcpStream, kind: u16, cookie: u64, offset: u64, length: u32) {
    let h = RequestHeader { flags: 0, kind, cookie, offset, length };
    c.write_all(&h.encode()).await.expect("send request");
}

/// Read one simple reply: (error, cookie).
async fn read_reply(c: &mut TcpStream) -> (u32, u64) {
    let mut r = [0u8; proto::SIMPLE_REPLY_LEN];
    c.read_exact(&mut r).await.expect("reply");
    assert_eq!(u32::from_be_bytes(r[..4].try_into().expect("4")), SIMPLE_REPLY_MAGIC);
    (u32::from_be_bytes(r[4..8].try_into().expect("4")), u64::from_be_bytes(r[8..16].try_into().expect("8")))
}

async fn assert_closed(c: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(std::time::Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("server closes within 10 s");
    assert!(matches!(n, Ok(0) | Err(_)), "expected the connection closed, got {n:?} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_gets_error_replies_and_the_connection_continues() {
    let s = serve(MIB, 0x33, false).await;
    let (mut c, size) = raw_connect(s.tcp).await;
    assert_eq!(size, MIB as u64);

    send_request(&mut c, CMD_READ, 1, size - 1, 2).await;
    assert_eq!(read_reply(&mut c).await, (NBD_EINVAL, 1), "read past the end");
    send_request(&mut c, 42, 2, 0, 0).await;
    assert_eq!(read_reply(&mut c).await, (NBD_EINVAL, 2), "unknown command");
    send_request(&mut c, CMD_WRITE, 3, size, 4).await;
    c.write_all(&[9, 9, 9, 9]).await.expect("payload");
    assert_eq!(read_reply(&mut c).await, (NBD_ENOSPC, 3), "write past the end; its payload is skipped");
    send_request(&mut c, CMD_READ, 4, 0, u32::MAX).await;
    assert_eq!(read_reply(&mut c).await, (NBD_EINVAL, 4), "read over the maximum payload");

    // Still in step: a valid write, flush and read.
    send_request(&mut c, CMD_WRITE, 5, 10, 3).await;
    c.write_all(&[1, 2, 3]).await.expect("payload");
    assert_eq!(read_reply(&mut c).await, (0, 5));
    send_request(&mut c, CMD_FLUSH, 6, 0, 0).await;
    assert_eq!(read_reply(&mut c).await, (0, 6));
    send_request(&mut c, CMD_READ, 7, 9, 5).await;
    assert_eq!(read_reply(&mut c).await, (0, 7));
    let mut data = [0u8; 5];
    c.read_exact(&mut data).await.expect("read data");
    assert_eq!(data, [0x33, 1, 2, 3, 0x33]);

    send_request(&mut c, CMD_DISC, 8, 0, 0).await;
    assert_closed(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_bad_magic_or_oversized_write_closes_only_that_connection() {
    let s = serve(MIB, 0, false).await;

    let (mut bad_magic, _) = raw_connect(s.tcp).await;
    let mut h = RequestHeader { flags: 0, kind: CMD_READ, cookie: 1, offset: 0, length: 1 }.encode();
    h[0] ^= 0xff;
    bad_magic.write_all(&h).await.expect("send");
    assert_closed(&mut bad_magic).await;

    let (mut oversized, _) = raw_connect(s.tcp).await;
    send_request(&mut oversized, CMD_WRITE, 1, 0, proto::MAX_PAYLOAD + 1).await;
    assert_closed(&mut oversized).await;

    // Other connections are served.
    let (mut good, _) = raw_connect(s.tcp).await;
    send_request(&mut good, CMD_READ, 9, 0, 4).await;
    assert_eq!(read_reply(&mut good).await, (0, 9));
    if have_qemu() {
        qemu_io_ok(&s.unix_url(), &["write -P 0x44 0 4k", "read -P 0x44 0 4k"]).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_client_write_on_read_only_export_gets_eperm() {
    let s = serve(MIB, 0, true).await;
    let (mut c, _) = raw_connect(s.tcp).await;
    send_request(&mut c, CMD_WRITE, 1, 0, 2).await;
    c.write_all(&[1, 2]).await.expect("payload");
    assert_eq!(read_reply(&mut c).await, (NBD_EPERM, 1));
    send_request(&mut c, CMD_READ, 2, 0, 2).await;
    assert_eq!(read_reply(&mut c).await, (0, 2));
}

/// A store whose writes take a while (simulated device latency), recording how many writes had completed when
/// each flush began.
struct SlowWrites {
    inner: FileStore,
    done: AtomicUsize,
    flushes: Mutex<Vec<usize>>,
}

#[async_trait::async_trait]
impl BlockStore for SlowWrites {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        self.inner.read_at(offset, len).await
    }
    async fn write_at(&self, offset: u64, data: WriteBuf, fua: bool) -> Result<(), StoreError> {
        tokio::time::sleep(Duration::from_millis(1 + offset % 7)).await;
        self.inner.write_at(offset, data, fua).await?;
        self.done.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.flushes.lock().expect("lock").push(self.done.load(Ordering::SeqCst));
        self.inner.flush().await
    }
    async fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        self.inner.trim(offset, len).await
    }
    async fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), StoreError> {
        self.inner.write_zeroes(offset, len, fua).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_writes_are_all_answered_and_flush_covers_them() {
    let slow = Arc::new(std::sync::OnceLock::<Arc<SlowWrites>>::new());
    let slot = Arc::clone(&slow);
    let s = serve_with(4 * MIB, 0, false, move |f| {
        let store = Arc::new(SlowWrites { inner: f, done: AtomicUsize::new(0), flushes: Mutex::new(Vec::new()) });
        let _ = slot.set(Arc::clone(&store));
        store
    })
    .await;
    let (mut c, _) = raw_connect(s.tcp).await;
    let n = 200u64;
    let mut batch = Vec::new();
    for i in 0..n {
        let h = RequestHeader { flags: 0, kind: CMD_WRITE, cookie: i, offset: i * 4096, length: 4096 };
        batch.extend_from_slice(&h.encode());
        batch.extend_from_slice(&[(i % 251) as u8 + 1; 4096]);
    }
    batch.extend_from_slice(&RequestHeader { flags: 0, kind: CMD_FLUSH, cookie: n, offset: 0, length: 0 }.encode());
    let (mut rd, mut wr) = c.split();
    let send = async { wr.write_all(&batch).await.expect("send batch") };
    let recv = async {
        let mut seen = std::collections::HashSet::new();
        let mut flush_seen_after_all = false;
        for _ in 0..=n {
            let mut r = [0u8; proto::SIMPLE_REPLY_LEN];
            rd.read_exact(&mut r).await.expect("reply");
            assert_eq!(u32::from_be_bytes(r[4..8].try_into().expect("4")), 0);
            let cookie = u64::from_be_bytes(r[8..16].try_into().expect("8"));
            if cookie == n {
                flush_seen_after_all = seen.len() == n as usize;
            }
            assert!(seen.insert(cookie), "duplicate reply {cookie}");
        }
        assert!(flush_seen_after_all, "FLUSH must be answered after every write received before it");
    };
    tokio::join!(send, recv);
    let flushes = slow.get().expect("store").flushes.lock().expect("lock").clone();
    assert_eq!(flushes, vec![n as usize], "the FLUSH began after every write received before it had completed");
    let b = s.bytes();
    for i in 0..n as usize {
        assert_range(&b, i * 4096, 4096, (i % 251) as u8 + 1);
    }
}

/// Throughput next to `qemu-nbd` on the same kind of backing file, with `qemu-img bench`. Prints figures, asserts
/// only that both complete: run with `cargo test -p tandem-runtime --test nbd_export -- --ignored --nocapture`
/// (a debug build is slower than a release build).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run by hand"]
async fn bench_qemu_img_against_qemu_nbd() {
    if !have_qemu() {
        return;
    }
    let ours = serve(64 * MIB, 0, false).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let image = dir.path().join("qemu.img");
    std::fs::write(&image, vec![0u8; 64 * MIB]).expect("image");
    let sock = dir.path().join("qemu.sock");
    let mut qemu_nbd = tokio::process::Command::new("qemu-nbd")
        .args(["-f", "raw", "-x", NAME, "-t", "-e", "8", "-k"])
        .arg(&sock)
        .arg(&image)
        .kill_on_drop(true)
        .spawn()
        .expect("start qemu-nbd");
    // qemu-nbd gives no readiness signal but its socket: poll for it (bounded).
    for _ in 0..100 {
        if tokio::net::UnixStream::connect(&sock).await.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let theirs = format!("nbd+unix:///{NAME}?socket={}", sock.display());
    let workloads: [(&str, &[&str]); 4] = [
        ("write 4k qd16", &["-w", "-c", "20000", "-d", "16", "-s", "4k"]),
        ("read 4k qd16", &["-c", "20000", "-d", "16", "-s", "4k"]),
        ("write 1M qd4", &["-w", "-c", "500", "-d", "4", "-s", "1M"]),
        ("write 64k qd8 flush/16", &["-w", "-c", "4000", "-d", "8", "-s", "64k", "--flush-interval", "16"]),
    ];
    for (label, args) in workloads {
        for (who, url) in [("tandem", ours.unix_url()), ("qemu-nbd", theirs.clone())] {
            let out = tokio::process::Command::new("qemu-img")
                .args(["bench", "-f", "raw"])
                .args(args)
                .arg(&url)
                .output()
                .await
                .expect("qemu-img bench");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(out.status.success(), "{who} {label}: {text}{}", String::from_utf8_lossy(&out.stderr));
            let secs = text.lines().find(|l| l.starts_with("Run completed")).unwrap_or("?");
            println!("{label:>24} {who:>9}: {secs}");
        }
    }
    let _ = qemu_nbd.kill().await;
}
