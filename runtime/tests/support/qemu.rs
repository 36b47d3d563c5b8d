//! Real NBD clients for the mirror's integration tests: `qemu-io` (and `qemu-img`) from qemu-utils, run against an
//! export URL (`nbd+unix:///NAME?socket=PATH`). Included by the test crates that need it.
#![allow(dead_code)]

use std::time::Duration;

/// Longest a qemu-io run may take.
const LIMIT: Duration = Duration::from_secs(30);

/// Whether qemu-io and qemu-img are installed; prints why the test is skipped when not.
pub fn have_qemu() -> bool {
    for tool in ["qemu-io", "qemu-img"] {
        if std::process::Command::new(tool).arg("--version").output().is_err() {
            eprintln!("SKIP: {tool} is not installed (apt-get install qemu-utils)");
            return false;
        }
    }
    true
}

/// `qemu-io OPTIONS -f raw URL -c CMD …`, killed when dropped.
pub fn qemu_io_cmd(options: &[&str], url: &str, cmds: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("qemu-io");
    cmd.args(options).args(["-f", "raw", url]).kill_on_drop(true);
    for c in cmds {
        cmd.args(["-c", c]);
    }
    cmd
}

/// Runs qemu-io with extra `options` before the image (e.g. `-t writeback`: qemu-io's default cache mode,
/// writethrough, makes every write FUA) to completion within 30 s; returns (exit success, stdout + stderr).
pub async fn qemu_io_with(options: &[&str], url: &str, cmds: &[&str]) -> (bool, String) {
    let out = tokio::time::timeout(LIMIT, qemu_io_cmd(options, url, cmds).output())
        .await
        .expect("qemu-io completes within 30 s")
        .expect("run qemu-io");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// [`qemu_io_with`] without options.
pub async fn qemu_io(url: &str, cmds: &[&str]) -> (bool, String) {
    qemu_io_with(&[], url, cmds).await
}

/// qemu-io succeeded and reported no failure and no error.
pub async fn qemu_io_ok(url: &str, cmds: &[&str]) -> String {
    let (ok, text) = qemu_io(url, cmds).await;
    assert!(ok, "qemu-io failed for {cmds:?}: {text}");
    assert!(!text.contains("failed") && !text.contains("error"), "qemu-io reported a failure for {cmds:?}: {text}");
    text
}

/// Every byte of `bytes[from..from + len]` is `value`.
pub fn assert_range(bytes: &[u8], from: usize, len: usize, value: u8) {
    if let Some(i) = bytes[from..from + len].iter().position(|b| *b != value) {
        panic!("byte {} is {:#04x}, expected {value:#04x}", from + i, bytes[from + i]);
    }
}
