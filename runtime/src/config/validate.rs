//! The offline validation rules that need the whole config (names, references, addresses, ports), and the
//! [`Validator`] through which every component reports. A rule reports a [`ConfigPath`]; the parser turns it
//! into a line and column.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use super::Config;
use super::cluster::Node;
use super::duration::is_whole_millis;
use super::error::{ConfigError, ConfigPath, ErrorCode};
use super::interconnect::MirrorConnect;
use super::shape;

/// Collects errors while the components check themselves against the whole config.
pub(crate) struct Validator<'c> {
    pub(crate) config: &'c Config,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    pub(crate) fn error(&mut self, code: ErrorCode, path: &ConfigPath, message: impl Into<String>) {
        self.errors.push(ConfigError::new(code, path.clone(), message));
    }

    pub(crate) fn error_hint(&mut self, code: ErrorCode, path: &ConfigPath, message: impl Into<String>, hint: &str) {
        self.errors.push(ConfigError::new(code, path.clone(), message).with_hint(hint));
    }

    /// `name` (of a `what`) has the shape of a name.
    pub(crate) fn name(&mut self, path: &ConfigPath, name: &str, what: &str) {
        if let Err(message) = shape::check_name(name) {
            self.error(ErrorCode::BadName, path, format!("{path}: {message} for a {what}"));
        }
    }

    /// A duration that must be above zero (and whole milliseconds).
    pub(crate) fn positive(&mut self, path: &ConfigPath, d: Duration) {
        if d.is_zero() {
            self.error(ErrorCode::OutOfRange, path, format!("{path}: must be longer than 0s"));
        } else {
            self.whole_millis(path, d);
        }
    }

    pub(crate) fn whole_millis(&mut self, path: &ConfigPath, d: Duration) {
        if !is_whole_millis(d) {
            self.error(ErrorCode::BadDuration, path, format!("{path}: {d:?} is not a whole number of milliseconds"));
        }
    }

    pub(crate) fn abs_path(&mut self, path: &ConfigPath, p: &Path) {
        if let Err(message) = shape::check_absolute_path(p) {
            self.error(ErrorCode::BadPath, path, format!("{path}: {message}"));
        }
    }

    pub(crate) fn aws_id(&mut self, path: &ConfigPath, id: &str, prefix: &str) {
        if let Err(message) = shape::check_ec2_id(id, prefix) {
            self.error(ErrorCode::BadAwsId, path, format!("{path}: {message}"));
        }
    }

    /// `name` is a node; reports TDM-CFG-011 and returns false otherwise.
    pub(crate) fn node_ref(&mut self, path: &ConfigPath, name: &str) -> bool {
        if self.config.node_by_name(name).is_some() {
            return true;
        }
        let known: Vec<&str> = self.config.nodes.iter().map(|n| n.name.as_str()).collect();
        let hint = match shape::did_you_mean(name, known.iter().copied()) {
            Some(close) => format!("did you mean {close:?}? nodes: {}", known.join(", ")),
            None => format!("declare it with a node block; nodes: {}", known.join(", ")),
        };
        self.error_hint(ErrorCode::UnknownNode, path, format!("{path}: no node is named {name:?}"), &hint);
        false
    }

    /// No element of the list `path` repeats an earlier one.
    pub(crate) fn distinct(&mut self, path: &ConfigPath, items: &[String], what: &str) {
        for (i, item) in items.iter().enumerate() {
            if items[..i].contains(item) {
                let at = path.index(i);
                self.error(ErrorCode::DuplicateName, &at, format!("{at}: {what} {item:?} is listed twice"));
            }
        }
    }

    /// A per-node address map: keys are nodes, and the resulting addresses are distinct.
    pub(crate) fn node_addresses(
        &mut self,
        path: &ConfigPath,
        addresses: &BTreeMap<String, Ipv4Addr>,
        address_of: impl Fn(&Node) -> Ipv4Addr,
        what: &str,
    ) {
        for node in addresses.keys() {
            self.node_ref(&path.key(node), node);
        }
        let nodes = &self.config.nodes;
        for (i, node) in nodes.iter().enumerate() {
            let ip = address_of(node);
            let explicit = |n: &Node| addresses.contains_key(&n.name);
            // Two defaulted addresses collide only if the private IPs do, which check_nodes reports.
            if let Some(other) = nodes[..i]
                .iter()
                .find(|o| address_of(o) == ip && o.name != node.name && (explicit(o) || explicit(node)))
            {
                let at = if addresses.contains_key(&node.name) { path.key(&node.name) } else { path.clone() };
                self.error(
                    ErrorCode::DuplicateAddress,
                    &at,
                    format!("{path}: nodes {:?} and {:?} would both use {ip} on the {what}", other.name, node.name),
                );
            }
        }
    }

    /// Names of one namespace are unique: each (name, path) after the first use is an error.
    fn unique<'n>(&mut self, entries: impl IntoIterator<Item = (&'n str, ConfigPath, &'static str)>) {
        let mut seen: Vec<(&str, &'static str)> = Vec::new();
        for (name, path, what) in entries {
            if let Some((_, first_what)) = seen.iter().find(|(n, _)| *n == name) {
                self.error(
                    ErrorCode::DuplicateName,
                    &path,
                    format!("{path}: the name {name:?} is already used by a {first_what}"),
                );
            } else {
                seen.push((name, what));
            }
        }
    }
}

/// Every offline rule, in a stable order.
pub fn check(config: &Config) -> Vec<ConfigError> {
    let mut v = Validator { config, errors: Vec::new() };
    config.cluster.validate(&mut v);
    config.secrets.validate(&mut v);
    config.heartbeat.validate(&mut v);
    config.mirror_connect.validate(&mut v);
    config.np_resolution.validate(&mut v);
    config.arbitration.validate(&mut v);
    check_nodes(&mut v);
    for (i, interconnect) in config.interconnects.iter().enumerate() {
        interconnect.validate(&mut v, i);
    }
    if config.interconnects.is_empty() {
        v.error(ErrorCode::Empty, &ConfigPath::root(), "the config has no interconnect (call Config::fill_implied)");
    }
    v.unique(config.interconnects.iter().enumerate().map(|(i, ic)| (ic.name.as_str(), ic.path(i), "interconnect")));
    check_ports(&mut v);
    for (i, group) in config.groups.iter().enumerate() {
        group.validate(&mut v, i);
    }
    // Groups and resources share one namespace: a monitor's recovery_target names either.
    let mut names = Vec::new();
    for (gi, group) in config.groups.iter().enumerate() {
        names.push((group.name.as_str(), group.path(gi), "group"));
        for (ri, resource) in group.resources.iter().enumerate() {
            names.push((resource.name.as_str(), group.path(gi).block("resource", &resource.name, ri), "resource"));
        }
    }
    v.unique(names);
    for (i, monitor) in config.monitors.iter().enumerate() {
        monitor.validate(&mut v, i);
    }
    v.unique(config.monitors.iter().enumerate().map(|(i, m)| (m.name.as_str(), m.path(i), "monitor")));
    v.errors
}

fn check_nodes(v: &mut Validator) {
    let config = v.config;
    if config.nodes.is_empty() {
        v.error(ErrorCode::Empty, &ConfigPath::root(), "the config has no node blocks");
    }
    for (i, node) in config.nodes.iter().enumerate() {
        node.validate(v, i);
    }
    v.unique(config.nodes.iter().enumerate().map(|(i, n)| (n.name.as_str(), n.path(i), "node")));
    for (i, node) in config.nodes.iter().enumerate() {
        if let Some(other) = config.nodes[..i].iter().find(|o| o.private_ip == node.private_ip) {
            let at = node.path(i).attr("private_ip");
            v.error(
                ErrorCode::DuplicateAddress,
                &at,
                format!("{at}: {} is already the private IP of node {:?}", node.private_ip, other.name),
            );
        }
    }
    // One region for all nodes, and for the lease table.
    let expected = config.arbitration.region.clone().or_else(|| config.nodes.iter().find_map(Node::region));
    // A malformed arbitration region is reported by Arbitration::validate; do not blame every node for it.
    if let Some(expected) = expected
        && shape::check_region(&expected).is_ok()
    {
        for (i, node) in config.nodes.iter().enumerate() {
            if let Some(region) = node.region()
                && region != expected
            {
                let at = node.path(i).attr("availability_zone");
                let source = if config.arbitration.region.is_some() {
                    "the arbitration region"
                } else {
                    "the first node's region"
                };
                v.error(
                    ErrorCode::AzOutsideRegion,
                    &at,
                    format!(
                        "{at}: zone {:?} is in region {region}, not in {expected} ({source})",
                        node.availability_zone
                    ),
                );
            }
        }
    }
}

fn check_ports(v: &mut Validator) {
    let config = v.config;
    let mut used: Vec<(u16, String)> =
        vec![(config.cluster.api_port, "the control API (cluster.api_port)".to_string())];
    let mut claim = |v: &mut Validator, port: u16, what: String, at: ConfigPath| {
        if let Some((_, owner)) = used.iter().find(|(p, _)| *p == port) {
            v.error(ErrorCode::PortConflict, &at, format!("{at}: port {port} is already used by {owner}"));
        } else {
            used.push((port, what));
        }
    };
    for (i, ic) in config.interconnects.iter().enumerate() {
        claim(v, ic.port, format!("interconnect {:?}", ic.name), ic.path(i).attr("port"));
    }
    claim(v, config.mirror_connect.port, "the mirror connect".to_string(), MirrorConnect::path().attr("port"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{codes, two_nodes};
    use crate::config::{Exec, Monitor, MonitorKind, Resource, ResourceKind};

    #[test]
    fn a_valid_config_has_no_errors() {
        assert!(check(&two_nodes()).is_empty());
    }

    #[test]
    fn ports_must_differ() {
        let mut c = two_nodes();
        c.mirror_connect.port = c.cluster.api_port;
        let errors = check(&c);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].code, ErrorCode::PortConflict);
        assert_eq!(errors[0].path.to_string(), "mirror_connect.port");
    }

    #[test]
    fn groups_and_resources_share_a_namespace_monitors_have_their_own() {
        let mut c = two_nodes();
        c.groups[0].resources.push(Resource::new("g", ResourceKind::Exec(Exec::new("true"))));
        c.monitors.push(Monitor::new("g", MonitorKind::AwsAz));
        assert_eq!(codes(&c), vec!["TDM-CFG-010"]);
    }

    #[test]
    fn no_nodes_is_an_error() {
        let mut c = two_nodes();
        c.nodes.clear();
        c.groups.clear();
        assert_eq!(codes(&c), vec!["TDM-CFG-024"]);
    }

    #[test]
    fn durations_finer_than_a_millisecond_cannot_be_written() {
        let mut c = two_nodes();
        c.heartbeat.interval = Duration::from_micros(1500);
        assert_eq!(codes(&c), vec!["TDM-CFG-007"]);
    }
}
