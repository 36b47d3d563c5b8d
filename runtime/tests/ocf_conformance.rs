//! The group-resource contract (docs/group-resources.md): the ocf-tester sequence for every kind this build
//! supports, and the exec resource's environment, timeouts and exit-code classes. Resources are built the way
//! tandemd builds them: parse a config, then `resources::build`.

#[path = "support/ocf.rs"]
mod ocf;

use ocf::{UNLEASED, conformance};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use tandem_runtime::config::parse;
use tandem_runtime::resources::{self, ErrorClass, GroupResource, Invocation, Probe, ResourceContext, ResourceError};

const LEASED: Invocation = Invocation { lease_token: Some(42) };

/// A config with one group "web" on node-a and node-b whose only resource is `resource`, a whole block.
fn config_with(resource: &str) -> String {
    format!(
        r#"cluster "c1" {{}}

node "node-a" {{
  private_ip        = "10.0.1.10"
  availability_zone = "us-east-1a"
}}

node "node-b" {{
  private_ip        = "10.0.2.10"
  availability_zone = "us-east-1b"
}}

group "web" {{
  servers = ["node-a", "node-b"]

{resource}
}}
"#
    )
}

/// A scratch directory: the state dir lives in `state/`, scripts and what they write at the top.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch { dir: tempfile::tempdir().expect("tempdir") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Writes `body` to a script file and returns the command that runs it (no HCL escaping needed).
    fn script(&self, name: &str, body: &str) -> String {
        let path = self.path(name);
        std::fs::write(&path, format!("dir={}\n{body}\n", self.dir.path().display())).expect("write script");
        format!("/bin/sh {}", path.display())
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.path(name)).unwrap_or_default()
    }

    /// Parses a config whose group "web" holds `resource` and builds resource `name` for node-a.
    fn build(&self, resource: &str, name: &str) -> Result<Box<dyn GroupResource>, ResourceError> {
        let src = config_with(resource);
        let config = parse(&src).unwrap_or_else(|e| panic!("config rejected:\n{e}\n---\n{src}"));
        let group = config.groups.iter().find(|g| g.name == "web").expect("group web");
        let resource = group.resource(name).expect("resource");
        let cx = ResourceContext {
            cluster: config.cluster.name.clone(),
            group: group.name.clone(),
            node: "node-a".into(),
            state_dir: self.path("state"),
        };
        resources::build(resource, &cx)
    }

    /// An exec resource "app" with the given attribute lines.
    fn exec(&self, attributes: &str) -> Box<dyn GroupResource> {
        self.build(&format!("  resource \"exec\" \"app\" {{\n{attributes}\n  }}"), "app")
            .unwrap_or_else(|e| panic!("exec should build: {e}"))
    }
}

// ---- the conformance sequence, for every supported kind ----

#[tokio::test]
async fn exec_with_probe_passes_the_ocf_sequence() {
    let s = Scratch::new();
    let start = s.script("start.sh", "echo start >> $dir/calls; touch $dir/running");
    let stop = s.script("stop.sh", "echo stop >> $dir/calls; rm -f $dir/running");
    let probe = s.script("probe.sh", "test -f $dir/running || exit 7");
    let r = s.exec(&format!("start = \"{start}\"\nstop = \"{stop}\"\nprobe = \"{probe}\""));
    conformance(r.as_ref(), &LEASED).await;
    assert_eq!(s.read("calls"), "start\nstop\n", "each command runs once: start and stop are idempotent");
    assert!(!s.path("state").exists(), "with a probe command, no marker is written");
}

#[tokio::test]
async fn exec_without_probe_passes_the_ocf_sequence() {
    let s = Scratch::new();
    let start = s.script("start.sh", "echo start >> $dir/calls");
    let stop = s.script("stop.sh", "echo stop >> $dir/calls");
    let r = s.exec(&format!("start = \"{start}\"\nstop = \"{stop}\""));
    conformance(r.as_ref(), &LEASED).await;
    assert_eq!(s.read("calls"), "start\nstop\n", "each command runs once: the marker answers the probes");
}

#[tokio::test]
async fn exec_without_probe_or_stop_passes_the_ocf_sequence() {
    let s = Scratch::new();
    let start = s.script("start.sh", "echo start >> $dir/calls");
    let r = s.exec(&format!("start = \"{start}\""));
    conformance(r.as_ref(), &LEASED).await;
    assert_eq!(s.read("calls"), "start\n");
}

#[tokio::test]
async fn exec_marker_is_written_on_start_and_removed_on_stop() {
    let s = Scratch::new();
    let r = s.exec("start = \"true\"");
    let marker = s.path("state").join("web").join("app.active");
    r.start(&LEASED).await.expect("start");
    let content = std::fs::read_to_string(&marker).expect("marker after start");
    assert!(content.contains("lease_token=42"), "{content}");
    r.stop(&LEASED).await.expect("stop");
    assert!(!marker.exists(), "marker after stop");
}

#[tokio::test]
async fn unsupported_kinds_fail_to_build_as_fatal() {
    let s = Scratch::new();
    let vip = "  resource \"aws_vip\" \"vip\" {\n    ip     = \"10.1.0.10\"\n    vpc_id = \"vpc-0abc1234\"\n  }";
    let Err(e) = s.build(vip, "vip") else { panic!("aws_vip is not supported by this build yet") };
    assert_eq!((e.class, e.code()), (ErrorClass::Fatal, "TDM-RES-001"));
    assert!(e.to_string().contains("resource kind aws_vip is not supported by this tandemd build yet"), "{e}");
}

// ---- exec: environment ----

#[tokio::test]
async fn exec_scripts_see_the_tandem_and_configured_environment() {
    let s = Scratch::new();
    // Only the variables tandemd sets (the test process's own TANDEM_* environment is inherited too).
    let dump = "env | grep -E '^(TANDEM_(ACTION|CLUSTER|GROUP|NODE|RESOURCE|LEASE_TOKEN)=|APP_)' | LC_ALL=C sort > $dir/$TANDEM_ACTION.env";
    let start = s.script("start.sh", dump);
    let probe = s.script("probe.sh", &format!("{dump}\nexit 7"));
    let r = s.exec(&format!(
        "start = \"{start}\"\nprobe = \"{probe}\"\nenv = {{ APP_MODE = \"primary\", APP_PORT = \"80\" }}\n\
         override \"node-a\" {{\n  env = {{ APP_MODE = \"replica\" }}\n}}"
    ));
    assert_eq!(r.probe(&UNLEASED).await, Ok(Probe::Stopped));
    assert_eq!(
        s.read("probe.env"),
        "APP_MODE=replica\nAPP_PORT=80\nTANDEM_ACTION=probe\nTANDEM_CLUSTER=c1\nTANDEM_GROUP=web\nTANDEM_NODE=node-a\n\
         TANDEM_RESOURCE=app\n",
        "without a lease there is no TANDEM_LEASE_TOKEN"
    );
    r.start(&LEASED).await.expect("start");
    assert_eq!(
        s.read("start.env"),
        "APP_MODE=replica\nAPP_PORT=80\nTANDEM_ACTION=start\nTANDEM_CLUSTER=c1\nTANDEM_GROUP=web\n\
         TANDEM_LEASE_TOKEN=42\nTANDEM_NODE=node-a\nTANDEM_RESOURCE=app\n"
    );
}

// ---- exec: timeouts ----

/// True when `pid` no longer runs: it does not exist, or it is a zombie nobody reaped yet.
fn gone(pid: u32) -> bool {
    let alive = std::process::Command::new("kill")
        .args(["-0", &pid.to_string()])
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z')))
        .unwrap_or(false);
    !alive || zombie
}

/// Waits (generously) until `pid` is gone; SIGKILL is delivered asynchronously.
async fn assert_gone(pid: u32, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gone(pid) {
        assert!(Instant::now() < deadline, "{what} (pid {pid}) still runs");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn pid_in(s: &Scratch, name: &str) -> u32 {
    let text = s.read(name);
    text.trim().parse().unwrap_or_else(|_| panic!("{name} holds no pid ({text:?}): did the script run in time?"))
}

#[tokio::test]
async fn start_timeout_kills_the_process_group_and_is_soft() {
    let s = Scratch::new();
    let start = s.script("start.sh", "sleep 30 &\necho $! > $dir/child.pid\necho $$ > $dir/sh.pid\nwait");
    let r = s.exec(&format!("start = \"{start}\"\nstart_timeout = \"300ms\""));
    let began = Instant::now();
    let e = r.start(&LEASED).await.expect_err("the start times out");
    assert!(began.elapsed() < Duration::from_secs(10), "start returned only after {:?}", began.elapsed());
    assert_eq!((e.class, e.code()), (ErrorClass::Soft, "TDM-RES-003"), "{e}");
    assert_gone(pid_in(&s, "child.pid"), "the sleeping child").await;
    assert_gone(pid_in(&s, "sh.pid"), "the script's shell").await;
    assert_eq!(r.probe(&UNLEASED).await, Ok(Probe::Stopped), "a failed start leaves no marker");
}

#[tokio::test]
async fn stop_timeout_is_hard_and_keeps_the_resource_running() {
    let s = Scratch::new();
    let stop = s.script("stop.sh", "sleep 30 &\necho $! > $dir/child.pid\nwait");
    let r = s.exec(&format!("start = \"true\"\nstop = \"{stop}\"\nstop_timeout = \"300ms\""));
    r.start(&LEASED).await.expect("start");
    let e = r.stop(&LEASED).await.expect_err("the stop times out");
    assert_eq!((e.class, e.code()), (ErrorClass::Hard, "TDM-RES-003"), "{e}");
    assert_gone(pid_in(&s, "child.pid"), "the sleeping child").await;
    assert_eq!(r.probe(&UNLEASED).await, Ok(Probe::Running), "a failed stop keeps the marker");
}

#[tokio::test]
async fn cancelled_call_kills_the_process_group() {
    let s = Scratch::new();
    let start =
        s.script("start.sh", "sleep 30 &\necho $! > $dir/child.pid.tmp\nmv $dir/child.pid.tmp $dir/child.pid\nwait");
    let r = s.exec(&format!("start = \"{start}\""));
    // async_trait boxes the future: dropping `call` drops (cancels) the start.
    let mut call = r.start(&LEASED);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.path("child.pid").exists() {
        assert!(Instant::now() < deadline, "the script did not write its pid");
        tokio::select! {
            result = &mut call => panic!("start returned before it was cancelled: {result:?}"),
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    drop(call);
    assert_gone(pid_in(&s, "child.pid"), "the sleeping child of the cancelled start").await;
}

#[tokio::test]
async fn background_process_of_a_successful_start_keeps_running() {
    let s = Scratch::new();
    // The daemon keeps stdout and stderr open: start must not wait for the end of the output.
    let start = s.script("start.sh", "sleep 30 &\necho $! > $dir/daemon.pid\necho started");
    let r = s.exec(&format!("start = \"{start}\""));
    let began = Instant::now();
    r.start(&LEASED).await.expect("start");
    assert!(began.elapsed() < Duration::from_secs(10), "start waited {:?} for the daemon", began.elapsed());
    let pid = pid_in(&s, "daemon.pid");
    let alive = !gone(pid);
    let _ = std::process::Command::new("kill").args(["-s", "KILL", &pid.to_string()]).status();
    assert!(alive, "a successful start must not kill the processes it started");
}

// ---- exec: exit codes ----

#[tokio::test]
async fn start_exit_codes_map_to_ocf_classes() {
    for (status, class, code) in [
        (1, ErrorClass::Soft, "TDM-RES-004"),
        (5, ErrorClass::Hard, "TDM-RES-004"),
        (6, ErrorClass::Fatal, "TDM-RES-004"),
        (127, ErrorClass::Hard, "TDM-RES-002"),
    ] {
        let s = Scratch::new();
        let r = s.exec(&format!("start = \"echo failing; exit {status}\""));
        let e = r.start(&LEASED).await.expect_err("non-zero exit fails");
        assert_eq!((e.class, e.code()), (class, code), "exit {status}: {e}");
        assert!(e.message.contains(&format!("status {status}")), "{e}");
        assert!(e.message.ends_with("last output: failing"), "{e}");
        assert_eq!(r.probe(&UNLEASED).await, Ok(Probe::Stopped), "exit {status}: a failed start leaves no marker");
    }
}

#[tokio::test]
async fn stop_exit_codes_map_to_ocf_classes() {
    for (status, class) in [(1, ErrorClass::Soft), (5, ErrorClass::Hard), (6, ErrorClass::Fatal)] {
        let s = Scratch::new();
        let r = s.exec(&format!("start = \"true\"\nstop = \"exit {status}\""));
        r.start(&LEASED).await.expect("start");
        let e = r.stop(&LEASED).await.expect_err("non-zero exit fails");
        assert_eq!((e.class, e.code()), (class, "TDM-RES-004"), "exit {status}: {e}");
        assert_eq!(r.probe(&UNLEASED).await, Ok(Probe::Running), "exit {status}: a failed stop keeps the marker");
    }
}

#[tokio::test]
async fn probe_exit_codes_are_running_stopped_or_failed() {
    let s = Scratch::new();
    let state = s.path("probe-exit");
    let probe = s.script("probe.sh", "exit $(cat $dir/probe-exit)");
    let r = s.exec(&format!("start = \"true\"\nprobe = \"{probe}\""));
    let probe_with = |status: i32| {
        std::fs::write(&state, status.to_string()).expect("write");
        r.probe(&UNLEASED)
    };
    assert_eq!(probe_with(0).await, Ok(Probe::Running));
    assert_eq!(probe_with(7).await, Ok(Probe::Stopped));
    for status in [1, 5, 6] {
        let e = probe_with(status).await.expect_err("failed");
        assert_eq!((e.class, e.code()), (ErrorClass::Soft, "TDM-RES-004"), "probe exit {status}: {e}");
    }
}

#[tokio::test]
async fn start_runs_when_the_probe_says_stopped_and_not_when_running() {
    let s = Scratch::new();
    let start = s.script("start.sh", "echo start >> $dir/calls");
    let probe = s.script("probe.sh", "test -f $dir/up || exit 7");
    let r = s.exec(&format!("start = \"{start}\"\nprobe = \"{probe}\""));
    std::fs::write(s.path("up"), "").expect("write");
    r.start(&LEASED).await.expect("start when running");
    assert_eq!(s.read("calls"), "", "already running: the start command must not run");
    std::fs::remove_file(s.path("up")).expect("rm");
    r.start(&LEASED).await.expect("start when stopped");
    assert_eq!(s.read("calls"), "start\n");
}
