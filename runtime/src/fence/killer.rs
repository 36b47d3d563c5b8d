//! Killing what runs in a cgroup (v2), without the help of the process that started it: `cgroup.kill` (Linux 5.14+)
//! SIGKILLs every process of the cgroup and its descendants at once; on older kernels each pid of `cgroup.procs`
//! gets SIGKILL until none is left. Done when `cgroup.events` says `populated 0` (or `cgroup.procs` is empty).

use std::path::Path;
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process};

/// How often the kill loop re-reads the cgroup while waiting for it to empty.
const POLL: Duration = Duration::from_millis(1);

/// Why a cgroup could not be emptied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KillError {
    #[error("cgroup {path}: still populated {waited:?} after SIGKILL ({left})")]
    StillPopulated { path: String, waited: Duration, left: String },
    #[error("cgroup {path}: {detail}")]
    Io { path: String, detail: String },
}

impl KillError {
    pub fn code(&self) -> &'static str {
        match self {
            KillError::StillPopulated { .. } => "TDM-FNC-020",
            KillError::Io { .. } => "TDM-FNC-021",
        }
    }
}

/// Whether anything still runs in the cgroup (descendants included when the kernel says so).
pub fn populated(dir: &Path) -> std::io::Result<bool> {
    match std::fs::read_to_string(dir.join("cgroup.events")) {
        Ok(events) => Ok(events.lines().any(|l| l.trim() == "populated 1")),
        Err(_) => Ok(!std::fs::read_to_string(dir.join("cgroup.procs"))?.trim().is_empty()),
    }
}

fn procs(dir: &Path) -> Vec<i32> {
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
        .unwrap_or_default()
}

/// SIGKILLs everything in cgroup `dir` and waits up to `wait` until it is empty. A cgroup that does not exist runs
/// nothing (systemd removes a unit's cgroup once the unit stopped): success.
pub fn kill_cgroup(dir: &Path, wait: Duration) -> Result<(), KillError> {
    let io = |e: std::io::Error| KillError::Io { path: dir.display().to_string(), detail: e.to_string() };
    if !dir.exists() {
        return Ok(());
    }
    let start = Instant::now();
    let whole = std::fs::write(dir.join("cgroup.kill"), b"1").is_ok();
    loop {
        if !whole {
            for pid in procs(dir) {
                if let Some(pid) = Pid::from_raw(pid) {
                    // ESRCH: it died meanwhile. Anything else shows as "still populated" below.
                    let _ = kill_process(pid, Signal::KILL);
                }
            }
        }
        match populated(dir) {
            Ok(false) => return Ok(()),
            Ok(true) => {}
            // The cgroup went away (its unit stopped): nothing runs there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io(e)),
        }
        if start.elapsed() >= wait {
            let left = procs(dir);
            return Err(KillError::StillPopulated {
                path: dir.display().to_string(),
                waited: wait,
                left: format!("pids {left:?}"),
            });
        }
        std::thread::sleep(POLL);
    }
}

/// Where the cgroup v2 hierarchy is mounted on this machine (`/sys/fs/cgroup` on a systemd host of today,
/// `/sys/fs/cgroup/unified` in the hybrid layout), from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<std::path::PathBuf> {
    cgroup2_mounts().into_iter().next()
}

/// Every cgroup2 mount point of this process's mount namespace, in mount order.
pub fn cgroup2_mounts() -> Vec<std::path::PathBuf> {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    info.lines()
        .filter_map(|l| {
            // "36 25 0:30 / /sys/fs/cgroup rw,... shared:9 - cgroup2 cgroup2 rw,..."
            let (left, right) = l.split_once(" - ")?;
            (right.split(' ').next()? == "cgroup2").then(|| left.split(' ').nth(4).map(std::path::PathBuf::from))?
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_cgroup_runs_nothing() {
        assert_eq!(kill_cgroup(Path::new("/nonexistent/tandem-test-cgroup"), Duration::from_millis(10)), Ok(()));
    }

    /// A real cgroup when this machine lets us make one (root, cgroup2 mounted); otherwise says why and passes.
    #[test]
    fn kills_every_process_of_a_cgroup() {
        let Some(root) = cgroup2_mount() else {
            eprintln!("no cgroup2 mount here: skipped");
            return;
        };
        let dir = root.join(format!("tandem-killer-test-{}", std::process::id()));
        if std::fs::create_dir(&dir).is_err() {
            eprintln!("cannot create a cgroup under {} (not root?): skipped", root.display());
            return;
        }
        let mut children = Vec::new();
        for _ in 0..3 {
            let child = std::process::Command::new("sleep").arg("60").spawn().expect("sleep");
            std::fs::write(dir.join("cgroup.procs"), child.id().to_string()).expect("move into the cgroup");
            children.push(child);
        }
        assert!(populated(&dir).expect("read"));
        assert_eq!(kill_cgroup(&dir, Duration::from_secs(2)), Ok(()));
        for mut c in children {
            let status = c.wait().expect("reap");
            assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9));
        }
        assert!(!populated(&dir).expect("read"));
        std::fs::remove_dir(&dir).expect("remove the test cgroup");
    }
}
