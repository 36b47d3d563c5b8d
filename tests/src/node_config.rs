//! A node config as `tandem_cluster` rendered it, adapted to the test bed: only what this machine cannot have is
//! replaced (and each change is listed), everything else — nodes, interconnect, lease table, group order, the AWS
//! resources and their monitors — is run as rendered.
//!
//! - **secrets**: the files user_data would write to /etc/tandem/secrets/, in the test's directory instead;
//! - **witness**: the TCP check of the regional EC2 endpoint becomes a TCP check of a bed address (ping/http
//!   witnesses reach outside the bed and go);
//! - **mirror_disk**: goes, with its monitors and the dependencies on it: these suites test the service address
//!   on AWS; the mirror disk through tandemd is `tests/tests/mirror_cluster.rs` (and the demo keeps it);
//! - **exec**: `systemctl … tandem-app` becomes a marker file per node plus a line in a start/stop journal
//!   ([`crate::journal`] format), so that a test can prove no two nodes ever ran the application at once; its
//!   `cgroup` goes (no process to fence, and tandemd would need a fencer: see `adapt_group`);
//! - **timing** (optional): the fast settings of docs/operations.md;
//! - **AWS monitors** (optional): interval, retries and `on_aws_error` of the aws_vip/aws_eip/aws_dns monitors;
//!   aws_dns monitors never check resolution here (no resolver in the bed knows the private zone).

use std::net::SocketAddr;
use std::path::Path;

use hcl::{Block, BlockLabel, Body, Expression, Structure};

/// What to change in a rendered config.
#[derive(Debug, Clone)]
pub struct Adapt<'a> {
    /// Directory holding heartbeat.key, ca.crt, node.crt and node.key.
    pub secrets: &'a Path,
    /// The witness address every node checks (TCP connect).
    pub witness: SocketAddr,
    /// Marker files of the exec resources (`up-<node>`).
    pub app_dir: &'a Path,
    /// The start/stop journal of the exec resources.
    pub journal: &'a Path,
    /// Heartbeat 100 ms / 500 ms, lease ttl 1 s renewed every 200 ms.
    pub fast: bool,
    /// Settings for the monitors of AWS resources.
    pub aws_monitors: Option<MonitorTuning>,
}

/// Settings given to every aws_vip / aws_eip / aws_dns monitor.
#[derive(Debug, Clone)]
pub struct MonitorTuning {
    pub interval: String,
    pub timeout: String,
    pub retries: u32,
    pub on_aws_error: String,
}

/// The adapted config and what was removed from it (resource names).
#[derive(Debug, Clone)]
pub struct Adapted {
    pub text: String,
    pub removed: Vec<String>,
}

const AWS_MONITOR_KINDS: [&str; 3] = ["aws_vip", "aws_eip", "aws_dns"];

/// Adapts `rendered` (one node's `node_config`) to the bed.
pub fn adapt(rendered: &str, a: &Adapt<'_>) -> Result<Adapted, hcl::Error> {
    let body: Body = hcl::parse(rendered)?;
    let mut removed = Vec::new();
    // Resources that cannot run here, group by group.
    let mut out: Vec<Structure> = Vec::new();
    for s in body.into_inner() {
        match s {
            Structure::Block(mut b) if b.identifier() == "group" => {
                b.body = adapt_group(std::mem::take(&mut b.body), a, &mut removed);
                out.push(Structure::Block(b));
            }
            other => out.push(other),
        }
    }
    let mut body = Body(out);
    // Monitors of removed resources go with them; AWS monitors get the test's settings.
    body.0.retain(|s| match s {
        Structure::Block(b) if b.identifier() == "monitor" => {
            string_attr(&b.body, "resource").is_none_or(|r| !removed.iter().any(|x| x == &r))
        }
        _ => true,
    });
    for b in body.blocks_mut() {
        match b.identifier() {
            "secrets" => {
                for (attr, file) in [
                    ("heartbeat_key_file", "heartbeat.key"),
                    ("ca_cert_file", "ca.crt"),
                    ("node_cert_file", "node.crt"),
                    ("node_key_file", "node.key"),
                ] {
                    set(&mut b.body, attr, a.secrets.join(file).display().to_string());
                }
            }
            "heartbeat" if a.fast => {
                set(&mut b.body, "interval", "100ms");
                set(&mut b.body, "timeout", "500ms");
            }
            "arbitration" if a.fast => {
                set(&mut b.body, "ttl", "1s");
                set(&mut b.body, "renew_interval", "200ms");
            }
            "np_resolution" => {
                b.body.0.retain(
                    |s| !matches!(s, Structure::Block(w) if w.identifier() == "ping" || w.identifier() == "http"),
                );
                let mut tcp = b.body.blocks_mut().filter(|w| w.identifier() == "tcp").peekable();
                if tcp.peek().is_none() {
                    b.body.0.push(Structure::Block(Block::builder("tcp").build()));
                }
                for w in b.body.blocks_mut().filter(|w| w.identifier() == "tcp") {
                    set(&mut w.body, "address", a.witness.to_string());
                }
            }
            "monitor" => {
                let kind = label(b, 0).unwrap_or_default();
                if kind == "aws_dns" {
                    // No resolver here knows the private zone (and DNS must not leave the bed): record check only.
                    set(&mut b.body, "check_resolution", Expression::Bool(false));
                }
                if let (Some(t), true) = (&a.aws_monitors, AWS_MONITOR_KINDS.contains(&kind.as_str())) {
                    set(&mut b.body, "interval", t.interval.clone());
                    set(&mut b.body, "timeout", t.timeout.clone());
                    set(&mut b.body, "retries", Expression::Number(t.retries.into()));
                    set(&mut b.body, "on_aws_error", t.on_aws_error.clone());
                    // The tests measure from the first check: no start wait.
                    set(&mut b.body, "start_wait", "0s");
                }
            }
            _ => {}
        }
    }
    Ok(Adapted { text: hcl::to_string(&body)?, removed })
}

fn adapt_group(body: Body, a: &Adapt<'_>, removed: &mut Vec<String>) -> Body {
    let mut kept = Vec::new();
    for s in body.into_inner() {
        match s {
            Structure::Block(b) if b.identifier() == "resource" && label(&b, 0).as_deref() == Some("mirror_disk") => {
                removed.extend(label(&b, 1));
            }
            other => kept.push(other),
        }
    }
    let mut body = Body(kept);
    let (dir, journal) = (a.app_dir.display(), a.journal.display());
    for b in body.blocks_mut().filter(|b| b.identifier() == "resource") {
        if let Some(Expression::Array(deps)) = attr_mut(&mut b.body, "depends_on") {
            deps.retain(|d| !matches!(d, Expression::String(n) if removed.contains(n)));
        }
        if label(b, 0).as_deref() == Some("exec") {
            let marker = format!("{dir}/up-$TANDEM_NODE");
            let line = |what: &str| format!("echo \"$(date +%s%N) $TANDEM_NODE {what}\" >> {journal}");
            set(&mut b.body, "start", format!("touch {marker} && {}", line("start")));
            set(&mut b.body, "stop", format!("if [ -e {marker} ]; then rm -f {marker}; {}; fi", line("stop")));
            set(&mut b.body, "probe", format!("test -e {marker} || exit 7"));
            // The rendered `cgroup` (system.slice/tandem-app.service) names the unit's cgroup for the fencer. Here
            // the app is a marker file, no process, so there is nothing to fence; and a config that names a cgroup
            // makes tandemd refuse to start without `--fencer` (TDM-NODE-016). These suites stop or kill whole
            // nodes (tandemd and its app together), never tandemd alone, so the fencer would add nothing: it is
            // tested with a real app in a cgroup per node by tests/tests/daemon_faults.rs (crate::cluster).
            b.body.0.retain(|s| !matches!(s, Structure::Attribute(x) if x.key() == "cgroup"));
        }
    }
    body
}

fn label(b: &Block, i: usize) -> Option<String> {
    b.labels().get(i).map(|l| match l {
        BlockLabel::String(s) => s.clone(),
        BlockLabel::Identifier(id) => id.to_string(),
    })
}

fn string_attr(body: &Body, key: &str) -> Option<String> {
    body.attributes().find(|a| a.key() == key).and_then(|a| match a.expr() {
        Expression::String(s) => Some(s.clone()),
        _ => None,
    })
}

fn attr_mut<'b>(body: &'b mut Body, key: &str) -> Option<&'b mut Expression> {
    body.attributes_mut().find(|a| a.key() == key).map(|a| &mut a.expr)
}

/// Sets `key = value`, replacing an existing attribute in place or appending it.
fn set(body: &mut Body, key: &str, value: impl Into<Expression>) {
    let value = value.into();
    match attr_mut(body, key) {
        Some(e) => *e = value,
        None => body.0.push(Structure::Attribute(hcl::Attribute::new(key, value))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RENDERED: &str = r#"
cluster "c" {}
secrets {
  heartbeat_key_file = "/etc/tandem/secrets/heartbeat.key"
  ca_cert_file = "/etc/tandem/secrets/ca.crt"
  node_cert_file = "/etc/tandem/secrets/node.crt"
  node_key_file = "/etc/tandem/secrets/node.key"
}
node "node1" {
  private_ip = "10.0.10.11"
  availability_zone = "us-east-1a"
}
heartbeat {
  interval = "1s"
  timeout = "5s"
}
np_resolution {
  on_isolated = "stop_groups"
  ping {
    address = "10.0.0.5"
  }
  tcp {
    address = "ec2.us-east-1.amazonaws.com:443"
  }
}
arbitration {
  table = "t"
  ttl = "5s"
  renew_interval = "1s"
}
group "service" {
  servers = ["node1"]
  resource "mirror_disk" "data" {
    data_device = "/dev/nvme1n1p2"
  }
  resource "aws_eip" "eip" {
    allocation_id = "eipalloc-1"
  }
  resource "exec" "app" {
    start = "systemctl start tandem-app"
    stop = "systemctl stop tandem-app"
    probe = "systemctl is-active --quiet tandem-app"
    cgroup = "system.slice/tandem-app.service"
    depends_on = ["data", "eip"]
  }
}
monitor "mirror" "disk" {
  resource = "data"
}
monitor "aws_eip" "eip" {
  resource = "eip"
}
"#;

    fn adapt_with(fast: bool, tuning: Option<MonitorTuning>) -> Adapted {
        let a = Adapt {
            secrets: Path::new("/s"),
            witness: "10.213.1.1:4566".parse().expect("addr"),
            app_dir: Path::new("/app"),
            journal: Path::new("/app/journal"),
            fast,
            aws_monitors: tuning,
        };
        adapt(RENDERED, &a).expect("adapts")
    }

    #[test]
    fn mirror_disk_goes_with_its_monitor_and_the_dependencies_on_it() {
        let out = adapt_with(false, None);
        assert_eq!(out.removed, vec!["data".to_string()]);
        assert!(!out.text.contains("mirror_disk"), "{}", out.text);
        assert!(!out.text.contains("monitor \"mirror\""), "{}", out.text);
        let deps = out.text.split("depends_on = [").nth(1).and_then(|t| t.split(']').next()).unwrap_or_default();
        assert_eq!(deps.split_whitespace().collect::<String>(), "\"eip\"", "{}", out.text);
        assert!(out.text.contains("monitor \"aws_eip\" \"eip\""), "{}", out.text);
    }

    #[test]
    fn secrets_witness_and_app_point_into_the_bed() {
        let out = adapt_with(false, None);
        assert!(out.text.contains("heartbeat_key_file = \"/s/heartbeat.key\""), "{}", out.text);
        assert!(out.text.contains("node_key_file = \"/s/node.key\""), "{}", out.text);
        assert!(out.text.contains("address = \"10.213.1.1:4566\""), "{}", out.text);
        assert!(!out.text.contains("ping"), "{}", out.text);
        assert!(!out.text.contains("systemctl"), "{}", out.text);
        assert!(out.text.contains("/app/up-$TANDEM_NODE"), "{}", out.text);
        assert!(out.text.contains("timeout = \"5s\""), "timing kept as rendered: {}", out.text);
    }

    /// The app is a marker file here: its rendered cgroup goes (tandemd would otherwise need a fencer), the rest of
    /// the exec resource stays.
    #[test]
    fn the_exec_cgroup_goes_with_the_unit() {
        assert!(RENDERED.contains("cgroup = \"system.slice/tandem-app.service\""));
        let out = adapt_with(false, None);
        assert!(!out.text.contains("cgroup"), "{}", out.text);
        assert!(!out.text.contains("tandem-app"), "{}", out.text);
        let body: Body = hcl::parse(&out.text).expect("parses again");
        let group = body.blocks().find(|b| b.identifier() == "group").expect("group");
        let exec = group.body.blocks().find(|b| label(b, 0).as_deref() == Some("exec")).expect("exec kept");
        let keys: Vec<&str> = exec.body.attributes().map(|a| a.key()).collect();
        for key in ["start", "stop", "probe", "depends_on"] {
            assert!(keys.contains(&key), "exec lacks {key}: {}", out.text);
        }
    }

    #[test]
    fn fast_timing_and_monitor_tuning_replace_the_rendered_values() {
        let tuning = MonitorTuning {
            interval: "300ms".into(),
            timeout: "2s".into(),
            retries: 1,
            on_aws_error: "recover".into(),
        };
        let out = adapt_with(true, Some(tuning));
        assert!(out.text.contains("interval = \"100ms\""), "{}", out.text);
        assert!(out.text.contains("renew_interval = \"200ms\""), "{}", out.text);
        assert!(out.text.contains("on_aws_error = \"recover\""), "{}", out.text);
        assert!(out.text.contains("retries = 1"), "{}", out.text);
        assert!(!out.text.contains("timeout = \"5s\""), "{}", out.text);
    }

    #[test]
    fn the_result_is_hcl_again_with_the_group_kept() {
        let out = adapt_with(true, None);
        let parsed: Body = hcl::parse(&out.text).expect("parses again");
        assert!(parsed.blocks().any(|b| b.identifier() == "group"));
    }
}
