//! Node processes of multi-node tests: a child (usually `Testbed::command`, i.e. `ip netns exec NS program`, which
//! execs `program` in place so the pid is the program's) in its own process group, its output in a log file.
//! `kill` is the "instance died" of the tests: the program and everything it started get SIGKILL at once.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

/// How often [`wait_until`] and [`NodeProcess::terminate`] poll.
pub const POLL_INTERVAL: Duration = Duration::from_millis(10);

/// A running node; dropping it kills it (and its process group) and reaps it.
pub struct NodeProcess {
    child: Child,
    log: PathBuf,
    exit: Option<ExitStatus>,
    /// The process group got its SIGKILL after the leader was reaped: never signal the (reusable) id again.
    group_killed: bool,
}

/// How [`NodeProcess::terminate`] ended the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It exited by itself within the timeout (after SIGTERM, or before).
    Exited(ExitStatus),
    /// It ignored SIGTERM and was killed at this time.
    Killed(SystemTime),
}

impl NodeProcess {
    /// Starts `cmd` as the leader of a new process group with stdout and stderr appended to `log` (created with
    /// its parent directories); stdin is /dev/null.
    pub fn spawn(mut cmd: Command, log: PathBuf) -> io::Result<NodeProcess> {
        if let Some(dir) = log.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let out = OpenOptions::new().create(true).append(true).open(&log)?;
        let err = out.try_clone()?;
        cmd.process_group(0).stdin(Stdio::null()).stdout(out).stderr(err);
        let child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("spawning {cmd:?}: {e}")))?;
        Ok(NodeProcess { child, log, exit: None, group_killed: false })
    }

    /// The process id, also its process group id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Path of the log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// SIGKILLs the process, its process group and every descendant (found before the signal, so children that
    /// moved to their own group die too), waits until it is reaped, and returns the wall-clock time of death
    /// (taken once the signal was delivered: nothing of the node can write after it). Idempotent.
    pub fn kill(&mut self) -> SystemTime {
        if self.group_killed {
            return SystemTime::now();
        }
        let pid = self.pid();
        let mut targets: Vec<String> = vec![format!("-{pid}")];
        if self.exit.is_none() {
            targets.push(pid.to_string());
            targets.extend(descendants(pid).iter().map(u32::to_string));
        }
        signal("KILL", &targets);
        let died = SystemTime::now();
        if self.exit.is_none()
            && let Ok(status) = self.child.wait()
        {
            self.exit = Some(status);
        }
        self.group_killed = self.exit.is_some();
        died
    }

    /// SIGTERM to the process, then up to `timeout` for it to exit; SIGKILL (as [`NodeProcess::kill`]) after that.
    /// Whatever of its process group is left afterwards is killed either way.
    pub fn terminate(&mut self, timeout: Duration) -> io::Result<Ended> {
        if let Some(status) = self.exit {
            self.kill();
            return Ok(Ended::Exited(status));
        }
        signal("TERM", &[self.pid().to_string()]);
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                self.exit = Some(status);
                self.kill();
                return Ok(Ended::Exited(status));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
        Ok(Ended::Killed(self.kill()))
    }

    /// SIGSTOP to the whole process group: the node freezes (a paused VM, a long GC pause).
    pub fn pause(&self) {
        if self.group_killed {
            return;
        }
        signal("STOP", &[format!("-{}", self.pid())]);
    }

    /// SIGCONT to the whole process group.
    pub fn resume(&self) {
        if self.group_killed {
            return;
        }
        signal("CONT", &[format!("-{}", self.pid())]);
    }

    /// Whether the process has not exited yet (a paused process is running).
    pub fn is_running(&mut self) -> bool {
        if self.exit.is_some() {
            return false;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status);
                false
            }
            Ok(None) => true,
            Err(_) => false,
        }
    }

    /// The exit status, once the process has exited and been reaped.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.is_running();
        self.exit
    }

    /// The last `lines` lines of the log, for assertion messages.
    pub fn log_tail(&self, lines: usize) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => tail(&String::from_utf8_lossy(&bytes), lines),
            Err(e) => format!("(cannot read {}: {e})", self.log.display()),
        }
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// The last `lines` lines of `text`.
fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Sends `-SIG` to `targets` (pids, or `-pgid`) with the `kill` command; a target that is gone is no error.
fn signal(sig: &str, targets: &[String]) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg("--")
        .args(targets)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Every descendant of `root`, from /proc (children, grandchildren, …).
fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
            if let Some(ppid) = std::fs::read_to_string(entry.path().join("stat")).ok().and_then(|s| parent_of(&s)) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut found = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).map(Vec::as_slice).unwrap_or_default() {
            if !found.contains(&c) {
                found.push(c);
                todo.push(c);
            }
        }
    }
    found
}

/// The parent pid in a /proc/PID/stat line: "pid (comm) state ppid …" (comm may contain spaces and parentheses).
fn parent_of(stat: &str) -> Option<u32> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    after_comm.split_whitespace().nth(1)?.parse().ok()
}

/// Polls `f` every 10 ms until it returns true (then `Ok(elapsed)`) or `timeout` passes (an error naming `what`).
pub fn wait_until(timeout: Duration, what: &str, mut f: impl FnMut() -> bool) -> Result<Duration, String> {
    let start = Instant::now();
    loop {
        if f() {
            return Ok(start.elapsed());
        }
        if start.elapsed() >= timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(POLL_INTERVAL);
    }
}

/// `tandemctl --socket SOCK ARGS`, stdin closed.
pub fn tandemctl(bin: &Path, sock: &Path, args: &[&str]) -> io::Result<Output> {
    Command::new(bin).arg("--socket").arg(sock).args(args).stdin(Stdio::null()).output()
}

/// `tandemctl status --json` of the node behind `sock`; the error is tandemctl's message.
pub fn tandemctl_status(bin: &Path, sock: &Path) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let out = tandemctl(bin, sock, &["status", "--json"])?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned().into());
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parent_of_handles_parentheses_in_comm() {
        assert_eq!(parent_of("42 (a) b (c)) S 7 42 42 0"), Some(7));
        assert_eq!(parent_of("garbage"), None);
    }

    #[test]
    fn tail_returns_last_lines() {
        assert_eq!(tail("a\nb\nc\n", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    fn wait_until_names_what_timed_out() {
        let err = wait_until(Duration::from_millis(20), "the moon", || false).err().unwrap_or_default();
        assert!(err.contains("the moon"), "{err}");
        assert!(wait_until(Duration::from_secs(5), "now", || true).is_ok());
    }

    #[test]
    fn kill_takes_down_children_in_the_process_group() -> io::Result<()> {
        let dir = tempfile::tempdir()?;
        let pidfile = dir.path().join("child.pid");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(format!("sleep 300 & echo $! > {}; wait", pidfile.display()));
        let mut node = NodeProcess::spawn(cmd, dir.path().join("log"))?;
        wait_until(Duration::from_secs(10), "child pid file", || {
            std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
        })
        .map_err(io::Error::other)?;
        let child: u32 = std::fs::read_to_string(&pidfile)?.trim().parse().map_err(io::Error::other)?;
        assert!(node.is_running());
        node.kill();
        assert!(!node.is_running());
        // The orphan is reparented to init (or a subreaper) and reaped there; wait until it is gone.
        wait_until(Duration::from_secs(10), "the child to die", || !child_alive(child)).map_err(io::Error::other)?;
        Ok(())
    }

    fn child_alive(pid: u32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
    }
}
