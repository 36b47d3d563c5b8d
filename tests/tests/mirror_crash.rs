//! Issue 7: SIGKILL the active node of a mirrored disk in the middle of a write stream, promote the standby, read
//! it back: every write the client saw acknowledged is there, and nothing is torn.
//!
//! Each round: two fresh 16 MiB zero-filled images A and B in a tempdir; `mirror_node secondary` over B and
//! `mirror_node primary` over A (protocol C, linked over 127.0.0.1 TCP, NBD export on a Unix socket) as separate
//! processes; `qemu-io` submits ~1000 `aio_write`s of 4–28 KiB on non-overlapping ranges (they tile the image, in
//! shuffled order), each with its own pattern byte, with an `aio_flush` every 64 writes.
//!
//! The journal of acked writes: qemu-io prints `wrote N/N bytes at offset X` when a write's NBD reply arrived;
//! a reader thread parses qemu-io's stdout line by line and journals (offset, len, pattern) of each such write.
//! Once a per-round number of acks (300, 450, 600) has been journaled, the crash: the secondary is frozen, the
//! primary's whole process group gets SIGKILL, then the secondary too (see [`crash`]). qemu-io's remaining writes
//! then fail; lines it prints after the kill are journaled too: a reply that arrived was sent before the primary
//! died, so that write was acknowledged just the same.
//!
//! "Promotion": B is what the standby would serve (protocol C replies only after the secondary's write completed,
//! so its data must already be in B's page cache when the secondary dies). B is read back:
//! - every journaled write's range holds exactly its pattern (a missing or partial write fails, naming it);
//! - every other write's range is, per 512-byte sector, either all zeroes or all its pattern. 512 bytes is the
//!   logical sector size of the export, the unit a block device guarantees not to tear and the one file systems
//!   rely on; a write cut off by the crash may legitimately be applied in part, but only in whole sectors.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use tandem_tests::nodes::NodeProcess;

const IMAGE: u64 = 16 * 1024 * 1024;
const BLOCK: u64 = 4096;
const SECTOR: usize = 512;
const NAME: &str = "disk0";
const FLUSH_EVERY: usize = 64;
/// Generous bound for one step (a node starting, qemu-io draining after the kill).
const STEP: Duration = Duration::from_secs(15);

/// The `mirror_node` binary: cargo builds a package's binaries before its integration tests and says where.
fn mirror_node() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mirror_node"))
}

fn have_qemu_io() -> bool {
    match Command::new("qemu-io").arg("--version").output() {
        Ok(out) if out.status.success() => true,
        _ => {
            println!("SKIP: qemu-io is not installed (apt-get install qemu-utils)");
            false
        }
    }
}

/// A small deterministic generator (xorshift64*), so a failing round can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

#[derive(Debug, Clone, Copy)]
struct Write {
    index: usize,
    offset: u64,
    len: u64,
    pattern: u8,
}

/// Writes that tile the image with 1–7 blocks each, in shuffled order; pattern = (index % 250) + 1 (never 0).
fn plan(seed: u64) -> Vec<Write> {
    let mut rng = Rng(seed);
    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < IMAGE {
        let len = ((1 + rng.below(7)) * BLOCK).min(IMAGE - offset);
        ranges.push((offset, len));
        offset += len;
    }
    for i in (1..ranges.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ranges.swap(i, j);
    }
    ranges
        .into_iter()
        .enumerate()
        .map(|(index, (offset, len))| Write { index, offset, len, pattern: (index % 250) as u8 + 1 })
        .collect()
}

fn script(writes: &[Write]) -> Vec<String> {
    let mut cmds = Vec::new();
    for (i, w) in writes.iter().enumerate() {
        cmds.push(format!("aio_write -P {} {} {}", w.pattern, w.offset, w.len));
        if (i + 1) % FLUSH_EVERY == 0 {
            cmds.push("aio_flush".to_string());
        }
    }
    cmds.push("aio_flush".to_string());
    cmds
}

/// `wrote N/N bytes at offset X` → (N, X).
fn parse_ack(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("wrote ")?;
    let (counts, offset) = rest.split_once(" bytes at offset ")?;
    let (done, total) = counts.split_once('/')?;
    let done: u64 = done.parse().ok()?;
    if done != total.parse::<u64>().ok()? {
        return None;
    }
    Some((done, offset.trim().parse().ok()?))
}

/// A zero-filled image file.
fn image(dir: &Path, name: &str) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).expect("create image");
    f.set_len(IMAGE).expect("size image");
    path
}

/// Waits for a line starting with `prefix` in the node's log; returns the rest of it.
fn await_line(node: &mut NodeProcess, prefix: &str) -> String {
    let deadline = Instant::now() + STEP;
    loop {
        let log = std::fs::read_to_string(node.log_path()).unwrap_or_default();
        if let Some(rest) = log.lines().find_map(|l| l.strip_prefix(prefix)) {
            return rest.trim().to_string();
        }
        assert!(node.is_running(), "node exited before printing {prefix:?}: {}", node.log_tail(20));
        assert!(Instant::now() < deadline, "no {prefix:?} within {STEP:?}: {}", node.log_tail(20));
        std::thread::sleep(tandem_tests::nodes::POLL_INTERVAL);
    }
}

/// qemu-io, killed (with its process group) when dropped.
struct Client(Child);

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The crash, and the promotion of the standby: the secondary is frozen (SIGSTOP), the primary's process group
/// gets SIGKILL, then the secondary too; B is what the new active would serve. Freezing first models the active
/// machine and its network dying at one instant: a SIGKILLed process's socket still delivers what it had queued in
/// the kernel, which a dead machine would not, and a frozen secondary reads none of it before it dies (its unread
/// socket buffer is discarded). Protocol C acks only writes the secondary had completed, so none of them is lost.
fn crash(primary: &mut NodeProcess, secondary: &mut NodeProcess) {
    secondary.pause();
    primary.kill();
    secondary.kill();
}

struct Outcome {
    issued: usize,
    acked_before_kill: usize,
    acked: usize,
    elapsed: Duration,
}

fn round(round: usize, kill_after: usize) -> Outcome {
    let start = Instant::now();
    let dir = tempfile::tempdir().expect("tempdir");
    let a = image(dir.path(), "a.img");
    let b = image(dir.path(), "b.img");
    let sock = dir.path().join("nbd.sock");

    let mut cmd = Command::new(mirror_node());
    cmd.arg("secondary").arg("--data").arg(&b).args(["--listen", "127.0.0.1:0"]);
    let mut secondary = NodeProcess::spawn(cmd, dir.path().join("secondary.log")).expect("start secondary");
    let peer = await_line(&mut secondary, "listening ");

    let mut cmd = Command::new(mirror_node());
    cmd.arg("primary").arg("--data").arg(&a).args(["--peer", &peer]).arg("--nbd").arg(&sock);
    cmd.args(["--name", NAME]);
    let mut primary = NodeProcess::spawn(cmd, dir.path().join("primary.log")).expect("start primary");
    await_line(&mut primary, "serving ");

    let writes = plan(0x9e37_79b9_7f4a_7c15 ^ (round as u64 + 1));
    let by_offset: HashMap<u64, Write> = writes.iter().map(|w| (w.offset, *w)).collect();
    // stdbuf -oL: qemu-io's acks reach the pipe as they happen, not in 4 KiB bursts.
    let mut qemu = Command::new("stdbuf");
    qemu.args(["-oL", "qemu-io", "-f", "raw"]).arg(format!("nbd+unix:///{NAME}?socket={}", sock.display()));
    for c in script(&writes) {
        qemu.args(["-c", &c]);
    }
    qemu.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).process_group(0);
    let mut client = Client(qemu.spawn().expect("run qemu-io (via stdbuf)"));
    let stdout = client.0.stdout.take().expect("qemu-io stdout");

    // The journal: every acknowledged write, in the order qemu-io reported it.
    let (tx, rx) = mpsc::channel::<(u64, u64)>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Some(ack) = parse_ack(&line)
                && tx.send(ack).is_err()
            {
                break;
            }
        }
    });
    let mut journal: Vec<Write> = Vec::new();
    let mut acked_before_kill = None;
    let deadline = Instant::now() + 2 * STEP;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((len, offset)) => {
                let w = by_offset.get(&offset).copied();
                let w = w.unwrap_or_else(|| panic!("qemu-io acked a write at offset {offset} that was never issued"));
                assert_eq!(
                    len, w.len,
                    "qemu-io acked {len} bytes at offset {offset}, write #{} has {}",
                    w.index, w.len
                );
                journal.push(w);
                if acked_before_kill.is_none() && journal.len() >= kill_after {
                    crash(&mut primary, &mut secondary);
                    acked_before_kill = Some(journal.len());
                }
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("qemu-io did not finish within {:?}", 2 * STEP),
        }
    }
    let _ = reader.join();
    drop(client);
    let acked_before_kill = acked_before_kill.unwrap_or_else(|| {
        panic!("qemu-io finished with only {} acks, fewer than the {kill_after} to kill at", journal.len())
    });

    let data = std::fs::read(&b).expect("read B");
    assert_eq!(data.len() as u64, IMAGE);
    let mut acked = vec![false; writes.len()];
    for w in &journal {
        acked[w.index] = true;
        let range = &data[w.offset as usize..(w.offset + w.len) as usize];
        if let Some(i) = range.iter().position(|b| *b != w.pattern) {
            let good = range.iter().filter(|b| **b == w.pattern).count();
            panic!(
                "round {round}: acked write #{} ({} bytes at offset {}, pattern {:#04x}) is not on the standby: \
                 byte {} is {:#04x} ({good} of {} bytes hold the pattern)",
                w.index,
                w.len,
                w.offset,
                w.pattern,
                w.offset as usize + i,
                range[i],
                w.len
            );
        }
    }
    let mut partial = 0;
    let mut landed = 0;
    for w in writes.iter().filter(|w| !acked[w.index]) {
        let range = &data[w.offset as usize..(w.offset + w.len) as usize];
        let mut seen_new = false;
        let mut seen_old = false;
        for (s, sector) in range.chunks(SECTOR).enumerate() {
            if sector.iter().all(|b| *b == w.pattern) {
                seen_new = true;
            } else if sector.iter().all(|b| *b == 0) {
                seen_old = true;
            } else {
                panic!(
                    "round {round}: unacked write #{} ({} bytes at offset {}, pattern {:#04x}) left a torn sector \
                     at offset {}",
                    w.index,
                    w.len,
                    w.offset,
                    w.pattern,
                    w.offset as usize + s * SECTOR
                );
            }
        }
        match (seen_new, seen_old) {
            (true, true) => partial += 1,
            (true, false) => landed += 1,
            _ => {}
        }
    }
    let o = Outcome { issued: writes.len(), acked_before_kill, acked: journal.len(), elapsed: start.elapsed() };
    println!(
        "round {round}: {} writes issued, {} acked before the SIGKILL, {} acked in all; of the {} unacked, \
         {landed} fully on the standby, {partial} in part (whole sectors), none torn; {:.2?}",
        o.issued,
        o.acked_before_kill,
        o.acked,
        o.issued - o.acked,
        o.elapsed
    );
    o
}

#[test]
fn acknowledged_writes_survive_a_sigkill_of_the_active_and_nothing_is_torn() {
    if !have_qemu_io() {
        return;
    }
    let mut cut_short = 0;
    for (r, kill_after) in [300, 450, 600].into_iter().enumerate() {
        let o = round(r, kill_after);
        if o.acked < o.issued {
            cut_short += 1;
        }
    }
    assert!(cut_short > 0, "every round completed all its writes: the SIGKILL never hit a write stream");
}

#[test]
fn ack_lines_are_parsed() {
    assert_eq!(parse_ack("wrote 4096/4096 bytes at offset 8192"), Some((4096, 8192)));
    assert_eq!(parse_ack("wrote 0/4096 bytes at offset 8192"), None);
    assert_eq!(parse_ack("4 KiB, 1 ops; 00.00 sec (1 MiB/sec and 250 ops/sec)"), None);
}

#[test]
fn the_plan_tiles_the_image_without_overlap() {
    let mut writes = plan(7);
    writes.sort_by_key(|w| w.offset);
    let mut end = 0;
    for w in &writes {
        assert_eq!(w.offset, end);
        assert!(w.len >= BLOCK && w.len <= 7 * BLOCK && w.pattern != 0);
        end += w.len;
    }
    assert_eq!(end, IMAGE);
}
