//! The daemon-fault matrix: tandemd itself crashes, freezes or restarts while the application it started lives on
//! (a process outside tandemd's tree, in a cgroup of its own, as a systemd unit's would be), with the fencer of
//! each node started apart from tandemd. Overlap is judged on the application *processes*: a sampler reads both
//! nodes' cgroups every millisecond (tests/src/app_cgroups.rs). Needs root, `ip`, `nft` and a cgroup2 mount.
//!
//! Each scenario runs once here; `TANDEM_DAEMON_FAULT_RUNS=20` repeats each (the soak the docs report).

use std::time::{Duration, Instant};

use tandem_tests::cluster::{Cluster, Options, Result};
use tandem_tests::nodes::wait_until;

const TAKEOVER: Duration = Duration::from_secs(15);

fn runs() -> usize {
    std::env::var("TANDEM_DAEMON_FAULT_RUNS").ok().and_then(|v| v.parse().ok()).unwrap_or(1)
}

fn fenced() -> Options {
    Options { fenced_app: true, ..Options::default() }
}

fn other(i: usize) -> usize {
    1 - i
}

/// The node whose app is alive (exactly one, or an error).
fn app_node(c: &Cluster) -> Result<usize> {
    let apps = c.apps.as_ref().ok_or("no fenced app")?;
    let alive: Vec<usize> = (0..2).filter(|i| apps.alive(*i)).collect();
    match alive.as_slice() {
        [one] => Ok(*one),
        other => Err(format!("expected the app alive on one node, it is on {other:?}").into()),
    }
}

fn wait_app_only_on(c: &Cluster, i: usize, timeout: Duration) -> Result<()> {
    let apps = c.apps.as_ref().ok_or("no fenced app")?;
    wait_until(timeout, &format!("app alive on n{i} only"), || apps.alive(i) && !apps.alive(other(i)))?;
    Ok(())
}

fn assert_no_overlap(c: &Cluster) {
    let apps = c.apps.as_ref().expect("fenced app");
    let o = apps.overlaps();
    assert!(
        o.is_empty(),
        "two nodes' apps were alive at once: {o:?}\n--- n0 ---\n{}\n--- n1 ---\n{}\n--- fencer n0 ---\n{}\n--- fencer n1 ---\n{}",
        c.log(0),
        c.log(1),
        c.fencer_log(0),
        c.fencer_log(1)
    );
}

/// Prints one measured figure for the issue note and docs/benchmarks.md.
fn report(scenario: &str, what: &str, d: Duration) {
    eprintln!("FIGURE {scenario}: {what} {:.3} ms", d.as_secs_f64() * 1e3);
}

/// How late the fencer's kill ran after the deadline, from its log ("... N us after the deadline ...").
fn fencer_lateness(log: &str) -> Option<Duration> {
    let line = log.lines().rev().find(|l| l.contains("after the deadline"))?;
    let us: u64 = line.split(" us after the deadline").next()?.rsplit(' ').next()?.parse().ok()?;
    Some(Duration::from_micros(us))
}

#[test]
fn tandemd_killed_with_the_app_alive_is_fenced_and_the_restarted_daemon_rejoins_as_standby() -> Result<()> {
    for run in 0..runs() {
        let mut c = Cluster::start(fenced())?;
        let a = app_node(&c)?;
        let killed = Instant::now();
        c.kill_daemon(a);
        wait_app_only_on(&c, other(a), TAKEOVER)?;
        let apps = c.apps.as_ref().ok_or("apps")?;
        let died = apps.died_after(a, killed).ok_or("the old app never died")?;
        let started = apps.started_after(other(a), killed).ok_or("the standby never started the app")?;
        report("daemon SIGKILL, restart 2 s", "old app dead after", died - killed);
        report("daemon SIGKILL, restart 2 s", "takeover (app on the standby)", started - killed);
        if let Some(l) = fencer_lateness(&c.fencer_log(a)) {
            report("daemon SIGKILL, restart 2 s", "fencer kill after the deadline", l);
        }
        std::thread::sleep(Duration::from_secs(2).saturating_sub(killed.elapsed()));
        c.start_node(a)?;
        wait_until(Duration::from_secs(10), "restarted node standby", || c.role(a).is_ok_and(|r| r == "standby"))?;
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(app_node(&c)?, other(a), "run {run}: the group stays where it failed over to");
        let events = c.ctl(a, &["events"])?;
        let text = String::from_utf8_lossy(&events.stdout);
        assert!(text.contains("the fencer killed"), "run {run}: the restarted daemon reports the kill:\n{text}");
        assert_no_overlap(&c);
    }
    Ok(())
}

#[test]
fn tandemd_killed_and_never_restarted_leaves_one_app() -> Result<()> {
    for run in 0..runs() {
        let mut c = Cluster::start(fenced())?;
        let a = app_node(&c)?;
        let killed = Instant::now();
        c.kill_daemon(a);
        wait_app_only_on(&c, other(a), TAKEOVER)?;
        std::thread::sleep(Duration::from_secs(3));
        assert_eq!(app_node(&c)?, other(a), "run {run}");
        let apps = c.apps.as_ref().ok_or("apps")?;
        let started = apps.started_after(other(a), killed).ok_or("no start")?;
        report("daemon SIGKILL, no restart", "takeover (app on the standby)", started - killed);
        assert_no_overlap(&c);
    }
    Ok(())
}

#[test]
fn tandemd_frozen_past_ttl_and_timeout_is_fenced_and_returns_as_standby() -> Result<()> {
    for run in 0..runs() {
        let mut c = Cluster::start(fenced())?;
        let a = app_node(&c)?;
        let frozen = Instant::now();
        c.process(a).ok_or("node process")?.pause();
        wait_app_only_on(&c, other(a), TAKEOVER)?;
        let apps = c.apps.as_ref().ok_or("apps")?;
        let started = apps.started_after(other(a), frozen).ok_or("no start")?;
        report("daemon SIGSTOP", "takeover (app on the standby)", started - frozen);
        // Frozen for longer than ttl (1 s) + heartbeat timeout (500 ms), then continued.
        std::thread::sleep(Duration::from_secs(3).saturating_sub(frozen.elapsed()));
        c.process(a).ok_or("node process")?.resume();
        wait_until(Duration::from_secs(10), "thawed node standby", || c.role(a).is_ok_and(|r| r == "standby"))?;
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(app_node(&c)?, other(a), "run {run}");
        assert_no_overlap(&c);
    }
    Ok(())
}

#[test]
fn a_restart_within_the_lease_keeps_the_group_where_it_runs() -> Result<()> {
    // ttl 5 s: a restart as systemd does it (RestartSec=2s) comes back before the deadline.
    let opts = Options { interval: "1s", timeout: "5s", ttl: "5s", renew: "1s", ..fenced() };
    for run in 0..runs() {
        let mut c = Cluster::start(opts.clone())?;
        let a = app_node(&c)?;
        let apps = c.apps.as_ref().ok_or("apps")?;
        let pids = apps.pids(a);
        c.kill_daemon(a);
        std::thread::sleep(Duration::from_secs(2));
        c.start_node(a)?;
        wait_until(Duration::from_secs(10), "re-adopted", || c.role(a).is_ok_and(|r| r == "active"))?;
        std::thread::sleep(Duration::from_secs(3));
        let apps = c.apps.as_ref().ok_or("apps")?;
        assert_eq!(apps.pids(a), pids, "run {run}: the same app process runs on, never restarted\n{}", c.log(a));
        assert!(apps.started_after(other(a), Instant::now() - Duration::from_secs(60)).is_none(), "no failover");
        let events = String::from_utf8_lossy(&c.ctl(a, &["events"])?.stdout).to_string();
        assert!(events.contains("re-adopted the group"), "run {run}:\n{events}");
        let s = c.status(other(a))?;
        assert_eq!(s["groups"][0]["failovers"], 0, "{s:#}");
        assert_no_overlap(&c);
    }
    Ok(())
}

#[test]
fn a_stop_that_hangs_past_the_deadline_is_forced_by_the_fencer() -> Result<()> {
    for run in 0..runs() {
        let c = Cluster::start(fenced())?;
        let a = app_node(&c)?;
        std::fs::write(c.dir().join(format!("hang-stop-n{a}")), "")?;
        let cut = Instant::now();
        // Isolated: no lease renewal, no vouch; the stop it starts hangs, so only the fencer can end the app.
        c.bed.isolate(a)?;
        wait_app_only_on(&c, other(a), TAKEOVER)?;
        let apps = c.apps.as_ref().ok_or("apps")?;
        let died = apps.died_after(a, cut).ok_or("the old app never died")?;
        let started = apps.started_after(other(a), cut).ok_or("no start")?;
        report("stop hangs past the deadline", "old app dead after", died - cut);
        report("stop hangs past the deadline", "takeover (app on the standby)", started - cut);
        assert!(
            c.fencer_log(a).contains("deadline passed"),
            "run {run}: the fencer did the kill:\n{}",
            c.fencer_log(a)
        );
        let events = String::from_utf8_lossy(&c.ctl(a, &["events"])?.stdout).to_string();
        assert!(events.contains("forced stop"), "run {run}:\n{events}");
        c.bed.unisolate(a)?;
        std::fs::remove_file(c.dir().join(format!("hang-stop-n{a}")))?;
        wait_until(Duration::from_secs(15), "old node standby", || c.role(a).is_ok_and(|r| r == "standby"))?;
        assert_eq!(app_node(&c)?, other(a), "run {run}");
        assert_no_overlap(&c);
    }
    Ok(())
}

#[test]
fn a_lease_item_deleted_while_the_group_runs_never_gives_two_apps_nor_an_older_token() -> Result<()> {
    for run in 0..runs() {
        let c = Cluster::start(fenced())?;
        let a = app_node(&c)?;
        let old = c.delete_lease_item()?;
        // The holder's next renewal finds no item (NotHolder) and stops; the free item is taken again only
        // once no live node says it runs the group.
        wait_until(TAKEOVER, "the group running again", || {
            c.lease_token().is_ok_and(|t| t > 0) && app_node(&c).is_ok()
        })?;
        std::thread::sleep(Duration::from_secs(2));
        let now = app_node(&c)?;
        let token = c.lease_token()?;
        assert!(token > old, "run {run}: token {token} after the deletion, {old} before: tokens never go back");
        eprintln!("run {run}: the group ran on n{a}, then on n{now} (token {old} -> {token})");
        assert_no_overlap(&c);
    }
    Ok(())
}
