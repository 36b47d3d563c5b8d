//! `heartbeat { }`, `interconnect "<name>" { }` and `mirror_connect { }`: the networks between the nodes.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::cluster::Node;
use super::error::{ConfigPath, ErrorCode};
use super::parse::{self, Cx, Reader};
use super::render::HclBlock;
use super::validate::Validator;

pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(1);
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_INTERCONNECT_NAME: &str = "primary";
pub const DEFAULT_HEARTBEAT_PORT: u16 = 7400;
pub const DEFAULT_MIRROR_PORT: u16 = 7410;

/// Heartbeat timing, shared by every interconnect: a peer is lost when no valid heartbeat arrived on any
/// interconnect for `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    /// How often each node sends a heartbeat on each interconnect. Default 1s.
    pub interval: Duration,
    /// Silence after which a peer is lost. Must exceed `interval`. Default 5s.
    pub timeout: Duration,
}

impl Default for Heartbeat {
    fn default() -> Heartbeat {
        Heartbeat { interval: DEFAULT_HEARTBEAT_INTERVAL, timeout: DEFAULT_HEARTBEAT_TIMEOUT }
    }
}

impl Heartbeat {
    pub(crate) fn path() -> ConfigPath {
        ConfigPath::root().block("heartbeat", "", 0)
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<Heartbeat> {
        Some(Heartbeat {
            interval: r.or(cx, "interval", parse::duration, DEFAULT_HEARTBEAT_INTERVAL),
            timeout: r.or(cx, "timeout", parse::duration, DEFAULT_HEARTBEAT_TIMEOUT),
        })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.duration("interval", self.interval);
        b.duration("timeout", self.timeout);
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        let path = Heartbeat::path();
        v.positive(&path.attr("interval"), self.interval);
        v.whole_millis(&path.attr("timeout"), self.timeout);
        if self.timeout <= self.interval {
            let at = path.attr("timeout");
            v.error(
                ErrorCode::HeartbeatTimeout,
                &at,
                format!(
                    "{at}: the heartbeat timeout ({}) must be larger than the interval ({})",
                    super::format_duration(self.timeout),
                    super::format_duration(self.interval)
                ),
            );
        }
    }
}

/// One heartbeat network. Heartbeats are UDP datagrams to `port` on each peer's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interconnect {
    /// Name (block label). Interconnects are tried in declaration order.
    pub name: String,
    /// UDP port. Default 7400.
    pub port: u16,
    /// Per-node address on this network; a node not listed uses its `private_ip`. Default: none listed.
    pub addresses: BTreeMap<String, Ipv4Addr>,
}

impl Default for Interconnect {
    fn default() -> Interconnect {
        Interconnect {
            name: DEFAULT_INTERCONNECT_NAME.to_string(),
            port: DEFAULT_HEARTBEAT_PORT,
            addresses: BTreeMap::new(),
        }
    }
}

impl Interconnect {
    /// The address `node` uses on this interconnect.
    pub fn address_of(&self, node: &Node) -> Ipv4Addr {
        self.addresses.get(&node.name).copied().unwrap_or(node.private_ip)
    }

    pub(crate) fn path(&self, index: usize) -> ConfigPath {
        ConfigPath::root().block("interconnect", &self.name, index)
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader, name: &str) -> Option<Interconnect> {
        let port = r.or(cx, "port", parse::port, DEFAULT_HEARTBEAT_PORT);
        let addresses = r.or(cx, "addresses", |cx, p, e| parse::map_of(cx, p, e, parse::ipv4), BTreeMap::new());
        Some(Interconnect { name: name.to_string(), port, addresses })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.number("port", self.port);
        b.ip_map("addresses", &self.addresses);
    }

    pub(crate) fn validate(&self, v: &mut Validator, index: usize) {
        let path = self.path(index);
        v.name(&path, &self.name, "interconnect");
        v.node_addresses(&path.attr("addresses"), &self.addresses, |n| self.address_of(n), "interconnect");
    }
}

/// The network for mirror-disk replication (TCP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorConnect {
    /// TCP port of the mirror stream. Default 7410.
    pub port: u16,
    /// Per-node address; a node not listed uses its `private_ip`. Default: none listed.
    pub addresses: BTreeMap<String, Ipv4Addr>,
}

impl Default for MirrorConnect {
    fn default() -> MirrorConnect {
        MirrorConnect { port: DEFAULT_MIRROR_PORT, addresses: BTreeMap::new() }
    }
}

impl MirrorConnect {
    pub fn address_of(&self, node: &Node) -> Ipv4Addr {
        self.addresses.get(&node.name).copied().unwrap_or(node.private_ip)
    }

    pub(crate) fn path() -> ConfigPath {
        ConfigPath::root().block("mirror_connect", "", 0)
    }

    pub(crate) fn read(cx: &mut Cx, r: &mut Reader) -> Option<MirrorConnect> {
        let port = r.or(cx, "port", parse::port, DEFAULT_MIRROR_PORT);
        let addresses = r.or(cx, "addresses", |cx, p, e| parse::map_of(cx, p, e, parse::ipv4), BTreeMap::new());
        Some(MirrorConnect { port, addresses })
    }

    pub(crate) fn render(&self, b: &mut HclBlock) {
        b.number("port", self.port);
        b.ip_map("addresses", &self.addresses);
    }

    pub(crate) fn validate(&self, v: &mut Validator) {
        let path = MirrorConnect::path();
        v.node_addresses(&path.attr("addresses"), &self.addresses, |n| self.address_of(n), "mirror connect");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{codes, two_nodes};

    #[test]
    fn address_of_defaults_to_private_ip() {
        let c = two_nodes();
        let mut ic = Interconnect::default();
        ic.addresses.insert("b".into(), Ipv4Addr::new(192, 168, 0, 2));
        assert_eq!(ic.address_of(&c.nodes[0]), Ipv4Addr::new(10, 0, 1, 10));
        assert_eq!(ic.address_of(&c.nodes[1]), Ipv4Addr::new(192, 168, 0, 2));
    }

    #[test]
    fn timeout_must_exceed_interval() {
        let mut c = two_nodes();
        c.heartbeat = Heartbeat { interval: Duration::from_millis(100), timeout: Duration::from_millis(100) };
        assert_eq!(codes(&c), vec!["TDM-CFG-019"]);
        c.heartbeat.timeout = Duration::from_millis(101);
        assert!(codes(&c).is_empty());
    }

    #[test]
    fn explicit_address_may_not_collide_with_another_node() {
        let mut c = two_nodes();
        c.mirror_connect.addresses.insert("b".into(), Ipv4Addr::new(10, 0, 1, 10));
        assert_eq!(codes(&c), vec!["TDM-CFG-014"]);
    }
}
