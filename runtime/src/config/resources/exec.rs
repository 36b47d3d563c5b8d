//! `resource "exec"`: the application itself, as start / stop / probe commands (run with `/bin/sh -c`).
//! tandemd adds `TANDEM_CLUSTER`, `TANDEM_GROUP`, `TANDEM_RESOURCE` and `TANDEM_NODE` to the environment.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::config::error::{ConfigPath, ErrorCode};
use crate::config::group::Group;
use crate::config::overrides;
use crate::config::parse::{self, Cx, Reader};
use crate::config::render::HclBlock;
use crate::config::shape;
use crate::config::validate::Validator;

pub const DEFAULT_START_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_PROBE_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    /// Starts the application; must be idempotent (already running = exit 0).
    pub start: String,
    /// Stops it; must be idempotent. Default (None): nothing to do at stop.
    pub stop: Option<String>,
    /// Exit 0 = running, 7 = stopped (OCF), anything else = failed. Default (None): tandemd tracks the state
    /// from start/stop results.
    pub probe: Option<String>,
    /// Default 60s.
    pub start_timeout: Duration,
    /// Default 60s.
    pub stop_timeout: Duration,
    /// Default 10s.
    pub probe_timeout: Duration,
    /// The cgroup (v2) the application runs in, e.g. `system.slice/tandem-app.service` for a systemd unit:
    /// relative to the node's cgroup2 mount, or absolute. The fencer SIGKILLs every process in it when this node's
    /// right to run the group ends without tandemd (crashed, frozen, hung). Default (None): nothing to kill.
    pub cgroup: Option<String>,
    /// Extra environment. Default {}.
    pub env: BTreeMap<String, String>,
    /// Per-node overrides.
    pub per_node: BTreeMap<String, ExecNode>,
}

/// What an exec may set per node: environment entries, merged over the common `env`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecNode {
    pub env: BTreeMap<String, String>,
}

impl Exec {
    pub fn new(start: &str) -> Exec {
        Exec {
            start: start.to_string(),
            stop: None,
            probe: None,
            start_timeout: DEFAULT_START_TIMEOUT,
            stop_timeout: DEFAULT_STOP_TIMEOUT,
            probe_timeout: DEFAULT_PROBE_TIMEOUT,
            cgroup: None,
            env: BTreeMap::new(),
            per_node: BTreeMap::new(),
        }
    }

    /// The environment on `node`: the common `env` with the node's override entries on top.
    pub fn env_for(&self, node: &str) -> BTreeMap<String, String> {
        let mut env = self.env.clone();
        if let Some(o) = self.per_node.get(node) {
            env.extend(o.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        env
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<Exec> {
        let start = r.req(cx, "start", parse::string);
        let stop = r.opt(cx, "stop", parse::string);
        let probe = r.opt(cx, "probe", parse::string);
        let start_timeout = r.or(cx, "start_timeout", parse::duration, DEFAULT_START_TIMEOUT);
        let stop_timeout = r.or(cx, "stop_timeout", parse::duration, DEFAULT_STOP_TIMEOUT);
        let probe_timeout = r.or(cx, "probe_timeout", parse::duration, DEFAULT_PROBE_TIMEOUT);
        let cgroup = r.opt(cx, "cgroup", parse::string);
        let env = r.or(cx, "env", parse::string_map, BTreeMap::new());
        let per_node = overrides::read(cx, r, |cx, or| {
            Some(ExecNode { env: or.or(cx, "env", parse::string_map, BTreeMap::new()) })
        });
        Some(Exec {
            start: start?,
            stop,
            probe,
            start_timeout,
            stop_timeout,
            probe_timeout,
            cgroup,
            env,
            per_node: per_node?,
        })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.str("start", &self.start);
        b.opt_str("stop", self.stop.as_deref());
        b.opt_str("probe", self.probe.as_deref());
        b.duration("start_timeout", self.start_timeout);
        b.duration("stop_timeout", self.stop_timeout);
        b.duration("probe_timeout", self.probe_timeout);
        b.opt_str("cgroup", self.cgroup.as_deref());
        b.map("env", &self.env);
    }

    pub(crate) fn render_overrides(&self, b: &mut HclBlock) {
        overrides::render(b, &self.per_node, |ob, o| ob.map("env", &o.env));
    }

    pub(crate) fn validate(&self, v: &mut Validator, path: &ConfigPath, group: &Group) {
        if self.start.trim().is_empty() {
            let at = path.attr("start");
            v.error_hint(
                ErrorCode::Empty,
                &at,
                format!("{at}: the start command is empty"),
                "write the command that starts the application",
            );
        }
        v.positive(&path.attr("start_timeout"), self.start_timeout);
        v.positive(&path.attr("stop_timeout"), self.stop_timeout);
        v.positive(&path.attr("probe_timeout"), self.probe_timeout);
        if let Some(cg) = &self.cgroup
            && let Err(message) = check_cgroup(cg)
        {
            let at = path.attr("cgroup");
            v.error_hint(
                ErrorCode::BadPath,
                &at,
                format!("{at}: {message}"),
                "name the application's cgroup, e.g. \"system.slice/tandem-app.service\" for a systemd unit",
            );
        }
        let check_env = |v: &mut Validator, at: ConfigPath, env: &BTreeMap<String, String>| {
            for name in env.keys() {
                if let Err(message) = shape::check_env_name(name) {
                    let at = at.key(name);
                    v.error(ErrorCode::BadName, &at, format!("{at}: {message}"));
                }
            }
        };
        check_env(v, path.attr("env"), &self.env);
        overrides::validate_nodes(v, path, &self.per_node, &group.servers);
        for (node, o) in &self.per_node {
            check_env(v, overrides::path(path, node).attr("env"), &o.env);
        }
    }
}

/// A cgroup as `exec.cgroup` takes it: a path of plain components (no `.`, `..`, empty components or whitespace),
/// relative to the cgroup2 mount or absolute.
pub fn check_cgroup(cg: &str) -> Result<(), String> {
    let rel = cg.strip_prefix('/').unwrap_or(cg);
    if rel.is_empty() {
        return Err("the cgroup path is empty (the root cgroup holds the whole machine)".into());
    }
    if !cg.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("{cg:?} has whitespace or non-ASCII characters"));
    }
    if rel.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("{cg:?} has an empty, `.` or `..` component"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_are_plain() {
        assert!(check_cgroup("system.slice/tandem-app.service").is_ok());
        assert!(check_cgroup("/sys/fs/cgroup/unified/t/app").is_ok());
        for bad in ["", "/", "a//b", "../x", "a/./b", "a b", "a/"] {
            assert!(check_cgroup(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn node_env_is_merged_over_common_env() {
        let mut exec = Exec::new("/opt/app/start");
        exec.env.insert("MODE".into(), "primary".into());
        exec.env.insert("PORT".into(), "80".into());
        let mut node_env = BTreeMap::new();
        node_env.insert("MODE".into(), "replica".into());
        exec.per_node.insert("b".into(), ExecNode { env: node_env });
        assert_eq!(exec.env_for("a")["MODE"], "primary");
        assert_eq!(exec.env_for("b")["MODE"], "replica");
        assert_eq!(exec.env_for("b")["PORT"], "80");
    }
}
