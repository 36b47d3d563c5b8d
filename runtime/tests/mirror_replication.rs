//! Mirror replication end to end with real NBD clients: `qemu-io` talks to the NBD export (in-process, Unix
//! socket) of a `ReplicatedStore` over backing file A, whose peer link is a 127.0.0.1 TCP connection to
//! `serve_secondary` over backing file B. After each client run the two files are compared byte for byte.

#[path = "support/qemu.rs"]
mod qemu;
use qemu::{assert_range, have_qemu, qemu_io_cmd, qemu_io_ok};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tandem_runtime::config::secrets::Secrets;
use tandem_runtime::daemon::peer::PeerTls;
use tandem_runtime::mirror::generations::Decision;
use tandem_runtime::mirror::meta::{DEFAULT_GRANULARITY, DiskState, Meta, SLOT_LEN, SharedMeta, resolve_discard};
use tandem_runtime::mirror::nbd::proto;
use tandem_runtime::mirror::nbd::{Export, bind_unix, serve_unix};
use tandem_runtime::mirror::replication::frame::{self, Frame, HEADER_LEN, Header, Hello};
use tandem_runtime::mirror::replication::{
    DirtyTracker, PeerLossGate, ReplicatedStore, ReplicationConfig, ReplicationError, ReplicationState, Stats,
    accept_tls, connect_tls, serve_secondary,
};
use tandem_runtime::mirror::replication::{ResyncPhase, SecondaryConfig, serve_secondary_meta};
use tandem_runtime::mirror::store::{BlockStore, FileStore, StoreError, WriteBuf};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

const NAME: &str = "disk0";
const MIB: usize = 1024 * 1024;
const K64: u64 = 64 * 1024;
const LIMIT: Duration = Duration::from_secs(30);

/// The gate: counts calls, fails while `open` is false, publishes the call count.
struct Gate {
    open: AtomicBool,
    calls: watch::Sender<usize>,
    successes: AtomicUsize,
}

impl Gate {
    fn new(open: bool) -> Arc<Gate> {
        Arc::new(Gate { open: AtomicBool::new(open), calls: watch::Sender::new(0), successes: AtomicUsize::new(0) })
    }

    fn calls(&self) -> usize {
        *self.calls.borrow()
    }
}

#[async_trait::async_trait]
impl PeerLossGate for Gate {
    async fn mark_peer_outdated(&self, _generation: u64) -> Result<(), String> {
        self.calls.send_modify(|n| *n += 1);
        if self.open.load(Ordering::SeqCst) {
            self.successes.fetch_add(1, Ordering::SeqCst);
            Ok(())
        } else {
            Err("the lease record is unreachable (test)".into())
        }
    }
}

/// Primary (export + ReplicatedStore over A) and secondary (serve_secondary over B), linked over loopback TCP.
struct Mirror {
    _dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    sock: PathBuf,
    primary: Arc<ReplicatedStore>,
    secondary: JoinHandle<Result<Stats, ReplicationError>>,
    export: JoinHandle<()>,
    gate: Arc<Gate>,
}

impl Drop for Mirror {
    fn drop(&mut self) {
        self.export.abort();
        self.secondary.abort();
    }
}

impl Mirror {
    fn url(&self) -> String {
        format!("nbd+unix:///{NAME}?socket={}", self.sock.display())
    }

    fn a(&self) -> Vec<u8> {
        std::fs::read(&self.a).expect("read A")
    }

    fn b(&self) -> Vec<u8> {
        std::fs::read(&self.b).expect("read B")
    }

    fn assert_identical(&self, when: &str) {
        let (a, b) = (self.a(), self.b());
        assert_eq!(a.len(), b.len());
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
            panic!("{when}: A and B differ first at byte {i}: {:#04x} vs {:#04x}", a[i], b[i]);
        }
    }
}

fn backing(dir: &tempfile::TempDir, name: &str, size: usize, fill: u8) -> PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, vec![fill; size]).expect("create backing file");
    path
}

async fn secondary_on(listener: TcpListener, store: Arc<dyn BlockStore>) -> Result<Stats, ReplicationError> {
    let (stream, _) = listener.accept().await.expect("accept");
    stream.set_nodelay(true).expect("nodelay");
    serve_secondary(stream, store).await
}

async fn mirror(size: usize, wrap_b: impl FnOnce(FileStore) -> Arc<dyn BlockStore>, gate: Arc<Gate>) -> Mirror {
    let cfg = ReplicationConfig { node: "node-a".into(), ..ReplicationConfig::default() };
    mirror_with(size, plain, wrap_b, gate, cfg).await
}

async fn mirror_with(
    size: usize,
    wrap_a: impl FnOnce(FileStore) -> Arc<dyn BlockStore>,
    wrap_b: impl FnOnce(FileStore) -> Arc<dyn BlockStore>,
    gate: Arc<Gate>,
    cfg: ReplicationConfig,
) -> Mirror {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = backing(&dir, "a.img", size, 0x11);
    let b = backing(&dir, "b.img", size, 0x11);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let store_b = wrap_b(FileStore::open(&b).expect("open B"));
    let secondary = tokio::spawn(secondary_on(listener, store_b));
    let link = TcpStream::connect(addr).await.expect("connect");
    link.set_nodelay(true).expect("nodelay");
    let local = wrap_a(FileStore::open(&a).expect("open A"));
    let primary = Arc::new(ReplicatedStore::connect(local, link, cfg, gate.clone()).await.expect("link up"));
    let sock = dir.path().join("nbd.sock");
    let export = Arc::new(Export::new(NAME, Arc::clone(&primary) as Arc<dyn BlockStore>));
    let export = tokio::spawn(serve_unix(bind_unix(&sock).expect("bind unix"), export));
    Mirror { _dir: dir, a, b, sock, primary, secondary, export, gate }
}

/// A store in front of a backing file: writes (all, or only those at `delay_at`) first wait `delay`; a write at
/// `trip_at` signals `tripped` and never ends.
struct Wrapped {
    inner: FileStore,
    delay: Duration,
    delay_at: Option<u64>,
    trip_at: Option<u64>,
    tripped: Arc<Notify>,
    writes: AtomicUsize,
}

impl Wrapped {
    fn new(inner: FileStore) -> Self {
        Wrapped {
            inner,
            delay: Duration::ZERO,
            delay_at: None,
            trip_at: None,
            tripped: Arc::new(Notify::new()),
            writes: AtomicUsize::new(0),
        }
    }

    async fn before(&self, offset: u64) {
        if self.trip_at == Some(offset) {
            self.tripped.notify_one();
            std::future::pending::<()>().await;
        }
        if !self.delay.is_zero() && self.delay_at.is_none_or(|at| at == offset) {
            tokio::time::sleep(self.delay).await;
        }
        self.writes.fetch_add(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl BlockStore for Wrapped {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn read_at(&self, offset: u64, len: u32) -> Result<Vec<u8>, StoreError> {
        self.inner.read_at(offset, len).await
    }
    async fn write_at(&self, offset: u64, data: WriteBuf, fua: bool) -> Result<(), StoreError> {
        self.before(offset).await;
        self.inner.write_at(offset, data, fua).await
    }
    async fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().await
    }
    async fn trim(&self, offset: u64, len: u64) -> Result<(), StoreError> {
        self.inner.trim(offset, len).await
    }
    async fn write_zeroes(&self, offset: u64, len: u64, fua: bool) -> Result<(), StoreError> {
        self.before(offset).await;
        self.inner.write_zeroes(offset, len, fua).await
    }
}

fn plain(f: FileStore) -> Arc<dyn BlockStore> {
    Arc::new(f)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qemu_io_writes_land_identically_on_both_nodes() {
    if !have_qemu() {
        return;
    }
    let m = mirror(8 * MIB, plain, Gate::new(true)).await;
    let runs: [&[&str]; 4] = [
        &["write -P 0xab 0 1M", "write -P 0xcd 3000001 12345", "write -f -P 0xef 5M 64k", "flush"],
        &["write -z 2M 100000", "discard 6M 1M", "write -P 0x77 8388096 512", "write -f -z 7M 4k"],
        &[
            "aio_write -P 0x01 1M 256k",
            "aio_write -P 0x02 1280k 256k",
            "aio_write -f -P 0x03 4M 1M",
            "aio_write -P 0x04 7348224 777",
            "aio_flush",
            "flush",
        ],
        &["write -P 0x5a 1 4194302", "read -P 0x5a 1 4194302"],
    ];
    for (i, cmds) in runs.iter().enumerate() {
        qemu_io_ok(&m.url(), cmds).await;
        m.assert_identical(&format!("after run {i}"));
    }
    let b = m.b();
    assert_range(&b, 0, 1, 0xab);
    assert_range(&b, 1, 4_194_302, 0x5a);
    assert_range(&b, 5 * MIB, 64 * 1024, 0xef);
    assert_range(&b, 7 * MIB, 4096, 0);
    assert_range(&b, 7 * MIB + 8192, 777, 0x04);
    assert_range(&b, 8 * MIB - 512, 512, 0x77);
    assert_eq!(m.primary.state(), ReplicationState::Connected);
    assert_eq!(m.gate.calls(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_concurrent_writes_are_applied_in_the_same_order() {
    if !have_qemu() {
        return;
    }
    // A's first write is slow: without the primary's ordering, later overlapping writes would land on A first.
    let slow_a = |f| -> Arc<dyn BlockStore> {
        Arc::new(Wrapped { delay: Duration::from_millis(200), delay_at: Some(0), ..Wrapped::new(f) })
    };
    let m = mirror_with(4 * MIB, slow_a, plain, Gate::new(true), ReplicationConfig::default()).await;
    let mut cmds: Vec<String> = Vec::new();
    for i in 0..24u32 {
        cmds.push(format!("aio_write -P {:#04x} {}k 64k", 0x11 * (i % 15 + 1), (i % 6) * 16));
        cmds.push(format!("aio_write -P {:#04x} {}k 8k", i + 1, 40 + (i % 3) * 4));
    }
    cmds.push("aio_write -z 24k 8k".into());
    cmds.push("aio_flush".into());
    let refs: Vec<&str> = cmds.iter().map(String::as_str).collect();
    qemu_io_ok(&m.url(), &refs).await;
    m.assert_identical("after overlapping writes");
    assert_range(&m.b(), 24 * 1024, 8 * 1024, 0);
}

/// A raw NBD client on the export's Unix socket (NBD_OPT_EXPORT_NAME), for checks between two requests without
/// the flush a client like qemu-io sends when it closes.
async fn nbd_connect(sock: &std::path::Path) -> tokio::net::UnixStream {
    let mut c = tokio::net::UnixStream::connect(sock).await.expect("connect to the export");
    let mut greeting = [0u8; proto::GREETING_LEN];
    c.read_exact(&mut greeting).await.expect("greeting");
    c.write_all(&3u32.to_be_bytes()).await.expect("client flags: fixed newstyle, no zeroes");
    let mut opt = proto::IHAVEOPT.to_be_bytes().to_vec();
    opt.extend_from_slice(&proto::OPT_EXPORT_NAME.to_be_bytes());
    opt.extend_from_slice(&(NAME.len() as u32).to_be_bytes());
    opt.extend_from_slice(NAME.as_bytes());
    c.write_all(&opt).await.expect("export name");
    let mut reply = [0u8; 10];
    c.read_exact(&mut reply).await.expect("size and flags");
    c
}

/// Send one NBD WRITE and wait for its reply; returns the reply's error value.
async fn nbd_write(c: &mut tokio::net::UnixStream, cookie: u64, offset: u64, data: &[u8]) -> u32 {
    let h = proto::RequestHeader { flags: 0, kind: proto::CMD_WRITE, cookie, offset, length: data.len() as u32 };
    c.write_all(&h.encode()).await.expect("request");
    c.write_all(data).await.expect("payload");
    let mut r = [0u8; proto::SIMPLE_REPLY_LEN];
    tokio::time::timeout(LIMIT, c.read_exact(&mut r)).await.expect("reply within 30 s").expect("reply");
    assert_eq!(u64::from_be_bytes(r[8..16].try_into().expect("8")), cookie);
    u32::from_be_bytes(r[4..8].try_into().expect("4"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_c_a_write_returns_only_once_the_secondary_has_it() {
    let slow_b =
        |f| -> Arc<dyn BlockStore> { Arc::new(Wrapped { delay: Duration::from_millis(300), ..Wrapped::new(f) }) };
    let m = mirror(MIB, slow_b, Gate::new(true)).await;
    // Raw client: B is checked right after each reply, before any flush.
    let mut c = nbd_connect(&m.sock).await;
    for (i, pattern) in [0x5c_u8, 0x5d, 0x5e].iter().enumerate() {
        assert_eq!(nbd_write(&mut c, i as u64, i as u64 * K64, &[*pattern; 65536]).await, 0);
        assert_range(&m.b(), i * 64 * 1024, 64 * 1024, *pattern);
    }
    drop(c);
    // And through qemu-io.
    if have_qemu() {
        qemu_io_ok(&m.url(), &["write -P 0x5f 256k 64k"]).await;
        assert_range(&m.b(), 256 * 1024, 64 * 1024, 0x5f);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_killed_mid_stream_writes_complete_degraded_and_dirty() {
    if !have_qemu() {
        return;
    }
    let tripped = Arc::new(Notify::new());
    let trip = Arc::clone(&tripped);
    let m = mirror(
        8 * MIB,
        move |f| Arc::new(Wrapped { trip_at: Some(MIB as u64), tripped: trip, ..Wrapped::new(f) }),
        Gate::new(true),
    )
    .await;
    qemu_io_ok(&m.url(), &["write -P 0x21 0 64k", "write -P 0x22 64k 64k", "flush"]).await;
    m.assert_identical("before the loss");

    let url = m.url();
    let in_flight = tokio::spawn(async move { qemu_io_ok(&url, &["write -P 0x42 1M 64k"]).await });
    tokio::time::timeout(LIMIT, tripped.notified()).await.expect("the secondary received the write at 1M");
    m.secondary.abort();
    tokio::time::timeout(LIMIT, in_flight).await.expect("in-flight write completes").expect("join");
    tokio::time::timeout(LIMIT, m.primary.wait_degraded()).await.expect("degraded");
    qemu_io_ok(&m.url(), &["write -P 0x43 2M 64k", "write -z 3M 128k", "aio_write -P 0x44 4M 64k", "aio_flush"]).await;

    assert_eq!(m.gate.calls(), 1, "the gate ran exactly once");
    let ReplicationState::Degraded { dirty_bytes, .. } = m.primary.state() else { panic!("not degraded") };
    assert_eq!(dirty_bytes, 5 * K64);
    let mib = MIB as u64;
    assert_eq!(m.primary.dirty().ranges(), vec![(mib, K64), (2 * mib, K64), (3 * mib, 2 * K64), (4 * mib, K64)]);
    assert_eq!(DirtyTracker::CHUNK, K64);
    let (a, b) = (m.a(), m.b());
    assert_range(&a, MIB, 64 * 1024, 0x42);
    assert_range(&a, 2 * MIB, 64 * 1024, 0x43);
    assert_range(&a, 3 * MIB, 128 * 1024, 0);
    assert_range(&a, 4 * MIB, 64 * 1024, 0x44);
    assert_range(&b, MIB, 64 * 1024, 0x11);
    assert_range(&b, 2 * MIB, 64 * 1024, 0x11);
    assert!(a[..128 * 1024] == b[..128 * 1024], "writes acked before the loss are on both");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_gate_holds_the_client_write_until_it_succeeds() {
    if !have_qemu() {
        return;
    }
    let cfg = ReplicationConfig { gate_retry: Duration::from_millis(50), ..ReplicationConfig::default() };
    let m = mirror_with(MIB, plain, plain, Gate::new(false), cfg).await;
    m.secondary.abort();
    tokio::time::timeout(LIMIT, m.primary.wait_degraded()).await.expect("degraded");

    let mut client = qemu_io_cmd(&[], &m.url(), &["write -P 0x77 0 4k"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start qemu-io");
    let mut calls = m.gate.calls.subscribe();
    tokio::time::timeout(LIMIT, calls.wait_for(|n| *n >= 3)).await.expect("gate retried").expect("watch");
    assert!(client.try_wait().expect("try_wait").is_none(), "the write was acked while the gate failed");
    assert_range(&m.a(), 0, 4096, 0x77);
    assert_eq!(m.gate.successes.load(Ordering::SeqCst), 0);

    m.gate.open.store(true, Ordering::SeqCst);
    let status = tokio::time::timeout(LIMIT, client.wait()).await.expect("completes once the gate passes");
    assert!(status.expect("qemu-io").success());
    assert_eq!(m.gate.successes.load(Ordering::SeqCst), 1);
    let before = m.gate.calls();
    qemu_io_ok(&m.url(), &["write -P 0x78 4k 4k"]).await;
    assert_eq!(m.gate.calls(), before, "the gate is passed once");
    assert_eq!(m.primary.dirty().ranges(), vec![(0, K64)]);
}

// ---- raw peers -----------------------------------------------------------------------------------------------

/// A raw primary connected to a `serve_secondary` over B: HELLO exchanged.
async fn raw_primary(
    size: u64,
    b_size: usize,
) -> (tempfile::TempDir, PathBuf, TcpStream, JoinHandle<Result<Stats, ReplicationError>>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let b = backing(&dir, "b.img", b_size, 0x66);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = tokio::spawn(secondary_on(listener, Arc::new(FileStore::open(&b).expect("open B"))));
    let mut c = TcpStream::connect(addr).await.expect("connect");
    let hello = Hello { node: "raw".into(), size, uuid: 0, generation: 0, flags: 0 };
    c.write_all(&Frame::Hello(hello).encode()).await.expect("send hello");
    let mut head = [0u8; HEADER_LEN];
    c.read_exact(&mut head).await.expect("hello header");
    let head = Header::decode(&head).expect("valid header");
    let mut payload = vec![0u8; head.len as usize];
    c.read_exact(&mut payload).await.expect("hello payload");
    let Frame::Hello(theirs) = frame::decode_payload(&head, &payload).expect("hello") else { panic!("not HELLO") };
    assert_eq!(theirs.size, b_size as u64);
    (dir, b, c, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_frames_close_the_link_with_their_code_and_leave_b_unchanged() {
    let size = MIB;
    let mut bad_magic = Frame::Write { seq: 1, offset: 0, data: vec![1; 16], fua: false }.encode();
    bad_magic[0] = b'X';
    let mut huge = Header { kind: frame::T_WRITE, len: 12, seq: 1 }.encode().to_vec();
    huge[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    let past_end = Frame::Write { seq: 1, offset: size as u64 - 2, data: vec![1; 4], fua: false }.encode();
    let cases = [(bad_magic, "TDM-MIR-020"), (huge, "TDM-MIR-024"), (past_end, "TDM-MIR-027")];
    for (bytes, code) in cases {
        let (_dir, b, mut c, served) = raw_primary(size as u64, size).await;
        c.write_all(&bytes).await.expect("send");
        let e = tokio::time::timeout(LIMIT, served).await.expect("ends").expect("join").expect_err("refused");
        assert_eq!(e.code(), code, "{e}");
        let mut rest = [0u8; 16];
        let n = tokio::time::timeout(LIMIT, c.read(&mut rest)).await.expect("closed");
        assert!(matches!(n, Ok(0) | Err(_)), "the link is closed: {n:?}");
        assert_range(&std::fs::read(&b).expect("read B"), 0, size, 0x66);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_size_mismatch_is_refused_at_hello_by_both_sides() {
    let dir = tempfile::tempdir().expect("tempdir");
    let a = backing(&dir, "a.img", 4 * MIB, 0);
    let b = backing(&dir, "b.img", 8 * MIB, 0);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let served = tokio::spawn(secondary_on(listener, Arc::new(FileStore::open(&b).expect("open B"))));
    let link = TcpStream::connect(addr).await.expect("connect");
    let local: Arc<dyn BlockStore> = Arc::new(FileStore::open(&a).expect("open A"));
    let gate = Gate::new(true);
    let Err(e) = ReplicatedStore::connect(local, link, ReplicationConfig::default(), gate).await else {
        panic!("a size mismatch must be refused");
    };
    assert_eq!(e.code(), "TDM-MIR-031", "{e}");
    let e = tokio::time::timeout(LIMIT, served).await.expect("ends").expect("join").expect_err("refused");
    assert_eq!(e.code(), "TDM-MIR-031", "{e}");
}

// ---- TLS with cluster certificates ---------------------------------------------------------------------------

/// A cluster CA named `ca` and one certificate per node (its name as subject alternative name, server and client
/// use), as tandem_cluster makes them; files in `dir`.
fn cluster_certs(dir: &std::path::Path, ca: &str, nodes: &[&str]) -> Vec<PeerTls> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
    let ca_params = || {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, ca);
        p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        p
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let ca_cert = ca_params().self_signed(&ca_key).expect("CA certificate");
    let ca_pem = dir.join(format!("{ca}.pem"));
    std::fs::write(&ca_pem, ca_cert.pem()).expect("write CA");
    let issuer = Issuer::new(ca_params(), ca_key);
    nodes
        .iter()
        .map(|node| {
            let key = KeyPair::generate().expect("node key");
            let mut p = CertificateParams::new(vec![node.to_string()]).expect("node params");
            p.distinguished_name.push(DnType::CommonName, *node);
            p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
            let cert = p.signed_by(&key, &issuer).expect("node certificate");
            let (pem, key_file) = (dir.join(format!("{node}.pem")), dir.join(format!("{node}.key")));
            std::fs::write(&pem, cert.pem()).expect("write certificate");
            std::fs::write(&key_file, key.serialize_pem()).expect("write key");
            let secrets = Secrets {
                ca_cert_file: ca_pem.clone(),
                node_cert_file: pem,
                node_key_file: key_file,
                ..Secrets::default()
            };
            PeerTls::load(&secrets).expect("load the node's TLS configuration")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replication_runs_over_tls_with_cluster_certificates_and_refuses_strangers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = cluster_certs(dir.path(), "cluster-ca", &["node-a", "node-b", "node-c"]);
    let strangers = cluster_certs(dir.path(), "other-ca", &["node-x"]);
    let (a_tls, b_tls, c_tls) = (tls[0].clone(), tls[1].clone(), tls[2].clone());
    let a = backing(&dir, "a.img", MIB, 0);
    let b = backing(&dir, "b.img", MIB, 0);

    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = Arc::clone(&b_tls.server);
    let store_b: Arc<dyn BlockStore> = Arc::new(FileStore::open(&b).expect("open B"));
    let secondary = tokio::spawn(async move {
        // First a stranger (refused), then node-c of the same cluster, not the configured peer (refused), then
        // node-a.
        let (tcp, _) = listener.accept().await.expect("accept");
        let refused = accept_tls(tcp, Arc::clone(&server), "node-a").await.err().map(|e| e.code());
        let (tcp, _) = listener.accept().await.expect("accept");
        let foreign = accept_tls(tcp, Arc::clone(&server), "node-a").await.err().map(|e| e.to_string());
        let (tcp, _) = listener.accept().await.expect("accept");
        let tls = accept_tls(tcp, server, "node-a").await.expect("TLS from node-a");
        ((refused, foreign), serve_secondary(tls, store_b).await)
    });

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let stranger = connect_tls(tcp, Arc::clone(&strangers[0].client), "node-b").await;
    assert_eq!(stranger.err().map(|e| e.code()), Some("TDM-MIR-039"), "a certificate of another CA is refused");
    // node-c's certificate is of the cluster CA: the handshake completes on its side, the secondary drops it.
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let other_node = connect_tls(tcp, Arc::clone(&c_tls.client), "node-b").await;
    if let Ok(link) = other_node {
        let cfg = ReplicationConfig { node: "node-c".into(), ..ReplicationConfig::default() };
        let local: Arc<dyn BlockStore> = Arc::new(FileStore::open(&a).expect("open A"));
        let linked = ReplicatedStore::connect(local, link, cfg, Gate::new(true)).await;
        assert!(linked.is_err(), "node-c must not get a replication link to node-b's replica");
    }

    let tcp = TcpStream::connect(addr).await.expect("connect");
    let link = connect_tls(tcp, Arc::clone(&a_tls.client), "node-b").await.expect("TLS to node-b");
    let local: Arc<dyn BlockStore> = Arc::new(FileStore::open(&a).expect("open A"));
    let cfg = ReplicationConfig { node: "node-a".into(), ..ReplicationConfig::default() };
    let primary = ReplicatedStore::connect(local, link, cfg, Gate::new(true)).await.expect("link up");
    primary.write_at(4096, Arc::new(vec![0x3c; 8192]), true).await.expect("replicated write");
    primary.flush().await.expect("flush");
    assert_range(&std::fs::read(&b).expect("read B"), 4096, 8192, 0x3c);
    assert_eq!(primary.state(), ReplicationState::Connected);
    drop(primary);
    let ((refused, foreign), served) = tokio::time::timeout(LIMIT, secondary).await.expect("ends").expect("join");
    assert_eq!(refused, Some("TDM-MIR-039"), "the secondary refused the stranger");
    let foreign = foreign.expect("the secondary refused node-c, a node of the cluster but not its peer");
    assert!(foreign.contains("not node \"node-a\""), "{foreign}");
    let stats = served.expect("clean close");
    assert_eq!((stats.writes, stats.flushes, stats.peer.map(|h| h.node)), (1, 1, Some("node-a".to_string())));
}

// ---- metadata, generations and resync (piece 3) ------------------------------------------------------------------

/// Two nodes' backing files and metadata files in one directory; links are made and torn down per step.
struct MetaPair {
    dir: tempfile::TempDir,
    a: PathBuf,
    b: PathBuf,
    ma: PathBuf,
    mb: PathBuf,
}

/// A primary over A with its NBD export, linked to a secondary over B; both with metadata.
struct MetaLink {
    primary: Arc<ReplicatedStore>,
    secondary: JoinHandle<Result<Stats, ReplicationError>>,
    export: JoinHandle<()>,
    sock: PathBuf,
}

impl MetaLink {
    fn url(&self) -> String {
        format!("nbd+unix:///{NAME}?socket={}", self.sock.display())
    }

    /// Stop the primary cleanly (its activity log is emptied) and return what the secondary applied.
    async fn close(self) -> Result<Stats, ReplicationError> {
        self.end(true).await
    }

    /// Like a crash of the primary: the link goes down, the activity log stays as it is.
    async fn crash(self) -> Result<Stats, ReplicationError> {
        self.end(false).await
    }

    async fn end(self, clean: bool) -> Result<Stats, ReplicationError> {
        self.export.abort();
        let _ = self.export.await;
        if clean {
            self.primary.stop().await.expect("clean stop");
        } else {
            self.primary.shutdown();
        }
        drop(self.primary);
        let joined = tokio::time::timeout(LIMIT, self.secondary).await.expect("secondary ends");
        joined.unwrap_or_else(|e| Err(ReplicationError::Handshake(format!("the secondary task was aborted: {e}"))))
    }
}

fn pattern(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i.wrapping_mul(7) ^ (i >> 12)) as u8).collect()
}

impl MetaPair {
    /// A filled with a pattern, B with 0x11, both metadata fresh.
    fn fresh(size: usize) -> MetaPair {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.img");
        std::fs::write(&a, pattern(size)).expect("write A");
        let b = backing(&dir, "b.img", size, 0x11);
        let (ma, mb) = (dir.path().join("a.meta"), dir.path().join("b.meta"));
        Meta::create(&ma, size as u64, "node-a", DEFAULT_GRANULARITY).expect("meta A");
        Meta::create(&mb, size as u64, "node-b", DEFAULT_GRANULARITY).expect("meta B");
        MetaPair { dir, a, b, ma, mb }
    }

    fn meta_a(&self) -> Meta {
        Meta::open(&self.ma).expect("open meta A")
    }

    fn meta_b(&self) -> Meta {
        Meta::open(&self.mb).expect("open meta B")
    }

    fn files(&self) -> (Vec<u8>, Vec<u8>) {
        (std::fs::read(&self.a).expect("read A"), std::fs::read(&self.b).expect("read B"))
    }

    fn assert_identical(&self, when: &str) {
        let (a, b) = self.files();
        if let Some(i) = a.iter().zip(&b).position(|(x, y)| x != y) {
            panic!("{when}: A and B differ first at byte {i}: {:#04x} vs {:#04x}", a[i], b[i]);
        }
    }

    /// Link A (primary, exported) to B (secondary) with the metadata on disk now.
    async fn link(&self) -> Result<MetaLink, (ReplicationError, Result<Stats, ReplicationError>)> {
        self.link_with(plain).await
    }

    /// [`Self::link`] with B's store wrapped.
    async fn link_with(
        &self,
        wrap_b: impl FnOnce(FileStore) -> Arc<dyn BlockStore>,
    ) -> Result<MetaLink, (ReplicationError, Result<Stats, ReplicationError>)> {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let store_b = wrap_b(FileStore::open(&self.b).expect("open B"));
        let mb = SharedMeta::new(self.meta_b());
        let secondary = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.expect("accept");
            let cfg = SecondaryConfig { node: "node-b".into(), ..SecondaryConfig::default() };
            serve_secondary_meta(stream, store_b, cfg, mb).await
        });
        let link = TcpStream::connect(addr).await.expect("connect");
        let local = Arc::new(FileStore::open(&self.a).expect("open A")) as Arc<dyn BlockStore>;
        let cfg = ReplicationConfig { node: "node-a".into(), ..ReplicationConfig::default() };
        let ma = SharedMeta::new(self.meta_a());
        let primary = match ReplicatedStore::connect_with_meta(local, link, cfg, Gate::new(true), ma).await {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let s = tokio::time::timeout(LIMIT, secondary).await.expect("secondary ends").expect("join");
                return Err((e, s));
            }
        };
        let sock = self.dir.path().join(format!("nbd-{}.sock", addr.port()));
        let export = Arc::new(Export::new(NAME, Arc::clone(&primary) as Arc<dyn BlockStore>));
        let export = tokio::spawn(serve_unix(bind_unix(&sock).expect("bind unix"), export));
        Ok(MetaLink { primary, secondary, export, sock })
    }

    /// Link, wait for the resync and close: a pair that is in sync.
    async fn synced(size: usize) -> MetaPair {
        let pair = MetaPair::fresh(size);
        let link = pair.link().await.map_err(|(e, _)| e).expect("link up");
        let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
        assert_eq!(done.phase, ResyncPhase::Done);
        link.close().await.expect("secondary");
        pair.assert_identical("after the initial sync");
        pair
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_start_runs_a_full_initial_sync_with_progress() {
    if !have_qemu() {
        return;
    }
    const SIZE: usize = 8 * MIB;
    let pair = MetaPair::fresh(SIZE);
    let link = pair.link().await.map_err(|(e, _)| e).expect("link up");
    // An application write while the initial sync runs goes through the same ordered path.
    qemu_io_ok(&link.url(), &["write -P 0x5a 3m 128k"]).await;
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    let stats = link.close().await;
    assert_eq!(done.phase, ResyncPhase::Done, "secondary: {stats:?}");
    let stats = stats.expect("secondary");
    assert_eq!(done.decision, Some(Decision::SourceFull));
    assert_eq!((done.total_bytes, done.done_bytes, done.percent()), (SIZE as u64, SIZE as u64, 100));
    assert!(done.bytes_per_sec > 0);
    assert_eq!(stats.decision, Some(Decision::TargetFull));
    assert!(stats.resync_completed);
    pair.assert_identical("after the full sync");
    assert_range(&pair.files().1, 3 * MIB, 128 * 1024, 0x5a);
    let (a, b) = (pair.meta_a(), pair.meta_b());
    let (sa, sb) = (a.superblock(), b.superblock());
    assert_eq!((sa.disk, sb.disk), (DiskState::UpToDate, DiskState::UpToDate));
    assert_eq!(sa.current, sb.current, "the target adopted the source's generation");
    assert_eq!(a.dirty_bytes(), 0, "the source's bitmap is clear");
    // The next link is in sync: nothing to resync.
    let link = pair.link().await.map_err(|(e, _)| e).expect("link up");
    assert_eq!(link.primary.resync_progress().decision, Some(Decision::InSync));
    assert_eq!(link.primary.resync_progress().phase, ResyncPhase::Idle);
    link.close().await.expect("secondary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_peer_resyncs_only_the_dirty_chunks() {
    if !have_qemu() {
        return;
    }
    const SIZE: usize = 16 * MIB;
    let pair = MetaPair::synced(SIZE).await;
    let gen_before = pair.meta_a().superblock().current;

    let link = pair.link().await.map_err(|(e, _)| e).expect("link up");
    assert_eq!(link.primary.resync_progress().decision, Some(Decision::InSync));
    link.secondary.abort();
    tokio::time::timeout(LIMIT, link.primary.wait_degraded()).await.expect("degraded");
    let writes = ["write -P 0x21 1m 256k", "write -P 0x22 5m 256k", "write -P 0x23 9m 256k", "write -P 0x24 13m 256k"];
    qemu_io_ok(&link.url(), &writes).await;
    let meta_a = pair.meta_a();
    assert_eq!(meta_a.dirty_bytes(), MIB as u64, "the degraded writes are in the persistent bitmap");
    let sb = meta_a.superblock();
    assert_ne!(sb.current, gen_before, "a new generation when the peer was lost");
    assert_eq!((sb.history[0], sb.bitmap_uuid), (gen_before, gen_before));
    let _ = link.close().await;
    assert_ne!(pair.files().0, pair.files().1);

    let link = pair.link().await.map_err(|(e, _)| e).expect("link up again");
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    assert_eq!(done.decision, Some(Decision::SourceBitmap));
    assert_eq!(done.phase, ResyncPhase::Done);
    assert_eq!((done.total_bytes, done.done_bytes), (MIB as u64, MIB as u64), "dirty bytes only, not the disk");
    let stats = link.close().await.expect("secondary");
    assert_eq!((stats.decision, stats.resync_completed), (Some(Decision::TargetBitmap), true));
    assert_eq!(stats.bytes_written, MIB as u64);
    pair.assert_identical("after the bitmap resync");
    let (a, b) = (pair.meta_a(), pair.meta_b());
    assert_eq!(a.superblock().current, b.superblock().current);
    assert_eq!((a.dirty_bytes(), b.superblock().disk), (0, DiskState::UpToDate));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_the_peer_acknowledged_but_never_flushed_are_resynced_after_the_link_drops() {
    const SIZE: usize = 4 * MIB;
    let pair = MetaPair::synced(SIZE).await;
    let link = pair.link().await.map_err(|(e, _)| e).expect("link up");
    let p = Arc::clone(&link.primary);
    let data = |b: u8| -> WriteBuf { Arc::new(vec![b; K64 as usize]) };
    p.write_at(0, data(0x21), false).await.expect("write");
    p.flush().await.expect("flush: durable on both");
    // Acknowledged by B once in its page cache; no FLUSH follows before the link drops (B may lose it on power loss).
    p.write_at(MIB as u64, data(0x22), false).await.expect("acknowledged by both, not flushed");
    // A FUA write is durable on B by itself.
    p.write_at(3 * MIB as u64, data(0x24), true).await.expect("acknowledged with FUA");
    link.secondary.abort();
    tokio::time::timeout(LIMIT, p.wait_degraded()).await.expect("degraded");
    p.write_at(2 * MIB as u64, data(0x23), false).await.expect("degraded write");
    let mib = MIB as u64;
    let expected = vec![(mib, K64), (2 * mib, K64)];
    assert_eq!(pair.meta_a().dirty_ranges(), expected, "the unflushed write is in the bitmap with the degraded one");
    assert_eq!(p.dirty().ranges(), expected, "neither the flushed nor the FUA write is dirty");
    drop(p);
    let _ = link.close().await;

    let link = pair.link().await.map_err(|(e, _)| e).expect("link up again");
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    assert_eq!((done.decision, done.phase), (Some(Decision::SourceBitmap), ResyncPhase::Done));
    assert_eq!(done.total_bytes, 2 * K64, "the unflushed chunk and the degraded one");
    link.close().await.expect("secondary");
    pair.assert_identical("after the resync");
    assert_eq!(pair.meta_b().superblock().disk, DiskState::UpToDate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_brain_is_refused_until_one_side_is_discarded() {
    if !have_qemu() {
        return;
    }
    const SIZE: usize = 4 * MIB;
    let pair = MetaPair::synced(SIZE).await;

    // A keeps writing alone (degraded primary).
    let link = pair.link().await.map_err(|(e, _)| e).expect("link up");
    link.secondary.abort();
    tokio::time::timeout(LIMIT, link.primary.wait_degraded()).await.expect("degraded");
    qemu_io_ok(&link.url(), &["write -P 0xaa 0 64k"]).await;
    let _ = link.close().await;
    // B is promoted on its own during the partition and writes too.
    {
        let store_b = Arc::new(FileStore::open(&pair.b).expect("open B")) as Arc<dyn BlockStore>;
        let cfg = ReplicationConfig { node: "node-b".into(), ..ReplicationConfig::default() };
        let mb = SharedMeta::new(pair.meta_b());
        let b = ReplicatedStore::standalone_with_meta(store_b, cfg, Gate::new(true), mb).expect("standalone B");
        b.write_at(MIB as u64, Arc::new(vec![0xbb; 64 * 1024]), false).await.expect("B writes");
        b.shutdown();
    }
    let (a_before, b_before) = pair.files();
    let (ga, gb) = (pair.meta_a().superblock().current, pair.meta_b().superblock().current);
    assert_ne!(ga, gb);

    let Err((e, secondary)) = pair.link().await else { panic!("a split brain was accepted") };
    assert_eq!(e.code(), "TDM-MIR-050", "{e}");
    assert!(e.to_string().contains(&format!("{ga:#018x}")) && e.to_string().contains(&format!("{gb:#018x}")), "{e}");
    assert_eq!(secondary.expect_err("the secondary refuses too").code(), "TDM-MIR-050");
    assert_eq!(pair.files(), (a_before.clone(), b_before), "nothing was written by the refused link");
    assert_eq!((pair.meta_a().superblock().current, pair.meta_b().superblock().current), (ga, gb));

    // The operator keeps A: B's writes are discarded, B becomes a full sync target.
    resolve_discard(&mut pair.meta_b()).expect("resolve --discard node-b");
    let link = pair.link().await.map_err(|(e, _)| e).expect("link up after resolve");
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    assert_eq!((done.decision, done.phase), (Some(Decision::SourceFull), ResyncPhase::Done));
    link.close().await.expect("secondary");
    pair.assert_identical("after resolve --discard");
    let (a, b) = pair.files();
    assert_eq!(a, a_before, "A's data is kept");
    assert_range(&b, 0, 64 * 1024, 0xaa);
    assert_eq!(&b[MIB..MIB + 64 * 1024], &pattern(SIZE)[MIB..MIB + 64 * 1024], "B's own write is gone");
}

#[test]
fn a_torn_superblock_falls_back_to_the_older_slot_and_two_are_an_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("m.meta");
    let mut m = Meta::create(&path, 8 * MIB as u64, "node-a", DEFAULT_GRANULARITY).expect("create");
    m.update(|sb| sb.disk = DiskState::UpToDate).expect("save 1");
    let older = m.superblock().clone();
    m.new_generation().expect("save 2");
    let newer = m.superblock().clone();
    drop(m);
    let slot = |seq: u64| (seq % 2 * SLOT_LEN) as usize;
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[slot(newer.seq) + 200] ^= 0x01;
    std::fs::write(&path, &bytes).expect("tear the newer slot");
    assert_eq!(Meta::open(&path).expect("older slot").superblock(), &older);
    bytes[slot(older.seq) + 300] ^= 0x01;
    std::fs::write(&path, &bytes).expect("tear the older slot");
    let e = Meta::open(&path).expect_err("no valid slot");
    assert_eq!(e.code(), "TDM-MIR-046", "{e}");
}

// ---- online verify and the activity log -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_chunk_corrupted_on_the_secondary_and_the_next_link_repairs_it() {
    use std::os::unix::fs::FileExt;
    const SIZE: usize = 4 * MIB;
    let pair = MetaPair::synced(SIZE).await;
    let link = pair.link().await.map_err(|(e, _)| e).expect("link up");
    let clean = tokio::time::timeout(LIMIT, link.primary.verify()).await.expect("in time").expect("verify");
    assert_eq!((clean.bytes_checked, clean.differing_chunks, clean.chunk_bytes), (SIZE as u64, 0, K64));

    // Bit rot on B, behind the replication's back.
    let at = 2 * MIB as u64 + 100;
    let f = std::fs::OpenOptions::new().write(true).open(&pair.b).expect("open B");
    f.write_all_at(&[0xee; 3], at).expect("corrupt B");
    drop(f);
    let r = tokio::time::timeout(LIMIT, link.primary.verify()).await.expect("in time").expect("verify");
    assert_eq!((r.differing_chunks, r.first_differing.clone()), (1, vec![2 * MIB as u64]), "{r:?}");
    let progress = link.primary.verify_progress();
    assert_eq!((progress.checked_bytes, progress.differing_chunks), (SIZE as u64, 1));
    assert_eq!(pair.meta_a().dirty_ranges(), vec![(2 * MIB as u64, K64)], "marked durably");
    link.close().await.expect("secondary");
    assert_ne!(pair.files().0, pair.files().1);

    let link = pair.link().await.map_err(|(e, _)| e).expect("link up again");
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    assert_eq!((done.decision, done.phase, done.total_bytes), (Some(Decision::InSync), ResyncPhase::Done, K64));
    let again = tokio::time::timeout(LIMIT, link.primary.verify()).await.expect("in time").expect("verify");
    assert_eq!(again.differing_chunks, 0);
    link.close().await.expect("secondary");
    pair.assert_identical("after the resync of the verified chunk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_in_flight_when_the_primary_crashes_is_repaired_from_the_activity_log() {
    const SIZE: usize = 16 * MIB;
    let pair = MetaPair::synced(SIZE).await;
    let at = 9 * MIB as u64;
    // B never applies the write at `at`: it is on A only when A "crashes".
    let tripped = Arc::new(Notify::new());
    let trip = Arc::clone(&tripped);
    let link = pair
        .link_with(move |f| Arc::new(Wrapped { trip_at: Some(at), tripped: trip, ..Wrapped::new(f) }))
        .await
        .map_err(|(e, _)| e)
        .expect("link up");
    let primary = Arc::clone(&link.primary);
    let write = tokio::spawn(async move { primary.write_at(at, Arc::new(vec![0x3c; 64 * 1024]), false).await });
    tokio::time::timeout(LIMIT, tripped.notified()).await.expect("the write reached B");
    let deadline = tokio::time::Instant::now() + LIMIT;
    while pair.files().0[at as usize] != 0x3c {
        assert!(tokio::time::Instant::now() < deadline, "A's local write did not complete");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The crash: the write's task dies with the process, nothing after the local write runs.
    write.abort();
    let _ = write.await;
    link.secondary.abort();
    let _ = link.crash().await;
    let a = pair.meta_a();
    assert!(a.dirty_ranges().is_empty(), "the bitmap does not know the write");
    assert_eq!(a.activity(), vec![(8 * MIB as u64, 4 * MIB as u64)], "the activity log does");
    assert_ne!(pair.files().0, pair.files().1);

    let link = pair.link().await.map_err(|(e, _)| e).expect("link up again");
    let done = tokio::time::timeout(LIMIT, link.primary.wait_resync()).await.expect("resync ends");
    assert_eq!((done.decision, done.phase), (Some(Decision::InSync), ResyncPhase::Done));
    assert_eq!(done.total_bytes, 4 * MIB as u64, "the log's extent only");
    link.close().await.expect("secondary");
    pair.assert_identical("after the activity log's resync");
    assert!(pair.meta_a().activity().is_empty(), "recovered and emptied");
}
