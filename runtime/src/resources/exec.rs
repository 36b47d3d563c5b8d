//! `resource "exec"` at run time: an OCF-style agent around the configured shell commands.
//!
//! Each command runs as `/bin/sh -c COMMAND` in a process group of its own, with stdin from /dev/null, its output
//! captured (the last [`OUTPUT_LINES`] lines go into error messages, every line into tandemd's log at debug level)
//! and its action's timeout; on timeout the whole process group is killed. Exit codes follow OCF: see
//! [`ExecResource`] and docs/group-resources.md.
//!
//! Without a `probe` command the resource tracks its own state in a marker file,
//! `<state_dir>/<group>/<resource>.active`, written (and fsync'd) after a successful start and removed after a
//! successful stop. The marker records the kernel's boot id: a marker left by an earlier boot reads as stopped.

use std::collections::VecDeque;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Command;
use tokio::task::JoinHandle;

use super::{
    CODE_EXIT, CODE_SPAWN, CODE_STATE_DIR, CODE_STILL_RUNNING, CODE_TIMEOUT, ErrorClass, GroupResource, Invocation,
    Probe, ResourceContext, ResourceError,
};
use crate::config::Exec;

/// Lines of a command's output kept for the error message.
pub const OUTPUT_LINES: usize = 20;
/// Longest output line kept, in bytes; the rest of a longer line is dropped.
const MAX_LINE: usize = 512;
/// After a command exited, how long to wait for the end of its output. A background process the command started
/// may keep the pipes open; its output is then still forwarded to the log, but the call does not wait for it.
const OUTPUT_GRACE: Duration = Duration::from_millis(250);
/// Where Linux publishes the id of the current boot.
const BOOT_ID_PATH: &str = "/proc/sys/kernel/random/boot_id";

/// OCF_ERR_INSTALLED: the application is not installed on this node.
pub const OCF_NOT_INSTALLED: i32 = 5;
/// OCF_ERR_CONFIGURED: the configuration is wrong (on every node).
pub const OCF_NOT_CONFIGURED: i32 = 6;
/// OCF_NOT_RUNNING: the probe's "stopped".
pub const OCF_NOT_RUNNING: i32 = 7;
/// What `sh` exits with when the command is not executable / not found.
const SH_NOT_EXECUTABLE: i32 = 126;
const SH_NOT_FOUND: i32 = 127;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Start,
    Stop,
    Probe,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Action::Start => "start",
            Action::Stop => "stop",
            Action::Probe => "probe",
        }
    }

    /// The class of a failure that retrying on this node will not cure (command missing, no shell, no state
    /// directory): fail over after a start, escalate after a stop. A probe only reports: always soft.
    fn local_failure_class(self) -> ErrorClass {
        match self {
            Action::Start | Action::Stop => ErrorClass::Hard,
            Action::Probe => ErrorClass::Soft,
        }
    }

    /// OCF: a start that times out may be retried; a stop that times out leaves the application in an unknown
    /// state, which must escalate.
    fn timeout_class(self) -> ErrorClass {
        match self {
            Action::Start | Action::Probe => ErrorClass::Soft,
            Action::Stop => ErrorClass::Hard,
        }
    }
}

/// The `exec` resource. Start/stop exit codes: 0 ok, 5 (not installed) hard, 6 (not configured) fatal,
/// 126/127 (not executable / not found, from `sh`) hard, anything else (or a signal) soft; a timeout is soft for
/// start and hard for stop. Probe: 0 running, 7 stopped, anything else a soft error ("failed").
pub struct ExecResource {
    name: String,
    group: String,
    config: Exec,
    /// The config env for this node, then the fixed TANDEM_* variables.
    env: Vec<(String, String)>,
    marker: PathBuf,
    boot_id: Option<String>,
    /// Serialises start and stop (each is probe-then-act).
    actions: tokio::sync::Mutex<()>,
}

impl ExecResource {
    pub fn new(name: &str, config: &Exec, cx: &ResourceContext) -> ExecResource {
        let mut env: Vec<(String, String)> = config.env_for(&cx.node).into_iter().collect();
        env.push(("TANDEM_CLUSTER".into(), cx.cluster.clone()));
        env.push(("TANDEM_GROUP".into(), cx.group.clone()));
        env.push(("TANDEM_RESOURCE".into(), name.to_string()));
        env.push(("TANDEM_NODE".into(), cx.node.clone()));
        let boot_id =
            std::fs::read_to_string(BOOT_ID_PATH).ok().map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
        ExecResource {
            name: name.to_string(),
            group: cx.group.clone(),
            config: config.clone(),
            env,
            marker: marker_path(&cx.state_dir, &cx.group, name),
            boot_id,
            actions: tokio::sync::Mutex::new(()),
        }
    }

    /// The marker file of a resource without a probe command.
    pub fn marker(&self) -> &Path {
        &self.marker
    }

    fn error(&self, class: ErrorClass, code: &'static str, what: impl std::fmt::Display) -> ResourceError {
        ResourceError::new(class, code, format!("exec resource {}/{}: {what}", self.group, self.name))
    }

    fn timeout(&self, action: Action) -> Duration {
        match action {
            Action::Start => self.config.start_timeout,
            Action::Stop => self.config.stop_timeout,
            Action::Probe => self.config.probe_timeout,
        }
    }

    /// Runs `command` for `action`; Ok when it exited (with any status) within the timeout.
    async fn run(&self, action: Action, command: &str, inv: &Invocation) -> Result<Finished, ResourceError> {
        let timeout = self.timeout(action);
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(command)
            .process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("TANDEM_ACTION", action.as_str());
        match inv.lease_token {
            Some(token) => cmd.env("TANDEM_LEASE_TOKEN", token.to_string()),
            None => cmd.env_remove("TANDEM_LEASE_TOKEN"),
        };
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| {
            self.error(
                action.local_failure_class(),
                CODE_SPAWN,
                format!("cannot run /bin/sh for {}: {e}", action.as_str()),
            )
        })?;
        // The child leads its own group, so its pid is the group id; it stays reserved until the child is reaped.
        let mut guard = GroupKill { pgid: child.id() };
        let tail = Arc::new(Mutex::new(VecDeque::new()));
        let label = Label { group: self.group.clone(), resource: self.name.clone(), action: action.as_str() };
        let mut readers = Vec::new();
        if let Some(out) = child.stdout.take() {
            readers.push(spawn_reader(out, "stdout", label.clone(), tail.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.push(spawn_reader(err, "stderr", label, tail.clone()));
        }
        let waited = tokio::time::timeout(timeout, child.wait()).await;
        let status = match waited {
            Ok(Ok(status)) => {
                // Background processes the command started (a daemon) stay: only a timeout kills the group.
                guard.disarm();
                status
            }
            Ok(Err(e)) => {
                guard.kill().await;
                let _ = child.kill().await;
                return Err(self.error(
                    action.local_failure_class(),
                    CODE_SPAWN,
                    format!("waiting for the {} command failed: {e}", action.as_str()),
                ));
            }
            Err(_) => {
                guard.kill().await;
                let _ = child.kill().await;
                let output = collect(readers, &tail).await;
                return Err(self.error(
                    action.timeout_class(),
                    CODE_TIMEOUT,
                    format!(
                        "the {} command did not finish within {timeout:?}; its process group was killed{}",
                        action.as_str(),
                        describe(&output)
                    ),
                ));
            }
        };
        let output = collect(readers, &tail).await;
        Ok(Finished { status, output, elapsed: started.elapsed() })
    }

    /// The error for a start or stop that exited non-zero.
    fn exit_error(&self, action: Action, finished: &Finished) -> ResourceError {
        let verb = action.as_str();
        let (class, code, what) = match finished.status.code() {
            Some(SH_NOT_FOUND) => {
                (action.local_failure_class(), CODE_SPAWN, format!("the {verb} command was not found (status 127)"))
            }
            Some(SH_NOT_EXECUTABLE) => {
                (action.local_failure_class(), CODE_SPAWN, format!("the {verb} command is not executable (status 126)"))
            }
            Some(OCF_NOT_INSTALLED) => (
                ErrorClass::Hard,
                CODE_EXIT,
                format!("the {verb} command exited with status 5 (OCF: not installed on this node)"),
            ),
            Some(OCF_NOT_CONFIGURED) => {
                (ErrorClass::Fatal, CODE_EXIT, format!("the {verb} command exited with status 6 (OCF: not configured)"))
            }
            Some(status) => (ErrorClass::Soft, CODE_EXIT, format!("the {verb} command exited with status {status}")),
            None => (
                ErrorClass::Soft,
                CODE_EXIT,
                format!("the {verb} command was killed by signal {}", finished.status.signal().unwrap_or(0)),
            ),
        };
        let class = if action == Action::Probe { ErrorClass::Soft } else { class };
        self.error(class, code, format!("{what} after {:?}{}", finished.elapsed, describe(&finished.output)))
    }

    /// Runs start or stop; Ok on exit 0.
    async fn act(&self, action: Action, command: &str, inv: &Invocation) -> Result<(), ResourceError> {
        let finished = self.run(action, command, inv).await?;
        if finished.status.success() {
            tracing::info!(
                group = %self.group, resource = %self.name, action = action.as_str(), elapsed = ?finished.elapsed,
                "exec command succeeded"
            );
            Ok(())
        } else {
            Err(self.exit_error(action, &finished))
        }
    }

    async fn run_probe(&self, command: &str, inv: &Invocation) -> Result<Probe, ResourceError> {
        let finished = self.run(Action::Probe, command, inv).await?;
        match finished.status.code() {
            Some(0) => Ok(Probe::Running),
            Some(OCF_NOT_RUNNING) => Ok(Probe::Stopped),
            _ => Err(self.exit_error(Action::Probe, &finished)),
        }
    }

    fn state_dir_error(&self, class: ErrorClass, what: &str, path: &Path, e: &io::Error) -> ResourceError {
        self.error(
            class,
            CODE_STATE_DIR,
            format!(
                "{what} {}: {e}; make the state directory writable by tandemd (it records there that the resource \
                 is active)",
                path.display()
            ),
        )
    }

    /// The state recorded by the marker file.
    async fn marker_state(&self, class: ErrorClass) -> Result<Probe, ResourceError> {
        match tokio::fs::read_to_string(&self.marker).await {
            Ok(content) => {
                let recorded = content.lines().find_map(|l| l.strip_prefix("boot_id="));
                match (recorded, &self.boot_id) {
                    (Some(recorded), Some(current)) if recorded != current => {
                        tracing::info!(
                            group = %self.group, resource = %self.name, marker = %self.marker.display(),
                            "the marker was written before the last reboot: stopped"
                        );
                        Ok(Probe::Stopped)
                    }
                    _ => Ok(Probe::Running),
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Probe::Stopped),
            Err(e) => Err(self.state_dir_error(class, "cannot read the marker", &self.marker, &e)),
        }
    }

    fn marker_tmp(&self) -> PathBuf {
        let mut name = std::ffi::OsString::from(".");
        name.push(self.marker.file_name().unwrap_or_default());
        name.push(".tmp");
        self.marker.with_file_name(name)
    }

    fn marker_dir(&self) -> &Path {
        self.marker.parent().unwrap_or_else(|| Path::new("/"))
    }

    /// Before running start: the marker's directory exists and a file can be created in it.
    async fn prepare_marker(&self) -> Result<(), ResourceError> {
        let dir = self.marker_dir();
        tokio::fs::create_dir_all(dir)
            .await
            .map_err(|e| self.state_dir_error(ErrorClass::Hard, "cannot create", dir, &e))?;
        let tmp = self.marker_tmp();
        tokio::fs::File::create(&tmp)
            .await
            .map_err(|e| self.state_dir_error(ErrorClass::Hard, "cannot create a file in", dir, &e))?;
        Ok(())
    }

    async fn write_marker(&self, inv: &Invocation) -> io::Result<()> {
        let tmp = self.marker_tmp();
        let started = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
        let mut content = format!("started_unix={started}\n");
        if let Some(boot_id) = &self.boot_id {
            content.push_str(&format!("boot_id={boot_id}\n"));
        }
        if let Some(token) = inv.lease_token {
            content.push_str(&format!("lease_token={token}\n"));
        }
        let mut file = tokio::fs::File::create(&tmp).await?;
        file.write_all(content.as_bytes()).await?;
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&tmp, &self.marker).await?;
        sync_dir(self.marker_dir()).await
    }

    async fn remove_marker(&self) -> io::Result<()> {
        match tokio::fs::remove_file(&self.marker).await {
            Ok(()) => sync_dir(self.marker_dir()).await,
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    async fn start_tracked(&self, inv: &Invocation) -> Result<(), ResourceError> {
        if self.marker_state(ErrorClass::Hard).await? == Probe::Running {
            tracing::debug!(group = %self.group, resource = %self.name, "start: already running (marker)");
            return Ok(());
        }
        self.prepare_marker().await?;
        if let Err(e) = self.act(Action::Start, &self.config.start, inv).await {
            let _ = tokio::fs::remove_file(self.marker_tmp()).await;
            return Err(e);
        }
        self.write_marker(inv).await.map_err(|e| {
            // Started but untracked: a later stop would see "stopped" and skip the stop command, so an operator
            // must look.
            self.state_dir_error(ErrorClass::Fatal, "the start succeeded, but tandemd cannot write", &self.marker, &e)
        })
    }

    async fn stop_tracked(&self, inv: &Invocation) -> Result<(), ResourceError> {
        if self.marker_state(ErrorClass::Hard).await? == Probe::Stopped {
            // Also clears a marker left by an earlier boot.
            let _ = self.remove_marker().await;
            tracing::debug!(group = %self.group, resource = %self.name, "stop: already stopped (marker)");
            return Ok(());
        }
        if let Some(stop) = &self.config.stop {
            self.act(Action::Stop, stop, inv).await?;
        }
        self.remove_marker().await.map_err(|e| {
            self.state_dir_error(ErrorClass::Hard, "the resource stopped, but tandemd cannot remove", &self.marker, &e)
        })
    }

    async fn start_probed(&self, probe: &str, inv: &Invocation) -> Result<(), ResourceError> {
        match self.run_probe(probe, inv).await {
            Ok(Probe::Running) => {
                tracing::debug!(group = %self.group, resource = %self.name, "start: already running (probe)");
                return Ok(());
            }
            Ok(Probe::Stopped) => {}
            Err(e) => tracing::warn!(group = %self.group, resource = %self.name, "start: probe failed, starting: {e}"),
        }
        self.act(Action::Start, &self.config.start, inv).await
    }

    async fn stop_probed(&self, probe: &str, inv: &Invocation) -> Result<(), ResourceError> {
        let state = self.run_probe(probe, inv).await;
        if state == Ok(Probe::Stopped) {
            tracing::debug!(group = %self.group, resource = %self.name, "stop: already stopped (probe)");
            return Ok(());
        }
        match (&self.config.stop, state) {
            (Some(stop), _) => self.act(Action::Stop, stop, inv).await,
            (None, Ok(_)) => Err(self.error(
                ErrorClass::Hard,
                CODE_STILL_RUNNING,
                "the probe reports it running and there is no stop command; add a stop command",
            )),
            (None, Err(e)) => {
                tracing::warn!(group = %self.group, resource = %self.name, "stop: no stop command; probe failed: {e}");
                Ok(())
            }
        }
    }
}

#[async_trait::async_trait]
impl GroupResource for ExecResource {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "exec"
    }

    async fn start(&self, inv: &Invocation) -> Result<(), ResourceError> {
        let _serial = self.actions.lock().await;
        match &self.config.probe {
            Some(probe) => self.start_probed(probe, inv).await,
            None => self.start_tracked(inv).await,
        }
    }

    async fn stop(&self, inv: &Invocation) -> Result<(), ResourceError> {
        let _serial = self.actions.lock().await;
        match &self.config.probe {
            Some(probe) => self.stop_probed(probe, inv).await,
            None => self.stop_tracked(inv).await,
        }
    }

    async fn probe(&self, inv: &Invocation) -> Result<Probe, ResourceError> {
        match &self.config.probe {
            Some(probe) => self.run_probe(probe, inv).await,
            None => self.marker_state(ErrorClass::Soft).await,
        }
    }
}

/// `<state_dir>/<group>/<resource>.active`
pub fn marker_path(state_dir: &Path, group: &str, resource: &str) -> PathBuf {
    state_dir.join(group).join(format!("{resource}.active"))
}

async fn sync_dir(dir: &Path) -> io::Result<()> {
    tokio::fs::File::open(dir).await?.sync_all().await
}

struct Finished {
    status: ExitStatus,
    output: Vec<String>,
    elapsed: Duration,
}

/// "; last output: a | b" or "; no output".
fn describe(output: &[String]) -> String {
    if output.is_empty() { "; no output".to_string() } else { format!("; last output: {}", output.join(" | ")) }
}

/// SIGKILL to every process of group `pgid`, with the shell's `kill` (no unsafe code, no procps needed). This
/// spelling works with dash's, bash's and procps' `kill` (dash rejects `kill -KILL -- -PGID`).
fn kill_group_script(pgid: u32) -> String {
    format!("kill -s KILL -- -{pgid}")
}

/// Kills a command's process group unless disarmed: on timeout, and when the call is cancelled (dropped).
struct GroupKill {
    pgid: Option<u32>,
}

impl GroupKill {
    fn disarm(&mut self) {
        self.pgid = None;
    }

    async fn kill(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let status = Command::new("/bin/sh")
                .args(["-c", &kill_group_script(pgid)])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .await;
            if !matches!(status, Ok(s) if s.success()) {
                tracing::warn!(pgid, "killing the process group failed: {status:?}");
            }
        }
    }
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = std::process::Command::new("/bin/sh")
                .args(["-c", &kill_group_script(pgid)])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[derive(Clone)]
struct Label {
    group: String,
    resource: String,
    action: &'static str,
}

type Tail = Arc<Mutex<VecDeque<String>>>;

/// Reads `stream` to its end, line by line, into `tail` and the log.
fn spawn_reader<R>(mut stream: R, stream_name: &'static str, label: Label, tail: Tail) -> JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = LineSplitter::default();
        let mut buf = [0u8; 4096];
        let mut emit = |line: String| {
            tracing::debug!(
                group = %label.group, resource = %label.resource, action = label.action, stream = stream_name,
                "{line}"
            );
            let mut tail = tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            if tail.len() == OUTPUT_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        };
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => lines.push(&buf[..n], &mut emit),
            }
        }
        lines.finish(&mut emit);
    })
}

/// Waits (briefly) for the readers to reach the end of the output, then returns the lines kept so far. Readers
/// still running go on forwarding to the log (dropping them would close the pipes under a background process).
async fn collect(readers: Vec<JoinHandle<()>>, tail: &Tail) -> Vec<String> {
    let _ = tokio::time::timeout(OUTPUT_GRACE, async {
        for reader in readers {
            let _ = reader.await;
        }
    })
    .await;
    tail.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).iter().cloned().collect()
}

/// Splits a byte stream into lines (without `\n` / `\r\n`), keeping at most [`MAX_LINE`] bytes of each.
#[derive(Default)]
struct LineSplitter {
    line: Vec<u8>,
}

impl LineSplitter {
    fn push(&mut self, bytes: &[u8], emit: &mut impl FnMut(String)) {
        for &b in bytes {
            if b == b'\n' {
                self.flush(emit);
            } else if self.line.len() < MAX_LINE {
                self.line.push(b);
            }
        }
    }

    fn finish(&mut self, emit: &mut impl FnMut(String)) {
        if !self.line.is_empty() {
            self.flush(emit);
        }
    }

    fn flush(&mut self, emit: &mut impl FnMut(String)) {
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        emit(String::from_utf8_lossy(&self.line).into_owned());
        self.line.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(dir: &Path, exec: Exec) -> ExecResource {
        let cx =
            ResourceContext { cluster: "c".into(), group: "g".into(), node: "a".into(), state_dir: dir.to_path_buf() };
        ExecResource::new("app", &exec, &cx)
    }

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut out = Vec::new();
        let mut s = LineSplitter::default();
        for c in chunks {
            s.push(c, &mut |l| out.push(l));
        }
        s.finish(&mut |l| out.push(l));
        out
    }

    #[test]
    fn output_is_split_into_lines_across_chunks() {
        assert_eq!(split(&[b"one\ntw", b"o\r\nthree"]), vec!["one", "two", "three"]);
    }

    #[test]
    fn long_output_lines_are_truncated() {
        let long = vec![b'x'; MAX_LINE * 3];
        let lines = split(&[&long, b"\nnext\n"]);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].len(), MAX_LINE);
        assert_eq!(lines[1], "next");
    }

    #[tokio::test]
    async fn error_message_keeps_the_last_output_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        // One pipe (2>&1), so that the order of the lines is deterministic.
        let script = "exec 2>&1; i=1; while [ $i -le 30 ]; do echo line$i; i=$((i+1)); done; echo oops >&2; exit 3";
        let r = resource(dir.path(), Exec::new(script));
        let e = r.start(&Invocation::default()).await.expect_err("exit 3 fails");
        assert_eq!((e.class, e.code()), (ErrorClass::Soft, "TDM-RES-004"));
        assert!(e.message.contains("exited with status 3"), "{e}");
        assert!(
            e.message.ends_with(
                "last output: line12 | line13 | line14 | line15 | line16 | line17 | line18 | \
            line19 | line20 | line21 | line22 | line23 | line24 | line25 | line26 | line27 | line28 | line29 | \
            line30 | oops"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn stderr_is_captured() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = resource(dir.path(), Exec::new("echo to-stderr >&2; exit 1"));
        let e = r.start(&Invocation::default()).await.expect_err("exit 1 fails");
        assert!(e.message.ends_with("last output: to-stderr"), "{e}");
    }

    #[tokio::test]
    async fn marker_from_an_earlier_boot_reads_as_stopped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = resource(dir.path(), Exec::new("true"));
        if r.boot_id.is_none() {
            return; // no boot id on this system: markers cannot go stale
        }
        std::fs::create_dir_all(r.marker_dir()).expect("mkdir");
        std::fs::write(r.marker(), "started_unix=1\nboot_id=not-this-boot\n").expect("write");
        assert_eq!(r.probe(&Invocation::default()).await, Ok(Probe::Stopped));
        r.start(&Invocation { lease_token: Some(4) }).await.expect("start");
        let marker = std::fs::read_to_string(r.marker()).expect("marker");
        assert!(marker.contains("lease_token=4"), "{marker}");
        assert_eq!(r.probe(&Invocation::default()).await, Ok(Probe::Running));
    }

    #[tokio::test]
    async fn unwritable_state_dir_fails_start_before_running_the_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, "").expect("write");
        let ran = dir.path().join("ran");
        let r = resource(&file, Exec::new(&format!("touch {}", ran.display())));
        let e = r.start(&Invocation::default()).await.expect_err("state dir is a file");
        assert_eq!((e.class, e.code()), (ErrorClass::Hard, "TDM-RES-005"));
        assert!(!ran.exists(), "the start command must not run");
    }

    #[tokio::test]
    async fn command_not_found_is_a_hard_spawn_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = resource(dir.path(), Exec::new("/nonexistent/tandem-start"));
        let e = r.start(&Invocation::default()).await.expect_err("not found");
        assert_eq!((e.class, e.code()), (ErrorClass::Hard, "TDM-RES-002"));
    }

    #[tokio::test]
    async fn probe_without_stop_command_still_running_is_hard() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut exec = Exec::new("true");
        exec.probe = Some("true".into());
        let r = resource(dir.path(), exec);
        let e = r.stop(&Invocation::default()).await.expect_err("cannot stop");
        assert_eq!((e.class, e.code()), (ErrorClass::Hard, "TDM-RES-006"));
    }
}
