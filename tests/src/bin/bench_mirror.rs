//! Mirror-disk benchmark (issue 7), run by hand (not in CI; needs `qemu-img` and `qemu-nbd` from qemu-utils):
//!
//! ```text
//! cargo run -p tandem-tests --bin bench_mirror -- [--size-mib N] [--dir DIR] [--quick]
//! ```
//! One client, `qemu-img bench -w` over NBD on a Unix socket, against three servers of a raw image file A:
//! - `qemu-nbd`: `qemu-nbd --persistent --format=raw --cache=writeback --aio=threads` (the baseline; buffered
//!   writes, `fdatasync` on FLUSH and FUA: the same durability semantics as our `FileStore`);
//! - `no peer`: our NBD export over a plain `FileStore` of A (the cost of our NBD server alone);
//! - `+ peer`: our NBD export over a `ReplicatedStore` of A whose peer is `serve_secondary` over a `FileStore` of
//!   image B, linked over 127.0.0.1 TCP (synchronous: a write completes once the secondary has applied it).
//!
//! Workloads: 1 MiB sequential writes at queue depth 1 and 32; 4 KiB scattered writes at QD 1 and 32 (step = an
//! odd prime number of 4 KiB blocks, so the offsets `i × step mod size` visit the blocks in a scattered order);
//! 4 KiB scattered writes at QD 1 with FUA on every write (`-t writethrough`). The count of each workload is
//! calibrated on the baseline to last about 3 s (0.5 s with `--quick`); each (workload, server) is run 3 times
//! (once with `--quick`), interleaved, after a `sync` of both images, and the median is reported. The loopback
//! TCP round trip is measured in the same run (median of 1000 ping-pongs of 64 bytes). The CPU time the server
//! used during each run (utime + stime from /proc: qemu-nbd's process, or this process, which holds both our
//! primary and our secondary) is reported per operation, to show where the time goes on a small machine.
//!
//! Then the **initial full sync rate**: image A (now holding the benchmark's data, metadata UpToDate) fully synced
//! to a fresh B (new metadata, Inconsistent) over 127.0.0.1 TCP, against the baseline of copying A locally onto
//! the same allocated B (`qemu-img convert -n`, then `fdatasync`), both measured in this run. `--sync-only` runs
//! this part alone. `--tls` runs every peer link over TLS 1.3 with test certificates of a cluster CA, as tandemd
//! does (`mirror::replication::{connect_tls, accept_tls}` with the node's `PeerTls`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tandem_runtime::daemon::peer::PeerTls;
use tandem_runtime::mirror::meta::{DEFAULT_GRANULARITY, DiskState, Meta, SharedMeta};
use tandem_runtime::mirror::nbd::{Export, bind_unix, serve_unix};
use tandem_runtime::mirror::replication::{
    PeerLossGate, ReplicatedStore, ReplicationConfig, ReplicationError, ReplicationState, SecondaryConfig, Stats,
    accept_tls, connect_tls, serve_secondary_meta, serve_secondary_with,
};
use tandem_runtime::mirror::store::{BlockStore, FileStore};
use tandem_tests::certs;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const MIB: u64 = 1024 * 1024;
const BLOCK: u64 = 4096;
/// An odd prime number of 4 KiB blocks (≈ 409 MiB): coprime with any power-of-two image size in blocks.
const SCATTER_BLOCKS: u64 = 104_729;
const PATTERN: &str = "0x5a";
/// Clock ticks per second of /proc/PID/stat (`getconf CLK_TCK` on Linux).
const CLK_TCK: f64 = 100.0;

struct Args {
    size_mib: u64,
    dir: PathBuf,
    quick: bool,
    sync_only: bool,
    tls: bool,
}

fn parse_args() -> Result<Args> {
    let mut args = Args { size_mib: 1024, dir: std::env::temp_dir(), quick: false, sync_only: false, tls: false };
    let mut size_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--size-mib" => {
                args.size_mib = it.next().ok_or("--size-mib needs a value")?.parse()?;
                size_given = true;
            }
            "--dir" => args.dir = PathBuf::from(it.next().ok_or("--dir needs a value")?),
            "--quick" => args.quick = true,
            "--sync-only" => args.sync_only = true,
            "--tls" => args.tls = true,
            "-h" | "--help" => {
                println!("usage: bench_mirror [--size-mib N] [--dir DIR] [--quick]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?} (try --help)").into()),
        }
    }
    if args.quick && !size_given {
        args.size_mib = 64;
    }
    if args.size_mib < 4 {
        return Err("--size-mib must be at least 4".into());
    }
    Ok(args)
}

#[derive(Clone, Copy)]
struct Workload {
    name: &'static str,
    bs: u64,
    depth: u32,
    scattered: bool,
    /// qemu-img's cache mode: `writeback` (no flush during the run) or `writethrough` (FUA on every write).
    cache: &'static str,
}

const WORKLOADS: [Workload; 5] = [
    Workload { name: "1 MiB seq QD1", bs: MIB, depth: 1, scattered: false, cache: "writeback" },
    Workload { name: "1 MiB seq QD32", bs: MIB, depth: 32, scattered: false, cache: "writeback" },
    Workload { name: "4 KiB scattered QD1", bs: BLOCK, depth: 1, scattered: true, cache: "writeback" },
    Workload { name: "4 KiB scattered QD32", bs: BLOCK, depth: 32, scattered: true, cache: "writeback" },
    Workload { name: "4 KiB scattered QD1 FUA", bs: BLOCK, depth: 1, scattered: true, cache: "writethrough" },
];

#[derive(Clone, Copy, PartialEq)]
enum Server {
    Baseline,
    NoPeer,
    Peer,
}

const SERVERS: [Server; 3] = [Server::Baseline, Server::NoPeer, Server::Peer];

impl Server {
    fn label(self) -> &'static str {
        match self {
            Server::Baseline => "qemu-nbd",
            Server::NoPeer => "tandem, no peer",
            Server::Peer => "tandem + peer",
        }
    }

    fn export(self) -> &'static str {
        match self {
            Server::Baseline => "base",
            Server::NoPeer => "plain",
            Server::Peer => "mirror",
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// The offset step of a workload: the block size, or a number of blocks coprime with the image's.
fn step(w: &Workload, size: u64) -> u64 {
    if !w.scattered {
        return w.bs;
    }
    let blocks = size / w.bs;
    let mut s = SCATTER_BLOCKS % blocks.max(2);
    while s < 2 || gcd(s, blocks) != 1 {
        s += 1;
    }
    s * w.bs
}

/// The gate of the benchmark: the peer is not expected to get lost; if it is, the run stops as invalid.
struct Gate;

#[async_trait::async_trait]
impl PeerLossGate for Gate {
    async fn mark_peer_outdated(&self, _generation: u64) -> std::result::Result<(), String> {
        Ok(())
    }
}

/// The three servers, all on Unix sockets in the work directory.
struct Servers {
    qemu_nbd: tokio::process::Child,
    primary: Arc<ReplicatedStore>,
    secondary: JoinHandle<std::result::Result<Stats, ReplicationError>>,
    exports: Vec<JoinHandle<()>>,
    dir: PathBuf,
}

impl Servers {
    /// CPU seconds used so far by the process serving `s`.
    fn cpu(&self, s: Server) -> Result<f64> {
        let pid = match s {
            Server::Baseline => self.qemu_nbd.id().ok_or("qemu-nbd exited")?.to_string(),
            Server::NoPeer | Server::Peer => "self".to_string(),
        };
        cpu_secs(&pid)
    }

    fn url(&self, s: Server) -> String {
        let name = s.export();
        format!("nbd+unix:///{name}?socket={}", self.dir.join(format!("{name}.sock")).display())
    }

    async fn start(dir: &Path, a: &Path, b: &Path, tls: Option<&Tls>) -> Result<Servers> {
        let base_sock = dir.join("base.sock");
        let qemu_nbd = tokio::process::Command::new("qemu-nbd")
            .args(["--persistent", "--format=raw", "--cache=writeback", "--aio=threads", "--export-name=base"])
            .arg(format!("--socket={}", base_sock.display()))
            .arg(a)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting qemu-nbd (apt-get install qemu-utils): {e}"))?;

        let (secondary, link) = link_to_secondary(b, None, tls).await?;
        let cfg = ReplicationConfig { node: "bench-a".into(), ..ReplicationConfig::default() };
        let local: Arc<dyn BlockStore> = Arc::new(FileStore::open(a)?);
        let primary = Arc::new(ReplicatedStore::connect(local, link, cfg, Arc::new(Gate)).await?);

        let plain: Arc<dyn BlockStore> = Arc::new(FileStore::open(a)?);
        let mirror: Arc<dyn BlockStore> = Arc::clone(&primary) as Arc<dyn BlockStore>;
        let mut exports = Vec::new();
        for (s, store) in [(Server::NoPeer, plain), (Server::Peer, mirror)] {
            let listener = bind_unix(&dir.join(format!("{}.sock", s.export())))?;
            exports.push(tokio::spawn(serve_unix(listener, Arc::new(Export::new(s.export(), store)))));
        }
        let servers = Servers { qemu_nbd, primary, secondary, exports, dir: dir.to_path_buf() };
        // qemu-nbd creates its socket once the image is open.
        let deadline = Instant::now() + Duration::from_secs(10);
        while tokio::net::UnixStream::connect(&base_sock).await.is_err() {
            if Instant::now() > deadline {
                return Err("qemu-nbd did not listen within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(servers)
    }

    async fn stop(mut self) -> Result<Option<Stats>> {
        for e in &self.exports {
            e.abort();
        }
        self.primary.shutdown();
        let _ = self.qemu_nbd.kill().await;
        match tokio::time::timeout(Duration::from_secs(10), &mut self.secondary).await?? {
            Ok(stats) => Ok(Some(stats)),
            Err(e) => {
                println!("secondary ended with: {e}");
                Ok(None)
            }
        }
    }
}

/// utime + stime of a process (all its threads), in seconds.
fn cpu_secs(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after_name = stat.rsplit_once(')').map(|(_, rest)| rest).ok_or("unexpected /proc/PID/stat")?;
    // Fields after the command name start at field 3 (state); utime and stime are fields 14 and 15.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let tick = |i: usize| -> Result<f64> { Ok(fields.get(i).ok_or("short /proc/PID/stat")?.parse::<f64>()?) };
    Ok((tick(11)? + tick(12)?) / CLK_TCK)
}

/// Create a fully allocated image of zeroes.
fn create_image(path: &Path, size: u64) -> Result<()> {
    fill_image(path, size, 0)
}

/// A fully allocated image of `size` bytes of `byte`, synced.
fn fill_image(path: &Path, size: u64, byte: u8) -> Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![byte; MIB as usize];
    let mut left = size;
    while left > 0 {
        let n = left.min(MIB);
        f.write_all(&chunk[..n as usize])?;
        left -= n;
    }
    f.sync_all()?;
    Ok(())
}

/// One `qemu-img bench` run; returns its own timing of the run (seconds).
async fn qemu_img_bench(url: &str, w: &Workload, count: u64, step: u64) -> Result<f64> {
    let out = tokio::process::Command::new("qemu-img")
        .args(["bench", "-f", "raw", "-w", "--pattern", PATTERN, "-t", w.cache])
        .args(["-c", &count.to_string(), "-d", &w.depth.to_string()])
        .args(["-s", &w.bs.to_string(), "-S", &step.to_string()])
        .arg(url)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() {
        return Err(format!("qemu-img bench on {url} failed: {text}").into());
    }
    let secs = text
        .lines()
        .find_map(|l| l.strip_prefix("Run completed in ")?.strip_suffix(" seconds.")?.trim().parse::<f64>().ok())
        .ok_or_else(|| format!("no timing in the output of qemu-img bench: {text}"))?;
    Ok(secs.max(0.001))
}

/// Write back both images' dirty pages, so each run starts from the same state.
fn sync_images(paths: &[&Path]) -> Result<()> {
    for p in paths {
        std::fs::OpenOptions::new().write(true).open(p)?.sync_all()?;
    }
    Ok(())
}

/// Median loopback TCP round trip (64-byte ping-pong, Nagle off), over `n` round trips after 100 warm-up ones.
async fn loopback_rtt(n: usize) -> Result<Duration> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let echo = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = [0u8; 64];
        while s.read_exact(&mut buf).await.is_ok() {
            s.write_all(&buf).await?;
        }
        Ok::<(), std::io::Error>(())
    });
    let mut c = TcpStream::connect(addr).await?;
    c.set_nodelay(true)?;
    let mut buf = [7u8; 64];
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + 100 {
        let t = Instant::now();
        c.write_all(&buf).await?;
        c.read_exact(&mut buf).await?;
        if i >= 100 {
            samples.push(t.elapsed());
        }
    }
    drop(c);
    echo.await??;
    samples.sort();
    samples.get(samples.len() / 2).copied().ok_or_else(|| "no round trip measured".into())
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Row {
    w: Workload,
    count: u64,
    /// Median seconds per server, in the order of [`SERVERS`].
    secs: [f64; 3],
    /// Median server CPU seconds per run.
    cpu: [f64; 3],
}

fn cell(w: &Workload, count: u64, secs: f64) -> String {
    let ops = count as f64 / secs;
    let mut s = if w.bs >= MIB {
        format!("{:.0} MB/s", ops * w.bs as f64 / 1e6)
    } else {
        format!("{ops:.0} IOPS ({:.1} MB/s)", ops * w.bs as f64 / 1e6)
    };
    if w.depth == 1 {
        s.push_str(&format!(", {:.0} µs/op", secs / count as f64 * 1e6));
    }
    s
}

async fn run(args: &Args) -> Result<()> {
    let size = args.size_mib * MIB;
    std::fs::create_dir_all(&args.dir)?;
    let work = tempfile::Builder::new().prefix("bench_mirror.").tempdir_in(&args.dir)?;
    let (a, b) = (work.path().join("a.img"), work.path().join("b.img"));
    println!("images: 2 × {} MiB in {} (fully allocated zeroes)", args.size_mib, work.path().display());
    create_image(&a, size)?;
    create_image(&b, size)?;

    let tls = if args.tls { Some(Tls::make(work.path())?) } else { None };
    if args.sync_only {
        // Data, not zeroes, as after the workloads (a sync must not get cheaper for zero chunks).
        fill_image(&a, size, 0x5a)?;
        return initial_sync(work.path(), &a, &b, size, tls.as_ref()).await;
    }
    let rtt = loopback_rtt(1000).await?;
    println!("loopback TCP round trip (median of 1000): {:.1} µs", rtt.as_secs_f64() * 1e6);

    let servers = Servers::start(work.path(), &a, &b, tls.as_ref()).await?;
    let (target, reps) = if args.quick { (0.5, 1) } else { (3.0, 3) };
    let mut rows = Vec::new();
    let mut bytes_sent = 0u64;
    for w in WORKLOADS {
        let step = step(&w, size);
        // Calibrate the count on the baseline.
        let mut count: u64 = if w.bs >= MIB { 64 } else { 2048 };
        let base_url = servers.url(Server::Baseline);
        loop {
            sync_images(&[&a, &b])?;
            let secs = qemu_img_bench(&base_url, &w, count, step).await?;
            if secs >= 0.2 || count >= 1 << 24 {
                count = ((count as f64 * target / secs).round() as u64).max(16);
                break;
            }
            count *= 8;
        }
        let mut samples: [Vec<f64>; 3] = Default::default();
        let mut cpu: [Vec<f64>; 3] = Default::default();
        for rep in 0..reps {
            for (i, s) in SERVERS.iter().enumerate() {
                sync_images(&[&a, &b])?;
                let cpu0 = servers.cpu(*s)?;
                let secs = qemu_img_bench(&servers.url(*s), &w, count, step).await?;
                cpu[i].push(servers.cpu(*s)? - cpu0);
                if *s == Server::Peer {
                    bytes_sent += count * w.bs;
                    if let ReplicationState::Degraded { code, reason, .. } = servers.primary.state() {
                        return Err(format!("the peer was lost during {} ({code}): {reason}", w.name).into());
                    }
                }
                println!("  {:<24} {:<16} run {}: {count} × {} B in {secs:.3} s", w.name, s.label(), rep + 1, w.bs);
                samples[i].push(secs);
            }
        }
        let secs = [median(&mut samples[0]), median(&mut samples[1]), median(&mut samples[2])];
        let cpu = [median(&mut cpu[0]), median(&mut cpu[1]), median(&mut cpu[2])];
        rows.push(Row { w, count, secs, cpu });
    }
    let stats = servers.stop().await?;
    report(&rows, rtt, args, stats, bytes_sent);
    initial_sync(work.path(), &a, &b, size, tls.as_ref()).await?;
    Ok(())
}

/// A peer link: TCP, or TLS over TCP.
trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}
type Link = Box<dyn Stream>;

/// Both ends' TLS, from test certificates of one CA (as tandemd loads them from its secrets).
struct Tls {
    primary: PeerTls,
    secondary: PeerTls,
}

impl Tls {
    fn make(dir: &Path) -> Result<Tls> {
        let names = [
            ("bench-a".to_string(), vec!["bench-a".to_string()]),
            ("bench-b".to_string(), vec!["bench-b".to_string()]),
        ];
        certs::write(dir, &names)?;
        Ok(Tls {
            primary: PeerTls::load(&certs::secrets(dir, "bench-a"))?,
            secondary: PeerTls::load(&certs::secrets(dir, "bench-b"))?,
        })
    }
}

/// A secondary over image `b` (with its metadata, if any) on 127.0.0.1, and the primary's connected link to it
/// (over TLS with `tls`).
async fn link_to_secondary(
    b: &Path,
    meta: Option<SharedMeta>,
    tls: Option<&Tls>,
) -> Result<(JoinHandle<std::result::Result<Stats, ReplicationError>>, Link)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let store_b: Arc<dyn BlockStore> = Arc::new(FileStore::open(b)?);
    let server = tls.map(|t| Arc::clone(&t.secondary.server));
    let secondary = tokio::spawn(async move {
        let io = |source| ReplicationError::Io { during: "accepting the benchmark's peer link", source };
        let (tcp, _) = listener.accept().await.map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        let stream: Link = match server {
            Some(server) => Box::new(accept_tls(tcp, server, "bench-a").await?),
            None => Box::new(tcp),
        };
        let cfg = SecondaryConfig { node: "bench-b".into(), ..SecondaryConfig::default() };
        match meta {
            Some(meta) => serve_secondary_meta(stream, store_b, cfg, meta).await,
            None => serve_secondary_with(stream, store_b, cfg).await,
        }
    });
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    let link: Link = match tls {
        Some(t) => Box::new(connect_tls(tcp, Arc::clone(&t.primary.client), "bench-b").await?),
        None => Box::new(tcp),
    };
    Ok((secondary, link))
}

/// The initial full sync of A to a fresh B, against copying A locally; prints both rates and their ratio.
async fn initial_sync(dir: &Path, a: &Path, b: &Path, size: u64, tls: Option<&Tls>) -> Result<()> {
    sync_images(&[a, b])?;
    let started = Instant::now();
    let out = tokio::process::Command::new("qemu-img")
        .args(["convert", "-n", "-f", "raw", "-O", "raw", "-t", "writeback"])
        .arg(a)
        .arg(b)
        .output()
        .await?;
    if !out.status.success() {
        return Err(format!("qemu-img convert: {}", String::from_utf8_lossy(&out.stderr)).into());
    }
    sync_images(&[b])?;
    let copy_secs = started.elapsed().as_secs_f64();

    let mut meta_a = Meta::create(&dir.join("a.meta"), size, "bench-a", DEFAULT_GRANULARITY)?;
    meta_a.update(|sb| {
        sb.disk = DiskState::UpToDate;
        sb.history[0] = 0x5eed;
    })?;
    let meta_b = Meta::create(&dir.join("b.meta"), size, "bench-b", DEFAULT_GRANULARITY)?;
    let (meta_a, meta_b) = (SharedMeta::new(meta_a), SharedMeta::new(meta_b));
    sync_images(&[a, b])?;
    let started = Instant::now();
    let (secondary, link) = link_to_secondary(b, Some(meta_b), tls).await?;
    let cfg = ReplicationConfig { node: "bench-a".into(), ..ReplicationConfig::default() };
    let local: Arc<dyn BlockStore> = Arc::new(FileStore::open(a)?);
    let primary = ReplicatedStore::connect_with_meta(local, link, cfg, Arc::new(Gate), meta_a).await?;
    let progress = primary.wait_resync().await;
    let sync_secs = started.elapsed().as_secs_f64();
    primary.shutdown();
    let _ = secondary.await;
    let rate = |secs: f64| size as f64 / MIB as f64 / secs;
    println!();
    println!(
        "initial full sync ({:?}, {} MiB over loopback TCP, {}): {sync_secs:.2} s = {:.0} MiB/s; local copy \
         onto B (qemu-img convert -n + fdatasync): {copy_secs:.2} s = {:.0} MiB/s; sync / copy = {:.2}",
        progress.decision,
        progress.total_bytes / MIB,
        if tls.is_some() { "TLS 1.3" } else { "no TLS" },
        rate(sync_secs),
        rate(copy_secs),
        copy_secs / sync_secs
    );
    Ok(())
}

fn report(rows: &[Row], rtt: Duration, args: &Args, stats: Option<Stats>, bytes_sent: u64) {
    let rtt_us = rtt.as_secs_f64() * 1e6;
    let build = if cfg!(debug_assertions) { "debug" } else { "release" };
    println!();
    println!(
        "{build} build; image {} MiB in {}; {} run(s) per cell, median; loopback RTT {rtt_us:.1} µs; peer link {}",
        args.size_mib,
        args.dir.display(),
        if args.quick { 1 } else { 3 },
        if args.tls { "TLS 1.3" } else { "plain TCP" }
    );
    println!();
    println!(
        "| workload (count) | qemu-nbd | tandem, no peer | tandem + peer | no peer / qemu-nbd | + peer / qemu-nbd |"
    );
    println!("|---|---|---|---|---|---|");
    for r in rows {
        let [base, plain, peer] = r.secs;
        println!(
            "| {} ({}) | {} | {} | {} | {:.2} | {:.2} |",
            r.w.name,
            r.count,
            cell(&r.w, r.count, base),
            cell(&r.w, r.count, plain),
            cell(&r.w, r.count, peer),
            base / plain,
            base / peer
        );
    }
    println!();
    for r in rows.iter().filter(|r| r.w.bs >= MIB) {
        let ratio = r.secs[0] / r.secs[2];
        let verdict = if ratio >= 0.7 { "met" } else { "NOT met" };
        println!("goal {}: + peer / qemu-nbd = {ratio:.2} (≥ 0.70): {verdict}", r.w.name);
    }
    for r in rows.iter().filter(|r| r.w.bs < MIB && r.w.depth == 1) {
        let per_op = |s: f64| s / r.count as f64 * 1e6;
        let (base, peer) = (per_op(r.secs[0]), per_op(r.secs[2]));
        let bound = base + rtt_us + 100.0;
        let verdict = if peer <= bound { "met" } else { "NOT met" };
        println!(
            "goal {}: + peer {peer:.0} µs ≤ qemu-nbd {base:.0} + RTT {rtt_us:.0} + 100 = {bound:.0} µs: {verdict} \
             (+ peer − qemu-nbd = {:.0} µs)",
            r.w.name,
            peer - base
        );
    }
    println!();
    println!("server CPU per operation (utime + stime of the serving process(es), median run):");
    println!();
    println!("| workload | qemu-nbd | tandem, no peer | tandem + peer (primary + secondary) |");
    println!("|---|---|---|---|");
    for r in rows {
        let per_op = |i: usize| r.cpu[i] / r.count as f64 * 1e6;
        println!("| {} | {:.0} µs | {:.0} µs | {:.0} µs |", r.w.name, per_op(0), per_op(1), per_op(2));
    }
    println!();
    if let Some(s) = stats {
        println!(
            "secondary applied {} writes, {} bytes (the + peer runs wrote {bytes_sent}), {} flushes, {} failed",
            s.writes, s.bytes_written, s.flushes, s.failed
        );
    }
}

fn main() -> Result<()> {
    let args = parse_args()?;
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(run(&args))
}
