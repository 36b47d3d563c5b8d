//! Monitor resources at run time: what `monitor "<kind>" "<name>" { }` checks, and the policy around the check.
//!
//! A monitor is split in two:
//! - a [`Check`] (one file per kind: [`tcp`], [`ip`], [`custom`], [`aws_az`], and [`resource`] for the kinds that
//!   watch a group resource: aws_vip, aws_eip, aws_dns, mirror). A check *reads*; it never repairs, and it answers
//!   one [`Outcome`]. A check that could not tell (the AWS API failed or did not answer) answers
//!   [`Outcome::Unknown`], never [`Outcome::Error`].
//! - the [`runner`], which applies the common settings outside the check: start wait, interval, timeout, retries,
//!   `when`, `on_aws_error`, and the recovery ladder (restart -> failover -> final action). Recovery itself is
//!   not done here: the runner sends a [`runner::RecoveryRequest`] to whoever owns the groups.
//!
//! [`build`] turns a config [`Monitor`] into its check (one `match` arm per kind). See docs/monitors.md.

pub mod aws_az;
pub mod custom;
pub mod ip;
pub mod mirror;
pub mod resolution;
pub mod resource;
pub mod runner;
pub mod tcp;

use std::fmt;
use std::sync::Arc;

use crate::config::{Monitor, MonitorKind, Node};
use crate::resources::GroupResource;

/// A check that did not finish within the monitor's `timeout` (non-AWS kinds): an error.
pub const CODE_TIMEOUT: &str = "TDM-MON-010";
/// A check of an AWS-calling kind that did not finish within the monitor's `timeout`: unknown.
pub const CODE_AWS_TIMEOUT: &str = "TDM-MON-011";

/// Every code of this module, in order (never renumbered; docs/monitors.md explains each with a fix hint).
pub const CODES: [&str; 20] = [
    "TDM-MON-001",
    "TDM-MON-002",
    "TDM-MON-003",
    "TDM-MON-004",
    CODE_TIMEOUT,
    CODE_AWS_TIMEOUT,
    tcp::CODE_TCP_FAILED,
    ip::CODE_IP_NONE_ANSWERED,
    custom::CODE_CUSTOM_FAILED,
    custom::CODE_CUSTOM_SPAWN,
    aws_az::CODE_AZ_NOT_AVAILABLE,
    aws_az::CODE_AZ_NOT_FOUND,
    aws_az::CODE_AZ_API,
    aws_az::CODE_AZ_NOT_AUTHORIZED,
    resource::CODE_VIP_MOVED,
    resource::CODE_EIP_MOVED,
    resource::CODE_DNS_MOVED,
    resource::CODE_MIRROR_STOPPED,
    mirror::CODE_MIRROR_DEGRADED,
    mirror::CODE_MIRROR_NO_LINK,
];

/// What one check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Healthy.
    Ok,
    /// Healthy enough, but an operator should look (e.g. some of the ip monitor's targets did not answer).
    Warn(String),
    /// The monitored thing is broken: counts towards `retries`, then recovery.
    Error { code: &'static str, message: String },
    /// The check could not tell (the AWS API failed or timed out): `on_aws_error` decides.
    Unknown { code: &'static str, message: String },
}

impl Outcome {
    pub fn error(code: &'static str, message: impl Into<String>) -> Outcome {
        Outcome::Error { code, message: message.into() }
    }

    pub fn unknown(code: &'static str, message: impl Into<String>) -> Outcome {
        Outcome::Unknown { code, message: message.into() }
    }

    /// "ok", "warn", "error" or "unknown".
    pub fn name(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Warn(_) => "warn",
            Outcome::Error { .. } => "error",
            Outcome::Unknown { .. } => "unknown",
        }
    }

    pub fn code(&self) -> Option<&'static str> {
        match self {
            Outcome::Error { code, .. } | Outcome::Unknown { code, .. } => Some(code),
            Outcome::Ok | Outcome::Warn(_) => None,
        }
    }

    pub fn message(&self) -> &str {
        match self {
            Outcome::Ok => "",
            Outcome::Warn(message) | Outcome::Error { message, .. } | Outcome::Unknown { message, .. } => message,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Warn(message) => write!(f, "warn: {message}"),
            Outcome::Error { code, message } => write!(f, "error [{code}] {message}"),
            Outcome::Unknown { code, message } => write!(f, "unknown [{code}] {message}"),
        }
    }
}

/// One monitor's check. Reads only; the runner bounds it by the monitor's `timeout` (dropping the future).
#[async_trait::async_trait]
pub trait Check: Send + Sync {
    /// The config kind: "tcp", "aws_az", ...
    fn kind(&self) -> &'static str;
    /// True when the check calls the AWS API: a check that times out is then [`Outcome::Unknown`]
    /// ([`CODE_AWS_TIMEOUT`]) instead of [`Outcome::Error`] ([`CODE_TIMEOUT`]).
    fn calls_aws(&self) -> bool {
        false
    }
    async fn check(&self) -> Outcome;
}

/// Why a monitor could not be built; `code()` is stable (docs/troubleshooting.md).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MonitorError {
    #[error(
        "monitor {monitor}: the {kind} monitor watches resource {resource}, which is not running under a group of \
         this node"
    )]
    NoResource { monitor: String, kind: &'static str, resource: String },
    #[error("monitor {monitor}: the {kind} monitor watches resource {resource}, but that is a {actual} resource")]
    WrongResource { monitor: String, kind: &'static str, resource: String, actual: &'static str },
    #[error("monitor {monitor}: the aws_az monitor needs an EC2 client for the region of node {node}")]
    NoAwsClient { monitor: String, node: String },
    #[error("monitor {monitor}: the ip monitor has no target for node {node}")]
    NoTargets { monitor: String, node: String },
}

impl MonitorError {
    pub fn code(&self) -> &'static str {
        match self {
            MonitorError::NoResource { .. } => "TDM-MON-001",
            MonitorError::WrongResource { .. } => "TDM-MON-002",
            MonitorError::NoAwsClient { .. } => "TDM-MON-003",
            MonitorError::NoTargets { .. } => "TDM-MON-004",
        }
    }
}

/// The check of `monitor` on `node`.
///
/// - `ec2`: a client for the region of `node`'s zone (aws_az only; other kinds ignore it).
/// - `resource`: for aws_vip, aws_eip, aws_dns and mirror, the group resource the monitor watches, as the group
///   runner built it (the check calls its `probe`); other kinds ignore it.
pub fn build(
    monitor: &Monitor,
    node: &Node,
    ec2: Option<&aws_sdk_ec2::Client>,
    resource: Option<Arc<dyn GroupResource>>,
) -> Result<Box<dyn Check>, MonitorError> {
    let name = &monitor.name;
    let timeout = monitor.settings.timeout;
    match &monitor.kind {
        MonitorKind::Tcp { address } => Ok(Box::new(tcp::TcpCheck::new(address.clone(), timeout))),
        MonitorKind::Ip { .. } => {
            let targets = monitor.kind.ip_targets_for(&node.name).to_vec();
            if targets.is_empty() {
                return Err(MonitorError::NoTargets { monitor: name.clone(), node: node.name.clone() });
            }
            Ok(Box::new(ip::IpCheck::new(targets, timeout)))
        }
        MonitorKind::Custom { command, env } => {
            Ok(Box::new(custom::CustomCheck::new(name, &node.name, command, env, timeout)))
        }
        MonitorKind::AwsAz => {
            let client =
                ec2.ok_or_else(|| MonitorError::NoAwsClient { monitor: name.clone(), node: node.name.clone() })?;
            Ok(Box::new(aws_az::AzCheck::new(client.clone(), &node.availability_zone)))
        }
        MonitorKind::AwsVip { resource: r }
        | MonitorKind::AwsEip { resource: r }
        | MonitorKind::AwsDns { resource: r, .. }
        | MonitorKind::Mirror { resource: r } => {
            let kind = monitor.kind.kind_name();
            let Some(built) = resource else {
                return Err(MonitorError::NoResource { monitor: name.clone(), kind, resource: r.clone() });
            };
            let expected = resource::expected_resource_kind(kind);
            if built.kind() != expected || built.name() != r {
                return Err(MonitorError::WrongResource {
                    monitor: name.clone(),
                    kind,
                    resource: built.name().to_string(),
                    actual: built.kind(),
                });
            }
            if built.mirror().is_some() {
                return Ok(Box::new(mirror::MirrorCheck::new(built)));
            }
            Ok(Box::new(resource::ResourceCheck::new(kind, built)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::monitor::HostPort;
    use crate::resources::{Invocation, Probe, ResourceError};
    use std::net::Ipv4Addr;

    fn node() -> Node {
        Node::new("a", Ipv4Addr::new(10, 0, 0, 1), "us-east-1a")
    }

    struct Named(&'static str, &'static str);

    #[async_trait::async_trait]
    impl GroupResource for Named {
        fn name(&self) -> &str {
            self.0
        }
        fn kind(&self) -> &'static str {
            self.1
        }
        async fn start(&self, _: &Invocation) -> Result<(), ResourceError> {
            Ok(())
        }
        async fn stop(&self, _: &Invocation) -> Result<(), ResourceError> {
            Ok(())
        }
        async fn probe(&self, _: &Invocation) -> Result<Probe, ResourceError> {
            Ok(Probe::Running)
        }
    }

    #[test]
    fn every_simple_kind_builds_with_its_kind_name() {
        let tcp = Monitor::new("t", MonitorKind::Tcp { address: HostPort { host: "127.0.0.1".into(), port: 1 } });
        let custom = Monitor::new("c", MonitorKind::Custom { command: "true".into(), env: Default::default() });
        let ip =
            Monitor::new("i", MonitorKind::Ip { targets: vec![Ipv4Addr::LOCALHOST], per_node: Default::default() });
        for (monitor, kind) in [(tcp, "tcp"), (custom, "custom"), (ip, "ip")] {
            let check = build(&monitor, &node(), None, None).map_err(|e| e.to_string()).unwrap();
            assert_eq!((check.kind(), check.calls_aws()), (kind, false));
        }
    }

    #[test]
    fn resource_monitor_without_its_resource_is_refused() {
        let m = Monitor::new("v", MonitorKind::AwsVip { resource: "vip".into() });
        let Err(e) = build(&m, &node(), None, None) else { panic!("built without a resource") };
        assert_eq!(e.code(), "TDM-MON-001");
    }

    #[test]
    fn resource_monitor_refuses_a_resource_of_another_kind() {
        let m = Monitor::new("v", MonitorKind::AwsEip { resource: "app".into() });
        let Err(e) = build(&m, &node(), None, Some(Arc::new(Named("app", "exec")))) else { panic!("built") };
        assert_eq!(e.code(), "TDM-MON-002");
        let Ok(check) = build(&m, &node(), None, Some(Arc::new(Named("app", "aws_eip")))) else { panic!("refused") };
        assert_eq!((check.kind(), check.calls_aws()), ("aws_eip", true));
    }

    #[test]
    fn codes_are_well_formed_ascending_and_distinct() {
        let numbers: Vec<u32> = CODES
            .iter()
            .map(|c| c.strip_prefix("TDM-MON-").filter(|n| n.len() == 3).and_then(|n| n.parse().ok()).unwrap())
            .collect();
        assert!(numbers.windows(2).all(|w| w[0] < w[1]), "{CODES:?}");
        let errors = [
            MonitorError::NoResource { monitor: "m".into(), kind: "aws_vip", resource: "r".into() },
            MonitorError::WrongResource { monitor: "m".into(), kind: "aws_vip", resource: "r".into(), actual: "exec" },
            MonitorError::NoAwsClient { monitor: "m".into(), node: "a".into() },
            MonitorError::NoTargets { monitor: "m".into(), node: "a".into() },
        ];
        assert_eq!(errors.iter().map(MonitorError::code).collect::<Vec<_>>(), CODES[..4].to_vec());
    }

    #[test]
    fn aws_az_needs_a_client() {
        let m = Monitor::new("az", MonitorKind::AwsAz);
        assert_eq!(build(&m, &node(), None, None).err().map(|e| e.code()), Some("TDM-MON-003"));
    }

    #[test]
    fn ip_monitor_without_targets_for_the_node_is_refused() {
        let m = Monitor::new("i", MonitorKind::Ip { targets: vec![], per_node: Default::default() });
        assert_eq!(build(&m, &node(), None, None).err().map(|e| e.code()), Some("TDM-MON-004"));
    }
}
