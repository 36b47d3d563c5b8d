//! `monitor "<kind>" "<name>" { }`: what is checked, how often, and what happens when the check fails.
//! The kinds are a closed set (one enum, one `match`); the common settings apply outside the check.

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::Config;
use super::choice::{Choice, choice};
use super::error::{ConfigPath, ErrorCode};
use super::overrides;
use super::parse::{self, Cx, Reader};
use super::render::HclBlock;
use super::resources::{Resource, ResourceKind};
use super::shape;
use super::validate::Validator;

pub const DEFAULT_MONITOR_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_MONITOR_TIMEOUT: Duration = Duration::from_secs(60);
pub const DEFAULT_MONITOR_RETRIES: u32 = 1;
/// Route 53 needs up to about a minute to propagate a change; a DNS monitor waits that long after start.
pub const DEFAULT_DNS_START_WAIT: Duration = Duration::from_secs(60);

choice!(
    /// When a monitor runs.
    pub enum When {
        /// From cluster start, whatever runs on the node.
        Always = "always",
        /// Only while its target resource (or group) is active on the node.
        Active = "active",
    }
);

choice!(
    /// What a monitor that calls AWS does when the AWS API itself fails or times out.
    pub enum AwsErrorPolicy {
        /// Treat it as a failed check: recovery runs.
        Recover = "recover",
        /// Log a warning, count it, do not recover (default): an endpoint outage alone never fails over.
        Warn = "warn",
        /// Do nothing.
        Ignore = "ignore",
    }
);

choice!(
    /// The first recovery step; each step escalates to the next when its limit is used up:
    /// restart (the target, once) -> failover (the target's group, once) -> final action.
    pub enum RecoveryAction {
        Restart = "restart",
        Failover = "failover",
        Final = "final",
    }
);

choice!(
    /// The last resort, after recovery (or a resource's retries) failed.
    pub enum FinalAction {
        /// Nothing more: the failure stays visible in status and events.
        None = "none",
        /// Stop the cluster service on this node (its groups stop and their leases are released).
        StopCluster = "stop_cluster",
        /// Stop the cluster service and shut the OS down.
        Shutdown = "shutdown",
    }
);

choice!(
    /// The monitor kinds, as written in the block's first label.
    pub enum MonitorType {
        AwsVip = "aws_vip",
        AwsEip = "aws_eip",
        AwsDns = "aws_dns",
        AwsAz = "aws_az",
        Ip = "ip",
        Tcp = "tcp",
        Mirror = "mirror",
        Custom = "custom",
    }
);

/// `host:port` (IPv6 hosts in brackets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    pub host: String,
    pub port: u16,
}

impl HostPort {
    pub fn parse(text: &str) -> Result<HostPort, String> {
        let err = || format!("{text:?} is not host:port (e.g. \"ec2.us-east-1.amazonaws.com:443\")");
        let (host, port) = if let Some(rest) = text.strip_prefix('[') {
            let (host, after) = rest.split_once(']').ok_or_else(err)?;
            (host, after.strip_prefix(':').ok_or_else(err)?)
        } else {
            text.rsplit_once(':').ok_or_else(err)?
        };
        let port: u16 = port.parse().map_err(|_| err())?;
        let hp = HostPort { host: host.to_string(), port };
        hp.check().map_err(|_| err())?;
        Ok(hp)
    }

    fn check(&self) -> Result<(), String> {
        let host_ok = if self.host.contains(':') {
            self.host.parse::<std::net::Ipv6Addr>().is_ok()
        } else {
            !self.host.is_empty()
                && self.host.len() <= 253
                && self.host.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        };
        if host_ok && self.port > 0 { Ok(()) } else { Err(format!("{self:?} is not a host and a port 1-65535")) }
    }

    pub(crate) fn read(cx: &mut Cx, path: &ConfigPath, e: &hcl::edit::expr::Expression) -> Option<HostPort> {
        let text = parse::string(cx, path, e)?;
        match HostPort::parse(&text) {
            Ok(hp) => Some(hp),
            Err(message) => {
                cx.error(ErrorCode::BadEndpoint, path, format!("{path}: {message}"));
                None
            }
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator, path: &ConfigPath) {
        if let Err(message) = self.check() {
            v.error(ErrorCode::BadEndpoint, path, format!("{path}: {message}"));
        }
    }
}

impl fmt::Display for HostPort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// What a monitor checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MonitorKind {
    /// The VIP is bound locally and every VIP route targets the local ENI.
    AwsVip { resource: String },
    /// The EIP is associated with the local ENI.
    AwsEip { resource: String },
    /// The record set exists with the expected IP and (when `check_resolution`) the name resolves to it.
    AwsDns { resource: String, check_resolution: bool },
    /// DescribeAvailabilityZones says the node's zone is `available`.
    AwsAz,
    /// ICMP echo: the check fails when none of the node's targets answers.
    Ip { targets: Vec<Ipv4Addr>, per_node: BTreeMap<String, Vec<Ipv4Addr>> },
    /// TCP connect to `address`.
    Tcp { address: HostPort },
    /// The replication state of a mirror disk.
    Mirror { resource: String },
    /// A command (`/bin/sh -c`); exit 0 is healthy.
    Custom { command: String, env: BTreeMap<String, String> },
}

impl MonitorKind {
    pub fn monitor_type(&self) -> MonitorType {
        match self {
            MonitorKind::AwsVip { .. } => MonitorType::AwsVip,
            MonitorKind::AwsEip { .. } => MonitorType::AwsEip,
            MonitorKind::AwsDns { .. } => MonitorType::AwsDns,
            MonitorKind::AwsAz => MonitorType::AwsAz,
            MonitorKind::Ip { .. } => MonitorType::Ip,
            MonitorKind::Tcp { .. } => MonitorType::Tcp,
            MonitorKind::Mirror { .. } => MonitorType::Mirror,
            MonitorKind::Custom { .. } => MonitorType::Custom,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        self.monitor_type().as_str()
    }

    /// The resource this monitor watches, for the resource kinds.
    pub fn resource(&self) -> Option<&String> {
        match self {
            MonitorKind::AwsVip { resource }
            | MonitorKind::AwsEip { resource }
            | MonitorKind::AwsDns { resource, .. }
            | MonitorKind::Mirror { resource } => Some(resource),
            MonitorKind::AwsAz | MonitorKind::Ip { .. } | MonitorKind::Tcp { .. } | MonitorKind::Custom { .. } => None,
        }
    }

    /// True for kinds that call the AWS API (and so take `on_aws_error`).
    pub fn calls_aws(&self) -> bool {
        matches!(
            self,
            MonitorKind::AwsVip { .. } | MonitorKind::AwsEip { .. } | MonitorKind::AwsDns { .. } | MonitorKind::AwsAz
        )
    }

    /// The resource kind a resource monitor must point at.
    fn expected_resource(&self) -> Option<&'static str> {
        match self {
            MonitorKind::AwsVip { .. } => Some("aws_vip"),
            MonitorKind::AwsEip { .. } => Some("aws_eip"),
            MonitorKind::AwsDns { .. } => Some("aws_dns"),
            MonitorKind::Mirror { .. } => Some("mirror_disk"),
            _ => None,
        }
    }

    /// The monitor the guides add for `resource` (VIP, EIP and DNS resources), at its defaults.
    pub fn implied_for(resource: &Resource) -> Option<MonitorKind> {
        let name = resource.name.clone();
        match resource.kind {
            ResourceKind::AwsVip(_) => Some(MonitorKind::AwsVip { resource: name }),
            ResourceKind::AwsEip(_) => Some(MonitorKind::AwsEip { resource: name }),
            ResourceKind::AwsDns(_) => Some(MonitorKind::AwsDns { resource: name, check_resolution: true }),
            ResourceKind::MirrorDisk(_) | ResourceKind::Exec(_) => None,
        }
    }

    /// The `ip` monitor's targets for `node` (its override, else the common list).
    pub fn ip_targets_for(&self, node: &str) -> &[Ipv4Addr] {
        match self {
            MonitorKind::Ip { targets, per_node } => per_node.get(node).unwrap_or(targets),
            _ => &[],
        }
    }
}

/// The settings every monitor has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonitorSettings {
    /// Time between checks. Default 30s.
    pub interval: Duration,
    /// A check that takes longer fails. Default 60s.
    pub timeout: Duration,
    /// Consecutive failed checks tolerated before recovery starts. Default 1.
    pub retries: u32,
    /// Delay after the monitor starts before the first check. Default 0s (aws_dns: 60s).
    pub start_wait: Duration,
    /// Default: active for resource monitors (aws_vip, aws_eip, aws_dns), always for the others.
    pub when: When,
    /// AWS monitors only. None = warn.
    pub on_aws_error: Option<AwsErrorPolicy>,
    /// A resource or group name. None = the monitored resource (resource monitors), else every group active on
    /// the node.
    pub recovery_target: Option<String>,
    /// Default: restart for resource monitors, failover for the others.
    pub recovery_action: RecoveryAction,
    /// Default none.
    pub final_action: FinalAction,
}

impl MonitorSettings {
    /// The defaults for a monitor of `kind`.
    pub fn defaults_for(kind: &MonitorKind) -> MonitorSettings {
        let watches_active_resource =
            matches!(kind, MonitorKind::AwsVip { .. } | MonitorKind::AwsEip { .. } | MonitorKind::AwsDns { .. });
        MonitorSettings {
            interval: DEFAULT_MONITOR_INTERVAL,
            timeout: DEFAULT_MONITOR_TIMEOUT,
            retries: DEFAULT_MONITOR_RETRIES,
            start_wait: if matches!(kind, MonitorKind::AwsDns { .. }) {
                DEFAULT_DNS_START_WAIT
            } else {
                Duration::ZERO
            },
            when: if watches_active_resource { When::Active } else { When::Always },
            on_aws_error: None,
            recovery_target: None,
            recovery_action: if kind.resource().is_some() { RecoveryAction::Restart } else { RecoveryAction::Failover },
            final_action: FinalAction::None,
        }
    }
}

/// What recovery acts on, resolved against the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryTarget {
    Resource {
        group: String,
        resource: String,
    },
    Group(String),
    /// Every group active on the node that runs the monitor.
    LocalGroups,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Monitor {
    pub name: String,
    pub settings: MonitorSettings,
    pub kind: MonitorKind,
}

impl Monitor {
    /// A monitor at the defaults of its kind.
    pub fn new(name: &str, kind: MonitorKind) -> Monitor {
        Monitor { name: name.to_string(), settings: MonitorSettings::defaults_for(&kind), kind }
    }

    pub(crate) fn path(&self, index: usize) -> ConfigPath {
        ConfigPath::root().block("monitor", &self.name, index)
    }

    /// The effective AWS error policy (None for monitors that do not call AWS).
    pub fn on_aws_error(&self) -> Option<AwsErrorPolicy> {
        self.kind.calls_aws().then(|| self.settings.on_aws_error.unwrap_or(AwsErrorPolicy::Warn))
    }

    /// The effective recovery target.
    pub fn recovery_target(&self, config: &Config) -> RecoveryTarget {
        let name = self.settings.recovery_target.as_ref().or(self.kind.resource());
        match name {
            Some(name) => match config.resource_by_name(name) {
                Some((group, resource)) => {
                    RecoveryTarget::Resource { group: group.name.clone(), resource: resource.name.clone() }
                }
                None => RecoveryTarget::Group(name.clone()),
            },
            None => RecoveryTarget::LocalGroups,
        }
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader, kind_label: &str, name: &str) -> Option<Monitor> {
        let Some(monitor_type) = MonitorType::from_str_exact(kind_label) else {
            let path = r.path.clone();
            cx.error(
                ErrorCode::BadChoice,
                &path,
                format!("{path}: {kind_label:?} is not a monitor kind: {}", MonitorType::choices()),
            );
            r.skip_rest();
            return None;
        };
        let kind = match monitor_type {
            MonitorType::AwsVip => {
                r.req(cx, "resource", parse::string).map(|resource| MonitorKind::AwsVip { resource })
            }
            MonitorType::AwsEip => {
                r.req(cx, "resource", parse::string).map(|resource| MonitorKind::AwsEip { resource })
            }
            MonitorType::AwsDns => {
                let resource = r.req(cx, "resource", parse::string);
                let check_resolution = r.or(cx, "check_resolution", parse::boolean, true);
                resource.map(|resource| MonitorKind::AwsDns { resource, check_resolution })
            }
            MonitorType::AwsAz => Some(MonitorKind::AwsAz),
            MonitorType::Ip => {
                let targets = r.or(cx, "targets", |cx, p, e| parse::list_of(cx, p, e, parse::ipv4), Vec::new());
                let per_node = overrides::read(cx, r, |cx, or| {
                    Some(or.or(cx, "targets", |cx, p, e| parse::list_of(cx, p, e, parse::ipv4), Vec::new()))
                });
                per_node.map(|per_node| MonitorKind::Ip { targets, per_node })
            }
            MonitorType::Tcp => r.req(cx, "address", HostPort::read).map(|address| MonitorKind::Tcp { address }),
            MonitorType::Mirror => {
                r.req(cx, "resource", parse::string).map(|resource| MonitorKind::Mirror { resource })
            }
            MonitorType::Custom => {
                let command = r.req(cx, "command", parse::string);
                let env = r.or(cx, "env", parse::string_map, BTreeMap::new());
                command.map(|command| MonitorKind::Custom { command, env })
            }
        };
        let d = MonitorSettings::defaults_for(kind.as_ref().unwrap_or(&MonitorKind::AwsAz));
        let on_aws_error = r.opt(cx, "on_aws_error", parse::choice::<AwsErrorPolicy>);
        let settings = MonitorSettings {
            interval: r.or(cx, "interval", parse::duration, d.interval),
            timeout: r.or(cx, "timeout", parse::duration, d.timeout),
            retries: r.or(cx, "retries", parse::count, d.retries),
            start_wait: r.or(cx, "start_wait", parse::duration, d.start_wait),
            when: r.or(cx, "when", parse::choice::<When>, d.when),
            on_aws_error,
            recovery_target: r.opt(cx, "recovery_target", parse::string),
            recovery_action: r.or(cx, "recovery_action", parse::choice::<RecoveryAction>, d.recovery_action),
            final_action: r.or(cx, "final_action", parse::choice::<FinalAction>, d.final_action),
        };
        Some(Monitor { name: name.to_string(), settings, kind: kind? })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        match &self.kind {
            MonitorKind::AwsVip { resource } | MonitorKind::AwsEip { resource } | MonitorKind::Mirror { resource } => {
                b.str("resource", resource);
            }
            MonitorKind::AwsDns { resource, check_resolution } => {
                b.str("resource", resource);
                b.boolean("check_resolution", *check_resolution);
            }
            MonitorKind::AwsAz => {}
            MonitorKind::Ip { targets, .. } => b.display_list("targets", targets),
            MonitorKind::Tcp { address } => b.display("address", address),
            MonitorKind::Custom { command, .. } => b.str("command", command),
        }
        let s = &self.settings;
        b.duration("interval", s.interval);
        b.duration("timeout", s.timeout);
        b.number("retries", s.retries);
        b.duration("start_wait", s.start_wait);
        b.choice("when", s.when);
        b.opt_choice("on_aws_error", s.on_aws_error);
        b.opt_str("recovery_target", s.recovery_target.as_deref());
        b.choice("recovery_action", s.recovery_action);
        b.choice("final_action", s.final_action);
        match &self.kind {
            MonitorKind::Custom { env, .. } => b.map("env", env),
            MonitorKind::Ip { per_node, .. } => {
                overrides::render(b, per_node, |ob, targets| ob.display_list("targets", targets))
            }
            _ => {}
        }
    }

    pub(crate) fn validate(&self, v: &mut Validator, index: usize) {
        let path = self.path(index);
        v.name(&path, &self.name, "monitor");
        let s = &self.settings;
        v.positive(&path.attr("interval"), s.interval);
        v.positive(&path.attr("timeout"), s.timeout);
        v.whole_millis(&path.attr("start_wait"), s.start_wait);
        if s.on_aws_error.is_some() && !self.kind.calls_aws() {
            let at = path.attr("on_aws_error");
            v.error(
                ErrorCode::NotApplicable,
                &at,
                format!(
                    "{at}: {} monitor does not call AWS; on_aws_error applies to aws_* monitors only",
                    a_or_an(self.kind.kind_name())
                ),
            );
        }
        if let (Some(resource), Some(expected)) = (self.kind.resource(), self.kind.expected_resource()) {
            let at = path.attr("resource");
            match v.config.resource_by_name(resource) {
                None => v.error(ErrorCode::UnknownReference, &at, format!("{at}: no resource is named {resource:?}")),
                Some((_, r)) if r.kind.kind_name() != expected => v.error(
                    ErrorCode::MonitorKindMismatch,
                    &at,
                    format!(
                        "{at}: {} monitor watches {} resource, but {resource:?} is {} resource",
                        a_or_an(self.kind.kind_name()),
                        a_or_an(expected),
                        a_or_an(r.kind.kind_name())
                    ),
                ),
                Some(_) => {}
            }
        }
        if let Some(target) = &s.recovery_target
            && v.config.resource_by_name(target).is_none()
            && v.config.group_by_name(target).is_none()
        {
            let at = path.attr("recovery_target");
            v.error(ErrorCode::UnknownReference, &at, format!("{at}: no resource or group is named {target:?}"));
        }
        if s.when == When::Active && self.kind.resource().is_none() && s.recovery_target.is_none() {
            let at = path.attr("when");
            v.error_hint(
                ErrorCode::NotApplicable,
                &at,
                format!("{at}: when = \"active\" needs a resource or group to be active, and this {} monitor names none", self.kind.kind_name()),
                "set recovery_target to the group (or resource) whose activity gates the monitor, or use when = \"always\"",
            );
        }
        match &self.kind {
            MonitorKind::Ip { targets, per_node } => {
                for node in per_node.keys() {
                    v.node_ref(&overrides::path(&path, node), node);
                }
                for node in &v.config.nodes {
                    if self.kind.ip_targets_for(&node.name).is_empty() {
                        let at = if targets.is_empty() { path.clone() } else { path.attr("targets") };
                        v.error(
                            ErrorCode::Empty,
                            &at,
                            format!("{path}: the ip monitor has no target for node {:?}", node.name),
                        );
                        break;
                    }
                }
            }
            MonitorKind::Tcp { address } => address.validate(v, &path.attr("address")),
            MonitorKind::Custom { command, env } => {
                if command.trim().is_empty() {
                    let at = path.attr("command");
                    v.error_hint(
                        ErrorCode::Empty,
                        &at,
                        format!("{at}: the command is empty"),
                        "write the check command (exit 0 = healthy)",
                    );
                }
                for name in env.keys() {
                    if let Err(message) = shape::check_env_name(name) {
                        let at = path.attr("env").key(name);
                        v.error(ErrorCode::BadName, &at, format!("{at}: {message}"));
                    }
                }
            }
            _ => {}
        }
    }
}

/// "an aws_vip", "a tcp".
fn a_or_an(word: &str) -> String {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) { format!("an {word}") } else { format!("a {word}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_port_parses_names_ipv4_and_bracketed_ipv6() {
        let hp = HostPort::parse("ec2.us-east-1.amazonaws.com:443").unwrap();
        assert_eq!((hp.host.as_str(), hp.port), ("ec2.us-east-1.amazonaws.com", 443));
        assert_eq!(HostPort::parse("[::1]:80").unwrap().to_string(), "[::1]:80");
        for bad in ["host", "host:", ":443", "host:0", "host:70000", "a b:1", "[::1]80"] {
            assert!(HostPort::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn defaults_depend_on_the_kind() {
        let dns = MonitorSettings::defaults_for(&MonitorKind::AwsDns { resource: "d".into(), check_resolution: true });
        assert_eq!(
            (dns.when, dns.start_wait, dns.recovery_action),
            (When::Active, DEFAULT_DNS_START_WAIT, RecoveryAction::Restart)
        );
        let az = MonitorSettings::defaults_for(&MonitorKind::AwsAz);
        assert_eq!(
            (az.when, az.start_wait, az.recovery_action),
            (When::Always, Duration::ZERO, RecoveryAction::Failover)
        );
        let mirror = MonitorSettings::defaults_for(&MonitorKind::Mirror { resource: "m".into() });
        assert_eq!((mirror.when, mirror.recovery_action), (When::Always, RecoveryAction::Restart));
    }

    #[test]
    fn aws_error_policy_defaults_to_warn_for_aws_monitors_only() {
        assert_eq!(Monitor::new("a", MonitorKind::AwsAz).on_aws_error(), Some(AwsErrorPolicy::Warn));
        let tcp = MonitorKind::Tcp { address: HostPort::parse("h:1").unwrap() };
        assert_eq!(Monitor::new("t", tcp).on_aws_error(), None);
    }
}
