//! The fencer process: one thread, no async runtime. It waits in poll(2) for tandemd's requests or the next
//! deadline, whichever comes first, and at a deadline kills the group's cgroups itself.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags, poll};
use rustix::time::Timespec;

use super::clock::boottime_ns;
use super::fencer::Fencer;
use super::killer::kill_cgroup;
use super::protocol::{MAX_LINE, ProtocolError, Reply, Request};

/// How long a kill waits for a cgroup to empty before it counts as failed.
pub const KILL_WAIT: Duration = Duration::from_secs(2);
/// Longest single wait in poll(2) while a deadline is armed (see `serve`).
const POLL_SLICE_NS: u64 = 50_000_000;
/// Most tandemd connections served at once (tandemd uses one; a restarted tandemd opens a new one).
const MAX_CLIENTS: usize = 16;

/// Why the fencer cannot run; `code()` is stable.
#[derive(Debug, thiserror::Error)]
pub enum FencerError {
    #[error("fencer socket {path}: another fencer answers there; stop it first (systemctl stop tandem-fencer)")]
    AlreadyRunning { path: PathBuf },
    #[error("fencer socket {path}: {source}; check the directory exists and only root can write it")]
    Socket { path: PathBuf, source: std::io::Error },
    #[error("fencer: poll failed: {0}")]
    Poll(std::io::Error),
}

impl FencerError {
    pub fn code(&self) -> &'static str {
        match self {
            FencerError::AlreadyRunning { .. } => "TDM-FNC-001",
            FencerError::Socket { .. } => "TDM-FNC-002",
            FencerError::Poll(_) => "TDM-FNC-003",
        }
    }
}

fn log(text: impl std::fmt::Display) {
    eprintln!("tandem-fencer: {text}");
}

/// Binds the socket: a stale file of a dead fencer is replaced; a live fencer is an error.
pub fn bind(path: &Path) -> Result<UnixListener, FencerError> {
    let err = |source| FencerError::Socket { path: path.to_path_buf(), source };
    if path.exists() {
        if UnixStream::connect(path).is_ok() {
            return Err(FencerError::AlreadyRunning { path: path.to_path_buf() });
        }
        std::fs::remove_file(path).map_err(err)?;
    }
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(err)?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
    }
    let listener = UnixListener::bind(path).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(err)?;
    listener.set_nonblocking(true).map_err(err)?;
    Ok(listener)
}

struct Client {
    stream: UnixStream,
    buf: Vec<u8>,
    closed: bool,
}

impl Client {
    /// Reads what is there; answers every complete line.
    fn serve(&mut self, fencer: &mut Fencer) {
        let mut chunk = [0u8; 4096];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.closed = true;
                    break;
                }
            }
        }
        while let Some(end) = self.buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=end).collect();
            let replies = match Request::decode(&line) {
                Ok(req) => fencer.handle(req),
                Err(e) => vec![Reply::Err { code: e.code(), message: e.to_string() }],
            };
            self.reply(&replies);
        }
        if self.buf.len() > MAX_LINE {
            let e = ProtocolError::TooLong;
            self.reply(&[Reply::Err { code: e.code(), message: e.to_string() }]);
            self.closed = true;
        }
    }

    fn reply(&mut self, replies: &[Reply]) {
        let text: String = replies.iter().map(|r| format!("{r}\n")).collect();
        // Replies are small and the peer reads them at once; a peer that does not is dropped, not waited for.
        if self.stream.set_nonblocking(false).is_err()
            || self.stream.set_write_timeout(Some(Duration::from_millis(200))).is_err()
            || self.stream.write_all(text.as_bytes()).is_err()
            || self.stream.set_nonblocking(true).is_err()
        {
            self.closed = true;
        }
    }
}

/// Serves until the process is killed. `kill_wait`: see [`KILL_WAIT`].
pub fn serve(listener: UnixListener, kill_wait: Duration) -> Result<(), FencerError> {
    let mut fencer = Fencer::default();
    let mut clients: Vec<Client> = Vec::new();
    loop {
        // poll(2) times out on CLOCK_MONOTONIC, which stops during a suspend: wait in slices, so that a machine
        // that wakes up past a deadline is fenced within one slice.
        let timeout = fencer.next_deadline().map(|d| {
            let left = d.saturating_sub(boottime_ns()).min(POLL_SLICE_NS);
            Timespec {
                tv_sec: i64::try_from(left / 1_000_000_000).unwrap_or(i64::MAX),
                tv_nsec: i64::try_from(left % 1_000_000_000).unwrap_or(0),
            }
        });
        let ready = {
            let mut fds: Vec<PollFd> = Vec::with_capacity(clients.len() + 1);
            fds.push(PollFd::new(&listener, PollFlags::IN));
            fds.extend(clients.iter().map(|c| PollFd::new(&c.stream, PollFlags::IN)));
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) => fds.iter().map(|f| !f.revents().is_empty()).collect::<Vec<bool>>(),
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(FencerError::Poll(e.into())),
            }
        };
        if ready.first().copied().unwrap_or(false) {
            while let Ok((stream, _)) = listener.accept() {
                if clients.len() >= MAX_CLIENTS || stream.set_nonblocking(true).is_err() {
                    log("connection refused: too many clients");
                    continue;
                }
                clients.push(Client { stream, buf: Vec::new(), closed: false });
            }
        }
        for (i, c) in clients.iter_mut().enumerate() {
            if ready.get(i + 1).copied().unwrap_or(false) {
                c.serve(&mut fencer);
            }
        }
        clients.retain(|c| !c.closed);
        enforce(&mut fencer, kill_wait);
    }
}

/// Kills every group whose deadline passed.
fn enforce(fencer: &mut Fencer, kill_wait: Duration) {
    let now = boottime_ns();
    for due in fencer.due(now) {
        let mut ok = true;
        for cg in &due.cgroups {
            match kill_cgroup(Path::new(cg), kill_wait) {
                Ok(()) => {}
                Err(e) => {
                    ok = false;
                    log(format_args!("[{}] group {}: {e}", e.code(), due.group));
                }
            }
        }
        let done = boottime_ns();
        let late = fencer.deadline_of(&due.group).map_or(0, |d| now.saturating_sub(d));
        log(format_args!(
            "group {}: deadline passed without renewal; kill started {} us after the deadline, killed {:?} in {} us \
             ({})",
            due.group,
            late / 1000,
            due.cgroups,
            done.saturating_sub(now) / 1000,
            if ok { "ok" } else { "FAILED" }
        ));
        fencer.fired(&due.group, done, ok);
    }
}

/// Hardens the process for its job, best effort (each failure is logged): memory locked so that a node under
/// memory pressure cannot page the fencer out, the highest nice priority, and out of the OOM killer's reach.
pub fn harden() {
    use rustix::mm::{MlockAllFlags, mlockall};
    // ONFAULT: lock the pages the fencer touches, not the whole (shared) tandemd executable.
    if let Err(e) = mlockall(MlockAllFlags::CURRENT | MlockAllFlags::FUTURE | MlockAllFlags::ONFAULT) {
        log(format_args!("mlockall: {e} (memory not locked)"));
    }
    if let Err(e) = rustix::process::setpriority_process(None, -20) {
        log(format_args!("setpriority: {e}"));
    }
    if let Err(e) = std::fs::write("/proc/self/oom_score_adj", b"-1000") {
        log(format_args!("oom_score_adj: {e}"));
    }
    // Fault in the kill path now rather than at the deadline.
    let _ = kill_cgroup(Path::new("/nonexistent/tandem-fencer-warm-up"), Duration::ZERO);
    let _ = super::killer::populated(Path::new("/nonexistent"));
}
