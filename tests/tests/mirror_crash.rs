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

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tandem_tests::ack_journal::{WriteStream, check, have_qemu_io};
use tandem_tests::nodes::NodeProcess;

const IMAGE: u64 = 16 * 1024 * 1024;
const NAME: &str = "disk0";
/// Generous bound for one step (a node starting, qemu-io draining after the kill).
const STEP: Duration = Duration::from_secs(15);

/// The `mirror_node` binary: cargo builds a package's binaries before its integration tests and says where.
fn mirror_node() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_mirror_node"))
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

    let seed = 0x9e37_79b9_7f4a_7c15 ^ (round as u64 + 1);
    let mut stream = WriteStream::start(&sock, NAME, seed, IMAGE).expect("run qemu-io (via stdbuf)");
    let reached = stream.wait_acked(kill_after, 2 * STEP).expect("qemu-io acks");
    assert!(
        reached,
        "qemu-io finished with only {} acks, fewer than the {kill_after} to kill at",
        stream.journal.len()
    );
    crash(&mut primary, &mut secondary);
    let acked_before_kill = stream.journal.len();
    // Replies that arrived were sent before the primary died: those writes were acknowledged just the same.
    stream.drain(2 * STEP).expect("qemu-io ends");

    let data = std::fs::read(&b).expect("read B");
    assert_eq!(data.len() as u64, IMAGE);
    let unacked = check(&data, &stream.writes, &stream.journal).unwrap_or_else(|e| panic!("round {round}: {e}"));
    let (landed, partial) = (unacked.landed, unacked.partial);
    let writes = &stream.writes;
    let journal = &stream.journal;
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
