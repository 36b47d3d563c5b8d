//! `monitor "custom"`: runs `command` with `/bin/sh -c`; exit status 0 is healthy, anything else (or a signal) is
//! an error carrying the last lines of the command's output (stdout and stderr, merged in order).
//!
//! The command runs in a process group of its own with stdin from /dev/null, the monitor's `env` plus
//! `TANDEM_MONITOR` and `TANDEM_NODE`, and the monitor's `timeout`: when it runs out (or the runner drops the
//! check), the whole process group is killed.

use std::collections::{BTreeMap, VecDeque};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::process::Command;

use super::{CODE_TIMEOUT, Check, Outcome};

/// The command exited with a non-zero status or was killed by a signal.
pub const CODE_CUSTOM_FAILED: &str = "TDM-MON-015";
/// The command could not be run (no /bin/sh, no pipe, not executable, not found).
pub const CODE_CUSTOM_SPAWN: &str = "TDM-MON-016";

/// Lines of output kept for the error message.
pub const OUTPUT_LINES: usize = 5;
/// Longest output line kept, in characters.
const MAX_LINE: usize = 300;
/// After the command exited, how long to wait for the end of its output (a background process it started may
/// hold the pipe open).
const OUTPUT_GRACE: Duration = Duration::from_millis(250);

pub struct CustomCheck {
    monitor: String,
    command: String,
    env: Vec<(String, String)>,
    timeout: Duration,
}

impl CustomCheck {
    pub fn new(
        monitor: &str,
        node: &str,
        command: &str,
        env: &BTreeMap<String, String>,
        timeout: Duration,
    ) -> CustomCheck {
        let mut env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.push(("TANDEM_MONITOR".into(), monitor.to_string()));
        env.push(("TANDEM_NODE".into(), node.to_string()));
        CustomCheck { monitor: monitor.to_string(), command: command.to_string(), env, timeout }
    }

    fn spawn_error(&self, what: impl std::fmt::Display) -> Outcome {
        Outcome::error(CODE_CUSTOM_SPAWN, format!("cannot run the check command of monitor {}: {what}", self.monitor))
    }
}

#[async_trait::async_trait]
impl Check for CustomCheck {
    fn kind(&self) -> &'static str {
        "custom"
    }

    async fn check(&self) -> Outcome {
        let (reader, writer) = match std::io::pipe() {
            Ok(pair) => pair,
            Err(e) => return self.spawn_error(format_args!("creating a pipe: {e}")),
        };
        let writer2 = match writer.try_clone() {
            Ok(w) => w,
            Err(e) => return self.spawn_error(format_args!("duplicating a pipe: {e}")),
        };
        let reader = match pipe::Receiver::from_owned_fd(OwnedFd::from(reader)) {
            Ok(r) => r,
            Err(e) => return self.spawn_error(format_args!("opening the output pipe: {e}")),
        };
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-c")
            .arg(&self.command)
            .process_group(0)
            .kill_on_drop(true)
            .stdin(Stdio::null())
            .stdout(Stdio::from(OwnedFd::from(writer)))
            .stderr(Stdio::from(OwnedFd::from(writer2)))
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        let spawned = cmd.spawn();
        // The command object holds the pipe's write ends: drop it so that the output ends when the command does.
        drop(cmd);
        let mut child = match spawned {
            Ok(child) => child,
            Err(e) => return self.spawn_error(format_args!("starting /bin/sh: {e}")),
        };
        let mut guard = GroupKill { pgid: child.id() };
        let mut output = tokio::spawn(read_tail(reader));
        let status = match tokio::time::timeout(self.timeout, child.wait()).await {
            Ok(Ok(status)) => {
                guard.pgid = None;
                status
            }
            Ok(Err(e)) => return self.spawn_error(format_args!("waiting for the command: {e}")),
            Err(_) => {
                drop(guard);
                let _ = child.kill().await;
                let lines = tokio::time::timeout(OUTPUT_GRACE, &mut output).await.ok().and_then(Result::ok);
                output.abort();
                return Outcome::error(
                    CODE_TIMEOUT,
                    format!(
                        "the check command did not finish within {:?}; its process group was killed{}",
                        self.timeout,
                        describe(lines.as_ref())
                    ),
                );
            }
        };
        let lines = tokio::time::timeout(OUTPUT_GRACE, &mut output).await.ok().and_then(Result::ok);
        output.abort();
        match status.code() {
            Some(0) => Outcome::Ok,
            Some(127) => self.spawn_error(format_args!("command not found (status 127){}", describe(lines.as_ref()))),
            Some(126) => {
                self.spawn_error(format_args!("command not executable (status 126){}", describe(lines.as_ref())))
            }
            Some(code) => Outcome::error(
                CODE_CUSTOM_FAILED,
                format!("the check command exited with status {code}{}", describe(lines.as_ref())),
            ),
            None => Outcome::error(
                CODE_CUSTOM_FAILED,
                format!(
                    "the check command was killed by signal {}{}",
                    status.signal().unwrap_or(0),
                    describe(lines.as_ref())
                ),
            ),
        }
    }
}

/// Reads the output to its end, keeping the last [`OUTPUT_LINES`] non-empty lines.
async fn read_tail(mut reader: pipe::Receiver) -> VecDeque<String> {
    let mut tail = VecDeque::new();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 4096];
    let push = |line: &mut Vec<u8>, tail: &mut VecDeque<String>| {
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end();
        if !text.is_empty() {
            if tail.len() == OUTPUT_LINES {
                tail.pop_front();
            }
            tail.push_back(text.chars().take(MAX_LINE).collect());
        }
        line.clear();
    };
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                for &b in &buf[..n] {
                    if b == b'\n' {
                        push(&mut line, &mut tail);
                    } else if line.len() < 4 * MAX_LINE {
                        line.push(b);
                    }
                }
            }
        }
    }
    push(&mut line, &mut tail);
    tail
}

/// "; last output: a | b", or "; no output".
fn describe(lines: Option<&VecDeque<String>>) -> String {
    match lines {
        Some(lines) if !lines.is_empty() => {
            format!("; last output: {}", lines.iter().cloned().collect::<Vec<_>>().join(" | "))
        }
        _ => "; no output".to_string(),
    }
}

/// Kills the command's process group on timeout and when the check is dropped (the runner's timeout).
struct GroupKill {
    pgid: Option<u32>,
}

impl Drop for GroupKill {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            // The shell's kill: no unsafe code; this spelling works with dash, bash and procps.
            let _ = std::process::Command::new("/bin/sh")
                .args(["-c", &format!("kill -s KILL -- -{pgid}")])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(command: &str, timeout: Duration) -> CustomCheck {
        let env = BTreeMap::from([("GREETING".to_string(), "hello".to_string())]);
        CustomCheck::new("m", "a", command, &env, timeout)
    }

    #[tokio::test]
    async fn exit_zero_is_ok_and_env_is_passed() {
        let c = check("test \"$GREETING/$TANDEM_MONITOR/$TANDEM_NODE\" = hello/m/a", Duration::from_secs(10));
        assert_eq!(c.check().await, Outcome::Ok);
    }

    #[tokio::test]
    async fn failure_keeps_the_last_lines_of_stdout_and_stderr_in_order() {
        let c = check("for i in 1 2 3 4 5 6; do echo out$i; done; echo err >&2; exit 3", Duration::from_secs(10));
        let outcome = c.check().await;
        assert_eq!(outcome.code(), Some(CODE_CUSTOM_FAILED));
        assert!(outcome.message().ends_with("status 3; last output: out3 | out4 | out5 | out6 | err"), "{outcome}");
    }

    #[tokio::test]
    async fn missing_command_is_a_spawn_error() {
        let outcome = check("/nonexistent/tandem-check", Duration::from_secs(10)).check().await;
        assert_eq!(outcome.code(), Some(CODE_CUSTOM_SPAWN), "{outcome}");
    }

    #[tokio::test]
    async fn timeout_kills_the_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("survived");
        let command = format!("echo started; (sleep 2; touch {}) & sleep 30", flag.display());
        let outcome = check(&command, Duration::from_millis(300)).check().await;
        assert_eq!(outcome.code(), Some(CODE_TIMEOUT), "{outcome}");
        assert!(outcome.message().contains("last output: started"), "{outcome}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        assert!(!flag.exists(), "a process of the check's group survived the timeout");
    }
}
