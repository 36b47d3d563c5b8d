//! The application of the daemon-fault tests as it runs on a real node: a process outside tandemd's tree, in a
//! cgroup of its own (as a systemd unit's would be), one cgroup per node. A sampler thread reads every node's
//! `cgroup.events` every millisecond and records when each node's app was alive, so a test can prove that the
//! app *processes* of two nodes never lived at the same time — not only that the journal says so.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the sampler looks.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(1);

/// One node's app alive from `start` to `end` (None: still alive), as the sampler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alive {
    pub node: usize,
    pub start: Instant,
    pub end: Option<Instant>,
}

/// What the sampler saw: closed intervals, and the start of each node's open one.
#[derive(Default)]
struct Seen {
    closed: Vec<Alive>,
    open: Vec<Option<Instant>>,
}

pub struct AppCgroups {
    root: PathBuf,
    nodes: Vec<PathBuf>,
    seen: Arc<Mutex<Seen>>,
    stop: Arc<AtomicBool>,
    sampler: Option<std::thread::JoinHandle<()>>,
}

fn populated(dir: &Path) -> bool {
    std::fs::read_to_string(dir.join("cgroup.events")).is_ok_and(|t| t.lines().any(|l| l == "populated 1"))
}

impl AppCgroups {
    /// One cgroup per node under [`MOUNT`]; Err when this machine does not let us mount or write cgroup2.
    pub fn create(nodes: usize) -> Result<AppCgroups, String> {
        let mount = ensure_mount()?;
        let root = mount.join(format!("tandem-test-{}-{:x}", std::process::id(), rand_suffix()));
        std::fs::create_dir(&root).map_err(|e| format!("creating cgroup {}: {e} (root needed)", root.display()))?;
        let dirs: Vec<PathBuf> = (0..nodes).map(|i| root.join(format!("n{i}"))).collect();
        for d in &dirs {
            std::fs::create_dir(d).map_err(|e| format!("creating cgroup {}: {e}", d.display()))?;
        }
        let seen = Arc::new(Mutex::new(Seen { closed: Vec::new(), open: vec![None; nodes] }));
        let stop = Arc::new(AtomicBool::new(false));
        let (d, sn, st) = (dirs.clone(), seen.clone(), stop.clone());
        let sampler = std::thread::spawn(move || {
            while !st.load(Ordering::SeqCst) {
                for (i, dir) in d.iter().enumerate() {
                    let alive = populated(dir);
                    let now = Instant::now();
                    let Ok(mut s) = sn.lock() else { return };
                    match (alive, s.open[i]) {
                        (true, None) => s.open[i] = Some(now),
                        (false, Some(start)) => {
                            s.open[i] = None;
                            s.closed.push(Alive { node: i, start, end: Some(now) });
                        }
                        _ => {}
                    }
                }
                std::thread::sleep(SAMPLE_EVERY);
            }
        });
        Ok(AppCgroups { root, nodes: dirs, seen, stop, sampler: Some(sampler) })
    }

    /// Node i's cgroup directory (absolute).
    pub fn dir(&self, i: usize) -> &Path {
        &self.nodes[i]
    }

    pub fn alive(&self, i: usize) -> bool {
        populated(&self.nodes[i])
    }

    /// The pids in node i's cgroup.
    pub fn pids(&self, i: usize) -> Vec<u32> {
        std::fs::read_to_string(self.nodes[i].join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Kills node i's app (the instance died: everything on it goes).
    pub fn kill(&self, i: usize) {
        let _ = std::fs::write(self.nodes[i].join("cgroup.kill"), b"1");
    }

    /// Every interval seen so far; open ones (still alive) end at None.
    pub fn intervals(&self) -> Vec<Alive> {
        let Ok(s) = self.seen.lock() else { return Vec::new() };
        let mut v = s.closed.clone();
        v.extend(s.open.iter().enumerate().filter_map(|(i, o)| o.map(|start| Alive { node: i, start, end: None })));
        v
    }

    /// The overlaps between two nodes' apps: (node a, node b, how long both lived).
    pub fn overlaps(&self) -> Vec<(usize, usize, Duration)> {
        let v = self.intervals();
        let now = Instant::now();
        let mut out = Vec::new();
        for (k, a) in v.iter().enumerate() {
            for b in v.iter().skip(k + 1) {
                if a.node == b.node {
                    continue;
                }
                let start = a.start.max(b.start);
                let end = a.end.unwrap_or(now).min(b.end.unwrap_or(now));
                if end > start {
                    out.push((a.node, b.node, end - start));
                }
            }
        }
        out
    }

    /// When node i's app first became alive at or after `after` (sampled). Waits up to 100 ms for the sampler:
    /// a caller that saw the cgroup populated itself may be a sample ahead of it.
    pub fn started_after(&self, i: usize, after: Instant) -> Option<Instant> {
        self.settled(|v| v.iter().filter(|a| a.node == i && a.start >= after).map(|a| a.start).min())
    }

    /// When node i's app first died at or after `after` (sampled; waits for the sampler like `started_after`).
    pub fn died_after(&self, i: usize, after: Instant) -> Option<Instant> {
        self.settled(|v| v.iter().filter(|a| a.node == i).filter_map(|a| a.end).filter(|e| *e >= after).min())
    }

    fn settled(&self, f: impl Fn(&[Alive]) -> Option<Instant>) -> Option<Instant> {
        let until = Instant::now() + Duration::from_millis(100);
        loop {
            let found = f(&self.intervals());
            if found.is_some() || Instant::now() >= until {
                return found;
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }
}

/// Where the tests mount the cgroup2 hierarchy: `ip netns exec` mounts a fresh sysfs over /sys for the command
/// it runs, which hides /sys/fs/cgroup from tandemd, its fencer and the app; /run stays as it is.
pub const MOUNT: &str = "/run/tandem-tests/cgroup2";

fn ensure_mount() -> Result<PathBuf, String> {
    let mount = PathBuf::from(MOUNT);
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(MOUNT) && l.contains(" - cgroup2 ")));
    if !mounted {
        std::fs::create_dir_all(&mount).map_err(|e| format!("creating {MOUNT}: {e}"))?;
        let out = std::process::Command::new("mount")
            .args(["-t", "cgroup2", "cgroup2", MOUNT])
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        // Another test process may have mounted it meanwhile: check again rather than trust the exit code.
        let now = std::fs::read_to_string("/proc/self/mountinfo")
            .is_ok_and(|m| m.lines().any(|l| l.split(' ').nth(4) == Some(MOUNT) && l.contains(" - cgroup2 ")));
        if !now {
            return Err(format!("mount -t cgroup2 on {MOUNT}: {}", String::from_utf8_lossy(&out.stderr)));
        }
    }
    Ok(mount)
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

impl Drop for AppCgroups {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(s) = self.sampler.take() {
            let _ = s.join();
        }
        for d in &self.nodes {
            let _ = std::fs::write(d.join("cgroup.kill"), b"1");
        }
        for d in &self.nodes {
            for _ in 0..200 {
                if std::fs::remove_dir(d).is_ok() || !d.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        let _ = std::fs::remove_dir(&self.root);
    }
}
