//! A stream of patterned writes through an NBD export with `qemu-io`, and the journal of the writes it saw
//! acknowledged — the "no lost writes" check of the mirror disk's crash tests (issue 7).
//!
//! The plan: non-overlapping writes of 1–7 blocks that tile the image in shuffled order, each with its own pattern
//! byte, an `aio_flush` every 64. qemu-io prints `wrote N/N bytes at offset X` when a write's NBD reply arrived; a
//! reader thread parses its stdout line by line into the journal. [`check`] then reads what the standby has:
//! - every journaled write's range holds exactly its pattern (a missing or partial write fails, naming it);
//! - every other write's range is, per 512-byte sector, either the old bytes (zeroes) or its pattern: a write cut
//!   off by the crash may be applied in part, but only in whole sectors (the export's logical sector size).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BLOCK: u64 = 4096;
const SECTOR: usize = 512;
const FLUSH_EVERY: usize = 64;

/// Whether qemu-io is installed; prints why the test is skipped when not.
pub fn have_qemu_io() -> bool {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Write {
    pub index: usize,
    pub offset: u64,
    pub len: u64,
    pub pattern: u8,
}

/// Writes that tile `image` bytes with 1–7 blocks each, in shuffled order; pattern = (index % 250) + 1 (never 0).
pub fn plan(seed: u64, image: u64) -> Vec<Write> {
    let mut rng = Rng(seed);
    let mut ranges = Vec::new();
    let mut offset = 0;
    while offset < image {
        let len = ((1 + rng.below(7)) * BLOCK).min(image - offset);
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
pub fn parse_ack(line: &str) -> Option<(u64, u64)> {
    let rest = line.strip_prefix("wrote ")?;
    let (counts, offset) = rest.split_once(" bytes at offset ")?;
    let (done, total) = counts.split_once('/')?;
    let done: u64 = done.parse().ok()?;
    if done != total.parse::<u64>().ok()? {
        return None;
    }
    Some((done, offset.trim().parse().ok()?))
}

/// qemu-io running a plan against an export; killed (with its process group) when dropped.
pub struct WriteStream {
    child: Child,
    acks: mpsc::Receiver<(u64, u64)>,
    reader: Option<std::thread::JoinHandle<()>>,
    by_offset: HashMap<u64, Write>,
    pub writes: Vec<Write>,
    /// Every acknowledged write, in the order qemu-io reported it.
    pub journal: Vec<Write>,
}

impl Drop for WriteStream {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl WriteStream {
    /// Starts qemu-io on `nbd+unix:///<export>?socket=<sock>` with the plan for `seed` over `image` bytes.
    pub fn start(sock: &Path, export: &str, seed: u64, image: u64) -> std::io::Result<WriteStream> {
        let writes = plan(seed, image);
        // stdbuf -oL: qemu-io's acks reach the pipe as they happen, not in 4 KiB bursts.
        let mut qemu = Command::new("stdbuf");
        qemu.args(["-oL", "qemu-io", "-f", "raw"]).arg(format!("nbd+unix:///{export}?socket={}", sock.display()));
        for c in script(&writes) {
            qemu.args(["-c", &c]);
        }
        qemu.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null()).process_group(0);
        let mut child = qemu.spawn()?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("qemu-io stdout"))?;
        let (tx, acks) = mpsc::channel();
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
        let by_offset = writes.iter().map(|w| (w.offset, *w)).collect();
        Ok(WriteStream { child, acks, reader: Some(reader), by_offset, writes, journal: Vec::new() })
    }

    /// Journals acks until `n` writes are acknowledged in all (true), qemu-io ends (false), or `timeout`.
    pub fn wait_acked(&mut self, n: usize, timeout: Duration) -> Result<bool, String> {
        let deadline = Instant::now() + timeout;
        while self.journal.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.acks.recv_timeout(left) {
                Ok(ack) => self.journal_ack(ack)?,
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(false),
                Err(mpsc::RecvTimeoutError::Timeout) => return Err(format!("qemu-io: no ack within {timeout:?}")),
            }
        }
        Ok(true)
    }

    /// Journals the remaining acks until qemu-io's output ends (its writes fail once the export is gone).
    pub fn drain(&mut self, timeout: Duration) -> Result<(), String> {
        self.wait_acked(usize::MAX, timeout)?;
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        Ok(())
    }

    fn journal_ack(&mut self, (len, offset): (u64, u64)) -> Result<(), String> {
        let w = self.by_offset.get(&offset).copied();
        let w = w.ok_or_else(|| format!("qemu-io acked a write at offset {offset} that was never issued"))?;
        if len != w.len {
            return Err(format!("qemu-io acked {len} bytes at offset {offset}, write #{} has {}", w.index, w.len));
        }
        self.journal.push(w);
        Ok(())
    }
}

/// What [`check`] found among the writes that were not acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unacked {
    /// Wholly on the standby.
    pub landed: usize,
    /// In part, in whole sectors.
    pub partial: usize,
}

/// Checks the standby's `data` against the plan and the journal (see the module doc). `data` started as zeroes.
pub fn check(data: &[u8], writes: &[Write], journal: &[Write]) -> Result<Unacked, String> {
    let mut acked = vec![false; writes.len()];
    for w in journal {
        acked[w.index] = true;
        let range = &data[w.offset as usize..(w.offset + w.len) as usize];
        if let Some(i) = range.iter().position(|b| *b != w.pattern) {
            let good = range.iter().filter(|b| **b == w.pattern).count();
            return Err(format!(
                "acked write #{} ({} bytes at offset {}, pattern {:#04x}) is not on the standby: byte {} is {:#04x} \
                 ({good} of {} bytes hold the pattern)",
                w.index,
                w.len,
                w.offset,
                w.pattern,
                w.offset as usize + i,
                range[i],
                w.len
            ));
        }
    }
    let mut out = Unacked::default();
    for w in writes.iter().filter(|w| !acked[w.index]) {
        let range = &data[w.offset as usize..(w.offset + w.len) as usize];
        let (mut seen_new, mut seen_old) = (false, false);
        for (s, sector) in range.chunks(SECTOR).enumerate() {
            if sector.iter().all(|b| *b == w.pattern) {
                seen_new = true;
            } else if sector.iter().all(|b| *b == 0) {
                seen_old = true;
            } else {
                return Err(format!(
                    "unacked write #{} ({} bytes at offset {}, pattern {:#04x}) left a torn sector at offset {}",
                    w.index,
                    w.len,
                    w.offset,
                    w.pattern,
                    w.offset as usize + s * SECTOR
                ));
            }
        }
        match (seen_new, seen_old) {
            (true, true) => out.partial += 1,
            (true, false) => out.landed += 1,
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_lines_are_parsed() {
        assert_eq!(parse_ack("wrote 4096/4096 bytes at offset 8192"), Some((4096, 8192)));
        assert_eq!(parse_ack("wrote 0/4096 bytes at offset 8192"), None);
        assert_eq!(parse_ack("4 KiB, 1 ops; 00.00 sec (1 MiB/sec and 250 ops/sec)"), None);
    }

    #[test]
    fn the_plan_tiles_the_image_once() {
        let writes = plan(7, 1 << 20);
        let mut covered: Vec<(u64, u64)> = writes.iter().map(|w| (w.offset, w.len)).collect();
        covered.sort_unstable();
        let mut next = 0;
        for (offset, len) in covered {
            assert_eq!(offset, next);
            next += len;
        }
        assert_eq!(next, 1 << 20);
        assert!(writes.iter().all(|w| w.pattern != 0));
    }

    #[test]
    fn check_names_a_lost_ack_and_a_torn_sector() {
        let writes = plan(3, 64 * 1024);
        let mut data = vec![0u8; 64 * 1024];
        let w = writes[0];
        assert!(check(&data, &writes, &[w]).is_err_and(|e| e.contains("is not on the standby")));
        data[w.offset as usize..(w.offset + w.len) as usize].fill(w.pattern);
        assert_eq!(check(&data, &writes, &[w]), Ok(Unacked::default()));
        let v = writes[1];
        data[v.offset as usize + 100] = v.pattern;
        assert!(check(&data, &writes, &[w]).is_err_and(|e| e.contains("torn sector")));
    }
}
