//! The monitor runner: one task per monitor that applies the common settings around its [`Check`].
//!
//! - `start_wait` after the monitor starts (and, with `when = "active"`, after each activation of its target);
//! - then a check every `interval`, bounded by `timeout`: a check that does not finish in time is an error
//!   ([`CODE_TIMEOUT`]) — or, for a check that calls AWS, *unknown* ([`CODE_AWS_TIMEOUT`]): a slow AWS API is not
//!   evidence that the monitored thing is broken;
//! - `when = "active"`: checks only while the target is active on this node (state `idle` otherwise; a check
//!   under way when the target becomes inactive is dropped);
//! - `unknown` outcomes follow `on_aws_error`: `recover` counts them as errors, `warn` (default) shows `unknown`
//!   and logs a warning, `ignore` shows `ok`; under `warn` and `ignore` they neither count nor reset the streak;
//! - recovery after more than `retries` consecutive errors (`retries = 1`: the second error in a row), one
//!   request per streak: the streak counter restarts after the request is sent, and the next check comes one
//!   `interval` later. `ok` and `warn` end a streak.
//! - recovery escalates along a ladder that starts at `recovery_action`: restart the resource -> fail its group
//!   over -> final action; each request takes the next step, the last step repeats. An `ok` or `warn` check (or
//!   a new activation) starts the ladder again from the beginning.
//!
//! The runner never repairs anything: it sends a [`RecoveryRequest`] to the owner of the groups.

use std::fmt;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{CODE_AWS_TIMEOUT, CODE_TIMEOUT, Check, Outcome};
use crate::config::{AwsErrorPolicy, FinalAction, MonitorSettings, RecoveryAction, RecoveryTarget, When};

pub const STATE_OK: &str = "ok";
pub const STATE_WARN: &str = "warn";
pub const STATE_ERROR: &str = "error";
pub const STATE_UNKNOWN: &str = "unknown";
/// In the start wait (after start or activation).
pub const STATE_WAITING: &str = "waiting";
/// `when = "active"` and the target is not active on this node.
pub const STATE_IDLE: &str = "idle";

/// What the monitor asks the owner of the groups to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Stop and start one resource in place.
    Restart { group: String, resource: String },
    /// Move the group to another server.
    Failover { group: String },
    /// Move every group active on this node (the monitor names no target).
    FailoverLocal,
    /// The last resort.
    Final { action: FinalAction },
}

impl fmt::Display for Recovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Recovery::Restart { group, resource } => write!(f, "restart resource {resource} of group {group}"),
            Recovery::Failover { group } => write!(f, "fail group {group} over"),
            Recovery::FailoverLocal => f.write_str("fail every group active on this node over"),
            Recovery::Final { action } => write!(f, "final action {action}"),
        }
    }
}

/// One recovery request, with what caused it (for the event log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryRequest {
    pub monitor: String,
    pub kind: &'static str,
    pub recovery: Recovery,
    /// The code and message of the check that ended the streak.
    pub code: &'static str,
    pub message: String,
    /// Length of the streak (retries + 1).
    pub failures: u32,
}

/// What status shows for one monitor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorState {
    pub name: String,
    pub kind: &'static str,
    /// ok | warn | error | unknown | waiting | idle
    pub state: &'static str,
    /// The code of the last error or unknown outcome shown.
    pub code: Option<&'static str>,
    pub message: String,
    /// Consecutive errors in the current streak.
    pub failures: u32,
    /// Checks run since the monitor started.
    pub checks: u64,
    /// Recovery requests sent since the monitor started.
    pub recoveries: u32,
}

/// A running monitor; dropping it stops the monitor.
pub struct MonitorHandle {
    state: watch::Receiver<MonitorState>,
    task: JoinHandle<()>,
}

impl MonitorHandle {
    pub fn state(&self) -> MonitorState {
        self.state.borrow().clone()
    }

    /// Every change of the state (to await a check without sleeping).
    pub fn watch(&self) -> watch::Receiver<MonitorState> {
        self.state.clone()
    }
}

impl Drop for MonitorHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The recovery steps for `target`, starting at `first`. A restart needs a resource: for a group target (or no
/// target: every local group) the ladder starts at the failover.
pub fn ladder(target: &RecoveryTarget, first: RecoveryAction, final_action: FinalAction) -> Vec<Recovery> {
    let mut steps = Vec::new();
    match target {
        RecoveryTarget::Resource { group, resource } => {
            if first == RecoveryAction::Restart {
                steps.push(Recovery::Restart { group: group.clone(), resource: resource.clone() });
            }
            if first != RecoveryAction::Final {
                steps.push(Recovery::Failover { group: group.clone() });
            }
        }
        RecoveryTarget::Group(group) => {
            if first != RecoveryAction::Final {
                steps.push(Recovery::Failover { group: group.clone() });
            }
        }
        RecoveryTarget::LocalGroups => {
            if first != RecoveryAction::Final {
                steps.push(Recovery::FailoverLocal);
            }
        }
    }
    steps.push(Recovery::Final { action: final_action });
    steps
}

/// Starts monitor `name`.
///
/// - `target`: the resolved recovery target (`Monitor::recovery_target`);
/// - `active`: whether the target is active on this node; read only when `settings.when` is `active` (pass a
///   constant `true` otherwise). When its sender is dropped, a `when = "active"` monitor stops (idle);
/// - `tx`: where recovery requests go.
pub fn spawn(
    name: &str,
    check: Box<dyn Check>,
    settings: MonitorSettings,
    target: RecoveryTarget,
    active: watch::Receiver<bool>,
    tx: mpsc::Sender<RecoveryRequest>,
) -> MonitorHandle {
    let initial = MonitorState {
        name: name.to_string(),
        kind: check.kind(),
        state: if settings.when == When::Active { STATE_IDLE } else { STATE_WAITING },
        code: None,
        message: String::new(),
        failures: 0,
        checks: 0,
        recoveries: 0,
    };
    let (state_tx, state_rx) = watch::channel(initial);
    let runner = Runner {
        name: name.to_string(),
        policy: settings.on_aws_error.unwrap_or(AwsErrorPolicy::Warn),
        ladder: ladder(&target, settings.recovery_action, settings.final_action),
        step: 0,
        failures: 0,
        check,
        settings,
        active,
        tx,
        state: state_tx,
    };
    MonitorHandle { state: state_rx, task: tokio::spawn(runner.run()) }
}

struct Runner {
    name: String,
    check: Box<dyn Check>,
    settings: MonitorSettings,
    policy: AwsErrorPolicy,
    ladder: Vec<Recovery>,
    /// Index into `ladder` of the next request.
    step: usize,
    failures: u32,
    active: watch::Receiver<bool>,
    tx: mpsc::Sender<RecoveryRequest>,
    state: watch::Sender<MonitorState>,
}

impl Runner {
    fn gated(&self) -> bool {
        self.settings.when == When::Active
    }

    fn show(&self, state: &'static str, code: Option<&'static str>, message: String) {
        let failures = self.failures;
        self.state.send_modify(|s| {
            s.state = state;
            s.code = code;
            s.message = message;
            s.failures = failures;
        });
    }

    async fn run(mut self) {
        loop {
            if self.gated() {
                if self.active.has_changed().is_err() {
                    self.show(STATE_IDLE, None, "the target's group runner has stopped".into());
                    return;
                }
                if !*self.active.borrow_and_update() {
                    self.failures = 0;
                    self.show(STATE_IDLE, None, String::new());
                    if self.active.wait_for(|a| *a).await.is_err() {
                        self.show(STATE_IDLE, None, "the target's group runner has stopped".into());
                        return;
                    }
                }
                // A new activation: a fresh streak and ladder.
                self.failures = 0;
                self.step = 0;
            }
            if !self.settings.start_wait.is_zero() {
                self.show(STATE_WAITING, None, format!("start wait {:?}", self.settings.start_wait));
                if !self.pause(self.settings.start_wait).await {
                    continue;
                }
            }
            loop {
                let Some(outcome) = self.run_check().await else { break };
                self.apply(outcome).await;
                if !self.pause(self.settings.interval).await {
                    break;
                }
            }
        }
    }

    /// Sleeps `d`; false when the (gated) target became inactive meanwhile.
    async fn pause(&mut self, d: Duration) -> bool {
        if !self.gated() {
            tokio::time::sleep(d).await;
            return true;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => true,
            _ = self.active.wait_for(|a| !*a) => false,
        }
    }

    /// One check bounded by the timeout; None when the (gated) target became inactive meanwhile.
    async fn run_check(&mut self) -> Option<Outcome> {
        let timeout = self.settings.timeout;
        let work = tokio::time::timeout(timeout, self.check.check());
        let finished = if self.settings.when == When::Active {
            tokio::select! {
                finished = work => finished,
                _ = self.active.wait_for(|a| !*a) => return None,
            }
        } else {
            work.await
        };
        Some(finished.unwrap_or_else(|_| {
            if self.check.calls_aws() {
                Outcome::unknown(
                    CODE_AWS_TIMEOUT,
                    format!("the AWS API did not answer within the monitor's timeout ({timeout:?})"),
                )
            } else {
                Outcome::error(
                    CODE_TIMEOUT,
                    format!("the check did not finish within the monitor's timeout ({timeout:?})"),
                )
            }
        }))
    }

    async fn apply(&mut self, outcome: Outcome) {
        self.state.send_modify(|s| s.checks += 1);
        let name = self.name.as_str();
        let kind = self.check.kind();
        let outcome = match outcome {
            Outcome::Unknown { code, message } => match self.policy {
                AwsErrorPolicy::Recover => Outcome::Error { code, message },
                AwsErrorPolicy::Warn => {
                    tracing::warn!(
                        monitor = name,
                        kind,
                        code,
                        "state unknown (on_aws_error = warn, no recovery): {message}"
                    );
                    self.show(STATE_UNKNOWN, Some(code), message);
                    return;
                }
                AwsErrorPolicy::Ignore => {
                    tracing::debug!(
                        monitor = name,
                        kind,
                        code,
                        "state unknown, ignored (on_aws_error = ignore): {message}"
                    );
                    self.show(STATE_OK, None, format!("ignored ({code}): {message}"));
                    return;
                }
            },
            other => other,
        };
        match outcome {
            Outcome::Ok => {
                if self.state.borrow().state != STATE_OK {
                    tracing::info!(monitor = name, kind, "monitor ok");
                }
                self.failures = 0;
                self.step = 0;
                self.show(STATE_OK, None, String::new());
            }
            Outcome::Warn(message) => {
                if self.state.borrow().message != message {
                    tracing::warn!(monitor = name, kind, "monitor warning: {message}");
                }
                self.failures = 0;
                self.step = 0;
                self.show(STATE_WARN, None, message);
            }
            Outcome::Error { code, message } | Outcome::Unknown { code, message } => {
                self.failures += 1;
                let retries = self.settings.retries;
                tracing::warn!(
                    monitor = name,
                    kind,
                    code,
                    failures = self.failures,
                    retries,
                    "monitor error: {message}"
                );
                if self.failures <= retries {
                    self.show(STATE_ERROR, Some(code), message);
                    return;
                }
                let last = self.ladder.len().saturating_sub(1);
                let recovery =
                    self.ladder.get(self.step).cloned().unwrap_or(Recovery::Final { action: FinalAction::None });
                self.step = (self.step + 1).min(last);
                tracing::error!(monitor = name, kind, code, "recovery requested: {recovery} ({message})");
                let shown = format!("{message}; recovery requested: {recovery}");
                let request = RecoveryRequest {
                    monitor: self.name.clone(),
                    kind,
                    recovery,
                    code,
                    message,
                    failures: self.failures,
                };
                self.failures = 0;
                self.state.send_modify(|s| s.recoveries += 1);
                self.show(STATE_ERROR, Some(code), shown);
                if self.tx.send(request).await.is_err() {
                    tracing::error!(monitor = name, kind, "nobody takes recovery requests any more; request dropped");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex};
    use tokio::time::Instant;

    const INTERVAL: Duration = Duration::from_secs(10);

    /// Answers the scripted outcomes in order, then `then` forever; records when it was called.
    struct Script {
        outcomes: Mutex<VecDeque<Outcome>>,
        then: Outcome,
        calls: Arc<Mutex<Vec<Instant>>>,
        aws: bool,
        hang: bool,
    }

    #[async_trait::async_trait]
    impl Check for Script {
        fn kind(&self) -> &'static str {
            "script"
        }
        fn calls_aws(&self) -> bool {
            self.aws
        }
        async fn check(&self) -> Outcome {
            self.calls.lock().unwrap().push(Instant::now());
            if self.hang {
                std::future::pending::<()>().await;
            }
            self.outcomes.lock().unwrap().pop_front().unwrap_or_else(|| self.then.clone())
        }
    }

    fn err() -> Outcome {
        Outcome::error("TDM-TEST-001", "broken")
    }

    fn unknown() -> Outcome {
        Outcome::unknown("TDM-TEST-002", "cannot tell")
    }

    fn script(outcomes: Vec<Outcome>, then: Outcome) -> (Box<Script>, Arc<Mutex<Vec<Instant>>>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let s = Script { outcomes: Mutex::new(outcomes.into()), then, calls: calls.clone(), aws: false, hang: false };
        (Box::new(s), calls)
    }

    fn settings(retries: u32, when: When) -> MonitorSettings {
        MonitorSettings {
            interval: INTERVAL,
            timeout: Duration::from_secs(5),
            retries,
            start_wait: Duration::ZERO,
            when,
            on_aws_error: None,
            recovery_target: None,
            recovery_action: RecoveryAction::Restart,
            final_action: FinalAction::Shutdown,
        }
    }

    fn resource_target() -> RecoveryTarget {
        RecoveryTarget::Resource { group: "g".into(), resource: "vip".into() }
    }

    struct Running {
        handle: MonitorHandle,
        rx: mpsc::Receiver<RecoveryRequest>,
        active: watch::Sender<bool>,
    }

    fn start(check: Box<dyn Check>, settings: MonitorSettings, active: bool) -> Running {
        let (active_tx, active_rx) = watch::channel(active);
        let (tx, rx) = mpsc::channel(16);
        let handle = spawn("m", check, settings, resource_target(), active_rx, tx);
        Running { handle, rx, active: active_tx }
    }

    fn count(calls: &Arc<Mutex<Vec<Instant>>>) -> usize {
        calls.lock().unwrap().len()
    }

    #[test]
    fn ladder_starts_at_the_recovery_action_and_ends_with_the_final_action() {
        let fin = Recovery::Final { action: FinalAction::StopCluster };
        let restart = Recovery::Restart { group: "g".into(), resource: "vip".into() };
        let failover = Recovery::Failover { group: "g".into() };
        let r = resource_target();
        assert_eq!(
            ladder(&r, RecoveryAction::Restart, FinalAction::StopCluster),
            vec![restart, failover.clone(), fin.clone()]
        );
        assert_eq!(ladder(&r, RecoveryAction::Failover, FinalAction::StopCluster), vec![failover.clone(), fin.clone()]);
        assert_eq!(ladder(&r, RecoveryAction::Final, FinalAction::StopCluster), vec![fin.clone()]);
        let g = RecoveryTarget::Group("g".into());
        assert_eq!(ladder(&g, RecoveryAction::Restart, FinalAction::StopCluster), vec![failover, fin.clone()]);
        assert_eq!(
            ladder(&RecoveryTarget::LocalGroups, RecoveryAction::Failover, FinalAction::StopCluster),
            vec![Recovery::FailoverLocal, fin]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn recovery_waits_for_more_than_retries_consecutive_errors() {
        // E E ok: the streak ends; then E E E: the third error in a row (retries = 2) recovers.
        let (check, calls) = script(vec![err(), err(), Outcome::Ok, err(), err(), err()], Outcome::Ok);
        let mut m = start(check, settings(2, When::Always), true);
        let request = m.rx.recv().await.unwrap();
        assert_eq!(count(&calls), 6);
        assert_eq!(request.recovery, Recovery::Restart { group: "g".into(), resource: "vip".into() });
        assert_eq!((request.code, request.failures, request.monitor.as_str()), ("TDM-TEST-001", 3, "m"));
        tokio::time::sleep(INTERVAL * 20).await;
        assert!(m.rx.try_recv().is_err(), "only one request per streak");
        let state = m.handle.state();
        assert_eq!((state.state, state.failures, state.recoveries), (STATE_OK, 0, 1));
    }

    #[tokio::test(start_paused = true)]
    async fn retries_zero_recovers_on_the_first_error_and_each_streak_escalates() {
        let (check, calls) = script(vec![], err());
        let mut m = start(check, settings(0, When::Always), true);
        let mut steps = Vec::new();
        for _ in 0..4 {
            steps.push(m.rx.recv().await.unwrap().recovery);
        }
        assert_eq!(count(&calls), 4, "one request per failed check");
        let fin = Recovery::Final { action: FinalAction::Shutdown };
        assert_eq!(
            steps,
            vec![
                Recovery::Restart { group: "g".into(), resource: "vip".into() },
                Recovery::Failover { group: "g".into() },
                fin.clone(),
                fin
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ok_check_starts_the_ladder_again() {
        let (check, _) = script(vec![err(), Outcome::Ok, err()], Outcome::Ok);
        let mut m = start(check, settings(0, When::Always), true);
        let first = m.rx.recv().await.unwrap().recovery;
        let second = m.rx.recv().await.unwrap().recovery;
        assert_eq!(first, second);
    }

    #[tokio::test(start_paused = true)]
    async fn checks_run_every_interval() {
        let (check, calls) = script(vec![], Outcome::Ok);
        let _m = start(check, settings(1, When::Always), true);
        tokio::time::sleep(INTERVAL * 5 + Duration::from_secs(1)).await;
        let calls = calls.lock().unwrap().clone();
        assert_eq!(calls.len(), 6, "t = 0, 10, ..., 50");
        for pair in calls.windows(2) {
            assert_eq!(pair[1] - pair[0], INTERVAL);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn start_wait_delays_the_first_check() {
        let t0 = Instant::now();
        let (check, calls) = script(vec![], Outcome::Ok);
        let mut s = settings(1, When::Always);
        s.start_wait = Duration::from_secs(45);
        let m = start(check, s, true);
        tokio::time::sleep(Duration::from_secs(44)).await;
        assert_eq!((count(&calls), m.handle.state().state), (0, STATE_WAITING));
        m.handle.watch().wait_for(|s| s.checks >= 1).await.unwrap();
        assert_eq!(calls.lock().unwrap()[0] - t0, Duration::from_secs(45));
    }

    #[tokio::test(start_paused = true)]
    async fn when_active_is_idle_while_inactive_and_waits_after_each_activation() {
        let (check, calls) = script(vec![], Outcome::Ok);
        let mut s = settings(1, When::Active);
        s.start_wait = Duration::from_secs(30);
        let m = start(check, s, false);
        tokio::time::sleep(INTERVAL * 30).await;
        assert_eq!((count(&calls), m.handle.state().state), (0, STATE_IDLE));

        let activated = Instant::now();
        m.active.send(true).unwrap();
        let mut state = m.handle.watch();
        state.wait_for(|s| s.checks >= 2).await.unwrap();
        assert_eq!(calls.lock().unwrap()[0] - activated, Duration::from_secs(30));

        m.active.send(false).unwrap();
        state.wait_for(|s| s.state == STATE_IDLE).await.unwrap();
        let before = count(&calls);
        tokio::time::sleep(INTERVAL * 30).await;
        assert_eq!(count(&calls), before, "no check while inactive");

        let reactivated = Instant::now();
        m.active.send(true).unwrap();
        state.wait_for(|s| s.checks as usize > before).await.unwrap();
        assert_eq!(calls.lock().unwrap()[before] - reactivated, Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn when_always_ignores_the_active_flag() {
        let (check, calls) = script(vec![], Outcome::Ok);
        let m = start(check, settings(1, When::Always), false);
        m.handle.watch().wait_for(|s| s.checks >= 3).await.unwrap();
        assert_eq!(count(&calls), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_under_warn_never_recovers() {
        let (check, calls) = script(vec![], unknown());
        let mut m = start(check, settings(0, When::Always), true);
        tokio::time::sleep(INTERVAL * 50).await;
        assert!(count(&calls) >= 50);
        assert!(m.rx.try_recv().is_err(), "unknown must not recover under warn");
        let state = m.handle.state();
        assert_eq!((state.state, state.code, state.failures), (STATE_UNKNOWN, Some("TDM-TEST-002"), 0));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_under_warn_neither_counts_nor_ends_a_streak() {
        let (check, calls) = script(vec![err(), unknown(), unknown(), err()], Outcome::Ok);
        let mut m = start(check, settings(1, When::Always), true);
        let request = m.rx.recv().await.unwrap();
        assert_eq!((count(&calls), request.failures), (4, 2));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_under_recover_recovers() {
        let (check, _) = script(vec![], unknown());
        let mut s = settings(1, When::Always);
        s.on_aws_error = Some(AwsErrorPolicy::Recover);
        let mut m = start(check, s, true);
        let request = m.rx.recv().await.unwrap();
        assert_eq!((request.code, request.failures), ("TDM-TEST-002", 2));
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_under_ignore_shows_ok() {
        let (check, _) = script(vec![], unknown());
        let mut s = settings(0, When::Always);
        s.on_aws_error = Some(AwsErrorPolicy::Ignore);
        let mut m = start(check, s, true);
        m.handle.watch().wait_for(|s| s.checks >= 5).await.unwrap();
        assert!(m.rx.try_recv().is_err());
        assert_eq!(m.handle.state().state, STATE_OK);
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_check_is_an_error_after_the_timeout() {
        let (mut check, _) = script(vec![], Outcome::Ok);
        check.hang = true;
        let t0 = Instant::now();
        let mut m = start(check, settings(0, When::Always), true);
        let request = m.rx.recv().await.unwrap();
        assert_eq!(request.code, CODE_TIMEOUT);
        assert_eq!(Instant::now() - t0, Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_aws_check_is_unknown_after_the_timeout() {
        let (mut check, _) = script(vec![], Outcome::Ok);
        check.hang = true;
        check.aws = true;
        let mut m = start(check, settings(0, When::Always), true);
        m.handle.watch().wait_for(|s| s.checks >= 3).await.unwrap();
        assert!(m.rx.try_recv().is_err(), "an AWS timeout is unknown: no recovery under warn");
        assert_eq!(m.handle.state().code, Some(CODE_AWS_TIMEOUT));
    }

    #[tokio::test(start_paused = true)]
    async fn deactivation_drops_a_check_under_way() {
        let (mut check, calls) = script(vec![], Outcome::Ok);
        check.hang = true;
        let m = start(check, settings(0, When::Active), true);
        let mut state = m.handle.watch();
        while count(&calls) == 0 {
            tokio::task::yield_now().await;
        }
        m.active.send(false).unwrap();
        state.wait_for(|s| s.state == STATE_IDLE).await.unwrap();
        assert_eq!(m.handle.state().checks, 0, "the dropped check has no outcome");
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_handle_stops_the_monitor() {
        let (check, _) = script(vec![], Outcome::Ok);
        let Running { handle, mut rx, active: _active } = start(check, settings(0, When::Always), true);
        drop(handle);
        assert!(rx.recv().await.is_none(), "the task (and its sender) is gone");
    }
}
