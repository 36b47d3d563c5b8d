//! The mirror disk through tandemd (issue 7): two tandemd processes in network namespaces, each with a file as its
//! data device, replicating over TLS on the mirror-connect address; `qemu-io` writes and reads through the active
//! node's NBD export; `tandemctl mirror status|verify|resolve` drive and observe it. Faults are real: SIGKILL of
//! the active node, a partition made with nftables between the two nodes. Needs root, `ip`, `nft`, `qemu-io`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tandem_tests::ack_journal::{WriteStream, check, have_qemu_io};
use tandem_tests::cluster::{Cluster, Options, Result};
use tandem_tests::nodes::wait_until;

const MIB: u64 = 1024 * 1024;
const DISK: u64 = 16 * MIB;
/// A failover at the bed's timing (heartbeat 500 ms, ttl 1 s) plus a resource start.
const FAILOVER: Duration = Duration::from_secs(20);
/// A resync or relink (reconnect every 2 s, a 16 MiB disk).
const SYNC: Duration = Duration::from_secs(40);

fn other(i: usize) -> usize {
    1 - i
}

/// Runs qemu-io commands against the export at `sock`; the output must show no error.
fn qemu_io(sock: &Path, commands: &[String]) -> Result<String> {
    let mut cmd = Command::new("qemu-io");
    cmd.args(["-f", "raw"]).arg(format!("nbd+unix:///data?socket={}", sock.display()));
    for c in commands {
        cmd.args(["-c", c]);
    }
    let out = cmd.output()?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    if !out.status.success() || text.contains("failed") || text.contains("error") {
        return Err(format!("qemu-io {commands:?} on {}: {text}", sock.display()).into());
    }
    Ok(text)
}

fn write(sock: &Path, pattern: u8, offset: u64, len: u64) -> Result<()> {
    qemu_io(sock, &[format!("write -P {pattern} {offset} {len}")]).map(|_| ())
}

fn read_expect(sock: &Path, pattern: u8, offset: u64, len: u64) -> Result<()> {
    qemu_io(sock, &[format!("read -P {pattern} {offset} {len}")]).map(|_| ())
}

/// The bytes of a node's data file in `offset..offset+len`.
fn file_range(path: &Path, offset: u64, len: u64) -> Result<Vec<u8>> {
    let bytes = std::fs::read(path)?;
    Ok(bytes[offset as usize..(offset + len) as usize].to_vec())
}

fn all(bytes: &[u8], pattern: u8) -> bool {
    bytes.iter().all(|b| *b == pattern)
}

fn st(c: &Cluster, i: usize) -> Value {
    c.mirror_status(i).unwrap_or(Value::Null)
}

/// The primary `p` is linked, nothing is left to resync and the secondary `s` is UpToDate.
fn wait_in_sync(c: &Cluster, p: usize, s: usize, what: &str) -> Result<()> {
    let waited = wait_until(SYNC, what, || {
        let (a, b) = (st(c, p), st(c, s));
        a["link"] == "connected" && a["dirty_bytes"] == 0 && a["resyncing"] == false && b["disk"] == "UpToDate"
    });
    if let Err(e) = waited {
        return Err(format!("{e}\nprimary: {:#}\nsecondary: {:#}\n{}", st(c, p), st(c, s), c.log(p)).into());
    }
    Ok(())
}

/// Two nodes with a fresh 16 MiB mirror disk, the group on `a`, the initial full sync to `b` done. None (after a
/// printed reason) without qemu-io.
fn synced_pair() -> Result<Option<(Cluster, usize, usize)>> {
    if !have_qemu_io() {
        return Ok(None);
    }
    let c = Cluster::start(Options { mirror_bytes: DISK, ..Options::default() })?;
    let a = c.active()?;
    let b = other(a);
    wait_in_sync(&c, a, b, "the initial full sync")?;
    Ok(Some((c, a, b)))
}

fn ctl_ok(c: &Cluster, i: usize, args: &[&str]) -> Result<String> {
    let out = c.ctl(i, args)?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(format!("tandemctl {args:?} on n{i}: {}{text}", String::from_utf8_lossy(&out.stderr)).into());
    }
    Ok(text)
}

#[test]
fn a_fresh_pair_syncs_fails_over_without_losing_writes_and_resyncs_only_what_changed() -> Result<()> {
    // First start: the fresh pair's full initial sync from the first primary.
    let Some((mut c, a, b)) = synced_pair()? else { return Ok(()) };
    let s = st(&c, a);
    assert_eq!((s["role"].as_str(), s["resync_kind"].as_str()), (Some("Primary"), Some("SourceFull")), "{s:#}");
    assert_eq!(s["resync_total_bytes"], DISK, "{s:#}");

    // Protocol C: an acknowledged write is on the standby's disk.
    write(&c.mirror_export(a), 0xa1, 0, 4 * MIB)?;
    assert!(all(&file_range(&c.mirror_data(b), 0, 4 * MIB)?, 0xa1), "the standby misses acknowledged writes");

    // The active dies: the standby takes over with every acknowledged byte.
    c.kill_node(a);
    c.wait_running_on(b, FAILOVER)?;
    read_expect(&c.mirror_export(b), 0xa1, 0, 4 * MIB)?;
    // Degraded: writes go on, the returning node will need exactly these chunks.
    write(&c.mirror_export(b), 0xb2, 8 * MIB, 2 * MIB)?;
    let s = st(&c, b);
    assert_eq!((s["link"].as_str(), s["dirty_bytes"].as_u64()), (Some("degraded"), Some(2 * MIB)), "{s:#}");
    // Before that first degraded write was acknowledged, the dead node was marked outdated at b's new generation.
    let generation = s["generation"].as_u64();
    assert_eq!(c.outdated_mark("data")?, Some((format!("n{a}"), generation.unwrap_or(0))), "{s:#}");

    // The old active returns as the secondary and gets the 2 MiB it missed, not the whole disk.
    c.start_node(a)?;
    wait_in_sync(&c, b, a, "the bitmap resync of the returning node")?;
    let s = st(&c, b);
    // The chunks written while degraded, plus the extents the activity log of the crashed node names (writes
    // that may have been in flight when it died): a few MiB, never the whole disk.
    let resynced = s["resync_total_bytes"].as_u64().unwrap_or(0);
    assert_eq!(s["resync_kind"], "SourceBitmap", "{s:#}");
    assert!((2 * MIB..DISK).contains(&resynced), "resynced {resynced} bytes for 2 MiB dirty: {s:#}");
    println!("bitmap resync: {resynced} bytes resynced for {} dirty bytes", 2 * MIB);
    assert_eq!(std::fs::read(c.mirror_data(a))?, std::fs::read(c.mirror_data(b))?, "replicas differ after the resync");
    // The returning node holds b's generation now: its mark is obsolete and goes.
    wait_until(SYNC, "the obsolete Outdated mark to be cleared", || {
        c.outdated_mark("data").is_ok_and(|m| m.is_none())
    })?;

    // Online verify on the primary finds nothing to repair.
    let report = ctl_ok(&c, b, &["mirror", "verify", "data"])?;
    assert!(report.contains(" 0 differing"), "{report}");

    // And back: the group moves to its first node, which serves what was written while it was down.
    ctl_ok(&c, b, &["group", "move", "g", "--to", &format!("n{a}")])?;
    c.wait_running_on(a, FAILOVER)?;
    read_expect(&c.mirror_export(a), 0xb2, 8 * MIB, 2 * MIB)?;
    read_expect(&c.mirror_export(a), 0xa1, 0, 4 * MIB)?;
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn after_a_partition_the_outdated_replica_is_never_promoted_and_a_split_brain_is_refused_until_resolved() -> Result<()>
{
    let Some((mut c, a, b)) = synced_pair()? else { return Ok(()) };

    // Partition: the nodes cannot see each other, both still reach the lease table and the witness. The active
    // keeps the group; its next write marks the standby outdated in the lease, then goes on degraded.
    c.bed.cut(0, 1)?;
    write(&c.mirror_export(a), 0xc3, 0, MIB)?;
    assert_eq!(st(&c, a)["link"], "degraded");
    assert_eq!(c.outdated_mark("data")?.map(|m| m.0), Some(format!("n{b}")), "the cut standby is marked outdated");
    assert!(!all(&file_range(&c.mirror_data(b), 0, MIB)?, 0xc3), "the cut standby got the write");

    // The active dies during the partition. The standby wins the lease but must not promote its stale replica.
    c.kill_node(a);
    wait_until(FAILOVER, "the standby's refusal to promote", || c.log_contains(b, "TDM-MIR-060"))?;
    std::thread::sleep(Duration::from_secs(2));
    assert!(c.running()?.is_empty(), "an outdated replica was promoted: {:?}", c.running()?);
    assert!(!c.mirror_export(b).exists(), "the outdated replica is served");

    // The operator accepts the loss of a's last writes: b's replica becomes the current one and b starts.
    let text = ctl_ok(&c, b, &["mirror", "resolve", "data", "--discard", &format!("n{a}")])?;
    assert!(text.contains("given up"), "{text}");
    c.wait_running_on(b, FAILOVER)?;
    write(&c.mirror_export(b), 0xd4, 2 * MIB, MIB)?;

    // a returns with its own writes: both wrote since their common generation. Detected, refused, nothing
    // overwritten on either side.
    c.bed.heal(0, 1)?;
    c.start_node(a)?;
    wait_until(SYNC, "the split brain to be detected", || c.log_contains(b, "TDM-MIR-050"))?;
    assert!(all(&file_range(&c.mirror_data(a), 0, MIB)?, 0xc3), "a's writes were overwritten");
    assert_eq!(st(&c, b)["link"], "degraded");

    // Resolved by discarding a's data on a: a full sync from b, then both replicas are b's.
    ctl_ok(&c, a, &["mirror", "resolve", "data", "--discard", &format!("n{a}")])?;
    wait_in_sync(&c, b, a, "the full resync after the resolution")?;
    assert_eq!(st(&c, b)["resync_kind"], "SourceFull");
    assert_eq!(std::fs::read(c.mirror_data(a))?, std::fs::read(c.mirror_data(b))?, "replicas differ after resolve");
    read_expect(&c.mirror_export(b), 0xd4, 2 * MIB, MIB)?;
    c.assert_no_overlap();
    Ok(())
}

#[test]
fn sigkill_of_the_active_mid_stream_loses_no_acknowledged_write_and_tears_nothing() -> Result<()> {
    let Some((mut c, a, b)) = synced_pair()? else { return Ok(()) };
    let mut stream = WriteStream::start(&c.mirror_export(a), "data", 0x007a_4d3e, DISK)?;
    assert!(stream.wait_acked(400, SYNC)?, "qemu-io ended before 400 acks");
    // The active machine and its network die at one instant: first nothing more reaches the standby (a killed
    // process's socket would still deliver what it had queued), then the process group dies.
    c.bed.cut(0, 1)?;
    c.kill_node(a);
    let acked_before_kill = stream.journal.len();
    stream.drain(SYNC)?;
    // The standby takes over and serves exactly what was acknowledged (and, of the rest, whole sectors only).
    c.wait_running_on(b, FAILOVER)?;
    let served = c.dir().join("served.img");
    let out = Command::new("qemu-img")
        .args(["convert", "-f", "raw", "-O", "raw"])
        .arg(format!("nbd+unix:///data?socket={}", c.mirror_export(b).display()))
        .arg(&served)
        .output()?;
    assert!(out.status.success(), "qemu-img convert: {}", String::from_utf8_lossy(&out.stderr));
    let unacked = check(&std::fs::read(&served)?, &stream.writes, &stream.journal)?;
    println!(
        "{} writes issued, {acked_before_kill} acked before the SIGKILL, {} in all; of the unacked, {} landed whole, \
         {} in part (whole sectors), none torn",
        stream.writes.len(),
        stream.journal.len(),
        unacked.landed,
        unacked.partial
    );
    assert!(stream.journal.len() < stream.writes.len(), "the kill did not cut the write stream short");
    c.assert_no_overlap();
    Ok(())
}
