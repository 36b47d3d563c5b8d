//! Failover-group resources at run time: what the group runner starts, stops and probes on the active node.
//!
//! Every kind implements [`GroupResource`], the OCF resource-agent contract (ClusterLabs resource-agents):
//! `start` and `stop` are idempotent (already running / already stopped = success), `probe` answers running or
//! stopped, and "failed" is an error whose [`ErrorClass`] tells the runner how to recover (soft: restart in place,
//! hard: fail over, fatal: stop and wait for a human). See docs/group-resources.md.
//!
//! Adding a kind = one file (its struct, its `GroupResource` impl, its tests) + one line in [`build`].

pub mod aws_dns;
pub mod aws_eip;
pub mod aws_vip;
pub mod exec;
pub mod mirror_disk;
pub mod mirror_env;

use std::fmt;
use std::path::PathBuf;

use crate::config::{Resource, ResourceKind};

/// Stable error codes of this module (never renumbered; listed in docs/troubleshooting.md).
pub const CODE_UNSUPPORTED_KIND: &str = "TDM-RES-001";
pub const CODE_SPAWN: &str = "TDM-RES-002";
pub const CODE_TIMEOUT: &str = "TDM-RES-003";
pub const CODE_EXIT: &str = "TDM-RES-004";
pub const CODE_STATE_DIR: &str = "TDM-RES-005";
pub const CODE_STILL_RUNNING: &str = "TDM-RES-006";
/// An exec resource's cgroup cannot be resolved on this node (relative path, no cgroup2 mount).
pub const CODE_CGROUP: &str = "TDM-RES-007";

/// What a probe found. "Failed" is not a state: it is an `Err` whose class says how to recover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    Running,
    Stopped,
}

impl Probe {
    pub fn as_str(self) -> &'static str {
        match self {
            Probe::Running => "running",
            Probe::Stopped => "stopped",
        }
    }
}

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How bad a failure is, as OCF classifies it; the group runner recovers accordingly.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ErrorClass {
    /// Transient, or local to this attempt: retry / restart in place (within the resource's retries).
    Soft,
    /// This node cannot run the resource: fail the group over (for a stop: escalate to the final action).
    Hard,
    /// The configuration is wrong everywhere: stop the group and wait for an operator; no automatic failover.
    Fatal,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Soft => "soft",
            ErrorClass::Hard => "hard",
            ErrorClass::Fatal => "fatal",
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A failed start, stop or probe: the recovery class, a stable code and a message written for an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("[{code}] {message}")]
pub struct ResourceError {
    pub class: ErrorClass,
    pub code: &'static str,
    pub message: String,
}

impl ResourceError {
    pub fn new(class: ErrorClass, code: &'static str, message: impl Into<String>) -> ResourceError {
        ResourceError { class, code, message: message.into() }
    }

    pub fn code(&self) -> &'static str {
        self.code
    }

    pub fn class(&self) -> ErrorClass {
        self.class
    }
}

/// Where a resource runs: fixed for the lifetime of the daemon's view of one group on one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceContext {
    pub cluster: String,
    pub group: String,
    /// This node's name (selects the per-node overrides).
    pub node: String,
    /// tandemd's state directory; a resource keeps its files under `<state_dir>/<group>/`.
    pub state_dir: PathBuf,
}

/// Per-call facts passed to every start, stop and probe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Invocation {
    /// The fencing token of the group's lease while this node holds it (exported to scripts as
    /// `TANDEM_LEASE_TOKEN`); None when the call is not made under a lease (a probe on a standby node).
    pub lease_token: Option<u64>,
}

/// One resource of a failover group, as the group runner drives it (the OCF resource-agent contract).
#[async_trait::async_trait]
pub trait GroupResource: Send + Sync {
    /// The resource's name in the config.
    fn name(&self) -> &str;
    /// The config kind: "exec", "aws_vip", ...
    fn kind(&self) -> &'static str;
    /// Makes the resource active. Idempotent: already running = `Ok` (without acting again).
    async fn start(&self, inv: &Invocation) -> Result<(), ResourceError>;
    /// Makes the resource inactive. Idempotent: already stopped = `Ok` (without acting again).
    async fn stop(&self, inv: &Invocation) -> Result<(), ResourceError>;
    /// Reads the state; never repairs. A failed resource is an `Err` with its class.
    async fn probe(&self, inv: &Invocation) -> Result<Probe, ResourceError>;
    /// Looks up, once at daemon start, what every start needs and that does not change while the daemon runs
    /// (aws_vip: the node's ENI and the VPC's CIDRs), so that a failover makes only the calls that move the
    /// service. Never changes anything; an error is logged and the start looks it up again.
    async fn prepare(&self) -> Result<(), ResourceError> {
        Ok(())
    }
    /// The mirror disk behind this resource, for `tandemctl mirror` and the `mirror` monitor (None: another kind).
    fn mirror(&self) -> Option<&mirror_disk::MirrorDiskResource> {
        None
    }
}

/// The run-time resource for `resource` of group `cx.group` on node `cx.node`. The AWS kinds need the node's
/// [`AwsEnv`](crate::aws::AwsEnv): use [`build_with`].
pub fn build(resource: &Resource, cx: &ResourceContext) -> Result<Box<dyn GroupResource>, ResourceError> {
    build_with(resource, cx, None, None)
}

/// [`build`], with what the daemon provides: the node's AWS environment (clients, ENI cache) for the kinds that
/// call AWS, and the lease and certificates for mirror_disk. Share one `AwsEnv` between all resources of a node:
/// the clients are built and the ENI is looked up once.
pub fn build_with(
    resource: &Resource,
    cx: &ResourceContext,
    aws: Option<&crate::aws::AwsEnv>,
    mirror: Option<&mirror_env::MirrorDeps>,
) -> Result<Box<dyn GroupResource>, ResourceError> {
    match &resource.kind {
        ResourceKind::Exec(config) => Ok(Box::new(exec::ExecResource::new(&resource.name, config, cx))),
        ResourceKind::AwsVip(config) => match aws {
            Some(env) => Ok(Box::new(aws_vip::AwsVipResource::new(&resource.name, config, cx, env))),
            None => Err(unsupported(resource)),
        },
        ResourceKind::AwsEip(config) => match aws {
            Some(env) => Ok(Box::new(aws_eip::AwsEipResource::new(&resource.name, config, cx, env))),
            None => Err(unsupported(resource)),
        },
        ResourceKind::AwsDns(config) => match aws {
            Some(env) => Ok(Box::new(aws_dns::AwsDnsResource::new(&resource.name, config, cx, env))),
            None => Err(unsupported(resource)),
        },
        ResourceKind::MirrorDisk(config) => match mirror {
            Some(deps) => {
                let env = mirror_env::env_for(deps, &cx.group, &resource.name, &cx.node)?;
                Ok(Box::new(mirror_disk::MirrorDiskResource::new(&resource.name, config, cx, env)))
            }
            None => Err(unsupported(resource)),
        },
    }
}

fn unsupported(resource: &Resource) -> ResourceError {
    ResourceError::new(
        ErrorClass::Fatal,
        CODE_UNSUPPORTED_KIND,
        format!(
            "resource {}: resource kind {} is not supported by this tandemd build yet",
            resource.name,
            resource.kind.kind_name()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AwsEip, Exec};

    fn cx() -> ResourceContext {
        ResourceContext {
            cluster: "c".into(),
            group: "g".into(),
            node: "a".into(),
            state_dir: PathBuf::from("/nonexistent/tandem-test"),
        }
    }

    #[test]
    fn unsupported_kinds_are_fatal_with_a_stable_code() {
        let r = Resource::new("eip", ResourceKind::AwsEip(AwsEip::new("eipalloc-0123abcd")));
        let Err(e) = build(&r, &cx()) else { panic!("aws_eip should not be supported yet") };
        assert_eq!((e.class, e.code()), (ErrorClass::Fatal, "TDM-RES-001"));
        assert_eq!(
            e.to_string(),
            "[TDM-RES-001] resource eip: resource kind aws_eip is not supported by this tandemd build yet"
        );
    }

    #[test]
    fn exec_builds_with_its_name_and_kind() {
        let r = Resource::new("app", ResourceKind::Exec(Exec::new("true")));
        let Ok(built) = build(&r, &cx()) else { panic!("exec should build") };
        assert_eq!((built.name(), built.kind()), ("app", "exec"));
    }

    #[test]
    fn codes_are_distinct_and_well_formed() {
        let codes = [CODE_UNSUPPORTED_KIND, CODE_SPAWN, CODE_TIMEOUT, CODE_EXIT, CODE_STATE_DIR, CODE_STILL_RUNNING];
        for (i, code) in codes.iter().enumerate() {
            assert_eq!(*code, format!("TDM-RES-{:03}", i + 1));
        }
    }
}
